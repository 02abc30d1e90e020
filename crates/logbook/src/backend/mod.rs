//! The storage seam: what the engine needs from storage, and nothing else.
//!
//! Owns: the [`Backend`] trait (appends with the expected-version check, stream and log reads,
//! stream heads, the durable position, deletes and truncations, syncing, waiting for durable
//! events, a stats section) and the [`DurableSink`] the engine hands a backend, through which
//! the backend delivers durable records, in position order and exactly once, before it
//! acknowledges the appends they hold. Must never: know event types, projections, hooks or
//! subscriptions (they sit above the seam, in the facade and `apply.rs`), or acknowledge an
//! append before the sink applied its records.
//!
//! Implementations: `embedded.rs`, today's WAL + sled stream index + snapshot files (unchanged
//! on disk, `docs/format.md`); a PostgreSQL implementation wraps `logbook-postgres`.
//!
//! **Why async methods returning boxed futures** (and not sync methods the facade runs on
//! `spawn_blocking`): the PostgreSQL store is async (`tokio-postgres`), and a sync trait would
//! make it block a runtime thread per call or nest runtimes; the embedded backend's append is a
//! channel send to the writer thread and an await of its reply, exactly what the facade did
//! before the seam, so the boxed future costs one allocation per call and no thread hop. The
//! trait stays object-safe (`Arc<dyn Backend>`). Reads that walk files run on `spawn_blocking`
//! inside the embedded implementation, as before. Queries answered from memory (heads, the
//! durable position, stats) are plain methods, and so are those of [`SnapshotStorage`]: the
//! engine calls them only from the snapshot thread and from blocking tasks, never from a
//! runtime worker, so an async store may `Handle::block_on` in them.

pub(crate) mod embedded;
#[cfg(feature = "postgres")]
pub(crate) mod postgres;

#[cfg(feature = "postgres")]
pub use postgres::{FOLLOW_RETRY_DELAY, PostgresStats};

pub use crate::apply::{DecodedBatch, DurableRecord};
use crate::consumer::ConsumerFilter;
use crate::error::Result;
use crate::options::AppendDurability;
use crate::poison::Poison;
use crate::streams::{Direction, ExpectedVersion, StreamState};
use crate::writer::AppendResult;
use logbook_compaction::{LoadOutcome, Snapshot, SnapshotInfo, SnapshotStore};
use logbook_projection::{EventData, RawEvent, StreamId};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

/// A durable record: its position and its envelope bytes, byte for byte as stored.
pub type Record = (u64, std::sync::Arc<Vec<u8>>);

/// A future a backend returns: boxed, so [`Backend`] stays object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A filtered read of the log ([`Backend::read_all_filtered`]).
#[derive(Debug, Default)]
pub struct FilteredRecords {
    /// The records the filter kept, in position order.
    pub records: Vec<Record>,
    /// The last position the read covered: positions from the start up to here that are not
    /// in `records` hold records the filter rejected (or nothing: purged), and no record can
    /// appear there later. Below the start position when the read covered nothing.
    pub through: u64,
    /// The last covered position up to `through` that is not a consumer checkpoint (`None`:
    /// none, or the records are all in `records`).
    pub counted: Option<u64>,
}

/// Events for one stream, appended as one atomic batch if the stream is at `expected`.
#[derive(Debug)]
pub struct AppendRequest {
    /// The stream (never a reserved one: the facade refuses those).
    pub stream: StreamId,
    /// The version the stream must be at; the backend checks it (it is the authority).
    pub expected: ExpectedVersion,
    /// The encoded events, checked against the limits by the facade.
    pub events: Vec<EventData>,
    /// When the append is acknowledged.
    pub durability: AppendDurability,
}

/// How a stream is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteMode {
    /// A permanent tombstone (`logbook.stream_deleted`): the id is never used again.
    Hard,
    /// Hides every version and lets them continue (`logbook.stream_soft_deleted`).
    Soft,
}

/// A stream's head as this process knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamHead {
    /// The last version written (hidden versions count), `None` when it never had one.
    pub last_version: Option<u64>,
    /// The position of its last event, `None` when it never had one.
    pub last_position: Option<u64>,
    /// Hard-deleted: the id is gone for good.
    pub deleted: bool,
    /// Versions below this one are hidden (truncated or soft-deleted).
    pub truncated_before: u64,
}

impl StreamHead {
    /// The head a stream table's entry describes (both backends answer from a table).
    pub(crate) fn of(state: &StreamState) -> StreamHead {
        StreamHead {
            last_version: state.last_version(),
            last_position: state.last_position(),
            deleted: state.deleted,
            truncated_before: state.truncated_before,
        }
    }
}

/// Backend-specific health figures, the backend section of [`Stats`](crate::Stats).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackendStats {
    /// The embedded log (WAL segments in a directory).
    Embedded(EmbeddedStats),
    /// A log in a PostgreSQL database.
    #[cfg(feature = "postgres")]
    Postgres(PostgresStats),
}

impl BackendStats {
    /// The embedded log's figures; `None` on another backend.
    pub fn embedded(&self) -> Option<&EmbeddedStats> {
        match self {
            BackendStats::Embedded(embedded) => Some(embedded),
            #[cfg(feature = "postgres")]
            BackendStats::Postgres(_) => None,
        }
    }
}

/// The embedded backend's figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddedStats {
    /// Segment files.
    pub segments: usize,
    /// Bytes in segment files.
    pub segment_bytes: u64,
    /// Durable appends since open that were handled on their caller's thread (checked there
    /// and, unless refused, written and synced there:
    /// [`crate::LogbookOptions::lone_appends_on_caller`]); the rest went through the writer
    /// thread.
    pub appends_on_caller: u64,
}

/// Where a backend delivers durable records: the engine's one apply (`apply.rs`: the durable
/// stream table, then every projection; then the snapshot thread follows). The backend decodes
/// each record once ([`DecodedBatch::decode`]), uses the decoded records for its own derived
/// data (the embedded stream index) and hands the same batch here.
pub trait DurableSink: Send + Sync {
    /// Applies records that just became durable (`batch`, and `decoded` from it), in position
    /// order, each exactly once, before the backend acknowledges the appends they hold. `Err`
    /// poisons the engine at the record that failed (or did not decode): the records before it
    /// are applied, it and the rest are not; the backend acknowledges only the appends wholly
    /// below it.
    fn apply(
        &self,
        batch: &[Record],
        decoded: &DecodedBatch<'_>,
    ) -> std::result::Result<(), Poison>;

    /// A failure below the seam (a failed fsync) poisons the engine at `position`; returns
    /// the poison in force (the first one wins).
    fn poison(&self, position: u64, reason: String) -> Poison;

    /// The engine's poison, once set: the backend acknowledges nothing more.
    fn poisoned(&self) -> Option<Poison>;

    /// Positions up to `through` hold nothing more to apply: a shared log's rows purged before
    /// this replica read them (they leave gaps no append fills). The applied position moves
    /// there, so that no wait for it hangs. Nothing happens once poisoned.
    fn passed(&self, through: u64);

    /// Hands newly durable records to live subscribers, after their appends were acknowledged.
    fn publish(&self, batch: Vec<Record>);

    /// Takes a snapshot now: everything the backend delivered before is applied. Answers on
    /// `reply` (an error once poisoned).
    fn snapshot(&self, reply: tokio::sync::oneshot::Sender<Result<SnapshotInfo>>);

    /// The backend delivers nothing more (it is closing): a deferred snapshot is taken, the
    /// snapshot thread stops, and live subscribers drain what is durable and end.
    fn closed(&self);
}

/// Snapshot storage, a part of a [`Backend`]: the snapshot thread stores through it, open
/// loads through it, compaction purges through it. Called only from the snapshot thread and
/// from blocking tasks, never from a runtime worker, so its methods are plain (an async store
/// may `Handle::block_on` in them). Implemented for the embedded snapshot files by
/// [`SnapshotStore`].
pub trait SnapshotStorage: Send + Sync {
    /// Stores a snapshot durably: once it returns, a crash keeps it.
    fn store(&self, snapshot: &Snapshot) -> Result<SnapshotInfo>;
    /// Keeps the newest `keep` snapshots and removes the rest; returns what it removed.
    fn retain(&self, keep: usize) -> Result<Vec<PathBuf>>;
    /// The newest valid snapshot, and the newer ones found unusable with why (a damaged
    /// snapshot is reported, never an error).
    fn load_newest(&self) -> Result<LoadOutcome>;
    /// Removes every snapshot below `position` (they may hold purged data); returns what it
    /// removed.
    fn remove_below(&self, position: u64) -> Result<Vec<PathBuf>>;
    /// Where the snapshots live, for reports (a directory; for a database, a name for it).
    fn location(&self) -> PathBuf;
}

impl SnapshotStorage for SnapshotStore {
    fn store(&self, snapshot: &Snapshot) -> Result<SnapshotInfo> {
        Ok(self.write(snapshot)?)
    }

    fn retain(&self, keep: usize) -> Result<Vec<PathBuf>> {
        Ok(SnapshotStore::retain(self, keep)?)
    }

    fn load_newest(&self) -> Result<LoadOutcome> {
        Ok(SnapshotStore::load_newest(self)?)
    }

    fn remove_below(&self, position: u64) -> Result<Vec<PathBuf>> {
        Ok(SnapshotStore::remove_below(self, position)?)
    }

    fn location(&self) -> PathBuf {
        self.dir().to_path_buf()
    }
}

/// What the engine needs from storage. See the module doc for the contract and why it is async.
pub trait Backend: Send + Sync + 'static {
    /// Appends `request` if its stream is at the expected version (checked here, by the
    /// backend: the one authority, whatever process appends) and returns its positions and
    /// versions. `Error::WrongExpectedVersion` carries the actual version.
    fn append(&self, request: AppendRequest) -> BoxFuture<'_, Result<AppendResult>>;

    /// Deletes a stream (a tombstone or a soft delete), `expected` checked as for an append.
    fn delete_stream(
        &self,
        stream: StreamId,
        expected: ExpectedVersion,
        mode: DeleteMode,
    ) -> BoxFuture<'_, Result<AppendResult>>;

    /// Hides the stream's versions below `before_version`.
    fn truncate_stream(
        &self,
        stream: StreamId,
        before_version: u64,
    ) -> BoxFuture<'_, Result<AppendResult>>;

    /// Makes everything appended so far durable and applied; returns the durable position.
    fn sync(&self) -> BoxFuture<'_, Result<u64>>;

    /// Up to `max` durable, visible events of a stream from `from_version`, forward or
    /// backward, in O(page) (never a scan of the log).
    fn read_stream(
        &self,
        stream: StreamId,
        from_version: u64,
        direction: Direction,
        max: usize,
    ) -> BoxFuture<'_, Result<Vec<RawEvent>>>;

    /// Up to `max` durable records of the whole log from `from_position`, the engine's own
    /// events included, in position order: each record's position and envelope bytes (what
    /// subscriptions catch up with and the facade decodes).
    fn read_all(&self, from_position: u64, max: usize) -> BoxFuture<'_, Result<Vec<Record>>>;

    /// Up to `max` durable records from `from_position` that `filter` keeps (never a reserved
    /// `$` record), and how far the read covered the log ([`FilteredRecords`]). A store that
    /// can filter in its query (PostgreSQL) never reads a rejected record's payload; the
    /// default reads the records unfiltered (the caller filters them on their headers).
    fn read_all_filtered<'a>(
        &'a self,
        from_position: u64,
        max: usize,
        filter: &'a ConsumerFilter,
    ) -> BoxFuture<'a, Result<FilteredRecords>> {
        let _ = filter;
        Box::pin(async move {
            let records = self.read_all(from_position, max).await?;
            let through = records
                .last()
                .map_or(from_position.saturating_sub(1), |(position, _)| *position);
            Ok(FilteredRecords {
                records,
                through,
                counted: None,
            })
        })
    }

    /// The stream's head as this process knows it (embedded: exact, appends not yet durable
    /// included; a shared backend: what this process wrote or applied, which the append's
    /// check in the backend may contradict); `None` for a stream never seen.
    fn stream_head(&self, stream: &StreamId) -> Option<StreamHead>;

    /// The version the next append to `stream` would get if it expected `expected`, as this
    /// process knows it (a dry run: the append's own check decides).
    fn check_expected_version(&self, stream: &StreamId, expected: ExpectedVersion) -> Result<u64>;

    /// Streams known (appends not yet durable included).
    fn stream_count(&self) -> usize;

    /// The last durable position.
    fn durable_position(&self) -> u64;

    /// The last position appended (durable or not).
    fn head_position(&self) -> u64;

    /// Waits until the durable position reaches `position` (making it durable if nothing else
    /// would); returns the durable position.
    fn wait_durable(&self, position: u64) -> BoxFuture<'_, Result<u64>>;

    /// Where snapshots are stored, loaded and purged (shared by every replica of a shared
    /// backend, so a new one opens from the newest snapshot plus the tail).
    fn snapshots(&self) -> Arc<dyn SnapshotStorage>;

    /// Takes a snapshot once everything appended before the call is durable and applied
    /// (embedded: through the writer's queue; a shared store: once this replica applied the
    /// log's head as of the call).
    fn snapshot(&self) -> BoxFuture<'_, Result<SnapshotInfo>>;

    /// Reclaims the space of removed events where the store keeps it until asked (PostgreSQL:
    /// `VACUUM` on the logbook tables). The embedded backend rewrites segments in compaction
    /// instead, and does nothing here.
    fn vacuum(&self) -> BoxFuture<'_, Result<()>>;

    /// The backend section of [`Stats`](crate::Stats).
    fn stats(&self) -> BackendStats;

    /// Makes everything durable and releases the storage (files, locks, connections); later
    /// calls fail with `Error::Closed`.
    fn close(&self) -> BoxFuture<'_, Result<()>>;
}
