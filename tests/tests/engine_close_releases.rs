//! `close` returning `Ok` means the log can be opened again at once, whatever handles the
//! service still holds: a live `Subscription` or a clone of the `Logbook`. Before, both kept
//! the WAL's lock and the stream index open after `close` returned `Ok`, and the next open in
//! the same process failed with `Locked` (a trap found by the newcomer trial of issue 12).

use logbook::{ExpectedVersion, Logbook, StreamId};
use logbook_tests::{CounterEvent, added, test_options};
use std::time::Duration;

async fn open(dir: &std::path::Path) -> Logbook<CounterEvent> {
    let (log, _) = Logbook::open(dir, test_options()).await.expect("open");
    log
}

#[tokio::test]
async fn a_live_subscription_does_not_keep_a_closed_log_locked() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = open(dir.path()).await;
    let stream = StreamId::new("counter-a").expect("stream id");
    log.append(&stream, ExpectedVersion::NoStream, vec![added(1, "a")])
        .await
        .expect("append");
    let mut subscription = log.subscribe(0);
    let first = subscription.next().await.expect("open").expect("event");
    assert_eq!(first.position, 1);
    log.close().await.expect("close");

    // The subscription ends (every durable event was delivered), it does not hang.
    let end = tokio::time::timeout(Duration::from_secs(10), subscription.next())
        .await
        .expect("the subscription ends after close");
    assert!(end.is_none(), "{end:?}");

    let log = open(dir.path()).await;
    assert_eq!(log.read_all(0, 10).await.expect("read").len(), 1);
    log.close().await.expect("close");
    drop(subscription);
}

#[tokio::test]
async fn a_subscription_created_before_close_and_never_polled_does_not_either() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = open(dir.path()).await;
    let subscription = log.subscribe(0);
    log.close().await.expect("close");
    let log = open(dir.path()).await;
    log.close().await.expect("close");
    drop(subscription);
}

#[tokio::test]
async fn a_clone_of_the_handle_does_not_keep_a_closed_log_locked() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = open(dir.path()).await;
    let clone = log.clone();
    let stream = StreamId::new("counter-b").expect("stream id");
    log.append(&stream, ExpectedVersion::NoStream, vec![added(1, "b")])
        .await
        .expect("append");
    log.close().await.expect("close");

    let appended = clone
        .append(&stream, ExpectedVersion::Exact(0), vec![added(2, "late")])
        .await;
    assert!(
        matches!(appended, Err(logbook::Error::Closed)),
        "{appended:?}"
    );

    let log = open(dir.path()).await;
    assert_eq!(log.stream_version(&stream).expect("version"), Some(0));
    log.close().await.expect("close");
    drop(clone);
}
