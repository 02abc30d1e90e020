//! The child process of `tests/tests/projection_kill.rs`.
//!
//! `projection_kill_child <dir> <seed>` opens a [`BuiltinLog`] in `<dir>` with
//! `SyncPolicy::Always` and, until killed (or for 60 s at most), runs work the way a service
//! would: workflows (phases, child runs with telemetry, checkpoints and run events, a failed
//! phase retried), jobs (queued, claimed, progress, heartbeats, endings) and standalone runs
//! (paused with a checkpoint, resumed). On open it first takes over what the open report lists
//! as interrupted: interrupted jobs are failed as retryable and run again, runs resumed, and
//! workflows resumed from their resume plans (children that did not complete are cancelled,
//! missing phases launched again). Every command goes through `BuiltinLog::execute`; once one
//! is acknowledged, the child prints it as one JSON line, flushed:
//! `{"stream":..,"type":..,"position":..,"version":..,"data":..}`.

use logbook::builtin_projections::Interrupted;
use logbook::model::{
    CheckpointReason, JobClaimed, JobFailed, JobHeartbeat, JobProgress, JobQueued, JobSucceeded,
    RunCancelled, RunCheckpointed, RunCompleted, RunEvent, RunFailed, RunKind, RunStarted,
    RunStatus, RunStatusChanged, RunTelemetry, WorkflowCompleted, WorkflowPhaseCompleted,
    WorkflowPhaseFailed, WorkflowPhaseStarted, WorkflowStarted,
};
use logbook::{BuiltinEvent, BuiltinLog, Event, StreamId};
use logbook_tests::SplitMix;
use std::collections::VecDeque;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

/// Phases of every workflow this child starts.
const PHASES: [&str; 3] = ["plan", "build", "check"];
/// Leases far in the future: nothing expires while the test runs.
const LEASE_MS: u64 = 3_600_000;

fn fail(message: String) -> ! {
    eprintln!("projection_kill_child: {message}");
    std::process::exit(1)
}

type Step = (StreamId, BuiltinEvent);

fn stream(name: String) -> StreamId {
    StreamId::new(name).unwrap_or_else(|error| fail(format!("stream id: {error}")))
}

fn run_stream(id: &str) -> StreamId {
    stream(format!("run/{id}"))
}

fn started(kind: RunKind, workflow: Option<&str>) -> BuiltinEvent {
    RunStarted {
        kind,
        agent_id: "agent".into(),
        parent_run_id: None,
        parent_thread_id: None,
        prompt_ref: None,
        worker_thread_id: None,
        task_board_ref: None,
        task_card_ref: None,
        workflow_id: workflow.map(str::to_owned),
    }
    .into()
}

fn completed(run: &str) -> BuiltinEvent {
    RunCompleted {
        summary: None,
        result_ref: Some(format!("results/{run}")),
    }
    .into()
}

fn phase_started(phase: &str, child: &str) -> BuiltinEvent {
    WorkflowPhaseStarted {
        phase: phase.into(),
        child_run_ids: vec![child.into()],
    }
    .into()
}

fn phase_completed(workflow: &str, phase: &str, child: &str) -> BuiltinEvent {
    WorkflowPhaseCompleted {
        phase: phase.into(),
        child_run_ids: vec![child.into()],
        result_ref: Some(format!("results/{workflow}/{phase}")),
    }
    .into()
}

/// The steps of one child run of a workflow phase, ending well or not.
fn child_run_steps(workflow: &str, child: &str, succeeds: bool, steps: &mut Vec<Step>) {
    let run = run_stream(child);
    steps.push((run.clone(), started(RunKind::WorkflowChild, Some(workflow))));
    let telemetry = RunTelemetry {
        tokens_in: 100,
        tokens_out: 20,
        tool_calls: [("grep".to_owned(), 1)].into(),
        ..RunTelemetry::default()
    };
    steps.push((run.clone(), telemetry.into()));
    let checkpoint = RunCheckpointed {
        reason: CheckpointReason::Periodic,
        data: format!("{{\"child\":\"{child}\"}}"),
    };
    steps.push((run.clone(), checkpoint.into()));
    let event = RunEvent {
        sequence: 1,
        event_type: "tool_call".into(),
        payload: "{}".into(),
    };
    steps.push((run.clone(), event.into()));
    let end = if succeeds {
        completed(child)
    } else {
        RunFailed {
            error: "tool crashed".into(),
        }
        .into()
    };
    steps.push((run, end));
}

fn workflow_steps(id: &str, random: &mut SplitMix) -> Vec<Step> {
    let workflow = stream(format!("workflow/{id}"));
    let mut steps = Vec::new();
    let start = WorkflowStarted {
        definition_id: "review".into(),
        parent_thread_id: None,
        input: "{}".into(),
        phases: PHASES.iter().map(|phase| (*phase).to_owned()).collect(),
    };
    steps.push((workflow.clone(), start.into()));
    for phase in PHASES {
        let first_fails = random.range(0, 4) == 0;
        let child = format!("{id}-{phase}-1");
        steps.push((workflow.clone(), phase_started(phase, &child)));
        child_run_steps(id, &child, !first_fails, &mut steps);
        if first_fails {
            let failed = WorkflowPhaseFailed {
                phase: phase.into(),
                child_run_ids: vec![child],
                error: "child failed".into(),
            };
            steps.push((workflow.clone(), failed.into()));
            let retry = format!("{id}-{phase}-2");
            steps.push((workflow.clone(), phase_started(phase, &retry)));
            child_run_steps(id, &retry, true, &mut steps);
            steps.push((workflow.clone(), phase_completed(id, phase, &retry)));
        } else {
            steps.push((workflow.clone(), phase_completed(id, phase, &child)));
        }
    }
    steps.push((workflow, WorkflowCompleted::default().into()));
    steps
}

fn progress(percent: u8) -> BuiltinEvent {
    JobProgress {
        stage: Some(format!("stage-{}", percent / 25)),
        percent: Some(percent),
        done: Some(u64::from(percent)),
        total: Some(100),
        message: Some(format!("{percent}% done")),
    }
    .into()
}

/// A job from its claim on: progress, a heartbeat, an ending.
fn job_work(job: &StreamId, worker: &str, now_ms: u64, random: &mut SplitMix) -> Vec<Step> {
    let mut steps = Vec::new();
    let claim = JobClaimed {
        worker: worker.into(),
        lease_expires_at_ms: now_ms + LEASE_MS,
    };
    steps.push((job.clone(), claim.into()));
    steps.push((job.clone(), progress(25)));
    steps.push((job.clone(), progress(50)));
    let heartbeat = JobHeartbeat {
        worker: worker.into(),
        lease_expires_at_ms: now_ms + 2 * LEASE_MS,
    };
    steps.push((job.clone(), heartbeat.into()));
    steps.push((job.clone(), progress(75)));
    let end: BuiltinEvent = if random.range(0, 5) == 0 {
        JobFailed {
            error: "bad input".into(),
            retryable: false,
        }
        .into()
    } else {
        JobSucceeded {
            result: Some("done".into()),
        }
        .into()
    };
    steps.push((job.clone(), end));
    steps
}

fn job_steps(id: &str, worker: &str, now_ms: u64, random: &mut SplitMix) -> Vec<Step> {
    let job = stream(format!("job/{id}"));
    let queued = JobQueued {
        kind: "train".into(),
        input: "{}".into(),
    };
    let mut steps = vec![(job.clone(), queued.into())];
    steps.extend(job_work(&job, worker, now_ms, random));
    steps
}

fn status(status: RunStatus) -> BuiltinEvent {
    RunStatusChanged {
        status,
        reason: None,
    }
    .into()
}

fn run_steps(id: &str) -> Vec<Step> {
    let run = run_stream(id);
    let mut steps = vec![(run.clone(), started(RunKind::BackgroundAgent, None))];
    for sequence in 1..=2 {
        let event = RunEvent {
            sequence,
            event_type: "message".into(),
            payload: format!("{{\"n\":{sequence}}}"),
        };
        steps.push((run.clone(), event.into()));
    }
    steps.push((run.clone(), status(RunStatus::Paused)));
    let checkpoint = RunCheckpointed {
        reason: CheckpointReason::Paused,
        data: format!("{{\"run\":\"{id}\"}}"),
    };
    steps.push((run.clone(), checkpoint.into()));
    steps.push((run.clone(), status(RunStatus::Running)));
    steps.push((run.clone(), RunTelemetry::default().into()));
    steps.push((run.clone(), completed(id)));
    steps
}

/// What the open report listed, taken over: one list of steps per interrupted entity.
fn takeover(
    log: &BuiltinLog,
    interrupted: &Interrupted,
    prefix: &str,
    now_ms: u64,
    random: &mut SplitMix,
) -> Vec<Vec<Step>> {
    let mut actors = Vec::new();
    for job in &interrupted.jobs {
        let stream = stream(format!("job/{}", job.job_id));
        let failed = JobFailed {
            error: "interrupted by a restart".into(),
            retryable: true,
        };
        let queued = JobQueued {
            kind: job.kind.clone(),
            input: "{}".into(),
        };
        let mut steps = vec![
            (stream.clone(), failed.into()),
            (stream.clone(), queued.into()),
        ];
        let worker = format!("worker-{prefix}");
        steps.extend(job_work(&stream, &worker, now_ms, random));
        actors.push(steps);
    }
    for run in interrupted
        .runs
        .iter()
        .filter(|run| run.workflow_id.is_none())
    {
        let stream = run_stream(&run.run_id);
        let mut steps = Vec::new();
        if run.status != RunStatus::Running {
            steps.push((stream.clone(), status(RunStatus::Running)));
        }
        steps.push((stream, completed(&run.run_id)));
        actors.push(steps);
    }
    for workflow in &interrupted.workflows {
        let id = &workflow.workflow_id;
        let mut steps = Vec::new();
        for phase in &workflow.plan.to_relaunch {
            for child in &phase.children_to_relaunch {
                let live = log
                    .runs()
                    .read()
                    .run(child)
                    .is_some_and(|run| !run.status.is_terminal());
                if live {
                    let cancelled = RunCancelled {
                        reason: Some("relaunched".into()),
                    };
                    steps.push((run_stream(child), cancelled.into()));
                }
            }
            let retry = format!("{id}-{}-r{prefix}", phase.phase);
            let workflow_stream = stream(format!("workflow/{id}"));
            steps.push((workflow_stream.clone(), phase_started(&phase.phase, &retry)));
            child_run_steps(id, &retry, true, &mut steps);
            let done = phase_completed(id, &phase.phase, &retry);
            steps.push((workflow_stream, done));
        }
        let workflow_stream = stream(format!("workflow/{id}"));
        steps.push((workflow_stream, WorkflowCompleted::default().into()));
        actors.push(steps);
    }
    actors
}

async fn run(dir: &Path, seed: u64) {
    let mut options = logbook_tests::test_options();
    options.wal.sync_policy = logbook::SyncPolicy::Always;
    let (log, report) = BuiltinLog::open(dir, options)
        .await
        .unwrap_or_else(|error| fail(format!("open: {error}")));
    let mut random = SplitMix(seed);
    let prefix = format!("{:08x}", seed as u32);
    let now_ms = log.log().now_ms();
    let mut actors: Vec<VecDeque<Step>> =
        takeover(&log, &report.interrupted, &prefix, now_ms, &mut random)
            .into_iter()
            .map(VecDeque::from)
            .collect();
    let mut next_id = 0u64;
    let mut out = std::io::stdout().lock();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        // Keep a few pieces of work in flight, interleaved at random.
        while actors.len() < 5 {
            next_id += 1;
            let steps = match random.range(0, 3) {
                0 => workflow_steps(&format!("wf-{prefix}-{next_id}"), &mut random),
                1 => {
                    let worker = format!("worker-{prefix}");
                    job_steps(
                        &format!("job-{prefix}-{next_id}"),
                        &worker,
                        now_ms,
                        &mut random,
                    )
                }
                _ => run_steps(&format!("run-{prefix}-{next_id}")),
            };
            actors.push(VecDeque::from(steps));
        }
        let index = random.range(0, actors.len() as u64) as usize;
        let Some((stream, event)) = actors[index].pop_front() else {
            actors.swap_remove(index);
            continue;
        };
        let event_type = event.event_type();
        let data = event.to_json();
        let written = log
            .execute(&stream, event)
            .await
            .unwrap_or_else(|error| fail(format!("{event_type} on {stream}: {error}")));
        let line = serde_json::json!({
            "stream": stream.as_str(),
            "type": event_type,
            "position": written.last_position,
            "version": written.version,
            "data": data,
        });
        writeln!(out, "{line}")
            .and_then(|()| out.flush())
            .unwrap_or_else(|error| fail(format!("stdout: {error}")));
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, dir, seed] = &args[..] else {
        fail("usage: projection_kill_child <dir> <seed>".into());
    };
    let seed = seed
        .parse()
        .unwrap_or_else(|_| fail(format!("bad seed {seed}")));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|error| fail(format!("runtime: {error}")));
    runtime.block_on(run(Path::new(dir), seed));
}
