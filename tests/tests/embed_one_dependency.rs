//! Embedding with one dependency: a service's own event enum, its own projection with
//! snapshot/restore and an observer, opened on a directory without naming a storage, written,
//! read, subscribed to, deleted from, snapshotted and reopened, using only `logbook::` paths
//! (serde's derives included, through `logbook::serde`). Before, this needed `logbook-projection`
//! (the `Error` `Event::encode_payload` returns, `codec`, `snapshot_state`/`restore_state`) and
//! `logbook-wal` (`FileStorage`, since `open_with_projections` takes a storage): this file did
//! not compile. The last test keeps it honest: its own `use` lines name only `logbook` and
//! `std`.

use logbook::serde::{Deserialize, Serialize};
use logbook::{
    Direction, Event, EventResult, ExpectedVersion, FileStorage, Logbook, LogbookOptions, NewEvent,
    Observer, Projection, Projections, RecordedEvent, StreamId, codec, restore_state,
    snapshot_state,
};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// The most bytes one task event's payload may decode from.
const TASK_PAYLOAD_BYTES_MAX: usize = 64 * 1024;
/// The projection's snapshot id and state version.
const TASKS_ID: &str = "registry.tasks";
const TASKS_STATE_VERSION: u16 = 1;

/// A background-task registry's events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(crate = "logbook::serde")]
enum TaskEvent {
    Started { name: String },
    Progressed { percent: u8 },
    Finished,
}

impl Event for TaskEvent {
    fn event_type(&self) -> &'static str {
        match self {
            TaskEvent::Started { .. } => "task.started",
            TaskEvent::Progressed { .. } => "task.progressed",
            TaskEvent::Finished => "task.finished",
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
        codec::decode(payload, TASK_PAYLOAD_BYTES_MAX)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(crate = "logbook::serde")]
struct Task {
    name: String,
    percent: u8,
    finished: bool,
}

/// Every task by stream.
#[derive(Debug, Clone, Default)]
struct Tasks(BTreeMap<String, Task>);

impl Projection for Tasks {
    type Event = TaskEvent;

    fn id(&self) -> &'static str {
        TASKS_ID
    }

    fn state_version(&self) -> u16 {
        TASKS_STATE_VERSION
    }

    fn apply(&mut self, event: &RecordedEvent<TaskEvent>) {
        let task = self.0.entry(event.stream.as_str().to_owned()).or_default();
        match &event.event {
            TaskEvent::Started { name } => task.name.clone_from(name),
            TaskEvent::Progressed { percent } => task.percent = *percent,
            TaskEvent::Finished => task.finished = true,
        }
    }

    fn snapshot(&self) -> EventResult<Vec<u8>> {
        snapshot_state(&self.0)
    }

    fn restore(&mut self, state_version: u16, bytes: &[u8]) -> EventResult<()> {
        self.0 = restore_state(TASKS_ID, TASKS_STATE_VERSION, state_version, bytes)?;
        Ok(())
    }

    fn stream_deleted(&mut self, stream: &StreamId) -> bool {
        self.0.remove(stream.as_str()).is_some()
    }

    fn stream_truncated(&mut self, stream: &StreamId, before_version: u64) -> bool {
        // The name is copied out of `Started`, each task's version 0.
        match self.0.get_mut(stream.as_str()) {
            Some(task) if before_version > 0 && !task.name.is_empty() => {
                task.name.clear();
                true
            }
            _ => false,
        }
    }
}

/// Records what the hooks saw.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<String>>>);

impl Seen {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().expect("seen lock"))
    }
}

impl Observer<Tasks> for Seen {
    fn restored(&self, state: &Tasks) {
        let line = format!("restored {}", state.0.len());
        self.0.lock().expect("seen lock").push(line);
    }

    fn upserted(&self, _state: &Tasks, event: &RecordedEvent<TaskEvent>) {
        let line = format!("upserted {} {}", event.stream, event.event_type);
        self.0.lock().expect("seen lock").push(line);
    }

    fn deleted(&self, _state: &Tasks, stream: &StreamId) {
        self.0
            .lock()
            .expect("seen lock")
            .push(format!("deleted {stream}"));
    }
}

fn task_stream(id: &str) -> StreamId {
    StreamId::new(format!("task-{id}")).expect("stream id")
}

#[tokio::test]
async fn a_custom_event_and_projection_with_logbook_alone() {
    let dir = tempfile::tempdir().expect("temp dir");
    let seen = Seen::default();
    let mut projections = Projections::new();
    let tasks = projections.register(Tasks::default());
    tasks.observe(seen.clone());
    let (log, _report) =
        Logbook::open_dir_with_projections(dir.path(), LogbookOptions::default(), projections)
            .await
            .expect("open a directory with no storage named");
    assert_eq!(seen.take(), ["restored 0"]);

    let mut subscription = log.subscribe(0);
    let one = task_stream("1");
    let two = task_stream("2");
    let started = |name: &str| {
        NewEvent::new(TaskEvent::Started {
            name: name.to_owned(),
        })
    };
    log.append(&one, ExpectedVersion::NoStream, vec![started("backup")])
        .await
        .expect("append");
    log.append(
        &one,
        ExpectedVersion::Exact(0),
        vec![
            NewEvent::new(TaskEvent::Progressed { percent: 50 }),
            NewEvent::new(TaskEvent::Finished),
        ],
    )
    .await
    .expect("append a batch");
    log.append(&two, ExpectedVersion::NoStream, vec![started("reindex")])
        .await
        .expect("append");
    let conflict = log
        .append(&two, ExpectedVersion::NoStream, vec![started("again")])
        .await;
    assert!(matches!(
        conflict,
        Err(logbook::Error::WrongExpectedVersion { .. })
    ));

    let events = log
        .read_stream(&one, 0, Direction::Forward, 10)
        .await
        .expect("read");
    let kinds: Vec<&TaskEvent> = events.iter().map(|event| &event.event).collect();
    assert_eq!(
        kinds,
        [
            &TaskEvent::Started {
                name: "backup".to_owned()
            },
            &TaskEvent::Progressed { percent: 50 },
            &TaskEvent::Finished,
        ]
    );
    let first = subscription
        .next()
        .await
        .expect("subscription open")
        .expect("subscribed event");
    assert_eq!(first.stream, one);

    log.delete_stream(&two, ExpectedVersion::Exact(0))
        .await
        .expect("delete");
    assert_eq!(
        seen.take(),
        [
            "upserted task-1 task.started",
            "upserted task-1 task.progressed",
            "upserted task-1 task.finished",
            "upserted task-2 task.started",
            "deleted task-2",
        ]
    );
    {
        let state = tasks.read();
        assert_eq!(state.0.len(), 1);
        assert!(state.0.get("task-1").is_some_and(|task| task.finished));
    }
    log.snapshot().await.expect("snapshot");
    // A live subscription does not keep a closed log's files (engine_close_releases.rs).
    log.close().await.expect("close");

    // Reopen through the explicit storage too (re-exported): the snapshot is restored.
    let mut projections = Projections::new();
    let tasks = projections.register(Tasks::default());
    let (log, report) = Logbook::open_with_projections(
        Arc::new(FileStorage::new()),
        dir.path(),
        LogbookOptions::default(),
        projections,
    )
    .await
    .expect("reopen");
    assert!(report.snapshot.used.is_some(), "the snapshot was restored");
    assert_eq!(
        tasks.read().0.get("task-1"),
        Some(&Task {
            name: "backup".to_owned(),
            percent: 50,
            finished: true,
        })
    );
    assert!(!tasks.read().0.contains_key("task-2"));
    log.close().await.expect("close");
}

/// This file's own `use` lines name `logbook` and `std` only: no other logbook crate is needed.
#[test]
fn this_file_uses_only_logbook() {
    let source = include_str!("embed_one_dependency.rs");
    let foreign: Vec<&str> = source
        .lines()
        .map(str::trim_start)
        .filter(|line| line.starts_with("use "))
        .filter(|line| !line.starts_with("use logbook::") && !line.starts_with("use std::"))
        .collect();
    assert!(foreign.is_empty(), "use lines of other crates: {foreign:?}");
    assert!(!source.contains(concat!("logbook", "_projection")));
    assert!(!source.contains(concat!("logbook", "_wal")));
}
