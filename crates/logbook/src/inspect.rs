//! Read-only inspection of a log directory, or (with the `postgres` feature) of a log in a
//! PostgreSQL database (`RemoteLog`, `RemoteEvents`): what `logbook dump`, `verify`,
//! `stats`, `tail`, `state` and `repair` are built on.
//!
//! Owns: opening a log without the directory lock and without writing a byte ([`Inspector`]),
//! so it works beside a live writer; filtered reads of raw events; rebuilding the built-in
//! projections by replay ([`BuiltinState`]); log statistics ([`LogStats`]); checking every
//! segment header, frame checksum and event envelope, past the first problem ([`verify()`]);
//! listing raw frames with their offsets ([`frames`]); and the explicit salvage ([`repair()`],
//! [`repair_keep_intact`]), which reports exactly what it drops. A log with a damaged frame
//! opens: reads return everything before the damage, then fail naming it
//! ([`Inspector::damage`]). A log whose creation a crash cut short (a `wal/` with no complete
//! segment) opens as an empty log and says so ([`CREATION_UNFINISHED`]). Must never: write,
//! create or lock anything, except [`repair()`] and [`repair_keep_intact`] in
//! [`RepairMode::Apply`], which open the log as a writer.
//!
//! ```
//! use logbook::inspect::{EventFilter, Inspector};
//! use logbook::{BuiltinEvent, BuiltinLog, LogbookOptions, StreamId};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let dir = tempfile::tempdir()?;
//! let (log, _) = BuiltinLog::open(dir.path(), LogbookOptions::default()).await?;
//! let room = StreamId::room("lobby")?;
//! let created = BuiltinEvent::from_json("room.created", serde_json::json!({"name": "Lobby"}))?;
//! log.execute(&room, created).await?;
//!
//! // Beside the live writer: no lock taken, nothing written.
//! let inspector = Inspector::open(dir.path())?;
//! let events: Vec<_> = inspector.events(&EventFilter::default()).collect::<Result<_, _>>()?;
//! assert_eq!(events[0].envelope.event_type(), "room.created");
//! let state = inspector.replay_builtin(&logbook::inspect::NoProgress)?;
//! assert_eq!(state.rooms.room("lobby").map(|room| room.name.as_str()), Some("Lobby"));
//! log.close().await?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

mod consumers;
#[cfg(feature = "postgres")]
mod remote;
#[cfg(feature = "postgres")]
mod remote_stats;
#[cfg(feature = "postgres")]
mod remote_verify;
mod repair;
mod scan;
mod state;
mod stats;
mod verify;

pub use consumers::ConsumerInfo;
#[cfg(feature = "postgres")]
pub use remote::{REMOTE_PAGE_EVENTS, RemoteEvents, RemoteFollower, RemoteLog};
#[cfg(feature = "postgres")]
pub use remote_stats::{REMOTE_SNAPSHOTS_LISTED, RemoteSnapshot, RemoteStats, RemoteTable};
#[cfg(feature = "postgres")]
pub use remote_verify::{REMOTE_FINDINGS_MAX, RemoteFinding, RemoteVerifyReport};
pub use repair::{
    DroppedFrame, RepairMode, RepairReport, repair, repair_keep_intact,
    repair_keep_intact_with_storage, repair_with_storage,
};
pub use scan::{FrameEntry, FrameSummary, frames, frames_with_storage};
pub use state::BuiltinState;
pub use stats::{LARGEST_STREAMS_LISTED, LogStats, SegmentStats, StreamStats, kind_name};
pub use verify::{
    FINDINGS_PER_SEGMENT_MAX, Finding, Severity, VerifyReport, verify, verify_with_storage,
};

/// The directory, inside a log directory, that holds the segment files.
pub use logbook_wal::WAL_DIR_NAME;

/// The process a writer recorded in `LOCK` when it took the lock (a hint for the error of a
/// refused writer; see [`crate::Error::locked_path`]).
pub use logbook_wal::lock_holder;

use crate::error::{Error, Result};
use crate::system::{self, SystemEvent};
use logbook_projection::{BuiltinEvent, EnvelopeRef, RawEvent};
use logbook_wal::{Damage, FileStorage, SegmentInfo, Storage, Wal, WalOptions, WalReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Reports the progress of long work (verify, stats, replay). Every method defaults to nothing.
pub trait Progress {
    /// Work of `total` units (bytes or positions) starts.
    fn start(&self, what: &'static str, total: u64) {
        let _ = (what, total);
    }

    /// `units` more are done.
    fn advance(&self, units: u64) {
        let _ = units;
    }

    /// The work ended.
    fn finish(&self) {}
}

/// No progress reporting.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}

/// Which events a read returns. Every field is optional; all given ones must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// The first position (inclusive).
    pub from: Option<u64>,
    /// The last position (inclusive).
    pub to: Option<u64>,
    /// Only this stream.
    pub stream: Option<String>,
    /// Only this event type.
    pub event_type: Option<String>,
    /// At most this many events.
    pub limit: Option<usize>,
}

impl EventFilter {
    fn matches(&self, envelope: &EnvelopeRef<'_>) -> bool {
        self.stream
            .as_deref()
            .is_none_or(|stream| stream == envelope.stream)
            && self
                .event_type
                .as_deref()
                .is_none_or(|event_type| event_type == envelope.event_type)
    }
}

/// A raw event's payload, decoded as well as the tool can.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodedPayload {
    /// A built-in event.
    Builtin(BuiltinEvent),
    /// One of the engine's own events (stream `$logbook`).
    System(SystemEvent),
    /// A type the built-in model does not know, or a payload it cannot decode.
    Unknown {
        /// Why it could not be decoded.
        reason: String,
    },
}

/// Decodes the payload of `raw` with the built-in model (or as an engine event).
pub fn decode_payload(raw: &RawEvent) -> DecodedPayload {
    if raw.envelope.stream().as_str() == system::SYSTEM_STREAM {
        return match SystemEvent::decode(raw.envelope.payload()) {
            Ok(event) => DecodedPayload::System(event),
            Err(error) => DecodedPayload::Unknown {
                reason: error.to_string(),
            },
        };
    }
    match raw.decode::<BuiltinEvent>() {
        Ok(recorded) => DecodedPayload::Builtin(recorded.event),
        Err(error) => DecodedPayload::Unknown {
            reason: error.to_string(),
        },
    }
}

/// A log directory opened read-only: no lock, no write, works beside a live writer.
#[derive(Debug)]
pub struct Inspector {
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    wal: Wal,
}

/// What the read-only tools say about a log whose creation was not finished.
pub const CREATION_UNFINISHED: &str = "the log's creation was not finished (a crash came \
    before its first segment was durable): it holds no event; the next writer open finishes it";

/// True when the log in `dir` was never finished: its `wal/` holds no segment with a complete
/// header (a crash while the log was being created). Such a log holds no event: the read-only
/// API shows it empty. Reads only.
pub fn creation_unfinished(dir: impl AsRef<Path>) -> Result<bool> {
    creation_unfinished_with_storage(&FileStorage::new(), dir.as_ref())
}

/// [`creation_unfinished`] on any storage.
pub fn creation_unfinished_with_storage(storage: &dyn Storage, dir: &Path) -> Result<bool> {
    let wal_dir = dir.join(logbook_wal::WAL_DIR_NAME);
    Ok(logbook_wal::creation_unfinished(storage, &wal_dir)?)
}

/// Fails unless `dir` holds a log, without creating anything.
pub(crate) fn check_log_dir(storage: &dyn Storage, dir: &Path) -> Result<()> {
    let missing = |path: &Path, reason: &str| {
        Error::Wal(logbook_wal::Error::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, reason.to_owned()),
        })
    };
    if !storage.exists(dir) {
        return Err(missing(dir, "no such directory"));
    }
    let wal_dir = dir.join(logbook_wal::WAL_DIR_NAME);
    if !storage.exists(&wal_dir) {
        return Err(missing(
            dir,
            "not a logbook directory (it has no wal/ directory)",
        ));
    }
    Ok(())
}

impl Inspector {
    /// Opens the log in `dir` read-only on the real file system.
    pub fn open(dir: impl AsRef<Path>) -> Result<Inspector> {
        Self::open_with_storage(Arc::new(FileStorage::new()), dir.as_ref())
    }

    /// [`Inspector::open`] on any storage.
    pub fn open_with_storage(storage: Arc<dyn Storage>, dir: &Path) -> Result<Inspector> {
        check_log_dir(storage.as_ref(), dir)?;
        let (wal, _report) =
            Wal::open_read_only_with_storage(storage.clone(), dir, WalOptions::default())?;
        Ok(Inspector {
            storage,
            dir: dir.to_path_buf(),
            wal,
        })
    }

    /// The log directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The storage the log is read through.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// True while the log's creation is not finished (see [`CREATION_UNFINISHED`]): no
    /// segment with a complete header yet. The log reads as empty; a [`Inspector::refresh`]
    /// after a writer finished the creation clears it.
    pub fn creation_unfinished(&self) -> bool {
        self.wal.segments().is_empty()
    }

    /// The last durable position seen (0 for an empty log).
    pub fn last_position(&self) -> u64 {
        self.wal.durable_position()
    }

    /// Picks up what a live writer made durable since open; returns the new last position.
    pub fn refresh(&self) -> Result<u64> {
        Ok(self.wal.refresh()?)
    }

    /// The corruption the open stopped at, if any: the log is known up to it, and reads of
    /// everything before it succeed; a read that reaches it fails with its segment and offset.
    pub fn damage(&self) -> Option<&Damage> {
        self.wal.damage()
    }

    /// The segments, oldest first.
    pub fn segments(&self) -> Vec<SegmentInfo> {
        self.wal.segments()
    }

    /// The events `filter` selects, in position order, the engine's own events included.
    pub fn events(&self, filter: &EventFilter) -> Events {
        Events {
            reader: self.wal.read_from(filter.from.unwrap_or(1)),
            filter: filter.clone(),
            returned: 0,
            done: false,
        }
    }

    /// The last `count` events of the log, oldest first. Positions may have gaps (compaction
    /// purges records), so the window read widens until it holds `count` events.
    pub fn last_events(&self, count: usize) -> Result<Vec<RawEvent>> {
        if count == 0 {
            return Ok(Vec::new());
        }
        let last = self.last_position();
        let mut window = count as u64;
        loop {
            let from = last.saturating_sub(window - 1).max(1);
            let filter = EventFilter {
                from: Some(from),
                to: Some(last),
                ..EventFilter::default()
            };
            let mut events: Vec<RawEvent> = self.events(&filter).collect::<Result<_>>()?;
            if events.len() >= count || from == 1 {
                let excess = events.len().saturating_sub(count);
                events.drain(..excess);
                return Ok(events);
            }
            window = window.saturating_mul(2);
        }
    }
}

/// An iterator over raw events (see [`Inspector::events`]). Not fused: after a refresh of its
/// [`Inspector`], `next` returns events that became durable since.
#[derive(Debug)]
pub struct Events {
    reader: WalReader,
    filter: EventFilter,
    returned: usize,
    done: bool,
}

impl Iterator for Events {
    type Item = Result<RawEvent>;

    fn next(&mut self) -> Option<Result<RawEvent>> {
        if self.done
            || self
                .filter
                .limit
                .is_some_and(|limit| self.returned >= limit)
        {
            return None;
        }
        loop {
            // Past `to` nothing is read: a read that ends before damage succeeds.
            if self
                .filter
                .to
                .is_some_and(|to| self.reader.next_position() > to)
            {
                self.done = true;
                return None;
            }
            let record = match self.reader.next()? {
                Ok(record) => record,
                Err(error) => {
                    self.done = true;
                    return Some(Err(error.into()));
                }
            };
            if self.filter.to.is_some_and(|to| record.position > to) {
                self.done = true;
                return None;
            }
            let corrupt = |reason: String| Error::Corrupted {
                position: record.position,
                reason,
            };
            let envelope = match EnvelopeRef::decode(&record.payload) {
                Ok(envelope) => envelope,
                Err(error) => {
                    self.done = true;
                    return Some(Err(corrupt(error.to_string())));
                }
            };
            if !self.filter.matches(&envelope) {
                continue;
            }
            self.returned += 1;
            return Some(Ok(RawEvent::new(record.position, envelope.to_envelope())));
        }
    }
}
