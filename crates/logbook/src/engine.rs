//! The engine: [`Logbook`], the one handle a service embeds.
//!
//! Owns: opening (WAL recovery, then replay of the log into the stream table), the request path
//! to the writer, stream and log reads, subscriptions, stats and close. Must never: write to the
//! WAL itself (only the writer thread does), or expose a record above the durable position.

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::index::{IndexReport, StreamIndex};
use crate::options::{AppendDurability, LogbookOptions};
use crate::poison::{Poison, PoisonCell};
use crate::projections::{Applier, Projections, TypedApplier};
use crate::snapshots::{self as snapshotting, SnapshotReply, Snapshotter};
use crate::streams::{Direction, ExpectedVersion, StreamTable};
use crate::subscription::{SubscriberSlot, Subscription};
use crate::syncer::{self, LiveRecord, SyncJob};
use crate::system::{self, STREAM_DELETED, STREAM_TRUNCATED, SystemEvent};
use crate::writer::{self, AppendResult, Command};
use logbook_compaction::{CompactionPolicy, SnapshotInfo, SnapshotStore};
use logbook_projection::{EnvelopeRef, Event, NewEvent, RawEvent, RecordedEvent, StreamId};
use logbook_wal::{FileStorage, RecoveryMode, RecoveryReport, Storage, Wal};
use std::collections::HashMap;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc, oneshot};

/// What open found and did.
#[derive(Debug, Clone)]
pub struct OpenReport {
    /// The WAL's recovery report (tail cut, salvage, records scanned).
    pub wal: RecoveryReport,
    /// The stream index: where it was complete, and whether it had to be rebuilt.
    pub index: IndexReport,
    /// The snapshot open started from, and the ones it rejected.
    pub snapshot: SnapshotReport,
    /// Events replayed into the stream table.
    pub events_replayed: u64,
    /// Streams known after replay.
    pub streams: usize,
    /// How long open took, recovery and replay included.
    pub duration: Duration,
}

/// Which snapshot open used.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotReport {
    /// The snapshot restored (replay started after its position); `None`: full replay.
    pub used: Option<logbook_compaction::SnapshotInfo>,
    /// Snapshot files rejected (corrupt, truncated, unknown version, ahead of the log), and why.
    pub rejected: Vec<(PathBuf, String)>,
}

/// A live subscriber's progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriberStats {
    /// The subscription's id.
    pub id: u64,
    /// The next position it will read.
    pub next_position: u64,
    /// Durable events it has not yet received.
    pub lag: u64,
}

/// Health, typed: nobody should scrape logs for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    /// The last position appended (durable or not).
    pub head_position: u64,
    /// The last durable position.
    pub durable_position: u64,
    /// Segment files.
    pub segments: usize,
    /// Bytes in segment files.
    pub segment_bytes: u64,
    /// Streams known.
    pub streams: usize,
    /// Live subscribers.
    pub subscribers: Vec<SubscriberStats>,
    /// Set after a failed WAL write or fsync, or a durable event that could not be applied:
    /// the position and cause. Writes fail with [`Error::Poisoned`] until the log is reopened.
    pub poisoned: Option<Poison>,
    /// Observer hook calls (`restored`, `upserted`, `deleted`) that panicked since open, over
    /// all projections: each was caught and logged, and the engine went on (see
    /// [`crate::Observer`]). Nonzero means an observer has a bug and missed those calls.
    pub observer_panics: u64,
}

/// State shared by the handle, the writer, the syncer and subscriptions.
pub(crate) struct Shared {
    pub(crate) wal: Arc<Wal>,
    pub(crate) streams: RwLock<StreamTable>,
    /// `None` once the syncer stopped: live subscribers then drain the log and end.
    live: Mutex<Option<broadcast::Sender<Arc<Vec<LiveRecord>>>>>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) options: LogbookOptions,
    subscribers: Mutex<HashMap<u64, Arc<SubscriberSlot>>>,
    next_subscriber: AtomicU64,
    dir: PathBuf,
    pub(crate) applier: Box<dyn Applier>,
    pub(crate) index: StreamIndex,
    /// The stream catalog as of the last applied event: what snapshots store.
    pub(crate) catalog: Mutex<StreamTable>,
    pub(crate) snapshots: Snapshotter,
    pub(crate) snapshot_store: Arc<SnapshotStore>,
    /// The last position applied to the projections (and published to subscribers).
    pub(crate) applied: tokio::sync::watch::Sender<u64>,
    /// Held for a whole compaction: one at a time.
    pub(crate) compaction_lock: Mutex<()>,
    /// The first failure the engine cannot undo in-process (see `poison.rs`).
    pub(crate) poisoned: PoisonCell,
}

impl Shared {
    pub(crate) fn publish(&self, batch: Vec<LiveRecord>) {
        if let Some(live) = self
            .live
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .as_ref()
        {
            // No receiver is fine: subscribers that join later read the log.
            let _ = live.send(Arc::new(batch));
        }
    }

    /// Applies newly durable records to the catalog, the index and the projections, in position
    /// order, before their appends are acknowledged (so a caller reads its own writes). A record
    /// the catalog or the projections cannot take poisons the engine: the records before it are
    /// applied, it and the rest are not, and the error names it.
    pub(crate) fn apply(&self, batch: &[LiveRecord]) -> std::result::Result<(), Poison> {
        if let Some(poison) = self.poison() {
            return Err(poison.clone());
        }
        let records: Vec<(u64, &[u8])> = batch
            .iter()
            .map(|(position, bytes)| (*position, bytes.as_slice()))
            .collect();
        // Derived data, rebuilt at the next open: a failure here is logged, never poison.
        if let Err(error) = index_records(&self.index, &records) {
            tracing::error!(%error, "stream index update failed; it is rebuilt at the next open");
        }
        let outcome = self.apply_records(batch);
        let last_applied = match &outcome {
            Ok(()) => batch.last().map(|(position, _)| *position),
            Err(poison) => Some(poison.position.saturating_sub(1)),
        };
        if let Some(last) = last_applied.filter(|last| *last > *self.applied.borrow()) {
            self.applied.send_replace(last);
        }
        if outcome.is_ok() && !batch.is_empty() {
            self.snapshots.follow(batch);
            let bytes = batch.iter().map(|(_, bytes)| bytes.len() as u64).sum();
            if self.snapshots.count(batch.len() as u64, bytes) {
                self.take_snapshot(None);
            }
        }
        outcome
    }

    /// Applies each record to the catalog, then the projections; stops at the first failure.
    fn apply_records(&self, batch: &[LiveRecord]) -> std::result::Result<(), Poison> {
        for (position, bytes) in batch {
            let position = *position;
            let applied = self.apply_catalog(position, bytes).and_then(|()| {
                self.applier
                    .apply_durable(position, bytes)
                    .map_err(|error| format!("not applied to the projections: {error}"))
            });
            if let Err(reason) = applied {
                return Err(self.poison_at(position, reason).clone());
            }
        }
        Ok(())
    }

    /// Keeps the durable stream catalog in step with the applied events.
    fn apply_catalog(&self, position: u64, bytes: &[u8]) -> std::result::Result<(), String> {
        let mut catalog = self
            .catalog
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        replay_record(&mut catalog, &self.options.compaction, position, bytes)
            .map_err(|error| format!("not applied to the stream catalog: {error}"))?;
        Ok(())
    }

    /// Snapshots the catalog and projections as of the last applied event (syncer thread, between
    /// two applied batches); the snapshot thread encodes its replica, never the live state.
    pub(crate) fn take_snapshot(&self, reply: Option<SnapshotReply>) {
        if let Some(poison) = self.poison() {
            // The state may hold half of the failed record: never persist it.
            if let Some(reply) = reply {
                let _ = reply.send(Err(poison.error()));
            }
            return;
        }
        let position = *self.applied.borrow();
        let seed = || {
            let catalog = self
                .catalog
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .clone();
            (catalog, self.applier.replicas())
        };
        self.snapshots.take(position, seed, reply);
    }

    /// Joins the live broadcast; `None` once the log is closed.
    pub(crate) fn subscribe_live(&self) -> Option<broadcast::Receiver<Arc<Vec<LiveRecord>>>> {
        self.live
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .as_ref()
            .map(broadcast::Sender::subscribe)
    }

    /// Ends the live broadcast (the syncer stopped): receivers see `Closed` after the last batch.
    pub(crate) fn end_live(&self) {
        self.live
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
    }

    pub(crate) fn register_subscriber(&self, from: u64) -> (u64, Arc<SubscriberSlot>) {
        let id = self.next_subscriber.fetch_add(1, Ordering::Relaxed);
        let slot = Arc::new(SubscriberSlot {
            next_position: AtomicU64::new(from),
        });
        self.subscribers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(id, slot.clone());
        (id, slot)
    }

    pub(crate) fn unregister_subscriber(&self, id: u64) {
        self.subscribers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&id);
    }
}

struct Threads {
    writer: Option<JoinHandle<()>>,
    syncer: Option<JoinHandle<()>>,
}

/// The event log. Cheap to clone; all clones share one writer. Dropping the last clone stops
/// the writer after it has made every written event durable.
pub struct Logbook<E> {
    shared: Arc<Shared>,
    requests: mpsc::Sender<Command>,
    threads: Arc<Mutex<Threads>>,
    _event: PhantomData<fn() -> E>,
}

impl<E> Clone for Logbook<E> {
    fn clone(&self) -> Self {
        Logbook {
            shared: self.shared.clone(),
            requests: self.requests.clone(),
            threads: self.threads.clone(),
            _event: PhantomData,
        }
    }
}

impl<E> std::fmt::Debug for Logbook<E> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Logbook")
            .field("dir", &self.shared.dir)
            .finish()
    }
}

fn blocking_error(error: tokio::task::JoinError) -> Error {
    Error::Task(error.to_string())
}

impl<E: Event> Logbook<E> {
    /// Opens (or creates) the log in `dir`: WAL recovery, then replay into the stream table.
    pub async fn open(
        dir: impl AsRef<Path>,
        options: LogbookOptions,
    ) -> Result<(Self, OpenReport)> {
        Self::open_with_storage(Arc::new(FileStorage::new()), dir, options).await
    }

    /// Opens (or creates) the log in `dir` on the file system and rebuilds `projections` by
    /// replaying it: [`Logbook::open_with_projections`] without naming a storage, what a
    /// service with its own projections calls.
    pub async fn open_dir_with_projections(
        dir: impl AsRef<Path>,
        options: LogbookOptions,
        projections: Projections<E>,
    ) -> Result<(Self, OpenReport)> {
        Self::open_with_projections(Arc::new(FileStorage::new()), dir, options, projections).await
    }

    /// [`Logbook::open`] on any storage (the in-memory one in tests).
    pub async fn open_with_storage(
        storage: Arc<dyn Storage>,
        dir: impl AsRef<Path>,
        options: LogbookOptions,
    ) -> Result<(Self, OpenReport)> {
        Self::open_with_projections(storage, dir, options, Projections::new()).await
    }

    /// Opens the log and rebuilds `projections` by replaying it; from then on each durable
    /// event is applied to them before its append is acknowledged.
    pub async fn open_with_projections(
        storage: Arc<dyn Storage>,
        dir: impl AsRef<Path>,
        options: LogbookOptions,
        projections: Projections<E>,
    ) -> Result<(Self, OpenReport)> {
        let dir = dir.as_ref().to_path_buf();
        let span_dir = dir.clone();
        let damaged_dir = dir.clone();
        let (log, report) = tokio::task::spawn_blocking(move || {
            let _span = tracing::info_span!("open", dir = %span_dir.display()).entered();
            Self::open_blocking(storage, dir, options, projections)
        })
        .await
        .map_err(blocking_error)?
        .map_err(|error| match error {
            // Corruption found by the WAL's open or by the replay: the one open failure an
            // operator must act on, so the error says how.
            Error::Wal(wal) if wal.is_corruption() => Error::Damaged {
                dir: damaged_dir,
                wal,
            },
            error => error,
        })?;
        log.spawn_background_compaction();
        Ok((log, report))
    }

    /// Compacts every [`CompactionPolicy::every`](logbook_compaction::CompactionPolicy) in a
    /// task that holds only weak references: it never keeps a dropped log alive, and ends
    /// once the log is closed.
    fn spawn_background_compaction(&self) {
        let every = self.shared.options.compaction.every;
        if every.is_zero() {
            return;
        }
        let shared = Arc::downgrade(&self.shared);
        let requests = self.requests.downgrade();
        let threads = Arc::downgrade(&self.threads);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let (Some(shared), Some(requests), Some(threads)) =
                    (shared.upgrade(), requests.upgrade(), threads.upgrade())
                else {
                    break;
                };
                let log = Logbook::<E> {
                    shared,
                    requests,
                    threads,
                    _event: PhantomData,
                };
                match log.compact().await {
                    Ok(report) => tracing::debug!(
                        records_dropped = report.records_dropped,
                        segments_rewritten = report.segments_rewritten,
                        "background compaction"
                    ),
                    // A poisoned log refuses every write until it is reopened: stop trying.
                    Err(Error::Closed | Error::Poisoned { .. }) => break,
                    Err(error) => tracing::warn!(%error, "background compaction failed"),
                }
            }
        });
    }

    fn open_blocking(
        storage: Arc<dyn Storage>,
        dir: PathBuf,
        options: LogbookOptions,
        projections: Projections<E>,
    ) -> Result<(Self, OpenReport)> {
        let started = Instant::now();
        let storage_is_files = storage.is_file_system();
        let (wal, wal_report) = Wal::open_with_storage(storage.clone(), &dir, options.wal.clone())?;
        let wal = Arc::new(wal);
        let applier = TypedApplier::new(projections);
        // A segment's base minus one was reached when it was created (compaction may have
        // dropped the records just before it).
        let log_end = wal
            .segments()
            .last()
            .map_or(0, |last| last.base - 1)
            .max(wal.durable_position());
        let salvaged = options.wal.recovery_mode == RecoveryMode::Salvage;
        let store = Arc::new(SnapshotStore::new(storage, &dir));
        if !salvaged {
            refuse_snapshots_past(&store, log_end)?;
        }
        let (index, index_report) = if storage_is_files {
            StreamIndex::open(&dir, log_end, salvaged)?
        } else {
            StreamIndex::temporary()?
        };
        // After an explicit salvage, snapshots past the log's end describe events the cut
        // dropped; once new appends pass their position they would look valid: remove them.
        let beyond = store.remove_above(log_end).unwrap_or_else(|error| {
            tracing::warn!(%error, "snapshots past the log's end could not be removed");
            Vec::new()
        });
        let (start, mut snapshot_report) = start_from_snapshot(&store, &wal, &applier);
        for path in beyond {
            let reason =
                format!("past the log's end {log_end} (events it describes were cut): removed");
            snapshot_report.rejected.push((path, reason));
        }
        let (streams, events_replayed) = replay(
            &wal,
            &applier,
            &index,
            index_report.complete_position,
            start,
            &options.compaction,
        )?;
        applier.restored();
        let snapshots = Snapshotter::start(
            store.clone(),
            options.snapshots.clone(),
            options.compaction.clone(),
        )?;
        let (applied, _) = tokio::sync::watch::channel(wal.durable_position());
        let stream_count = streams.len();
        let streams_catalog = streams.clone();
        let (live, _) = broadcast::channel(options.subscription_buffer.max(1));
        let shared = Arc::new(Shared {
            wal,
            streams: RwLock::new(streams),
            live: Mutex::new(Some(live)),
            clock: options.clock.clone(),
            options: options.clone(),
            subscribers: Mutex::new(HashMap::new()),
            next_subscriber: AtomicU64::new(1),
            dir,
            applier: Box::new(applier),
            index,
            applied,
            catalog: Mutex::new(streams_catalog),
            snapshots,
            snapshot_store: store,
            compaction_lock: Mutex::new(()),
            poisoned: PoisonCell::default(),
        });
        let (requests, receiver) = mpsc::channel(options.queue_depth.max(1));
        let (jobs, job_receiver) =
            std::sync::mpsc::sync_channel::<SyncJob>(options.queue_depth.max(1));
        let syncer_shared = shared.clone();
        let syncer = std::thread::Builder::new()
            .name("logbook-syncer".into())
            .spawn(move || syncer::run(syncer_shared, job_receiver))
            .map_err(|error| Error::Task(error.to_string()))?;
        let writer_shared = shared.clone();
        let writer = std::thread::Builder::new()
            .name("logbook-writer".into())
            .spawn(move || writer::run(writer_shared, receiver, jobs))
            .map_err(|error| Error::Task(error.to_string()))?;
        let report = OpenReport {
            snapshot: snapshot_report,
            index: index_report,
            wal: wal_report,
            events_replayed,
            streams: stream_count,
            duration: started.elapsed(),
        };
        tracing::info!(events_replayed, streams = stream_count, "log opened");
        let threads = Threads {
            writer: Some(writer),
            syncer: Some(syncer),
        };
        let logbook = Logbook {
            shared,
            requests,
            threads: Arc::new(Mutex::new(threads)),
            _event: PhantomData,
        };
        Ok((logbook, report))
    }

    async fn request<T>(&self, command: Command, reply: oneshot::Receiver<Result<T>>) -> Result<T> {
        self.requests
            .send(command)
            .await
            .map_err(|_| Error::Closed)?;
        reply.await.map_err(|_| Error::Closed)?
    }

    /// Appends events to one stream as one atomic batch, if the stream is at `expected`.
    /// Returns once the log's sync policy is met.
    pub async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent<E>>,
    ) -> Result<AppendResult> {
        self.append_with(stream, expected, events, AppendDurability::Policy)
            .await
    }

    /// [`Logbook::append`] with a chosen durability.
    pub async fn append_with(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent<E>>,
        durability: AppendDurability,
    ) -> Result<AppendResult> {
        if system::is_reserved(stream.as_str()) {
            return Err(Error::ReservedStream {
                stream: stream.to_string(),
            });
        }
        let limit = self.shared.options.append_events_max;
        if events.is_empty() || events.len() > limit {
            return Err(Error::LimitExceeded {
                what: "events in one append (1 to the limit)",
                limit: limit as u64,
                actual: events.len() as u64,
            });
        }
        let record_max = self.shared.wal.options().record_bytes_max as usize;
        let mut data = Vec::with_capacity(events.len());
        for event in &events {
            let encoded = event.to_data()?;
            let size = encoded.envelope_len(stream);
            if size > record_max {
                return Err(Error::LimitExceeded {
                    what: "encoded event bytes",
                    limit: record_max as u64,
                    actual: size as u64,
                });
            }
            data.push(encoded);
        }
        let (reply, receiver) = oneshot::channel();
        let command = Command::Append {
            stream: stream.clone(),
            expected,
            events: data,
            durability,
            reply,
        };
        self.request(command, receiver).await
    }

    /// Deletes a stream: a tombstone; reads return [`Error::StreamDeleted`] and appends fail.
    /// Compaction purges its events physically.
    pub async fn delete_stream(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
    ) -> Result<AppendResult> {
        if system::is_reserved(stream.as_str()) {
            return Err(Error::ReservedStream {
                stream: stream.to_string(),
            });
        }
        let (reply, receiver) = oneshot::channel();
        self.request(
            Command::Delete {
                stream: stream.clone(),
                expected,
                reply,
            },
            receiver,
        )
        .await
    }

    /// Hides the stream's events below `before_version` (a session reset); the stream stays
    /// usable. Compaction purges them physically.
    pub async fn truncate_stream(
        &self,
        stream: &StreamId,
        before_version: u64,
    ) -> Result<AppendResult> {
        if system::is_reserved(stream.as_str()) {
            return Err(Error::ReservedStream {
                stream: stream.to_string(),
            });
        }
        let (reply, receiver) = oneshot::channel();
        self.request(
            Command::Truncate {
                stream: stream.clone(),
                before_version,
                reply,
            },
            receiver,
        )
        .await
    }

    /// Writes a snapshot of the stream catalog and every projection now (after every event
    /// written so far is durable and applied). Appends carry on meanwhile.
    pub async fn snapshot(&self) -> Result<SnapshotInfo> {
        let (reply, receiver) = oneshot::channel();
        self.request(Command::Snapshot { reply }, receiver).await
    }

    /// Compacts the log: seals the active segment, writes a snapshot, then rewrites every
    /// sealed segment below it without the records of deleted streams, the versions hidden by
    /// truncation, and superseded records of latest-only types; then removes older snapshots.
    /// Afterwards the bytes of purged events exist in no file of the log. Appends, reads and
    /// subscriptions carry on meanwhile.
    pub async fn compact(&self) -> Result<crate::compaction::CompactionReport> {
        self.sync().await?;
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || crate::compaction::seal_if_needed(&shared))
            .await
            .map_err(blocking_error)??;
        if !crate::compaction::has_work(&self.shared) {
            // Nothing died and nothing was sealed since the last compaction: no snapshot, no
            // segment read, no file written.
            return Ok(crate::compaction::CompactionReport::default());
        }
        let snapshot = self.snapshot().await?;
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || crate::compaction::compact(&shared, &snapshot))
            .await
            .map_err(blocking_error)?
    }

    /// Makes every appended event durable; returns the durable position.
    pub async fn sync(&self) -> Result<u64> {
        let (reply, receiver) = oneshot::channel();
        self.request(Command::Sync { reply }, receiver).await
    }

    /// Reads up to `max` durable events of a stream from `from_version`, forward or backward.
    pub async fn read_stream(
        &self,
        stream: &StreamId,
        from_version: u64,
        direction: Direction,
        max: usize,
    ) -> Result<Vec<RecordedEvent<E>>> {
        let visible_from = {
            let streams = self
                .shared
                .streams
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            streams.visible_from(stream)?
        };
        let Some(visible_from) = visible_from else {
            return Ok(Vec::new());
        };
        let shared = self.shared.clone();
        let stream = stream.to_string();
        let raws = tokio::task::spawn_blocking(move || {
            let selected =
                shared
                    .index
                    .range(&stream, from_version, visible_from, direction, max)?;
            read_positions(&shared, &selected)
        })
        .await
        .map_err(blocking_error)??;
        raws.iter().map(|raw| Ok(raw.decode::<E>()?)).collect()
    }

    /// Reads up to `max` durable events of the whole log from `from_position` (the engine's
    /// own `$logbook` events are skipped).
    pub async fn read_all(&self, from_position: u64, max: usize) -> Result<Vec<RecordedEvent<E>>> {
        let raws = self.read_all_raw(from_position, max).await?;
        Ok(raws
            .into_iter()
            .filter(|raw| raw.envelope.stream().as_str() != system::SYSTEM_STREAM)
            .map(|raw| raw.decode::<E>())
            .collect::<std::result::Result<_, _>>()?)
    }

    /// Reads up to `max` durable records of the whole log from `from_position`, payloads not
    /// decoded, the engine's own events included: what tools use.
    pub async fn read_all_raw(&self, from_position: u64, max: usize) -> Result<Vec<RawEvent>> {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || {
            let mut raws = Vec::new();
            for record in shared.wal.read_from(from_position).take(max) {
                let record = record?;
                let raw =
                    RawEvent::decode_record(record.position, &record.payload).map_err(|error| {
                        Error::Corrupted {
                            position: record.position,
                            reason: error.to_string(),
                        }
                    })?;
                raws.push(raw);
            }
            Ok(raws)
        })
        .await
        .map_err(blocking_error)?
    }

    /// Every durable event from `from_position` on, then live, in position order, without gap
    /// or duplicate.
    pub fn subscribe(&self, from_position: u64) -> Subscription<E> {
        Subscription::new(self.shared.clone(), from_position)
    }

    /// The current version of a stream (`None` when it has no events).
    pub fn stream_version(&self, stream: &StreamId) -> Result<Option<u64>> {
        let streams = self
            .shared
            .streams
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match streams.get(stream) {
            Some(state) if state.deleted => Err(Error::StreamDeleted {
                stream: stream.to_string(),
            }),
            Some(state) => Ok(state.last_version()),
            None => Ok(None),
        }
    }

    /// Waits until the projections have applied every event up to `position`.
    /// Fails with [`Error::Poisoned`] once the log is poisoned short of `position`.
    pub async fn wait_applied(&self, position: u64) -> Result<()> {
        if *self.shared.applied.borrow() >= position {
            return Ok(());
        }
        self.shared.check_poison()?;
        // Events are applied once durable. Under `SyncPolicy::Never` (and for relaxed appends
        // until their delay passes) nothing else would make `position` durable: sync now.
        // (Found by tests/compaction_purge.rs: execute() with `Never` waited forever.)
        if self.shared.wal.durable_position() < position {
            self.sync().await?;
        }
        let mut applied = self.shared.applied.subscribe();
        let reached = *applied
            .wait_for(|applied| *applied >= position || self.shared.poison().is_some())
            .await
            .map_err(|_| Error::Closed)?
            >= position;
        if reached {
            Ok(())
        } else {
            self.shared.check_poison()
        }
    }

    /// The position of a stream's last event (`None` when it has none).
    pub fn stream_head(&self, stream: &StreamId) -> Option<(u64, u64)> {
        let streams = self
            .shared
            .streams
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        streams
            .get(stream)
            .and_then(|state| Some((state.last_version()?, state.last_position()?)))
    }

    /// Now, by the log's clock.
    pub fn now_ms(&self) -> u64 {
        self.shared.clock.now_ms()
    }

    /// Events the projections could not decode (skipped on every replay alike).
    pub fn undecodable_events(&self) -> u64 {
        self.shared.applier.undecodable()
    }

    /// Health figures.
    pub fn stats(&self) -> Stats {
        let wal = &self.shared.wal;
        let durable = wal.durable_position();
        let segments = wal.segments();
        let subscribers = self
            .shared
            .subscribers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut subscribers: Vec<SubscriberStats> = subscribers
            .iter()
            .map(|(&id, slot)| {
                let next_position = slot.next_position.load(Ordering::Relaxed);
                SubscriberStats {
                    id,
                    next_position,
                    lag: (durable + 1).saturating_sub(next_position),
                }
            })
            .collect();
        subscribers.sort_by_key(|subscriber| subscriber.id);
        Stats {
            head_position: wal.last_position(),
            durable_position: durable,
            segments: segments.len(),
            segment_bytes: segments.iter().map(|segment| segment.bytes).sum(),
            streams: self
                .shared
                .streams
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .len(),
            subscribers,
            poisoned: self.shared.adopt_wal_poison().cloned(),
            observer_panics: self.shared.applier.observer_panics(),
        }
    }

    /// The log directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Makes everything durable, stops the writer and syncer threads and waits for them.
    /// Other clones of this handle fail with [`Error::Closed`] afterwards. Dropping every clone
    /// without `close` also makes everything written durable, in the background.
    pub async fn close(self) -> Result<()> {
        let synced = self.sync().await;
        let (reply, receiver) = oneshot::channel();
        if self.requests.send(Command::Close { reply }).await.is_ok() {
            let _ = receiver.await;
        }
        let handles = {
            let mut threads = self
                .threads
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            (threads.writer.take(), threads.syncer.take())
        };
        tokio::task::spawn_blocking(move || {
            let (writer, syncer) = handles;
            for handle in [writer, syncer].into_iter().flatten() {
                if handle.join().is_err() {
                    tracing::error!("a background thread panicked");
                }
            }
        })
        .await
        .map_err(blocking_error)?;
        synced.map(|_| ())
    }
}

/// Reads the records at `positions` (ascending or descending), each checked.
fn read_positions(shared: &Shared, selected: &[(u64, u64)]) -> Result<Vec<RawEvent>> {
    let mut raws = Vec::with_capacity(selected.len());
    let mut reader: Option<logbook_wal::WalReader> = None;
    for &(_, position) in selected {
        // The next position continues the same reader; anything else seeks (a binary search
        // and a sparse-index scan of at most one index interval).
        let reuse = reader
            .as_ref()
            .is_some_and(|reader| reader.next_position() == position);
        if !reuse {
            reader = Some(shared.wal.read_from(position));
        }
        let Some(current) = reader.as_mut() else {
            break;
        };
        match current.next() {
            Some(Ok(record)) if record.position == position => {
                let raw = RawEvent::decode_record(position, &record.payload).map_err(|error| {
                    Error::Corrupted {
                        position,
                        reason: error.to_string(),
                    }
                })?;
                raws.push(raw);
            }
            // Compaction dropped it (a superseded record): skip it, seek afresh for the next.
            Some(Ok(record)) if record.position > position => reader = None,
            Some(Ok(_)) | None => break, // not durable yet
            Some(Err(error)) => return Err(error.into()),
        }
    }
    Ok(raws)
}

/// Rebuilds the stream table and the projections from the whole log, and brings the stream
/// index up to date from where it was complete.
fn replay(
    wal: &Wal,
    applier: &dyn Applier,
    index: &StreamIndex,
    index_complete: u64,
    start: (StreamTable, u64),
    compaction: &CompactionPolicy,
) -> Result<(StreamTable, u64)> {
    let _span = tracing::info_span!("replay").entered();
    let (mut streams, snapshot_position) = start;
    let mut count = 0u64;
    let mut pending: Vec<(u64, Vec<u8>)> = Vec::new();
    for record in wal.read_from(index_complete.min(snapshot_position) + 1) {
        let record = record?;
        let position = record.position;
        if position > snapshot_position {
            replay_record(&mut streams, compaction, position, &record.payload)?;
            applier.apply_record(position, &record.payload)?;
            count += 1;
        }
        if position > index_complete {
            pending.push((position, record.payload));
            if pending.len() >= INDEX_BATCH_RECORDS {
                let records: Vec<(u64, &[u8])> = pending
                    .iter()
                    .map(|(position, bytes)| (*position, bytes.as_slice()))
                    .collect();
                index_records(index, &records)?;
                pending.clear();
            }
        }
    }
    let records: Vec<(u64, &[u8])> = pending
        .iter()
        .map(|(position, bytes)| (*position, bytes.as_slice()))
        .collect();
    index_records(index, &records)?;
    Ok((streams, count))
}

/// Applies one record to a stream table (versions, tombstones, truncations); returns its
/// decoded envelope.
pub(crate) fn replay_record<'a>(
    streams: &mut StreamTable,
    compaction: &CompactionPolicy,
    position: u64,
    bytes: &'a [u8],
) -> Result<EnvelopeRef<'a>> {
    let envelope = EnvelopeRef::decode(bytes).map_err(|error| Error::Corrupted {
        position,
        reason: error.to_string(),
    })?;
    streams.replay(envelope.stream, envelope.stream_version, position)?;
    if envelope.stream == system::SYSTEM_STREAM {
        apply_system(streams, position, envelope.event_type, envelope.payload)?;
    } else if compaction.is_finished(envelope.event_type) {
        streams.finished(envelope.stream, position);
    }
    Ok(envelope)
}

/// A snapshot at position P proves every position up to P was durable (snapshots hold only
/// applied, so durable, events): a log whose segments end before P lost acknowledged events.
/// That is an error for an operator (`verify`, then an explicit salvage), never a reason to
/// delete the snapshot.
fn refuse_snapshots_past(store: &SnapshotStore, log_end: u64) -> Result<()> {
    if let Some(newest) = store.list()?.into_iter().max_by_key(|info| info.position)
        && newest.position > log_end
    {
        return Err(Error::Wal(logbook_wal::Error::LogBehind {
            reached: newest.position,
            end: log_end,
            evidence: format!("as the snapshot {} records", newest.path.display()),
        }));
    }
    Ok(())
}

/// Restores the newest usable snapshot; `(empty table, 0)` means a full replay. Never fails:
/// a snapshot problem is reported and open replays more instead.
pub(crate) fn start_from_snapshot(
    store: &SnapshotStore,
    wal: &Wal,
    applier: &dyn Applier,
) -> ((StreamTable, u64), SnapshotReport) {
    let mut report = SnapshotReport::default();
    let outcome = match store.load_newest() {
        Ok(outcome) => outcome,
        Err(error) => {
            report
                .rejected
                .push((store.dir().to_path_buf(), error.to_string()));
            return ((StreamTable::default(), 0), report);
        }
    };
    report.rejected = outcome.rejected;
    let Some((info, snapshot)) = outcome.snapshot else {
        return ((StreamTable::default(), 0), report);
    };
    if snapshot.position > wal.durable_position() {
        let reason = format!(
            "snapshot position {} is ahead of the log's last position {}",
            snapshot.position,
            wal.durable_position()
        );
        report.rejected.push((info.path, reason));
        return ((StreamTable::default(), 0), report);
    }
    match snapshotting::restore(&snapshot, applier) {
        Ok(catalog) => {
            tracing::info!(position = snapshot.position, "restored snapshot");
            let position = snapshot.position;
            report.used = Some(info);
            ((catalog, position), report)
        }
        Err(error) => {
            tracing::warn!(%error, "snapshot unusable; replaying the whole log");
            report.rejected.push((info.path, error.to_string()));
            ((StreamTable::default(), 0), report)
        }
    }
}

/// Records indexed per sled batch during replay.
const INDEX_BATCH_RECORDS: usize = 4096;

/// Adds durable records to the stream index; tombstones and truncations remove entries.
fn index_records(index: &StreamIndex, records: &[(u64, &[u8])]) -> Result<()> {
    let mut entries = Vec::with_capacity(records.len());
    let mut complete = None;
    for &(position, bytes) in records {
        let envelope = EnvelopeRef::decode(bytes).map_err(|error| Error::Corrupted {
            position,
            reason: error.to_string(),
        })?;
        entries.push((
            envelope.stream.to_owned(),
            envelope.stream_version,
            position,
        ));
        complete = Some(position);
        if envelope.stream == system::SYSTEM_STREAM {
            index.insert(&entries, position)?;
            entries.clear();
            match SystemEvent::decode(envelope.payload)? {
                SystemEvent::StreamDeleted { stream } => index.remove(&stream, u64::MAX)?,
                SystemEvent::StreamTruncated {
                    stream,
                    before_version,
                } => index.remove(&stream, before_version)?,
            };
        }
    }
    if let Some(complete) = complete {
        index.insert(&entries, complete)?;
    }
    Ok(())
}

fn apply_system(
    streams: &mut StreamTable,
    position: u64,
    event_type: &str,
    payload: &[u8],
) -> Result<()> {
    let corrupt = |reason: String| Error::Corrupted { position, reason };
    let event = SystemEvent::decode(payload).map_err(|error| corrupt(error.to_string()))?;
    match (event_type, event) {
        (STREAM_DELETED, SystemEvent::StreamDeleted { stream }) => {
            streams.delete(&StreamId::new(stream)?, position);
        }
        (
            STREAM_TRUNCATED,
            SystemEvent::StreamTruncated {
                stream,
                before_version,
            },
        ) => {
            streams.truncate(&StreamId::new(stream)?, before_version, position);
        }
        (other, _) => {
            return Err(corrupt(format!(
                "system event type {other} does not match its payload"
            )));
        }
    }
    Ok(())
}
