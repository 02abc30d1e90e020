//! The newcomer trial: the task registry's whole life on logbook, from the docs alone, with
//! `logbook` as the one dependency (the runtime is `logbook::tokio`).

use logbook::tokio;
use logbook::{LogbookOptions, Observer, RecordedEvent, StreamId};
use std::sync::{Arc, Mutex};
use task_registry::{Delivery, Refused, Registry, Status, TaskEvent, TaskRegistry};

/// What the hooks saw, as lines.
#[derive(Clone, Default)]
struct Hooks(Arc<Mutex<Vec<String>>>);

impl Hooks {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().expect("hooks lock"))
    }
}

impl Observer<Registry> for Hooks {
    fn restored(&self, state: &Registry) {
        let line = format!("restored {}", state.tasks().count());
        self.0.lock().expect("hooks lock").push(line);
    }

    fn upserted(&self, state: &Registry, event: &RecordedEvent<TaskEvent>) {
        let task = state.get(&event.stream.as_str()["task-".len()..]);
        let line = format!(
            "upserted {} {:?}",
            event.stream,
            task.map(|task| task.status)
        );
        self.0.lock().expect("hooks lock").push(line);
    }

    fn deleted(&self, _state: &Registry, stream: &StreamId) {
        let line = format!("deleted {stream}");
        self.0.lock().expect("hooks lock").push(line);
    }
}

fn slack() -> Option<Delivery> {
    Some(Delivery {
        channel: "slack".to_owned(),
        target: "#ops".to_owned(),
    })
}

#[tokio::test(crate = "logbook::tokio")]
async fn a_task_registry_survives_restarts_and_forgets_for_real() {
    let dir = std::env::temp_dir().join(format!("task-registry-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let hooks = Hooks::default();
    let registry = TaskRegistry::open(
        &dir,
        LogbookOptions::default(),
        Some(Box::new(hooks.clone())),
    )
    .await
    .expect("open a new registry");
    assert_eq!(
        hooks.take(),
        ["restored 0"],
        "restored fires on an empty log too"
    );

    registry
        .queue("t1", "run-1", slack())
        .await
        .expect("queue t1");
    registry.queue("t2", "run-1", None).await.expect("queue t2");
    registry.start("t1").await.expect("start t1");
    registry.finish("t1", None).await.expect("finish t1");
    registry.delivered("t1").await.expect("deliver t1");
    registry.start("t2").await.expect("start t2");

    // Commands validate against durable state.
    let duplicate = registry.queue("t1", "run-2", None).await;
    assert!(matches!(
        duplicate,
        Err(logbook::CommandError::Rejected(Refused::DuplicateTask))
    ));
    let early = registry.delivered("t2").await;
    assert!(matches!(
        early,
        Err(logbook::CommandError::Rejected(Refused::WrongStatus(
            Status::Running
        )))
    ));
    let unknown = registry.start("nope").await;
    assert!(matches!(
        unknown,
        Err(logbook::CommandError::Rejected(Refused::UnknownTask))
    ));

    {
        let state = registry.registry().read();
        let t1 = state.get("t1").expect("t1");
        assert_eq!(t1.status, Status::Succeeded);
        assert!(t1.delivered);
        assert_eq!(t1.delivery, slack());
        assert!(t1.updated_ms >= t1.created_ms);
        assert_eq!(state.get("t2").expect("t2").status, Status::Running);
    }
    assert_eq!(
        hooks.take(),
        [
            "upserted task-t1 Some(Queued)",
            "upserted task-t2 Some(Queued)",
            "upserted task-t1 Some(Running)",
            "upserted task-t1 Some(Succeeded)",
            "upserted task-t1 Some(Succeeded)",
            "upserted task-t2 Some(Running)",
        ]
    );

    // A user resets: the task is forgotten, the hook fires, and nothing of it stays on disk
    // after a snapshot and a compaction.
    registry
        .queue("secret", "run-9", None)
        .await
        .expect("queue");
    registry
        .finish("secret", Some("token=hunter2-7f3a".to_owned()))
        .await
        .expect_err("not running yet");
    registry.start("secret").await.expect("start");
    registry
        .finish("secret", Some("token=hunter2-7f3a".to_owned()))
        .await
        .expect("finish with a secret in the error");
    hooks.take();
    registry.forget("secret").await.expect("forget");
    assert_eq!(hooks.take(), ["deleted task-secret"]);
    assert!(registry.registry().read().get("secret").is_none());
    registry.log().snapshot().await.expect("snapshot");
    registry.log().compact().await.expect("compact");
    registry.close().await.expect("close");
    assert_no_file_contains(&dir, b"hunter2-7f3a");

    // A restart: the registry comes back from the snapshot, without the forgotten task.
    let hooks = Hooks::default();
    let registry = TaskRegistry::open(
        &dir,
        LogbookOptions::default(),
        Some(Box::new(hooks.clone())),
    )
    .await
    .expect("reopen");
    assert_eq!(hooks.take(), ["restored 2"]);
    {
        let state = registry.registry().read();
        assert_eq!(state.get("t1").expect("t1").status, Status::Succeeded);
        assert_eq!(state.get("t2").expect("t2").status, Status::Running);
        assert!(state.get("secret").is_none());
    }
    // Work goes on after the restart.
    registry
        .finish("t2", Some("timeout".to_owned()))
        .await
        .expect("finish t2");
    assert_eq!(
        registry.registry().read().get("t2").expect("t2").status,
        Status::Failed
    );
    registry.close().await.expect("close");
    std::fs::remove_dir_all(&dir).expect("clean up");
}

/// Every file under `dir`, recursively, is free of `needle`.
fn assert_no_file_contains(dir: &std::path::Path, needle: &[u8]) {
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            assert_no_file_contains(&path, needle);
        } else {
            let bytes = std::fs::read(&path).expect("read file");
            assert!(
                !bytes.windows(needle.len()).any(|window| window == needle),
                "{} still holds the forgotten bytes",
                path.display()
            );
        }
    }
}
