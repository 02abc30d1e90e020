//! Open = newest valid snapshot + replay of the tail; the result equals a full replay, entity by
//! entity; a corrupt snapshot falls back to an older one or to a full replay, never failing open.

use logbook::{
    BuiltinEvent, BuiltinLog, LogbookOptions, MemoryStorage, Projection, Projections, StreamId,
};
use logbook_tests::test_options;
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;

fn event(event_type: &str, data: serde_json::Value) -> BuiltinEvent {
    BuiltinEvent::from_json(event_type, data).unwrap()
}

fn options(every_events: u64) -> LogbookOptions {
    let mut options = test_options();
    options.snapshots.every_events = every_events;
    options
}

async fn write_history(log: &BuiltinLog, rooms: u32, messages: u32) {
    for room in 0..rooms {
        let stream = StreamId::room(&format!("r{room}")).unwrap();
        log.execute(
            &stream,
            event("room.created", json!({"name": format!("Room {room}")})),
        )
        .await
        .unwrap();
        for message in 0..messages {
            let data = json!({"message_id": format!("m{message}"), "author": "ada", "body": format!("hello {message}")});
            log.execute(&stream, event("room.message_posted", data))
                .await
                .unwrap();
        }
    }
    let job = StreamId::job("j1").unwrap();
    log.execute(
        &job,
        event("job.queued", json!({"kind": "export", "input": "{}"})),
    )
    .await
    .unwrap();
}

/// The full state of the built-in projections, as bytes.
fn state(log: &BuiltinLog) -> Vec<Vec<u8>> {
    vec![
        log.runs().read().snapshot().unwrap(),
        log.rooms().read().snapshot().unwrap(),
        log.jobs().read().snapshot().unwrap(),
    ]
}

fn snapshot_files(storage: &MemoryStorage) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = storage
        .files()
        .into_iter()
        .filter(|path| path.extension().is_some_and(|ext| ext == "snap"))
        .collect();
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_plus_tail_equals_full_replay() {
    let storage = Arc::new(MemoryStorage::new());
    let (log, _) = BuiltinLog::open_with(storage.clone(), "/log", options(0), Projections::new())
        .await
        .unwrap();
    write_history(&log, 3, 40).await;
    let info = log.log().snapshot().await.unwrap();
    assert_eq!(info.position, log.log().stats().durable_position);
    // A tail after the snapshot.
    let stream = StreamId::room("r0").unwrap();
    for message in 40..50 {
        let data = json!({"message_id": format!("m{message}"), "author": "bob", "body": "tail"});
        log.execute(&stream, event("room.message_posted", data))
            .await
            .unwrap();
    }
    let live = state(&log);
    log.close().await.unwrap();

    let (log, report) =
        BuiltinLog::open_with(storage.clone(), "/log", options(0), Projections::new())
            .await
            .unwrap();
    assert_eq!(
        report.log.snapshot.used.as_ref().map(|used| used.position),
        Some(info.position)
    );
    assert_eq!(report.log.events_replayed, 10, "only the tail is replayed");
    assert_eq!(state(&log), live);
    assert_eq!(log.rooms().read().room("r0").unwrap().message_count(), 50);
    // Appends continue with the right versions after a snapshot start.
    let data = json!({"message_id": "after", "author": "ada", "body": "x"});
    let appended = log
        .execute(&stream, event("room.message_posted", data))
        .await
        .unwrap();
    assert_eq!(appended.version, 51);
    log.close().await.unwrap();

    // The same log without snapshots: a full replay gives the same state.
    for file in snapshot_files(&storage) {
        storage.set_file_contents(&file, b"not a snapshot".to_vec());
    }
    let (full, report) = BuiltinLog::open_with(storage, "/log", options(0), Projections::new())
        .await
        .unwrap();
    assert!(report.log.snapshot.used.is_none());
    assert!(
        !report.log.snapshot.rejected.is_empty(),
        "the corrupt snapshot is reported"
    );
    assert_eq!(full.rooms().read().room("r0").unwrap().message_count(), 51);
    full.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_snapshots_keep_two_and_corrupt_newest_falls_back() {
    let storage = Arc::new(MemoryStorage::new());
    let (log, _) = BuiltinLog::open_with(storage.clone(), "/log", options(25), Projections::new())
        .await
        .unwrap();
    write_history(&log, 4, 30).await;
    let live = state(&log);
    log.close().await.unwrap();
    let files = snapshot_files(&storage);
    assert_eq!(files.len(), 2, "the newest two are kept: {files:?}");

    let newest = files.last().unwrap().clone();
    let mut bytes = storage.file_contents(&newest).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    storage.set_file_contents(&newest, bytes);
    let (log, report) =
        BuiltinLog::open_with(storage.clone(), "/log", options(25), Projections::new())
            .await
            .unwrap();
    assert_eq!(report.log.snapshot.rejected.len(), 1);
    assert_eq!(report.log.snapshot.rejected[0].0, newest);
    assert_eq!(
        report
            .log
            .snapshot
            .used
            .as_ref()
            .map(|used| used.path.clone()),
        Some(files[0].clone())
    );
    assert_eq!(
        state(&log),
        live,
        "the older snapshot plus a longer tail gives the same state"
    );
    log.close().await.unwrap();
}
