//! `consumers`: lists the durable consumers of a log (a directory or a `postgres://` URL)
//! with position, lag and last checkpoint; `--reset NAME --to P` appends an operator's
//! checkpoint and refuses a position above the durable one (exit 1). `stats` lists the
//! consumers too, `dump` shows a checkpoint's position, and the built-in projections ignore
//! the checkpoint stream.

mod common;

use common::{append, path, room_lines, room_log, run, run_with_input};
use logbook_pgtest::Cluster;

#[test]
fn list_reset_and_refuse_a_reset_past_the_log() {
    let (_temp, dir) = room_log(4); // positions 1..=5
    let empty = run(&["consumers", path(&dir)]).ok();
    assert!(
        empty.stdout.contains("no durable consumers"),
        "{}",
        empty.stdout
    );
    assert!(
        run(&["consumers", path(&dir), "--json"])
            .ok()
            .stdout
            .is_empty()
    );

    let reset = run(&["consumers", path(&dir), "--reset", "billing", "--to", "3"]).ok();
    assert!(
        reset.stdout.contains("resumes after position 3"),
        "{}",
        reset.stdout
    );
    let listed = run(&["consumers", path(&dir), "--json"]).ok().json_lines();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["name"], "billing");
    assert_eq!(listed[0]["position"], 3);
    assert_eq!(listed[0]["checkpoint_position"], 6);
    assert_eq!(listed[0]["lag"], 3, "the last position (6) minus 3");
    assert!(listed[0]["checkpointed_at_ms"].as_u64().unwrap() > 0);
    let text = run(&["consumers", path(&dir)]).ok().stdout;
    assert!(text.contains("billing"), "{text}");

    let refused = run(&["consumers", path(&dir), "--reset", "billing", "--to", "99"]).failed();
    assert_eq!(refused.code, 1);
    assert!(
        refused
            .stderr
            .contains("position 99 is above the log's durable position 6"),
        "{}",
        refused.stderr
    );
    let still = run(&["consumers", path(&dir), "--json"]).ok().json_lines();
    assert_eq!(still[0]["position"], 3, "a refused reset writes nothing");

    let stats = run(&["stats", path(&dir), "--json"]).ok().json();
    assert_eq!(stats["consumers"][0]["name"], "billing");
    assert_eq!(stats["consumers"][0]["position"], 3);
    let dumped = run(&[
        "dump",
        path(&dir),
        "--json",
        "--stream",
        "$consumer/billing",
    ])
    .ok()
    .json_lines();
    assert_eq!(dumped[0]["type"], "logbook.consumer_acked");
    assert_eq!(dumped[0]["data"]["position"], 3);

    // The built-in model's projections never see the checkpoint: appends and state go on.
    append(&dir, &room_lines("hall", 1));
    let rooms = run(&["state", path(&dir), "rooms", "--json"]).ok().json();
    assert!(rooms.to_string().contains("hall"), "{rooms}");
}

#[test]
fn reset_needs_a_valid_name_and_a_position() {
    let (_temp, dir) = room_log(1);
    let missing = run(&["consumers", path(&dir), "--reset", "billing"]);
    assert_eq!(missing.code, 2, "clap: --to is required with --reset");
    let bad = run(&["consumers", path(&dir), "--reset", "no spaces", "--to", "1"]).failed();
    assert_eq!(bad.code, 2);
    assert!(bad.stderr.contains("consumer name"), "{}", bad.stderr);
}

#[test]
fn consumers_on_a_database() {
    let database = Cluster::shared().create_database();
    let url = database.url();
    let lines = room_lines("lobby", 3);
    run_with_input(&["append", &url], &(lines.join("\n") + "\n")).ok();
    run(&["consumers", &url, "--reset", "mailer", "--to", "2"]).ok();
    let listed = run(&["consumers", &url, "--json"]).ok().json_lines();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["name"], "mailer");
    assert_eq!(listed[0]["position"], 2);
    assert_eq!(listed[0]["lag"], 3, "last position 5 minus 2");
    let refused = run(&["consumers", &url, "--reset", "mailer", "--to", "50"]).failed();
    assert_eq!(refused.code, 1);
    let stats = run(&["stats", &url, "--json"]).ok().json();
    assert_eq!(stats["consumers"][0]["name"], "mailer");
}
