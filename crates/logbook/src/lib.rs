//! # logbook
//!
//! An append-only, event-sourced log engine for services whose state must survive restarts.
//! Every change is a typed event appended to a stream (`run/<id>`, `room/<id>`, `job/<id>`, or
//! your own); the events live in a segmented, checksummed write-ahead log
//! ([`logbook_wal`]); typed events and their envelope come from [`logbook_projection`].
//! `logbook` is the one dependency a service needs: what a custom [`Event`] and [`Projection`]
//! use ([`EventResult`], [`codec`], [`snapshot_state`], [`restore_state`], [`upcast`], and
//! [`serde`] for the derives) is re-exported here, and [`Logbook::open_dir_with_projections`]
//! opens a directory with your projections without naming a storage.
//!
//! - [`Logbook::append`]: optimistic concurrency with [`ExpectedVersion`]; several events to one
//!   stream are one atomic batch; concurrent callers share group commits.
//! - [`Logbook::read_stream`], [`Logbook::read_all`]: durable events, forward or backward.
//! - [`Logbook::subscribe`]: catch-up then live, no gap and no duplicate, durable events only.
//! - [`Logbook::delete_stream`], [`Logbook::truncate_stream`]: tombstones and session resets.
//! - [`Logbook::stats`]: typed health.
//! - [`Observer`]: hooks on a projection's durable state; a hook that panics is caught and
//!   counted ([`Stats::observer_panics`]), never fatal to the engine.
//!
//! ```
//! use logbook::{BuiltinEvent, ExpectedVersion, Logbook, LogbookOptions, MemoryStorage, StreamId};
//! use std::sync::Arc;
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let storage = Arc::new(MemoryStorage::new());
//! let (log, _report) =
//!     Logbook::<BuiltinEvent>::open_with_storage(storage, "/log", LogbookOptions::default()).await?;
//! let room = StreamId::room("lobby")?;
//! let created = BuiltinEvent::from_json("room.created", serde_json::json!({"name": "Lobby"}))?;
//! log.append(&room, ExpectedVersion::NoStream, vec![created.into()]).await?;
//! let events = log.read_stream(&room, 0, logbook::Direction::Forward, 10).await?;
//! assert_eq!(events[0].event_type, "room.created");
//! log.close().await?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod builtin;
mod clock;
mod compaction;
mod engine;
mod error;
mod index;
pub mod inspect;
mod options;
mod poison;
mod projections;
mod snapshots;
mod streams;
mod subscription;
mod syncer;
pub mod system;
mod writer;

pub use builtin::{
    BuiltinLog, BuiltinOpenReport, EditState, HISTORY_LIMIT_MAX, HistoryPage, HistoryRequest,
    Message, RoomEdits,
};
pub use clock::{Clock, ManualClock, SystemClock};
pub use compaction::CompactionReport;
pub use engine::{Logbook, OpenReport, SnapshotReport, Stats, SubscriberStats};
pub use error::{Error, Result};
pub use index::IndexReport;
pub use logbook_compaction::CompactionPolicy;
pub use logbook_compaction::{SnapshotInfo, SnapshotPolicy};
pub use options::{AppendDurability, LogbookOptions};
pub use poison::Poison;
pub use projections::{Observer, ProjectionHandle, Projections};
pub use streams::{Direction, ExpectedVersion};
pub use subscription::Subscription;
pub use writer::AppendResult;

pub use logbook_projection::model::{self, BuiltinEvent};
pub use logbook_projection::projections::{self as builtin_projections, Interrupted, ResumePlan};
pub use logbook_projection::{
    Envelope, Event, EventData, NewEvent, Projection, RawEvent, RecordedEvent, StreamId, StreamKind,
};
pub use logbook_projection::{Jobs, Order, PageRequest, Rooms, RunLedger};
pub use logbook_wal::{
    Damage, DamagedRegion, KeepIntactReport, MemoryStorage, RecoveryMode, RecoveryReport, Storage,
    SyncPolicy, WalOptions,
};

// What a service needs to define its own events and projections, so that `logbook` is its one
// logbook dependency: the error `Event::encode_payload` returns, the codec, snapshot encoding,
// upcasters, and the file storage behind `Logbook::open_with_projections`.
pub use logbook_projection::projection::{SNAPSHOT_BYTES_MAX, restore_state, snapshot_state};
pub use logbook_projection::{Error as EventError, Result as EventResult};
pub use logbook_projection::{Page, RejectReason, codec, upcast};
pub use logbook_wal::FileStorage;
/// The serde the codec uses: derive with `#[serde(crate = "logbook::serde")]` to need no serde
/// dependency of your own (or depend on serde 1 yourself; both are the same crate).
pub use serde;
