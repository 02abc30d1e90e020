//! The dashboard's one error type and how each case answers over HTTP.
//!
//! Owns: [`Error`], its HTTP status and its JSON body (`{"error": "..."}`).
//! Must never: hide the engine's cause (the message keeps the engine's text, which names the
//! stream, version or field), or answer a client's mistake with a 500.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use std::path::PathBuf;

/// Every failure of the dashboard.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The engine refused or failed (a rejected command, a version race, I/O, a poisoned log).
    #[error("log: {0}")]
    Log(#[from] logbook::Error),
    /// A request value that breaks a rule: the field (a JSON path or header) and why.
    #[error("bad request: {field}: {reason}")]
    BadRequest {
        /// `body.steps`, `header Last-Event-ID`, `path job_id`...
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No such job or room.
    #[error("not found: {what} {id:?}")]
    NotFound {
        /// `job`, `room`.
        what: &'static str,
        /// The id asked for.
        id: String,
    },
    /// The request does not fit the entity's state (resuming a job that runs, for example).
    #[error("conflict: {what} {id:?}: {reason}")]
    Conflict {
        /// `job`.
        what: &'static str,
        /// The id.
        id: String,
        /// Why.
        reason: String,
    },
    /// A documented limit was reached (running jobs, open event streams).
    #[error("limit reached: {what} (at most {limit})")]
    LimitExceeded {
        /// What is limited.
        what: &'static str,
        /// The limit.
        limit: usize,
    },
    /// Binding the listener or serving failed.
    #[error("serve on {address}: {source}")]
    Serve {
        /// The listen address.
        address: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The log directory could not be opened.
    #[error("open log {dir}: {source}")]
    Open {
        /// The directory.
        dir: PathBuf,
        /// The engine's cause.
        source: logbook::Error,
    },
}

/// The dashboard's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A [`Error::BadRequest`].
    pub fn bad_request(field: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::BadRequest {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Error::NotFound { .. } => StatusCode::NOT_FOUND,
            Error::Conflict { .. } => StatusCode::CONFLICT,
            Error::LimitExceeded { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Error::Log(error) => log_status(error),
            Error::Serve { .. } | Error::Open { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// A rejected command or a bad value is the client's; a version race is a conflict; a closed or
/// poisoned log is unavailable; anything else (I/O, corruption) is the server's.
fn log_status(error: &logbook::Error) -> StatusCode {
    match error {
        logbook::Error::Event(logbook::EventError::Rejected { .. }) => StatusCode::CONFLICT,
        logbook::Error::Event(_) => StatusCode::BAD_REQUEST,
        logbook::Error::WrongExpectedVersion { .. } => StatusCode::CONFLICT,
        logbook::Error::Poisoned { .. } | logbook::Error::Closed => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.to_string() });
        (self.status(), Json(body)).into_response()
    }
}
