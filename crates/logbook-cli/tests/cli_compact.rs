//! `compact`: purges deleted and truncated events and prints what was reclaimed; the state
//! (from the snapshot compaction takes) is unchanged, and the log still verifies.

mod common;

use common::{append, files, path, room_lines, room_log, run};

#[test]
fn compaction_reclaims_deleted_and_truncated_events() {
    let (_temp, dir) = room_log(4);
    let mut secret = room_lines("secret", 0);
    for index in 0..2 {
        secret.push(format!(
            r#"{{"stream":"room/secret","type":"room.message_posted","data":{{"message_id":"s{index}","author":"eve","body":"classified-7f3a-{index}"}}}}"#
        ));
    }
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
    let before = run(&["state", path(&dir), "rooms", "lobby", "--json"])
        .ok()
        .json();

    let report = run(&["compact", path(&dir), "--json"]).ok().json();
    assert_eq!(
        report["records_dropped"],
        3 + 3,
        "room/secret whole, lobby versions 0 to 2"
    );
    assert!(report["bytes_reclaimed"].as_u64().unwrap() > 0);
    assert_eq!(
        report["segments_read"], 1,
        "the one sealed segment holding the dead records"
    );
    let segment_bytes = report["segments"][0]["bytes_before"].as_u64().unwrap();
    assert_eq!(
        report["bytes_read"].as_u64().unwrap(),
        2 * segment_bytes,
        "read twice: to find superseded records, then to rewrite"
    );
    let again = run(&["compact", path(&dir), "--json"]).ok().json();
    assert_eq!(
        (
            again["segments_read"].as_u64(),
            again["bytes_read"].as_u64()
        ),
        (Some(0), Some(0))
    );

    let events = run(&["dump", path(&dir), "--json"]).ok().json_lines();
    assert!(events.iter().all(|event| event["stream"] != "room/secret"));
    let lobby: Vec<u64> = events
        .iter()
        .filter(|event| event["stream"] == "room/lobby")
        .map(|event| event["version"].as_u64().unwrap())
        .collect();
    assert_eq!(lobby, vec![3, 4]);
    let needle = b"classified-7f3a";
    for (file, bytes) in files(&dir) {
        let found = bytes.windows(needle.len()).any(|window| window == needle);
        assert!(!found, "{file:?} still holds a purged message body");
    }

    run(&["verify", path(&dir)]).ok();
    let after = run(&["state", path(&dir), "rooms", "lobby", "--json"])
        .ok()
        .json();
    assert_eq!(
        after, before,
        "the projections come from the snapshot, not the purged log"
    );
    let stats = run(&["stats", path(&dir), "--json"]).ok().json();
    assert_eq!(stats["reclaimable_events"], 0);

    let human = run(&["compact", path(&dir)]).ok().stdout;
    assert!(human.contains("records dropped"), "{human}");
}

#[test]
fn compact_needs_an_existing_log() {
    let (_temp, dir) = room_log(0);
    let missing = run(&["compact", path(&dir.join("nope"))]).failed();
    assert_eq!(missing.code, 2);
}
