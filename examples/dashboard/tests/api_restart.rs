//! The JSON endpoints, `/health` and the SSE resume across a SIGKILL and a restart, driven
//! over HTTP without a browser: a job running when the process died is interrupted (not
//! failed) with its progress, resumes from it, and the event stream resumes after the
//! `Last-Event-ID` it is given with no gap and no repeat.

mod common;

use common::{Server, http, job, sse_ids, wait_until};
use serde_json::json;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(90);

#[test]
fn a_killed_job_is_interrupted_and_resumes_and_events_resume_after_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path(), "127.0.0.1:0");
    let address = server.address.clone();

    let (status, body) = http(
        &address,
        "POST",
        "/api/rooms/lobby/messages",
        Some(&json!({"author": "ada", "body": "before the crash"})),
    );
    assert_eq!(status, 201, "{body}");
    let (status, body) = http(
        &address,
        "POST",
        "/api/jobs",
        Some(&json!({"job_id": "count-1", "steps": 400, "step_ms": 50})),
    );
    assert_eq!(
        (status, &body["job_id"]),
        (201, &json!("count-1")),
        "{body}"
    );
    let running = wait_until("the job to report 3 steps", WAIT, || {
        job(&address, "count-1").filter(|job| job["done"].as_u64() >= Some(3))
    });
    assert_eq!(running["state"], "running");

    server.kill_hard();
    let server = Server::start(dir.path(), "127.0.0.1:0");
    let address = server.address.clone();

    // Interrupted, not failed, with the progress that was durable before the kill.
    let interrupted = job(&address, "count-1").expect("the job after the restart");
    assert_eq!(interrupted["state"], "interrupted", "{interrupted}");
    assert_eq!(interrupted["status"], "claimed", "{interrupted}");
    let done_before = interrupted["done"].as_u64().expect("done");
    assert!(done_before >= 3, "{interrupted}");
    let (status, health) = http(&address, "GET", "/health", None);
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["status"], "ok");
    assert_eq!(health["consumers"], json!([]));
    assert_eq!(
        health["interrupted"]["jobs"][0]["job_id"], "count-1",
        "{health}"
    );
    assert_eq!(
        health["interrupted"]["jobs"][0]["done"].as_u64(),
        Some(done_before)
    );
    assert_eq!(
        health["interrupted"]["runs"][0]["run_id"], "count-1",
        "{health}"
    );
    let durable = health["durable_position"]
        .as_u64()
        .expect("durable_position");
    assert_eq!(health["applied_position"].as_u64(), Some(durable));

    // The stream resumes after the id the client last saw: the next ones, in order.
    let last_seen = durable - 3;
    let header = format!("Last-Event-ID: {last_seen}\r\n");
    let ids = sse_ids(&address, "", &header, 3);
    assert_eq!(ids, vec![last_seen + 1, last_seen + 2, last_seen + 3]);
    // `?from=` starts a first connection; Last-Event-ID wins over it on a reconnect.
    assert_eq!(sse_ids(&address, "?from=1", "", 2), vec![1, 2]);
    assert_eq!(
        sse_ids(&address, "?from=1", &header, 1),
        vec![last_seen + 1]
    );

    // Resume continues from the last durable progress, and the job then finishes.
    let (status, body) = http(&address, "POST", "/api/jobs/count-1/resume", None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["resumed_from"].as_u64(), Some(done_before));
    let (status, body) = http(&address, "POST", "/api/jobs/count-1/resume", None);
    assert_eq!(status, 409, "a second resume while it runs: {body}");
    let resumed = job(&address, "count-1").expect("job");
    assert_eq!(resumed["state"], "running", "{resumed}");
    assert_eq!(resumed["attempts"].as_u64(), Some(2), "{resumed}");
    // The first progress after the resume is the step after the last durable one, not step 1.
    let next = wait_until("the resumed job to report a step", WAIT, || {
        job(&address, "count-1")
            .and_then(|job| job["done"].as_u64())
            .filter(|done| *done != done_before)
    });
    assert!(
        next > done_before,
        "resumed at step {next}, was at {done_before}"
    );

    // A message posted after the restart reads back with the one from before, newest first.
    let (status, body) = http(
        &address,
        "POST",
        "/api/rooms/lobby/messages",
        Some(&json!({"author": "bob", "body": "after the restart"})),
    );
    assert_eq!(status, 201, "{body}");
    let (status, page) = http(&address, "GET", "/api/rooms/lobby/messages?limit=1", None);
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["messages"][0]["body"], "after the restart");
    let before = page["next"].as_u64().expect("an older page");
    let (_, older) = http(
        &address,
        "GET",
        &format!("/api/rooms/lobby/messages?before={before}"),
        None,
    );
    assert_eq!(older["messages"][0]["body"], "before the crash", "{older}");
    assert_eq!(older["next"], serde_json::Value::Null);
}

#[test]
fn bad_requests_name_the_field_and_the_cause() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path(), "127.0.0.1:0");
    let address = &server.address;
    let (status, body) = http(address, "POST", "/api/jobs", Some(&json!({"steps": 0})));
    assert_eq!(status, 400, "{body}");
    let error = body["error"].as_str().expect("error text");
    assert!(
        error.contains("body.steps") && error.contains("is 0"),
        "{error}"
    );

    let (status, body) = http(address, "POST", "/api/jobs/nope/resume", None);
    assert_eq!(status, 404, "{body}");

    let (status, body) = http(
        address,
        "POST",
        "/api/jobs",
        Some(&json!({"job_id": "j", "steps": 2, "step_ms": 10})),
    );
    assert_eq!(status, 201, "{body}");
    let (status, body) = http(address, "POST", "/api/jobs", Some(&json!({"job_id": "j"})));
    assert_eq!(status, 409, "a job id taken: {body}");
    let (status, body) = http(
        address,
        "POST",
        "/api/jobs/j/progress",
        Some(&json!({"percent": 101})),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("percent")),
        "{body}"
    );

    let (status, body) = http(address, "GET", "/api/rooms/nowhere/messages", None);
    assert_eq!(status, 404, "{body}");
    let (status, body) = http(
        address,
        "POST",
        "/api/rooms/lobby/messages",
        Some(&json!({"author": "ada"})),
    );
    assert_eq!(status, 400, "missing body field: {body}");

    let mut stream = std::net::TcpStream::connect(address).expect("connect");
    std::io::Write::write_all(
        &mut stream,
        b"GET /api/events HTTP/1.1\r\nHost: x\r\nLast-Event-ID: soon\r\nConnection: close\r\n\r\n",
    )
    .expect("send");
    let mut response = String::new();
    std::io::Read::read_to_string(&mut stream, &mut response).expect("read");
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    assert!(
        response.contains("Last-Event-ID") && response.contains("soon"),
        "{response}"
    );
}

#[test]
fn jobs_running_at_once_are_limited() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path(), "127.0.0.1:0");
    let address = &server.address;
    let long = json!({"steps": 1000, "step_ms": 60_000});
    for n in 0..logbook_dashboard::JOBS_RUNNING_MAX {
        let (status, body) = http(address, "POST", "/api/jobs", Some(&long));
        assert_eq!(status, 201, "job {n}: {body}");
    }
    let (status, body) = http(address, "POST", "/api/jobs", Some(&long));
    assert_eq!(status, 503, "{body}");
    let error = body["error"].as_str().expect("error text");
    assert!(
        error.contains("jobs running at once") && error.contains("32"),
        "{error}"
    );
    let (_, health) = http(address, "GET", "/health", None);
    let running = health["running_jobs"].as_array().map(Vec::len);
    assert_eq!(
        running,
        Some(logbook_dashboard::JOBS_RUNNING_MAX),
        "{health}"
    );
}

/// A durable consumer of the log (positioned by an operator while the service was down) is
/// listed in `/health` with its checkpointed position and its lag.
#[test]
fn health_lists_the_logs_durable_consumers_with_their_lag() {
    let dir = tempfile::tempdir().expect("temp dir");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let (log, _) = logbook::BuiltinLog::open(dir.path(), logbook::LogbookOptions::default())
            .await
            .expect("open the log before the service");
        create_lobby(&log).await;
        log.log()
            .reset_consumer("mailer", 1)
            .await
            .expect("position a consumer");
        log.close().await.expect("close");
    });
    let server = Server::start(dir.path(), "127.0.0.1:0");
    let (status, health) = http(&server.address, "GET", "/health", None);
    assert_eq!(status, 200, "{health}");
    let consumers = health["consumers"].as_array().expect("consumers");
    assert_eq!(consumers.len(), 1, "{health}");
    assert_eq!(consumers[0]["name"], "mailer", "{health}");
    assert_eq!(consumers[0]["position"].as_u64(), Some(1), "{health}");
    assert_eq!(consumers[0]["acked"], json!(null), "{health}");
    let durable = health["durable_position"].as_u64().expect("durable");
    assert!(durable >= 2, "{health}");
    assert_eq!(
        consumers[0]["lag"].as_u64(),
        Some(0),
        "no user event after its position (its checkpoint is no event): {health}"
    );
    // Every projection is as of the checkpoint it skipped: no lag that never closes.
    assert_eq!(
        health["applied_position"].as_u64(),
        Some(durable),
        "{health}"
    );
}

/// `/health`'s `last_snapshot` is the newest snapshot, also one the engine wrote after open
/// (not only the one the log was opened from), with when it was written.
#[test]
fn health_shows_a_snapshot_taken_after_open() {
    let dir = tempfile::tempdir().expect("temp dir");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let config = logbook_dashboard::Config {
            dir: dir.path().to_path_buf(),
            address: "127.0.0.1:0".to_owned(),
            reconnect_ms: logbook_dashboard::events::RECONNECT_MS_DEFAULT,
        };
        let (app, _stop) = logbook_dashboard::App::open(&config)
            .await
            .expect("open the service's log");
        let before = logbook_dashboard::health::health_json(&app);
        create_lobby(app.log()).await;
        let taken = app.log().log().snapshot().await.expect("snapshot");
        let health = logbook_dashboard::health::health_json(&app);
        let snapshot = &health["last_snapshot"];
        assert_eq!(
            snapshot["position"].as_u64(),
            Some(taken.position),
            "{health}"
        );
        assert!(
            before["last_snapshot"]["position"].as_u64() < Some(taken.position),
            "a newer one than at open: {before}"
        );
        assert_eq!(snapshot["bytes"].as_u64(), Some(taken.bytes), "{health}");
        assert_eq!(
            snapshot["path"].as_str(),
            Some(taken.path.display().to_string().as_str()),
            "{health}"
        );
        assert!(
            snapshot["written_at_ms"].as_u64().is_some_and(|ms| ms > 0),
            "{health}"
        );
        app.log().clone().close().await.expect("close");
    });
}

/// Appends `room.created` for a room `lobby` (a log's first user event).
async fn create_lobby(log: &logbook::BuiltinLog) {
    let room = logbook::StreamId::room("lobby").expect("stream");
    let created =
        logbook::BuiltinEvent::from_json("room.created", json!({"name": "Lobby"})).expect("event");
    log.log()
        .append(
            &room,
            logbook::ExpectedVersion::NoStream,
            vec![created.into()],
        )
        .await
        .expect("append");
}
