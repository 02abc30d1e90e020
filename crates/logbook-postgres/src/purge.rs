//! Purges that the engine's projections must hear about, and snapshot retention: one
//! transaction that appends the engine's own record of the purge (a tombstone, a truncation) to
//! the log and removes the rows; removing snapshot rows.
//!
//! Owns: [`PgStore::purge_with_event`], [`PgStore::retain_snapshots`],
//! [`PgStore::remove_snapshots_below`], the existence and expected-version rules of a delete, a
//! soft delete and a truncation (the same as the embedded engine's: a stream with no visible
//! event matches `NoStream`), and the order of the writes inside that transaction. Every
//! replica learns of a purge by reading its event at its position, like any other event, so
//! every replica's projections drop the same data at the same point of the log.
//! Never: removes a row without appending the event in the same transaction (a crash between
//! the two would leave replicas that never hear of the purge), runs outside the append lock
//! (positions would stop being dense in commit order), or decodes the event it is given.

use crate::ExpectedVersion;
use crate::error::{Error, Result};
use crate::store::{
    AppendRequest, Appended, GroupPlan, PgStore, Purged, StreamHead, delete_events,
    lock_and_read_heads, now_ms, to_i64,
};
use logbook_projection::{EventData, StreamId};

/// What a purge removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PurgeKind {
    /// Every event, for good: the stream takes no more appends. A stream that never had an
    /// event is [`Error::StreamNotFound`] unless `NoStream` is expected (which reserves the
    /// name).
    Delete,
    /// Every event so far; the stream's versions continue and a later append may expect
    /// `NoStream`. A stream that never had an event is [`Error::StreamNotFound`].
    SoftDelete,
    /// The events below `before_version`; at most the stream's end (its last version plus
    /// one), else [`Error::TruncateBeyondEnd`].
    Truncate {
        /// The first version kept.
        before_version: u64,
    },
}

/// What [`PgStore::purge_with_event`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgeOutcome {
    /// Where the purge's event went.
    pub appended: Appended,
    /// The rows removed.
    pub purged: Purged,
    /// The first version still visible after the purge (the stream's end for a delete or a
    /// soft delete): what the event was built with.
    pub before_version: u64,
}

/// True when `head` has an event no purge removed.
pub(crate) fn has_visible_events(head: StreamHead) -> bool {
    !head.deleted
        && head
            .last_version
            .is_some_and(|version| version + 1 > head.truncated_before)
}

impl PgStore {
    /// Purges `stream` as `kind` says and appends the event `make_event(before_version)` to
    /// `log_stream` (the engine's own stream), in ONE transaction under the append lock:
    /// replicas following the log see the event at its position, and the rows are gone from
    /// the moment it is visible. `expected` is checked as for an append (a truncation takes
    /// `Any`). Snapshots taken after [`Purged::lowest_position`] still hold what was projected
    /// from the removed rows: see [`PgStore::purge_snapshots_covering`].
    pub async fn purge_with_event(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        kind: PurgeKind,
        log_stream: &StreamId,
        make_event: &(dyn Fn(u64) -> std::result::Result<EventData, String> + Sync),
    ) -> Result<PurgeOutcome> {
        self.writable("purge")?;
        if stream == log_stream {
            return Err(Error::InvalidRequest {
                reason: format!("the log's own stream {stream} cannot be purged"),
            });
        }
        let driver = |error| Error::from_driver("purge", error);
        let mut client = self.client("purge").await?;
        let transaction = client.transaction().await.map_err(driver)?;
        let name = stream.as_str();
        let (last_position, mut heads) =
            lock_and_read_heads(&transaction, &[name, log_stream.as_str()]).await?;
        let head = heads.get(name).copied().unwrap_or_default();
        let end = head.last_version.map_or(0, |version| version + 1);
        let existed = head.deleted || head.last_version.is_some();
        if head.deleted {
            return Err(Error::StreamDeleted {
                stream: name.to_string(),
            });
        }
        match kind {
            PurgeKind::Delete if !existed && expected != ExpectedVersion::NoStream => {
                return Err(Error::StreamNotFound {
                    stream: name.to_string(),
                });
            }
            PurgeKind::SoftDelete if !existed => {
                return Err(Error::StreamNotFound {
                    stream: name.to_string(),
                });
            }
            _ => {}
        }
        check_visible_expected(name, expected, head)?;
        let before_version = match kind {
            PurgeKind::Delete | PurgeKind::SoftDelete => end,
            PurgeKind::Truncate { before_version } => {
                if before_version > end {
                    return Err(Error::TruncateBeyondEnd {
                        stream: name.to_string(),
                        before: before_version,
                        actual: head.last_version,
                    });
                }
                before_version
            }
        };
        let request = AppendRequest {
            stream: log_stream.clone(),
            expected: ExpectedVersion::Any,
            events: vec![
                make_event(before_version).map_err(|reason| Error::InvalidRequest {
                    reason: format!("the purge's event: {reason}"),
                })?,
            ],
        };
        let mut plan = GroupPlan::new(last_position);
        let appended = plan.place(&request, &mut heads, now_ms())?;
        plan.write(&transaction, &heads).await?;
        let removed_below = match kind {
            PurgeKind::Delete => i64::MAX,
            PurgeKind::SoftDelete | PurgeKind::Truncate { .. } => to_i64(before_version),
        };
        let purged = if before_version > head.truncated_before || kind == PurgeKind::Delete {
            delete_events(&transaction, name, removed_below, "purge").await?
        } else {
            Purged::default()
        };
        let deleted = kind == PurgeKind::Delete;
        let truncated_before = to_i64(before_version.max(head.truncated_before));
        // The stream keeps its head version: a soft-deleted or truncated stream's versions
        // continue from it.
        transaction
            .execute(
                "INSERT INTO logbook_streams (stream, head_version, deleted, truncated_before)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (stream) DO UPDATE
                 SET deleted = logbook_streams.deleted OR EXCLUDED.deleted,
                     truncated_before = GREATEST(logbook_streams.truncated_before,
                                                 EXCLUDED.truncated_before)",
                &[
                    &name,
                    &head.last_version.map(to_i64),
                    &deleted,
                    &truncated_before,
                ],
            )
            .await
            .map_err(driver)?;
        // Durability: the event, the removed rows and the stream's new state commit together.
        transaction.commit().await.map_err(driver)?;
        drop(client);
        self.wake_followers();
        Ok(PurgeOutcome {
            appended,
            purged,
            before_version,
        })
    }
}

impl PgStore {
    /// Keeps the newest `keep` snapshots (at least one) and removes the others; returns the
    /// positions removed.
    pub async fn retain_snapshots(&self, keep: usize) -> Result<Vec<u64>> {
        self.writable("retain_snapshots")?;
        let driver = |error| Error::from_driver("retain_snapshots", error);
        let client = self.client("retain_snapshots").await?;
        let keep = i64::try_from(keep.max(1)).unwrap_or(i64::MAX);
        let rows = client
            .query(
                "DELETE FROM logbook_snapshots WHERE position NOT IN (
                     SELECT position FROM logbook_snapshots ORDER BY position DESC LIMIT $1)
                 RETURNING position",
                &[&keep],
            )
            .await
            .map_err(driver)?;
        positions(&rows)
    }

    /// Removes every snapshot below `position` (they may hold what a purge removed since);
    /// returns the positions removed.
    pub async fn remove_snapshots_below(&self, position: u64) -> Result<Vec<u64>> {
        self.writable("remove_snapshots")?;
        let driver = |error| Error::from_driver("remove_snapshots", error);
        let client = self.client("remove_snapshots").await?;
        let rows = client
            .query(
                "DELETE FROM logbook_snapshots WHERE position < $1 RETURNING position",
                &[&to_i64(position)],
            )
            .await
            .map_err(driver)?;
        positions(&rows)
    }
}

fn positions(rows: &[tokio_postgres::Row]) -> Result<Vec<u64>> {
    let driver = |error| Error::from_driver("remove_snapshots", error);
    let mut positions = Vec::with_capacity(rows.len());
    for row in rows {
        let position: i64 = row.try_get(0).map_err(driver)?;
        positions.push(u64::try_from(position).map_err(|_| Error::Corrupted {
            table: "logbook_snapshots",
            key: "position".to_string(),
            reason: format!("negative value {position}"),
        })?);
    }
    positions.sort_unstable();
    Ok(positions)
}

/// The expected-version rule of the embedded engine: `NoStream` matches a stream with no
/// visible event (none yet, or all purged by a soft delete or a truncation), `StreamExists` one
/// with a visible event, `Exact` the last version written (removed ones count).
pub(crate) fn check_visible_expected(
    stream: &str,
    expected: ExpectedVersion,
    head: StreamHead,
) -> Result<()> {
    if head.deleted {
        return Err(Error::StreamDeleted {
            stream: stream.to_string(),
        });
    }
    let visible = has_visible_events(head);
    let matches = match expected {
        ExpectedVersion::Any => true,
        ExpectedVersion::NoStream => !visible,
        ExpectedVersion::StreamExists => visible,
        ExpectedVersion::Exact(version) => head.last_version == Some(version),
    };
    if !matches {
        return Err(Error::WrongExpectedVersion {
            stream: stream.to_string(),
            expected,
            actual: head.last_version,
        });
    }
    Ok(())
}
