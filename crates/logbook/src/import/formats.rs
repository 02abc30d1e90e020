//! The accepted JSON shapes (`docs/import.md`) and the built-in events each one becomes.
//!
//! Owns: [`Format`] and its three implementations: [`Tasks`] (a task registry snapshot into
//! `job/<id>` streams), [`Room`] (one room file into `room/<id>`: `room.created`, members,
//! messages in order) and [`Runs`] (a run ledger dump into `run/<id>` streams with parents,
//! events and telemetry); where an original time goes: the envelope's timestamp of each event
//! ([`NewEvent::with_timestamp_ms`], what the projections show) and its causation id
//! `<JSON path>@<ms>`.
//! Must never: do I/O, or accept a value the built-in model would refuse later (every event is
//! encoded and validated here, in the checking pass, before anything is written).

use super::parse::{Location, import_error};
use crate::error::{Error, Result};
use logbook_projection::model::{
    JobCancelled, JobClaimed, JobFailed, JobQueued, JobSucceeded, RoomCreated, RoomMemberJoined,
    RoomMessagePosted, RunCancelled, RunCompleted, RunEvent, RunFailed, RunKind, RunStarted,
    RunStatus, RunStatusChanged, RunTelemetry,
};
use logbook_projection::stream::STREAM_ID_BYTES_MAX;
use logbook_projection::{BuiltinEvent, NewEvent, StreamId};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;

/// The most members a room file may list (the model's list limit).
pub const ROOM_MEMBERS_MAX: usize = logbook_projection::model::validate::LIST_ITEMS_MAX;

/// What every event of one import shares.
pub(crate) struct Context {
    /// `import/<sha256>`: the correlation id of every event, and the marker's stream.
    pub(crate) correlation_id: String,
    /// The largest encoded event accepted (the engine's record limit), checked with the
    /// longest stream id so the check holds before the stream is known.
    pub(crate) event_bytes_max: usize,
}

impl Context {
    /// One event of the element at `path` at its original time (the envelope's timestamp,
    /// and, when the file recorded it, in the causation id `<path>@<ms>`), checked now as the
    /// engine will check it at append.
    fn event(
        &self,
        path: &str,
        at: Location,
        time: Time,
        event: impl Into<BuiltinEvent>,
    ) -> Result<NewEvent<BuiltinEvent>> {
        let (causation, at_ms) = match time {
            Time::Recorded(ms) => (format!("{path}@{ms}"), ms),
            Time::Inherited(ms) => (path.to_owned(), ms),
        };
        let event = NewEvent::new(event.into())
            .with_correlation_id(self.correlation_id.clone())
            .with_causation_id(causation)
            .with_timestamp_ms(at_ms);
        let refuse = |reason: String| Error::Import {
            path: path.to_owned(),
            line: at.line,
            column: at.column,
            reason,
        };
        let data = event.to_data().map_err(|error| refuse(error.to_string()))?;
        // The envelope in a one-byte stream, plus the longest stream id: a bound for any stream.
        let size = data.envelope_len(&placeholder_stream()) - 1 + STREAM_ID_BYTES_MAX;
        if size > self.event_bytes_max {
            return Err(refuse(format!(
                "the event it makes is {size} bytes, more than the record limit {}",
                self.event_bytes_max
            )));
        }
        Ok(event)
    }
}

/// The original time of an imported event, in milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Time {
    /// The file recorded it for this event.
    Recorded(u64),
    /// The file recorded none (a run event without `timestamp_ms`): the time of the event
    /// before it in its stream.
    Inherited(u64),
}

fn placeholder_stream() -> StreamId {
    match StreamId::new("x") {
        Ok(stream) => stream,
        Err(error) => unreachable!("\"x\" is a valid stream id: {error}"),
    }
}

/// One accepted JSON shape.
pub(crate) trait Format: Default + Send + 'static {
    /// One element of the array.
    type Element: DeserializeOwned;
    /// The array's key.
    const ARRAY_KEY: &'static str;
    /// The word for an element in messages ("task").
    const NOUN: &'static str;

    /// One value of the top-level object other than the array. By default (tasks, runs) the
    /// one allowed is `version`, which must be 1.
    fn header(
        &mut self,
        key: &str,
        value: serde_json::Value,
        path: &str,
        at: Location,
    ) -> Result<()> {
        match key {
            "version" => format_version(value, path, at),
            _ => {
                let allowed = format!("version, {}", Self::ARRAY_KEY);
                Err(unknown_key(path, at, &allowed))
            }
        }
    }

    /// After the whole file: the header values that must be there are.
    fn check_header(&self) -> Result<()> {
        Ok(())
    }

    /// The id that must be unique among the elements.
    fn element_id(element: &Self::Element) -> &str;

    /// The stream of an element's events; `None`: the file's own stream ([`Format::prologue`]).
    fn element_stream(element: &Self::Element) -> Option<std::result::Result<StreamId, String>>;

    /// The events of one element, in order.
    fn element_events(
        &self,
        context: &Context,
        element: Self::Element,
        path: &str,
        at: Location,
    ) -> Result<Vec<NewEvent<BuiltinEvent>>>;

    /// The file's own stream and the events that open it, before the elements' (a room's
    /// `room.created` and members); `None` when each element is its own entity.
    fn prologue(
        &self,
        _context: &Context,
    ) -> Result<Option<(StreamId, Vec<NewEvent<BuiltinEvent>>)>> {
        Ok(None)
    }
}

/// A header value of the wrong shape, with its path.
fn header_value<T: DeserializeOwned>(
    value: serde_json::Value,
    path: &str,
    at: Location,
) -> Result<T> {
    serde_json::from_value(value).map_err(|error| import_error(path, at, &error.to_string()))
}

/// The header's `version`: 1 is the only one known.
fn format_version(value: serde_json::Value, path: &str, at: Location) -> Result<()> {
    let version: u64 = header_value(value, path, at)?;
    if version != 1 {
        return Err(import_error(
            path,
            at,
            &format!("is {version}; only 1 is known"),
        ));
    }
    Ok(())
}

fn unknown_key(path: &str, at: Location, allowed: &str) -> Error {
    import_error(path, at, &format!("unknown key (allowed: {allowed})"))
}

// ---------------------------------------------------------------------------------------------
// tasks

/// A task registry snapshot: `{"version": 1, "tasks": [...]}`.
#[derive(Debug, Default)]
pub(crate) struct Tasks;

/// The status of a task in the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum TaskStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

/// One task of the registry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Task {
    id: String,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    run_id: Option<String>,
    status: TaskStatus,
    created_at_ms: u64,
    #[serde(default)]
    updated_at_ms: Option<u64>,
    #[serde(default)]
    ended_at_ms: Option<u64>,
    #[serde(default)]
    input: Option<String>,
    #[serde(default)]
    worker: Option<String>,
    #[serde(default)]
    lease_expires_at_ms: Option<u64>,
    #[serde(default)]
    result: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    retryable: bool,
    #[serde(default)]
    cancel_reason: Option<String>,
    #[serde(default)]
    delivery: Option<serde_json::Value>,
}

/// The job kind of a task that names none.
const TASK_KIND_DEFAULT: &str = "task";
/// The worker of a running or finished task that names none.
const WORKER_DEFAULT: &str = "imported";
/// The error of a failed task or run that recorded none.
const ERROR_DEFAULT: &str = "failed before the import (no error recorded)";

impl Format for Tasks {
    type Element = Task;
    const ARRAY_KEY: &'static str = "tasks";
    const NOUN: &'static str = "task";

    fn element_id(task: &Task) -> &str {
        &task.id
    }

    fn element_stream(task: &Task) -> Option<std::result::Result<StreamId, String>> {
        Some(StreamId::job(&task.id).map_err(|error| error.to_string()))
    }

    fn element_events(
        &self,
        context: &Context,
        task: Task,
        path: &str,
        at: Location,
    ) -> Result<Vec<NewEvent<BuiltinEvent>>> {
        // The queued event's input keeps what the job model has no field for: the original
        // input, the run id, the delivery info and the registry's timestamps.
        let mut input = serde_json::Map::new();
        let mut keep = |key: &str, value: Option<serde_json::Value>| {
            if let Some(value) = value {
                input.insert(key.to_owned(), value);
            }
        };
        keep("input", task.input.map(Into::into));
        keep("run_id", task.run_id.map(Into::into));
        keep("delivery", task.delivery);
        keep("created_at_ms", Some(task.created_at_ms.into()));
        keep("updated_at_ms", task.updated_at_ms.map(Into::into));
        keep("ended_at_ms", task.ended_at_ms.map(Into::into));
        let queued = JobQueued {
            kind: task.kind.unwrap_or_else(|| TASK_KIND_DEFAULT.to_owned()),
            input: serde_json::Value::Object(input).to_string(),
        };
        let updated = task.updated_at_ms.unwrap_or(task.created_at_ms);
        let ended = task.ended_at_ms.unwrap_or(updated);
        let mut events =
            vec![context.event(path, at, Time::Recorded(task.created_at_ms), queued)?];
        let claimed = JobClaimed {
            worker: task.worker.unwrap_or_else(|| WORKER_DEFAULT.to_owned()),
            lease_expires_at_ms: task.lease_expires_at_ms.unwrap_or(updated),
        };
        match task.status {
            TaskStatus::Queued => {}
            TaskStatus::Running => {
                events.push(context.event(path, at, Time::Recorded(updated), claimed)?)
            }
            TaskStatus::Succeeded => {
                events.push(context.event(path, at, Time::Recorded(updated), claimed)?);
                let succeeded = JobSucceeded {
                    result: task.result,
                };
                events.push(context.event(path, at, Time::Recorded(ended), succeeded)?);
            }
            TaskStatus::Failed => {
                events.push(context.event(path, at, Time::Recorded(updated), claimed)?);
                let failed = JobFailed {
                    error: task.error.unwrap_or_else(|| ERROR_DEFAULT.to_owned()),
                    retryable: task.retryable,
                };
                events.push(context.event(path, at, Time::Recorded(ended), failed)?);
            }
            TaskStatus::Cancelled => {
                let cancelled = JobCancelled {
                    reason: task.cancel_reason,
                };
                events.push(context.event(path, at, Time::Recorded(ended), cancelled)?);
            }
        }
        Ok(events)
    }
}

// ---------------------------------------------------------------------------------------------
// room

/// One room file: `{"id", "name", "created_at_ms", ..., "messages": [...]}`; the header values
/// may come before or after the messages.
#[derive(Debug, Default)]
pub(crate) struct Room {
    id: Option<(String, String, Location)>,
    name: Option<String>,
    topic: Option<String>,
    created_by: Option<String>,
    created_at_ms: Option<u64>,
    members: Vec<String>,
}

/// One message of a room file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Message {
    id: String,
    author: String,
    body: String,
    timestamp_ms: u64,
}

impl Format for Room {
    type Element = Message;
    const ARRAY_KEY: &'static str = "messages";
    const NOUN: &'static str = "message";

    fn header(
        &mut self,
        key: &str,
        value: serde_json::Value,
        path: &str,
        at: Location,
    ) -> Result<()> {
        match key {
            "id" => self.id = Some((header_value(value, path, at)?, path.to_owned(), at)),
            "name" => self.name = Some(header_value(value, path, at)?),
            "topic" => self.topic = header_value(value, path, at)?,
            "created_by" => self.created_by = header_value(value, path, at)?,
            "created_at_ms" => self.created_at_ms = Some(header_value(value, path, at)?),
            "members" => {
                let members: Vec<String> = header_value(value, path, at)?;
                if members.len() > ROOM_MEMBERS_MAX {
                    let reason = format!("{} members, at most {ROOM_MEMBERS_MAX}", members.len());
                    return Err(import_error(path, at, &reason));
                }
                self.members = members;
            }
            _ => {
                let allowed = "id, name, topic, created_by, created_at_ms, members, messages";
                return Err(unknown_key(path, at, allowed));
            }
        }
        Ok(())
    }

    fn check_header(&self) -> Result<()> {
        let end = Location { line: 0, column: 0 };
        for (key, present) in [
            ("id", self.id.is_some()),
            ("name", self.name.is_some()),
            ("created_at_ms", self.created_at_ms.is_some()),
        ] {
            if !present {
                return Err(import_error(&format!("$.{key}"), end, "missing"));
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for (index, member) in self.members.iter().enumerate() {
            if !seen.insert(member) {
                let path = format!("$.members[{index}]");
                return Err(import_error(
                    &path,
                    end,
                    &format!("duplicate member {member:?}"),
                ));
            }
        }
        Ok(())
    }

    fn element_id(message: &Message) -> &str {
        &message.id
    }

    fn element_stream(_message: &Message) -> Option<std::result::Result<StreamId, String>> {
        None
    }

    fn element_events(
        &self,
        context: &Context,
        message: Message,
        path: &str,
        at: Location,
    ) -> Result<Vec<NewEvent<BuiltinEvent>>> {
        let posted = RoomMessagePosted {
            message_id: message.id,
            author: message.author,
            body: message.body,
        };
        let time = Time::Recorded(message.timestamp_ms);
        Ok(vec![context.event(path, at, time, posted)?])
    }

    fn prologue(
        &self,
        context: &Context,
    ) -> Result<Option<(StreamId, Vec<NewEvent<BuiltinEvent>>)>> {
        let end = Location { line: 0, column: 0 };
        let (Some((id, id_path, id_at)), Some(name), Some(created_at_ms)) =
            (&self.id, &self.name, self.created_at_ms)
        else {
            return Err(import_error("$", end, "missing id, name or created_at_ms"));
        };
        let stream = StreamId::room(id)
            .map_err(|error| import_error(id_path, *id_at, &error.to_string()))?;
        let created = RoomCreated {
            name: name.clone(),
            topic: self.topic.clone(),
            created_by: self.created_by.clone(),
        };
        let mut events = vec![context.event("$", end, Time::Recorded(created_at_ms), created)?];
        for (index, member) in self.members.iter().enumerate() {
            let joined = RoomMemberJoined {
                member: member.clone(),
            };
            let path = format!("$.members[{index}]");
            events.push(context.event(&path, end, Time::Recorded(created_at_ms), joined)?);
        }
        Ok(Some((stream, events)))
    }
}

// ---------------------------------------------------------------------------------------------
// runs

/// A run ledger dump: `{"runs": [...]}`.
#[derive(Debug, Default)]
pub(crate) struct Runs;

/// One run of the dump.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Run {
    id: String,
    kind: RunKind,
    agent_id: String,
    #[serde(default)]
    parent_run_id: Option<String>,
    #[serde(default)]
    parent_thread_id: Option<String>,
    #[serde(default)]
    prompt_ref: Option<String>,
    #[serde(default)]
    worker_thread_id: Option<String>,
    #[serde(default)]
    task_board_ref: Option<String>,
    #[serde(default)]
    task_card_ref: Option<String>,
    #[serde(default)]
    workflow_id: Option<String>,
    status: RunStatus,
    started_at_ms: u64,
    #[serde(default)]
    updated_at_ms: Option<u64>,
    #[serde(default)]
    completed_at_ms: Option<u64>,
    #[serde(default)]
    summary: Option<String>,
    #[serde(default)]
    result_ref: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    cancel_reason: Option<String>,
    #[serde(default)]
    telemetry: Option<Telemetry>,
    #[serde(default)]
    events: Vec<RunEventRecord>,
}

/// A run's telemetry totals.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Telemetry {
    #[serde(default)]
    tokens_in: u64,
    #[serde(default)]
    tokens_out: u64,
    #[serde(default)]
    cost_estimate_micros: u64,
    #[serde(default)]
    elapsed_ms: u64,
    #[serde(default)]
    tool_calls: BTreeMap<String, u64>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    provider: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

/// One entry of a run's own event feed.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RunEventRecord {
    sequence: u64,
    #[serde(rename = "type")]
    event_type: String,
    #[serde(default)]
    payload: serde_json::Value,
    #[serde(default)]
    timestamp_ms: Option<u64>,
}

impl Format for Runs {
    type Element = Run;
    const ARRAY_KEY: &'static str = "runs";
    const NOUN: &'static str = "run";

    fn element_id(run: &Run) -> &str {
        &run.id
    }

    fn element_stream(run: &Run) -> Option<std::result::Result<StreamId, String>> {
        Some(StreamId::run(&run.id).map_err(|error| error.to_string()))
    }

    fn element_events(
        &self,
        context: &Context,
        run: Run,
        path: &str,
        at: Location,
    ) -> Result<Vec<NewEvent<BuiltinEvent>>> {
        let started = RunStarted {
            kind: run.kind,
            agent_id: run.agent_id,
            parent_run_id: run.parent_run_id,
            parent_thread_id: run.parent_thread_id,
            prompt_ref: run.prompt_ref,
            worker_thread_id: run.worker_thread_id,
            task_board_ref: run.task_board_ref,
            task_card_ref: run.task_card_ref,
            workflow_id: run.workflow_id,
        };
        let mut events =
            vec![context.event(path, at, Time::Recorded(run.started_at_ms), started)?];
        let mut previous_ms = run.started_at_ms;
        for (index, record) in run.events.into_iter().enumerate() {
            let payload = match record.payload {
                serde_json::Value::Null => String::new(),
                serde_json::Value::String(text) => text,
                other => other.to_string(),
            };
            let event = RunEvent {
                sequence: record.sequence,
                event_type: record.event_type,
                payload,
            };
            let event_path = format!("{path}.events[{index}]");
            let time = match record.timestamp_ms {
                Some(ms) => Time::Recorded(ms),
                None => Time::Inherited(previous_ms),
            };
            previous_ms = record.timestamp_ms.unwrap_or(previous_ms);
            events.push(context.event(&event_path, at, time, event)?);
        }
        let updated = run.updated_at_ms.unwrap_or(run.started_at_ms);
        let ended = run.completed_at_ms.unwrap_or(updated);
        if let Some(telemetry) = run.telemetry {
            let telemetry = RunTelemetry {
                tokens_in: telemetry.tokens_in,
                tokens_out: telemetry.tokens_out,
                cost_estimate_micros: telemetry.cost_estimate_micros,
                elapsed_ms: telemetry.elapsed_ms,
                tool_calls: telemetry.tool_calls,
                model: telemetry.model,
                provider: telemetry.provider,
                error: telemetry.error,
            };
            let telemetry_path = format!("{path}.telemetry");
            events.push(context.event(&telemetry_path, at, Time::Recorded(updated), telemetry)?);
        }
        let last: BuiltinEvent = match run.status {
            RunStatus::Running => return Ok(events),
            RunStatus::Pending | RunStatus::Paused | RunStatus::AwaitingUser => {
                let changed = RunStatusChanged {
                    status: run.status,
                    reason: None,
                };
                events.push(context.event(path, at, Time::Recorded(updated), changed)?);
                return Ok(events);
            }
            RunStatus::Completed => RunCompleted {
                summary: run.summary,
                result_ref: run.result_ref,
            }
            .into(),
            RunStatus::Failed => RunFailed {
                error: run.error.unwrap_or_else(|| ERROR_DEFAULT.to_owned()),
            }
            .into(),
            RunStatus::Cancelled => RunCancelled {
                reason: run.cancel_reason,
            }
            .into(),
        };
        events.push(context.event(path, at, Time::Recorded(ended), last)?);
        Ok(events)
    }
}
