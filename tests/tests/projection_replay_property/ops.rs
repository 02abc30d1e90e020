//! The vocabulary of the property test: its commands (`Op`), the ids they name, and the
//! stream and event each command becomes.

use logbook::model::{
    CheckpointReason, JobCancelled, JobFailed, JobSucceeded, RoomArchived, RoomMemberJoined,
    RoomMemberLeft, RoomMessageDeleted, RoomMessageEdited, RunCancelled, RunCheckpointed,
    RunCompleted, RunEvent, RunFailed, RunKind, RunStatus, RunStatusChanged, RunTelemetry,
    WorkflowCancelled, WorkflowCompleted, WorkflowFailed, WorkflowPhaseCompleted,
    WorkflowPhaseFailed,
};
use logbook::{BuiltinEvent, StreamId};
use logbook_projection::projections::PhaseStatus;
use logbook_tests::projection_support::{
    job_claimed, job_heartbeat, job_progress, job_queued, message_posted, phase_started,
    room_created, run_started, workflow_started,
};

pub(crate) const RUNS: u8 = 5;
pub(crate) const WORKFLOWS: u8 = 3;
pub(crate) const ROOMS: u8 = 3;
pub(crate) const JOBS: u8 = 4;
pub(crate) const MESSAGES: u8 = 6;
pub(crate) const MEMBERS: u8 = 3;
pub(crate) const WORKERS: u8 = 2;
/// Phases `p0..p2` are declared by `workflow.started`; `p3` is not (it is added when named).
pub(crate) const PHASES: u8 = 4;
pub(crate) const DECLARED_PHASES: [&str; 3] = ["p0", "p1", "p2"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    Completed,
    Failed,
    Cancelled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JobEnd {
    Succeeded,
    Failed { retryable: bool },
    Cancelled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    Run(u8),
    Workflow(u8),
    Room(u8),
    Job(u8),
}

#[derive(Debug, Clone)]
pub(crate) enum Op {
    StartRun {
        run: u8,
        kind: RunKind,
        parent: Option<u8>,
        workflow: Option<u8>,
    },
    ChangeStatus {
        run: u8,
        status: RunStatus,
    },
    RunEvent {
        run: u8,
        sequence: u64,
    },
    Telemetry {
        run: u8,
        tokens: u64,
        tool: u8,
    },
    Checkpoint {
        run: u8,
        reason: CheckpointReason,
    },
    EndRun {
        run: u8,
        end: End,
    },
    StartWorkflow {
        workflow: u8,
    },
    Phase {
        workflow: u8,
        phase: u8,
        to: PhaseStatus,
        children: Vec<u8>,
    },
    EndWorkflow {
        workflow: u8,
        end: End,
    },
    CreateRoom {
        room: u8,
    },
    Membership {
        room: u8,
        member: u8,
        join: bool,
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
    Archive {
        room: u8,
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
        end: JobEnd,
    },
    /// A job event sent to a room stream: refused before any state is consulted.
    Misaddressed {
        room: u8,
    },
    Advance {
        ms: u64,
    },
    Reclaim,
    DeleteStream {
        target: Target,
    },
    Truncate {
        room: u8,
        before_version: u64,
    },
    Reopen,
}

pub(crate) fn run_id(run: u8) -> String {
    format!("r{run}")
}

pub(crate) fn workflow_id(workflow: u8) -> String {
    format!("w{workflow}")
}

pub(crate) fn room_id(room: u8) -> String {
    format!("room{room}")
}

pub(crate) fn job_id(job: u8) -> String {
    format!("j{job}")
}

pub(crate) fn worker_id(worker: u8) -> String {
    format!("worker{worker}")
}

fn message_id(message: u8) -> String {
    format!("m{message}")
}

pub(crate) fn phase_name(phase: u8) -> String {
    format!("p{phase}")
}

pub(crate) fn stream_of(target: Target) -> StreamId {
    match target {
        Target::Run(run) => StreamId::run(&run_id(run)),
        Target::Workflow(workflow) => StreamId::workflow(&workflow_id(workflow)),
        Target::Room(room) => StreamId::room(&room_id(room)),
        Target::Job(job) => StreamId::job(&job_id(job)),
    }
    .expect("valid stream id")
}

/// The stream and event of a command op.
pub(crate) fn command(op: &Op, now_ms: u64) -> (StreamId, BuiltinEvent) {
    let run = |run: &u8| StreamId::run(&run_id(*run)).expect("run stream");
    let workflow = |workflow: &u8| StreamId::workflow(&workflow_id(*workflow)).expect("stream");
    let room = |room: &u8| StreamId::room(&room_id(*room)).expect("room stream");
    let job = |job: &u8| StreamId::job(&job_id(*job)).expect("job stream");
    match op {
        Op::StartRun {
            run: id,
            kind,
            parent,
            workflow: parent_workflow,
        } => {
            let parent = parent.map(run_id);
            let parent_workflow = parent_workflow.map(workflow_id);
            let event = run_started(
                *kind,
                "agent",
                parent.as_deref(),
                parent_workflow.as_deref(),
            );
            (run(id), event)
        }
        Op::ChangeStatus { run: id, status } => {
            let event = RunStatusChanged {
                status: *status,
                reason: Some("model".into()),
            };
            (run(id), event.into())
        }
        Op::RunEvent { run: id, sequence } => {
            let event = RunEvent {
                sequence: *sequence,
                event_type: "tool_call".into(),
                payload: format!("{{\"n\":{sequence}}}"),
            };
            (run(id), event.into())
        }
        Op::Telemetry {
            run: id,
            tokens,
            tool,
        } => {
            let event = RunTelemetry {
                tokens_in: *tokens,
                tokens_out: tokens / 2,
                cost_estimate_micros: tokens * 3,
                elapsed_ms: 7,
                tool_calls: [(format!("tool{tool}"), 1)].into(),
                model: Some("model-a".into()),
                provider: (*tool == 0).then(|| "provider-a".to_owned()),
                error: (*tool == 2).then(|| "rate limited".to_owned()),
            };
            (run(id), event.into())
        }
        Op::Checkpoint { run: id, reason } => {
            let event = RunCheckpointed {
                reason: *reason,
                data: format!("checkpoint at {now_ms}"),
            };
            (run(id), event.into())
        }
        Op::EndRun { run: id, end } => {
            let event: BuiltinEvent = match end {
                End::Completed => RunCompleted {
                    summary: Some("done".into()),
                    result_ref: Some(format!("results/{}", run_id(*id))),
                }
                .into(),
                End::Failed => RunFailed {
                    error: "crashed".into(),
                }
                .into(),
                End::Cancelled => RunCancelled {
                    reason: Some("user".into()),
                }
                .into(),
            };
            (run(id), event)
        }
        Op::StartWorkflow { workflow: id } => (
            workflow(id),
            workflow_started("definition", &DECLARED_PHASES),
        ),
        Op::Phase {
            workflow: id,
            phase,
            to,
            children,
        } => {
            let phase = phase_name(*phase);
            let children: Vec<String> = children.iter().map(|child| run_id(*child)).collect();
            let event: BuiltinEvent = match to {
                PhaseStatus::Completed => WorkflowPhaseCompleted {
                    phase: phase.clone(),
                    child_run_ids: children,
                    result_ref: Some(format!("results/{phase}")),
                }
                .into(),
                PhaseStatus::Failed => WorkflowPhaseFailed {
                    phase,
                    child_run_ids: children,
                    error: "phase failed".into(),
                }
                .into(),
                _ => {
                    let children: Vec<&str> = children.iter().map(String::as_str).collect();
                    phase_started(&phase, &children)
                }
            };
            (workflow(id), event)
        }
        Op::EndWorkflow { workflow: id, end } => {
            let event: BuiltinEvent = match end {
                End::Completed => WorkflowCompleted {
                    summary: Some("all phases".into()),
                    result_ref: Some("results/workflow".into()),
                }
                .into(),
                End::Failed => WorkflowFailed {
                    error: "gave up".into(),
                }
                .into(),
                End::Cancelled => WorkflowCancelled { reason: None }.into(),
            };
            (workflow(id), event)
        }
        Op::CreateRoom { room: id } => (room(id), room_created(&format!("Room {id}"))),
        Op::Membership {
            room: id,
            member,
            join,
        } => {
            let member = format!("member{member}");
            let event: BuiltinEvent = match join {
                true => RoomMemberJoined { member }.into(),
                false => RoomMemberLeft { member }.into(),
            };
            (room(id), event)
        }
        Op::Post { room: id, message } => {
            let body = format!("message {message} at {now_ms}");
            (
                room(id),
                message_posted(&message_id(*message), "ada", &body),
            )
        }
        Op::Edit { room: id, message } => {
            let event = RoomMessageEdited {
                message_id: message_id(*message),
                body: format!("edited at {now_ms}"),
            };
            (room(id), event.into())
        }
        Op::DeleteMessage { room: id, message } => {
            let event = RoomMessageDeleted {
                message_id: message_id(*message),
            };
            (room(id), event.into())
        }
        Op::Archive { room: id } => {
            let event = RoomArchived {
                reason: Some("done".into()),
            };
            (room(id), event.into())
        }
        Op::Misaddressed { room: id } => (room(id), job_queued("misaddressed")),
        Op::Queue { job: id } => (job(id), job_queued("train")),
        Op::Claim {
            job: id,
            worker,
            lease_ms,
        } => (job(id), job_claimed(&worker_id(*worker), now_ms + lease_ms)),
        Op::Heartbeat {
            job: id,
            worker,
            lease_ms,
        } => (
            job(id),
            job_heartbeat(&worker_id(*worker), now_ms + lease_ms),
        ),
        Op::Progress { job: id, percent } => (job(id), job_progress("train", *percent)),
        Op::EndJob { job: id, end } => {
            let event: BuiltinEvent = match end {
                JobEnd::Succeeded => JobSucceeded {
                    result: Some("model.bin".into()),
                }
                .into(),
                JobEnd::Failed { retryable } => JobFailed {
                    error: "out of memory".into(),
                    retryable: *retryable,
                }
                .into(),
                JobEnd::Cancelled => JobCancelled { reason: None }.into(),
            };
            (job(id), event)
        }
        Op::Advance { .. }
        | Op::Reclaim
        | Op::DeleteStream { .. }
        | Op::Truncate { .. }
        | Op::Reopen => unreachable!("not a command: {op:?}"),
    }
}
