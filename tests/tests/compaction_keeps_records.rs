//! Compaction keeps every retained record byte for byte at its original position (compared in
//! the segment files themselves, and through `read_all_raw`), drops exactly the records of
//! deleted streams, the versions hidden by truncation and superseded progress of a finished job,
//! deletes the segment files (and sidecars) it leaves empty, never touches the active segment,
//! and lets appends, reads and subscriptions running in other tasks carry on without an error, a
//! gap among visible records, or a duplicate.

use logbook::{
    BuiltinEvent, BuiltinLog, Direction, ExpectedVersion, HistoryRequest, MemoryStorage,
    Projections, RawEvent, StreamId, SyncPolicy,
};
use logbook_tests::issue5_support::{memory_records, memory_segment_records};
use logbook_tests::projection_support::{
    job_claimed, job_progress, job_queued, message_posted, room_created,
};
use logbook_tests::{MEMORY_DIR, options, test_options};
use logbook_wal::Wal;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

fn room(name: &str) -> StreamId {
    StreamId::room(name).unwrap()
}

async fn post(log: &BuiltinLog, stream: &StreamId, serial: u64) {
    let body = format!("message {serial} to {stream}, padded to look like a chat line of a room");
    log.execute(stream, message_posted(&format!("m{serial}"), "ada", &body))
        .await
        .unwrap();
}

async fn open_memory_log(storage: &Arc<MemoryStorage>) -> BuiltinLog {
    let mut options = test_options();
    options.wal.segment_bytes_max = 4096;
    options.snapshots.every_events = 0;
    BuiltinLog::open_with(storage.clone(), MEMORY_DIR, options, Projections::new())
        .await
        .unwrap()
        .0
}

/// Writes the history of the first test; returns the positions compaction must drop.
async fn write_history(log: &BuiltinLog) -> BTreeSet<u64> {
    let (gone, session, keep) = (room("gone"), room("session"), room("keep"));
    let mut dropped = BTreeSet::new();
    // `gone` alone first: its records fill whole segments, which must disappear.
    let created = log.execute(&gone, room_created("Gone")).await.unwrap();
    dropped.insert(created.first_position);
    for serial in 0..80 {
        post(log, &gone, serial).await;
    }
    for name in [&session, &keep] {
        log.execute(name, room_created("Room")).await.unwrap();
    }
    let job = StreamId::job("done").unwrap();
    log.execute(&job, job_queued("export")).await.unwrap();
    let now = log.log().now_ms();
    log.execute(&job, job_claimed("w1", now + 600_000))
        .await
        .unwrap();
    let mut progress = Vec::new();
    for serial in 100..160u64 {
        post(log, &keep, serial).await;
        post(log, &session, serial).await;
        if serial % 3 == 0 {
            post(log, &gone, serial).await;
        }
        if serial % 4 == 0 {
            let percent = (serial - 100) as u8;
            let written = log
                .execute(&job, job_progress("copy", percent))
                .await
                .unwrap();
            progress.push(written.first_position);
        }
    }
    let done = json!({"result": "s3://out"});
    let done = BuiltinEvent::from_json("job.succeeded", done).unwrap();
    log.execute(&job, done).await.unwrap();
    progress.pop(); // the newest progress of the finished job stays
    dropped.extend(progress);
    // Every event of `gone`, and `session` versions 0..20 (room.created and 19 posts).
    for raw in log.log().read_all_raw(1, usize::MAX).await.unwrap() {
        let stream = raw.envelope.stream();
        let version = raw.envelope.stream_version();
        if *stream == gone || (*stream == session && version < 20) {
            dropped.insert(raw.position);
        }
    }
    log.log()
        .delete_stream(&gone, ExpectedVersion::Any)
        .await
        .unwrap();
    log.log().truncate_stream(&session, 20).await.unwrap();
    dropped
}

fn sidecar_of(segment: &Path) -> PathBuf {
    segment.with_extension("idx")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_records_keep_bytes_and_positions_and_empty_segments_are_deleted() {
    let storage = Arc::new(MemoryStorage::new());
    let log = open_memory_log(&storage).await;
    let dropped = write_history(&log).await;
    log.log().sync().await.unwrap();
    let segments_before = memory_segment_records(&storage);
    let records_before = memory_records(&storage);
    let raws_before: Vec<RawEvent> = log.log().read_all_raw(1, usize::MAX).await.unwrap();
    assert!(
        dropped
            .iter()
            .all(|position| records_before.contains_key(position))
    );

    let report = log.log().compact().await.unwrap();

    // Exactly the dead records are gone; every other one is byte for byte where it was.
    let records_after = memory_records(&storage);
    let expected: BTreeMap<u64, Vec<u8>> = records_before
        .iter()
        .filter(|(position, _)| !dropped.contains(position))
        .map(|(position, bytes)| (*position, bytes.clone()))
        .collect();
    let kept_after: BTreeMap<u64, Vec<u8>> = records_after
        .iter()
        .filter(|(position, _)| **position <= report.snapshot_position)
        .map(|(position, bytes)| (*position, bytes.clone()))
        .collect();
    assert_eq!(kept_after.len(), expected.len(), "records kept");
    for (position, bytes) in &expected {
        assert!(
            kept_after.get(position) == Some(bytes),
            "record {position} changed or vanished"
        );
    }
    assert_eq!(report.records_dropped, dropped.len() as u64);
    let raws_after: Vec<RawEvent> = log.log().read_all_raw(1, usize::MAX).await.unwrap();
    let raws_expected: Vec<&RawEvent> = raws_before
        .iter()
        .filter(|raw| !dropped.contains(&raw.position))
        .collect();
    assert_eq!(raws_after.iter().collect::<Vec<_>>(), raws_expected);

    // A segment whose every record was dropped is deleted with its sidecar; the others stay.
    let mut emptied = 0;
    for (path, records) in &segments_before {
        let all_dropped =
            !records.is_empty() && records.keys().all(|position| dropped.contains(position));
        if all_dropped {
            emptied += 1;
            assert!(storage.file_contents(path).is_none(), "{path:?} left empty");
            assert!(storage.file_contents(&sidecar_of(path)).is_none());
        } else {
            assert!(storage.file_contents(path).is_some(), "{path:?} kept");
        }
    }
    assert!(
        emptied >= 2,
        "the test must empty whole segments: {emptied}"
    );
    assert_eq!(report.segments_removed, emptied);

    // The same bytes after a reopen, and appends continue with the right versions.
    log.close().await.unwrap();
    let log = open_memory_log(&storage).await;
    assert_eq!(memory_records(&storage), records_after);
    let keep = room("keep");
    assert_eq!(log.log().stream_version(&keep).unwrap(), Some(60));
    post(&log, &keep, 1000).await;
    assert_eq!(log.log().stream_version(&keep).unwrap(), Some(61));
    log.close().await.unwrap();
}

#[test]
fn the_active_segment_is_never_rewritten() {
    let storage = Arc::new(MemoryStorage::new());
    let (wal, _) = Wal::open_with_storage(
        storage.clone(),
        Path::new(MEMORY_DIR),
        options(SyncPolicy::Always, 4096),
    )
    .unwrap();
    for serial in 0..120u64 {
        wal.append(&logbook_tests::payload(serial, 90)).unwrap();
    }
    wal.seal_active()
        .unwrap()
        .expect("the active segment held records");
    for serial in 120..140u64 {
        wal.append(&logbook_tests::payload(serial, 90)).unwrap();
    }
    let segments = wal.segments();
    let active = segments.iter().find(|segment| segment.active).unwrap();
    let active_bytes = storage.file_contents(&active.path).unwrap();

    let refused = wal.rewrite_segment(active.base, &mut |_, _| false);
    assert!(
        matches!(refused, Err(logbook_wal::Error::InvalidArgument(_))),
        "{refused:?}"
    );
    assert_eq!(storage.file_contents(&active.path).unwrap(), active_bytes);

    // Rewriting every sealed segment (dropping odd positions) leaves the active one alone.
    for sealed in segments.iter().filter(|segment| !segment.active) {
        wal.rewrite_segment(sealed.base, &mut |position, _| position % 2 == 0)
            .unwrap();
    }
    assert_eq!(storage.file_contents(&active.path).unwrap(), active_bytes);
    let positions: Vec<u64> = wal
        .read_from(1)
        .map(|record| record.unwrap().position)
        .collect();
    let expected: Vec<u64> = (1..=120)
        .filter(|position| position % 2 == 0)
        .chain(121..=140)
        .collect();
    assert_eq!(positions, expected);
    wal.close().unwrap();
}

/// What the concurrent readers saw.
#[derive(Debug, Default)]
struct Seen {
    reads: u64,
    pages: u64,
}

async fn read_while_compacting(log: BuiltinLog, stop: Arc<AtomicBool>, keep_versions: u64) -> Seen {
    let keep = room("keep");
    let mut seen = Seen::default();
    while !stop.load(Ordering::Acquire) {
        let events = log
            .log()
            .read_stream(&keep, 0, Direction::Forward, 10_000)
            .await
            .unwrap();
        let versions: Vec<u64> = events.iter().map(|event| event.version).collect();
        assert_eq!(
            versions,
            (0..keep_versions).collect::<Vec<_>>(),
            "keep room"
        );
        let page = log
            .room_history("keep", HistoryRequest::newest(50))
            .await
            .unwrap();
        let versions: Vec<u64> = page
            .messages
            .iter()
            .map(|message| message.version)
            .collect();
        let newest = keep_versions - 1;
        assert_eq!(versions, (newest - 49..=newest).rev().collect::<Vec<_>>());
        let all = log.log().read_all(1, usize::MAX).await.unwrap();
        assert!(
            all.windows(2)
                .all(|pair| pair[0].position < pair[1].position)
        );
        seen.reads += 1;
        seen.pages += 1;
        tokio::task::yield_now().await;
    }
    seen
}

/// Subscribes from position 1 and collects positions until `last` (set once known) arrived.
async fn subscribe_until(log: BuiltinLog, last: Arc<std::sync::atomic::AtomicU64>) -> Vec<u64> {
    let mut subscription = log.log().subscribe(1);
    let mut positions: Vec<u64> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let target = last.load(Ordering::Acquire);
        if target != 0 && positions.last().is_some_and(|&seen| seen >= target) {
            return positions;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the subscription stopped delivering at {:?} (target {target})",
            positions.last()
        );
        let Ok(next) = tokio::time::timeout(Duration::from_millis(200), subscription.next()).await
        else {
            continue;
        };
        let event = next.expect("the subscription stays open").unwrap();
        positions.push(event.position);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_reads_and_subscriptions_carry_on_during_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = test_options();
    options.wal.segment_bytes_max = 8192;
    options.snapshots.every_events = 0;
    let (log, _) = BuiltinLog::open(dir.path(), options).await.unwrap();
    let keep = room("keep");
    log.execute(&keep, room_created("Keep")).await.unwrap();
    for serial in 0..120 {
        post(&log, &keep, serial).await;
    }
    let doomed: Vec<StreamId> = (0..6)
        .map(|index| room(&format!("doomed{index}")))
        .collect();
    for (index, stream) in doomed.iter().enumerate() {
        log.execute(stream, room_created("Doomed")).await.unwrap();
        for serial in 0..40 {
            post(&log, stream, 1000 * index as u64 + serial).await;
        }
    }
    let written: BTreeSet<u64> = log
        .log()
        .read_all(1, usize::MAX)
        .await
        .unwrap()
        .iter()
        .map(|event| event.position)
        .collect();

    let stop = Arc::new(AtomicBool::new(false));
    let last = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let subscriber = tokio::spawn(subscribe_until(log.clone(), last.clone()));
    let reader = tokio::spawn(read_while_compacting(log.clone(), stop.clone(), 121));
    let appender = {
        let log = log.clone();
        tokio::spawn(async move {
            let live = room("live");
            let mut appended = vec![log.execute(&live, room_created("Live")).await.unwrap()];
            for serial in 0..300 {
                let body = format!("live {serial}");
                let event = message_posted(&format!("l{serial}"), "bob", &body);
                appended.push(log.execute(&live, event).await.unwrap());
            }
            appended
        })
    };
    let mut compactions = Vec::new();
    let mut overlapped = 0;
    for (index, stream) in doomed.iter().enumerate() {
        match index % 2 {
            0 => drop(
                log.log()
                    .delete_stream(stream, ExpectedVersion::Any)
                    .await
                    .unwrap(),
            ),
            _ => drop(log.log().truncate_stream(stream, 30).await.unwrap()),
        }
        compactions.push(log.log().compact().await.unwrap());
        overlapped += usize::from(!appender.is_finished());
    }
    // Otherwise the test would test nothing: compactions ran while the appender appended.
    assert!(overlapped > 0, "no compaction overlapped the appends");
    let appended = appender.await.unwrap();
    last.store(appended.last().unwrap().first_position, Ordering::Release);
    compactions.push(log.log().compact().await.unwrap());
    let subscribed = subscriber.await.unwrap();
    stop.store(true, Ordering::Release);
    let seen = reader.await.unwrap();

    assert!(
        compactions
            .iter()
            .map(|report| report.records_dropped)
            .sum::<u64>()
            >= 3 * 41 + 3 * 30
    );
    assert!(seen.reads > 0 && seen.pages > 0, "the reader ran: {seen:?}");
    // The appender: every append acknowledged, versions gapless.
    let versions: Vec<u64> = appended.iter().map(|result| result.version).collect();
    assert_eq!(versions, (0..=300).collect::<Vec<_>>());
    // The subscriber: no duplicate, nothing out of order, nothing that was never written, and
    // every record still visible at the end.
    assert!(
        subscribed.windows(2).all(|pair| pair[0] < pair[1]),
        "positions ascend without duplicates"
    );
    let appended_positions: BTreeSet<u64> = appended
        .iter()
        .map(|result| result.first_position)
        .collect();
    let subscribed: BTreeSet<u64> = subscribed.into_iter().collect();
    assert!(
        subscribed
            .iter()
            .all(|position| written.contains(position) || appended_positions.contains(position)),
        "the subscriber saw only written records"
    );
    let visible: BTreeSet<u64> = log
        .log()
        .read_all(1, usize::MAX)
        .await
        .unwrap()
        .iter()
        .map(|event| event.position)
        .collect();
    let missed: Vec<&u64> = visible.difference(&subscribed).collect();
    assert!(
        missed.is_empty(),
        "visible records the subscriber missed: {missed:?}"
    );
    assert!(appended_positions.is_subset(&visible));
    log.close().await.unwrap();
}
