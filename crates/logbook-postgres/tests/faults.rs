//! Faults: the server killed (`pg_ctl stop -m immediate`) in the middle of concurrent appends
//! through the group committer, and a statement timeout. Calls fail with a typed retryable
//! error, every acknowledged event is there after the restart, every unacknowledged append is
//! there whole or not at all, and appends resume through the pool by themselves.

mod common;

use common::{fresh_database, request, stream};
use logbook_pgtest::{Cluster, ClusterOptions};
use logbook_postgres::{
    APPEND_LOCK_KEY, AppendRequest, Error, ExpectedVersion, PgStore, StoreOptions,
};
use logbook_projection::EventData;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const WRITERS: usize = 16;
/// Events per append: an append is atomic, so after the restart each is there whole or absent.
const EVENTS_PER_APPEND: usize = 3;
const ACKS_BEFORE_KILL: u64 = 200;
const ACKS_AFTER_RESTART: u64 = 200;
const OUTAGE: Duration = Duration::from_millis(1500);
const DEADLINE: Duration = Duration::from_secs(90);
const KILLED: u8 = 1;
const RESTARTED: u8 = 2;

#[derive(Default)]
struct Record {
    acked: Mutex<Vec<(u64, String, u64)>>,
    /// Tags of the appends that failed: outcome unknown.
    unknown: Mutex<Vec<String>>,
    acked_total: AtomicU64,
    acked_after_restart: AtomicU64,
    retryable_errors: AtomicU64,
    other_errors: Mutex<Vec<String>>,
    /// 0 before the kill, then KILLED, then RESTARTED.
    phase: AtomicU8,
    stop: AtomicBool,
}

async fn wait_for(what: &str, started: Instant, done: impl Fn() -> bool) {
    while !done() {
        assert!(started.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_server_loses_nothing_acknowledged_and_appends_resume() {
    // A private cluster: killing it must not disturb the other tests of this binary.
    let cluster = Arc::new(Cluster::start(ClusterOptions::default()));
    let database = cluster.create_database();
    let options = StoreOptions {
        connect_timeout: Duration::from_secs(2),
        ..StoreOptions::default()
    };
    let store = PgStore::open(&database.connection_string(), options)
        .await
        .expect("open");
    let record = Arc::new(Record::default());
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let (store, record) = (store.clone(), record.clone());
            tokio::spawn(async move { write_until_stopped(store, record, writer).await })
        })
        .collect();

    let started = Instant::now();
    wait_for("acks before the kill", started, || {
        record.acked_total.load(Ordering::SeqCst) >= ACKS_BEFORE_KILL
    })
    .await;
    let killer = cluster.clone();
    tokio::task::spawn_blocking(move || killer.kill_server())
        .await
        .expect("kill");
    record.phase.store(KILLED, Ordering::SeqCst);
    tokio::time::sleep(OUTAGE).await;
    let restarter = cluster.clone();
    tokio::task::spawn_blocking(move || restarter.restart())
        .await
        .expect("restart");
    record.phase.store(RESTARTED, Ordering::SeqCst);
    wait_for("acks after the restart", started, || {
        record.acked_after_restart.load(Ordering::SeqCst) >= ACKS_AFTER_RESTART
    })
    .await;
    record.stop.store(true, Ordering::SeqCst);
    for writer in writers {
        writer.await.expect("writer task");
    }

    let other = record.other_errors.lock().expect("lock").clone();
    assert!(other.is_empty(), "errors that are not retryable: {other:?}");
    assert!(
        record.retryable_errors.load(Ordering::SeqCst) > 0,
        "the outage failed no call: the kill did not happen during the appends"
    );
    let head = store.head_position().await.expect("head after restart");
    let mut present = HashSet::new();
    let mut events_per_tag: HashMap<String, usize> = HashMap::new();
    let mut from = 1;
    loop {
        let page = store
            .read_all(from, 1000)
            .await
            .expect("read after restart");
        let Some(last) = page.last() else { break };
        from = last.position + 1;
        for raw in &page {
            let payload = String::from_utf8_lossy(raw.envelope.payload()).to_string();
            let tag = payload.split('#').next().unwrap_or_default().to_string();
            *events_per_tag.entry(tag).or_default() += 1;
            present.insert((
                raw.position,
                raw.envelope.stream().to_string(),
                raw.envelope.stream_version(),
            ));
        }
    }
    assert_eq!(
        present.len() as u64,
        head,
        "positions 1..={head} are not all there"
    );
    let acked = record.acked.lock().expect("lock").clone();
    let lost: Vec<_> = acked
        .iter()
        .filter(|event| !present.contains(*event))
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged events lost: {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    let torn: Vec<_> = events_per_tag
        .iter()
        .filter(|(_, count)| **count != EVENTS_PER_APPEND)
        .collect();
    assert!(torn.is_empty(), "appends written in part: {torn:?}");
    let unknown = record.unknown.lock().expect("lock").clone();
    let committed_unknown = unknown
        .iter()
        .filter(|tag| events_per_tag.contains_key(*tag))
        .count();
    eprintln!(
        "{} appends failed with a retryable error, {committed_unknown} of them committed",
        unknown.len()
    );
}

/// An append of [`EVENTS_PER_APPEND`] events whose payloads carry `tag`.
fn tagged_append(name: &str, tag: &str) -> AppendRequest {
    AppendRequest {
        stream: stream(name),
        expected: ExpectedVersion::Any,
        events: (0..EVENTS_PER_APPEND)
            .map(|n| {
                EventData::new("test.appended", 1, format!("{tag}#{n}").into_bytes())
                    .expect("event")
            })
            .collect(),
    }
}

async fn write_until_stopped(store: PgStore, record: Arc<Record>, writer: usize) {
    let stream = format!("room/writer-{writer}");
    let mut sequence = 0u64;
    while !record.stop.load(Ordering::SeqCst) {
        let phase = record.phase.load(Ordering::SeqCst);
        sequence += 1;
        let tag = format!("w{writer}-{sequence}");
        match store.append(tagged_append(&stream, &tag)).await {
            Ok(appended) => {
                assert_eq!(appended.count, EVENTS_PER_APPEND as u64);
                let mut acked = record.acked.lock().expect("lock");
                for n in 0..appended.count {
                    let event = (
                        appended.first_position + n,
                        stream.clone(),
                        appended.first_version + n,
                    );
                    acked.push(event);
                }
                drop(acked);
                record.acked_total.fetch_add(1, Ordering::SeqCst);
                if phase == RESTARTED {
                    record.acked_after_restart.fetch_add(1, Ordering::SeqCst);
                }
            }
            Err(error) if error.is_retryable() => {
                record.unknown.lock().expect("lock").push(tag);
                record.retryable_errors.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(error) => record
                .other_errors
                .lock()
                .expect("lock")
                .push(format!("{error:?}")),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_timeout_is_a_retryable_error_and_writes_nothing() {
    let database = fresh_database();
    let options = StoreOptions {
        statement_timeout: Some(Duration::from_millis(300)),
        ..StoreOptions::default()
    };
    let store = PgStore::open(&database.connection_string(), options)
        .await
        .expect("open");
    // Another session holds the append lock, so the append waits past its statement timeout.
    let (holder, connection) =
        tokio_postgres::connect(&database.connection_string(), tokio_postgres::NoTls)
            .await
            .expect("connect holder");
    let driver = tokio::spawn(connection);
    holder
        .execute("SELECT pg_advisory_lock($1)", &[&APPEND_LOCK_KEY])
        .await
        .expect("hold the append lock");
    let result = store
        .append(request("room/t", ExpectedVersion::Any, 1))
        .await;
    let error = result.expect_err("the append must time out");
    assert!(
        matches!(&error, Error::Unavailable { operation: "append", cause } if cause.contains("57014")),
        "{error:?}"
    );
    assert!(error.is_retryable());
    holder
        .execute("SELECT pg_advisory_unlock($1)", &[&APPEND_LOCK_KEY])
        .await
        .expect("release");
    assert_eq!(store.head_position().await.expect("head"), 0);
    let retried = store
        .append(request("room/t", ExpectedVersion::Any, 1))
        .await;
    assert!(retried.is_ok(), "{retried:?}");
    drop(holder);
    driver.abort();
}
