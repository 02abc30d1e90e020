//! `GET /health`: the service's typed health, so nobody scrapes logs for it.
//!
//! Owns: the health JSON and its stable keys (see `docs/dashboard.md`). Must never: change or
//! drop a key (monitors read them), or do I/O beyond reading the engine's in-memory figures.
//! `consumers` are the engine's durable named consumers (`Stats::consumers`).

use crate::App;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

/// The health JSON; 200 when writes are accepted, 503 when the log is poisoned.
pub async fn health(State(app): State<App>) -> (StatusCode, Json<Value>) {
    let body = health_json(&app);
    let status = if body["poisoned"].is_null() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}

/// The newest snapshot: the one the engine wrote since open (`written_at_ms` set), else the
/// one the log was opened from (`written_at_ms` null), else null.
fn last_snapshot(app: &App, stats: &logbook::Stats) -> Value {
    let opened = app.inner.opened_from_snapshot.as_ref();
    match (&stats.snapshot_written, opened) {
        (Some(written), opened) if opened.is_none_or(|o| o.position <= written.position) => {
            json!({
                "position": written.position, "bytes": written.bytes,
                "path": written.path.display().to_string(), "written_at_ms": written.written_at_ms,
            })
        }
        (_, Some(opened)) => json!({
            "position": opened.position, "bytes": opened.bytes,
            "path": opened.path.display().to_string(), "written_at_ms": null,
        }),
        (_, None) => Value::Null,
    }
}

/// The health figures now.
pub fn health_json(app: &App) -> Value {
    let log = app.log();
    let stats = log.log().stats();
    let applied = log.jobs().applied_position();
    let subscribers: Vec<Value> = stats
        .subscribers
        .iter()
        .map(|s| json!({"id": s.id, "next_position": s.next_position, "lag": s.lag}))
        .collect();
    let consumers: Vec<Value> = stats
        .consumers
        .iter()
        .map(|c| {
            json!({"name": c.name, "position": c.position, "acked": c.acked, "lag": c.lag,
                   "checkpointed_at_ms": c.checkpointed_at_ms})
        })
        .collect();
    let interrupted = log.interrupted();
    let running = app.running_jobs();
    let jobs: Vec<Value> = interrupted
        .jobs
        .iter()
        .filter(|job| !running.contains(&job.job_id))
        .map(|job| {
            let progress = job.progress.as_ref();
            json!({
                "job_id": job.job_id, "kind": job.kind, "worker": job.claim.worker,
                "attempts": job.attempts,
                "percent": progress.and_then(|p| p.percent),
                "done": progress.and_then(|p| p.done),
                "total": progress.and_then(|p| p.total),
            })
        })
        .collect();
    let runs: Vec<Value> = interrupted
        .runs
        .iter()
        .filter(|run| !running.contains(&run.run_id))
        .map(|run| json!({"run_id": run.run_id, "kind": run.kind.as_str(), "status": run.status.as_str()}))
        .collect();
    let workflows: Vec<Value> = interrupted
        .workflows
        .iter()
        .map(|w| json!({"workflow_id": w.workflow_id, "definition_id": w.definition_id}))
        .collect();
    json!({
        "status": if stats.poisoned.is_some() { "poisoned" } else { "ok" },
        "head_position": stats.head_position,
        "durable_position": stats.durable_position,
        "applied_position": applied,
        "streams": stats.streams,
        "subscribers": subscribers,
        "consumers": consumers,
        "last_snapshot": last_snapshot(app, &stats),
        "poisoned": stats.poisoned.as_ref().map(|p| json!({"position": p.position, "reason": p.reason})),
        "observer_panics": stats.observer_panics,
        "running_jobs": running,
        "interrupted": {"jobs": jobs, "runs": runs, "workflows": workflows},
    })
}
