//! Following the global log: catch-up from any position, live pages woken by the listener,
//! the poll as the safety net, and the listener reconnecting by itself.

mod common;

use common::{fresh_database, open, request};
use logbook_pgtest::Cluster;
use logbook_postgres::{ExpectedVersion, FollowOptions, PgStore};
use logbook_projection::Envelope;
use std::time::{Duration, Instant};

/// Long enough that a test passing within it was woken, not polled.
const NO_POLL: Duration = Duration::from_secs(60);
const WAIT: Duration = Duration::from_secs(10);

async fn positions_until(
    follower: &mut logbook_postgres::Follower,
    last: u64,
    within: Duration,
) -> Vec<u64> {
    let started = Instant::now();
    let mut seen = Vec::new();
    while seen.last().copied().unwrap_or(0) < last {
        let left = within.saturating_sub(started.elapsed());
        assert!(!left.is_zero(), "only {seen:?} seen within {within:?}");
        let page = follower.next_page_within(left).await.expect("follow");
        seen.extend(page.iter().map(|raw| raw.position));
    }
    seen
}

async fn append(store: &PgStore, name: &str, count: usize) {
    store
        .append(request(name, ExpectedVersion::Any, count))
        .await
        .expect("append");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_catches_up_then_follows_live_appends_woken_not_polled() {
    let database = fresh_database();
    let store = open(&database).await;
    append(&store, "room/a", 5).await;
    let options = FollowOptions {
        poll_interval: NO_POLL,
        page_max: 2,
        ..FollowOptions::default()
    };
    let mut follower = store.follow(3, options);
    assert_eq!(positions_until(&mut follower, 5, WAIT).await, vec![3, 4, 5]);
    let writer = store.clone();
    let appender = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        append(&writer, "room/b", 3).await;
    });
    assert_eq!(positions_until(&mut follower, 8, WAIT).await, vec![6, 7, 8]);
    appender.await.expect("appender");
    assert_eq!(follower.next_position(), 9);
}

/// Waits until `count` listener connections are in the database's sessions.
async fn wait_for_listeners(database: &logbook_pgtest::TestDatabase, count: usize) {
    let started = Instant::now();
    loop {
        let listeners = Cluster::shared().psql(
            database.name(),
            "SELECT count(*) FROM pg_stat_activity
             WHERE query LIKE 'LISTEN%' AND datname = current_database()",
        );
        if listeners == count.to_string() {
            return;
        }
        assert!(
            started.elapsed() < WAIT,
            "{listeners} listeners, not {count}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Writes one event at `position` by plain SQL, as logbook would but without a NOTIFY.
async fn insert_without_notify(client: &tokio_postgres::Client, position: i64) {
    let stream = common::stream("room/silent");
    let version = position - 1;
    let data = common::event("silent");
    let envelope = Envelope::new(stream.clone(), version as u64, 0, data.clone()).encode();
    client
        .execute(
            "INSERT INTO logbook_events VALUES ($1, $2, $3, $4, $5, $6, 0, $7)",
            &[
                &position,
                &stream.as_str(),
                &version,
                &data.event_type(),
                &i32::from(data.schema_version()),
                &i16::from(data.codec()),
                &envelope,
            ],
        )
        .await
        .expect("insert");
    client
        .execute("UPDATE logbook_log SET last_position = $1", &[&position])
        .await
        .expect("log head");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_wake_ups_the_poll_still_finds_new_events() {
    let database = fresh_database();
    let store = open(&database).await;
    let options = FollowOptions {
        poll_interval: Duration::from_millis(100),
        ..FollowOptions::default()
    };
    let mut follower = store.follow(1, options);
    // Let the listener connect, so its first wake-up is spent.
    assert!(
        follower
            .next_page_within(Duration::from_millis(500))
            .await
            .expect("follow")
            .is_empty()
    );
    let (client, connection) =
        tokio_postgres::connect(&database.connection_string(), tokio_postgres::NoTls)
            .await
            .expect("connect");
    let driver = tokio::spawn(connection);
    insert_without_notify(&client, 1).await;
    insert_without_notify(&client, 2).await;
    assert_eq!(
        positions_until(&mut follower, 2, Duration::from_secs(3)).await,
        vec![1, 2]
    );
    driver.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_reconnects_after_its_connection_is_killed() {
    let database = fresh_database();
    let store = open(&database).await;
    let options = FollowOptions {
        poll_interval: NO_POLL,
        ..FollowOptions::default()
    };
    let mut follower = store.follow(1, options);
    append(&store, "room/before", 1).await;
    assert_eq!(positions_until(&mut follower, 1, WAIT).await, vec![1]);
    wait_for_listeners(&database, 1).await;
    let killed = Cluster::shared().psql(
        database.name(),
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
         WHERE query LIKE 'LISTEN%' AND datname = current_database()",
    );
    assert_eq!(killed, "1", "one listener connection per store");
    // Appended while the listener is down: its NOTIFY is lost; the reconnect wakes followers.
    append(&store, "room/during", 1).await;
    assert_eq!(positions_until(&mut follower, 2, WAIT).await, vec![2]);
    // And later wake-ups arrive on the new connection.
    tokio::time::sleep(Duration::from_millis(500)).await;
    append(&store, "room/after", 2).await;
    assert_eq!(positions_until(&mut follower, 4, WAIT).await, vec![3, 4]);
    wait_for_listeners(&database, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_of_one_store_share_one_listener_connection() {
    let database = fresh_database();
    let store = open(&database).await;
    let mut followers: Vec<_> = (0..5)
        .map(|_| store.clone().follow(1, FollowOptions::default()))
        .collect();
    append(&store, "room/x", 3).await;
    for follower in &mut followers {
        assert_eq!(positions_until(follower, 3, WAIT).await, vec![1, 2, 3]);
    }
    wait_for_listeners(&database, 1).await;
    // Still one a moment later: no follower opened a second one.
    tokio::time::sleep(Duration::from_millis(300)).await;
    wait_for_listeners(&database, 1).await;
}

/// Rows purged before a follower read them leave a gap no append will fill: `next_records`
/// moves past it (to the log's head, read in the same statement) instead of waiting for it,
/// also when the gap is at the end of the log; `next_page` returns the rows that are there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_passes_positions_purged_before_it_read_them() {
    let database = fresh_database();
    let store = open(&database).await;
    append(&store, "room/kept", 2).await; // positions 1, 2
    append(&store, "room/gone", 3).await; // 3..=5
    append(&store, "room/kept", 1).await; // 6
    append(&store, "room/tail", 2).await; // 7, 8: the end of the log
    for name in ["room/gone", "room/tail"] {
        store
            .delete_stream(&common::stream(name), ExpectedVersion::Any)
            .await
            .expect("delete");
    }
    assert_eq!(store.head_position().await.expect("head"), 8);
    let options = FollowOptions {
        poll_interval: NO_POLL,
        page_max: 2,
        ..FollowOptions::default()
    };
    let mut follower = store.follow(1, options);
    let mut pages = Vec::new();
    while follower.next_position() <= 8 {
        let (records, through) = tokio::time::timeout(WAIT, follower.next_records())
            .await
            .expect("a purged position was waited for")
            .expect("follow");
        let positions: Vec<u64> = records.iter().map(|(position, _)| *position).collect();
        for (position, bytes) in &records {
            Envelope::decode(bytes).unwrap_or_else(|error| panic!("{position}: {error}"));
        }
        pages.push((positions, through));
    }
    // Full pages end at their last row; the short page covers the log through its head.
    assert_eq!(
        pages,
        vec![(vec![1, 2], 2), (vec![6], 8)],
        "pages and how far each covers the log"
    );
    assert_eq!(follower.next_position(), 9);

    // Live: an append after the gap is read next, with no wait for 7 or 8.
    append(&store, "room/kept", 1).await;
    let (records, through) = tokio::time::timeout(WAIT, follower.next_records())
        .await
        .expect("woken")
        .expect("follow");
    assert_eq!(records.len(), 1);
    assert_eq!((records[0].0, through), (9, 9));
}

/// Read-ahead over a log with purged gaps of every size, followed with both page kinds, some
/// calls cancelled mid-read: every kept position exactly once, in order, and live appends
/// after catching up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_reading_ahead_over_purged_gaps_sees_every_kept_position_once() {
    let database = fresh_database();
    let store = open(&database).await;
    // 40 batches of 1..=7 events over 5 streams; streams 1 and 3 are then deleted, leaving
    // gaps from 1 to dozens of positions (including one at the end of the log).
    for batch in 0..40usize {
        append(&store, &format!("room/{}", batch % 5), 1 + batch % 7).await;
    }
    for gone in ["room/1", "room/3"] {
        store
            .delete_stream(&common::stream(gone), ExpectedVersion::Any)
            .await
            .expect("delete");
    }
    let mut head = store.head_position().await.expect("head");
    let mut kept: Vec<u64> = store
        .read_all(1, 10_000)
        .await
        .expect("read")
        .iter()
        .map(|raw| raw.position)
        .collect();
    assert!(kept.len() < head as usize, "the deletes left gaps");

    for (page_max, read_ahead) in [(1, 3), (2, 2), (3, 8), (5, 1), (7, 0), (4, 100)] {
        let options = FollowOptions {
            poll_interval: NO_POLL,
            page_max,
            read_ahead,
        };
        let mut follower = store.follow(1, options);
        let mut seen = Vec::new();
        let mut call = 0usize;
        while follower.next_position() <= head {
            call += 1;
            if call.is_multiple_of(5) {
                // A call cancelled at once: whatever it was reading stays queued or is
                // read again, never lost.
                let cancelled = follower.next_page_within(Duration::ZERO).await;
                seen.extend(cancelled.expect("follow").iter().map(|raw| raw.position));
                continue;
            }
            if call.is_multiple_of(2) {
                let page = tokio::time::timeout(WAIT, follower.next_page())
                    .await
                    .expect("a purged position was waited for")
                    .expect("follow");
                assert!(page.len() <= page_max, "a page longer than page_max");
                seen.extend(page.iter().map(|raw| raw.position));
            } else {
                let (records, through) = tokio::time::timeout(WAIT, follower.next_records())
                    .await
                    .expect("a purged position was waited for")
                    .expect("follow");
                assert!(records.len() <= page_max, "a page longer than page_max");
                assert!(records.iter().all(|(position, _)| *position <= through));
                seen.extend(records.iter().map(|(position, _)| *position));
            }
        }
        assert_eq!(
            seen, kept,
            "page_max {page_max}, read_ahead {read_ahead}: positions seen"
        );
        // Live after catching up: one new event, read next.
        append(&store, "room/0", 1).await;
        let page = tokio::time::timeout(WAIT, follower.next_page())
            .await
            .expect("woken")
            .expect("follow");
        let new_head = store.head_position().await.expect("head");
        assert_eq!(
            page.iter().map(|raw| raw.position).collect::<Vec<_>>(),
            vec![new_head]
        );
        // The next run follows this live event too.
        kept.push(new_head);
        head = new_head;
    }
}

/// A page read ahead before an append, taken after the append's wake-up arrived, is stale:
/// the follower must read again instead of waiting for a wake-up it already consumed. (Before
/// the fix, the last page here waited for the poll: 60 s.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_read_ahead_before_a_wake_up_is_read_again_after_it() {
    let database = fresh_database();
    let store = open(&database).await;
    append(&store, "room/a", 10).await;
    for kind in ["pages", "records"] {
        let head = store.head_position().await.expect("head");
        let options = FollowOptions {
            poll_interval: NO_POLL,
            page_max: 5,
            read_ahead: 2,
        };
        let mut follower = store.follow(head - 9, options);
        // Two full pages: reads ahead past the head are started, and return nothing.
        for _ in 0..2 {
            let read = if kind == "pages" {
                let page = tokio::time::timeout(WAIT, follower.next_page()).await;
                page.expect("catch-up").expect("follow").len()
            } else {
                let records = tokio::time::timeout(WAIT, follower.next_records()).await;
                records.expect("catch-up").expect("follow").0.len()
            };
            assert_eq!(read, 5, "{kind}");
        }
        assert_eq!(follower.next_position(), head + 1);
        tokio::time::sleep(Duration::from_millis(200)).await;
        append(&store, "room/b", 1).await;
        // Let the append's wake-up reach the listener before the follower asks.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let positions: Vec<u64> = if kind == "pages" {
            let page = tokio::time::timeout(WAIT, follower.next_page())
                .await
                .expect("woken, not polled")
                .expect("follow");
            page.iter().map(|raw| raw.position).collect()
        } else {
            let (records, _) = tokio::time::timeout(WAIT, follower.next_records())
                .await
                .expect("woken, not polled")
                .expect("follow");
            records.iter().map(|(position, _)| *position).collect()
        };
        assert_eq!(positions, vec![head + 1], "{kind}");
        append(&store, "room/a", 9).await;
    }
}
