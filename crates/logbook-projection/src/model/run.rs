//! Run events: the life of one agent run, in stream `run/<run id>`.
//!
//! Owns: the payloads of `run.*` events and their value rules.
//! Never: carries the run id (the stream id is the run's identity) or large transcripts (the
//! ledger keeps references; [`CHECKPOINT_BYTES_MAX`] and the text limits bound what is inline).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::EventPayload;
use super::validate;
use crate::error::{Error, Result};
use crate::stream::StreamKind;

/// The largest checkpoint, in bytes; enforced on encode, on decode and from JSON.
pub const CHECKPOINT_BYTES_MAX: usize = 1024 * 1024;

/// What kind of run this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunKind {
    /// A sub-agent of another run.
    Subagent,
    /// A worker thread.
    WorkerThread,
    /// A background agent.
    BackgroundAgent,
    /// A member of a team.
    TeamMember,
    /// A child run launched by a workflow phase.
    WorkflowChild,
}

impl RunKind {
    /// The snake_case name, as in JSON.
    pub const fn as_str(self) -> &'static str {
        match self {
            RunKind::Subagent => "subagent",
            RunKind::WorkerThread => "worker_thread",
            RunKind::BackgroundAgent => "background_agent",
            RunKind::TeamMember => "team_member",
            RunKind::WorkflowChild => "workflow_child",
        }
    }
}

/// The status of a run (and of a workflow).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Created, waiting to run.
    Pending,
    /// Running.
    Running,
    /// Paused (usually with a checkpoint).
    Paused,
    /// Waiting for the user (usually with a checkpoint).
    AwaitingUser,
    /// Ended well (`run.completed`).
    Completed,
    /// Ended badly (`run.failed`).
    Failed,
    /// Stopped (`run.cancelled`).
    Cancelled,
}

impl RunStatus {
    /// Completed, failed and cancelled are terminal: nothing follows them.
    pub const fn is_terminal(self) -> bool {
        matches!(
            self,
            RunStatus::Completed | RunStatus::Failed | RunStatus::Cancelled
        )
    }

    /// The snake_case name, as in JSON.
    pub const fn as_str(self) -> &'static str {
        match self {
            RunStatus::Pending => "pending",
            RunStatus::Running => "running",
            RunStatus::Paused => "paused",
            RunStatus::AwaitingUser => "awaiting_user",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }
}

/// `run.started` v1: a run begins, status `running`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunStarted {
    /// What kind of run.
    pub kind: RunKind,
    /// The agent that runs.
    pub agent_id: String,
    /// The run that launched this one.
    #[serde(default)]
    pub parent_run_id: Option<String>,
    /// The conversation thread that launched this one.
    #[serde(default)]
    pub parent_thread_id: Option<String>,
    /// A reference to the prompt (the text stays elsewhere).
    #[serde(default)]
    pub prompt_ref: Option<String>,
    /// The worker thread that executes the run.
    #[serde(default)]
    pub worker_thread_id: Option<String>,
    /// The task board the run works for.
    #[serde(default)]
    pub task_board_ref: Option<String>,
    /// The task card the run works on.
    #[serde(default)]
    pub task_card_ref: Option<String>,
    /// The workflow this run is a child of.
    #[serde(default)]
    pub workflow_id: Option<String>,
}

impl EventPayload for RunStarted {
    const EVENT_TYPE: &'static str = "run.started";
    const SCHEMA_VERSION: u16 = 1;
    const STREAM_KIND: StreamKind = StreamKind::Run;

    fn validate(&self) -> Result<()> {
        let t = Self::EVENT_TYPE;
        validate::id(t, "agent_id", &self.agent_id)?;
        validate::optional_id(t, "parent_run_id", self.parent_run_id.as_deref())?;
        validate::optional_id(t, "parent_thread_id", self.parent_thread_id.as_deref())?;
        validate::optional_id(t, "prompt_ref", self.prompt_ref.as_deref())?;
        validate::optional_id(t, "worker_thread_id", self.worker_thread_id.as_deref())?;
        validate::optional_id(t, "task_board_ref", self.task_board_ref.as_deref())?;
        validate::optional_id(t, "task_card_ref", self.task_card_ref.as_deref())?;
        validate::optional_id(t, "workflow_id", self.workflow_id.as_deref())?;
        if self.kind == RunKind::WorkflowChild && self.workflow_id.is_none() {
            let reason = "is required for a workflow_child run".to_owned();
            return Err(Error::InvalidField {
                event_type: t,
                field: "workflow_id",
                reason,
            });
        }
        Ok(())
    }
}

/// `run.status_changed` v1: a move between non-terminal statuses (terminal ones have their own
/// events: `run.completed`, `run.failed`, `run.cancelled`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunStatusChanged {
    /// The new status: pending, running, paused or awaiting_user.
    pub status: RunStatus,
    /// Why.
    #[serde(default)]
    pub reason: Option<String>,
}

impl EventPayload for RunStatusChanged {
    const EVENT_TYPE: &'static str = "run.status_changed";
    const SCHEMA_VERSION: u16 = 1;
    const STREAM_KIND: StreamKind = StreamKind::Run;

    fn validate(&self) -> Result<()> {
        if self.status.is_terminal() {
            return Err(Error::InvalidField {
                event_type: Self::EVENT_TYPE,
                field: "status",
                reason: format!("{0} is terminal: use run.{0}", self.status.as_str()),
            });
        }
        validate::optional_text(Self::EVENT_TYPE, "reason", self.reason.as_deref())
    }
}

/// `run.event` v1: one entry of a run's own event feed (tool call, message, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunEvent {
    /// The run's own sequence number.
    pub sequence: u64,
    /// The run's own event type, e.g. "tool_call".
    pub event_type: String,
    /// The payload, usually JSON text.
    #[serde(default)]
    pub payload: String,
}

impl EventPayload for RunEvent {
    const EVENT_TYPE: &'static str = "run.event";
    const SCHEMA_VERSION: u16 = 1;
    const STREAM_KIND: StreamKind = StreamKind::Run;

    fn validate(&self) -> Result<()> {
        validate::id(Self::EVENT_TYPE, "event_type", &self.event_type)?;
        validate::text(Self::EVENT_TYPE, "payload", &self.payload)
    }
}

/// `run.telemetry` v1: usage since the previous report. Counters add up over a run's reports;
/// `model`, `provider` and `error` are the latest seen.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunTelemetry {
    /// Input tokens.
    #[serde(default)]
    pub tokens_in: u64,
    /// Output tokens.
    #[serde(default)]
    pub tokens_out: u64,
    /// Cost estimate in millionths of the currency unit (no floats in money).
    #[serde(default)]
    pub cost_estimate_micros: u64,
    /// Wall time, in milliseconds.
    #[serde(default)]
    pub elapsed_ms: u64,
    /// Tool calls by tool name.
    #[serde(default)]
    pub tool_calls: BTreeMap<String, u64>,
    /// The model used.
    #[serde(default)]
    pub model: Option<String>,
    /// The provider used.
    #[serde(default)]
    pub provider: Option<String>,
    /// The error the provider reported, if any.
    #[serde(default)]
    pub error: Option<String>,
}

impl EventPayload for RunTelemetry {
    const EVENT_TYPE: &'static str = "run.telemetry";
    const SCHEMA_VERSION: u16 = 1;
    const STREAM_KIND: StreamKind = StreamKind::Run;

    fn validate(&self) -> Result<()> {
        let t = Self::EVENT_TYPE;
        validate::item_count(t, "tool_calls", self.tool_calls.len())?;
        for tool in self.tool_calls.keys() {
            validate::id(t, "tool_calls", tool)?;
        }
        validate::optional_id(t, "model", self.model.as_deref())?;
        validate::optional_id(t, "provider", self.provider.as_deref())?;
        validate::optional_text(t, "error", self.error.as_deref())
    }
}

/// Why a checkpoint was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckpointReason {
    /// The run was paused.
    Paused,
    /// The run waits for the user.
    AwaitingUser,
    /// A periodic save.
    Periodic,
}

/// `run.checkpointed` v1: state to resume the run from, at most [`CHECKPOINT_BYTES_MAX`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunCheckpointed {
    /// Why.
    pub reason: CheckpointReason,
    /// The checkpoint, usually JSON text.
    pub data: String,
}

impl EventPayload for RunCheckpointed {
    const EVENT_TYPE: &'static str = "run.checkpointed";
    const SCHEMA_VERSION: u16 = 1;
    const STREAM_KIND: StreamKind = StreamKind::Run;

    fn validate(&self) -> Result<()> {
        if self.data.len() > CHECKPOINT_BYTES_MAX {
            return Err(Error::LimitExceeded {
                what: "checkpoint data",
                limit: CHECKPOINT_BYTES_MAX,
                actual: self.data.len(),
            });
        }
        Ok(())
    }
}

/// `run.completed` v1.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunCompleted {
    /// A short summary.
    #[serde(default)]
    pub summary: Option<String>,
    /// A reference to the result (kept elsewhere).
    #[serde(default)]
    pub result_ref: Option<String>,
}

impl EventPayload for RunCompleted {
    const EVENT_TYPE: &'static str = "run.completed";
    const SCHEMA_VERSION: u16 = 1;
    const STREAM_KIND: StreamKind = StreamKind::Run;

    fn validate(&self) -> Result<()> {
        validate::optional_text(Self::EVENT_TYPE, "summary", self.summary.as_deref())?;
        validate::optional_id(Self::EVENT_TYPE, "result_ref", self.result_ref.as_deref())
    }
}

/// `run.failed` v1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunFailed {
    /// What went wrong.
    pub error: String,
}

impl EventPayload for RunFailed {
    const EVENT_TYPE: &'static str = "run.failed";
    const SCHEMA_VERSION: u16 = 1;
    const STREAM_KIND: StreamKind = StreamKind::Run;

    fn validate(&self) -> Result<()> {
        validate::required_text(Self::EVENT_TYPE, "error", &self.error)
    }
}

/// `run.cancelled` v1.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunCancelled {
    /// Why.
    #[serde(default)]
    pub reason: Option<String>,
}

impl EventPayload for RunCancelled {
    const EVENT_TYPE: &'static str = "run.cancelled";
    const SCHEMA_VERSION: u16 = 1;
    const STREAM_KIND: StreamKind = StreamKind::Run;

    fn validate(&self) -> Result<()> {
        validate::optional_text(Self::EVENT_TYPE, "reason", self.reason.as_deref())
    }
}
