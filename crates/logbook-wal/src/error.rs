//! The one error type of the WAL crate.
//!
//! Owns: every way a WAL operation can fail, each naming the file, offset and cause where one
//! exists. Must never: hide an I/O error's kind, or merge corruption with an ordinary I/O error
//! (callers treat them differently: corruption needs an operator, I/O may be transient).

use std::io;
use std::path::PathBuf;

/// A `Result` whose error is the WAL's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong in the WAL.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system I/O error on a named file or directory.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory the operation touched.
        path: PathBuf,
        /// The underlying error (its kind tells EIO from ENOSPC).
        #[source]
        source: io::Error,
    },
    /// Bytes on disk that the WAL did not write, or that changed after they were durable.
    #[error("corruption in {segment} at byte offset {offset}: {reason}")]
    Corrupted {
        /// The segment file.
        segment: PathBuf,
        /// Byte offset of the bad structure within the file.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A segment the manifest lists has no file: acknowledged records are gone (a mistaken `rm`,
    /// an incomplete copy). Open refuses; only an explicit salvage accepts the loss.
    #[error("segment {segment} is missing: {}", match last_position {
        Some(last) => format!("positions {first_position}..={last} are gone"),
        None => format!("positions from {first_position} to the end of the log are gone"),
    })]
    MissingSegment {
        /// The file that should exist.
        segment: PathBuf,
        /// The first position it may have held (its base).
        first_position: u64,
        /// The last position it may have held; `None` for the newest segment.
        last_position: Option<u64>,
    },
    /// A segment file the manifest does not list: the log never created it (a restored copy, a
    /// file from another log). Open refuses; only an explicit salvage adopts it.
    #[error("segment {segment} is not in the manifest {manifest}: the log never created it")]
    UnexpectedSegment {
        /// The file.
        segment: PathBuf,
        /// The manifest.
        manifest: PathBuf,
    },
    /// The log once reached a position that its segments no longer hold: acknowledged records
    /// at the end of the log are gone. Open refuses; only an explicit salvage accepts the loss.
    #[error("the log reached position {reached} ({evidence}) but its segments end at {end}: positions {}..={reached} are gone", end + 1)]
    LogBehind {
        /// The position the log is proven to have reached.
        reached: u64,
        /// Where its segments end.
        end: u64,
        /// What proves it (the manifest, a snapshot, the stream index).
        evidence: String,
    },
    /// A record, batch or option is over one of the WAL's limits; nothing was written.
    #[error("limit exceeded: {what} is {actual}, limit is {limit}")]
    LimitExceeded {
        /// Which limit.
        what: &'static str,
        /// The limit.
        limit: u64,
        /// The offending value.
        actual: u64,
    },
    /// An append of zero records; nothing was written.
    #[error("empty batch: an append needs at least one record")]
    EmptyBatch,
    /// Another writer holds the directory lock.
    #[error("log directory is locked by another writer: {path}")]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// An earlier write or sync failed; the WAL refuses writes until it is reopened.
    #[error("WAL is poisoned after an earlier failure ({reason}); reopen it to recover")]
    Poisoned {
        /// The failure that poisoned the WAL.
        reason: String,
    },
    /// The WAL was opened read-only.
    #[error("WAL was opened read-only")]
    ReadOnly,
    /// The WAL was closed.
    #[error("WAL is closed")]
    Closed,
    /// Invalid options or arguments.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corrupted(
        segment: impl Into<PathBuf>,
        offset: u64,
        reason: impl Into<String>,
    ) -> Self {
        Error::Corrupted {
            segment: segment.into(),
            offset,
            reason: reason.into(),
        }
    }

    /// True when the error reports corruption or lost records (as opposed to I/O, limits or
    /// usage): an operator must look (`verify`), and only an explicit salvage goes on.
    pub fn is_corruption(&self) -> bool {
        matches!(
            self,
            Error::Corrupted { .. }
                | Error::MissingSegment { .. }
                | Error::UnexpectedSegment { .. }
                | Error::LogBehind { .. }
        )
    }
}
