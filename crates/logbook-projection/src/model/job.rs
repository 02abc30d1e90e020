//! Job events: one background job, its lease and its typed progress, in stream `job/<job id>`.
//!
//! Owns: the payloads of `job.*` events, their value rules, and the one upcaster of the
//! built-in model (`job.progress` v1 to v2).
//! Never: carries the job id (the stream id is its identity) or decides lease liveness (that
//! needs a clock; the projection's `live_claim(now)` does it).

use serde::{Deserialize, Serialize};

use super::EventPayload;
use super::validate;
use crate::error::{Error, Result};
use crate::stream::StreamKind;
use crate::upcast::{Upcaster, via_serde};

/// `job.queued` v1: a job waits for a worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobQueued {
    /// What kind of job, e.g. "pipeline.train".
    pub kind: String,
    /// The input, usually JSON text.
    #[serde(default)]
    pub input: String,
}

impl EventPayload for JobQueued {
    const EVENT_TYPE: &'static str = "job.queued";
    const SCHEMA_VERSION: u16 = 1;
    const STREAM_KIND: StreamKind = StreamKind::Job;

    fn validate(&self) -> Result<()> {
        validate::id(Self::EVENT_TYPE, "kind", &self.kind)?;
        validate::text(Self::EVENT_TYPE, "input", &self.input)
    }
}

/// `job.claimed` v1: a worker takes the job until `lease_expires_at_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobClaimed {
    /// The worker.
    pub worker: String,
    /// The lease's end, milliseconds since the Unix epoch.
    pub lease_expires_at_ms: u64,
}

impl EventPayload for JobClaimed {
    const EVENT_TYPE: &'static str = "job.claimed";
    const SCHEMA_VERSION: u16 = 1;
    const STREAM_KIND: StreamKind = StreamKind::Job;

    fn validate(&self) -> Result<()> {
        validate::id(Self::EVENT_TYPE, "worker", &self.worker)
    }
}

/// `job.heartbeat` v1: the worker extends its lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobHeartbeat {
    /// The worker.
    pub worker: String,
    /// The lease's new end, milliseconds since the Unix epoch.
    pub lease_expires_at_ms: u64,
}

impl EventPayload for JobHeartbeat {
    const EVENT_TYPE: &'static str = "job.heartbeat";
    const SCHEMA_VERSION: u16 = 1;
    const STREAM_KIND: StreamKind = StreamKind::Job;

    fn validate(&self) -> Result<()> {
        validate::id(Self::EVENT_TYPE, "worker", &self.worker)
    }
}

/// `job.progress` v2: typed progress instead of log scraping. Every field is optional; a
/// report says what it knows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobProgress {
    /// The current stage, e.g. "download".
    #[serde(default)]
    pub stage: Option<String>,
    /// Percent done, 0 to 100.
    #[serde(default)]
    pub percent: Option<u8>,
    /// Units done.
    #[serde(default)]
    pub done: Option<u64>,
    /// Units in all; at least `done`.
    #[serde(default)]
    pub total: Option<u64>,
    /// A human message (added in v2).
    #[serde(default)]
    pub message: Option<String>,
}

impl EventPayload for JobProgress {
    const EVENT_TYPE: &'static str = "job.progress";
    const SCHEMA_VERSION: u16 = 2;
    const STREAM_KIND: StreamKind = StreamKind::Job;

    fn validate(&self) -> Result<()> {
        let t = Self::EVENT_TYPE;
        validate::optional_id(t, "stage", self.stage.as_deref())?;
        if let Some(percent) = self.percent
            && percent > 100
        {
            let reason = format!("is {percent}, at most 100 allowed");
            return Err(Error::InvalidField {
                event_type: t,
                field: "percent",
                reason,
            });
        }
        if let (Some(done), Some(total)) = (self.done, self.total)
            && done > total
        {
            let reason = format!("is {done}, more than total {total}");
            return Err(Error::InvalidField {
                event_type: t,
                field: "done",
                reason,
            });
        }
        validate::optional_text(t, "message", self.message.as_deref())
    }
}

/// `job.progress` v1, as written by the first version: no `message`. Kept only to read old
/// records through [`PROGRESS_V1_TO_V2`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct JobProgressV1 {
    /// See [`JobProgress::stage`].
    pub stage: Option<String>,
    /// See [`JobProgress::percent`].
    pub percent: Option<u8>,
    /// See [`JobProgress::done`].
    pub done: Option<u64>,
    /// See [`JobProgress::total`].
    pub total: Option<u64>,
}

/// `job.progress` v1 to v2: `message` is added as `None`.
pub(crate) const PROGRESS_V1_TO_V2: Upcaster =
    Upcaster::new(JobProgress::EVENT_TYPE, 1, progress_v1_to_v2);

fn progress_v1_to_v2(bytes: &[u8]) -> Result<Vec<u8>> {
    via_serde(bytes, |old: JobProgressV1| JobProgress {
        stage: old.stage,
        percent: old.percent,
        done: old.done,
        total: old.total,
        message: None,
    })
}

/// `job.succeeded` v1.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSucceeded {
    /// The result, or a reference to it.
    #[serde(default)]
    pub result: Option<String>,
}

impl EventPayload for JobSucceeded {
    const EVENT_TYPE: &'static str = "job.succeeded";
    const SCHEMA_VERSION: u16 = 1;
    const STREAM_KIND: StreamKind = StreamKind::Job;

    fn validate(&self) -> Result<()> {
        validate::optional_text(Self::EVENT_TYPE, "result", self.result.as_deref())
    }
}

/// `job.failed` v1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobFailed {
    /// What went wrong.
    pub error: String,
    /// Whether queuing the job again may help.
    #[serde(default)]
    pub retryable: bool,
}

impl EventPayload for JobFailed {
    const EVENT_TYPE: &'static str = "job.failed";
    const SCHEMA_VERSION: u16 = 1;
    const STREAM_KIND: StreamKind = StreamKind::Job;

    fn validate(&self) -> Result<()> {
        validate::required_text(Self::EVENT_TYPE, "error", &self.error)
    }
}

/// `job.cancelled` v1.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobCancelled {
    /// Why.
    #[serde(default)]
    pub reason: Option<String>,
}

impl EventPayload for JobCancelled {
    const EVENT_TYPE: &'static str = "job.cancelled";
    const SCHEMA_VERSION: u16 = 1;
    const STREAM_KIND: StreamKind = StreamKind::Job;

    fn validate(&self) -> Result<()> {
        validate::optional_text(Self::EVENT_TYPE, "reason", self.reason.as_deref())
    }
}

/// `job.lease_expired` v1: the worker's lease ran out; the job can be claimed again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobLeaseExpired {
    /// The worker whose lease expired.
    pub worker: String,
}

impl EventPayload for JobLeaseExpired {
    const EVENT_TYPE: &'static str = "job.lease_expired";
    const SCHEMA_VERSION: u16 = 1;
    const STREAM_KIND: StreamKind = StreamKind::Job;

    fn validate(&self) -> Result<()> {
        validate::id(Self::EVENT_TYPE, "worker", &self.worker)
    }
}
