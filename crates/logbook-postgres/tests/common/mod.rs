//! Helpers shared by the logbook-postgres tests: a fresh database per test in the test
//! binary's throwaway cluster, and small event builders.
#![allow(dead_code)]

use logbook_pgtest::{Cluster, TestDatabase};
use logbook_postgres::{AppendRequest, ExpectedVersion, PgStore, StoreOptions};
use logbook_projection::{EventData, StreamId};

/// A fresh database in this binary's shared cluster.
pub fn fresh_database() -> TestDatabase {
    Cluster::shared().create_database()
}

/// Opens (creating the schema) a store on `database`.
pub async fn open(database: &TestDatabase) -> PgStore {
    PgStore::open(&database.connection_string(), StoreOptions::default())
        .await
        .unwrap_or_else(|error| panic!("open {}: {error}", database.name()))
}

/// An event whose payload names where it was meant to go.
pub fn event(tag: &str) -> EventData {
    EventData::new("test.appended", 1, tag.as_bytes().to_vec()).expect("valid test event")
}

/// A stream id.
pub fn stream(name: &str) -> StreamId {
    StreamId::new(name).expect("valid test stream")
}

/// A request of `count` events to `name`.
pub fn request(name: &str, expected: ExpectedVersion, count: usize) -> AppendRequest {
    AppendRequest {
        stream: stream(name),
        expected,
        events: (0..count).map(|n| event(&format!("{name}#{n}"))).collect(),
    }
}
