//! Output: stdout that stops quietly on a closed pipe, error lines and exit codes, and the
//! formats events are printed in (one line for people, one JSON object for scripts).

use crate::model::Model;
use anyhow::Result;
use logbook::RawEvent;
use serde::Serialize;
use std::fmt::Write as _;
use std::io::{self, BufWriter, Write};

/// Stdout was closed (`logbook dump | head`): stop quietly with exit 0.
#[derive(Debug)]
pub struct BrokenPipe;

impl std::fmt::Display for BrokenPipe {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("broken pipe")
    }
}

impl std::error::Error for BrokenPipe {}

/// A usage error (exit code 2).
#[derive(Debug)]
pub struct Usage(pub String);

impl std::fmt::Display for Usage {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// The error as one line: the chain of causes joined by `: `, each cause once. The library
/// errors print their source inside their own message (`I/O error on {path}: {source}`, not
/// always at its end) and also return it from `source()`, so a cause whose text the line
/// already holds is skipped (an OS error is never printed twice).
pub fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line.replace('\n', " ")
}

/// ` (held by process N)` when the error is a writer open refused by another writer's lock and
/// that writer recorded its PID; empty otherwise.
pub fn lock_holder_note(error: &anyhow::Error) -> String {
    let holder = error
        .chain()
        .filter_map(|cause| cause.downcast_ref::<logbook::Error>())
        .find_map(logbook::Error::locked_path)
        .and_then(logbook::inspect::lock_holder);
    match holder {
        Some(pid) => format!(" (held by process {pid})"),
        None => String::new(),
    }
}

/// 2 for usage and I/O errors, 1 for everything else. On a PostgreSQL URL, a URL that cannot
/// be parsed and a database without a logbook schema are usage errors and a server that cannot
/// be reached (or went away) an I/O error.
pub fn exit_code(error: &anyhow::Error) -> u8 {
    let usage_or_io = error.chain().any(|cause| {
        cause.is::<Usage>()
            || cause.is::<io::Error>()
            || cause
                .downcast_ref::<logbook::Error>()
                .is_some_and(unreachable_database)
            || cause
                .downcast_ref::<logbook_postgres::Error>()
                .is_some_and(unreachable)
    });
    if usage_or_io { 2 } else { 1 }
}

fn unreachable_database(error: &logbook::Error) -> bool {
    match error {
        logbook::Error::Postgres(error) => unreachable(error),
        _ => false,
    }
}

/// A URL that cannot be parsed, a server that cannot be reached or went away, a database that
/// holds no log (as a directory that is not a log).
fn unreachable(error: &logbook_postgres::Error) -> bool {
    error.is_retryable()
        || matches!(
            error,
            logbook_postgres::Error::InvalidUrl { .. } | logbook_postgres::Error::NoSchema { .. }
        )
}

/// Buffered output (stdout, or the writer a caller of `run_with` gave). Call [`Out::flush`]
/// where a line must be seen at once.
pub struct Out<'a> {
    writer: BufWriter<Box<dyn Write + 'a>>,
}

fn pipe(error: io::Error) -> anyhow::Error {
    if error.kind() == io::ErrorKind::BrokenPipe {
        anyhow::Error::new(BrokenPipe)
    } else {
        anyhow::Error::new(error).context("cannot write to stdout")
    }
}

impl Out<'static> {
    /// Buffered stdout.
    pub fn new() -> Out<'static> {
        Out::to(io::stdout().lock())
    }
}

impl<'a> Out<'a> {
    /// Buffered output to `writer`.
    pub fn to(writer: impl Write + 'a) -> Out<'a> {
        Out {
            writer: BufWriter::new(Box::new(writer)),
        }
    }

    pub fn line(&mut self, text: impl std::fmt::Display) -> Result<()> {
        writeln!(self.writer, "{text}").map_err(pipe)
    }

    pub fn json(&mut self, value: &impl Serialize) -> Result<()> {
        serde_json::to_writer(&mut self.writer, value)?;
        writeln!(self.writer).map_err(pipe)
    }

    pub fn flush(&mut self) -> Result<()> {
        self.writer.flush().map_err(pipe)
    }
}

impl Drop for Out<'_> {
    fn drop(&mut self) {
        let _ = self.writer.flush();
    }
}

/// `2026-01-31T12:34:56.789Z` (UTC) from milliseconds since the Unix epoch.
pub fn format_time(timestamp_ms: u64) -> String {
    let seconds = timestamp_ms / 1000;
    let (year, month, day) = civil_from_days((seconds / 86_400) as i64);
    let in_day = seconds % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        in_day / 3600,
        in_day % 3600 / 60,
        in_day % 60,
        timestamp_ms % 1000
    )
}

/// `12:34:56.789` (UTC).
pub fn format_clock(timestamp_ms: u64) -> String {
    let full = format_time(timestamp_ms);
    full.get(11..23).unwrap_or(&full).to_owned()
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * shifted_month + 2) / 5 + 1) as u32;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// At most `max` characters, with `…` when cut.
pub fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut short: String = text.chars().take(max.saturating_sub(1)).collect();
    short.push('…');
    short
}

/// An event as `dump --json` prints it: exactly these keys, `raw` only when `data` is null.
#[derive(Debug, Serialize)]
pub struct EventJson<'a> {
    pub position: u64,
    pub stream: &'a str,
    pub version: u64,
    #[serde(rename = "type")]
    pub event_type: &'a str,
    pub schema_version: u16,
    pub timestamp_ms: u64,
    pub data: serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw: Option<String>,
}

/// An event as `dump --json` prints it, its data shown by the model `M`.
pub fn event_json<M: Model>(raw: &RawEvent) -> EventJson<'_> {
    let envelope = &raw.envelope;
    let data = crate::model::event_data::<M>(raw);
    EventJson {
        position: raw.position,
        stream: envelope.stream().as_str(),
        version: envelope.stream_version(),
        event_type: envelope.event_type(),
        schema_version: envelope.schema_version(),
        timestamp_ms: envelope.timestamp_ms(),
        raw: data.is_none().then(|| hex(envelope.payload())),
        data: data.unwrap_or(serde_json::Value::Null),
    }
}

/// Payload characters shown on a human line.
const SHORT_PAYLOAD_CHARS: usize = 100;

/// One line for people: position, time, stream@version, type, short payload.
pub fn event_line<M: Model>(raw: &RawEvent) -> String {
    let envelope = &raw.envelope;
    let payload = match crate::model::event_data::<M>(raw) {
        Some(data) => shorten(&data.to_string(), SHORT_PAYLOAD_CHARS),
        None => {
            let bytes = envelope.payload();
            let shown = bytes.get(..24).unwrap_or(bytes);
            let more = if shown.len() < bytes.len() { "…" } else { "" };
            format!(
                "<not decodable, {} bytes: {}{more}>",
                bytes.len(),
                hex(shown)
            )
        }
    };
    format!(
        "{:>8}  {}  {}@{}  {}  {}",
        raw.position,
        format_time(envelope.timestamp_ms()),
        envelope.stream(),
        envelope.stream_version(),
        envelope.event_type(),
        payload
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(format_time(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_time(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(format_time(1_767_225_599_999), "2025-12-31T23:59:59.999Z");
        assert_eq!(format_clock(1_767_225_599_999), "23:59:59.999");
    }

    #[test]
    fn one_line_prints_each_cause_once() {
        let wal = io_error_with_source();
        let error = anyhow::Error::new(wal).context("cannot read the log in st/log");
        assert_eq!(
            one_line(&error),
            "cannot read the log in st/log: I/O error on st/log/wal: no segment files"
        );
        let plain = anyhow::Error::new(io::Error::other("disk on fire")).context("cannot write");
        assert_eq!(one_line(&plain), "cannot write: disk on fire");
    }

    /// A wrapper that prints its source in the middle of its message.
    #[derive(Debug)]
    struct Locking(io::Error);

    impl std::fmt::Display for Locking {
        fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(
                formatter,
                "I/O error on st/LOCK: {} (taking the lock)",
                self.0
            )
        }
    }

    impl std::error::Error for Locking {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn an_os_error_inside_a_message_is_not_printed_again() {
        let denied = io::Error::from_raw_os_error(13);
        let text = denied.to_string();
        let error = anyhow::Error::new(Locking(denied)).context("cannot open st");
        let line = one_line(&error);
        assert_eq!(line.matches(&text).count(), 1, "{line}");
        assert_eq!(
            line,
            format!("cannot open st: I/O error on st/LOCK: {text} (taking the lock)")
        );
    }

    /// An error that prints its source in its own message and returns it from `source()`.
    fn io_error_with_source() -> logbook::Error {
        logbook::Error::Io {
            path: "st/log/wal".into(),
            source: io::Error::new(io::ErrorKind::NotFound, "no segment files"),
        }
    }

    #[test]
    fn shortening() {
        assert_eq!(shorten("abc", 3), "abc");
        assert_eq!(shorten("abcdef", 4), "abc…");
    }
}
