//! The generator of `tests/fixtures/golden-log-v1`: what version 1 of the built-in model wrote.
//! Never change it for `golden-log-v1`; a new meaning gets a new fixture.

use super::{digest_lines, digest_path, fixture_dir, open_fixture};
use logbook::model::{
    CheckpointReason, JobCancelled, JobFailed, JobSucceeded, RoomArchived, RoomMemberJoined,
    RoomMemberLeft, RoomMessageDeleted, RoomMessageEdited, RunCancelled, RunCheckpointed,
    RunCompleted, RunEvent, RunFailed, RunKind, RunStarted, RunStatus, RunStatusChanged,
    RunTelemetry, WorkflowCancelled, WorkflowCompleted, WorkflowFailed, WorkflowPhaseCompleted,
    WorkflowPhaseFailed,
};
use logbook::{BuiltinEvent, BuiltinLog, ExpectedVersion, ManualClock, StreamId};
use logbook_tests::projection_support::{
    CLOCK_START_MS, clocked_options, job_claimed, job_heartbeat, job_progress, job_queued,
    message_posted, phase_started, room_created, run_started, workflow_started,
};

struct Writer {
    log: BuiltinLog,
    clock: ManualClock,
}

impl Writer {
    async fn run(&self, stream: &str, event: impl Into<BuiltinEvent>) {
        self.clock.advance(1_000);
        let stream = StreamId::new(stream).unwrap();
        self.log
            .execute(&stream, event.into())
            .await
            .unwrap_or_else(|error| panic!("{stream}: {error}"));
    }
}

fn child(parent: &str, workflow: &str) -> BuiltinEvent {
    run_started(
        RunKind::WorkflowChild,
        "coder",
        Some(parent),
        Some(workflow),
    )
}

fn telemetry(tokens_in: u64, tool: &str) -> RunTelemetry {
    RunTelemetry {
        tokens_in,
        tokens_out: tokens_in / 4,
        cost_estimate_micros: tokens_in * 3,
        elapsed_ms: 1_500,
        tool_calls: [(tool.to_owned(), 2), ("read".to_owned(), 1)].into(),
        model: Some("model-large".into()),
        provider: Some("provider-a".into()),
        error: None,
    }
}

fn checkpoint(reason: CheckpointReason, data: &str) -> RunCheckpointed {
    RunCheckpointed {
        reason,
        data: data.into(),
    }
}

async fn write_runs_and_workflows(w: &Writer) {
    let lead = RunStarted {
        kind: RunKind::BackgroundAgent,
        agent_id: "lead".into(),
        parent_run_id: None,
        parent_thread_id: Some("thread-1".into()),
        prompt_ref: Some("prompts/lead".into()),
        worker_thread_id: Some("worker-thread-1".into()),
        task_board_ref: Some("board-1".into()),
        task_card_ref: Some("card-7".into()),
        workflow_id: None,
    };
    w.run("run/lead", lead).await;
    w.run(
        "workflow/review",
        workflow_started("code-review", &["plan", "build", "check"]),
    )
    .await;
    w.run("run/child-1", child("lead", "review")).await;
    w.run("workflow/review", phase_started("plan", &["child-1"]))
        .await;
    w.run("run/child-1", telemetry(1_200, "grep")).await;
    for sequence in 1..=3 {
        let event = RunEvent {
            sequence,
            event_type: "tool_call".into(),
            payload: format!("{{\"tool\":\"grep\",\"n\":{sequence}}}"),
        };
        w.run("run/child-1", event).await;
    }
    w.run(
        "run/child-1",
        checkpoint(CheckpointReason::Periodic, "{\"step\":3}"),
    )
    .await;
    let done = RunCompleted {
        summary: Some("planned".into()),
        result_ref: Some("results/child-1".into()),
    };
    w.run("run/child-1", done).await;
    let plan_done = WorkflowPhaseCompleted {
        phase: "plan".into(),
        child_run_ids: vec!["child-1".into()],
        result_ref: Some("results/plan".into()),
    };
    w.run("workflow/review", plan_done).await;
    w.run("run/child-2", child("lead", "review")).await;
    w.run("workflow/review", phase_started("build", &["child-2"]))
        .await;
    w.run("run/child-2", telemetry(800, "edit")).await;
    let crash = RunFailed {
        error: "compiler crashed".into(),
    };
    w.run("run/child-2", crash).await;
    let build_failed = WorkflowPhaseFailed {
        phase: "build".into(),
        child_run_ids: vec!["child-2".into()],
        error: "child-2 failed".into(),
    };
    w.run("workflow/review", build_failed).await;
    w.run("run/child-3", child("lead", "review")).await;
    w.run("workflow/review", phase_started("build", &["child-3"]))
        .await;
    let paused = RunStatusChanged {
        status: RunStatus::Paused,
        reason: Some("rate limited".into()),
    };
    w.run("run/child-3", paused).await;
    w.run(
        "run/child-3",
        checkpoint(CheckpointReason::Paused, "{\"file\":\"main.rs\"}"),
    )
    .await;
    // Late telemetry of an ended run still counts.
    w.run("run/child-2", telemetry(10, "edit")).await;
    w.run("run/lead", telemetry(300, "plan")).await;
    let waiting = RunStatusChanged {
        status: RunStatus::AwaitingUser,
        reason: Some("question".into()),
    };
    w.run("run/lead", waiting).await;
    w.run(
        "run/lead",
        checkpoint(CheckpointReason::AwaitingUser, "{\"ask\":\"ok?\"}"),
    )
    .await;

    w.run("workflow/quick", workflow_started("quick", &["only"]))
        .await;
    w.run("workflow/quick", phase_started("only", &[])).await;
    let only_done = WorkflowPhaseCompleted {
        phase: "only".into(),
        child_run_ids: vec![],
        result_ref: None,
    };
    w.run("workflow/quick", only_done).await;
    let quick_done = WorkflowCompleted {
        summary: Some("quick".into()),
        result_ref: Some("results/quick".into()),
    };
    w.run("workflow/quick", quick_done).await;
    w.run("workflow/doomed", workflow_started("doomed", &["a"]))
        .await;
    let doomed = WorkflowFailed {
        error: "no budget".into(),
    };
    w.run("workflow/doomed", doomed).await;
    w.run("workflow/dropped", workflow_started("dropped", &[]))
        .await;
    let dropped = WorkflowCancelled {
        reason: Some("user".into()),
    };
    w.run("workflow/dropped", dropped).await;
    w.run(
        "run/stopped",
        run_started(RunKind::TeamMember, "helper", Some("lead"), None),
    )
    .await;
    let stopped = RunCancelled {
        reason: Some("not needed".into()),
    };
    w.run("run/stopped", stopped).await;
    w.run(
        "run/worker",
        run_started(RunKind::WorkerThread, "w", None, None),
    )
    .await;
    w.run(
        "run/sub",
        run_started(RunKind::Subagent, "s", Some("worker"), None),
    )
    .await;
}

async fn write_rooms(w: &Writer) {
    w.run("room/lobby", room_created("Lobby")).await;
    for member in ["ada", "bob"] {
        let joined = RoomMemberJoined {
            member: member.into(),
        };
        w.run("room/lobby", joined).await;
    }
    for index in 1..=5 {
        let body = format!("hello {index}");
        let author = if index % 2 == 0 { "bob" } else { "ada" };
        w.run(
            "room/lobby",
            message_posted(&format!("m{index}"), author, &body),
        )
        .await;
    }
    let edited = RoomMessageEdited {
        message_id: "m2".into(),
        body: "hello 2, edited".into(),
    };
    w.run("room/lobby", edited).await;
    let deleted = RoomMessageDeleted {
        message_id: "m3".into(),
    };
    w.run("room/lobby", deleted).await;
    let left = RoomMemberLeft {
        member: "bob".into(),
    };
    w.run("room/lobby", left).await;
    w.run("room/old", room_created("Old")).await;
    w.run("room/old", message_posted("o1", "ada", "last words"))
        .await;
    let archived = RoomArchived {
        reason: Some("project over".into()),
    };
    w.run("room/old", archived).await;
    // A session reset: the first three versions are hidden.
    w.run("room/session", room_created("Session")).await;
    for index in 1..=4 {
        let post = message_posted(&format!("s{index}"), "ada", &format!("turn {index}"));
        w.run("room/session", post).await;
    }
    let session = StreamId::room("session").unwrap();
    w.log.log().truncate_stream(&session, 3).await.unwrap();
    // A deleted room and a deleted run.
    w.run("room/gone", room_created("Gone")).await;
    w.run("room/gone", message_posted("g1", "ada", "bye")).await;
    w.run("run/gone", run_started(RunKind::Subagent, "x", None, None))
        .await;
    for stream in ["room/gone", "run/gone"] {
        let stream = StreamId::new(stream).unwrap();
        let log = w.log.log();
        log.delete_stream(&stream, ExpectedVersion::Any)
            .await
            .unwrap();
    }
}

async fn write_jobs(w: &Writer) {
    let lease = |w: &Writer, ms: u64| w.log.log().now_ms() + ms;
    w.run("job/export", job_queued("export")).await;
    w.run("job/export", job_claimed("w1", lease(w, 60_000)))
        .await;
    w.run("job/export", job_progress("copy", 50)).await;
    w.run("job/export", job_heartbeat("w1", lease(w, 120_000)))
        .await;
    let exported = JobSucceeded {
        result: Some("exports/1.tar".into()),
    };
    w.run("job/export", exported).await;
    w.run("job/train", job_queued("train")).await;
    w.run("job/train", job_claimed("w1", lease(w, 5_000))).await;
    w.run("job/train", job_progress("epoch-1", 10)).await;
    w.clock.advance(10_000);
    let now = w.log.log().now_ms();
    assert_eq!(w.log.reclaim_expired(now).await.unwrap(), ["train"]);
    w.run("job/train", job_claimed("w2", lease(w, 600_000)))
        .await;
    let progress = logbook::model::JobProgress {
        stage: Some("epoch-2".into()),
        percent: Some(70),
        done: Some(7),
        total: Some(10),
        message: Some("loss 0.12".into()),
    };
    w.run("job/train", progress).await;
    w.run("job/flaky", job_queued("flaky")).await;
    w.run("job/flaky", job_claimed("w3", lease(w, 60_000)))
        .await;
    let oom = JobFailed {
        error: "out of memory".into(),
        retryable: true,
    };
    w.run("job/flaky", oom).await;
    w.run("job/flaky", job_queued("flaky")).await;
    let cancelled = JobCancelled {
        reason: Some("superseded".into()),
    };
    w.run("job/flaky", cancelled).await;
    w.run("job/waiting", job_queued("waiting")).await;
}

/// Writes the fixture and its digest (only with `GENERATE_GOLDEN=1`).
pub(super) async fn generate() {
    let temp = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(CLOCK_START_MS);
    let (log, _) = BuiltinLog::open(temp.path(), clocked_options(&clock))
        .await
        .unwrap();
    let writer = Writer { log, clock };
    write_runs_and_workflows(&writer).await;
    write_rooms(&writer).await;
    write_jobs(&writer).await;
    writer.log.close().await.unwrap();

    let target = fixture_dir().join(logbook_wal::WAL_DIR_NAME);
    if fixture_dir().exists() {
        std::fs::remove_dir_all(fixture_dir()).unwrap();
    }
    std::fs::create_dir_all(&target).unwrap();
    let source = temp.path().join(logbook_wal::WAL_DIR_NAME);
    for entry in std::fs::read_dir(&source).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|extension| extension == "seg") {
            std::fs::copy(&path, target.join(path.file_name().unwrap())).unwrap();
        }
    }
    let check = tempfile::tempdir().unwrap();
    let opened = open_fixture(check.path()).await;
    let (lines, readable) = digest_lines(&opened).await;
    eprintln!("{readable}");
    opened.log.close().await.unwrap();
    let header = "# The state tests/fixtures/golden-log-v1 must rebuild: FNV-1a 64 of each part \
                  (see tests/tests/projection_golden_log.rs).\n";
    std::fs::write(digest_path(), format!("{header}{lines}")).unwrap();
    eprintln!(
        "wrote {} and {}",
        fixture_dir().display(),
        digest_path().display()
    );
}
