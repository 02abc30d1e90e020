//! A crash at any step of a snapshot write leaves the previous snapshot or the new one, valid,
//! and loading never fails.
//!
//! Each case stops `SnapshotStore::write` at one step by failing the k-th write or sync
//! (`MemoryStorage::inject_fault`), or lets it finish, then crashes the storage in every
//! `CrashMode` (the sector-based ones with many seeds), reopens and loads.

use logbook_compaction::{Snapshot, SnapshotSection, SnapshotStore};
use logbook_wal::{CrashMode, FaultKind, FaultOp, MemoryStorage, Storage};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const LOG: &str = "/log";
const SEEDS: u64 = 24;
const PREVIOUS: u64 = 10;
const NEW: u64 = 20;

fn snapshot(position: u64) -> Snapshot {
    // Several sections over several 512-byte sectors, so writes and torn sectors land
    // everywhere: in the header, the table, a section and the trailer.
    let section = |id: &str, length: usize| SnapshotSection {
        id: id.to_owned(),
        version: 1,
        bytes: (0..length)
            .map(|index| (index as u64 ^ position) as u8)
            .collect(),
    };
    Snapshot {
        position,
        sections: vec![
            section("engine", 16),
            section("rooms", 1500),
            section("jobs", 700),
        ],
    }
}

fn open(storage: &MemoryStorage) -> SnapshotStore {
    SnapshotStore::new(Arc::new(storage.clone()), Path::new(LOG))
}

fn modes() -> Vec<CrashMode> {
    let mut modes = vec![CrashMode::LoseUnsynced, CrashMode::KeepUnsynced];
    for seed in 0..SEEDS {
        modes.push(CrashMode::KeepPrefix { seed });
        modes.push(CrashMode::Reorder { seed });
        modes.push(CrashMode::Tear { seed });
    }
    modes
}

/// A disk holding the previous snapshot (durable), or nothing.
fn setup(with_previous: bool) -> MemoryStorage {
    let storage = MemoryStorage::new();
    if with_previous {
        open(&storage).write(&snapshot(PREVIOUS)).unwrap();
    }
    storage
}

/// Every fault that stops the write at a different step: the k-th write (EIO, and ENOSPC which
/// writes half) and the k-th sync, for every k the write reaches.
fn faults(with_previous: bool) -> Vec<(FaultOp, u64, FaultKind)> {
    let mut faults = Vec::new();
    for (op, kind) in [
        (FaultOp::Write, FaultKind::Eio),
        (FaultOp::Write, FaultKind::Enospc),
        (FaultOp::Sync, FaultKind::Eio),
    ] {
        for skip in 0.. {
            let storage = setup(with_previous);
            storage.inject_fault(op, skip, kind);
            if open(&storage).write(&snapshot(NEW)).is_ok() {
                break; // the write has fewer steps than `skip`: every step is covered
            }
            faults.push((op, skip, kind));
        }
    }
    faults
}

/// Loads after a crash and checks the outcome; returns the position loaded.
fn check_load(storage: &MemoryStorage, with_previous: bool, context: &str) -> Option<u64> {
    let outcome = open(storage).load_newest().expect(context);
    assert!(
        outcome.rejected.is_empty(),
        "{context}: a crash left an invalid snapshot: {:?}",
        outcome.rejected
    );
    let (info, loaded) = match outcome.snapshot {
        Some(found) => found,
        None => {
            assert!(!with_previous, "{context}: the previous snapshot was lost");
            return None;
        }
    };
    assert!(
        info.position == NEW || (with_previous && info.position == PREVIOUS),
        "{context}: loaded position {}",
        info.position
    );
    assert_eq!(loaded, snapshot(info.position), "{context}");
    Some(info.position)
}

fn temp_files(storage: &MemoryStorage) -> Vec<PathBuf> {
    let files = storage.files().into_iter();
    files
        .filter(|path| path.to_string_lossy().ends_with(".tmp"))
        .collect()
}

fn crash_case(with_previous: bool, fault: Option<(FaultOp, u64, FaultKind)>, mode: CrashMode) {
    let context = format!("previous {with_previous}, fault {fault:?}, crash {mode:?}");
    let storage = setup(with_previous);
    if let Some((op, skip, kind)) = fault {
        storage.inject_fault(op, skip, kind);
    }
    let written = open(&storage).write(&snapshot(NEW));
    assert_eq!(written.is_err(), fault.is_some(), "{context}: {written:?}");
    storage.crash(mode);

    let loaded = check_load(&storage, with_previous, &context);
    if written.is_ok() {
        assert_eq!(
            loaded,
            Some(NEW),
            "{context}: an acknowledged snapshot was lost"
        );
    }
    // A process crash keeps unsynced state that a later power loss may still drop.
    storage.crash(CrashMode::LoseUnsynced);
    let after_power_loss = check_load(&storage, with_previous, &context);
    if written.is_ok() {
        assert_eq!(after_power_loss, Some(NEW), "{context}");
    }

    // The store keeps working: stale temp files go, and the next snapshot is written and found.
    let store = open(&storage);
    store.cleanup_temp().expect(&context);
    assert!(temp_files(&storage).is_empty(), "{context}");
    store.write(&snapshot(30)).expect(&context);
    let outcome = store.load_newest().expect(&context);
    assert_eq!(
        outcome.snapshot.expect(&context).1,
        snapshot(30),
        "{context}"
    );
}

fn crash_at_every_step(with_previous: bool) {
    let faults = faults(with_previous);
    // Header and table, three sections, trailer: at least five writes; data and directory syncs.
    assert!(faults.len() >= 5 * 2 + 2, "{faults:?}");
    let steps = faults.into_iter().map(Some).chain([None]);
    for fault in steps {
        for mode in modes() {
            crash_case(with_previous, fault, mode);
        }
    }
}

#[test]
fn crash_during_a_write_keeps_the_previous_snapshot_or_the_new_one() {
    crash_at_every_step(true);
}

#[test]
fn crash_during_the_first_write_keeps_nothing_or_the_new_one() {
    crash_at_every_step(false);
}

#[test]
fn crash_during_retain_keeps_a_valid_snapshot() {
    for mode in modes() {
        let storage = setup(true);
        let store = open(&storage);
        store.write(&snapshot(NEW)).unwrap();
        storage.inject_fault(FaultOp::Sync, 0, FaultKind::Eio);
        assert!(store.retain(1).is_err(), "the directory sync fails");
        storage.crash(mode);
        let outcome = open(&storage).load_newest().unwrap();
        assert!(
            outcome.rejected.is_empty(),
            "{mode:?}: {:?}",
            outcome.rejected
        );
        assert_eq!(outcome.snapshot.unwrap().1, snapshot(NEW), "{mode:?}");
    }
}

#[test]
fn a_crash_before_the_directory_sync_cannot_publish_a_partial_file() {
    // The rename happened but its directory entry was never synced: after a power loss the old
    // directory state comes back, and it never names the new file.
    let storage = setup(true);
    let store = open(&storage);
    storage.inject_fault(FaultOp::Sync, 1, FaultKind::Eio); // data sync ok, directory sync fails
    assert!(store.write(&snapshot(NEW)).is_err());
    assert!(storage.exists(&store.dir().join("00000000000000000020.snap")));
    storage.crash(CrashMode::LoseUnsynced);
    assert_eq!(check_load(&storage, true, "power loss"), Some(PREVIOUS));
}
