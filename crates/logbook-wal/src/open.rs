//! Opening a WAL directory: listing segments, checking them, running recovery's decisions.
//!
//! Owns: the order of work at open (lock, list, header checks, continuity, scan, cut, salvage)
//! and building the [`Segment`] handles the WAL starts with. Must never: write in a read-only
//! open, or continue past corruption in strict mode.

use crate::error::{Error, Result};
use crate::manifest::{self, Finding, Manifest, ManifestSegment};
use crate::options::{RECORD_BYTES_LIMIT, RecoveryMode, WalOptions};
use crate::recovery::{self, Damage, RecoveryReport, Salvage, Scan, ScanStart, TailCut};
use crate::segment::{self, LazyIndex, SEGMENT_HEADER_BYTES, Segment};
use crate::sidecar::{self, Sidecar};
use crate::storage::{OpenMode, Storage, StorageFile};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How many times a read-only open lists the segments and reads the manifest again when they
/// disagree (a live writer may roll or remove a segment in between), before it reports it.
const READ_ONLY_SET_RETRIES: u32 = 5;

/// The segments found at open, ready for the WAL.
pub(crate) struct Opened {
    pub(crate) segments: Vec<Arc<Segment>>,
    /// Last position stored (0 when the log is empty).
    pub(crate) last_position: u64,
    pub(crate) report: RecoveryReport,
    /// The manifest the segments now match (writable opens; a read-only open returns what it
    /// read, or an empty one). The WAL stores it when `manifest_dirty`, once the active segment
    /// exists.
    pub(crate) manifest: Manifest,
    pub(crate) manifest_dirty: bool,
    /// True when a writable open kept the active segment's checkpoint on disk.
    ///
    /// A checkpoint that covers every byte of the active segment proves two things: those
    /// bytes were synced (a clean close writes it only after its final sync), and nothing
    /// changed the file since (a writer removes it durably before its first write). Such a
    /// checkpoint is kept, so an open followed by no append neither removes it (a directory
    /// fsync) nor rewrites it at close (a file fsync); the writer retires it before its first
    /// write to the segment.
    pub(crate) checkpoint_kept: bool,
}

pub(crate) fn segment_paths(storage: &dyn Storage, wal_dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let names = storage
        .list_dir(wal_dir)
        .map_err(|source| Error::io(wal_dir, source))?;
    let mut found: Vec<(u64, PathBuf)> = names
        .iter()
        .filter_map(|name| Some((segment::parse_file_name(name)?, wal_dir.join(name))))
        .collect();
    found.sort();
    Ok(found)
}

fn read_header(
    file: &dyn StorageFile,
    path: &Path,
    len: u64,
) -> Result<std::result::Result<u64, &'static str>> {
    let mut header = [0u8; SEGMENT_HEADER_BYTES];
    let readable = len.min(SEGMENT_HEADER_BYTES as u64) as usize;
    file.read_exact_at(0, &mut header[..readable])
        .map_err(|source| Error::io(path, source))?;
    Ok(segment::decode_header(&header[..readable]))
}

/// Opens and recovers the segments of `wal_dir`.
pub(crate) fn open_segments(
    storage_arc: &Arc<dyn Storage>,
    wal_dir: &Path,
    options: &WalOptions,
    read_only: bool,
) -> Result<Opened> {
    let storage = storage_arc.as_ref();
    let mut report = RecoveryReport::default();
    if !read_only {
        remove_leftovers(storage, wal_dir)?;
    }
    let salvage = !read_only && options.recovery_mode == RecoveryMode::Salvage;
    let mut attempts = 0;
    let (mut paths, mut loaded) = loop {
        let mut paths = segment_paths(storage, wal_dir)?;
        let loaded = manifest::load(storage, wal_dir)?;
        let checked = match &loaded {
            Some(manifest) => check_segment_set(
                storage,
                wal_dir,
                manifest,
                &mut paths,
                salvage,
                read_only,
                &mut report,
            ),
            None => Ok(()),
        };
        match checked {
            // Beside a live writer, a roll or a removal can land between the listing and the
            // manifest read: look again before calling a segment missing or foreign.
            Err(error) if read_only && attempts < READ_ONLY_SET_RETRIES => {
                tracing::debug!(%error, "segment set changed while opening read-only; again");
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(error) => return Err(error),
            Ok(()) => break (paths, loaded),
        }
    };
    let mode = if read_only {
        OpenMode::Read
    } else {
        OpenMode::ReadWrite
    };
    // Salvage exists to find and cut corruption: it trusts no sidecar, it scans every frame.
    let verify_all =
        options.verify_sealed_segments_on_open || options.recovery_mode == RecoveryMode::Salvage;
    let mut segments: Vec<Arc<Segment>> = Vec::new();
    let mut last_position = 0u64;
    let mut checkpoint_kept = false;
    let mut index = 0;
    while index < paths.len() {
        let (base, path) = paths[index].clone();
        let is_last = index + 1 == paths.len();
        let file = storage
            .open_file(&path, mode)
            .map_err(|source| Error::io(&path, source))?;
        let len = file.len().map_err(|source| Error::io(&path, source))?;
        let header = read_header(file.as_ref(), &path, len)?;
        if read_only
            && let Some((offset, reason)) =
                header_or_order_error(&header, len, is_last, base, last_position)
        {
            // Read-only: the log is known up to this segment; readers fail where it starts.
            report.damage = Some(damage(&path, offset, reason));
            break;
        }
        match header {
            Ok(header_base) if header_base == base => {}
            Ok(header_base) => {
                return Err(Error::corrupted(
                    &path,
                    16,
                    format!("header base position {header_base} does not match the file name"),
                ));
            }
            Err(reason)
                if is_last
                    && !read_only
                    && len <= SEGMENT_HEADER_BYTES as u64
                    && loaded
                        .as_ref()
                        .is_none_or(|manifest| manifest.entry(base).is_none()) =>
            {
                // A crash interrupted the creation of this segment: its header was never synced,
                // so no frame can follow it and nothing acknowledged lives here.
                tracing::warn!(segment = %path.display(), reason, "removing unfinished segment");
                drop(file);
                storage
                    .remove_file(&path)
                    .map_err(|source| Error::io(&path, source))?;
                // Durability: fsync the directory so the removal survives a crash.
                storage
                    .sync_dir(wal_dir)
                    .map_err(|source| Error::io(wal_dir, source))?;
                report.removed_unfinished_segment = Some(path);
                paths.pop();
                continue;
            }
            Err(_) if is_last && read_only && len <= SEGMENT_HEADER_BYTES as u64 => {
                // A writer is creating this segment right now (or crashed doing so).
                paths.pop();
                continue;
            }
            Err(reason) => return Err(Error::corrupted(&path, 0, reason)),
        }
        if base <= last_position {
            return Err(Error::corrupted(
                &path,
                16,
                format!(
                    "segment base position {base} is not above the previous segment's last position {last_position}"
                ),
            ));
        }
        if !is_last
            && !verify_all
            && let Some(sidecar) = load_sidecar(storage, wal_dir, base, len)
        {
            // A sealed segment with a matching sidecar is not scanned: open costs the same
            // however long the history. Its frames are still checked whenever read.
            let lazy = LazyIndex {
                storage: storage_arc.clone(),
                sidecar: wal_dir.join(sidecar::file_name(base)),
                record_bytes_max: RECORD_BYTES_LIMIT,
                index_interval_bytes: options.index_interval_bytes,
            };
            let segment = Segment::new(base, path.clone(), file.clone()).with_lazy_index(lazy);
            segment.set_durable(len, sidecar.last_position);
            segment.add_records(sidecar.records);
            report.segments += 1;
            report.records += sidecar.records;
            last_position = last_position.max(sidecar.last_position);
            segments.push(Arc::new(segment));
            index += 1;
            continue;
        }
        // The active segment's checkpoint (a sidecar written at a clean close): its prefix was
        // synced then, so only what follows is scanned.
        let (checkpoint, lost_checkpoint) = match is_last && !salvage {
            true => match load_checkpoint(storage, wal_dir, base, len) {
                Checkpoint::Prefix(checkpoint) if !verify_all => (Some(checkpoint), None),
                Checkpoint::Prefix(_) | Checkpoint::Unusable => (None, None),
                Checkpoint::LongerThanFile(checkpoint) => (None, Some(checkpoint)),
            },
            false => (None, None),
        };
        let start = match &checkpoint {
            Some(checkpoint) => ScanStart {
                offset: checkpoint.segment_len,
                after_position: if checkpoint.records == 0 {
                    base - 1
                } else {
                    checkpoint.last_position
                },
                last_indexed_offset: checkpoint.entries.last().map(|entry| entry.offset),
            },
            None => ScanStart::fresh(base),
        };
        let mut scan = recovery::scan_segment(
            file.as_ref(),
            len,
            start,
            RECORD_BYTES_LIMIT,
            options.index_interval_bytes,
        )
        .map_err(|error| with_path(error, &path))?;
        if let Some(lost) = lost_checkpoint {
            // Synced bytes that a clean close recorded are gone (the file was cut behind the
            // log's back): the end of the scan is not a torn tail, it is lost records.
            let end = scan.last_position.max(base - 1);
            if lost.last_position > end {
                return Err(Error::LogBehind {
                    reached: lost.last_position,
                    end,
                    evidence: format!(
                        "as the clean-close checkpoint {} records: {} synced bytes, but segment {} has {len}",
                        wal_dir.join(sidecar::file_name(base)).display(),
                        lost.segment_len,
                        path.display(),
                    ),
                });
            }
        }
        report.segments += 1;
        // The checkpoint covers the whole file and nothing followed it: the segment is as the
        // clean close left it (synced, unchanged), so the checkpoint stays true until the
        // writer's first write, which retires it.
        let covers_file = checkpoint
            .as_ref()
            .is_some_and(|checkpoint| checkpoint.segment_len == len && scan.problem.is_none());
        if let Some(checkpoint) = checkpoint {
            report.bytes_scanned += len - checkpoint.segment_len;
            let mut index = checkpoint.entries;
            index.append(&mut scan.index);
            scan.index = index;
            scan.records += checkpoint.records;
        } else {
            report.bytes_scanned += len;
        }
        if !is_last
            && scan.problem.is_none()
            && let Some(at) = scan.zero_tail
        {
            // A roll trims the preallocated zeros of the segment it seals (and syncs the trim)
            // before the next segment exists: zeros at the end of a sealed segment are damage.
            scan.problem = Some(recovery::Problem {
                cut_offset: at,
                bad_offset: at,
                reason: "zero bytes after the last frame".to_owned(),
                provably_durable: false,
                later_valid_frames: 0,
            });
        }
        if is_last && let Some(at) = scan.zero_tail {
            report.preallocated_bytes = len - at;
        }
        let segment = Arc::new(Segment::new(base, path.clone(), file.clone()));
        if let Some(problem) = scan.problem.take() {
            let corrupt = problem.provably_durable || !is_last;
            if read_only {
                if corrupt {
                    // Readers get every record before the damage, then the error.
                    report.damage = Some(damage(&path, problem.bad_offset, problem.reason));
                }
                // Beside a live writer an incomplete tail is normal: stop before it.
            } else if corrupt && options.recovery_mode == RecoveryMode::Strict {
                let reason = if is_last {
                    format!("{} (a later frame proves it was durable)", problem.reason)
                } else {
                    format!("{} (in a sealed segment)", problem.reason)
                };
                return Err(Error::corrupted(&path, problem.bad_offset, reason));
            } else {
                // A cut segment is (or, after salvage, becomes) the last one: its sidecar
                // describes bytes that are about to change.
                remove_active_sidecar(storage, wal_dir, base)?;
                cut(file.as_ref(), &path, problem.cut_offset, len)?;
                if corrupt {
                    if let Some(manifest) = &mut loaded {
                        // Durability: the manifest marks the later segments as being removed
                        // (and lowers how far the log reached) before their files go, so a
                        // crash between the two never looks like missing segments.
                        let kept_end = scan.last_position.max(base - 1);
                        manifest.reached = manifest.reached.min(kept_end);
                        for (later, _) in &paths[index + 1..] {
                            if let Some(entry) = manifest
                                .segments
                                .iter_mut()
                                .find(|entry| entry.base == *later)
                            {
                                entry.removing = true;
                            }
                        }
                        manifest::store(storage, wal_dir, manifest)?;
                    }
                    let removed = remove_later(storage, wal_dir, &paths[index + 1..])?;
                    report.salvage = Some(Salvage {
                        segment: path.clone(),
                        offset: problem.cut_offset,
                        reason: problem.reason,
                        bytes_dropped: len - problem.cut_offset,
                        segments_removed: removed,
                        valid_frames_dropped: problem.later_valid_frames,
                    });
                    paths.truncate(index + 1);
                } else {
                    report.tail_cut = Some(TailCut {
                        segment: path.clone(),
                        offset: problem.cut_offset,
                        bytes_dropped: len - problem.cut_offset,
                        reason: problem.reason,
                    });
                }
            }
        }
        if is_last && !read_only {
            if covers_file {
                checkpoint_kept = true;
            } else {
                // Appends (and any cut above) change this segment: no sidecar of it that
                // describes another length may outlive this open, or a later open could trust
                // a prefix that was rewritten since. Done only once the open cannot fail: a
                // failed open changes nothing.
                remove_active_sidecar(storage, wal_dir, base)?;
            }
        }
        install_scan(&segment, &scan);
        if !is_last && !read_only {
            write_sidecar(storage, wal_dir, &segment);
        }
        report.records += scan.records;
        last_position = last_position.max(scan.last_position);
        segments.push(segment);
        index += 1;
        if report.damage.is_some() {
            break; // Read-only: nothing after the damage is known.
        }
    }
    report.last_position = last_position;
    if let Some(damage) = &mut report.damage {
        damage.last_position = last_position;
    }
    // A segment's base minus one was reached when it was created. A read-only open that
    // stopped at damage does not know where the log ends.
    let end = segments
        .last()
        .map_or(last_position, |last| last_position.max(last.base - 1));
    let end = report.damage.is_none().then_some(end);
    let (manifest, manifest_dirty) = settle_manifest(
        wal_dir,
        loaded,
        &segments,
        end,
        salvage,
        read_only,
        &mut report,
    )?;
    Ok(Opened {
        segments,
        last_position,
        report,
        manifest,
        manifest_dirty,
        checkpoint_kept,
    })
}

/// Compares the manifest with the segment files before anything changes: a missing or
/// unlisted segment fails the open (salvage accepts it and reports it); the leftovers of an
/// interrupted removal are removed by a writable open (and never read by any open).
fn check_segment_set(
    storage: &dyn Storage,
    wal_dir: &Path,
    manifest: &Manifest,
    paths: &mut Vec<(u64, PathBuf)>,
    salvage: bool,
    read_only: bool,
    report: &mut RecoveryReport,
) -> Result<()> {
    let mut files = Vec::with_capacity(paths.len());
    for (base, path) in paths.iter() {
        // Only an unlisted file's length matters (an interrupted roll holds only its header).
        let len = if manifest.entry(*base).is_some() {
            0
        } else {
            storage
                .open_file(path, OpenMode::Read)
                .and_then(|file| file.len())
                .map_err(|source| Error::io(path, source))?
        };
        files.push((*base, len));
    }
    let findings = manifest::compare(manifest, wal_dir, &files);
    if !salvage
        && let Some(error) = findings
            .iter()
            .find_map(|finding| finding_error(wal_dir, finding))
    {
        return Err(error);
    }
    let mut removed_any = false;
    for finding in &findings {
        if let Finding::Leftover { path } = finding {
            paths.retain(|(_, existing)| existing != path);
            if !read_only {
                tracing::warn!(segment = %path.display(), "finishing an interrupted segment removal");
                remove_segment_files(storage, wal_dir, path)?;
                removed_any = true;
            }
        }
    }
    if removed_any {
        // Durability: fsync the directory so the removals survive a crash.
        storage
            .sync_dir(wal_dir)
            .map_err(|source| Error::io(wal_dir, source))?;
    }
    report.manifest_findings = findings;
    Ok(())
}

/// The typed error for a finding that makes a strict open refuse.
fn finding_error(wal_dir: &Path, finding: &Finding) -> Option<Error> {
    match finding {
        Finding::Missing {
            path,
            base,
            last_position,
        } => Some(Error::MissingSegment {
            segment: path.clone(),
            first_position: *base,
            last_position: *last_position,
        }),
        Finding::Unexpected { path } => Some(Error::UnexpectedSegment {
            segment: path.clone(),
            manifest: wal_dir.join(manifest::MANIFEST_FILE_NAME),
        }),
        Finding::Leftover { .. } | Finding::InterruptedRoll { .. } => None,
    }
}

/// Removes a segment file and its sidecar (no directory sync: the caller does it once).
fn remove_segment_files(storage: &dyn Storage, wal_dir: &Path, path: &Path) -> Result<()> {
    storage
        .remove_file(path)
        .map_err(|source| Error::io(path, source))?;
    let sidecar = path
        .file_name()
        .and_then(|name| name.to_str())
        .and_then(segment::parse_file_name)
        .map(|base| wal_dir.join(sidecar::file_name(base)));
    if let Some(sidecar) = sidecar
        && storage.exists(&sidecar)
    {
        storage
            .remove_file(&sidecar)
            .map_err(|source| Error::io(&sidecar, source))?;
    }
    Ok(())
}

/// Checks that the segments still reach the position the manifest recorded, and computes the
/// manifest that describes the segments now (to be stored by a writable open when it changed).
fn settle_manifest(
    wal_dir: &Path,
    loaded: Option<Manifest>,
    segments: &[Arc<Segment>],
    end: Option<u64>,
    salvage: bool,
    read_only: bool,
    report: &mut RecoveryReport,
) -> Result<(Manifest, bool)> {
    let mut reached = loaded.as_ref().map_or(0, |manifest| manifest.reached);
    if let Some(end) = end
        && reached > end
    {
        if !salvage {
            return Err(Error::LogBehind {
                reached,
                end,
                evidence: format!(
                    "as its manifest {} records",
                    wal_dir.join(manifest::MANIFEST_FILE_NAME).display()
                ),
            });
        }
        tracing::warn!(end, reached, "salvage: accepting the loss of the log's end");
        report.positions_lost = Some((end + 1, reached));
        reached = end;
    }
    if read_only {
        return Ok((loaded.unwrap_or_default(), false));
    }
    // Sealed segments were synced before the next one was created: the last base minus one
    // was durable, whatever the manifest says.
    let sealed_end = segments.last().map_or(0, |last| last.base - 1);
    let current = Manifest {
        reached: reached.max(sealed_end),
        segments: segments
            .iter()
            .map(|segment| ManifestSegment {
                base: segment.base,
                compacted_through: loaded
                    .as_ref()
                    .and_then(|manifest| manifest.entry(segment.base))
                    .map_or(0, |entry| entry.compacted_through),
                removing: false,
            })
            .collect(),
    };
    let dirty = loaded.as_ref() != Some(&current);
    report.manifest_created = loaded.is_none();
    Ok((current, dirty))
}

/// The corruption of a segment header or of the segment order that fails a writable open, as
/// (offset, reason); `None` for a valid header in order, and for an unfinished last segment.
fn header_or_order_error(
    header: &std::result::Result<u64, &'static str>,
    len: u64,
    is_last: bool,
    base: u64,
    last_position: u64,
) -> Option<(u64, String)> {
    match header {
        Ok(header_base) if *header_base != base => Some((
            16,
            format!("header base position {header_base} does not match the file name"),
        )),
        Err(_) if is_last && len <= SEGMENT_HEADER_BYTES as u64 => None,
        Err(reason) => Some((0, (*reason).to_owned())),
        Ok(_) if base <= last_position => Some((
            16,
            format!(
                "segment base position {base} is not above the previous segment's last position {last_position}"
            ),
        )),
        Ok(_) => None,
    }
}

/// Damage found by a read-only open (its last position is filled in at the end of the open).
fn damage(segment: &Path, offset: u64, reason: impl Into<String>) -> Damage {
    Damage {
        segment: segment.to_path_buf(),
        offset,
        reason: reason.into(),
        last_position: 0,
    }
}

pub(crate) fn install_scan(segment: &Segment, scan: &Scan) {
    segment.replace_index(scan.index.clone());
    segment.add_records(scan.records);
    segment.set_durable(
        scan.valid_end,
        if scan.records > 0 {
            scan.last_position
        } else {
            0
        },
    );
}

fn with_path(error: Error, path: &Path) -> Error {
    match error {
        Error::Io { source, .. } => Error::io(path, source),
        other => other,
    }
}

/// Truncates a segment at `offset` and makes the truncation durable.
fn cut(file: &dyn StorageFile, path: &Path, offset: u64, len: u64) -> Result<()> {
    tracing::warn!(segment = %path.display(), offset, dropped = len - offset, "cutting log tail");
    file.set_len(offset)
        .map_err(|source| Error::io(path, source))?;
    // Durability: the cut must be on disk before new frames are written over it.
    file.sync_data().map_err(|source| Error::io(path, source))
}

fn remove_later(
    storage: &dyn Storage,
    wal_dir: &Path,
    later: &[(u64, PathBuf)],
) -> Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    for (_, path) in later {
        storage
            .remove_file(path)
            .map_err(|source| Error::io(path, source))?;
        removed.push(path.clone());
    }
    if !removed.is_empty() {
        // Durability: fsync the directory so the removals survive a crash.
        storage
            .sync_dir(wal_dir)
            .map_err(|source| Error::io(wal_dir, source))?;
    }
    Ok(removed)
}

/// The summary of a sealed segment's sidecar, when it exists and matches the segment file.
/// Reads only the sidecar's header (its entries are loaded at the first seek).
fn load_sidecar(storage: &dyn Storage, wal_dir: &Path, base: u64, len: u64) -> Option<Sidecar> {
    let file = storage
        .open_file(&wal_dir.join(sidecar::file_name(base)), OpenMode::Read)
        .ok()?;
    let mut header = [0u8; sidecar::SIDECAR_HEADER_BYTES];
    file.read_exact_at(0, &mut header).ok()?;
    let (summary, entries) = sidecar::decode_header(&header).ok()?;
    let expected_len = entries
        .checked_mul(16)?
        .checked_add(sidecar::SIDECAR_HEADER_BYTES as u64 + 4)?;
    (summary.base == base
        && summary.segment_len == len
        && summary.last_position < u64::MAX
        && file.len().ok()? == expected_len)
        .then_some(summary)
}

/// What the active segment's checkpoint file says about the segment.
enum Checkpoint {
    /// Absent, damaged (its CRC fails) or not about this segment: costs a scan, proves nothing.
    Unusable,
    /// A whole, checked sidecar describing a prefix of the file.
    Prefix(Sidecar),
    /// A whole, checked sidecar describing more synced bytes than the file has: a writer removes
    /// the checkpoint durably before it changes the file, so the file lost synced bytes.
    LongerThanFile(Sidecar),
}

/// Loads the active segment's checkpoint (see [`Checkpoint`]).
fn load_checkpoint(storage: &dyn Storage, wal_dir: &Path, base: u64, len: u64) -> Checkpoint {
    let path = wal_dir.join(sidecar::file_name(base));
    if !storage.exists(&path) {
        return Checkpoint::Unusable;
    }
    let Ok(bytes) = segment::read_all(storage, &path) else {
        return Checkpoint::Unusable;
    };
    let Ok(checkpoint) = sidecar::decode(&bytes) else {
        return Checkpoint::Unusable;
    };
    let well_formed = checkpoint.base == base
        && checkpoint.segment_len >= SEGMENT_HEADER_BYTES as u64
        && checkpoint.last_position < u64::MAX
        && checkpoint
            .entries
            .last()
            .is_none_or(|entry| entry.offset < checkpoint.segment_len);
    match (well_formed, checkpoint.segment_len <= len) {
        (false, _) => Checkpoint::Unusable,
        (true, true) => Checkpoint::Prefix(checkpoint),
        (true, false) if checkpoint.records > 0 => Checkpoint::LongerThanFile(checkpoint),
        (true, false) => Checkpoint::Unusable,
    }
}

/// Removes the sidecar of the segment about to receive appends, durably (directory fsync).
pub(crate) fn remove_active_sidecar(
    storage: &dyn Storage,
    wal_dir: &Path,
    base: u64,
) -> Result<()> {
    let path = wal_dir.join(sidecar::file_name(base));
    if !storage.exists(&path) {
        return Ok(());
    }
    storage
        .remove_file(&path)
        .map_err(|source| Error::io(&path, source))?;
    // Durability: the removal must be on disk before the segment changes.
    storage
        .sync_dir(wal_dir)
        .map_err(|source| Error::io(wal_dir, source))
}

/// Writes the sidecar of a segment (temp file, sync, rename): sealed, or the active one at close. Derived data: a failure is
/// logged, never fatal (the next open scans the segment instead).
pub(crate) fn write_sidecar(storage: &dyn Storage, wal_dir: &Path, segment: &Segment) {
    let sidecar = Sidecar {
        base: segment.base,
        segment_len: segment.durable_len(),
        last_position: segment.last_position(),
        records: segment.records(),
        entries: segment.index_entries(),
    };
    let bytes = sidecar::encode(&sidecar);
    let path = wal_dir.join(sidecar::file_name(segment.base));
    let temp = wal_dir.join(format!("{}.tmp", sidecar::file_name(segment.base)));
    let result = (|| {
        if storage.exists(&temp) {
            storage.remove_file(&temp)?;
        }
        let file = storage.open_file(&temp, OpenMode::CreateNew)?;
        file.write_all_at(0, &bytes)?;
        file.sync_data()?;
        storage.rename(&temp, &path)
    })();
    match result {
        Ok(()) => segment.set_has_sidecar(),
        Err(error) => {
            tracing::warn!(sidecar = %path.display(), %error, "could not write a segment sidecar");
        }
    }
}

/// Removes temp files and sidecars whose segment is gone (left by a crash mid-write or
/// mid-truncation).
fn remove_leftovers(storage: &dyn Storage, wal_dir: &Path) -> Result<()> {
    let names = storage
        .list_dir(wal_dir)
        .map_err(|source| Error::io(wal_dir, source))?;
    let segments: Vec<u64> = names
        .iter()
        .filter_map(|name| segment::parse_file_name(name))
        .collect();
    for name in &names {
        let orphan_sidecar = name
            .strip_suffix(".idx")
            .and_then(|digits| segment::parse_file_name(&format!("{digits}.seg")))
            .is_some_and(|base| !segments.contains(&base));
        if name.ends_with(".tmp") || orphan_sidecar {
            let path = wal_dir.join(name);
            storage
                .remove_file(&path)
                .map_err(|source| Error::io(&path, source))?;
        }
    }
    Ok(())
}
