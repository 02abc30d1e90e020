//! The SQLite peer: an event table as one would write it on SQLite.
//!
//! WAL journal mode, `synchronous=FULL` (an fsync of the WAL file at every commit), one
//! transaction per append call. SQLite has one writer: concurrent writers take turns on a
//! `Mutex<Connection>`. An append with `ExpectedVersion::Any` still computes the stream's next
//! version inside the transaction, from the `(stream, version)` index, as logbook's writer does.

use crate::BenchResult;
use crate::event::{EVENT_TYPE, EventPool, READ_STREAM, ReadEvent, append_until, decode, now_ms};
use crate::measure::disk_bytes;
use crate::peer_logbook::{READ_PAGE, TAIL};
use crate::workload::{AppendOutcome, Plan, ReadOutcome};
use logbook_projection::codec;
use rusqlite::{Connection, Row, TransactionBehavior, params};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS events (
        position INTEGER PRIMARY KEY,
        stream TEXT NOT NULL,
        version INTEGER NOT NULL,
        event_type TEXT NOT NULL,
        timestamp_ms INTEGER NOT NULL,
        payload BLOB NOT NULL
    );
    CREATE UNIQUE INDEX IF NOT EXISTS events_stream_version ON events (stream, version);";

const INSERT: &str = "
    INSERT INTO events (stream, version, event_type, timestamp_ms, payload)
    SELECT ?1, COALESCE(MAX(version) + 1, 0), ?2, ?3, ?4 FROM events WHERE stream = ?1";

const COLUMNS: &str = "position, stream, version, timestamp_ms, payload";

/// Catch-up page, as logbook's subscription reads the log.
const CATCH_UP_PAGE: i64 = 1024;

fn open(dir: &Path) -> BenchResult<Connection> {
    let connection = Connection::open(dir.join("events.sqlite"))?;
    let mode: String = connection.query_row("PRAGMA journal_mode=WAL", [], |row| row.get(0))?;
    assert_eq!(mode, "wal", "SQLite journal mode");
    connection.pragma_update(None, "synchronous", "FULL")?;
    connection.execute_batch(SCHEMA)?;
    Ok(connection)
}

fn append_one(connection: &mut Connection, stream: &str, payload: &[u8]) -> BenchResult<()> {
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    transaction.prepare_cached(INSERT)?.execute(params![
        stream,
        EVENT_TYPE,
        now_ms() as i64,
        payload
    ])?;
    transaction.commit()?;
    Ok(())
}

/// `writers` threads append one event per transaction to their own streams until the deadline.
pub fn append(dir: &Path, writers: usize, duration: Duration) -> BenchResult<AppendOutcome> {
    let connection = Mutex::new(open(dir)?);
    let pool = EventPool::new()?;
    let started = Instant::now();
    let deadline = started + duration;
    let (appends, latencies) =
        append_until(writers, deadline, &pool, |stream, _version, payload| {
            let mut connection = connection.lock().map_err(|_| "connection lock poisoned")?;
            append_one(&mut connection, stream, payload)
        })?;
    let elapsed = started.elapsed();
    // Closing checkpoints the WAL file into the database and removes it.
    drop(connection);
    Ok(AppendOutcome {
        appends,
        latencies,
        elapsed,
        // One commit, one fsync of the WAL file (plus rare checkpoint syncs).
        syncs: Some(appends),
        disk: disk_bytes(dir)?,
    })
}

/// Fills the table with `(stream, events)` one after the other, 1,000 per transaction.
pub fn load(dir: &Path, streams: &[(&str, u64)]) -> BenchResult<()> {
    let mut connection = open(dir)?;
    for &(stream, events) in streams {
        load_stream(&mut connection, stream, events)?;
    }
    Ok(())
}

fn load_stream(connection: &mut Connection, stream: &str, events: u64) -> BenchResult<()> {
    let pool = EventPool::new()?;
    let mut written = 0u64;
    while written < events {
        let count = (events - written).min(1000);
        let transaction = connection.transaction()?;
        {
            let mut insert = transaction.prepare_cached(
                "INSERT INTO events (stream, version, event_type, timestamp_ms, payload)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for index in written..written + count {
                let payload = codec::encode(&pool.event(index))?;
                insert.execute(params![
                    stream,
                    index as i64,
                    EVENT_TYPE,
                    now_ms() as i64,
                    payload
                ])?;
            }
        }
        transaction.commit()?;
        written += count;
    }
    Ok(())
}

fn read_event(row: &Row<'_>) -> rusqlite::Result<(u64, String, u64, u64, Vec<u8>)> {
    Ok((
        row.get::<_, i64>(0)? as u64,
        row.get(1)?,
        row.get::<_, i64>(2)? as u64,
        row.get::<_, i64>(3)? as u64,
        row.get(4)?,
    ))
}

fn decoded(row: (u64, String, u64, u64, Vec<u8>)) -> BenchResult<ReadEvent> {
    let (position, stream, version, timestamp_ms, payload) = row;
    Ok(ReadEvent {
        position,
        stream,
        version,
        timestamp_ms,
        event: decode(&payload)?,
    })
}

fn query(
    connection: &Connection,
    sql: &str,
    parameters: impl rusqlite::Params,
) -> BenchResult<Vec<ReadEvent>> {
    let mut statement = connection.prepare_cached(sql)?;
    let rows = statement.query_map(parameters, read_event)?;
    rows.map(|row| decoded(row?)).collect()
}

/// `read_stream` in pages of 500 through the `(stream, version)` index, then a catch-up read of
/// the whole table by position in pages of 1,024.
pub fn read(dir: &Path, events: u64) -> BenchResult<[ReadOutcome; 2]> {
    let connection = open(dir)?;
    let page_sql = format!(
        "SELECT {COLUMNS} FROM events WHERE stream = ?1 AND version >= ?2 \
         ORDER BY version LIMIT {READ_PAGE}"
    );
    let started = Instant::now();
    let mut from = 0u64;
    loop {
        let page = query(&connection, &page_sql, params![READ_STREAM, from as i64])?;
        if page.is_empty() {
            break;
        }
        for event in &page {
            event.check(from)?;
            from += 1;
        }
    }
    let read_stream = ReadOutcome::new(from, started.elapsed(), events)?;
    let all_sql = format!(
        "SELECT {COLUMNS} FROM events WHERE position >= ?1 ORDER BY position LIMIT {CATCH_UP_PAGE}"
    );
    let started = Instant::now();
    let (mut next, mut delivered) = (1u64, 0u64);
    loop {
        let page = query(&connection, &all_sql, params![next as i64])?;
        let Some(last) = page.last() else { break };
        next = last.position + 1;
        for event in &page {
            event.check(delivered)?;
            delivered += 1;
        }
    }
    let catch_up = ReadOutcome::new(delivered, started.elapsed(), events)?;
    Ok([read_stream, catch_up])
}

/// The newest 50 events of the stream: (open + first query, warm query).
pub fn tail(dir: &Path, plan: &Plan) -> BenchResult<(Duration, Duration)> {
    let sql = format!(
        "SELECT {COLUMNS} FROM events WHERE stream = ?1 ORDER BY version DESC LIMIT {TAIL}"
    );
    let started = Instant::now();
    let connection = open(dir)?;
    let first = query(&connection, &sql, params![READ_STREAM])?;
    let cold = started.elapsed();
    assert_eq!(first.len(), TAIL, "tail length");
    first[0].check(plan.tail_events - 1)?;
    let started = Instant::now();
    let mut queries = 0u32;
    while started.elapsed() < plan.tail_budget || queries < 3 {
        std::hint::black_box(query(&connection, &sql, params![READ_STREAM])?);
        queries += 1;
    }
    Ok((cold, started.elapsed() / queries))
}
