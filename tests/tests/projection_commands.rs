//! Commands validate before they write: every refusal is a typed error
//! (`Error::Event(Rejected { reason, .. })` for state rules, `InvalidField`/`StreamMismatch` for
//! value rules, `StreamDeleted` for tombstoned streams) and leaves the head position where it
//! was. Conflicting concurrent commands on one stream: exactly one wins, the other gets
//! `WrongExpectedVersion` or a refusal.

use logbook::model::{
    JobFailed, JobLeaseExpired, JobSucceeded, RoomArchived, RoomMemberJoined, RoomMemberLeft,
    RoomMessageDeleted, RoomMessageEdited, RunCompleted, RunFailed, RunKind, RunStatus,
    RunStatusChanged, RunTelemetry, WorkflowCompleted, WorkflowPhaseCompleted,
};
use logbook::{BuiltinEvent, BuiltinLog, ExpectedVersion, ManualClock, MemoryStorage, StreamId};
use logbook_projection::RejectReason;
use logbook_projection::projections::JobStatus;
use logbook_tests::projection_support::{
    CLOCK_START_MS, clocked_options, head, job_claimed, job_heartbeat, job_progress, job_queued,
    message_posted, open_memory, phase_started, rejected_reason, room_created, run_started,
    workflow_started,
};
use std::sync::Arc;

async fn open(clock: &ManualClock) -> BuiltinLog {
    let storage = Arc::new(MemoryStorage::new());
    open_memory(&storage, clocked_options(clock)).await.log
}

/// Runs a command that must be refused with a state rule: returns the reason, after checking
/// that nothing was written.
async fn refused(log: &BuiltinLog, stream: &StreamId, event: BuiltinEvent) -> RejectReason {
    let before = head(log);
    let durable = log.log().stats().durable_position;
    let reason = rejected_reason(log.execute(stream, event).await);
    assert_eq!(head(log), before, "a refused command writes nothing");
    assert_eq!(log.log().stats().durable_position, durable);
    reason
}

/// Runs a command that must be refused before any state is consulted (value or stream rules).
async fn invalid(log: &BuiltinLog, stream: &StreamId, event: BuiltinEvent) -> logbook::Error {
    let before = head(log);
    let error = log.execute(stream, event).await.unwrap_err();
    assert!(
        matches!(
            error,
            logbook::Error::Event(
                logbook_projection::Error::InvalidField { .. }
                    | logbook_projection::Error::StreamMismatch { .. }
            )
        ),
        "{error}"
    );
    assert_eq!(head(log), before, "an invalid command writes nothing");
    error
}

async fn ok(log: &BuiltinLog, stream: &StreamId, event: BuiltinEvent) -> u64 {
    let before = head(log);
    let written = log.execute(stream, event).await.unwrap();
    assert_eq!(written.last_position, before + 1);
    written.last_position
}

fn background() -> BuiltinEvent {
    run_started(RunKind::BackgroundAgent, "agent", None, None)
}

fn completed() -> BuiltinEvent {
    RunCompleted {
        summary: Some("done".into()),
        result_ref: Some("results/r".into()),
    }
    .into()
}

fn failed() -> BuiltinEvent {
    RunFailed {
        error: "boom".into(),
    }
    .into()
}

fn status(status: RunStatus) -> BuiltinEvent {
    RunStatusChanged {
        status,
        reason: None,
    }
    .into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_refuse_missing_duplicate_and_ended() {
    let clock = ManualClock::new(CLOCK_START_MS);
    let log = open(&clock).await;
    let run = StreamId::run("r1").unwrap();
    assert_eq!(
        refused(&log, &run, completed()).await,
        RejectReason::NotFound
    );
    assert_eq!(refused(&log, &run, failed()).await, RejectReason::NotFound);
    let telemetry = BuiltinEvent::from(RunTelemetry::default());
    assert_eq!(
        refused(&log, &run, telemetry.clone()).await,
        RejectReason::NotFound
    );
    ok(&log, &run, background()).await;
    assert_eq!(
        refused(&log, &run, background()).await,
        RejectReason::AlreadyExists
    );
    ok(&log, &run, status(RunStatus::Paused)).await;
    ok(&log, &run, completed()).await;
    assert_eq!(
        refused(&log, &run, completed()).await,
        RejectReason::AlreadyEnded
    );
    assert_eq!(
        refused(&log, &run, failed()).await,
        RejectReason::AlreadyEnded
    );
    let resume = status(RunStatus::Running);
    assert_eq!(
        refused(&log, &run, resume).await,
        RejectReason::AlreadyEnded
    );
    // Late usage reports still count after the end.
    ok(&log, &run, telemetry).await;

    // Value and stream rules come first.
    invalid(&log, &run, status(RunStatus::Completed)).await;
    let orphan = run_started(RunKind::WorkflowChild, "agent", None, None);
    invalid(&log, &StreamId::run("r2").unwrap(), orphan).await;
    invalid(&log, &StreamId::room("r1").unwrap(), background()).await;

    // A deleted stream refuses even what its (now empty) state would accept.
    log.log()
        .delete_stream(&run, ExpectedVersion::Any)
        .await
        .unwrap();
    let before = head(&log);
    let error = log.execute(&run, background()).await.unwrap_err();
    assert!(
        matches!(error, logbook::Error::StreamDeleted { .. }),
        "{error}"
    );
    assert_eq!(head(&log), before);
    log.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflows_refuse_bad_phase_transitions() {
    let clock = ManualClock::new(CLOCK_START_MS);
    let log = open(&clock).await;
    let workflow = StreamId::workflow("w1").unwrap();
    let done = |phase: &str| -> BuiltinEvent {
        WorkflowPhaseCompleted {
            phase: phase.into(),
            child_run_ids: vec![],
            result_ref: Some(format!("results/{phase}")),
        }
        .into()
    };
    assert_eq!(
        refused(&log, &workflow, done("plan")).await,
        RejectReason::NotFound
    );
    ok(
        &log,
        &workflow,
        workflow_started("review", &["plan", "build"]),
    )
    .await;
    let again = workflow_started("review", &["plan"]);
    assert_eq!(
        refused(&log, &workflow, again).await,
        RejectReason::AlreadyExists
    );
    ok(&log, &workflow, phase_started("plan", &["c1"])).await;
    ok(&log, &workflow, done("plan")).await;
    let transition = |from, to| RejectReason::InvalidTransition { from, to };
    assert_eq!(
        refused(&log, &workflow, done("plan")).await,
        transition("completed", "completed")
    );
    assert_eq!(
        refused(&log, &workflow, phase_started("plan", &[])).await,
        transition("completed", "running")
    );
    // Children listed twice are a value error.
    invalid(&log, &workflow, phase_started("build", &["c2", "c2"])).await;
    ok(&log, &workflow, WorkflowCompleted::default().into()).await;
    let late = WorkflowCompleted::default().into();
    assert_eq!(
        refused(&log, &workflow, late).await,
        RejectReason::AlreadyEnded
    );
    assert_eq!(
        refused(&log, &workflow, phase_started("build", &[])).await,
        RejectReason::AlreadyEnded
    );
    log.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_refuse_missing_archived_and_membership_errors() {
    let clock = ManualClock::new(CLOCK_START_MS);
    let log = open(&clock).await;
    let room = StreamId::room("lobby").unwrap();
    let post = |id: &str| message_posted(id, "ada", "hello");
    assert_eq!(
        refused(&log, &room, post("m0")).await,
        RejectReason::NotFound
    );
    ok(&log, &room, room_created("Lobby")).await;
    assert_eq!(
        refused(&log, &room, room_created("Lobby")).await,
        RejectReason::AlreadyExists
    );
    let join = |member: &str| {
        BuiltinEvent::from(RoomMemberJoined {
            member: member.into(),
        })
    };
    let leave = |member: &str| {
        BuiltinEvent::from(RoomMemberLeft {
            member: member.into(),
        })
    };
    ok(&log, &room, join("ada")).await;
    assert_eq!(
        refused(&log, &room, join("ada")).await,
        RejectReason::AlreadyExists
    );
    assert_eq!(
        refused(&log, &room, leave("bob")).await,
        RejectReason::NotFound
    );
    ok(&log, &room, post("m1")).await;
    ok(&log, &room, post("m2")).await;

    // A deleted message can be neither deleted again nor edited: the count stays right.
    let delete = |id: &str| {
        BuiltinEvent::from(RoomMessageDeleted {
            message_id: id.into(),
        })
    };
    let edit = |id: &str| {
        BuiltinEvent::from(RoomMessageEdited {
            message_id: id.into(),
            body: "changed".into(),
        })
    };
    ok(&log, &room, delete("m1")).await;
    assert_eq!(
        refused(&log, &room, delete("m1")).await,
        RejectReason::NotFound
    );
    assert_eq!(
        refused(&log, &room, edit("m1")).await,
        RejectReason::NotFound
    );
    ok(&log, &room, edit("m2")).await;
    assert_eq!(log.rooms().read().room("lobby").unwrap().message_count(), 1);

    ok(&log, &room, RoomArchived { reason: None }.into()).await;
    for event in [
        post("m3"),
        edit("m2"),
        delete("m2"),
        join("bob"),
        leave("ada"),
    ] {
        assert_eq!(refused(&log, &room, event).await, RejectReason::Archived);
    }
    let archive_again = RoomArchived { reason: None }.into();
    assert_eq!(
        refused(&log, &room, archive_again).await,
        RejectReason::Archived
    );
    invalid(&log, &room, job_queued("export")).await;
    log.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_refuse_live_leases_strangers_and_bad_endings() {
    let clock = ManualClock::new(CLOCK_START_MS);
    let log = open(&clock).await;
    let job = StreamId::job("j1").unwrap();
    let now = CLOCK_START_MS;
    let claim = |worker: &str, until: u64| job_claimed(worker, until);
    assert_eq!(
        refused(&log, &job, claim("w1", now + 100)).await,
        RejectReason::NotFound
    );
    ok(&log, &job, job_queued("train")).await;
    assert_eq!(
        refused(&log, &job, job_queued("train")).await,
        RejectReason::AlreadyExists
    );
    let succeed = || BuiltinEvent::from(JobSucceeded { result: None });
    assert_eq!(
        refused(&log, &job, succeed()).await,
        RejectReason::InvalidTransition {
            from: "queued",
            to: "ended"
        }
    );
    ok(&log, &job, claim("w1", now + 100)).await;
    let live = RejectReason::LeaseLive {
        worker: "w1".into(),
        lease_expires_at_ms: now + 100,
    };
    assert_eq!(refused(&log, &job, claim("w2", now + 500)).await, live);
    assert_eq!(refused(&log, &job, claim("w1", now + 500)).await, live);
    let stranger = RejectReason::NotClaimedBy {
        worker: "w2".into(),
    };
    assert_eq!(
        refused(&log, &job, job_heartbeat("w2", now + 500)).await,
        stranger
    );
    let early = JobLeaseExpired {
        worker: "w1".into(),
    };
    assert_eq!(refused(&log, &job, early.into()).await, live);
    ok(&log, &job, job_heartbeat("w1", now + 200)).await;
    ok(&log, &job, job_progress("epoch", 40)).await;
    invalid(&log, &job, job_progress("epoch", 101)).await;

    // Nothing lapsed yet: nothing to reclaim.
    clock.set(now + 150);
    assert!(log.reclaim_expired(now + 150).await.unwrap().is_empty());
    // The lease lapses: the holder's heartbeat is refused, the lease is reclaimed, and only
    // then may another worker claim.
    clock.set(now + 200);
    let late = RejectReason::NotClaimedBy {
        worker: "w1".into(),
    };
    assert_eq!(
        refused(&log, &job, job_heartbeat("w1", now + 900)).await,
        late
    );
    let before = head(&log);
    assert_eq!(log.reclaim_expired(now + 200).await.unwrap(), ["j1"]);
    assert_eq!(head(&log), before + 1, "one job.lease_expired");
    let reclaimed = log.jobs().read().job("j1").unwrap().clone();
    assert_eq!(reclaimed.status, JobStatus::Queued);
    assert_eq!(reclaimed.claim, None);
    assert_eq!(
        reclaimed.progress.unwrap().percent,
        Some(40),
        "progress kept"
    );
    assert!(log.reclaim_expired(now + 200).await.unwrap().is_empty());
    ok(&log, &job, claim("w2", now + 1000)).await;
    ok(&log, &job, succeed()).await;
    assert_eq!(
        refused(&log, &job, succeed()).await,
        RejectReason::AlreadyEnded
    );
    assert_eq!(
        refused(&log, &job, claim("w3", now + 2000)).await,
        RejectReason::AlreadyEnded
    );
    assert_eq!(
        refused(&log, &job, job_queued("train")).await,
        RejectReason::AlreadyExists
    );

    // Only a retryable failure may be queued again.
    for (id, retryable) in [("j2", true), ("j3", false)] {
        let job = StreamId::job(id).unwrap();
        ok(&log, &job, job_queued("train")).await;
        ok(&log, &job, claim("w1", now + 1000)).await;
        let failure = JobFailed {
            error: "out of memory".into(),
            retryable,
        };
        ok(&log, &job, failure.into()).await;
        if retryable {
            ok(&log, &job, job_queued("train")).await;
        } else {
            let again = refused(&log, &job, job_queued("train")).await;
            assert_eq!(again, RejectReason::AlreadyExists);
        }
    }
    log.close().await.unwrap();
}

/// How one of two racing commands lost, `None` if it won.
fn lost_race(result: &logbook::Result<logbook::AppendResult>) -> Option<&'static str> {
    match result {
        Ok(_) => None,
        Err(logbook::Error::WrongExpectedVersion { .. }) => Some("wrong expected version"),
        Err(logbook::Error::Event(logbook_projection::Error::Rejected { .. })) => Some("refused"),
        Err(other) => panic!("a racing command failed otherwise: {other}"),
    }
}

/// Runs two commands on one stream at once, from two tasks: exactly one must win, and exactly
/// one event be written. Returns how the loser lost.
async fn race(
    log: &BuiltinLog,
    stream: &StreamId,
    first: BuiltinEvent,
    second: BuiltinEvent,
) -> &'static str {
    let before = head(log);
    let spawn = |event: BuiltinEvent| {
        let log = log.clone();
        let stream = stream.clone();
        tokio::spawn(async move { log.execute(&stream, event).await })
    };
    let (one, two) = (spawn(first), spawn(second));
    let (one, two) = (one.await.unwrap(), two.await.unwrap());
    let losses: Vec<&str> = [lost_race(&one), lost_race(&two)]
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(losses.len(), 1, "exactly one wins: {one:?} / {two:?}");
    assert_eq!(head(log), before + 1, "exactly one event written");
    losses[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_conflicting_commands_one_wins() {
    let clock = ManualClock::new(CLOCK_START_MS);
    let log = open(&clock).await;
    let lease = CLOCK_START_MS + 60_000;
    let mut losses: std::collections::BTreeMap<&str, u32> = Default::default();
    for round in 0..40 {
        // Two workers claim one job.
        let job = StreamId::job(&format!("j{round}")).unwrap();
        ok(&log, &job, job_queued("train")).await;
        let (one, two) = (job_claimed("w1", lease), job_claimed("w2", lease));
        let loss = race(&log, &job, one, two).await;
        *losses.entry(loss).or_default() += 1;
        let winner = log.jobs().read().job(&format!("j{round}")).unwrap().clone();
        assert_eq!(winner.attempts, 1, "one claim recorded");

        // Two endings of one run.
        let run = StreamId::run(&format!("r{round}")).unwrap();
        ok(&log, &run, background()).await;
        let loss = race(&log, &run, completed(), failed()).await;
        *losses.entry(loss).or_default() += 1;

        // Two creations of one room.
        let room = StreamId::room(&format!("room{round}")).unwrap();
        let loss = race(&log, &room, room_created("A"), room_created("B")).await;
        *losses.entry(loss).or_default() += 1;

        // The plain engine path: two appends expecting the same version.
        let expected = ExpectedVersion::Exact(0);
        let append = |note: &str| {
            let log = log.clone();
            let room = room.clone();
            let event = message_posted(note, "ada", note);
            tokio::spawn(async move { log.log().append(&room, expected, vec![event.into()]).await })
        };
        let (one, two) = (append("x"), append("y"));
        let results = [one.await.unwrap(), two.await.unwrap()];
        let failures: Vec<_> = results.iter().filter(|result| result.is_err()).collect();
        assert_eq!(failures.len(), 1, "{results:?}");
        assert!(
            matches!(
                failures[0],
                Err(logbook::Error::WrongExpectedVersion { .. })
            ),
            "{results:?}"
        );
    }
    eprintln!("how the losers of 120 races lost: {losses:?}");
    log.close().await.unwrap();
}

/// `execute` validates against state that includes the stream's last event; under
/// `SyncPolicy::Never` nothing synced that event, so the second command waited forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_work_under_sync_policy_never() {
    let mut options = logbook_tests::test_options();
    options.wal.sync_policy = logbook_wal::SyncPolicy::Never;
    let (log, _) = BuiltinLog::open_with(
        Arc::new(MemoryStorage::new()),
        std::path::Path::new("/log"),
        options,
        logbook::Projections::new(),
    )
    .await
    .unwrap();
    let room = StreamId::room("quiet").unwrap();
    let created =
        BuiltinEvent::from_json("room.created", serde_json::json!({"name": "q"})).unwrap();
    log.execute(&room, created).await.unwrap();
    for index in 0..20 {
        let data =
            serde_json::json!({"message_id": format!("m{index}"), "author": "a", "body": "b"});
        let posted = BuiltinEvent::from_json("room.message_posted", data).unwrap();
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            log.execute(&room, posted),
        )
        .await
        .expect("execute under Never does not wait forever")
        .unwrap();
    }
    // Projections apply durable events: under `Never` the last one waits for a sync.
    log.log().sync().await.unwrap();
    assert_eq!(
        log.rooms().read().room("quiet").unwrap().message_count(),
        20
    );
    log.close().await.unwrap();
}
