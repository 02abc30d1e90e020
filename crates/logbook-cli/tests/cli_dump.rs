//! `dump`: filters, the human line, the exact JSON keys, unknown types, engine events, frames.

mod common;

use common::{path, room_log, run};
use logbook::{Event, ExpectedVersion, Logbook, LogbookOptions, StreamId};
use serde_json::json;

#[test]
fn filters_select_by_position_stream_type_and_limit() {
    let (_temp, dir) = room_log(5);
    common::append(&dir, &common::room_lines("kitchen", 2));
    let all = run(&["dump", path(&dir), "--json"]).ok().json_lines();
    assert_eq!(all.len(), 9);
    let range = run(&["dump", path(&dir), "--json", "--from", "2", "--to", "4"])
        .ok()
        .json_lines();
    let positions: Vec<u64> = range
        .iter()
        .map(|event| event["position"].as_u64().unwrap())
        .collect();
    assert_eq!(positions, vec![2, 3, 4]);
    let kitchen = run(&["dump", path(&dir), "--json", "--stream", "room/kitchen"])
        .ok()
        .json_lines();
    assert_eq!(kitchen.len(), 3);
    assert!(
        kitchen
            .iter()
            .all(|event| event["stream"] == "room/kitchen")
    );
    let created = run(&[
        "dump",
        path(&dir),
        "--json",
        "--type",
        "room.created",
        "--limit",
        "1",
    ])
    .ok()
    .json_lines();
    assert_eq!(created.len(), 1);
    assert_eq!(created[0]["stream"], "room/lobby");
}

#[test]
fn json_has_exactly_the_documented_keys_and_human_lines_name_stream_and_version() {
    let (_temp, dir) = room_log(1);
    let events = run(&["dump", path(&dir), "--json"]).ok().json_lines();
    let keys: Vec<&str> = events[1]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut expected = vec![
        "position",
        "stream",
        "version",
        "type",
        "schema_version",
        "timestamp_ms",
        "data",
    ];
    expected.sort_unstable();
    let mut keys = keys;
    keys.sort_unstable();
    assert_eq!(keys, expected);
    assert_eq!(
        events[1]["data"],
        json!({"message_id": "m0", "author": "ada", "body": "message 0"})
    );
    let human = run(&["dump", path(&dir)]).ok().stdout;
    let lines: Vec<&str> = human.lines().collect();
    assert_eq!(lines.len(), 2);
    assert!(lines[1].contains("room/lobby@1"), "{}", lines[1]);
    assert!(lines[1].contains("room.message_posted"), "{}", lines[1]);
    assert!(lines[1].contains("message 0"), "{}", lines[1]);
    assert!(lines[1].trim_start().starts_with('2'), "{}", lines[1]);
}

/// A service's own event type, unknown to the built-in model.
struct Note(Vec<u8>);

impl Event for Note {
    const CODEC: u8 = 200;
    fn event_type(&self) -> &'static str {
        "service.note"
    }
    fn schema_version(&self) -> u16 {
        3
    }
    fn encode_payload(&self) -> logbook_projection::Result<Vec<u8>> {
        Ok(self.0.clone())
    }
    fn decode_payload(_: &str, _: u16, payload: &[u8]) -> logbook_projection::Result<Self> {
        Ok(Note(payload.to_vec()))
    }
}

#[test]
fn unknown_types_give_null_data_and_raw_hex_and_engine_events_are_decoded() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("log");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let (log, _) = Logbook::<Note>::open(&dir, LogbookOptions::default())
            .await
            .unwrap();
        let stream = StreamId::new("notes/1").unwrap();
        let note = Note(vec![0xde, 0xad, 0xbe, 0xef]);
        log.append(&stream, ExpectedVersion::NoStream, vec![note.into()])
            .await
            .unwrap();
        log.truncate_stream(&stream, 1).await.unwrap();
        log.close().await.unwrap();
    });
    let events = run(&["dump", path(&dir), "--json"]).ok().json_lines();
    assert_eq!(events[0]["type"], "service.note");
    assert_eq!(events[0]["schema_version"], 3);
    assert_eq!(events[0]["data"], serde_json::Value::Null);
    assert_eq!(events[0]["raw"], "deadbeef");
    assert_eq!(events[1]["stream"], "$logbook");
    assert_eq!(events[1]["type"], "logbook.stream_truncated");
    assert_eq!(
        events[1]["data"],
        json!({"stream": "notes/1", "before_version": 1})
    );
    assert!(events[1].get("raw").is_none());
    let human = run(&["dump", path(&dir)]).ok().stdout;
    assert!(human.contains("deadbeef"), "{human}");
}

#[test]
fn frames_list_headers_and_offsets() {
    let (_temp, dir) = room_log(2);
    let frames = run(&["dump", path(&dir), "--frames", "--json"])
        .ok()
        .json_lines();
    assert_eq!(frames.len(), 3);
    assert_eq!(
        frames[0]["offset"], 32,
        "the first frame follows the 32-byte segment header"
    );
    assert_eq!(frames[0]["segment"], "00000000000000000001.seg");
    for pair in frames.windows(2) {
        let end =
            pair[0]["offset"].as_u64().unwrap() + 28 + pair[0]["payload_len"].as_u64().unwrap();
        assert_eq!(
            pair[1]["offset"].as_u64().unwrap(),
            end,
            "frames are contiguous"
        );
        assert_eq!(
            pair[1]["durable_mark"].as_u64().unwrap(),
            pair[0]["position"].as_u64().unwrap()
        );
    }
    assert_eq!(frames[2]["type"], "room.message_posted");
    assert_eq!(frames[2]["flags"], 3);
    let limited = run(&["dump", path(&dir), "--frames", "--limit", "1"])
        .ok()
        .stdout;
    assert_eq!(limited.lines().count(), 1);
    assert!(limited.contains("@        32"), "{limited}");
}
