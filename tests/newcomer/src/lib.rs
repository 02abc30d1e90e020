//! A gateway's background-task registry on logbook, written from logbook's docs alone (the
//! newcomer trial of issue 12).
//!
//! Before: tasks lived in a map saved as one JSON file, rewritten on every change, with
//! `restored` / `upserted` / `deleted` hooks. Here each task change is an event on the task's
//! stream (`task-<id>`), the registry is a projection rebuilt at startup (from the newest
//! snapshot), the hooks are projection observers, and commands validate against the durable
//! state with `Logbook::execute`.

use logbook::serde::{Deserialize, Serialize};
use logbook::{
    CommandError, Event, EventResult, ExpectedVersion, Logbook, LogbookOptions, Observer,
    Projection, ProjectionHandle, Projections, RecordedEvent, StreamId, codec, restore_state,
    snapshot_state,
};
use std::collections::BTreeMap;
use std::path::Path;

/// The most bytes a task event's payload may decode from.
const TASK_EVENT_BYTES_MAX: usize = 64 * 1024;

/// Where a finished task's result goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(crate = "logbook::serde")]
pub struct Delivery {
    /// A channel name ("slack", "email", ...).
    pub channel: String,
    /// The address in that channel.
    pub target: String,
}

/// What happens to a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(crate = "logbook::serde")]
pub enum TaskEvent {
    /// A task was queued for a run.
    Queued {
        /// The agent run it belongs to.
        run_id: String,
        /// Where its result goes.
        delivery: Option<Delivery>,
    },
    /// A worker started it.
    Started,
    /// It finished: `error` is `None` on success.
    Finished {
        /// Why it failed.
        error: Option<String>,
    },
    /// Its result was delivered.
    Delivered,
}

impl Event for TaskEvent {
    fn event_type(&self) -> &'static str {
        match self {
            TaskEvent::Queued { .. } => "task.queued",
            TaskEvent::Started => "task.started",
            TaskEvent::Finished { .. } => "task.finished",
            TaskEvent::Delivered => "task.delivered",
        }
    }

    fn schema_version(&self) -> u16 {
        1
    }

    fn encode_payload(&self) -> EventResult<Vec<u8>> {
        codec::encode(self)
    }

    fn decode_payload(
        _event_type: &str,
        _schema_version: u16,
        payload: &[u8],
    ) -> EventResult<Self> {
        codec::decode(payload, TASK_EVENT_BYTES_MAX)
    }
}

/// A task's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(crate = "logbook::serde")]
pub enum Status {
    /// Waiting for a worker.
    Queued,
    /// A worker has it.
    Running,
    /// Done.
    Succeeded,
    /// Done, with an error.
    Failed,
}

/// One task, as the registry shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(crate = "logbook::serde")]
pub struct Task {
    /// The task id (its stream is `task-<id>`).
    pub id: String,
    /// The agent run it belongs to.
    pub run_id: String,
    /// Where it is.
    pub status: Status,
    /// When it was queued (ms since the epoch, the log's clock).
    pub created_ms: u64,
    /// When it last changed.
    pub updated_ms: u64,
    /// Where its result goes.
    pub delivery: Option<Delivery>,
    /// Whether the result was delivered.
    pub delivered: bool,
    /// The failure, if it failed.
    pub error: Option<String>,
}

/// The registry: every task by id.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    tasks: BTreeMap<String, Task>,
}

const REGISTRY_ID: &str = "gateway.tasks";
const REGISTRY_STATE_VERSION: u16 = 1;
const STREAM_PREFIX: &str = "task-";

impl Registry {
    /// A task by id.
    pub fn get(&self, id: &str) -> Option<&Task> {
        self.tasks.get(id)
    }

    /// Every task, by id.
    pub fn tasks(&self) -> impl Iterator<Item = &Task> {
        self.tasks.values()
    }

    fn id_of(stream: &StreamId) -> &str {
        stream
            .as_str()
            .strip_prefix(STREAM_PREFIX)
            .unwrap_or(stream.as_str())
    }
}

impl Projection for Registry {
    type Event = TaskEvent;

    fn id(&self) -> &'static str {
        REGISTRY_ID
    }

    fn state_version(&self) -> u16 {
        REGISTRY_STATE_VERSION
    }

    fn apply(&mut self, event: &RecordedEvent<TaskEvent>) {
        let id = Self::id_of(&event.stream).to_owned();
        let at = event.timestamp_ms;
        if let TaskEvent::Queued { run_id, delivery } = &event.event {
            self.tasks.insert(
                id.clone(),
                Task {
                    id,
                    run_id: run_id.clone(),
                    status: Status::Queued,
                    created_ms: at,
                    updated_ms: at,
                    delivery: delivery.clone(),
                    delivered: false,
                    error: None,
                },
            );
            return;
        }
        // Commands refuse events for unknown tasks, so every other event finds its task.
        let Some(task) = self.tasks.get_mut(&id) else {
            return;
        };
        task.updated_ms = at;
        match &event.event {
            TaskEvent::Queued { .. } => {}
            TaskEvent::Started => task.status = Status::Running,
            TaskEvent::Finished { error } => {
                task.status = if error.is_some() {
                    Status::Failed
                } else {
                    Status::Succeeded
                };
                task.error.clone_from(error);
            }
            TaskEvent::Delivered => task.delivered = true,
        }
    }

    fn snapshot(&self) -> EventResult<Vec<u8>> {
        snapshot_state(&self.tasks)
    }

    fn restore(&mut self, state_version: u16, bytes: &[u8]) -> EventResult<()> {
        self.tasks = restore_state(REGISTRY_ID, REGISTRY_STATE_VERSION, state_version, bytes)?;
        Ok(())
    }

    fn stream_deleted(&mut self, stream: &StreamId) -> bool {
        self.tasks.remove(Self::id_of(stream)).is_some()
    }

    fn stream_truncated(&mut self, _stream: &StreamId, _before_version: u64) -> bool {
        // A task's state is its whole history; the registry never truncates task streams.
        false
    }
}

/// Why a task command was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// No task has that id.
    UnknownTask,
    /// A task with that id exists already.
    DuplicateTask,
    /// The task is not in a status that allows the command.
    WrongStatus(Status),
}

/// The registry service: the log, the projection, and commands.
pub struct TaskRegistry {
    log: Logbook<TaskEvent>,
    registry: ProjectionHandle<Registry>,
}

/// What a command returns.
pub type CommandResult = Result<(), CommandError<Refused>>;

fn stream_of(id: &str) -> Result<StreamId, logbook::Error> {
    Ok(StreamId::new(format!("{STREAM_PREFIX}{id}"))?)
}

impl TaskRegistry {
    /// Opens (or creates) the registry's log in `dir`; `observer` gets `restored` once the
    /// registry is rebuilt, then `upserted` / `deleted` for each durable change.
    pub async fn open(
        dir: &Path,
        options: LogbookOptions,
        observer: Option<Box<dyn Observer<Registry>>>,
    ) -> logbook::Result<Self> {
        let mut projections = Projections::new();
        let registry = projections.register(Registry::default());
        if let Some(observer) = observer {
            registry.observe(observer);
        }
        let (log, _report) = Logbook::open_dir_with_projections(dir, options, projections).await?;
        Ok(TaskRegistry { log, registry })
    }

    /// The registry as of now (every acknowledged command is in it).
    pub fn registry(&self) -> &ProjectionHandle<Registry> {
        &self.registry
    }

    /// The log underneath.
    pub fn log(&self) -> &Logbook<TaskEvent> {
        &self.log
    }

    /// Queues a new task.
    pub async fn queue(&self, id: &str, run_id: &str, delivery: Option<Delivery>) -> CommandResult {
        let stream = stream_of(id)?;
        let event = TaskEvent::Queued {
            run_id: run_id.to_owned(),
            delivery,
        };
        self.log
            .execute(&self.registry, &stream, |state: &Registry| {
                match state.get(id) {
                    Some(_) => Err(Refused::DuplicateTask),
                    None => Ok(vec![event.clone()]),
                }
            })
            .await?;
        Ok(())
    }

    /// A worker takes a queued task.
    pub async fn start(&self, id: &str) -> CommandResult {
        self.transition(id, &[Status::Queued], TaskEvent::Started)
            .await
    }

    /// The task finished (`error` `None`: it succeeded).
    pub async fn finish(&self, id: &str, error: Option<String>) -> CommandResult {
        self.transition(id, &[Status::Running], TaskEvent::Finished { error })
            .await
    }

    /// Its result was delivered.
    pub async fn delivered(&self, id: &str) -> CommandResult {
        self.transition(
            id,
            &[Status::Succeeded, Status::Failed],
            TaskEvent::Delivered,
        )
        .await
    }

    /// Forgets a task for good: its events are gone from reads now, and from every file after
    /// the next compaction.
    pub async fn forget(&self, id: &str) -> CommandResult {
        let stream = stream_of(id)?;
        let version = self
            .log
            .stream_version(&stream)?
            .ok_or(CommandError::Rejected(Refused::UnknownTask))?;
        self.log
            .delete_stream(&stream, ExpectedVersion::Exact(version))
            .await?;
        Ok(())
    }

    async fn transition(&self, id: &str, from: &[Status], event: TaskEvent) -> CommandResult {
        let stream = stream_of(id)?;
        self.log
            .execute(&self.registry, &stream, |state: &Registry| {
                let task = state.get(id).ok_or(Refused::UnknownTask)?;
                if from.contains(&task.status) {
                    Ok(vec![event.clone()])
                } else {
                    Err(Refused::WrongStatus(task.status))
                }
            })
            .await?;
        Ok(())
    }

    /// Flushes and closes the log.
    pub async fn close(self) -> logbook::Result<()> {
        self.log.close().await
    }
}
