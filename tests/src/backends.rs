//! One test body, both backends: where a log lives for a behaviour test (a temporary directory,
//! or a fresh database in the test binary's throwaway PostgreSQL cluster), and how to open and
//! reopen it. `tests/backends.rs` runs each behaviour on both through [`on_both_backends!`](crate::on_both_backends).

use crate::pg::{Cluster, TestDatabase};
use logbook::{
    BuiltinEvent, BuiltinLog, Direction, Event, Logbook, LogbookOptions, OpenReport, Projections,
    RecordedEvent, StreamId,
};
use std::path::{Path, PathBuf};

/// Where a test's log lives.
pub enum Home {
    /// A directory of its own (the embedded WAL).
    Embedded(tempfile::TempDir),
    /// A database of its own in the binary's shared cluster.
    Postgres(TestDatabase),
}

impl Home {
    /// A fresh, empty temporary directory.
    pub fn embedded() -> Home {
        Home::Embedded(tempfile::tempdir().expect("temp dir"))
    }

    /// A fresh, empty database.
    pub fn postgres() -> Home {
        Home::Postgres(Cluster::shared().create_database())
    }

    /// Which one, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Home::Embedded(_) => "embedded",
            Home::Postgres(_) => "postgres",
        }
    }

    /// Opens the log here with `projections` (creating it the first time).
    pub async fn open<E: Event>(
        &self,
        options: LogbookOptions,
        projections: Projections<E>,
    ) -> (Logbook<E>, OpenReport) {
        let opened = match self {
            Home::Embedded(dir) => {
                Logbook::open_dir_with_projections(dir.path(), options, projections).await
            }
            Home::Postgres(database) => {
                Logbook::open_postgres_with_projections(
                    &database.connection_string(),
                    options,
                    projections,
                )
                .await
            }
        };
        opened.unwrap_or_else(|error| panic!("open on {}: {error}", self.name()))
    }

    /// Opens the built-in model's log here ([`BuiltinLog`] and its projections).
    pub async fn open_builtin(&self, options: LogbookOptions) -> BuiltinLog {
        let opened = match self {
            Home::Embedded(dir) => BuiltinLog::open(dir.path(), options).await,
            Home::Postgres(database) => {
                BuiltinLog::open_postgres(&database.connection_string(), options).await
            }
        };
        let (log, _) = opened.unwrap_or_else(|error| panic!("open on {}: {error}", self.name()));
        log
    }
}

/// The first 1,000 events of `stream` (a test's small stream, whole), in version order.
pub async fn small_stream(log: &BuiltinLog, stream: &str) -> Vec<RecordedEvent<BuiltinEvent>> {
    let stream = StreamId::new(stream).expect("stream");
    log.log()
        .read_stream(&stream, 0, Direction::Forward, 1000)
        .await
        .expect("read")
}

/// A file of `tests/fixtures/import/` (the import formats' example files).
pub fn import_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/import")
        .join(name)
}

/// Runs `body(home)` once per backend: `mod $name { embedded, postgres }`, each a
/// multi-threaded tokio test with a fresh home.
#[macro_export]
macro_rules! on_both_backends {
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn embedded() {
                super::$body($crate::backends::Home::embedded()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$body($crate::backends::Home::postgres()).await;
            }
        }
    };
}
