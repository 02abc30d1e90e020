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
//!
//! ## Your own events and projections
//!
//! The whole custom flow, with `logbook` as the one dependency: an event enum, a projection
//! with snapshot/restore and purge, an observer, appends with expected versions, a command
//! that decides on durable state ([`Logbook::execute`]), a subscription, a delete, and a
//! reopen from the snapshot.
//!
//! ```
//! use logbook::serde::{Deserialize, Serialize};
//! use logbook::{
//!     CommandError, Event, EventResult, ExpectedVersion, Logbook, LogbookOptions, NewEvent,
//!     Observer, Projection, Projections, RecordedEvent, StreamId, codec, restore_state,
//!     snapshot_state,
//! };
//! use std::collections::BTreeMap;
//!
//! /// The events. The codec is bincode over serde: plain enums and structs, no
//! /// `#[serde(tag)]`, `untagged`, `flatten` or `skip_serializing_if` (see [`Event`]).
//! #[derive(Debug, Clone, Serialize, Deserialize)]
//! #[serde(crate = "logbook::serde")]
//! enum TaskEvent {
//!     Started { name: String },
//!     Progressed { percent: u8 },
//!     Finished,
//! }
//!
//! impl Event for TaskEvent {
//!     fn event_type(&self) -> &'static str {
//!         match self {
//!             TaskEvent::Started { .. } => "task.started",
//!             TaskEvent::Progressed { .. } => "task.progressed",
//!             TaskEvent::Finished => "task.finished",
//!         }
//!     }
//!     fn schema_version(&self) -> u16 {
//!         1
//!     }
//!     fn encode_payload(&self) -> EventResult<Vec<u8>> {
//!         codec::encode(self)
//!     }
//!     fn decode_payload(_type: &str, _schema: u16, payload: &[u8]) -> EventResult<Self> {
//!         codec::decode(payload, 64 * 1024)
//!     }
//! }
//!
//! #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
//! #[serde(crate = "logbook::serde")]
//! struct Task {
//!     name: String,
//!     percent: u8,
//!     finished: bool,
//! }
//!
//! /// The projection: every task by stream id.
//! #[derive(Debug, Clone, Default)]
//! struct Tasks(BTreeMap<String, Task>);
//!
//! impl Projection for Tasks {
//!     type Event = TaskEvent;
//!     fn id(&self) -> &'static str {
//!         "tasks"
//!     }
//!     fn state_version(&self) -> u16 {
//!         1
//!     }
//!     fn apply(&mut self, event: &RecordedEvent<TaskEvent>) {
//!         let task = self.0.entry(event.stream.to_string()).or_default();
//!         match &event.event {
//!             TaskEvent::Started { name } => task.name.clone_from(name),
//!             TaskEvent::Progressed { percent } => task.percent = *percent,
//!             TaskEvent::Finished => task.finished = true,
//!         }
//!     }
//!     fn snapshot(&self) -> EventResult<Vec<u8>> {
//!         snapshot_state(&self.0)
//!     }
//!     fn restore(&mut self, version: u16, bytes: &[u8]) -> EventResult<()> {
//!         self.0 = restore_state("tasks", 1, version, bytes)?;
//!         Ok(())
//!     }
//!     // Purges: everything derived from a deleted (or truncated) stream must go, or it
//!     // survives in the next snapshot.
//!     fn stream_deleted(&mut self, stream: &StreamId) -> bool {
//!         self.0.remove(stream.as_str()).is_some()
//!     }
//!     fn stream_truncated(&mut self, _stream: &StreamId, _before_version: u64) -> bool {
//!         false // a task's state is its whole history: nothing to forget
//!     }
//! }
//!
//! /// Hooks run on the engine's thread after each durable change: keep them short.
//! struct Log;
//! impl Observer<Tasks> for Log {
//!     fn upserted(&self, state: &Tasks, event: &RecordedEvent<TaskEvent>) {
//!         let task = &state.0[event.stream.as_str()];
//!         println!("{}: {} at {}%", event.stream, task.name, task.percent);
//!     }
//! }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let dir = tempfile::tempdir()?;
//! let mut projections = Projections::new();
//! let tasks = projections.register(Tasks::default());
//! tasks.observe(Log);
//! let (log, _report) =
//!     Logbook::open_dir_with_projections(dir.path(), LogbookOptions::default(), projections)
//!         .await?;
//! let mut subscription = log.subscribe(0);
//!
//! // Appends with expected versions: `NoStream` creates, `Exact(v)` continues.
//! let backup = StreamId::new("task-backup")?;
//! let started = TaskEvent::Started { name: "backup".into() };
//! log.append(&backup, ExpectedVersion::NoStream, vec![NewEvent::new(started)]).await?;
//! let again = TaskEvent::Started { name: "again".into() };
//! let conflict = log.append(&backup, ExpectedVersion::NoStream, vec![again.into()]).await;
//! assert!(matches!(conflict, Err(logbook::Error::WrongExpectedVersion { .. })));
//!
//! // A command: decide on the durable state, append with the version it saw, retried on a
//! // concurrent change; a refusal is the service's own error type.
//! let progress = |percent| {
//!     move |state: &Tasks| match state.0.get("task-backup") {
//!         Some(task) if task.finished => Err("the task is finished"),
//!         Some(_) => Ok(vec![TaskEvent::Progressed { percent }]),
//!         None => Err("no such task"),
//!     }
//! };
//! log.execute(&tasks, &backup, progress(50)).await?;
//! log.execute(&tasks, &backup, |_: &Tasks| Ok::<_, &str>(vec![TaskEvent::Finished])).await?;
//! let refused = log.execute(&tasks, &backup, progress(60)).await;
//! assert!(matches!(refused, Err(CommandError::Rejected("the task is finished"))));
//! assert_eq!(tasks.read().0["task-backup"].percent, 50);
//!
//! // The subscription sees every durable event, in position order.
//! let first = subscription.next().await.expect("open")?;
//! assert_eq!(first.event_type, "task.started");
//!
//! // A delete purges the stream's entity from the projection now, and its bytes from the
//! // files at the next compaction.
//! let scratch = StreamId::new("task-scratch")?;
//! let started = TaskEvent::Started { name: "scratch".into() };
//! let written = log.append(&scratch, ExpectedVersion::NoStream, vec![started.into()]).await?;
//! log.delete_stream(&scratch, ExpectedVersion::Exact(written.version)).await?;
//! assert!(!tasks.read().0.contains_key("task-scratch"));
//!
//! log.snapshot().await?;
//! log.close().await?; // releases the directory, even while `subscription` lives
//! assert!(subscription.next().await.is_some()); // it delivers what was durable, then ends
//!
//! // Reopen: the projection is restored from the snapshot (and the events after it).
//! let mut projections = Projections::new();
//! let tasks = projections.register(Tasks::default());
//! let (log, report) =
//!     Logbook::open_dir_with_projections(dir.path(), LogbookOptions::default(), projections)
//!         .await?;
//! assert!(report.snapshot.used.is_some());
//! assert!(tasks.read().0["task-backup"].finished);
//! log.close().await?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod apply;
pub mod backend;
mod builtin;
mod clock;
mod command;
mod compaction;
pub mod consumer;
pub mod copy;
mod engine;
mod error;
pub mod import;
mod index;
pub mod inspect;
mod options;
mod poison;
mod projections;
mod replay;
mod seat;
mod snapshots;
mod streams;
mod subscription;
mod syncer;
pub mod system;
mod writer;

pub use backend::{BackendStats, EmbeddedStats};
pub use builtin::{
    BuiltinLog, BuiltinOpenReport, EditState, HISTORY_LIMIT_MAX, HistoryPage, HistoryRequest,
    Message, RoomEdits,
};
pub use clock::{Clock, ManualClock, SystemClock};
pub use command::{CommandError, EXECUTE_ATTEMPTS_MAX};
pub use compaction::CompactionReport;
pub use consumer::{
    Consumer, ConsumerFilter, ConsumerOptions, ConsumerStats, RESERVED_POSITIONS_KEPT,
};
pub use engine::{Logbook, OpenReport, SnapshotReport, Stats, SubscriberStats};
pub use error::{Error, Result};
pub use index::IndexReport;
pub use logbook_compaction::CompactionPolicy;
pub use logbook_compaction::{SnapshotInfo, SnapshotPolicy};
pub use options::{AppendDurability, LONE_SYNC_MAX_DEFAULT, LogbookOptions};
pub use poison::Poison;
pub use projections::{Observer, ProjectionHandle, ProjectionRead, Projections};
pub use snapshots::SnapshotWritten;
pub use streams::{Direction, ExpectedVersion};
pub use subscription::Subscription;
pub use writer::AppendResult;

pub use logbook_projection::model::{self, BuiltinEvent};
pub use logbook_projection::projections::{self as builtin_projections, Interrupted, ResumePlan};
pub use logbook_projection::{
    Envelope, Event, EventData, EventType, NewEvent, Projection, RawEvent, RecordedEvent, StreamId,
    StreamKind, TIMESTAMP_MS_MAX,
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
/// The async runtime the engine runs on, so that a service needs no other dependency:
/// `#[logbook::tokio::main(crate = "logbook::tokio")]` (or your own `tokio = "1"`; both are
/// the same crate).
pub use tokio;
