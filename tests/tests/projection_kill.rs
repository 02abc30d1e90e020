//! Restart after SIGKILL: a child process (`projection_kill_child`) runs workflows, jobs and
//! runs on a real directory with `SyncPolicy::Always`, taking over what the previous child
//! left interrupted, and prints every acknowledged command. The test kills it with SIGKILL
//! after a random number of acknowledgements, reopens the log and checks that
//! - every printed event is in the log, at its position, with its stream, version and data;
//! - the log holds nothing else but, at most, the one command in flight at the kill;
//! - the open report's `interrupted` lists exactly the runs, workflows and jobs that were
//!   started or claimed without a terminal event, with their latest checkpoint, run event and
//!   progress, computed here from the events by a plain model;
//! - each interrupted workflow's resume plan lists exactly the completed phases with their
//!   result refs and the phases (and children) to relaunch.
//!
//! Cycles: `LOGBOOK_KILL_CYCLES` (default 10); seed: `LOGBOOK_KILL_SEED`.

use logbook::builtin_projections::{
    ChildResult, CompletedPhase, PhaseStatus, PhaseToRelaunch, RelaunchReason, ResumePlan,
};
use logbook::model::{CheckpointReason, RunKind, RunStatus};
use logbook::{BuiltinEvent, BuiltinLog, Interrupted, RawEvent};
use logbook_projection::projections::JobStatus;
use logbook_tests::child::LineChild;
use logbook_tests::{SplitMix, seed_from_env, test_options};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const CHILD: &str = env!("CARGO_BIN_EXE_projection_kill_child");

/// One acknowledged command, as the child printed it.
#[derive(Debug, Clone)]
struct Ack {
    stream: String,
    event_type: String,
    position: u64,
    version: u64,
    data: serde_json::Value,
}

fn parse_ack(line: &str) -> Ack {
    let value: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|error| panic!("bad line {line:?}: {error}"));
    let text = |key: &str| value[key].as_str().unwrap().to_owned();
    let number = |key: &str| value[key].as_u64().unwrap();
    Ack {
        stream: text("stream"),
        event_type: text("type"),
        position: number("position"),
        version: number("version"),
        data: value["data"].clone(),
    }
}

/// Runs one child until it has acknowledged `kill_after` commands, kills it with SIGKILL, and
/// returns every command it acknowledged (the lines still in the pipe included).
fn run_and_kill(dir: &Path, seed: u64, kill_after: usize) -> Vec<Ack> {
    let mut child = LineChild::spawn(Command::new(CHILD).arg(dir).arg(seed.to_string()));
    let mut acks = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while acks.len() < kill_after {
        acks.push(parse_ack(&child.expect_line(deadline)));
    }
    // SIGKILL on Unix: no destructor runs, nothing is flushed or unlocked.
    acks.extend(child.kill().iter().map(|line| parse_ack(line)));
    acks
}

#[derive(Debug, Clone)]
struct RunModel {
    kind: RunKind,
    status: RunStatus,
    workflow: Option<String>,
    checkpoint: Option<(CheckpointReason, String, u64)>,
    last_sequence: Option<u64>,
    result_ref: Option<String>,
    created: u64,
}

#[derive(Debug, Clone)]
struct PhaseModel {
    name: String,
    status: PhaseStatus,
    children: Vec<String>,
    result_ref: Option<String>,
    error: Option<String>,
}

#[derive(Debug, Clone)]
struct WorkflowModel {
    definition: String,
    ended: bool,
    phases: Vec<PhaseModel>,
    created: u64,
}

#[derive(Debug, Clone)]
struct JobModel {
    kind: String,
    status: JobStatus,
    claim: Option<(String, u64)>,
    attempts: u64,
    progress: Option<ProgressView>,
    created: u64,
}

/// A job's progress without its timestamp (the child's clock is not known here).
type ProgressView = (
    Option<String>,
    Option<u8>,
    Option<u64>,
    Option<u64>,
    Option<String>,
);

/// What the events say, computed plainly (not with the projections under test).
#[derive(Debug, Default)]
struct Model {
    runs: BTreeMap<String, RunModel>,
    workflows: BTreeMap<String, WorkflowModel>,
    jobs: BTreeMap<String, JobModel>,
}

fn extend_unique(list: &mut Vec<String>, items: &[String]) {
    for item in items {
        if !list.contains(item) {
            list.push(item.clone());
        }
    }
}

impl Model {
    fn phase(&mut self, workflow: &str, name: &str) -> &mut PhaseModel {
        let phases = &mut self.workflows.get_mut(workflow).unwrap().phases;
        if !phases.iter().any(|phase| phase.name == name) {
            phases.push(PhaseModel {
                name: name.to_owned(),
                status: PhaseStatus::Pending,
                children: Vec::new(),
                result_ref: None,
                error: None,
            });
        }
        phases.iter_mut().find(|phase| phase.name == name).unwrap()
    }

    fn apply(&mut self, entity: &str, position: u64, version: u64, event: &BuiltinEvent) {
        fn run<'a>(model: &'a mut Model, id: &str) -> &'a mut RunModel {
            model.runs.get_mut(id).unwrap()
        }
        fn job<'a>(model: &'a mut Model, id: &str) -> &'a mut JobModel {
            model.jobs.get_mut(id).unwrap()
        }
        match event {
            BuiltinEvent::RunStarted(started) => {
                let run = RunModel {
                    kind: started.kind,
                    status: RunStatus::Running,
                    workflow: started.workflow_id.clone(),
                    checkpoint: None,
                    last_sequence: None,
                    result_ref: None,
                    created: position,
                };
                self.runs.insert(entity.to_owned(), run);
            }
            BuiltinEvent::RunStatusChanged(changed) => run(self, entity).status = changed.status,
            BuiltinEvent::RunEvent(run_event) => {
                run(self, entity).last_sequence = Some(run_event.sequence);
            }
            BuiltinEvent::RunCheckpointed(checkpoint) => {
                let data = checkpoint.data.clone();
                run(self, entity).checkpoint = Some((checkpoint.reason, data, version));
            }
            BuiltinEvent::RunTelemetry(_) => {}
            BuiltinEvent::RunCompleted(done) => {
                let run = run(self, entity);
                run.status = RunStatus::Completed;
                run.result_ref.clone_from(&done.result_ref);
            }
            BuiltinEvent::RunFailed(_) => run(self, entity).status = RunStatus::Failed,
            BuiltinEvent::RunCancelled(_) => run(self, entity).status = RunStatus::Cancelled,
            BuiltinEvent::WorkflowStarted(started) => {
                let workflow = WorkflowModel {
                    definition: started.definition_id.clone(),
                    ended: false,
                    phases: Vec::new(),
                    created: position,
                };
                self.workflows.insert(entity.to_owned(), workflow);
                for phase in &started.phases {
                    self.phase(entity, phase);
                }
            }
            BuiltinEvent::WorkflowPhaseStarted(e) => {
                let phase = self.phase(entity, &e.phase);
                phase.status = PhaseStatus::Running;
                phase.error = None;
                extend_unique(&mut phase.children, &e.child_run_ids);
            }
            BuiltinEvent::WorkflowPhaseCompleted(e) => {
                let phase = self.phase(entity, &e.phase);
                phase.status = PhaseStatus::Completed;
                phase.result_ref.clone_from(&e.result_ref);
                extend_unique(&mut phase.children, &e.child_run_ids);
            }
            BuiltinEvent::WorkflowPhaseFailed(e) => {
                let phase = self.phase(entity, &e.phase);
                phase.status = PhaseStatus::Failed;
                phase.error = Some(e.error.clone());
                extend_unique(&mut phase.children, &e.child_run_ids);
            }
            BuiltinEvent::WorkflowCompleted(_) => {
                self.workflows.get_mut(entity).unwrap().ended = true;
            }
            BuiltinEvent::JobQueued(queued) => match self.jobs.get_mut(entity) {
                Some(job) => {
                    job.status = JobStatus::Queued;
                    job.progress = None;
                }
                None => {
                    let job = JobModel {
                        kind: queued.kind.clone(),
                        status: JobStatus::Queued,
                        claim: None,
                        attempts: 0,
                        progress: None,
                        created: position,
                    };
                    self.jobs.insert(entity.to_owned(), job);
                }
            },
            BuiltinEvent::JobClaimed(claimed) => {
                let job = job(self, entity);
                job.status = JobStatus::Claimed;
                job.attempts += 1;
                job.claim = Some((claimed.worker.clone(), claimed.lease_expires_at_ms));
            }
            BuiltinEvent::JobHeartbeat(heartbeat) => {
                if let Some((_, lease)) = &mut job(self, entity).claim {
                    *lease = (*lease).max(heartbeat.lease_expires_at_ms);
                }
            }
            BuiltinEvent::JobProgress(p) => {
                job(self, entity).progress = Some((
                    p.stage.clone(),
                    p.percent,
                    p.done,
                    p.total,
                    p.message.clone(),
                ));
            }
            BuiltinEvent::JobSucceeded(_) => {
                let job = job(self, entity);
                job.status = JobStatus::Succeeded;
                job.claim = None;
            }
            BuiltinEvent::JobFailed(_) => {
                let job = job(self, entity);
                job.status = JobStatus::Failed;
                job.claim = None;
            }
            other => panic!("the child does not write {other:?}"),
        }
    }

    fn resume_plan(&self, id: &str) -> ResumePlan {
        let workflow = &self.workflows[id];
        let mut plan = ResumePlan {
            workflow_id: id.to_owned(),
            completed: Vec::new(),
            to_relaunch: Vec::new(),
        };
        for phase in &workflow.phases {
            let reason = match phase.status {
                PhaseStatus::Completed => {
                    plan.completed.push(CompletedPhase {
                        phase: phase.name.clone(),
                        result_ref: phase.result_ref.clone(),
                        child_run_ids: phase.children.clone(),
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
            for child in &phase.children {
                match self.runs.get(child) {
                    Some(run) if run.status == RunStatus::Completed => {
                        relaunch.completed_children.push(ChildResult {
                            run_id: child.clone(),
                            result_ref: run.result_ref.clone(),
                        });
                    }
                    _ => relaunch.children_to_relaunch.push(child.clone()),
                }
            }
            plan.to_relaunch.push(relaunch);
        }
        plan
    }
}

type RunView = (
    String,
    RunKind,
    RunStatus,
    Option<String>,
    Option<(CheckpointReason, String, u64)>,
    Option<u64>,
);
type JobView = (String, String, String, u64, u64, Option<ProgressView>);

/// The interrupted report in comparable form (timestamps left out).
fn views(interrupted: &Interrupted) -> (Vec<RunView>, Vec<(String, String)>, Vec<JobView>) {
    let runs = interrupted
        .runs
        .iter()
        .map(|run| {
            let checkpoint = run.checkpoint.as_ref().map(|checkpoint| {
                let data = checkpoint.data.clone();
                (checkpoint.reason, data, checkpoint.stream_version)
            });
            let workflow = run.workflow_id.clone();
            let sequence = run.last_run_event_sequence;
            (
                run.run_id.clone(),
                run.kind,
                run.status,
                workflow,
                checkpoint,
                sequence,
            )
        })
        .collect();
    let workflows = interrupted
        .workflows
        .iter()
        .map(|workflow| (workflow.workflow_id.clone(), workflow.definition_id.clone()))
        .collect();
    let jobs = interrupted
        .jobs
        .iter()
        .map(|job| {
            let progress = job.progress.as_ref().map(|p| {
                (
                    p.stage.clone(),
                    p.percent,
                    p.done,
                    p.total,
                    p.message.clone(),
                )
            });
            let claim = &job.claim;
            let worker = claim.worker.clone();
            let lease = claim.lease_expires_at_ms;
            (
                job.job_id.clone(),
                job.kind.clone(),
                worker,
                lease,
                job.attempts,
                progress,
            )
        })
        .collect();
    (runs, workflows, jobs)
}

impl Model {
    fn expected(&self) -> (Vec<RunView>, Vec<(String, String)>, Vec<JobView>) {
        let mut runs: Vec<_> = self
            .runs
            .iter()
            .filter(|(_, run)| !run.status.is_terminal())
            .collect();
        runs.sort_by_key(|(_, run)| run.created);
        let runs = runs
            .into_iter()
            .map(|(id, run)| {
                let workflow = run.workflow.clone();
                let checkpoint = run.checkpoint.clone();
                (
                    id.clone(),
                    run.kind,
                    run.status,
                    workflow,
                    checkpoint,
                    run.last_sequence,
                )
            })
            .collect();
        let mut workflows: Vec<_> = self
            .workflows
            .iter()
            .filter(|(_, workflow)| !workflow.ended)
            .collect();
        workflows.sort_by_key(|(_, workflow)| workflow.created);
        let workflows = workflows
            .into_iter()
            .map(|(id, workflow)| (id.clone(), workflow.definition.clone()))
            .collect();
        let mut jobs: Vec<_> = self
            .jobs
            .iter()
            .filter(|(_, job)| job.status == JobStatus::Claimed)
            .collect();
        jobs.sort_by_key(|(_, job)| job.created);
        let jobs = jobs
            .into_iter()
            .map(|(id, job)| {
                let (worker, lease) = job.claim.clone().unwrap();
                let progress = job.progress.clone();
                (
                    id.clone(),
                    job.kind.clone(),
                    worker,
                    lease,
                    job.attempts,
                    progress,
                )
            })
            .collect();
        (runs, workflows, jobs)
    }
}

/// Reopens the log and checks it against every acknowledgement so far. Returns the log's
/// last position and how many entities were interrupted.
fn check(dir: &Path, acks: &BTreeMap<u64, Ack>, cycle_starts: &[u64]) -> (u64, usize) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (log, report) = BuiltinLog::open(dir, test_options())
            .await
            .expect("reopen after SIGKILL");
        let raws: Vec<RawEvent> = log.log().read_all_raw(1, usize::MAX).await.unwrap();
        let mut model = Model::default();
        let mut in_flight = BTreeSet::new();
        for (raw, position) in raws.iter().zip(1..) {
            assert_eq!(raw.position, position, "the child alone writes: no gaps");
            let recorded = raw.decode::<BuiltinEvent>().expect("decodes");
            match acks.get(&position) {
                Some(ack) => {
                    assert_eq!(ack.stream, recorded.stream.as_str(), "at {position}");
                    assert_eq!(ack.event_type, recorded.event_type, "at {position}");
                    assert_eq!(ack.version, recorded.version, "at {position}");
                    assert_eq!(ack.data, recorded.event.to_json(), "at {position}");
                }
                // Durable but not printed: the command in flight when the child was killed.
                None => {
                    in_flight.insert(position);
                }
            }
            let entity = recorded.stream.entity_id();
            model.apply(entity, position, recorded.version, &recorded.event);
        }
        let last = raws.last().map_or(0, |raw| raw.position);
        for position in acks.keys() {
            assert!(*position <= last, "acknowledged event {position} lost");
        }
        // Each in-flight event is the last of its child's run, right after its last ack.
        for position in &in_flight {
            let next = position + 1;
            let ends_a_cycle = next > last || cycle_starts.contains(&next);
            assert!(
                ends_a_cycle,
                "unacknowledged event {position} in the middle of a run"
            );
        }
        assert!(in_flight.len() <= cycle_starts.len());

        let interrupted = &report.interrupted;
        assert_eq!(
            views(interrupted),
            model.expected(),
            "the interrupted report"
        );
        for workflow in &interrupted.workflows {
            let expected = model.resume_plan(&workflow.workflow_id);
            assert_eq!(workflow.plan, expected, "resume plan in the report");
            assert_eq!(log.resume_plan(&workflow.workflow_id).unwrap(), expected);
        }
        let count = interrupted.runs.len() + interrupted.workflows.len() + interrupted.jobs.len();
        log.close().await.unwrap();
        (last, count)
    })
}

#[test]
fn interrupted_work_is_exactly_right_after_sigkill() {
    let cycles: u32 = std::env::var("LOGBOOK_KILL_CYCLES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(10);
    let mut random = SplitMix(seed_from_env("LOGBOOK_KILL_SEED"));
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("log");
    let started = Instant::now();
    let mut acks: BTreeMap<u64, Ack> = BTreeMap::new();
    let mut cycle_starts = Vec::new();
    let mut last = 0;
    let mut interrupted_seen = 0;
    for cycle in 0..cycles {
        let kill_after = random.range(1, 60) as usize;
        cycle_starts.push(last + 1);
        let printed = run_and_kill(&dir, random.next_u64(), kill_after);
        assert!(printed.len() >= kill_after, "cycle {cycle}");
        for ack in printed {
            assert!(ack.position > last, "cycle {cycle}: positions ascend");
            assert!(acks.insert(ack.position, ack).is_none());
        }
        let (new_last, interrupted) = check(&dir, &acks, &cycle_starts);
        last = new_last;
        interrupted_seen += interrupted;
    }
    eprintln!(
        "{cycles} kills, {} acknowledged commands, {last} events, {interrupted_seen} \
         interrupted entities over all reopens, {:?}",
        acks.len(),
        started.elapsed()
    );
    assert!(
        interrupted_seen > 0,
        "nothing was ever interrupted: the test tested nothing"
    );
}
