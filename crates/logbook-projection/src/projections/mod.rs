//! The built-in projections: the run ledger (runs and workflows), rooms and jobs.
//!
//! Owns: their in-memory state, its queries, the validation of commands against it
//! ([`ValidateCommand`] and the named `can_*` functions, which share one rule set with
//! `apply`, so whatever a command may write, `apply` accepts), and the restart queries
//! ([`interrupted`], resume plans).
//! Never: reads the log, a clock or anything but its arguments; history that grows with the log
//! (run events, room messages) is not held here, the engine reads it from the log.

mod jobs;
mod rooms;
mod runs;
#[cfg(test)]
pub(crate) mod test_support;
mod workflows;

pub use jobs::{
    Claim, InterruptedJob, JOBS_PROJECTION_ID, JOBS_STATE_VERSION, Job, JobProgressState,
    JobStatus, Jobs,
};
pub use rooms::{LastMessage, ROOMS_PROJECTION_ID, ROOMS_STATE_VERSION, Room, Rooms};
pub use runs::{
    AgentRun, Checkpoint, InterruptedRun, RUNS_PROJECTION_ID, RUNS_STATE_VERSION, RunFilter,
    RunLedger, TelemetryTotals,
};
pub use workflows::{
    ChildResult, CompletedPhase, InterruptedWorkflow, PhaseState, PhaseStatus, PhaseToRelaunch,
    RelaunchReason, ResumePlan, WorkflowRun,
};

use crate::error::{Error, RejectReason, Result};
use crate::model::BuiltinEvent;
use crate::stream::StreamId;

/// A map looked up once per replayed event (rooms by id): foldhash, seeded per process, where
/// std's SipHash cost more than the rest of a posted message's apply; hashbrown's map, so the
/// replay's lookup compares keys in line ([`Name`]).
pub(crate) type Lookup<V> = hashbrown::HashMap<String, V, foldhash::fast::RandomState>;

/// A [`Lookup`] key borrowed: hashes as the `String` it finds, and compares with it in line, a
/// word at a time, rather than through a `memcmp` call as `&str` lookups do (which cost a tenth
/// of a replayed room message's apply).
pub(crate) struct Name<'a>(pub(crate) &'a str);

impl std::hash::Hash for Name<'_> {
    #[inline]
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // As `String` hashes: `Borrow<str>` makes the two agree.
        self.0.hash(state);
    }
}

impl hashbrown::Equivalent<String> for Name<'_> {
    #[inline]
    fn equivalent(&self, key: &String) -> bool {
        crate::envelope::same_bytes(self.0.as_bytes(), key.as_bytes())
    }
}

/// Serializes a [`Lookup`] in key order, as the `BTreeMap` it replaced: a snapshot's bytes
/// depend on the state only, never on the hasher's seed.
pub(crate) fn serialize_sorted<V: serde::Serialize, S: serde::Serializer>(
    map: &Lookup<V>,
    serializer: S,
) -> std::result::Result<S::Ok, S::Error> {
    let mut entries: Vec<(&String, &V)> = map.iter().collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    serializer.collect_map(entries)
}

/// Command validation against a built-in projection's current state: the engine calls it
/// before it writes, and refuses the append (writing nothing) on error.
///
/// Each projection checks only its own family of events (the run ledger `run.*` and
/// `workflow.*`, rooms `room.*`, jobs `job.*`) and lets the others pass, so the engine can ask
/// all three. `apply` uses the same rules, minus those that need `now_ms` (lease times), and
/// ignores an event that breaks them: whatever validation lets through, `apply` accepts.
pub trait ValidateCommand {
    /// Checks that `event` may be appended to `stream` at `now_ms` (engine clock).
    fn validate(&self, stream: &StreamId, event: &BuiltinEvent, now_ms: u64) -> Result<()>;
}

/// Everything that was running or claimed without a terminal event: what the engine's open
/// report lists after a restart. Nothing here is marked failed; the service decides.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interrupted {
    /// Runs not ended (pending, running, paused, awaiting user), with their last checkpoint.
    pub runs: Vec<InterruptedRun>,
    /// Workflows not ended, with their resume plan.
    pub workflows: Vec<InterruptedWorkflow>,
    /// Jobs claimed without a terminal event, with their last progress.
    pub jobs: Vec<InterruptedJob>,
}

/// Collects the interrupted work of the built-in projections.
pub fn interrupted(ledger: &RunLedger, jobs: &Jobs) -> Interrupted {
    Interrupted {
        runs: ledger.interrupted_runs(),
        workflows: ledger.interrupted_workflows(),
        jobs: jobs.interrupted(),
    }
}

/// A [`Error::Rejected`].
pub(crate) fn rejected(entity: &'static str, id: &str, reason: RejectReason) -> Error {
    Error::Rejected {
        entity,
        id: id.to_owned(),
        reason,
    }
}

/// Appends the items of `new` that `list` lacks, keeping at most `limit` items.
pub(crate) fn extend_unique(list: &mut Vec<String>, new: &[String], limit: usize) {
    for item in new {
        if list.len() >= limit {
            return;
        }
        if !list.contains(item) {
            list.push(item.clone());
        }
    }
}
