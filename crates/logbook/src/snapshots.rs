//! Snapshots in the engine: when to take one, what goes in, and building it off the append path.
//!
//! Owns: the snapshot policy counters, the cut of a snapshot (a copy of the durable stream
//! catalog and of every projection's state at one applied position, taken on the syncer thread
//! between two applied batches: it is the only mutator, so the cut is consistent), and the
//! background thread that encodes the cut, writes the file and prunes older ones. Must never:
//! include an event that is not durable, encode or write on the syncer thread (every
//! acknowledgement would wait for it), block the writer, or make open fail.
//!
//! Memory: a cut holds a copy of every projection's state until it is written. At most one
//! periodic snapshot is in flight (a due one is deferred while one is in flight); on-demand
//! ones (`Logbook::snapshot`, compaction) each wait for their reply, so their callers bound them.

use crate::error::{Error, Result};
use crate::projections::{Applier, StateCut};
use crate::streams::StreamTable;
use logbook_compaction::{Snapshot, SnapshotInfo, SnapshotPolicy, SnapshotSection, SnapshotStore};
use logbook_projection::codec;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;
use tokio::sync::oneshot;

/// The snapshot section holding the engine's durable stream catalog.
pub const STREAMS_SECTION: &str = "engine.streams";
const STREAMS_SECTION_VERSION: u16 = 1;
/// The largest stream catalog decoded from a snapshot.
const STREAMS_SECTION_BYTES_MAX: usize = 512 << 20;

pub(crate) type SnapshotReply = oneshot::Sender<Result<SnapshotInfo>>;

/// A consistent cut: the catalog and every projection as of `position`, not yet encoded.
struct Cut {
    position: u64,
    catalog: StreamTable,
    projections: Vec<Box<dyn StateCut>>,
}

struct Job {
    cut: Cut,
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
    jobs: Mutex<Option<Sender<Job>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Snapshots cut and not yet written (queued, being encoded or being written).
    in_flight: Arc<AtomicUsize>,
}

impl Snapshotter {
    pub(crate) fn start(store: Arc<SnapshotStore>, policy: SnapshotPolicy) -> Result<Snapshotter> {
        // Unbounded, so the syncer never waits on it: periodic cuts are sent only when nothing
        // is in flight, and each on-demand one has a caller waiting for its reply.
        let (jobs, receiver) = std::sync::mpsc::channel::<Job>();
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

    /// Cuts a snapshot at `position` (syncer thread, between two applied batches) and hands it
    /// to the snapshot thread, which encodes and writes it. The only work done here is copying
    /// the catalog and the projections' states.
    pub(crate) fn take(
        &self,
        position: u64,
        catalog: impl FnOnce() -> StreamTable,
        applier: &dyn Applier,
        reply: Option<SnapshotReply>,
    ) {
        let _span = tracing::debug_span!("snapshot_cut", position).entered();
        if reply.is_none() && self.in_flight.load(Ordering::Acquire) > 0 {
            // A snapshot is still being encoded or written: this periodic one waits for the
            // next applied batch (the counters are kept, so it is not skipped, only deferred),
            // and nothing is copied meanwhile.
            tracing::debug!("a snapshot is still being written; the periodic one is deferred");
            return;
        }
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
        *self
            .counters
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Counters {
            events: 0,
            bytes: 0,
            since: Instant::now(),
        };
        let cut = Cut {
            position,
            catalog: catalog(),
            projections: applier.cut(),
        };
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        if let Err(unsent) = jobs.send(Job { cut, reply }) {
            // The snapshot thread is gone (it only ends at close).
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            if let Some(reply) = unsent.0.reply {
                let _ = reply.send(Err(Error::Closed));
            }
        }
    }

    /// Finishes the snapshots in flight and stops the thread.
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

/// Encodes a cut (snapshot thread).
fn build(cut: &Cut) -> Result<Snapshot> {
    let _span = tracing::info_span!("snapshot_build", position = cut.position).entered();
    let mut sections = vec![SnapshotSection {
        id: STREAMS_SECTION.to_owned(),
        version: STREAMS_SECTION_VERSION,
        bytes: codec::encode(&cut.catalog)?,
    }];
    for projection in &cut.projections {
        sections.push(projection.section()?);
    }
    Ok(Snapshot {
        position: cut.position,
        sections,
    })
}

fn write_loop(store: &SnapshotStore, keep: usize, jobs: Receiver<Job>, in_flight: &AtomicUsize) {
    while let Ok(job) = jobs.recv() {
        let result = build(&job.cut).and_then(|snapshot| {
            drop(job.cut);
            store.write(&snapshot).map_err(Error::from)
        });
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
            Err(error) => tracing::error!(%error, "snapshot could not be built or written"),
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
