//! The engine on PostgreSQL under a killed server (issue 13, "Bad input and faults"): writers
//! append through `Logbook` while the server is stopped with `pg_ctl stop -m immediate` and
//! started again. Every append acknowledged (before or after) is in the log and in the
//! projection, each failed append is a retryable `Error::Postgres` (never a panic, never a
//! hang), the engine's follower catches up by itself, and appends resume without a reopen.
//! A second replica opened afterwards sees the same state.

use logbook::{Error, ExpectedVersion, Logbook, Projection, Projections, RecordedEvent, StreamId};
use logbook_tests::pg::{Cluster, ClusterOptions};
use logbook_tests::{CounterEvent, added, test_options};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The notes of every applied `Added` event: what the projection saw.
#[derive(Debug, Clone, Default)]
struct Notes(BTreeSet<String>);

impl Projection for Notes {
    type Event = CounterEvent;

    fn id(&self) -> &'static str {
        "test.fault_notes"
    }

    fn state_version(&self) -> u16 {
        1
    }

    fn apply(&mut self, event: &RecordedEvent<CounterEvent>) {
        if let CounterEvent::Added { note, .. } = &event.event {
            self.0.insert(note.clone());
        }
    }

    fn snapshot(&self) -> logbook::EventResult<Vec<u8>> {
        logbook::snapshot_state(&self.0)
    }

    fn restore(&mut self, state_version: u16, bytes: &[u8]) -> logbook::EventResult<()> {
        self.0 = logbook::restore_state("test.fault_notes", 1, state_version, bytes)?;
        Ok(())
    }

    fn stream_deleted(&mut self, _stream: &StreamId) -> bool {
        false
    }

    fn stream_truncated(&mut self, _stream: &StreamId, _before_version: u64) -> bool {
        false
    }
}

const WRITERS: usize = 6;
/// Acknowledged appends to see before each kill.
const ACKS_BEFORE_KILL: usize = 50;
/// Acknowledged appends to see after each restart.
const ACKS_AFTER_RESTART: usize = 30;
/// Kill cycles at most before the test gives up on touching an append or the follower.
const KILL_CYCLES_MAX: usize = 10;
const DEADLINE: Duration = Duration::from_secs(240);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_server_loses_nothing_acknowledged_and_the_engine_resumes() {
    let cluster = Arc::new(Cluster::start(ClusterOptions::default()));
    let database = cluster.create_database();
    let url = database.connection_string();
    let mut projections = Projections::new();
    let notes = projections.register(Notes::default());
    let (log, _) =
        Logbook::<CounterEvent>::open_postgres_with_projections(&url, test_options(), projections)
            .await
            .expect("open");

    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let failures = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let (log, acked, failures, stop) =
            (log.clone(), acked.clone(), failures.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let stream = StreamId::new(format!("counter-{writer}")).expect("stream");
            for n in 0u64.. {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let note = format!("w{writer}-{n}");
                match log
                    .append(&stream, ExpectedVersion::Any, vec![added(1, &note)])
                    .await
                {
                    Ok(_) => acked.lock().unwrap().push(note),
                    Err(Error::Postgres(error)) => {
                        assert!(error.is_retryable(), "a non-retryable error: {error}");
                        failures.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(other) => panic!("writer {writer}: {other}"),
                }
            }
        }));
    }
    let started = Instant::now();
    let acked_count = || acked.lock().unwrap().len();
    let follow_retries = || match log.stats().backend {
        logbook::BackendStats::Postgres(postgres) => postgres.follow_retries,
        other => panic!("not the PostgreSQL backend: {other:?}"),
    };
    // A kill can land while every writer waits for the follower and be over (on a fast
    // machine) before the follower's next read: then it touched nothing this test is about.
    // Kill again until one cycle failed an append in flight or made the follower retry.
    let mut cycles = 0;
    while failures.load(Ordering::SeqCst) + follow_retries() == 0 {
        assert!(
            cycles < KILL_CYCLES_MAX,
            "{KILL_CYCLES_MAX} kills touched neither an append nor the follower"
        );
        cycles += 1;
        let before = acked_count();
        while acked_count() < before + ACKS_BEFORE_KILL {
            assert!(started.elapsed() < DEADLINE, "no acks before kill {cycles}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let killer = cluster.clone();
        tokio::task::spawn_blocking(move || killer.kill_server())
            .await
            .expect("kill");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let restarter = cluster.clone();
        tokio::task::spawn_blocking(move || restarter.restart())
            .await
            .expect("restart");
        let restarted_at = acked_count();
        while acked_count() < restarted_at + ACKS_AFTER_RESTART {
            assert!(
                started.elapsed() < DEADLINE,
                "appends did not resume after restart {cycles}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    stop.store(true, Ordering::SeqCst);
    for writer in writers {
        writer.await.expect("writer");
    }
    println!(
        "kills: {cycles}, failed appends: {}, follower retries: {}",
        failures.load(Ordering::SeqCst),
        follow_retries()
    );

    // Every acknowledged append is in the log and in this replica's projection.
    let acked: BTreeSet<String> = acked.lock().unwrap().iter().cloned().collect();
    log.sync().await.expect("sync after the restart");
    let applied = notes.read().0.clone();
    let missing: Vec<_> = acked.difference(&applied).collect();
    assert!(
        missing.is_empty(),
        "acknowledged but not applied: {missing:?}"
    );
    let mut in_log = BTreeSet::new();
    let mut from = 1;
    loop {
        let page = log.read_all(from, 500).await.expect("read");
        let Some(last) = page.last() else { break };
        from = last.position + 1;
        for event in page {
            if let CounterEvent::Added { note, .. } = event.event {
                assert!(in_log.insert(note), "an event appears twice");
            }
        }
    }
    assert!(
        acked.is_subset(&in_log),
        "every acknowledged append is in the log"
    );
    assert_eq!(applied, in_log, "the projection applied exactly the log");
    log.close().await.expect("close");

    // Another replica opening now sees the same.
    let mut projections = Projections::new();
    let replica_notes = projections.register(Notes::default());
    let (replica, _) =
        Logbook::<CounterEvent>::open_postgres_with_projections(&url, test_options(), projections)
            .await
            .expect("open a replica");
    assert_eq!(replica_notes.read().0, in_log);
    replica.close().await.expect("close");
}
