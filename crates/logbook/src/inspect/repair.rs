//! `repair`: the explicit salvage of a damaged log, reporting exactly what it drops.
//!
//! Owns: opening the WAL with [`RecoveryMode::Salvage`] through a storage wrapper that reads
//! every byte a cut or a removal is about to drop and lists the frames in it, so the report is
//! what the WAL itself did, not a guess. A dry run uses the same wrapper with every write kept
//! in memory: the same code decides, nothing changes on disk. Segment sidecars are hidden from
//! the open so every segment is scanned (a sidecar would spare a sealed segment the scan that
//! finds its corruption); an applied repair rewrites them. A salvage that drops durable events
//! also removes the derived data that describes them: snapshots above the new end, and the
//! stream index (rebuilt at the next open). The keep-intact mode ([`repair_keep_intact`]) first
//! runs `Wal::repair_keep_intact` through the same wrapper (so a dry run rewrites in memory
//! only), removing the snapshots that include a given-up position and the stream index while it
//! holds the directory lock, then a strict open cuts a torn tail as usual. Must never: write in
//! a dry run, or run beside a live writer (an applied repair takes the directory lock like any
//! writer).

use super::check_log_dir;
use super::scan::{FrameSummary, FrameWalker, Walk, io_error, read_all, summary};
use crate::error::Result;
use logbook_compaction::SnapshotStore;
use logbook_wal::segment::{self, SEGMENT_HEADER_BYTES};
use logbook_wal::storage::{LockGuard, OpenMode, StorageFile};
use logbook_wal::{
    FileStorage, KeepIntactReport, RecoveryMode, RecoveryReport, Storage, SyncPolicy, Wal,
    WalOptions,
};
use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// Whether [`repair`] changes anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepairMode {
    /// Report what would be dropped; change nothing.
    DryRun,
    /// Cut and remove, as reported.
    Apply,
}

/// A valid frame that the repair drops (it lies after the cut, or in a removed segment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppedFrame {
    /// The segment file.
    pub file: PathBuf,
    /// Its byte offset in the file.
    pub offset: u64,
    /// The frame.
    pub frame: FrameSummary,
}

/// What a repair did (or, in a dry run, would do).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairReport {
    /// The mode it ran in.
    pub mode: RepairMode,
    /// The WAL's recovery report: tail cut, salvage, removed unfinished segment.
    pub recovery: RecoveryReport,
    /// Every valid frame dropped, in file and offset order.
    pub dropped_frames: Vec<DroppedFrame>,
    /// Snapshots of a state beyond the new end of the log, removed: once new events reuse
    /// the dropped positions, such a snapshot would describe events that are gone.
    pub snapshots_removed: Vec<PathBuf>,
    /// The stream index directory, removed after a salvage dropped durable events it indexed
    /// (derived data: the next open rebuilds it).
    pub index_removed: Option<PathBuf>,
    /// A keep-intact repair ([`repair_keep_intact`]): the damaged regions dropped, each with
    /// its byte range and the positions given up. `None` for a cut ([`repair`]).
    pub kept_intact: Option<KeepIntactReport>,
}

impl RepairReport {
    /// True when the repair drops bytes or files.
    pub fn drops_anything(&self) -> bool {
        let recovery = &self.recovery;
        recovery.tail_cut.is_some()
            || recovery.salvage.is_some()
            || recovery.positions_lost.is_some()
            || recovery
                .manifest_findings
                .iter()
                .any(logbook_wal::manifest::Finding::is_error)
            || recovery.removed_unfinished_segment.is_some()
            || !self.dropped_frames.is_empty()
            || !self.snapshots_removed.is_empty()
            || self.index_removed.is_some()
            || self
                .kept_intact
                .as_ref()
                .is_some_and(KeepIntactReport::drops_anything)
    }
}

/// Salvages the log in `dir` on the real file system.
pub fn repair(dir: impl AsRef<Path>, mode: RepairMode) -> Result<RepairReport> {
    repair_with_storage(Arc::new(FileStorage::new()), dir.as_ref(), mode)
}

/// [`repair`] on any storage.
pub fn repair_with_storage(
    storage: Arc<dyn Storage>,
    dir: &Path,
    mode: RepairMode,
) -> Result<RepairReport> {
    run(storage, dir, mode, false)
}

/// Repairs the log in `dir` on the real file system keeping every intact frame: drops only the
/// damaged regions (a partly damaged batch whole) and keeps the frames after them, at their
/// positions (`Wal::repair_keep_intact`); then cuts a torn tail as any open would. Snapshots
/// that include a given-up position and the stream index are removed (derived data).
pub fn repair_keep_intact(dir: impl AsRef<Path>, mode: RepairMode) -> Result<RepairReport> {
    repair_keep_intact_with_storage(Arc::new(FileStorage::new()), dir.as_ref(), mode)
}

/// [`repair_keep_intact`] on any storage.
pub fn repair_keep_intact_with_storage(
    storage: Arc<dyn Storage>,
    dir: &Path,
    mode: RepairMode,
) -> Result<RepairReport> {
    run(storage, dir, mode, true)
}

fn run(
    storage: Arc<dyn Storage>,
    dir: &Path,
    mode: RepairMode,
    keep_intact: bool,
) -> Result<RepairReport> {
    check_log_dir(storage.as_ref(), dir)?;
    let recording = Arc::new(RepairStorage {
        real: storage.clone(),
        apply: mode == RepairMode::Apply,
        created: Mutex::new(HashMap::new()),
        dropped: Arc::new(Mutex::new(Vec::new())),
    });
    let apply = mode == RepairMode::Apply;
    let mut options = WalOptions {
        sync_policy: SyncPolicy::Always,
        recovery_mode: RecoveryMode::Salvage,
        ..WalOptions::default()
    };
    let mut given_up = (Vec::new(), None);
    let mut kept_intact = None;
    if keep_intact {
        let report = Wal::repair_keep_intact(recording.clone(), dir, &options, |report| {
            // Under the directory lock: no writer opens the log while snapshots and the index
            // still describe the given-up positions.
            let first_given_up = report.regions.iter().map(|region| region.after_position);
            if let Some(after) = first_given_up.min() {
                given_up = remove_derived(&storage, dir, after, true, apply)?;
            }
            Ok::<(), crate::Error>(())
        })?;
        kept_intact = Some(report);
        // What is left to do is an ordinary open's: cut a torn tail. Corruption left now
        // would be a bug of the repair: refuse rather than cut.
        options.recovery_mode = RecoveryMode::Strict;
    }
    let (wal, recovery) = Wal::open_with_storage(recording.clone(), dir, options)?;
    // Still holding the directory lock: no writer can open the log before the derived data
    // that describes dropped events is gone.
    // Positions lost with a missing segment: snapshots from its base on include their effects.
    let first_missing = recovery
        .manifest_findings
        .iter()
        .filter_map(|finding| match finding {
            logbook_wal::manifest::Finding::Missing { base, .. } => Some(*base),
            _ => None,
        })
        .min();
    let kept_to = first_missing.map_or(recovery.last_position, |base| {
        recovery.last_position.min(base - 1)
    });
    let index =
        recovery.salvage.is_some() || recovery.positions_lost.is_some() || first_missing.is_some();
    let derived = remove_derived(&storage, dir, kept_to, index, apply);
    wal.close()?;
    let (mut snapshots_removed, mut index_removed) = derived?;
    snapshots_removed.extend(given_up.0);
    snapshots_removed.sort();
    snapshots_removed.dedup();
    index_removed = index_removed.or(given_up.1);
    let mut dropped_frames = lock(&recording.dropped).clone();
    dropped_frames.sort_by(|a, b| (&a.file, a.offset).cmp(&(&b.file, b.offset)));
    Ok(RepairReport {
        mode,
        recovery,
        dropped_frames,
        snapshots_removed,
        index_removed,
        kept_intact,
    })
}

/// The derived data a repair makes wrong: snapshots above `kept_to` (the new end of the log
/// after a cut, the last position before the first given-up one after a keep-intact repair),
/// and, with `index`, the stream index (durable events it indexed were dropped). Removes them
/// when `apply`.
fn remove_derived(
    storage: &Arc<dyn Storage>,
    dir: &Path,
    kept_to: u64,
    index: bool,
    apply: bool,
) -> Result<(Vec<PathBuf>, Option<PathBuf>)> {
    let store = SnapshotStore::new(storage.clone(), dir);
    let stale: Vec<PathBuf> = store
        .list()?
        .into_iter()
        .filter(|snapshot| snapshot.position > kept_to)
        .map(|snapshot| snapshot.path)
        .collect();
    let index_dir = dir.join(INDEX_DIR_NAME);
    let index = (index && storage.exists(&index_dir)).then_some(index_dir);
    if !apply {
        return Ok((stale, index));
    }
    for path in &stale {
        storage
            .remove_file(path)
            .map_err(|source| io_error(path, source))?;
    }
    if !stale.is_empty() {
        // Durability: fsync the directory so the removals survive a crash.
        storage
            .sync_dir(store.dir())
            .map_err(|source| io_error(store.dir(), source))?;
    }
    if let Some(index) = &index
        && storage.is_file_system()
    {
        std::fs::remove_dir_all(index).map_err(|source| io_error(index, source))?;
    }
    Ok((stale, index))
}

/// The directory of the engine's stream index (sled), inside the log directory.
const INDEX_DIR_NAME: &str = "index";

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn is_sidecar(path: &Path) -> bool {
    path.extension().is_some_and(|extension| extension == "idx")
}

fn is_segment(path: &Path) -> bool {
    path.file_name()
        .and_then(|name| name.to_str())
        .and_then(segment::parse_file_name)
        .is_some()
}

/// Lists the valid frames in `bytes`, which start at `offset` of `file`.
fn record_frames(
    dropped: &Mutex<Vec<DroppedFrame>>,
    file: &Path,
    bytes: &[u8],
    offset: u64,
    start: u64,
) {
    let mut dropped = lock(dropped);
    for step in FrameWalker::new(bytes, start, 0) {
        if let Walk::Frame {
            offset: at,
            header,
            payload,
        } = step
        {
            dropped.push(DroppedFrame {
                file: file.to_path_buf(),
                offset: offset + at,
                frame: summary(&header, payload),
            });
        }
    }
}

/// The storage a repair opens the WAL through (see the module documentation).
#[derive(Debug)]
struct RepairStorage {
    real: Arc<dyn Storage>,
    apply: bool,
    /// Files a dry run created, in memory.
    created: Mutex<HashMap<PathBuf, Arc<MemoryFile>>>,
    dropped: Arc<Mutex<Vec<DroppedFrame>>>,
}

#[derive(Debug)]
struct NoLock;

impl LockGuard for NoLock {}

impl Storage for RepairStorage {
    fn is_file_system(&self) -> bool {
        self.real.is_file_system()
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        match self.apply {
            true => self.real.create_dir_all(dir),
            false => Ok(()),
        }
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.real.list_dir(dir)
    }

    fn exists(&self, path: &Path) -> bool {
        lock(&self.created).contains_key(path) || self.real.exists(path)
    }

    fn open_file(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>> {
        if let Some(file) = lock(&self.created).get(path) {
            return Ok(file.clone());
        }
        if is_sidecar(path) && mode == OpenMode::Read {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "sidecars are ignored by repair",
            ));
        }
        if !self.apply {
            if mode == OpenMode::CreateNew {
                let file = Arc::new(MemoryFile::default());
                lock(&self.created).insert(path.to_path_buf(), file.clone());
                return Ok(file);
            }
            let real = self.real.open_file(path, OpenMode::Read)?;
            return Ok(Arc::new(RecordingFile::new(
                real,
                path,
                false,
                &self.dropped,
            )));
        }
        let real = self.real.open_file(path, mode)?;
        Ok(Arc::new(RecordingFile::new(
            real,
            path,
            true,
            &self.dropped,
        )))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        if is_segment(path) {
            let file = self.real.open_file(path, OpenMode::Read)?;
            let bytes = read_all(file.as_ref(), path).map_err(io::Error::other)?;
            let start = SEGMENT_HEADER_BYTES as u64;
            record_frames(&self.dropped, path, &bytes, 0, start);
        }
        match self.apply {
            true => self.real.remove_file(path),
            false => Ok(()),
        }
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        if self.apply {
            return self.real.rename(from, to);
        }
        let mut created = lock(&self.created);
        if let Some(file) = created.remove(from) {
            created.insert(to.to_path_buf(), file);
        }
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        match self.apply {
            true => self.real.sync_dir(dir),
            false => Ok(()),
        }
    }

    fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn LockGuard>>> {
        match self.apply {
            true => self.real.try_lock(path),
            false => Ok(Some(Box::new(NoLock))),
        }
    }
}

/// A segment file that lists the frames a cut drops before it cuts (or, in a dry run, only
/// pretends to cut).
#[derive(Debug)]
struct RecordingFile {
    real: Arc<dyn StorageFile>,
    path: PathBuf,
    apply: bool,
    /// A dry run's length after a cut.
    cut_len: Mutex<Option<u64>>,
    dropped: Arc<Mutex<Vec<DroppedFrame>>>,
}

impl RecordingFile {
    fn new(
        real: Arc<dyn StorageFile>,
        path: &Path,
        apply: bool,
        dropped: &Arc<Mutex<Vec<DroppedFrame>>>,
    ) -> Self {
        RecordingFile {
            real,
            path: path.to_path_buf(),
            apply,
            cut_len: Mutex::new(None),
            dropped: dropped.clone(),
        }
    }
}

impl StorageFile for RecordingFile {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let len = self.len()?;
        let available = len.saturating_sub(offset).min(buf.len() as u64) as usize;
        match buf.get_mut(..available) {
            Some(window) if available > 0 => self.real.read_at(offset, window),
            _ => Ok(0),
        }
    }

    fn write_all_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        match self.apply {
            true => self.real.write_all_at(offset, buf),
            false => Err(io::Error::other("a dry run writes nothing")),
        }
    }

    fn len(&self) -> io::Result<u64> {
        match *lock(&self.cut_len) {
            Some(len) => Ok(len),
            None => self.real.len(),
        }
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let current = self.len()?;
        if len < current {
            let mut bytes = vec![0u8; (current - len) as usize];
            self.real.read_exact_at(len, &mut bytes)?;
            record_frames(&self.dropped, &self.path, &bytes, len, 0);
        }
        if self.apply {
            return self.real.set_len(len);
        }
        *lock(&self.cut_len) = Some(len.min(current));
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        match self.apply {
            true => self.real.sync_data(),
            false => Ok(()),
        }
    }
}

/// A file a dry run created.
#[derive(Debug, Default)]
struct MemoryFile {
    bytes: Mutex<Vec<u8>>,
}

impl StorageFile for MemoryFile {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let bytes = lock(&self.bytes);
        let start = (offset as usize).min(bytes.len());
        let available = bytes.get(start..).unwrap_or(&[]);
        let count = available.len().min(buf.len());
        if let (Some(to), Some(from)) = (buf.get_mut(..count), available.get(..count)) {
            to.copy_from_slice(from);
        }
        Ok(count)
    }

    fn write_all_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        let mut bytes = lock(&self.bytes);
        let start = offset as usize;
        let end = start + buf.len();
        if bytes.len() < end {
            bytes.resize(end, 0);
        }
        if let Some(slot) = bytes.get_mut(start..end) {
            slot.copy_from_slice(buf);
        }
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        Ok(lock(&self.bytes).len() as u64)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        lock(&self.bytes).resize(len as usize, 0);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        Ok(())
    }
}
