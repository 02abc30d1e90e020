//! Rows removed from the shared log outside the engine (another program's
//! `PgStore::delete_stream`, which writes no purge event, or an operator's `DELETE`) leave
//! positions no append will ever fill. A replica must never wait for them: `sync` (which waits
//! until this replica applied the log's head), `wait_applied` and open all return, also when
//! the removed rows were the newest of the log.

use logbook::{ExpectedVersion, Logbook, StreamId};
use logbook_postgres::{PgStore, StoreOptions};
use logbook_tests::pg::{Cluster, ClusterOptions};
use logbook_tests::{CounterEvent, added, test_options};
use std::time::Duration;

/// Far longer than a sync takes; a wait for a purged position would never end.
const WAIT: Duration = Duration::from_secs(20);

fn stream(name: &str) -> StreamId {
    StreamId::new(name).expect("stream")
}

async fn append(log: &Logbook<CounterEvent>, name: &str, count: usize) -> u64 {
    let events = (0..count)
        .map(|n| added(1, &format!("{name}-{n}")))
        .collect();
    log.append(&stream(name), ExpectedVersion::Any, events)
        .await
        .expect("append")
        .last_position
}

async fn delete_outside(store: &PgStore, name: &str) {
    let purged = store
        .delete_stream(&stream(name), logbook_postgres::ExpectedVersion::Any)
        .await
        .expect("delete outside the engine");
    assert!(purged.events > 0, "{name}: nothing removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_and_sync_pass_the_newest_rows_removed_before_open() {
    let cluster = Cluster::start(ClusterOptions::default());
    let database = cluster.create_database();
    let url = database.url();
    let (log, _) = Logbook::<CounterEvent>::open_postgres(&url, test_options())
        .await
        .expect("open");
    append(&log, "counter-kept", 3).await;
    let head = append(&log, "counter-tail", 4).await;
    log.close().await.expect("close");

    let store = PgStore::open(&url, StoreOptions::default())
        .await
        .expect("store");
    delete_outside(&store, "counter-tail").await;

    let (log, _) = Logbook::<CounterEvent>::open_postgres(&url, test_options())
        .await
        .expect("reopen");
    let synced = tokio::time::timeout(WAIT, log.sync())
        .await
        .expect("sync waited for positions removed before open")
        .expect("sync");
    assert_eq!(synced, head);
    tokio::time::timeout(WAIT, log.wait_applied(head))
        .await
        .expect("wait_applied waited for a removed position")
        .expect("wait_applied");
    let next = append(&log, "counter-kept", 1).await;
    assert_eq!(next, head + 1, "positions continue after the removed ones");
    log.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_replica_passes_the_newest_rows_removed_beside_it() {
    let cluster = Cluster::start(ClusterOptions::default());
    let database = cluster.create_database();
    let url = database.url();
    let (log, _) = Logbook::<CounterEvent>::open_postgres(&url, test_options())
        .await
        .expect("open");
    append(&log, "counter-kept", 2).await;
    let store = PgStore::open(&url, StoreOptions::default())
        .await
        .expect("store");
    // Another program appends and deletes at once, over and over: the replica reads each
    // batch of rows before or after they are gone, and either way its sync returns.
    for round in 0..20 {
        let name = format!("counter-other-{round}");
        let appended = store
            .append(logbook_postgres::AppendRequest {
                stream: stream(&name),
                expected: logbook_postgres::ExpectedVersion::Any,
                events: vec![logbook::EventData::new("counter.added", 1, vec![0]).expect("data")],
            })
            .await
            .expect("append outside");
        delete_outside(&store, &name).await;
        let synced = tokio::time::timeout(WAIT, log.sync())
            .await
            .unwrap_or_else(|_| panic!("round {round}: sync waited for removed rows"))
            .expect("sync");
        assert!(synced >= appended.first_position, "round {round}");
    }
    let head = store.head_position().await.expect("head");
    assert_eq!(
        tokio::time::timeout(WAIT, log.sync())
            .await
            .expect("sync")
            .expect("sync"),
        head
    );
    log.close().await.expect("close");
}
