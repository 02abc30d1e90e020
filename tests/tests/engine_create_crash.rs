//! A power cut at every step of an engine's first open and appends: the read-only inspection
//! API (what `dump`, `stats`, `tail`, `verify` and `state` are built on) never fails on what is
//! left while `wal/` exists; it shows every acknowledged event, or, when no segment with a
//! complete header survived, an empty log that says its creation was not finished. A writer
//! open then finishes the creation with every acknowledged event there.

use logbook::inspect::{self, EventFilter, Inspector, NoProgress};
use logbook::{ExpectedVersion, Logbook, MemoryStorage, StreamId};
use logbook_tests::{CounterEvent, added, test_options};
use logbook_wal::{CrashMode, Storage, WAL_DIR_NAME};
use std::path::Path;
use std::sync::Arc;

const LOG_DIR: &str = "/data/log";
/// Appends per run, one event each.
const APPENDS: u64 = 2;
/// More steps than any run takes; the loop stops at the first run that is not halted.
const STEPS_MAX: u64 = 200;

/// Opens (creating) the log and appends until something fails; returns the acknowledged
/// positions.
async fn run(storage: &MemoryStorage) -> Vec<u64> {
    let opened = Logbook::<CounterEvent>::open_with_storage(
        Arc::new(storage.clone()),
        LOG_DIR,
        test_options(),
    )
    .await;
    let Ok((log, _)) = opened else {
        return Vec::new();
    };
    let stream = StreamId::new("counter/1").expect("stream id");
    let mut acknowledged = Vec::new();
    for amount in 0..APPENDS {
        match log
            .append(&stream, ExpectedVersion::Any, vec![added(amount, "note")])
            .await
        {
            Ok(result) => acknowledged.push(result.last_position),
            Err(_) => break,
        }
    }
    let _ = log.close().await;
    acknowledged
}

fn check_read_only(storage: &MemoryStorage, acknowledged: &[u64], context: &str) {
    let dir = Path::new(LOG_DIR);
    if !storage.exists(&dir.join(WAL_DIR_NAME)) {
        assert!(
            acknowledged.is_empty(),
            "{context}: acknowledged events and no wal/"
        );
        return;
    }
    let storage: Arc<dyn Storage> = Arc::new(storage.clone());
    let inspector = Inspector::open_with_storage(storage.clone(), dir)
        .unwrap_or_else(|error| panic!("{context}: read-only open failed: {error}"));
    let positions: Vec<u64> = inspector
        .events(&EventFilter::default())
        .map(|event| event.expect("readable event").position)
        .collect();
    for position in acknowledged {
        assert!(
            positions.contains(position),
            "{context}: {position} lost: {positions:?}"
        );
    }
    let unfinished = inspector.creation_unfinished();
    assert_eq!(unfinished, inspector.segments().is_empty(), "{context}");
    assert_eq!(
        unfinished,
        inspect::creation_unfinished_with_storage(storage.as_ref(), dir).expect("reads"),
        "{context}: the inspector and the rule agree"
    );
    if unfinished {
        assert!(positions.is_empty() && acknowledged.is_empty(), "{context}");
    }
    let stats = inspector.stats(&NoProgress).expect("stats");
    assert_eq!(stats.creation_unfinished, unfinished, "{context}");
    inspector.replay_builtin(&NoProgress).expect("state");
    inspector.last_events(3).expect("tail");
    let report = inspect::verify_with_storage(storage, dir, &NoProgress).expect("verify");
    assert!(report.is_clean(), "{context}: {report:?}");
    assert_eq!(report.creation_unfinished, unfinished, "{context}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_inspection_never_fails_after_a_power_cut_during_creation() {
    for mode in [
        CrashMode::LoseUnsynced,
        CrashMode::KeepPrefix { seed: 1 },
        CrashMode::Tear { seed: 2 },
    ] {
        let mut completed = false;
        for step in 0..STEPS_MAX {
            let storage = MemoryStorage::new();
            storage.halt_after(step);
            let acknowledged = run(&storage).await;
            let halted = storage.is_halted();
            storage.crash(mode);
            let context = format!("{mode:?}, halt after {step}");
            check_read_only(&storage, &acknowledged, &context);
            let (log, _) = Logbook::<CounterEvent>::open_with_storage(
                Arc::new(storage.clone()),
                LOG_DIR,
                test_options(),
            )
            .await
            .unwrap_or_else(|error| panic!("{context}: writer open failed: {error}"));
            let all = log.read_all_raw(1, usize::MAX).await.expect("read");
            for position in &acknowledged {
                assert!(all.iter().any(|raw| raw.position == *position), "{context}");
            }
            log.close().await.expect("close");
            if !halted {
                assert_eq!(acknowledged.len() as u64, APPENDS, "{context}");
                completed = true;
                break;
            }
        }
        assert!(completed, "{mode:?}: no run fitted in {STEPS_MAX} steps");
    }
}
