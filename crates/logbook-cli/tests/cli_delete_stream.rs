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

#[test]
fn a_stream_that_never_existed_is_an_error_and_nothing_is_written() {
    let (_temp, dir) = room_log(1);
    for soft in [false, true] {
        let mut args = vec!["delete-stream", path(&dir), "--stream", "room/nowhere"];
        if soft {
            args.push("--soft");
        }
        let refused = run(&args).failed();
        assert_eq!(refused.code, 1);
        assert!(
            refused.stderr.contains("room/nowhere") && refused.stderr.contains("not found"),
            "{}",
            refused.stderr
        );
    }
    let engine_events = run(&["dump", path(&dir), "--json", "--stream", "$logbook"])
        .ok()
        .json_lines();
    assert!(engine_events.is_empty(), "{engine_events:?}");
}

#[test]
fn a_soft_deleted_stream_is_hidden_and_can_be_used_again() {
    let (_temp, dir) = room_log(2);
    let output = run(&[
        "delete-stream",
        path(&dir),
        "--stream",
        "room/lobby",
        "--soft",
    ])
    .ok();
    assert!(
        output.stdout.contains("soft-deleted stream room/lobby"),
        "{}",
        output.stdout
    );
    let markers = run(&["dump", path(&dir), "--json", "--stream", "$logbook"])
        .ok()
        .json_lines();
    assert_eq!(markers.len(), 1);
    assert_eq!(markers[0]["type"], "logbook.stream_soft_deleted");
    assert_eq!(markers[0]["data"]["stream"], "room/lobby");
    assert_eq!(markers[0]["data"]["before_version"], 3);
    let rooms = run(&["state", path(&dir), "rooms", "--json"]).ok().json();
    assert_eq!(rooms.as_array().map(Vec::len), Some(0), "{rooms}");
    // `no_stream` holds after a soft delete, and the versions continue.
    let line = r#"{"stream":"room/lobby","type":"room.created","data":{"name":"again"},"expected_version":"no_stream"}"#;
    let acks = common::run_with_input(&["append", path(&dir)], line)
        .ok()
        .json_lines();
    assert_eq!(acks[0]["version"], 3);
    let rooms = run(&["state", path(&dir), "rooms", "--json"]).ok().json();
    assert_eq!(rooms[0]["name"], "again", "{rooms}");
}
