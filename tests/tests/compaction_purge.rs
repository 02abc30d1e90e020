//! Compaction: after delete or truncate plus compaction, the bytes of purged events exist in no
//! file under the log directory; every retained record is kept byte for byte at its position;
//! superseded latest-only records are dropped; appends and reads carry on; reopen agrees.

use logbook::{
    BuiltinEvent, BuiltinLog, ExpectedVersion, HistoryRequest, Projections, RawEvent, StreamId,
};
use logbook_tests::test_options;
use serde_json::json;
use std::path::Path;
use std::sync::Arc;

fn event(event_type: &str, data: serde_json::Value) -> BuiltinEvent {
    BuiltinEvent::from_json(event_type, data).unwrap()
}

fn files_containing(root: &Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if std::fs::read(&path)
                .unwrap()
                .windows(needle.len())
                .any(|window| window == needle)
            {
                found.push(path);
            }
        }
    }
    found
}

async fn open(dir: &Path) -> BuiltinLog {
    let storage = Arc::new(logbook_wal::FileStorage::new());
    BuiltinLog::open_with(storage, dir, test_options(), Projections::new())
        .await
        .unwrap()
        .0
}

async fn post(log: &BuiltinLog, room: &StreamId, id: &str, body: &str) {
    let data = json!({"message_id": id, "author": "ada", "body": body});
    log.execute(room, event("room.message_posted", data))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purged_bytes_are_gone_and_retained_records_are_identical() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path()).await;
    let deleted_marker = "DELETED-MARKER-7f3a9c1e";
    let truncated_marker = "TRUNCATED-MARKER-5b2d8e4f";
    let secret = StreamId::room("secret").unwrap();
    let session = StreamId::room("session").unwrap();
    let keep = StreamId::room("keep").unwrap();
    for room in [&secret, &session, &keep] {
        log.execute(
            room,
            event("room.created", json!({"name": room.to_string()})),
        )
        .await
        .unwrap();
    }
    for index in 0..40 {
        post(
            &log,
            &secret,
            &format!("s{index}"),
            &format!("{deleted_marker} {index}"),
        )
        .await;
        post(
            &log,
            &keep,
            &format!("k{index}"),
            &format!("kept message {index}"),
        )
        .await;
        let body = if index < 20 {
            format!("{truncated_marker} {index}")
        } else {
            format!("after reset {index}")
        };
        post(&log, &session, &format!("t{index}"), &body).await;
    }
    let job = StreamId::job("export").unwrap();
    log.execute(
        &job,
        event("job.queued", json!({"kind": "export", "input": "{}"})),
    )
    .await
    .unwrap();
    let now = log.log().now_ms();
    log.execute(
        &job,
        event(
            "job.claimed",
            json!({"worker": "w1", "lease_expires_at_ms": now + 600_000}),
        ),
    )
    .await
    .unwrap();
    for percent in 0..=50u8 {
        let data = json!({"stage": "copy", "percent": percent * 2, "done": percent, "total": 50});
        log.execute(&job, event("job.progress", data))
            .await
            .unwrap();
    }
    log.execute(&job, event("job.succeeded", json!({"result": "s3://out"})))
        .await
        .unwrap();

    log.log()
        .delete_stream(&secret, ExpectedVersion::Any)
        .await
        .unwrap();
    // Version 0 is room.created, t0..t19 are versions 1..=20: hide them all.
    log.log().truncate_stream(&session, 21).await.unwrap();
    let before: Vec<RawEvent> = log.log().read_all_raw(1, usize::MAX).await.unwrap();
    assert!(!files_containing(dir.path(), deleted_marker.as_bytes()).is_empty());

    let report = log.log().compact().await.unwrap();
    assert!(report.records_dropped >= 40 + 20 + 50, "{report:?}");
    assert!(report.bytes_reclaimed > 0);

    // The purge guarantee: no file under the log directory holds a purged event's bytes.
    assert_eq!(
        files_containing(dir.path(), deleted_marker.as_bytes()),
        Vec::<std::path::PathBuf>::new()
    );
    assert_eq!(
        files_containing(dir.path(), truncated_marker.as_bytes()),
        Vec::<std::path::PathBuf>::new()
    );

    // Every retained record is the same, byte for byte, at its original position.
    let after: Vec<RawEvent> = log.log().read_all_raw(1, usize::MAX).await.unwrap();
    let mut kept = before
        .iter()
        .filter(|raw| after.iter().any(|other| other.position == raw.position));
    for raw in &after {
        assert_eq!(
            Some(raw),
            kept.next(),
            "retained record {} changed",
            raw.position
        );
    }
    assert!(after.iter().all(|raw| raw.envelope.stream() != &secret));
    let progress: Vec<&RawEvent> = after
        .iter()
        .filter(|raw| raw.envelope.event_type() == "job.progress")
        .collect();
    assert_eq!(
        progress.len(),
        1,
        "only the newest progress of the finished job stays"
    );

    // Reads and appends carry on; history pages skip nothing that is visible.
    let page = log
        .room_history("keep", HistoryRequest::newest(50))
        .await
        .unwrap();
    assert_eq!(page.messages.len(), 40);
    let page = log
        .room_history("session", HistoryRequest::newest(50))
        .await
        .unwrap();
    let versions: Vec<u64> = page
        .messages
        .iter()
        .map(|message| message.version)
        .collect();
    assert_eq!(versions, (21..=40).rev().collect::<Vec<_>>());
    post(&log, &keep, "k-after", "after compaction").await;
    let live_rooms = log.rooms().read().clone();
    let live_jobs = log.jobs().read().clone();
    log.close().await.unwrap();

    let log = open(dir.path()).await;
    assert_eq!(*log.rooms().read(), live_rooms);
    assert_eq!(*log.jobs().read(), live_jobs);
    let job_events = log
        .log()
        .read_stream(&job, 0, logbook::Direction::Forward, 1000)
        .await
        .unwrap();
    assert!(
        job_events
            .iter()
            .any(|event| event.event_type == "job.succeeded")
    );
    log.close().await.unwrap();
}
