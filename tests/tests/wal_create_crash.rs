//! A power cut at every step of creating a log: the directories it creates (the log directory's
//! parent included) are durable before the first append is acknowledged, so after the crash
//! either nothing was acknowledged or every acknowledged append is there; a read-only open of
//! what is left never fails (it reports an unfinished creation instead), and a writer open
//! finishes the creation.
//!
//! The storage halts after `k` mutating operations, for every `k` until a whole run fits, then
//! crashes under the strict model of `MemoryStorage`: a directory whose entry in its parent was
//! never synced vanishes with everything under it.

use logbook_tests::{payload, read_all};
use logbook_wal::{
    CrashMode, MemoryStorage, Record, Storage, SyncPolicy, WAL_DIR_NAME, Wal, WalOptions,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The log directory: its parent does not exist either, so open creates three directories.
const LOG_DIR: &str = "/data/log";
/// Appends per run (each acknowledged only once synced, under `Always`).
const APPENDS: u64 = 3;
/// More steps than any run takes; the loop stops at the first run that is not halted.
const STEPS_MAX: u64 = 200;
/// Seeds of the seeded crash modes.
const SEEDS: u64 = 4;

fn options() -> WalOptions {
    WalOptions {
        sync_policy: SyncPolicy::Always,
        ..WalOptions::default()
    }
}

fn wal_dir() -> PathBuf {
    Path::new(LOG_DIR).join(WAL_DIR_NAME)
}

/// Opens (creating) the log and appends until something fails; returns what was acknowledged.
fn run(storage: &MemoryStorage, first_serial: u64) -> Vec<Record> {
    let Ok((wal, _)) =
        Wal::open_with_storage(Arc::new(storage.clone()), Path::new(LOG_DIR), options())
    else {
        return Vec::new();
    };
    let mut acknowledged = Vec::new();
    for serial in first_serial..first_serial + APPENDS {
        let bytes = payload(serial, 40);
        match wal.append(&bytes) {
            Ok(position) => acknowledged.push(Record {
                position,
                payload: bytes,
            }),
            Err(_) => break,
        }
    }
    drop(wal);
    acknowledged
}

/// Every acknowledged record is in `found` at its position (records that were never
/// acknowledged may have survived too).
fn assert_kept(acknowledged: &[Record], found: &[Record], context: &str) {
    for record in acknowledged {
        assert!(
            found.contains(record),
            "{context}: acknowledged position {} lost; found {:?}",
            record.position,
            found.iter().map(|r| r.position).collect::<Vec<_>>()
        );
    }
}

/// What a read-only open and then a writer open make of the crashed storage.
fn check_after_crash(storage: &MemoryStorage, acknowledged: &[Record], context: &str) {
    if !storage.exists(&wal_dir()) {
        assert!(
            acknowledged.is_empty(),
            "{context}: {} acknowledged appends but no wal/ directory survived (dirs left: {:?})",
            acknowledged.len(),
            storage.dirs()
        );
    } else {
        let opened = Wal::open_read_only_with_storage(
            Arc::new(storage.clone()),
            Path::new(LOG_DIR),
            options(),
        );
        let (reader, report) = match opened {
            Ok(opened) => opened,
            Err(error) => panic!("{context}: read-only open failed: {error}"),
        };
        let found = read_all(&reader, 1);
        assert_kept(acknowledged, &found, context);
        assert_eq!(
            report.creation_unfinished,
            reader.segments().is_empty(),
            "{context}: an unfinished creation is reported exactly when no segment is complete"
        );
        if report.creation_unfinished {
            assert!(found.is_empty() && acknowledged.is_empty(), "{context}");
        }
    }
    let (wal, _) = Wal::open_with_storage(Arc::new(storage.clone()), Path::new(LOG_DIR), options())
        .unwrap_or_else(|error| panic!("{context}: writer open failed: {error}"));
    let found = read_all(&wal, 1);
    assert_kept(acknowledged, &found, context);
    let next = wal
        .append(b"after the crash")
        .expect("append after recovery");
    assert_eq!(
        next,
        found.last().map_or(1, |record| record.position + 1),
        "{context}"
    );
    wal.close().expect("close");
}

fn modes() -> Vec<CrashMode> {
    let mut modes = vec![CrashMode::LoseUnsynced];
    for seed in 0..SEEDS {
        modes.push(CrashMode::KeepPrefix { seed });
        modes.push(CrashMode::Reorder { seed });
        modes.push(CrashMode::Tear { seed });
    }
    modes
}

#[test]
fn power_cut_at_every_step_of_creation_loses_nothing_acknowledged() {
    for mode in modes() {
        let mut completed = false;
        for step in 0..STEPS_MAX {
            let storage = MemoryStorage::new();
            storage.halt_after(step);
            let acknowledged = run(&storage, 1);
            let halted = storage.is_halted();
            storage.crash(mode);
            check_after_crash(
                &storage,
                &acknowledged,
                &format!("{mode:?}, halt after {step}"),
            );
            if !halted {
                assert_eq!(
                    acknowledged.len() as u64,
                    APPENDS,
                    "a run that fits acknowledges all"
                );
                completed = true;
                break;
            }
        }
        assert!(completed, "{mode:?}: no run fitted in {STEPS_MAX} steps");
    }
}

/// A process crash (the OS keeps every unsynced write) at each step, then a writer open that
/// finishes the creation and acknowledges appends, then a power cut: the finishing open must
/// make the log directory's and `wal/`'s entries durable too, since the first process may
/// never have synced them. (The rule reaches up to the log directory's parent; here that
/// parent exists durably beforehand, as a directory above it created by a dead process would
/// not be synced again.)
#[test]
fn finishing_an_interrupted_creation_makes_its_directories_durable() {
    let parent = Path::new(LOG_DIR)
        .parent()
        .expect("the log directory has a parent");
    for step in 0..STEPS_MAX {
        let storage = MemoryStorage::new();
        storage.create_dir_all(parent).expect("mkdir");
        storage.sync_dir(Path::new("/")).expect("sync /");
        storage.halt_after(step);
        let first = run(&storage, 1);
        let halted = storage.is_halted();
        storage.crash(CrashMode::KeepUnsynced);
        let second = run(&storage, 100);
        assert_eq!(
            second.len() as u64,
            APPENDS,
            "halt after {step}: the second run fits"
        );
        storage.crash(CrashMode::LoseUnsynced);
        let mut acknowledged = first;
        acknowledged.extend(second);
        let context = format!("process crash after {step}, then power cut");
        check_after_crash(&storage, &acknowledged, &context);
        if !halted {
            return;
        }
    }
    panic!("no run fitted in {STEPS_MAX} steps");
}
