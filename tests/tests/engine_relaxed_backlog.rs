//! Relaxed appends return once written, not synced; the syncer's backlog bounds what they may
//! hold in memory meanwhile (`syncer::Backlog`, 16 MiB). Past it the writer waits and the
//! syncer syncs at once, whatever the policy: with `SyncPolicy::Never` (nothing else would sync
//! before a segment roll) 96 MiB of relaxed appends complete, every one applied.

use logbook::{AppendDurability, ExpectedVersion, Logbook, LogbookOptions, StreamId, SyncPolicy};
use logbook_tests::{CounterEvent, added};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relaxed_appends_past_the_backlog_complete_with_no_sync_policy() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = LogbookOptions::default();
    options.wal.sync_policy = SyncPolicy::Never;
    options.wal.segment_bytes_max = 256 << 20;
    let (log, _) = Logbook::<CounterEvent>::open(dir.path(), options)
        .await
        .unwrap();
    let stream = StreamId::new("bulk").unwrap();
    let note = "n".repeat(60 << 10);
    let batches = 96u64;
    // A writer left waiting for a sync that never comes would hang: bounded here.
    let appended = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        let mut last = 0;
        for _ in 0..batches {
            let events = (0..16).map(|amount| added(amount, &note)).collect();
            last = log
                .append_with(
                    &stream,
                    ExpectedVersion::Any,
                    events,
                    AppendDurability::Relaxed,
                )
                .await
                .unwrap()
                .last_position;
        }
        log.wait_applied(last).await.unwrap();
        last
    })
    .await
    .expect("every relaxed append written and applied");
    assert_eq!(appended, batches * 16);
    log.close().await.unwrap();
}
