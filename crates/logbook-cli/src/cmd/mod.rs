//! One module per command (or family of commands), and what they share.

pub mod consumers;
pub mod copy;
pub mod dump;
pub mod import;
pub mod maintenance;
pub mod repair;
pub mod state;
pub mod stats;
pub mod types;
pub mod verify;
pub mod write;

use crate::output::Usage;
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
/// A path that cannot be looked at (permission denied, a name too long) is that error, not
/// "no such directory" or "not a logbook directory".
pub fn require_log(dir: &Path) -> Result<()> {
    refuse_url(dir)?;
    match look(dir)? {
        None => Err(Usage(format!("{}: no such directory", dir.display())).into()),
        Some(false) => Err(Usage(format!("{}: not a directory", dir.display())).into()),
        Some(true) => match look(&dir.join(logbook::inspect::WAL_DIR_NAME))? {
            Some(true) => Ok(()),
            _ => Err(Usage(format!(
                "{}: not a logbook directory (it has no wal/ directory)",
                dir.display()
            ))
            .into()),
        },
    }
}

/// A usage error for a PostgreSQL URL given to a command (or an option) that works on
/// directories only (never a directory named after the URL).
fn refuse_url(target: &Path) -> Result<()> {
    if postgres_url(target).is_none() {
        return Ok(());
    }
    Err(Usage(format!(
        "{}: a PostgreSQL URL; this works on directories only (`logbook copy <url> <dir>` copies \
         the log into a directory)",
        redacted(target)
    ))
    .into())
}

/// Opens the log in the PostgreSQL database at `url` (`target` as given, for messages)
/// read-only: no DDL, no write, the schema must exist and be the version this tool reads.
pub fn remote_log(
    runtime: &tokio::runtime::Runtime,
    target: &Path,
    url: &str,
) -> Result<inspect::RemoteLog> {
    runtime
        .block_on(inspect::RemoteLog::open(url))
        .with_context(|| {
            format!(
                "cannot read the log in the PostgreSQL database {}",
                display_target(target)
            )
        })
}

/// The `postgres://` (or `postgresql://`) URL `target` is, if it is one.
pub fn postgres_url(target: &Path) -> Option<String> {
    let text = target.to_str()?;
    (text.starts_with("postgres://") || text.starts_with("postgresql://")).then(|| text.to_string())
}

/// A directory or URL for messages: a URL's password, if any, left out.
pub fn display_target(target: &Path) -> String {
    redacted(target)
}

/// A URL for messages: the password, if any, left out.
fn redacted(target: &Path) -> String {
    let text = target.display().to_string();
    match (text.find("://"), text.find('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &text[scheme + 3..at];
            match credentials.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &text[..scheme + 3],
                    &credentials[..colon],
                    &text[at..]
                ),
                None => text,
            }
        }
        _ => text,
    }
}

/// Refuses a directory `append` would create a log in although it holds other files: it must
/// be missing, empty or a log.
pub fn require_log_or_empty(dir: &Path) -> Result<()> {
    refuse_url(dir)?;
    match look(dir)? {
        None => Ok(()),
        Some(false) => Err(Usage(format!("{}: not a directory", dir.display())).into()),
        Some(true) => {
            if look(&dir.join(logbook::inspect::WAL_DIR_NAME))? == Some(true) {
                return Ok(());
            }
            let mut entries = std::fs::read_dir(dir)
                .with_context(|| format!("cannot read the directory {}", dir.display()))?;
            if entries.next().is_none() {
                return Ok(());
            }
            Err(Usage(format!(
                "{}: not a logbook directory (it has no wal/ directory) and not empty: refusing \
                 to create a log among other files; give a new or empty directory",
                dir.display()
            ))
            .into())
        }
    }
}

/// `None` when `path` does not exist, else whether it is a directory; any other failure to
/// look (permission denied...) is an error naming the path.
fn look(path: &Path) -> Result<Option<bool>> {
    match std::fs::metadata(path) {
        Ok(metadata) => Ok(Some(metadata.is_dir())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => {
            Err(anyhow::Error::new(error).context(format!("cannot look at {}", path.display())))
        }
    }
}
