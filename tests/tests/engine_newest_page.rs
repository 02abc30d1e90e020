//! Small pages at a stream's end (the newest 50 of a chat room): served from the stream
//! index's memory of each stream's last sled chunk and read on the caller's thread, they stay
//! right after appends, the index's tail being written to sled, truncation, compaction's
//! purge, deletion and a reopen; and a page whose records are spread thin among other streams'
//! is read whole (past the caller's-thread frame budget, on the blocking pool).

use logbook::{Direction, ExpectedVersion, Logbook, StreamId};
use logbook_tests::{CounterEvent, added, test_options};

type Log = Logbook<CounterEvent>;

async fn open(dir: &std::path::Path) -> Log {
    Log::open(dir, test_options()).await.unwrap().0
}

/// Appends `count` events whose amount is their version (the stream's next versions).
async fn append(log: &Log, stream: &StreamId, count: u64) {
    let mut written = 0;
    while written < count {
        let next = log
            .stream_version(stream)
            .unwrap()
            .map_or(0, |last| last + 1);
        let batch = (count - written).min(1000);
        let events = (next..next + batch)
            .map(|version| added(version, ""))
            .collect();
        log.append(stream, ExpectedVersion::Any, events)
            .await
            .unwrap();
        written += batch;
    }
}

/// The versions of a page, each event checked to be the one appended at that version.
async fn page(
    log: &Log,
    stream: &StreamId,
    from: u64,
    direction: Direction,
    max: usize,
) -> Vec<u64> {
    let events = log.read_stream(stream, from, direction, max).await.unwrap();
    for event in &events {
        assert!(
            matches!(event.event, CounterEvent::Added { amount, .. } if amount == event.version),
            "{event:?}"
        );
        assert_eq!(&event.stream, stream);
    }
    events.iter().map(|event| event.version).collect()
}

async fn newest(log: &Log, stream: &StreamId, max: usize) -> Vec<u64> {
    page(log, stream, u64::MAX, Direction::Backward, max).await
}

fn down(from: u64, count: u64) -> Vec<u64> {
    (from + 1 - count..=from).rev().collect()
}

#[tokio::test]
async fn newest_page_follows_appends_flushes_truncation_purge_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let room = StreamId::new("room/cache").unwrap();
    let other = StreamId::new("room/other").unwrap();
    let log = open(dir.path()).await;
    append(&log, &room, 3000).await;
    log.close().await.unwrap();

    // Reopened: the index's entries are in sled, its tail is empty.
    let log = open(dir.path()).await;
    assert_eq!(newest(&log, &room, 50).await, down(2999, 50));
    assert_eq!(newest(&log, &room, 50).await, down(2999, 50), "warm");
    assert_eq!(
        page(&log, &room, 2990, Direction::Forward, 50).await,
        (2990..3000).collect::<Vec<_>>(),
        "a forward page at the stream's end"
    );
    // New events (the index's in-memory tail) on top of the remembered chunk.
    append(&log, &room, 10).await;
    assert_eq!(newest(&log, &room, 50).await, down(3009, 50));
    assert_eq!(
        page(&log, &room, 2990, Direction::Forward, 50).await,
        (2990..3010).collect::<Vec<_>>()
    );
    // Enough appends that the tail is written to sled (it holds 16,384 entries), into the
    // chunk the index remembered and new ones after it.
    append(&log, &other, 8000).await;
    append(&log, &room, 9000).await;
    assert_eq!(newest(&log, &room, 50).await, down(12_009, 50));
    assert_eq!(newest(&log, &room, 3).await, down(12_009, 3));
    assert_eq!(
        page(&log, &room, 11_990, Direction::Forward, 50).await,
        (11_990..12_010).collect::<Vec<_>>()
    );
    assert_eq!(
        page(&log, &room, 3020, Direction::Backward, 50).await,
        down(3020, 50),
        "below the last chunk"
    );

    // Truncation leaves 20 events; compaction purges the others from the files.
    log.truncate_stream(&room, 11_990).await.unwrap();
    assert_eq!(newest(&log, &room, 50).await, down(12_009, 20));
    log.compact().await.unwrap();
    assert_eq!(newest(&log, &room, 50).await, down(12_009, 20));
    assert_eq!(
        page(&log, &room, 0, Direction::Forward, 50).await,
        (11_990..12_010).collect::<Vec<_>>()
    );
    append(&log, &room, 5).await;
    assert_eq!(newest(&log, &room, 50).await, down(12_014, 25));
    log.close().await.unwrap();

    let log = open(dir.path()).await;
    assert_eq!(newest(&log, &room, 50).await, down(12_014, 25));
    assert_eq!(newest(&log, &other, 50).await, down(7999, 50));
    log.delete_stream(&room, ExpectedVersion::Any)
        .await
        .unwrap();
    assert!(
        log.read_stream(&room, u64::MAX, Direction::Backward, 50)
            .await
            .is_err(),
        "a deleted stream is not read"
    );
    assert_eq!(newest(&log, &other, 50).await, down(7999, 50));
    log.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_page_spread_among_other_streams_is_read_whole() {
    let dir = tempfile::tempdir().unwrap();
    let room = StreamId::new("room/sparse").unwrap();
    let busy = StreamId::new("room/busy").unwrap();
    let log = open(dir.path()).await;
    // Each event of `room` is followed by 30 of `busy`: the newest 50 of `room` span about
    // 1,500 records, past the frame budget of a read on the caller's thread.
    for _ in 0..120 {
        append(&log, &room, 1).await;
        append(&log, &busy, 30).await;
    }
    assert_eq!(
        newest(&log, &room, 50).await,
        down(119, 50),
        "from the tail"
    );
    log.close().await.unwrap();

    let log = open(dir.path()).await;
    for _ in 0..2 {
        assert_eq!(newest(&log, &room, 50).await, down(119, 50));
        assert_eq!(newest(&log, &room, 5).await, down(119, 5));
        assert_eq!(
            page(&log, &room, 60, Direction::Backward, 64).await,
            down(60, 61)
        );
        assert_eq!(
            page(&log, &room, 100, Direction::Forward, 64).await,
            (100..120).collect::<Vec<_>>()
        );
    }
    log.close().await.unwrap();
}
