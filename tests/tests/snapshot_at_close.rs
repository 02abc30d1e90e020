//! A clean close of an embedded log writes a snapshot when at least
//! `SnapshotPolicy::on_close_events` positions were appended since the newest one, so the next
//! open replays nothing; below the threshold, or with it at 0, the close writes none and the
//! next open replays from the snapshot before (or from the start), as it always did.

use logbook::{Direction, ExpectedVersion, Logbook, OpenReport, StreamId, SyncPolicy};
use logbook_tests::{CounterEvent, added, test_options};
use std::path::Path;

type Log = Logbook<CounterEvent>;

fn options(on_close_events: u64) -> logbook::LogbookOptions {
    options_syncing(on_close_events, test_options().wal.sync_policy)
}

fn options_syncing(on_close_events: u64, sync_policy: SyncPolicy) -> logbook::LogbookOptions {
    let mut options = test_options();
    options.wal.sync_policy = sync_policy;
    // No periodic snapshot in these logs: only the close's.
    options.snapshots.every_events = 0;
    options.snapshots.every_bytes = 0;
    options.snapshots.every = std::time::Duration::ZERO;
    options.snapshots.on_close_events = on_close_events;
    options
}

/// Opens, appends `events` in appends of 10, closes; returns the open's report.
async fn append_and_close(dir: &Path, on_close_events: u64, events: u64) -> OpenReport {
    append_and_close_with(dir, options(on_close_events), events).await
}

async fn append_and_close_with(
    dir: &Path,
    options: logbook::LogbookOptions,
    events: u64,
) -> OpenReport {
    let (log, report) = Log::open(dir, options).await.unwrap();
    let stream = StreamId::new("room/a").unwrap();
    for first in (0..events).step_by(10) {
        let batch = (first..(first + 10).min(events))
            .map(|amount| added(amount, "note"))
            .collect();
        log.append(&stream, ExpectedVersion::Any, batch)
            .await
            .unwrap();
    }
    log.close().await.unwrap();
    report
}

async fn reopen(dir: &Path, on_close_events: u64) -> (OpenReport, Vec<u64>) {
    let (log, report) = Log::open(dir, options(on_close_events)).await.unwrap();
    let stream = StreamId::new("room/a").unwrap();
    let newest = log
        .read_stream(&stream, u64::MAX, Direction::Backward, 3)
        .await
        .unwrap()
        .iter()
        .map(|event| event.version)
        .collect();
    log.close().await.unwrap();
    (report, newest)
}

fn snapshot_position(report: &OpenReport) -> Option<u64> {
    report.snapshot.used.as_ref().map(|info| info.position)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_past_the_threshold_leaves_a_snapshot_and_the_next_open_replays_nothing() {
    let dir = tempfile::tempdir().unwrap();
    append_and_close(dir.path(), 100, 150).await;
    let (report, newest) = reopen(dir.path(), 100).await;
    assert_eq!(report.events_replayed, 0, "{report:?}");
    let position = snapshot_position(&report).expect("a snapshot written at close");
    assert!(
        position >= 150,
        "the snapshot covers every append: {position}"
    );
    assert_eq!(newest, vec![149, 148, 147], "the events are all there");
    // 50 more: below the threshold, so the close writes none, and the next open replays them
    // from the close's snapshot.
    append_and_close(dir.path(), 100, 50).await;
    let (report, newest) = reopen(dir.path(), 100).await;
    assert_eq!(snapshot_position(&report), Some(position));
    assert_eq!(report.events_replayed, 50, "{report:?}");
    assert_eq!(newest, vec![199, 198, 197]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn below_the_threshold_or_with_it_off_a_close_writes_no_snapshot() {
    for (on_close_events, events) in [(1_000, 150), (0, 3_000)] {
        let dir = tempfile::tempdir().unwrap();
        append_and_close(dir.path(), on_close_events, events).await;
        let (report, newest) = reopen(dir.path(), on_close_events).await;
        assert_eq!(snapshot_position(&report), None, "{report:?}");
        assert_eq!(report.events_replayed, events, "{report:?}");
        assert_eq!(newest, vec![events - 1, events - 2, events - 3]);
        let snapshots = std::fs::read_dir(dir.path().join("snapshots"))
            .map(|entries| entries.count())
            .unwrap_or(0);
        assert_eq!(snapshots, 0, "no snapshot file");
    }
}

/// Appends acknowledged before they are durable (`SyncPolicy::Never`, or `Interval` between
/// its syncs) count as appended: the close makes them durable, and its snapshot covers them,
/// so the next open replays nothing either. (The close once compared the threshold with the
/// durable position before its own final sync, and took the snapshot at the position applied
/// by then: such a tail was left for the next open to replay.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_snapshot_covers_appends_that_were_not_durable_yet() {
    let policies = [
        SyncPolicy::Never,
        SyncPolicy::Interval(std::time::Duration::from_secs(3600)),
    ];
    for sync_policy in policies {
        let dir = tempfile::tempdir().unwrap();
        append_and_close_with(dir.path(), options_syncing(100, sync_policy), 150).await;
        let (report, newest) = reopen(dir.path(), 100).await;
        assert_eq!(report.events_replayed, 0, "{sync_policy:?}: {report:?}");
        assert_eq!(
            snapshot_position(&report),
            Some(150),
            "{sync_policy:?}: the close's snapshot covers every append"
        );
        assert_eq!(newest, vec![149, 148, 147], "{sync_policy:?}");
    }
}
