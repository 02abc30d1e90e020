//! Replay hands the projections their records a chunk at a time (256 events, or 1 MiB of
//! payload, per lock of a projection's state): engine events (a stream deletion, a soft
//! deletion, a truncation) in the middle of a chunk and records on both sides of chunk
//! boundaries rebuild exactly the live state, and `applied_position` after open is the log's
//! last position. A replay of more than 50,000 records runs on two threads (the catalog and the
//! index on the opening thread, the projections on another, chunk by chunk): the same checks
//! on such a log.

use logbook::{ExpectedVersion, ManualClock, MemoryStorage, NewEvent, StreamId};
use logbook_tests::projection_support::{
    BuiltinState, CLOCK_START_MS, assert_same_state, clocked_options, head, message_posted,
    open_memory, room_created,
};
use std::sync::Arc;

/// Messages per append: not a divisor of the chunk, so chunks end inside appends.
const BATCH: usize = 97;
/// Messages per append of the long log: 30 appends of it are past the two-thread replay's
/// threshold (50,000 records).
const LONG_BATCH: usize = 1_777;

fn room(id: &str) -> StreamId {
    StreamId::room(id).expect("room id")
}

async fn post(log: &logbook::BuiltinLog, id: &str, first: usize, count: usize, body: &str) {
    let events = (first..first + count)
        .map(|index| NewEvent::new(message_posted(&format!("m{index}"), "ada", body)))
        .collect();
    log.log()
        .append(&room(id), ExpectedVersion::Any, events)
        .await
        .expect("post");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_in_chunks_rebuilds_the_live_state_around_engine_events() {
    rebuilds_the_live_state(BATCH).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_on_two_threads_rebuilds_the_live_state_around_engine_events() {
    let replayed = rebuilds_the_live_state(LONG_BATCH).await;
    assert!(
        replayed > 50_000,
        "past the two-thread threshold: {replayed}"
    );
}

/// Builds the log with appends of `batch` messages, reopens it (a full replay) and checks the
/// replayed state is the live one; returns how many records the open replayed.
async fn rebuilds_the_live_state(batch: usize) -> u64 {
    let storage = Arc::new(MemoryStorage::new());
    let clock = ManualClock::new(CLOCK_START_MS);
    let options = || {
        let mut options = clocked_options(&clock);
        // No snapshot at close either: the reopen replays the whole log.
        options.snapshots.on_close_events = 0;
        options
    };
    let opened = open_memory(&storage, options()).await;
    let log = &opened.log;
    for id in ["a", "b", "c", "d"] {
        log.log()
            .append(
                &room(id),
                ExpectedVersion::NoStream,
                vec![NewEvent::new(room_created(id))],
            )
            .await
            .expect("create");
    }
    let mut posted = 0;
    for round in 0..9 {
        for id in ["a", "b", "c", "d"] {
            if id == "b" && round > 2 {
                // Deleted for good: appends to it are refused.
                continue;
            }
            post(log, id, posted, batch, &format!("round {round} of {id}")).await;
            posted += batch;
        }
        // Engine events land inside chunks (positions 4 + k * 388 + ...), and events of the
        // same rooms follow them in the same chunk.
        match round {
            2 => {
                log.log()
                    .delete_stream(&room("b"), ExpectedVersion::Any)
                    .await
                    .expect("delete b");
            }
            4 => {
                log.log()
                    .truncate_stream(&room("a"), 150)
                    .await
                    .expect("truncate a");
            }
            6 => {
                log.log()
                    .soft_delete_stream(&room("c"), ExpectedVersion::Any)
                    .await
                    .expect("soft delete c");
                log.log()
                    .append(
                        &room("c"),
                        ExpectedVersion::NoStream,
                        vec![NewEvent::new(room_created("c again"))],
                    )
                    .await
                    .expect("create c again");
            }
            _ => {}
        }
    }
    // One long message makes a chunk end on its payload bytes, not on its count.
    post(log, "d", posted, 3, &"x".repeat(400 * 1024)).await;
    let last = head(log);
    let live = BuiltinState::capture(&opened).await;
    let rooms = log.rooms().read();
    assert!(rooms.room("b").is_none(), "b was deleted");
    let c = rooms.room("c").expect("c was created again");
    assert_eq!(c.name, "c again");
    assert_eq!(
        c.messages_posted,
        2 * batch as u64,
        "c counts only the messages after its soft delete (rounds 7 and 8)"
    );
    let d = rooms.room("d").expect("d");
    assert_eq!(d.messages_posted, 9 * batch as u64 + 3);
    drop(rooms);
    opened.log.close().await.expect("close");

    let reopened = open_memory(&storage, options()).await;
    assert!(reopened.report.log.snapshot.used.is_none(), "a full replay");
    assert!(
        reopened.report.log.events_replayed > 3 * 256,
        "more than a few chunks: {}",
        reopened.report.log.events_replayed
    );
    let replayed = BuiltinState::capture(&reopened).await;
    assert_same_state(&live, &replayed, "after a replay in chunks");
    for (id, applied) in [
        ("runs", reopened.log.runs().applied_position()),
        ("rooms", reopened.log.rooms().applied_position()),
        ("jobs", reopened.log.jobs().applied_position()),
    ] {
        assert_eq!(applied, last, "{id} is as of the log's last position");
    }
    let replayed = reopened.report.log.events_replayed;
    reopened.log.close().await.expect("close");
    replayed
}

/// Writes a room and 60,000 messages to it (past the two-thread replay's threshold) with every
/// snapshot trigger off, in segments of `segment_bytes_max` when given; returns the options to
/// reopen it with.
async fn long_log(
    dir: &std::path::Path,
    segment_bytes_max: Option<u64>,
) -> logbook::LogbookOptions {
    let mut options = logbook_tests::test_options();
    options.wal.sync_policy = logbook::SyncPolicy::Never;
    if let Some(bytes) = segment_bytes_max {
        options.wal.segment_bytes_max = bytes;
    }
    options.snapshots.every_events = 0;
    options.snapshots.every_bytes = 0;
    options.snapshots.every = std::time::Duration::ZERO;
    options.snapshots.on_close_events = 0;
    let (log, _) = logbook::BuiltinLog::open(dir, options.clone())
        .await
        .expect("open");
    log.log()
        .append(
            &room("a"),
            ExpectedVersion::NoStream,
            vec![NewEvent::new(room_created("a"))],
        )
        .await
        .expect("create");
    for first in (0..60_000).step_by(1000) {
        post(&log, "a", first, 1000, "a message of the long log").await;
    }
    log.close().await.expect("close");
    options
}

/// A damaged record in the middle of a two-thread replay fails the open with the damage named
/// (segment and offset), as a replay on one thread does; the projections' thread is waited
/// for, never left running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_record_fails_a_two_thread_replay_with_its_place() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = long_log(dir.path(), Some(4 * 1024 * 1024)).await;
    // A byte in the middle of the first segment, well past the threshold's worth of records
    // from its end: inside some record's frame.
    let mut segments: Vec<_> = std::fs::read_dir(dir.path().join("wal"))
        .expect("wal dir")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "seg"))
        .collect();
    segments.sort();
    let first = &segments[0];
    let mut bytes = std::fs::read(first).expect("read segment");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x5A;
    std::fs::write(first, &bytes).expect("write segment");
    let error = match logbook::BuiltinLog::open(dir.path(), options).await {
        Ok(_) => panic!("a damaged log does not open"),
        Err(error) => error,
    };
    assert!(error.is_corruption(), "{error}");
    let text = error.to_string();
    let name = first.file_name().unwrap().to_string_lossy().into_owned();
    assert!(text.contains(&name), "names the segment: {text}");
}

/// The first of two damaged records is the one a two-thread replay reports: an envelope that
/// does not decode (its frame's checksum made right again, so only the projections' thread,
/// which decodes envelopes, can tell) and, further on, a frame whose checksum fails (which the
/// reading thread finds). The reading thread may well find its damage first in time; the open
/// still names the earlier record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_thread_replay_reports_the_first_of_two_damaged_records() {
    // The second damage next to the first (in the same block: the reader stops there), and far
    // beyond it (the reader may read on until the projections' thread stops).
    for later in [1, 20_000] {
        first_of_two_damaged_records(later).await;
    }
}

async fn first_of_two_damaged_records(later: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = long_log(dir.path(), None).await;
    // Every frame of every segment (format.md: a 32-byte segment header, then frames, each a
    // 28-byte header and its payload), by position.
    let mut frames = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir(dir.path().join("wal")).expect("wal dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|ext| ext != "seg") {
            continue;
        }
        let bytes = std::fs::read(&path).expect("read segment");
        let mut offset = 32;
        while offset + 28 <= bytes.len() {
            let payload_len =
                u32::from_le_bytes(bytes[offset..offset + 4].try_into().unwrap()) as usize;
            let position = u64::from_le_bytes(bytes[offset + 8..offset + 16].try_into().unwrap());
            if payload_len == 0 || offset + 28 + payload_len > bytes.len() {
                break;
            }
            frames.insert(position, (path.clone(), offset, payload_len));
            offset += 28 + payload_len;
        }
    }
    let (first_bad, later_bad) = (20_000u64, 20_000 + later);
    // The first: an envelope magic byte of 0, in a frame re-encoded with a valid checksum.
    let (path, at, len) = &frames[&first_bad];
    let (at, len) = (*at, *len);
    let mut bytes = std::fs::read(path).expect("read segment");
    let durable_mark = u64::from_le_bytes(bytes[at + 16..at + 24].try_into().unwrap());
    let flags = bytes[at + 24];
    let mut payload = bytes[at + 28..at + 28 + len].to_vec();
    payload[0] = 0;
    let mut frame = Vec::new();
    logbook_wal::frame::encode_frame(&mut frame, first_bad, durable_mark, flags, &payload);
    bytes[at..at + 28 + len].copy_from_slice(&frame);
    std::fs::write(path, &bytes).expect("write segment");
    // The later one: a flipped payload byte, its checksum left as it was.
    let (path, at, len) = &frames[&later_bad];
    let mut bytes = std::fs::read(path).expect("read segment");
    bytes[at + 28 + len / 2] ^= 0x5A;
    std::fs::write(path, &bytes).expect("write segment");
    for _ in 0..3 {
        let error = match logbook::BuiltinLog::open(dir.path(), options.clone()).await {
            Ok(_) => panic!("a damaged log does not open"),
            Err(error) => error,
        };
        match &error {
            logbook::Error::Corrupted { position, reason } => {
                assert_eq!(*position, first_bad, "{error}");
                assert!(reason.contains("magic"), "{error}");
            }
            other => panic!("the first damaged record is reported, not: {other}"),
        }
    }
}
