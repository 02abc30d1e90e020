//! Projection hooks: `restored` fires exactly once after open (also on an empty log, and at
//! `observe` time for an observer registered after open); `upserted` and `deleted` fire for
//! live events, in position order, with their streams, on durable state only (the projection
//! already holds the event and its applied position is the event's); and no state is cloned
//! for anyone: a service's own projection, registered beside the built-in ones, counts its
//! clones and stays at zero.

use logbook::model::{RunCompleted, RunKind};
use logbook::{
    AppendDurability, BuiltinEvent, BuiltinLog, Logbook, ManualClock, MemoryStorage, Observer,
    Projection, ProjectionHandle, Projections, RecordedEvent, RunLedger, StreamId, StreamKind,
};
use logbook_tests::MEMORY_DIR;
use logbook_tests::projection_support::{
    CLOCK_START_MS, clocked_options, message_posted, room_created, run_started,
};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// A service's own projection: events per stream. Its `Clone` counts, so a test sees whether
/// the engine ever copies a projection's state.
#[derive(Debug, Default)]
struct StreamCounts {
    clones: Arc<AtomicU64>,
    events: u64,
    last_position: u64,
    per_stream: BTreeMap<String, u64>,
}

impl StreamCounts {
    fn new(clones: &Arc<AtomicU64>) -> Self {
        StreamCounts {
            clones: clones.clone(),
            ..StreamCounts::default()
        }
    }
}

impl Clone for StreamCounts {
    fn clone(&self) -> Self {
        self.clones.fetch_add(1, Ordering::SeqCst);
        StreamCounts {
            clones: self.clones.clone(),
            events: self.events,
            last_position: self.last_position,
            per_stream: self.per_stream.clone(),
        }
    }
}

impl Projection for StreamCounts {
    type Event = BuiltinEvent;

    fn id(&self) -> &'static str {
        "tests.stream_counts"
    }

    fn state_version(&self) -> u16 {
        1
    }

    fn apply(&mut self, event: &RecordedEvent<BuiltinEvent>) {
        self.events += 1;
        self.last_position = event.position;
        *self
            .per_stream
            .entry(event.stream.as_str().to_owned())
            .or_default() += 1;
    }

    fn snapshot(&self) -> logbook_projection::Result<Vec<u8>> {
        logbook_projection::projection::snapshot_state(&(
            self.events,
            self.last_position,
            &self.per_stream,
        ))
    }

    fn restore(&mut self, state_version: u16, bytes: &[u8]) -> logbook_projection::Result<()> {
        let (events, last_position, per_stream) =
            logbook_projection::projection::restore_state(self.id(), 1, state_version, bytes)?;
        self.events = events;
        self.last_position = last_position;
        self.per_stream = per_stream;
        Ok(())
    }

    fn stream_deleted(&mut self, stream: &StreamId) -> bool {
        self.per_stream.remove(stream.as_str()).is_some()
    }

    fn stream_truncated(&mut self, _stream: &StreamId, _before_version: u64) -> bool {
        false // only counts: nothing copied out of the hidden events
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Hook {
    /// With the projection's applied position at that moment.
    Restored {
        applied: u64,
    },
    Upserted {
        stream: String,
        position: u64,
    },
    /// With the projection's applied position at that moment (the tombstone's).
    Deleted {
        stream: String,
        applied: u64,
    },
}

/// What a recorder saw, and what it found wrong (checked on the syncer thread, reported here:
/// a panic there would stop the engine, not the test).
#[derive(Clone, Default)]
struct Journal {
    hooks: Arc<Mutex<Vec<Hook>>>,
    violations: Arc<Mutex<Vec<String>>>,
}

impl Journal {
    fn hooks(&self) -> Vec<Hook> {
        self.hooks.lock().unwrap().clone()
    }

    fn restored_count(&self) -> usize {
        let hooks = self.hooks.lock().unwrap();
        hooks
            .iter()
            .filter(|hook| matches!(hook, Hook::Restored { .. }))
            .count()
    }

    fn assert_no_violation(&self) {
        let violations = self.violations.lock().unwrap();
        assert!(violations.is_empty(), "hooks saw: {violations:#?}");
    }
}

type EffectCheck<P> = fn(&P, &RecordedEvent<BuiltinEvent>) -> Result<(), String>;

/// Records every hook and checks, inside `upserted`, that the state is durable and already
/// holds the event.
struct Recorder<P: Projection> {
    journal: Journal,
    handle: ProjectionHandle<P>,
    /// Set once open: durability is checked against it (replayed events are durable anyway).
    log: Arc<OnceLock<Logbook<BuiltinEvent>>>,
    effect: EffectCheck<P>,
}

impl<P: Projection<Event = BuiltinEvent>> Observer<P> for Recorder<P> {
    fn restored(&self, _state: &P) {
        let applied = self.handle.applied_position();
        self.journal
            .hooks
            .lock()
            .unwrap()
            .push(Hook::Restored { applied });
    }

    fn upserted(&self, state: &P, event: &RecordedEvent<BuiltinEvent>) {
        self.journal.hooks.lock().unwrap().push(Hook::Upserted {
            stream: event.stream.as_str().to_owned(),
            position: event.position,
        });
        let mut violations = self.journal.violations.lock().unwrap();
        let applied = self.handle.applied_position();
        if applied != event.position {
            violations.push(format!(
                "upserted({}) with applied position {applied}",
                event.position
            ));
        }
        if let Some(log) = self.log.get() {
            let durable = log.stats().durable_position;
            if durable < event.position {
                violations.push(format!(
                    "upserted({}) while durable up to {durable}",
                    event.position
                ));
            }
        }
        if let Err(violation) = (self.effect)(state, event) {
            violations.push(violation);
        }
    }

    fn deleted(&self, _state: &P, stream: &StreamId) {
        let applied = self.handle.applied_position();
        self.journal.hooks.lock().unwrap().push(Hook::Deleted {
            stream: stream.as_str().to_owned(),
            applied,
        });
    }
}

fn counts_effect(state: &StreamCounts, event: &RecordedEvent<BuiltinEvent>) -> Result<(), String> {
    if state.last_position != event.position {
        return Err(format!(
            "upserted({}) but the state is at {}",
            event.position, state.last_position
        ));
    }
    Ok(())
}

fn runs_effect(state: &RunLedger, event: &RecordedEvent<BuiltinEvent>) -> Result<(), String> {
    let id = event.stream.entity_id();
    let version = match event.stream.kind() {
        StreamKind::Run => state.run(id).map(|run| run.stream_version),
        StreamKind::Workflow => state.workflow(id).map(|workflow| workflow.stream_version),
        _ => return Ok(()),
    };
    if version != Some(event.version) {
        return Err(format!(
            "upserted({} v{}) but the ledger holds {id} at {version:?}",
            event.position, event.version
        ));
    }
    Ok(())
}

fn recorder<P: Projection>(
    handle: &ProjectionHandle<P>,
    log: &Arc<OnceLock<Logbook<BuiltinEvent>>>,
    effect: EffectCheck<P>,
) -> (Recorder<P>, Journal) {
    let journal = Journal::default();
    let recorder = Recorder {
        journal: journal.clone(),
        handle: handle.clone(),
        log: log.clone(),
        effect,
    };
    (recorder, journal)
}

fn run_stream(id: &str) -> StreamId {
    StreamId::run(id).unwrap()
}

fn background(agent: &str) -> BuiltinEvent {
    run_started(RunKind::BackgroundAgent, agent, None, None)
}

fn completed() -> BuiltinEvent {
    RunCompleted {
        summary: None,
        result_ref: Some("results/x".into()),
    }
    .into()
}

async fn open(
    storage: &Arc<MemoryStorage>,
    options: logbook::LogbookOptions,
    projections: Projections<BuiltinEvent>,
) -> BuiltinLog {
    let (log, _) = BuiltinLog::open_with(storage.clone(), MEMORY_DIR, options, projections)
        .await
        .unwrap();
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restored_fires_once_after_open_also_on_an_empty_log() {
    let storage = Arc::new(MemoryStorage::new());
    let clock = ManualClock::new(CLOCK_START_MS);
    let clones = Arc::new(AtomicU64::new(0));
    let no_log = Arc::new(OnceLock::new());

    // Registered before open: nothing fires until the (empty) replay is done, then once.
    let mut projections = Projections::new();
    let counts = projections.register(StreamCounts::new(&clones));
    let (observer, before_open) = recorder(&counts, &no_log, counts_effect);
    counts.observe(observer);
    assert!(before_open.hooks().is_empty(), "not open yet: no hook");
    let log = open(&storage, clocked_options(&clock), projections).await;
    assert_eq!(before_open.hooks(), [Hook::Restored { applied: 0 }]);

    // Registered after open: `restored` fires at once, from `observe`.
    let (observer, after_open) = recorder(log.runs(), &no_log, runs_effect);
    log.runs().observe(observer);
    assert_eq!(after_open.hooks(), [Hook::Restored { applied: 0 }]);

    let mut positions = Vec::new();
    for run in ["a", "b"] {
        let written = log
            .execute(&run_stream(run), background("x"))
            .await
            .unwrap();
        positions.push(written.last_position);
    }
    let written = log.execute(&run_stream("a"), completed()).await.unwrap();
    positions.push(written.last_position);
    for journal in [&before_open, &after_open] {
        assert_eq!(journal.restored_count(), 1, "restored fires once");
        journal.assert_no_violation();
    }
    log.close().await.unwrap();

    // A log with events: the observer registered before open sees one `restored`, with every
    // event already replayed, and no `upserted` for the replayed events.
    let mut projections = Projections::new();
    let counts = projections.register(StreamCounts::new(&clones));
    let (observer, reopened) = recorder(&counts, &no_log, counts_effect);
    counts.observe(observer);
    let log = open(&storage, clocked_options(&clock), projections).await;
    assert_eq!(
        reopened.hooks(),
        [Hook::Restored {
            applied: *positions.last().unwrap()
        }],
        "the replay is summed up by one restored"
    );
    assert_eq!(counts.read().events, 3);
    // Late observers of the reopened log get their own single `restored`.
    let (observer, late) = recorder(log.rooms(), &no_log, |_, _| Ok(()));
    log.rooms().observe(observer);
    assert_eq!(late.restored_count(), 1);
    log.close().await.unwrap();
    assert_eq!(clones.load(Ordering::SeqCst), 0, "no state was cloned");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upserted_and_deleted_fire_in_position_order_with_their_streams() {
    let storage = Arc::new(MemoryStorage::new());
    let clock = ManualClock::new(CLOCK_START_MS);
    let clones = Arc::new(AtomicU64::new(0));
    let log_cell = Arc::new(OnceLock::new());
    let mut projections = Projections::new();
    let counts = projections.register(StreamCounts::new(&clones));
    let (observer, counts_journal) = recorder(&counts, &log_cell, counts_effect);
    counts.observe(observer);
    let log = open(&storage, clocked_options(&clock), projections).await;
    log_cell.set(log.log().clone()).unwrap();
    let (observer, runs_journal) = recorder(log.runs(), &log_cell, runs_effect);
    log.runs().observe(observer);
    let (observer, rooms_journal) = recorder(log.rooms(), &log_cell, |_, _| Ok(()));
    log.rooms().observe(observer);

    let room = StreamId::room("lobby").unwrap();
    let mut expected_upserts = Vec::new();
    let mut upsert = |stream: &StreamId, written: logbook::AppendResult| {
        expected_upserts.push(Hook::Upserted {
            stream: stream.as_str().to_owned(),
            position: written.last_position,
        });
    };
    // Several streams, interleaved, some from concurrent tasks.
    upsert(
        &run_stream("a"),
        log.execute(&run_stream("a"), background("x"))
            .await
            .unwrap(),
    );
    upsert(
        &room,
        log.execute(&room, room_created("Lobby")).await.unwrap(),
    );
    let mut tasks = Vec::new();
    for run in ["b", "c", "d", "e"] {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let stream = run_stream(run);
            let written = log.execute(&stream, background(run)).await.unwrap();
            (stream, written)
        }));
    }
    let mut concurrent = Vec::new();
    for task in tasks {
        concurrent.push(task.await.unwrap());
    }
    concurrent.sort_by_key(|(_, written)| written.last_position);
    for (stream, written) in concurrent {
        upsert(&stream, written);
    }
    for index in 0..3 {
        let post = message_posted(&format!("m{index}"), "ada", "hi");
        upsert(&room, log.execute(&room, post).await.unwrap());
    }
    upsert(
        &run_stream("a"),
        log.execute(&run_stream("a"), completed()).await.unwrap(),
    );
    let run_deleted = log
        .log()
        .delete_stream(&run_stream("a"), logbook::ExpectedVersion::Any)
        .await
        .unwrap();
    upsert(
        &run_stream("b"),
        log.execute(&run_stream("b"), completed()).await.unwrap(),
    );
    let room_deleted = log
        .log()
        .delete_stream(&room, logbook::ExpectedVersion::Any)
        .await
        .unwrap();
    log.log().sync().await.unwrap();

    let restored = Hook::Restored { applied: 0 };
    let deleted = |stream: &StreamId, written: logbook::AppendResult| Hook::Deleted {
        stream: stream.as_str().to_owned(),
        applied: written.last_position,
    };
    // Every projection sees every event (it looks the entity up itself); `deleted` fires only
    // where the projection dropped something.
    let mut expected_runs = vec![restored.clone()];
    expected_runs.extend(expected_upserts[..10].iter().cloned());
    expected_runs.push(deleted(&run_stream("a"), run_deleted));
    expected_runs.push(expected_upserts[10].clone());
    assert_eq!(runs_journal.hooks(), expected_runs, "run ledger hooks");

    let mut expected_rooms = vec![restored.clone()];
    expected_rooms.extend(expected_upserts.iter().cloned());
    expected_rooms.push(deleted(&room, room_deleted));
    assert_eq!(rooms_journal.hooks(), expected_rooms, "rooms hooks");

    let mut expected_counts = vec![restored];
    expected_counts.extend(expected_upserts[..10].iter().cloned());
    expected_counts.push(deleted(&run_stream("a"), run_deleted));
    expected_counts.push(expected_upserts[10].clone());
    expected_counts.push(deleted(&room, room_deleted));
    assert_eq!(
        counts_journal.hooks(),
        expected_counts,
        "service projection hooks"
    );

    for journal in [&runs_journal, &rooms_journal, &counts_journal] {
        journal.assert_no_violation();
        let positions: Vec<u64> = journal
            .hooks()
            .iter()
            .map(|hook| match hook {
                Hook::Restored { applied } | Hook::Deleted { applied, .. } => *applied,
                Hook::Upserted { position, .. } => *position,
            })
            .collect();
        assert!(
            positions.windows(2).all(|pair| pair[0] < pair[1]),
            "position order: {positions:?}"
        );
    }
    assert!(
        log.runs().read().run("a").is_none(),
        "deleted with its stream"
    );
    assert!(log.rooms().read().room("lobby").is_none());
    log.close().await.unwrap();
    assert_eq!(clones.load(Ordering::SeqCst), 0, "no state was cloned");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observers_see_only_durable_state() {
    let storage = Arc::new(MemoryStorage::new());
    let clock = ManualClock::new(CLOCK_START_MS);
    let mut options = clocked_options(&clock);
    // Relaxed appends stay written-but-not-durable until something syncs.
    options.relaxed_sync_delay = Duration::from_secs(600);
    let log = open(&storage, options, Projections::new()).await;
    let log_cell = Arc::new(OnceLock::new());
    log_cell.set(log.log().clone()).unwrap();
    let (observer, journal) = recorder(log.runs(), &log_cell, runs_effect);
    log.runs().observe(observer);

    let durable = log
        .execute(&run_stream("a"), background("x"))
        .await
        .unwrap();
    let relaxed = log
        .execute_with(&run_stream("b"), background("y"), AppendDurability::Relaxed)
        .await
        .unwrap();
    assert!(relaxed.last_position > durable.last_position);
    // Acknowledged, not durable: invisible to observers and queries alike.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(log.log().stats().durable_position < relaxed.last_position);
    assert!(log.runs().read().run("b").is_none());
    assert!(log.runs().applied_position() < relaxed.last_position);
    let upserted = |position: u64| {
        journal.hooks().contains(&Hook::Upserted {
            stream: "run/b".into(),
            position,
        })
    };
    assert!(
        !upserted(relaxed.last_position),
        "a hook fired before durability"
    );

    log.log().sync().await.unwrap();
    assert!(
        upserted(relaxed.last_position),
        "the hook fires once durable"
    );
    assert!(log.runs().read().run("b").is_some());
    assert_eq!(log.runs().applied_position(), relaxed.last_position);
    journal.assert_no_violation();
    log.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_projection_rebuilds_and_is_never_cloned() {
    let storage = Arc::new(MemoryStorage::new());
    let clock = ManualClock::new(CLOCK_START_MS);
    let clones = Arc::new(AtomicU64::new(0));
    let mut projections = Projections::new();
    let counts = projections.register(StreamCounts::new(&clones));
    let log = open(&storage, clocked_options(&clock), projections).await;
    let room = StreamId::room("lobby").unwrap();
    log.execute(&room, room_created("Lobby")).await.unwrap();
    for index in 0..40 {
        let post = message_posted(&format!("m{index}"), "ada", "hello");
        log.execute(&room, post).await.unwrap();
    }
    for run in 0..9 {
        let stream = run_stream(&format!("r{run}"));
        log.execute(&stream, background("x")).await.unwrap();
    }
    log.log()
        .delete_stream(&run_stream("r0"), logbook::ExpectedVersion::Any)
        .await
        .unwrap();
    {
        let state = counts.read();
        assert_eq!(state.events, 50, "the service's projection saw every event");
        assert_eq!(state.per_stream.get("room/lobby"), Some(&41));
        assert!(
            !state.per_stream.contains_key("run/r0"),
            "dropped with its stream"
        );
    }
    assert_eq!(
        clones.load(Ordering::SeqCst),
        0,
        "no observer: nothing cloned"
    );
    let live_snapshot = counts.read().snapshot().unwrap();
    log.close().await.unwrap();

    // Rebuilt by replay, beside the built-in projections.
    let mut projections = Projections::new();
    let counts = projections.register(StreamCounts::new(&clones));
    let log = open(&storage, clocked_options(&clock), projections).await;
    assert_eq!(counts.read().snapshot().unwrap(), live_snapshot);
    assert_eq!(
        log.rooms().read().room("lobby").unwrap().message_count(),
        40
    );
    // Observers get references: still nothing cloned.
    let (observer, journal) = recorder(&counts, &Arc::new(OnceLock::new()), counts_effect);
    counts.observe(observer);
    log.execute(&room, message_posted("late", "ada", "x"))
        .await
        .unwrap();
    assert_eq!(journal.hooks().len(), 2);
    journal.assert_no_violation();
    assert_eq!(
        clones.load(Ordering::SeqCst),
        0,
        "observers: nothing cloned either"
    );
    // The counter does count: a clone made here shows.
    let copy = counts.read().clone();
    assert_eq!(copy.events, 51);
    assert_eq!(clones.load(Ordering::SeqCst), 1);
    log.close().await.unwrap();
}
