//! Read-only inspection queries: what `logbook stats`, `verify` and `tail` read from a database.
//!
//! Owns: the rows of logbook's tables as stored, unchecked ([`EventRow`], [`StreamRow`],
//! [`SnapshotRow`]) so that a checker can judge them itself; the aggregates a `stats` shows
//! (counts, positions, payload bytes, timestamps, per-type and per-stream pages, table sizes);
//! the position the last N events start at. Every query is a plain `SELECT`, paged by key, so
//! it runs on a read-only store ([`PgStore::open_read_only`]) and holds at most one page.
//! Never: writes, takes a lock, runs DDL, or decodes an envelope (the caller judges the bytes:
//! a row that does not decode is a finding there, not an error here).

use crate::error::{Error, Result};
use crate::store::{PgStore, READ_PAGE_MAX};

/// One `logbook_events` row as stored: the columns as the server returned them, nothing checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRow {
    /// `position`.
    pub position: i64,
    /// `stream`.
    pub stream: String,
    /// `version`.
    pub version: i64,
    /// `event_type`.
    pub event_type: String,
    /// `schema_version`.
    pub schema_version: i32,
    /// `codec`.
    pub codec: i16,
    /// `timestamp_ms`.
    pub timestamp_ms: i64,
    /// `payload`: the envelope bytes.
    pub payload: Vec<u8>,
}

/// One `logbook_streams` row as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRow {
    /// `stream`.
    pub stream: String,
    /// `head_version` (`None`: no event yet).
    pub head_version: Option<i64>,
    /// `deleted`.
    pub deleted: bool,
    /// `truncated_before`.
    pub truncated_before: i64,
}

/// One `logbook_snapshots` row without its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRow {
    /// `position`.
    pub position: i64,
    /// `created_ms`.
    pub created_ms: i64,
    /// The payload's length in bytes.
    pub bytes: i64,
}

/// Totals over `logbook_events`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EventTotals {
    /// Rows.
    pub events: u64,
    /// The lowest and highest position (`None`: no row).
    pub positions: Option<(i64, i64)>,
    /// Bytes of all payloads (envelopes).
    pub payload_bytes: u64,
    /// The oldest and newest `timestamp_ms` (`None`: no row).
    pub timestamps: Option<(i64, i64)>,
}

/// Totals over `logbook_streams`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StreamTotals {
    /// Rows (every stream that ever had an event or was reserved).
    pub streams: u64,
    /// Deleted ones.
    pub deleted: u64,
    /// Truncated ones (`truncated_before > 0`), deleted ones left out.
    pub truncated: u64,
}

/// One logbook table's size and the server's row counters for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSize {
    /// The table.
    pub table: &'static str,
    /// `pg_total_relation_size`: heap, indexes and TOAST, in bytes.
    pub total_bytes: u64,
    /// `pg_stat_user_tables.n_live_tup` (an estimate).
    pub live_rows: u64,
    /// `pg_stat_user_tables.n_dead_tup`: removed rows a VACUUM has not reclaimed yet (estimate).
    pub dead_rows: u64,
}

/// A count per key (an event type, a stream): one page of a grouped query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyCount {
    /// The key.
    pub key: String,
    /// Rows.
    pub events: u64,
    /// Bytes of their payloads.
    pub payload_bytes: u64,
}

fn non_negative(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn page_limit(max: usize) -> i64 {
    i64::try_from(max.clamp(1, READ_PAGE_MAX)).unwrap_or(1)
}

impl PgStore {
    /// Up to `max` event rows with a position above `after`, in position order, unchecked.
    pub async fn event_rows_after(&self, after: i64, max: usize) -> Result<Vec<EventRow>> {
        let driver = |error| Error::from_driver("inspect events", error);
        let client = self.client("inspect events").await?;
        let rows = client
            .query(
                "SELECT position, stream, version, event_type, schema_version, codec,
                        timestamp_ms, payload
                 FROM logbook_events WHERE position > $1 ORDER BY position LIMIT $2",
                &[&after, &page_limit(max)],
            )
            .await
            .map_err(driver)?;
        rows.iter()
            .map(|row| {
                Ok(EventRow {
                    position: row.try_get(0).map_err(driver)?,
                    stream: row.try_get(1).map_err(driver)?,
                    version: row.try_get(2).map_err(driver)?,
                    event_type: row.try_get(3).map_err(driver)?,
                    schema_version: row.try_get(4).map_err(driver)?,
                    codec: row.try_get(5).map_err(driver)?,
                    timestamp_ms: row.try_get(6).map_err(driver)?,
                    payload: row.try_get(7).map_err(driver)?,
                })
            })
            .collect()
    }

    /// Up to `max` stream rows named after `after` (from the first when `None`), by name.
    pub async fn stream_rows_after(
        &self,
        after: Option<&str>,
        max: usize,
    ) -> Result<Vec<StreamRow>> {
        let driver = |error| Error::from_driver("inspect streams", error);
        let client = self.client("inspect streams").await?;
        let rows = client
            .query(
                "SELECT stream, head_version, deleted, truncated_before FROM logbook_streams
                 WHERE $1::text IS NULL OR stream > $1 ORDER BY stream LIMIT $2",
                &[&after, &page_limit(max)],
            )
            .await
            .map_err(driver)?;
        rows.iter()
            .map(|row| {
                Ok(StreamRow {
                    stream: row.try_get(0).map_err(driver)?,
                    head_version: row.try_get(1).map_err(driver)?,
                    deleted: row.try_get(2).map_err(driver)?,
                    truncated_before: row.try_get(3).map_err(driver)?,
                })
            })
            .collect()
    }

    /// One stream's row, unchecked (`None`: no such row).
    pub async fn stream_row(&self, stream: &str) -> Result<Option<StreamRow>> {
        let driver = |error| Error::from_driver("inspect streams", error);
        let client = self.client("inspect streams").await?;
        let row = client
            .query_opt(
                "SELECT stream, head_version, deleted, truncated_before FROM logbook_streams
                 WHERE stream = $1",
                &[&stream],
            )
            .await
            .map_err(driver)?;
        row.map(|row| {
            Ok(StreamRow {
                stream: row.try_get(0).map_err(driver)?,
                head_version: row.try_get(1).map_err(driver)?,
                deleted: row.try_get(2).map_err(driver)?,
                truncated_before: row.try_get(3).map_err(driver)?,
            })
        })
        .transpose()
    }

    /// `logbook_log.last_position` as stored (negative values included: the caller judges).
    pub async fn last_position_row(&self) -> Result<i64> {
        let driver = |error| Error::from_driver("inspect log", error);
        let client = self.client("inspect log").await?;
        let rows = client
            .query("SELECT last_position FROM logbook_log", &[])
            .await
            .map_err(driver)?;
        match rows.as_slice() {
            [row] => row.try_get(0).map_err(driver),
            _ => Err(Error::SchemaDamaged {
                target: self.target().to_string(),
                reason: format!("logbook_log has {} rows, not 1", rows.len()),
            }),
        }
    }

    /// The schema version in `logbook_schema`.
    pub async fn schema_version(&self) -> Result<i32> {
        let mut client = self.client("schema check").await?;
        crate::schema::read_version(&mut client, self.target()).await
    }

    /// Totals over `logbook_events` (one aggregate query).
    pub async fn event_totals(&self) -> Result<EventTotals> {
        let driver = |error| Error::from_driver("inspect events", error);
        let client = self.client("inspect events").await?;
        let row = client
            .query_one(
                "SELECT count(*), min(position), max(position),
                        coalesce(sum(octet_length(payload)), 0)::bigint,
                        min(timestamp_ms), max(timestamp_ms)
                 FROM logbook_events",
                &[],
            )
            .await
            .map_err(driver)?;
        let events: i64 = row.try_get(0).map_err(driver)?;
        let first: Option<i64> = row.try_get(1).map_err(driver)?;
        let last: Option<i64> = row.try_get(2).map_err(driver)?;
        let bytes: i64 = row.try_get(3).map_err(driver)?;
        let oldest: Option<i64> = row.try_get(4).map_err(driver)?;
        let newest: Option<i64> = row.try_get(5).map_err(driver)?;
        Ok(EventTotals {
            events: non_negative(events),
            positions: first.zip(last),
            payload_bytes: non_negative(bytes),
            timestamps: oldest.zip(newest),
        })
    }

    /// Totals over `logbook_streams`.
    pub async fn stream_totals(&self) -> Result<StreamTotals> {
        let driver = |error| Error::from_driver("inspect streams", error);
        let client = self.client("inspect streams").await?;
        let row = client
            .query_one(
                "SELECT count(*), count(*) FILTER (WHERE deleted),
                        count(*) FILTER (WHERE NOT deleted AND truncated_before > 0)
                 FROM logbook_streams",
                &[],
            )
            .await
            .map_err(driver)?;
        let streams: i64 = row.try_get(0).map_err(driver)?;
        let deleted: i64 = row.try_get(1).map_err(driver)?;
        let truncated: i64 = row.try_get(2).map_err(driver)?;
        Ok(StreamTotals {
            streams: non_negative(streams),
            deleted: non_negative(deleted),
            truncated: non_negative(truncated),
        })
    }

    /// Events and payload bytes per event type, for up to `max` types after `after`, by type.
    pub async fn events_by_type_after(
        &self,
        after: Option<&str>,
        max: usize,
    ) -> Result<Vec<KeyCount>> {
        self.grouped(
            "SELECT event_type, count(*), coalesce(sum(octet_length(payload)), 0)::bigint
             FROM logbook_events WHERE $1::text IS NULL OR event_type > $1
             GROUP BY event_type ORDER BY event_type LIMIT $2",
            after,
            max,
        )
        .await
    }

    /// Events and payload bytes per stream, for up to `max` streams after `after`, by name.
    pub async fn events_by_stream_after(
        &self,
        after: Option<&str>,
        max: usize,
    ) -> Result<Vec<KeyCount>> {
        self.grouped(
            "SELECT stream, count(*), coalesce(sum(octet_length(payload)), 0)::bigint
             FROM logbook_events WHERE $1::text IS NULL OR stream > $1
             GROUP BY stream ORDER BY stream LIMIT $2",
            after,
            max,
        )
        .await
    }

    async fn grouped(&self, sql: &str, after: Option<&str>, max: usize) -> Result<Vec<KeyCount>> {
        let driver = |error| Error::from_driver("inspect events", error);
        let client = self.client("inspect events").await?;
        let rows = client
            .query(sql, &[&after, &page_limit(max)])
            .await
            .map_err(driver)?;
        rows.iter()
            .map(|row| {
                let events: i64 = row.try_get(1).map_err(driver)?;
                let bytes: i64 = row.try_get(2).map_err(driver)?;
                Ok(KeyCount {
                    key: row.try_get(0).map_err(driver)?,
                    events: non_negative(events),
                    payload_bytes: non_negative(bytes),
                })
            })
            .collect()
    }

    /// Up to `max` snapshot rows (without payloads) below position `before` (all when `None`),
    /// newest first.
    pub async fn snapshot_rows_before(
        &self,
        before: Option<i64>,
        max: usize,
    ) -> Result<Vec<SnapshotRow>> {
        let driver = |error| Error::from_driver("inspect snapshots", error);
        let client = self.client("inspect snapshots").await?;
        let rows = client
            .query(
                "SELECT position, created_ms, octet_length(payload)::bigint
                 FROM logbook_snapshots WHERE $1::bigint IS NULL OR position < $1
                 ORDER BY position DESC LIMIT $2",
                &[&before, &page_limit(max)],
            )
            .await
            .map_err(driver)?;
        rows.iter()
            .map(|row| {
                Ok(SnapshotRow {
                    position: row.try_get(0).map_err(driver)?,
                    created_ms: row.try_get(1).map_err(driver)?,
                    bytes: row.try_get(2).map_err(driver)?,
                })
            })
            .collect()
    }

    /// How many snapshot rows there are.
    pub async fn snapshot_count(&self) -> Result<u64> {
        let driver = |error| Error::from_driver("inspect snapshots", error);
        let client = self.client("inspect snapshots").await?;
        let row = client
            .query_one("SELECT count(*) FROM logbook_snapshots", &[])
            .await
            .map_err(driver)?;
        let count: i64 = row.try_get(0).map_err(driver)?;
        Ok(non_negative(count))
    }

    /// The payload of the snapshot at `position` (`None`: no such row). A payload over
    /// [`crate::store::SNAPSHOT_BYTES_MAX`] is [`Error::TooLarge`], never read.
    pub async fn snapshot_payload(&self, position: i64) -> Result<Option<Vec<u8>>> {
        let driver = |error| Error::from_driver("inspect snapshots", error);
        let client = self.client("inspect snapshots").await?;
        let size = client
            .query_opt(
                "SELECT octet_length(payload)::bigint FROM logbook_snapshots WHERE position = $1",
                &[&position],
            )
            .await
            .map_err(driver)?;
        let Some(size) = size else {
            return Ok(None);
        };
        let size: i64 = size.try_get(0).map_err(driver)?;
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        if size > crate::store::SNAPSHOT_BYTES_MAX {
            return Err(Error::TooLarge {
                what: "snapshot",
                limit: crate::store::SNAPSHOT_BYTES_MAX,
                actual: size,
            });
        }
        let row = client
            .query_opt(
                "SELECT payload FROM logbook_snapshots WHERE position = $1",
                &[&position],
            )
            .await
            .map_err(driver)?;
        row.map(|row| row.try_get(0).map_err(driver)).transpose()
    }

    /// Each logbook table's total size and the server's row estimates.
    pub async fn table_sizes(&self) -> Result<Vec<TableSize>> {
        let driver = |error| Error::from_driver("inspect tables", error);
        let client = self.client("inspect tables").await?;
        let mut sizes = Vec::with_capacity(crate::schema::TABLES.len());
        for table in crate::schema::TABLES {
            let row = client
                .query_one(
                    "SELECT coalesce(pg_total_relation_size(to_regclass($1)), 0)::bigint,
                            coalesce((SELECT n_live_tup FROM pg_stat_user_tables
                                      WHERE relid = to_regclass($1)), 0)::bigint,
                            coalesce((SELECT n_dead_tup FROM pg_stat_user_tables
                                      WHERE relid = to_regclass($1)), 0)::bigint",
                    &[&table],
                )
                .await
                .map_err(driver)?;
            let total: i64 = row.try_get(0).map_err(driver)?;
            let live: i64 = row.try_get(1).map_err(driver)?;
            let dead: i64 = row.try_get(2).map_err(driver)?;
            sizes.push(TableSize {
                table,
                total_bytes: non_negative(total),
                live_rows: non_negative(live),
                dead_rows: non_negative(dead),
            });
        }
        Ok(sizes)
    }

    /// The position the last `count` events start at (`None`: the log has no event or `count`
    /// is 0); fewer events than `count` start at the first one.
    pub async fn start_of_last(&self, count: usize) -> Result<Option<u64>> {
        if count == 0 {
            return Ok(None);
        }
        let driver = |error| Error::from_driver("inspect events", error);
        let client = self.client("inspect events").await?;
        let offset = i64::try_from(count - 1).unwrap_or(i64::MAX);
        let row = client
            .query_one(
                "SELECT coalesce(
                     (SELECT position FROM logbook_events ORDER BY position DESC
                      OFFSET $1 LIMIT 1),
                     (SELECT min(position) FROM logbook_events))",
                &[&offset],
            )
            .await
            .map_err(driver)?;
        let position: Option<i64> = row.try_get(0).map_err(driver)?;
        Ok(position.map(non_negative))
    }
}
