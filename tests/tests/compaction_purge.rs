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

/// A file's bytes; empty when it was removed since it was listed (background compaction may
/// remove a segment or snapshot between the listing and the read: a file that is gone holds
/// nothing). Any other error fails the test.
fn read_unless_removed(path: &Path) -> Vec<u8> {
    match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(error) => panic!("{}: {error}", path.display()),
    }
}

fn files_containing(root: &Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if read_unless_removed(&path)
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

async fn fill(log: &BuiltinLog, rooms: &[&StreamId], messages: usize, marker: &str) {
    for room in rooms {
        log.execute(
            room,
            event("room.created", json!({"name": room.to_string()})),
        )
        .await
        .unwrap();
    }
    for index in 0..messages {
        for room in rooms {
            post(
                log,
                room,
                &format!("m{index}"),
                &format!("{marker} {index}"),
            )
            .await;
        }
    }
}

/// Incremental compaction: once everything dead is gone, compacting again reads no segment,
/// rewrites none and does not seal the active segment; a new delete makes it work again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compaction_with_nothing_new_reads_and_writes_no_segment() {
    let storage = logbook_wal::MemoryStorage::new();
    let mut options = test_options();
    options.wal.sync_policy = logbook_wal::SyncPolicy::Never;
    let (log, _) = BuiltinLog::open_with(
        Arc::new(storage.clone()),
        Path::new("/log"),
        options,
        Projections::new(),
    )
    .await
    .unwrap();
    let (gone, stays) = (
        StreamId::room("gone").unwrap(),
        StreamId::room("stays").unwrap(),
    );
    fill(&log, &[&gone, &stays], 400, "padding padding padding").await;
    log.log()
        .delete_stream(&gone, ExpectedVersion::Any)
        .await
        .unwrap();
    let first = log.log().compact().await.unwrap();
    assert!(first.records_dropped >= 401, "{first:?}");
    let segments = log.log().stats().backend.embedded().unwrap().segments;
    let read_before = storage.read_bytes();
    let second = log.log().compact().await.unwrap();
    assert_eq!(second.records_dropped, 0);
    assert!(second.segments.is_empty(), "{second:?}");
    assert_eq!(
        log.log().stats().backend.embedded().unwrap().segments,
        segments,
        "nothing died since the last seal: the active segment stays"
    );
    let read = storage.read_bytes() - read_before;
    assert!(
        read < 64 * 1024,
        "the second compaction read {read} bytes: it re-read sealed segments"
    );
    // A new delete: the next compaction works again, on what the delete made dead.
    let more = StreamId::room("more").unwrap();
    fill(&log, &[&more], 50, "more padding").await;
    log.log()
        .delete_stream(&more, ExpectedVersion::Any)
        .await
        .unwrap();
    let third = log.log().compact().await.unwrap();
    assert_eq!(third.records_dropped, 51, "{third:?}");
    let page = log
        .room_history("stays", HistoryRequest::newest(500))
        .await
        .unwrap();
    assert_eq!(page.messages.len(), 400);
    log.close().await.unwrap();
}

/// Compaction runs in the background on its own (`CompactionPolicy::every`): a deleted room's
/// bytes disappear from every file without a `compact()` call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_compaction_purges_without_a_call() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = test_options();
    options.compaction.every = std::time::Duration::from_millis(100);
    let storage = Arc::new(logbook_wal::FileStorage::new());
    let (log, _) = BuiltinLog::open_with(storage, dir.path(), options, Projections::new())
        .await
        .unwrap();
    let marker = "BACKGROUND-MARKER-a41c77";
    let secret = StreamId::room("secret").unwrap();
    let keep = StreamId::room("keep").unwrap();
    fill(&log, &[&secret], 30, marker).await;
    fill(&log, &[&keep], 30, "kept").await;
    log.log()
        .delete_stream(&secret, ExpectedVersion::Any)
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let holding = files_containing(dir.path(), marker.as_bytes());
        if holding.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "background compaction did not purge the deleted room: {holding:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let page = log
        .room_history("keep", HistoryRequest::newest(50))
        .await
        .unwrap();
    assert_eq!(page.messages.len(), 30);
    log.close().await.unwrap();
}

/// A session reset that hides a room's latest message: the projections forget its body (it
/// was copied into `Room::last_message`), so after compaction no file holds it, snapshots
/// included; the room itself stays usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_room_keeps_no_copy_of_its_hidden_last_message() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path()).await;
    let marker = "LAST-MESSAGE-MARKER-93be01";
    let session = StreamId::room("session").unwrap();
    log.execute(&session, event("room.created", json!({"name": "session"})))
        .await
        .unwrap();
    for index in 0..5 {
        post(
            &log,
            &session,
            &format!("m{index}"),
            &format!("{marker} {index}"),
        )
        .await;
    }
    let head = log.log().stream_head(&session).unwrap().0;
    log.log().truncate_stream(&session, head + 1).await.unwrap();
    let room = log.rooms().read().room("session").unwrap().clone();
    assert_eq!(
        room.last_message, None,
        "the hidden latest message is forgotten"
    );
    log.log().snapshot().await.unwrap();
    log.log().compact().await.unwrap();
    assert_eq!(
        files_containing(dir.path(), marker.as_bytes()),
        Vec::<std::path::PathBuf>::new()
    );
    post(&log, &session, "fresh", "a new conversation").await;
    let page = log
        .room_history("session", HistoryRequest::newest(10))
        .await
        .unwrap();
    assert_eq!(page.messages.len(), 1);
    log.close().await.unwrap();
    let log = open(dir.path()).await;
    let room = log.rooms().read().room("session").unwrap().clone();
    assert_eq!(room.last_message.unwrap().message_id, "fresh");
    log.close().await.unwrap();
}
