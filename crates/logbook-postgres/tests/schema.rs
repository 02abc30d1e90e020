//! The schema: created by the crate, versioned, never downgraded, never beside foreign tables.

mod common;

use common::{fresh_database, open};
use logbook_pgtest::Cluster;
use logbook_postgres::schema::{SCHEMA_VERSION, TABLES};
use logbook_postgres::{Error, PgStore, StoreOptions};
use std::time::Duration;

fn version_of(database: &logbook_pgtest::TestDatabase) -> String {
    Cluster::shared().psql(database.name(), "SELECT version FROM logbook_schema")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_database_gets_every_table_and_the_current_version() {
    let database = fresh_database();
    open(&database).await;
    assert_eq!(version_of(&database), SCHEMA_VERSION.to_string());
    for table in TABLES {
        let found = Cluster::shared().psql(
            database.name(),
            &format!("SELECT to_regclass('{table}') IS NOT NULL"),
        );
        assert_eq!(found, "t", "table {table} missing");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_opening_at_once_create_the_schema_once() {
    let database = fresh_database();
    let url = database.connection_string();
    let opens = (0..6).map(|_| {
        let url = url.clone();
        tokio::spawn(async move { PgStore::open(&url, StoreOptions::default()).await })
    });
    for open in opens {
        let result = open.await.expect("open task");
        assert!(result.is_ok(), "{result:?}");
    }
    // Reopening is a no-op on an up-to-date schema.
    open(&database).await;
    assert_eq!(version_of(&database), SCHEMA_VERSION.to_string());
    let rows = Cluster::shared().psql(database.name(), "SELECT count(*) FROM logbook_schema");
    assert_eq!(rows, "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_schema_is_refused_and_left_as_it_is() {
    let database = fresh_database();
    open(&database).await;
    let newer = SCHEMA_VERSION + 1;
    Cluster::shared().psql(
        database.name(),
        &format!("UPDATE logbook_schema SET version = {newer}"),
    );
    let result = PgStore::open(&database.connection_string(), StoreOptions::default()).await;
    let error = result.expect_err("a newer schema must be refused");
    assert!(
        matches!(error, Error::SchemaTooNew { found, supported, .. } if found == newer && supported == SCHEMA_VERSION),
        "{error:?}"
    );
    assert!(error.to_string().contains("never downgraded"), "{error}");
    let read_only =
        PgStore::open_read_only(&database.connection_string(), StoreOptions::default()).await;
    assert!(
        matches!(read_only, Err(Error::SchemaTooNew { .. })),
        "{read_only:?}"
    );
    assert_eq!(version_of(&database), newer.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_with_foreign_tables_is_refused_and_nothing_is_created() {
    let database = fresh_database();
    Cluster::shared().psql(database.name(), "CREATE TABLE accounts (id int)");
    let result = PgStore::open(&database.connection_string(), StoreOptions::default()).await;
    let error = result.expect_err("foreign tables must be refused");
    assert!(
        matches!(&error, Error::ForeignTables { tables, .. } if tables == &["public.accounts".to_string()]),
        "{error:?}"
    );
    assert!(!error.is_retryable());
    let created = Cluster::shared().psql(
        database.name(),
        "SELECT count(*) FROM information_schema.tables WHERE table_name LIKE 'logbook%'",
    );
    assert_eq!(created, "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_open_never_creates_the_schema() {
    let database = fresh_database();
    let result =
        PgStore::open_read_only(&database.connection_string(), StoreOptions::default()).await;
    assert!(matches!(result, Err(Error::NoSchema { .. })), "{result:?}");
    let created = Cluster::shared().psql(
        database.name(),
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
    );
    assert_eq!(created, "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_url_and_a_server_that_is_down_are_one_clear_error_each() {
    let bad = PgStore::open("postgres://no host at all:x/", StoreOptions::default()).await;
    assert!(matches!(bad, Err(Error::InvalidUrl { .. })), "{bad:?}");

    let nowhere = format!(
        "host=/tmp/logbook-pg-no-server-{} dbname=x",
        std::process::id()
    );
    let options = StoreOptions {
        connect_timeout: Duration::from_secs(2),
        ..StoreOptions::default()
    };
    let down = PgStore::open(&nowhere, options).await;
    let error = down.expect_err("no server there");
    assert!(
        matches!(&error, Error::Connect { target, .. } if target.contains("no-server")),
        "{error:?}"
    );
    assert!(error.is_retryable());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_schema_is_migrated_in_place_keeping_its_events() {
    let database = fresh_database();
    let store = open(&database).await;
    store
        .append(common::request(
            "room/old",
            logbook_postgres::ExpectedVersion::Any,
            2,
        ))
        .await
        .expect("append");
    drop(store);
    // Back to what version 1 wrote: no truncation column.
    Cluster::shared().psql(
        database.name(),
        "ALTER TABLE logbook_streams DROP COLUMN truncated_before;
         UPDATE logbook_schema SET version = 1",
    );
    let read_only =
        PgStore::open_read_only(&database.connection_string(), StoreOptions::default()).await;
    assert!(
        matches!(&read_only, Err(Error::SchemaDamaged { reason, .. }) if reason.contains("version 1")),
        "{read_only:?}"
    );
    let store = open(&database).await;
    assert_eq!(version_of(&database), SCHEMA_VERSION.to_string());
    let head = store
        .stream_head(&common::stream("room/old"))
        .await
        .expect("head");
    assert_eq!((head.last_version, head.truncated_before), (Some(1), 0));
    assert_eq!(store.read_all(1, 10).await.expect("read").len(), 2);
}
