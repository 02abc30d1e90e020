//! `copy`: a log goes from a directory to PostgreSQL and back with positions, versions, types,
//! timestamps and payload bytes identical (`dump --json` compared); records that a delete or a
//! truncation hid are left out, as compaction leaves them out; a target that already holds
//! something is refused and nothing is written.

mod common;

use common::{append, path, room_lines, room_log, run};
use logbook_pgtest::Cluster;

/// A log with a deleted room and a truncated one.
fn log_with_purges() -> (tempfile::TempDir, std::path::PathBuf) {
    let (temp, dir) = room_log(6);
    let mut secret = room_lines("secret", 0);
    secret.push(
        r#"{"stream":"room/secret","type":"room.message_posted","data":{"message_id":"s0","author":"eve","body":"classified"}}"#
            .to_string(),
    );
    append(&dir, &secret);
    run(&["delete-stream", path(&dir), "--stream", "room/secret"]).ok();
    run(&[
        "truncate-stream",
        path(&dir),
        "--stream",
        "room/lobby",
        "--before",
        "3",
    ])
    .ok();
    (temp, dir)
}

#[test]
fn a_log_goes_to_postgres_and_back_identical() {
    let (temp, dir) = log_with_purges();
    let database = Cluster::shared().create_database();
    let url = database.url();

    let there = run(&["copy", path(&dir), &url, "--json"]).ok().json();
    assert_eq!(
        there["hidden_skipped"],
        2 + 3,
        "room/secret whole, lobby versions 0 to 2"
    );
    let rows = Cluster::shared().psql(database.name(), "SELECT count(*) FROM logbook_events");
    assert_eq!(
        rows,
        there["records"].to_string(),
        "the rows are in the database"
    );
    let back_dir = temp.path().join("back");
    let back = run(&["copy", &url, path(&back_dir), "--json"]).ok().json();
    assert_eq!(back["records"], there["records"]);
    assert_eq!(back["hidden_skipped"], 0);
    assert_eq!(back["last_position"], there["last_position"]);

    // The original, compacted, shows exactly what the copies hold.
    run(&["compact", path(&dir)]).ok();
    let original = run(&["dump", path(&dir), "--json"]).ok().json_lines();
    let copied = run(&["dump", path(&back_dir), "--json"]).ok().json_lines();
    assert!(!original.is_empty());
    assert_eq!(
        copied, original,
        "positions, versions, types, times and data identical"
    );
    run(&["verify", path(&back_dir)]).ok();
    // `dump` reads the database read-only: the same lines.
    let in_database = run(&["dump", &url, "--json"]).ok().json_lines();
    assert_eq!(in_database, original);
    let filtered = run(&[
        "dump",
        &url,
        "--json",
        "--stream",
        "room/lobby",
        "--limit",
        "2",
    ])
    .ok()
    .json_lines();
    assert_eq!(filtered.len(), 2);
    assert!(filtered.iter().all(|event| event["stream"] == "room/lobby"));
    // The copied-in log, its purged records left out, is clean and counted as copied.
    let verify = run(&["verify", &url]).ok();
    assert!(
        verify.stdout.contains("ok: PostgreSQL"),
        "{}",
        verify.stdout
    );
    let stats = run(&["stats", &url, "--json"]).ok().json();
    assert_eq!(stats["events"], there["records"]);
    assert_eq!(stats["last_position"], there["last_position"]);
    // The copy is a log like any other: it takes appends after the copied positions.
    let acks = append(&back_dir, &room_lines("later", 1));
    let last = there["last_position"].as_u64().unwrap();
    assert!(acks[0]["position"].as_u64().unwrap() > last);
}

#[test]
fn a_target_that_holds_something_is_refused_and_nothing_is_written() {
    let (temp, dir) = log_with_purges();
    let occupied = temp.path().join("occupied");
    std::fs::create_dir(&occupied).unwrap();
    std::fs::write(occupied.join("notes.txt"), b"mine").unwrap();
    let refused = run(&["copy", path(&dir), path(&occupied)]).failed();
    assert!(refused.stderr.contains("not empty"), "{}", refused.stderr);
    let names: Vec<_> = std::fs::read_dir(&occupied).unwrap().collect();
    assert_eq!(
        names.len(),
        1,
        "nothing written into the occupied directory"
    );

    let database = Cluster::shared().create_database();
    let url = database.url();
    let first = run(&["copy", path(&dir), &url, "--json"]).ok().json();
    let again = run(&["copy", path(&dir), &url]).failed();
    assert!(
        again.stderr.contains("already holds a log"),
        "{}",
        again.stderr
    );
    let rows = Cluster::shared().psql(database.name(), "SELECT count(*) FROM logbook_events");
    assert_eq!(
        rows,
        first["records"].to_string(),
        "the refused copy added nothing"
    );
}
