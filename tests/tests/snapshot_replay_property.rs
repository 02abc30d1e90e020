//! Property: random command sequences over the built-in model (rooms with posts, edits and
//! deletes; runs with events and telemetry; jobs with claims, heartbeats, progress and endings
//! on a manual clock), interleaved with on-demand `snapshot()`, `compact()`, `delete_stream`,
//! `truncate_stream` and close + reopen. At every reopen the state restored from the newest
//! snapshot plus the tail equals the live state; at the end, the live state, the state after a
//! reopen from the newest snapshot, and the state after a full replay (every `.snap` file
//! corrupted) are equal, entity by entity: projections, stream versions, every stream's visible
//! events and every room's history page.
//!
//! Commands the model refuses are fine (the sequence is random); any other error fails the case.
//! Cases: `LOGBOOK_SNAPSHOT_CASES` (default 32).
//!
//! Known gap, not hidden: projections keep what the events hidden by `truncate_stream` did (a
//! room's creation, its message count); once compaction purged those events, a full replay
//! cannot rebuild it. For an entity whose stream was truncated and then compacted, the full
//! replay is compared on what the log itself answers (stream version, visible events, history
//! page), not on its projected state; `truncated_then_compacted_full_replay_matches_live`
//! (ignored) is the minimal reproducer. Every other entity, and the snapshot + tail open, are
//! compared whole.

use logbook::PageRequest;
use logbook::{
    BuiltinEvent, BuiltinLog, Clock, Direction, Error, ExpectedVersion, HistoryRequest,
    LogbookOptions, ManualClock, MemoryStorage, Message, StreamId,
};
use logbook_projection::projections::RunFilter;
use logbook_tests::issue5_support::{Target, snapshot_files, stream_of};
use logbook_tests::projection_support::{
    BuiltinState, CLOCK_START_MS, OpenedLog, assert_same_state, clocked_options, job_claimed,
    job_heartbeat, job_progress, job_queued, message_posted, open_memory, room_created,
    run_started,
};
use proptest::prelude::*;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};

const ROOMS: u8 = 3;
const RUNS: u8 = 3;
const JOBS: u8 = 3;
/// Message ids per room; each is posted at most once (ids are unique, as a service's are).
const MESSAGES: u8 = 16;
const MEMBERS: u8 = 3;
const WORKERS: u8 = 2;

#[derive(Debug, Clone)]
enum Op {
    CreateRoom {
        room: u8,
    },
    Join {
        room: u8,
        member: u8,
    },
    Post {
        room: u8,
        message: u8,
    },
    Edit {
        room: u8,
        message: u8,
    },
    DeleteMessage {
        room: u8,
        message: u8,
    },
    StartRun {
        run: u8,
        parent: Option<u8>,
    },
    RunEvent {
        run: u8,
    },
    Telemetry {
        run: u8,
        tokens: u64,
    },
    EndRun {
        run: u8,
    },
    Queue {
        job: u8,
    },
    Claim {
        job: u8,
        worker: u8,
        lease_ms: u64,
    },
    Heartbeat {
        job: u8,
        worker: u8,
        lease_ms: u64,
    },
    Progress {
        job: u8,
        percent: u8,
    },
    EndJob {
        job: u8,
        succeeded: bool,
    },
    Advance {
        ms: u64,
    },
    Reclaim,
    Snapshot,
    Compact,
    Delete {
        target: Target,
    },
    /// Hides all but the newest `keep` events of the stream (0: every event).
    Truncate {
        target: Target,
        keep: u64,
    },
    Reopen,
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        3 => (0..ROOMS).prop_map(Target::Room),
        1 => (0..RUNS).prop_map(Target::Run),
        2 => (0..JOBS).prop_map(Target::Job),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..ROOMS).prop_map(|room| Op::CreateRoom { room }),
        1 => (0..ROOMS, 0..MEMBERS).prop_map(|(room, member)| Op::Join { room, member }),
        10 => (0..ROOMS, 0..MESSAGES).prop_map(|(room, message)| Op::Post { room, message }),
        3 => (0..ROOMS, 0..MESSAGES).prop_map(|(room, message)| Op::Edit { room, message }),
        2 => (0..ROOMS, 0..MESSAGES)
            .prop_map(|(room, message)| Op::DeleteMessage { room, message }),
        2 => (0..RUNS, prop::option::of(0..RUNS))
            .prop_map(|(run, parent)| Op::StartRun { run, parent }),
        3 => (0..RUNS).prop_map(|run| Op::RunEvent { run }),
        2 => (0..RUNS, 1..5_000u64).prop_map(|(run, tokens)| Op::Telemetry { run, tokens }),
        1 => (0..RUNS).prop_map(|run| Op::EndRun { run }),
        3 => (0..JOBS).prop_map(|job| Op::Queue { job }),
        3 => (0..JOBS, 0..WORKERS, 1..60_000u64)
            .prop_map(|(job, worker, lease_ms)| Op::Claim { job, worker, lease_ms }),
        5 => (0..JOBS, 0..WORKERS, 1..60_000u64)
            .prop_map(|(job, worker, lease_ms)| Op::Heartbeat { job, worker, lease_ms }),
        6 => (0..JOBS, 0..=100u8).prop_map(|(job, percent)| Op::Progress { job, percent }),
        2 => (0..JOBS, any::<bool>()).prop_map(|(job, succeeded)| Op::EndJob { job, succeeded }),
        2 => (1..40_000u64).prop_map(|ms| Op::Advance { ms }),
        1 => Just(Op::Reclaim),
        3 => Just(Op::Snapshot),
        4 => Just(Op::Compact),
        1 => target().prop_map(|target| Op::Delete { target }),
        1 => (target(), 0..4u64).prop_map(|(target, keep)| Op::Truncate { target, keep }),
        2 => Just(Op::Reopen),
    ]
}

/// Options of one case: small segments (so compaction finds sealed ones), and periodic
/// snapshots every few events or not at all.
fn case_options(clock: &ManualClock, every_events: u64, keep: usize) -> LogbookOptions {
    let mut options = clocked_options(clock);
    options.wal.segment_bytes_max = 2048;
    options.snapshots.every_events = every_events;
    options.snapshots.every_bytes = 0;
    options.snapshots.every = std::time::Duration::ZERO;
    options.snapshots.keep = keep;
    options
}

fn room_id(room: u8) -> String {
    format!("r{room}")
}

fn message_id(message: u8) -> String {
    format!("m{message}")
}

fn event(event_type: &str, data: serde_json::Value) -> BuiltinEvent {
    BuiltinEvent::from_json(event_type, data).expect("a valid built-in event")
}

/// The stream and event of a command op (`None` for the ops that are not commands).
fn command(op: &Op, now_ms: u64, serial: u64) -> Option<(StreamId, BuiltinEvent)> {
    let room = |room: u8| stream_of(Target::Room(room));
    let run = |run: u8| stream_of(Target::Run(run));
    let job = |job: u8| stream_of(Target::Job(job));
    Some(match *op {
        Op::CreateRoom { room: id } => (room(id), room_created(&format!("Room {id}"))),
        Op::Join { room: id, member } => (
            room(id),
            event(
                "room.member_joined",
                json!({ "member": format!("member{member}") }),
            ),
        ),
        Op::Post { room: id, message } => {
            let body = format!("message {message} #{serial} at {now_ms}");
            (room(id), message_posted(&message_id(message), "ada", &body))
        }
        Op::Edit { room: id, message } => (
            room(id),
            event(
                "room.message_edited",
                json!({ "message_id": message_id(message), "body": format!("edit #{serial}") }),
            ),
        ),
        Op::DeleteMessage { room: id, message } => (
            room(id),
            event(
                "room.message_deleted",
                json!({ "message_id": message_id(message) }),
            ),
        ),
        Op::StartRun { run: id, parent } => {
            let parent = parent.map(|parent| format!("run{parent}"));
            let kind = logbook::model::RunKind::Subagent;
            (run(id), run_started(kind, "agent", parent.as_deref(), None))
        }
        Op::RunEvent { run: id } => (
            run(id),
            event(
                "run.event",
                json!({ "sequence": serial, "event_type": "tool_call", "payload": "{}" }),
            ),
        ),
        Op::Telemetry { run: id, tokens } => (
            run(id),
            event(
                "run.telemetry",
                json!({ "tokens_in": tokens, "tokens_out": tokens / 2, "elapsed_ms": 5 }),
            ),
        ),
        Op::EndRun { run: id } => (
            run(id),
            event("run.completed", json!({ "summary": "done" })),
        ),
        Op::Queue { job: id } => (job(id), job_queued("train")),
        Op::Claim {
            job: id,
            worker,
            lease_ms,
        } => (
            job(id),
            job_claimed(&format!("w{worker}"), now_ms + lease_ms),
        ),
        Op::Heartbeat {
            job: id,
            worker,
            lease_ms,
        } => (
            job(id),
            job_heartbeat(&format!("w{worker}"), now_ms + lease_ms),
        ),
        Op::Progress { job: id, percent } => (job(id), job_progress("train", percent)),
        Op::EndJob { job: id, succeeded } => {
            let event = match succeeded {
                true => event("job.succeeded", json!({ "result": "model.bin" })),
                false => event("job.failed", json!({ "error": "oom", "retryable": true })),
            };
            (job(id), event)
        }
        _ => return None,
    })
}

/// True for the errors a random sequence is expected to provoke: the model refusing a command,
/// a deleted stream, a truncation past the end.
fn is_refusal(error: &Error) -> bool {
    matches!(
        error,
        Error::Event(_)
            | Error::StreamDeleted { .. }
            | Error::StreamNotFound { .. }
            | Error::LimitExceeded { .. }
    )
}

/// An event as a read returns it: version, position, type.
type EventSummary = (u64, u64, String);

/// Everything observable of a log, beyond the projections: stream versions, each stream's
/// visible events, each room's newest history page.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Observed {
    versions: BTreeMap<String, Result<Option<u64>, String>>,
    events: BTreeMap<String, Result<Vec<EventSummary>, String>>,
    histories: BTreeMap<String, Result<Vec<Message>, String>>,
}

fn all_targets() -> Vec<Target> {
    let rooms = (0..ROOMS).map(Target::Room);
    let runs = (0..RUNS).map(Target::Run);
    let jobs = (0..JOBS).map(Target::Job);
    rooms.chain(runs).chain(jobs).collect()
}

async fn observe(log: &BuiltinLog) -> Observed {
    let mut observed = Observed {
        versions: BTreeMap::new(),
        events: BTreeMap::new(),
        histories: BTreeMap::new(),
    };
    for target in all_targets() {
        let stream = stream_of(target);
        let name = stream.to_string();
        let version = log
            .log()
            .stream_version(&stream)
            .map_err(|error| error.to_string());
        observed.versions.insert(name.clone(), version);
        let events = log
            .log()
            .read_stream(&stream, 0, Direction::Forward, 10_000)
            .await
            .map(|events| {
                let summary = |event: logbook::RecordedEvent<BuiltinEvent>| {
                    (event.version, event.position, event.event_type.to_string())
                };
                events.into_iter().map(summary).collect()
            })
            .map_err(|error| error.to_string());
        observed.events.insert(name, events);
        if let Target::Room(room) = target {
            let page = log
                .room_history(&room_id(room), HistoryRequest::newest(1000))
                .await
                .map(|page| page.messages)
                .map_err(|error| error.to_string());
            observed.histories.insert(room_id(room), page);
        }
    }
    observed
}

async fn capture(opened: &OpenedLog) -> (BuiltinState, Observed) {
    let state = BuiltinState::capture(opened).await;
    (state, observe(&opened.log).await)
}

fn assert_same(
    expected: &(BuiltinState, Observed),
    actual: &(BuiltinState, Observed),
    context: &str,
) {
    assert_same_state(&expected.0, &actual.0, context);
    assert_same_observed(&expected.1, &actual.1, context);
}

/// Compares the projected state entity by entity, except the entities of `purged` streams
/// (truncated, then compacted: see the module's note), and everything the log answers.
fn assert_same_except(
    expected: &(BuiltinState, Observed),
    actual: &(BuiltinState, Observed),
    purged: &BTreeSet<String>,
    context: &str,
) {
    let all = PageRequest::first(1000);
    let compared = |kind: &str, id: &str| !purged.contains(&format!("{kind}/{id}"));
    let (expected_state, actual_state) = (&expected.0, &actual.0);
    let room_ids = |state: &BuiltinState| -> Vec<String> {
        let page = state.rooms.list_rooms(true, &all);
        let ids = page.items.iter().map(|room| room.room_id.clone());
        ids.filter(|id| compared("room", id)).collect()
    };
    assert_eq!(
        room_ids(expected_state),
        room_ids(actual_state),
        "{context}: rooms"
    );
    for id in room_ids(expected_state) {
        let (left, right) = (expected_state.rooms.room(&id), actual_state.rooms.room(&id));
        assert_eq!(left, right, "{context}: room {id}");
    }
    let job_ids = |state: &BuiltinState| -> Vec<String> {
        let page = state.jobs.list_jobs(None, &all);
        let ids = page.items.iter().map(|job| job.job_id.clone());
        ids.filter(|id| compared("job", id)).collect()
    };
    assert_eq!(
        job_ids(expected_state),
        job_ids(actual_state),
        "{context}: jobs"
    );
    for id in job_ids(expected_state) {
        let (left, right) = (expected_state.jobs.job(&id), actual_state.jobs.job(&id));
        assert_eq!(left, right, "{context}: job {id}");
    }
    let run_ids = |state: &BuiltinState| -> Vec<String> {
        let page = state.runs.list_runs(&RunFilter::default(), &all);
        let ids = page.items.iter().map(|run| run.run_id.clone());
        ids.filter(|id| compared("run", id)).collect()
    };
    assert_eq!(
        run_ids(expected_state),
        run_ids(actual_state),
        "{context}: runs"
    );
    for id in run_ids(expected_state) {
        let (left, right) = (expected_state.runs.run(&id), actual_state.runs.run(&id));
        assert_eq!(left, right, "{context}: run {id}");
        let children = |state: &BuiltinState| -> Vec<String> {
            let children = state.runs.children(&id).into_iter();
            let ids = children.map(|child| child.run_id.clone());
            ids.filter(|child| compared("run", child)).collect()
        };
        let (left, right) = (children(expected_state), children(actual_state));
        assert_eq!(left, right, "{context}: children of run {id}");
    }
    assert_eq!(
        expected_state.streams, actual_state.streams,
        "{context}: streams"
    );
    assert_same_observed(&expected.1, &actual.1, context);
}

fn assert_same_observed(expected: &Observed, actual: &Observed, context: &str) {
    for (name, version) in &expected.versions {
        assert_eq!(
            Some(version),
            actual.versions.get(name),
            "{context}: version of {name}"
        );
    }
    for (name, events) in &expected.events {
        assert_eq!(
            Some(events),
            actual.events.get(name),
            "{context}: events of {name}"
        );
    }
    for (room, page) in &expected.histories {
        assert_eq!(
            Some(page),
            actual.histories.get(room),
            "{context}: history of room {room}"
        );
    }
}

struct Case {
    storage: Arc<MemoryStorage>,
    clock: ManualClock,
    options: LogbookOptions,
    opened: Option<OpenedLog>,
    serial: u64,
    /// Streams truncated so far.
    truncated: BTreeSet<String>,
    /// Streams truncated and then compacted: hidden events may be purged.
    purged: BTreeSet<String>,
    /// (room, message) pairs posted so far.
    posted: BTreeSet<(u8, u8)>,
}

impl Case {
    fn log(&self) -> &BuiltinLog {
        &self.opened.as_ref().expect("the log is open").log
    }

    async fn reopen(&mut self) -> logbook::BuiltinOpenReport {
        if let Some(opened) = self.opened.take() {
            opened.log.close().await.expect("close");
        }
        let opened = open_memory(&self.storage, self.options.clone()).await;
        let report = opened.report.clone();
        self.opened = Some(opened);
        report
    }

    async fn run(&mut self, op: &Op) {
        self.serial += 1;
        let now_ms = self.clock.now_ms();
        match *op {
            // A message id is posted once, and edited or deleted only after it was posted (the
            // model would accept both, but a service's ids are unique and refer to messages).
            Op::Post { room, message } if !self.posted.insert((room, message)) => return,
            Op::Edit { room, message } | Op::DeleteMessage { room, message }
                if !self.posted.contains(&(room, message)) =>
            {
                return;
            }
            _ => {}
        }
        if let Some((stream, event)) = command(op, now_ms, self.serial) {
            match self.log().execute(&stream, event).await {
                Ok(_) => {}
                Err(error) if is_refusal(&error) => {}
                Err(error) => panic!("{op:?}: {error}"),
            }
            return;
        }
        match op {
            Op::Advance { ms } => self.clock.advance(*ms),
            Op::Reclaim => {
                self.log()
                    .reclaim_expired(now_ms)
                    .await
                    .unwrap_or_else(|error| panic!("reclaim: {error}"));
            }
            Op::Snapshot => {
                let info = self.log().log().snapshot().await.expect("snapshot");
                assert_eq!(info.position, self.log().log().stats().durable_position);
            }
            Op::Compact => {
                let report = self.log().log().compact().await.expect("compact");
                count(RECORDS_DROPPED, report.records_dropped);
                count(SEGMENTS_REMOVED, report.segments_removed as u64);
                self.purged.extend(self.truncated.iter().cloned());
            }
            Op::Delete { target } => {
                let stream = stream_of(*target);
                match self
                    .log()
                    .log()
                    .delete_stream(&stream, ExpectedVersion::Any)
                    .await
                {
                    Ok(_) => {}
                    Err(error) if is_refusal(&error) => {}
                    Err(error) => panic!("{op:?}: {error}"),
                }
            }
            Op::Truncate { target, keep } => self.truncate(*target, *keep).await,
            Op::Reopen => {
                let live = capture(self.opened.as_ref().expect("open")).await;
                self.reopen().await;
                let reopened = capture(self.opened.as_ref().expect("open")).await;
                assert_same(&live, &reopened, "live vs reopened mid-sequence");
            }
            _ => unreachable!("a command: {op:?}"),
        }
    }

    async fn truncate(&mut self, target: Target, keep: u64) {
        let stream = stream_of(target);
        let Ok(Some(last)) = self.log().log().stream_version(&stream) else {
            return;
        };
        let before = (last + 1).saturating_sub(keep);
        match self.log().log().truncate_stream(&stream, before).await {
            Ok(_) => drop(self.truncated.insert(stream.to_string())),
            Err(error) if is_refusal(&error) => {}
            Err(error) => panic!("truncate {stream} before {before}: {error}"),
        }
    }
}

async fn run_case(ops: Vec<Op>, every_events: u64, keep: usize) {
    let clock = ManualClock::new(CLOCK_START_MS);
    let options = case_options(&clock, every_events, keep);
    let mut case = Case {
        storage: Arc::new(MemoryStorage::new()),
        clock,
        options,
        opened: None,
        serial: 0,
        truncated: BTreeSet::new(),
        purged: BTreeSet::new(),
        posted: BTreeSet::new(),
    };
    case.reopen().await;
    for op in &ops {
        case.run(op).await;
    }
    let live = capture(case.opened.as_ref().expect("open")).await;
    let snapshots_taken = !snapshot_files(&case.storage).is_empty();

    let report = case.reopen().await;
    assert_eq!(
        report.log.snapshot.used.is_some(),
        snapshots_taken,
        "the newest snapshot is used when there is one: {:?}",
        report.log.snapshot
    );
    assert!(report.log.snapshot.rejected.is_empty());
    if report.log.snapshot.used.is_some() {
        count(TAIL_EVENTS_REPLAYED, report.log.events_replayed);
    }
    let from_snapshot = capture(case.opened.as_ref().expect("open")).await;
    assert_same(&live, &from_snapshot, "live vs snapshot + tail");
    if let Some(opened) = case.opened.take() {
        opened.log.close().await.expect("close");
    }

    for file in snapshot_files(&case.storage) {
        case.storage
            .set_file_contents(&file, b"not a snapshot".to_vec());
    }
    let report = case.reopen().await;
    assert!(report.log.snapshot.used.is_none(), "a full replay");
    let full = capture(case.opened.as_ref().expect("open")).await;
    count(CASES, 1);
    if case.purged.is_empty() {
        assert_same(&live, &full, "live vs full replay");
    } else {
        count(CASES_WITH_PURGED_TRUNCATIONS, 1);
        assert_same_except(&live, &full, &case.purged, "live vs full replay");
    }
    // Appends continue each live stream at the next version after a full replay.
    for target in all_targets() {
        let stream = stream_of(target);
        let Ok(Some(last)) = case.log().log().stream_version(&stream) else {
            continue;
        };
        let probe = match target {
            Target::Room(_) => message_posted("probe", "ada", "after the full replay"),
            Target::Run(_) => event(
                "run.event",
                json!({ "sequence": 0, "event_type": "probe", "payload": "{}" }),
            ),
            Target::Job(_) => job_progress("probe", 1),
        };
        let appended = case
            .log()
            .log()
            .append(&stream, ExpectedVersion::Exact(last), vec![probe.into()])
            .await
            .unwrap_or_else(|error| panic!("append to {stream} after a full replay: {error}"));
        assert_eq!(appended.version, last + 1, "{stream}");
    }
    if let Some(opened) = case.opened.take() {
        opened.log.close().await.expect("close");
    }
}

fn cases() -> u32 {
    std::env::var("LOGBOOK_SNAPSHOT_CASES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(32)
}

/// What the cases exercised, summed (printed at the end, so a run shows it tested something).
static TOTALS: [AtomicU64; 5] = [const { AtomicU64::new(0) }; 5];
const RECORDS_DROPPED: usize = 0;
const SEGMENTS_REMOVED: usize = 1;
const TAIL_EVENTS_REPLAYED: usize = 2;
const CASES_WITH_PURGED_TRUNCATIONS: usize = 3;
const CASES: usize = 4;

fn count(total: usize, by: u64) {
    TOTALS[total].fetch_add(by, AtomicOrdering::Relaxed);
}

#[test]
fn snapshot_plus_tail_equals_full_replay_equals_live() {
    let config = ProptestConfig {
        cases: cases(),
        max_shrink_iters: 400,
        ..ProptestConfig::default()
    };
    // Half the cases never truncate, so that their full replay is compared whole.
    let strategy = (
        prop::collection::vec(op(), 20..400),
        prop_oneof![Just(0u64), 5..60u64],
        1..3usize,
        any::<bool>(),
    );
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let result = runner.run(&strategy, |(mut ops, every_events, keep, truncations)| {
        if !truncations {
            ops.retain(|op| !matches!(op, Op::Truncate { .. }));
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        runtime.block_on(run_case(ops, every_events, keep));
        Ok(())
    });
    let total = |index: usize| TOTALS[index].load(AtomicOrdering::Relaxed);
    eprintln!(
        "{} cases run: compaction dropped {} records and removed {} segments; reopens from a \
         snapshot replayed {} tail events; {} cases compared truncated-and-compacted entities \
         on reads only",
        total(CASES),
        total(RECORDS_DROPPED),
        total(SEGMENTS_REMOVED),
        total(TAIL_EVENTS_REPLAYED),
        total(CASES_WITH_PURGED_TRUNCATIONS),
    );
    if let Err(failure) = result {
        panic!("{failure}");
    }
    assert!(total(RECORDS_DROPPED) > 0, "no compaction dropped anything");
}

/// The minimal case of the known gap (see the module's note): a room truncated whole and then
/// compacted is gone from `Rooms` after a full replay, while the live log (and a reopen from
/// the snapshot) still has it. Ignored until truncation's effect on projections is decided.
#[test]
#[ignore = "known gap: projections keep the effects of truncated events that compaction purges"]
fn truncated_then_compacted_full_replay_matches_live() {
    let ops = vec![
        Op::CreateRoom { room: 1 },
        Op::Post {
            room: 1,
            message: 0,
        },
        Op::Truncate {
            target: Target::Room(1),
            keep: 0,
        },
        Op::Compact,
    ];
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        let clock = ManualClock::new(CLOCK_START_MS);
        let storage = Arc::new(MemoryStorage::new());
        let options = case_options(&clock, 0, 2);
        let opened = open_memory(&storage, options.clone()).await;
        let mut case = Case {
            storage,
            clock,
            options,
            opened: Some(opened),
            serial: 0,
            truncated: BTreeSet::new(),
            purged: BTreeSet::new(),
            posted: BTreeSet::new(),
        };
        for op in &ops {
            case.run(op).await;
        }
        let live = capture(case.opened.as_ref().expect("open")).await;
        if let Some(opened) = case.opened.take() {
            opened.log.close().await.expect("close");
        }
        for file in snapshot_files(&case.storage) {
            case.storage
                .set_file_contents(&file, b"not a snapshot".to_vec());
        }
        case.reopen().await;
        let full = capture(case.opened.as_ref().expect("open")).await;
        assert_same(&live, &full, "live vs full replay");
    });
}
