//! One module per command (or family of commands), and what they share.

pub mod dump;
pub mod maintenance;
pub mod repair;
pub mod state;
pub mod stats;
pub mod verify;
pub mod write;

use anyhow::{Context, Result};
use logbook::inspect::{self, Inspector};
use std::path::Path;

/// Opens `dir` read-only: no lock, nothing written, fine beside a live writer. A log whose
/// creation was not finished opens empty, with a note on stderr.
pub fn inspector(dir: &Path) -> Result<Inspector> {
    require_log(dir)?;
    let inspector = Inspector::open(dir)
        .with_context(|| format!("cannot read the log in {}", dir.display()))?;
    if inspector.creation_unfinished() {
        note_unfinished(dir);
    }
    Ok(inspector)
}

/// Says on stderr that the log in `dir` was never finished (it holds no event).
pub fn note_unfinished(dir: &Path) {
    eprintln!("note: {}: {}", dir.display(), inspect::CREATION_UNFINISHED);
}

/// A runtime for the engine's async API.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Refuses a directory that does not hold a log (for commands that must not create one).
pub fn require_log(dir: &Path) -> Result<()> {
    if !dir.exists() {
        return Err(crate::output::Usage(format!("{}: no such directory", dir.display())).into());
    }
    if !dir.is_dir() {
        return Err(crate::output::Usage(format!("{}: not a directory", dir.display())).into());
    }
    if !dir.join(logbook::inspect::WAL_DIR_NAME).is_dir() {
        return Err(crate::output::Usage(format!(
            "{}: not a logbook directory (it has no wal/ directory)",
            dir.display()
        ))
        .into());
    }
    Ok(())
}
