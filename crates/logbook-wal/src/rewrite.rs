//! Rewriting a sealed segment without some of its records (compaction's mechanism).
//!
//! Owns: copying the kept records of a sealed segment into a temp file at their original
//! positions, syncing it, and swapping it in atomically (rename + directory sync), or removing
//! the segment when nothing is kept. Must never: touch the active segment, hold the writer lock
//! while copying (appends carry on), renumber a record, or change a kept payload's bytes.
//!
//! Each kept record is re-framed as a batch of its own (a batch that lost some records to
//! compaction cannot stay a batch), with its original position and durable mark. Readers that
//! hold the old segment keep reading the old file; new readers see the new one.

use crate::cursor::Cursor;
use crate::error::{Error, Result};
use crate::frame::{self, FLAG_BATCH_FIRST, FLAG_BATCH_LAST};
use crate::segment::{self, IndexEntry, SEGMENT_HEADER_BYTES, Segment};
use crate::storage::{OpenMode, Storage, StorageFile};
use crate::wal::{Inner, Wal};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Bytes of a rewritten segment written between two syncs of its temp file (64 KiB).
pub const REWRITE_SYNC_BYTES: usize = 64 << 10;

/// What rewriting one segment did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewriteReport {
    /// The segment file.
    pub segment: PathBuf,
    /// Records kept.
    pub records_kept: u64,
    /// Records dropped.
    pub records_dropped: u64,
    /// File size before.
    pub bytes_before: u64,
    /// File size after (0 when removed).
    pub bytes_after: u64,
    /// True when nothing was kept and the file was removed.
    pub removed: bool,
}

impl Wal {
    /// Seals the active segment (if it holds any record) and starts a new one, so everything
    /// appended so far can be compacted. Returns the sealed segment's base, if any.
    pub fn seal_active(&self) -> Result<Option<u64>> {
        self.inner().seal_active()
    }

    /// Rewrites the sealed segment starting at `base`, keeping the records for which `keep`
    /// returns true (given position and payload). Nothing is written when every record is
    /// kept. Appends, reads and subscriptions carry on meanwhile.
    pub fn rewrite_segment(
        &self,
        base: u64,
        keep: &mut dyn FnMut(u64, &[u8]) -> bool,
    ) -> Result<RewriteReport> {
        let inner = self.inner();
        let _compaction = inner.compaction_lock();
        let segment = inner.sealed_segment(base)?;
        let bytes_before = segment.durable_len();
        let mut report = RewriteReport {
            segment: segment.path.clone(),
            records_kept: 0,
            records_dropped: 0,
            bytes_before,
            bytes_after: bytes_before,
            removed: false,
        };
        let mut out = Vec::with_capacity(bytes_before as usize);
        out.extend_from_slice(&segment::encode_header(base));
        let mut index = Vec::new();
        let mut last_indexed: Option<u64> = None;
        let mut last_kept = 0;
        let mut cursor = Cursor::new();
        let mut offset = SEGMENT_HEADER_BYTES as u64;
        let record_max = crate::options::RECORD_BYTES_LIMIT;
        while offset < bytes_before {
            let frame = cursor
                .read_frame(segment.file.as_ref(), offset, bytes_before, record_max)
                .map_err(|source| Error::io(&segment.path, source))?;
            let (header, payload) =
                frame.map_err(|error| Error::corrupted(&segment.path, offset, error.reason()))?;
            offset += header.frame_len();
            if !keep(header.position, payload) {
                report.records_dropped += 1;
                continue;
            }
            let at = out.len() as u64;
            if last_indexed.is_none_or(|last| at - last >= inner.options.index_interval_bytes) {
                index.push(IndexEntry {
                    position: header.position,
                    offset: at,
                });
                last_indexed = Some(at);
            }
            let flags = FLAG_BATCH_FIRST | FLAG_BATCH_LAST;
            frame::encode_frame(
                &mut out,
                header.position,
                header.durable_mark,
                flags,
                payload,
            );
            report.records_kept += 1;
            last_kept = header.position;
        }
        if report.records_dropped == 0 {
            return Ok(report);
        }
        if report.records_kept == 0 {
            inner.remove_sealed(&segment)?;
            report.bytes_after = 0;
            report.removed = true;
            return Ok(report);
        }
        report.bytes_after = out.len() as u64;
        let replacement = inner.swap_segment(&segment, &out)?;
        replacement.replace_index(index);
        replacement.set_durable(out.len() as u64, last_kept);
        replacement.add_records(report.records_kept);
        inner.install_replacement(&segment, replacement);
        Ok(report)
    }
}

impl Inner {
    /// Writes `bytes` to a temp file, syncs it and renames it over `segment`'s file; returns the
    /// handle of the new file (not yet in the segment list).
    fn swap_segment(&self, segment: &Segment, bytes: &[u8]) -> Result<Arc<Segment>> {
        let pace = self.options.rewrite_bytes_per_second;
        let file = replace_segment_file(
            self.storage(),
            self.wal_dir(),
            segment.base,
            &segment.path,
            bytes,
            pace,
        )?;
        Ok(Arc::new(Segment::new(
            segment.base,
            segment.path.clone(),
            file,
        )))
    }
}

/// Replaces the segment file at `path` (base `base`) with `bytes`: a temp file written and
/// synced a slice at a time (paced at `pace` bytes per second, 0 for no pacing), the segment's
/// sidecar removed, the temp file renamed over the segment, the directory synced. Returns the
/// new file. Compaction and `Wal::repair_keep_intact` share it.
/// Creates `temp` anew for a replacement write, removing a stale one a crash left behind.
pub(crate) fn fresh_temp_file(storage: &dyn Storage, temp: &Path) -> Result<Arc<dyn StorageFile>> {
    if storage.exists(temp) {
        storage
            .remove_file(temp)
            .map_err(|source| Error::io(temp, source))?;
    }
    storage
        .open_file(temp, OpenMode::CreateNew)
        .map_err(|source| Error::io(temp, source))
}

pub(crate) fn replace_segment_file(
    storage: &dyn Storage,
    wal_dir: &Path,
    base: u64,
    path: &Path,
    bytes: &[u8],
    pace: u64,
) -> Result<Arc<dyn StorageFile>> {
    let temp = wal_dir.join(format!("{}.tmp", segment::file_name(base)));
    let file = fresh_temp_file(storage, &temp)?;
    // Written and synced a slice at a time: the appenders' fsyncs share the disk (and, on
    // ext4, the journal commit) with this file, so its dirty bytes must never pile up into
    // one long flush that every append would wait behind.
    // Paced at `rewrite_bytes_per_second`: the gaps leave the disk to the appenders.
    let started = std::time::Instant::now();
    let mut offset = 0usize;
    for slice in bytes.chunks(REWRITE_SYNC_BYTES) {
        file.write_all_at(offset as u64, slice)
            .map_err(|source| Error::io(&temp, source))?;
        // Durability: the new contents are on disk before the name points at them.
        file.sync_data()
            .map_err(|source| Error::io(&temp, source))?;
        offset += slice.len();
        if pace > 0 {
            let due = std::time::Duration::from_secs_f64(offset as f64 / pace as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
    debug_assert_eq!(offset, bytes.len());
    // The old sidecar describes the old file; drop it first (a stale one would be ignored
    // anyway, since its length no longer matches).
    let sidecar = wal_dir.join(crate::sidecar::file_name(base));
    if storage.exists(&sidecar) {
        storage
            .remove_file(&sidecar)
            .map_err(|source| Error::io(&sidecar, source))?;
    }
    storage
        .rename(&temp, path)
        .map_err(|source| Error::io(path, source))?;
    // Durability: fsync the directory so the swap survives a crash.
    storage
        .sync_dir(wal_dir)
        .map_err(|source| Error::io(wal_dir, source))?;
    Ok(file)
}
