//! Injected ENOSPC and EIO on writes and syncs: the error is typed and names the file, the WAL
//! is poisoned (every later write fails until reopen), and after reopen the failed record is
//! there whole or not at all while every acknowledged record is there.

use logbook_tests::{MEMORY_DIR, payload, positions, read_all};
use logbook_wal::{
    CrashMode, Error, FaultKind, FaultOp, MemoryStorage, SyncPolicy, WAL_DIR_NAME, Wal, WalOptions,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PAYLOAD_BYTES: usize = 50;
/// Three frames of `PAYLOAD_BYTES` fill a segment exactly; the fourth append rolls.
const SEGMENT_BYTES_MAX: u64 = 32 + 3 * (28 + PAYLOAD_BYTES as u64);

fn options(sync_policy: SyncPolicy) -> WalOptions {
    WalOptions {
        sync_policy,
        segment_bytes_max: SEGMENT_BYTES_MAX,
        ..WalOptions::default()
    }
}

fn open(storage: &MemoryStorage, options: &WalOptions) -> Wal {
    Wal::open_with_storage(
        Arc::new(storage.clone()),
        Path::new(MEMORY_DIR),
        options.clone(),
    )
    .expect("open")
    .0
}

fn wal_dir() -> PathBuf {
    Path::new(MEMORY_DIR).join(WAL_DIR_NAME)
}

fn errno(kind: FaultKind) -> i32 {
    match kind {
        FaultKind::Enospc => 28,
        FaultKind::Eio => 5,
    }
}

/// The error is `Io` with the injected errno, and its message names a file of the WAL.
fn assert_io(error: &Error, kind: FaultKind) -> PathBuf {
    let Error::Io { path, source } = error else {
        panic!("expected an I/O error, got {error:?}");
    };
    assert_eq!(source.raw_os_error(), Some(errno(kind)), "{error}");
    assert!(path.starts_with(wal_dir()), "{path:?}");
    assert!(error.to_string().contains(&path.display().to_string()));
    path.clone()
}

/// Every write fails with `Poisoned` and the reason names the failed file.
fn assert_poisoned(wal: &Wal, failed_path: &Path) {
    assert!(wal.is_poisoned());
    let errors = [
        wal.append(b"later").unwrap_err(),
        wal.append_batch(&[b"a", b"b"]).unwrap_err(),
        wal.truncate_before(u64::MAX).unwrap_err(),
    ];
    for error in errors {
        assert!(
            matches!(&error, Error::Poisoned { reason }
                if reason.contains(&failed_path.display().to_string())),
            "{error:?}"
        );
    }
}

/// After reopen: the acknowledged records, then the failed one whole or not at all, nothing
/// else; and the log takes appends again.
fn check_reopened(storage: &MemoryStorage, options: &WalOptions, acked: &[Vec<u8>], failed: &[u8]) {
    let wal = open(storage, options);
    let records = read_all(&wal, 1);
    let acked_count = acked.len();
    assert!(records.len() == acked_count || records.len() == acked_count + 1);
    for (record, expected) in records.iter().zip(acked) {
        assert_eq!(
            &record.payload, expected,
            "acknowledged record {}",
            record.position
        );
    }
    if let Some(extra) = records.get(acked_count) {
        assert_eq!(extra.payload, failed, "the failed record is whole");
    }
    let next = records.len() as u64 + 1;
    assert_eq!(wal.append(b"works again").unwrap(), next);
    wal.close().unwrap();
    let wal = open(storage, options);
    assert_eq!(read_all(&wal, next)[0].payload, b"works again");
}

fn fault_on_append(op: FaultOp, skip: u64, kind: FaultKind, crash: Option<CrashMode>) {
    let options = options(SyncPolicy::Always);
    let storage = MemoryStorage::new();
    let wal = open(&storage, &options);
    let acked: Vec<Vec<u8>> = (1..=3)
        .map(|serial| payload(serial, PAYLOAD_BYTES))
        .collect();
    for (index, record) in acked.iter().enumerate() {
        assert_eq!(wal.append(record).unwrap(), index as u64 + 1);
    }
    // The fourth append rolls: it writes and syncs the old segment, creates the new one
    // (header write, sync, directory sync), then writes and syncs its frame.
    let failed = payload(4, PAYLOAD_BYTES);
    storage.inject_fault(op, skip, kind);
    let error = wal.append(&failed).unwrap_err();
    let path = assert_io(&error, kind);
    assert_poisoned(&wal, &path);
    assert_eq!(wal.durable_position(), 3);
    assert_eq!(positions(&read_all(&wal, 1)), [1, 2, 3]);
    if let Some(mode) = crash {
        storage.crash(mode);
    }
    drop(wal);
    storage.clear_faults();
    check_reopened(&storage, &options, &acked, &failed);
}

#[test]
fn write_and_sync_faults_on_append_and_roll() {
    for kind in [FaultKind::Enospc, FaultKind::Eio] {
        for crash in [
            None,
            Some(CrashMode::LoseUnsynced),
            Some(CrashMode::KeepUnsynced),
        ] {
            for skip in 0..3 {
                fault_on_append(FaultOp::Write, skip, kind, crash);
            }
            for skip in 0..4 {
                fault_on_append(FaultOp::Sync, skip, kind, crash);
            }
        }
    }
}

/// A fault on the append that does not roll names the active segment.
#[test]
fn faults_name_the_active_segment() {
    for op in [FaultOp::Write, FaultOp::Sync] {
        for kind in [FaultKind::Enospc, FaultKind::Eio] {
            let options = options(SyncPolicy::Always);
            let storage = MemoryStorage::new();
            let wal = open(&storage, &options);
            wal.append(&payload(1, PAYLOAD_BYTES)).unwrap();
            storage.inject_fault(op, 0, kind);
            let failed = payload(2, PAYLOAD_BYTES);
            let error = wal.append(&failed).unwrap_err();
            let path = assert_io(&error, kind);
            assert_eq!(path, wal.segments()[0].path);
            assert_poisoned(&wal, &path);
            drop(wal);
            check_reopened(&storage, &options, &[payload(1, PAYLOAD_BYTES)], &failed);
        }
    }
}

/// Under `Never`, a failed `sync` poisons too, and the records it was to cover are each whole
/// or absent after reopen (a prefix of them).
#[test]
fn a_failed_sync_call_poisons() {
    for kind in [FaultKind::Enospc, FaultKind::Eio] {
        for op in [FaultOp::Write, FaultOp::Sync] {
            let options = WalOptions {
                segment_bytes_max: 1 << 20,
                ..options(SyncPolicy::Never)
            };
            let storage = MemoryStorage::new();
            let wal = open(&storage, &options);
            let acked = vec![payload(1, 10), payload(2, 10)];
            wal.append(&acked[0]).unwrap();
            wal.append(&acked[1]).unwrap();
            assert_eq!(wal.sync().unwrap(), 2);
            let unsynced = payload(3, 700);
            wal.append(&unsynced).unwrap();
            storage.inject_fault(op, 0, kind);
            let path = assert_io(&wal.sync().unwrap_err(), kind);
            assert!(matches!(wal.sync(), Err(Error::Poisoned { .. })));
            assert_poisoned(&wal, &path);
            assert_eq!(wal.durable_position(), 2);
            drop(wal);
            check_reopened(&storage, &options, &acked, &unsynced);
        }
    }
}

/// A write that fails while a group-commit leader gathers companions (its lock released) loses
/// the leader's record too: the leader must not then sync and acknowledge it.
#[test]
fn a_write_failing_while_a_group_commit_leader_gathers_is_never_acknowledged() {
    for kind in [FaultKind::Enospc, FaultKind::Eio] {
        let options = WalOptions {
            sync_policy: SyncPolicy::GroupCommit {
                delay: Duration::from_secs(5),
                records_max: 1000,
            },
            // One 100-byte record stays buffered; the second pushes the buffer to the OS.
            buffer_bytes_max: 150,
            // No zeros written ahead, so the injected fault hits the frames' own write (a
            // failed write of zeros is not an append's failure: wal_preallocate.rs).
            preallocate_bytes: 0,
            ..WalOptions::default()
        };
        let storage = MemoryStorage::new();
        let wal = Arc::new(open(&storage, &options));
        let leader = {
            let wal = wal.clone();
            std::thread::spawn(move || wal.append(&payload(1, 100)))
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while wal.last_position() < 1 {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(1));
        }
        // Let the leader reach its gathering wait.
        std::thread::sleep(Duration::from_millis(50));
        storage.inject_fault(FaultOp::Write, 0, kind);
        let error = wal.append(&payload(2, 100)).unwrap_err();
        assert_io(&error, kind);
        let leader_result = leader.join().unwrap();
        // What the WAL calls durable must be readable.
        let durable = wal.durable_position();
        let readable = wal.read_from(1).collect::<Result<Vec<_>, _>>();
        assert!(
            readable
                .as_ref()
                .is_ok_and(|records| records.len() as u64 == durable),
            "durable position {durable}, reads {readable:?}"
        );
        storage.crash(CrashMode::LoseUnsynced);
        drop(wal);
        let wal = open(&storage, &options);
        let records = read_all(&wal, 1);
        if leader_result.is_ok() {
            assert_eq!(positions(&records), [1], "an acknowledged record was lost");
        } else {
            assert!(matches!(leader_result, Err(Error::Poisoned { .. })));
        }
    }
}

/// The interval syncer's failure poisons the WAL for later appends.
#[test]
fn a_failed_interval_sync_poisons() {
    let options = options(SyncPolicy::Interval(Duration::from_millis(5)));
    let storage = MemoryStorage::new();
    let wal = open(&storage, &options);
    let acked = payload(1, 10);
    wal.append(&acked).unwrap();
    wal.sync().unwrap();
    storage.inject_fault(FaultOp::Sync, 0, FaultKind::Eio);
    let unsynced = payload(2, 10);
    wal.append(&unsynced).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !wal.is_poisoned() {
        assert!(Instant::now() < deadline, "the interval sync never ran");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_poisoned(&wal, &wal.segments()[0].path);
    drop(wal);
    check_reopened(&storage, &options, &[acked], &unsynced);
}
