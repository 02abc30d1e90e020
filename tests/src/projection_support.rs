//! Helpers for the projection tests (`tests/tests/projection_*.rs`): built-in events by name,
//! opening a [`BuiltinLog`] on memory, capturing its projected state and comparing two captures
//! entity by entity, and pulling a typed refusal out of an engine error.
//!
//! Owns: [`RoomEditsMirror`] (the engine keeps its `RoomEdits` projection private; a mirror
//! registered beside it is fed the very same events, so its state is the engine's) and
//! [`BuiltinState`]. Must never: apply events itself; every state here is the engine's.

use logbook::model::{
    JobClaimed, JobHeartbeat, JobProgress, JobQueued, RoomCreated, RoomMessagePosted, RunKind,
    RunStarted, WorkflowPhaseStarted, WorkflowStarted,
};
use logbook::{
    BuiltinEvent, BuiltinLog, Jobs, LogbookOptions, ManualClock, MemoryStorage, PageRequest,
    Projection, ProjectionHandle, Projections, RecordedEvent, RoomEdits, Rooms, RunLedger,
    StreamId,
};
use logbook_projection::RejectReason;
use logbook_projection::projections::RunFilter;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Where the tests' logs start their clocks: 2023-11-14, so timestamps look real.
pub const CLOCK_START_MS: u64 = 1_700_000_000_000;

/// The engine's `RoomEdits`, under another id so it can be registered beside the engine's own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomEditsMirror(pub RoomEdits);

impl Projection for RoomEditsMirror {
    type Event = BuiltinEvent;

    fn id(&self) -> &'static str {
        "tests.room_edits_mirror"
    }

    fn state_version(&self) -> u16 {
        self.0.state_version()
    }

    fn apply(&mut self, event: &RecordedEvent<BuiltinEvent>) {
        self.0.apply(event);
    }

    fn snapshot(&self) -> logbook_projection::Result<Vec<u8>> {
        self.0.snapshot()
    }

    fn restore(&mut self, state_version: u16, bytes: &[u8]) -> logbook_projection::Result<()> {
        self.0.restore(state_version, bytes)
    }

    fn stream_deleted(&mut self, stream: &StreamId) -> bool {
        self.0.stream_deleted(stream)
    }

    fn stream_truncated(&mut self, stream: &StreamId, before_version: u64) -> bool {
        self.0.stream_truncated(stream, before_version)
    }
}

/// A built-in log with the handle of its edits mirror.
pub struct OpenedLog {
    /// The log.
    pub log: BuiltinLog,
    /// The open report.
    pub report: logbook::BuiltinOpenReport,
    /// The mirror of the engine's `RoomEdits`.
    pub edits: ProjectionHandle<RoomEditsMirror>,
}

/// Engine options for projection tests: `SyncPolicy::Always`, small segments, the given clock,
/// and no periodic snapshots, so every open is a full replay of the log.
pub fn clocked_options(clock: &ManualClock) -> LogbookOptions {
    let mut options = crate::test_options();
    options.clock = Arc::new(clock.clone());
    options.snapshots.every_events = 0;
    options.snapshots.every_bytes = 0;
    options.snapshots.every = std::time::Duration::ZERO;
    options
}

/// Opens a [`BuiltinLog`] in `/log` on `storage`, with a [`RoomEditsMirror`].
pub async fn open_memory(storage: &Arc<MemoryStorage>, options: LogbookOptions) -> OpenedLog {
    let mut projections = Projections::new();
    let edits = projections.register(RoomEditsMirror::default());
    let (log, report) =
        BuiltinLog::open_with(storage.clone(), crate::MEMORY_DIR, options, projections)
            .await
            .expect("open the built-in log");
    OpenedLog { log, report, edits }
}

/// What one stream looks like in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamSummary {
    /// Events of the stream in the log (deleted streams' events included until compaction).
    pub events: u64,
    /// The version of its last event.
    pub last_version: u64,
    /// Whether it is deleted.
    pub deleted: bool,
}

/// Everything the built-in model rebuilds from a log, captured at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltinState {
    /// The run ledger.
    pub runs: RunLedger,
    /// Rooms.
    pub rooms: Rooms,
    /// Jobs.
    pub jobs: Jobs,
    /// The engine's room edits (through the mirror).
    pub edits: RoomEdits,
    /// Every stream with events (engine events left out), from `read_all_raw`.
    pub streams: BTreeMap<String, StreamSummary>,
}

impl BuiltinState {
    /// Captures the projections' durable state and the streams of the log.
    pub async fn capture(opened: &OpenedLog) -> BuiltinState {
        let log = &opened.log;
        log.log().sync().await.expect("sync before capture");
        let mut streams: BTreeMap<String, StreamSummary> = BTreeMap::new();
        let mut from = 1;
        loop {
            let raws = log
                .log()
                .read_all_raw(from, 512)
                .await
                .expect("read_all_raw");
            let Some(last) = raws.last() else { break };
            from = last.position + 1;
            for raw in &raws {
                let name = raw.envelope.stream().as_str();
                if name == logbook::system::SYSTEM_STREAM {
                    continue;
                }
                let summary = streams.entry(name.to_owned()).or_insert(StreamSummary {
                    events: 0,
                    last_version: 0,
                    deleted: false,
                });
                summary.events += 1;
                summary.last_version = raw.envelope.stream_version();
            }
        }
        for (name, summary) in &mut streams {
            let stream = StreamId::new(name.clone()).expect("a stream read from the log");
            summary.deleted = matches!(
                log.log().stream_version(&stream),
                Err(logbook::Error::StreamDeleted { .. })
            );
        }
        BuiltinState {
            runs: log.runs().read().clone(),
            rooms: log.rooms().read().clone(),
            jobs: log.jobs().read().clone(),
            edits: opened.edits.read().0.clone(),
            streams,
        }
    }

    /// Snapshot bytes of each projection, by id.
    pub fn snapshots(&self) -> Vec<(&'static str, Vec<u8>)> {
        vec![
            (self.runs.id(), self.runs.snapshot().expect("snapshot runs")),
            (
                self.rooms.id(),
                self.rooms.snapshot().expect("snapshot rooms"),
            ),
            (self.jobs.id(), self.jobs.snapshot().expect("snapshot jobs")),
            (
                self.edits.id(),
                self.edits.snapshot().expect("snapshot room edits"),
            ),
        ]
    }
}

/// Asserts that two captures are the same, entity by entity first (so a failure names the
/// entity), then whole, then by snapshot bytes. `context` says which two states these are.
pub fn assert_same_state(expected: &BuiltinState, actual: &BuiltinState, context: &str) {
    let all = PageRequest::first(1000);
    let run_ids = |state: &BuiltinState| -> Vec<String> {
        let page = state.runs.list_runs(&RunFilter::default(), &all);
        page.items.iter().map(|run| run.run_id.clone()).collect()
    };
    assert_eq!(run_ids(expected), run_ids(actual), "{context}: run ids");
    for id in run_ids(expected) {
        assert_eq!(
            expected.runs.run(&id),
            actual.runs.run(&id),
            "{context}: run {id}"
        );
        assert_eq!(
            expected.runs.children(&id),
            actual.runs.children(&id),
            "{context}: children of run {id}"
        );
    }
    let workflow_ids = |state: &BuiltinState| -> Vec<String> {
        let page = state.runs.list_workflows(None, &all);
        page.items
            .iter()
            .map(|workflow| workflow.workflow_id.clone())
            .collect()
    };
    assert_eq!(
        workflow_ids(expected),
        workflow_ids(actual),
        "{context}: workflow ids"
    );
    for id in workflow_ids(expected) {
        assert_eq!(
            expected.runs.workflow(&id),
            actual.runs.workflow(&id),
            "{context}: workflow {id}"
        );
        assert_eq!(
            expected.runs.resume_plan(&id).ok(),
            actual.runs.resume_plan(&id).ok(),
            "{context}: resume plan of workflow {id}"
        );
    }
    let room_ids = |state: &BuiltinState| -> Vec<String> {
        let page = state.rooms.list_rooms(true, &all);
        page.items.iter().map(|room| room.room_id.clone()).collect()
    };
    assert_eq!(room_ids(expected), room_ids(actual), "{context}: room ids");
    for id in room_ids(expected) {
        assert_eq!(
            expected.rooms.room(&id),
            actual.rooms.room(&id),
            "{context}: room {id}"
        );
    }
    let job_ids = |state: &BuiltinState| -> Vec<String> {
        let page = state.jobs.list_jobs(None, &all);
        page.items.iter().map(|job| job.job_id.clone()).collect()
    };
    assert_eq!(job_ids(expected), job_ids(actual), "{context}: job ids");
    for id in job_ids(expected) {
        assert_eq!(
            expected.jobs.job(&id),
            actual.jobs.job(&id),
            "{context}: job {id}"
        );
    }
    assert_eq!(expected.streams, actual.streams, "{context}: streams");
    assert_eq!(expected.runs, actual.runs, "{context}: run ledger");
    assert_eq!(expected.rooms, actual.rooms, "{context}: rooms");
    assert_eq!(expected.jobs, actual.jobs, "{context}: jobs");
    assert_eq!(expected.edits, actual.edits, "{context}: room edits");
    for ((id, expected_bytes), (_, actual_bytes)) in
        expected.snapshots().into_iter().zip(actual.snapshots())
    {
        assert!(
            expected_bytes == actual_bytes,
            "{context}: snapshot bytes of {id} differ"
        );
    }
}

/// The reason of a refused command: panics unless `result` is
/// `Error::Event(logbook_projection::Error::Rejected { .. })`.
pub fn rejected_reason<T: std::fmt::Debug>(result: logbook::Result<T>) -> RejectReason {
    match result {
        Err(logbook::Error::Event(logbook_projection::Error::Rejected { reason, .. })) => reason,
        other => panic!("expected a refused command, got {other:?}"),
    }
}

/// The last position written to the log (durable or not).
pub fn head(log: &BuiltinLog) -> u64 {
    log.log().stats().head_position
}

/// `run.started` of a run of `kind` by `agent`.
pub fn run_started(
    kind: RunKind,
    agent: &str,
    parent: Option<&str>,
    workflow: Option<&str>,
) -> BuiltinEvent {
    RunStarted {
        kind,
        agent_id: agent.to_owned(),
        parent_run_id: parent.map(str::to_owned),
        parent_thread_id: None,
        prompt_ref: None,
        worker_thread_id: None,
        task_board_ref: None,
        task_card_ref: None,
        workflow_id: workflow.map(str::to_owned),
    }
    .into()
}

/// `workflow.started` with these phases.
pub fn workflow_started(definition: &str, phases: &[&str]) -> BuiltinEvent {
    WorkflowStarted {
        definition_id: definition.to_owned(),
        parent_thread_id: None,
        input: "{}".to_owned(),
        phases: phases.iter().map(|phase| (*phase).to_owned()).collect(),
    }
    .into()
}

/// `workflow.phase_started` with these children.
pub fn phase_started(phase: &str, children: &[&str]) -> BuiltinEvent {
    WorkflowPhaseStarted {
        phase: phase.to_owned(),
        child_run_ids: children.iter().map(|child| (*child).to_owned()).collect(),
    }
    .into()
}

/// `room.created`.
pub fn room_created(name: &str) -> BuiltinEvent {
    RoomCreated {
        name: name.to_owned(),
        topic: None,
        created_by: None,
    }
    .into()
}

/// `room.message_posted`.
pub fn message_posted(message_id: &str, author: &str, body: &str) -> BuiltinEvent {
    RoomMessagePosted {
        message_id: message_id.to_owned(),
        author: author.to_owned(),
        body: body.to_owned(),
    }
    .into()
}

/// `job.queued`.
pub fn job_queued(kind: &str) -> BuiltinEvent {
    JobQueued {
        kind: kind.to_owned(),
        input: "{}".to_owned(),
    }
    .into()
}

/// `job.claimed` until `lease_expires_at_ms`.
pub fn job_claimed(worker: &str, lease_expires_at_ms: u64) -> BuiltinEvent {
    JobClaimed {
        worker: worker.to_owned(),
        lease_expires_at_ms,
    }
    .into()
}

/// `job.heartbeat` extending to `lease_expires_at_ms`.
pub fn job_heartbeat(worker: &str, lease_expires_at_ms: u64) -> BuiltinEvent {
    JobHeartbeat {
        worker: worker.to_owned(),
        lease_expires_at_ms,
    }
    .into()
}

/// `job.progress` at `percent`.
pub fn job_progress(stage: &str, percent: u8) -> BuiltinEvent {
    JobProgress {
        stage: Some(stage.to_owned()),
        percent: Some(percent),
        done: None,
        total: None,
        message: None,
    }
    .into()
}
