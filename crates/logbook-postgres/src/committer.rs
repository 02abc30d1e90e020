//! The group committer: gathers concurrent [`crate::PgStore::append`] calls into groups, one
//! transaction per group, and the coalesced wake-up `NOTIFY` after commits.
//!
//! Owns: the bounded queue of waiting appends, the one task that drains it into groups (a
//! group is whatever is waiting, up to [`GROUP_REQUESTS_MAX`] requests,
//! [`COMMIT_GROUP_EVENTS_MAX`] events and [`COMMIT_GROUP_BYTES_MAX`] envelope bytes), the limit
//! of groups in flight ([`GROUPS_IN_FLIGHT_DEFAULT`]: the next group waits at the append lock, its
//! round trips already made, while the previous one commits), and the notifier task.
//! Never: fails a whole group for one request's expected-version check (that request alone
//! fails), acknowledges an append before its group committed, or sends a `NOTIFY` inside an
//! append's transaction or while an append waits for it (the notifier runs beside the appends
//! and folds every commit made while one `NOTIFY` is on its way into the next one).

use crate::error::{Error, Result};
use crate::store::{AppendRequest, Appended, NOTIFY_CHANNEL, PgStore};
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{Semaphore, mpsc, oneshot};

/// Appends waiting for the committer at most; a caller past it waits for room (back-pressure).
pub const QUEUE_REQUESTS_MAX: usize = 8192;
/// The most requests in one group.
pub const GROUP_REQUESTS_MAX: usize = 1024;
/// The most events in one gathered group (a single larger request still goes alone, up to
/// [`crate::store::GROUP_EVENTS_MAX`]).
pub const COMMIT_GROUP_EVENTS_MAX: usize = 8192;
/// The most envelope bytes in one gathered group (a single larger request still goes alone,
/// up to [`crate::store::GROUP_BYTES_MAX`]).
pub const COMMIT_GROUP_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Groups whose transactions are open at once, by default. One: the append lock is held
/// through each group's commit (its fsync), so groups commit one after the other whatever this
/// is, and a second group in flight only splits the waiting appends in two smaller groups
/// (measured on PostgreSQL 15, fsync on, 16 writers, `benches/compare postgres`: about 4,500
/// appends/s and 16 appends per transaction with one in flight, 2,749 and 8.6 with two).
pub const GROUPS_IN_FLIGHT_DEFAULT: usize = 1;
/// The longest a group waits for more appends when fewer are queued than the recent groups
/// held (the callers just acknowledged are on their way back). Bounded by this, and only
/// spent when appends were recently concurrent: a lone writer never waits.
pub const GATHER_WAIT_MAX: Duration = Duration::from_micros(500);
/// How many recent group sizes the gather target remembers (the target is their maximum).
pub const GATHER_TARGET_GROUPS: usize = 8;

/// One waiting append and where its outcome goes.
struct Pending {
    request: AppendRequest,
    events: usize,
    bytes: usize,
    reply: oneshot::Sender<Result<Appended>>,
}

/// What the committer did so far (for tests and benchmarks: requests per group).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CommitterStats {
    /// Groups sent (committed or failed whole).
    pub groups: u64,
    /// Requests in those groups.
    pub requests: u64,
}

#[derive(Default)]
struct Counters {
    groups: AtomicU64,
    requests: AtomicU64,
}

/// The sending side of the committer's queue, held by every clone of a writable store.
#[derive(Clone)]
pub(crate) struct Committer {
    queue: mpsc::Sender<Pending>,
    counters: Arc<Counters>,
}

impl Committer {
    /// Starts the committer task for `store` (a clone without a committer of its own, so the
    /// task ends when the last user handle is dropped).
    pub(crate) fn start(store: PgStore, groups_in_flight: usize) -> Committer {
        let (queue, receiver) = mpsc::channel(QUEUE_REQUESTS_MAX);
        let counters = Arc::new(Counters::default());
        let in_flight = Arc::new(Semaphore::new(groups_in_flight.max(1)));
        tokio::spawn(run(store, receiver, counters.clone(), in_flight));
        Committer { queue, counters }
    }

    /// Groups and requests sent so far.
    pub(crate) fn stats(&self) -> CommitterStats {
        CommitterStats {
            groups: self.counters.groups.load(Ordering::Relaxed),
            requests: self.counters.requests.load(Ordering::Relaxed),
        }
    }

    /// Queues `request` and waits for its group's outcome.
    pub(crate) async fn append(&self, request: AppendRequest) -> Result<Appended> {
        let events = request.events.len();
        let bytes = request
            .events
            .iter()
            .map(|data| data.envelope_len(&request.stream))
            .sum();
        let (reply, outcome) = oneshot::channel();
        let pending = Pending {
            request,
            events,
            bytes,
            reply,
        };
        self.queue.send(pending).await.map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }
}

fn stopped() -> Error {
    Error::Unavailable {
        operation: "append",
        cause: "the group committer stopped (its runtime is shutting down)".to_string(),
    }
}

/// The committer loop: waits for one append, takes whatever else is waiting up to the group
/// limits, and commits the group on its own task (at most [`GROUPS_IN_FLIGHT_DEFAULT`] at once).
async fn run(
    store: PgStore,
    mut receiver: mpsc::Receiver<Pending>,
    counters: Arc<Counters>,
    in_flight: Arc<Semaphore>,
) {
    let mut carried: VecDeque<Pending> = VecDeque::new();
    // Appends seen at once recently (queued plus in flight): how many callers there are.
    let mut recent_callers: VecDeque<usize> = VecDeque::with_capacity(GATHER_TARGET_GROUPS);
    let in_flight_requests = Arc::new(AtomicU64::new(0));
    loop {
        // Wait for a free slot first, so the appends that arrive meanwhile join this group.
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        if carried.is_empty() {
            match receiver.recv().await {
                Some(pending) => carried.push_back(pending),
                None => return,
            }
        }
        // The callers not in a group in flight are the ones this group can wait for.
        let busy = in_flight_requests.load(Ordering::Acquire) as usize;
        let callers = recent_callers.iter().copied().max().unwrap_or(1);
        wait_for(
            &mut carried,
            &mut receiver,
            callers.saturating_sub(busy).max(1),
        )
        .await;
        let group = gather(&mut carried, &mut receiver);
        if recent_callers.len() == GATHER_TARGET_GROUPS {
            recent_callers.pop_front();
        }
        recent_callers.push_back(group.len() + carried.len() + busy);
        let size = group.len() as u64;
        in_flight_requests.fetch_add(size, Ordering::AcqRel);
        let in_flight_requests = in_flight_requests.clone();
        counters.groups.fetch_add(1, Ordering::Relaxed);
        counters
            .requests
            .fetch_add(group.len() as u64, Ordering::Relaxed);
        let store = store.clone();
        tokio::spawn(async move {
            commit(&store, group).await;
            in_flight_requests.fetch_sub(size, Ordering::AcqRel);
            drop(permit);
        });
    }
}

/// Waits up to [`GATHER_WAIT_MAX`] until `target` appends are at hand.
async fn wait_for(
    carried: &mut VecDeque<Pending>,
    receiver: &mut mpsc::Receiver<Pending>,
    target: usize,
) {
    let target = target.min(GROUP_REQUESTS_MAX);
    let deadline = tokio::time::Instant::now() + GATHER_WAIT_MAX;
    while carried.len() < target {
        match receiver.try_recv() {
            Ok(pending) => {
                carried.push_back(pending);
                continue;
            }
            Err(TryRecvError::Disconnected) => return,
            Err(TryRecvError::Empty) => {}
        }
        match tokio::time::timeout_at(deadline, receiver.recv()).await {
            Ok(Some(pending)) => carried.push_back(pending),
            Ok(None) | Err(_) => return,
        }
    }
}

/// The appends carried over from earlier groups, then whatever is waiting, within the group
/// limits and at most one append per stream (the one-round-trip statement checks each append
/// against its stream's head before the group). What does not fit stays in `carried`, in
/// arrival order, for the next group.
fn gather(carried: &mut VecDeque<Pending>, receiver: &mut mpsc::Receiver<Pending>) -> Vec<Pending> {
    let (mut events, mut bytes) = (0usize, 0usize);
    let mut streams: HashSet<String> = HashSet::new();
    let mut group: Vec<Pending> = Vec::new();
    let mut deferred: VecDeque<Pending> = VecDeque::new();
    let mut full = false;
    // Carried appends first (they waited longest), then the queue.
    while let Some(pending) = carried.pop_front().or_else(|| {
        if full || deferred.len() >= GROUP_REQUESTS_MAX {
            None
        } else {
            receiver.try_recv().ok()
        }
    }) {
        let fits = group.is_empty()
            || (group.len() < GROUP_REQUESTS_MAX
                && events + pending.events <= COMMIT_GROUP_EVENTS_MAX
                && bytes + pending.bytes <= COMMIT_GROUP_BYTES_MAX);
        if !fits {
            full = true;
            deferred.push_back(pending);
            continue;
        }
        if !streams.insert(pending.request.stream.as_str().to_string()) {
            deferred.push_back(pending);
            continue;
        }
        events += pending.events;
        bytes += pending.bytes;
        group.push(pending);
    }
    *carried = deferred;
    group
}

/// Commits one group and answers each caller; a whole-group failure goes to every caller.
async fn commit(store: &PgStore, group: Vec<Pending>) {
    let (requests, replies): (Vec<AppendRequest>, Vec<_>) = group
        .into_iter()
        .map(|pending| (pending.request, pending.reply))
        .unzip();
    match store.commit_pipelined(&requests).await {
        Ok(outcomes) => {
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                // A caller that stopped waiting (dropped its future) needs no answer.
                let _ = reply.send(outcome);
            }
        }
        Err(error) => {
            for reply in replies {
                let _ = reply.send(Err(error.clone()));
            }
        }
    }
}

/// The notifier: one `NOTIFY` per wake request, where every request made while one is
/// pending or on its way folds into it.
#[derive(Clone)]
pub(crate) struct Notifier {
    wake: mpsc::Sender<()>,
}

impl Notifier {
    /// Starts the notifier task on `pool`; it ends when the last [`Notifier`] is dropped.
    pub(crate) fn start(pool: deadpool_postgres::Pool) -> Notifier {
        let (wake, mut wakes) = mpsc::channel::<()>(1);
        // A NOTIFY takes a transaction id, so its commit writes a commit record; with
        // `synchronous_commit` on it would wait for its own WAL flush, one more fsync beside
        // every group's. Off for this transaction only: listeners get the notification at
        // commit all the same, and a wake-up lost in a crash is covered by the followers' poll.
        let notify =
            format!("BEGIN; SET LOCAL synchronous_commit = off; NOTIFY {NOTIFY_CHANNEL}; COMMIT");
        tokio::spawn(async move {
            while wakes.recv().await.is_some() {
                // A lost NOTIFY (no connection now) is covered by the followers' periodic poll.
                if let Ok(client) = pool.get().await {
                    let _ = client.batch_execute(&notify).await;
                }
            }
        });
        Notifier { wake }
    }

    /// Asks for a wake-up after a commit; never waits (a full queue means one is pending).
    pub(crate) fn wake(&self) {
        let _ = self.wake.try_send(());
    }
}
