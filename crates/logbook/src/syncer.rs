//! The syncer: makes written events durable, acknowledges them, and publishes them.
//!
//! Owns: waiting for the WAL's durable position (leading its group commit) while the writer keeps
//! appending, answering appends once durable, and handing newly durable records to live
//! subscribers; poisoning the engine when a sync fails; publishing when it is idle
//! ([`SyncerIdle`]), so the writer may sync and settle a lone request itself
//! ([`settle_now`], the same steps in the writer's thread). Must never: acknowledge or publish a
//! record above the durable position, acknowledge an append whose events were not applied to
//! the catalog and every projection, or encode or write a snapshot (it only takes the cut).
//! It holds only the WAL and the stream index ([`SyncerStorage`]); the engine's state (apply,
//! poison, snapshots, subscribers) it reaches only through the [`DurableSink`] it was handed.

use crate::apply::IndexBatch;
use crate::backend::{DecodedBatch, DurableSink};
use crate::error::{Error, Result};
use crate::index::StreamIndex;
use crate::writer::AppendResult;
use logbook_wal::SyncPolicy;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use tokio::sync::oneshot;

/// What the syncer owns of the embedded storage: the WAL it syncs and the stream index it
/// keeps up to date; everything above the storage (apply, poison, snapshots, subscribers) it
/// reaches only through the engine's [`DurableSink`]. The writer holds a clone for the jobs it
/// settles itself ([`settle_now`]).
#[derive(Clone)]
pub(crate) struct SyncerStorage {
    pub(crate) wal: Arc<logbook_wal::Wal>,
    pub(crate) index: Arc<StreamIndex>,
    /// How long relaxed appends may wait for a sync.
    pub(crate) relaxed_sync_delay: std::time::Duration,
    /// The bytes of records handed to the syncer and not yet settled ([`Backlog`]).
    pub(crate) backlog: Arc<Backlog>,
}

/// The bytes of records the writer handed to the syncer that the syncer has not settled yet
/// (durable and published, or failed), bounded by [`BACKLOG_BYTES_MAX`]: relaxed appends
/// return once written, so while one fsync is slow, they would otherwise queue without limit
/// (a 100 MB import once held 122 MB in a CI run). The writer waits before handing over a job
/// that would pass the bound (a job alone always goes, whatever its size); the syncer then
/// syncs at once rather than after its relaxed delay, settles, and wakes it.
#[derive(Debug, Default)]
pub(crate) struct Backlog {
    state: std::sync::Mutex<BacklogState>,
    settled: std::sync::Condvar,
}

#[derive(Debug, Default)]
struct BacklogState {
    bytes: u64,
    /// Whether the writer waits for room.
    waiting: bool,
    /// The syncer stopped (or panicked): nothing will settle, so nobody waits.
    closed: bool,
}

/// The most bytes of records handed to the syncer and not yet settled, beyond one job (at most
/// 8 MiB for an import's batch): an import's peak stays near 20 MB of its own plus this.
pub(crate) const BACKLOG_BYTES_MAX: u64 = 16 << 20;

impl Backlog {
    fn lock(&self) -> std::sync::MutexGuard<'_, BacklogState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts `bytes` more handed over, first waiting while they would take the backlog past
    /// [`BACKLOG_BYTES_MAX`] (never while it is empty). The writer's side.
    pub(crate) fn admit(&self, bytes: u64) {
        let mut state = self.lock();
        while !state.closed
            && state.bytes > 0
            && state.bytes.saturating_add(bytes) > BACKLOG_BYTES_MAX
        {
            state.waiting = true;
            state = self
                .settled
                .wait(state)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        state.waiting = false;
        state.bytes = state.bytes.saturating_add(bytes);
    }

    /// `bytes` were settled: the syncer's side.
    fn release(&self, bytes: u64) {
        if bytes == 0 {
            return;
        }
        let mut state = self.lock();
        debug_assert!(state.bytes >= bytes, "released more than was admitted");
        state.bytes = state.bytes.saturating_sub(bytes);
        self.settled.notify_all();
    }

    /// Whether the writer waits for room: the syncer then syncs without waiting its delay.
    fn writer_waits(&self) -> bool {
        self.lock().waiting
    }

    /// The syncer stopped: wakes a waiting writer for good (its job's send then fails).
    fn close(&self) {
        self.lock().closed = true;
        self.settled.notify_all();
    }
}

/// Closes the backlog when the syncer's run ends, however it ends (a panic included), so the
/// writer never waits for a syncer that is gone.
struct CloseBacklog<'a>(&'a Backlog);

impl Drop for CloseBacklog<'_> {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// The bytes of `records`' envelopes.
fn record_bytes<'a>(records: impl IntoIterator<Item = &'a LiveRecord>) -> u64 {
    records
        .into_iter()
        .map(|(_, bytes)| bytes.len() as u64)
        .sum()
}

/// Updates the stream index (the embedded backend's derived data) from newly durable
/// records, decoded once. A failure is logged, never poison: the index is rebuilt at the next
/// open.
fn index_durable(index: &StreamIndex, decoded: &DecodedBatch<'_>) {
    let mut batch = IndexBatch::default();
    let indexed = decoded
        .records
        .iter()
        .try_for_each(|record| batch.add(index, record))
        .and_then(|()| batch.flush(index));
    if let Err(error) = indexed {
        tracing::error!(%error, "stream index update failed; it is rebuilt at the next open");
    }
}

/// Whether the syncer is idle: shared by the writer and the syncer, so the writer may lead the
/// sync of a lone request itself (one thread hand-off and two context switches fewer per
/// append with one writer).
///
/// The writer counts the jobs it sends; the syncer publishes how many jobs it has received and
/// fully settled (nothing left pending) after each round. Equal counts mean the syncer holds
/// nothing and waits for its next job, which only the writer can send: a job the writer settles
/// in its own thread then cannot overtake an earlier one (acks, applies and publications stay
/// in position order). The `Release` store after the settle pairs with the writer's `Acquire`
/// load, so the earlier settle's applies happen before the writer's.
#[derive(Debug, Default)]
pub(crate) struct SyncerIdle {
    settled: AtomicU64,
}

impl SyncerIdle {
    /// True when the syncer has settled every one of the `sent` jobs the writer sent it.
    pub(crate) fn is_idle(&self, sent: u64) -> bool {
        self.settled.load(Ordering::Acquire) == sent
    }

    /// The syncer has received `received` jobs and nothing of them is pending.
    fn publish(&self, received: u64) {
        self.settled.store(received, Ordering::Release);
    }
}

/// A durable record as live subscribers receive it: position and envelope bytes.
pub(crate) type LiveRecord = (u64, Arc<Vec<u8>>);

/// An append waiting for durability.
pub(crate) struct Ack {
    pub(crate) result: AppendResult,
    pub(crate) reply: oneshot::Sender<Result<AppendResult>>,
}

/// What the writer hands over after a batch of requests.
#[derive(Default)]
pub(crate) struct SyncJob {
    pub(crate) acks: Vec<Ack>,
    pub(crate) records: Vec<LiveRecord>,
    pub(crate) sync_replies: Vec<oneshot::Sender<Result<u64>>>,
    pub(crate) snapshot_replies: Vec<crate::snapshots::SnapshotReply>,
}

impl SyncJob {
    /// The bytes of its records' envelopes, as [`Backlog::admit`] counts them.
    pub(crate) fn record_bytes(&self) -> u64 {
        record_bytes(&self.records)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.acks.is_empty()
            && self.records.is_empty()
            && self.sync_replies.is_empty()
            && self.snapshot_replies.is_empty()
    }

    /// True when someone waits for this job's sync (an ack, a sync or a snapshot request);
    /// false for relaxed appends alone, which the syncer makes durable within its delay.
    pub(crate) fn must_sync(&self) -> bool {
        !self.acks.is_empty() || !self.sync_replies.is_empty() || !self.snapshot_replies.is_empty()
    }
}

#[derive(Default)]
struct Pending {
    acks: VecDeque<Ack>,
    records: VecDeque<LiveRecord>,
    /// The bytes of `records`' envelopes.
    record_bytes: u64,
    sync_replies: Vec<oneshot::Sender<Result<u64>>>,
    snapshot_replies: Vec<crate::snapshots::SnapshotReply>,
}

impl Pending {
    fn take(&mut self, job: SyncJob) {
        self.record_bytes += job.record_bytes();
        self.acks.extend(job.acks);
        self.records.extend(job.records);
        self.sync_replies.extend(job.sync_replies);
        self.snapshot_replies.extend(job.snapshot_replies);
    }

    fn is_empty(&self) -> bool {
        self.acks.is_empty()
            && self.records.is_empty()
            && self.sync_replies.is_empty()
            && self.snapshot_replies.is_empty()
    }
}

/// Runs the syncer until the writer hung up and everything pending was settled; durable
/// records go to `sink`, the engine's one apply.
pub(crate) fn run(
    storage: SyncerStorage,
    sink: Arc<dyn DurableSink>,
    jobs: Receiver<SyncJob>,
    idle: Arc<SyncerIdle>,
) {
    let _close_backlog = CloseBacklog(&storage.backlog);
    let mut pending = Pending::default();
    let delay = storage.relaxed_sync_delay;
    let mut open = true;
    let mut received: u64 = 0;
    while open || !pending.is_empty() {
        let job = if !open {
            None
        } else if pending.is_empty() {
            match jobs.recv() {
                Ok(job) => Some(job),
                Err(_) => break,
            }
        } else {
            match jobs.recv_timeout(delay) {
                Ok(job) => Some(job),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => {
                    open = false;
                    None
                }
            }
        };
        let timed_out = job.is_none();
        if let Some(job) = job {
            received += 1;
            pending.take(job);
        }
        while let Ok(job) = jobs.try_recv() {
            received += 1;
            pending.take(job);
        }
        // The writer waits for room in the backlog: sync now, whatever the policy (with
        // `SyncPolicy::Never` nothing else would make these records durable before a roll).
        let backlog_full = !pending.records.is_empty() && storage.backlog.writer_waits();
        let must_sync = !pending.acks.is_empty()
            || !pending.sync_replies.is_empty()
            || !pending.snapshot_replies.is_empty()
            || !open
            || backlog_full;
        let relaxed_due = timed_out
            && !pending.records.is_empty()
            && storage.wal.options().sync_policy != SyncPolicy::Never;
        let outcome = if must_sync || relaxed_due {
            storage.wal.sync().map_err(Error::from)
        } else {
            Ok(storage.wal.durable_position())
        };
        let held = pending.record_bytes;
        let mut answers = Answers::default();
        settle(&storage, sink.as_ref(), &mut pending, outcome, &mut answers);
        answers.send();
        storage.backlog.release(held - pending.record_bytes);
        if pending.is_empty() {
            idle.publish(received);
        }
    }
    sink.closed();
    if let Err(error) = storage.index.flush() {
        tracing::warn!(%error, "stream index flush at close failed; it catches up at the next open");
    }
    tracing::debug!("syncer stopped");
}

/// Syncs the WAL and settles `job` in the calling thread: the writer's path for a lone request
/// while the syncer is idle ([`SyncerIdle`]). The same steps, in the same order, as the
/// syncer's round: sync, index, apply, publish, and the answers (acks only for what is durable
/// and applied), which the caller sends ([`Answers::send`]) once it released the writer's
/// seat; a failed sync poisons the engine and fails the job's requests.
///
/// Returns how long `Wal::sync` took (the disk's part, for [`crate::seat::Seat`]).
pub(crate) fn settle_now(
    storage: &SyncerStorage,
    sink: &dyn DurableSink,
    job: SyncJob,
) -> (std::time::Duration, Answers) {
    let _span = tracing::debug_span!("writer_led_sync", acks = job.acks.len()).entered();
    let mut pending = Pending::default();
    pending.take(job);
    // Durability: `Wal::sync` returns once every record appended so far (this job's included)
    // is written and fsynced; nothing is acknowledged before it returned `Ok`.
    let started = std::time::Instant::now();
    let outcome = storage.wal.sync().map_err(Error::from);
    let took = started.elapsed();
    let mut answers = Answers::default();
    settle(storage, sink, &mut pending, outcome, &mut answers);
    assert!(
        pending.is_empty(),
        "a job settled after its own sync leaves nothing pending"
    );
    (took, answers)
}

/// Appends' answers decided by a settle, sent by [`Answers::send`] after it.
#[derive(Default)]
#[must_use = "an append waits for its answer"]
pub(crate) struct Answers(Vec<(Ack, Option<Error>)>);

impl Answers {
    fn ack(&mut self, ack: Ack) {
        self.0.push((ack, None));
    }

    fn fail(&mut self, ack: Ack, error: Error) {
        self.0.push((ack, Some(error)));
    }

    /// Sends every answer, in the order decided.
    pub(crate) fn send(self) {
        for (ack, error) in self.0 {
            let answer = match error {
                None => Ok(ack.result),
                Some(error) => Err(error),
            };
            // The caller may have gone away (cancelled future): nothing to tell then.
            let _ = ack.reply.send(answer);
        }
    }
}

/// Decides the answers and publishes everything the outcome of a sync allows.
fn settle(
    storage: &SyncerStorage,
    sink: &dyn DurableSink,
    pending: &mut Pending,
    outcome: Result<u64>,
    answers: &mut Answers,
) {
    let durable = match outcome {
        Ok(durable) => durable,
        Err(error) => {
            // Durability: the fsync failed, so nothing above the durable position may be
            // acknowledged; the WAL never retries it, and the engine refuses writes from now on.
            let reason = format!("a WAL sync failed: {error}");
            let poison = sink.poison(storage.wal.durable_position() + 1, reason);
            fail_all(pending, answers, &|| poison.error());
            // Records that never became durable are never published.
            pending.records.clear();
            pending.record_bytes = 0;
            return;
        }
    };
    let mut batch = Vec::new();
    while pending
        .records
        .front()
        .is_some_and(|(position, _)| *position <= durable)
    {
        if let Some(record) = pending.records.pop_front() {
            batch.push(record);
        }
    }
    pending.record_bytes -= record_bytes(&batch);
    // Decoded once, for the stream index (this backend's derived data) and the engine's apply.
    let decoded = DecodedBatch::decode(&batch);
    index_durable(&storage.index, &decoded);
    // Projections first: an acknowledged append is visible in them. A record they cannot take
    // poisons the engine: the appends before it are acknowledged, it and the rest fail.
    let applied_below = match sink.apply(&batch, &decoded) {
        Ok(()) => durable + 1,
        Err(poison) => poison.position,
    };
    while pending
        .acks
        .front()
        .is_some_and(|ack| ack.result.last_position < applied_below.min(durable + 1))
    {
        if let Some(ack) = pending.acks.pop_front() {
            answers.ack(ack);
        }
    }
    match sink.poisoned() {
        Some(poison) => fail_all(pending, answers, &|| poison.error()),
        None => {
            for reply in pending.sync_replies.drain(..) {
                let _ = reply.send(Ok(durable));
            }
        }
    }
    // Subscribers follow the log, not the projections: every durable record is published.
    if !batch.is_empty() {
        sink.publish(batch);
    }
    // On-demand snapshots: everything before them is durable and applied now (refused when
    // poisoned).
    for reply in pending.snapshot_replies.drain(..) {
        sink.snapshot(reply);
    }
}

/// Fails every waiting append and sync with `error` (poisoned); acks above the durable
/// position included: their outcome is unknown.
fn fail_all(pending: &mut Pending, answers: &mut Answers, error: &dyn Fn() -> Error) {
    for ack in pending.acks.drain(..) {
        answers.fail(ack, error());
    }
    for reply in pending.sync_replies.drain(..) {
        let _ = reply.send(Err(error()));
    }
    for reply in pending.snapshot_replies.drain(..) {
        let _ = reply.send(Err(error()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    /// A job that would take the backlog past its bound waits until the syncer settles
    /// enough; one alone always goes; a closed backlog never makes anyone wait.
    #[test]
    fn the_backlog_holds_the_writer_until_the_syncer_settles() {
        let backlog = Arc::new(Backlog::default());
        // Alone, even past the bound.
        backlog.admit(BACKLOG_BYTES_MAX + 1);
        backlog.release(BACKLOG_BYTES_MAX + 1);
        backlog.admit(BACKLOG_BYTES_MAX / 2 + 1);
        let (done, admitted) = mpsc::channel();
        let writer = {
            let backlog = backlog.clone();
            std::thread::spawn(move || {
                backlog.admit(BACKLOG_BYTES_MAX / 2 + 1);
                done.send(()).unwrap();
            })
        };
        assert!(admitted.recv_timeout(Duration::from_millis(200)).is_err());
        assert!(backlog.writer_waits(), "the writer waits for room");
        backlog.release(BACKLOG_BYTES_MAX / 2 + 1);
        admitted.recv_timeout(Duration::from_secs(10)).unwrap();
        writer.join().unwrap();
        assert!(!backlog.writer_waits());
        // Full again; the syncer stops: the writer goes on (its send then fails).
        let writer = {
            let backlog = backlog.clone();
            std::thread::spawn(move || backlog.admit(BACKLOG_BYTES_MAX))
        };
        std::thread::sleep(Duration::from_millis(50));
        drop(CloseBacklog(&backlog));
        writer.join().unwrap();
    }
}
