//! Workflow events: one workflow run and its phases, in stream `workflow/<workflow id>`.
//!
//! Owns: the payloads of `workflow.*` events and their value rules.
//! Never: carries the workflow id (the stream id is its identity) or the children's own events
//! (those are `run.*` events in the children's `run/<id>` streams).

use serde::{Deserialize, Serialize};

use super::EventPayload;
use super::validate;
use crate::error::Result;
use crate::stream::StreamKind;

/// `workflow.started` v1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowStarted {
    /// The workflow definition this run executes.
    pub definition_id: String,
    /// The conversation thread that launched it.
    #[serde(default)]
    pub parent_thread_id: Option<String>,
    /// The input, usually JSON text.
    #[serde(default)]
    pub input: String,
    /// The phase names, in order.
    #[serde(default)]
    pub phases: Vec<String>,
}

impl EventPayload for WorkflowStarted {
    const EVENT_TYPE: &'static str = "workflow.started";
    const SCHEMA_VERSION: u16 = 1;
    const STREAM_KIND: StreamKind = StreamKind::Workflow;

    fn validate(&self) -> Result<()> {
        let t = Self::EVENT_TYPE;
        validate::id(t, "definition_id", &self.definition_id)?;
        validate::optional_id(t, "parent_thread_id", self.parent_thread_id.as_deref())?;
        validate::text(t, "input", &self.input)?;
        validate::id_list(t, "phases", &self.phases)
    }
}

/// `workflow.phase_started` v1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowPhaseStarted {
    /// The phase.
    pub phase: String,
    /// The runs launched for the phase so far.
    #[serde(default)]
    pub child_run_ids: Vec<String>,
}

impl EventPayload for WorkflowPhaseStarted {
    const EVENT_TYPE: &'static str = "workflow.phase_started";
    const SCHEMA_VERSION: u16 = 1;
    const STREAM_KIND: StreamKind = StreamKind::Workflow;

    fn validate(&self) -> Result<()> {
        validate::id(Self::EVENT_TYPE, "phase", &self.phase)?;
        validate::id_list(Self::EVENT_TYPE, "child_run_ids", &self.child_run_ids)
    }
}

/// `workflow.phase_completed` v1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowPhaseCompleted {
    /// The phase.
    pub phase: String,
    /// The runs that made the result.
    #[serde(default)]
    pub child_run_ids: Vec<String>,
    /// A reference to the phase's result, to reuse on resume.
    #[serde(default)]
    pub result_ref: Option<String>,
}

impl EventPayload for WorkflowPhaseCompleted {
    const EVENT_TYPE: &'static str = "workflow.phase_completed";
    const SCHEMA_VERSION: u16 = 1;
    const STREAM_KIND: StreamKind = StreamKind::Workflow;

    fn validate(&self) -> Result<()> {
        let t = Self::EVENT_TYPE;
        validate::id(t, "phase", &self.phase)?;
        validate::id_list(t, "child_run_ids", &self.child_run_ids)?;
        validate::optional_id(t, "result_ref", self.result_ref.as_deref())
    }
}

/// `workflow.phase_failed` v1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowPhaseFailed {
    /// The phase.
    pub phase: String,
    /// The runs of the phase.
    #[serde(default)]
    pub child_run_ids: Vec<String>,
    /// What went wrong.
    pub error: String,
}

impl EventPayload for WorkflowPhaseFailed {
    const EVENT_TYPE: &'static str = "workflow.phase_failed";
    const SCHEMA_VERSION: u16 = 1;
    const STREAM_KIND: StreamKind = StreamKind::Workflow;

    fn validate(&self) -> Result<()> {
        let t = Self::EVENT_TYPE;
        validate::id(t, "phase", &self.phase)?;
        validate::id_list(t, "child_run_ids", &self.child_run_ids)?;
        validate::required_text(t, "error", &self.error)
    }
}

/// `workflow.completed` v1.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowCompleted {
    /// A short summary.
    #[serde(default)]
    pub summary: Option<String>,
    /// A reference to the result.
    #[serde(default)]
    pub result_ref: Option<String>,
}

impl EventPayload for WorkflowCompleted {
    const EVENT_TYPE: &'static str = "workflow.completed";
    const SCHEMA_VERSION: u16 = 1;
    const STREAM_KIND: StreamKind = StreamKind::Workflow;

    fn validate(&self) -> Result<()> {
        validate::optional_text(Self::EVENT_TYPE, "summary", self.summary.as_deref())?;
        validate::optional_id(Self::EVENT_TYPE, "result_ref", self.result_ref.as_deref())
    }
}

/// `workflow.failed` v1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowFailed {
    /// What went wrong.
    pub error: String,
}

impl EventPayload for WorkflowFailed {
    const EVENT_TYPE: &'static str = "workflow.failed";
    const SCHEMA_VERSION: u16 = 1;
    const STREAM_KIND: StreamKind = StreamKind::Workflow;

    fn validate(&self) -> Result<()> {
        validate::required_text(Self::EVENT_TYPE, "error", &self.error)
    }
}

/// `workflow.cancelled` v1.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowCancelled {
    /// Why.
    #[serde(default)]
    pub reason: Option<String>,
}

impl EventPayload for WorkflowCancelled {
    const EVENT_TYPE: &'static str = "workflow.cancelled";
    const SCHEMA_VERSION: u16 = 1;
    const STREAM_KIND: StreamKind = StreamKind::Workflow;

    fn validate(&self) -> Result<()> {
        validate::optional_text(Self::EVENT_TYPE, "reason", self.reason.as_deref())
    }
}
