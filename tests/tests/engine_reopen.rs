//! Close (or drop) and reopen: stream versions, reads and positions are identical.

use logbook::{Direction, ExpectedVersion, Logbook, MemoryStorage, RecordedEvent, StreamId};
use logbook_tests::{CounterEvent, added, test_options};
use std::sync::Arc;

fn options() -> logbook::LogbookOptions {
    let mut options = test_options();
    options.wal.segment_bytes_max = 8 * 1024;
    options
}

async fn everything(log: &Logbook<CounterEvent>) -> Vec<RecordedEvent<CounterEvent>> {
    log.read_all(1, usize::MAX).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_gives_identical_streams_reads_and_positions() {
    let storage = Arc::new(MemoryStorage::new());
    let (log, report) =
        Logbook::<CounterEvent>::open_with_storage(storage.clone(), "/log", options())
            .await
            .unwrap();
    assert_eq!(report.events_replayed, 0);
    let streams: Vec<StreamId> = (0..7)
        .map(|index| StreamId::new(format!("counter/{index}")).unwrap())
        .collect();
    for round in 0..60u64 {
        let stream = &streams[(round % 7) as usize];
        let note = "x".repeat((round * 37 % 900) as usize);
        log.append(
            stream,
            ExpectedVersion::Any,
            vec![added(round, &note), added(round + 1, "")],
        )
        .await
        .unwrap();
    }
    let before = everything(&log).await;
    let versions: Vec<_> = streams
        .iter()
        .map(|stream| log.stream_version(stream).unwrap())
        .collect();
    assert!(
        log.stats().backend.embedded().unwrap().segments > 1,
        "the test wants segment rolls"
    );
    log.close().await.unwrap();

    let (log, report) =
        Logbook::<CounterEvent>::open_with_storage(storage.clone(), "/log", options())
            .await
            .unwrap();
    assert_eq!(report.events_replayed, 120);
    assert_eq!(report.streams, 7);
    assert_eq!(everything(&log).await, before);
    for (stream, version) in streams.iter().zip(&versions) {
        assert_eq!(log.stream_version(stream).unwrap(), *version);
        let forward = log
            .read_stream(stream, 0, Direction::Forward, 1000)
            .await
            .unwrap();
        let mut backward = log
            .read_stream(stream, u64::MAX, Direction::Backward, 1000)
            .await
            .unwrap();
        backward.reverse();
        assert_eq!(forward, backward);
        let expected: Vec<_> = before
            .iter()
            .filter(|event| &event.stream == stream)
            .cloned()
            .collect();
        assert_eq!(forward, expected);
    }
    // Appends continue at the next position and version.
    let next = log
        .append(&streams[0], ExpectedVersion::Any, vec![added(9, "")])
        .await
        .unwrap();
    assert_eq!(next.first_position, before.last().unwrap().position + 1);
    assert_eq!(next.version, versions[0].unwrap() + 1);
    // Dropping without close loses nothing acknowledged.
    drop(log);
    let reopened = loop {
        match Logbook::<CounterEvent>::open_with_storage(storage.clone(), "/log", options()).await {
            Ok((log, _)) => break log,
            Err(logbook::Error::Wal(logbook_wal::Error::Locked { .. })) => {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            Err(other) => panic!("{other}"),
        }
    };
    assert_eq!(everything(&reopened).await.len(), 121);
    reopened.close().await.unwrap();
}

#[tokio::test]
async fn read_stream_pages_forward_and_backward() {
    let storage = Arc::new(MemoryStorage::new());
    let (log, _) = Logbook::<CounterEvent>::open_with_storage(storage, "/log", options())
        .await
        .unwrap();
    let stream = StreamId::new("counter/pages").unwrap();
    for amount in 0..30 {
        log.append(&stream, ExpectedVersion::Any, vec![added(amount, "")])
            .await
            .unwrap();
    }
    let page = log
        .read_stream(&stream, 10, Direction::Forward, 5)
        .await
        .unwrap();
    assert_eq!(
        page.iter().map(|event| event.version).collect::<Vec<_>>(),
        vec![10, 11, 12, 13, 14]
    );
    let page = log
        .read_stream(&stream, 10, Direction::Backward, 3)
        .await
        .unwrap();
    assert_eq!(
        page.iter().map(|event| event.version).collect::<Vec<_>>(),
        vec![10, 9, 8]
    );
    let page = log
        .read_stream(&stream, u64::MAX, Direction::Backward, 2)
        .await
        .unwrap();
    assert_eq!(
        page.iter().map(|event| event.version).collect::<Vec<_>>(),
        vec![29, 28]
    );
    assert!(
        log.read_stream(&stream, 30, Direction::Forward, 5)
            .await
            .unwrap()
            .is_empty()
    );
    let missing = StreamId::new("counter/none").unwrap();
    assert!(
        log.read_stream(&missing, 0, Direction::Forward, 5)
            .await
            .unwrap()
            .is_empty()
    );
    log.close().await.unwrap();
}
