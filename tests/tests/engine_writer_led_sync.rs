//! The writer-led sync: a lone append while the syncer is idle is synced and settled by the
//! writer thread itself (no hand-off to the syncer), yet it is acknowledged only once durable,
//! a failed fsync on that path still fails the append and poisons the log, and concurrent
//! appends still go to the syncer and share syncs (group commit).
//!
//! Which thread synced is observed through a storage wrapper that records the name of the
//! thread of every `sync_data` on a file of the WAL directory (`logbook-writer` or
//! `logbook-syncer`), and can make each sync slow, the way a disk is.

use logbook::{Error, ExpectedVersion, Logbook, LogbookOptions, MemoryStorage, StreamId};
use logbook_tests::sync_hook::{HookedStorage, SyncHook};
use logbook_tests::{CounterEvent, added, test_options};
use logbook_wal::{CrashMode, FaultKind, FaultOp, WAL_DIR_NAME};
use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const LOG_DIR: &str = "/data/log";
const WRITER_THREAD: &str = "logbook-writer";
const SYNCER_THREAD: &str = "logbook-syncer";

/// WAL `sync_data` calls per thread name, shared by a [`Recording`] hook.
#[derive(Debug, Default)]
struct SyncLog {
    by_thread: Mutex<BTreeMap<String, u64>>,
}

impl SyncLog {
    fn record(&self) {
        let name = std::thread::current()
            .name()
            .unwrap_or("<unnamed>")
            .to_owned();
        *self
            .by_thread
            .lock()
            .expect("sync log lock")
            .entry(name)
            .or_default() += 1;
    }

    fn count(&self, thread: &str) -> u64 {
        self.by_thread
            .lock()
            .expect("sync log lock")
            .get(thread)
            .copied()
            .unwrap_or(0)
    }

    fn total(&self) -> u64 {
        self.by_thread.lock().expect("sync log lock").values().sum()
    }
}

/// A sync hook under which the WAL's files record which thread syncs them, each sync taking
/// `sync_delay` (a disk's fsync time) before it happens; other files sync as they are.
#[derive(Debug)]
struct Recording {
    syncs: Arc<SyncLog>,
    sync_delay: Duration,
}

impl SyncHook for Recording {
    fn sync_data(&self, path: &Path, sync: &dyn Fn() -> io::Result<()>) -> io::Result<()> {
        let in_wal = path
            .parent()
            .is_some_and(|parent| parent.ends_with(WAL_DIR_NAME));
        if in_wal {
            // Recorded before the call: a sync that fails was still led by this thread.
            self.syncs.record();
            if !self.sync_delay.is_zero() {
                std::thread::sleep(self.sync_delay);
            }
        }
        sync()
    }
}

async fn open(
    storage: &MemoryStorage,
    options: LogbookOptions,
    sync_delay: Duration,
) -> (Logbook<CounterEvent>, Arc<SyncLog>) {
    let syncs = Arc::new(SyncLog::default());
    let recording = HookedStorage::new(
        storage.clone(),
        Arc::new(Recording {
            syncs: syncs.clone(),
            sync_delay,
        }),
    );
    let (log, _) =
        Logbook::<CounterEvent>::open_with_storage(Arc::new(recording), LOG_DIR, options)
            .await
            .expect("open");
    (log, syncs)
}

/// The engine's default options (group commit), with small segments so rolls happen too.
fn default_options() -> LogbookOptions {
    let mut options = LogbookOptions::default();
    options.wal.segment_bytes_max = 64 * 1024;
    options
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_append_is_synced_and_settled_by_the_writer_thread() {
    for options in [default_options(), test_options()] {
        let storage = MemoryStorage::new();
        let (log, syncs) = open(&storage, options, Duration::ZERO).await;
        let stream = StreamId::new("counter/1").expect("stream id");
        let (writer_before, syncer_before) =
            (syncs.count(WRITER_THREAD), syncs.count(SYNCER_THREAD));
        const APPENDS: u64 = 40;
        for version in 0..APPENDS {
            let written = log
                .append(&stream, ExpectedVersion::Any, vec![added(version, "lone")])
                .await
                .expect("append");
            assert_eq!(written.version, version);
            // Read-your-writes: acknowledged means durable and applied.
            assert!(log.stats().durable_position >= written.last_position);
            assert_eq!(log.stream_version(&stream).expect("version"), Some(version));
        }
        let writer_syncs = syncs.count(WRITER_THREAD) - writer_before;
        let syncer_syncs = syncs.count(SYNCER_THREAD) - syncer_before;
        assert!(
            writer_syncs >= APPENDS,
            "every lone append is synced by the writer: {writer_syncs} writer syncs for {APPENDS}"
        );
        assert_eq!(syncer_syncs, 0, "no lone append was handed to the syncer");
        log.close().await.expect("close");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_writer_led_sync_fails_the_append_and_poisons_the_log() {
    let storage = MemoryStorage::new();
    let (log, syncs) = open(&storage, default_options(), Duration::ZERO).await;
    let stream = StreamId::new("counter/1").expect("stream id");
    for amount in [1, 2] {
        log.append(&stream, ExpectedVersion::Any, vec![added(amount, "ok")])
            .await
            .expect("append");
    }
    let syncer_before = syncs.count(SYNCER_THREAD);
    let writer_before = syncs.count(WRITER_THREAD);

    storage.inject_fault(FaultOp::Sync, 0, FaultKind::Eio);
    let error = log
        .append(&stream, ExpectedVersion::Any, vec![added(100, "lost")])
        .await
        .expect_err("an append whose fsync failed is never acknowledged");
    storage.clear_faults();
    assert!(
        syncs.count(WRITER_THREAD) > writer_before,
        "the failed sync was led by the writer"
    );
    assert_eq!(syncs.count(SYNCER_THREAD), syncer_before);
    let Error::Poisoned { position, reason } = &error else {
        panic!("expected Poisoned, got {error:?}");
    };
    assert_eq!(*position, 3, "the first position that is not durable");
    assert!(reason.contains("sync"), "the cause is named: {reason}");

    // The fault is gone, yet nothing is retried: later writes are refused.
    let again = log
        .append(&stream, ExpectedVersion::Any, vec![added(1, "refused")])
        .await
        .expect_err("poisoned");
    assert!(
        matches!(again, Error::Poisoned { position: 3, .. }),
        "{again:?}"
    );
    let sync = log.sync().await.expect_err("poisoned");
    assert!(
        matches!(sync, Error::Poisoned { position: 3, .. }),
        "{sync:?}"
    );
    assert_eq!(log.stats().poisoned.expect("poisoned").position, 3);
    // What was durable stays readable.
    assert_eq!(log.read_all_raw(1, 10).await.expect("read").len(), 2);
    let _ = log.close().await;

    // A reopen replays the log and carries on.
    let (log, _) = open(&storage, default_options(), Duration::ZERO).await;
    assert!(log.stats().poisoned.is_none());
    let written = log
        .append(&stream, ExpectedVersion::Any, vec![added(10, "after")])
        .await
        .expect("append after reopen");
    assert!(written.last_position >= 3);
    log.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_lone_append_survives_a_power_cut_right_after_its_ack() {
    let storage = MemoryStorage::new();
    let stream = StreamId::new("counter/1").expect("stream id");
    for version in 0..8u64 {
        let (log, syncs) = open(&storage, default_options(), Duration::ZERO).await;
        let expected = if version == 0 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exact(version - 1)
        };
        let writer_before = syncs.count(WRITER_THREAD);
        log.append(&stream, expected, vec![added(version, "acked")])
            .await
            .expect("append");
        // Power is cut the moment the ack arrives: every unsynced byte is lost.
        storage.crash(CrashMode::LoseUnsynced);
        assert!(syncs.count(WRITER_THREAD) > writer_before, "writer-led");
        drop(log);

        let (log, _) = open(&storage, default_options(), Duration::ZERO).await;
        assert_eq!(
            log.stream_version(&stream).expect("version"),
            Some(version),
            "the acknowledged append {version} survived"
        );
        log.close().await.expect("close");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_still_share_syncs_and_all_survive_a_power_cut() {
    const TASKS: u64 = 32;
    const APPENDS_PER_TASK: u64 = 10;
    let storage = MemoryStorage::new();
    // A 2 ms fsync: appends arriving during one sync must share the next.
    let (log, syncs) = open(&storage, default_options(), Duration::from_millis(2)).await;
    let before = syncs.total();
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..TASKS {
        let log = log.clone();
        tasks.spawn(async move {
            let stream = StreamId::new(format!("counter/{task}")).expect("stream id");
            for amount in 0..APPENDS_PER_TASK {
                log.append(&stream, ExpectedVersion::Any, vec![added(amount, "many")])
                    .await
                    .expect("append");
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.expect("task");
    }
    let appends = TASKS * APPENDS_PER_TASK;
    let synced = syncs.total() - before;
    assert!(
        synced * 2 <= appends,
        "group commit: {synced} syncs for {appends} concurrent appends"
    );
    assert!(
        syncs.count(SYNCER_THREAD) > 0,
        "batches of several appends go to the syncer"
    );
    storage.crash(CrashMode::LoseUnsynced);
    drop(log);

    let (log, _) = open(&storage, default_options(), Duration::ZERO).await;
    for task in 0..TASKS {
        let stream = StreamId::new(format!("counter/{task}")).expect("stream id");
        assert_eq!(
            log.stream_version(&stream).expect("version"),
            Some(APPENDS_PER_TASK - 1),
            "every acknowledged append of {stream} survived"
        );
    }
    log.close().await.expect("close");
}
