//! Opening a log whose stream index (sled) opens on a thread of its own, beside the snapshot
//! load: the open report still says where the index was complete, an open that appends nothing
//! leaves the WAL's files as they were, the first query after open sees every event, and what
//! the index thread finds (a marker past the log's end, an index that cannot be opened or wiped)
//! fails the open with its cause instead of being lost with the thread.

use logbook::{Direction, Error, ExpectedVersion, Logbook, StreamId};
use logbook_tests::{CounterEvent, added, newest_versions, test_options};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

type Log = Logbook<CounterEvent>;

async fn open(dir: &Path) -> (Log, logbook::OpenReport) {
    Log::open(dir, test_options()).await.unwrap()
}

/// Appends `count` events to `stream`, in appends of 10.
async fn fill(log: &Log, stream: &StreamId, count: u64) {
    for first in (0..count).step_by(10) {
        let events = (first..(first + 10).min(count))
            .map(|amount| added(amount, "a note long enough to fill segments quickly"))
            .collect();
        log.append(stream, ExpectedVersion::Any, events)
            .await
            .unwrap();
    }
}

/// Every file of `wal/` with its bytes.
fn wal_files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    std::fs::read_dir(dir.join("wal"))
        .unwrap()
        .map(|entry| {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopening_without_appends_changes_no_wal_file_and_finds_the_index_complete() {
    let dir = tempfile::tempdir().unwrap();
    let room = StreamId::new("room/a").unwrap();
    let other = StreamId::new("room/b").unwrap();
    let (log, _) = open(dir.path()).await;
    fill(&log, &room, 700).await;
    fill(&log, &other, 30).await;
    let head = log.stats().durable_position;
    log.close().await.unwrap();
    let files = wal_files(dir.path());
    assert!(files.len() > 3, "several segments, sidecars, a manifest");
    for round in 0..3 {
        let (log, report) = open(dir.path()).await;
        assert_eq!(report.index.rebuilt, None, "round {round}");
        assert_eq!(report.index.complete_position, head, "round {round}");
        assert_eq!(
            report.wal.bytes_scanned, 0,
            "round {round}: {:?}",
            report.wal
        );
        // The first query after open: the newest events, newest first.
        assert_eq!(
            newest_versions(&log, &room, 50).await,
            (650..700).rev().collect::<Vec<_>>(),
            "round {round}"
        );
        assert_eq!(
            newest_versions(&log, &other, 50).await,
            (0..30).rev().collect::<Vec<_>>()
        );
        log.close().await.unwrap();
        assert_eq!(
            wal_files(dir.path()),
            files,
            "round {round}: no WAL file changed"
        );
    }
    // Appends after such an open go on from the end, and the next open sees them all.
    let (log, _) = open(dir.path()).await;
    fill(&log, &room, 20).await;
    let head = log.stats().durable_position;
    log.close().await.unwrap();
    let (log, report) = open(dir.path()).await;
    assert_eq!(report.index.complete_position, head);
    assert_eq!(newest_versions(&log, &room, 3).await, vec![719, 718, 717]);
    let all = log
        .read_stream(&room, 0, Direction::Forward, 10_000)
        .await
        .unwrap();
    assert_eq!(
        all.iter().map(|event| event.version).collect::<Vec<_>>(),
        (0..720).collect::<Vec<_>>()
    );
    log.close().await.unwrap();
}

/// An index whose completeness marker is past the log's end is evidence that acknowledged
/// events are missing: the open fails with `LogBehind` naming the index, although the index
/// was opened on another thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_ahead_of_the_log_fails_the_open_with_its_evidence() {
    let room = StreamId::new("room/a").unwrap();
    let long = tempfile::tempdir().unwrap();
    let (log, _) = open(long.path()).await;
    fill(&log, &room, 100).await;
    log.close().await.unwrap();
    let short = tempfile::tempdir().unwrap();
    let (log, _) = open(short.path()).await;
    fill(&log, &room, 10).await;
    log.close().await.unwrap();
    // The longer log's index in place of the shorter log's.
    std::fs::remove_dir_all(short.path().join("index")).unwrap();
    copy_dir(&long.path().join("index"), &short.path().join("index"));
    let error = Log::open(short.path(), test_options()).await.unwrap_err();
    // Lost acknowledged events are damage an operator must act on: `Damaged` says how.
    match &error {
        Error::Damaged {
            wal:
                logbook_wal::Error::LogBehind {
                    reached,
                    end,
                    evidence,
                },
            ..
        } => {
            assert_eq!((*reached, *end), (100, 10), "{error}");
            assert!(evidence.contains("stream index"), "{error}");
        }
        other => panic!("expected LogBehind from the index, got {other:?}"),
    }
    // The refused open released everything: the same open fails the same way again.
    let again = Log::open(short.path(), test_options()).await.unwrap_err();
    assert!(
        matches!(
            again,
            Error::Damaged {
                wal: logbook_wal::Error::LogBehind { .. },
                ..
            }
        ),
        "{again}"
    );
}

/// An index that can neither be opened nor wiped (here `index` is a file, not a directory)
/// fails the open with an error that names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_that_cannot_be_opened_or_wiped_fails_the_open() {
    let dir = tempfile::tempdir().unwrap();
    let room = StreamId::new("room/a").unwrap();
    let (log, _) = open(dir.path()).await;
    fill(&log, &room, 10).await;
    log.close().await.unwrap();
    let index = dir.path().join("index");
    std::fs::remove_dir_all(&index).unwrap();
    std::fs::write(&index, b"not a directory").unwrap();
    let error = Log::open(dir.path(), test_options()).await.unwrap_err();
    assert!(
        error.to_string().contains(&index.display().to_string()),
        "the error names the index: {error}"
    );
    // Once the obstacle is gone, the index is rebuilt and every event is found.
    std::fs::remove_file(&index).unwrap();
    let (log, report) = open(dir.path()).await;
    assert_eq!(report.index.complete_position, 0);
    assert_eq!(
        newest_versions(&log, &room, 20).await,
        (0..10).rev().collect::<Vec<_>>()
    );
    log.close().await.unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

/// The index opens on tokio's blocking pool when there is one; a pool with no idle thread (here
/// its only thread runs the open itself) must not make the open wait for one: the open claims
/// the index open and runs it in line. (Without that claim this test hangs until its timeout.)
#[test]
fn an_open_on_a_blocking_pool_of_one_thread_does_not_wait_for_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let room = StreamId::new("room/a").unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        for round in 0..3u64 {
            let reopened = tokio::time::timeout(std::time::Duration::from_secs(60), async {
                let (log, report) = open(dir.path()).await;
                fill(&log, &room, 10).await;
                assert_eq!(
                    newest_versions(&log, &room, 3).await,
                    vec![10 * round + 9, 10 * round + 8, 10 * round + 7]
                );
                log.close().await.unwrap();
                report
            })
            .await
            .expect("the open waited for a blocking thread that never came");
            assert!(reopened.index.rebuilt.is_none(), "{:?}", reopened.index);
        }
    });
}
