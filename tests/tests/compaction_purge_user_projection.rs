//! Purge with a user-written projection (its own event enum and `Projection`, as a service
//! writes them): after `delete_stream` (or `soft_delete_stream`), a snapshot, `compact` and a
//! reopen, the entity is gone from the projection, the observers' `deleted` hook fired, and
//! the deleted events' bytes are in no file under the log directory (every file's raw bytes
//! are searched, as tests/compaction_purge.rs does for the built-in model).
//!
//! Before, `Projection::stream_deleted` had a default that kept everything: a projection that
//! left it out kept the deleted task, its bytes went into the next snapshot and came back at
//! reopen. The method is now required (the `compile_fail` example on
//! `Projection::stream_deleted` checks that leaving it out does not compile).

use logbook::serde::{Deserialize, Serialize};
use logbook::{
    Direction, Error, Event, EventResult, ExpectedVersion, Logbook, NewEvent, Observer, Projection,
    ProjectionHandle, Projections, RecordedEvent, StreamId, codec, restore_state, snapshot_state,
};
use logbook_tests::test_options;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

const TASK_PAYLOAD_BYTES_MAX: usize = 64 * 1024;
const REGISTRY_ID: &str = "tests.registry";
const REGISTRY_STATE_VERSION: u16 = 1;

/// A task registry's events; `Started` carries a secret the purge must remove.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(crate = "logbook::serde")]
enum TaskEvent {
    Started { name: String, secret: String },
    Finished,
}

impl Event for TaskEvent {
    fn event_type(&self) -> &'static str {
        match self {
            TaskEvent::Started { .. } => "task.started",
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(crate = "logbook::serde")]
struct Task {
    name: String,
    secret: String,
    finished: bool,
}

/// Every task by stream, the secret copied in: what a careless service would keep.
#[derive(Debug, Clone, Default)]
struct Registry(BTreeMap<String, Task>);

impl Projection for Registry {
    type Event = TaskEvent;

    fn id(&self) -> &'static str {
        REGISTRY_ID
    }

    fn state_version(&self) -> u16 {
        REGISTRY_STATE_VERSION
    }

    fn apply(&mut self, event: &RecordedEvent<TaskEvent>) {
        let key = event.stream.as_str().to_owned();
        match &event.event {
            TaskEvent::Started { name, secret } => {
                let task = Task {
                    name: name.clone(),
                    secret: secret.clone(),
                    finished: false,
                };
                self.0.insert(key, task);
            }
            TaskEvent::Finished => {
                if let Some(task) = self.0.get_mut(&key) {
                    task.finished = true;
                }
            }
        }
    }

    fn snapshot(&self) -> EventResult<Vec<u8>> {
        snapshot_state(&self.0)
    }

    fn restore(&mut self, state_version: u16, bytes: &[u8]) -> EventResult<()> {
        self.0 = restore_state(REGISTRY_ID, REGISTRY_STATE_VERSION, state_version, bytes)?;
        Ok(())
    }

    fn stream_deleted(&mut self, stream: &StreamId) -> bool {
        self.0.remove(stream.as_str()).is_some()
    }

    fn stream_truncated(&mut self, stream: &StreamId, before_version: u64) -> bool {
        // The secret is copied out of `Started`, each task's version 0.
        match self.0.get_mut(stream.as_str()) {
            Some(task) if before_version > 0 && !task.secret.is_empty() => {
                task.secret.clear();
                true
            }
            _ => false,
        }
    }
}

/// The streams the `deleted` hook named.
#[derive(Clone, Default)]
struct Deleted(Arc<Mutex<Vec<String>>>);

impl Deleted {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().expect("deleted lock"))
    }
}

impl Observer<Registry> for Deleted {
    fn deleted(&self, state: &Registry, stream: &StreamId) {
        assert!(
            !state.0.contains_key(stream.as_str()),
            "removed before the hook"
        );
        self.0
            .lock()
            .expect("deleted lock")
            .push(stream.to_string());
    }
}

fn task(id: &str) -> StreamId {
    StreamId::new(format!("task-{id}")).expect("stream id")
}

fn started(name: &str, secret: &str) -> Vec<NewEvent<TaskEvent>> {
    vec![NewEvent::new(TaskEvent::Started {
        name: name.to_owned(),
        secret: secret.to_owned(),
    })]
}

/// The registry's tasks by stream (a copy, so no read guard is held).
fn tasks(handle: &ProjectionHandle<Registry>) -> BTreeMap<String, Task> {
    handle.read().0.clone()
}

async fn open(dir: &Path) -> (Logbook<TaskEvent>, ProjectionHandle<Registry>, Deleted) {
    let deleted = Deleted::default();
    let mut projections = Projections::new();
    let registry = projections.register(Registry::default());
    registry.observe(deleted.clone());
    let (log, _report) = Logbook::open_dir_with_projections(dir, test_options(), projections)
        .await
        .expect("open");
    (log, registry, deleted)
}

fn read_unless_removed(path: &Path) -> Vec<u8> {
    match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(error) => panic!("{}: {error}", path.display()),
    }
}

/// Every file under `root` whose raw bytes contain `needle`.
fn files_containing(root: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if read_unless_removed(&path)
                .windows(needle.len())
                .any(|window| window == needle)
            {
                found.push(path);
            }
        }
    }
    found
}

const HARD_SECRET: &str = "hard-deleted-secret-3f9a";
const SOFT_SECRET: &str = "soft-deleted-secret-7c21";

#[tokio::test]
async fn a_deleted_entity_of_a_user_projection_is_in_no_file_after_compaction() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (log, registry, deleted) = open(dir.path()).await;
    log.append(
        &task("a"),
        ExpectedVersion::NoStream,
        started("a", HARD_SECRET),
    )
    .await
    .expect("append a");
    log.append(&task("b"), ExpectedVersion::NoStream, started("b", "kept"))
        .await
        .expect("append b");
    // A snapshot before the delete holds the secret: compaction must remove it too.
    log.snapshot().await.expect("snapshot before");
    let holders = files_containing(dir.path(), HARD_SECRET.as_bytes());
    assert!(
        holders.iter().any(|path| path
            .extension()
            .is_some_and(|extension| extension == "snap")),
        "the snapshot holds the secret: {holders:?}"
    );

    log.delete_stream(&task("a"), ExpectedVersion::Exact(0))
        .await
        .expect("delete a");
    assert_eq!(deleted.take(), vec!["task-a".to_owned()], "deleted hook");
    assert_eq!(
        tasks(&registry).keys().cloned().collect::<Vec<_>>(),
        vec!["task-b".to_owned()]
    );
    log.snapshot().await.expect("snapshot after");
    log.compact().await.expect("compact");
    log.close().await.expect("close");
    assert_eq!(
        files_containing(dir.path(), HARD_SECRET.as_bytes()),
        Vec::<PathBuf>::new(),
        "the deleted event's bytes are purged from every file"
    );

    let (log, registry, deleted) = open(dir.path()).await;
    let reopened = tasks(&registry);
    assert!(!reopened.contains_key("task-a"), "the task is not back");
    assert_eq!(reopened["task-b"].secret, "kept");
    assert!(deleted.take().is_empty(), "no hook for the replay");
    let error = log
        .read_stream(&task("a"), 0, Direction::Forward, 10)
        .await
        .expect_err("deleted");
    assert!(matches!(error, Error::StreamDeleted { .. }), "{error}");
    log.close().await.expect("close");
}

#[tokio::test]
async fn a_soft_deleted_entity_is_purged_and_its_stream_lives_on() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (log, registry, deleted) = open(dir.path()).await;
    log.append(
        &task("c"),
        ExpectedVersion::NoStream,
        started("c", SOFT_SECRET),
    )
    .await
    .expect("append c");
    log.append(
        &task("c"),
        ExpectedVersion::Exact(0),
        vec![NewEvent::new(TaskEvent::Finished)],
    )
    .await
    .expect("finish c");
    log.soft_delete_stream(&task("c"), ExpectedVersion::Exact(1))
        .await
        .expect("soft delete c");
    assert_eq!(deleted.take(), vec!["task-c".to_owned()], "deleted hook");
    assert!(tasks(&registry).is_empty());
    // The id is used again: versions continue after the last one.
    let again = log
        .append(
            &task("c"),
            ExpectedVersion::NoStream,
            started("c2", "fresh"),
        )
        .await
        .expect("append after the soft delete");
    assert_eq!(again.version, 2);
    log.snapshot().await.expect("snapshot");
    log.compact().await.expect("compact");
    log.close().await.expect("close");
    assert_eq!(
        files_containing(dir.path(), SOFT_SECRET.as_bytes()),
        Vec::<PathBuf>::new(),
        "the soft-deleted events' bytes are purged from every file"
    );

    let (log, registry, _deleted) = open(dir.path()).await;
    let reopened = tasks(&registry);
    assert_eq!(reopened["task-c"].name, "c2");
    assert_eq!(reopened["task-c"].secret, "fresh");
    let events = log
        .read_stream(&task("c"), 0, Direction::Forward, 10)
        .await
        .expect("read");
    let versions: Vec<u64> = events.iter().map(|event| event.version).collect();
    assert_eq!(versions, vec![2]);
    assert_eq!(log.stream_version(&task("c")).expect("version"), Some(2));
    log.close().await.expect("close");
}
