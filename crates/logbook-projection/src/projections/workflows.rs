//! The run ledger, workflow half: [`WorkflowRun`] records, phase states, resume plans.
//!
//! Owns: the state of every `workflow/<id>` stream inside [`RunLedger`], phase transition rules,
//! children telemetry sums and the [`ResumePlan`] of a workflow.
//! Never: launches or fails anything; a resume plan only says what can be reused and what must be
//! relaunched, the service acts on it.

use serde::{Deserialize, Serialize};

use super::runs::{AgentRun, RunLedger, TelemetryTotals};
use super::{extend_unique, rejected};
use crate::error::{RejectReason, Result};
use crate::event::RecordedEvent;
use crate::model::validate::LIST_ITEMS_MAX;
use crate::model::{BuiltinEvent, RunStatus, WorkflowStarted};
use crate::projection::{Page, PageRequest, paginate};

/// The state of one phase of a workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PhaseStatus {
    /// Not started.
    Pending,
    /// Started, not ended.
    Running,
    /// Completed: its result can be reused.
    Completed,
    /// Failed: it can be started again.
    Failed,
}

impl PhaseStatus {
    /// The snake_case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            PhaseStatus::Pending => "pending",
            PhaseStatus::Running => "running",
            PhaseStatus::Completed => "completed",
            PhaseStatus::Failed => "failed",
        }
    }
}

/// One phase of a workflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseState {
    /// The phase name.
    pub name: String,
    /// Its state.
    pub status: PhaseStatus,
    /// Every child run named by its events (at most 1024).
    pub child_run_ids: Vec<String>,
    /// The result reference of its completion.
    pub result_ref: Option<String>,
    /// The error of its latest failure.
    pub error: Option<String>,
}

impl PhaseState {
    fn new(name: &str) -> Self {
        PhaseState {
            name: name.to_owned(),
            status: PhaseStatus::Pending,
            child_run_ids: Vec::new(),
            result_ref: None,
            error: None,
        }
    }
}

/// One workflow run, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowRun {
    /// The workflow id (the entity id of its `workflow/<id>` stream).
    pub workflow_id: String,
    /// The definition it executes.
    pub definition_id: String,
    /// The thread that launched it.
    pub parent_thread_id: Option<String>,
    /// Its input.
    pub input: String,
    /// Running, or the terminal status.
    pub status: RunStatus,
    /// Its phases: the declared ones in order, then any other named by a phase event.
    pub phases: Vec<PhaseState>,
    /// The summary given on completion.
    pub summary: Option<String>,
    /// The result reference given on completion.
    pub result_ref: Option<String>,
    /// The error given on failure.
    pub error: Option<String>,
    /// The reason given on cancellation.
    pub cancel_reason: Option<String>,
    /// When `workflow.started` was recorded.
    pub started_at_ms: u64,
    /// When the latest event was recorded.
    pub updated_at_ms: u64,
    /// When it ended, if it did.
    pub ended_at_ms: Option<u64>,
    /// The log position of `workflow.started`: the listing order.
    pub created_position: u64,
    /// The stream version of the latest event applied.
    pub stream_version: u64,
}

impl WorkflowRun {
    fn new(id: &str, started: &WorkflowStarted, event: &RecordedEvent<BuiltinEvent>) -> Self {
        WorkflowRun {
            workflow_id: id.to_owned(),
            definition_id: started.definition_id.clone(),
            parent_thread_id: started.parent_thread_id.clone(),
            input: started.input.clone(),
            status: RunStatus::Running,
            phases: started
                .phases
                .iter()
                .map(|name| PhaseState::new(name))
                .collect(),
            summary: None,
            result_ref: None,
            error: None,
            cancel_reason: None,
            started_at_ms: event.timestamp_ms,
            updated_at_ms: event.timestamp_ms,
            ended_at_ms: None,
            created_position: event.position,
            stream_version: event.version,
        }
    }

    /// A phase by name.
    pub fn phase(&self, name: &str) -> Option<&PhaseState> {
        self.phases.iter().find(|phase| phase.name == name)
    }

    fn phase_mut(&mut self, name: &str) -> Option<&mut PhaseState> {
        if self.phase(name).is_none() {
            if self.phases.len() >= LIST_ITEMS_MAX {
                return None;
            }
            self.phases.push(PhaseState::new(name));
        }
        self.phases.iter_mut().find(|phase| phase.name == name)
    }
}

/// A child run that completed, and its result reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildResult {
    /// The child run.
    pub run_id: String,
    /// Its result reference.
    pub result_ref: Option<String>,
}

/// A phase whose result can be reused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletedPhase {
    /// The phase.
    pub phase: String,
    /// Its result reference.
    pub result_ref: Option<String>,
    /// The runs that made it.
    pub child_run_ids: Vec<String>,
}

/// Why a phase must be launched again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelaunchReason {
    /// It never started.
    NotStarted,
    /// It started and never ended (the process stopped).
    Interrupted,
    /// It failed, with this error.
    Failed(Option<String>),
}

/// A phase to launch again: the children that completed can be reused, the others relaunched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhaseToRelaunch {
    /// The phase.
    pub phase: String,
    /// Why.
    pub reason: RelaunchReason,
    /// Its children that completed, with their results.
    pub completed_children: Vec<ChildResult>,
    /// Its children that did not complete (failed, cancelled, not ended or unknown).
    pub children_to_relaunch: Vec<String>,
}

/// What a workflow can reuse and what it must relaunch, phase by phase, in phase order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumePlan {
    /// The workflow.
    pub workflow_id: String,
    /// Phases that completed.
    pub completed: Vec<CompletedPhase>,
    /// Phases missing, interrupted or failed.
    pub to_relaunch: Vec<PhaseToRelaunch>,
}

/// A workflow that did not end: listed after a restart with its resume plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterruptedWorkflow {
    /// The workflow id.
    pub workflow_id: String,
    /// The definition.
    pub definition_id: String,
    /// When it last changed.
    pub updated_at_ms: u64,
    /// What to reuse and relaunch.
    pub plan: ResumePlan,
}

impl RunLedger {
    /// Refuses to start a workflow whose id is taken.
    pub fn can_start_workflow(&self, workflow_id: &str) -> Result<()> {
        if self.workflows.contains_key(workflow_id) {
            return Err(rejected(
                "workflow",
                workflow_id,
                RejectReason::AlreadyExists,
            ));
        }
        Ok(())
    }

    /// Refuses to end a workflow that does not exist or already ended.
    pub fn can_end_workflow(&self, workflow_id: &str) -> Result<()> {
        self.live_workflow(workflow_id).map(drop)
    }

    /// Refuses to move `phase` of a live workflow to `to` when its state does not allow it:
    /// a completed phase never changes; a phase completes or fails only from pending or running.
    pub fn can_move_phase(&self, workflow_id: &str, phase: &str, to: PhaseStatus) -> Result<()> {
        let workflow = self.live_workflow(workflow_id)?;
        let from = workflow
            .phase(phase)
            .map_or(PhaseStatus::Pending, |phase| phase.status);
        let allowed = match to {
            PhaseStatus::Running => from != PhaseStatus::Completed,
            PhaseStatus::Completed | PhaseStatus::Failed => {
                matches!(from, PhaseStatus::Pending | PhaseStatus::Running)
            }
            PhaseStatus::Pending => false,
        };
        if !allowed {
            let reason = RejectReason::InvalidTransition {
                from: from.as_str(),
                to: to.as_str(),
            };
            return Err(rejected(
                "workflow phase",
                &format!("{workflow_id}/{phase}"),
                reason,
            ));
        }
        if workflow.phase(phase).is_none() && workflow.phases.len() >= LIST_ITEMS_MAX {
            let reason = RejectReason::InvalidTransition {
                from: "full",
                to: to.as_str(),
            };
            return Err(rejected(
                "workflow phase",
                &format!("{workflow_id}/{phase}"),
                reason,
            ));
        }
        Ok(())
    }

    fn live_workflow(&self, workflow_id: &str) -> Result<&WorkflowRun> {
        let Some(workflow) = self.workflows.get(workflow_id) else {
            return Err(rejected("workflow", workflow_id, RejectReason::NotFound));
        };
        if workflow.status.is_terminal() {
            return Err(rejected(
                "workflow",
                workflow_id,
                RejectReason::AlreadyEnded,
            ));
        }
        Ok(workflow)
    }

    /// The one rule set for workflow events, shared by `validate` and `apply`.
    pub(super) fn check_workflow_event(&self, id: &str, event: &BuiltinEvent) -> Result<()> {
        match event {
            BuiltinEvent::WorkflowStarted(_) => self.can_start_workflow(id),
            BuiltinEvent::WorkflowPhaseStarted(e) => {
                self.can_move_phase(id, &e.phase, PhaseStatus::Running)
            }
            BuiltinEvent::WorkflowPhaseCompleted(e) => {
                self.can_move_phase(id, &e.phase, PhaseStatus::Completed)
            }
            BuiltinEvent::WorkflowPhaseFailed(e) => {
                self.can_move_phase(id, &e.phase, PhaseStatus::Failed)
            }
            _ => self.can_end_workflow(id),
        }
    }

    pub(super) fn apply_workflow_event(
        &mut self,
        id: &str,
        event: &RecordedEvent<BuiltinEvent>,
    ) -> bool {
        if self.check_workflow_event(id, &event.event).is_err() {
            return false;
        }
        if let BuiltinEvent::WorkflowStarted(started) = &event.event {
            self.workflow_order.insert(event.position, id.to_owned());
            self.workflows
                .insert(id.to_owned(), WorkflowRun::new(id, started, event));
            return true;
        }
        let Some(workflow) = self.workflows.get_mut(id) else {
            return false;
        };
        let at_ms = event.timestamp_ms;
        let (phase_name, status, children, result_ref, error) = match &event.event {
            BuiltinEvent::WorkflowPhaseStarted(e) => {
                (&e.phase, PhaseStatus::Running, &e.child_run_ids, None, None)
            }
            BuiltinEvent::WorkflowPhaseCompleted(e) => (
                &e.phase,
                PhaseStatus::Completed,
                &e.child_run_ids,
                e.result_ref.clone(),
                None,
            ),
            BuiltinEvent::WorkflowPhaseFailed(e) => {
                let error = Some(e.error.clone());
                (&e.phase, PhaseStatus::Failed, &e.child_run_ids, None, error)
            }
            ended => {
                end_workflow(workflow, ended, at_ms);
                workflow.updated_at_ms = at_ms;
                workflow.stream_version = event.version;
                return true;
            }
        };
        let Some(phase) = workflow.phase_mut(phase_name) else {
            return false;
        };
        phase.status = status;
        extend_unique(&mut phase.child_run_ids, children, LIST_ITEMS_MAX);
        match status {
            PhaseStatus::Running => phase.error = None,
            PhaseStatus::Completed => phase.result_ref = result_ref,
            _ => phase.error = error,
        }
        workflow.updated_at_ms = at_ms;
        workflow.stream_version = event.version;
        true
    }

    /// A workflow.
    pub fn workflow(&self, workflow_id: &str) -> Option<&WorkflowRun> {
        self.workflows.get(workflow_id)
    }

    /// Workflows, optionally only those with `status`, in start order, one page at a time.
    pub fn list_workflows(
        &self,
        status: Option<RunStatus>,
        page: &PageRequest,
    ) -> Page<&WorkflowRun> {
        let entries = self.workflow_order.iter().filter_map(|(position, id)| {
            self.workflows.get(id).map(|workflow| (*position, workflow))
        });
        paginate(entries, page, |workflow| {
            status.is_none_or(|status| workflow.status == status)
        })
    }

    /// The children of a workflow: runs named by its phases, then runs that named it in
    /// `run.started`, each once, known runs only.
    pub fn workflow_children(&self, workflow_id: &str) -> Vec<&AgentRun> {
        let mut ids: Vec<String> = Vec::new();
        if let Some(workflow) = self.workflows.get(workflow_id) {
            for phase in &workflow.phases {
                extend_unique(&mut ids, &phase.child_run_ids, usize::MAX);
            }
        }
        if let Some(started) = self.runs_by_workflow.get(workflow_id) {
            extend_unique(&mut ids, started, usize::MAX);
        }
        ids.iter().filter_map(|id| self.runs.get(id)).collect()
    }

    /// Telemetry summed over a workflow's children, `None` for an unknown workflow.
    pub fn workflow_telemetry(&self, workflow_id: &str) -> Option<TelemetryTotals> {
        self.workflows.get(workflow_id)?;
        let mut totals = TelemetryTotals::default();
        for child in self.workflow_children(workflow_id) {
            totals.merge(&child.telemetry);
        }
        Some(totals)
    }

    /// What a workflow can reuse and must relaunch; refused for an unknown workflow.
    pub fn resume_plan(&self, workflow_id: &str) -> Result<ResumePlan> {
        let Some(workflow) = self.workflows.get(workflow_id) else {
            return Err(rejected("workflow", workflow_id, RejectReason::NotFound));
        };
        let mut plan = ResumePlan {
            workflow_id: workflow_id.to_owned(),
            completed: Vec::new(),
            to_relaunch: Vec::new(),
        };
        for phase in &workflow.phases {
            let reason = match phase.status {
                PhaseStatus::Completed => {
                    plan.completed.push(CompletedPhase {
                        phase: phase.name.clone(),
                        result_ref: phase.result_ref.clone(),
                        child_run_ids: phase.child_run_ids.clone(),
                    });
                    continue;
                }
                PhaseStatus::Pending => RelaunchReason::NotStarted,
                PhaseStatus::Running => RelaunchReason::Interrupted,
                PhaseStatus::Failed => RelaunchReason::Failed(phase.error.clone()),
            };
            let mut relaunch = PhaseToRelaunch {
                phase: phase.name.clone(),
                reason,
                completed_children: Vec::new(),
                children_to_relaunch: Vec::new(),
            };
            for child_id in &phase.child_run_ids {
                match self.runs.get(child_id) {
                    Some(child) if child.status == RunStatus::Completed => {
                        relaunch.completed_children.push(ChildResult {
                            run_id: child_id.clone(),
                            result_ref: child.result_ref.clone(),
                        });
                    }
                    _ => relaunch.children_to_relaunch.push(child_id.clone()),
                }
            }
            plan.to_relaunch.push(relaunch);
        }
        Ok(plan)
    }

    /// Workflows that did not end, in start order, with their resume plans.
    pub fn interrupted_workflows(&self) -> Vec<InterruptedWorkflow> {
        let workflows = self
            .workflow_order
            .values()
            .filter_map(|id| self.workflows.get(id));
        workflows
            .filter(|workflow| !workflow.status.is_terminal())
            .filter_map(|workflow| {
                let plan = self.resume_plan(&workflow.workflow_id).ok()?;
                Some(InterruptedWorkflow {
                    workflow_id: workflow.workflow_id.clone(),
                    definition_id: workflow.definition_id.clone(),
                    updated_at_ms: workflow.updated_at_ms,
                    plan,
                })
            })
            .collect()
    }
}

fn end_workflow(workflow: &mut WorkflowRun, event: &BuiltinEvent, at_ms: u64) {
    let status = match event {
        BuiltinEvent::WorkflowCompleted(e) => {
            workflow.summary.clone_from(&e.summary);
            workflow.result_ref.clone_from(&e.result_ref);
            RunStatus::Completed
        }
        BuiltinEvent::WorkflowFailed(e) => {
            workflow.error = Some(e.error.clone());
            RunStatus::Failed
        }
        BuiltinEvent::WorkflowCancelled(e) => {
            workflow.cancel_reason.clone_from(&e.reason);
            RunStatus::Cancelled
        }
        // Only workflow events reach here (the caller matched the stream kind).
        _ => return,
    };
    workflow.status = status;
    workflow.ended_at_ms = Some(at_ms);
}
