//! The one error type of the engine.
//!
//! Owns: every way an engine call can fail, with the stream, position or file involved. Must
//! never: turn a lower crate's error into a string; the WAL and event errors are kept whole.

use crate::ExpectedVersion;

/// A `Result` whose error is the engine's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong in the engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The write-ahead log failed (I/O, corruption, lock, poison, limits).
    #[error(transparent)]
    Wal(#[from] logbook_wal::Error),
    /// A writer open refused the log: the WAL found corruption (a bad frame in a sealed
    /// segment, or one a later frame proves was durable) or lost records (a missing or unlisted
    /// segment, segments that end before the position the log reached). The message names the
    /// file, the offset or positions and the cause, and says how to repair it. The WAL's error
    /// is kept whole.
    #[error("{wal}; {}", repair_hint(wal, dir))]
    Damaged {
        /// The log directory.
        dir: std::path::PathBuf,
        /// The WAL's `Corrupted` error.
        wal: logbook_wal::Error,
    },
    /// An event, stream id or envelope was invalid, or could not be encoded or decoded.
    #[error(transparent)]
    Event(#[from] logbook_projection::Error),
    /// The stream was not at the version the append expected; nothing was written.
    #[error("wrong expected version for stream {stream}: expected {expected}, actual {}", actual.map_or("no stream".to_owned(), |version| version.to_string()))]
    WrongExpectedVersion {
        /// The stream.
        stream: String,
        /// What the caller expected.
        expected: ExpectedVersion,
        /// The version of the stream's last event, `None` when it has none.
        actual: Option<u64>,
    },
    /// The stream was deleted: reads and appends fail.
    #[error("stream {stream} was deleted")]
    StreamDeleted {
        /// The stream.
        stream: String,
    },
    /// `delete_stream` or `soft_delete_stream` of a stream that never had an event (and was
    /// never deleted); nothing was written.
    #[error("stream {stream} not found: it never had an event, nothing to delete")]
    StreamNotFound {
        /// The stream.
        stream: String,
    },
    /// A request over one of the engine's limits; nothing was written.
    #[error("limit exceeded: {what} is {actual}, limit is {limit}")]
    LimitExceeded {
        /// Which limit.
        what: &'static str,
        /// The limit.
        limit: u64,
        /// The offending value.
        actual: u64,
    },
    /// A record of the log is not a valid event, or contradicts the events before it.
    #[error("corrupt event at position {position}: {reason}")]
    Corrupted {
        /// The record's position.
        position: u64,
        /// What is wrong.
        reason: String,
    },
    /// A name reserved for the engine's own use.
    #[error("stream {stream} is reserved for the engine")]
    ReservedStream {
        /// The stream.
        stream: String,
    },
    /// The stream index (derived data, rebuilt from the WAL when it fails at open).
    #[error("stream index at {path}: {reason}")]
    Index {
        /// The index directory.
        path: std::path::PathBuf,
        /// What sled reported.
        reason: String,
    },
    /// An I/O error outside the WAL (index or snapshot directory).
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory.
        path: std::path::PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A request the engine refuses as such (a copy onto itself); nothing was written.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// A snapshot could not be taken or used.
    #[error("snapshot: {0}")]
    Snapshot(String),
    /// The snapshot store failed.
    #[error(transparent)]
    SnapshotStore(#[from] logbook_compaction::Error),
    /// The engine refuses to go on after a failure it cannot undo in-process (a failed WAL
    /// write or fsync, or a durable event it could not apply): every later append, delete,
    /// truncation, sync, snapshot and `wait_applied` fails with this until the log is reopened.
    /// Reads of the log itself keep working. See [`Stats::poisoned`](crate::Stats).
    #[error("the log is poisoned at position {position}: {reason}; reopen it to recover")]
    Poisoned {
        /// The first position whose outcome is unknown: not durable, or durable but not applied.
        position: u64,
        /// What failed.
        reason: String,
    },
    /// The engine was closed, or its writer stopped.
    #[error("the log is closed")]
    Closed,
    /// The PostgreSQL backend failed: [`logbook_postgres::Error::is_retryable`] says whether
    /// trying again can help (a dropped connection, a restarting server, a statement timeout).
    /// A version conflict, a deleted or a missing stream are reported as their own variants.
    #[cfg(feature = "postgres")]
    #[error(transparent)]
    Postgres(logbook_postgres::Error),
    /// Another handle took the durable consumer over (another process or replica opened it,
    /// or an operator reset it) since this handle's last checkpoint: stop using this handle.
    #[error(
        "consumer {name} was checkpointed by another handle (another process or replica opened \
         it, or an operator reset it): expected checkpoint version {expected}, found {actual}; \
         stop this handle and open the consumer again"
    )]
    ConsumerConflict {
        /// The consumer.
        name: String,
        /// The checkpoint stream's version this handle expected.
        expected: String,
        /// The version found.
        actual: String,
    },
    /// A handle of this durable consumer is already open in this process.
    #[error(
        "consumer {name} is already open in this process: close that handle (Consumer::close) \
         before opening it again"
    )]
    ConsumerInUse {
        /// The consumer.
        name: String,
    },
    /// An import's input was refused (malformed JSON, a missing or invalid field, a duplicate
    /// id, an element over the size limit): `path` is the JSON path (`$.messages[1234].author`),
    /// `line` and `column` where the reader was (1-based). Nothing of the file was written.
    #[error("import: {path} (line {line}, column {column}): {reason}")]
    Import {
        /// The JSON path of the offending value.
        path: String,
        /// The line of the input (1-based).
        line: u64,
        /// The column of the input (1-based; 0 when unknown).
        column: u64,
        /// What is wrong.
        reason: String,
    },
    /// An import would write into a stream that already holds events it did not write (not
    /// from a previous attempt at the same file); nothing of the file was written.
    #[error("import: stream {stream} {reason}; nothing was imported")]
    ImportConflict {
        /// The stream.
        stream: String,
        /// Why it conflicts.
        reason: String,
    },
    /// A background task panicked or was cancelled.
    #[error("internal task failed: {0}")]
    Task(String),
}

impl Error {
    /// The lock file, when the error is a writer open refused because another writer holds the
    /// log ([`crate::inspect::lock_holder`] names that process).
    pub fn locked_path(&self) -> Option<&std::path::Path> {
        match self {
            Error::Wal(logbook_wal::Error::Locked { path }) => Some(path),
            _ => None,
        }
    }

    /// True when the error reports damaged bytes of the log (the WAL's corruption, whether a
    /// writer open refused it or a read met it), as opposed to I/O, limits or usage.
    pub fn is_corruption(&self) -> bool {
        match self {
            Error::Wal(error) | Error::Damaged { wal: error, .. } => error.is_corruption(),
            _ => false,
        }
    }
}

/// What an operator runs for a log a writer refused: the damaged frames can be dropped one by
/// one; lost or foreign segments can only be accepted as lost (or adopted).
fn repair_hint(wal: &logbook_wal::Error, dir: &std::path::Path) -> String {
    let dir = dir.display();
    match wal {
        logbook_wal::Error::Corrupted { .. } => format!(
            "a writer cannot open the log in {dir} until it is repaired: run `logbook verify {dir}` to list the damage and `logbook repair {dir} --keep-intact` to drop only the damaged frames (or open with RecoveryMode::Salvage to cut the log there)"
        ),
        _ => format!(
            "a writer cannot open the log in {dir} until it is repaired: run `logbook verify {dir}` to list what is missing, put the files back if you have them, or run `logbook repair {dir} --yes` to accept the loss (RecoveryMode::Salvage in the engine)"
        ),
    }
}
