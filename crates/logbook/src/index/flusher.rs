//! The stream index's background flush: writes sled's buffered changes to disk at most every
//! [`FLUSH_EVERY`], on a thread started by the first change after open.
//!
//! Owns: that thread, and whether a change waits for it. Must never: run on an append's path
//! (acks never wait for sled's fsync), or keep a sled handle once stopped (its lock on the
//! directory must be free when the index is released).
//!
//! Why not sled's own flusher (`Config::flush_every_ms`): sled starts it inside `open`, whose
//! first flush then competes with the open itself; the open of the index is on the path of
//! every service's first read. This one starts only when there is something to flush. What a
//! crash loses is the same either way (at most the last interval of index changes, which the
//! next open catches up from the WAL past the completeness marker, or, for entries compaction
//! dropped, which reads skip).

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// The longest a change to the index stays only in sled's memory while the index is open
/// (sled's own default flush interval).
pub(crate) const FLUSH_EVERY: Duration = Duration::from_millis(500);

#[derive(Default)]
struct State {
    /// A change is not flushed yet.
    dirty: bool,
    /// Stopped for good: no thread starts again.
    stopped: bool,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

/// Flushes a sled database in the background after changes.
#[derive(Default)]
pub(crate) struct Flusher {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Flusher {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records a change to `db`: flushed within [`FLUSH_EVERY`]. Starts the thread the first
    /// time; when no thread can start, flushes in line.
    pub(crate) fn changed(&self, db: &sled::Db) {
        {
            let mut state = self.lock();
            if state.stopped {
                return;
            }
            state.dirty = true;
        }
        self.shared.wake.notify_one();
        let mut thread = self
            .thread
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if thread.is_some() {
            return;
        }
        let shared = self.shared.clone();
        let thread_db = db.clone();
        match std::thread::Builder::new()
            .name("logbook-index-flush".into())
            .spawn(move || run(&shared, &thread_db))
        {
            Ok(handle) => *thread = Some(handle),
            Err(error) => {
                tracing::debug!(%error, "index flush thread not started; flushing in line");
                self.lock().dirty = false;
                if let Err(error) = db.flush() {
                    tracing::warn!(%error, "stream index flush failed");
                }
            }
        }
    }

    /// Stops the thread and waits for it (it drops its sled handle); nothing starts again.
    /// The caller flushes what is left.
    pub(crate) fn stop(&self) {
        self.lock().stopped = true;
        self.shared.wake.notify_all();
        let handle = self
            .thread
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }
}

fn run(shared: &Shared, db: &sled::Db) {
    let mut state = shared
        .state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    loop {
        while !state.dirty && !state.stopped {
            state = shared
                .wake
                .wait(state)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        if state.stopped {
            return;
        }
        state.dirty = false;
        drop(state);
        if let Err(error) = db.flush() {
            tracing::warn!(%error, "stream index flush failed; it catches up at the next open");
        }
        // At most one flush per interval; a stop ends the wait at once.
        state = shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (waited, _) = shared
            .wake
            .wait_timeout_while(state, FLUSH_EVERY, |state| !state.stopped)
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        state = waited;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_is_flushed_in_the_background_and_stop_releases_the_handle() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let db = sled::Config::new()
            .path(&path)
            .flush_every_ms(None)
            .open()
            .unwrap();
        let flusher = Flusher::default();
        let on_disk = || std::fs::read(path.join("db")).unwrap_or_default();
        let holds = |bytes: &[u8], needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
        db.insert(b"key", b"a value only a flush writes").unwrap();
        // sled keeps it in memory (no flusher of its own)...
        std::thread::sleep(FLUSH_EVERY * 2);
        assert!(!holds(&on_disk(), b"a value only a flush writes"));
        // ...until the change is reported: the thread writes it.
        flusher.changed(&db);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !holds(&on_disk(), b"a value only a flush writes") {
            assert!(std::time::Instant::now() < deadline, "never flushed");
            std::thread::sleep(Duration::from_millis(5));
        }
        flusher.stop();
        assert!(flusher.thread.lock().unwrap().is_none(), "the thread ended");
        // Stopped: a later change starts no thread.
        flusher.changed(&db);
        assert!(flusher.thread.lock().unwrap().is_none());
        drop(db);
        // Every handle is gone: the directory opens again (sled's lock is free).
        let reopened = sled::Config::new().path(&path).open().unwrap();
        assert_eq!(
            reopened.get(b"key").unwrap().as_deref(),
            Some(&b"a value only a flush writes"[..])
        );
    }
}
