//! Bad input is refused with typed errors and leaves the log unchanged.

use logbook::{Error, ExpectedVersion, Logbook, MemoryStorage, StreamId};
use logbook_tests::{CounterEvent, added, test_options};
use std::sync::Arc;

#[tokio::test]
async fn bad_stream_ids_are_refused_before_the_log() {
    assert!(StreamId::new("").is_err());
    assert!(StreamId::new("x".repeat(257)).is_err());
    assert!(StreamId::new("room/a\u{7}b").is_err());
    assert!(StreamId::new("room/a\nb").is_err());
    assert!(StreamId::new("room/").is_err());
    assert!(StreamId::new("x".repeat(256)).is_ok());
}

#[tokio::test]
async fn oversized_too_many_reserved_and_deleted_are_refused() {
    let mut options = test_options();
    options.append_events_max = 10;
    options.wal.record_bytes_max = 4096;
    let storage = Arc::new(MemoryStorage::new());
    let (log, _) = Logbook::<CounterEvent>::open_with_storage(storage, "/log", options)
        .await
        .unwrap();
    let stream = StreamId::new("counter/bad").unwrap();
    log.append(&stream, ExpectedVersion::NoStream, vec![added(1, "ok")])
        .await
        .unwrap();
    let head = log.stats().head_position;

    let error = log
        .append(
            &stream,
            ExpectedVersion::Any,
            vec![added(1, &"x".repeat(5000))],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            Error::LimitExceeded {
                what: "encoded event bytes",
                ..
            }
        ),
        "{error}"
    );
    let error = log
        .append(
            &stream,
            ExpectedVersion::Any,
            (0..11).map(|amount| added(amount, "")).collect(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            Error::LimitExceeded {
                limit: 10,
                actual: 11,
                ..
            }
        ),
        "{error}"
    );
    let error = log
        .append(&stream, ExpectedVersion::Any, vec![])
        .await
        .unwrap_err();
    assert!(
        matches!(error, Error::LimitExceeded { actual: 0, .. }),
        "{error}"
    );
    let reserved = StreamId::new("$logbook").unwrap();
    let error = log
        .append(&reserved, ExpectedVersion::Any, vec![added(1, "")])
        .await
        .unwrap_err();
    assert!(matches!(error, Error::ReservedStream { .. }), "{error}");
    assert_eq!(log.stats().head_position, head, "nothing written");

    log.delete_stream(&stream, ExpectedVersion::Exact(0))
        .await
        .unwrap();
    let head = log.stats().head_position;
    let error = log
        .append(&stream, ExpectedVersion::Any, vec![added(1, "")])
        .await
        .unwrap_err();
    assert!(matches!(error, Error::StreamDeleted { .. }), "{error}");
    assert_eq!(log.stats().head_position, head, "nothing written");
    log.close().await.unwrap();
}
