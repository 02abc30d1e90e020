//! Keep-intact repair: dropping only the damaged frames of a log and keeping every intact frame
//! after them (`logbook repair --keep-intact`).
//!
//! Owns: scanning every segment past its bad frames (resynchronising on the next valid frame),
//! deciding which byte ranges are damaged regions, rewriting each damaged segment without them
//! (positions, durable marks and batch flags of the kept frames unchanged: kept bytes are copied
//! verbatim) through the temp file, sync, rename and directory sync that compaction uses, and the
//! [`KeepIntactReport`] that says exactly which positions and byte ranges were given up. Must
//! never: run unless the operator asked for it, run beside a writer (it holds the directory
//! lock), drop a frame that is part of a whole, valid batch, keep part of a batch, remove or
//! rename a segment file other than by replacing it with its rewrite, or touch a tail that is
//! not provably durable (the open after it cuts that, as always).
//!
//! **Resynchronising.** After a bad frame whose last valid predecessor has position `q`, the
//! scan walks byte by byte (as `recovery::later_marks` does) to the next offset that holds a
//! valid frame (header checks and CRC-32) with a position above `q`, and that the next valid
//! frame after it does not contradict (it must have a higher position: a stray match with a
//! high position, such as a frame copied inside a damaged frame's payload, would otherwise hide
//! every real frame after it). Frames are
//! self-delimiting, so from there the walk goes frame to frame again. A frame found that way
//! that is not the first of its batch belongs to a batch the damage broke: it is dropped with
//! that batch (batches are atomic) and listed in [`DamagedRegion::intact_frames_dropped`]. The
//! residual risk is the durable mark proof's: a damaged region that happens to decode as a
//! valid frame (about 2^-32 per offset) with a position that fits between its neighbours.
//!
//! **The last segment.** A bad frame there is corruption only when a later frame's durable
//! mark proves it was durable (`docs/format.md`, "The durable mark"); otherwise it and what
//! follows are an unsynced tail, which is left as it is for the next open to cut.

use crate::cursor::Cursor;
use crate::error::Error;
use crate::frame::{FRAME_HEADER_BYTES, FrameHeader};
use crate::open;
use crate::options::{RECORD_BYTES_LIMIT, WalOptions};
use crate::recovery;
use crate::rewrite::replace_segment_file;
use crate::segment::{self, SEGMENT_HEADER_BYTES};
use crate::storage::{OpenMode, Storage, StorageFile};
use crate::wal::{LOCK_FILE_NAME, WAL_DIR_NAME, Wal};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One damaged region that a keep-intact repair dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedRegion {
    /// The segment file.
    pub segment: PathBuf,
    /// The first byte dropped: the bad frame, or the first frame of the batch it broke.
    pub start: u64,
    /// The first byte kept after the region (the file's length when nothing after it is kept).
    pub end: u64,
    /// The offset of the first bad frame in the region.
    pub bad_offset: u64,
    /// What is wrong there.
    pub reason: String,
    /// The last position kept before the region (the segment's base - 1 when there is none in
    /// it, 0 at the start of the log).
    pub after_position: u64,
    /// The first position kept after the region, in this or a later segment (`None`: nothing
    /// intact follows it).
    pub next_position: Option<u64>,
    /// Valid frames dropped because the damage broke their batch (batches are atomic), by
    /// position. Empty when the damage hit whole batches only.
    pub intact_frames_dropped: Vec<u64>,
}

impl DamagedRegion {
    /// The positions given up, inclusive: every position between the last one kept before the
    /// region and the first one kept after it (`None` as the end: every position after it).
    /// Some of them may never have existed (compaction leaves gaps).
    pub fn positions_given_up(&self) -> (u64, Option<u64>) {
        let first = self.after_position + 1;
        (first, self.next_position.map(|next| next - 1))
    }

    /// Bytes dropped.
    pub fn bytes(&self) -> u64 {
        self.end - self.start
    }
}

/// What a keep-intact repair did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeepIntactReport {
    /// Segment files scanned.
    pub segments: usize,
    /// Records kept, in whole batches.
    pub records_kept: u64,
    /// The damaged regions dropped, in file and offset order.
    pub regions: Vec<DamagedRegion>,
    /// The segment files rewritten without their damaged regions.
    pub segments_rewritten: Vec<PathBuf>,
}

impl KeepIntactReport {
    /// True when the repair dropped anything.
    pub fn drops_anything(&self) -> bool {
        !self.regions.is_empty()
    }
}

impl Wal {
    /// Drops only the damaged frames of the log in `dir` and keeps every intact frame after
    /// them: each segment with corruption (anywhere in a sealed segment; in the last one when a
    /// later durable mark proves it) is rewritten without its damaged regions. Takes the
    /// directory lock (`Error::Locked` beside a writer) and holds it while `while_locked` runs
    /// (the caller removes its derived data describing the dropped positions there), then
    /// releases it. A torn tail of the last segment and an unfinished last segment are left for
    /// the next open to cut. Invalid segment headers and segments out of order fail with
    /// `Error::Corrupted`, changing nothing. All I/O goes through `storage`: a storage that
    /// keeps writes in memory makes it a dry run.
    pub fn repair_keep_intact<E: From<Error>>(
        storage: Arc<dyn Storage>,
        dir: &Path,
        options: &WalOptions,
        while_locked: impl FnOnce(&KeepIntactReport) -> std::result::Result<(), E>,
    ) -> std::result::Result<KeepIntactReport, E> {
        options.validate()?;
        let storage = storage.as_ref();
        let wal_dir = dir.join(WAL_DIR_NAME);
        let lock_path = dir.join(LOCK_FILE_NAME);
        let _lock = storage
            .try_lock(&lock_path)
            .map_err(|source| Error::io(&lock_path, source))?
            .ok_or(Error::Locked { path: lock_path })?;
        let paths = open::segment_paths(storage, &wal_dir)?;
        let mut plans = Vec::new();
        let mut last_kept = 0u64;
        for (index, (base, path)) in paths.iter().enumerate() {
            let is_last = index + 1 == paths.len();
            let file = storage
                .open_file(path, OpenMode::Read)
                .map_err(|source| Error::io(path, source))?;
            let len = file.len().map_err(|source| Error::io(path, source))?;
            let mut header = [0u8; SEGMENT_HEADER_BYTES];
            let readable = len.min(SEGMENT_HEADER_BYTES as u64) as usize;
            file.read_exact_at(0, &mut header[..readable])
                .map_err(|source| Error::io(path, source))?;
            match segment::decode_header(&header[..readable]) {
                Ok(found) if found == *base && *base > last_kept => {}
                Ok(_) => {
                    let reason = "segment header base differs from the file name, or is not above \
                                  the previous segment's last position (repair cannot fix headers)";
                    return Err(Error::corrupted(path, 16, reason).into());
                }
                // An unfinished last segment: the open after the repair removes it.
                Err(_) if is_last && len <= SEGMENT_HEADER_BYTES as u64 => continue,
                Err(reason) => return Err(Error::corrupted(path, 0, reason).into()),
            }
            let after = last_kept.max(base - 1);
            let plan = plan_segment(file.as_ref(), path, len, after, is_last)
                .map_err(|source| Error::io(path, source))?;
            last_kept = plan.last_kept.unwrap_or(last_kept);
            plans.push((*base, path.clone(), file, len, header, plan));
        }
        let mut report = KeepIntactReport {
            segments: plans.len(),
            ..KeepIntactReport::default()
        };
        for (_, _, _, _, _, plan) in &plans {
            // A region at the end of a segment is followed by the next kept position anywhere.
            if let Some(first) = plan.first_kept {
                for region in report.regions.iter_mut().rev() {
                    if region.next_position.is_some() {
                        break;
                    }
                    region.next_position = Some(first);
                }
            }
            report.records_kept += plan.records;
            report.regions.extend(plan.regions.iter().cloned());
        }
        for (base, path, file, len, header, plan) in &plans {
            if plan.regions.is_empty() {
                continue;
            }
            let bytes = kept_bytes(file.as_ref(), *len, header, &plan.kept)
                .map_err(|source| Error::io(path, source))?;
            let pace = options.rewrite_bytes_per_second;
            replace_segment_file(storage, &wal_dir, *base, path, &bytes, pace)?;
            report.segments_rewritten.push(path.clone());
        }
        while_locked(&report)?;
        Ok(report)
    }
}

/// What to keep of one segment.
#[derive(Debug, Default)]
struct Plan {
    /// Byte ranges kept after the header, in order.
    kept: Vec<(u64, u64)>,
    regions: Vec<DamagedRegion>,
    records: u64,
    first_kept: Option<u64>,
    last_kept: Option<u64>,
}

/// A batch under way: its first frame's offset and its positions so far.
type OpenBatch = (u64, Vec<u64>);

/// Walks a segment's frames past bad ones and plans what to keep.
fn plan_segment(
    file: &dyn StorageFile,
    path: &Path,
    len: u64,
    after: u64,
    is_last: bool,
) -> std::io::Result<Plan> {
    let mut cursor = Cursor::new();
    let mut plan = Plan::default();
    let mut offset = SEGMENT_HEADER_BYTES as u64;
    let mut kept_from = offset;
    let mut last_seen = after;
    let mut last_kept = after;
    let mut batch: Option<OpenBatch> = None;
    while offset < len {
        let verdict = match cursor.read_frame(file, offset, len, RECORD_BYTES_LIMIT)? {
            Err(error) => Err(error.reason().to_owned()),
            Ok((header, _)) if header.position <= last_seen => Err(format!(
                "frame position {} does not follow position {last_seen}",
                header.position
            )),
            Ok((header, _)) if header.is_batch_first() == batch.is_some() => {
                Err("frame batch flags do not match the batch structure".to_owned())
            }
            Ok((header, _)) => Ok(header),
        };
        let reason = match verdict {
            Ok(header) => {
                if header.is_batch_first() {
                    batch = Some((offset, Vec::new()));
                }
                let positions = batch.get_or_insert_with(|| (offset, Vec::new()));
                positions.1.push(header.position);
                last_seen = header.position;
                offset += header.frame_len();
                if header.is_batch_last()
                    && let Some((_, positions)) = batch.take()
                {
                    plan.records += positions.len() as u64;
                    let first = positions.first().copied().unwrap_or(header.position);
                    plan.first_kept.get_or_insert(first);
                    for region in plan.regions.iter_mut().rev() {
                        if region.next_position.is_some() {
                            break;
                        }
                        region.next_position = Some(first);
                    }
                    last_kept = header.position;
                    plan.last_kept = Some(last_kept);
                }
                continue;
            }
            Err(reason) => reason,
        };
        if is_last {
            let (mark, _) = recovery::later_marks(
                file,
                &mut cursor,
                offset,
                len,
                last_seen,
                RECORD_BYTES_LIMIT,
            )?;
            if mark.is_none_or(|mark| mark <= last_seen) {
                break; // Not provably durable: an unsynced tail, for the open to cut.
            }
        }
        let (start, mut dropped) = batch.take().unwrap_or((offset, Vec::new()));
        let (end, mut more, resumed_after) = resync(file, &mut cursor, offset, len, last_seen)?;
        dropped.append(&mut more);
        plan.kept.push((kept_from, start));
        plan.regions.push(DamagedRegion {
            segment: path.to_path_buf(),
            start,
            end,
            bad_offset: offset,
            reason,
            after_position: last_kept,
            next_position: None,
            intact_frames_dropped: dropped,
        });
        kept_from = end;
        last_seen = resumed_after;
        offset = end;
    }
    if offset >= len
        && !is_last
        && let Some((start, dropped)) = batch.take()
    {
        // A sealed segment never ends inside a batch: its last frame was lost.
        plan.kept.push((kept_from, start));
        plan.regions.push(DamagedRegion {
            segment: path.to_path_buf(),
            start,
            end: len,
            bad_offset: len,
            reason: "unfinished batch at the end of a sealed segment".to_owned(),
            after_position: last_kept,
            next_position: None,
            intact_frames_dropped: dropped,
        });
        kept_from = len;
    }
    plan.kept.push((kept_from, len));
    plan.kept.retain(|(from, to)| from < to);
    Ok(plan)
}

/// From a bad frame at `bad`, finds where the next whole batch starts. Returns that offset
/// (`len` when none), the positions of valid frames skipped on the way (later frames of the
/// broken batch), and the last position seen.
fn resync(
    file: &dyn StorageFile,
    cursor: &mut Cursor,
    bad: u64,
    len: u64,
    mut last_seen: u64,
) -> std::io::Result<(u64, Vec<u64>, u64)> {
    let mut dropped = Vec::new();
    let mut from = bad + 1;
    while let Some((offset, header)) = next_valid_frame(file, cursor, from, len, last_seen)? {
        if header.is_batch_first() {
            return Ok((offset, dropped, last_seen));
        }
        dropped.push(header.position);
        last_seen = header.position;
        from = offset + header.frame_len();
    }
    Ok((len, dropped, last_seen))
}

/// The first offset at or after `from` holding a valid frame above `last_seen` that the next
/// valid frame after it does not contradict (its position must be higher: a stray match with a
/// high position, say a frame copied inside a damaged frame's payload, would otherwise hide
/// every real frame after it).
fn next_valid_frame(
    file: &dyn StorageFile,
    cursor: &mut Cursor,
    from: u64,
    len: u64,
    last_seen: u64,
) -> std::io::Result<Option<(u64, FrameHeader)>> {
    let mut offset = from;
    while let Some((found, header)) = first_frame_above(file, cursor, offset, len, last_seen)? {
        let next = first_frame_above(file, cursor, found + header.frame_len(), len, last_seen)?;
        if next.is_none_or(|(_, following)| following.position > header.position) {
            return Ok(Some((found, header)));
        }
        offset = found + 1;
    }
    Ok(None)
}

/// The first offset at or after `from` holding a valid frame with a position above
/// `last_seen`, walking byte by byte (a run of zeros at once: no frame starts inside it).
fn first_frame_above(
    file: &dyn StorageFile,
    cursor: &mut Cursor,
    from: u64,
    len: u64,
    last_seen: u64,
) -> std::io::Result<Option<(u64, FrameHeader)>> {
    let mut offset = from;
    while offset + FRAME_HEADER_BYTES as u64 <= len {
        if let Ok((header, _)) = cursor.read_frame(file, offset, len, RECORD_BYTES_LIMIT)?
            && header.position > last_seen
        {
            return Ok(Some((offset, header)));
        }
        offset = recovery::next_candidate(file, offset, len)?;
    }
    Ok(None)
}

/// The segment's header followed by its kept byte ranges.
fn kept_bytes(
    file: &dyn StorageFile,
    len: u64,
    header: &[u8; SEGMENT_HEADER_BYTES],
    kept: &[(u64, u64)],
) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::with_capacity(len as usize);
    bytes.extend_from_slice(header);
    for &(from, to) in kept {
        let at = bytes.len();
        bytes.resize(at + (to - from) as usize, 0);
        if let Some(slot) = bytes.get_mut(at..) {
            file.read_exact_at(from, slot)?;
        }
    }
    Ok(bytes)
}
