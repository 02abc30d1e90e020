//! Import of the JSON files services keep today (`docs/import.md`): a task registry snapshot
//! into jobs, a room file into a room and its messages, a run ledger dump into runs.
//!
//! Owns: [`import_file`] and [`import_json`] (what `logbook import` and a service at startup
//! call), [`ImportFormat`], [`ImportReport`], the limits of an import, and its two passes:
//! 1. the checking pass streams the whole file once (one element in memory at a time): JSON,
//!    fields, duplicate ids (a 128-bit digest per id is all it keeps), every event encoded and
//!    validated, the file's SHA-256, and streams that already exist. Nothing is written; any
//!    problem is an [`Error::Import`] naming the JSON path, line and column.
//! 2. the writing pass streams the file again and appends each entity's events with expected
//!    versions (one batch per entity when it fits a batch, else consecutive batches), each
//!    event at its original time (`NewEvent::with_timestamp_ms`), then the marker: one event
//!    in the stream `import/<sha256>`, after a sync.
//!
//! A marker that exists makes the import a no-op ("already imported"). Streams without the
//! marker whose events carry this file's correlation id are a previous attempt cut short: the
//! writing pass skips the versions they hold and continues at the same versions (the file, so
//! its events, are the same: its SHA-256 is the same), which completes it deterministically.
//! A stream that exists with other events is an [`Error::ImportConflict`] before anything is
//! written.
//!
//! Must never: write anything before the checking pass accepted the whole file, hold more than
//! one element of the input (and one batch per pipeline slot) in memory, or write into a stream
//! it did not create (other than completing its own earlier attempt).

mod formats;
mod parse;

use crate::builtin::BuiltinLog;
use crate::engine::Logbook;
use crate::error::{Error, Result};
use crate::options::AppendDurability;
use crate::streams::{Direction, ExpectedVersion};
use formats::{Context, Format, Room, Runs, Tasks};
use logbook_projection::model::RunEvent;
use logbook_projection::{BuiltinEvent, NewEvent, StreamId};
use parse::{Handler, Location};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::{BufReader, Read, Seek};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use formats::ROOM_MEMBERS_MAX;

/// The largest input file, in bytes.
pub const FILE_BYTES_MAX: u64 = 64 << 30;
/// The largest element of the array (one task, run or message, JSON text with its whitespace),
/// and the largest header value, in bytes: twice the engine's default record limit, for JSON
/// escapes. A larger one is refused with its path and line before it is read whole.
pub const ELEMENT_BYTES_MAX: u64 = 32 << 20;
/// The most elements in one file (the duplicate check keeps 16 bytes and an index per element).
pub const ELEMENTS_MAX: u64 = 20_000_000;
/// The most events in one append of an import.
pub const BATCH_EVENTS_MAX: usize = 1_000;
/// The most event bytes in one append of an import.
pub const BATCH_BYTES_MAX: usize = 8 << 20;
/// Batches parsed ahead of the appends in the writing pass.
pub const PIPELINE_DEPTH: usize = 4;
/// The prefix of the marker streams: `import/<sha256 hex>`.
pub const MARKER_PREFIX: &str = "import/";
/// The `run.event` type of a marker.
pub const MARKER_EVENT_TYPE: &str = "logbook.import";

/// The original time an imported event carries in its causation id (`<JSON path>@<ms>`),
/// `None` for an event without one (a run event the file gave no time). The envelope's
/// `timestamp_ms` is the same time (what the projections show); this one also says the file
/// recorded it.
pub fn original_time_ms(causation_id: Option<&str>) -> Option<u64> {
    let (_, ms) = causation_id?.rsplit_once('@')?;
    ms.parse().ok()
}

/// Which JSON shape the input has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportFormat {
    /// A task registry snapshot: `{"version": 1, "tasks": [...]}`, one `job/<id>` per task.
    Tasks,
    /// One room file: `{"id", "name", "created_at_ms", "members", "messages": [...]}`.
    Room,
    /// A run ledger dump: `{"runs": [...]}`, one `run/<id>` per run.
    Runs,
}

impl ImportFormat {
    /// The name on the command line: `tasks`, `room`, `runs`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ImportFormat::Tasks => "tasks",
            ImportFormat::Room => "room",
            ImportFormat::Runs => "runs",
        }
    }
}

impl ImportFormat {
    /// What one element of the file's array is: `tasks`, `messages`, `runs`.
    pub const fn elements_noun(self) -> &'static str {
        match self {
            ImportFormat::Tasks => "tasks",
            ImportFormat::Room => "messages",
            ImportFormat::Runs => "runs",
        }
    }
}

impl std::str::FromStr for ImportFormat {
    type Err = Error;

    fn from_str(name: &str) -> Result<Self> {
        match name {
            "tasks" => Ok(ImportFormat::Tasks),
            "room" => Ok(ImportFormat::Room),
            "runs" => Ok(ImportFormat::Runs),
            other => Err(Error::InvalidRequest(format!(
                "unknown import format {other:?}: use tasks, room or runs"
            ))),
        }
    }
}

/// What an import did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportReport {
    /// The format.
    pub format: ImportFormat,
    /// The SHA-256 of the input's bytes, lowercase hex: the file's identity.
    pub sha256: String,
    /// The marker's stream, `import/<sha256>` (also every imported event's correlation id).
    pub marker_stream: String,
    /// True when the marker already existed: nothing was written.
    pub already_imported: bool,
    /// Entity streams a previous attempt at the same file had started, completed now.
    pub resumed_streams: u64,
    /// Bytes of the input.
    pub input_bytes: u64,
    /// Elements of the array (tasks, runs or messages).
    pub elements: u64,
    /// Entity streams the file makes (jobs, runs, or the room).
    pub entities: u64,
    /// Events the file makes (the marker not counted).
    pub events: u64,
    /// Events this call appended (fewer than `events` when it completed a previous attempt,
    /// 0 when already imported; the marker not counted).
    pub events_written: u64,
    /// The marker's log position (`None` when nothing was written).
    pub marker_position: Option<u64>,
    /// The largest element's bytes in the input: what the parser held at most at once.
    pub element_bytes_largest: u64,
}

/// Imports the JSON file at `path` (read twice: once to check, once to write; it must not
/// change meanwhile, which its SHA-256 checks before the marker is written).
pub async fn import_file(
    log: &BuiltinLog,
    format: ImportFormat,
    path: &Path,
) -> Result<ImportReport> {
    let source = Source::Path(Arc::new(path.to_path_buf()));
    import_source(log, format, source).await
}

/// Imports a JSON document read from `reader` (stdin, a socket): it is copied to an anonymous
/// temporary file first (at most [`FILE_BYTES_MAX`] bytes), so both passes read the same bytes
/// with bounded memory.
pub async fn import_json<R: Read + Send + 'static>(
    log: &BuiltinLog,
    format: ImportFormat,
    reader: R,
) -> Result<ImportReport> {
    let spooled = tokio::task::spawn_blocking(move || spool(reader))
        .await
        .map_err(|error| Error::Task(error.to_string()))??;
    import_spooled(log, format, spooled).await
}

/// Imports the JSON document in `file`, an open file read from its start (both passes rewind
/// it): what [`spool`] returns, for a caller that reads a borrowed reader (the CLI's stdin).
pub async fn import_spooled(
    log: &BuiltinLog,
    format: ImportFormat,
    file: std::fs::File,
) -> Result<ImportReport> {
    import_source(log, format, Source::Spool(Arc::new(file))).await
}

/// Copies `reader` to an anonymous temporary file (removed when closed), at most
/// [`FILE_BYTES_MAX`] bytes: a reader that can be read only once, made readable twice.
pub fn spool(reader: impl Read) -> Result<std::fs::File> {
    let io = |source| Error::Io {
        path: std::env::temp_dir(),
        source,
    };
    let mut file = tempfile::tempfile().map_err(io)?;
    let copied = std::io::copy(&mut reader.take(FILE_BYTES_MAX + 1), &mut file).map_err(io)?;
    if copied > FILE_BYTES_MAX {
        return Err(Error::LimitExceeded {
            what: "import input bytes",
            limit: FILE_BYTES_MAX,
            actual: copied,
        });
    }
    Ok(file)
}

/// Where the input is read from, once per pass.
#[derive(Debug, Clone)]
enum Source {
    Path(Arc<PathBuf>),
    Spool(Arc<std::fs::File>),
}

impl Source {
    fn name(&self) -> PathBuf {
        match self {
            Source::Path(path) => path.as_ref().clone(),
            Source::Spool(_) => PathBuf::from("-"),
        }
    }

    fn open(&self) -> Result<std::fs::File> {
        let io = |source| Error::Io {
            path: self.name(),
            source,
        };
        match self {
            Source::Path(path) => std::fs::File::open(path.as_ref()).map_err(io),
            Source::Spool(file) => {
                let mut file = file.try_clone().map_err(io)?;
                file.rewind().map_err(io)?;
                Ok(file)
            }
        }
    }
}

/// Hashes and counts the bytes read through it, and refuses more than [`FILE_BYTES_MAX`].
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buffer)?;
        let chunk = buffer.get(..read).unwrap_or_default();
        self.hasher.update(chunk);
        self.bytes += read as u64;
        if self.bytes > FILE_BYTES_MAX {
            return Err(std::io::Error::other(format!(
                "the input is larger than {FILE_BYTES_MAX} bytes"
            )));
        }
        Ok(read)
    }
}

impl<R: Read> Hashing<R> {
    fn new(inner: R) -> Self {
        Hashing {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// Reads what the parser left (nothing but whitespace it already checked) and returns the
    /// digest as hex and the byte count.
    fn finish(mut self) -> std::io::Result<(String, u64)> {
        std::io::copy(&mut self, &mut std::io::sink())?;
        let digest = self.hasher.finalize();
        let hex = digest.iter().map(|byte| format!("{byte:02x}")).collect();
        Ok((hex, self.bytes))
    }
}

async fn import_source(
    log: &BuiltinLog,
    format: ImportFormat,
    source: Source,
) -> Result<ImportReport> {
    match format {
        ImportFormat::Tasks => run::<Tasks>(log.log(), format, source).await,
        ImportFormat::Room => run::<Room>(log.log(), format, source).await,
        ImportFormat::Runs => run::<Runs>(log.log(), format, source).await,
    }
}

/// What the checking pass found.
struct Checked<F> {
    format: F,
    sha256: String,
    input_bytes: u64,
    elements: u64,
    entities: u64,
    events: u64,
    /// Entity streams that exist already, with the events the file makes for each.
    existing: Vec<(StreamId, u64)>,
    element_bytes_largest: u64,
}

async fn run<F: Format>(
    log: &Logbook<BuiltinEvent>,
    format: ImportFormat,
    source: Source,
) -> Result<ImportReport> {
    let record_bytes_max = log.options().wal.record_bytes_max as usize;
    let checking = {
        let (log, source) = (log.clone(), source.clone());
        tokio::task::spawn_blocking(move || check::<F>(&log, &source, record_bytes_max))
    };
    let checked = checking
        .await
        .map_err(|error| Error::Task(error.to_string()))??;
    let marker = StreamId::new(format!("{MARKER_PREFIX}{}", checked.sha256))?;
    let mut report = ImportReport {
        format,
        sha256: checked.sha256.clone(),
        marker_stream: marker.to_string(),
        already_imported: false,
        resumed_streams: 0,
        input_bytes: checked.input_bytes,
        elements: checked.elements,
        entities: checked.entities,
        events: checked.events,
        events_written: 0,
        marker_position: None,
        element_bytes_largest: checked.element_bytes_largest,
    };
    if log.stream_version(&marker)?.is_some() {
        report.already_imported = true;
        return Ok(report);
    }
    report.resumed_streams = check_existing(log, &marker, &checked.existing).await?;
    let context = Context {
        correlation_id: marker.to_string(),
        event_bytes_max: record_bytes_max,
    };
    report.events_written =
        write::<F>(log, &source, checked.format, context, &checked.sha256).await?;
    // Durability: every batch was appended relaxed; the marker goes in only once they are all
    // durable, so a marker never stands for events a crash could still take away.
    log.sync().await?;
    let summary = serde_json::json!({
        "format": format.as_str(),
        "sha256": checked.sha256,
        "input_bytes": checked.input_bytes,
        "elements": checked.elements,
        "entities": checked.entities,
        "events": checked.events,
    });
    let marker_event = RunEvent {
        sequence: checked.events,
        event_type: MARKER_EVENT_TYPE.to_owned(),
        payload: summary.to_string(),
    };
    let written = log
        .append(
            &marker,
            ExpectedVersion::NoStream,
            vec![NewEvent::new(marker_event.into()).with_correlation_id(marker.to_string())],
        )
        .await?;
    report.marker_position = Some(written.last_position);
    Ok(report)
}

/// The streams that exist already must each be a previous attempt at this file: its first
/// and last events carry the file's correlation id and it holds no more events than the file makes.
/// Returns how many there are.
async fn check_existing(
    log: &Logbook<BuiltinEvent>,
    marker: &StreamId,
    existing: &[(StreamId, u64)],
) -> Result<u64> {
    for (stream, planned) in existing {
        let conflict = |reason: String| Error::ImportConflict {
            stream: stream.to_string(),
            reason,
        };
        let held = log.stream_version(stream)?.map_or(0, |version| version + 1);
        // Its first and its last event are this file's: nothing was appended to it since the
        // attempt that was cut short (the service did not take the stream over meanwhile).
        let mut ends = log.read_stream(stream, 0, Direction::Forward, 1).await?;
        let last = held.saturating_sub(1);
        ends.extend(log.read_stream(stream, last, Direction::Forward, 1).await?);
        let ours = ends.len() == 2
            && ends
                .iter()
                .all(|event| event.correlation_id.as_deref() == Some(marker.as_str()));
        if !ours {
            return Err(conflict(
                "already exists with events this file did not write".to_owned(),
            ));
        }
        if held > *planned {
            return Err(conflict(format!(
                "holds {held} events, more than the {planned} this file makes"
            )));
        }
    }
    Ok(existing.len() as u64)
}

/// The checking pass's handler.
struct Checker<'a, F> {
    format: F,
    log: &'a Logbook<BuiltinEvent>,
    context: Context,
    ids: HashMap<u128, u64>,
    entities: u64,
    events: u64,
    /// Events of the file's own stream (a room's messages).
    own_events: u64,
    existing: Vec<(StreamId, u64)>,
}

fn digest_128(id: &str) -> u128 {
    let digest = Sha256::digest(id.as_bytes());
    digest
        .iter()
        .take(16)
        .fold(0u128, |value, byte| (value << 8) | u128::from(*byte))
}

/// Whether `stream` exists: a deleted one is a conflict.
fn stream_exists(log: &Logbook<BuiltinEvent>, stream: &StreamId) -> Result<bool> {
    match log.stream_version(stream) {
        Ok(version) => Ok(version.is_some()),
        Err(Error::StreamDeleted { .. }) => Err(Error::ImportConflict {
            stream: stream.to_string(),
            reason: "was deleted (its id cannot be used again)".to_owned(),
        }),
        Err(other) => Err(other),
    }
}

impl<F: Format> Handler for Checker<'_, F> {
    type Format = F;

    fn format(&mut self) -> &mut F {
        &mut self.format
    }

    fn element(&mut self, index: u64, element: F::Element, path: &str, at: Location) -> Result<()> {
        if index >= ELEMENTS_MAX {
            let reason = format!("more than {ELEMENTS_MAX} {}s in one file", F::NOUN);
            return Err(parse::import_error(path, at, &reason));
        }
        let id = F::element_id(&element);
        if let Some(first) = self.ids.insert(digest_128(id), index) {
            let reason = format!(
                "duplicate {} id {id:?} (first at {}[{first}])",
                F::NOUN,
                F::ARRAY_KEY
            );
            return Err(parse::import_error(&format!("{path}.id"), at, &reason));
        }
        let stream = F::element_stream(&element)
            .transpose()
            .map_err(|reason| parse::import_error(&format!("{path}.id"), at, &reason))?;
        let events = self
            .format
            .element_events(&self.context, element, path, at)?;
        let count = events.len() as u64;
        self.events += count;
        match stream {
            Some(stream) => {
                self.entities += 1;
                if stream_exists(self.log, &stream)? {
                    self.existing.push((stream, count));
                }
            }
            None => self.own_events += count,
        }
        Ok(())
    }
}

fn check<F: Format>(
    log: &Logbook<BuiltinEvent>,
    source: &Source,
    record_bytes_max: usize,
) -> Result<Checked<F>> {
    let mut input = Hashing::new(source.open()?);
    let mut checker = Checker {
        format: F::default(),
        log,
        // The digest is not known yet: a placeholder of the same length checks the sizes.
        context: Context {
            correlation_id: format!("{MARKER_PREFIX}{}", "0".repeat(64)),
            event_bytes_max: record_bytes_max,
        },
        ids: HashMap::new(),
        entities: 0,
        events: 0,
        own_events: 0,
        existing: Vec::new(),
    };
    let largest = parse::drive(
        BufReader::with_capacity(64 << 10, &mut input),
        &mut checker,
        ELEMENT_BYTES_MAX,
    )?;
    checker.format.check_header()?;
    let (sha256, input_bytes) = input.finish().map_err(|source_error| Error::Io {
        path: source.name(),
        source: source_error,
    })?;
    if let Some((stream, prologue)) = checker.format.prologue(&checker.context)? {
        let count = prologue.len() as u64 + checker.own_events;
        checker.entities += 1;
        checker.events += prologue.len() as u64;
        if stream_exists(log, &stream)? {
            checker.existing.push((stream, count));
        }
    }
    Ok(Checked {
        elements: checker.ids.len() as u64,
        format: checker.format,
        sha256,
        input_bytes,
        entities: checker.entities,
        events: checker.events,
        existing: checker.existing,
        element_bytes_largest: largest,
    })
}

/// One append of the writing pass.
struct Batch {
    stream: StreamId,
    /// The first batch of its stream.
    starts_stream: bool,
    events: Vec<NewEvent<BuiltinEvent>>,
}

/// The writing pass's handler: makes the events again and hands them on in batches.
struct Writer<F> {
    format: F,
    context: Context,
    sender: tokio::sync::mpsc::Sender<Batch>,
    /// The file's own stream and its batch being filled (a room).
    own: Option<(StreamId, Vec<NewEvent<BuiltinEvent>>)>,
    /// The bytes of the own batch being filled ([`event_size`]).
    own_bytes: usize,
}

impl<F> Writer<F> {
    fn send(&self, batch: Batch) -> Result<()> {
        // A closed channel: the appends stopped; their error is the one reported.
        self.sender.blocking_send(batch).map_err(|_| Error::Closed)
    }

    /// Sends `events` of `stream` in batches of at most the batch limits.
    fn send_all(
        &self,
        stream: &StreamId,
        mut starts_stream: bool,
        events: Vec<NewEvent<BuiltinEvent>>,
    ) -> Result<()> {
        let mut batch = Vec::new();
        let mut bytes = 0;
        for event in events {
            let size = event_size(&event);
            if !batch.is_empty()
                && (batch.len() == BATCH_EVENTS_MAX || bytes + size > BATCH_BYTES_MAX)
            {
                let events = std::mem::take(&mut batch);
                self.send(Batch {
                    stream: stream.clone(),
                    starts_stream,
                    events,
                })?;
                starts_stream = false;
                bytes = 0;
            }
            bytes += size;
            batch.push(event);
        }
        if !batch.is_empty() {
            self.send(Batch {
                stream: stream.clone(),
                starts_stream,
                events: batch,
            })?;
        }
        Ok(())
    }

    fn flush_own(&mut self, starts_stream: bool) -> Result<()> {
        self.own_bytes = 0;
        if let Some((stream, events)) = self.own.as_mut() {
            let events = std::mem::take(events);
            let stream = stream.clone();
            if !events.is_empty() {
                return self.send(Batch {
                    stream,
                    starts_stream,
                    events,
                });
            }
        }
        Ok(())
    }
}

/// A bound of the bytes an event takes in a batch (its payload and ids).
fn event_size(event: &NewEvent<BuiltinEvent>) -> usize {
    let payload = match &event.event {
        BuiltinEvent::RoomMessagePosted(posted) => {
            posted.message_id.len() + posted.author.len() + posted.body.len()
        }
        _ => 1024,
    };
    payload + 256
}

impl<F: Format> Handler for Writer<F> {
    type Format = F;

    /// The header values go to the format again, as in the checking pass (the same values:
    /// the file's SHA-256 is checked before the marker); the prologue was made before.
    fn format(&mut self) -> &mut F {
        &mut self.format
    }

    fn element(&mut self, _: u64, element: F::Element, path: &str, at: Location) -> Result<()> {
        let stream = F::element_stream(&element)
            .transpose()
            .map_err(|reason| parse::import_error(path, at, &reason))?;
        let events = self
            .format
            .element_events(&self.context, element, path, at)?;
        match stream {
            Some(stream) => self.send_all(&stream, true, events),
            None => {
                let bytes: usize = events.iter().map(event_size).sum();
                let full = self.own.as_ref().is_some_and(|(_, batch)| {
                    batch.len() + events.len() > BATCH_EVENTS_MAX
                        || self.own_bytes + bytes > BATCH_BYTES_MAX
                });
                if full {
                    self.flush_own(false)?;
                }
                self.own_bytes += bytes;
                if let Some((_, batch)) = self.own.as_mut() {
                    batch.extend(events);
                }
                Ok(())
            }
        }
    }
}

/// The writing pass: a blocking thread parses and sends batches, this task appends them.
/// Returns the events appended.
async fn write<F: Format>(
    log: &Logbook<BuiltinEvent>,
    source: &Source,
    format: F,
    context: Context,
    sha256: &str,
) -> Result<u64> {
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<Batch>(PIPELINE_DEPTH);
    let parsing = {
        let source = source.clone();
        let sha256 = sha256.to_owned();
        tokio::task::spawn_blocking(move || -> Result<()> {
            let mut writer = Writer {
                format,
                context,
                sender,
                own: None,
                own_bytes: 0,
            };
            if let Some((stream, prologue)) = writer.format.prologue(&writer.context)? {
                writer.send_all(&stream, true, prologue)?;
                writer.own = Some((stream, Vec::new()));
            }
            let mut input = Hashing::new(source.open()?);
            parse::drive(
                BufReader::with_capacity(64 << 10, &mut input),
                &mut writer,
                ELEMENT_BYTES_MAX,
            )?;
            writer.flush_own(false)?;
            let (again, _) = input.finish().map_err(|error| Error::Io {
                path: source.name(),
                source: error,
            })?;
            if again != sha256 {
                return Err(Error::InvalidRequest(format!(
                    "{} changed during the import (SHA-256 {sha256} when checked, {again} when \
                     written); no marker was written: run the import again on a file that \
                     does not change",
                    source.name().display()
                )));
            }
            Ok(())
        })
    };
    let appended = append_batches(log, &mut receiver).await;
    // Dropping the receiver stops the parser at its next send when the appends failed.
    drop(receiver);
    let parsed = parsing
        .await
        .map_err(|error| Error::Task(error.to_string()))?;
    let written = appended?;
    parsed?;
    Ok(written)
}

async fn append_batches(
    log: &Logbook<BuiltinEvent>,
    receiver: &mut tokio::sync::mpsc::Receiver<Batch>,
) -> Result<u64> {
    let mut written = 0u64;
    // Events a previous attempt already wrote to the current stream, still to skip.
    let mut skip = 0u64;
    let mut expected = ExpectedVersion::NoStream;
    while let Some(batch) = receiver.recv().await {
        if batch.starts_stream {
            let version = log.stream_version(&batch.stream)?;
            skip = version.map_or(0, |version| version + 1);
            expected = version.map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
        }
        let mut events = batch.events;
        let skipped = (skip as usize).min(events.len());
        events.drain(..skipped);
        skip -= skipped as u64;
        if events.is_empty() {
            continue;
        }
        let count = events.len() as u64;
        let result = log
            .append_with(&batch.stream, expected, events, AppendDurability::Relaxed)
            .await?;
        expected = ExpectedVersion::Exact(result.version);
        written += count;
    }
    Ok(written)
}
