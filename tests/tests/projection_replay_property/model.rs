//! The reference model of the property test: the rules of the built-in commands, written out
//! plainly, predicting the outcome of each command and tracking what the projections must hold.

use super::ops::{
    DECLARED_PHASES, End, JobEnd, Op, Target, job_id, phase_name, stream_of, worker_id,
};
use logbook::StreamId;
use logbook::model::{RunKind, RunStatus};
use logbook_projection::RejectReason;
use logbook_projection::projections::{JobStatus, PhaseStatus};
use logbook_tests::projection_support::CLOCK_START_MS;
use std::collections::{BTreeMap, BTreeSet};

/// The outcome the model predicts for one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Written: one event.
    Written,
    /// Refused by the projections' validation.
    Refused(RejectReason),
    /// Refused by the payload's value rules or its stream kind.
    Invalid,
    /// Refused by the engine: the stream is deleted.
    Deleted,
}

#[derive(Debug, Clone)]
pub(crate) struct RunModel {
    pub(crate) status: RunStatus,
}

#[derive(Debug, Clone)]
pub(crate) struct WorkflowModel {
    pub(crate) status: RunStatus,
    pub(crate) phases: BTreeMap<String, PhaseStatus>,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct RoomModel {
    pub(crate) archived: bool,
    pub(crate) members: BTreeSet<u8>,
    pub(crate) deleted_messages: BTreeSet<u8>,
}

#[derive(Debug, Clone)]
pub(crate) struct JobModel {
    pub(crate) status: JobStatus,
    /// (worker, lease end).
    pub(crate) claim: Option<(u8, u64)>,
    pub(crate) retryable: bool,
}

/// The reference model: the rules of the built-in commands, written out plainly.
#[derive(Debug, Clone)]
pub(crate) struct Model {
    pub(crate) now_ms: u64,
    pub(crate) runs: BTreeMap<u8, RunModel>,
    pub(crate) workflows: BTreeMap<u8, WorkflowModel>,
    pub(crate) rooms: BTreeMap<u8, RoomModel>,
    pub(crate) jobs: BTreeMap<u8, JobModel>,
    /// Streams deleted (tombstoned).
    pub(crate) deleted: BTreeSet<String>,
    /// Events written per stream (its next version).
    pub(crate) versions: BTreeMap<String, u64>,
}

fn refused(reason: RejectReason) -> Outcome {
    Outcome::Refused(reason)
}

fn transition(from: &'static str, to: &'static str) -> Outcome {
    refused(RejectReason::InvalidTransition { from, to })
}

impl Model {
    pub(crate) fn new() -> Self {
        Model {
            now_ms: CLOCK_START_MS,
            runs: BTreeMap::new(),
            workflows: BTreeMap::new(),
            rooms: BTreeMap::new(),
            jobs: BTreeMap::new(),
            deleted: BTreeSet::new(),
            versions: BTreeMap::new(),
        }
    }

    /// A command the state accepts still fails on a deleted stream (the engine refuses it).
    pub(crate) fn unless_deleted(&self, stream: &StreamId, outcome: Outcome) -> Outcome {
        if outcome == Outcome::Written && self.deleted.contains(stream.as_str()) {
            Outcome::Deleted
        } else {
            outcome
        }
    }

    fn live_run(&self, run: u8) -> Result<(), Outcome> {
        match self.runs.get(&run) {
            None => Err(refused(RejectReason::NotFound)),
            Some(model) if model.status.is_terminal() => Err(refused(RejectReason::AlreadyEnded)),
            Some(_) => Ok(()),
        }
    }

    fn live_workflow(&self, workflow: u8) -> Result<&WorkflowModel, Outcome> {
        match self.workflows.get(&workflow) {
            None => Err(refused(RejectReason::NotFound)),
            Some(model) if model.status.is_terminal() => Err(refused(RejectReason::AlreadyEnded)),
            Some(model) => Ok(model),
        }
    }

    fn open_room(&self, room: u8) -> Result<&RoomModel, Outcome> {
        match self.rooms.get(&room) {
            None => Err(refused(RejectReason::NotFound)),
            Some(model) if model.archived => Err(refused(RejectReason::Archived)),
            Some(model) => Ok(model),
        }
    }

    fn live_job(&self, job: u8) -> Result<&JobModel, Outcome> {
        match self.jobs.get(&job) {
            None => Err(refused(RejectReason::NotFound)),
            Some(model) if model.status.is_terminal() => Err(refused(RejectReason::AlreadyEnded)),
            Some(model) => Ok(model),
        }
    }

    /// Predicts the outcome of a command, ignoring stream deletion.
    pub(crate) fn predict_state(&self, op: &Op) -> Outcome {
        let written = |check: Result<(), Outcome>| check.err().unwrap_or(Outcome::Written);
        match op {
            Op::StartRun {
                run,
                kind,
                workflow,
                ..
            } => {
                if *kind == RunKind::WorkflowChild && workflow.is_none() {
                    Outcome::Invalid
                } else if self.runs.contains_key(run) {
                    refused(RejectReason::AlreadyExists)
                } else {
                    Outcome::Written
                }
            }
            Op::ChangeStatus { run, status } => {
                if status.is_terminal() {
                    Outcome::Invalid
                } else {
                    written(self.live_run(*run))
                }
            }
            Op::RunEvent { run, .. } | Op::Checkpoint { run, .. } | Op::EndRun { run, .. } => {
                written(self.live_run(*run))
            }
            Op::Telemetry { run, .. } => match self.runs.contains_key(run) {
                true => Outcome::Written,
                false => refused(RejectReason::NotFound),
            },
            Op::StartWorkflow { workflow } => match self.workflows.contains_key(workflow) {
                true => refused(RejectReason::AlreadyExists),
                false => Outcome::Written,
            },
            Op::Phase {
                workflow,
                phase,
                to,
                children,
            } => {
                let distinct: BTreeSet<_> = children.iter().collect();
                if distinct.len() != children.len() {
                    return Outcome::Invalid;
                }
                let model = match self.live_workflow(*workflow) {
                    Ok(model) => model,
                    Err(outcome) => return outcome,
                };
                let from = model
                    .phases
                    .get(&phase_name(*phase))
                    .copied()
                    .unwrap_or(PhaseStatus::Pending);
                let allowed = match to {
                    PhaseStatus::Running => from != PhaseStatus::Completed,
                    _ => matches!(from, PhaseStatus::Pending | PhaseStatus::Running),
                };
                match allowed {
                    true => Outcome::Written,
                    false => transition(from.as_str(), to.as_str()),
                }
            }
            Op::EndWorkflow { workflow, .. } => written(self.live_workflow(*workflow).map(drop)),
            Op::CreateRoom { room } => match self.rooms.contains_key(room) {
                true => refused(RejectReason::AlreadyExists),
                false => Outcome::Written,
            },
            Op::Membership { room, member, join } => match self.open_room(*room) {
                Err(outcome) => outcome,
                Ok(model) => match (*join, model.members.contains(member)) {
                    (true, true) => refused(RejectReason::AlreadyExists),
                    (false, false) => refused(RejectReason::NotFound),
                    _ => Outcome::Written,
                },
            },
            Op::Post { room, .. } | Op::Archive { room } => {
                written(self.open_room(*room).map(drop))
            }
            Op::Edit { room, message } | Op::DeleteMessage { room, message } => {
                match self.open_room(*room) {
                    Err(outcome) => outcome,
                    // A deleted message can be neither edited nor deleted again.
                    Ok(model) if model.deleted_messages.contains(message) => {
                        refused(RejectReason::NotFound)
                    }
                    Ok(_) => Outcome::Written,
                }
            }
            Op::Misaddressed { .. } => Outcome::Invalid,
            Op::Queue { job } => match self.jobs.get(job) {
                None => Outcome::Written,
                Some(model) if model.status == JobStatus::Failed && model.retryable => {
                    Outcome::Written
                }
                Some(_) => refused(RejectReason::AlreadyExists),
            },
            Op::Claim { job, .. } => match self.live_job(*job) {
                Err(outcome) => outcome,
                Ok(model) => match model.claim {
                    Some((worker, lease)) if self.now_ms < lease => {
                        refused(RejectReason::LeaseLive {
                            worker: worker_id(worker),
                            lease_expires_at_ms: lease,
                        })
                    }
                    _ => Outcome::Written,
                },
            },
            Op::Heartbeat { job, worker, .. } => match self.live_job(*job) {
                Err(outcome) => outcome,
                Ok(model) => match model.claim {
                    Some((holder, lease)) if holder == *worker && self.now_ms < lease => {
                        Outcome::Written
                    }
                    _ => refused(RejectReason::NotClaimedBy {
                        worker: worker_id(*worker),
                    }),
                },
            },
            Op::Progress { job, percent } => match *percent > 100 {
                true => Outcome::Invalid,
                false => written(self.live_job(*job).map(drop)),
            },
            Op::EndJob { job, end } => match self.live_job(*job) {
                Err(outcome) => outcome,
                Ok(model) if *end != JobEnd::Cancelled && model.status != JobStatus::Claimed => {
                    transition(model.status.as_str(), "ended")
                }
                Ok(_) => Outcome::Written,
            },
            Op::Advance { .. }
            | Op::Reclaim
            | Op::DeleteStream { .. }
            | Op::Truncate { .. }
            | Op::Reopen => unreachable!("not a command: {op:?}"),
        }
    }

    /// Records the effect of a written command.
    pub(crate) fn apply(&mut self, op: &Op, stream: &StreamId) {
        *self.versions.entry(stream.as_str().to_owned()).or_default() += 1;
        match op {
            Op::StartRun { run, .. } => {
                let status = RunStatus::Running;
                self.runs.insert(*run, RunModel { status });
            }
            Op::ChangeStatus { run, status } => self.run_mut(*run).status = *status,
            Op::EndRun { run, end } => {
                self.run_mut(*run).status = match end {
                    End::Completed => RunStatus::Completed,
                    End::Failed => RunStatus::Failed,
                    End::Cancelled => RunStatus::Cancelled,
                }
            }
            Op::StartWorkflow { workflow } => {
                let phases = DECLARED_PHASES
                    .iter()
                    .map(|phase| ((*phase).to_owned(), PhaseStatus::Pending))
                    .collect();
                let status = RunStatus::Running;
                self.workflows
                    .insert(*workflow, WorkflowModel { status, phases });
            }
            Op::Phase {
                workflow,
                phase,
                to,
                ..
            } => {
                let model = self.workflows.get_mut(workflow).expect("live workflow");
                model.phases.insert(phase_name(*phase), *to);
            }
            Op::EndWorkflow { workflow, end } => {
                let model = self.workflows.get_mut(workflow).expect("live workflow");
                model.status = match end {
                    End::Completed => RunStatus::Completed,
                    End::Failed => RunStatus::Failed,
                    End::Cancelled => RunStatus::Cancelled,
                }
            }
            Op::CreateRoom { room } => {
                self.rooms.insert(*room, RoomModel::default());
            }
            Op::Membership { room, member, join } => {
                let members = &mut self.room_mut(*room).members;
                match join {
                    true => members.insert(*member),
                    false => members.remove(member),
                };
            }
            Op::DeleteMessage { room, message } => {
                self.room_mut(*room).deleted_messages.insert(*message);
            }
            Op::Archive { room } => self.room_mut(*room).archived = true,
            Op::Queue { job } => {
                let queued = JobModel {
                    status: JobStatus::Queued,
                    claim: None,
                    retryable: false,
                };
                self.jobs.insert(*job, queued);
            }
            Op::Claim {
                job,
                worker,
                lease_ms,
            } => {
                let lease = self.now_ms + lease_ms;
                let model = self.job_mut(*job);
                model.status = JobStatus::Claimed;
                model.claim = Some((*worker, lease));
            }
            Op::Heartbeat { job, lease_ms, .. } => {
                let lease = self.now_ms + lease_ms;
                let model = self.job_mut(*job);
                if let Some((_, current)) = &mut model.claim {
                    *current = (*current).max(lease);
                }
            }
            Op::EndJob { job, end } => {
                let model = self.job_mut(*job);
                model.claim = None;
                model.status = match end {
                    JobEnd::Succeeded => JobStatus::Succeeded,
                    JobEnd::Failed { retryable } => {
                        model.retryable = *retryable;
                        JobStatus::Failed
                    }
                    JobEnd::Cancelled => JobStatus::Cancelled,
                };
            }
            _ => {}
        }
    }

    fn run_mut(&mut self, run: u8) -> &mut RunModel {
        self.runs.get_mut(&run).expect("known run")
    }

    fn room_mut(&mut self, room: u8) -> &mut RoomModel {
        self.rooms.get_mut(&room).expect("known room")
    }

    fn job_mut(&mut self, job: u8) -> &mut JobModel {
        self.jobs.get_mut(&job).expect("known job")
    }

    /// Jobs whose lease lapsed: what `reclaim_expired(now)` must return.
    pub(crate) fn expired(&self) -> Vec<String> {
        self.jobs
            .iter()
            .filter(|(_, job)| job.status == JobStatus::Claimed)
            .filter(|(_, job)| job.claim.is_some_and(|(_, lease)| lease <= self.now_ms))
            .map(|(job, _)| job_id(*job))
            .collect()
    }

    pub(crate) fn reclaim(&mut self, job: &str) {
        let key = self
            .jobs
            .keys()
            .copied()
            .find(|key| job_id(*key) == job)
            .expect("a reclaimed job is known");
        *self.versions.entry(format!("job/{job}")).or_default() += 1;
        let model = self.job_mut(key);
        model.status = JobStatus::Queued;
        model.claim = None;
    }

    pub(crate) fn delete(&mut self, target: Target) {
        match target {
            Target::Run(run) => drop(self.runs.remove(&run)),
            Target::Workflow(workflow) => drop(self.workflows.remove(&workflow)),
            Target::Room(room) => drop(self.rooms.remove(&room)),
            Target::Job(job) => drop(self.jobs.remove(&job)),
        }
        self.deleted.insert(stream_of(target).as_str().to_owned());
    }
}
