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
