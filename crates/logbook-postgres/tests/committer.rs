//! The group committer behind `PgStore::append`: concurrent appends share transactions, a
//! failed expected-version check fails only its own append, wake-ups are coalesced, and an
//! oversized request is refused alone.

mod common;

use common::{fresh_database, open, request, stream};
use logbook_postgres::{Error, ExpectedVersion, Listener};
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

const TASKS: usize = 64;
const APPENDS_PER_TASK: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_are_grouped_and_each_gets_dense_positions() {
    let database = fresh_database();
    let store = open(&database).await;
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let store = store.clone();
            tokio::spawn(async move {
                let name = format!("room/{task}");
                let mut outcomes = Vec::new();
                for n in 0..APPENDS_PER_TASK as u64 {
                    // Each append adds 2 events: after n of them the last version is 2n - 1.
                    let expected = match n {
                        0 => ExpectedVersion::NoStream,
                        n => ExpectedVersion::Exact(2 * n - 1),
                    };
                    let appended = store
                        .append(request(&name, expected, 2))
                        .await
                        .unwrap_or_else(|error| panic!("{name} append {n}: {error}"));
                    assert_eq!(appended.first_version, 2 * n, "{name}");
                    outcomes.push(appended);
                }
                outcomes
            })
        })
        .collect();
    let mut positions = BTreeSet::new();
    for task in tasks {
        for appended in task.await.expect("task") {
            assert_eq!(appended.count, 2);
            assert!(positions.insert(appended.first_position));
            assert!(positions.insert(appended.first_position + 1));
        }
    }
    let total = (TASKS * APPENDS_PER_TASK * 2) as u64;
    assert!(
        positions.iter().copied().eq(1..=total),
        "positions not dense"
    );
    assert_eq!(store.head_position().await.expect("head"), total);
    let stats = store.committer_stats();
    assert_eq!(stats.requests, (TASKS * APPENDS_PER_TASK) as u64);
    assert!(
        stats.groups < stats.requests,
        "{TASKS} concurrent writers were never grouped: {stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_check_fails_only_its_own_append_in_a_group() {
    let database = fresh_database();
    let store = open(&database).await;
    store
        .append(request("room/taken", ExpectedVersion::NoStream, 1))
        .await
        .expect("seed");
    // Many appends at once, so they share groups; every fourth one expects the wrong version.
    let tasks: Vec<_> = (0..200usize)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move {
                let outcome = if n % 4 == 0 {
                    store
                        .append(request("room/taken", ExpectedVersion::NoStream, 1))
                        .await
                } else {
                    store
                        .append(request(
                            &format!("room/free-{n}"),
                            ExpectedVersion::NoStream,
                            1,
                        ))
                        .await
                };
                (n, outcome)
            })
        })
        .collect();
    let mut outcomes = HashMap::new();
    for task in tasks {
        let (n, outcome) = task.await.expect("task");
        outcomes.insert(n, outcome);
    }
    for (n, outcome) in &outcomes {
        if n % 4 == 0 {
            assert!(
                matches!(outcome, Err(Error::WrongExpectedVersion { stream, expected: ExpectedVersion::NoStream, actual: Some(0) }) if stream == "room/taken"),
                "{n}: {outcome:?}"
            );
        } else {
            assert!(outcome.is_ok(), "{n}: {outcome:?}");
        }
    }
    assert_eq!(store.head_position().await.expect("head"), 1 + 150);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_grouped_commits_send_few_wake_ups() {
    let database = fresh_database();
    let store = open(&database).await;
    let mut listener = Listener::connect(&store).await.expect("listen");
    let tasks: Vec<_> = (0..200usize)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .append(request(&format!("room/{n}"), ExpectedVersion::Any, 5))
                    .await
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task").expect("append");
    }
    assert!(listener.wait(Duration::from_secs(5)).await.expect("wake"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let wakes = 1 + listener.drain() as u64;
    let groups = store.committer_stats().groups;
    assert!(
        wakes <= groups && wakes < 200,
        "{wakes} wake-ups for 1,000 events in 200 appends ({groups} groups)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_append_is_refused_alone_and_writes_nothing() {
    let database = fresh_database();
    let store = open(&database).await;
    let many = request(
        "room/big",
        ExpectedVersion::Any,
        logbook_postgres::store::GROUP_EVENTS_MAX + 1,
    );
    let (big, small) = tokio::join!(
        store.append(many),
        store.append(request("room/small", ExpectedVersion::Any, 1))
    );
    assert!(
        matches!(big, Err(Error::TooLarge { .. })),
        "{:?}",
        big.map(|_| ())
    );
    let small = small.expect("the other append commits");
    assert_eq!(small.first_position, 1);
    assert_eq!(store.head_position().await.expect("head"), 1);
    let head = store.stream_head(&stream("room/big")).await.expect("head");
    assert_eq!(head.last_version, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_committer_stores_the_exact_envelope_bytes_with_each_version_written_in() {
    let database = fresh_database();
    let store = open(&database).await;
    store
        .append(request("room/e", ExpectedVersion::NoStream, 2))
        .await
        .expect("append");
    let appended = store
        .append(request("room/e", ExpectedVersion::Exact(1), 3))
        .await
        .expect("append");
    assert_eq!((appended.first_version, appended.first_position), (2, 3));
    for raw in store.read_all(1, 10).await.expect("read") {
        let envelope = &raw.envelope;
        let expected = logbook_projection::Envelope::new(
            envelope.stream().clone(),
            envelope.stream_version(),
            envelope.timestamp_ms(),
            envelope.data().clone(),
        )
        .encode();
        let stored = logbook_pgtest::Cluster::shared().psql(
            database.name(),
            &format!(
                "SELECT encode(payload, 'hex') FROM logbook_events WHERE position = {}",
                raw.position
            ),
        );
        let expected_hex: String = expected.iter().map(|byte| format!("{byte:02x}")).collect();
        assert_eq!(stored, expected_hex, "position {}", raw.position);
        // The version inside the envelope is the row's version: position p is version p - 1.
        assert_eq!(envelope.stream_version(), raw.position - 1);
    }
}
