//! `repair`: explicit salvage of a torn or corrupt log, only with --yes, reporting exactly what
//! it drops.

mod common;

use common::{files, first_segment, flip_bit, frame_offsets, path, room_log, run, tear};

#[test]
fn a_torn_tail_is_reported_then_cut_with_yes() {
    let (_temp, dir) = room_log(4);
    let offsets = frame_offsets(&dir);
    let segment = first_segment(&dir);
    let len = std::fs::metadata(&segment).unwrap().len();
    tear(&segment, 10);
    let before = files(&dir);

    let dry = run(&["repair", path(&dir)]);
    assert_eq!(
        dry.code, 1,
        "a dry run that would drop something exits 1: {}",
        dry.stdout
    );
    assert!(dry.stdout.contains("would drop"), "{}", dry.stdout);
    assert!(dry.stdout.contains("--yes"), "{}", dry.stdout);
    assert_eq!(files(&dir), before, "a dry run changes nothing");
    let report = run(&["repair", path(&dir), "--json"]).json();
    assert_eq!(report["applied"], false);
    assert_eq!(report["tail_cut"]["offset"], offsets[&5]);
    assert_eq!(report["tail_cut"]["bytes_dropped"], len - 10 - offsets[&5]);

    let applied = run(&["repair", path(&dir), "--yes"]).ok();
    assert!(applied.stdout.contains("dropped"), "{}", applied.stdout);
    assert!(
        applied.stdout.contains("ends at position 4"),
        "{}",
        applied.stdout
    );
    assert_eq!(std::fs::metadata(&segment).unwrap().len(), offsets[&5]);
    run(&["verify", path(&dir)]).ok();
    assert_eq!(
        run(&["dump", path(&dir), "--json"]).ok().json_lines().len(),
        4
    );
    let again = run(&["repair", path(&dir)]).ok();
    assert!(
        again.stdout.contains("nothing to repair"),
        "{}",
        again.stdout
    );
}

#[test]
fn corruption_is_salvaged_listing_every_event_dropped() {
    let (_temp, dir) = room_log(4);
    let offsets = frame_offsets(&dir);
    let segment = first_segment(&dir);
    flip_bit(&segment, offsets[&2] + 33);
    let refused = run(&["dump", path(&dir)]).failed();
    assert!(
        refused.stderr.contains(path(&segment)),
        "{}",
        refused.stderr
    );

    let report = run(&["repair", path(&dir), "--json"]).json();
    assert_eq!(report["salvage"]["offset"], offsets[&2]);
    assert_eq!(report["salvage"]["valid_frames_dropped"], 3);
    let dropped: Vec<u64> = report["dropped_frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|frame| frame["position"].as_u64().unwrap())
        .collect();
    assert_eq!(
        dropped,
        vec![3, 4, 5],
        "the valid events after the bad frame"
    );
    assert_eq!(report["dropped_frames"][0]["type"], "room.message_posted");

    let human = run(&["repair", path(&dir)]);
    assert_eq!(human.code, 1);
    assert!(
        human.stdout.contains("position        3  room/lobby@2"),
        "{}",
        human.stdout
    );

    let applied = run(&["repair", path(&dir), "--yes", "--json"]).ok().json();
    assert_eq!(applied["applied"], true);
    assert_eq!(applied["dropped_frames"].as_array().unwrap().len(), 3);
    run(&["verify", path(&dir)]).ok();
    let events = run(&["dump", path(&dir), "--json"]).ok().json_lines();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["type"], "room.created");
}

#[test]
fn repair_needs_a_log() {
    let temp = tempfile::tempdir().unwrap();
    let output = run(&["repair", path(temp.path()), "--yes"]).failed();
    assert_eq!(output.code, 2);
    assert!(!temp.path().join("wal").exists());
}

#[test]
fn corruption_in_a_sealed_segment_removes_every_later_segment() {
    let (_temp, dir) = common::multi_segment_log(60);
    let segments = common::segments(&dir);
    assert!(segments.len() >= 3, "{segments:?}");
    let offsets = frame_offsets(&dir);
    let second = offsets[&2];
    flip_bit(&segments[0], second + 30);
    let report = run(&["repair", path(&dir), "--json"]).json();
    assert_eq!(report["salvage"]["file"], segments[0].display().to_string());
    assert_eq!(report["salvage"]["offset"], second);
    let removed = report["salvage"]["segments_removed"].as_array().unwrap();
    assert_eq!(removed.len(), segments.len() - 1);
    let dropped: Vec<u64> = report["dropped_frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|frame| frame["position"].as_u64().unwrap())
        .collect();
    assert_eq!(
        dropped,
        (3..=61).collect::<Vec<u64>>(),
        "every valid event after the bad frame"
    );

    run(&["repair", path(&dir), "--yes"]).ok();
    assert_eq!(common::segments(&dir).len(), 1);
    run(&["verify", path(&dir)]).ok();
    assert_eq!(
        run(&["dump", path(&dir), "--json"]).ok().json_lines().len(),
        1
    );
}

#[test]
fn a_salvage_removes_snapshots_past_the_new_end_and_the_stream_index() {
    let (_temp, dir) = room_log(4);
    let offsets = frame_offsets(&dir);
    run(&["snapshot", path(&dir)]).ok();
    flip_bit(&first_segment(&dir), offsets[&2] + 33);
    let dry = run(&["repair", path(&dir), "--json"]).json();
    assert_eq!(dry["snapshots_removed"].as_array().unwrap().len(), 1);
    assert!(
        dir.join("snapshots").read_dir().unwrap().next().is_some(),
        "dry run"
    );
    let applied = run(&["repair", path(&dir), "--yes"]).ok().stdout;
    assert!(applied.contains("snapshot: dropped"), "{applied}");
    assert!(dir.join("snapshots").read_dir().unwrap().next().is_none());
    assert!(!dir.join("index").exists());
    run(&["verify", path(&dir)]).ok();
    // The log takes new events at the freed positions, and reads see only them.
    common::append(
        &dir,
        &[r#"{"stream":"room/lobby","type":"room.message_posted","data":{"message_id":"n1","author":"grace","body":"after repair"}}"#.to_owned()],
    );
    let page = run(&["state", path(&dir), "rooms", "lobby", "--history", "--json"])
        .ok()
        .json();
    assert_eq!(page["messages"].as_array().unwrap().len(), 1);
    assert_eq!(page["messages"][0]["body"], "after repair");
}
