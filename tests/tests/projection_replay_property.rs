//! Property: random command sequences over the built-in model (runs with parents and telemetry,
//! workflows with phases and child runs, rooms with posts, edits, deletes and archive, jobs with
//! claims, heartbeats, progress, endings and lease expiry through `reclaim_expired` on a manual
//! clock, stream deletes and truncations, reopens). A plain reference model predicts every
//! outcome: refused commands give the typed error the model names and write nothing (the head
//! position does not move). At every reopen and at the end, the live state equals the state
//! rebuilt by a full replay, entity by entity and by snapshot bytes; at the end it also equals
//! a fresh replay of a copy of the log through a new `BuiltinLog`.
//!
//! Cases: `LOGBOOK_PROJECTION_CASES` (default 64).

#[path = "projection_replay_property/model.rs"]
mod model;
#[path = "projection_replay_property/ops.rs"]
mod ops;

use logbook::model::{CheckpointReason, RunKind, RunStatus};
use logbook::{ExpectedVersion, ManualClock, MemoryStorage};
use logbook_projection::projections::PhaseStatus;
use logbook_tests::projection_support::{
    BuiltinState, CLOCK_START_MS, OpenedLog, assert_same_state, clocked_options, head, open_memory,
};
use logbook_tests::{MEMORY_DIR, memory_files, memory_storage_with};
use model::{Model, Outcome};
use ops::{
    End, JOBS, JobEnd, MEMBERS, MESSAGES, Op, PHASES, ROOMS, RUNS, Target, WORKERS, WORKFLOWS,
    command, job_id, room_id, run_id, stream_of, worker_id, workflow_id,
};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

fn run_kind() -> impl Strategy<Value = RunKind> {
    prop_oneof![
        Just(RunKind::Subagent),
        Just(RunKind::WorkerThread),
        Just(RunKind::BackgroundAgent),
        Just(RunKind::TeamMember),
        Just(RunKind::WorkflowChild),
    ]
}

fn run_status() -> impl Strategy<Value = RunStatus> {
    // Terminal statuses are deliberately invalid here (they have their own events).
    prop_oneof![
        3 => Just(RunStatus::Paused),
        3 => Just(RunStatus::AwaitingUser),
        3 => Just(RunStatus::Running),
        1 => Just(RunStatus::Pending),
        1 => Just(RunStatus::Completed),
    ]
}

fn end() -> impl Strategy<Value = End> {
    prop_oneof![
        3 => Just(End::Completed),
        1 => Just(End::Failed),
        1 => Just(End::Cancelled),
    ]
}

fn job_end() -> impl Strategy<Value = JobEnd> {
    prop_oneof![
        Just(JobEnd::Succeeded),
        any::<bool>().prop_map(|retryable| JobEnd::Failed { retryable }),
        Just(JobEnd::Cancelled),
    ]
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        (0..RUNS).prop_map(Target::Run),
        (0..WORKFLOWS).prop_map(Target::Workflow),
        (0..ROOMS).prop_map(Target::Room),
        (0..JOBS).prop_map(Target::Job),
    ]
}

fn run_ops() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..RUNS, run_kind(), proptest::option::of(0..RUNS), proptest::option::weighted(0.7, 0..WORKFLOWS))
            .prop_map(|(run, kind, parent, workflow)| Op::StartRun { run, kind, parent, workflow }),
        2 => (0..RUNS, run_status()).prop_map(|(run, status)| Op::ChangeStatus { run, status }),
        2 => (0..RUNS, 0..100u64).prop_map(|(run, sequence)| Op::RunEvent { run, sequence }),
        2 => (0..RUNS, 0..1000u64, 0..3u8)
            .prop_map(|(run, tokens, tool)| Op::Telemetry { run, tokens, tool }),
        2 => (0..RUNS, prop_oneof![
                Just(CheckpointReason::Paused),
                Just(CheckpointReason::AwaitingUser),
                Just(CheckpointReason::Periodic),
            ])
            .prop_map(|(run, reason)| Op::Checkpoint { run, reason }),
        2 => (0..RUNS, end()).prop_map(|(run, end)| Op::EndRun { run, end }),
    ]
}

fn workflow_ops() -> impl Strategy<Value = Op> {
    let to = prop_oneof![
        Just(PhaseStatus::Running),
        Just(PhaseStatus::Completed),
        Just(PhaseStatus::Failed),
    ];
    prop_oneof![
        2 => (0..WORKFLOWS).prop_map(|workflow| Op::StartWorkflow { workflow }),
        5 => (0..WORKFLOWS, 0..PHASES, to, proptest::collection::vec(0..RUNS, 0..3))
            .prop_map(|(workflow, phase, to, children)| Op::Phase { workflow, phase, to, children }),
        1 => (0..WORKFLOWS, end()).prop_map(|(workflow, end)| Op::EndWorkflow { workflow, end }),
    ]
}

fn room_ops() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0..ROOMS).prop_map(|room| Op::CreateRoom { room }),
        2 => (0..ROOMS, 0..MEMBERS, any::<bool>())
            .prop_map(|(room, member, join)| Op::Membership { room, member, join }),
        5 => (0..ROOMS, 0..MESSAGES).prop_map(|(room, message)| Op::Post { room, message }),
        2 => (0..ROOMS, 0..MESSAGES).prop_map(|(room, message)| Op::Edit { room, message }),
        2 => (0..ROOMS, 0..MESSAGES)
            .prop_map(|(room, message)| Op::DeleteMessage { room, message }),
        1 => (0..ROOMS).prop_map(|room| Op::Archive { room }),
        1 => (0..ROOMS).prop_map(|room| Op::Misaddressed { room }),
    ]
}

fn job_ops() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0..JOBS).prop_map(|job| Op::Queue { job }),
        4 => (0..JOBS, 0..WORKERS, 0..50u64)
            .prop_map(|(job, worker, lease_ms)| Op::Claim { job, worker, lease_ms }),
        2 => (0..JOBS, 0..WORKERS, 0..50u64)
            .prop_map(|(job, worker, lease_ms)| Op::Heartbeat { job, worker, lease_ms }),
        2 => (0..JOBS, 0..=110u8).prop_map(|(job, percent)| Op::Progress { job, percent }),
        2 => (0..JOBS, job_end()).prop_map(|(job, end)| Op::EndJob { job, end }),
        3 => (0..40u64).prop_map(|ms| Op::Advance { ms }),
        2 => Just(Op::Reclaim),
    ]
}

/// Commands that create entities: a case starts with some, so that later commands find
/// something to act on more often than not.
fn creation() -> impl Strategy<Value = Op> {
    prop_oneof![
        (
            0..RUNS,
            run_kind(),
            proptest::option::of(0..RUNS),
            (0..WORKFLOWS).prop_map(Some)
        )
            .prop_map(|(run, kind, parent, workflow)| Op::StartRun {
                run,
                kind,
                parent,
                workflow
            }),
        (0..WORKFLOWS).prop_map(|workflow| Op::StartWorkflow { workflow }),
        (0..ROOMS).prop_map(|room| Op::CreateRoom { room }),
        (0..JOBS).prop_map(|job| Op::Queue { job }),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => run_ops(),
        4 => workflow_ops(),
        5 => room_ops(),
        6 => job_ops(),
        1 => target().prop_map(|target| Op::DeleteStream { target }),
        1 => (0..ROOMS, 0..6u64)
            .prop_map(|(room, before_version)| Op::Truncate { room, before_version }),
        1 => Just(Op::Reopen),
    ]
}

/// What the engine answered, in the model's terms.
fn outcome_of(result: &logbook::Result<logbook::AppendResult>) -> Outcome {
    match result {
        Ok(_) => Outcome::Written,
        Err(logbook::Error::Event(logbook_projection::Error::Rejected { reason, .. })) => {
            Outcome::Refused(reason.clone())
        }
        Err(logbook::Error::Event(
            logbook_projection::Error::InvalidField { .. }
            | logbook_projection::Error::StreamMismatch { .. },
        )) => Outcome::Invalid,
        Err(logbook::Error::StreamDeleted { .. }) => Outcome::Deleted,
        Err(other) => panic!("unexpected error: {other}"),
    }
}

/// Checks the projections against the model, entity by entity.
fn check_model(model: &Model, state: &BuiltinState) {
    for run in 0..RUNS {
        let status = state.runs.run(&run_id(run)).map(|run| run.status);
        let expected = model.runs.get(&run).map(|run| run.status);
        assert_eq!(status, expected, "status of run {run}");
    }
    for workflow in 0..WORKFLOWS {
        let actual = state.runs.workflow(&workflow_id(workflow));
        let expected = model.workflows.get(&workflow);
        assert_eq!(actual.is_some(), expected.is_some(), "workflow {workflow}");
        if let (Some(actual), Some(expected)) = (actual, expected) {
            assert_eq!(actual.status, expected.status, "workflow {workflow}");
            let phases: BTreeMap<String, PhaseStatus> = actual
                .phases
                .iter()
                .map(|phase| (phase.name.clone(), phase.status))
                .collect();
            assert_eq!(phases, expected.phases, "phases of workflow {workflow}");
        }
    }
    for room in 0..ROOMS {
        let actual = state.rooms.room(&room_id(room));
        let expected = model.rooms.get(&room);
        assert_eq!(actual.is_some(), expected.is_some(), "room {room}");
        if let (Some(actual), Some(expected)) = (actual, expected) {
            assert_eq!(actual.archived, expected.archived, "room {room} archived");
            let members: BTreeSet<String> = expected
                .members
                .iter()
                .map(|member| format!("member{member}"))
                .collect();
            assert_eq!(actual.members, members, "members of room {room}");
        }
    }
    for job in 0..JOBS {
        let actual = state.jobs.job(&job_id(job));
        let expected = model.jobs.get(&job);
        assert_eq!(actual.is_some(), expected.is_some(), "job {job}");
        if let (Some(actual), Some(expected)) = (actual, expected) {
            assert_eq!(actual.status, expected.status, "status of job {job}");
            let claim = actual
                .claim
                .as_ref()
                .map(|claim| (claim.worker.clone(), claim.lease_expires_at_ms));
            let expected_claim = expected
                .claim
                .map(|(worker, lease)| (worker_id(worker), lease));
            assert_eq!(claim, expected_claim, "claim of job {job}");
        }
    }
    for (stream, version) in &model.versions {
        let summary = state
            .streams
            .get(stream)
            .expect("a written stream is in the log");
        assert_eq!(summary.last_version + 1, *version, "version of {stream}");
        assert_eq!(summary.events, *version, "events of {stream}");
        assert_eq!(
            summary.deleted,
            model.deleted.contains(stream),
            "{stream} deleted"
        );
    }
}

/// One case: the log, its storage and clock, and the model.
struct Case {
    storage: Arc<MemoryStorage>,
    clock: ManualClock,
    opened: Option<OpenedLog>,
    model: Model,
}

impl Case {
    fn opened(&self) -> &OpenedLog {
        self.opened.as_ref().expect("the log is open")
    }

    async fn run(&mut self, op: &Op) {
        if let Op::Reopen = op {
            return self.reopen().await;
        }
        let log = &self.opened().log.clone();
        let before = head(log);
        match op {
            Op::Advance { ms } => {
                self.clock.advance(*ms);
                self.model.now_ms += ms;
            }
            Op::Reclaim => {
                let now_ms = self.model.now_ms;
                let mut reclaimed = log.reclaim_expired(now_ms).await.expect("reclaim");
                reclaimed.sort();
                assert_eq!(
                    reclaimed,
                    self.model.expired(),
                    "jobs reclaimed at {now_ms}"
                );
                for job in &reclaimed {
                    self.model.reclaim(job);
                }
                assert_eq!(head(log), before + reclaimed.len() as u64);
            }
            Op::DeleteStream { target } => {
                let stream = stream_of(*target);
                let result = log.log().delete_stream(&stream, ExpectedVersion::Any).await;
                if self.model.deleted.contains(stream.as_str()) {
                    assert!(
                        matches!(result, Err(logbook::Error::StreamDeleted { .. })),
                        "deleting {stream} twice: {result:?}"
                    );
                    assert_eq!(head(log), before, "a refused delete writes nothing");
                } else if !self.model.versions.contains_key(stream.as_str()) {
                    assert!(
                        matches!(result, Err(logbook::Error::StreamNotFound { .. })),
                        "deleting {stream}, which never had an event: {result:?}"
                    );
                    assert_eq!(head(log), before, "a refused delete writes nothing");
                } else {
                    result.expect("delete a stream");
                    self.model.delete(*target);
                    assert_eq!(head(log), before + 1);
                }
            }
            Op::Truncate {
                room,
                before_version,
            } => {
                let stream = stream_of(Target::Room(*room));
                let result = log.log().truncate_stream(&stream, *before_version).await;
                let next_version = self.model.versions.get(stream.as_str()).copied();
                let written = if self.model.deleted.contains(stream.as_str()) {
                    assert!(
                        matches!(result, Err(logbook::Error::StreamDeleted { .. })),
                        "{result:?}"
                    );
                    false
                } else if *before_version > next_version.unwrap_or(0) {
                    assert!(
                        matches!(result, Err(logbook::Error::LimitExceeded { .. })),
                        "{result:?}"
                    );
                    false
                } else {
                    result.expect("truncate a stream");
                    true
                };
                assert_eq!(head(log), before + u64::from(written));
            }
            Op::Reopen => unreachable!("handled above"),
            command_op => {
                let (stream, event) = command(command_op, self.model.now_ms);
                let expected = self
                    .model
                    .unless_deleted(&stream, self.model.predict_state(command_op));
                let result = log.execute(&stream, event).await;
                let actual = outcome_of(&result);
                assert_eq!(actual, expected, "{command_op:?} on {stream}: {result:?}");
                if actual == Outcome::Written {
                    self.model.apply(command_op, &stream);
                    assert_eq!(head(log), before + 1, "one event written");
                } else {
                    assert_eq!(head(log), before, "a refused command writes nothing");
                    assert_eq!(log.log().stats().durable_position, before);
                }
            }
        }
    }

    /// Closes and reopens the log: the replayed state must equal the live one.
    async fn reopen(&mut self) {
        let opened = self.opened.take().expect("the log is open");
        let live = BuiltinState::capture(&opened).await;
        let interrupted = opened.log.interrupted();
        opened.log.close().await.expect("close");
        let reopened = open_memory(&self.storage, clocked_options(&self.clock)).await;
        assert!(reopened.report.log.snapshot.used.is_none(), "a full replay");
        let replayed = BuiltinState::capture(&reopened).await;
        assert_same_state(&live, &replayed, "live vs reopened");
        assert_eq!(
            reopened.report.interrupted, interrupted,
            "the open report lists what was interrupted"
        );
        self.opened = Some(reopened);
    }

    /// The end of a case: model, fresh replay of a copy, reopen.
    async fn finish(mut self) {
        let live = BuiltinState::capture(self.opened()).await;
        check_model(&self.model, &live);
        // A fresh replay of the same log, through a new `BuiltinLog` on a copy of its segments.
        let wal_dir = Path::new(MEMORY_DIR).join(logbook_wal::WAL_DIR_NAME);
        let mut segments = memory_files(&self.storage);
        segments.retain(|(path, _)| path.starts_with(&wal_dir));
        let copy = Arc::new(memory_storage_with(&segments));
        let fresh = open_memory(&copy, clocked_options(&self.clock)).await;
        assert!(fresh.report.log.snapshot.used.is_none(), "a full replay");
        let fresh_state = BuiltinState::capture(&fresh).await;
        assert_same_state(&live, &fresh_state, "live vs fresh replay of a copy");
        fresh.log.close().await.expect("close the copy");
        self.reopen().await;
        let opened = self.opened.take().expect("the log is open");
        opened.log.close().await.expect("close");
    }
}

fn cases() -> u32 {
    std::env::var("LOGBOOK_PROJECTION_CASES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(64)
}

fn run_case(ops: &[Op]) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let storage = Arc::new(MemoryStorage::new());
        let clock = ManualClock::new(CLOCK_START_MS);
        let opened = open_memory(&storage, clocked_options(&clock)).await;
        let mut case = Case {
            storage,
            clock,
            opened: Some(opened),
            model: Model::new(),
        };
        for op in ops {
            case.run(op).await;
        }
        case.finish().await;
    });
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        max_shrink_iters: 200,
        ..ProptestConfig::default()
    })]

    #[test]
    fn live_state_equals_full_replay(
        setup in proptest::collection::vec(creation(), 4..16),
        ops in proptest::collection::vec(op(), 1..150),
    ) {
        run_case(&[setup, ops].concat());
    }
}
