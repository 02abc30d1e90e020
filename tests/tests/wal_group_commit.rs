//! Concurrency and group commit: appenders on many threads get unique, gapless positions, every
//! record reads back, syncs are shared (fewer `fdatasync`s than appends), and a sync in progress
//! does not block new appends (the writer lock is not held while syncing).

use logbook_tests::sync_hook::{HookedStorage, SyncHook};
use logbook_tests::{MEMORY_DIR, positions, read_all};
use logbook_wal::{Durability, FileStorage, MemoryStorage, Record, SyncPolicy, Wal, WalOptions};
use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

const THREADS: usize = 8;
const APPENDS_PER_THREAD: usize = 100;

fn group_commit() -> WalOptions {
    WalOptions {
        sync_policy: SyncPolicy::GroupCommit {
            delay: Duration::from_millis(2),
            records_max: THREADS,
        },
        segment_bytes_max: 16 << 10,
        ..WalOptions::default()
    }
}

fn thread_payload(thread: usize, index: usize) -> Vec<u8> {
    let mut bytes = format!("thread-{thread}-append-{index}-").into_bytes();
    bytes.resize(bytes.len() + (thread * 31 + index * 7) % 90, b'.');
    bytes
}

/// Every thread appends (every tenth append a batch of three); returns position -> payload as
/// the appenders were told, and what a tailing reader saw meanwhile.
fn append_concurrently(wal: &Arc<Wal>) -> (BTreeMap<u64, Vec<u8>>, Vec<Record>) {
    let barrier = Arc::new(Barrier::new(THREADS + 2));
    let appenders: Vec<_> = (0..THREADS)
        .map(|thread| {
            let (wal, barrier) = (wal.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let mut told = Vec::new();
                for index in 0..APPENDS_PER_THREAD {
                    let batch: Vec<Vec<u8>> = if index % 10 == 0 {
                        (0..3)
                            .map(|part| thread_payload(thread, index * 10 + part))
                            .collect()
                    } else {
                        vec![thread_payload(thread, index * 10)]
                    };
                    let receipt = wal.append_batch(&batch).unwrap();
                    assert_eq!(receipt.last - receipt.first + 1, batch.len() as u64);
                    assert!(
                        wal.durable_position() >= receipt.last,
                        "acknowledged before durable"
                    );
                    told.extend((receipt.first..).zip(batch));
                }
                told
            })
        })
        .collect();
    let tail = {
        let (wal, barrier) = (wal.clone(), barrier.clone());
        std::thread::spawn(move || {
            barrier.wait();
            let mut reader = wal.read_from(1);
            let mut seen: Vec<Record> = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(60);
            while seen.len() < THREADS * APPENDS_PER_THREAD * 12 / 10 {
                assert!(Instant::now() < deadline, "the tailing reader starved");
                match reader.next() {
                    Some(record) => {
                        let record = record.unwrap();
                        assert!(record.position <= wal.durable_position());
                        seen.push(record);
                    }
                    None => std::thread::sleep(Duration::from_micros(200)),
                }
            }
            seen
        })
    };
    barrier.wait();
    let mut told = BTreeMap::new();
    for appender in appenders {
        for (position, payload) in appender.join().unwrap() {
            assert!(
                told.insert(position, payload).is_none(),
                "position {position} twice"
            );
        }
    }
    (told, tail.join().unwrap())
}

fn check(wal: &Wal, told: &BTreeMap<u64, Vec<u8>>, tailed: &[Record]) {
    let total = (THREADS * APPENDS_PER_THREAD * 12 / 10) as u64;
    let expected: Vec<u64> = (1..=total).collect();
    assert_eq!(
        told.keys().copied().collect::<Vec<_>>(),
        expected,
        "unique and gapless"
    );
    let records = read_all(wal, 1);
    assert_eq!(positions(&records), expected);
    for record in records.iter() {
        assert_eq!(&record.payload, &told[&record.position]);
    }
    assert_eq!(
        tailed,
        &records[..],
        "the tailing reader saw the same, in order"
    );
}

#[test]
fn concurrent_appenders_share_syncs_in_memory() {
    let storage = MemoryStorage::new();
    let (wal, _) = Wal::open_with_storage(
        Arc::new(storage.clone()),
        Path::new(MEMORY_DIR),
        group_commit(),
    )
    .unwrap();
    let wal = Arc::new(wal);
    let syncs_before = storage.sync_calls();
    let (told, tailed) = append_concurrently(&wal);
    let syncs = storage.sync_calls() - syncs_before;
    let appends = (THREADS * APPENDS_PER_THREAD) as u64;
    eprintln!("{appends} appends, {syncs} syncs");
    assert!(
        syncs < appends,
        "{syncs} syncs for {appends} appends: none shared"
    );
    check(&wal, &told, &tailed);
}

#[test]
fn concurrent_appenders_on_files() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("log");
    let storage = Arc::new(FileStorage::new());
    let (wal, _) = Wal::open_with_storage(storage.clone(), &dir, group_commit()).unwrap();
    let wal = Arc::new(wal);
    let (told, tailed) = append_concurrently(&wal);
    check(&wal, &told, &tailed);
    Arc::into_inner(wal).unwrap().close().unwrap();
    let (wal, report) = Wal::open_with_storage(storage, &dir, group_commit()).unwrap();
    assert_eq!(report.last_position, told.len() as u64);
    check(&wal, &told, &tailed);
}

/// A sync hook that makes each `sync_data` take `delay_ms` (0 until a test sets it) and says
/// when one runs.
#[derive(Debug, Default)]
struct SlowSync {
    delay_ms: AtomicU64,
    syncing: AtomicBool,
}

impl SyncHook for SlowSync {
    fn sync_data(&self, _path: &Path, sync: &dyn Fn() -> io::Result<()>) -> io::Result<()> {
        self.syncing.store(true, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(self.delay_ms.load(Ordering::SeqCst)));
        let result = sync();
        self.syncing.store(false, Ordering::SeqCst);
        result
    }
}

fn wait_for(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// While one append's sync runs, other appends land in the buffer (no writer lock held across
/// the fsync), and the appenders that arrived meanwhile share one next sync.
#[test]
fn appends_land_while_a_sync_runs_and_share_the_next_one() {
    let memory = MemoryStorage::default();
    let slow = Arc::new(SlowSync::default());
    let storage = HookedStorage::new(memory.clone(), slow.clone());
    let (delay_ms, syncing) = (&slow.delay_ms, &slow.syncing);
    let options = WalOptions {
        sync_policy: SyncPolicy::Always,
        ..WalOptions::default()
    };
    let (wal, _) =
        Wal::open_with_storage(Arc::new(storage), Path::new(MEMORY_DIR), options).unwrap();
    let wal = Arc::new(wal);
    delay_ms.store(1000, Ordering::SeqCst);
    let syncs_before = memory.sync_calls();
    let first_done = Arc::new(AtomicBool::new(false));
    let first = {
        let (wal, first_done) = (wal.clone(), first_done.clone());
        std::thread::spawn(move || {
            let position = wal.append(b"first").unwrap();
            first_done.store(true, Ordering::SeqCst);
            position
        })
    };
    wait_for("the first sync to start", || syncing.load(Ordering::SeqCst));
    // A relaxed append returns at once, while the first sync still runs.
    let relaxed = wal
        .append_batch_with(&[b"relaxed"], Durability::Relaxed)
        .unwrap();
    assert!(
        !first_done.load(Ordering::SeqCst),
        "the sync ended before the relaxed append"
    );
    assert_eq!(relaxed.first, 2);
    let followers: Vec<_> = (0..5)
        .map(|index| {
            let wal = wal.clone();
            std::thread::spawn(move || wal.append(format!("follower {index}").as_bytes()).unwrap())
        })
        .collect();
    wait_for("the followers to buffer", || wal.last_position() == 7);
    assert!(
        syncing.load(Ordering::SeqCst),
        "the followers buffered during the first sync"
    );
    assert_eq!(first.join().unwrap(), 1);
    let mut follower_positions: Vec<u64> = followers
        .into_iter()
        .map(|follower| follower.join().unwrap())
        .collect();
    follower_positions.sort();
    assert_eq!(follower_positions, [3, 4, 5, 6, 7]);
    assert_eq!(
        memory.sync_calls() - syncs_before,
        2,
        "the followers shared one sync"
    );
    assert_eq!(wal.durable_position(), 7);
}
