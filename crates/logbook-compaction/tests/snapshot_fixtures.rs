//! Format fixtures: snapshot files written by an earlier version must still load.
//!
//! `fixtures/snapshot-v1.snap` was written by an independent encoder that follows
//! `FORMAT-SNAPSHOT.md` (format version 1, CRC-32), not by this crate. Never edit it: add a new
//! fixture when the format changes.

use logbook_compaction::{Snapshot, SnapshotSection, SnapshotStore, decode_snapshot};
use logbook_wal::FileStorage;
use std::path::Path;
use std::sync::Arc;

const FIXTURE_V1: &[u8] = include_bytes!("fixtures/snapshot-v1.snap");

fn expected_v1() -> Snapshot {
    let section = |id: &str, version, bytes: &[u8]| SnapshotSection {
        id: id.to_owned(),
        version,
        bytes: bytes.to_vec(),
    };
    Snapshot {
        position: 1_234_567,
        sections: vec![
            section("engine", 1, &[0, 1, 2]),
            section("projection.rooms", 2, b"room lobby: hello"),
            section("empty", 7, b""),
        ],
    }
}

#[test]
fn version_1_fixture_decodes() {
    assert_eq!(decode_snapshot(FIXTURE_V1).unwrap(), expected_v1());
}

#[test]
fn version_1_fixture_is_what_this_build_writes() {
    assert_eq!(
        logbook_compaction::encode_snapshot(&expected_v1()),
        FIXTURE_V1
    );
}

#[test]
fn version_1_fixture_loads_from_a_snapshot_directory() {
    let temp = tempfile::tempdir().unwrap();
    let store = SnapshotStore::new(Arc::new(FileStorage::new()), temp.path());
    std::fs::create_dir(store.dir()).unwrap();
    let path = store.dir().join("00000000000001234567.snap");
    std::fs::write(&path, FIXTURE_V1).unwrap();
    let outcome = store.load_newest().unwrap();
    let (info, snapshot) = outcome.snapshot.unwrap();
    assert_eq!((info.path.as_path(), info.bytes), (Path::new(&path), 131));
    assert_eq!(snapshot, expected_v1());
}
