//! One module per command (or family of commands), and what they share.

pub mod dump;
pub mod maintenance;
pub mod repair;
pub mod state;
pub mod stats;
pub mod verify;
pub mod write;

use anyhow::{Context, Result};
use logbook::Damage;
use logbook::inspect::{self, Inspector};
use std::path::Path;

/// Opens `dir` read-only: no lock, nothing written, fine beside a live writer. A log whose
/// creation was not finished opens empty, with a note on stderr. A log with a damaged frame
/// opens: reads return what precedes the damage, then fail ([`read_error`]).
pub fn inspector(dir: &Path) -> Result<Inspector> {
    require_log(dir)?;
    let inspector = Inspector::open(dir)
        .map_err(|error| read_error(dir, error))
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

/// A read error as the operator sees it: corruption names the segment and offset (the WAL's
/// message) and the commands that list and repair the damage.
pub fn read_error(dir: &Path, error: logbook::Error) -> anyhow::Error {
    if !error.is_corruption() {
        return error.into();
    }
    anyhow::Error::new(error).context(format!(
        "the log in {dir} is damaged (everything before the damage was read; run `logbook verify {dir}` to list the damage and `logbook repair {dir} --keep-intact` to drop only the damaged frames)",
        dir = dir.display()
    ))
}

/// The error of a read that stopped before `damage` (it printed everything before it), with
/// `note` saying what the output covers.
pub fn damage_error(dir: &Path, damage: &Damage, note: &str) -> anyhow::Error {
    let error = read_error(dir, logbook::Error::Wal(damage.to_error()));
    match note.is_empty() {
        true => error,
        false => error.context(note.to_owned()),
    }
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
