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
    /// The log directory (created when missing).
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

/// One input line of `append`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    stream: Option<String>,
    #[serde(rename = "type")]
    event_type: String,
    #[serde(default)]
    data: serde_json::Value,
    #[serde(default)]
    expected_version: Option<Expected>,
}

/// `expected_version`: the version of the stream's last event, or `"any"`, `"no_stream"`,
/// `"stream_exists"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Expected {
    Version(u64),
    Word(String),
}

impl Expected {
    fn to_engine(&self) -> Result<ExpectedVersion> {
        Ok(match self {
            Expected::Version(version) => ExpectedVersion::Exact(*version),
            Expected::Word(word) => match word.as_str() {
                "any" => ExpectedVersion::Any,
                "no_stream" => ExpectedVersion::NoStream,
                "stream_exists" => ExpectedVersion::StreamExists,
                other => {
                    return Err(anyhow!(
                        "expected_version {other:?}: use a version number, \"any\", \
                         \"no_stream\" or \"stream_exists\""
                    ));
                }
            },
        })
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
    let event = BuiltinEvent::from_json(&line.event_type, line.data)?;
    let expected = line
        .expected_version
        .as_ref()
        .map(Expected::to_engine)
        .transpose()?;
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
