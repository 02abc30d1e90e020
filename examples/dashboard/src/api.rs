//! The routes: the page, the JSON endpoints, `/health` and `/api/events`.
//!
//! Owns: request parsing and the JSON views of jobs, rooms and runs (`/api/state`), and room
//! messages. Must never: keep state of its own (every view is read from the projections or the
//! log), or accept a body larger than [`crate::BODY_BYTES_MAX`].

use crate::error::{Error, Result};
use crate::jobs::{self, ProgressReport, StartJob};
use crate::{App, BODY_BYTES_MAX, HISTORY_PAGE_MAX, LIST_MAX};
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse};
use axum::routing::{get, post};
use axum::{Json, Router};
use logbook::builtin_projections::{Job, JobStatus};
use logbook::{BuiltinEvent, HistoryRequest, Order, PageRequest, StreamId};
use serde::Deserialize;
use serde_json::{Value, json};

/// The page: plain HTML and a little JS, no build step.
pub const INDEX_HTML: &str = include_str!("../static/index.html");

/// Every route.
pub fn router(app: App) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/health", get(crate::health::health))
        .route("/api/state", get(state))
        .route("/api/events", get(crate::events::events))
        .route("/api/jobs", post(start_job))
        .route("/api/jobs/{job_id}/resume", post(resume_job))
        .route("/api/jobs/{job_id}/progress", post(report_progress))
        .route(
            "/api/rooms/{room_id}/messages",
            get(messages).post(post_message),
        )
        .layer(DefaultBodyLimit::max(BODY_BYTES_MAX))
        .with_state(app)
}

async fn index() -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "no-store")], Html(INDEX_HTML))
}

/// A JSON body, or a [`Error::BadRequest`] naming what is wrong with it.
fn body<T>(body: std::result::Result<Json<T>, JsonRejection>) -> Result<T> {
    body.map(|Json(value)| value)
        .map_err(|rejection| Error::bad_request("body", rejection.body_text()))
}

async fn start_job(
    State(app): State<App>,
    request: std::result::Result<Json<StartJob>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>)> {
    let job_id = jobs::start(&app, body(request)?).await?;
    Ok((StatusCode::CREATED, Json(json!({"job_id": job_id}))))
}

async fn resume_job(State(app): State<App>, Path(job_id): Path<String>) -> Result<Json<Value>> {
    let done = jobs::resume(&app, &job_id).await?;
    Ok(Json(json!({"job_id": job_id, "resumed_from": done})))
}

async fn report_progress(
    State(app): State<App>,
    Path(job_id): Path<String>,
    report: std::result::Result<Json<ProgressReport>, JsonRejection>,
) -> Result<Json<Value>> {
    let position = jobs::report_progress(&app, &job_id, body(report)?).await?;
    Ok(Json(json!({"job_id": job_id, "position": position})))
}

/// `POST /api/rooms/{room}/messages`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PostMessage {
    author: String,
    body: String,
}

async fn post_message(
    State(app): State<App>,
    Path(room_id): Path<String>,
    request: std::result::Result<Json<PostMessage>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>)> {
    let request = body(request)?;
    let stream =
        StreamId::room(&room_id).map_err(|e| Error::bad_request("path room_id", e.to_string()))?;
    let log = app.log();
    if log.rooms().read().room(&room_id).is_none() {
        let created = BuiltinEvent::from_json("room.created", json!({"name": room_id}))
            .map_err(logbook::Error::from)?;
        match log.execute(&stream, created).await {
            // A concurrent post created it first: fine.
            Ok(_) | Err(logbook::Error::WrongExpectedVersion { .. }) => {}
            Err(logbook::Error::Event(logbook::EventError::Rejected { .. })) => {}
            Err(other) => return Err(other.into()),
        }
    }
    let message_id = app.new_id("m");
    let data = json!({"message_id": message_id, "author": request.author, "body": request.body});
    let posted =
        BuiltinEvent::from_json("room.message_posted", data).map_err(logbook::Error::from)?;
    let appended = log.execute(&stream, posted).await?;
    let body = json!({"message_id": message_id, "position": appended.last_position});
    Ok((StatusCode::CREATED, Json(body)))
}

/// `?before=V&limit=N`: the page of messages older than stream version `V`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MessagesQuery {
    before: Option<u64>,
    limit: Option<usize>,
}

async fn messages(
    State(app): State<App>,
    Path(room_id): Path<String>,
    Query(query): Query<MessagesQuery>,
) -> Result<Json<Value>> {
    if app.log().rooms().read().room(&room_id).is_none() {
        return Err(Error::NotFound {
            what: "room",
            id: room_id,
        });
    }
    Ok(Json(
        history(&app, &room_id, query.before, query.limit).await?,
    ))
}

/// A page of a room's messages, newest first, and the cursor of the older page.
async fn history(
    app: &App,
    room_id: &str,
    before: Option<u64>,
    limit: Option<usize>,
) -> Result<Value> {
    let limit = limit.unwrap_or(20).clamp(1, HISTORY_PAGE_MAX);
    let request = HistoryRequest {
        order: Order::NewestFirst,
        cursor: before,
        limit,
    };
    let page = app.log().room_history(room_id, request).await?;
    let messages: Vec<Value> = page
        .messages
        .iter()
        .map(|m| {
            json!({
                "version": m.version, "position": m.position, "timestamp_ms": m.timestamp_ms,
                "message_id": m.message_id, "author": m.author, "body": m.body,
                "edited": m.edited, "deleted": m.deleted,
            })
        })
        .collect();
    Ok(json!({"messages": messages, "next": page.next}))
}

/// What the page shows for a job: `running` (this process works on it), `interrupted`
/// (claimed by a process that is gone), or the job's own status.
pub fn job_state(app: &App, job: &Job) -> &'static str {
    match job.status {
        JobStatus::Claimed if app.is_running(&job.job_id) => "running",
        JobStatus::Claimed => "interrupted",
        other => other.as_str(),
    }
}

fn newest_first() -> PageRequest {
    PageRequest {
        after: None,
        limit: LIST_MAX,
        order: Order::NewestFirst,
    }
}

/// `GET /api/state`: jobs, rooms and runs (newest first, at most [`LIST_MAX`] each), and the
/// position they are as of.
async fn state(State(app): State<App>) -> Json<Value> {
    let log = app.log();
    // Read the position first: the views are at least this new.
    let position = log.jobs().applied_position();
    let jobs: Vec<Value> = {
        let read = log.jobs().read();
        read.list_jobs(None, &newest_first())
            .items
            .into_iter()
            .map(|job| {
                let progress = job.progress.as_ref();
                json!({
                    "job_id": job.job_id, "kind": job.kind, "status": job.status.as_str(),
                    "state": job_state(&app, job), "attempts": job.attempts,
                    "percent": progress.and_then(|p| p.percent),
                    "done": progress.and_then(|p| p.done),
                    "total": progress.and_then(|p| p.total),
                    "stage": progress.and_then(|p| p.stage.clone()),
                    "message": progress.and_then(|p| p.message.clone()),
                    "result": job.result, "error": job.error,
                    "updated_at_ms": job.updated_at_ms,
                })
            })
            .collect()
    };
    let rooms: Vec<Value> = {
        let read = log.rooms().read();
        read.list_rooms(false, &newest_first())
            .items
            .into_iter()
            .map(|room| {
                json!({
                    "room_id": room.room_id, "name": room.name,
                    "message_count": room.message_count(), "updated_at_ms": room.updated_at_ms,
                })
            })
            .collect()
    };
    let runs = runs_json(&app);
    Json(json!({"position": position, "jobs": jobs, "rooms": rooms, "runs": runs}))
}

fn runs_json(app: &App) -> Vec<Value> {
    let read = app.log().runs().read();
    let filter = logbook::builtin_projections::RunFilter::default();
    read.list_runs(&filter, &newest_first())
        .items
        .into_iter()
        .map(|run| {
            let interrupted = !run.status.is_terminal() && !app.is_running(&run.run_id);
            let t = &run.telemetry;
            json!({
                "run_id": run.run_id, "kind": run.kind.as_str(), "status": run.status.as_str(),
                "interrupted": interrupted, "summary": run.summary, "error": run.error,
                "telemetry": {
                    "reports": t.reports, "tokens_in": t.tokens_in, "tokens_out": t.tokens_out,
                    "cost_estimate_micros": t.cost_estimate_micros, "elapsed_ms": t.elapsed_ms,
                    "model": t.model, "provider": t.provider,
                },
                "updated_at_ms": run.updated_at_ms,
            })
        })
        .collect()
}
