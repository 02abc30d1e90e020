//! `stats`: segments, events by type and kind, streams, largest streams, reclaimable garbage.

mod common;

use common::{append, path, room_lines, room_log, run};

#[test]
fn json_stats_count_what_is_in_the_log() {
    let (_temp, dir) = room_log(3);
    append(&dir, &room_lines("kitchen", 1));
    append(
        &dir,
        &[r#"{"stream":"job/j1","type":"job.queued","data":{"kind":"embed"}}"#.to_owned()],
    );
    let stats = run(&["stats", path(&dir), "--json"]).ok().json();
    assert_eq!(stats["events"], 7);
    assert_eq!(stats["segment_count"], 1);
    assert_eq!(stats["first_position"], 1);
    assert_eq!(stats["last_position"], 7);
    assert_eq!(stats["segments"][0]["records"], 7);
    assert_eq!(
        stats["segment_bytes"],
        std::fs::metadata(common::first_segment(&dir))
            .unwrap()
            .len()
    );
    assert_eq!(stats["events_by_type"]["room.message_posted"], 4);
    assert_eq!(stats["events_by_type"]["room.created"], 2);
    assert_eq!(stats["events_by_stream_kind"]["room"], 6);
    assert_eq!(stats["events_by_stream_kind"]["job"], 1);
    assert_eq!(stats["streams"], 3);
    assert_eq!(stats["largest_streams"][0]["stream"], "room/lobby");
    assert_eq!(stats["largest_streams"][0]["events"], 4);
    assert_eq!(stats["reclaimable_events"], 0);
}

#[test]
fn deleted_and_truncated_streams_are_reclaimable_garbage() {
    let (_temp, dir) = room_log(3);
    append(&dir, &room_lines("kitchen", 2));
    run(&["delete-stream", path(&dir), "--stream", "room/kitchen"]).ok();
    run(&[
        "truncate-stream",
        path(&dir),
        "--stream",
        "room/lobby",
        "--before",
        "2",
    ])
    .ok();
    let stats = run(&["stats", path(&dir), "--json"]).ok().json();
    assert_eq!(stats["deleted_streams"], 1);
    assert_eq!(stats["truncated_streams"], 1);
    assert_eq!(
        stats["reclaimable_events"],
        3 + 2,
        "all of kitchen, lobby versions 0 and 1"
    );
    assert_eq!(stats["events_by_stream_kind"]["system"], 2);
    let human = run(&["stats", path(&dir)]).ok().stdout;
    assert!(human.contains("5 events"), "{human}");
    assert!(human.contains("room/lobby"), "{human}");
}
