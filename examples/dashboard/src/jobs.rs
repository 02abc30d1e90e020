//! Jobs: start one, work on it in a tokio task that appends durable progress, resume one that
//! a dead process left claimed, and take progress reports from outside.
//!
//! Owns: the job task (progress, heartbeats, the job's run and its telemetry, the terminal
//! events) and the "interrupted" rule: a job claimed by a worker id that is not this process's
//! is interrupted, never failed. Must never: mark interrupted work failed, append after
//! shutdown started, or claim a job this process is already working on.

use crate::error::{Error, Result};
use crate::{App, JOB_STEPS_MAX, JOBS_RUNNING_MAX};
use logbook::builtin_projections::JobStatus;
use logbook::{AppendDurability, BuiltinEvent, ExpectedVersion, StreamId};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::time::Duration;

/// How long a claim's lease lasts; the task heartbeats every third of it.
pub const LEASE_MS: u64 = 60_000;
/// The shortest and longest pause between two steps, in milliseconds.
pub const STEP_MS_MIN: u64 = 10;
/// See [`STEP_MS_MIN`].
pub const STEP_MS_MAX: u64 = 60_000;
/// A telemetry report every this many steps.
const TELEMETRY_EVERY_STEPS: u64 = 5;
/// The job kind the dashboard's own task works on.
pub const JOB_KIND: &str = "dashboard.count";

/// `POST /api/jobs`: every field may be left out.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartJob {
    /// The job id (default: a generated `job-<ms>-<n>`).
    pub job_id: Option<String>,
    /// Steps to work through (default 100, at most [`JOB_STEPS_MAX`]).
    pub steps: Option<u64>,
    /// Pause per step in ms (default 200, from [`STEP_MS_MIN`] to [`STEP_MS_MAX`]).
    pub step_ms: Option<u64>,
}

/// What the job works on: stored as the `input` of `job.queued`, as JSON.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct JobSpec {
    /// Steps in all.
    pub steps: u64,
    /// Pause per step, in ms.
    pub step_ms: u64,
}

impl JobSpec {
    fn from_request(request: &StartJob) -> Result<JobSpec> {
        let steps = request.steps.unwrap_or(100);
        if !(1..=JOB_STEPS_MAX).contains(&steps) {
            let reason = format!("is {steps}, from 1 to {JOB_STEPS_MAX} allowed");
            return Err(Error::bad_request("body.steps", reason));
        }
        let step_ms = request.step_ms.unwrap_or(200);
        if !(STEP_MS_MIN..=STEP_MS_MAX).contains(&step_ms) {
            let reason = format!("is {step_ms}, from {STEP_MS_MIN} to {STEP_MS_MAX} allowed");
            return Err(Error::bad_request("body.step_ms", reason));
        }
        Ok(JobSpec { steps, step_ms })
    }

    fn from_input(job_id: &str, input: &str) -> Result<JobSpec> {
        serde_json::from_str(input).map_err(|error| Error::Conflict {
            what: "job",
            id: job_id.to_owned(),
            reason: format!("its input is not a dashboard job ({error}): not resumable here"),
        })
    }
}

/// `POST /api/jobs/{id}/progress`: a progress report from an outside worker.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProgressReport {
    /// The stage.
    pub stage: Option<String>,
    /// Percent done, 0 to 100.
    pub percent: Option<u8>,
    /// Units done.
    pub done: Option<u64>,
    /// Units in all.
    pub total: Option<u64>,
    /// A human message.
    pub message: Option<String>,
}

fn event(event_type: &str, data: Value) -> Result<BuiltinEvent> {
    Ok(BuiltinEvent::from_json(event_type, data).map_err(logbook::Error::from)?)
}

fn job_stream(job_id: &str) -> Result<StreamId> {
    StreamId::job(job_id).map_err(|error| Error::bad_request("job_id", error.to_string()))
}

/// Queues, claims and starts a job; returns its id.
pub async fn start(app: &App, request: StartJob) -> Result<String> {
    let spec = JobSpec::from_request(&request)?;
    let job_id = match request.job_id {
        Some(id) => id,
        None => app.new_id("job"),
    };
    let stream = job_stream(&job_id)?;
    reserve_slot(app)?;
    let log = app.log();
    let input =
        serde_json::to_string(&spec).map_err(|e| Error::bad_request("body", e.to_string()))?;
    let queued = json!({"kind": JOB_KIND, "input": input});
    log.execute(&stream, event("job.queued", queued)?).await?;
    let lease = log.log().now_ms().saturating_add(LEASE_MS);
    let claimed = json!({"worker": app.inner.worker, "lease_expires_at_ms": lease});
    log.execute(&stream, event("job.claimed", claimed)?).await?;
    let run = StreamId::run(&job_id).map_err(logbook::Error::from)?;
    let started = json!({"kind": "background_agent", "agent_id": "dashboard"});
    log.execute(&run, event("run.started", started)?).await?;
    spawn(app, job_id.clone(), spec, 0)?;
    Ok(job_id)
}

/// Continues an interrupted job from its last durable progress; returns the steps done.
pub async fn resume(app: &App, job_id: &str) -> Result<u64> {
    let stream = job_stream(job_id)?;
    if app.is_running(job_id) {
        return Err(conflict(job_id, "this process is working on it"));
    }
    let log = app.log();
    if let Some((_, position)) = log.log().stream_head(&stream) {
        log.log().wait_applied(position).await?;
    }
    let (spec, done, version) = {
        let jobs = log.jobs().read();
        let Some(job) = jobs.job(job_id) else {
            return Err(Error::NotFound {
                what: "job",
                id: job_id.to_owned(),
            });
        };
        if job.status != JobStatus::Claimed {
            return Err(conflict(job_id, &format!("it is {}", job.status.as_str())));
        }
        let done = job.progress.as_ref().and_then(|p| p.done).unwrap_or(0);
        (
            JobSpec::from_input(job_id, &job.input)?,
            done,
            job.stream_version,
        )
    };
    reserve_slot(app)?;
    // The old claim may still have a live lease, which `execute` would refuse. Its worker is a
    // process that is gone: this one holds the log directory's lock, so no other process can
    // write, and this process's worker id is not that claim's. The expected version makes a
    // concurrent resume of the same job fail instead of claiming twice.
    let lease = log.log().now_ms().saturating_add(LEASE_MS);
    let claimed = event(
        "job.claimed",
        json!({"worker": app.inner.worker, "lease_expires_at_ms": lease}),
    )?;
    claimed.validate().map_err(logbook::Error::from)?;
    log.log()
        .append(
            &stream,
            ExpectedVersion::Exact(version),
            vec![claimed.into()],
        )
        .await?;
    spawn(app, job_id.to_owned(), spec, done.min(spec.steps))?;
    Ok(done)
}

/// Appends an outside worker's progress report to a job.
pub async fn report_progress(app: &App, job_id: &str, report: ProgressReport) -> Result<u64> {
    let stream = job_stream(job_id)?;
    let data = json!({
        "stage": report.stage, "percent": report.percent, "done": report.done,
        "total": report.total, "message": report.message,
    });
    let appended = app
        .log()
        .execute(&stream, event("job.progress", data)?)
        .await?;
    Ok(appended.last_position)
}

fn conflict(job_id: &str, reason: &str) -> Error {
    Error::Conflict {
        what: "job",
        id: job_id.to_owned(),
        reason: reason.to_owned(),
    }
}

/// Refuses early, before anything is written, when the limit is already reached.
fn reserve_slot(app: &App) -> Result<()> {
    if app.running_jobs().len() >= JOBS_RUNNING_MAX {
        return Err(Error::LimitExceeded {
            what: "jobs running at once",
            limit: JOBS_RUNNING_MAX,
        });
    }
    Ok(())
}

/// Starts the job task. The limit is checked again under the lock, so concurrent starts cannot
/// exceed it; a job refused here stays claimed (interrupted) and can be resumed later.
fn spawn(app: &App, job_id: String, spec: JobSpec, done: u64) -> Result<()> {
    let mut running = app
        .inner
        .running
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    running.retain(|_, handle| !handle.is_finished());
    if running.len() >= JOBS_RUNNING_MAX {
        return Err(Error::LimitExceeded {
            what: "jobs running at once",
            limit: JOBS_RUNNING_MAX,
        });
    }
    let task_app = app.clone();
    let task_id = job_id.clone();
    let handle = tokio::spawn(async move {
        if let Err(error) = work(&task_app, &task_id, spec, done).await {
            // The job stays claimed: after a restart it is interrupted and can be resumed.
            tracing::warn!(job = %task_id, %error, "job task stopped");
            eprintln!("dashboard: job {task_id} stopped: {error}");
        }
    });
    running.insert(job_id, handle);
    Ok(())
}

/// The job task: one durable `job.progress` per step, a heartbeat every third of the lease, a
/// telemetry report every few steps, and the terminal events at the end. Stops (leaving the
/// job claimed) when shutdown starts.
async fn work(app: &App, job_id: &str, spec: JobSpec, mut done: u64) -> Result<()> {
    let log = app.log();
    let job = job_stream(job_id)?;
    let run = StreamId::run(job_id).map_err(logbook::Error::from)?;
    let mut shutdown = app.inner.shutdown.clone();
    let mut last_heartbeat_ms = log.log().now_ms();
    while done < spec.steps {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(spec.step_ms)) => {}
            _ = shutdown.wait_for(|stop| *stop) => return Ok(()),
        }
        if *shutdown.borrow() {
            return Ok(());
        }
        done += 1;
        let percent = done.saturating_mul(100) / spec.steps;
        let progress = json!({
            "stage": "count", "percent": percent, "done": done, "total": spec.steps,
            "message": format!("step {done} of {}", spec.steps),
        });
        // Durability: waited for, so the progress the page shows survives a crash.
        log.execute(&job, event("job.progress", progress)?).await?;
        let now_ms = log.log().now_ms();
        if now_ms.saturating_sub(last_heartbeat_ms) >= LEASE_MS / 3 {
            let beat =
                json!({"worker": app.inner.worker, "lease_expires_at_ms": now_ms + LEASE_MS});
            log.execute(&job, event("job.heartbeat", beat)?).await?;
            last_heartbeat_ms = now_ms;
        }
        if done.is_multiple_of(TELEMETRY_EVERY_STEPS) && run_is_open(app, job_id) {
            let steps = TELEMETRY_EVERY_STEPS;
            let telemetry = json!({
                "tokens_in": steps * 120, "tokens_out": steps * 40,
                "cost_estimate_micros": steps * 250, "elapsed_ms": steps * spec.step_ms,
                "tool_calls": {"count": steps}, "model": "counter-1", "provider": "dashboard",
            });
            log.execute_with(
                &run,
                event("run.telemetry", telemetry)?,
                AppendDurability::Relaxed,
            )
            .await?;
        }
    }
    let result = json!({"result": format!("counted to {}", spec.steps)});
    log.execute(&job, event("job.succeeded", result)?).await?;
    if run_is_open(app, job_id) {
        let summary = json!({"summary": format!("counted to {}", spec.steps)});
        log.execute(&run, event("run.completed", summary)?).await?;
    }
    Ok(())
}

fn run_is_open(app: &App, run_id: &str) -> bool {
    app.log()
        .runs()
        .read()
        .run(run_id)
        .is_some_and(|run| !run.status.is_terminal())
}
