//! One damaged frame in the middle of a log of a few hundred events over many segments: it must
//! neither block readers nor cost everything after it. Readers (`dump`, `tail`, `state`) print
//! everything before the damage and then fail naming the segment and the offset and pointing to
//! `verify` and `repair`; a writer refuses the log and says `logbook repair` exists; `repair
//! --keep-intact` drops only the damaged frame and keeps every event after it, naming the
//! position given up; `verify` is clean afterwards and the engine reads and appends again.

mod common;

use common::{files, flip_bit, multi_segment_log, path, run, segments};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Events in the log: `room.created` and 300 posts (positions 1..=301).
const EVENTS: u64 = 301;

/// The damaged frame: its segment file, its offset and its position.
struct Victim {
    segment: PathBuf,
    offset: u64,
    position: u64,
}

/// Builds the log and flips one payload byte of a frame in the middle of a middle segment.
fn damaged_log() -> (tempfile::TempDir, PathBuf, Victim) {
    let (temp, dir) = multi_segment_log(EVENTS as usize - 1);
    let segments = segments(&dir);
    assert!(segments.len() >= 5, "several segments: {segments:?}");
    let segment = segments[segments.len() / 2].clone();
    let file_name = segment.file_name().unwrap().to_str().unwrap().to_owned();
    let frames: Vec<Value> = run(&["dump", path(&dir), "--frames", "--json"])
        .ok()
        .json_lines()
        .into_iter()
        .filter(|frame| frame["segment"] == file_name.as_str())
        .collect();
    let frame = &frames[frames.len() / 2];
    let victim = Victim {
        segment,
        offset: frame["offset"].as_u64().unwrap(),
        position: frame["position"].as_u64().unwrap(),
    };
    flip_bit(&victim.segment, victim.offset + 40);
    (temp, dir, victim)
}

fn positions(lines: &[Value]) -> Vec<u64> {
    lines
        .iter()
        .map(|event| event["position"].as_u64().unwrap())
        .collect()
}

/// The one-line error of a reader that met the damage.
fn assert_names_the_damage(stderr: &str, dir: &Path, victim: &Victim) {
    assert!(stderr.contains(path(&victim.segment)), "{stderr}");
    assert!(
        stderr.contains(&format!("byte offset {}", victim.offset)),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("logbook verify {}", path(dir))),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("logbook repair {}", path(dir))),
        "{stderr}"
    );
}

#[test]
fn readers_print_everything_before_the_damage_then_fail_naming_it() {
    let (_temp, dir, victim) = damaged_log();
    let before: Vec<u64> = (1..victim.position).collect();

    let to = (victim.position - 1).to_string();
    let up_to = run(&["dump", path(&dir), "--to", &to, "--json"]).ok();
    assert_eq!(
        positions(&up_to.json_lines()),
        before,
        "dump --to before the damage"
    );

    let all = run(&["dump", path(&dir), "--json"]).failed();
    assert_eq!(all.code, 1);
    assert_eq!(positions(&all.json_lines()), before);
    assert_names_the_damage(&all.stderr, &dir, &victim);

    let tail = run(&["tail", path(&dir), "-n", "3", "--json"]).failed();
    assert_eq!(
        positions(&tail.json_lines()),
        before[before.len() - 3..].to_vec()
    );
    assert_names_the_damage(&tail.stderr, &dir, &victim);

    let state = run(&["state", path(&dir), "rooms", "lobby", "--json"]).failed();
    let room = state.json();
    assert_eq!(
        room["messages_posted"].as_u64(),
        Some(victim.position - 2),
        "the posts before the damage: {room}"
    );
    assert!(
        state
            .stderr
            .contains(&format!("as of position {}", victim.position - 1)),
        "{}",
        state.stderr
    );
    assert_names_the_damage(&state.stderr, &dir, &victim);

    let history = run(&["state", path(&dir), "rooms", "lobby", "--history", "--json"]).failed();
    assert_eq!(
        history.json()["messages"][0]["position"].as_u64(),
        Some(victim.position - 1)
    );
    assert_names_the_damage(&history.stderr, &dir, &victim);
}

#[test]
fn a_writer_refuses_the_damaged_log_and_names_repair() {
    let (_temp, dir, victim) = damaged_log();
    let line = r#"{"stream":"room/lobby","type":"room.message_posted","data":{"message_id":"x","author":"ada","body":"x"}}"#;
    let refused = common::run_with_input(&["append", path(&dir)], line).failed();
    assert_names_the_damage(&refused.stderr, &dir, &victim);
    assert!(
        refused.stderr.contains("--keep-intact"),
        "{}",
        refused.stderr
    );
}

#[test]
fn repair_keep_intact_drops_only_the_damaged_frame() {
    let (_temp, dir, victim) = damaged_log();
    let before = files(&dir);
    let dry = run(&["repair", path(&dir), "--keep-intact", "--json"]);
    assert_eq!(dry.code, 1, "a dry run that would drop something exits 1");
    assert_eq!(files(&dir), before, "a dry run changes nothing");
    let report = dry.json();
    let regions = report["damaged_regions"].as_array().unwrap();
    assert_eq!(regions.len(), 1, "{report}");
    let region = &regions[0];
    assert_eq!(region["file"], path(&victim.segment));
    assert_eq!(region["start"], victim.offset);
    assert_eq!(region["bad_offset"], victim.offset);
    assert_eq!(region["positions_given_up"]["first"], victim.position);
    assert_eq!(region["positions_given_up"]["last"], victim.position);
    assert_eq!(region["intact_frames_dropped"].as_array().unwrap().len(), 0);
    assert!(report["salvage"].is_null(), "nothing is cut: {report}");

    let applied = run(&["repair", path(&dir), "--keep-intact", "--yes"]).ok();
    assert!(
        applied
            .stdout
            .contains(&format!("gave up position {}", victim.position)),
        "{}",
        applied.stdout
    );
    assert!(
        applied
            .stdout
            .contains(&format!("kept intact: {} records", EVENTS - 1)),
        "{}",
        applied.stdout
    );
    let after: Vec<u64> = (1..=EVENTS)
        .filter(|position| *position != victim.position)
        .collect();
    let events = run(&["dump", path(&dir), "--json"]).ok().json_lines();
    assert_eq!(positions(&events), after, "every event but the damaged one");
    let later = events
        .iter()
        .filter(|event| event["position"].as_u64().unwrap() > victim.position)
        .count() as u64;
    assert_eq!(
        later,
        EVENTS - victim.position,
        "every event after the damage"
    );
    run(&["verify", path(&dir)]).ok();
    let again = run(&["repair", path(&dir), "--keep-intact"]).ok();
    assert!(
        again.stdout.contains("nothing to repair"),
        "{}",
        again.stdout
    );
    let state = run(&["state", path(&dir), "rooms", "lobby", "--json"]).ok();
    assert_eq!(state.json()["messages_posted"].as_u64(), Some(EVENTS - 2));

    // The engine opens the repaired log: the stream's versions have a gap where the damaged
    // event was, reads skip it, and the next append gets the next version.
    use logbook::{BuiltinEvent, BuiltinLog, Direction, LogbookOptions, StreamId};
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let (log, _) = BuiltinLog::open(&dir, LogbookOptions::default())
            .await
            .unwrap();
        let room = StreamId::room("lobby").unwrap();
        let read = log
            .log()
            .read_stream(&room, 0, Direction::Forward, 1000)
            .await
            .unwrap();
        let versions: Vec<u64> = read.iter().map(|event| event.version).collect();
        let gap = victim.position - 1;
        let expected: Vec<u64> = (0..EVENTS).filter(|version| *version != gap).collect();
        assert_eq!(versions, expected);
        let data = serde_json::json!({"message_id": "new", "author": "ada", "body": "new"});
        let posted = BuiltinEvent::from_json("room.message_posted", data).unwrap();
        let appended = log.execute(&room, posted).await.unwrap();
        assert_eq!(appended.last_position, EVENTS + 1);
        log.close().await.unwrap();
    });
    run(&["verify", path(&dir)]).ok();
}

#[test]
fn the_cut_still_works_and_points_to_keep_intact() {
    let (_temp, dir, victim) = damaged_log();
    let dry = run(&["repair", path(&dir)]);
    assert_eq!(dry.code, 1);
    assert!(dry.stdout.contains("--keep-intact"), "{}", dry.stdout);
    run(&["repair", path(&dir), "--yes"]).ok();
    run(&["verify", path(&dir)]).ok();
    let events = run(&["dump", path(&dir), "--json"]).ok().json_lines();
    assert_eq!(positions(&events), (1..victim.position).collect::<Vec<_>>());
}

#[test]
fn keep_intact_removes_the_snapshots_and_index_that_include_a_given_up_position() {
    let (_temp, dir) = multi_segment_log(EVENTS as usize - 1);
    run(&["snapshot", path(&dir)]).ok();
    let segments = segments(&dir);
    let offsets = common::frame_offsets(&dir);
    // Position 2 lives in the first segment.
    flip_bit(&segments[0], offsets[&2] + 40);
    let before = files(&dir);
    let dry = run(&["repair", path(&dir), "--keep-intact", "--json"]).json();
    assert_eq!(
        dry["snapshots_removed"].as_array().unwrap().len(),
        1,
        "{dry}"
    );
    assert_eq!(dry["index_removed"], path(&dir.join("index")));
    assert_eq!(files(&dir), before, "a dry run changes nothing");
    run(&["repair", path(&dir), "--keep-intact", "--yes"]).ok();
    assert!(dir.join("snapshots").read_dir().unwrap().next().is_none());
    assert!(!dir.join("index").exists());
    run(&["verify", path(&dir)]).ok();
    // The replay from scratch leaves the dropped post out: no snapshot brings it back.
    let room = run(&["state", path(&dir), "rooms", "lobby", "--json"])
        .ok()
        .json();
    assert_eq!(room["messages_posted"].as_u64(), Some(EVENTS - 2));
    let stats = run(&["stats", path(&dir), "--json"]).ok().json();
    assert!(stats.is_object());
}

/// A batch of three events whose middle frame is damaged: batches are atomic, so the repair
/// drops the whole batch and says so, listing the two intact frames it drops with it.
#[test]
fn a_partly_damaged_batch_is_dropped_whole_and_said_so() {
    use logbook::{BuiltinEvent, BuiltinLog, ExpectedVersion, LogbookOptions, NewEvent, StreamId};
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("log");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let (log, _) = BuiltinLog::open(&dir, LogbookOptions::default())
            .await
            .unwrap();
        let room = StreamId::room("lobby").unwrap();
        let created = BuiltinEvent::from_json("room.created", serde_json::json!({"name": "L"}));
        log.execute(&room, created.unwrap()).await.unwrap();
        let post = |id: &str| {
            let data = serde_json::json!({"message_id": id, "author": "ada", "body": id});
            NewEvent::new(BuiltinEvent::from_json("room.message_posted", data).unwrap())
        };
        let batch = vec![post("b1"), post("b2"), post("b3")];
        let appended = log
            .log()
            .append(&room, ExpectedVersion::Any, batch)
            .await
            .unwrap();
        assert_eq!((appended.first_position, appended.last_position), (2, 4));
        log.execute(
            &room,
            BuiltinEvent::from_json(
                "room.message_posted",
                serde_json::json!({"message_id": "after", "author": "ada", "body": "after"}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
        log.close().await.unwrap();
    });
    let offsets = common::frame_offsets(&dir);
    flip_bit(&common::first_segment(&dir), offsets[&3] + 40);
    let report = run(&["repair", path(&dir), "--keep-intact", "--json"]).json();
    let region = &report["damaged_regions"][0];
    assert_eq!(
        region["start"], offsets[&2],
        "the region starts at the batch's first frame"
    );
    assert_eq!(
        region["end"], offsets[&5],
        "and ends at the next whole batch"
    );
    assert_eq!(region["bad_offset"], offsets[&3]);
    assert_eq!(region["positions_given_up"]["first"], 2);
    assert_eq!(region["positions_given_up"]["last"], 4);
    assert_eq!(region["intact_frames_dropped"], serde_json::json!([2, 4]));
    let applied = run(&["repair", path(&dir), "--keep-intact", "--yes"]).ok();
    assert!(
        applied.stdout.contains("the damage broke a batch")
            && applied.stdout.contains("positions 2, 4 are dropped"),
        "{}",
        applied.stdout
    );
    let events = run(&["dump", path(&dir), "--json"]).ok().json_lines();
    assert_eq!(positions(&events), vec![1, 5]);
    run(&["verify", path(&dir)]).ok();
}
