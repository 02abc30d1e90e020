//! The `postgres` workload: logbook-postgres against plain SQL on the same PostgreSQL 15
//! server, a throwaway cluster of its own with `fsync` ON (never off in a benchmark).
//!
//! Owns: the cluster, the plain-SQL peer (one table, one autocommitted `INSERT` per append,
//! a unique `(stream, version)` as its optimistic-concurrency check, a `bigserial` position)
//! and the logbook-postgres peer (`PgStore::append` through the group committer), both driven
//! by the plan's writer counts (1, 16, 256 by default; the goal is stated for 16) for
//! the plan's append duration, each writer with one append outstanding; and catch-up reads of
//! the same rows: a `Follower` (pages of `read_all`, read ahead) against `SELECT ... WHERE position > $1 ORDER BY position
//! LIMIT n` pages. Both readers decode every payload into a [`BenchEvent`].
//! Never: runs unless named on the command line (it starts a server), turns `fsync` off, or
//! compares against a database the other peer has written to (each run gets a fresh one).

use crate::event::{self, BenchEvent, EVENT_TYPE, EventPool, STREAMS};
use crate::report::Table;
use crate::workload::{Peer, Plan};
use crate::{BenchError, BenchResult};
use logbook_pgtest::{Cluster, ClusterOptions, TestDatabase};
use logbook_postgres::{AppendRequest, ExpectedVersion, FollowOptions, PgStore, StoreOptions};
use logbook_projection::{EventData, StreamId, codec};
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;
use tokio_postgres::NoTls;

/// Rows per catch-up page, for both readers.
pub const READ_PAGE: usize = 1000;
/// Events per group when the read log is loaded.
const LOAD_GROUP_EVENTS: usize = 5000;

const PLAIN_SCHEMA: &str = "CREATE TABLE plain_events (
        position bigserial PRIMARY KEY,
        stream text NOT NULL,
        version bigint NOT NULL,
        event_type text NOT NULL,
        timestamp_ms bigint NOT NULL,
        payload bytea NOT NULL,
        UNIQUE (stream, version)
    )";
const PLAIN_INSERT: &str = "INSERT INTO plain_events (stream, version, event_type, timestamp_ms,
        payload) VALUES ($1, $2, $3, $4, $5)";
const PLAIN_PAGE: &str = "SELECT position, stream, version, payload FROM plain_events
        WHERE position > $1 ORDER BY position LIMIT $2";

fn boxed(error: impl std::error::Error + Send + Sync + 'static) -> BenchError {
    Box::new(error)
}

/// Runs both peers, rotated, for `plan.rounds` rounds; appends first, then catch-up reads.
pub fn run(runtime: &Runtime, plan: &Plan, table: &mut Table) -> BenchResult<()> {
    eprintln!("postgres: starting a PostgreSQL cluster with fsync on");
    let cluster = Cluster::start(ClusterOptions { fsync: true });
    let pool = EventPool::new()?;
    let peers = [Peer::PgSql, Peer::LogbookPostgres];
    for round in 0..plan.rounds {
        for &writers in &plan.writer_counts {
            let workload = format!("postgres: durable appends, {writers} writer(s)");
            for index in 0..peers.len() {
                let peer = peers[(index + round) % peers.len()];
                let database = cluster.create_database();
                let run = append(peer, &database, writers, plan, &pool);
                let (appends, elapsed, groups) = runtime.block_on(run)?;
                let rate = appends as f64 / elapsed.as_secs_f64();
                table.figure(&workload, peer, "appends/s", true, rate);
                if let Some(groups) = groups {
                    let per_group = appends as f64 / groups.max(1) as f64;
                    table.detail(&workload, peer, "appends/transaction", per_group);
                }
            }
        }
        eprintln!("postgres appends: round {}/{} done", round + 1, plan.rounds);
    }
    let events = plan.read_events;
    let database = cluster.create_database();
    runtime.block_on(load(&database, events, &pool))?;
    let read_workload = format!("postgres: catch-up reads, {events} events, pages of {READ_PAGE}");
    for round in 0..plan.rounds {
        for index in 0..peers.len() {
            let peer = peers[(index + round) % peers.len()];
            let started = Instant::now();
            let read = runtime.block_on(read(peer, &database, events))?;
            let elapsed = started.elapsed();
            if read != events {
                return Err(
                    format!("{}: read {read} events, expected {events}", peer.name()).into(),
                );
            }
            table.figure(
                &read_workload,
                peer,
                "events/s",
                true,
                read as f64 / elapsed.as_secs_f64(),
            );
        }
        eprintln!("postgres reads: round {}/{} done", round + 1, plan.rounds);
    }
    Ok(())
}

/// One append run: appends made, elapsed time, and the committer's groups (logbook-postgres).
async fn append(
    peer: Peer,
    database: &TestDatabase,
    writers: usize,
    plan: &Plan,
    pool: &EventPool,
) -> BenchResult<(u64, Duration, Option<u64>)> {
    let url = database.connection_string();
    let mut store = None;
    let sinks: Vec<Box<dyn Writer>> = match peer {
        Peer::LogbookPostgres => {
            let opened = PgStore::open(&url, StoreOptions::default()).await?;
            store = Some(opened.clone());
            (0..writers)
                .map(|_| Box::new(opened.clone()) as Box<dyn Writer>)
                .collect()
        }
        _ => {
            let (client, connection) = tokio_postgres::connect(&url, NoTls).await?;
            let driver = tokio::spawn(connection);
            client.batch_execute(PLAIN_SCHEMA).await?;
            drop(client);
            driver.abort();
            let mut sinks: Vec<Box<dyn Writer>> = Vec::new();
            for _ in 0..writers {
                sinks.push(Box::new(PlainWriter::connect(&url).await?));
            }
            sinks
        }
    };
    let deadline = Instant::now() + plan.append_duration;
    let started = Instant::now();
    let tasks: Vec<_> = sinks
        .into_iter()
        .enumerate()
        .map(|(writer, sink)| {
            let pool = pool.clone();
            tokio::spawn(async move { write_until(writer, writers, sink, deadline, &pool).await })
        })
        .collect();
    let mut appends = 0;
    for task in tasks {
        appends += task.await.map_err(boxed)??;
    }
    let elapsed = started.elapsed();
    Ok((
        appends,
        elapsed,
        store.map(|store| store.committer_stats().groups),
    ))
}

/// One writer: its own streams (`event::streams_of`), round robin, one event per append, each
/// with the exact expected version.
async fn write_until(
    writer: usize,
    writers: usize,
    sink: Box<dyn Writer>,
    deadline: Instant,
    pool: &EventPool,
) -> BenchResult<u64> {
    let mine: Vec<String> = event::streams_of(writer, writers)
        .into_iter()
        .map(event::stream_name)
        .collect();
    let mut versions = vec![0u64; mine.len()];
    let mut count = 0u64;
    while Instant::now() < deadline {
        let slot = count as usize % mine.len();
        let payload = codec::encode(&pool.event(count))?;
        sink.append(&mine[slot], versions[slot], payload).await?;
        versions[slot] += 1;
        count += 1;
    }
    Ok(count)
}

/// A durable append of one event at `version` of `stream`.
trait Writer: Send + Sync + 'static {
    fn append<'a>(
        &'a self,
        stream: &'a str,
        version: u64,
        payload: Vec<u8>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = BenchResult<()>> + Send + 'a>>;
}

impl Writer for PgStore {
    fn append<'a>(
        &'a self,
        stream: &'a str,
        version: u64,
        payload: Vec<u8>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = BenchResult<()>> + Send + 'a>> {
        Box::pin(async move {
            let expected = match version {
                0 => ExpectedVersion::NoStream,
                version => ExpectedVersion::Exact(version - 1),
            };
            let request = AppendRequest {
                stream: StreamId::new(stream)?,
                expected,
                events: vec![EventData::new(EVENT_TYPE, 1, payload)?],
            };
            PgStore::append(self, request).await?;
            Ok(())
        })
    }
}

/// The plain-SQL peer's writer: its own connection, one autocommitted INSERT per append.
struct PlainWriter {
    client: tokio_postgres::Client,
    insert: tokio_postgres::Statement,
    driver: tokio::task::JoinHandle<()>,
}

impl PlainWriter {
    async fn connect(url: &str) -> BenchResult<PlainWriter> {
        let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
        let driver = tokio::spawn(async move {
            let _ = connection.await;
        });
        let insert = client.prepare(PLAIN_INSERT).await?;
        Ok(PlainWriter {
            client,
            insert,
            driver,
        })
    }
}

impl Drop for PlainWriter {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl Writer for PlainWriter {
    fn append<'a>(
        &'a self,
        stream: &'a str,
        version: u64,
        payload: Vec<u8>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = BenchResult<()>> + Send + 'a>> {
        Box::pin(async move {
            let version = version as i64;
            let now = event::now_ms() as i64;
            self.client
                .execute(
                    &self.insert,
                    &[&stream, &version, &EVENT_TYPE, &now, &payload],
                )
                .await?;
            Ok(())
        })
    }
}

/// Loads `events` events over the benchmark's streams into logbook's tables (big groups),
/// then the same rows into the plain table.
async fn load(database: &TestDatabase, events: u64, pool: &EventPool) -> BenchResult<()> {
    let store = PgStore::open(&database.connection_string(), StoreOptions::default()).await?;
    let mut written = 0u64;
    while written < events {
        let count = (events - written).min(LOAD_GROUP_EVENTS as u64);
        let mut requests = Vec::new();
        for index in written..written + count {
            let stream = event::stream_name(index as usize % STREAMS);
            let payload = codec::encode(&pool.event(index))?;
            requests.push(AppendRequest {
                stream: StreamId::new(&stream)?,
                expected: ExpectedVersion::Any,
                events: vec![EventData::new(EVENT_TYPE, 1, payload)?],
            });
        }
        for outcome in store.append_group(&requests).await? {
            outcome?;
        }
        written += count;
    }
    let (client, connection) =
        tokio_postgres::connect(&database.connection_string(), NoTls).await?;
    let driver = tokio::spawn(connection);
    client.batch_execute(PLAIN_SCHEMA).await?;
    // The same event payloads (the envelope's payload part) at the same positions.
    let mut from = 1;
    loop {
        let page = store.read_all(from, 10_000).await?;
        let Some(last) = page.last() else { break };
        from = last.position + 1;
        let positions: Vec<i64> = page.iter().map(|raw| raw.position as i64).collect();
        let streams: Vec<String> = page
            .iter()
            .map(|raw| raw.envelope.stream().to_string())
            .collect();
        let versions: Vec<i64> = page
            .iter()
            .map(|raw| raw.envelope.stream_version() as i64)
            .collect();
        let times: Vec<i64> = page
            .iter()
            .map(|raw| raw.envelope.timestamp_ms() as i64)
            .collect();
        let payloads: Vec<&[u8]> = page.iter().map(|raw| raw.envelope.payload()).collect();
        client
            .execute(
                "INSERT INTO plain_events (position, stream, version, event_type, timestamp_ms,
                     payload)
                 SELECT p, s, v, $6, t, b FROM unnest($1::bigint[], $2::text[], $3::bigint[],
                     $4::bigint[], $5::bytea[]) AS u(p, s, v, t, b)",
                &[
                    &positions,
                    &streams,
                    &versions,
                    &times,
                    &payloads,
                    &EVENT_TYPE,
                ],
            )
            .await?;
    }
    client.batch_execute("VACUUM ANALYZE").await?;
    driver.abort();
    Ok(())
}

/// Reads the whole log (`expected` events) in pages, decoding every payload; returns the
/// events read. The logbook-postgres reader follows the log (it would wait for more at its
/// end), so it stops after `expected` events; the plain reader stops at an empty page.
async fn read(peer: Peer, database: &TestDatabase, expected: u64) -> BenchResult<u64> {
    let url = database.connection_string();
    let mut read = 0u64;
    match peer {
        Peer::LogbookPostgres => {
            // How a logbook-postgres reader catches up: a follower (pages read ahead).
            let store = PgStore::open_read_only(&url, StoreOptions::default()).await?;
            let options = FollowOptions {
                page_max: READ_PAGE,
                ..FollowOptions::default()
            };
            let mut follower = store.follow(1, options);
            while read < expected {
                let page = follower.next_page().await?;
                for raw in &page {
                    let decoded: BenchEvent = event::decode(raw.envelope.payload())?;
                    std::hint::black_box(decoded);
                }
                read += page.len() as u64;
            }
        }
        _ => {
            let (client, connection) = tokio_postgres::connect(&url, NoTls).await?;
            let driver = tokio::spawn(connection);
            let statement = client.prepare(PLAIN_PAGE).await?;
            let mut after = 0i64;
            loop {
                let rows = client
                    .query(&statement, &[&after, &(READ_PAGE as i64)])
                    .await?;
                let Some(last) = rows.last() else { break };
                after = last.try_get(0)?;
                for row in &rows {
                    let stream: &str = row.try_get(1)?;
                    let version: i64 = row.try_get(2)?;
                    let payload: &[u8] = row.try_get(3)?;
                    let decoded: BenchEvent = event::decode(payload)?;
                    std::hint::black_box((stream, version, decoded));
                }
                read += rows.len() as u64;
            }
            driver.abort();
        }
    }
    Ok(read)
}
