//! Durable consumers as a log records them, read-only: `logbook consumers` and the consumers
//! section of `logbook stats`.
//!
//! Owns: [`ConsumerInfo`] and the tally that keeps each consumer's newest checkpoint from the
//! records of its `$consumer/<name>` stream, found through the newest snapshot's stream catalog
//! and the records after it (as a writer's open finds them). Must never: write (an operator's
//! reset goes through the engine, `Logbook::reset_consumer`), read the records a usable
//! snapshot stands for (only each consumer stream's newest record, at the position the catalog
//! gives), or keep more than one entry per consumer (at most
//! [`crate::consumer::CONSUMERS_MAX`]).

use super::Inspector;
use crate::apply::DurableRecord;
use crate::consumer::CONSUMERS_MAX;
use crate::error::{Error, Result};
use crate::system::{CONSUMER_STREAM_PREFIX, ConsumerEvent};
use logbook_compaction::{LoadOutcome, SnapshotStore};
use logbook_projection::EnvelopeRef;
use std::collections::BTreeMap;

/// One durable consumer, from its newest checkpoint in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerInfo {
    /// The consumer's name.
    pub name: String,
    /// The position its newest checkpoint records: it resumes after it.
    pub position: u64,
    /// Positions in the log above `position`: the log's last position minus `position`.
    pub lag: u64,
    /// Where the newest checkpoint record is.
    pub checkpoint_position: u64,
    /// When it was written (ms since the epoch).
    pub checkpointed_at_ms: u64,
}

/// Newest checkpoint per consumer, fed records in position order.
#[derive(Debug, Default)]
pub(crate) struct ConsumerTally {
    consumers: BTreeMap<String, ConsumerInfo>,
}

impl ConsumerTally {
    /// Takes a record if it is a consumer checkpoint; a checkpoint that does not decode is
    /// `Error::Corrupted` naming its position.
    pub(crate) fn feed(&mut self, position: u64, envelope: &EnvelopeRef<'_>) -> Result<()> {
        let Some(name) = envelope.stream.strip_prefix(CONSUMER_STREAM_PREFIX) else {
            return Ok(());
        };
        let event = ConsumerEvent::decode_record(envelope.event_type, envelope.payload)
            .map_err(|reason| Error::Corrupted { position, reason })?;
        let info = ConsumerInfo {
            name: name.to_owned(),
            position: event.position(),
            lag: 0,
            checkpoint_position: position,
            checkpointed_at_ms: envelope.timestamp_ms,
        };
        if let Some(kept) = self.consumers.get_mut(name) {
            if kept.checkpoint_position < position {
                *kept = info;
            }
        } else if self.consumers.len() < CONSUMERS_MAX {
            self.consumers.insert(name.to_owned(), info);
        }
        Ok(())
    }

    /// The consumers by name, their lag against `last_position`.
    pub(crate) fn finish(self, last_position: u64) -> Vec<ConsumerInfo> {
        self.consumers
            .into_values()
            .map(|mut info| {
                info.lag = last_position.saturating_sub(info.position);
                info
            })
            .collect()
    }
}

impl Inspector {
    /// Every durable consumer with a checkpoint in the log, by name, found as a writer's open
    /// finds them: the newest snapshot's stream catalog names each `$consumer/` stream's
    /// newest record, read at its position, and only the records after the snapshot are read
    /// (the whole log without a usable snapshot). Only checkpoints' payloads are decoded.
    pub fn consumers(&self) -> Result<Vec<ConsumerInfo>> {
        let last = self.last_position();
        let mut tally = ConsumerTally::default();
        let (catalog, start) = self.newest_catalog(last);
        for position in catalog {
            let mut reader = self.wal.read_from(position);
            let Some(record) = reader.next() else {
                continue;
            };
            let record = record?;
            if record.position == position {
                let durable = DurableRecord::decode(position, &record.payload)?;
                tally.feed(position, &durable.envelope)?;
            }
        }
        for record in self.wal.read_from(start + 1) {
            let record = record?;
            if record.position > last {
                break;
            }
            let durable = DurableRecord::decode(record.position, &record.payload)?;
            tally.feed(record.position, &durable.envelope)?;
        }
        Ok(tally.finish(last))
    }

    /// The positions of the consumer streams' newest records in the newest usable snapshot's
    /// catalog (at most [`CONSUMERS_MAX`]) and the snapshot's position; none and 0 without a
    /// usable snapshot (one ahead of `last` is not usable).
    fn newest_catalog(&self, last: u64) -> (Vec<u64>, u64) {
        let store = SnapshotStore::new(self.storage.clone(), &self.dir);
        let Ok(LoadOutcome {
            snapshot: Some((_, snapshot)),
            ..
        }) = store.load_newest()
        else {
            return (Vec::new(), 0);
        };
        if snapshot.position > last {
            return (Vec::new(), 0);
        }
        let Ok(catalog) = crate::snapshots::restore_catalog(&snapshot) else {
            return (Vec::new(), 0);
        };
        let positions = catalog
            .iter()
            .filter(|(stream, _)| stream.as_str().starts_with(CONSUMER_STREAM_PREFIX))
            .filter_map(|(_, state)| state.last_position())
            .take(CONSUMERS_MAX)
            .collect();
        (positions, snapshot.position)
    }
}

#[cfg(feature = "postgres")]
impl super::RemoteLog {
    /// Every durable consumer with a checkpoint in the database, by name: one query for the
    /// newest row of each `$consumer/` stream (no scan of the log).
    pub async fn consumers(&self) -> Result<Vec<ConsumerInfo>> {
        let last = self.last_position().await?;
        let raws = self
            .store
            .newest_by_stream_prefix(CONSUMER_STREAM_PREFIX, CONSUMERS_MAX)
            .await
            .map_err(crate::backend::postgres::from_store)?;
        let mut tally = ConsumerTally::default();
        for raw in &raws {
            let bytes = raw.envelope.encode();
            let envelope = EnvelopeRef::decode(&bytes).map_err(|error| Error::Corrupted {
                position: raw.position,
                reason: error.to_string(),
            })?;
            tally.feed(raw.position, &envelope)?;
        }
        Ok(tally.finish(last))
    }
}
