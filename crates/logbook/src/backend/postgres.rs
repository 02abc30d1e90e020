//! The PostgreSQL backend: `logbook-postgres`'s shared store behind [`Backend`].
//!
//! Owns: the follower task that reads the shared log in position order (one `LISTEN` wake-up per
//! process, a periodic poll as the safety net) and hands every record to the engine's one apply
//! ([`DurableSink`]) exactly once, whichever replica wrote it; the stream table of what this
//! process applied (heads, expected-version dry runs); waiting for an append's own records to
//! be applied before it is acknowledged (so a caller reads its own writes); the engine's purge
//! events (a tombstone, a truncation) written with the rows' removal in one transaction; the
//! snapshot rows. Must never: acknowledge an append before the follower applied it, apply a
//! record twice or out of position order, decide an expected version itself (the store checks
//! it under the append lock: it is the one authority across replicas), or block a runtime
//! worker (the snapshot methods `block_on` only from the engine's own threads, as the trait
//! says).

use super::{
    AppendRequest, Backend, BackendStats, BoxFuture, DecodedBatch, DeleteMode, DurableSink,
    FilteredRecords, Record, SnapshotStorage, StreamHead,
};
use crate::apply::apply_catalog;
use crate::consumer::ConsumerFilter;
use crate::error::{Error, Result};
use crate::streams::{Direction, ExpectedVersion, StreamTable};
use crate::system::{self, SystemEvent};
use crate::writer::AppendResult;
use logbook_compaction::{
    CompactionPolicy, LoadOutcome, Snapshot, SnapshotInfo, decode_snapshot, encode_snapshot,
};
use logbook_postgres::{FollowOptions, PgStore, PurgeKind, RowFilter};
use logbook_projection::{EventData, RawEvent, StreamId};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::watch;

/// How long the follower waits before it reads again after a retryable error (a dropped
/// connection, a restarting server): the store's pool reconnects by itself meanwhile.
pub const FOLLOW_RETRY_DELAY: Duration = Duration::from_millis(200);

/// The PostgreSQL backend's figures, the backend section of [`Stats`](crate::Stats).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresStats {
    /// The database, without credentials (`host/port/dbname`).
    pub target: String,
    /// The last position in the shared log this process has applied.
    pub applied_position: u64,
    /// Retryable errors the follower met (and retried) since open.
    pub follow_retries: u64,
}

/// What the follower task and the handle share.
struct Followed {
    /// The last position handed to the sink (and so applied).
    applied: watch::Sender<u64>,
    /// Every stream as of `applied`.
    streams: RwLock<StreamTable>,
    /// A failure the follower cannot retry (the sink poisoned the engine, a corrupt row): the
    /// position it stopped at and why; every later call fails with it (`Error::Poisoned`).
    failed: Mutex<Option<(u64, String)>>,
    follow_retries: std::sync::atomic::AtomicU64,
}

impl Followed {
    fn failure(&self) -> Option<Error> {
        self.failed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
            .map(|(position, reason)| Error::Poisoned { position, reason })
    }

    /// Records why the follower stopped at `position` (the first one it could not apply).
    fn fail(&self, position: u64, error: &Error) {
        self.fail_with(position, error.to_string());
    }

    fn fail_with(&self, position: u64, reason: String) {
        tracing::error!(position, reason, "the PostgreSQL follower stopped");
        let mut failed = self
            .failed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        failed.get_or_insert((position, reason));
    }
}

/// Snapshots as rows of `logbook_snapshots`, shared by every replica: a new replica opens from
/// the newest one plus the tail. The engine calls these from its own threads (the snapshot
/// thread, open's blocking task), never from a runtime worker, so they `block_on` the store.
pub(crate) struct PgSnapshots {
    store: PgStore,
    runtime: tokio::runtime::Handle,
}

impl PgSnapshots {
    fn name(&self, position: u64) -> PathBuf {
        snapshot_name(self.store.target(), position)
    }
}

impl SnapshotStorage for PgSnapshots {
    fn store(&self, snapshot: &Snapshot) -> Result<SnapshotInfo> {
        let bytes = encode_snapshot(snapshot);
        let position = snapshot.position;
        self.runtime
            .block_on(self.store.put_snapshot(position, &bytes))
            .map_err(from_store)?;
        Ok(SnapshotInfo {
            path: self.name(position),
            position,
            bytes: bytes.len() as u64,
        })
    }

    fn retain(&self, keep: usize) -> Result<Vec<PathBuf>> {
        let removed = self
            .runtime
            .block_on(self.store.retain_snapshots(keep.max(1)))
            .map_err(from_store)?;
        Ok(removed
            .into_iter()
            .map(|position| self.name(position))
            .collect())
    }

    fn load_newest(&self) -> Result<LoadOutcome> {
        let newest = self
            .runtime
            .block_on(self.store.latest_snapshot())
            .map_err(from_store)?;
        let mut outcome = LoadOutcome::default();
        if let Some((position, bytes)) = newest {
            let name = self.name(position);
            match decode_snapshot(&bytes) {
                Ok(snapshot) if snapshot.position == position => {
                    let info = SnapshotInfo {
                        path: name,
                        position,
                        bytes: bytes.len() as u64,
                    };
                    outcome.snapshot = Some((info, snapshot));
                }
                Ok(snapshot) => outcome.rejected.push((
                    name,
                    format!("its header says position {}", snapshot.position),
                )),
                Err(error) => outcome.rejected.push((name, error.to_string())),
            }
        }
        Ok(outcome)
    }

    fn remove_below(&self, position: u64) -> Result<Vec<PathBuf>> {
        let removed = self
            .runtime
            .block_on(self.store.remove_snapshots_below(position))
            .map_err(from_store)?;
        Ok(removed
            .into_iter()
            .map(|position| self.name(position))
            .collect())
    }

    fn location(&self) -> PathBuf {
        PathBuf::from(format!(
            "postgres://{}/logbook_snapshots",
            self.store.target()
        ))
    }
}

/// A snapshot request: where the answer goes.
type SnapshotRequest = tokio::sync::oneshot::Sender<Result<SnapshotInfo>>;

/// The log in a PostgreSQL database, shared by every replica that opens it.
pub(crate) struct Postgres {
    store: PgStore,
    snapshots: Arc<PgSnapshots>,
    followed: Arc<Followed>,
    /// Snapshot requests, answered by the follower task between two applied pages.
    snapshot_requests: tokio::sync::mpsc::UnboundedSender<SnapshotRequest>,
    sink: Arc<dyn DurableSink>,
    stop: watch::Sender<bool>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    closed: AtomicBool,
}

impl Postgres {
    /// Starts following the log after `applied` (what the snapshot and the replay at open
    /// already gave the sink) with `streams` as of there.
    pub(crate) fn start(
        store: PgStore,
        sink: Arc<dyn DurableSink>,
        applied: u64,
        streams: StreamTable,
        compaction: CompactionPolicy,
    ) -> Postgres {
        let (applied_sender, _) = watch::channel(applied);
        let followed = Arc::new(Followed {
            applied: applied_sender,
            streams: RwLock::new(streams),
            failed: Mutex::new(None),
            follow_retries: std::sync::atomic::AtomicU64::new(0),
        });
        let (stop, stopped) = watch::channel(false);
        let (snapshot_requests, requests) = tokio::sync::mpsc::unbounded_channel();
        let follower = store.follow(applied + 1, FollowOptions::default());
        let task = tokio::spawn(follow(
            follower,
            sink.clone(),
            followed.clone(),
            compaction,
            stopped,
            requests,
        ));
        let snapshots = Arc::new(PgSnapshots {
            store: store.clone(),
            runtime: tokio::runtime::Handle::current(),
        });
        Postgres {
            store,
            snapshots,
            snapshot_requests,
            sink,
            followed,
            stop,
            task: Mutex::new(Some(task)),
            closed: AtomicBool::new(false),
        }
    }

    fn usable(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        match self.followed.failure() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// Waits until the follower applied `position` (or failed, or the log closed).
    async fn applied(&self, position: u64) -> Result<u64> {
        let mut applied = self.followed.applied.subscribe();
        loop {
            let now = *applied.borrow_and_update();
            if now >= position {
                return Ok(now);
            }
            self.usable()?;
            // The follower's poll interval bounds the wait even if a wake-up is lost; a check
            // every poll interval notices a follower that failed meanwhile.
            let changed =
                tokio::time::timeout(FOLLOW_RETRY_DELAY.max(Duration::from_millis(50)), async {
                    applied.changed().await
                })
                .await;
            if let Ok(Err(_)) = changed {
                return Err(Error::Closed);
            }
        }
    }

    /// Waits until `result`'s records are applied and returns it.
    async fn acknowledged(&self, result: AppendResult) -> Result<AppendResult> {
        self.applied(result.last_position).await?;
        Ok(result)
    }

    async fn purge(
        &self,
        stream: StreamId,
        expected: ExpectedVersion,
        kind: PurgeKind,
    ) -> Result<AppendResult> {
        self.usable()?;
        let name = stream.to_string();
        let make_event = move |before_version: u64| -> std::result::Result<EventData, String> {
            let event = match kind {
                PurgeKind::Delete => SystemEvent::StreamDeleted {
                    stream: name.clone(),
                },
                PurgeKind::SoftDelete => SystemEvent::StreamSoftDeleted {
                    stream: name.clone(),
                    before_version,
                },
                PurgeKind::Truncate { .. } => SystemEvent::StreamTruncated {
                    stream: name.clone(),
                    before_version,
                },
            };
            event.to_data().map_err(|error| error.to_string())
        };
        let outcome = self
            .store
            .purge_with_event(
                &stream,
                to_store_expected(expected),
                kind,
                &system::system_stream(),
                &make_event,
            )
            .await
            .map_err(from_store)?;
        let appended = outcome.appended;
        let result = AppendResult {
            first_position: appended.first_position,
            last_position: appended.first_position + appended.count - 1,
            first_version: appended.first_version,
            version: appended.first_version + appended.count - 1,
        };
        self.acknowledged(result).await
    }
}

/// Reads the shared log in position order and applies every page, until stopped or failed.
async fn follow(
    mut follower: logbook_postgres::Follower,
    sink: Arc<dyn DurableSink>,
    followed: Arc<Followed>,
    compaction: CompactionPolicy,
    mut stopped: watch::Receiver<bool>,
    mut snapshot_requests: tokio::sync::mpsc::UnboundedReceiver<SnapshotRequest>,
) {
    loop {
        let page = tokio::select! {
            page = follower.next_records() => page,
            Some(reply) = snapshot_requests.recv() => {
                // Between two applied pages: the state is as of `applied`, whole.
                sink.snapshot(reply);
                continue;
            }
            _ = stopped.changed() => return,
        };
        let page = match page {
            Ok(page) => page,
            Err(error) if error.is_retryable() => {
                followed.follow_retries.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%error, "reading the shared log failed; retrying");
                tokio::select! {
                    () = tokio::time::sleep(FOLLOW_RETRY_DELAY) => continue,
                    _ = stopped.changed() => return,
                }
            }
            Err(error) => {
                let next = *followed.applied.borrow() + 1;
                let error = from_store(error);
                sink.poison(next, format!("reading the shared log failed: {error}"));
                followed.fail(next, &error);
                return;
            }
        };
        let (records, through) = page;
        // The sink takes envelope bytes: the rows hold exactly these (the WAL's format).
        let batch: Vec<(u64, Arc<Vec<u8>>)> = records
            .into_iter()
            .map(|(position, bytes)| (position, Arc::new(bytes)))
            .collect();
        let decoded = DecodedBatch::decode(&batch);
        let outcome = sink.apply(&batch, &decoded);
        let applied_through = match &outcome {
            // Through the page's coverage: positions purged before they were read included.
            Ok(()) => Some(through),
            Err(poison) => Some(poison.position.saturating_sub(1)),
        };
        {
            let mut streams = followed
                .streams
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            for record in &decoded.records {
                if applied_through.is_none_or(|through| record.position > through) {
                    break;
                }
                if let Err(error) = apply_catalog(&mut streams, &compaction, record) {
                    drop(streams);
                    sink.poison(record.position, error.to_string());
                    followed.fail(record.position, &error);
                    return;
                }
            }
        }
        if let Some(through) = applied_through
            && through > *followed.applied.borrow()
        {
            followed.applied.send_replace(through);
        }
        match outcome {
            // Live subscribers get the records once they are applied.
            Ok(()) => {
                if batch.last().is_none_or(|(last, _)| *last < through) {
                    sink.passed(through);
                }
                if !batch.is_empty() {
                    sink.publish(batch);
                }
            }
            Err(poison) => {
                followed.fail_with(poison.position, poison.reason.clone());
                return;
            }
        }
    }
}

fn to_store_expected(expected: ExpectedVersion) -> logbook_postgres::ExpectedVersion {
    match expected {
        ExpectedVersion::Any => logbook_postgres::ExpectedVersion::Any,
        ExpectedVersion::NoStream => logbook_postgres::ExpectedVersion::NoStream,
        ExpectedVersion::StreamExists => logbook_postgres::ExpectedVersion::StreamExists,
        ExpectedVersion::Exact(version) => logbook_postgres::ExpectedVersion::Exact(version),
    }
}

fn from_store_expected(expected: logbook_postgres::ExpectedVersion) -> ExpectedVersion {
    match expected {
        logbook_postgres::ExpectedVersion::Any => ExpectedVersion::Any,
        logbook_postgres::ExpectedVersion::NoStream => ExpectedVersion::NoStream,
        logbook_postgres::ExpectedVersion::StreamExists => ExpectedVersion::StreamExists,
        logbook_postgres::ExpectedVersion::Exact(version) => ExpectedVersion::Exact(version),
    }
}

fn to_store_direction(direction: Direction) -> logbook_postgres::Direction {
    match direction {
        Direction::Forward => logbook_postgres::Direction::Forward,
        Direction::Backward => logbook_postgres::Direction::Backward,
    }
}

/// The engine's error for a store error: the outcomes the engine names itself keep their
/// engine variant (a version conflict, a deleted or missing stream), the rest is
/// [`Error::Postgres`] (its `is_retryable` says whether to try again).
pub(crate) fn from_store(error: logbook_postgres::Error) -> Error {
    match error {
        logbook_postgres::Error::WrongExpectedVersion {
            stream,
            expected,
            actual,
        } => Error::WrongExpectedVersion {
            stream,
            expected: from_store_expected(expected),
            actual,
        },
        logbook_postgres::Error::StreamDeleted { stream } => Error::StreamDeleted { stream },
        logbook_postgres::Error::StreamNotFound { stream } => Error::StreamNotFound { stream },
        logbook_postgres::Error::TruncateBeyondEnd { actual, before, .. } => Error::LimitExceeded {
            what: "truncate before_version (past the stream's end)",
            limit: actual.map_or(0, |version| version + 1),
            actual: before,
        },
        other => Error::Postgres(other),
    }
}

/// A name for a snapshot row where the engine reports a path.
fn snapshot_name(target: &str, position: u64) -> PathBuf {
    PathBuf::from(format!("postgres://{target}/logbook_snapshots/{position}"))
}

impl Backend for Postgres {
    fn append(&self, request: AppendRequest) -> BoxFuture<'_, Result<AppendResult>> {
        Box::pin(async move {
            self.usable()?;
            let count = request.events.len() as u64;
            let appended = self
                .store
                .append(logbook_postgres::AppendRequest {
                    stream: request.stream,
                    expected: to_store_expected(request.expected),
                    events: request.events,
                })
                .await
                .map_err(from_store)?;
            assert_eq!(
                appended.count, count,
                "the store appends every event or none"
            );
            assert!(count > 0, "the facade refuses an empty append");
            // Every append commits durably: `AppendDurability` changes nothing here.
            self.acknowledged(AppendResult {
                first_position: appended.first_position,
                last_position: appended.first_position + count - 1,
                first_version: appended.first_version,
                version: appended.first_version + count - 1,
            })
            .await
        })
    }

    fn delete_stream(
        &self,
        stream: StreamId,
        expected: ExpectedVersion,
        mode: DeleteMode,
    ) -> BoxFuture<'_, Result<AppendResult>> {
        let kind = match mode {
            DeleteMode::Hard => PurgeKind::Delete,
            DeleteMode::Soft => PurgeKind::SoftDelete,
        };
        Box::pin(self.purge(stream, expected, kind))
    }

    fn truncate_stream(
        &self,
        stream: StreamId,
        before_version: u64,
    ) -> BoxFuture<'_, Result<AppendResult>> {
        Box::pin(self.purge(
            stream,
            ExpectedVersion::Any,
            PurgeKind::Truncate { before_version },
        ))
    }

    fn sync(&self) -> BoxFuture<'_, Result<u64>> {
        Box::pin(async move {
            self.usable()?;
            // Every commit is durable; "applied" means this replica caught up with the log's
            // head as of now.
            let head = self.store.head_position().await.map_err(from_store)?;
            self.applied(head).await
        })
    }

    fn read_stream(
        &self,
        stream: StreamId,
        from_version: u64,
        direction: Direction,
        max: usize,
    ) -> BoxFuture<'_, Result<Vec<RawEvent>>> {
        Box::pin(async move {
            self.usable()?;
            self.store
                .read_stream(&stream, from_version, to_store_direction(direction), max)
                .await
                .map_err(from_store)
        })
    }

    fn read_all(&self, from_position: u64, max: usize) -> BoxFuture<'_, Result<Vec<Record>>> {
        Box::pin(async move {
            self.usable()?;
            let records = self
                .store
                .read_all_records(from_position, max)
                .await
                .map_err(from_store)?;
            Ok(records
                .into_iter()
                .map(|(position, bytes)| (position, Arc::new(bytes)))
                .collect())
        })
    }

    fn read_all_filtered<'a>(
        &'a self,
        from_position: u64,
        max: usize,
        filter: &'a ConsumerFilter,
    ) -> BoxFuture<'a, Result<FilteredRecords>> {
        Box::pin(async move {
            self.usable()?;
            let event_types = filter.event_type_list();
            let row_filter = RowFilter {
                hidden_prefix: system::RESERVED_PREFIX,
                stream: filter.stream_pattern(),
                event_types: event_types.as_deref(),
                uncounted_prefix: system::CONSUMER_STREAM_PREFIX,
            };
            let page = self
                .store
                .read_filtered_records(from_position, max, row_filter)
                .await
                .map_err(from_store)?;
            Ok(FilteredRecords {
                records: page
                    .records
                    .into_iter()
                    .map(|(position, bytes)| (position, Arc::new(bytes)))
                    .collect(),
                through: page.through,
                counted: page.counted,
            })
        })
    }

    fn stream_head(&self, stream: &StreamId) -> Option<StreamHead> {
        let streams = self
            .followed
            .streams
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        streams.get(stream).map(StreamHead::of)
    }

    fn check_expected_version(&self, stream: &StreamId, expected: ExpectedVersion) -> Result<u64> {
        // What this replica applied: the append's own check in the store may still disagree
        // (another replica appended meanwhile).
        self.followed
            .streams
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .check(stream, expected)
    }

    fn stream_count(&self) -> usize {
        self.followed
            .streams
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .len()
    }

    fn durable_position(&self) -> u64 {
        *self.followed.applied.borrow()
    }

    fn head_position(&self) -> u64 {
        *self.followed.applied.borrow()
    }

    fn wait_durable(&self, position: u64) -> BoxFuture<'_, Result<u64>> {
        Box::pin(async move {
            let head = self.store.head_position().await.map_err(from_store)?;
            // A position no append reached yet would never be applied: wait for the head.
            self.applied(position.min(head)).await
        })
    }

    fn snapshots(&self) -> Arc<dyn SnapshotStorage> {
        self.snapshots.clone()
    }

    fn snapshot(&self) -> BoxFuture<'_, Result<SnapshotInfo>> {
        Box::pin(async move {
            self.usable()?;
            let head = self.store.head_position().await.map_err(from_store)?;
            self.applied(head).await?;
            let (reply, answer) = tokio::sync::oneshot::channel();
            self.snapshot_requests
                .send(reply)
                .map_err(|_| Error::Closed)?;
            answer.await.map_err(|_| Error::Closed)?
        })
    }

    fn vacuum(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            self.usable()?;
            self.store.vacuum().await.map_err(from_store)
        })
    }

    fn stats(&self) -> BackendStats {
        BackendStats::Postgres(PostgresStats {
            target: self.store.target().to_string(),
            applied_position: *self.followed.applied.borrow(),
            follow_retries: self.followed.follow_retries.load(Ordering::Relaxed),
        })
    }

    fn close(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            if self.closed.swap(true, Ordering::AcqRel) {
                return Ok(());
            }
            let _ = self.stop.send(true);
            let task = self
                .task
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .take();
            if let Some(task) = task {
                task.await.map_err(|error| Error::Task(error.to_string()))?;
            }
            // Nothing more is delivered: a deferred snapshot is taken, the snapshot thread
            // stops, live subscribers drain and end.
            let sink = self.sink.clone();
            tokio::task::spawn_blocking(move || sink.closed())
                .await
                .map_err(|error| Error::Task(error.to_string()))?;
            match self.followed.failure() {
                Some(error) => Err(error),
                None => Ok(()),
            }
        })
    }
}

/// Records read per page while replaying the tail at open.
pub const OPEN_REPLAY_PAGE: usize = 1000;

/// Opens the store at `url` (creating or migrating its schema) with the engine's defaults.
pub(crate) async fn open_store(url: &str) -> Result<PgStore> {
    PgStore::open(url, logbook_postgres::StoreOptions::default())
        .await
        .map_err(from_store)
}

/// The snapshot storage of `store`, for open's restore (before the backend starts).
pub(crate) fn snapshot_storage(store: &PgStore) -> Arc<PgSnapshots> {
    Arc::new(PgSnapshots {
        store: store.clone(),
        runtime: tokio::runtime::Handle::current(),
    })
}

/// Replays the shared log after the snapshot (`start`) through the one apply, up to the log's
/// head as of now; returns the stream table, the last position applied and the events
/// replayed. Runs on open's blocking task: it `block_on`s the store.
pub(crate) fn replay_tail(
    store: &PgStore,
    runtime: &tokio::runtime::Handle,
    applier: &dyn crate::projections::Applier,
    start: (StreamTable, u64),
    compaction: &CompactionPolicy,
) -> Result<(StreamTable, u64, u64)> {
    let _span = tracing::info_span!("replay_postgres").entered();
    let (mut streams, mut applied) = start;
    let head = runtime
        .block_on(store.head_position())
        .map_err(from_store)?;
    let mut count = 0u64;
    if applied >= head {
        return Ok((streams, applied, count));
    }
    // A follower reads the next pages ahead while this thread applies one. It stops at the
    // head read above: every position up to it is covered by a page (purged ones included),
    // so the loop never waits for a wake-up.
    let _context = runtime.enter();
    let options = FollowOptions {
        page_max: OPEN_REPLAY_PAGE,
        ..FollowOptions::default()
    };
    let mut follower = store.follow(applied + 1, options);
    // The projections take the records a chunk at a time (flushed after the last one).
    let mut replayer = applier.replayer();
    while applied < head {
        let (page, through) = runtime
            .block_on(follower.next_records())
            .map_err(from_store)?;
        for (position, bytes) in &page {
            let record = crate::apply::DurableRecord::decode(*position, bytes)?;
            crate::apply::apply_catalog(&mut streams, compaction, &record)?;
            replayer.apply(&record, None)?;
            count += 1;
        }
        // Positions up to `through` that the page does not hold were purged since (a stream
        // deleted outside the engine): nothing will ever fill them.
        assert!(through > applied, "replay pages ascend");
        applied = through;
    }
    replayer.flush();
    Ok((streams, applied, count))
}
