//! Statistics of a log in a PostgreSQL database: what `logbook stats <postgres-url>` prints.
//!
//! Owns: [`RemoteStats`], gathered by [`RemoteLog::stats`] from aggregate `SELECT`s on the
//! read-only store: events, positions, payload bytes and timestamps; events by type and by
//! stream kind, the largest streams (grouped pages, one page in memory at a time); streams
//! (live, deleted, truncated); snapshot rows; the schema version; each table's total size and
//! the server's live and dead row estimates.
//! Must never: write, lock, or keep more than a counter per event type and one page of
//! streams; the figures come from separate queries, so beside live writers they may differ by
//! what was appended between two of them.

use super::remote::RemoteLog;
use super::stats::{LARGEST_STREAMS_LISTED, StreamStats, kind_name};
use crate::backend::postgres::from_store;
use crate::error::Result;
use std::collections::BTreeMap;

/// Rows per grouped page.
const GROUP_PAGE: usize = 1000;

/// How many snapshot rows [`RemoteStats::snapshots`] lists (newest first).
pub const REMOTE_SNAPSHOTS_LISTED: usize = 20;

/// One snapshot row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteSnapshot {
    /// The position it was taken at.
    pub position: u64,
    /// Its payload's size.
    pub bytes: u64,
    /// When it was stored (milliseconds since the Unix epoch).
    pub created_ms: u64,
}

/// One logbook table's size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteTable {
    /// The table.
    pub table: &'static str,
    /// Bytes on disk: heap, indexes and TOAST (`pg_total_relation_size`).
    pub total_bytes: u64,
    /// The server's estimate of its live rows (`pg_stat_user_tables.n_live_tup`).
    pub live_rows: u64,
    /// The server's estimate of removed rows a VACUUM has not reclaimed
    /// (`pg_stat_user_tables.n_dead_tup`).
    pub dead_rows: u64,
}

/// What is in a database's log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoteStats {
    /// The database (`host:port/dbname`, never the password).
    pub target: String,
    /// The logbook schema version.
    pub schema_version: i32,
    /// `logbook_log.last_position`: the last position given (purged events included).
    pub head_position: u64,
    /// The first and last positions of the rows; `None` when there is none.
    pub positions: Option<(u64, u64)>,
    /// Event rows (engine events included; purged events are gone).
    pub events: u64,
    /// Bytes of the rows' envelopes (`payload`).
    pub payload_bytes: u64,
    /// The oldest and newest event timestamps (milliseconds since the Unix epoch).
    pub timestamps: Option<(u64, u64)>,
    /// Events per type.
    pub events_by_type: BTreeMap<String, u64>,
    /// Events per stream kind (as [`super::LogStats::events_by_kind`]).
    pub events_by_kind: BTreeMap<&'static str, u64>,
    /// Streams in `logbook_streams`: every stream that had an event, deleted ones included.
    pub streams: u64,
    /// Streams not deleted.
    pub live_streams: u64,
    /// Streams with at least one event row.
    pub streams_with_events: u64,
    /// Deleted streams (their rows are removed).
    pub deleted_streams: u64,
    /// Streams not deleted with versions removed by a truncation or a soft delete.
    pub truncated_streams: u64,
    /// The largest streams by event rows, at most [`LARGEST_STREAMS_LISTED`]; `bytes` are
    /// payload bytes.
    pub largest_streams: Vec<StreamStats>,
    /// Snapshot rows.
    pub snapshot_count: u64,
    /// The newest snapshot rows, at most [`REMOTE_SNAPSHOTS_LISTED`], newest first.
    pub snapshots: Vec<RemoteSnapshot>,
    /// logbook's tables.
    pub tables: Vec<RemoteTable>,
}

fn unsigned(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

impl RemoteLog {
    /// Counts what is in the database's log (aggregate queries; nothing written).
    pub async fn stats(&self) -> Result<RemoteStats> {
        let store = &self.store;
        let totals = store.event_totals().await.map_err(from_store)?;
        let streams = store.stream_totals().await.map_err(from_store)?;
        let mut stats = RemoteStats {
            target: store.target().to_string(),
            schema_version: store.schema_version().await.map_err(from_store)?,
            head_position: unsigned(store.last_position_row().await.map_err(from_store)?),
            positions: totals
                .positions
                .map(|(first, last)| (unsigned(first), unsigned(last))),
            events: totals.events,
            payload_bytes: totals.payload_bytes,
            timestamps: totals
                .timestamps
                .map(|(oldest, newest)| (unsigned(oldest), unsigned(newest))),
            streams: streams.streams,
            live_streams: streams.streams - streams.deleted.min(streams.streams),
            deleted_streams: streams.deleted,
            truncated_streams: streams.truncated,
            snapshot_count: store.snapshot_count().await.map_err(from_store)?,
            ..RemoteStats::default()
        };
        let mut after: Option<String> = None;
        loop {
            let page = store
                .events_by_type_after(after.as_deref(), GROUP_PAGE)
                .await
                .map_err(from_store)?;
            let Some(last) = page.last().map(|count| count.key.clone()) else {
                break;
            };
            for count in page {
                stats.events_by_type.insert(count.key, count.events);
            }
            after = Some(last);
        }
        let mut after: Option<String> = None;
        loop {
            let page = store
                .events_by_stream_after(after.as_deref(), GROUP_PAGE)
                .await
                .map_err(from_store)?;
            let Some(last) = page.last().map(|count| count.key.clone()) else {
                break;
            };
            for count in page {
                stats.streams_with_events += 1;
                *stats
                    .events_by_kind
                    .entry(kind_name(&count.key))
                    .or_default() += count.events;
                stats.largest_streams.push(StreamStats {
                    stream: count.key,
                    events: count.events,
                    bytes: count.payload_bytes,
                });
            }
            // Largest first, ties by name; only the listed ones are kept.
            stats.largest_streams.sort_by(|a, b| {
                b.events
                    .cmp(&a.events)
                    .then_with(|| a.stream.cmp(&b.stream))
            });
            stats.largest_streams.truncate(LARGEST_STREAMS_LISTED);
            after = Some(last);
        }
        stats.snapshots = store
            .snapshot_rows_before(None, REMOTE_SNAPSHOTS_LISTED)
            .await
            .map_err(from_store)?
            .into_iter()
            .map(|row| RemoteSnapshot {
                position: unsigned(row.position),
                bytes: unsigned(row.bytes),
                created_ms: unsigned(row.created_ms),
            })
            .collect();
        stats.tables = store
            .table_sizes()
            .await
            .map_err(from_store)?
            .into_iter()
            .map(|size| RemoteTable {
                table: size.table,
                total_bytes: size.total_bytes,
                live_rows: size.live_rows,
                dead_rows: size.dead_rows,
            })
            .collect();
        Ok(stats)
    }
}
