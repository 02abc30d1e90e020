//! Format stability: envelopes of every built-in event, encoded by an earlier version and
//! committed under `tests/fixtures/events/`, must still decode to the same values.
//!
//! Each fixture is `<name>.bin` (one encoded envelope, as stored in one WAL record) and
//! `<name>.json` (the header fields and the event's JSON data it must decode to). `<name>` is
//! the event type, or `<event type>.v<n>` for a payload written at an older schema version.
//!
//! Fixtures are never rewritten: `GENERATE_FIXTURES=1 cargo test -p logbook-projection --test
//! event_fixtures generate` writes only the missing ones (a new event type, a new schema
//! version). If an existing fixture stops decoding, the code changed the format: add a schema
//! version and an upcaster instead of regenerating.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use logbook_projection::{
    BuiltinEvent, Envelope, Event, EventData, NewEvent, RawEvent, StreamId, codec,
};
use serde::Serialize;
use serde_json::{Value, json};

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/events")
}

/// The expected value of one fixture.
#[derive(Debug, PartialEq, serde::Deserialize, Serialize)]
struct Expected {
    stream: String,
    stream_version: u64,
    timestamp_ms: u64,
    event_type: String,
    schema_version: u16,
    codec: u8,
    correlation_id: Option<String>,
    causation_id: Option<String>,
    data: Value,
}

#[test]
fn every_fixture_decodes_to_its_expected_value() {
    let dir = fixtures_dir();
    let mut names = Vec::new();
    for entry in fs::read_dir(&dir).expect("tests/fixtures/events exists") {
        let path = entry.expect("dir entry").path();
        if path.extension().is_some_and(|extension| extension == "bin") {
            let name = path
                .file_stem()
                .expect("stem")
                .to_string_lossy()
                .into_owned();
            names.push(name);
        }
    }
    names.sort();
    for name in &names {
        check_fixture(&dir, name);
    }
    let present: BTreeSet<&str> = names.iter().map(String::as_str).collect();
    let missing: Vec<&str> = BuiltinEvent::EVENT_TYPES
        .iter()
        .copied()
        .filter(|event_type| !present.contains(event_type))
        .collect();
    assert!(
        missing.is_empty(),
        "built-in event types without a fixture: {missing:?}; run with GENERATE_FIXTURES=1"
    );
    assert!(
        present.contains("job.progress.v1"),
        "the upcaster fixture is missing"
    );
}

fn check_fixture(dir: &Path, name: &str) {
    let bytes = fs::read(dir.join(format!("{name}.bin"))).expect("read .bin");
    let json = fs::read_to_string(dir.join(format!("{name}.json")))
        .unwrap_or_else(|error| panic!("{name}.json: {error}"));
    let expected: Expected = serde_json::from_str(&json).expect("expected JSON");

    let raw = RawEvent::decode_record(0, &bytes).unwrap_or_else(|error| panic!("{name}: {error}"));
    let envelope = &raw.envelope;
    let actual_header = Expected {
        stream: envelope.stream().to_string(),
        stream_version: envelope.stream_version(),
        timestamp_ms: envelope.timestamp_ms(),
        event_type: envelope.event_type().to_owned(),
        schema_version: envelope.schema_version(),
        codec: envelope.codec(),
        correlation_id: envelope.correlation_id().map(str::to_owned),
        causation_id: envelope.causation_id().map(str::to_owned),
        data: expected.data.clone(),
    };
    assert_eq!(actual_header, expected, "{name}: header");

    let recorded = raw
        .decode::<BuiltinEvent>()
        .unwrap_or_else(|error| panic!("{name}: {error}"));
    let expected_event = BuiltinEvent::from_json(&expected.event_type, expected.data.clone())
        .unwrap_or_else(|error| panic!("{name}: expected data: {error}"));
    assert_eq!(recorded.event, expected_event, "{name}: event");
    assert_eq!(recorded.event.to_json(), expected.data, "{name}: JSON");

    // Today's code must still write the same bytes for a current-version fixture.
    if recorded.event.schema_version() == expected.schema_version {
        assert_eq!(
            build_envelope(&expected, expected_event).encode(),
            bytes,
            "{name}: re-encoding changed the bytes"
        );
    }
}

fn build_envelope(expected: &Expected, event: BuiltinEvent) -> Envelope {
    let mut new_event = NewEvent::new(event);
    new_event.correlation_id = expected.correlation_id.clone();
    new_event.causation_id = expected.causation_id.clone();
    let data = new_event.to_data().expect("valid sample");
    let stream = StreamId::new(expected.stream.clone()).expect("valid stream");
    Envelope::new(stream, expected.stream_version, expected.timestamp_ms, data)
}

/// (stream, event type, data, correlation id, causation id).
type Sample = (
    &'static str,
    &'static str,
    Value,
    Option<&'static str>,
    Option<&'static str>,
);

/// One sample per built-in event type.
fn samples() -> Vec<Sample> {
    vec![
        (
            "run/r1",
            "run.started",
            json!({"kind": "workflow_child", "agent_id": "coder", "parent_run_id": "r0",
                "parent_thread_id": "t1", "prompt_ref": "prompts/r1", "worker_thread_id": "wt1",
                "task_board_ref": "board-1", "task_card_ref": "card-9", "workflow_id": "w1"}),
            Some("req-1"),
            None,
        ),
        (
            "run/r1",
            "run.status_changed",
            json!({"status": "awaiting_user", "reason": "ask"}),
            None,
            None,
        ),
        (
            "run/r1",
            "run.event",
            json!({"sequence": 7, "event_type": "tool_call", "payload": "{\"tool\":\"grep\"}"}),
            None,
            None,
        ),
        (
            "run/r1",
            "run.telemetry",
            json!({"tokens_in": 1200, "tokens_out": 340, "cost_estimate_micros": 5600,
                "elapsed_ms": 812, "tool_calls": {"grep": 2, "edit": 1}, "model": "m-large",
                "provider": "acme", "error": null}),
            None,
            None,
        ),
        (
            "run/r1",
            "run.checkpointed",
            json!({"reason": "paused", "data": "{\"step\":3}"}),
            None,
            None,
        ),
        (
            "run/r1",
            "run.completed",
            json!({"summary": "done", "result_ref": "results/r1"}),
            None,
            None,
        ),
        (
            "run/r2",
            "run.failed",
            json!({"error": "tool crashed"}),
            None,
            None,
        ),
        (
            "run/r3",
            "run.cancelled",
            json!({"reason": "user stop"}),
            None,
            None,
        ),
        (
            "workflow/w1",
            "workflow.started",
            json!({"definition_id": "review", "parent_thread_id": "t1",
                "input": "{\"pr\":42}", "phases": ["plan", "build", "check"]}),
            Some("req-2"),
            Some("cmd-1"),
        ),
        (
            "workflow/w1",
            "workflow.phase_started",
            json!({"phase": "plan", "child_run_ids": ["r1"]}),
            None,
            None,
        ),
        (
            "workflow/w1",
            "workflow.phase_completed",
            json!({"phase": "plan", "child_run_ids": ["r1"], "result_ref": "results/plan"}),
            None,
            None,
        ),
        (
            "workflow/w1",
            "workflow.phase_failed",
            json!({"phase": "build", "child_run_ids": ["r2", "r3"], "error": "r2 failed"}),
            None,
            None,
        ),
        (
            "workflow/w1",
            "workflow.completed",
            json!({"summary": "ok", "result_ref": null}),
            None,
            None,
        ),
        (
            "workflow/w2",
            "workflow.failed",
            json!({"error": "no budget"}),
            None,
            None,
        ),
        (
            "workflow/w3",
            "workflow.cancelled",
            json!({"reason": null}),
            None,
            None,
        ),
        (
            "room/lobby",
            "room.created",
            json!({"name": "Lobby", "topic": "everything", "created_by": "ada"}),
            None,
            None,
        ),
        (
            "room/lobby",
            "room.member_joined",
            json!({"member": "ada"}),
            None,
            None,
        ),
        (
            "room/lobby",
            "room.member_left",
            json!({"member": "bob"}),
            None,
            None,
        ),
        (
            "room/lobby",
            "room.message_posted",
            json!({"message_id": "m1", "author": "ada", "body": "hello, wörld 🦀"}),
            Some("conv-1"),
            None,
        ),
        (
            "room/lobby",
            "room.message_edited",
            json!({"message_id": "m1", "body": "hello"}),
            None,
            None,
        ),
        (
            "room/lobby",
            "room.message_deleted",
            json!({"message_id": "m1"}),
            None,
            None,
        ),
        (
            "room/lobby",
            "room.archived",
            json!({"reason": "quiet"}),
            None,
            None,
        ),
        (
            "job/j1",
            "job.queued",
            json!({"kind": "pipeline.train", "input": "{\"epochs\":3}"}),
            None,
            None,
        ),
        (
            "job/j1",
            "job.claimed",
            json!({"worker": "w1", "lease_expires_at_ms": 1_700_000_030_000u64}),
            None,
            None,
        ),
        (
            "job/j1",
            "job.heartbeat",
            json!({"worker": "w1", "lease_expires_at_ms": 1_700_000_060_000u64}),
            None,
            None,
        ),
        (
            "job/j1",
            "job.progress",
            json!({"stage": "train", "percent": 40, "done": 4, "total": 10, "message": "epoch 2"}),
            None,
            None,
        ),
        (
            "job/j1",
            "job.succeeded",
            json!({"result": "models/j1"}),
            None,
            None,
        ),
        (
            "job/j2",
            "job.failed",
            json!({"error": "out of memory", "retryable": true}),
            None,
            None,
        ),
        (
            "job/j3",
            "job.cancelled",
            json!({"reason": null}),
            None,
            None,
        ),
        (
            "job/j4",
            "job.lease_expired",
            json!({"worker": "w2"}),
            None,
            None,
        ),
    ]
}

/// `job.progress` v1 as the first version wrote it: no `message`.
#[derive(Serialize)]
struct JobProgressV1 {
    stage: Option<String>,
    percent: Option<u8>,
    done: Option<u64>,
    total: Option<u64>,
}

#[test]
fn generate_missing_fixtures() {
    if std::env::var_os("GENERATE_FIXTURES").is_none_or(|value| value != "1") {
        return;
    }
    let dir = fixtures_dir();
    fs::create_dir_all(&dir).expect("create fixtures dir");
    const TIMESTAMP_MS: u64 = 1_700_000_000_000;
    for (index, (stream, event_type, data, correlation, causation)) in
        samples().into_iter().enumerate()
    {
        let event = BuiltinEvent::from_json(event_type, data.clone()).expect("valid sample");
        let expected = Expected {
            stream: stream.to_owned(),
            stream_version: index as u64,
            timestamp_ms: TIMESTAMP_MS + index as u64,
            event_type: event_type.to_owned(),
            schema_version: event.schema_version(),
            codec: logbook_projection::CODEC_BINCODE2,
            correlation_id: correlation.map(str::to_owned),
            causation_id: causation.map(str::to_owned),
            data,
        };
        let bytes = build_envelope(&expected, event).encode();
        write_if_missing(&dir, event_type, &bytes, &expected);
    }

    let v1 = JobProgressV1 {
        stage: Some("download".into()),
        percent: Some(25),
        done: Some(1),
        total: Some(4),
    };
    let payload = codec::encode(&v1).expect("encode v1");
    let data = EventData::new("job.progress", 1, payload).expect("data");
    let stream = StreamId::new("job/j0").expect("stream");
    let bytes = Envelope::new(stream, 2, TIMESTAMP_MS, data).encode();
    let expected = Expected {
        stream: "job/j0".into(),
        stream_version: 2,
        timestamp_ms: TIMESTAMP_MS,
        event_type: "job.progress".into(),
        schema_version: 1,
        codec: logbook_projection::CODEC_BINCODE2,
        correlation_id: None,
        causation_id: None,
        data: json!({"stage": "download", "percent": 25, "done": 1, "total": 4, "message": null}),
    };
    write_if_missing(&dir, "job.progress.v1", &bytes, &expected);
}

fn write_if_missing(dir: &Path, name: &str, bytes: &[u8], expected: &Expected) {
    let bin = dir.join(format!("{name}.bin"));
    if bin.exists() {
        return;
    }
    let mut json = serde_json::to_string_pretty(expected).expect("JSON");
    json.push('\n');
    fs::write(dir.join(format!("{name}.json")), json).expect("write .json");
    fs::write(bin, bytes).expect("write .bin");
}
