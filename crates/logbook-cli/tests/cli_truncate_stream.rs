//! `truncate-stream`: hide a stream's early versions (a session reset).

mod common;

use common::{path, room_log, run};

#[test]
fn versions_below_the_cut_are_hidden() {
    let (_temp, dir) = room_log(4);
    let output = run(&[
        "truncate-stream",
        path(&dir),
        "--stream",
        "room/lobby",
        "--before",
        "3",
    ])
    .ok();
    assert!(
        output.stdout.contains("versions below 3 hidden"),
        "{}",
        output.stdout
    );
    let page = run(&["state", path(&dir), "rooms", "lobby", "--history", "--json"])
        .ok()
        .json();
    let versions: Vec<u64> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|message| message["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, vec![4, 3]);
    let marker = run(&[
        "dump",
        path(&dir),
        "--json",
        "--type",
        "logbook.stream_truncated",
    ])
    .ok()
    .json_lines();
    assert_eq!(marker[0]["data"]["before_version"], 3);
    let stats = run(&["stats", path(&dir), "--json"]).ok().json();
    assert_eq!(stats["reclaimable_events"], 3);
}

#[test]
fn truncate_needs_its_arguments() {
    let (_temp, dir) = room_log(1);
    let output = run(&["truncate-stream", path(&dir), "--stream", "room/lobby"]);
    assert_eq!(output.code, 2, "clap: --before is required");
}
