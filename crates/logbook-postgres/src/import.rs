//! Moving a whole log in (`logbook copy`): records inserted verbatim, in one transaction.
//!
//! Owns: [`PgStore::import_log`], which takes the pages of another log (each record's position
//! and envelope bytes, positions ascending, gaps allowed) and then the state of its streams, and
//! writes them in ONE transaction under the append lock into a database whose log is empty:
//! positions, versions, types and payload bytes stay identical, and a failed import leaves
//! nothing. Never: imports into a log that has events (it would interleave two histories),
//! accepts positions that do not ascend or an envelope that disagrees with itself, or decodes a
//! payload (the engine computed the streams' state; this module stores it).

use crate::error::{Error, Result};
use crate::store::{APPEND_LOCK_KEY, PgStore, to_i64};
use logbook_projection::EnvelopeRef;
use tokio::sync::mpsc;

/// Records imported per INSERT statement.
pub const IMPORT_ROWS_PER_STATEMENT: usize = 1000;

/// One stream's state after the imported log (what the engine's stream table says).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedStream {
    /// The stream.
    pub stream: String,
    /// Its last version written (removed ones count), `None` when it never had one.
    pub head_version: Option<u64>,
    /// Deleted for good.
    pub deleted: bool,
    /// Versions below this one are gone.
    pub truncated_before: u64,
}

/// What [`PgStore::import_log`] takes, in order: pages of records, then the streams once.
#[derive(Debug)]
pub enum ImportPart {
    /// Records: position and envelope bytes, positions ascending across pages.
    Records(Vec<(u64, Vec<u8>)>),
    /// The streams' state after the last record; the import commits when the channel closes
    /// after it.
    Streams(Vec<ImportedStream>),
}

/// What an import wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Imported {
    /// Records inserted.
    pub records: u64,
    /// The last position (the log's head afterwards).
    pub last_position: u64,
    /// Streams recorded.
    pub streams: u64,
}

impl PgStore {
    /// Imports a whole log, read from `parts` (see [`ImportPart`]), in one transaction under
    /// the append lock. The database's log must be empty ([`Error::InvalidRequest`] otherwise);
    /// if `parts` closes before the streams arrive, or anything fails, nothing is written.
    pub async fn import_log(&self, mut parts: mpsc::Receiver<ImportPart>) -> Result<Imported> {
        self.writable("import")?;
        let driver = |error| Error::from_driver("import", error);
        let mut client = self.client("import").await?;
        let transaction = client.transaction().await.map_err(driver)?;
        transaction
            .execute("SELECT pg_advisory_xact_lock($1)", &[&APPEND_LOCK_KEY])
            .await
            .map_err(driver)?;
        let row = transaction
            .query_one(
                "SELECT (SELECT last_position FROM logbook_log),
                        EXISTS (SELECT 1 FROM logbook_events),
                        EXISTS (SELECT 1 FROM logbook_streams)",
                &[],
            )
            .await
            .map_err(driver)?;
        let (head, events, streams): (i64, bool, bool) = (
            row.try_get(0).map_err(driver)?,
            row.try_get(1).map_err(driver)?,
            row.try_get(2).map_err(driver)?,
        );
        if head != 0 || events || streams {
            return Err(Error::InvalidRequest {
                reason: format!(
                    "{} already holds a log (head position {head}): import into an empty one",
                    self.target()
                ),
            });
        }
        let mut imported = Imported::default();
        let mut finished = false;
        while let Some(part) = parts.recv().await {
            match part {
                ImportPart::Records(records) => {
                    if finished {
                        return Err(Error::InvalidRequest {
                            reason: "records after the streams' state".to_string(),
                        });
                    }
                    for chunk in records.chunks(IMPORT_ROWS_PER_STATEMENT) {
                        insert_rows(&transaction, chunk, &mut imported).await?;
                    }
                }
                ImportPart::Streams(streams) => {
                    insert_streams(&transaction, &streams).await?;
                    imported.streams += streams.len() as u64;
                    finished = true;
                }
            }
        }
        if !finished {
            // The sender stopped early (its read failed): roll back, write nothing.
            return Err(Error::InvalidRequest {
                reason: "the import ended before the streams' state: nothing was written"
                    .to_string(),
            });
        }
        transaction
            .execute(
                "UPDATE logbook_log SET last_position = $1",
                &[&to_i64(imported.last_position)],
            )
            .await
            .map_err(driver)?;
        // Durability: every row, the streams and the log head commit together.
        transaction.commit().await.map_err(driver)?;
        drop(client);
        self.wake_followers();
        Ok(imported)
    }
}

async fn insert_rows(
    transaction: &deadpool_postgres::Transaction<'_>,
    records: &[(u64, Vec<u8>)],
    imported: &mut Imported,
) -> Result<()> {
    let driver = |error| Error::from_driver("import", error);
    let mut positions = Vec::with_capacity(records.len());
    let mut streams = Vec::with_capacity(records.len());
    let mut versions = Vec::with_capacity(records.len());
    let mut event_types = Vec::with_capacity(records.len());
    let mut schema_versions = Vec::with_capacity(records.len());
    let mut codecs = Vec::with_capacity(records.len());
    let mut timestamps = Vec::with_capacity(records.len());
    let mut payloads: Vec<&[u8]> = Vec::with_capacity(records.len());
    for (position, bytes) in records {
        if *position <= imported.last_position || *position >= i64::MAX as u64 {
            return Err(Error::InvalidRequest {
                reason: format!(
                    "record position {position} does not ascend (after {})",
                    imported.last_position
                ),
            });
        }
        let envelope = EnvelopeRef::decode(bytes).map_err(|error| Error::InvalidRequest {
            reason: format!("record at position {position}: {error}"),
        })?;
        positions.push(to_i64(*position));
        streams.push(envelope.stream);
        versions.push(to_i64(envelope.stream_version));
        event_types.push(envelope.event_type);
        schema_versions.push(i32::from(envelope.schema_version));
        codecs.push(i16::from(envelope.codec));
        timestamps.push(to_i64(envelope.timestamp_ms));
        payloads.push(bytes.as_slice());
        imported.last_position = *position;
        imported.records += 1;
    }
    transaction
        .execute(
            "INSERT INTO logbook_events (position, stream, version, event_type, schema_version,
                 codec, timestamp_ms, payload)
             SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[],
                 $5::integer[], $6::smallint[], $7::bigint[], $8::bytea[])",
            &[
                &positions,
                &streams,
                &versions,
                &event_types,
                &schema_versions,
                &codecs,
                &timestamps,
                &payloads,
            ],
        )
        .await
        .map_err(driver)?;
    Ok(())
}

async fn insert_streams(
    transaction: &deadpool_postgres::Transaction<'_>,
    streams: &[ImportedStream],
) -> Result<()> {
    let driver = |error| Error::from_driver("import", error);
    for chunk in streams.chunks(IMPORT_ROWS_PER_STATEMENT) {
        let names: Vec<&str> = chunk.iter().map(|stream| stream.stream.as_str()).collect();
        let heads: Vec<Option<i64>> = chunk
            .iter()
            .map(|stream| stream.head_version.map(to_i64))
            .collect();
        let deleted: Vec<bool> = chunk.iter().map(|stream| stream.deleted).collect();
        let truncated: Vec<i64> = chunk
            .iter()
            .map(|stream| to_i64(stream.truncated_before))
            .collect();
        transaction
            .execute(
                "INSERT INTO logbook_streams (stream, head_version, deleted, truncated_before)
                 SELECT * FROM unnest($1::text[], $2::bigint[], $3::boolean[], $4::bigint[])",
                &[&names, &heads, &deleted, &truncated],
            )
            .await
            .map_err(driver)?;
    }
    Ok(())
}
