//! logbook on PostgreSQL: the store a multi-replica service shares (issue 13).
//!
//! Owns: the logbook schema in a PostgreSQL database ([`schema`]), grouped appends with
//! per-stream optimistic concurrency and dense global positions in commit order, reads of the
//! global log and of one stream, stream deletion and truncation that remove rows, snapshots,
//! VACUUM ([`store`]), the group committer behind [`PgStore::append`] ([`committer`]),
//! following the log without gaps ([`follower`]) and the `LISTEN` wake-up ([`listener`]).
//! See docs/postgres.md. Events are stored as the same envelope bytes the WAL
//! stores ([`logbook_projection::Envelope`]), so a log can move between backends byte for byte.
//! Never: depends on the engine (`logbook`): the engine's storage seam will wrap this crate;
//! decodes payloads (only envelope headers); panics or unwraps on bytes read from the database;
//! reports a raw SQLSTATE as the whole error.
//!
//! ```no_run
//! use logbook_postgres::{AppendRequest, ExpectedVersion, PgStore, StoreOptions};
//! use logbook_projection::{EventData, StreamId};
//!
//! # async fn demo() -> logbook_postgres::Result<()> {
//! let store = PgStore::open("postgres://logbook@db.internal/logbook", StoreOptions::default())
//!     .await?;
//! let request = AppendRequest {
//!     stream: StreamId::room("lobby").expect("valid stream"),
//!     expected: ExpectedVersion::NoStream,
//!     events: vec![EventData::new("room.opened", 1, vec![1, 2, 3]).expect("valid event")],
//! };
//! let appended = store.append(request).await?;
//! let mut follower = store.follow(appended.first_position, Default::default());
//! let page = follower.next_page().await?;
//! assert_eq!(page.len(), 1);
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

pub mod committer;
pub mod error;
pub mod filtered;
pub mod follower;
pub mod import;
pub mod inspect;
pub mod listener;
mod pipeline;
pub mod purge;
pub mod schema;
pub mod store;

pub use error::{Error, Result};
pub use filtered::{FILTER_SCAN_POSITIONS_MAX, FilteredPage, RowFilter};
pub use follower::{
    FOLLOW_POLL_INTERVAL_DEFAULT, FOLLOW_READ_AHEAD_DEFAULT, FOLLOW_READ_AHEAD_MAX, FollowOptions,
    Follower,
};
pub use import::{ImportPart, Imported, ImportedStream};
pub use inspect::{
    EventRow, EventTotals, KeyCount, SnapshotRow, StreamRow, StreamTotals, TableSize,
};
pub use listener::Listener;
pub use purge::{PurgeKind, PurgeOutcome};
pub use store::{
    APPEND_LOCK_KEY, AppendRequest, Appended, NOTIFY_CHANNEL, PgStore, Purged, READ_PAGE_MAX,
    StoreOptions, StreamHead,
};

/// What an append (or a delete) expects of its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// No check.
    Any,
    /// The stream has no events yet.
    NoStream,
    /// The stream has at least one event.
    StreamExists,
    /// The stream's last event has this version (0-based).
    Exact(u64),
}

impl ExpectedVersion {
    /// Whether a stream whose last version is `actual` satisfies this expectation.
    pub fn matches(self, actual: Option<u64>) -> bool {
        match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => actual.is_none(),
            ExpectedVersion::StreamExists => actual.is_some(),
            ExpectedVersion::Exact(version) => actual == Some(version),
        }
    }
}

impl std::fmt::Display for ExpectedVersion {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExpectedVersion::Any => formatter.write_str("any"),
            ExpectedVersion::NoStream => formatter.write_str("no stream"),
            ExpectedVersion::StreamExists => formatter.write_str("stream exists"),
            ExpectedVersion::Exact(version) => write!(formatter, "{version}"),
        }
    }
}

/// Direction of a stream read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Oldest first, from `from_version` up.
    Forward,
    /// Newest first, from `from_version` down.
    Backward,
}
