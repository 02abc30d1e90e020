//! The writer's seat: who runs the writer's code for the next request.
//!
//! Owns: the lock around what the writer owns ([`WriterState`], the count of jobs it handed to
//! the syncer, whether it stopped), and the choice, for one append, between the writer thread
//! and the caller's own thread. The writer thread takes the seat for every batch it takes from
//! its queue. A *lone* durable append (the previous request was settled alone with nothing
//! queued behind it, nothing is queued now, the writer thread is not waiting for the seat, the
//! syncer is idle, recent syncs were fast) takes it on the caller's thread instead and runs
//! exactly the writer-led path there (checks, WAL write, `fdatasync`, settle: index, apply,
//! ack, publish): with one writer that saves the two thread hand-offs of the queue and the
//! reply, which cost more than the sync's own time variance on a VM with idle cores (a probe on
//! this repository's 2-core VM: 15 to 60 µs per append, against an 80 to 110 µs sync).
//!
//! Must never: take a request ahead of one already queued (a caller that finds anything queued,
//! or the writer thread waiting, queues too), run on a current-thread tokio runtime (it would
//! stall every task of that runtime for the sync), run while recent syncs were slow
//! ([`crate::LogbookOptions::lone_appends_on_caller`]: a slow disk goes back to the writer
//! thread), or run anything but a request that waits for its own sync (a relaxed append, a
//! delete, a sync or a snapshot request always goes through the queue). Durability is the writer-led path's: the reply is
//! sent only after `Wal::sync` returned `Ok`.

use crate::syncer;
use crate::writer::{self, Command, WriterState};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, TryLockError};
use std::time::Duration;
use tokio::sync::mpsc;

/// What the writer owns, taken by whoever writes next.
pub(crate) struct Held {
    pub(crate) state: WriterState,
    /// Jobs handed to the syncer (compared with what it settled: `SyncerIdle`).
    pub(crate) sent: u64,
    /// The writer thread stopped (close, or its queue closed): nothing more is written.
    pub(crate) stopped: bool,
}

/// The writer's seat. See the module documentation.
pub(crate) struct Seat {
    held: Mutex<Held>,
    /// Set while the writer thread has requests in hand and waits for the seat: callers then
    /// queue behind them rather than take the seat first.
    writer_waiting: AtomicBool,
    /// The last request was settled alone (the writer-led sync) and nothing was queued by the
    /// time it was: appends come one at a time. Under concurrent appenders it is false (the
    /// writer took a batch, or others queued during a lone sync), so they keep the writer
    /// thread's group commit, with every runtime worker free to queue the next requests.
    lone: AtomicBool,
    /// Smoothed duration (µs) of writer-led `Wal::sync` calls (write-out and `fdatasync`),
    /// either thread's.
    sync_micros: AtomicU64,
    /// [`crate::LogbookOptions::lone_appends_on_caller`] in µs: lone appends run on callers'
    /// threads while `sync_micros` is at most this; `None`: never. A slower disk (a network
    /// volume: 0.5 to several ms per sync) would hold the caller's runtime worker for as long.
    sync_micros_max: Option<u64>,
    /// Lone appends taken on callers' threads (for tests and `Stats`).
    taken_by_callers: AtomicU64,
}

impl Seat {
    pub(crate) fn new(state: WriterState, sync_max: Option<Duration>) -> Seat {
        Seat {
            held: Mutex::new(Held {
                state,
                sent: 0,
                stopped: false,
            }),
            writer_waiting: AtomicBool::new(false),
            lone: AtomicBool::new(false),
            sync_micros: AtomicU64::new(0),
            sync_micros_max: sync_max.map(|max| u64::try_from(max.as_micros()).unwrap_or(u64::MAX)),
            taken_by_callers: AtomicU64::new(0),
        }
    }

    /// The writer thread takes the seat for a batch it holds; `None` when a caller panicked
    /// while holding it (the writer state may be half-changed: nothing more is written).
    pub(crate) fn take_for_writer(&self) -> Option<MutexGuard<'_, Held>> {
        self.writer_waiting.store(true, Ordering::Release);
        let held = self.held.lock().ok();
        self.writer_waiting.store(false, Ordering::Release);
        held
    }

    /// Lone appends handled on callers' threads so far (refused ones included).
    pub(crate) fn taken_by_callers(&self) -> u64 {
        self.taken_by_callers.load(Ordering::Relaxed)
    }

    /// The writer thread took a batch of more than one request, or handed one to the syncer:
    /// appends are not coming one at a time.
    pub(crate) fn not_lone(&self) {
        self.lone.store(false, Ordering::Relaxed);
    }

    /// Runs the writer-led sync of a lone request ([`syncer::settle_now`]) and records how long
    /// it took, and whether anything was queued meanwhile (`queue_empty`, asked afterwards).
    /// The caller sends the answers once it released the seat: an appender that gets its ack
    /// finds the seat free and knows whether appends come one at a time.
    pub(crate) fn settle_lone(
        &self,
        held: &Held,
        job: syncer::SyncJob,
        queue_empty: impl FnOnce() -> bool,
    ) -> syncer::Answers {
        let (took, answers) =
            syncer::settle_now(&held.state.syncer_storage, held.state.sink.as_ref(), job);
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        // An exponential average over about eight syncs: one slow sync does not send the next
        // appends to the writer thread, a slow disk does.
        let old = self.sync_micros.load(Ordering::Relaxed);
        let new = old - old / 8 + micros / 8;
        self.sync_micros.store(new, Ordering::Relaxed);
        self.lone.store(queue_empty(), Ordering::Release);
        answers
    }

    /// Runs `command` on the caller's thread if it is a lone durable append (see the module
    /// documentation); its reply is then sent before this returns. Otherwise hands the command
    /// back, untouched, for the queue.
    pub(crate) fn try_lone(
        &self,
        queue: &mpsc::Sender<Command>,
        command: Command,
    ) -> std::result::Result<(), Command> {
        let Some(sync_micros_max) = self.sync_micros_max else {
            return Err(command);
        };
        if !self.lone.load(Ordering::Acquire)
            || self.writer_waiting.load(Ordering::Acquire)
            || queue.capacity() != queue.max_capacity()
            || self.sync_micros.load(Ordering::Relaxed) > sync_micros_max
            || on_current_thread_runtime()
        {
            return Err(command);
        }
        let held = match self.held.try_lock() {
            Ok(held) => held,
            Err(TryLockError::WouldBlock | TryLockError::Poisoned(_)) => return Err(command),
        };
        if held.stopped
            || !writer::waits_for_own_sync(&held.state, &command)
            || !held.state.syncer_idle.is_idle(held.sent)
        {
            return Err(command);
        }
        let mut job = syncer::SyncJob::default();
        writer::handle(&held.state, command, &mut job);
        self.taken_by_callers.fetch_add(1, Ordering::Relaxed);
        if !job.is_empty() {
            assert!(
                job.must_sync() && job.acks.len() == 1,
                "a lone append waits for its own sync"
            );
            let answers = self.settle_lone(&held, job, || queue.capacity() == queue.max_capacity());
            drop(held);
            answers.send();
        }
        Ok(())
    }
}

/// True on a worker of a current-thread tokio runtime: blocking there for a sync would stall
/// every task of that runtime.
fn on_current_thread_runtime() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|handle| handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread)
}
