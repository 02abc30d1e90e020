//! The stream index's recent file (`index/recent`): a clean close writes what it knew of the
//! streams used last, the next open answers their newest pages from it while sled opens in the
//! background, and whatever sled turns out to hold (the same marker, another marker, broken
//! files) every read still sees exactly the log's events. The file is gone before sled can
//! change, so it never describes an index that moved on.

use logbook::{ExpectedVersion, Logbook, StreamId};
use logbook_tests::{CounterEvent, added, newest_versions, test_options, versions_forward};
use std::path::{Path, PathBuf};

type Log = Logbook<CounterEvent>;

async fn open(dir: &Path) -> (Log, logbook::OpenReport) {
    Log::open(dir, test_options()).await.unwrap()
}

fn recent(dir: &Path) -> PathBuf {
    dir.join("index").join("recent")
}

/// Appends `count` events to `stream`, in appends of 50.
async fn fill(log: &Log, stream: &StreamId, count: u64) {
    for first in (0..count).step_by(50) {
        let events = (first..(first + 50).min(count))
            .map(|amount| added(amount, "note"))
            .collect();
        log.append(stream, ExpectedVersion::Any, events)
            .await
            .unwrap();
    }
}

/// Checks every read a service makes of `streams` (with `count` events each, all present)
/// against the versions they must return.
async fn check(log: &Log, streams: &[(&StreamId, u64)]) {
    for &(stream, count) in streams {
        let want_newest: Vec<u64> = (count.saturating_sub(50)..count).rev().collect();
        assert_eq!(
            newest_versions(log, stream, 50).await,
            want_newest,
            "{stream}"
        );
        assert_eq!(
            versions_forward(log, stream, 500).await,
            (0..count).collect::<Vec<_>>(),
            "{stream}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_close_writes_it_and_the_next_open_answers_from_it() {
    let dir = tempfile::tempdir().unwrap();
    let (room, other) = (
        StreamId::new("room/a").unwrap(),
        StreamId::new("room/b").unwrap(),
    );
    let (log, _) = open(dir.path()).await;
    fill(&log, &room, 2500).await;
    fill(&log, &other, 120).await;
    check(&log, &[(&room, 2500), (&other, 120)]).await;
    let mut head = log.stats().durable_position;
    log.close().await.unwrap();
    assert!(recent(dir.path()).exists(), "a clean close writes it");

    for round in 0..3u64 {
        let (log, report) = open(dir.path()).await;
        assert_eq!(report.index.complete_position, head, "{round}");
        assert_eq!(report.index.rebuilt, None);
        // Answered from the recent file (sled may still be opening).
        assert_eq!(
            newest_versions(&log, &room, 50).await,
            (2450..2500).rev().collect::<Vec<_>>()
        );
        // A read that needs sled waits for it; by then the file is gone.
        check(&log, &[(&room, 2500), (&other, 120 + round * 100)]).await;
        assert!(!recent(dir.path()).exists(), "removed once sled opened");
        let events = (0..100).map(|amount| added(amount, "more")).collect();
        log.append(&other, ExpectedVersion::Any, events)
            .await
            .unwrap();
        check(&log, &[(&room, 2500), (&other, 220 + round * 100)]).await;
        head = log.stats().durable_position;
        log.close().await.unwrap();
        assert!(recent(dir.path()).exists(), "{round}");
    }
}

/// A recent file that no longer matches sled (here an older one put back: something this code
/// never does) is caught when sled opens: the index is rebuilt from the log and every read is
/// still exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recent_file_older_than_sled_makes_the_index_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let room = StreamId::new("room/a").unwrap();
    let (log, _) = open(dir.path()).await;
    fill(&log, &room, 1500).await;
    log.close().await.unwrap();
    let old = std::fs::read(recent(dir.path())).unwrap();

    let (log, _) = open(dir.path()).await;
    fill(&log, &room, 1300).await;
    log.close().await.unwrap();
    std::fs::write(recent(dir.path()), &old).unwrap();

    let (log, report) = open(dir.path()).await;
    assert!(report.index.complete_position < log.stats().durable_position);
    // The newest page: the recent file's chunk and the tail replayed past its marker.
    assert_eq!(
        newest_versions(&log, &room, 50).await,
        (2750..2800).rev().collect::<Vec<_>>()
    );
    check(&log, &[(&room, 2800)]).await;
    fill(&log, &room, 30).await;
    check(&log, &[(&room, 2830)]).await;
    log.close().await.unwrap();
    let (log, report) = open(dir.path()).await;
    assert_eq!(report.index.rebuilt, None);
    check(&log, &[(&room, 2830)]).await;
    log.close().await.unwrap();
}

/// sled's files broken behind a valid recent file: the open answers from the file, and the
/// first read that needs sled rebuilds the index from the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_sled_files_behind_a_valid_recent_file_are_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let (room, other) = (
        StreamId::new("room/a").unwrap(),
        StreamId::new("room/b").unwrap(),
    );
    let (log, _) = open(dir.path()).await;
    fill(&log, &room, 3000).await;
    fill(&log, &other, 40).await;
    log.close().await.unwrap();
    let index = dir.path().join("index");
    let mut broken = 0;
    for entry in std::fs::read_dir(&index).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() && path.file_name().unwrap() != "recent" {
            std::fs::write(&path, vec![0xA5; 4096]).unwrap();
            broken += 1;
        }
    }
    assert!(broken > 0);
    let (log, report) = open(dir.path()).await;
    assert_eq!(report.index.rebuilt, None, "found out after the open");
    check(&log, &[(&room, 3000), (&other, 40)]).await;
    fill(&log, &room, 20).await;
    check(&log, &[(&room, 3020), (&other, 40)]).await;
    log.close().await.unwrap();
    let (log, report) = open(dir.path()).await;
    assert_eq!(report.index.rebuilt, None);
    check(&log, &[(&room, 3020), (&other, 40)]).await;
    log.close().await.unwrap();
}

/// Once sled is open (here for a truncation, which writes sled at once, and a read from the
/// stream's start) the file is gone; a log dropped without a clean close then opens without it
/// and reads exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_is_gone_once_sled_opened() {
    let dir = tempfile::tempdir().unwrap();
    let room = StreamId::new("room/a").unwrap();
    let (log, _) = open(dir.path()).await;
    fill(&log, &room, 2100).await;
    log.close().await.unwrap();
    assert!(recent(dir.path()).exists());

    let (log, _) = open(dir.path()).await;
    log.truncate_stream(&room, 1500).await.unwrap();
    assert_eq!(
        versions_forward(&log, &room, 700).await,
        (1500..2100).collect::<Vec<_>>()
    );
    assert!(!recent(dir.path()).exists());
    fill(&log, &room, 10).await;
    // No close: the next open finds no recent file and asks sled.
    drop(log);
    // The dropped handle's threads let go of the log's lock shortly.
    let mut tries = 0;
    let log = loop {
        match Log::open(dir.path(), test_options()).await {
            Ok((log, _)) => break log,
            Err(logbook::Error::Wal(logbook_wal::Error::Locked { .. })) if tries < 500 => {
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            Err(error) => panic!("reopen: {error}"),
        }
    };
    assert!(!recent(dir.path()).exists(), "no clean close, no file");
    let versions = versions_forward(&log, &room, 300).await;
    assert_eq!(versions, (1500..2110).collect::<Vec<_>>());
    assert_eq!(
        newest_versions(&log, &room, 50).await,
        (2060..2110).rev().collect::<Vec<_>>()
    );
    log.close().await.unwrap();
}

/// A recent file that does not decode is ignored: the open waits for sled as without one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_recent_file_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let room = StreamId::new("room/a").unwrap();
    let (log, _) = open(dir.path()).await;
    fill(&log, &room, 1200).await;
    log.close().await.unwrap();
    let bytes = std::fs::read(recent(dir.path())).unwrap();
    std::fs::write(recent(dir.path()), &bytes[..bytes.len() / 2]).unwrap();
    let (log, report) = open(dir.path()).await;
    assert_eq!(report.index.rebuilt, None);
    assert!(
        !recent(dir.path()).exists(),
        "removed by the open, before sled"
    );
    check(&log, &[(&room, 1200)]).await;
    log.close().await.unwrap();
}

/// With a recent file, sled's open starts only after the replay (so it does not take a core
/// from the replay's threads), but it does start by itself: with no call that needs sled, the
/// background open removes the recent file soon after the log has opened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_opens_by_itself_after_an_open_that_answered_from_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let room = StreamId::new("room/a").unwrap();
    let (log, _) = open(dir.path()).await;
    fill(&log, &room, 300).await;
    log.close().await.unwrap();
    assert!(recent(dir.path()).exists());

    let (log, report) = open(dir.path()).await;
    assert_eq!(report.index.rebuilt, None);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while recent(dir.path()).exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the background open never started: the recent file is still there"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(
        versions_forward(&log, &room, 300).await,
        (0..300).collect::<Vec<_>>()
    );
    log.close().await.unwrap();
    assert!(recent(dir.path()).exists(), "a clean close writes it again");
}
