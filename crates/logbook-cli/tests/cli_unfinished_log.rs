//! A log whose creation a crash cut short (a `LOCK` and an empty `wal/`, or a `wal/` holding
//! only a zero-byte or header-less first segment) holds no acknowledged event: every read-only
//! command shows an empty log, exits 0, says the creation was not finished, and writes nothing.
//! A directory without `wal/` stays an error, and an error's cause is printed once.

mod common;

use common::{append, files, first_segment, path, room_lines, run};
use std::path::{Path, PathBuf};

/// What the commands say about an unfinished log.
const NOTE: &str = "creation was not finished";

/// The three states a cut-short creation leaves, each in its own log directory.
fn unfinished_logs(root: &Path) -> Vec<PathBuf> {
    // A zero-byte first segment, and one whose 32-byte header stopped after its magic.
    let segment_bytes: [&[u8]; 2] = [b"", b"LOGBKWAL\x01\x00"];
    let mut logs = Vec::new();
    let empty = root.join("empty");
    std::fs::create_dir_all(empty.join("wal")).unwrap();
    std::fs::write(empty.join("LOCK"), b"").unwrap();
    logs.push(empty);
    for (index, bytes) in segment_bytes.iter().enumerate() {
        let dir = root.join(format!("segment{index}"));
        std::fs::create_dir_all(dir.join("wal")).unwrap();
        std::fs::write(dir.join("LOCK"), b"").unwrap();
        std::fs::write(first_segment(&dir), bytes).unwrap();
        logs.push(dir);
    }
    logs
}

fn read_only_commands(dir: &str) -> Vec<Vec<&str>> {
    vec![
        vec!["dump", dir],
        vec!["dump", dir, "--json"],
        vec!["dump", dir, "--frames"],
        vec!["tail", dir, "-n", "3"],
        vec!["stats", dir],
        vec!["stats", dir, "--json"],
        vec!["verify", dir],
        vec!["verify", dir, "--json"],
        vec!["state", dir, "rooms"],
        vec!["state", dir, "runs", "--json"],
    ]
}

#[test]
fn read_only_commands_show_an_empty_log_and_say_its_creation_was_not_finished() {
    let temp = tempfile::tempdir().unwrap();
    for dir in unfinished_logs(temp.path()) {
        let before = files(&dir);
        for command in read_only_commands(path(&dir)) {
            let output = run(&command).ok();
            assert!(
                output.stderr.contains(NOTE) || output.stdout.contains(NOTE),
                "{command:?}: stdout {} stderr {}",
                output.stdout,
                output.stderr
            );
            assert!(
                !output.stderr.contains("error"),
                "{command:?}: {}",
                output.stderr
            );
            assert_eq!(files(&dir), before, "{command:?} changed the directory");
        }
        let dump = run(&["dump", path(&dir), "--json"]).ok();
        assert_eq!(dump.stdout, "", "no event");
        let stats = run(&["stats", path(&dir), "--json"]).ok().json();
        assert_eq!(stats["creation_unfinished"], true);
        assert_eq!(stats["events"], 0);
        let verify = run(&["verify", path(&dir), "--json"]).ok().json();
        assert_eq!(verify["creation_unfinished"], true);
        assert_eq!(verify["clean"], true);
    }
}

#[test]
fn a_writer_finishes_the_creation_and_the_note_goes_away() {
    let temp = tempfile::tempdir().unwrap();
    for dir in unfinished_logs(temp.path()) {
        let acks = append(&dir, &room_lines("lobby", 1));
        assert_eq!(acks.len(), 2);
        let stats = run(&["stats", path(&dir), "--json"]).ok();
        assert!(!stats.stderr.contains(NOTE), "{}", stats.stderr);
        assert_eq!(stats.json()["creation_unfinished"], false);
        assert_eq!(stats.json()["events"], 2);
        let verify = run(&["verify", path(&dir), "--json"]).ok().json();
        assert_eq!(verify["creation_unfinished"], false);
    }
}

#[test]
fn a_directory_without_wal_stays_an_error() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("log");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("LOCK"), b"").unwrap();
    for command in read_only_commands(path(&dir)) {
        let output = run(&command).failed();
        assert_eq!(output.code, 2, "{command:?}");
        assert!(
            output.stderr.contains("not a logbook directory"),
            "{command:?}: {}",
            output.stderr
        );
    }
}

#[test]
fn an_error_prints_its_cause_once() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("log");
    // A segment name that is a directory: opening it reads fail with EISDIR.
    std::fs::create_dir_all(first_segment(&dir)).unwrap();
    for command in [["dump", path(&dir)], ["stats", path(&dir)]] {
        let output = run(&command).failed();
        assert_eq!(output.code, 2, "{command:?}");
        assert_eq!(
            output.stderr.matches("Is a directory").count(),
            1,
            "{command:?}: {}",
            output.stderr
        );
    }
}
