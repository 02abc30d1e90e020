use super::*;
use logbook_wal::{FaultKind, FaultOp, FileStorage, MemoryStorage};

const LOG: &str = "/log";

fn store() -> (MemoryStorage, SnapshotStore) {
    let storage = MemoryStorage::new();
    let store = SnapshotStore::new(Arc::new(storage.clone()), Path::new(LOG));
    (storage, store)
}

fn snapshot(position: u64) -> Snapshot {
    Snapshot {
        position,
        sections: vec![
            SnapshotSection {
                id: "engine".into(),
                version: 1,
                bytes: position.to_le_bytes().to_vec(),
            },
            SnapshotSection {
                id: "rooms".into(),
                version: 3,
                bytes: vec![position as u8; 700],
            },
        ],
    }
}

fn path(position: u64) -> PathBuf {
    Path::new(LOG)
        .join(SNAPSHOT_DIR_NAME)
        .join(snapshot_file_name(position))
}

fn positions(infos: &[SnapshotInfo]) -> Vec<u64> {
    infos.iter().map(|info| info.position).collect()
}

#[test]
fn write_creates_the_directory_and_a_named_file() {
    let (storage, store) = store();
    assert_eq!(store.dir(), Path::new("/log/snapshots"));
    let info = store.write(&snapshot(42)).unwrap();
    assert_eq!(
        info.path,
        Path::new("/log/snapshots/00000000000000000042.snap")
    );
    assert_eq!(info.position, 42);
    let contents = storage.file_contents(&info.path).unwrap();
    assert_eq!(info.bytes, contents.len() as u64);
    assert_eq!(contents, encode_snapshot(&snapshot(42)));
    assert_eq!(
        storage.files(),
        std::slice::from_ref(&info.path),
        "no temp file is left"
    );
    assert_eq!(store.list().unwrap(), [info]);
}

#[test]
fn a_missing_directory_loads_nothing_and_lists_nothing() {
    let (_, store) = store();
    let outcome = store.load_newest().unwrap();
    assert!(outcome.snapshot.is_none() && outcome.rejected.is_empty());
    assert!(store.list().unwrap().is_empty());
    assert!(store.retain(0).unwrap().is_empty());
    assert!(store.remove_below(u64::MAX).unwrap().is_empty());
    assert!(store.cleanup_temp().unwrap().is_empty());
}

#[test]
fn load_newest_falls_back_past_corrupt_and_truncated_files() {
    let (storage, store) = store();
    for position in [10, 20, 30] {
        store.write(&snapshot(position)).unwrap();
    }
    let mut corrupt = storage.file_contents(&path(30)).unwrap();
    corrupt[100] ^= 4;
    storage.set_file_contents(&path(30), corrupt);
    let mut truncated = storage.file_contents(&path(20)).unwrap();
    truncated.truncate(truncated.len() - 1);
    storage.set_file_contents(&path(20), truncated);

    let outcome = store.load_newest().unwrap();
    let (info, loaded) = outcome.snapshot.unwrap();
    assert_eq!((info.path, loaded), (path(10), snapshot(10)));
    let rejected: Vec<_> = outcome
        .rejected
        .iter()
        .map(|(path, _)| path.clone())
        .collect();
    assert_eq!(rejected, [path(30), path(20)]);
    let reason = &outcome.rejected[0].1;
    assert!(
        reason.contains("00000000000000000030.snap") && reason.contains("checksum"),
        "{reason}"
    );
    let reason = &outcome.rejected[1].1;
    assert!(
        reason.contains("trailer needs 4 bytes, only 3 remain"),
        "{reason}"
    );
}

#[test]
fn load_newest_gives_none_when_every_file_is_bad() {
    let (storage, store) = store();
    for position in [1, 2] {
        store.write(&snapshot(position)).unwrap();
        storage.set_file_contents(&path(position), b"garbage".to_vec());
    }
    let outcome = store.load_newest().unwrap();
    assert!(outcome.snapshot.is_none());
    assert_eq!(outcome.rejected.len(), 2);
    assert!(
        outcome.rejected[0].1.contains("bad magic"),
        "{:?}",
        outcome.rejected
    );
}

#[test]
fn unknown_versions_misplaced_and_unreadable_files_are_rejected() {
    let (storage, store) = store();
    store.write(&snapshot(10)).unwrap();
    // A newer format: version 2 with a header checksum that matches it.
    store.write(&snapshot(20)).unwrap();
    let mut newer = storage.file_contents(&path(20)).unwrap();
    newer[8] = 2;
    let checksum = crc32fast::hash(&newer[..28]);
    newer[28..32].copy_from_slice(&checksum.to_le_bytes());
    storage.set_file_contents(&path(20), newer);
    // A valid file under the wrong name.
    store.write(&snapshot(30)).unwrap();
    storage.set_file_contents(&path(30), encode_snapshot(&snapshot(10)));
    // A name that cannot be opened as a file.
    storage.create_dir_all(&path(40)).unwrap();

    let outcome = store.load_newest().unwrap();
    assert_eq!(outcome.snapshot.unwrap().1, snapshot(10));
    let reasons: Vec<_> = outcome
        .rejected
        .iter()
        .map(|(_, reason)| reason.as_str())
        .collect();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(
        reasons[0].contains("I/O error") && reasons[0].contains("open"),
        "{reasons:?}"
    );
    assert!(
        reasons[1].contains("header position 10 differs"),
        "{reasons:?}"
    );
    assert!(reasons[2].contains("format version is 2"), "{reasons:?}");
}

#[test]
fn list_is_newest_first_and_ignores_other_names() {
    let (storage, store) = store();
    for position in [5, 500, 50] {
        store.write(&snapshot(position)).unwrap();
    }
    let dir = store.dir().to_path_buf();
    for name in [
        "00000000000000000099.snap.tmp",
        "notes.txt",
        "99.snap",
        "0000000000000000009x.snap",
    ] {
        storage
            .open_file(&dir.join(name), OpenMode::CreateNew)
            .unwrap();
    }
    let listed = store.list().unwrap();
    assert_eq!(positions(&listed), [500, 50, 5]);
    assert!(listed.iter().all(|info| info.bytes == listed[0].bytes));
    assert_eq!(
        store.cleanup_temp().unwrap(),
        [dir.join("00000000000000000099.snap.tmp")]
    );
    assert_eq!(storage.files().len(), 6, "only the temp file was removed");
}

#[test]
fn retain_keeps_the_newest() {
    let (storage, store) = store();
    for position in [1, 2, 3, 4] {
        store.write(&snapshot(position)).unwrap();
    }
    assert_eq!(store.retain(2).unwrap(), [path(2), path(1)]);
    assert_eq!(positions(&store.list().unwrap()), [4, 3]);
    assert!(store.retain(5).unwrap().is_empty());
    assert_eq!(store.retain(0).unwrap(), [path(4), path(3)]);
    assert!(storage.files().is_empty());
}

#[test]
fn remove_below_purges_older_snapshots_and_temp_files() {
    let (storage, store) = store();
    for position in [1, 2, 3] {
        store.write(&snapshot(position)).unwrap();
    }
    let temp = store.dir().join("00000000000000000009.snap.tmp");
    storage.open_file(&temp, OpenMode::CreateNew).unwrap();
    assert_eq!(store.remove_below(3).unwrap(), [path(2), path(1), temp]);
    assert_eq!(positions(&store.list().unwrap()), [3]);
    assert!(store.remove_below(3).unwrap().is_empty());
}

#[test]
fn writing_the_same_position_replaces_the_file() {
    let (_, store) = store();
    store.write(&snapshot(7)).unwrap();
    let mut newer = snapshot(7);
    newer.sections[0].bytes = b"replaced".to_vec();
    store.write(&newer).unwrap();
    assert_eq!(store.load_newest().unwrap().snapshot.unwrap().1, newer);
    assert_eq!(store.list().unwrap().len(), 1);
}

#[test]
fn a_failed_write_leaves_no_file_behind() {
    for op in [FaultOp::Write, FaultOp::Sync] {
        let (storage, store) = store();
        store.write(&snapshot(1)).unwrap();
        storage.inject_fault(op, 0, FaultKind::Eio);
        let error = store.write(&snapshot(2)).unwrap_err();
        assert!(matches!(error, Error::Io { .. }), "{error}");
        assert!(error.to_string().contains(".snap.tmp"), "{error}");
        assert_eq!(storage.files(), [path(1)], "{op:?}");
        assert_eq!(
            store.load_newest().unwrap().snapshot.unwrap().1,
            snapshot(1)
        );
    }
}

#[test]
fn a_stale_temp_file_does_not_block_a_write() {
    let (storage, store) = store();
    store.write(&snapshot(1)).unwrap();
    let temp = store.dir().join("00000000000000000002.snap.tmp");
    let file = storage.open_file(&temp, OpenMode::CreateNew).unwrap();
    file.write_all_at(0, b"half a snapshot").unwrap();
    store.write(&snapshot(2)).unwrap();
    assert_eq!(storage.files(), [path(1), path(2)]);
}

#[test]
fn an_invalid_snapshot_writes_nothing() {
    let (storage, store) = store();
    let mut invalid = snapshot(1);
    invalid.sections[1].id = "engine".into();
    let error = store.write(&invalid).unwrap_err();
    assert!(matches!(error, Error::InvalidSnapshot { .. }), "{error}");
    assert!(!storage.exists(store.dir()) && storage.files().is_empty());
}

#[test]
fn real_files_round_trip_with_private_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let temp = tempfile::tempdir().unwrap();
    let store = SnapshotStore::new(Arc::new(FileStorage::new()), temp.path());
    let info = store.write(&snapshot(3)).unwrap();
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(store.dir()), 0o700);
    assert_eq!(mode(&info.path), 0o600);
    store.write(&snapshot(4)).unwrap();
    assert_eq!(store.retain(1).unwrap(), [info.path]);
    let outcome = store.load_newest().unwrap();
    assert_eq!(outcome.snapshot.unwrap().1, snapshot(4));
    let names: Vec<_> = std::fs::read_dir(store.dir()).unwrap().collect();
    assert_eq!(names.len(), 1);
}
