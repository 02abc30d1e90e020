//! The engine: [`Logbook`], the one handle a service embeds.
//!
//! The facade: [`Logbook`] checks and encodes requests and hands them to its storage backend
//! (`backend::Backend`); the engine's state (`Shared`: the durable stream table, projections,
//! snapshots, subscribers, poison) is the `DurableSink` the backend delivers durable records to.
//!
//! Owns: opening (WAL recovery, then replay of the log through `apply.rs`), the request checks
//! (reserved streams, limits, event readback), subscriptions, stats and close. Must never: write
//! to the WAL itself (only the writer thread does), or expose a record above the durable
//! position.

use crate::apply::{self, DecodedBatch, DurableRecord, Undecodable};
use crate::backend::embedded::Embedded;
use crate::backend::{
    AppendRequest, Backend, BackendStats, DeleteMode, DurableSink, SnapshotStorage,
};
use crate::clock::Clock;
use crate::consumer::{ConsumerRegistry, ConsumerStats};
use crate::error::{Error, Result};
use crate::index::{IndexReport, StreamIndex};
use crate::options::{AppendDurability, LogbookOptions};
use crate::poison::{Poison, PoisonCell};
use crate::projections::{Applier, Projections, TypedApplier};
use crate::replay;
use crate::seat::Seat;
use crate::snapshots::{self as snapshotting, SnapshotReply, SnapshotWritten, Snapshotter, Take};
use crate::streams::{Direction, ExpectedVersion, StreamTable};
use crate::subscription::{SubscriberSlot, Subscription};
use crate::syncer::{self, LiveRecord, SyncJob};
use crate::system;
use crate::writer::{self, AppendResult};
use logbook_compaction::{SnapshotInfo, SnapshotStore};
use logbook_projection::{Event, NewEvent, RawEvent, RecordDecoder, RecordedEvent, StreamId};
use logbook_wal::{FileStorage, RecoveryMode, RecoveryReport, Storage, Wal};
use std::collections::HashMap;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc};

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
    /// The backend's own figures (the embedded log's segments and their bytes).
    pub backend: BackendStats,
    /// Durable consumers by name: every one with a checkpoint in the log or a handle open
    /// here, with its position and lag.
    pub consumers: Vec<ConsumerStats>,
    /// The newest snapshot this process wrote since open (periodic, asked for with
    /// [`Logbook::snapshot`], or at close); `None` when it wrote none. The snapshot the log
    /// was opened from is in the [`OpenReport`].
    pub snapshot_written: Option<SnapshotWritten>,
}

/// The embedded log's files, as the engine's compaction and subscriptions reach them.
pub(crate) struct Files {
    pub(crate) wal: Arc<Wal>,
    pub(crate) index: Arc<StreamIndex>,
    pub(crate) snapshot_store: Arc<SnapshotStore>,
    /// Held for a whole compaction: one at a time.
    pub(crate) compaction_lock: Mutex<()>,
}

/// The engine's state, shared by the handle, subscriptions, compaction and the embedded
/// backend. The writer and the syncer do not hold it: they get their own parts
/// (`writer::WriterState`, `syncer::SyncerStorage`) and reach the rest through the
/// [`DurableSink`] it implements.
pub(crate) struct Shared {
    /// The embedded backend's files (the WAL, the stream index, the snapshot files), which
    /// compaction and subscriptions' catch-up read directly; `None` on PostgreSQL.
    pub(crate) files: Option<Arc<Files>>,
    /// Every stream as the writer left it: appends buffered but not yet durable included. The
    /// writer's expected-version authority (it is the only one that changes it); a read that
    /// must agree with the next append (a version check, a head, visibility of a fresh
    /// truncation) uses it. Never what a snapshot stores.
    pub(crate) pending_streams: Arc<RwLock<StreamTable>>,
    /// `None` once the syncer stopped: live subscribers then drain the log and end.
    live: Mutex<Option<broadcast::Sender<Arc<Vec<LiveRecord>>>>>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) options: LogbookOptions,
    subscribers: Mutex<HashMap<u64, Arc<SubscriberSlot>>>,
    next_subscriber: AtomicU64,
    dir: PathBuf,
    pub(crate) applier: Box<dyn Applier>,
    /// Every stream as of the last durable, applied event (the syncer changes it, in step with
    /// the projections): what snapshots store and what compaction decides on. Never used for
    /// an expected-version check (it lags the writer's appends).
    pub(crate) durable_streams: Mutex<StreamTable>,
    pub(crate) snapshots: Snapshotter,
    /// The last position applied to the projections (and published to subscribers).
    pub(crate) applied: tokio::sync::watch::Sender<u64>,
    /// The first failure the engine cannot undo in-process (see `poison.rs`).
    pub(crate) poisoned: PoisonCell,
    /// Durable consumers: newest checkpoints and the handles open here (`consumer.rs`).
    pub(crate) consumers: ConsumerRegistry,
}

impl DurableSink for Shared {
    /// Applies newly durable records to the durable stream table and the projections, in
    /// position order, before their appends are acknowledged (so a caller reads its own
    /// writes); then the snapshot thread follows them. A record the catalog or the projections
    /// cannot take (or that did not decode) poisons the engine: the records before it are
    /// applied, it and the rest are not, and the error names it.
    fn apply(
        &self,
        batch: &[LiveRecord],
        decoded: &DecodedBatch<'_>,
    ) -> std::result::Result<(), Poison> {
        if let Some(poison) = self.poison() {
            return Err(poison.clone());
        }
        let outcome =
            self.apply_records(&decoded.records)
                .and_then(|()| match &decoded.undecoded {
                    Some((position, error)) => {
                        let reason = format!("not applied to the stream catalog: {error}");
                        Err(self.poison_at(*position, reason).clone())
                    }
                    None => Ok(()),
                });
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
                self.take_snapshot(None, Take::UnlessBusy);
            }
        }
        outcome
    }

    fn poison(&self, position: u64, reason: String) -> Poison {
        self.poison_at(position, reason).clone()
    }

    fn poisoned(&self) -> Option<Poison> {
        Shared::poison(self).cloned()
    }

    fn passed(&self, through: u64) {
        if self.poison().is_none() && through > *self.applied.borrow() {
            self.applied.send_replace(through);
        }
    }

    fn publish(&self, batch: Vec<LiveRecord>) {
        Shared::publish(self, batch);
    }

    fn snapshot(&self, reply: SnapshotReply) {
        self.take_snapshot(Some(reply), Take::Queued);
    }

    fn closed(&self) {
        self.take_deferred_snapshot();
        self.snapshots.stop();
        self.end_live();
    }
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

    /// Applies each record to the catalog, then the projections (the one apply of `apply.rs`);
    /// stops at the first failure.
    fn apply_records(&self, records: &[DurableRecord<'_>]) -> std::result::Result<(), Poison> {
        // The durable table: these records are durable and being applied.
        let mut catalog = self
            .durable_streams
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for record in records {
            let applied = apply::apply_record(
                &mut catalog,
                self.applier.as_ref(),
                &self.options.compaction,
                record,
                Undecodable::Fail,
            );
            if let Err(error) = applied {
                return Err(self.poison_at(record.position, error.reason()).clone());
            }
            let envelope = &record.envelope;
            if system::is_reserved(envelope.stream) {
                self.consumers.reserved_applied(record.position);
            }
            if record.engine_private() {
                self.consumers.apply(
                    envelope.stream,
                    envelope.event_type,
                    envelope.payload,
                    record.position,
                    envelope.timestamp_ms,
                );
            }
        }
        Ok(())
    }

    /// Snapshots the catalog and projections as of the last applied event (syncer thread, between
    /// two applied batches); the snapshot thread encodes its replica, never the live state.
    pub(crate) fn take_snapshot(&self, reply: Option<SnapshotReply>, when: Take) {
        if let Some(poison) = self.poison() {
            // The state may hold half of the failed record: never persist it.
            if let Some(reply) = reply {
                let _ = reply.send(Err(poison.error()));
            }
            return;
        }
        let position = *self.applied.borrow();
        let seed = || {
            // The durable table: a snapshot holds applied events only.
            let catalog = self
                .durable_streams
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .clone();
            (catalog, self.applier.replicas())
        };
        self.snapshots.take(position, seed, reply, when);
    }

    /// At close (syncer thread, after the last applied batch): a periodic snapshot that was
    /// deferred because another was in flight is taken now, so the next open replays less.
    pub(crate) fn take_deferred_snapshot(&self) {
        if self.snapshots.deferred() {
            self.take_snapshot(None, Take::Queued);
        }
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

/// The embedded backend's writer and syncer threads, joined at close.
pub(crate) struct Threads {
    pub(crate) writer: Option<JoinHandle<()>>,
    pub(crate) syncer: Option<JoinHandle<()>>,
}

/// The event log. Cheap to clone; all clones share one writer. Dropping the last clone stops
/// the writer after it has made every written event durable.
pub struct Logbook<E> {
    shared: Arc<Shared>,
    /// Storage: appends, reads, heads, durability, close all go through it.
    backend: Arc<dyn Backend>,
    _event: PhantomData<fn() -> E>,
}

impl<E> Clone for Logbook<E> {
    fn clone(&self) -> Self {
        Logbook {
            shared: self.shared.clone(),
            backend: self.backend.clone(),
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

impl<E> Logbook<E> {
    /// The engine's state (for the consumers' registry and catalog).
    pub(crate) fn shared_ref(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The storage backend (for consumers' checkpoints).
    pub(crate) fn backend_ref(&self) -> &Arc<dyn Backend> {
        &self.backend
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
        log.restore_consumers().await?;
        log.spawn_background_compaction();
        Ok((log, report))
    }

    /// Opens the log in the PostgreSQL database at `url` (a `postgres://` URL or a libpq
    /// `key=value` string; the schema is created or migrated), the same API as a directory's:
    /// several replicas may open one database and append concurrently. See
    /// [`Logbook::open_postgres_with_projections`].
    #[cfg(feature = "postgres")]
    pub async fn open_postgres(url: &str, options: LogbookOptions) -> Result<(Self, OpenReport)> {
        Self::open_postgres_with_projections(url, options, Projections::new()).await
    }

    /// Opens the log in a PostgreSQL database with `projections`: the newest snapshot in the
    /// database (shared by every replica), then the log after it replayed through the one
    /// apply; from then on a follower task applies every durable event, whichever replica
    /// appended it, before this replica's own appends are acknowledged. The expected-version
    /// check runs in the database under the append lock (the authority across replicas);
    /// `stream_version` and `stream_head` answer what this replica has applied.
    /// [`LogbookOptions::wal`] does not apply; every append is durable once acknowledged
    /// (PostgreSQL commits it). The report's `wal` and `index` sections are empty.
    #[cfg(feature = "postgres")]
    pub async fn open_postgres_with_projections(
        url: &str,
        options: LogbookOptions,
        projections: Projections<E>,
    ) -> Result<(Self, OpenReport)> {
        use crate::backend::postgres;
        let started = Instant::now();
        let store = postgres::open_store(url).await?;
        let snapshot_storage = postgres::snapshot_storage(&store);
        let runtime = tokio::runtime::Handle::current();
        let replay_options = options.clone();
        let replay_store = store.clone();
        let (applier, streams, applied, events_replayed, snapshot_report) =
            tokio::task::spawn_blocking(move || {
                let _span = tracing::info_span!("open_postgres").entered();
                let applier = TypedApplier::new(projections);
                let (start, snapshot_report) =
                    start_from_snapshot(snapshot_storage.as_ref(), u64::MAX, &applier);
                let (streams, applied, events_replayed) = postgres::replay_tail(
                    &replay_store,
                    &runtime,
                    &applier,
                    start,
                    &replay_options.compaction,
                )?;
                applier.restored();
                Ok::<_, Error>((applier, streams, applied, events_replayed, snapshot_report))
            })
            .await
            .map_err(blocking_error)??;
        let snapshots = Snapshotter::start(
            postgres::snapshot_storage(&store),
            options.snapshots.clone(),
            options.compaction.clone(),
            options.clock.clone(),
        )?;
        let (applied_sender, _) = tokio::sync::watch::channel(applied);
        let stream_count = streams.len();
        let (live, _) = broadcast::channel(options.subscription_buffer.max(1));
        let location = PathBuf::from(format!("postgres://{}", store.target()));
        let shared = Arc::new(Shared {
            files: None,
            pending_streams: Arc::new(RwLock::new(streams.clone())),
            live: Mutex::new(Some(live)),
            clock: options.clock.clone(),
            options: options.clone(),
            subscribers: Mutex::new(HashMap::new()),
            next_subscriber: AtomicU64::new(1),
            dir: location,
            applier: Box::new(applier),
            applied: applied_sender,
            durable_streams: Mutex::new(streams.clone()),
            snapshots,
            poisoned: PoisonCell::default(),
            consumers: ConsumerRegistry::default(),
        });
        let sink: Arc<dyn DurableSink> = shared.clone();
        let backend: Arc<dyn Backend> = Arc::new(postgres::Postgres::start(
            store,
            sink,
            applied,
            streams,
            options.compaction.clone(),
        ));
        let report = OpenReport {
            wal: RecoveryReport::default(),
            index: IndexReport {
                complete_position: 0,
                rebuilt: None,
            },
            snapshot: snapshot_report,
            events_replayed,
            streams: stream_count,
            duration: started.elapsed(),
        };
        tracing::info!(
            events_replayed,
            streams = stream_count,
            "log opened on PostgreSQL"
        );
        let log = Logbook {
            shared,
            backend,
            _event: PhantomData,
        };
        log.restore_consumers().await?;
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
        let backend = Arc::downgrade(&self.backend);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let (Some(shared), Some(backend)) = (shared.upgrade(), backend.upgrade()) else {
                    break;
                };
                let log = Logbook::<E> {
                    shared,
                    backend,
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
        // sled's open runs on a thread of its own (started only now: the WAL's open took the
        // log's lock, which keeps every other writer away from the index directory, and a WAL
        // that cannot open must leave the index untouched: sled's open writes). Without a
        // recent file the replay waits for it, so it starts at once and runs while the
        // snapshot loads; with one, it starts after the replay, which then has both cores.
        let salvaged = options.wal.recovery_mode == RecoveryMode::Salvage;
        let index_opening = storage_is_files.then(|| {
            let mut opening = StreamIndex::prepare_open(&dir, salvaged);
            if !opening.answers_from_recent() {
                opening.start();
            }
            opening
        });
        let applier = TypedApplier::new(projections);
        // A segment's base minus one was reached when it was created (compaction may have
        // dropped the records just before it).
        let log_end = wal
            .segments()
            .last()
            .map_or(0, |last| last.base - 1)
            .max(wal.durable_position());
        let store = Arc::new(SnapshotStore::new(storage, &dir));
        // After an explicit salvage, snapshots past the log's end describe events the cut
        // dropped; once new appends pass their position they would look valid: remove them.
        // (Without a salvage there are none: the open fails instead.)
        let beyond = if salvaged {
            store.remove_above(log_end).unwrap_or_else(|error| {
                tracing::warn!(%error, "snapshots past the log's end could not be removed");
                Vec::new()
            })
        } else {
            refuse_snapshots_past(&store, log_end)?;
            Vec::new()
        };
        let (start, mut snapshot_report) =
            start_from_snapshot(store.as_ref(), wal.durable_position(), &applier);
        for path in beyond {
            let reason =
                format!("past the log's end {log_end} (events it describes were cut): removed");
            snapshot_report.rejected.push((path, reason));
        }
        let (index, index_report) = match index_opening {
            Some(opening) => {
                let wal = wal.clone();
                let rebuild: crate::index::Rebuild =
                    Box::new(move |index, through| replay::fill_index(&wal, index, through));
                opening.finish(log_end, salvaged, rebuild)?
            }
            None => StreamIndex::temporary()?,
        };
        let (streams, events_replayed) = replay::replay(
            &wal,
            &applier,
            &index,
            index_report.complete_position,
            start,
            &options.compaction,
        )?;
        index.start_opening();
        applier.restored();
        let snapshots = Snapshotter::start(
            store.clone(),
            options.snapshots.clone(),
            options.compaction.clone(),
            options.clock.clone(),
        )?;
        let (applied, _) = tokio::sync::watch::channel(wal.durable_position());
        let stream_count = streams.len();
        // At open nothing is pending: both tables start as the replayed durable one.
        let durable_streams = streams.clone();
        let (live, _) = broadcast::channel(options.subscription_buffer.max(1));
        let files = Arc::new(Files {
            wal,
            index: Arc::new(index),
            snapshot_store: store,
            compaction_lock: Mutex::new(()),
        });
        let shared = Arc::new(Shared {
            files: Some(files.clone()),
            pending_streams: Arc::new(RwLock::new(streams)),
            live: Mutex::new(Some(live)),
            clock: options.clock.clone(),
            options: options.clone(),
            subscribers: Mutex::new(HashMap::new()),
            next_subscriber: AtomicU64::new(1),
            dir,
            applier: Box::new(applier),
            applied,
            durable_streams: Mutex::new(durable_streams),
            snapshots,
            poisoned: PoisonCell::default(),
            consumers: ConsumerRegistry::default(),
        });
        let (requests, receiver) = mpsc::channel(options.queue_depth.max(1));
        let (jobs, job_receiver) =
            std::sync::mpsc::sync_channel::<SyncJob>(options.queue_depth.max(1));
        // The syncer owns the WAL's sync and the index; the rest it reaches through the sink.
        let syncer_storage = syncer::SyncerStorage {
            wal: files.wal.clone(),
            index: files.index.clone(),
            relaxed_sync_delay: options.relaxed_sync_delay,
            backlog: Arc::new(syncer::Backlog::default()),
        };
        // The engine's one apply, handed to the backend's syncer as its durable sink.
        let sink: Arc<dyn DurableSink> = shared.clone();
        // Shared with the writer, which settles a lone request itself while the syncer is idle.
        let syncer_idle = Arc::new(syncer::SyncerIdle::default());
        let writer_syncer_storage = syncer_storage.clone();
        let writer_syncer_idle = syncer_idle.clone();
        let syncer = std::thread::Builder::new()
            .name("logbook-syncer".into())
            .spawn(move || syncer::run(syncer_storage, sink, job_receiver, syncer_idle))
            .map_err(|error| Error::Task(error.to_string()))?;
        // The writer owns the WAL's appends and the pending stream table; the engine's poison it
        // reaches through the sink.
        let writer_state = writer::WriterState {
            wal: files.wal.clone(),
            pending_streams: shared.pending_streams.clone(),
            clock: shared.clock.clone(),
            sink: shared.clone(),
            syncer_storage: writer_syncer_storage,
            syncer_idle: writer_syncer_idle,
        };
        let seat = Arc::new(Seat::new(writer_state, options.lone_appends_on_caller));
        let writer_seat = seat.clone();
        let writer = std::thread::Builder::new()
            .name("logbook-writer".into())
            .spawn(move || writer::run(writer_seat, receiver, jobs))
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
        let threads = Arc::new(Mutex::new(Threads {
            writer: Some(writer),
            syncer: Some(syncer),
        }));
        let backend: Arc<dyn Backend> = Arc::new(Embedded {
            shared: shared.clone(),
            files,
            requests,
            seat,
            threads,
        });
        let logbook = Logbook {
            shared,
            backend,
            _event: PhantomData,
        };
        Ok((logbook, report))
    }

    /// Appends events to one stream as one atomic batch, if the stream is at `expected`.
    /// Returns once the log's sync policy is met.
    ///
    /// Every event is decoded back with `E::decode_payload` before anything is queued: one that
    /// would not read back as itself refuses the whole batch with
    /// `Error::Event(EventError::Unreadable { .. })`, naming the serde feature at fault (the
    /// rules are on [`Event`]).
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
        let record_max = self.shared.options.wal.record_bytes_max as usize;
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
        let request = AppendRequest {
            stream: stream.clone(),
            expected,
            events: data,
            durability,
        };
        self.backend.append(request).await
    }

    /// Deletes a stream for good: a tombstone. Reads and `stream_version` then return
    /// [`Error::StreamDeleted`], and so does every later append, delete or truncation of it:
    /// the id can never be used again (see [`Logbook::soft_delete_stream`] for a delete that
    /// lets it be reused). Projections drop the stream's entity (`Projection::stream_deleted`,
    /// observers' `deleted` hook), and compaction purges its events physically.
    ///
    /// `expected` is checked as for an append. A stream that never had an event is
    /// [`Error::StreamNotFound`] (nothing is written), except with
    /// [`ExpectedVersion::NoStream`], which says it explicitly: the tombstone then reserves
    /// the unused name. Deleting a deleted stream again is [`Error::StreamDeleted`] (not
    /// idempotent: the caller learns it was already gone).
    pub async fn delete_stream(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
    ) -> Result<AppendResult> {
        self.delete_with(stream, expected, DeleteMode::Hard).await
    }

    /// Soft-deletes a stream, as KurrentDB does: every event it has is hidden from reads
    /// (`read_stream` returns nothing) and its entity is dropped from the projections
    /// (`Projection::stream_deleted`, observers' `deleted` hook), and compaction purges those
    /// events physically, like [`Logbook::delete_stream`]. Unlike it, the id stays usable: the
    /// next append continues the versions (last + 1) and accepts [`ExpectedVersion::Any`],
    /// [`ExpectedVersion::NoStream`] (no visible events) or [`ExpectedVersion::Exact`] of the
    /// last version before the delete; [`ExpectedVersion::StreamExists`] is refused until then.
    /// `stream_version` keeps answering that last version.
    ///
    /// `expected` is checked as for an append. A stream that never had an event is
    /// [`Error::StreamNotFound`]; a hard-deleted one [`Error::StreamDeleted`]; soft-deleting
    /// it again before anything was appended writes one more marker and changes nothing.
    pub async fn soft_delete_stream(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
    ) -> Result<AppendResult> {
        self.delete_with(stream, expected, DeleteMode::Soft).await
    }

    async fn delete_with(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        mode: DeleteMode,
    ) -> Result<AppendResult> {
        if system::is_reserved(stream.as_str()) {
            return Err(Error::ReservedStream {
                stream: stream.to_string(),
            });
        }
        self.backend
            .delete_stream(stream.clone(), expected, mode)
            .await
    }

    /// Hides the stream's events below `before_version` (a session reset); the stream stays
    /// usable. Compaction purges them physically. A truncation at the stream's end
    /// (`before_version` = last version + 1) hides every event: [`ExpectedVersion::NoStream`]
    /// then holds, as after [`Logbook::soft_delete_stream`], but the projections keep the
    /// entity (`Projection::stream_truncated`, not `stream_deleted`).
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
        self.backend
            .truncate_stream(stream.clone(), before_version)
            .await
    }

    /// Writes a snapshot of the stream catalog and every projection now (after every event
    /// written so far is durable and applied). Appends carry on meanwhile.
    pub async fn snapshot(&self) -> Result<SnapshotInfo> {
        self.backend.snapshot().await
    }

    /// Compacts the log: seals the active segment, writes a snapshot, then rewrites every
    /// sealed segment below it without the records of deleted streams, the versions hidden by
    /// truncation, and superseded records of latest-only types; then removes older snapshots.
    /// Afterwards the bytes of purged events exist in no file of the log. Appends, reads and
    /// subscriptions carry on meanwhile.
    pub async fn compact(&self) -> Result<crate::compaction::CompactionReport> {
        self.sync().await?;
        let Some(files) = self.shared.files.clone() else {
            return self.compact_shared_store().await;
        };
        let (shared, sealing) = (self.shared.clone(), files.clone());
        tokio::task::spawn_blocking(move || crate::compaction::seal_if_needed(&shared, &sealing))
            .await
            .map_err(blocking_error)??;
        if !crate::compaction::has_work(&self.shared, &files) {
            // Nothing died and nothing was sealed since the last compaction: no snapshot, no
            // segment read, no file written.
            return Ok(crate::compaction::CompactionReport::default());
        }
        let snapshot = self.snapshot().await?;
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || crate::compaction::compact(&shared, &files, &snapshot))
            .await
            .map_err(blocking_error)?
    }

    /// Compaction on a shared store (PostgreSQL), where a delete or a truncation already
    /// removed the rows: a fresh snapshot replaces the older ones (they may hold what was
    /// projected from removed rows), then the store reclaims the space (`VACUUM`).
    async fn compact_shared_store(&self) -> Result<crate::compaction::CompactionReport> {
        let snapshot = self.snapshot().await?;
        let snapshots = self.backend.snapshots();
        let position = snapshot.position;
        let removed = tokio::task::spawn_blocking(move || snapshots.remove_below(position))
            .await
            .map_err(blocking_error)??;
        self.backend.vacuum().await?;
        Ok(crate::compaction::CompactionReport {
            snapshot_position: position,
            snapshots_removed: removed,
            ..Default::default()
        })
    }

    /// Makes every appended event durable; returns the durable position.
    pub async fn sync(&self) -> Result<u64> {
        self.backend.sync().await
    }

    /// Reads up to `max` durable events of a stream from `from_version`, forward or backward.
    pub async fn read_stream(
        &self,
        stream: &StreamId,
        from_version: u64,
        direction: Direction,
        max: usize,
    ) -> Result<Vec<RecordedEvent<E>>> {
        if let Some(files) = &self.shared.files {
            // Embedded: each event decoded straight from the WAL reader's buffer, with no
            // owned envelope (or payload copy) in between.
            return crate::backend::embedded::read_stream_with(
                &self.shared,
                files,
                stream.clone(),
                from_version,
                direction,
                max,
                {
                    let mut decoder = RecordDecoder::new();
                    move |position, bytes: &[u8]| match decoder.decode::<E>(position, bytes) {
                        Ok(decoded) => Ok(decoded?),
                        Err(error) => Err(Error::Corrupted {
                            position,
                            reason: error.to_string(),
                        }),
                    }
                },
            )
            .await;
        }
        let raws = self
            .backend
            .read_stream(stream.clone(), from_version, direction, max)
            .await?;
        raws.iter().map(|raw| Ok(raw.decode::<E>()?)).collect()
    }

    /// The options the log was opened with.
    pub fn options(&self) -> &LogbookOptions {
        &self.shared.options
    }

    /// Reads up to `max` durable events of the whole log from `from_position` (the engine's
    /// own events in reserved `$` streams, `$logbook` and consumer checkpoints, are skipped).
    pub async fn read_all(&self, from_position: u64, max: usize) -> Result<Vec<RecordedEvent<E>>> {
        let raws = self.read_all_raw(from_position, max).await?;
        Ok(raws
            .into_iter()
            .filter(|raw| !system::is_reserved(raw.envelope.stream().as_str()))
            .map(|raw| raw.decode::<E>())
            .collect::<std::result::Result<_, _>>()?)
    }

    /// Reads up to `max` durable records of the whole log from `from_position`, payloads not
    /// decoded, the engine's own events included: what tools use.
    pub async fn read_all_raw(&self, from_position: u64, max: usize) -> Result<Vec<RawEvent>> {
        let records = self.backend.read_all(from_position, max).await?;
        records
            .iter()
            .map(|(position, bytes)| {
                RawEvent::decode_record(*position, bytes).map_err(|error| Error::Corrupted {
                    position: *position,
                    reason: error.to_string(),
                })
            })
            .collect()
    }

    /// Every durable event from `from_position` on, then live, in position order, without gap
    /// or duplicate.
    pub fn subscribe(&self, from_position: u64) -> Subscription<E> {
        // A shared store's catch-up reads go through the backend; the embedded one reads the
        // WAL it shares with the engine.
        let backend = self.shared.files.is_none().then(|| self.backend.clone());
        Subscription::new(self.shared.clone(), backend, from_position)
    }

    /// The current version of a stream (`None` when it never had an event). After
    /// [`Logbook::soft_delete_stream`] it stays the last version written (hidden events
    /// count: the next append continues after it); after `delete_stream` it is
    /// [`Error::StreamDeleted`].
    pub fn stream_version(&self, stream: &StreamId) -> Result<Option<u64>> {
        match self.backend.stream_head(stream) {
            Some(head) if head.deleted => Err(Error::StreamDeleted {
                stream: stream.to_string(),
            }),
            Some(head) => Ok(head.last_version),
            None => Ok(None),
        }
    }

    /// Checks `expected` against the stream now, by the rule an append applies (after a soft
    /// delete, `NoStream` holds and `StreamExists` does not), without writing anything;
    /// returns the version the stream's next event gets. A tool's dry run: a concurrent
    /// append may change the answer before the next call.
    pub fn check_expected_version(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
    ) -> Result<u64> {
        self.backend.check_expected_version(stream, expected)
    }

    /// Waits until the projections have applied every event up to `position`.
    /// Fails with [`Error::Poisoned`] once the log is poisoned short of `position`.
    pub async fn wait_applied(&self, position: u64) -> Result<()> {
        if *self.shared.applied.borrow() >= position {
            return Ok(());
        }
        self.shared.check_poison()?;
        // Events are applied once durable: make sure `position` becomes durable.
        self.backend.wait_durable(position).await?;
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
        let head = self.backend.stream_head(stream)?;
        Some((head.last_version?, head.last_position?))
    }

    /// Now, by the log's clock.
    pub fn now_ms(&self) -> u64 {
        self.shared.clock.now_ms()
    }

    /// Events the projections could not decode (skipped on every replay alike). `append`
    /// refuses an event that does not decode, so only an event type changed since the event
    /// was written can make this non-zero.
    pub fn undecodable_events(&self) -> u64 {
        self.shared.applier.undecodable()
    }

    /// Health figures.
    pub fn stats(&self) -> Stats {
        let durable = self.backend.durable_position();
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
            head_position: self.backend.head_position(),
            durable_position: durable,
            streams: self.backend.stream_count(),
            subscribers,
            poisoned: self.shared.adopt_wal_poison().cloned(),
            observer_panics: self.shared.applier.observer_panics(),
            backend: self.backend.stats(),
            consumers: self.shared.consumers.stats(durable),
            snapshot_written: self.shared.snapshots.newest(),
        }
    }

    /// The log directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Makes everything durable, stops the writer and syncer threads and waits for them, and
    /// releases the directory (the WAL's lock and files, the stream index): once it returns
    /// `Ok`, the log can be opened again at once, even while clones of this handle or
    /// subscriptions live on. Other clones fail with [`Error::Closed`] afterwards; a live
    /// [`Subscription`] delivers the events that were durable and then ends. Dropping every
    /// clone without `close` also makes everything written durable, in the background.
    pub async fn close(self) -> Result<()> {
        self.snapshot_at_close().await;
        self.backend.close().await
    }

    /// An embedded log's clean close leaves a snapshot within
    /// [`SnapshotPolicy::on_close_events`](logbook_compaction::SnapshotPolicy) positions of its
    /// end, so the next open replays (almost) nothing. Best effort: a snapshot that cannot be
    /// written is logged and the close goes on (the next open replays from the one before).
    async fn snapshot_at_close(&self) {
        let threshold = self.shared.options.snapshots.on_close_events;
        let Some(files) = self.shared.files.clone() else {
            return;
        };
        if threshold == 0 || self.shared.poison().is_some() {
            return;
        }
        // Every appended position counts, durable or not: an append acknowledged before it was
        // durable (`SyncPolicy::Never`, `Interval` between its syncs) is covered by the snapshot
        // asked for below, which is taken once every event written is durable and applied.
        // (Compared with the durable position, such a tail was left for the next open.)
        let appended = files.wal.last_position();
        let store = files.snapshot_store.clone();
        let newest = tokio::task::spawn_blocking(move || store.list())
            .await
            .map_err(blocking_error)
            .and_then(|listed| listed.map_err(Error::from))
            .map(|snapshots| {
                snapshots
                    .iter()
                    .map(|info| info.position)
                    .max()
                    .unwrap_or(0)
            });
        match newest {
            Ok(newest) if appended.saturating_sub(newest) >= threshold => {
                match self.snapshot().await {
                    Ok(info) => tracing::debug!(position = info.position, "snapshot at close"),
                    Err(error) => tracing::warn!(%error, "the snapshot at close failed"),
                }
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "snapshots could not be listed at close"),
        }
    }
}

/// A snapshot at position P proves every position up to P was durable (snapshots hold only
/// applied, so durable, events): a log whose segments end before P lost acknowledged events.
/// That is an error for an operator (`verify`, then an explicit salvage), never a reason to
/// delete the snapshot.
fn refuse_snapshots_past(store: &SnapshotStore, log_end: u64) -> Result<()> {
    // By the files' names alone (newest first): nothing is opened.
    if let Some((position, path)) = store.positions()?.into_iter().next()
        && position > log_end
    {
        return Err(Error::Wal(logbook_wal::Error::LogBehind {
            reached: position,
            end: log_end,
            evidence: format!("as the snapshot {} records", path.display()),
        }));
    }
    Ok(())
}

/// Restores the newest usable snapshot; `(empty table, 0)` means a full replay. Never fails:
/// a snapshot problem is reported and open replays more instead.
pub(crate) fn start_from_snapshot(
    store: &dyn SnapshotStorage,
    durable_position: u64,
    applier: &dyn Applier,
) -> ((StreamTable, u64), SnapshotReport) {
    let mut report = SnapshotReport::default();
    let outcome = match store.load_newest() {
        Ok(outcome) => outcome,
        Err(error) => {
            report.rejected.push((store.location(), error.to_string()));
            return ((StreamTable::default(), 0), report);
        }
    };
    report.rejected = outcome.rejected;
    let Some((info, snapshot)) = outcome.snapshot else {
        return ((StreamTable::default(), 0), report);
    };
    if snapshot.position > durable_position {
        let reason = format!(
            "snapshot position {} is ahead of the log's last position {durable_position}",
            snapshot.position,
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
