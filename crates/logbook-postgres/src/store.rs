//! The PostgreSQL store: grouped appends, reads, deletion and truncation, snapshots, VACUUM.
//!
//! Owns: the connection pool, the statements on the logbook tables after [`crate::schema`]
//! made them (the group committer's one-round-trip append statement is in `pipeline.rs`), the
//! append lock, position and version assignment, read-only refusal, and the request for a
//! wake-up after each committed group (the `NOTIFY` itself is sent by
//! [`crate::committer`]'s notifier).
//! Never: assigns a position outside the append lock (that would let a reader following
//! `position > last` skip a row committed later with a lower position), sends one `NOTIFY` per
//! event or inside the append transaction, hides deleted events instead of removing their rows,
//! or trusts a row without checking its envelope against its columns.
//!
//! # Why dense positions in commit order (design (a) of issue 13)
//! Every append group takes one cluster-wide `pg_advisory_xact_lock(APPEND_LOCK_KEY)` and holds
//! it until its commit. Positions are read from and written to `logbook_log` under that lock,
//! and PostgreSQL makes a commit visible before it releases the transaction's locks, so group
//! N+1 takes positions only after group N is visible: a reader polling `position > last` sees
//! positions appear in order and can never skip one. The cursor stays the plain position (the
//! same `u64` the embedded WAL gives), no transaction-id horizon stalls behind an
//! idle-in-transaction session elsewhere in the cluster, and a logical restore keeps working.
//! The cost is one group at a time cluster-wide; it is paid per group, not per event, so the
//! engine's writer (which already gathers appends) scales by putting many streams' appends in
//! one transaction. A failed expected-version check fails only its own request.

use crate::committer::{Committer, Notifier};
use crate::error::{Error, Result};
use crate::follower::{FollowOptions, Follower, WakeHub};
use crate::{Direction, ExpectedVersion, schema};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use logbook_projection::{Envelope, EnvelopeRef, EventData, RawEvent, StreamId};
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_postgres::NoTls;

/// The advisory-lock key every append group and every delete holds until it commits.
/// "LBAPPEND" in ASCII.
pub const APPEND_LOCK_KEY: i64 = 0x4C42_4150_5045_4E44;
/// The channel of the wake-up `NOTIFY` sent after each committed group (empty payload).
pub const NOTIFY_CHANNEL: &str = "logbook_events";
/// The most rows one read returns; larger `max` values are clamped.
pub const READ_PAGE_MAX: usize = 10_000;
/// The most events in one append group.
pub const GROUP_EVENTS_MAX: usize = 100_000;
/// The most envelope bytes in one append group (a `bytea[]` parameter must stay far below
/// PostgreSQL's 1 GiB field limit).
pub const GROUP_BYTES_MAX: usize = 256 * 1024 * 1024;
/// The largest snapshot.
pub const SNAPSHOT_BYTES_MAX: usize = 256 * 1024 * 1024;
/// Default connections in the pool.
pub const POOL_SIZE_DEFAULT: usize = 16;
/// Default time to connect, and to wait for a free pooled connection.
pub const CONNECT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);

/// How to open a [`PgStore`].
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Connections in the pool.
    pub pool_size: usize,
    /// Time to connect, and to wait for a free pooled connection.
    pub connect_timeout: Duration,
    /// The server's `statement_timeout` for this store's sessions (`None`: the server's own).
    pub statement_timeout: Option<Duration>,
    /// Groups the committer keeps in flight at once (see
    /// [`crate::committer::GROUPS_IN_FLIGHT_DEFAULT`]; at least 1).
    pub groups_in_flight: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            pool_size: POOL_SIZE_DEFAULT,
            connect_timeout: CONNECT_TIMEOUT_DEFAULT,
            statement_timeout: None,
            groups_in_flight: crate::committer::GROUPS_IN_FLIGHT_DEFAULT,
        }
    }
}

/// One append of a group: events for one stream, with the version the stream must be at.
#[derive(Debug, Clone)]
pub struct AppendRequest {
    /// The stream.
    pub stream: StreamId,
    /// Checked under the append lock; a mismatch fails this request only.
    pub expected: ExpectedVersion,
    /// The events, in order.
    pub events: Vec<EventData>,
}

/// Where a request's events went: versions and positions are contiguous.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// The version of the first event (the next version when `count` is 0).
    pub first_version: u64,
    /// The position of the first event (the next position when `count` is 0).
    pub first_position: u64,
    /// How many events.
    pub count: u64,
}

/// A stream's state in `logbook_streams`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StreamHead {
    /// The last version, `None` when the stream never had an event.
    pub last_version: Option<u64>,
    /// Deleted: its events are removed and it takes no more appends.
    pub deleted: bool,
    /// The first version a read can return: every lower one was removed by
    /// [`PgStore::truncate_stream`] (0: never truncated).
    pub truncated_before: u64,
}

/// What a delete or a truncation removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Purged {
    /// Event rows removed.
    pub events: u64,
    /// The lowest position removed (`None`: nothing removed). Every snapshot at or above it
    /// contains removed events: pass it to [`PgStore::purge_snapshots_covering`].
    pub lowest_position: Option<u64>,
}

/// logbook's tables in one PostgreSQL database, through a connection pool.
///
/// Clones share the pool, the group committer and the wake-up listener: open one store per
/// process and clone it.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    config: tokio_postgres::Config,
    target: String,
    read_only: bool,
    /// `None` on a read-only store and on the committer task's own handle.
    committer: Option<Committer>,
    /// `None` on a read-only store.
    notifier: Option<Notifier>,
    wakes: Arc<WakeHub>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("PgStore")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects to `url` (a `postgres://` URL or a libpq `key=value` string), then creates or
    /// migrates the schema.
    ///
    /// Starts the group committer behind [`PgStore::append`] (so it must run inside a tokio
    /// runtime).
    pub async fn open(url: &str, options: StoreOptions) -> Result<PgStore> {
        let groups_in_flight = options.groups_in_flight.max(1);
        let mut store = PgStore::connect(url, options, false)?;
        let mut client = store.open_client().await?;
        schema::migrate(&mut client, &store.target).await?;
        drop(client);
        store.notifier = Some(Notifier::start(store.pool.clone()));
        store.committer = Some(Committer::start(store.clone(), groups_in_flight));
        Ok(store)
    }

    /// Connects to `url` and checks the schema without writing anything: no DDL, every
    /// session runs with `default_transaction_read_only=on`, and every write method returns
    /// [`Error::ReadOnly`] without reaching the server.
    pub async fn open_read_only(url: &str, options: StoreOptions) -> Result<PgStore> {
        let store = PgStore::connect(url, options, true)?;
        let mut client = store.open_client().await?;
        let found = schema::read_version(&mut client, &store.target).await?;
        if found > schema::SCHEMA_VERSION {
            return Err(Error::SchemaTooNew {
                target: store.target.clone(),
                found,
                supported: schema::SCHEMA_VERSION,
            });
        }
        if found == 0 {
            return Err(Error::NoSchema {
                target: store.target.clone(),
            });
        }
        if found < schema::SCHEMA_VERSION {
            return Err(Error::SchemaDamaged {
                target: store.target.clone(),
                reason: format!(
                    "schema version {found}, this logbook reads {}: open it read-write once to \
                     create or migrate it",
                    schema::SCHEMA_VERSION
                ),
            });
        }
        Ok(store)
    }

    fn connect(url: &str, options: StoreOptions, read_only: bool) -> Result<PgStore> {
        let mut config =
            tokio_postgres::Config::from_str(url).map_err(|error| Error::InvalidUrl {
                reason: error.to_string(),
            })?;
        config.connect_timeout(options.connect_timeout);
        let mut settings: Vec<String> =
            config.get_options().map(String::from).into_iter().collect();
        if let Some(timeout) = options.statement_timeout {
            settings.push(format!("-c statement_timeout={}", timeout.as_millis()));
        }
        if read_only {
            settings.push("-c default_transaction_read_only=on".to_string());
        }
        if !settings.is_empty() {
            config.options(settings.join(" "));
        }
        let target = describe(&config);
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(options.connect_timeout))
            .create_timeout(Some(options.connect_timeout))
            .recycle_timeout(Some(options.connect_timeout))
            .build()
            .map_err(|error| Error::InvalidUrl {
                reason: format!("connection pool: {error}"),
            })?;
        Ok(PgStore {
            pool,
            config,
            target: target.clone(),
            read_only,
            committer: None,
            notifier: None,
            wakes: Arc::new(WakeHub::default()),
        })
    }

    /// Refuses `operation` on a read-only store, before anything reaches the server.
    pub(crate) fn writable(&self, operation: &'static str) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly {
                operation,
                target: self.target.clone(),
            });
        }
        Ok(())
    }

    /// Wakes the followers of every process (a coalesced NOTIFY after a commit).
    pub(crate) fn wake_followers(&self) {
        if let Some(notifier) = &self.notifier {
            notifier.wake();
        }
    }

    /// Whether the store was opened with [`PgStore::open_read_only`].
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// Appends one request through the group committer: concurrent calls share one
    /// transaction (and one append lock) per group. A failed expected-version check fails only
    /// this request ([`Error::WrongExpectedVersion`]); a retryable error ([`Error::is_retryable`])
    /// at commit leaves the outcome unknown (retry with an exact expected version).
    pub async fn append(&self, request: AppendRequest) -> Result<Appended> {
        self.writable("append")?;
        check_group_size(std::slice::from_ref(&request))?;
        let Some(committer) = &self.committer else {
            // Only the committer's own handle has none, and it calls `append_group`.
            return Err(Error::ReadOnly {
                operation: "append",
                target: self.target.clone(),
            });
        };
        committer.append(request).await
    }

    /// What the group committer did so far (zero on a read-only store).
    pub fn committer_stats(&self) -> crate::committer::CommitterStats {
        self.committer
            .as_ref()
            .map(Committer::stats)
            .unwrap_or_default()
    }

    /// Follows the global log from `from_position` (inclusive): pages in position order with
    /// no gap, woken by this store's one `LISTEN` connection and polling as a safety net.
    /// Must be called inside a tokio runtime (the first follower starts the listener task).
    pub fn follow(&self, from_position: u64, options: FollowOptions) -> Follower {
        Follower::new(self.clone(), self.wakes.clone(), from_position, options)
    }

    /// The first connection: a failure here is [`Error::Connect`], naming the server.
    async fn open_client(&self) -> Result<deadpool_postgres::Object> {
        self.pool.get().await.map_err(|error| Error::Connect {
            target: self.target.clone(),
            cause: error.to_string(),
        })
    }

    pub(crate) async fn client(
        &self,
        operation: &'static str,
    ) -> Result<deadpool_postgres::Object> {
        self.pool
            .get()
            .await
            .map_err(|error| Error::from_pool(operation, error))
    }

    /// Where this store connects (host, port, database; never the password).
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The driver configuration (for a [`crate::Listener`], which connects outside the pool).
    pub fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// Appends a group of requests (any streams) in ONE transaction under the append lock.
    ///
    /// Returns one outcome per request, in order: a failed expected-version check (or a
    /// deleted stream) fails only its own request; the others commit. Positions are dense and
    /// given in request order. The outer error means the whole group failed: nothing was
    /// written, or (for [`Error::Unavailable`] at commit) the outcome is unknown.
    pub async fn append_group(&self, requests: &[AppendRequest]) -> Result<Vec<Result<Appended>>> {
        self.writable("append")?;
        check_group_size(requests)?;
        let now_ms = now_ms();
        let driver = |error| Error::from_driver("append", error);
        let mut client = self.client("append").await?;
        let transaction = client.transaction().await.map_err(driver)?;
        let names: Vec<&str> = requests
            .iter()
            .map(|request| request.stream.as_str())
            .collect();
        let (last_position, mut heads) = lock_and_read_heads(&transaction, &names).await?;
        let mut plan = GroupPlan::new(last_position);
        let outcomes: Vec<Result<Appended>> = requests
            .iter()
            .map(|request| plan.place(request, &mut heads, now_ms))
            .collect();
        if plan.rows.is_empty() {
            // Nothing to write: release the lock without a write.
            transaction.commit().await.map_err(driver)?;
            return Ok(outcomes);
        }
        plan.write(&transaction, &heads).await?;
        // Durability: the events, the stream heads and the log head commit together; the
        // positions become visible before the append lock is released.
        transaction.commit().await.map_err(driver)?;
        drop(client);
        // The wake-up, after the commit and without holding up the acknowledgement: the
        // notifier task folds the commits made while one NOTIFY is on its way into the next.
        // A lost one is covered by the followers' periodic poll.
        if let Some(notifier) = &self.notifier {
            notifier.wake();
        }
        Ok(outcomes)
    }

    /// Commits `requests` (at most one per stream: the group committer's groups) in one
    /// pipelined round trip ([`crate::pipeline`]); outcomes as [`PgStore::append_group`].
    pub(crate) async fn commit_pipelined(
        &self,
        requests: &[AppendRequest],
    ) -> Result<Vec<Result<Appended>>> {
        self.writable("append")?;
        check_group_size(requests)?;
        let client = self.client("append").await?;
        let outcomes = crate::pipeline::commit_group(&client, requests, now_ms()).await?;
        drop(client);
        let wrote = requests
            .iter()
            .zip(&outcomes)
            .any(|(request, outcome)| outcome.is_ok() && !request.events.is_empty());
        if wrote && let Some(notifier) = &self.notifier {
            notifier.wake();
        }
        Ok(outcomes)
    }

    /// Reads up to `max` events of the whole log from `from_position` (inclusive), in
    /// position order.
    pub async fn read_all(&self, from_position: u64, max: usize) -> Result<Vec<RawEvent>> {
        let rows = self.page_rows(from_position, max).await?;
        rows.iter().map(decode_row).collect()
    }

    /// The newest event of every stream whose id starts with `prefix`, at most `max` streams
    /// (by stream id): one query over the stream column instead of a scan of the log, what
    /// `logbook consumers` lists the consumers' checkpoint streams (`$consumer/`) with.
    pub async fn newest_by_stream_prefix(&self, prefix: &str, max: usize) -> Result<Vec<RawEvent>> {
        let driver = |error| Error::from_driver("newest_by_stream_prefix", error);
        let client = self.client("newest_by_stream_prefix").await?;
        let mut pattern = String::with_capacity(prefix.len() + 1);
        for character in prefix.chars() {
            if matches!(character, '%' | '_' | '\\') {
                pattern.push('\\');
            }
            pattern.push(character);
        }
        pattern.push('%');
        let rows = client
            .query(
                "SELECT DISTINCT ON (stream) position, stream, version, payload
                 FROM logbook_events WHERE stream LIKE $1 ESCAPE '\\'
                 ORDER BY stream, position DESC LIMIT $2",
                &[&pattern, &page_limit(max)],
            )
            .await
            .map_err(driver)?;
        rows.iter().map(decode_row).collect()
    }

    /// [`PgStore::read_all`] as stored: each event's position and envelope bytes (checked
    /// against the row's columns, without decoding a copy), what the engine applies and
    /// subscriptions decode.
    pub async fn read_all_records(
        &self,
        from_position: u64,
        max: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>> {
        let rows = self.page_rows(from_position, max).await?;
        rows.iter()
            .map(|row| {
                let (position, bytes, _) = check_row(row)?;
                Ok((position, bytes.to_vec()))
            })
            .collect()
    }

    /// The rows of one page of the global log (`SELECT position, stream, version, payload`),
    /// read with a statement prepared once per pooled connection: one round trip per page.
    async fn page_rows(&self, from_position: u64, max: usize) -> Result<Vec<tokio_postgres::Row>> {
        let driver = |error| Error::from_driver("read_all", error);
        let client = self.client("read_all").await?;
        let statement = client
            .prepare_cached(
                "SELECT position, stream, version, payload FROM logbook_events
                 WHERE position >= $1 ORDER BY position LIMIT $2",
            )
            .await
            .map_err(driver)?;
        client
            .query(&statement, &[&to_i64(from_position), &page_limit(max)])
            .await
            .map_err(driver)
    }

    /// [`PgStore::read_all_records`] and, read in the same statement (one snapshot), how far
    /// the page covers the log: its last position when the page is full, else the log's head
    /// (`logbook_log.last_position`). Positions up to there that the page does not hold were
    /// purged: every row up to the head committed before the head did (the append lock), so
    /// no row at or below it can appear later. What a follower needs to never wait for a
    /// purged position.
    pub async fn read_all_records_through(
        &self,
        from_position: u64,
        max: usize,
    ) -> Result<(Vec<(u64, Vec<u8>)>, u64)> {
        let driver = |error| Error::from_driver("read_all", error);
        let client = self.client("read_all").await?;
        let statement = client
            .prepare_cached(
                "SELECT e.position, e.stream, e.version, e.payload, l.last_position
                 FROM logbook_log l LEFT JOIN LATERAL (
                     SELECT position, stream, version, payload FROM logbook_events
                     WHERE position >= $1 ORDER BY position LIMIT $2) e ON true
                 ORDER BY e.position",
            )
            .await
            .map_err(driver)?;
        let limit = page_limit(max);
        let rows = client
            .query(&statement, &[&to_i64(from_position), &limit])
            .await
            .map_err(driver)?;
        let first = first_row(&rows)?;
        let head: i64 = first.try_get(4).map_err(driver)?;
        let head = to_u64(head, "logbook_log", "singleton")?;
        let empty = first
            .try_get::<_, Option<i64>>(0)
            .map_err(driver)?
            .is_none();
        let records: Vec<(u64, Vec<u8>)> = if empty {
            Vec::new()
        } else {
            rows.iter()
                .map(|row| {
                    let (position, bytes, _) = check_row(row)?;
                    Ok((position, bytes.to_vec()))
                })
                .collect::<Result<_>>()?
        };
        let last = records.last().map(|(position, _)| *position);
        let through = match last {
            Some(last) if records.len() as i64 >= limit => last,
            Some(last) => last.max(head),
            None if limit > 0 => head.max(from_position.saturating_sub(1)),
            None => from_position.saturating_sub(1),
        };
        if let Some(last) = last
            && last > head
        {
            return Err(Error::Corrupted {
                table: "logbook_log",
                key: "singleton".to_string(),
                reason: format!("last_position {head} is below the stored position {last}"),
            });
        }
        Ok((records, through))
    }

    /// Reads up to `max` events of `stream` from `from_version` (inclusive), forward or
    /// backward. A deleted stream is [`Error::StreamDeleted`].
    pub async fn read_stream(
        &self,
        stream: &StreamId,
        from_version: u64,
        direction: Direction,
        max: usize,
    ) -> Result<Vec<RawEvent>> {
        let driver = |error| Error::from_driver("read_stream", error);
        let client = self.client("read_stream").await?;
        let sql = match direction {
            Direction::Forward => {
                "SELECT position, stream, version, payload FROM logbook_events
                 WHERE stream = $1 AND version >= $2 ORDER BY version LIMIT $3"
            }
            Direction::Backward => {
                "SELECT position, stream, version, payload FROM logbook_events
                 WHERE stream = $1 AND version <= $2 ORDER BY version DESC LIMIT $3"
            }
        };
        let name = stream.as_str();
        let from = to_i64(from_version);
        let limit = page_limit(max);
        let head_params: [Param; 1] = [&name];
        let page_params: [Param; 3] = [&name, &from, &limit];
        let (head_statement, page_statement) = tokio::try_join!(
            client.prepare_cached("SELECT deleted FROM logbook_streams WHERE stream = $1"),
            client.prepare_cached(sql),
        )
        .map_err(driver)?;
        // Both statements go out pipelined on one connection.
        let (head, rows) = tokio::try_join!(
            client.query_opt(&head_statement, &head_params),
            client.query(&page_statement, &page_params),
        )
        .map_err(driver)?;
        if let Some(head) = head
            && head.try_get::<_, bool>(0).map_err(driver)?
        {
            return Err(Error::StreamDeleted {
                stream: name.to_string(),
            });
        }
        rows.iter().map(decode_row).collect()
    }

    /// The stream's last version and deleted flag.
    pub async fn stream_head(&self, stream: &StreamId) -> Result<StreamHead> {
        let driver = |error| Error::from_driver("stream_head", error);
        let client = self.client("stream_head").await?;
        let row = client
            .query_opt(
                "SELECT head_version, deleted, truncated_before FROM logbook_streams
                 WHERE stream = $1",
                &[&stream.as_str()],
            )
            .await
            .map_err(driver)?;
        match row {
            None => Ok(StreamHead::default()),
            Some(row) => head_from_row(&row, stream.as_str()),
        }
    }

    /// The last position given to an event (0: none); every position up to it is committed.
    pub async fn head_position(&self) -> Result<u64> {
        let driver = |error| Error::from_driver("head_position", error);
        let client = self.client("head_position").await?;
        let row = client
            .query_one("SELECT last_position FROM logbook_log", &[])
            .await
            .map_err(driver)?;
        let position: i64 = row.try_get(0).map_err(driver)?;
        to_u64(position, "logbook_log", "singleton")
    }

    /// Deletes a stream: its event rows are removed (not hidden) and it takes no more appends.
    /// The bytes stay in PostgreSQL's pages, WAL and backups until VACUUM and beyond (see
    /// docs/postgres.md); snapshots taken after its first event still hold what they
    /// projected from it ([`PgStore::purge_snapshots_covering`]).
    pub async fn delete_stream(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
    ) -> Result<Purged> {
        self.writable("delete_stream")?;
        let driver = |error| Error::from_driver("delete_stream", error);
        let mut client = self.client("delete_stream").await?;
        let transaction = client.transaction().await.map_err(driver)?;
        let name = stream.as_str();
        let head = lock_and_read_head(&transaction, name, "delete_stream").await?;
        check_expected(name, expected, head)?;
        let purged = delete_events(&transaction, name, i64::MAX, "delete_stream").await?;
        transaction
            .execute(
                "INSERT INTO logbook_streams (stream, head_version, deleted) VALUES ($1, $2, true)
                 ON CONFLICT (stream) DO UPDATE SET deleted = true",
                &[&name, &head.last_version.map(to_i64)],
            )
            .await
            .map_err(driver)?;
        // Durability: the rows and the tombstone go together.
        transaction.commit().await.map_err(driver)?;
        Ok(purged)
    }

    /// Removes the stream's events below `before_version` (a session reset); the stream keeps
    /// its version and takes appends. `before_version` may be the stream's end (the last
    /// version plus one: every event goes); beyond it is [`Error::TruncateBeyondEnd`]. A truncation below an
    /// earlier one removes nothing more.
    pub async fn truncate_stream(&self, stream: &StreamId, before_version: u64) -> Result<Purged> {
        self.writable("truncate_stream")?;
        let driver = |error| Error::from_driver("truncate_stream", error);
        let mut client = self.client("truncate_stream").await?;
        let transaction = client.transaction().await.map_err(driver)?;
        let name = stream.as_str();
        let head = lock_and_read_head(&transaction, name, "truncate_stream").await?;
        check_expected(name, ExpectedVersion::Any, head)?;
        let end = head.last_version.map_or(0, |version| version + 1);
        if before_version > end {
            return Err(Error::TruncateBeyondEnd {
                stream: name.to_string(),
                before: before_version,
                actual: head.last_version,
            });
        }
        if before_version <= head.truncated_before {
            transaction.commit().await.map_err(driver)?;
            return Ok(Purged::default());
        }
        let before = to_i64(before_version);
        let purged = delete_events(&transaction, name, before, "truncate_stream").await?;
        transaction
            .execute(
                "UPDATE logbook_streams SET truncated_before = $2 WHERE stream = $1",
                &[&name, &before],
            )
            .await
            .map_err(driver)?;
        // Durability: the removed rows and the new truncation point go together.
        transaction.commit().await.map_err(driver)?;
        Ok(purged)
    }

    /// Removes every snapshot at or above `position`: they were taken after the event at
    /// `position` and so contain what was projected from it (call it with
    /// [`Purged::lowest_position`] after a delete or a truncation). Returns how many.
    pub async fn purge_snapshots_covering(&self, position: u64) -> Result<u64> {
        self.writable("purge_snapshots")?;
        let driver = |error| Error::from_driver("purge_snapshots", error);
        let client = self.client("purge_snapshots").await?;
        client
            .execute(
                "DELETE FROM logbook_snapshots WHERE position >= $1",
                &[&to_i64(position)],
            )
            .await
            .map_err(driver)
    }

    /// `VACUUM (ANALYZE)` of logbook's tables: the space of removed rows becomes reusable and
    /// their index entries go. It does not erase the old bytes from the pages (see
    /// docs/postgres.md); [`PgStore::vacuum_full`] rewrites the files.
    pub async fn vacuum(&self) -> Result<()> {
        self.maintenance("vacuum", "VACUUM (ANALYZE)").await
    }

    /// `VACUUM FULL` of logbook's tables: rewrites each table, its indexes and its TOAST table
    /// into new files without the removed rows. It holds an ACCESS EXCLUSIVE lock on each
    /// table while it runs: appends and reads wait.
    pub async fn vacuum_full(&self) -> Result<()> {
        self.maintenance("vacuum_full", "VACUUM (FULL, ANALYZE)")
            .await
    }

    async fn maintenance(&self, operation: &'static str, command: &str) -> Result<()> {
        self.writable(operation)?;
        let client = self.client(operation).await?;
        // VACUUM cannot run in a transaction block: one simple-protocol statement.
        let tables = ["logbook_events", "logbook_streams", "logbook_snapshots"].join(", ");
        client
            .batch_execute(&format!("{command} {tables}"))
            .await
            .map_err(|error| Error::from_driver(operation, error))
    }

    /// Stores a snapshot taken at `position` (replacing one at the same position).
    pub async fn put_snapshot(&self, position: u64, bytes: &[u8]) -> Result<()> {
        self.writable("put_snapshot")?;
        if bytes.len() > SNAPSHOT_BYTES_MAX {
            return Err(Error::TooLarge {
                what: "snapshot",
                limit: SNAPSHOT_BYTES_MAX,
                actual: bytes.len(),
            });
        }
        let driver = |error| Error::from_driver("put_snapshot", error);
        let client = self.client("put_snapshot").await?;
        client
            .execute(
                "INSERT INTO logbook_snapshots (position, created_ms, payload) VALUES ($1, $2, $3)
                 ON CONFLICT (position) DO UPDATE
                 SET created_ms = EXCLUDED.created_ms, payload = EXCLUDED.payload",
                &[&to_i64(position), &to_i64(now_ms()), &bytes],
            )
            .await
            .map_err(driver)?;
        Ok(())
    }

    /// The newest snapshot: its position and bytes.
    pub async fn latest_snapshot(&self) -> Result<Option<(u64, Vec<u8>)>> {
        let driver = |error| Error::from_driver("latest_snapshot", error);
        let client = self.client("latest_snapshot").await?;
        let row = client
            .query_opt(
                "SELECT position, payload FROM logbook_snapshots ORDER BY position DESC LIMIT 1",
                &[],
            )
            .await
            .map_err(driver)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let position: i64 = row.try_get(0).map_err(driver)?;
        let position = to_u64(position, "logbook_snapshots", "position")?;
        Ok(Some((position, row.try_get(1).map_err(driver)?)))
    }

    /// Removes every snapshot below `position`; returns how many.
    pub async fn purge_snapshots_before(&self, position: u64) -> Result<u64> {
        self.writable("purge_snapshots")?;
        let driver = |error| Error::from_driver("purge_snapshots", error);
        let client = self.client("purge_snapshots").await?;
        client
            .execute(
                "DELETE FROM logbook_snapshots WHERE position < $1",
                &[&to_i64(position)],
            )
            .await
            .map_err(driver)
    }
}

/// The rows one group writes, built under the lock.
pub(crate) struct GroupPlan {
    last_position: u64,
    rows: EventRows,
    touched: Vec<String>,
}

#[derive(Default)]
struct EventRows {
    positions: Vec<i64>,
    streams: Vec<String>,
    versions: Vec<i64>,
    event_types: Vec<String>,
    schema_versions: Vec<i32>,
    codecs: Vec<i16>,
    timestamps_ms: Vec<i64>,
    payloads: Vec<Vec<u8>>,
}

impl EventRows {
    fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }
}

impl GroupPlan {
    pub(crate) fn new(last_position: u64) -> GroupPlan {
        GroupPlan {
            last_position,
            rows: EventRows::default(),
            touched: Vec::new(),
        }
    }

    /// Checks one request against the heads (updated by earlier requests of the group) and
    /// gives its events versions and positions.
    pub(crate) fn place(
        &mut self,
        request: &AppendRequest,
        heads: &mut HashMap<String, StreamHead>,
        now_ms: u64,
    ) -> Result<Appended> {
        let name = request.stream.as_str();
        let head = heads.get(name).copied().unwrap_or_default();
        check_expected(name, request.expected, head)?;
        let first_version = head.last_version.map_or(0, |version| version + 1);
        let first_position = self.last_position + 1;
        for (offset, data) in (0u64..).zip(&request.events) {
            let version = first_version + offset;
            let position = first_position + offset;
            let envelope = Envelope::new(request.stream.clone(), version, now_ms, data.clone());
            self.rows.positions.push(to_i64(position));
            self.rows.streams.push(name.to_string());
            self.rows.versions.push(to_i64(version));
            self.rows.event_types.push(data.event_type().to_string());
            self.rows
                .schema_versions
                .push(i32::from(data.schema_version()));
            self.rows.codecs.push(i16::from(data.codec()));
            // The time the appender stated, else `now_ms`: the column is the envelope's.
            self.rows
                .timestamps_ms
                .push(to_i64(envelope.timestamp_ms()));
            self.rows.payloads.push(envelope.encode());
        }
        let count = request.events.len() as u64;
        if count > 0 {
            self.last_position += count;
            heads.insert(
                name.to_string(),
                StreamHead {
                    last_version: Some(first_version + count - 1),
                    ..head
                },
            );
            self.touched.push(name.to_string());
        }
        Ok(Appended {
            first_version,
            first_position,
            count,
        })
    }

    /// Inserts the events (one statement), the stream heads and the log head.
    pub(crate) async fn write(
        self,
        transaction: &deadpool_postgres::Transaction<'_>,
        heads: &HashMap<String, StreamHead>,
    ) -> Result<()> {
        let driver = |error| Error::from_driver("append", error);
        let rows = &self.rows;
        let mut streams: Vec<&str> = Vec::new();
        let mut versions: Vec<i64> = Vec::new();
        for name in &self.touched {
            if streams.contains(&name.as_str()) {
                continue;
            }
            if let Some(version) = heads.get(name).and_then(|head| head.last_version) {
                streams.push(name);
                versions.push(to_i64(version));
            }
        }
        let (insert_events, upsert_streams, update_log) = tokio::try_join!(
            transaction.prepare_cached(INSERT_EVENTS_SQL),
            transaction.prepare_cached(UPSERT_STREAMS_SQL),
            transaction.prepare_cached(UPDATE_LOG_SQL),
        )
        .map_err(driver)?;
        let last_position = to_i64(self.last_position);
        let event_params: [Param; 8] = [
            &rows.positions,
            &rows.streams,
            &rows.versions,
            &rows.event_types,
            &rows.schema_versions,
            &rows.codecs,
            &rows.timestamps_ms,
            &rows.payloads,
        ];
        let stream_params: [Param; 2] = [&streams, &versions];
        let log_params: [Param; 1] = [&last_position];
        // The three statements go out pipelined: one round trip while the lock is held.
        // Errors are taken in statement order (see `lock_and_read_heads`).
        let (inserted, upserted, updated) = tokio::join!(
            transaction.execute(&insert_events, &event_params),
            transaction.execute(&upsert_streams, &stream_params),
            transaction.execute(&update_log, &log_params),
        );
        inserted.map_err(driver)?;
        upserted.map_err(driver)?;
        updated.map_err(driver)?;
        Ok(())
    }
}

/// One statement parameter.
type Param<'a> = &'a (dyn tokio_postgres::types::ToSql + Sync);

const LOCK_SQL: &str = "SELECT pg_advisory_xact_lock($1)";
const LAST_POSITION_SQL: &str = "SELECT last_position FROM logbook_log";
const HEADS_SQL: &str = "SELECT stream, head_version, deleted, truncated_before
     FROM logbook_streams WHERE stream = ANY($1)";
const INSERT_EVENTS_SQL: &str = "INSERT INTO logbook_events (position, stream, version,
         event_type, schema_version, codec, timestamp_ms, payload)
     SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[],
         $5::integer[], $6::smallint[], $7::bigint[], $8::bytea[])";
const UPSERT_STREAMS_SQL: &str = "INSERT INTO logbook_streams (stream, head_version)
     SELECT * FROM unnest($1::text[], $2::bigint[])
     ON CONFLICT (stream) DO UPDATE SET head_version = EXCLUDED.head_version";
const UPDATE_LOG_SQL: &str = "UPDATE logbook_log SET last_position = $1";

/// Takes the append lock, then reads the log head and the heads of `names`, in one pipelined
/// round trip. The server runs the statements in order and each read takes its snapshot when
/// it starts, after the lock is granted, so the reads see every group committed before.
pub(crate) async fn lock_and_read_heads(
    transaction: &deadpool_postgres::Transaction<'_>,
    names: &[&str],
) -> Result<(u64, HashMap<String, StreamHead>)> {
    let driver = |error| Error::from_driver("append", error);
    let (lock, last_position, heads) = tokio::try_join!(
        transaction.prepare_cached(LOCK_SQL),
        transaction.prepare_cached(LAST_POSITION_SQL),
        transaction.prepare_cached(HEADS_SQL),
    )
    .map_err(driver)?;
    let lock_params: [Param; 1] = [&APPEND_LOCK_KEY];
    let head_params: [Param; 1] = [&names];
    // Errors are taken in statement order: after the first failure the later statements only
    // say "current transaction is aborted" (25P02), which is not the cause.
    let (locked, last_position, rows) = tokio::join!(
        transaction.execute(&lock, &lock_params),
        transaction.query_one(&last_position, &[]),
        transaction.query(&heads, &head_params),
    );
    locked.map_err(driver)?;
    let (last_position, rows) = (last_position.map_err(driver)?, rows.map_err(driver)?);
    let position: i64 = last_position.try_get(0).map_err(driver)?;
    let position = to_u64(position, "logbook_log", "singleton")?;
    Ok((position, heads_from_rows(&rows)?))
}

fn check_expected(stream: &str, expected: ExpectedVersion, head: StreamHead) -> Result<()> {
    crate::purge::check_visible_expected(stream, expected, head)
}

fn check_group_size(requests: &[AppendRequest]) -> Result<()> {
    let events: usize = requests.iter().map(|request| request.events.len()).sum();
    if events > GROUP_EVENTS_MAX {
        return Err(Error::TooLarge {
            what: "append group (events)",
            limit: GROUP_EVENTS_MAX,
            actual: events,
        });
    }
    let bytes: usize = requests
        .iter()
        .flat_map(|request| {
            request
                .events
                .iter()
                .map(|data| data.envelope_len(&request.stream))
        })
        .sum();
    if bytes > GROUP_BYTES_MAX {
        return Err(Error::TooLarge {
            what: "append group (envelope bytes)",
            limit: GROUP_BYTES_MAX,
            actual: bytes,
        });
    }
    Ok(())
}

/// Takes the append lock (deletes and truncations change what appends check), then reads
/// one stream's head.
async fn lock_and_read_head(
    transaction: &deadpool_postgres::Transaction<'_>,
    name: &str,
    operation: &'static str,
) -> Result<StreamHead> {
    let driver = |error| Error::from_driver(operation, error);
    transaction
        .execute(LOCK_SQL, &[&APPEND_LOCK_KEY])
        .await
        .map_err(driver)?;
    let rows = transaction
        .query(HEADS_SQL, &[&[name].as_slice()])
        .await
        .map_err(driver)?;
    Ok(heads_from_rows(&rows)?.remove(name).unwrap_or_default())
}

/// Removes the stream's events below `before` (a version); returns what went.
pub(crate) async fn delete_events(
    transaction: &deadpool_postgres::Transaction<'_>,
    name: &str,
    before: i64,
    operation: &'static str,
) -> Result<Purged> {
    let driver = |error| Error::from_driver(operation, error);
    let row = transaction
        .query_one(
            "WITH removed AS (
                 DELETE FROM logbook_events WHERE stream = $1 AND version < $2
                 RETURNING position)
             SELECT count(*), min(position) FROM removed",
            &[&name, &before],
        )
        .await
        .map_err(driver)?;
    let events: i64 = row.try_get(0).map_err(driver)?;
    let lowest: Option<i64> = row.try_get(1).map_err(driver)?;
    Ok(Purged {
        events: to_u64(events, "logbook_events", name)?,
        lowest_position: lowest
            .map(|position| to_u64(position, "logbook_events", name))
            .transpose()?,
    })
}

fn heads_from_rows(rows: &[tokio_postgres::Row]) -> Result<HashMap<String, StreamHead>> {
    let driver = |error| Error::from_driver("append", error);
    let mut heads = HashMap::with_capacity(rows.len());
    for row in rows {
        let stream: String = row.try_get(0).map_err(driver)?;
        let head = head_from_row_at(row, 1, &stream)?;
        heads.insert(stream, head);
    }
    Ok(heads)
}

fn head_from_row(row: &tokio_postgres::Row, stream: &str) -> Result<StreamHead> {
    head_from_row_at(row, 0, stream)
}

fn head_from_row_at(row: &tokio_postgres::Row, first: usize, stream: &str) -> Result<StreamHead> {
    let driver = |error| Error::from_driver("stream head", error);
    let version: Option<i64> = row.try_get(first).map_err(driver)?;
    let deleted: bool = row.try_get(first + 1).map_err(driver)?;
    let truncated_before: i64 = row.try_get(first + 2).map_err(driver)?;
    let last_version = version
        .map(|version| to_u64(version, "logbook_streams", stream))
        .transpose()?;
    Ok(StreamHead {
        last_version,
        deleted,
        truncated_before: to_u64(truncated_before, "logbook_streams", stream)?,
    })
}

/// One `logbook_events` row back to a [`RawEvent`], checking the envelope against the columns.
fn decode_row(row: &tokio_postgres::Row) -> Result<RawEvent> {
    let (position, _, envelope) = check_row(row)?;
    Ok(RawEvent::new(position, envelope.to_envelope()))
}

/// A row of `SELECT position, stream, version, payload`: its position, its envelope bytes and
/// the envelope decoded in place (nothing copied), checked to be of the row's stream and
/// version.
pub(crate) fn check_row(row: &tokio_postgres::Row) -> Result<(u64, &[u8], EnvelopeRef<'_>)> {
    let driver = |error| Error::from_driver("read", error);
    let position: i64 = row.try_get(0).map_err(driver)?;
    // The key is formatted only for an error: this runs once per event read.
    let corrupted = |reason: String| Error::Corrupted {
        table: "logbook_events",
        key: format!("position {position}"),
        reason,
    };
    let position =
        u64::try_from(position).map_err(|_| corrupted(format!("negative value {position}")))?;
    let stream: &str = row.try_get(1).map_err(driver)?;
    let version: i64 = row.try_get(2).map_err(driver)?;
    let payload: &[u8] = row.try_get(3).map_err(driver)?;
    let envelope = EnvelopeRef::decode(payload).map_err(|error| corrupted(error.to_string()))?;
    if envelope.stream != stream || Some(envelope.stream_version) != u64::try_from(version).ok() {
        return Err(corrupted(format!(
            "the envelope says {}@{}, the columns {stream}@{version}",
            envelope.stream, envelope.stream_version
        )));
    }
    Ok((position, payload, envelope))
}

pub(crate) fn to_u64(value: i64, table: &'static str, key: &str) -> Result<u64> {
    u64::try_from(value).map_err(|_| Error::Corrupted {
        table,
        key: key.to_string(),
        reason: format!("negative value {value}"),
    })
}

/// Positions, versions and times stay far below `i64::MAX`; a larger request value saturates
/// (and so matches nothing) instead of wrapping.
pub(crate) fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The first row of a statement that always returns at least one (its `logbook_log` singleton
/// row joined to the page): none means the singleton row is gone.
pub(crate) fn first_row(rows: &[tokio_postgres::Row]) -> Result<&tokio_postgres::Row> {
    rows.first().ok_or_else(|| Error::Corrupted {
        table: "logbook_log",
        key: "singleton".to_string(),
        reason: "no row".to_string(),
    })
}

pub(crate) fn page_limit(max: usize) -> i64 {
    i64::try_from(max.min(READ_PAGE_MAX)).unwrap_or(0)
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// `host:port/dbname` of a configuration (never the password).
fn describe(config: &tokio_postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|host| match host {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".to_string());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let database = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or("postgres");
    format!("{host}:{port}/{database}")
}
