//! Reading a log in a PostgreSQL database without opening the engine: what `logbook dump`,
//! `tail` and `state` on a `postgres://` URL use (`stats` and `verify` are in their own
//! modules, on [`RemoteLog`]).
//!
//! Owns: [`RemoteEvents`], filtered pages of a database's events, and [`RemoteLog`], a
//! read-only store (`default_transaction_read_only`, no DDL: the schema must exist and be the
//! version this code reads) with the last events, a follower, room history and the built-in
//! projections replayed from the newest shared snapshot plus the tail.
//! Must never: write (not even the schema, not even a snapshot), or read past the filter's
//! `to` or `limit`, or hold more than one page of events.

use super::EventFilter;
use super::state::{BuiltinState, Replayed, RoomScan, replay_builtin_with};
use crate::backend::postgres::{from_store, replay_tail, snapshot_storage};
use crate::builtin::{HISTORY_LIMIT_MAX, HistoryPage};
use crate::engine::start_from_snapshot;
use crate::error::{Error, Result};
use logbook_compaction::CompactionPolicy;
use logbook_projection::{RawEvent, StreamId};

/// Events read per round trip.
pub const REMOTE_PAGE_EVENTS: usize = 1000;

/// The events of a database's log that a filter selects, page by page.
pub struct RemoteEvents {
    store: logbook_postgres::PgStore,
    filter: EventFilter,
    next: u64,
    taken: usize,
    done: bool,
}

impl RemoteEvents {
    /// Opens the database at `url` read-only and starts at the filter's `from`.
    pub async fn open(url: &str, filter: EventFilter) -> Result<RemoteEvents> {
        let store = open_read_only(url).await?;
        Ok(RemoteEvents {
            store,
            next: filter.from.unwrap_or(1).max(1),
            filter,
            taken: 0,
            done: false,
        })
    }

    /// The next selected events (empty once the log, `to` or `limit` is reached).
    pub async fn next_page(&mut self) -> Result<Vec<RawEvent>> {
        let mut selected = Vec::new();
        while selected.is_empty() && !self.done {
            let page = self
                .store
                .read_all(self.next, REMOTE_PAGE_EVENTS)
                .await
                .map_err(from_store)?;
            let Some(last) = page.last() else {
                self.done = true;
                break;
            };
            self.next = last.position + 1;
            for raw in page {
                if self.filter.to.is_some_and(|to| raw.position > to)
                    || self.filter.limit.is_some_and(|limit| self.taken >= limit)
                {
                    self.done = true;
                    break;
                }
                let envelope = &raw.envelope;
                let selected_stream = self
                    .filter
                    .stream
                    .as_deref()
                    .is_none_or(|stream| stream == envelope.stream().as_str());
                let selected_type = self
                    .filter
                    .event_type
                    .as_deref()
                    .is_none_or(|event_type| event_type == envelope.event_type());
                if selected_stream && selected_type {
                    self.taken += 1;
                    selected.push(raw);
                }
            }
        }
        Ok(selected)
    }
}

/// A log in a PostgreSQL database opened for inspection: `stats`, `verify`, `tail` and
/// `state` on a URL. Read-only: every session runs with `default_transaction_read_only=on`,
/// no DDL is sent (the schema must exist and be the version this code reads), no snapshot is
/// stored, nothing is locked.
pub struct RemoteLog {
    pub(super) store: logbook_postgres::PgStore,
}

impl std::fmt::Debug for RemoteLog {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("RemoteLog")
            .field("target", &self.store.target())
            .finish_non_exhaustive()
    }
}

/// A cursor on a database's log that waits for new events (`tail -f` on a URL): woken by the
/// store's `LISTEN`, polling as a safety net, never skipping a position.
pub struct RemoteFollower {
    follower: logbook_postgres::Follower,
}

impl std::fmt::Debug for RemoteFollower {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("RemoteFollower")
            .field("next_position", &self.follower.next_position())
            .finish()
    }
}

impl RemoteFollower {
    /// The next events, waiting up to `timeout` for one (empty when none came).
    pub async fn next_page_within(
        &mut self,
        timeout: std::time::Duration,
    ) -> Result<Vec<RawEvent>> {
        self.follower
            .next_page_within(timeout)
            .await
            .map_err(from_store)
    }
}

impl RemoteLog {
    /// Opens the database at `url` read-only (one pooled connection; `tail -f` adds its
    /// `LISTEN` connection).
    pub async fn open(url: &str) -> Result<RemoteLog> {
        let store = open_read_only(url).await?;
        Ok(RemoteLog { store })
    }

    /// Where the database is (`host:port/dbname`, never the password).
    pub fn target(&self) -> &str {
        self.store.target()
    }

    /// Up to `max` events from `from` (inclusive), in position order, each checked against
    /// its row (a row that does not hold what logbook wrote is an error naming its position).
    pub async fn events_from(&self, from: u64, max: usize) -> Result<Vec<RawEvent>> {
        self.store
            .read_all(from.max(1), max)
            .await
            .map_err(from_store)
    }

    /// The position the last `count` events start at (`None`: no event, or `count` is 0).
    pub async fn start_of_last(&self, count: usize) -> Result<Option<u64>> {
        self.store.start_of_last(count).await.map_err(from_store)
    }

    /// The last position given to an event (`logbook_log.last_position`).
    pub async fn last_position(&self) -> Result<u64> {
        self.store.head_position().await.map_err(from_store)
    }

    /// Follows the log from `from` (inclusive). Must be called inside a tokio runtime.
    pub fn follow(&self, from: u64) -> RemoteFollower {
        RemoteFollower {
            follower: self
                .store
                .follow(from.max(1), logbook_postgres::FollowOptions::default()),
        }
    }

    /// Rebuilds the built-in projections as a replica's open would: the newest shared
    /// snapshot (a damaged or unusable one is reported in [`BuiltinState::snapshot`] and the
    /// whole log replayed), then every event after it up to the log's head as of now. Reads
    /// only: no snapshot is stored. Must be called inside a tokio runtime (the replay runs on
    /// a blocking thread).
    pub async fn replay_builtin(&self) -> Result<BuiltinState> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            let runtime = tokio::runtime::Handle::current();
            replay_builtin_with(|applier| {
                let head = runtime
                    .block_on(store.head_position())
                    .map_err(from_store)?;
                let snapshots = snapshot_storage(&store);
                let (start, snapshot) = start_from_snapshot(&*snapshots, head, applier);
                let (_, position, events) = replay_tail(
                    &store,
                    &runtime,
                    applier,
                    start,
                    &CompactionPolicy::default(),
                )?;
                Ok(Replayed {
                    position,
                    snapshot,
                    events,
                    damage: None,
                })
            })
        })
        .await
        .map_err(|error| Error::Task(error.to_string()))?
    }

    /// A page of a room's messages, as [`super::Inspector::room_history`] gives it, read from
    /// the database page by page (one page of messages kept).
    pub async fn room_history(
        &self,
        room_id: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<HistoryPage> {
        let stream = StreamId::room(room_id)?;
        let limit = limit.clamp(1, HISTORY_LIMIT_MAX);
        let before = before.unwrap_or(u64::MAX);
        let mut page = RoomScan::default();
        let head = self.last_position().await?;
        let mut next = 1;
        while next <= head {
            let events = self.events_from(next, REMOTE_PAGE_EVENTS).await?;
            let Some(last) = events.last().map(|raw| raw.position) else {
                break;
            };
            for raw in events.iter().filter(|raw| raw.position <= head) {
                page.feed(&stream, raw, before, limit)?;
            }
            next = last + 1;
        }
        page.finish(&stream, limit)
    }
}

/// The store at `url`, read-only, with one pooled connection: what every inspection opens.
async fn open_read_only(url: &str) -> Result<logbook_postgres::PgStore> {
    logbook_postgres::PgStore::open_read_only(
        url,
        logbook_postgres::StoreOptions {
            pool_size: 1,
            ..logbook_postgres::StoreOptions::default()
        },
    )
    .await
    .map_err(from_store)
}
