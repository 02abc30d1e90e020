//! `delete-stream`: the engine's tombstone, for a user's data removal request.

mod common;

use common::{append, path, room_lines, room_log, run};

#[test]
fn a_deleted_stream_is_gone_from_reads_and_refuses_appends() {
    let (_temp, dir) = room_log(2);
    append(&dir, &room_lines("kitchen", 1));
    let output = run(&["delete-stream", path(&dir), "--stream", "room/lobby"]).ok();
    assert!(
        output.stdout.contains("deleted stream room/lobby"),
        "{}",
        output.stdout
    );
    let tombstones = run(&["dump", path(&dir), "--json", "--stream", "$logbook"])
        .ok()
        .json_lines();
    assert_eq!(tombstones.len(), 1);
    assert_eq!(tombstones[0]["type"], "logbook.stream_deleted");
    assert_eq!(tombstones[0]["data"]["stream"], "room/lobby");
    let rooms = run(&["state", path(&dir), "rooms", "--json"]).ok().json();
    let ids: Vec<&str> = rooms
        .as_array()
        .unwrap()
        .iter()
        .map(|room| room["room_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["kitchen"]);
    let history = run(&["state", path(&dir), "rooms", "lobby", "--history"]).failed();
    assert!(history.stderr.contains("deleted"), "{}", history.stderr);
    let refused =
        common::run_with_input(&["append", path(&dir)], &room_lines("lobby", 0)[0]).failed();
    assert!(refused.stderr.contains("line 1"), "{}", refused.stderr);
}

#[test]
fn bad_stream_names_and_missing_logs_are_refused() {
    let (_temp, dir) = room_log(0);
    let reserved = run(&["delete-stream", path(&dir), "--stream", "$logbook"]).failed();
    assert!(reserved.stderr.contains("reserved"), "{}", reserved.stderr);
    let empty = run(&["delete-stream", path(&dir), "--stream", ""]).failed();
    assert_eq!(empty.code, 2);
    let temp = tempfile::tempdir().unwrap();
    let missing = temp.path().join("missing");
    run(&["delete-stream", path(&missing), "--stream", "room/lobby"]).failed();
    assert!(!missing.exists(), "nothing created");
}
