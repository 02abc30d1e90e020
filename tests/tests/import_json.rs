//! `logbook::import` (issue 16): each format of `tests/fixtures/import/` becomes the built-in
//! model's jobs, room and runs with their original authors and times, on both backends;
//! importing the same file twice adds nothing; a file bad late in its array leaves nothing;
//! errors name the JSON path and line; a cut attempt is completed by running it again; a stream
//! the file did not write is a conflict.

use logbook::builtin_projections::JobStatus;
use logbook::import::{self, ImportFormat, ImportReport, original_time_ms};
use logbook::model::{RunKind, RunStatus};
use logbook::{BuiltinLog, Direction, Error, ExpectedVersion, LogbookOptions, Order, StreamId};
use logbook_tests::backends::Home;
use logbook_tests::backends::import_fixture as fixture;
use logbook_tests::backends::small_stream;
use logbook_tests::on_both_backends;

async fn open(home: &Home) -> BuiltinLog {
    home.open_builtin(LogbookOptions::default()).await
}

async fn positions(log: &BuiltinLog) -> Vec<u64> {
    let records = log.log().read_all_raw(0, 100_000).await.expect("read");
    records.iter().map(|raw| raw.position).collect()
}

async fn import(log: &BuiltinLog, format: ImportFormat, name: &str) -> ImportReport {
    import::import_file(log, format, &fixture(name))
        .await
        .unwrap_or_else(|error| panic!("import {name}: {error}"))
}

/// The original times of a stream's events, in version order.
async fn original_times(log: &BuiltinLog, stream: &str) -> Vec<Option<u64>> {
    let events = small_stream(log, stream).await;
    events
        .iter()
        .map(|event| original_time_ms(event.causation_id.as_deref()))
        .collect()
}

async fn every_format_round_trips_and_imports_once(home: Home) {
    let log = open(&home).await;

    let tasks = import(&log, ImportFormat::Tasks, "tasks.json").await;
    assert!(!tasks.already_imported);
    assert_eq!((tasks.elements, tasks.entities, tasks.events), (5, 5, 11));
    assert_eq!(tasks.events_written, 11);
    {
        let jobs = log.jobs().read();
        let done = jobs.job("t-100").expect("t-100");
        assert_eq!(done.status, JobStatus::Succeeded);
        assert_eq!(done.kind, "pipeline.train");
        assert_eq!(done.result.as_deref(), Some("s3://models/small-v3"));
        let input: serde_json::Value = serde_json::from_str(&done.input).expect("input JSON");
        assert_eq!(input["run_id"], "run-7");
        assert_eq!(input["delivery"]["channel"], "slack");
        assert_eq!(input["created_at_ms"], 1_733_000_000_000u64);
        let running = jobs.job("t-101").expect("t-101");
        assert_eq!(running.status, JobStatus::Claimed);
        let claim = running.claim.as_ref().expect("claim");
        assert_eq!(
            (claim.worker.as_str(), claim.lease_expires_at_ms),
            ("gpu-2", 1_733_000_270_000)
        );
        let failed = jobs.job("t-102").expect("t-102");
        assert_eq!(failed.status, JobStatus::Failed);
        assert_eq!(failed.error.as_deref(), Some("out of memory"));
        assert!(failed.retryable);
        assert_eq!(jobs.job("t-103").expect("t-103").status, JobStatus::Queued);
        let cancelled = jobs.job("t-104").expect("t-104");
        assert_eq!(cancelled.status, JobStatus::Cancelled);
        assert_eq!(
            cancelled.cancel_reason.as_deref(),
            Some("superseded by t-103")
        );
    }
    assert_eq!(
        original_times(&log, "job/t-100").await,
        vec![
            Some(1_733_000_000_000),
            Some(1_733_000_060_000),
            Some(1_733_000_120_000)
        ]
    );

    let room = import(&log, ImportFormat::Room, "room.json").await;
    assert_eq!((room.elements, room.entities, room.events), (4, 1, 8));
    {
        let rooms = log.rooms().read();
        let research = rooms.room("research").expect("room");
        assert_eq!(research.name, "Research");
        assert_eq!(research.topic.as_deref(), Some("campaign planning"));
        assert_eq!(research.created_by.as_deref(), Some("ada"));
        assert_eq!(research.members.len(), 3);
        assert_eq!(research.messages_posted, 4);
    }
    let request = logbook::HistoryRequest {
        order: Order::OldestFirst,
        cursor: None,
        limit: 10,
    };
    let history = log
        .room_history("research", request)
        .await
        .expect("history");
    let messages: Vec<(&str, &str, &str)> = history
        .messages
        .iter()
        .map(|m| (m.message_id.as_str(), m.author.as_str(), m.body.as_str()))
        .collect();
    assert_eq!(
        messages,
        vec![
            ("m1", "ada", "Kickoff: which datasets?"),
            ("m2", "grace", "The cleaned 2024 set."),
            ("m3", "linus", "Agreed. Starting the run."),
            ("m4", "ada", "Thanks \u{2014} ping me when it ends."),
        ]
    );
    let times = original_times(&log, "room/research").await;
    // room.created, three members, then the messages at their own times.
    assert_eq!(times.len(), 8);
    assert_eq!(times[0], Some(1_733_000_000_000));
    assert_eq!(
        times[4..],
        [
            Some(1_733_000_001_000),
            Some(1_733_000_002_000),
            Some(1_733_000_003_000),
            Some(1_733_000_004_000)
        ]
    );

    let runs = import(&log, ImportFormat::Runs, "runs.json").await;
    assert_eq!((runs.elements, runs.entities, runs.events), (3, 3, 10));
    {
        let ledger = log.runs().read();
        let root = ledger.run("r-root").expect("r-root");
        assert_eq!(root.kind, RunKind::BackgroundAgent);
        assert_eq!(root.status, RunStatus::Completed);
        assert_eq!(root.summary.as_deref(), Some("plan written"));
        assert_eq!(root.telemetry.tokens_in, 1200);
        assert_eq!(root.telemetry.cost_estimate_micros, 4200);
        assert_eq!(root.telemetry.tool_calls.get("search"), Some(&3));
        let child = ledger.run("r-child").expect("r-child");
        assert_eq!(child.parent_run_id.as_deref(), Some("r-root"));
        assert_eq!(child.status, RunStatus::Failed);
        assert_eq!(child.error.as_deref(), Some("provider timeout"));
        assert_eq!(child.telemetry.last_error.as_deref(), Some("timeout"));
        let paused = ledger.run("r-paused").expect("r-paused");
        assert_eq!(paused.status, RunStatus::Paused);
        let children: Vec<&str> = ledger
            .children("r-root")
            .iter()
            .map(|run| run.run_id.as_str())
            .collect();
        assert_eq!(children.len(), 2, "{children:?}");
    }
    let run_events = log
        .run_events("r-root", Order::OldestFirst, None, 10)
        .await
        .expect("run events");
    assert_eq!(run_events.0.len(), 2);
    assert_eq!(
        original_times(&log, "run/r-root").await[1],
        Some(1_733_000_010_000)
    );

    // A second import of each file adds nothing: same positions, "already imported".
    let before = positions(&log).await;
    for (format, name) in [
        (ImportFormat::Tasks, "tasks.json"),
        (ImportFormat::Room, "room.json"),
        (ImportFormat::Runs, "runs.json"),
    ] {
        let again = import(&log, format, name).await;
        assert!(again.already_imported, "{name}");
        assert_eq!(again.events_written, 0);
        assert_eq!(again.marker_position, None);
    }
    assert_eq!(positions(&log).await, before);
    // The markers are ignored by the projections: three jobs' worth of nothing extra.
    assert_eq!(log.jobs().read().ignored_events(), 0);
    assert_eq!(log.runs().read().ignored_events(), 0);
    log.close().await.expect("close");
}

on_both_backends!(
    every_format_round_trips_and_imports_once,
    every_format_round_trips_and_imports_once
);

/// A room file of `count` messages, `bad` replacing message `at` (JSON text of one element).
fn room_file(count: usize, at: usize, bad: &str) -> String {
    let mut text = String::from(
        "{\n\"id\": \"big\",\n\"name\": \"Big\",\n\"created_at_ms\": 1,\n\"messages\": [\n",
    );
    for index in 0..count {
        if index > 0 {
            text.push_str(",\n");
        }
        if index == at {
            text.push_str(bad);
        } else {
            text.push_str(&format!(
                "{{\"id\": \"m{index}\", \"author\": \"a{}\", \"body\": \"hello {index}\", \"timestamp_ms\": {}}}",
                index % 7,
                1000 + index
            ));
        }
    }
    text.push_str("\n]\n}\n");
    text
}

async fn import_text(
    log: &BuiltinLog,
    format: ImportFormat,
    text: String,
) -> Result<ImportReport, Error> {
    import::import_json(log, format, std::io::Cursor::new(text.into_bytes())).await
}

fn import_error(result: Result<ImportReport, Error>) -> (String, u64, String) {
    match result {
        Err(Error::Import {
            path, line, reason, ..
        }) => (path, line, reason),
        other => panic!("expected an import error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_bad_late_in_its_array_leaves_nothing_and_names_the_path_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = BuiltinLog::open(dir.path(), LogbookOptions::default())
        .await
        .unwrap();
    // 2,500 messages: more than two batches would have been written before the bad one.
    let duplicate = r#"{"id": "m7", "author": "ada", "body": "again", "timestamp_ms": 5}"#;
    let (path, line, reason) =
        import_error(import_text(&log, ImportFormat::Room, room_file(2500, 2400, duplicate)).await);
    assert_eq!(path, "$.messages[2400].id");
    assert_eq!(line, 2406, "the element's own line");
    assert!(reason.contains("duplicate message id \"m7\""), "{reason}");
    assert!(reason.contains("messages[7]"), "{reason}");

    let missing = r#"{"id": "x", "body": "no author", "timestamp_ms": 5}"#;
    let (path, line, reason) =
        import_error(import_text(&log, ImportFormat::Room, room_file(2500, 2000, missing)).await);
    assert_eq!(path, "$.messages[2000].author");
    assert_eq!(line, 2006);
    assert!(reason.contains("missing field `author`"), "{reason}");

    let wrong_type = r#"{"id": "x", "author": 5, "body": "b", "timestamp_ms": 5}"#;
    let (path, _, reason) =
        import_error(import_text(&log, ImportFormat::Room, room_file(100, 50, wrong_type)).await);
    assert_eq!(path, "$.messages[50].author");
    assert!(reason.contains("invalid type"), "{reason}");

    let malformed = r#"{"id": "x", "author": "a", "body": "b" "timestamp_ms": 5}"#;
    let (path, line, reason) =
        import_error(import_text(&log, ImportFormat::Room, room_file(2500, 2300, malformed)).await);
    assert_eq!(path, "$.messages[2300]");
    assert_eq!(line, 2306);
    assert!(reason.contains("expected"), "{reason}");

    let empty_author = r#"{"id": "x", "author": "", "body": "b", "timestamp_ms": 5}"#;
    let (path, _, reason) =
        import_error(import_text(&log, ImportFormat::Room, room_file(10, 9, empty_author)).await);
    assert_eq!(path, "$.messages[9]");
    assert!(reason.contains("author"), "{reason}");

    let mut truncated = room_file(
        2500,
        0,
        r#"{"id":"first","author":"a","body":"b","timestamp_ms":1}"#,
    );
    truncated.truncate(truncated.len() - 40);
    let (path, _, reason) = import_error(import_text(&log, ImportFormat::Room, truncated).await);
    assert!(path.starts_with("$.messages["), "{path}");
    assert!(reason.contains("EOF"), "{reason}");

    let tasks = r#"{"tasks": [{"id": "a", "status": "queued", "created_at_ms": 1}, {"id": "a", "status": "queued", "created_at_ms": 2}]}"#;
    let (path, _, reason) =
        import_error(import_text(&log, ImportFormat::Tasks, tasks.to_owned()).await);
    assert_eq!(path, "$.tasks[1].id");
    assert!(reason.contains("duplicate task id"), "{reason}");

    let unknown_status = r#"{"tasks": [{"id": "a", "status": "exploded", "created_at_ms": 1}]}"#;
    let (path, _, reason) =
        import_error(import_text(&log, ImportFormat::Tasks, unknown_status.to_owned()).await);
    assert_eq!(path, "$.tasks[0].status");
    assert!(reason.contains("unknown variant"), "{reason}");

    let no_name = r#"{"id": "r", "created_at_ms": 1, "messages": []}"#;
    let (path, _, reason) =
        import_error(import_text(&log, ImportFormat::Room, no_name.to_owned()).await);
    assert_eq!((path.as_str(), reason.as_str()), ("$.name", "missing"));

    let runs = r#"{"runs": [{"id": "r1", "kind": "nope", "agent_id": "a", "status": "running", "started_at_ms": 1}]}"#;
    let (path, _, _) = import_error(import_text(&log, ImportFormat::Runs, runs.to_owned()).await);
    assert_eq!(path, "$.runs[0].kind");

    assert!(positions(&log).await.is_empty(), "nothing was written");
    log.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_element_over_the_limit_is_refused_before_it_is_read_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = BuiltinLog::open(dir.path(), LogbookOptions::default())
        .await
        .unwrap();
    let body = "x".repeat(import::ELEMENT_BYTES_MAX as usize + 1024);
    let huge = format!(r#"{{"id": "big", "author": "a", "body": "{body}", "timestamp_ms": 1}}"#);
    let (path, line, reason) =
        import_error(import_text(&log, ImportFormat::Room, room_file(10, 3, &huge)).await);
    assert_eq!(path, "$.messages[3]");
    assert_eq!(line, 9);
    assert!(reason.contains("larger than"), "{reason}");
    assert!(positions(&log).await.is_empty());
    log.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_attempt_is_completed_at_the_same_versions_and_a_foreign_stream_conflicts() {
    let text = room_file(2500, usize::MAX, "");
    // The whole import into one log, the reference.
    let reference_dir = tempfile::tempdir().unwrap();
    let (reference, _) = BuiltinLog::open(reference_dir.path(), LogbookOptions::default())
        .await
        .unwrap();
    let full = import_text(&reference, ImportFormat::Room, text.clone())
        .await
        .unwrap();
    assert_eq!(full.events, 2501);
    let room = StreamId::room("big").unwrap();
    let all = reference
        .log()
        .read_stream(&room, 0, Direction::Forward, 5000)
        .await
        .unwrap();
    assert_eq!(all.len(), 2501);

    // A cut attempt: the first 1,200 of those events (the same correlation and causation
    // ids), no marker.
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = BuiltinLog::open(dir.path(), LogbookOptions::default())
        .await
        .unwrap();
    let mut expected = ExpectedVersion::NoStream;
    for chunk in all[..1200].chunks(500) {
        let events = chunk
            .iter()
            .map(|recorded| {
                let mut event = logbook::NewEvent::new(recorded.event.clone());
                event.correlation_id.clone_from(&recorded.correlation_id);
                event.causation_id.clone_from(&recorded.causation_id);
                event
            })
            .collect();
        let written = log.log().append(&room, expected, events).await.unwrap();
        expected = ExpectedVersion::Exact(written.version);
    }
    let report = import_text(&log, ImportFormat::Room, text.clone())
        .await
        .unwrap();
    assert_eq!(report.resumed_streams, 1);
    assert_eq!(report.events_written, 2501 - 1200);
    let completed = log
        .log()
        .read_stream(&room, 0, Direction::Forward, 5000)
        .await
        .unwrap();
    assert_eq!(completed.len(), all.len());
    for (ours, theirs) in completed.iter().zip(&all) {
        assert_eq!(ours.version, theirs.version);
        assert_eq!(ours.event, theirs.event);
        assert_eq!(ours.causation_id, theirs.causation_id);
    }
    assert_eq!(
        log.rooms().read().room("big").unwrap().messages_posted,
        2500
    );
    log.close().await.unwrap();

    // A cut attempt the service appended to afterwards: not completed over its events.
    let taken_dir = tempfile::tempdir().unwrap();
    let (taken, _) = BuiltinLog::open(taken_dir.path(), LogbookOptions::default())
        .await
        .unwrap();
    let first: Vec<_> = all[..10]
        .iter()
        .map(|recorded| {
            let mut event = logbook::NewEvent::new(recorded.event.clone());
            event.correlation_id.clone_from(&recorded.correlation_id);
            event
        })
        .collect();
    taken
        .log()
        .append(&room, ExpectedVersion::NoStream, first)
        .await
        .unwrap();
    let posted = logbook::BuiltinEvent::from_json(
        "room.message_posted",
        serde_json::json!({"message_id": "later", "author": "svc", "body": "mine"}),
    )
    .unwrap();
    taken.execute(&room, posted).await.unwrap();
    let before = positions(&taken).await;
    let refused = import_text(&taken, ImportFormat::Room, text.clone()).await;
    assert!(
        matches!(refused, Err(Error::ImportConflict { .. })),
        "{refused:?}"
    );
    assert_eq!(positions(&taken).await, before);
    taken.close().await.unwrap();

    // A room of the same id that this file did not write: a conflict, nothing written.
    let other_dir = tempfile::tempdir().unwrap();
    let (other, _) = BuiltinLog::open(other_dir.path(), LogbookOptions::default())
        .await
        .unwrap();
    let created =
        logbook::BuiltinEvent::from_json("room.created", serde_json::json!({"name": "Mine"}))
            .unwrap();
    other.execute(&room, created).await.unwrap();
    let before = positions(&other).await;
    match import_text(&other, ImportFormat::Room, text).await {
        Err(Error::ImportConflict { stream, reason }) => {
            assert_eq!(stream, "room/big");
            assert!(reason.contains("did not write"), "{reason}");
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(positions(&other).await, before);
    other.close().await.unwrap();
    reference.close().await.unwrap();
}
