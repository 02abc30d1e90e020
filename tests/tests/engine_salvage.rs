//! Engine open with `RecoveryMode::Salvage` after corruption: the log is cut at the first bad
//! frame, and everything derived from what the cut dropped goes too. Snapshots past the new end
//! are removed (once new appends passed their position they would look valid and restore
//! events that no longer exist), and a stream index complete past the new end is rebuilt (new
//! appends reuse the dropped positions). After more appends, a reopen equals a full replay.

use logbook::{BuiltinLog, Direction, HistoryRequest, Projections, StreamId};
use logbook_tests::test_options;
use logbook_wal::RecoveryMode;
use serde_json::json;
use std::path::Path;
use std::sync::Arc;

async fn open(dir: &Path, mode: RecoveryMode) -> (BuiltinLog, logbook::BuiltinOpenReport) {
    let mut options = test_options();
    options.wal.recovery_mode = mode;
    options.wal.segment_bytes_max = 1 << 20;
    BuiltinLog::open_with(
        Arc::new(logbook_wal::FileStorage::new()),
        dir,
        options,
        Projections::new(),
    )
    .await
    .unwrap()
}

async fn post(log: &BuiltinLog, room: &StreamId, id: &str, body: &str) {
    let data = json!({"message_id": id, "author": "ada", "body": body});
    let event = logbook::BuiltinEvent::from_json("room.message_posted", data).unwrap();
    log.execute(room, event).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn salvage_drops_snapshots_and_index_past_the_cut() {
    let dir = tempfile::tempdir().unwrap();
    let room = StreamId::room("lobby").unwrap();
    let (log, _) = open(dir.path(), RecoveryMode::Strict).await;
    let created = logbook::BuiltinEvent::from_json("room.created", json!({"name": "lobby"}));
    log.execute(&room, created.unwrap()).await.unwrap();
    for index in 0..60 {
        post(
            &log,
            &room,
            &format!("old{index}"),
            &format!("old message {index}"),
        )
        .await;
    }
    let snapshot = log.log().snapshot().await.unwrap();
    assert_eq!(snapshot.position, 61);
    log.close().await.unwrap();

    // Damage a frame a third of the way in: later frames prove it was durable, so a strict open
    // refuses and salvage cuts there.
    let segment = std::fs::read_dir(dir.path().join("wal"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| path.extension().is_some_and(|ext| ext == "seg"))
        .unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    let at = bytes.len() / 3;
    bytes[at] ^= 0x55;
    std::fs::write(&segment, bytes).unwrap();
    // (The engine's default trusts the clean close's checkpoint and would find the damage only
    // when reading it; a full verification refuses at open.)
    let mut options = test_options();
    options.wal.segment_bytes_max = 1 << 20;
    options.wal.verify_sealed_segments_on_open = true;
    assert!(
        BuiltinLog::open_with(
            Arc::new(logbook_wal::FileStorage::new()),
            dir.path(),
            options,
            Projections::new()
        )
        .await
        .is_err()
    );

    let (log, report) = open(dir.path(), RecoveryMode::Salvage).await;
    let salvage = report.log.wal.salvage.clone().expect("salvage is reported");
    let end = report.log.wal.last_position;
    assert!(end < 61 && end > 1, "{salvage:?}");
    assert!(
        report
            .log
            .snapshot
            .rejected
            .iter()
            .any(|(path, reason)| path == &snapshot.path && reason.contains("removed")),
        "{:?}",
        report.log.snapshot
    );
    assert!(!snapshot.path.exists(), "the snapshot past the cut is gone");
    assert!(report.log.index.rebuilt.is_some(), "{:?}", report.log.index);
    let kept = log.rooms().read().room("lobby").unwrap().message_count();
    assert_eq!(
        kept,
        end - 1,
        "room.created, then the messages before the cut"
    );
    // New appends reuse the dropped positions and go past the old snapshot's.
    for index in 0..80 {
        post(
            &log,
            &room,
            &format!("new{index}"),
            &format!("new message {index}"),
        )
        .await;
    }
    let live_rooms = log.rooms().read().clone();
    log.close().await.unwrap();

    let (log, report) = open(dir.path(), RecoveryMode::Strict).await;
    assert!(
        report.log.snapshot.used.is_none()
            || report
                .log
                .snapshot
                .used
                .as_ref()
                .is_some_and(|used| used.position > end)
    );
    assert_eq!(*log.rooms().read(), live_rooms);
    let events = log
        .log()
        .read_stream(&room, 0, Direction::Forward, 1000)
        .await
        .unwrap();
    let versions: Vec<u64> = events.iter().map(|event| event.version).collect();
    assert_eq!(versions, (0..end + 80).collect::<Vec<_>>());
    let page = log
        .room_history("lobby", HistoryRequest::newest(3))
        .await
        .unwrap();
    let bodies: Vec<&str> = page
        .messages
        .iter()
        .map(|message| message.body.as_str())
        .collect();
    assert_eq!(
        bodies,
        ["new message 79", "new message 78", "new message 77"]
    );
    log.close().await.unwrap();
}
