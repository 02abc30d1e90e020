//! Process crash on the real file system: a child process writes snapshots in a loop (keeping
//! two) and prints each acknowledged position; the test kills it with SIGKILL at varied moments
//! and checks that the newest valid snapshot is at least the last acknowledged one, intact, and
//! that nothing is rejected.
//!
//! The child is this same test binary, re-run with `CHILD_DIR_VARIABLE` set and filtered to
//! `child_writes_snapshots_until_killed`, which does nothing in a normal run.

use logbook_compaction::{Snapshot, SnapshotSection, SnapshotStore};
use logbook_wal::FileStorage;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

const CHILD_DIR_VARIABLE: &str = "LOGBOOK_SNAPSHOT_KILL_CHILD_DIR";
const CHILD_TEST: &str = "child_writes_snapshots_until_killed";

/// The snapshot at `position`, derived from it so a reader can check every byte.
fn snapshot(position: u64) -> Snapshot {
    let bytes = |length: usize, salt: u64| {
        (0..length)
            .map(|index| (index as u64).wrapping_mul(31) ^ position ^ salt)
            .map(|value| value as u8)
            .collect()
    };
    Snapshot {
        position,
        sections: vec![
            SnapshotSection {
                id: "engine".into(),
                version: 1,
                bytes: bytes(64, 1),
            },
            SnapshotSection {
                id: "rooms".into(),
                version: 1,
                bytes: bytes(256 * 1024, 2),
            },
        ],
    }
}

fn store(dir: &Path) -> SnapshotStore {
    SnapshotStore::new(Arc::new(FileStorage::new()), dir)
}

#[test]
fn child_writes_snapshots_until_killed() {
    let Some(dir) = std::env::var_os(CHILD_DIR_VARIABLE) else {
        return; // a normal test run: only the parent below starts this for real
    };
    let store = store(Path::new(&dir));
    for position in 1.. {
        store.write(&snapshot(position)).unwrap();
        println!("ack {position}");
        store.retain(2).unwrap();
    }
}

/// Starts the child, kills it after `lifetime`, returns the last position it acknowledged.
fn run_and_kill(dir: &Path, lifetime: Duration) -> Option<u64> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([CHILD_TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR_VARIABLE, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut last = None;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(position) = line.strip_prefix("ack ") {
                last = Some(position.parse::<u64>().unwrap());
            }
        }
        last
    });
    std::thread::sleep(lifetime);
    assert!(
        child.try_wait().unwrap().is_none(),
        "the child exited on its own"
    );
    // SIGKILL: no destructor and no cleanup run in the child.
    child.kill().unwrap();
    child.wait().unwrap();
    reader.join().unwrap()
}

#[test]
fn sigkill_during_writes_keeps_the_last_acknowledged_snapshot() {
    let mut acknowledged_total = 0;
    for cycle in 0..6u64 {
        let temp = tempfile::tempdir().unwrap();
        let lifetime = Duration::from_millis(60 + cycle * 37);
        let acknowledged = run_and_kill(temp.path(), lifetime);
        let store = store(temp.path());
        let outcome = store.load_newest().unwrap();
        assert!(
            outcome.rejected.is_empty(),
            "cycle {cycle}: {:?}",
            outcome.rejected
        );
        let Some(last) = acknowledged else {
            continue; // the child never finished a write (a slow start): nothing to check
        };
        acknowledged_total += last;
        let (info, loaded) = outcome.snapshot.expect("an acknowledged snapshot exists");
        assert!(
            info.position >= last,
            "cycle {cycle}: {} < {last}",
            info.position
        );
        assert_eq!(loaded, snapshot(info.position), "cycle {cycle}");
        assert!(
            store.list().unwrap().len() <= 3,
            "retain(2) ran, plus one new snapshot"
        );
    }
    assert!(
        acknowledged_total > 0,
        "no child ever acknowledged a snapshot"
    );
}
