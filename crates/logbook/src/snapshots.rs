//! Snapshots in the engine: when to take one, what goes in, and building it off the append path.
//!
//! Owns: the snapshot policy counters and the `logbook-snapshots` thread, which keeps a
//! **replica**: its own copy of the durable stream catalog and of every projection, seeded once
//! (a clone taken on the syncer thread between two applied batches, at the first snapshot of
//! the process) and then kept in step by the syncer, which hands it every applied batch (the
//! records are shared, not copied). A snapshot at position P is a marker the syncer sends after
//! the batch ending at P, so when the thread reaches it the replica holds exactly the events up
//! to P: it encodes the replica, writes the file and prunes older ones while the live state
//! goes on. Must never: include an event that is not durable, encode or write on the syncer
//! thread (every acknowledgement would wait for it), block the writer, or make open fail.
//!
//! Costs: memory for a second copy of the catalog and every projection (from the first
//! snapshot on), the projections' apply work done a second time (on this thread, not the
//! syncer), and one clone of the state on the syncer at the first snapshot of a process. A
//! periodic snapshot due while one is in flight is deferred to the next applied batch (its
//! counters are kept), not skipped; one still deferred when the log closes is taken at close,
//! queued behind the one in flight (tests/snapshot_open.rs, tests/snapshot_background.rs).

use crate::apply::{DurableRecord, apply_catalog};
use crate::backend::SnapshotStorage;
use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::projections::{Applier, Replicas};
use crate::streams::StreamTable;
use crate::syncer::LiveRecord;
use logbook_compaction::{
    CompactionPolicy, Snapshot, SnapshotInfo, SnapshotPolicy, SnapshotSection,
};
use logbook_projection::codec;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;
use tokio::sync::oneshot;

/// The snapshot section holding the engine's durable stream catalog.
pub const STREAMS_SECTION: &str = "engine.streams";
/// Version 2: each stream also records where its records start and its latest death (for
/// per-segment compaction). Version 1 snapshots are refused (a longer replay, nothing lost).
const STREAMS_SECTION_VERSION: u16 = 2;
/// The largest stream catalog decoded from a snapshot.
const STREAMS_SECTION_BYTES_MAX: usize = 512 << 20;

pub(crate) type SnapshotReply = oneshot::Sender<Result<SnapshotInfo>>;

/// What the syncer tells the snapshot thread, in applied order.
enum Message {
    /// The replica, as of `position` (sent once, before the first snapshot).
    Seed {
        position: u64,
        catalog: StreamTable,
        projections: Box<dyn Replicas>,
    },
    /// A batch the live catalog and projections applied.
    Applied(Vec<LiveRecord>),
    /// Snapshot the replica, which is at `position` once the messages before this one are done.
    Snapshot {
        position: u64,
        reply: Option<SnapshotReply>,
    },
}

/// Whether a snapshot asked for may wait for the one in flight.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Take {
    /// A periodic snapshot: deferred to the next applied batch while one is in flight.
    UnlessBusy,
    /// Queued behind the one in flight (asked for explicitly, or still deferred at close).
    Queued,
}

struct Counters {
    events: u64,
    bytes: u64,
    since: Instant,
}

/// The syncer's side of snapshotting.
pub(crate) struct Snapshotter {
    policy: SnapshotPolicy,
    counters: Mutex<Counters>,
    messages: Mutex<Option<Sender<Message>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// True once the replica is seeded: every applied batch is then handed over.
    seeded: AtomicBool,
    /// Snapshots asked for and not yet written (queued, being encoded or being written).
    in_flight: Arc<AtomicUsize>,
    /// True while a periodic snapshot that was due waits for the one in flight.
    deferred: AtomicBool,
    /// The newest snapshot the snapshot thread wrote since open (for `Stats`).
    newest: Arc<Mutex<Option<SnapshotWritten>>>,
}

/// The newest snapshot this process wrote since open, in [`Stats`](crate::Stats).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotWritten {
    /// The last position it covers.
    pub position: u64,
    /// Its length.
    pub bytes: u64,
    /// Where it is (a file; on PostgreSQL, a name for its row).
    pub path: std::path::PathBuf,
    /// When it was written, by the log's clock (ms since the epoch).
    pub written_at_ms: u64,
}

impl Snapshotter {
    pub(crate) fn start(
        store: Arc<dyn SnapshotStorage>,
        policy: SnapshotPolicy,
        compaction: CompactionPolicy,
        clock: Arc<dyn Clock>,
    ) -> Result<Snapshotter> {
        // Unbounded, so the syncer never waits on it. What it holds is bounded by the time one
        // snapshot takes to encode and write: the batches applied meanwhile (shared records).
        let (messages, receiver) = std::sync::mpsc::channel::<Message>();
        let keep = policy.keep;
        let in_flight = Arc::new(AtomicUsize::new(0));
        let writing = in_flight.clone();
        let newest = Arc::new(Mutex::new(None));
        let written = Written {
            newest: newest.clone(),
            clock,
        };
        let thread = std::thread::Builder::new()
            .name("logbook-snapshots".into())
            .spawn(move || {
                run(
                    store.as_ref(),
                    keep,
                    &compaction,
                    receiver,
                    &writing,
                    &written,
                )
            })
            .map_err(|error| Error::Task(error.to_string()))?;
        Ok(Snapshotter {
            policy,
            counters: Mutex::new(Counters {
                events: 0,
                bytes: 0,
                since: Instant::now(),
            }),
            messages: Mutex::new(Some(messages)),
            thread: Mutex::new(Some(thread)),
            seeded: AtomicBool::new(false),
            in_flight,
            deferred: AtomicBool::new(false),
            newest,
        })
    }

    /// The newest snapshot written since open (`None`: none yet).
    pub(crate) fn newest(&self) -> Option<SnapshotWritten> {
        self.newest
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn send(&self, message: Message) -> std::result::Result<(), Message> {
        match self
            .messages
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .as_ref()
        {
            Some(messages) => messages.send(message).map_err(|unsent| unsent.0),
            None => Err(message),
        }
    }

    /// Hands an applied batch to the replica (syncer thread, after the live apply succeeded).
    pub(crate) fn follow(&self, batch: &[LiveRecord]) {
        if self.seeded.load(Ordering::Acquire) && !batch.is_empty() {
            // An unsent batch means the thread is gone (close): no snapshot follows anyway.
            let _ = self.send(Message::Applied(batch.to_vec()));
        }
    }

    /// Counts applied events; true when the policy says a snapshot is due.
    pub(crate) fn count(&self, events: u64, bytes: u64) -> bool {
        let mut counters = self
            .counters
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        counters.events += events;
        counters.bytes += bytes;
        self.policy
            .due(counters.events, counters.bytes, counters.since.elapsed())
    }

    /// True when a periodic snapshot was due and still waits for the one in flight.
    pub(crate) fn deferred(&self) -> bool {
        self.deferred.load(Ordering::Acquire)
    }

    /// Asks for a snapshot at `position`, the last applied one (syncer thread, between two
    /// applied batches). The first one seeds the replica with a copy of the catalog and the
    /// projections (`seed`); the snapshot itself is encoded and written by the snapshot thread.
    /// `when` says whether a periodic one may wait for the one in flight.
    pub(crate) fn take(
        &self,
        position: u64,
        seed: impl FnOnce() -> (StreamTable, Box<dyn Replicas>),
        reply: Option<SnapshotReply>,
        when: Take,
    ) {
        if reply.is_none() && when == Take::UnlessBusy && self.in_flight.load(Ordering::Acquire) > 0
        {
            // A snapshot is still being encoded or written: this periodic one waits for the
            // next applied batch (the counters are kept, so it is not skipped, only deferred;
            // at close it is queued behind the one in flight).
            tracing::debug!("a snapshot is still being written; the periodic one is deferred");
            self.deferred.store(true, Ordering::Release);
            return;
        }
        self.deferred.store(false, Ordering::Release);
        if !self.seeded.load(Ordering::Acquire) {
            let _span = tracing::info_span!("snapshot_seed", position).entered();
            let (catalog, projections) = seed();
            let seed = Message::Seed {
                position,
                catalog,
                projections,
            };
            if self.send(seed).is_ok() {
                self.seeded.store(true, Ordering::Release);
            }
        }
        *self
            .counters
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Counters {
            events: 0,
            bytes: 0,
            since: Instant::now(),
        };
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        if let Err(unsent) = self.send(Message::Snapshot { position, reply }) {
            // The snapshot thread is gone (it only ends at close).
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            if let Message::Snapshot {
                reply: Some(reply), ..
            } = unsent
            {
                let _ = reply.send(Err(Error::Closed));
            }
        }
    }

    /// Finishes the snapshots asked for and stops the thread.
    pub(crate) fn stop(&self) {
        self.messages
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(thread) = self
            .thread
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
        {
            let _ = thread.join();
        }
    }
}

/// The snapshot thread's copy of the catalog and projections.
struct Replica {
    position: u64,
    catalog: StreamTable,
    projections: Box<dyn Replicas>,
    /// Set when a record could not be applied to the replica: no snapshot is taken from it.
    broken: Option<String>,
}

impl Replica {
    fn apply(&mut self, batch: &[LiveRecord], compaction: &CompactionPolicy) {
        for (position, bytes) in batch {
            if self.broken.is_some() || *position <= self.position {
                continue;
            }
            let applied = DurableRecord::decode(*position, bytes).and_then(|record| {
                apply_catalog(&mut self.catalog, compaction, &record)?;
                self.projections.apply_record(&record)
            });
            match applied {
                Ok(()) => self.position = *position,
                Err(error) => {
                    let reason = format!("record {position} not applied to the replica: {error}");
                    tracing::error!(%reason, "snapshots stop until the log is reopened");
                    self.broken = Some(reason);
                }
            }
        }
    }

    /// Encodes the replica, which must be at `position`.
    fn build(&self, position: u64) -> Result<Snapshot> {
        let _span = tracing::info_span!("snapshot_build", position).entered();
        if let Some(reason) = &self.broken {
            return Err(Error::Snapshot(reason.clone()));
        }
        if self.position != position {
            return Err(Error::Snapshot(format!(
                "the replica is at {}, the snapshot was asked at {position}",
                self.position
            )));
        }
        let mut sections = vec![SnapshotSection {
            id: STREAMS_SECTION.to_owned(),
            version: STREAMS_SECTION_VERSION,
            bytes: codec::encode(&self.catalog)?,
        }];
        sections.extend(self.projections.sections()?);
        Ok(Snapshot { position, sections })
    }
}

fn run(
    store: &dyn SnapshotStorage,
    keep: usize,
    compaction: &CompactionPolicy,
    messages: Receiver<Message>,
    in_flight: &AtomicUsize,
    written: &Written,
) {
    let mut replica: Option<Replica> = None;
    while let Ok(message) = messages.recv() {
        match message {
            Message::Seed {
                position,
                catalog,
                projections,
            } => {
                replica = Some(Replica {
                    position,
                    catalog,
                    projections,
                    broken: None,
                });
            }
            Message::Applied(batch) => {
                if let Some(replica) = replica.as_mut() {
                    replica.apply(&batch, compaction);
                }
            }
            Message::Snapshot { position, reply } => {
                let result = match replica.as_ref() {
                    Some(replica) => write(store, keep, replica, position, written),
                    None => Err(Error::Snapshot("no replica was seeded".to_owned())),
                };
                in_flight.fetch_sub(1, Ordering::AcqRel);
                if let Some(reply) = reply {
                    let _ = reply.send(result);
                }
            }
        }
    }
}

/// Where the snapshot thread records the newest snapshot it wrote.
struct Written {
    newest: Arc<Mutex<Option<SnapshotWritten>>>,
    clock: Arc<dyn Clock>,
}

/// Encodes and writes one snapshot, then prunes older ones.
fn write(
    store: &dyn SnapshotStorage,
    keep: usize,
    replica: &Replica,
    position: u64,
    written: &Written,
) -> Result<SnapshotInfo> {
    let result = replica
        .build(position)
        .and_then(|snapshot| store.store(&snapshot));
    match &result {
        Ok(info) => {
            tracing::info!(
                position = info.position,
                bytes = info.bytes,
                "snapshot written"
            );
            *written
                .newest
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(SnapshotWritten {
                position: info.position,
                bytes: info.bytes,
                path: info.path.clone(),
                written_at_ms: written.clock.now_ms(),
            });
            if let Err(error) = store.retain(keep.max(1)) {
                tracing::warn!(%error, "old snapshots could not be removed");
            }
        }
        Err(error) => tracing::error!(%error, "snapshot could not be built or written"),
    }
    result
}

/// Restores the catalog and the projections from a snapshot; all or nothing.
pub(crate) fn restore(snapshot: &Snapshot, applier: &dyn Applier) -> Result<StreamTable> {
    let catalog = restore_catalog(snapshot)?;
    applier.restore_sections(snapshot)?;
    Ok(catalog)
}

/// The stream catalog a snapshot holds (no projection is decoded).
pub(crate) fn restore_catalog(snapshot: &Snapshot) -> Result<StreamTable> {
    let section = snapshot
        .section(STREAMS_SECTION)
        .ok_or_else(|| Error::Snapshot("no stream catalog section".to_owned()))?;
    if section.version != STREAMS_SECTION_VERSION {
        return Err(Error::Snapshot(format!(
            "unknown stream catalog version {}",
            section.version
        )));
    }
    let catalog: StreamTable = codec::decode(&section.bytes, STREAMS_SECTION_BYTES_MAX)?;
    Ok(catalog)
}
