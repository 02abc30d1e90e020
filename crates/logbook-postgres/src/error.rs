//! The errors of the PostgreSQL store.
//!
//! Owns: the one error enum of `logbook-postgres` and the mapping of driver and pool errors to
//! it: connection loss, a restarting server, a statement timeout, a full pool become
//! [`Error::Unavailable`] (retryable), anything else [`Error::Database`] with the operation, the
//! SQLSTATE and the server's message.
//! Never: shows a bare SQLSTATE as the whole message, includes a password in a message, or
//! calls an error retryable when retrying could not help (a bad URL, a foreign database).

use crate::ExpectedVersion;

/// The result of a store operation.
pub type Result<T> = std::result::Result<T, Error>;

/// What went wrong in the PostgreSQL store.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A write on a store opened read-only ([`crate::PgStore::open_read_only`]); nothing was
    /// sent to the server.
    #[error("{operation} refused: the store at {target} is open read-only")]
    ReadOnly {
        /// The refused operation.
        operation: &'static str,
        /// Where.
        target: String,
    },
    /// A stream truncation asked for a version beyond the stream's end.
    #[error("cannot truncate stream {stream} before version {before}: its last version is {}", display_version(*actual))]
    TruncateBeyondEnd {
        /// The stream.
        stream: String,
        /// The first version to keep.
        before: u64,
        /// The stream's last version.
        actual: Option<u64>,
    },
    /// An append's (or delete's) expected version did not match the stream: nothing of that
    /// request was written. `actual` is the stream's last version, `None` when it has none.
    #[error(
        "wrong expected version for stream {stream}: expected {expected}, actual {}",
        display_version(*actual)
    )]
    WrongExpectedVersion {
        /// The stream.
        stream: String,
        /// What the request expected.
        expected: ExpectedVersion,
        /// The stream's last version when the check ran under the append lock.
        actual: Option<u64>,
    },
    /// A delete or soft delete of a stream that never had an event (expect `NoStream` in a
    /// delete to reserve the name anyway); nothing was written.
    #[error("stream {stream} not found: it never had an event")]
    StreamNotFound {
        /// The stream.
        stream: String,
    },
    /// A request the store refuses as such, whatever the database holds; nothing was written.
    #[error("invalid request: {reason}")]
    InvalidRequest {
        /// Why.
        reason: String,
    },
    /// The stream was deleted: its events are gone and it takes no more appends.
    #[error("stream {stream} is deleted")]
    StreamDeleted {
        /// The stream.
        stream: String,
    },
    /// The database holds a logbook schema newer than this code: it is never downgraded.
    #[error(
        "the database {target} has logbook schema version {found}; this logbook supports up to \
         {supported}: upgrade logbook (the schema is never downgraded)"
    )]
    SchemaTooNew {
        /// Where.
        target: String,
        /// The version in the database.
        found: i32,
        /// The newest version this code knows.
        supported: i32,
    },
    /// The database has tables of another application and no logbook schema: logbook refuses
    /// to create its tables beside them.
    #[error(
        "the database {target} holds other tables ({}) and no logbook schema: use an empty \
         database for logbook",
        tables.join(", ")
    )]
    ForeignTables {
        /// Where.
        target: String,
        /// Up to [`crate::schema::FOREIGN_TABLES_LISTED_MAX`] of the tables found.
        tables: Vec<String>,
    },
    /// A read-only open of a database that holds no logbook schema: no log was ever created
    /// there (a read-only store never creates one).
    #[error(
        "the database {target} holds no logbook schema: no log was ever created there (a writer \
         creates it: `logbook append`, or `logbook copy` into the database)"
    )]
    NoSchema {
        /// Where.
        target: String,
    },
    /// The logbook schema in the database is not one this code wrote (a missing version row,
    /// a missing table).
    #[error("the logbook schema in {target} is damaged: {reason}")]
    SchemaDamaged {
        /// Where.
        target: String,
        /// What is wrong.
        reason: String,
    },
    /// The connection string or URL cannot be parsed.
    #[error("invalid PostgreSQL connection string: {reason}")]
    InvalidUrl {
        /// Why (the driver's words; never the password).
        reason: String,
    },
    /// The server cannot be reached or refused the connection. Retryable.
    #[error("cannot connect to PostgreSQL at {target}: {cause} (retryable)")]
    Connect {
        /// Where.
        target: String,
        /// Why.
        cause: String,
    },
    /// The connection dropped, the server restarts, a statement timed out or the pool is
    /// exhausted. Retryable. For an append the outcome is unknown: it may have committed, so
    /// retry with an exact expected version.
    #[error("PostgreSQL unavailable during {operation}: {cause} (retryable)")]
    Unavailable {
        /// What was being done.
        operation: &'static str,
        /// Why, with the SQLSTATE when the server sent one.
        cause: String,
    },
    /// A request over a limit; nothing of it was written.
    #[error("{what} too large: {actual} over the limit of {limit}")]
    TooLarge {
        /// What.
        what: &'static str,
        /// The limit.
        limit: usize,
        /// The size asked for.
        actual: usize,
    },
    /// A row read back does not hold what logbook wrote (a bad envelope, a negative position).
    #[error("corrupted row in {table} at {key}: {reason}")]
    Corrupted {
        /// The table.
        table: &'static str,
        /// The row's key (position, stream/version).
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// Any other server error: not retryable as such.
    #[error("PostgreSQL error during {operation}: {message} (SQLSTATE {code})")]
    Database {
        /// What was being done.
        operation: &'static str,
        /// The SQLSTATE.
        code: String,
        /// The server's message.
        message: String,
    },
}

fn display_version(version: Option<u64>) -> String {
    version.map_or_else(|| "no stream".to_string(), |version| version.to_string())
}

impl Error {
    /// True when the same call may succeed later (connection loss, restart, timeout).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Connect { .. } | Error::Unavailable { .. })
    }

    /// Maps a driver error met during `operation`.
    pub(crate) fn from_driver(operation: &'static str, error: tokio_postgres::Error) -> Error {
        if let Some(db) = error.as_db_error() {
            let code = db.code().code();
            let cause = format!("{} (SQLSTATE {code})", db.message());
            if code == READ_ONLY_SQLSTATE {
                // A read-only session, or a server in recovery (a hot standby).
                return Error::ReadOnly {
                    operation,
                    target: format!("the server ({})", db.message()),
                };
            }
            if is_retryable_sqlstate(code) {
                return Error::Unavailable { operation, cause };
            }
            return Error::Database {
                operation,
                code: code.to_string(),
                message: db.message().to_string(),
            };
        }
        // No server error: the socket closed, an I/O error, a protocol error on a dropped
        // connection. All of them are connection trouble.
        Error::Unavailable {
            operation,
            cause: error.to_string(),
        }
    }

    /// Maps a pool error met while getting a connection for `operation`.
    pub(crate) fn from_pool(operation: &'static str, error: deadpool_postgres::PoolError) -> Error {
        match error {
            deadpool_postgres::PoolError::Backend(error) => Error::from_driver(operation, error),
            other => Error::Unavailable {
                operation,
                cause: format!("connection pool: {other}"),
            },
        }
    }
}

/// `read_only_sql_transaction`: a write in a read-only transaction.
const READ_ONLY_SQLSTATE: &str = "25006";

/// SQLSTATEs after which a retry can succeed: connection exceptions (class 08), operator
/// intervention (57: shutdown, crash, cannot connect now, statement timeout / cancel),
/// insufficient resources (53), serialization failure and deadlock (40).
fn is_retryable_sqlstate(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("57")
        || code.starts_with("53")
        || code == "40001"
        || code == "40P01"
}
