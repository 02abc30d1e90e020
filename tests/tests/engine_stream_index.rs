//! The persistent stream index (sled): no rebuild at startup, catch-up after a crash, wipe and
//! rebuild when it is damaged; reads stay correct throughout.

use logbook::{Direction, ExpectedVersion, Logbook, StreamId};
use logbook_tests::{CounterEvent, added, test_options};

async fn open(dir: &std::path::Path) -> (Logbook<CounterEvent>, logbook::OpenReport) {
    Logbook::<CounterEvent>::open(dir, test_options())
        .await
        .unwrap()
}

async fn versions(log: &Logbook<CounterEvent>, stream: &StreamId) -> Vec<u64> {
    let events = log
        .read_stream(stream, 0, Direction::Forward, 10_000)
        .await
        .unwrap();
    events.iter().map(|event| event.version).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_persists_catches_up_and_rebuilds() {
    let dir = tempfile::tempdir().unwrap();
    let streams: Vec<StreamId> = (0..5)
        .map(|index| StreamId::new(format!("counter/{index}")).unwrap())
        .collect();
    let (log, report) = open(dir.path()).await;
    assert_eq!(report.index.complete_position, 0);
    for round in 0..200u64 {
        let stream = &streams[(round % 5) as usize];
        log.append(stream, ExpectedVersion::Any, vec![added(round, "")])
            .await
            .unwrap();
    }
    log.truncate_stream(&streams[1], 10).await.unwrap();
    log.delete_stream(&streams[2], ExpectedVersion::Any)
        .await
        .unwrap();
    let head = log.stats().durable_position;
    log.close().await.unwrap();

    let (log, report) = open(dir.path()).await;
    assert_eq!(report.index.rebuilt, None);
    assert_eq!(
        report.index.complete_position, head,
        "the index was complete: nothing to rebuild"
    );
    assert_eq!(
        versions(&log, &streams[0]).await,
        (0..40).collect::<Vec<_>>()
    );
    assert_eq!(
        versions(&log, &streams[1]).await,
        (10..40).collect::<Vec<_>>()
    );
    assert!(
        log.read_stream(&streams[2], 0, Direction::Forward, 10)
            .await
            .is_err()
    );
    log.close().await.unwrap();

    // Damage the index: it is wiped, rebuilt from the WAL, and reads are the same.
    let index_dir = dir.path().join("index");
    for entry in std::fs::read_dir(&index_dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::write(&path, b"garbage that is not sled").unwrap();
        }
    }
    let (log, report) = open(dir.path()).await;
    assert!(
        report.index.rebuilt.is_some() || report.index.complete_position == head,
        "{report:?}"
    );
    assert_eq!(
        versions(&log, &streams[0]).await,
        (0..40).collect::<Vec<_>>()
    );
    assert_eq!(
        versions(&log, &streams[1]).await,
        (10..40).collect::<Vec<_>>()
    );
    let backward = log
        .read_stream(&streams[3], u64::MAX, Direction::Backward, 3)
        .await
        .unwrap();
    assert_eq!(
        backward
            .iter()
            .map(|event| event.version)
            .collect::<Vec<_>>(),
        vec![39, 38, 37]
    );
    log.close().await.unwrap();

    // A missing index is rebuilt too.
    std::fs::remove_dir_all(&index_dir).unwrap();
    let (log, report) = open(dir.path()).await;
    assert_eq!(report.index.complete_position, 0);
    assert_eq!(
        versions(&log, &streams[4]).await,
        (0..40).collect::<Vec<_>>()
    );
    log.close().await.unwrap();
}

/// A backward page is read forward with one reader (through short runs of another stream's
/// records, seeking past long ones, across segments) and handed back newest first: every
/// backward page is the forward read reversed, whatever lies between the stream's events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backward_pages_read_through_and_past_other_streams() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path()).await;
    let tail = StreamId::new("counter/tail").unwrap();
    let other = StreamId::new("counter/other").unwrap();
    // Runs of the other stream between the tail's events: none, short, around the read-through
    // limit (256 records) and past it.
    let gaps = [0usize, 1, 3, 50, 255, 256, 257, 600, 2, 0];
    for (version, &gap) in gaps.iter().enumerate() {
        if gap > 0 {
            let batch = (0..gap).map(|index| added(index as u64, "x")).collect();
            log.append(&other, ExpectedVersion::Any, batch)
                .await
                .unwrap();
        }
        log.append(
            &tail,
            ExpectedVersion::Any,
            vec![added(version as u64, "tail")],
        )
        .await
        .unwrap();
    }
    let forward = log
        .read_stream(&tail, 0, Direction::Forward, 100)
        .await
        .unwrap();
    assert_eq!(
        forward
            .iter()
            .map(|event| event.version)
            .collect::<Vec<_>>(),
        (0..gaps.len() as u64).collect::<Vec<_>>()
    );
    for from in (0..gaps.len() as u64).chain([u64::MAX]) {
        for max in 1..=gaps.len() + 1 {
            let backward = log
                .read_stream(&tail, from, Direction::Backward, max)
                .await
                .unwrap();
            let newest = from.min(gaps.len() as u64 - 1) as usize;
            let expected: Vec<_> = forward[..=newest].iter().rev().take(max).cloned().collect();
            assert_eq!(backward, expected, "from {from}, max {max}");
        }
    }
    // Forward pages that start mid-stream agree too.
    for from in 0..gaps.len() as u64 {
        let page = log
            .read_stream(&tail, from, Direction::Forward, 3)
            .await
            .unwrap();
        let expected: Vec<_> = forward[from as usize..].iter().take(3).cloned().collect();
        assert_eq!(page, expected, "from {from}");
    }
    log.close().await.unwrap();
}
