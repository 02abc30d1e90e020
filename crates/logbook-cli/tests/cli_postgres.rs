//! The CLI on a PostgreSQL URL: `append`, `delete-stream`, `truncate-stream`, `snapshot` and
//! `compact` write through the engine's PostgreSQL backend, `dump` reads read-only, with the
//! same output as on a directory; the snapshot lands in the database.

mod common;

use common::{room_lines, run, run_with_input};
use logbook_pgtest::Cluster;

#[test]
fn the_write_commands_and_dump_work_on_a_database() {
    let database = Cluster::shared().create_database();
    let url = database.url();
    let mut lines = room_lines("lobby", 4);
    lines.extend(room_lines("secret", 1));
    let acks = run_with_input(&["append", &url], &(lines.join("\n") + "\n")).ok();
    let acks = acks.json_lines();
    assert_eq!(acks.len(), lines.len());
    assert_eq!(acks[0]["position"], 1);
    assert_eq!(acks.last().unwrap()["position"], lines.len() as u64);

    run(&["delete-stream", &url, "--stream", "room/secret"]).ok();
    run(&[
        "truncate-stream",
        &url,
        "--stream",
        "room/lobby",
        "--before",
        "2",
    ])
    .ok();
    let dumped = run(&["dump", &url, "--json"]).ok().json_lines();
    let secret = dumped
        .iter()
        .filter(|event| event["stream"] == "room/secret")
        .count();
    assert_eq!(secret, 0, "the deleted room's rows are gone");
    let lobby_versions: Vec<u64> = dumped
        .iter()
        .filter(|event| event["stream"] == "room/lobby")
        .map(|event| event["version"].as_u64().unwrap())
        .collect();
    assert_eq!(lobby_versions, vec![2, 3, 4], "versions below 2 removed");
    let engine_events = dumped
        .iter()
        .filter(|event| event["stream"] == "$logbook")
        .count();
    assert_eq!(engine_events, 2, "the delete's and the truncation's events");

    let snapshot = run(&["snapshot", &url, "--json"]).ok().json();
    assert!(snapshot["position"].as_u64().unwrap() > 0);
    let rows = Cluster::shared().psql(database.name(), "SELECT count(*) FROM logbook_snapshots");
    assert_eq!(rows, "1");
    run(&["compact", &url]).ok();
    // The log is still whole for the next writer.
    let more = run_with_input(
        &["append", &url],
        &(room_lines("later", 0).join("\n") + "\n"),
    )
    .ok();
    assert_eq!(more.json_lines().len(), 1);
}
