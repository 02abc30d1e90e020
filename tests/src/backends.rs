//! One test body, both backends: where a log lives for a behaviour test (a temporary directory,
//! or a fresh database in the test binary's throwaway PostgreSQL cluster), and how to open and
//! reopen it. `tests/backends.rs` runs each behaviour on both through [`on_both_backends!`](crate::on_both_backends).

use crate::pg::{Cluster, TestDatabase};
use logbook::{Event, Logbook, LogbookOptions, OpenReport, Projections};

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
