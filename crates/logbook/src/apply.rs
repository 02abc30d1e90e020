//! Applying durable records: the one place a durable record is decoded and applied.
//!
//! Owns: [`DurableRecord`], a record decoded once (its envelope borrowed from the record's bytes,
//! and for an engine event the checked [`SystemEvent`]), and the functions that apply durable
//! records to the durable stream table, the stream index and the projections: [`apply_record`]
//! (the syncer, for live appends: the catalog, then the projections, one record at a time),
//! [`apply_catalog`] (also the replay at open, which hands the projections their records a
//! chunk at a time through [`crate::projections::Replayer`]) and [`IndexBatch`]. Must never:
//! apply a record that is not durable, apply records out of position order, or do I/O other
//! than the stream index's own.

use crate::error::{Error, Result};
use crate::index::StreamIndex;
use crate::projections::Applier;
use crate::streams::{ReplayRun, StreamTable};
use crate::system::{self, SystemEvent};
use logbook_compaction::CompactionPolicy;
use logbook_projection::{EnvelopeDecoder, EnvelopeRef, Event, RecordedEvent, StreamId};

/// A durable record, decoded once: everything the catalog, the index and the projections read.
#[derive(Debug, Clone)]
pub struct DurableRecord<'a> {
    /// The record's position in the log.
    pub(crate) position: u64,
    /// The envelope, borrowed from the record's bytes.
    pub(crate) envelope: EnvelopeRef<'a>,
    /// For a record of the engine's own stream, its event (decoded, its type checked).
    pub(crate) system: Option<SystemEvent>,
}

impl<'a> DurableRecord<'a> {
    /// Decodes the record at `position`; garbage is `Error::Corrupted` naming the position.
    pub(crate) fn decode(position: u64, bytes: &'a [u8]) -> Result<DurableRecord<'a>> {
        let envelope =
            EnvelopeRef::decode(bytes).map_err(|error| corrupted(position, error.to_string()))?;
        DurableRecord::with_envelope(position, envelope)
    }

    /// [`DurableRecord::decode`] through `decoder`, which checks a stream id or event type
    /// equal to the previous record's once (a replay's run of records): the same checks, the
    /// same errors.
    pub(crate) fn decode_with(
        decoder: &'a mut EnvelopeDecoder,
        position: u64,
        bytes: &'a [u8],
    ) -> Result<DurableRecord<'a>> {
        let envelope = decoder
            .decode(bytes)
            .map_err(|error| corrupted(position, error.to_string()))?;
        DurableRecord::with_envelope(position, envelope)
    }

    /// The record at `position` of a decoded envelope (its engine event, if any, decoded and
    /// checked here).
    pub(crate) fn with_envelope(
        position: u64,
        envelope: EnvelopeRef<'a>,
    ) -> Result<DurableRecord<'a>> {
        let corrupt = |reason: String| corrupted(position, reason);
        let system = if envelope.stream == system::SYSTEM_STREAM {
            Some(
                SystemEvent::decode_record(envelope.event_type, envelope.payload)
                    .map_err(corrupt)?,
            )
        } else {
            None
        };
        Ok(DurableRecord {
            position,
            envelope,
            system,
        })
    }

    /// True for a record of a reserved stream other than `$logbook` (a consumer checkpoint):
    /// the catalog and the index keep it like any record, the projections never see it.
    pub(crate) fn engine_private(&self) -> bool {
        self.system.is_none() && system::is_reserved(self.envelope.stream)
    }

    /// The payload decoded as `E` (upcast from older schema versions by `E::decode_payload`),
    /// with the envelope's fields: what projections apply. Not for engine events. The same
    /// codec check and fields as every other read path
    /// ([`RecordedEvent::from_envelope_ref`]).
    pub(crate) fn event<E: Event>(&self) -> logbook_projection::Result<RecordedEvent<E>> {
        RecordedEvent::from_envelope_ref(self.position, &self.envelope)
    }
}

fn corrupted(position: u64, reason: String) -> Error {
    Error::Corrupted { position, reason }
}

/// A batch of durable records decoded once, in position order: what a backend hands the
/// engine's [`DurableSink`](crate::backend::DurableSink).
#[derive(Debug, Default)]
pub struct DecodedBatch<'a> {
    /// The records decoded, from the batch's first on.
    pub(crate) records: Vec<DurableRecord<'a>>,
    /// The first record that did not decode, and why; the records after it are not decoded.
    pub(crate) undecoded: Option<(u64, Error)>,
}

impl<'a> DecodedBatch<'a> {
    /// Decodes `batch` (position and envelope bytes) up to its first undecodable record.
    pub fn decode(batch: &'a [(u64, std::sync::Arc<Vec<u8>>)]) -> DecodedBatch<'a> {
        let mut decoded = DecodedBatch {
            records: Vec::with_capacity(batch.len()),
            undecoded: None,
        };
        for (position, bytes) in batch {
            match DurableRecord::decode(*position, bytes) {
                Ok(record) => decoded.records.push(record),
                Err(error) => {
                    decoded.undecoded = Some((*position, error));
                    break;
                }
            }
        }
        decoded
    }
}

/// Whether an event the projections' type cannot decode is skipped or fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Undecodable {
    /// Replay: skip it, count it, log it (the same way on every replay).
    Skip,
    /// Live: fail (the engine wrote these bytes itself and decoded them back before).
    Fail,
}

/// Why a durable record could not be applied; the engine poisons itself at its position.
#[derive(Debug)]
pub(crate) enum ApplyError {
    /// The durable stream table refused it.
    Catalog(Error),
    /// The projections could not take it.
    Projections(Error),
}

impl ApplyError {
    /// The cause, for a poison reason.
    pub(crate) fn reason(&self) -> String {
        match self {
            ApplyError::Catalog(error) => format!("not applied to the stream catalog: {error}"),
            ApplyError::Projections(error) => format!("not applied to the projections: {error}"),
        }
    }
}

/// Applies one durable record to the durable stream table, then to every projection: the one
/// apply, for the replay at open ([`Undecodable::Skip`]) and for live appends
/// ([`Undecodable::Fail`]) alike. Records come in position order, each exactly once.
pub(crate) fn apply_record(
    catalog: &mut StreamTable,
    applier: &dyn Applier,
    compaction: &CompactionPolicy,
    record: &DurableRecord<'_>,
    undecodable: Undecodable,
) -> std::result::Result<(), ApplyError> {
    apply_catalog(catalog, compaction, record).map_err(ApplyError::Catalog)?;
    applier
        .apply(record, undecodable)
        .map_err(ApplyError::Projections)
}

/// Applies one record to a stream table (versions, tombstones, truncations, finished
/// entities): the durable table here and the snapshot thread's replica of it.
pub(crate) fn apply_catalog(
    streams: &mut StreamTable,
    compaction: &CompactionPolicy,
    record: &DurableRecord<'_>,
) -> Result<()> {
    let envelope = &record.envelope;
    streams.replay(envelope.stream, envelope.stream_version, record.position)?;
    apply_catalog_rest(streams, compaction, record)
}

/// [`apply_catalog`] of a replay's next record through `run` ([`StreamTable::replay_in_run`]):
/// the same changes and errors, with no lookup for a record of the run's stream. A record that
/// changes more than its own stream's version ends the run first; the caller ends it after the
/// last record ([`StreamTable::end_run`]).
pub(crate) fn apply_catalog_in_run(
    streams: &mut StreamTable,
    run: &mut ReplayRun,
    compaction: &CompactionPolicy,
    record: &DurableRecord<'_>,
) -> Result<()> {
    let envelope = &record.envelope;
    streams.replay_in_run(
        run,
        envelope.stream,
        envelope.stream_version,
        record.position,
    )?;
    if record.system.is_some() || run.is_finished(compaction, envelope.event_type) {
        streams.end_run(run);
        apply_catalog_rest(streams, compaction, record)?;
    }
    Ok(())
}

/// What [`apply_catalog`] does after the record's own version: a deletion, a truncation, a
/// finished entity.
fn apply_catalog_rest(
    streams: &mut StreamTable,
    compaction: &CompactionPolicy,
    record: &DurableRecord<'_>,
) -> Result<()> {
    let position = record.position;
    let envelope = &record.envelope;
    match &record.system {
        Some(SystemEvent::StreamDeleted { stream }) => {
            streams.delete(&StreamId::new(stream.as_str())?, position);
        }
        Some(SystemEvent::StreamTruncated {
            stream,
            before_version,
        }) => {
            streams.truncate(&StreamId::new(stream.as_str())?, *before_version, position);
        }
        Some(SystemEvent::StreamSoftDeleted {
            stream,
            before_version,
        }) => {
            streams.soft_delete(&StreamId::new(stream.as_str())?, *before_version, position);
        }
        None if compaction.is_finished(envelope.event_type) => {
            streams.finished(envelope.stream, position);
        }
        None => {}
    }
    Ok(())
}

/// Records indexed per sled batch during replay.
pub(crate) const INDEX_BATCH_RECORDS: usize = 4096;

/// Index entries gathered from durable records, written to the stream index in one batch.
#[derive(Debug, Default)]
pub(crate) struct IndexBatch {
    entries: Vec<(String, u64, u64)>,
    complete: Option<u64>,
}

impl IndexBatch {
    /// Adds a record's entry; an engine event first writes what came before it, then removes
    /// the versions it hides (so the index never serves them).
    pub(crate) fn add(&mut self, index: &StreamIndex, record: &DurableRecord<'_>) -> Result<()> {
        let envelope = &record.envelope;
        self.entries.push((
            envelope.stream.to_owned(),
            envelope.stream_version,
            record.position,
        ));
        self.complete = Some(record.position);
        if let Some(event) = &record.system {
            self.flush(index)?;
            index.remove(event.stream(), event.hides().before_version())?;
        }
        Ok(())
    }

    /// Entries waiting.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Writes the gathered entries and the position the index is complete up to.
    pub(crate) fn flush(&mut self, index: &StreamIndex) -> Result<()> {
        if let Some(complete) = self.complete.take() {
            index.insert(&self.entries, complete)?;
            self.entries.clear();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use logbook_projection::{BuiltinEvent, Envelope};
    use std::sync::Arc;

    fn record(stream: &str, version: u64, data: logbook_projection::EventData) -> Vec<u8> {
        let stream = StreamId::new(stream).expect("stream id");
        Envelope::new(stream, version, 7, data).encode()
    }

    fn room_created(stream: &str, version: u64) -> Vec<u8> {
        let event = BuiltinEvent::from_json("room.created", serde_json::json!({"name": "Lobby"}))
            .expect("event");
        let data = logbook_projection::NewEvent::new(event)
            .to_data()
            .expect("data");
        record(stream, version, data)
    }

    /// A batch decodes up to its first garbage record, which is named by position.
    #[test]
    fn a_batch_decodes_up_to_its_first_garbage_record() {
        let batch = vec![
            (1, Arc::new(room_created("room-a", 0))),
            (2, Arc::new(b"not an envelope".to_vec())),
            (3, Arc::new(room_created("room-a", 1))),
        ];
        let decoded = DecodedBatch::decode(&batch);
        assert_eq!(decoded.records.len(), 1);
        assert_eq!(decoded.records[0].position, 1);
        assert_eq!(decoded.records[0].envelope.stream, "room-a");
        let (position, error) = decoded.undecoded.as_ref().expect("garbage found");
        assert_eq!(*position, 2);
        assert!(
            matches!(error, Error::Corrupted { position: 2, .. }),
            "{error:?}"
        );
    }

    /// An engine event whose envelope type does not match its payload is refused when the
    /// record is decoded, before anything applies it.
    #[test]
    fn a_system_event_with_the_wrong_type_is_corrupt() {
        let event = SystemEvent::StreamDeleted {
            stream: "room-a".to_owned(),
        };
        let mismatched = logbook_projection::EventData::new(
            system::STREAM_TRUNCATED,
            1,
            logbook_projection::codec::encode(&event).expect("encode"),
        )
        .expect("data");
        let bytes = record(system::SYSTEM_STREAM, 0, mismatched);
        let error = DurableRecord::decode(9, &bytes).expect_err("type mismatch");
        assert!(
            matches!(&error, Error::Corrupted { position: 9, reason } if reason.contains("does not match")),
            "{error:?}"
        );
        let matching = event.to_data().expect("data");
        let bytes = record(system::SYSTEM_STREAM, 0, matching);
        let decoded = DurableRecord::decode(9, &bytes).expect("decodes");
        assert_eq!(decoded.system, Some(event));
    }

    /// The one catalog apply: versions, then a tombstone hides the stream for good.
    #[test]
    fn the_catalog_apply_follows_versions_and_deaths() {
        let compaction = CompactionPolicy::default();
        let mut table = StreamTable::default();
        let stream = StreamId::new("room-a").expect("stream id");
        for (position, version) in [(1, 0), (2, 1)] {
            let bytes = room_created("room-a", version);
            let record = DurableRecord::decode(position, &bytes).expect("decodes");
            apply_catalog(&mut table, &compaction, &record).expect("applies");
        }
        assert_eq!(
            table.get(&stream).and_then(|state| state.last_version()),
            Some(1)
        );
        let tombstone = SystemEvent::StreamDeleted {
            stream: "room-a".to_owned(),
        };
        let bytes = record(system::SYSTEM_STREAM, 0, tombstone.to_data().expect("data"));
        let record = DurableRecord::decode(3, &bytes).expect("decodes");
        apply_catalog(&mut table, &compaction, &record).expect("applies");
        assert!(matches!(
            table.visible_from(&stream),
            Err(Error::StreamDeleted { .. })
        ));
        // A version that goes backwards is refused: the table never silently rewinds.
        let bytes = room_created("room-b", 3);
        let ahead = DurableRecord::decode(4, &bytes).expect("decodes");
        apply_catalog(&mut table, &compaction, &ahead).expect("a first version may be any");
        let bytes = room_created("room-b", 2);
        let behind = DurableRecord::decode(5, &bytes).expect("decodes");
        assert!(apply_catalog(&mut table, &compaction, &behind).is_err());
    }
}
