//! Compaction reads only the segments holding records that died since those segments were
//! last compacted, and that accounting survives a restart: deleting one room makes only the
//! segments holding that room due, before and right after a reopen, and a compaction with
//! nothing new reads no byte. Cross-checked against the in-memory storage's own read counter.

use logbook::{BuiltinEvent, BuiltinLog, Direction, ExpectedVersion, Projections, StreamId};
use logbook_tests::{memory_segments, test_options};
use logbook_wal::MemoryStorage;
use serde_json::json;
use std::ops::RangeInclusive;
use std::path::Path;
use std::sync::Arc;

const DIR: &str = logbook_tests::MEMORY_DIR;

async fn open(storage: &MemoryStorage) -> BuiltinLog {
    let mut options = test_options();
    options.wal.segment_bytes_max = 4096;
    BuiltinLog::open_with(
        Arc::new(storage.clone()),
        Path::new(DIR),
        options,
        Projections::new(),
    )
    .await
    .unwrap()
    .0
}

async fn post_room(log: &BuiltinLog, room: &str, messages: usize) {
    let stream = StreamId::room(room).unwrap();
    let created = BuiltinEvent::from_json("room.created", json!({ "name": room })).unwrap();
    log.execute(&stream, created).await.unwrap();
    for index in 0..messages {
        let body = format!("{room} {index} {}", "y".repeat(100));
        let message = BuiltinEvent::from_json(
            "room.message_posted",
            json!({ "message_id": format!("m{index}"), "author": "ada", "body": body }),
        )
        .unwrap();
        log.execute(&stream, message).await.unwrap();
    }
}

/// The first and last position of a room's events.
async fn span(log: &BuiltinLog, room: &str) -> RangeInclusive<u64> {
    let stream = StreamId::room(room).unwrap();
    let events = log
        .log()
        .read_stream(&stream, 0, Direction::Forward, 10_000)
        .await
        .unwrap();
    events.first().unwrap().position..=events.last().unwrap().position
}

/// The bases of the sealed segments (all but the newest file) overlapping `range`.
fn segments_holding(storage: &MemoryStorage, range: &RangeInclusive<u64>) -> Vec<u64> {
    let bases: Vec<u64> = memory_segments(storage)
        .iter()
        .map(|path| path.file_stem().unwrap().to_str().unwrap().parse().unwrap())
        .collect();
    bases
        .windows(2)
        .filter(|pair| pair[0] <= *range.end() && pair[1] > *range.start())
        .map(|pair| pair[0])
        .collect()
}

async fn delete(log: &BuiltinLog, room: &str) {
    log.log()
        .delete_stream(&StreamId::room(room).unwrap(), ExpectedVersion::Any)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_room_deletion_makes_only_its_segments_due_also_after_a_restart() {
    let storage = MemoryStorage::new();
    let log = open(&storage).await;
    for room in ["a", "b", "c", "d", "e"] {
        post_room(&log, room, 40).await;
    }
    let a = span(&log, "a").await;
    let b = span(&log, "b").await;
    let d = span(&log, "d").await;
    let total_segments = memory_segments(&storage).len();
    let a_segments = segments_holding(&storage, &a);
    let b_segments = segments_holding(&storage, &b);
    let d_segments = segments_holding(&storage, &d);
    assert!(total_segments >= 10, "{total_segments} segments");
    assert!(
        b_segments.len() >= 2 && b_segments.len() <= total_segments / 3,
        "{b_segments:?} of {total_segments}"
    );

    // Nothing died yet: nothing is read.
    let report = log.log().compact().await.unwrap();
    assert_eq!(
        (report.segments_read, report.bytes_read),
        (0, 0),
        "{report:?}"
    );

    delete(&log, "b").await;
    let reads_before = storage.read_bytes();
    let report = log.log().compact().await.unwrap();
    let read_by_storage = storage.read_bytes() - reads_before;
    assert!(report.records_dropped >= 41, "{report:?}");
    assert_eq!(report.segments_read, b_segments.len(), "{report:?}");
    let read_bases: Vec<u64> = report
        .segments
        .iter()
        .map(|rewrite| {
            let name = rewrite.segment.file_stem().unwrap().to_str().unwrap();
            name.parse().unwrap()
        })
        .collect();
    assert!(
        read_bases.iter().all(|base| b_segments.contains(base)),
        "{read_bases:?} vs {b_segments:?}"
    );
    // The storage saw no more than the report says (plus the snapshot written and the index
    // reads of the compaction's own bookkeeping, far below one segment).
    assert!(
        read_by_storage <= report.bytes_read + 4096,
        "storage read {read_by_storage}, report {}",
        report.bytes_read
    );
    let again = log.log().compact().await.unwrap();
    assert_eq!((again.segments_read, again.bytes_read), (0, 0), "{again:?}");
    log.close().await.unwrap();

    // After a restart the marks (manifest) and the deaths (snapshot catalog) are still known.
    let log = open(&storage).await;
    let report = log.log().compact().await.unwrap();
    assert_eq!(
        (report.segments_read, report.bytes_read),
        (0, 0),
        "a restart does not make history due again: {report:?}"
    );
    delete(&log, "d").await;
    let report = log.log().compact().await.unwrap();
    assert_eq!(report.segments_read, d_segments.len(), "{report:?}");
    assert!(report.records_dropped >= 41, "{report:?}");
    log.close().await.unwrap();

    // And right after a restart, with the death before it.
    let log = open(&storage).await;
    delete(&log, "a").await;
    log.close().await.unwrap();
    let log = open(&storage).await;
    let report = log.log().compact().await.unwrap();
    assert_eq!(
        report.segments_read,
        a_segments.len(),
        "{report:?} vs {a_segments:?}"
    );
    assert!(report.records_dropped >= 41, "{report:?}");
    log.close().await.unwrap();
}
