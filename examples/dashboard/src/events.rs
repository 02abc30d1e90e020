//! `GET /api/events`: durable events as server-sent events that resume after a reconnect.
//!
//! Owns: the SSE framing (`id:` = the event's log position, `data:` = one JSON object), where a
//! stream starts (`Last-Event-ID` + 1, else `?from=`, else the next event), and ending the
//! stream at shutdown. Must never: send an event that is not durable (the engine's
//! subscription delivers durable events only), skip or repeat a position on resume, or hold
//! more than [`crate::EVENT_STREAMS_MAX`] streams open.

use crate::App;
use crate::error::{Error, Result};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream, StreamExt};
use logbook::{BuiltinEvent, RecordedEvent};
use serde::Deserialize;
use std::convert::Infallible;
use std::time::Duration;

/// How long a browser waits before it reconnects, sent as the stream's `retry:` field, unless
/// the service is started with another (`--reconnect-ms`).
pub const RECONNECT_MS_DEFAULT: u64 = 1000;
/// The shortest `retry:` accepted.
pub const RECONNECT_MS_MIN: u64 = 100;
/// The longest `retry:` accepted.
pub const RECONNECT_MS_MAX: u64 = 60_000;

/// `?from=P`: the first position to send when no `Last-Event-ID` is given.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// The first position to send.
    pub from: Option<u64>,
}

/// The JSON `data:` of one event.
pub fn event_json(event: &RecordedEvent<BuiltinEvent>) -> serde_json::Value {
    serde_json::json!({
        "position": event.position,
        "stream": event.stream.to_string(),
        "version": event.version,
        "type": event.event_type,
        "timestamp_ms": event.timestamp_ms,
        "data": event.event.to_json(),
    })
}

/// Where the stream starts: after `Last-Event-ID` (a reconnect), else at `?from=`, else after
/// the last applied event (live only).
fn start_position(app: &App, headers: &HeaderMap, query: &EventsQuery) -> Result<u64> {
    if let Some(value) = headers.get("last-event-id") {
        let field = "header Last-Event-ID";
        let text = value
            .to_str()
            .map_err(|_| Error::bad_request(field, "is not visible ASCII"))?;
        let last: u64 = text
            .trim()
            .parse()
            .map_err(|_| Error::bad_request(field, format!("{text:?} is not a log position")))?;
        return Ok(last.saturating_add(1));
    }
    if let Some(from) = query.from {
        return Ok(from.max(1));
    }
    Ok(app.log().jobs().applied_position().saturating_add(1))
}

/// The handler.
pub async fn events(
    State(app): State<App>,
    headers: HeaderMap,
    Query(query): Query<EventsQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let from = start_position(&app, &headers, &query)?;
    let permit = app
        .inner
        .event_streams
        .clone()
        .try_acquire_owned()
        .map_err(|_| Error::LimitExceeded {
            what: "event streams open at once",
            limit: crate::EVENT_STREAMS_MAX,
        })?;
    let subscription = app.log().log().subscribe(from);
    let mut shutdown = app.inner.shutdown.clone();
    let stopped = async move {
        // An error means the sender is gone: the service is stopping too.
        let _ = shutdown.wait_for(|stop| *stop).await;
    };
    let retry = Event::default().retry(Duration::from_millis(app.inner.reconnect_ms));
    let events = subscription.into_stream().map(move |item| {
        // The permit lives as long as the stream.
        let _held = &permit;
        Ok(match item {
            Ok(event) => Event::default()
                .id(event.position.to_string())
                .data(event_json(&event).to_string()),
            // No `id:`: the browser keeps the last good id and resumes from it.
            Err(error) => Event::default()
                .event("log_error")
                .data(serde_json::json!({"error": error.to_string()}).to_string()),
        })
    });
    let body = stream::once(async move { Ok(retry) })
        .chain(events)
        .take_until(Box::pin(stopped));
    Ok(Sse::new(body).keep_alive(KeepAlive::default()))
}
