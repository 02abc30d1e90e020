//! Deleting and truncating streams: reads and appends follow, and survive reopen.

use logbook::{Direction, Error, ExpectedVersion, Logbook, MemoryStorage, StreamId};
use logbook_tests::{CounterEvent, added, test_options};
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_and_truncate_hold_across_reopen() {
    let storage = Arc::new(MemoryStorage::new());
    let (log, _) =
        Logbook::<CounterEvent>::open_with_storage(storage.clone(), "/log", test_options())
            .await
            .unwrap();
    let doomed = StreamId::new("counter/doomed").unwrap();
    let session = StreamId::new("counter/session").unwrap();
    for amount in 0..5 {
        log.append(&doomed, ExpectedVersion::Any, vec![added(amount, "")])
            .await
            .unwrap();
        log.append(&session, ExpectedVersion::Any, vec![added(amount, "")])
            .await
            .unwrap();
    }
    let error = log
        .delete_stream(&doomed, ExpectedVersion::Exact(3))
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            Error::WrongExpectedVersion {
                actual: Some(4),
                ..
            }
        ),
        "{error}"
    );
    log.delete_stream(&doomed, ExpectedVersion::Exact(4))
        .await
        .unwrap();
    log.truncate_stream(&session, 3).await.unwrap();
    assert!(log.truncate_stream(&session, 99).await.is_err());
    let error = log
        .read_stream(&doomed, 0, Direction::Forward, 10)
        .await
        .unwrap_err();
    assert!(matches!(error, Error::StreamDeleted { .. }), "{error}");
    assert!(matches!(
        log.stream_version(&doomed),
        Err(Error::StreamDeleted { .. })
    ));
    let visible = log
        .read_stream(&session, 0, Direction::Forward, 10)
        .await
        .unwrap();
    assert_eq!(
        visible
            .iter()
            .map(|event| event.version)
            .collect::<Vec<_>>(),
        vec![3, 4]
    );
    let backward = log
        .read_stream(&session, u64::MAX, Direction::Backward, 10)
        .await
        .unwrap();
    assert_eq!(
        backward
            .iter()
            .map(|event| event.version)
            .collect::<Vec<_>>(),
        vec![4, 3]
    );
    // The truncated stream stays usable; versions continue.
    let next = log
        .append(&session, ExpectedVersion::Any, vec![added(9, "")])
        .await
        .unwrap();
    assert!(next.version >= 5);
    // The engine's own events never reach typed readers.
    let all = log.read_all(1, 1000).await.unwrap();
    assert!(
        all.iter()
            .all(|event| !event.stream.as_str().starts_with('$'))
    );
    log.clone().close().await.unwrap();
    drop(log);
    let (reopened, _) =
        Logbook::<CounterEvent>::open_with_storage(storage.clone(), "/log", test_options())
            .await
            .unwrap();
    check_reopened(reopened, &doomed, &session).await;
}

async fn check_reopened(log: Logbook<CounterEvent>, doomed: &StreamId, session: &StreamId) {
    assert!(matches!(
        log.read_stream(doomed, 0, Direction::Forward, 10).await,
        Err(Error::StreamDeleted { .. })
    ));
    let visible = log
        .read_stream(session, 0, Direction::Forward, 10)
        .await
        .unwrap();
    assert_eq!(
        visible
            .iter()
            .map(|event| event.version)
            .collect::<Vec<_>>(),
        vec![3, 4, 5]
    );
    let error = log
        .append(doomed, ExpectedVersion::Any, vec![added(1, "")])
        .await
        .unwrap_err();
    assert!(matches!(error, Error::StreamDeleted { .. }), "{error}");
    log.close().await.unwrap();
}
