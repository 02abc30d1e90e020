//! The writer-led sync: a lone append while the syncer is idle is synced and settled by the
//! writer thread itself (no hand-off to the syncer), or, once appends come one at a time, on
//! the caller's own thread (`LogbookOptions::lone_appends_on_caller`); yet it is acknowledged
//! only once durable, a failed fsync on either path still fails the append and poisons the
//! log, and concurrent appends still go to the syncer and share syncs (group commit).
//!
//! Which thread synced is observed through a storage wrapper that records the name of the
//! thread of every `sync_data` on a file of the WAL directory (`logbook-writer`,
//! `logbook-syncer`, or the caller's: a tokio runtime worker), and can make each sync slow,
//! the way a disk is.

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
/// Any other thread: the one that called the append (the test's own thread, which runs the
/// test's `block_on`, or a runtime worker).
const CALLER_THREAD: &str = "<caller>";

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
        if thread == CALLER_THREAD {
            return self.total() - self.count(WRITER_THREAD) - self.count(SYNCER_THREAD);
        }
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

/// [`default_options`] with every request sent through the writer thread.
fn writer_only_options() -> LogbookOptions {
    LogbookOptions {
        lone_appends_on_caller: None,
        ..default_options()
    }
}

/// [`default_options`] where lone appends run on the caller's thread however slow a sync is
/// (a loaded test machine's syncs must not send them back to the writer thread).
fn callers_options() -> LogbookOptions {
    LogbookOptions {
        lone_appends_on_caller: Some(Duration::from_secs(3600)),
        ..default_options()
    }
}

fn appends_on_caller(log: &Logbook<CounterEvent>) -> u64 {
    log.stats()
        .backend
        .embedded()
        .expect("embedded")
        .appends_on_caller
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_append_is_synced_and_settled_by_the_writer_thread() {
    let mut test_writer_only = test_options();
    test_writer_only.lone_appends_on_caller = None;
    for options in [writer_only_options(), test_writer_only] {
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
        assert_eq!(appends_on_caller(&log), 0, "the option is off");
        log.close().await.expect("close");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lone_appends_after_the_first_are_synced_and_settled_on_their_callers_thread() {
    let mut test_callers = test_options();
    test_callers.lone_appends_on_caller = callers_options().lone_appends_on_caller;
    for options in [callers_options(), test_callers] {
        let storage = MemoryStorage::new();
        let (log, syncs) = open(&storage, options, Duration::ZERO).await;
        let stream = StreamId::new("counter/1").expect("stream id");
        let (writer_before, syncer_before, caller_before) = (
            syncs.count(WRITER_THREAD),
            syncs.count(SYNCER_THREAD),
            syncs.count(CALLER_THREAD),
        );
        const APPENDS: u64 = 40;
        for version in 0..APPENDS {
            let expected = match version {
                0 => ExpectedVersion::NoStream,
                _ => ExpectedVersion::Exact(version - 1),
            };
            let written = log
                .append(&stream, expected, vec![added(version, "lone")])
                .await
                .expect("append");
            assert_eq!(written.version, version);
            // Read-your-writes: acknowledged means durable and applied.
            assert!(log.stats().durable_position >= written.last_position);
            assert_eq!(log.stream_version(&stream).expect("version"), Some(version));
        }
        // The first append of the log goes through the writer thread (nothing says yet that
        // appends come one at a time); every later one is taken on its caller's thread.
        assert_eq!(appends_on_caller(&log), APPENDS - 1);
        assert_eq!(syncs.count(CALLER_THREAD) - caller_before, APPENDS - 1);
        assert_eq!(syncs.count(WRITER_THREAD) - writer_before, 1);
        assert_eq!(syncs.count(SYNCER_THREAD), syncer_before);
        // A refused append on the caller's path is answered, and writes nothing.
        let refused = log
            .append(&stream, ExpectedVersion::Exact(0), vec![added(1, "stale")])
            .await
            .expect_err("a stale expected version is refused");
        assert!(
            matches!(refused, Error::WrongExpectedVersion { .. }),
            "{refused:?}"
        );
        assert_eq!(
            log.stream_version(&stream).expect("version"),
            Some(APPENDS - 1)
        );
        let handle = log.clone();
        log.close().await.expect("close");
        // Closed: a later append through another handle is refused, on no thread at all.
        let after_close = handle
            .append(&stream, ExpectedVersion::Any, vec![added(1, "late")])
            .await
            .expect_err("closed");
        assert!(matches!(after_close, Error::Closed), "{after_close:?}");

        // Replayed from the WAL, every acknowledged append is there.
        let (log, _) = open(&storage, default_options(), Duration::ZERO).await;
        assert_eq!(
            log.stream_version(&stream).expect("version"),
            Some(APPENDS - 1)
        );
        log.close().await.expect("close");
    }
}

/// A current-thread runtime would stall all its tasks for the sync: appends there always go
/// through the writer thread.
#[tokio::test(flavor = "current_thread")]
async fn a_current_thread_runtime_never_syncs_on_its_own_thread() {
    let storage = MemoryStorage::new();
    let (log, syncs) = open(&storage, default_options(), Duration::ZERO).await;
    let stream = StreamId::new("counter/1").expect("stream id");
    let writer_before = syncs.count(WRITER_THREAD);
    for version in 0..20 {
        log.append(&stream, ExpectedVersion::Any, vec![added(version, "lone")])
            .await
            .expect("append");
    }
    assert_eq!(appends_on_caller(&log), 0);
    assert!(syncs.count(WRITER_THREAD) - writer_before >= 20);
    log.close().await.expect("close");
}

/// A disk whose syncs take 2 ms sends lone appends back to the writer thread after a few:
/// the caller's runtime worker is not held for slow syncs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_syncs_send_lone_appends_back_to_the_writer_thread() {
    const APPENDS: u64 = 30;
    let storage = MemoryStorage::new();
    let (log, syncs) = open(&storage, default_options(), Duration::from_millis(2)).await;
    let stream = StreamId::new("counter/1").expect("stream id");
    let writer_before = syncs.count(WRITER_THREAD);
    for version in 0..APPENDS {
        log.append(&stream, ExpectedVersion::Any, vec![added(version, "slow")])
            .await
            .expect("append");
    }
    let on_caller = appends_on_caller(&log);
    assert!(
        on_caller <= 4,
        "{on_caller} of {APPENDS} appends synced on the caller's thread, with 2 ms syncs"
    );
    assert_eq!(
        syncs.count(WRITER_THREAD) - writer_before,
        APPENDS - on_caller
    );
    log.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_writer_led_sync_fails_the_append_and_poisons_the_log() {
    // Led by the writer thread, then by the caller's thread.
    for (options, leader) in [
        (writer_only_options(), WRITER_THREAD),
        (callers_options(), CALLER_THREAD),
    ] {
        a_failed_lone_sync_fails_the_append_and_poisons_the_log(options, leader).await;
    }
}

async fn a_failed_lone_sync_fails_the_append_and_poisons_the_log(
    options: LogbookOptions,
    leader: &str,
) {
    let storage = MemoryStorage::new();
    let (log, syncs) = open(&storage, options.clone(), Duration::ZERO).await;
    let stream = StreamId::new("counter/1").expect("stream id");
    for amount in [1, 2] {
        log.append(&stream, ExpectedVersion::Any, vec![added(amount, "ok")])
            .await
            .expect("append");
    }
    let syncer_before = syncs.count(SYNCER_THREAD);
    let leader_before = syncs.count(leader);

    storage.inject_fault(FaultOp::Sync, 0, FaultKind::Eio);
    let error = log
        .append(&stream, ExpectedVersion::Any, vec![added(100, "lost")])
        .await
        .expect_err("an append whose fsync failed is never acknowledged");
    storage.clear_faults();
    assert!(
        syncs.count(leader) > leader_before,
        "the failed sync was led by {leader}"
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
    let (log, _) = open(&storage, options, Duration::ZERO).await;
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
    let mut next_version = 0u64;
    for round in 0..8u64 {
        let (log, syncs) = open(&storage, callers_options(), Duration::ZERO).await;
        // Even rounds: the first append of the open, led by the writer thread. Odd rounds: a
        // second append, led by the caller's thread.
        let leader = if round % 2 == 0 {
            WRITER_THREAD
        } else {
            log.append(
                &stream,
                ExpectedVersion::Exact(next_version - 1),
                vec![added(round, "first")],
            )
            .await
            .expect("append");
            next_version += 1;
            CALLER_THREAD
        };
        let expected = match next_version {
            0 => ExpectedVersion::NoStream,
            version => ExpectedVersion::Exact(version - 1),
        };
        let (leader_before, on_caller_before) = (syncs.count(leader), appends_on_caller(&log));
        let written = log
            .append(&stream, expected, vec![added(round, "acked")])
            .await
            .expect("append");
        assert_eq!(written.version, next_version);
        next_version += 1;
        // Power is cut the moment the ack arrives: every unsynced byte is lost.
        storage.crash(CrashMode::LoseUnsynced);
        assert!(
            syncs.count(leader) > leader_before,
            "led by {leader}: {:?} on caller {}",
            syncs.by_thread,
            appends_on_caller(&log)
        );
        assert_eq!(
            appends_on_caller(&log) - on_caller_before,
            u64::from(leader == CALLER_THREAD)
        );
        drop(log);

        let (log, _) = open(&storage, default_options(), Duration::ZERO).await;
        assert_eq!(
            log.stream_version(&stream).expect("version"),
            Some(written.version),
            "the acknowledged append of round {round} survived"
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

/// Appenders to one stream that take turns being alone and crowding each other: each append
/// runs on whichever path it finds (its caller's thread, the writer thread, the syncer), and
/// every one checks its expected version against the versions the others wrote. No version is
/// given twice or skipped, an append refused for a stale version writes nothing, both kinds of
/// path are taken, and after a power cut the stream holds exactly the acknowledged appends, in
/// the order of their versions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lone_and_crowded_appends_to_one_stream_keep_one_order_of_versions() {
    const TASKS: u64 = 4;
    const APPENDS_PER_TASK: u64 = 40;
    let storage = MemoryStorage::new();
    // A 200 µs fsync, so appends that arrive together overlap one another's syncs.
    let (log, syncs) = open(&storage, callers_options(), Duration::from_micros(200)).await;
    let queued_before = syncs.count(WRITER_THREAD) + syncs.count(SYNCER_THREAD);
    let stream = StreamId::new("counter/shared").expect("stream id");
    let acked: Arc<Mutex<BTreeMap<u64, u64>>> = Arc::default();
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..TASKS {
        let (log, stream, acked) = (log.clone(), stream.clone(), acked.clone());
        tasks.spawn(async move {
            let mut refused = 0u64;
            for index in 0..APPENDS_PER_TASK {
                // Task 0 appends alone in some stretches; the others pause now and then, so
                // the traffic changes between one at a time and several at once.
                if task != 0 && index % 8 < 4 {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                let amount = task * 1_000 + index;
                loop {
                    let expected = match log.stream_version(&stream).expect("version") {
                        None => ExpectedVersion::NoStream,
                        Some(version) => ExpectedVersion::Exact(version),
                    };
                    match log
                        .append(&stream, expected, vec![added(amount, "shared")])
                        .await
                    {
                        Ok(written) => {
                            let before = acked
                                .lock()
                                .expect("acked lock")
                                .insert(written.version, amount);
                            assert_eq!(before, None, "version {} given twice", written.version);
                            break;
                        }
                        Err(Error::WrongExpectedVersion { .. }) => refused += 1,
                        Err(error) => panic!("append: {error:?}"),
                    }
                }
            }
            refused
        });
    }
    let mut refused = 0;
    while let Some(joined) = tasks.join_next().await {
        refused += joined.expect("task");
    }
    let acked = std::mem::take(&mut *acked.lock().expect("acked lock"));
    let appends = TASKS * APPENDS_PER_TASK;
    assert_eq!(acked.len() as u64, appends);
    assert_eq!(
        acked.keys().copied().collect::<Vec<_>>(),
        (0..appends).collect::<Vec<_>>(),
        "versions 0.. with no gap"
    );
    assert_eq!(
        log.stream_version(&stream).expect("version"),
        Some(appends - 1)
    );
    assert!(
        appends_on_caller(&log) > 0,
        "some appends ran on their caller's thread (refused for a stale version: {refused})"
    );
    assert!(
        syncs.count(WRITER_THREAD) + syncs.count(SYNCER_THREAD) > queued_before,
        "some appends went through the writer thread"
    );
    storage.crash(CrashMode::LoseUnsynced);
    drop(log);

    let (log, _) = open(&storage, default_options(), Duration::ZERO).await;
    let events = log
        .read_stream(&stream, 0, logbook::Direction::Forward, 10_000)
        .await
        .expect("read");
    let found: BTreeMap<u64, u64> = events
        .iter()
        .map(|recorded| match &recorded.event {
            CounterEvent::Added { amount, .. } => (recorded.version, *amount),
            other => panic!("unexpected event {other:?}"),
        })
        .collect();
    assert_eq!(found, acked, "exactly the acknowledged appends, by version");
    log.close().await.expect("close");
}
