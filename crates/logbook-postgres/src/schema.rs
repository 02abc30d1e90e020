//! The logbook schema in PostgreSQL: its tables, its version, its migrations.
//!
//! Owns: the DDL of every logbook table, the `logbook_schema` table and its single version row,
//! and [`migrate`], which creates the schema in an empty database or brings an older one up to
//! [`SCHEMA_VERSION`], under a cluster-wide advisory lock so that replicas opening at once do
//! not race.
//! Never: downgrades a schema (a newer version is [`Error::SchemaTooNew`]), creates tables in a
//! database that holds another application's tables ([`Error::ForeignTables`]), or changes the
//! schema outside one transaction (a crash mid-migration leaves the old version whole).

use crate::error::{Error, Result};

/// The schema version this code writes and reads.
pub const SCHEMA_VERSION: i32 = 2;

/// The advisory-lock key held (per transaction) while the schema is checked or migrated.
/// "LBSCHEMA" in ASCII.
pub const SCHEMA_LOCK_KEY: i64 = 0x4C42_5343_4845_4D41;

/// How many foreign tables an [`Error::ForeignTables`] names at most.
pub const FOREIGN_TABLES_LISTED_MAX: usize = 10;

/// The tables logbook owns.
pub const TABLES: [&str; 5] = [
    "logbook_schema",
    "logbook_log",
    "logbook_streams",
    "logbook_events",
    "logbook_snapshots",
];

/// `MIGRATIONS[i]` takes the schema from version `i` to `i + 1` (version 0: no schema).
const MIGRATIONS: [&str; SCHEMA_VERSION as usize] = [
    // Version 1.
    "CREATE TABLE logbook_schema (
         singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
         version integer NOT NULL
     );
     INSERT INTO logbook_schema (version) VALUES (0);
     -- The global log's head: the last position given to an event (0: none). Updated only
     -- under the append lock, so positions are dense and given in commit order.
     CREATE TABLE logbook_log (
         singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
         last_position bigint NOT NULL CHECK (last_position >= 0)
     );
     INSERT INTO logbook_log (last_position) VALUES (0);
     CREATE TABLE logbook_streams (
         stream text PRIMARY KEY,
         head_version bigint CHECK (head_version >= 0),
         deleted boolean NOT NULL DEFAULT false
     );
     -- payload: the whole envelope, byte for byte the WAL record's payload; the other
     -- columns repeat its header for queries.
     CREATE TABLE logbook_events (
         position bigint PRIMARY KEY CHECK (position > 0),
         stream text NOT NULL,
         version bigint NOT NULL CHECK (version >= 0),
         event_type text NOT NULL,
         schema_version integer NOT NULL,
         codec smallint NOT NULL,
         timestamp_ms bigint NOT NULL,
         payload bytea NOT NULL,
         UNIQUE (stream, version)
     );
     CREATE TABLE logbook_snapshots (
         position bigint PRIMARY KEY CHECK (position >= 0),
         created_ms bigint NOT NULL,
         payload bytea NOT NULL
     );",
    // Version 2: the truncation point of each stream (every lower version was removed).
    "ALTER TABLE logbook_streams
         ADD COLUMN truncated_before bigint NOT NULL DEFAULT 0 CHECK (truncated_before >= 0);",
];

/// Creates or migrates the logbook schema in the database `client` is connected to.
///
/// `target` names the database in errors. Returns the version found before (0: none).
pub async fn migrate(client: &mut tokio_postgres::Client, target: &str) -> Result<i32> {
    let driver = |error| Error::from_driver("schema migration", error);
    let transaction = client.transaction().await.map_err(driver)?;
    transaction
        .execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK_KEY])
        .await
        .map_err(driver)?;
    let found = found_version(&transaction, target).await?;
    if found > SCHEMA_VERSION {
        return Err(Error::SchemaTooNew {
            target: target.to_string(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    if found == 0 {
        refuse_foreign_tables(&transaction, target).await?;
    }
    for (from, step) in MIGRATIONS.iter().enumerate().skip(found_index(found)) {
        transaction.batch_execute(step).await.map_err(driver)?;
        let to = i32::try_from(from + 1).unwrap_or(SCHEMA_VERSION);
        transaction
            .execute("UPDATE logbook_schema SET version = $1", &[&to])
            .await
            .map_err(driver)?;
    }
    // Durability: the schema and its version row commit together, or not at all.
    transaction.commit().await.map_err(driver)?;
    Ok(found)
}

fn found_index(found: i32) -> usize {
    usize::try_from(found).unwrap_or(0)
}

/// The version in `logbook_schema`, 0 when the table does not exist.
async fn found_version(transaction: &tokio_postgres::Transaction<'_>, target: &str) -> Result<i32> {
    let driver = |error| Error::from_driver("schema check", error);
    let exists: bool = transaction
        .query_one("SELECT to_regclass('logbook_schema') IS NOT NULL", &[])
        .await
        .map_err(driver)?
        .try_get(0)
        .map_err(driver)?;
    if !exists {
        return Ok(0);
    }
    let rows = transaction
        .query("SELECT version FROM logbook_schema", &[])
        .await
        .map_err(driver)?;
    let [row] = rows.as_slice() else {
        return Err(Error::SchemaDamaged {
            target: target.to_string(),
            reason: format!("logbook_schema has {} rows, not 1", rows.len()),
        });
    };
    let version: i32 = row.try_get(0).map_err(driver)?;
    if version < 1 {
        return Err(Error::SchemaDamaged {
            target: target.to_string(),
            reason: format!("logbook_schema holds version {version}"),
        });
    }
    Ok(version)
}

/// Refuses a database without a logbook schema that holds tables of anyone else.
async fn refuse_foreign_tables(
    transaction: &tokio_postgres::Transaction<'_>,
    target: &str,
) -> Result<()> {
    let driver = |error| Error::from_driver("schema check", error);
    let rows = transaction
        .query(
            "SELECT table_schema || '.' || table_name FROM information_schema.tables
             WHERE table_schema NOT IN ('pg_catalog', 'information_schema')
               AND table_schema NOT LIKE 'pg_toast%' AND table_schema NOT LIKE 'pg_temp%'
             ORDER BY 1 LIMIT $1",
            &[&i64::try_from(FOREIGN_TABLES_LISTED_MAX).unwrap_or(i64::MAX)],
        )
        .await
        .map_err(driver)?;
    if rows.is_empty() {
        return Ok(());
    }
    let tables = rows
        .iter()
        .map(|row| row.try_get::<_, String>(0))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(driver)?;
    Err(Error::ForeignTables {
        target: target.to_string(),
        tables,
    })
}

/// The schema version of the database, without changing anything (for read-only opens).
pub async fn read_version(client: &mut tokio_postgres::Client, target: &str) -> Result<i32> {
    let driver = |error| Error::from_driver("schema check", error);
    let transaction = client.transaction().await.map_err(driver)?;
    let found = found_version(&transaction, target).await?;
    transaction.commit().await.map_err(driver)?;
    Ok(found)
}
