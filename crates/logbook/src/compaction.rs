//! Compaction in the engine: which records to drop, and the purge of every copy.
//!
//! Owns: choosing, for the sealed segments that lie wholly below the newest snapshot, the
//! records to drop (deleted streams, versions hidden by `truncate_stream`, superseded records
//! of latest-only event types), driving the WAL's segment rewrite, and removing the snapshots
//! and index entries that could still hold purged data. Must never: drop a record the current
//! state still needs (everything dropped is either invisible to reads or superseded), touch the
//! active segment, or block appends.
//!
//! Incremental: a segment compacted when the dead generation (bumped by every delete,
//! truncation and finishing event) was G holds nothing more to drop until the generation moves,
//! so it is not read again; a compaction with nothing new reads and writes no segment.

use crate::engine::Shared;
use crate::error::{Error, Result};
use crate::system::SYSTEM_STREAM;
use logbook_compaction::SnapshotInfo;
use logbook_projection::EnvelopeRef;
use logbook_wal::RewriteReport;
use std::collections::HashMap;
use std::path::PathBuf;

/// What a compaction did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactionReport {
    /// The snapshot taken first; everything below it was considered. 0 when there was nothing
    /// to do (nothing died and no segment was sealed since the last compaction): then no
    /// snapshot was taken and no segment read.
    pub snapshot_position: u64,
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

/// What earlier compactions covered (in memory: after a restart everything is revisited once).
#[derive(Debug, Default)]
pub(crate) struct CompactionState {
    /// The dead generation when the active segment was last sealed by a compaction.
    sealed_generation: u64,
    /// Per sealed segment base: the dead generation its last compaction saw.
    compacted: HashMap<u64, u64>,
}

/// The compaction state (locked) and the current dead generation, read after the lock.
fn state_and_generation(shared: &Shared) -> (std::sync::MutexGuard<'_, CompactionState>, u64) {
    let state = shared
        .compaction_state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let generation = shared
        .dead_generation
        .load(std::sync::atomic::Ordering::Acquire);
    (state, generation)
}

/// Seals the active segment (so compaction can reach it) only when something that can make
/// records dead happened since the last seal: else nothing in it is dead.
pub(crate) fn seal_if_needed(shared: &Shared) -> Result<()> {
    let (mut state, generation) = state_and_generation(shared);
    if generation != state.sealed_generation {
        shared.wal.seal_active()?;
        state.sealed_generation = generation;
    }
    Ok(())
}

/// True when some sealed segment was not compacted at the current dead generation.
pub(crate) fn has_work(shared: &Shared) -> bool {
    let (state, generation) = state_and_generation(shared);
    shared
        .wal
        .segments()
        .iter()
        .filter(|segment| !segment.active && segment.last_position > 0)
        .any(|segment| state.compacted.get(&segment.base) != Some(&generation))
}

/// Runs on a blocking thread after the active segment was sealed and a snapshot written.
pub(crate) fn compact(shared: &Shared, snapshot: &SnapshotInfo) -> Result<CompactionReport> {
    let _span = tracing::info_span!("compaction", snapshot = snapshot.position).entered();
    // The generation is read before the catalog: the catalog then knows at least what this
    // generation counts.
    let (mut state, generation) = state_and_generation(shared);
    let catalog = shared
        .catalog
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone();
    let latest_only = &shared.options.compaction;
    let segments: Vec<_> = shared
        .wal
        .segments()
        .into_iter()
        .filter(|segment| !segment.active && segment.last_position > 0)
        .filter(|segment| segment.last_position <= snapshot.position)
        .collect();
    let mut report = CompactionReport {
        snapshot_position: snapshot.position,
        ..Default::default()
    };
    let live: std::collections::HashSet<u64> =
        segments.iter().map(|segment| segment.base).collect();
    state.compacted.retain(|base, _| live.contains(base));
    let pending: std::collections::HashSet<u64> = segments
        .iter()
        .filter(|segment| state.compacted.get(&segment.base) != Some(&generation))
        .map(|segment| segment.base)
        .collect();
    if pending.is_empty() {
        report.snapshots_removed = shared.snapshot_store.remove_below(snapshot.position)?;
        return Ok(report);
    }
    // Pass 1: the newest version of each latest-only event type per stream, and each stream's
    // newest finishing record (only what precedes one may be dropped), over the segments to
    // rewrite. Segments already compacted at this generation are not read: what they hold
    // can only be lower bounds here, and lower bounds drop less, never more (a finishing
    // event bumps the generation, so every segment is revisited with it in view).
    let mut newest: HashMap<(String, String), u64> = HashMap::new();
    let mut finished: HashMap<String, u64> = HashMap::new();
    for segment in segments
        .iter()
        .filter(|segment| pending.contains(&segment.base))
    {
        for record in shared.wal.read_from(segment.base) {
            let record = record?;
            if record.position > segment.last_position {
                break;
            }
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
    // Pass 2: rewrite each segment not compacted at this generation without what is dead.
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
        let rewrite = shared.wal.rewrite_segment(segment.base, &mut keep)?;
        if let Some(error) = failure {
            return Err(error);
        }
        for (stream, version) in superseded {
            shared.index.remove_entry(&stream, version)?;
        }
        if !rewrite.removed {
            state.compacted.insert(segment.base, generation);
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
    // Purge: a snapshot older than the one just written may still hold deleted data.
    report.snapshots_removed = shared.snapshot_store.remove_below(snapshot.position)?;
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
