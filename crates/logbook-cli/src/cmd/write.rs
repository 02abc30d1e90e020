//! The writing commands: `append` (NDJSON from stdin), `delete-stream`, `truncate-stream`.
//! They open the log as its one writer (taking the directory lock) through `BuiltinLog`, so the
//! built-in validation applies.

use crate::output::{Out, Usage};
use anyhow::{Context, Result, anyhow};
use clap::Args;
use logbook::{BuiltinEvent, BuiltinLog, ExpectedVersion, LogbookOptions, StreamId};
use serde::Deserialize;
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The longest input line `append` accepts (an event payload is at most 16 MiB).
const LINE_BYTES_MAX: usize = 32 << 20;

#[derive(Debug, Args)]
pub struct AppendArgs {
    /// The log directory (created when missing; an existing one must be empty or a log).
    dir: PathBuf,
    /// The stream of lines that name none.
    #[arg(long)]
    stream: Option<String>,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// The log directory.
    dir: PathBuf,
    /// The stream to delete.
    #[arg(long)]
    stream: String,
}

#[derive(Debug, Args)]
pub struct TruncateArgs {
    /// The log directory.
    dir: PathBuf,
    /// The stream to truncate.
    #[arg(long)]
    stream: String,
    /// Hide the versions below this one.
    #[arg(long)]
    before: u64,
}

/// What `append --help` shows after the options: the input line and the expected versions.
pub const APPEND_HELP: &str = "\
Input: one JSON object per line (blank lines are skipped):
  {\"stream\": \"room/lobby\", \"type\": \"room.created\", \"data\": {\"name\": \"Lobby\"}, \"expected_version\": \"no_stream\"}
  stream            the stream id, e.g. run/<id>, workflow/<id>, room/<id>, job/<id>
                    (may be left out with --stream)
  type              a built-in event type: `logbook types` lists them with their fields
  data              the event's fields as a JSON object (null or left out: no fields)
  expected_version  optional; the line is refused unless the stream is at it:
                      a number N      the stream's last event has version N (the first is 0)
                      \"no_stream\"     the stream has no event yet
                      \"stream_exists\" the stream has at least one event
                      \"any\"           no check (the same as leaving it out)
Output: one line per event once it is durable: {\"position\": P, \"stream\": \"...\", \"version\": V}.
The first bad line stops the command (exit 1) with its line number; nothing is written for it.
The directory is created when missing; an existing directory must be empty or hold a log.";

/// One input line of `append`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    stream: Option<String>,
    #[serde(rename = "type")]
    event_type: String,
    #[serde(default)]
    data: serde_json::Value,
    /// Kept as JSON and read by [`expected_version`], which says what is allowed.
    #[serde(default)]
    expected_version: serde_json::Value,
}

/// What `expected_version` may be, for the error of a value that is none of it.
const EXPECTED_FORMS: &str = "a stream version (an integer from 0 to 18446744073709551615), \
     \"any\", \"no_stream\" or \"stream_exists\"";

/// `expected_version`: the version of the stream's last event, or `"any"`, `"no_stream"`,
/// `"stream_exists"`; `None` when absent or `null`.
fn expected_version(value: &serde_json::Value) -> Result<Option<ExpectedVersion>> {
    use serde_json::Value;
    let expected = match value {
        Value::Null => return Ok(None),
        Value::Number(number) => number.as_u64().map(ExpectedVersion::Exact),
        Value::String(word) => match word.as_str() {
            "any" => Some(ExpectedVersion::Any),
            "no_stream" => Some(ExpectedVersion::NoStream),
            "stream_exists" => Some(ExpectedVersion::StreamExists),
            _ => None,
        },
        _ => None,
    };
    match expected {
        Some(expected) => Ok(Some(expected)),
        None => Err(anyhow!(
            "expected_version {}: not allowed; use {EXPECTED_FORMS}",
            crate::output::shorten(&value.to_string(), 40)
        )),
    }
}

/// `serde_json`'s message without its " at line 1 column N" (the input line is named instead).
fn json_reason(error: &serde_json::Error) -> String {
    let text = error.to_string();
    let cut = text.rfind(" at line ").unwrap_or(text.len());
    format!(
        "{} (column {})",
        text.get(..cut).unwrap_or(&text),
        error.column()
    )
}

/// A line made into an event for a stream, or why it cannot be.
fn parse_line(
    text: &str,
    default_stream: Option<&str>,
) -> Result<(StreamId, BuiltinEvent, Option<ExpectedVersion>)> {
    let line: Line = serde_json::from_str(text)
        .map_err(|error| anyhow!("invalid JSON: {}", json_reason(&error)))?;
    let stream = line
        .stream
        .as_deref()
        .or(default_stream)
        .ok_or_else(|| anyhow!("no \"stream\" (and no --stream default)"))?;
    let stream = StreamId::new(stream)?;
    if BuiltinEvent::current_schema_version(&line.event_type).is_none() {
        return Err(anyhow!(
            "unknown event type {:?}: `logbook types` lists the built-in types and their fields",
            crate::output::shorten(&line.event_type, 64)
        ));
    }
    let event = BuiltinEvent::from_json(&line.event_type, line.data)?;
    let expected = expected_version(&line.expected_version)?;
    Ok((stream, event, expected))
}

fn expectation_met(log: &BuiltinLog, stream: &StreamId, expected: ExpectedVersion) -> Result<()> {
    let actual = log.log().stream_version(stream)?;
    let met = match expected {
        ExpectedVersion::Any => true,
        ExpectedVersion::NoStream => actual.is_none(),
        ExpectedVersion::StreamExists => actual.is_some(),
        ExpectedVersion::Exact(version) => actual == Some(version),
    };
    if met {
        return Ok(());
    }
    let actual = actual.map_or_else(|| "no stream".to_owned(), |version| version.to_string());
    Err(anyhow!(
        "wrong expected version for stream {stream}: expected {expected}, actual {actual}"
    ))
}

pub fn append(args: AppendArgs) -> Result<ExitCode> {
    super::require_log_or_empty(&args.dir)?;
    let runtime = super::runtime()?;
    let (log, _) = runtime
        .block_on(BuiltinLog::open(&args.dir, LogbookOptions::default()))
        .with_context(|| format!("cannot open the log in {} for writing", args.dir.display()))?;
    let result = append_lines(&runtime, &log, args.stream.as_deref());
    let closed = runtime.block_on(log.close());
    result?;
    closed.context("closing the log")?;
    Ok(ExitCode::SUCCESS)
}

fn append_lines(
    runtime: &tokio::runtime::Runtime,
    log: &BuiltinLog,
    default_stream: Option<&str>,
) -> Result<()> {
    let mut out = Out::new();
    let mut input = std::io::stdin().lock();
    let mut buffer = Vec::new();
    let mut number = 0u64;
    loop {
        buffer.clear();
        let read = (&mut input)
            .take(LINE_BYTES_MAX as u64 + 1)
            .read_until(b'\n', &mut buffer)
            .context("cannot read stdin")?;
        if read == 0 {
            return Ok(());
        }
        number += 1;
        if buffer.len() > LINE_BYTES_MAX {
            return Err(anyhow!("line {number}: longer than {LINE_BYTES_MAX} bytes"));
        }
        let text = std::str::from_utf8(&buffer)
            .map_err(|_| anyhow!("line {number}: not UTF-8"))?
            .trim();
        if text.is_empty() {
            continue;
        }
        let (stream, event, expected) =
            parse_line(text, default_stream).with_context(|| format!("line {number}"))?;
        if let Some(expected) = expected {
            expectation_met(log, &stream, expected).with_context(|| format!("line {number}"))?;
        }
        let written = runtime
            .block_on(log.execute(&stream, event))
            .with_context(|| format!("line {number}"))?;
        // Durable now (the log's sync policy waits for fsync): acknowledge at once.
        out.json(&serde_json::json!({
            "position": written.last_position,
            "stream": stream.as_str(),
            "version": written.version,
        }))?;
        out.flush()?;
    }
}

/// Opens an existing log for writing (never creates one).
fn open_existing(runtime: &tokio::runtime::Runtime, dir: &Path) -> Result<BuiltinLog> {
    super::require_log(dir)?;
    let (log, _) = runtime
        .block_on(BuiltinLog::open(dir, LogbookOptions::default()))
        .with_context(|| format!("cannot open the log in {} for writing", dir.display()))?;
    Ok(log)
}

fn stream_id(name: &str) -> Result<StreamId> {
    StreamId::new(name).map_err(|error| Usage(format!("--stream: {error}")).into())
}

pub fn delete_stream(args: DeleteArgs) -> Result<ExitCode> {
    let stream = stream_id(&args.stream)?;
    let runtime = super::runtime()?;
    let log = open_existing(&runtime, &args.dir)?;
    let result = runtime.block_on(log.log().delete_stream(&stream, ExpectedVersion::Any));
    let closed = runtime.block_on(log.close());
    let written = result.with_context(|| format!("cannot delete stream {stream}"))?;
    closed.context("closing the log")?;
    Out::new().line(format!(
        "deleted stream {stream}: tombstone at position {} (reads and appends now fail; a \
         compaction removes its events' bytes)",
        written.last_position
    ))?;
    Ok(ExitCode::SUCCESS)
}

pub fn truncate_stream(args: TruncateArgs) -> Result<ExitCode> {
    let stream = stream_id(&args.stream)?;
    let runtime = super::runtime()?;
    let log = open_existing(&runtime, &args.dir)?;
    let result = runtime.block_on(log.log().truncate_stream(&stream, args.before));
    let closed = runtime.block_on(log.close());
    let written = result.with_context(|| format!("cannot truncate stream {stream}"))?;
    closed.context("closing the log")?;
    Out::new().line(format!(
        "truncated stream {stream}: versions below {} hidden, marker at position {} (a \
         compaction removes their bytes)",
        args.before, written.last_position
    ))?;
    Ok(ExitCode::SUCCESS)
}
