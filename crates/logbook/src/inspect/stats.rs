//! Statistics of a log, from one read-only pass over it.
//!
//! Owns: [`LogStats`]: segments, events by type and by stream kind, streams and the largest of
//! them, the garbage a compaction would reclaim (events of deleted streams and truncated
//! versions; superseded latest-only events are not counted), and the snapshot files. Must never: keep more than a counter per stream and per event type.

use super::{Inspector, Progress};
use crate::error::{Error, Result};
use crate::system::{self, Hidden, SystemEvent};
use logbook_compaction::{SnapshotInfo, SnapshotStore};
use logbook_projection::{EnvelopeRef, StreamId, StreamKind};
use logbook_wal::frame::FRAME_HEADER_BYTES;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

/// How many streams [`LogStats::largest_streams`] lists.
pub const LARGEST_STREAMS_LISTED: usize = 10;

/// One segment file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentStats {
    /// The file.
    pub path: PathBuf,
    /// The first position it may hold (from its name).
    pub base: u64,
    /// Its first and last positions; `None` when it holds no record.
    pub positions: Option<(u64, u64)>,
    /// Records in it.
    pub records: u64,
    /// Readable bytes, header included.
    pub bytes: u64,
}

/// One stream's size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamStats {
    /// The stream.
    pub stream: String,
    /// Its events.
    pub events: u64,
    /// Their bytes in the log, frames included.
    pub bytes: u64,
}

/// What is in a log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogStats {
    /// The segment files, oldest first.
    pub segments: Vec<SegmentStats>,
    /// Bytes of all segment files.
    pub segment_bytes: u64,
    /// The first and last positions; `None` for an empty log.
    pub positions: Option<(u64, u64)>,
    /// Events (engine events included).
    pub events: u64,
    /// Events per type.
    pub events_by_type: BTreeMap<String, u64>,
    /// Events per stream kind: `run`, `workflow`, `room`, `job`, `custom`, `system` (the
    /// engine's `$logbook` and the consumers' checkpoint streams).
    pub events_by_kind: BTreeMap<&'static str, u64>,
    /// Streams with at least one event (the engine's own included).
    pub streams: u64,
    /// The largest streams by event count, at most [`LARGEST_STREAMS_LISTED`].
    pub largest_streams: Vec<StreamStats>,
    /// Streams deleted (tombstoned).
    pub deleted_streams: u64,
    /// Streams truncated.
    pub truncated_streams: u64,
    /// Events a compaction would purge (deleted streams, truncated versions).
    pub reclaimable_events: u64,
    /// Their bytes, frames included.
    pub reclaimable_bytes: u64,
    /// The snapshot files, newest first (listed, not checked: `verify` checks them).
    pub snapshots: Vec<SnapshotInfo>,
    /// The log's creation was not finished (see [`super::CREATION_UNFINISHED`]): it is empty.
    pub creation_unfinished: bool,
    /// Durable consumers with a checkpoint, by name (their lag against the last position).
    pub consumers: Vec<super::ConsumerInfo>,
}

/// The name of a stream's kind in [`LogStats::events_by_kind`].
pub fn kind_name(stream: &str) -> &'static str {
    if stream == system::SYSTEM_STREAM || system::is_consumer_stream(stream) {
        return "system";
    }
    match StreamId::new(stream).map(|stream| stream.kind()) {
        Ok(StreamKind::Run) => "run",
        Ok(StreamKind::Workflow) => "workflow",
        Ok(StreamKind::Room) => "room",
        Ok(StreamKind::Job) => "job",
        _ => "custom",
    }
}

#[derive(Debug, Default)]
struct StreamTally {
    events: u64,
    bytes: u64,
    deleted: bool,
    truncated_before: u64,
}

impl Inspector {
    /// Reads the whole log once and counts.
    pub fn stats(&self, progress: &dyn Progress) -> Result<LogStats> {
        let infos = self.segments();
        let mut stats = LogStats {
            segments: infos
                .iter()
                .map(|info| SegmentStats {
                    path: info.path.clone(),
                    base: info.base,
                    positions: None,
                    records: 0,
                    bytes: info.bytes,
                })
                .collect(),
            segment_bytes: infos.iter().map(|info| info.bytes).sum(),
            creation_unfinished: self.creation_unfinished(),
            ..LogStats::default()
        };
        let mut streams: HashMap<String, StreamTally> = HashMap::new();
        let mut consumers = super::consumers::ConsumerTally::default();
        let last = self.last_position();
        progress.start("stats", last);
        let mut segment = 0usize;
        let mut previous = 0u64;
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
            let bytes = (record.payload.len() + FRAME_HEADER_BYTES) as u64;
            while stats
                .segments
                .get(segment + 1)
                .is_some_and(|next| next.base <= position)
            {
                segment += 1;
            }
            if let Some(current) = stats.segments.get_mut(segment) {
                let first = current.positions.map_or(position, |(first, _)| first);
                current.positions = Some((first, position));
                current.records += 1;
            }
            count(&mut stats, &mut streams, position, &envelope, bytes)?;
            consumers.feed(position, &envelope)?;
            progress.advance(position - previous);
            previous = position;
        }
        progress.finish();
        stats.positions = stats
            .segments
            .iter()
            .filter_map(|segment| segment.positions)
            .fold(None, |range, (first, last)| {
                Some(range.map_or((first, last), |(start, _)| (start, last)))
            });
        self.finish_streams(&mut stats, streams)?;
        stats.consumers = consumers.finish(last);
        stats.snapshots = SnapshotStore::new(self.storage.clone(), &self.dir).list()?;
        Ok(stats)
    }

    /// Ranks the streams and counts the garbage; truncated streams need a second look at their
    /// early versions (only those streams are read again).
    fn finish_streams(
        &self,
        stats: &mut LogStats,
        streams: HashMap<String, StreamTally>,
    ) -> Result<()> {
        stats.streams = streams.values().filter(|tally| tally.events > 0).count() as u64;
        let mut truncated: HashMap<String, u64> = HashMap::new();
        for (name, tally) in &streams {
            if tally.deleted {
                stats.deleted_streams += 1;
                stats.reclaimable_events += tally.events;
                stats.reclaimable_bytes += tally.bytes;
            } else if tally.truncated_before > 0 {
                stats.truncated_streams += 1;
                truncated.insert(name.clone(), tally.truncated_before);
            }
        }
        if !truncated.is_empty() {
            for record in self.wal.read_from(1) {
                let record = record?;
                let Ok(envelope) = EnvelopeRef::decode(&record.payload) else {
                    continue;
                };
                if truncated
                    .get(envelope.stream)
                    .is_some_and(|&before| envelope.stream_version < before)
                {
                    stats.reclaimable_events += 1;
                    stats.reclaimable_bytes += (record.payload.len() + FRAME_HEADER_BYTES) as u64;
                }
            }
        }
        let mut ranked: Vec<StreamStats> = streams
            .into_iter()
            .filter(|(_, tally)| tally.events > 0)
            .map(|(stream, tally)| StreamStats {
                stream,
                events: tally.events,
                bytes: tally.bytes,
            })
            .collect();
        ranked.sort_by(|a, b| {
            b.events
                .cmp(&a.events)
                .then_with(|| a.stream.cmp(&b.stream))
        });
        ranked.truncate(LARGEST_STREAMS_LISTED);
        stats.largest_streams = ranked;
        Ok(())
    }
}

fn count(
    stats: &mut LogStats,
    streams: &mut HashMap<String, StreamTally>,
    position: u64,
    envelope: &EnvelopeRef<'_>,
    bytes: u64,
) -> Result<()> {
    stats.events += 1;
    *stats
        .events_by_type
        .entry(envelope.event_type.to_owned())
        .or_default() += 1;
    *stats
        .events_by_kind
        .entry(kind_name(envelope.stream))
        .or_default() += 1;
    let tally = streams.entry(envelope.stream.to_owned()).or_default();
    tally.events += 1;
    tally.bytes += bytes;
    if envelope.stream == system::SYSTEM_STREAM {
        let event = SystemEvent::decode_record(envelope.event_type, envelope.payload)
            .map_err(|reason| Error::Corrupted { position, reason })?;
        let tally = streams.entry(event.stream().to_owned()).or_default();
        match event.hides() {
            Hidden::All => tally.deleted = true,
            // A soft delete hides the stream's versions like a truncation does: its events
            // are garbage a compaction reclaims, and the stream lives on.
            Hidden::Below(before_version) => {
                tally.truncated_before = tally.truncated_before.max(before_version);
            }
        }
    }
    Ok(())
}
