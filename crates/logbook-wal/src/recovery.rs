//! Recovery: what open makes of the segment files it finds.
//!
//! Owns: scanning segments frame by frame, telling an honest crash tail from corruption, cutting
//! the tail (truncate + fsync), salvage, and the [`RecoveryReport`]. Must never: skip a bad frame
//! silently, cut anything in a read-only open, or cut a frame that was provably durable unless
//! the operator asked for salvage.
//!
//! The proof: every frame records the durable position its writer knew when it was encoded (its
//! `durable_mark`). A bad frame (torn, zeroed, failing its checksum, out of order) whose position
//! is at or below the mark of some later valid frame was durable before that frame was written,
//! so it was damaged after it was synced: corruption. A bad frame above every later mark may be
//! an unsynced tail that a power loss wrote back out of order: it is cut with the rest of the
//! tail. Rolling to a new segment syncs the old one first, so only the last segment can hold an
//! unsynced tail; a bad frame in a sealed segment is always corruption.
//!
//! Zeros from a frame boundary after a complete batch to the end of the file are not a bad
//! frame: they are the space a writer preallocated (`WalOptions::preallocate_bytes`), the end of
//! the data ([`Scan::zero_tail`]; open calls them damage in a sealed segment, which its roll
//! trims). No frame starts inside a run of zeros, so walks past a bad frame skip such runs.

use crate::cursor::Cursor;
use crate::error::{Error, Result};
use crate::frame::{FRAME_HEADER_BYTES, FrameError};
use crate::segment::{IndexEntry, SEGMENT_HEADER_BYTES};
use crate::storage::StorageFile;
use std::path::PathBuf;
use std::time::Duration;

/// What open found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segment files opened.
    pub segments: usize,
    /// Records found in complete batches.
    pub records: u64,
    /// Bytes of segment files scanned.
    pub bytes_scanned: u64,
    /// The last position in the log after recovery (0 for an empty log).
    pub last_position: u64,
    /// An unsynced tail that was cut off the last segment.
    pub tail_cut: Option<TailCut>,
    /// Zero bytes found after the last frame of the last segment: space a writer preallocated
    /// (`WalOptions::preallocate_bytes`) and a crash left behind. Not damage and not cut: the
    /// next appends overwrite it. 0 after a clean close, which trims it.
    pub preallocated_bytes: u64,
    /// What salvage dropped, when [`RecoveryMode::Salvage`](crate::RecoveryMode) cut at corruption.
    pub salvage: Option<Salvage>,
    /// A last segment whose creation a crash interrupted (header never made durable), removed.
    pub removed_unfinished_segment: Option<PathBuf>,
    /// What comparing the manifest with the segment files found and did: leftovers of an
    /// interrupted removal (removed), a segment of an interrupted roll (adopted), and, only under
    /// [`RecoveryMode::Salvage`](crate::RecoveryMode), missing segments accepted as lost and
    /// unlisted segments adopted. In strict mode a missing or unlisted segment fails open.
    pub manifest_findings: Vec<crate::manifest::Finding>,
    /// True when open wrote a manifest for a log that had none (a new log, or one written
    /// before manifests existed: its segment set as found is trusted from then on).
    pub manifest_created: bool,
    /// Under salvage, the positions the manifest proves the log reached but its segments no
    /// longer hold, accepted as lost: `(first, last)`.
    pub positions_lost: Option<(u64, u64)>,
    /// Read-only opens: the log's creation was cut short (its `wal/` holds no segment with a
    /// complete header), so it holds no record. A writer open finishes such a creation.
    pub creation_unfinished: bool,
    /// A read-only open only: the corruption it stopped at. The log is known up to it; readers
    /// return every record before it, then [`Error::Corrupted`] with this segment and offset.
    pub damage: Option<Damage>,
    /// How long recovery took.
    pub duration: Duration,
}

/// A cut of the unsynced tail of the last segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailCut {
    /// The segment file.
    pub segment: PathBuf,
    /// The new length of the file: everything from here on was dropped.
    pub offset: u64,
    /// Bytes dropped.
    pub bytes_dropped: u64,
    /// Why the first dropped byte was not part of a complete batch.
    pub reason: String,
}

/// What salvage dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Salvage {
    /// The segment with the first corruption.
    pub segment: PathBuf,
    /// The offset where the log was cut.
    pub offset: u64,
    /// The corruption found.
    pub reason: String,
    /// Bytes dropped from the cut segment.
    pub bytes_dropped: u64,
    /// Later segment files removed whole.
    pub segments_removed: Vec<PathBuf>,
    /// Valid frames that could still be read beyond the cut (lost by salvage).
    pub valid_frames_dropped: u64,
}

/// Corruption a read-only open stopped at (see [`RecoveryReport::damage`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// The damaged segment file.
    pub segment: PathBuf,
    /// Byte offset of the bad structure (a frame, or 0 and 16 for a segment header).
    pub offset: u64,
    /// What is wrong.
    pub reason: String,
    /// The last position before the damage that readers return (0: none).
    pub last_position: u64,
}

impl Damage {
    /// The error readers return when they reach the damage.
    pub fn to_error(&self) -> Error {
        Error::corrupted(&self.segment, self.offset, self.reason.clone())
    }
}

/// A problem found while scanning a segment.
#[derive(Debug, Clone)]
pub(crate) struct Problem {
    /// Where the segment must be cut: the bad frame, or the first frame of its unfinished batch.
    pub(crate) cut_offset: u64,
    /// The offset of the bad frame (or the end of file for an unfinished batch).
    pub(crate) bad_offset: u64,
    pub(crate) reason: String,
    /// True when a later valid frame proves the bad one was durable.
    pub(crate) provably_durable: bool,
    /// Valid frames found after the bad one.
    pub(crate) later_valid_frames: u64,
}

/// The result of scanning one segment.
#[derive(Debug, Clone)]
pub(crate) struct Scan {
    /// The end of the last complete batch.
    pub(crate) valid_end: u64,
    /// Where the segment's zero-filled tail starts: every byte from this frame boundary (after a
    /// complete batch) to the end of the file is zero. A writer preallocates the active
    /// segment this way (`WalOptions::preallocate_bytes`), so this is the end of the data of
    /// the last segment; in a sealed segment (trimmed at its roll) it is damage.
    pub(crate) zero_tail: Option<u64>,
    /// The last position of a complete batch (`before` when there is none).
    pub(crate) last_position: u64,
    pub(crate) records: u64,
    pub(crate) index: Vec<IndexEntry>,
    pub(crate) problem: Option<Problem>,
}

/// Where a scan starts: the header end with no position yet, or where a previous scan stopped.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ScanStart {
    pub(crate) offset: u64,
    /// Positions found must be above this.
    pub(crate) after_position: u64,
    /// The last indexed offset (for the sparse index interval).
    pub(crate) last_indexed_offset: Option<u64>,
}

impl ScanStart {
    pub(crate) fn fresh(base: u64) -> Self {
        ScanStart {
            offset: SEGMENT_HEADER_BYTES as u64,
            after_position: base - 1,
            last_indexed_offset: None,
        }
    }
}

/// Scans the frames of a segment from `start` to `file_len`.
pub(crate) fn scan_segment(
    file: &dyn StorageFile,
    file_len: u64,
    start: ScanStart,
    record_bytes_max: u32,
    index_interval_bytes: u64,
) -> Result<Scan> {
    let io = |source| Error::Io {
        path: PathBuf::from("<segment>"),
        source,
    };
    let mut cursor = Cursor::new();
    let mut scan = Scan {
        valid_end: start.offset,
        zero_tail: None,
        last_position: start.after_position,
        records: 0,
        index: Vec::new(),
        problem: None,
    };
    let mut offset = start.offset;
    let mut last_seen = start.after_position;
    let mut batch_start: Option<u64> = None;
    let mut batch_records = 0u64;
    let mut last_indexed = start.last_indexed_offset;
    while offset < file_len {
        let frame = cursor
            .read_frame(file, offset, file_len, record_bytes_max)
            .map_err(io)?;
        let reason = match frame {
            Err(error) => Some(error.reason().to_owned()),
            Ok((header, _)) if header.position <= last_seen => Some(format!(
                "frame position {} does not follow position {last_seen}",
                header.position
            )),
            Ok((header, _)) if header.is_batch_first() == batch_start.is_some() => {
                Some("frame batch flags do not match the batch structure".to_owned())
            }
            Ok((header, _)) => {
                if header.is_batch_first() {
                    batch_start = Some(offset);
                    batch_records = 0;
                }
                if last_indexed.is_none_or(|last| offset - last >= index_interval_bytes) {
                    scan.index.push(IndexEntry {
                        position: header.position,
                        offset,
                    });
                    last_indexed = Some(offset);
                }
                batch_records += 1;
                last_seen = header.position;
                offset += header.frame_len();
                if header.is_batch_last() {
                    batch_start = None;
                    scan.valid_end = offset;
                    scan.last_position = header.position;
                    scan.records += batch_records;
                }
                None
            }
        };
        if let Some(reason) = reason {
            if batch_start.is_none() && zeros_until(file, offset, file_len).map_err(io)? {
                // Preallocated space: the data ends here (see `Scan::zero_tail`).
                scan.zero_tail = Some(offset);
                break;
            }
            let (mark, later) = later_marks(
                file,
                &mut cursor,
                offset,
                file_len,
                last_seen,
                record_bytes_max,
            )
            .map_err(io)?;
            scan.problem = Some(Problem {
                cut_offset: batch_start.unwrap_or(offset),
                bad_offset: offset,
                reason,
                provably_durable: mark.is_some_and(|mark| mark > last_seen),
                later_valid_frames: later,
            });
            break;
        }
    }
    if scan.problem.is_none()
        && let Some(batch_offset) = batch_start
    {
        scan.problem = Some(Problem {
            cut_offset: batch_offset,
            bad_offset: file_len,
            reason: "unfinished batch at the end of the segment".to_owned(),
            provably_durable: false,
            later_valid_frames: 0,
        });
    }
    // Index entries past the cut would point into dropped bytes.
    scan.index.retain(|entry| entry.offset < scan.valid_end);
    Ok(scan)
}

/// After a bad frame at `bad_offset`, finds the valid frames that follow (walking from one to
/// the next, or byte by byte after garbage) and returns the highest durable mark among them.
pub(crate) fn later_marks(
    file: &dyn StorageFile,
    cursor: &mut Cursor,
    bad_offset: u64,
    file_len: u64,
    last_seen: u64,
    record_bytes_max: u32,
) -> std::io::Result<(Option<u64>, u64)> {
    let mut mark: Option<u64> = None;
    let mut found = 0u64;
    let mut offset = bad_offset + 1;
    while offset + FRAME_HEADER_BYTES as u64 <= file_len {
        match cursor.read_frame(file, offset, file_len, record_bytes_max)? {
            Ok((header, _)) if header.position > last_seen => {
                mark = Some(mark.map_or(header.durable_mark, |max| max.max(header.durable_mark)));
                found += 1;
                offset += header.frame_len();
            }
            Ok(_) | Err(FrameError::Truncated | FrameError::TooLarge) | Err(_) => {
                offset = next_candidate(file, offset, file_len)?;
            }
        }
    }
    Ok((mark, found))
}

/// The most bytes one step of a walk past a bad frame probes for a run of zeros.
const ZERO_PROBE_BYTES: usize = 64 << 10;

/// True when every byte of `[from, to)` is zero (also when the range is empty).
pub(crate) fn zeros_until(file: &dyn StorageFile, from: u64, to: u64) -> std::io::Result<bool> {
    Ok(first_nonzero(file, from, to)?.is_none())
}

/// The offset of the first non-zero byte in `[from, to)`, if any. Reads 64 bytes first (so a
/// walk over garbage stays cheap), then 4 KiB at a time: bounded memory whatever the file.
fn first_nonzero(file: &dyn StorageFile, from: u64, to: u64) -> std::io::Result<Option<u64>> {
    let mut chunk = [0u8; 4096];
    let mut want_max = 64u64;
    let mut at = from;
    while at < to {
        let want = want_max.min(to - at) as usize;
        let slot = chunk.get_mut(..want).unwrap_or(&mut []);
        file.read_exact_at(at, slot)?;
        if let Some(index) = slot.iter().position(|&byte| byte != 0) {
            return Ok(Some(at + index as u64));
        }
        at += want as u64;
        want_max = chunk.len() as u64;
    }
    Ok(None)
}

/// The next offset after `offset` where a valid frame may start. A frame's position (bytes
/// 8..16 of its header) is never zero, so no frame starts where its 28 header bytes are all
/// zero: past a run of zeros (preallocated space, a zeroed page) the search resumes 27 bytes
/// before the run's end instead of trying every offset in it.
pub(crate) fn next_candidate(
    file: &dyn StorageFile,
    offset: u64,
    file_len: u64,
) -> std::io::Result<u64> {
    let next = offset + 1;
    let Some(nonzero) = first_nonzero(file, next, file_len.min(next + ZERO_PROBE_BYTES as u64))?
    else {
        // Zeros up to the probe's end (or the file's): no frame starts before 27 bytes ahead of
        // it; resume there (the next probe continues over the rest of the run).
        let probed_end = file_len.min(next + ZERO_PROBE_BYTES as u64);
        return Ok(next.max(probed_end.saturating_sub(FRAME_HEADER_BYTES as u64 - 1)));
    };
    Ok(next.max(nonzero.saturating_sub(FRAME_HEADER_BYTES as u64 - 1)))
}
