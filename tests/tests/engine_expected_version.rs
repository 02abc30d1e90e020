//! Racing appends with the same expected version: exactly one wins per version.

use logbook::{Error, ExpectedVersion, Logbook, MemoryStorage, StreamId};
use logbook_tests::{CounterEvent, added, test_options};
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exactly_one_racer_wins_each_version() {
    let storage = Arc::new(MemoryStorage::new());
    let (log, _) = Logbook::<CounterEvent>::open_with_storage(storage, "/log", test_options())
        .await
        .unwrap();
    let stream = StreamId::new("counter/race").unwrap();
    for version in 0..20u64 {
        let expected = if version == 0 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exact(version - 1)
        };
        let mut tasks = Vec::new();
        for racer in 0..16 {
            let log = log.clone();
            let stream = stream.clone();
            tasks.push(tokio::spawn(async move {
                log.append(&stream, expected, vec![added(racer, "race")])
                    .await
            }));
        }
        let mut wins = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(result) => {
                    wins += 1;
                    assert_eq!(result.version, version);
                }
                Err(Error::WrongExpectedVersion {
                    actual,
                    expected: seen,
                    ..
                }) => {
                    assert_eq!(seen, expected);
                    assert_eq!(actual, Some(version));
                }
                Err(other) => panic!("unexpected error {other}"),
            }
        }
        assert_eq!(wins, 1, "version {version}");
    }
    let events = log
        .read_stream(&stream, 0, logbook::Direction::Forward, 100)
        .await
        .unwrap();
    assert_eq!(events.len(), 20);
    assert!(
        events
            .iter()
            .enumerate()
            .all(|(index, event)| event.version == index as u64)
    );
    log.close().await.unwrap();
}

#[tokio::test]
async fn expected_version_kinds() {
    let storage = Arc::new(MemoryStorage::new());
    let (log, _) = Logbook::<CounterEvent>::open_with_storage(storage, "/log", test_options())
        .await
        .unwrap();
    let stream = StreamId::new("counter/kinds").unwrap();
    let error = log
        .append(&stream, ExpectedVersion::StreamExists, vec![added(1, "")])
        .await
        .unwrap_err();
    assert!(
        matches!(error, Error::WrongExpectedVersion { actual: None, .. }),
        "{error}"
    );
    let error = log
        .append(&stream, ExpectedVersion::Exact(0), vec![added(1, "")])
        .await
        .unwrap_err();
    assert!(
        matches!(error, Error::WrongExpectedVersion { actual: None, .. }),
        "{error}"
    );
    let first = log
        .append(
            &stream,
            ExpectedVersion::NoStream,
            vec![added(1, ""), added(2, "")],
        )
        .await
        .unwrap();
    assert_eq!((first.first_version, first.version), (0, 1));
    assert_eq!(first.last_position - first.first_position, 1);
    let error = log
        .append(&stream, ExpectedVersion::NoStream, vec![added(1, "")])
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            Error::WrongExpectedVersion {
                actual: Some(1),
                ..
            }
        ),
        "{error}"
    );
    log.append(&stream, ExpectedVersion::StreamExists, vec![added(3, "")])
        .await
        .unwrap();
    log.append(&stream, ExpectedVersion::Any, vec![added(4, "")])
        .await
        .unwrap();
    let last = log
        .append(&stream, ExpectedVersion::Exact(3), vec![added(5, "")])
        .await
        .unwrap();
    assert_eq!(last.version, 4);
    assert_eq!(log.stream_version(&stream).unwrap(), Some(4));
    log.close().await.unwrap();
}
