//! The writing commands: `append` (NDJSON from stdin), `delete-stream`, `truncate-stream`.
//! They open the log as its one writer (taking the directory lock) through the binary's model
//! ([`Model`]): `BuiltinLog` in the `logbook` binary, so the built-in validation applies, or a
//! plain `Logbook` of a service's own events.

use crate::Io;
use crate::model::Model;
use crate::output::{Out, Usage};
use anyhow::{Context, Result, anyhow};
use clap::Args;
use logbook::{BuiltinEvent, Event, ExpectedVersion, Logbook, StreamId};
use serde::Deserialize;
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The longest input line `append` accepts (an event payload is at most 16 MiB).
const LINE_BYTES_MAX: usize = 32 << 20;

#[derive(Debug, Args)]
pub struct AppendArgs {
    /// The log directory (created when missing; an existing one must be empty or a log), or a
    /// `postgres://` URL (the schema is created at the first open).
    dir: PathBuf,
    /// The stream of lines that name none.
    #[arg(long)]
    stream: Option<String>,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// The log directory, or a `postgres://` URL.
    dir: PathBuf,
    /// The stream to delete (it must have had an event).
    #[arg(long)]
    stream: String,
    /// Soft delete: hide its events but let the stream be appended to again, its versions
    /// continuing (without it: a permanent tombstone).
    #[arg(long)]
    soft: bool,
}

#[derive(Debug, Args)]
pub struct TruncateArgs {
    /// The log directory, or a `postgres://` URL.
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
                      \"no_stream\"     the stream has no visible event (none yet, or
                                      all soft-deleted; its versions continue)
                      \"stream_exists\" the stream has at least one visible event
                      \"any\"           no check (the same as leaving it out)
Output: one line per event once it is durable: {\"position\": P, \"stream\": \"...\", \"version\": V}.
The first bad line stops the command (exit 1) with its line number; nothing is written for it.
The directory is created when missing; an existing directory must be empty or hold a log.";

/// What `append --help` shows in a binary for a service's own events (`logbook_cli::run`).
pub const CUSTOM_APPEND_HELP: &str = "\
Input: one JSON object per line (blank lines are skipped):
  {\"stream\": \"task/7\", \"data\": <the event's serde JSON>, \"expected_version\": \"no_stream\"}
  stream            the stream id (may be left out with --stream)
  data              the event as its serde JSON: the same `data` that `dump --json` prints
  type              optional; when given, it must be the event type of `data`
  expected_version  optional; the line is refused unless the stream is at it:
                      a number N      the stream's last event has version N (the first is 0)
                      \"no_stream\"     the stream has no event yet
                      \"stream_exists\" the stream has at least one event
                      \"any\"           no check (the same as leaving it out)
`dump --json | jq -c '{stream, type, data}'` gives lines this command appends again.
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
pub fn expected_version(value: &serde_json::Value) -> Result<Option<ExpectedVersion>> {
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
pub fn json_reason(error: &serde_json::Error) -> String {
    let text = error.to_string();
    let cut = text.rfind(" at line ").unwrap_or(text.len());
    format!(
        "{} (column {})",
        text.get(..cut).unwrap_or(&text),
        error.column()
    )
}

/// The stream of a line: its own, else the `--stream` default.
pub fn line_stream(stream: Option<&str>, default_stream: Option<&str>) -> Result<StreamId> {
    let stream = stream
        .or(default_stream)
        .ok_or_else(|| anyhow!("no \"stream\" (and no --stream default)"))?;
    Ok(StreamId::new(stream)?)
}

/// A line made into a built-in event for a stream, or why it cannot be.
pub fn parse_builtin_line(
    text: &str,
    default_stream: Option<&str>,
) -> Result<(StreamId, BuiltinEvent, Option<ExpectedVersion>)> {
    let line: Line = serde_json::from_str(text)
        .map_err(|error| anyhow!("invalid JSON: {}", json_reason(&error)))?;
    let stream = line_stream(line.stream.as_deref(), default_stream)?;
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

fn expectation_met<E: Event>(
    log: &Logbook<E>,
    stream: &StreamId,
    expected: ExpectedVersion,
) -> Result<()> {
    // The engine's own rule, so the CLI never disagrees with it (a soft-deleted stream has no
    // visible events: `no_stream` holds).
    log.check_expected_version(stream, expected)?;
    Ok(())
}

pub fn append<M: Model>(args: AppendArgs, io: &mut Io<'_>) -> Result<ExitCode> {
    // A database gets its schema at the first open, as a missing directory gets its log.
    if super::postgres_url(&args.dir).is_none() {
        super::require_log_or_empty(&args.dir)?;
    }
    let runtime = super::runtime()?;
    let log = M::open(&runtime, &args.dir).with_context(|| {
        format!(
            "cannot open the log in {} for writing",
            super::display_target(&args.dir)
        )
    })?;
    let result = append_lines::<M>(&runtime, &log, args.stream.as_deref(), io);
    let closed = M::close(&runtime, log);
    result?;
    closed.context("closing the log")?;
    Ok(ExitCode::SUCCESS)
}

fn append_lines<M: Model>(
    runtime: &tokio::runtime::Runtime,
    log: &M::Log,
    default_stream: Option<&str>,
    io: &mut Io<'_>,
) -> Result<()> {
    let mut out = Out::to(&mut *io.stdout);
    let mut input = &mut *io.stdin;
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
            M::parse_line(text, default_stream).with_context(|| format!("line {number}"))?;
        if let Some(expected) = expected {
            expectation_met(M::logbook(log), &stream, expected)
                .with_context(|| format!("line {number}"))?;
        }
        let written = M::append(runtime, log, &stream, event, expected)
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
fn open_existing<M: Model>(runtime: &tokio::runtime::Runtime, dir: &Path) -> Result<M::Log> {
    if super::postgres_url(dir).is_none() {
        super::require_log(dir)?;
    }
    M::open(runtime, dir).with_context(|| {
        format!(
            "cannot open the log in {} for writing",
            super::display_target(dir)
        )
    })
}

fn stream_id(name: &str) -> Result<StreamId> {
    StreamId::new(name).map_err(|error| Usage(format!("--stream: {error}")).into())
}

pub fn delete_stream<M: Model>(args: DeleteArgs, io: &mut Io<'_>) -> Result<ExitCode> {
    let stream = stream_id(&args.stream)?;
    let runtime = super::runtime()?;
    let log = open_existing::<M>(&runtime, &args.dir)?;
    let result = if args.soft {
        runtime.block_on(M::logbook(&log).soft_delete_stream(&stream, ExpectedVersion::Any))
    } else {
        runtime.block_on(M::logbook(&log).delete_stream(&stream, ExpectedVersion::Any))
    };
    let closed = M::close(&runtime, log);
    let written = result.with_context(|| format!("cannot delete stream {stream}"))?;
    closed.context("closing the log")?;
    let message = if args.soft {
        format!(
            "soft-deleted stream {stream}: marker at position {} (its events are hidden; \
             appends continue its versions; a compaction removes its events' bytes)",
            written.last_position
        )
    } else {
        format!(
            "deleted stream {stream}: tombstone at position {} (reads and appends now fail; \
             a compaction removes its events' bytes)",
            written.last_position
        )
    };
    Out::to(&mut *io.stdout).line(message)?;
    Ok(ExitCode::SUCCESS)
}

pub fn truncate_stream<M: Model>(args: TruncateArgs, io: &mut Io<'_>) -> Result<ExitCode> {
    let stream = stream_id(&args.stream)?;
    let runtime = super::runtime()?;
    let log = open_existing::<M>(&runtime, &args.dir)?;
    let result = runtime.block_on(M::logbook(&log).truncate_stream(&stream, args.before));
    let closed = M::close(&runtime, log);
    let written = result.with_context(|| format!("cannot truncate stream {stream}"))?;
    closed.context("closing the log")?;
    Out::to(&mut *io.stdout).line(format!(
        "truncated stream {stream}: versions below {} hidden, marker at position {} (a \
         compaction removes their bytes)",
        args.before, written.last_position
    ))?;
    Ok(ExitCode::SUCCESS)
}
