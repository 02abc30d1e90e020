//! Compaction in the engine: which records to drop, and the purge of every copy.
//!
//! Owns: choosing, for the sealed segments that lie wholly below the newest snapshot, the
//! records to drop (deleted streams, versions hidden by `truncate_stream`, superseded records
//! of latest-only event types), driving the WAL's segment rewrite, and removing the snapshots
//! and index entries that could still hold purged data. Must never: drop a record the current
//! state still needs (everything dropped is either invisible to reads or superseded), touch the
//! active segment, or block appends.
//!
//! Incremental, per segment: the manifest keeps for each sealed segment the snapshot position
//! its last compaction saw (its *mark*, `SegmentInfo::compacted_through`), and the stream
//! catalog keeps for each stream the position of the latest event that made some of its records
//! dead and the range those records lie in (`StreamState::dead_range`). A segment is read only
//! when a death after its mark touches its positions; a compaction with nothing new reads and
//! writes no segment. Both survive a restart (the marks in the manifest, the catalog in the
//! snapshot and the replay after it), so a restart costs no re-read of history. The range is a
//! stream's first record to the last one the death can reach: a long-lived stream whose records
//! are spread over the whole log makes every segment it spans due.

use crate::engine::{Files, Shared};
use crate::error::{Error, Result};
use crate::streams::StreamTable;
use crate::system::SYSTEM_STREAM;
use logbook_compaction::SnapshotInfo;
use logbook_projection::EnvelopeRef;
use logbook_wal::{RewriteReport, SegmentInfo};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

/// What a compaction did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactionReport {
    /// The snapshot taken first; everything below it was considered. 0 when there was nothing
    /// to do (no record died where no compaction has looked since): then no snapshot was
    /// taken and no segment read.
    pub snapshot_position: u64,
    /// Sealed segments read (those holding records that died since their last compaction).
    pub segments_read: usize,
    /// Bytes of segment files read: each due segment twice (once to find what its deaths
    /// superseded, once to rewrite it), no other.
    pub bytes_read: u64,
    /// Segments rewritten with fewer records.
    pub segments_rewritten: usize,
    /// Segments removed because nothing in them was kept.
    pub segments_removed: usize,
    /// Records dropped.
    pub records_dropped: u64,
    /// Bytes of segment files reclaimed.
    pub bytes_reclaimed: u64,
    /// Older snapshots removed (they could hold purged data).
    pub snapshots_removed: Vec<PathBuf>,
    /// One entry per segment that changed.
    pub segments: Vec<RewriteReport>,
}

/// The segments (of `segments`, ascending) holding records that died after their mark: for
/// each stream whose latest death is after the lowest mark, the segments its dead range
/// overlaps whose mark is below that death.
fn due_segments(catalog: &StreamTable, segments: &[SegmentInfo]) -> HashSet<u64> {
    let mut due = HashSet::new();
    let Some(lowest_mark) = segments
        .iter()
        .map(|segment| segment.compacted_through)
        .min()
    else {
        return due;
    };
    for (died_at, range) in catalog.deaths_after(lowest_mark) {
        // The first segment that can hold the range's start: the last one based at or below it.
        let first = segments
            .partition_point(|segment| segment.base <= *range.start())
            .saturating_sub(1);
        for segment in segments.iter().skip(first) {
            if segment.base > *range.end() {
                break;
            }
            if segment.compacted_through < died_at {
                due.insert(segment.base);
            }
        }
    }
    due
}

fn sealed(files: &Files) -> Vec<SegmentInfo> {
    files
        .wal
        .segments()
        .into_iter()
        .filter(|segment| !segment.active && segment.last_position > 0)
        .collect()
}

/// The durable stream table: compaction decides on deaths that are durable and applied (the
/// snapshot it compacts below holds exactly those), never on pending ones.
fn catalog(shared: &Shared) -> StreamTable {
    shared
        .durable_streams
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone()
}

/// Seals the active segment (so compaction can reach it) only when it holds records that
/// died: else nothing in it is dead and sealing would only leave a small segment behind.
pub(crate) fn seal_if_needed(shared: &Shared, files: &Files) -> Result<()> {
    let _one_at_a_time = lock(files);
    let Some(active) = files
        .wal
        .segments()
        .into_iter()
        .find(|segment| segment.active)
    else {
        return Ok(());
    };
    let catalog = catalog(shared);
    if !due_segments(&catalog, std::slice::from_ref(&active)).is_empty() {
        files.wal.seal_active()?;
    }
    Ok(())
}

/// True when some sealed segment holds records that died since its last compaction.
pub(crate) fn has_work(shared: &Shared, files: &Files) -> bool {
    !due_segments(&catalog(shared), &sealed(files)).is_empty()
}

fn lock(files: &Files) -> std::sync::MutexGuard<'_, ()> {
    files
        .compaction_lock
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs on a blocking thread after the active segment was sealed and a snapshot written.
pub(crate) fn compact(
    shared: &Shared,
    files: &Files,
    snapshot: &SnapshotInfo,
) -> Result<CompactionReport> {
    let _span = tracing::info_span!("compaction", snapshot = snapshot.position).entered();
    let _one_at_a_time = lock(files);
    let catalog = catalog(shared);
    let latest_only = &shared.options.compaction;
    let segments: Vec<SegmentInfo> = sealed(files)
        .into_iter()
        .filter(|segment| segment.last_position <= snapshot.position)
        .collect();
    let mut report = CompactionReport {
        snapshot_position: snapshot.position,
        ..Default::default()
    };
    let pending = due_segments(&catalog, &segments);
    if pending.is_empty() {
        report.snapshots_removed = files.snapshot_store.remove_below(snapshot.position)?;
        return Ok(report);
    }
    // Pass 1: the newest version of each latest-only event type per stream, and each stream's
    // newest finishing record (only what precedes one may be dropped), over the due segments.
    // Segments that are not due are not read: what they hold can only be lower bounds here,
    // and lower bounds drop less, never more (a finishing event makes every segment its
    // stream spans due, so it is in view whenever it matters).
    let mut newest: HashMap<(String, String), u64> = HashMap::new();
    let mut finished: HashMap<String, u64> = HashMap::new();
    for segment in segments
        .iter()
        .filter(|segment| pending.contains(&segment.base))
    {
        report.segments_read += 1;
        report.bytes_read += segment.bytes;
        for record in files
            .wal
            .read_from(segment.base)
            .up_to(segment.last_position)
        {
            let record = record?;
            let envelope = decode(record.position, &record.payload)?;
            if latest_only.is_latest_only(envelope.event_type) {
                let key = (envelope.stream.to_owned(), envelope.event_type.to_owned());
                let entry = newest.entry(key).or_insert(envelope.stream_version);
                *entry = (*entry).max(envelope.stream_version);
            }
            if latest_only.is_finished(envelope.event_type) {
                let entry = finished
                    .entry(envelope.stream.to_owned())
                    .or_insert(envelope.stream_version);
                *entry = (*entry).max(envelope.stream_version);
            }
        }
    }
    // Pass 2: rewrite each due segment without what is dead.
    let mut marks = Vec::new();
    for segment in segments
        .iter()
        .filter(|segment| pending.contains(&segment.base))
    {
        let mut superseded = Vec::new();
        let mut failure = None;
        let mut keep = |position: u64, payload: &[u8]| -> bool {
            let envelope = match decode(position, payload) {
                Ok(envelope) => envelope,
                Err(error) => {
                    failure.get_or_insert(error);
                    return true;
                }
            };
            if envelope.stream == SYSTEM_STREAM {
                return true;
            }
            let state = logbook_projection::StreamId::new(envelope.stream)
                .ok()
                .and_then(|stream| catalog.get(&stream).cloned());
            let hidden = state.is_some_and(|state| {
                state.deleted || envelope.stream_version < state.truncated_before
            });
            if hidden {
                return false;
            }
            let key = (envelope.stream.to_owned(), envelope.event_type.to_owned());
            // A superseded latest-only record goes only once its entity finished after it: a
            // heartbeat of a live claim still counts (the lease is the maximum of them).
            let finished_after = finished
                .get(envelope.stream)
                .is_some_and(|&finished| envelope.stream_version < finished);
            if finished_after
                && newest
                    .get(&key)
                    .is_some_and(|&newest| envelope.stream_version < newest)
            {
                superseded.push((envelope.stream.to_owned(), envelope.stream_version));
                return false;
            }
            true
        };
        let rewrite = files.wal.rewrite_segment(segment.base, &mut keep)?;
        if let Some(error) = failure {
            return Err(error);
        }
        for (stream, version) in superseded {
            files.index.remove_entry(&stream, version)?;
        }
        report.bytes_read += rewrite.bytes_before;
        if !rewrite.removed {
            marks.push((segment.base, snapshot.position));
        }
        if rewrite.records_dropped > 0 {
            report.records_dropped += rewrite.records_dropped;
            report.bytes_reclaimed += rewrite.bytes_before - rewrite.bytes_after;
            if rewrite.removed {
                report.segments_removed += 1;
            } else {
                report.segments_rewritten += 1;
            }
            report.segments.push(rewrite);
        }
    }
    // Durability: the marks go to the manifest only after the rewrites they describe; a crash
    // before costs one more read of those segments, never a missed death.
    files.wal.set_compacted_through(&marks)?;
    // Purge: a snapshot older than the one just written may still hold deleted data.
    report.snapshots_removed = files.snapshot_store.remove_below(snapshot.position)?;
    tracing::info!(
        records_dropped = report.records_dropped,
        bytes_reclaimed = report.bytes_reclaimed,
        "compaction done"
    );
    Ok(report)
}

fn decode(position: u64, payload: &[u8]) -> Result<EnvelopeRef<'_>> {
    EnvelopeRef::decode(payload).map_err(|error| Error::Corrupted {
        position,
        reason: error.to_string(),
    })
}
