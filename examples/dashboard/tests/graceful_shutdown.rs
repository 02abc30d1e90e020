//! SIGTERM and Ctrl-C (SIGINT): the service stops accepting, ends its event streams, stops its
//! job tasks, flushes and closes the log, and exits 0; the log then reopens cleanly with every
//! event appended before the signal.

mod common;

use common::{Server, http, job, wait_until};
use logbook::{BuiltinLog, HistoryRequest, LogbookOptions};
use serde_json::json;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(90);

fn stop_with(signal: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path(), "127.0.0.1:0");
    let address = server.address.clone();
    for n in 0..3 {
        let message = json!({"author": "ada", "body": format!("message {n}")});
        let (status, body) = http(
            &address,
            "POST",
            "/api/rooms/lobby/messages",
            Some(&message),
        );
        assert_eq!(status, 201, "{body}");
    }
    let start = json!({"job_id": "busy", "steps": 5000, "step_ms": 20});
    let (status, body) = http(&address, "POST", "/api/jobs", Some(&start));
    assert_eq!(status, 201, "{body}");
    wait_until("the job to make progress", WAIT, || {
        job(&address, "busy").filter(|job| job["done"].as_u64() >= Some(2))
    });
    // An open event stream must not hold the shutdown up.
    let mut stream = TcpStream::connect(&address).expect("connect");
    let request = format!("GET /api/events?from=1 HTTP/1.1\r\nHost: {address}\r\n\r\n");
    stream.write_all(request.as_bytes()).expect("send");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).expect("status line");
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    let (_, health) = http(&address, "GET", "/health", None);
    let durable_before = health["durable_position"]
        .as_u64()
        .expect("durable_position");

    let status = server.signal_and_wait(signal, WAIT);
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIG{signal}: {status}"
    );

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let (log, report) = BuiltinLog::open(dir.path(), LogbookOptions::default())
            .await
            .expect("the log reopens after a graceful shutdown");
        assert!(
            report.log.wal.tail_cut.is_none(),
            "a clean close leaves no torn tail"
        );
        let stats = log.log().stats();
        assert!(stats.durable_position >= durable_before, "{stats:?}");
        let page = log
            .room_history("lobby", HistoryRequest::newest(10))
            .await
            .expect("history");
        let bodies: Vec<&str> = page.messages.iter().map(|m| m.body.as_str()).collect();
        assert_eq!(bodies, ["message 2", "message 1", "message 0"]);
        // The job was stopped, not failed: still claimed, with its progress.
        let interrupted = report.interrupted.jobs;
        assert_eq!(interrupted.len(), 1, "{interrupted:?}");
        assert_eq!(interrupted[0].job_id, "busy");
        assert!(interrupted[0].progress.as_ref().and_then(|p| p.done) >= Some(2));
        log.close().await.expect("close");
    });
}

#[test]
fn sigterm_flushes_closes_and_exits_zero() {
    stop_with("TERM");
}

#[test]
fn ctrl_c_flushes_closes_and_exits_zero() {
    stop_with("INT");
}
