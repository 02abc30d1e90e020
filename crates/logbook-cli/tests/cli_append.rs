//! `append`: NDJSON from stdin through the built-in validation, one acknowledgement per durable
//! event, stopping at the first bad line with nothing written for it.

mod common;

use common::{path, run, run_with_input};
use serde_json::json;

const CREATED: &str = r#"{"stream":"room/lobby","type":"room.created","data":{"name":"Lobby"}}"#;
const POSTED: &str = r#"{"stream":"room/lobby","type":"room.message_posted","data":{"message_id":"m1","author":"ada","body":"hello"}}"#;

#[test]
fn the_readme_lines_work_on_a_fresh_log_and_acks_match_dump() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("fresh");
    let input = format!("{CREATED}\n{POSTED}\n");
    let acks = run_with_input(&["append", path(&dir)], &input)
        .ok()
        .json_lines();
    assert_eq!(
        acks,
        vec![
            json!({"position": 1, "stream": "room/lobby", "version": 0}),
            json!({"position": 2, "stream": "room/lobby", "version": 1}),
        ]
    );
    let events = run(&["dump", path(&dir), "--json"]).ok().json_lines();
    assert_eq!(events.len(), acks.len());
    for (ack, event) in acks.iter().zip(&events) {
        assert_eq!(ack["position"], event["position"]);
        assert_eq!(ack["stream"], event["stream"]);
        assert_eq!(ack["version"], event["version"]);
    }
    assert_eq!(events[0]["type"], "room.created");
    assert_eq!(events[0]["data"]["name"], "Lobby");
    assert_eq!(events[1]["data"]["body"], "hello");
    assert_eq!(events[1]["data"]["author"], "ada");
}

#[test]
fn the_stream_option_is_the_default_and_expected_versions_are_checked() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("log");
    let input = concat!(
        r#"{"type":"job.queued","data":{"kind":"embed"},"expected_version":"no_stream"}"#,
        "\n",
        r#"{"type":"job.claimed","data":{"worker":"w1","lease_expires_at_ms":99999999999999},"expected_version":0}"#,
        "\n",
    );
    let acks = run_with_input(&["append", path(&dir), "--stream", "job/j1"], input)
        .ok()
        .json_lines();
    assert_eq!(
        acks[1],
        json!({"position": 2, "stream": "job/j1", "version": 1})
    );
    let stale =
        r#"{"stream":"job/j1","type":"job.progress","data":{"percent":5},"expected_version":0}"#;
    let failed = run_with_input(&["append", path(&dir)], stale).failed();
    assert!(failed.stderr.contains("line 1"), "{}", failed.stderr);
    assert!(
        failed.stderr.contains("expected 0, actual 1"),
        "{}",
        failed.stderr
    );
    assert_eq!(
        run(&["dump", path(&dir), "--json"]).ok().json_lines().len(),
        2
    );
}

#[test]
fn a_bad_line_stops_the_command_naming_it_and_writes_nothing_for_it() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("log");
    let cases = [
        ("{\"stream\": \"room/lobby\", \"type\": ", "invalid JSON"),
        (
            r#"{"stream":"room/lobby","type":"room.exploded","data":{}}"#,
            "room.exploded",
        ),
        (
            r#"{"stream":"room/lobby","type":"room.created","data":{"name":""}}"#,
            "name",
        ),
        (
            r#"{"stream":"room/other","type":"room.message_posted","data":{"message_id":"m2","author":"ada","body":"x"}}"#,
            "other",
        ),
        (
            r#"{"stream":"room/lobby","type":"room.created","data":{},"extra":1}"#,
            "extra",
        ),
        (r#"{"type":"room.archived"}"#, "stream"),
    ];
    for (index, (bad, mention)) in cases.iter().enumerate() {
        let lobby = if index == 0 { CREATED } else { POSTED };
        let input = format!("{lobby}\n\n{bad}\n{POSTED}\n");
        let output = run_with_input(&["append", path(&dir)], &input).failed();
        assert!(output.stderr.contains("line 3"), "{bad}: {}", output.stderr);
        assert!(output.stderr.contains(mention), "{bad}: {}", output.stderr);
        assert_eq!(
            output.json_lines().len(),
            1,
            "only the first line was acknowledged"
        );
    }
    // One room.created, then one post per case after the first: nothing of any bad line.
    let events = run(&["dump", path(&dir), "--json"]).ok().json_lines();
    assert_eq!(events.len(), cases.len());
}
