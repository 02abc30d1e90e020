//! Snapshots in the engine: when to take one, what goes in, and writing it off the append path.
//!
//! Owns: the snapshot policy counters, building a [`Snapshot`] of the durable stream catalog and
//! every projection at one applied position (on the syncer thread, the only one that mutates
//! them, so the cut is consistent), and the background thread that writes and prunes snapshot
//! files. Must never: include an event that is not durable, block the writer (appends keep
//! landing in the WAL buffer while a snapshot is built and written), or make open fail.

use crate::error::{Error, Result};
use crate::projections::Applier;
use crate::streams::StreamTable;
use logbook_compaction::{Snapshot, SnapshotInfo, SnapshotPolicy, SnapshotSection, SnapshotStore};
use logbook_projection::codec;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
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

struct Job {
    snapshot: Snapshot,
    reply: Option<SnapshotReply>,
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
    jobs: Mutex<Option<SyncSender<Job>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Snapshots queued or being written.
    in_flight: Arc<AtomicUsize>,
}

impl Snapshotter {
    pub(crate) fn start(store: Arc<SnapshotStore>, policy: SnapshotPolicy) -> Result<Snapshotter> {
        // One snapshot waits while one is written; a periodic one beyond that is skipped.
        let (jobs, receiver) = std::sync::mpsc::sync_channel::<Job>(1);
        let keep = policy.keep;
        let in_flight = Arc::new(AtomicUsize::new(0));
        let writing = in_flight.clone();
        let thread = std::thread::Builder::new()
            .name("logbook-snapshots".into())
            .spawn(move || write_loop(&store, keep, receiver, &writing))
            .map_err(|error| Error::Task(error.to_string()))?;
        Ok(Snapshotter {
            policy,
            counters: Mutex::new(Counters {
                events: 0,
                bytes: 0,
                since: Instant::now(),
            }),
            jobs: Mutex::new(Some(jobs)),
            thread: Mutex::new(Some(thread)),
            in_flight,
        })
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

    /// Builds a snapshot at `position` and hands it to the writer thread.
    pub(crate) fn take(
        &self,
        position: u64,
        catalog: &StreamTable,
        applier: &dyn Applier,
        reply: Option<SnapshotReply>,
    ) {
        let _span = tracing::info_span!("snapshot", position).entered();
        if reply.is_none() && self.in_flight.load(Ordering::Acquire) > 0 {
            // A snapshot is still being written: this periodic one waits for the next applied
            // batch (the counters are kept, so it is not skipped, only deferred), and nothing
            // is serialised meanwhile.
            tracing::debug!("a snapshot is still being written; the periodic one is deferred");
            return;
        }
        let built = build(position, catalog, applier);
        *self
            .counters
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Counters {
            events: 0,
            bytes: 0,
            since: Instant::now(),
        };
        let snapshot = match built {
            Ok(snapshot) => snapshot,
            Err(error) => {
                tracing::error!(%error, "snapshot could not be built");
                if let Some(reply) = reply {
                    let _ = reply.send(Err(error));
                }
                return;
            }
        };
        let jobs = self
            .jobs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some(jobs) = jobs.as_ref() else {
            if let Some(reply) = reply {
                let _ = reply.send(Err(Error::Closed));
            }
            return;
        };
        let on_demand = reply.is_some();
        let job = Job { snapshot, reply };
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        if on_demand {
            if jobs.send(job).is_err() {
                self.in_flight.fetch_sub(1, Ordering::AcqRel);
            }
        } else if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            jobs.try_send(job)
        {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            tracing::debug!("a snapshot is still being written; this periodic one is skipped");
        }
    }

    /// Finishes the snapshot being written and stops the thread.
    pub(crate) fn stop(&self) {
        self.jobs
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

fn build(position: u64, catalog: &StreamTable, applier: &dyn Applier) -> Result<Snapshot> {
    let mut sections = vec![SnapshotSection {
        id: STREAMS_SECTION.to_owned(),
        version: STREAMS_SECTION_VERSION,
        bytes: codec::encode(catalog)?,
    }];
    sections.extend(applier.snapshot_sections()?);
    Ok(Snapshot { position, sections })
}

fn write_loop(store: &SnapshotStore, keep: usize, jobs: Receiver<Job>, in_flight: &AtomicUsize) {
    while let Ok(job) = jobs.recv() {
        let result = store.write(&job.snapshot).map_err(Error::from);
        match &result {
            Ok(info) => {
                tracing::info!(
                    position = info.position,
                    bytes = info.bytes,
                    "snapshot written"
                );
                if let Err(error) = store.retain(keep.max(1)) {
                    tracing::warn!(%error, "old snapshots could not be removed");
                }
            }
            Err(error) => tracing::error!(%error, "snapshot could not be written"),
        }
        in_flight.fetch_sub(1, Ordering::AcqRel);
        if let Some(reply) = job.reply {
            let _ = reply.send(result);
        }
    }
}

/// Restores the catalog and the projections from a snapshot; all or nothing.
pub(crate) fn restore(snapshot: &Snapshot, applier: &dyn Applier) -> Result<StreamTable> {
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
    applier.restore_sections(snapshot)?;
    Ok(catalog)
}
