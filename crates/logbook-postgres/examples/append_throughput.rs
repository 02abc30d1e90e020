//! A quick throughput figure (not yet the `benches/compare` peer): durable appends per second
//! with 16 concurrent writers on a throwaway cluster with `fsync` on, three ways:
//! plain SQL (one `INSERT` per transaction into a table with a `bigserial`, the baseline),
//! logbook one transaction per append, and logbook grouped (a gatherer puts every pending
//! append into one `append_group`, as the engine's writer will).
//!
//! ```sh
//! cargo run -p logbook-postgres --example append_throughput   # BENCH_SECONDS=5 by default
//! ```
//!
//! First figures (2-core machine shared with other builds, PostgreSQL 15, 5 s each, noisy):
//! plain SQL 5,200-6,400 appends/s; logbook one transaction per append 240-560 (the append lock
//! serialises every commit, fsync included); logbook grouped 1,950-2,100 (0.33-0.37x). Grouping
//! is what moves it; reaching 1x (issue 13's goal) is work for the engine's writer.

use logbook_pgtest::{Cluster, ClusterOptions};
use logbook_postgres::{AppendRequest, ExpectedVersion, PgStore, StoreOptions};
use logbook_projection::{EventData, StreamId};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

const WRITERS: usize = 16;
const PAYLOAD_BYTES: usize = 100;
const GROUP_MAX: usize = 256;

type Reply = oneshot::Sender<logbook_postgres::Result<()>>;

fn seconds() -> Duration {
    let seconds = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(5);
    Duration::from_secs(seconds)
}

fn request(writer: usize) -> AppendRequest {
    AppendRequest {
        stream: StreamId::new(format!("bench/{writer}")).expect("stream"),
        expected: ExpectedVersion::Any,
        events: vec![EventData::new("bench.event", 1, vec![7; PAYLOAD_BYTES]).expect("event")],
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let cluster = Cluster::start(ClusterOptions { fsync: true });
    let duration = seconds();
    println!("{WRITERS} writers, {PAYLOAD_BYTES}-byte payloads, fsync on, {duration:?} each");

    let baseline_db = cluster.create_database();
    cluster.psql(
        baseline_db.name(),
        "CREATE TABLE plain_events (position bigserial PRIMARY KEY, stream text, payload bytea)",
    );
    let plain = plain_sql(&baseline_db.connection_string(), duration).await;
    println!("plain SQL, one INSERT per transaction: {plain:>8.0} appends/s (baseline)");

    let database = cluster.create_database();
    let store = PgStore::open(&database.connection_string(), StoreOptions::default())
        .await
        .expect("open");
    let single = one_per_transaction(&store, duration).await;
    println!(
        "logbook, one transaction per append:  {single:>8.0} appends/s ({:.2}x baseline)",
        single / plain
    );
    let grouped = grouped(&store, duration).await;
    println!(
        "logbook, grouped appends:             {grouped:>8.0} appends/s ({:.2}x baseline)",
        grouped / plain
    );
}

async fn plain_sql(url: &str, duration: Duration) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(connection);
        let (stop, count) = (stop.clone(), count.clone());
        tasks.push(tokio::spawn(async move {
            let stream = format!("bench/{writer}");
            let payload = vec![7u8; PAYLOAD_BYTES];
            while !stop.load(Ordering::Relaxed) {
                client
                    .execute(
                        "INSERT INTO plain_events (stream, payload) VALUES ($1, $2)",
                        &[&stream, &payload],
                    )
                    .await
                    .expect("insert");
                count.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    measure(duration, stop, count, tasks).await
}

async fn one_per_transaction(store: &PgStore, duration: Duration) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let tasks = (0..WRITERS)
        .map(|writer| {
            let (store, stop, count) = (store.clone(), stop.clone(), count.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let outcomes = store
                        .append_group(&[request(writer)])
                        .await
                        .expect("append");
                    outcomes.into_iter().for_each(|outcome| {
                        outcome.expect("appended");
                    });
                    count.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    measure(duration, stop, count, tasks).await
}

async fn grouped(store: &PgStore, duration: Duration) -> f64 {
    let (sender, mut receiver) = mpsc::channel::<(AppendRequest, Reply)>(WRITERS * 4);
    let gatherer_store = store.clone();
    let gatherer = tokio::spawn(async move {
        while let Some(first) = receiver.recv().await {
            let mut batch = vec![first];
            while batch.len() < GROUP_MAX {
                match receiver.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            let (requests, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
            let outcomes = gatherer_store.append_group(&requests).await.expect("group");
            for (outcome, reply) in outcomes.into_iter().zip(replies) {
                let _ = reply.send(outcome.map(|_| ()));
            }
        }
    });
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let tasks = (0..WRITERS)
        .map(|writer| {
            let (sender, stop, count) = (sender.clone(), stop.clone(), count.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let (reply, acknowledged) = oneshot::channel();
                    sender
                        .send((request(writer), reply))
                        .await
                        .expect("gatherer");
                    acknowledged.await.expect("reply").expect("appended");
                    count.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    drop(sender);
    let rate = measure(duration, stop, count, tasks).await;
    gatherer.await.expect("gatherer");
    rate
}

async fn measure(
    duration: Duration,
    stop: Arc<AtomicBool>,
    count: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
) -> f64 {
    let started = Instant::now();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let done = count.load(Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    for task in tasks {
        task.await.expect("writer");
    }
    done as f64 / elapsed
}
