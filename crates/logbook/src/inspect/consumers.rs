//! Durable consumers as a log records them, read-only: `logbook consumers` and the consumers
//! section of `logbook stats`.
//!
//! Owns: [`ConsumerInfo`] and the tally that keeps each consumer's newest checkpoint from the
//! records of its `$consumer/<name>` stream. Must never: write (an operator's reset goes
//! through the engine, `Logbook::reset_consumer`), or keep more than one entry per consumer
//! (at most [`crate::consumer::CONSUMERS_MAX`]).

use super::Inspector;
use crate::consumer::CONSUMERS_MAX;
use crate::error::{Error, Result};
use crate::system::{CONSUMER_STREAM_PREFIX, ConsumerEvent};
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
    /// Every durable consumer with a checkpoint in the log, by name: one read of the log
    /// (only the checkpoints' payloads are decoded).
    pub fn consumers(&self) -> Result<Vec<ConsumerInfo>> {
        let last = self.last_position();
        let mut tally = ConsumerTally::default();
        for record in self.wal.read_from(1) {
            let record = record?;
            if record.position > last {
                break;
            }
            let position = record.position;
            let envelope =
                EnvelopeRef::decode(&record.payload).map_err(|error| Error::Corrupted {
                    position,
                    reason: error.to_string(),
                })?;
            tally.feed(position, &envelope)?;
        }
        Ok(tally.finish(last))
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
