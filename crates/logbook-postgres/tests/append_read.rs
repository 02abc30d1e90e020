//! Appends and reads: grouped appends, per-request expected-version failures, stream reads
//! both ways, deletion that removes rows, snapshots, the coalesced wake-up, bytes verbatim.

mod common;

use common::{event, fresh_database, open, request, stream};
use logbook_pgtest::Cluster;
use logbook_postgres::{
    AppendRequest, Appended, Direction, Error, ExpectedVersion, Listener, Purged, StreamHead,
};
use logbook_projection::Envelope;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_gets_dense_positions_in_request_order_and_reads_back() {
    let database = fresh_database();
    let store = open(&database).await;
    let outcomes = store
        .append_group(&[
            request("room/a", ExpectedVersion::NoStream, 2),
            request("room/b", ExpectedVersion::Any, 1),
            request("room/a", ExpectedVersion::Exact(1), 1),
        ])
        .await
        .expect("group");
    let outcomes: Vec<Appended> = outcomes.into_iter().map(|o| o.expect("ok")).collect();
    assert_eq!(
        outcomes,
        vec![
            Appended {
                first_version: 0,
                first_position: 1,
                count: 2
            },
            Appended {
                first_version: 0,
                first_position: 3,
                count: 1
            },
            Appended {
                first_version: 2,
                first_position: 4,
                count: 1
            },
        ]
    );
    assert_eq!(store.head_position().await.expect("head"), 4);
    let all = store.read_all(1, 100).await.expect("read_all");
    let seen: Vec<(u64, String, u64)> = all
        .iter()
        .map(|raw| {
            (
                raw.position,
                raw.envelope.stream().to_string(),
                raw.envelope.stream_version(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            (1, "room/a".into(), 0),
            (2, "room/a".into(), 1),
            (3, "room/b".into(), 0),
            (4, "room/a".into(), 2),
        ]
    );
    assert_eq!(store.read_all(3, 1).await.expect("page").len(), 1);
    assert_eq!(store.read_all(5, 10).await.expect("past the end").len(), 0);

    let forward = store
        .read_stream(&stream("room/a"), 1, Direction::Forward, 10)
        .await
        .expect("fw");
    let versions: Vec<u64> = forward
        .iter()
        .map(|raw| raw.envelope.stream_version())
        .collect();
    assert_eq!(versions, vec![1, 2]);
    let backward = store
        .read_stream(&stream("room/a"), 1, Direction::Backward, 10)
        .await
        .expect("bw");
    let versions: Vec<u64> = backward
        .iter()
        .map(|raw| raw.envelope.stream_version())
        .collect();
    assert_eq!(versions, vec![1, 0]);
    assert_eq!(
        store.stream_head(&stream("room/a")).await.expect("head"),
        StreamHead {
            last_version: Some(2),
            deleted: false,
            truncated_before: 0,
        }
    );
    assert_eq!(
        store.stream_head(&stream("room/none")).await.expect("head"),
        StreamHead::default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_check_fails_only_its_own_request() {
    let database = fresh_database();
    let store = open(&database).await;
    store
        .append_group(&[request("job/1", ExpectedVersion::Any, 1)])
        .await
        .expect("seed");
    let outcomes = store
        .append_group(&[
            request("job/2", ExpectedVersion::NoStream, 1),
            request("job/1", ExpectedVersion::NoStream, 1),
            request("job/3", ExpectedVersion::StreamExists, 1),
            request("job/1", ExpectedVersion::Exact(0), 1),
        ])
        .await
        .expect("group");
    assert!(
        matches!(
            &outcomes[0],
            Ok(Appended {
                first_position: 2,
                ..
            })
        ),
        "{outcomes:?}"
    );
    assert!(
        matches!(&outcomes[1], Err(Error::WrongExpectedVersion { stream, expected: ExpectedVersion::NoStream, actual: Some(0) }) if stream == "job/1"),
        "{outcomes:?}"
    );
    assert!(
        matches!(
            &outcomes[2],
            Err(Error::WrongExpectedVersion { actual: None, .. })
        ),
        "{outcomes:?}"
    );
    assert!(
        matches!(
            &outcomes[3],
            Ok(Appended {
                first_version: 1,
                first_position: 3,
                count: 1
            })
        ),
        "{outcomes:?}"
    );
    assert_eq!(store.head_position().await.expect("head"), 3);
    let message = outcomes[1].as_ref().expect_err("failed").to_string();
    assert!(
        message.contains("job/1") && message.contains("actual 0"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_payload_column_holds_the_envelope_bytes_verbatim() {
    let database = fresh_database();
    let store = open(&database).await;
    let data = event("verbatim").with_correlation_id("req-1").expect("id");
    store
        .append_group(&[AppendRequest {
            stream: stream("run/r1"),
            expected: ExpectedVersion::Any,
            events: vec![data],
        }])
        .await
        .expect("append");
    let raw = store.read_all(1, 1).await.expect("read").remove(0);
    let hex = Cluster::shared().psql(
        database.name(),
        "SELECT encode(payload, 'hex') FROM logbook_events WHERE position = 1",
    );
    let expected: String = raw
        .envelope
        .encode()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    assert_eq!(hex, expected);
    let decoded = Envelope::decode(&raw.envelope.encode()).expect("decodes");
    assert_eq!(decoded.correlation_id(), Some("req-1"));
    assert_eq!(decoded.payload(), b"verbatim");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_stream_loses_its_rows_and_refuses_appends_and_reads() {
    let database = fresh_database();
    let store = open(&database).await;
    store
        .append_group(&[
            request("room/gone", ExpectedVersion::Any, 3),
            request("room/kept", ExpectedVersion::Any, 1),
        ])
        .await
        .expect("seed");
    let wrong = store
        .delete_stream(&stream("room/gone"), ExpectedVersion::Exact(0))
        .await;
    assert!(
        matches!(
            wrong,
            Err(Error::WrongExpectedVersion {
                actual: Some(2),
                ..
            })
        ),
        "{wrong:?}"
    );
    let removed = store
        .delete_stream(&stream("room/gone"), ExpectedVersion::Exact(2))
        .await
        .expect("delete");
    assert_eq!(
        removed,
        Purged {
            events: 3,
            lowest_position: Some(1)
        }
    );
    let rows = Cluster::shared().psql(
        database.name(),
        "SELECT count(*) FROM logbook_events WHERE stream = 'room/gone'",
    );
    assert_eq!(rows, "0", "deleted rows must be removed, not hidden");
    let read = store
        .read_stream(&stream("room/gone"), 0, Direction::Forward, 10)
        .await;
    assert!(matches!(read, Err(Error::StreamDeleted { .. })), "{read:?}");
    let append = store
        .append_group(&[request("room/gone", ExpectedVersion::Any, 1)])
        .await;
    let outcome = append.expect("group").remove(0);
    assert!(
        matches!(outcome, Err(Error::StreamDeleted { .. })),
        "{outcome:?}"
    );
    let all = store.read_all(1, 10).await.expect("read_all");
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].envelope.stream().as_str(), "room/kept");
    // Positions are never reused after a delete.
    let next = store
        .append_group(&[request("room/new", ExpectedVersion::Any, 1)])
        .await;
    assert!(matches!(
        next.expect("group").remove(0),
        Ok(Appended {
            first_position: 5,
            ..
        })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_are_stored_shared_and_purged() {
    let database = fresh_database();
    let store = open(&database).await;
    assert_eq!(store.latest_snapshot().await.expect("none"), None);
    store.put_snapshot(10, b"ten").await.expect("put");
    store.put_snapshot(20, b"twenty").await.expect("put");
    let other_replica = open(&database).await;
    assert_eq!(
        other_replica.latest_snapshot().await.expect("latest"),
        Some((20, b"twenty".to_vec()))
    );
    assert_eq!(store.purge_snapshots_before(20).await.expect("purge"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_wake_up_per_group_after_commit() {
    let database = fresh_database();
    let store = open(&database).await;
    let mut listener = Listener::connect(&store).await.expect("listen");
    let group: Vec<AppendRequest> = (0..8)
        .map(|n| request(&format!("room/{n}"), ExpectedVersion::Any, 3))
        .collect();
    store.append_group(&group).await.expect("append");
    assert!(listener.wait(Duration::from_secs(5)).await.expect("wake"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        listener.drain(),
        0,
        "24 events in one group must wake listeners once"
    );
    // A group whose every request fails writes nothing and wakes nobody.
    store
        .append_group(&[request("room/0", ExpectedVersion::NoStream, 1)])
        .await
        .expect("group");
    assert!(
        !listener
            .wait(Duration::from_millis(300))
            .await
            .expect("no wake")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_row_is_an_error_naming_it_never_a_panic() {
    let database = fresh_database();
    let store = open(&database).await;
    store
        .append_group(&[request("room/x", ExpectedVersion::Any, 2)])
        .await
        .expect("seed");
    Cluster::shared().psql(
        database.name(),
        "UPDATE logbook_events SET payload = '\\xeb01'::bytea WHERE position = 2",
    );
    let read = store.read_all(1, 10).await;
    assert!(
        matches!(&read, Err(Error::Corrupted { table: "logbook_events", key, .. }) if key == "position 2"),
        "{read:?}"
    );
    Cluster::shared().psql(
        database.name(),
        "UPDATE logbook_events SET payload = (SELECT payload FROM logbook_events WHERE position = 1)
         WHERE position = 2",
    );
    let read = store.read_all(2, 10).await;
    assert!(
        matches!(&read, Err(Error::Corrupted { reason, .. }) if reason.contains("room/x@1")),
        "{read:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_group_is_refused_whole_and_writes_nothing() {
    let database = fresh_database();
    let store = open(&database).await;
    let many = request(
        "room/big",
        ExpectedVersion::Any,
        logbook_postgres::store::GROUP_EVENTS_MAX + 1,
    );
    let result = store.append_group(&[many]).await;
    assert!(matches!(result, Err(Error::TooLarge { .. })), "{result:?}");
    assert_eq!(store.head_position().await.expect("head"), 0);
}
