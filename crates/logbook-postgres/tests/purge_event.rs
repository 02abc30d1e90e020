//! Purges with their event (`PgStore::purge_with_event`, what the engine's PostgreSQL backend
//! deletes and truncates with): the event takes the next position in the same transaction
//! that removes the rows, with the `before_version` the purge used; the embedded engine's
//! rules hold (a missing stream is not found, a soft-deleted stream takes `NoStream`, a delete
//! is final, a truncation stops at the stream's end); a refused purge writes nothing.

mod common;

use common::{fresh_database, open, request, stream};
use logbook_pgtest::Cluster;
use logbook_postgres::{Error, ExpectedVersion, PgStore, PurgeKind, PurgeOutcome};
use logbook_projection::EventData;

fn log_stream() -> logbook_projection::StreamId {
    stream("$log")
}

async fn purge(
    store: &PgStore,
    name: &str,
    expected: ExpectedVersion,
    kind: PurgeKind,
) -> logbook_postgres::Result<PurgeOutcome> {
    let make = |before: u64| {
        EventData::new(
            "test.purged",
            1,
            format!("{name} before {before}").into_bytes(),
        )
        .map_err(|error| error.to_string())
    };
    store
        .purge_with_event(&stream(name), expected, kind, &log_stream(), &make)
        .await
}

fn count_rows(database: &str, filter: &str) -> String {
    Cluster::shared().psql(
        database,
        &format!("SELECT count(*) FROM logbook_events WHERE {filter}"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_removes_the_rows_and_appends_its_event_at_the_next_position() {
    let database = fresh_database();
    let store = open(&database).await;
    store
        .append(request("room/a", ExpectedVersion::NoStream, 3))
        .await
        .expect("seed");
    store
        .append(request("room/b", ExpectedVersion::NoStream, 1))
        .await
        .expect("seed");
    let outcome = purge(
        &store,
        "room/a",
        ExpectedVersion::Exact(2),
        PurgeKind::Delete,
    )
    .await
    .expect("delete");
    assert_eq!(outcome.appended.first_position, 5, "the next position");
    assert_eq!(outcome.appended.count, 1);
    assert_eq!(outcome.before_version, 3, "a delete hides up to the end");
    assert_eq!(outcome.purged.events, 3);
    assert_eq!(outcome.purged.lowest_position, Some(1));
    assert_eq!(count_rows(database.name(), "stream = 'room/a'"), "0");
    let page = store.read_all(1, 10).await.expect("read");
    let positions: Vec<u64> = page.iter().map(|raw| raw.position).collect();
    assert_eq!(positions, vec![4, 5]);
    assert_eq!(page[1].envelope.stream().as_str(), "$log");
    assert_eq!(page[1].envelope.payload(), b"room/a before 3");
    // Final: no append, no second delete.
    let again = store
        .append(request("room/a", ExpectedVersion::Any, 1))
        .await;
    assert!(
        matches!(again, Err(Error::StreamDeleted { .. })),
        "{again:?}"
    );
    let twice = purge(&store, "room/a", ExpectedVersion::Any, PurgeKind::Delete).await;
    assert!(
        matches!(twice, Err(Error::StreamDeleted { .. })),
        "{twice:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_write_nothing() {
    let database = fresh_database();
    let store = open(&database).await;
    store
        .append(request("room/a", ExpectedVersion::NoStream, 2))
        .await
        .expect("seed");
    let missing = purge(&store, "room/none", ExpectedVersion::Any, PurgeKind::Delete).await;
    assert!(
        matches!(missing, Err(Error::StreamNotFound { .. })),
        "{missing:?}"
    );
    let missing = purge(
        &store,
        "room/none",
        ExpectedVersion::Any,
        PurgeKind::SoftDelete,
    )
    .await;
    assert!(
        matches!(missing, Err(Error::StreamNotFound { .. })),
        "{missing:?}"
    );
    let conflict = purge(
        &store,
        "room/a",
        ExpectedVersion::Exact(0),
        PurgeKind::Delete,
    )
    .await;
    assert!(
        matches!(
            conflict,
            Err(Error::WrongExpectedVersion {
                actual: Some(1),
                ..
            })
        ),
        "{conflict:?}"
    );
    let beyond = purge(
        &store,
        "room/a",
        ExpectedVersion::Any,
        PurgeKind::Truncate { before_version: 3 },
    )
    .await;
    assert!(
        matches!(beyond, Err(Error::TruncateBeyondEnd { .. })),
        "{beyond:?}"
    );
    assert_eq!(
        count_rows(database.name(), "true"),
        "2",
        "nothing written or removed"
    );
    // Expecting `NoStream` reserves a name that never had an event.
    let reserved = purge(
        &store,
        "room/none",
        ExpectedVersion::NoStream,
        PurgeKind::Delete,
    )
    .await
    .expect("reserve");
    assert_eq!(reserved.purged.events, 0);
    let taken = store
        .append(request("room/none", ExpectedVersion::Any, 1))
        .await;
    assert!(
        matches!(taken, Err(Error::StreamDeleted { .. })),
        "{taken:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_soft_delete_hides_every_version_and_lets_them_continue() {
    let database = fresh_database();
    let store = open(&database).await;
    store
        .append(request("room/a", ExpectedVersion::NoStream, 2))
        .await
        .expect("seed");
    let outcome = purge(
        &store,
        "room/a",
        ExpectedVersion::StreamExists,
        PurgeKind::SoftDelete,
    )
    .await
    .expect("soft delete");
    assert_eq!(outcome.before_version, 2);
    assert_eq!(count_rows(database.name(), "stream = 'room/a'"), "0");
    // No visible event: `NoStream` matches, `StreamExists` does not, versions continue.
    let exists = store
        .append(request("room/a", ExpectedVersion::StreamExists, 1))
        .await;
    assert!(
        matches!(
            exists,
            Err(Error::WrongExpectedVersion {
                actual: Some(1),
                ..
            })
        ),
        "{exists:?}"
    );
    let next = store
        .append(request("room/a", ExpectedVersion::NoStream, 1))
        .await
        .expect("append after a soft delete");
    assert_eq!(next.first_version, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncation_removes_the_rows_below_and_a_lower_one_removes_nothing_more() {
    let database = fresh_database();
    let store = open(&database).await;
    store
        .append(request("room/a", ExpectedVersion::NoStream, 4))
        .await
        .expect("seed");
    let outcome = purge(
        &store,
        "room/a",
        ExpectedVersion::Any,
        PurgeKind::Truncate { before_version: 3 },
    )
    .await
    .expect("truncate");
    assert_eq!((outcome.before_version, outcome.purged.events), (3, 3));
    assert_eq!(count_rows(database.name(), "stream = 'room/a'"), "1");
    let lower = purge(
        &store,
        "room/a",
        ExpectedVersion::Any,
        PurgeKind::Truncate { before_version: 1 },
    )
    .await
    .expect("lower truncation");
    assert_eq!(lower.purged.events, 0);
    assert_eq!(
        lower.appended.count, 1,
        "its event is appended all the same"
    );
    let next = store
        .append(request("room/a", ExpectedVersion::Exact(3), 1))
        .await
        .expect("the stream goes on");
    assert_eq!(next.first_version, 4);
}
