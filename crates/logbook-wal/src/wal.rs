//! The write-ahead log: appends, group commit, segment rolls, durable position, truncation.
//!
//! Owns: the writer state (the active segment, the in-memory buffer of frames not yet handed to
//! the OS, the next position), the sync protocol and poisoning. Must never: hold the writer lock
//! while it syncs the active segment (appends keep landing in a fresh buffer meanwhile),
//! acknowledge an append before its policy is met, retry a failed write or sync, or modify a
//! sealed segment.

use crate::creation;
use crate::cursor::BufferPool;
use crate::error::{Error, Result};
use crate::frame::{self, FLAG_BATCH_FIRST, FLAG_BATCH_LAST, FRAME_HEADER_BYTES};
use crate::manifest::{self, Manifest, ManifestSegment};
use crate::open::{self, Opened};
use crate::options::{SyncPolicy, WalOptions};
use crate::reader::WalReader;
use crate::recovery::{self, Damage, RecoveryReport, ScanStart};
use crate::segment::{self, IndexEntry, SEGMENT_HEADER_BYTES, Segment};
use crate::storage::{FileStorage, LockGuard, OpenMode, Storage};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The name of the directory, inside the log directory, that holds the segments.
pub const WAL_DIR_NAME: &str = "wal";
/// The name of the lock file in the log directory.
pub const LOCK_FILE_NAME: &str = "LOCK";

/// Whether an append waits for durability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// As the WAL's [`SyncPolicy`] says.
    #[default]
    Policy,
    /// Acknowledged once buffered; made durable by the next sync (whoever triggers it). For
    /// high-frequency records whose loss in a power cut is acceptable (progress ticks).
    Relaxed,
}

/// The positions given to an appended batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendReceipt {
    /// The position of the first record.
    pub first: u64,
    /// The position of the last record.
    pub last: u64,
}

/// One record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its global position.
    pub position: u64,
    /// Its payload.
    pub payload: Vec<u8>,
}

/// A description of one segment, for stats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    /// The file.
    pub path: PathBuf,
    /// The first position it may hold.
    pub base: u64,
    /// The last position it holds (0 when empty).
    pub last_position: u64,
    /// Readable bytes, header included.
    pub bytes: u64,
    /// True for the segment appends go to.
    pub active: bool,
    /// The mark compaction keeps for it in the manifest (0 until compaction sets one):
    /// see [`Wal::set_compacted_through`].
    pub compacted_through: u64,
}

struct WriterState {
    active: Arc<Segment>,
    /// Logical end of the active segment, buffered bytes included.
    end_offset: u64,
    /// Bytes of the active segment handed to the OS.
    written_offset: u64,
    /// How far the active segment's file is known to reach: `written_offset` plus the zeros
    /// written ahead of it (see [`Inner::preallocate`]); never below `written_offset`.
    allocated_end: u64,
    /// True once writing zeros ahead failed in the active segment (a full disk): no more are
    /// tried until the next segment.
    preallocation_failed: bool,
    buffer: Vec<u8>,
    spare: Vec<u8>,
    buffer_records: usize,
    next_position: u64,
    last_indexed_offset: Option<u64>,
    sync_in_progress: bool,
    /// True while a group-commit leader waits for companions (appends then wake it).
    gathering: bool,
    poisoned: Option<String>,
    closed: bool,
    /// True while the active segment's checkpoint sidecar, kept by open, is on disk: it is
    /// removed durably before the first byte is written to the segment (see
    /// [`Inner::retire_checkpoint`]), and a close that finds it still there need not rewrite it.
    checkpoint_kept: bool,
}

impl WriterState {
    /// True when `batch_bytes` more would pass the segment limit of a non-empty segment (a batch
    /// never spans segments, so a batch larger than the limit gets a segment of its own).
    fn needs_roll(&self, batch_bytes: u64, segment_bytes_max: u64) -> bool {
        self.end_offset > SEGMENT_HEADER_BYTES as u64
            && self.end_offset.saturating_add(batch_bytes) > segment_bytes_max
    }
}

pub(crate) struct Inner {
    storage: Arc<dyn Storage>,
    wal_dir: PathBuf,
    pub(crate) options: WalOptions,
    read_only: bool,
    state: Mutex<WriterState>,
    changed: Condvar,
    /// Wakes a gathering group-commit leader; appends notify it only while one gathers.
    gathered: Condvar,
    durable_position: AtomicU64,
    segments: RwLock<Vec<Arc<Segment>>>,
    stop: AtomicBool,
    /// Serializes compaction with itself and with `truncate_before`.
    compaction: Mutex<()>,
    /// The directory lock, released at close: readers share `Inner` and may outlive the WAL.
    lock: Mutex<Option<Box<dyn LockGuard>>>,
    /// What `wal/MANIFEST` holds on disk (a read-only handle: what it read at open). Taken
    /// after the writer state and segment locks, never before them.
    manifest: Mutex<Manifest>,
    /// Read-only handles: the corruption open stopped at; readers fail there.
    damage: Option<Damage>,
    /// Read-ahead buffers of dropped readers, for the next ones.
    pub(crate) read_buffers: BufferPool,
}

/// A segmented write-ahead log. `Send + Sync`: share it in an `Arc` between appending threads.
pub struct Wal {
    inner: Arc<Inner>,
    /// The interval syncer thread (`SyncPolicy::Interval`); taken and joined by the first
    /// [`Wal::stop`].
    syncer: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Wal")
            .field("dir", &self.inner.wal_dir)
            .field("durable_position", &self.durable_position())
            .field("read_only", &self.inner.read_only)
            .finish()
    }
}

fn lock_state(inner: &Inner) -> MutexGuard<'_, WriterState> {
    inner
        .state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Wal {
    /// Opens (or creates) the log in `dir` on the real file system, for writing.
    pub fn open(dir: impl AsRef<Path>, options: WalOptions) -> Result<(Wal, RecoveryReport)> {
        Self::open_with_storage(Arc::new(FileStorage::new()), dir.as_ref(), options)
    }

    /// Opens an existing log in `dir` read-only: takes no lock and never writes a byte. Works
    /// beside a live writer; [`Wal::refresh`] picks up what it has written since.
    pub fn open_read_only(
        dir: impl AsRef<Path>,
        options: WalOptions,
    ) -> Result<(Wal, RecoveryReport)> {
        Self::open_read_only_with_storage(Arc::new(FileStorage::new()), dir.as_ref(), options)
    }

    /// [`Wal::open`] on any storage.
    pub fn open_with_storage(
        storage: Arc<dyn Storage>,
        dir: &Path,
        options: WalOptions,
    ) -> Result<(Wal, RecoveryReport)> {
        options.validate()?;
        let started = Instant::now();
        let _span = tracing::info_span!("wal_open", dir = %dir.display()).entered();
        let wal_dir = dir.join(WAL_DIR_NAME);
        // Durability: every directory entry of a new log is made durable before the first
        // append can be acknowledged (see `creation`).
        let wal_dir_sync_pending = creation::create_log_dirs(storage.as_ref(), dir)?;
        let lock_path = dir.join(LOCK_FILE_NAME);
        let guard = storage
            .try_lock(&lock_path)
            .map_err(|source| Error::io(&lock_path, source))?
            .ok_or(Error::Locked { path: lock_path })?;
        let Opened {
            mut segments,
            last_position,
            mut report,
            mut manifest,
            mut manifest_dirty,
            checkpoint_kept,
        } = open::open_segments(&storage, &wal_dir, &options, false)?;
        if wal_dir_sync_pending {
            creation::sync_existing_wal_dir(storage.as_ref(), &wal_dir, checkpoint_kept)?;
        }
        let active = match segments.last() {
            Some(last) => {
                // Durability: a process crash leaves written-but-unsynced frames in the page
                // cache, and recovery accepted them; sync them before any new frame's durable
                // mark claims they are durable. A kept checkpoint covers the whole file and
                // was written after the file's last sync: nothing is left to sync.
                if !checkpoint_kept {
                    last.file
                        .sync_data()
                        .map_err(|source| Error::io(&last.path, source))?;
                }
                last.clone()
            }
            None => {
                let segment = create_segment(storage.as_ref(), &wal_dir, last_position + 1)?;
                segments.push(segment.clone());
                manifest.segments.push(ManifestSegment {
                    base: segment.base,
                    compacted_through: 0,
                    removing: false,
                });
                manifest_dirty = true;
                segment
            }
        };
        if manifest_dirty {
            // Durability: the manifest names every segment before the first append can be
            // acknowledged.
            manifest::store(storage.as_ref(), &wal_dir, &manifest)?;
        }
        let end_offset = active.durable_len();
        // The zero tail of a segment that a crash left preallocated is reused as it is.
        let allocated_end = active
            .file
            .len()
            .map_err(|source| Error::io(&active.path, source))?
            .max(end_offset);
        let next_position = last_position + 1;
        let state = WriterState {
            active,
            end_offset,
            written_offset: end_offset,
            allocated_end,
            preallocation_failed: false,
            buffer: Vec::new(),
            spare: Vec::new(),
            buffer_records: 0,
            next_position,
            last_indexed_offset: None,
            sync_in_progress: false,
            gathering: false,
            poisoned: None,
            closed: false,
            checkpoint_kept,
        };
        let inner = Arc::new(Inner {
            storage,
            wal_dir,
            options: options.clone(),
            read_only: false,
            state: Mutex::new(state),
            changed: Condvar::new(),
            gathered: Condvar::new(),
            durable_position: AtomicU64::new(last_position),
            segments: RwLock::new(segments),
            stop: AtomicBool::new(false),
            compaction: Mutex::new(()),
            lock: Mutex::new(Some(guard)),
            manifest: Mutex::new(manifest),
            damage: None,
            read_buffers: BufferPool::default(),
        });
        let syncer = match options.sync_policy {
            SyncPolicy::Interval(interval) => Some(spawn_syncer(inner.clone(), interval)?),
            _ => None,
        };
        report.duration = started.elapsed();
        tracing::info!(
            last_position,
            segments = report.segments,
            tail_cut = report.tail_cut.is_some(),
            "wal opened"
        );
        Ok((
            Wal {
                inner,
                syncer: Mutex::new(syncer),
            },
            report,
        ))
    }

    /// [`Wal::open_read_only`] on any storage.
    pub fn open_read_only_with_storage(
        storage: Arc<dyn Storage>,
        dir: &Path,
        options: WalOptions,
    ) -> Result<(Wal, RecoveryReport)> {
        options.validate()?;
        let started = Instant::now();
        let wal_dir = dir.join(WAL_DIR_NAME);
        if !storage.exists(&wal_dir) {
            return Err(Error::io(
                &wal_dir,
                std::io::Error::new(std::io::ErrorKind::NotFound, "not a logbook directory"),
            ));
        }
        let Opened {
            segments,
            last_position,
            mut report,
            manifest,
            ..
        } = open::open_segments(&storage, &wal_dir, &options, true)?;
        let active = match (segments.last(), &report.damage) {
            (Some(last), _) => last.clone(),
            (None, Some(damage)) => return Err(damage.to_error()),
            (None, None) => {
                // No complete segment: the log's creation was cut short. It holds no record;
                // `refresh` picks up the first segment once a writer creates it.
                report.creation_unfinished = true;
                creation::placeholder_segment(&wal_dir)
            }
        };
        let end_offset = active.durable_len();
        let state = WriterState {
            active,
            end_offset,
            written_offset: end_offset,
            allocated_end: end_offset,
            preallocation_failed: false,
            buffer: Vec::new(),
            spare: Vec::new(),
            buffer_records: 0,
            next_position: last_position + 1,
            last_indexed_offset: None,
            sync_in_progress: false,
            gathering: false,
            poisoned: None,
            closed: false,
            checkpoint_kept: false,
        };
        let inner = Arc::new(Inner {
            storage,
            wal_dir,
            options,
            read_only: true,
            state: Mutex::new(state),
            changed: Condvar::new(),
            gathered: Condvar::new(),
            durable_position: AtomicU64::new(last_position),
            segments: RwLock::new(segments),
            stop: AtomicBool::new(false),
            compaction: Mutex::new(()),
            lock: Mutex::new(None),
            manifest: Mutex::new(manifest),
            damage: report.damage.clone(),
            read_buffers: BufferPool::default(),
        });
        report.duration = started.elapsed();
        Ok((
            Wal {
                inner,
                syncer: Mutex::new(None),
            },
            report,
        ))
    }

    /// Appends one record and waits as the sync policy says. Returns its position.
    pub fn append(&self, payload: &[u8]) -> Result<u64> {
        Ok(self.append_batch(&[payload])?.last)
    }

    /// Appends records as one batch, atomic across crashes (after recovery all of them exist or
    /// none does), and waits as the sync policy says.
    pub fn append_batch<P: AsRef<[u8]>>(&self, payloads: &[P]) -> Result<AppendReceipt> {
        self.append_batch_with(payloads, Durability::Policy)
    }

    /// [`Wal::append_batch`] with a chosen durability.
    pub fn append_batch_with<P: AsRef<[u8]>>(
        &self,
        payloads: &[P],
        durability: Durability,
    ) -> Result<AppendReceipt> {
        let receipt = self.buffer_batch(payloads, None)?;
        let wait = durability == Durability::Policy
            && matches!(
                self.inner.options.sync_policy,
                SyncPolicy::Always | SyncPolicy::GroupCommit { .. }
            );
        if wait {
            self.wait_durable(receipt.last)?;
        }
        Ok(receipt)
    }

    /// Appends records as one batch whose first position is `first_position` (at least the
    /// next one: positions may skip, never repeat or go back), and waits as the sync policy
    /// says. What a copy of another log uses to keep its positions (a compacted or purged log
    /// has gaps); an append that is not a copy wants [`Wal::append_batch`].
    pub fn append_batch_at<P: AsRef<[u8]>>(
        &self,
        first_position: u64,
        payloads: &[P],
    ) -> Result<AppendReceipt> {
        let receipt = self.buffer_batch(payloads, Some(first_position))?;
        if matches!(
            self.inner.options.sync_policy,
            SyncPolicy::Always | SyncPolicy::GroupCommit { .. }
        ) {
            self.wait_durable(receipt.last)?;
        }
        Ok(receipt)
    }

    /// Checks limits, then encodes the batch into the buffer under the writer lock, from
    /// position `at` when given (at least the next position), else from the next position.
    fn buffer_batch<P: AsRef<[u8]>>(
        &self,
        payloads: &[P],
        at: Option<u64>,
    ) -> Result<AppendReceipt> {
        let options = &self.inner.options;
        if payloads.is_empty() {
            return Err(Error::EmptyBatch);
        }
        if payloads.len() > options.batch_records_max {
            return Err(Error::LimitExceeded {
                what: "records in a batch",
                limit: options.batch_records_max as u64,
                actual: payloads.len() as u64,
            });
        }
        let mut batch_bytes = 0u64;
        for payload in payloads {
            let len = payload.as_ref().len() as u64;
            if len > u64::from(options.record_bytes_max) {
                return Err(Error::LimitExceeded {
                    what: "record bytes",
                    limit: u64::from(options.record_bytes_max),
                    actual: len,
                });
            }
            batch_bytes += FRAME_HEADER_BYTES as u64 + len;
        }
        if batch_bytes > options.batch_bytes_max {
            return Err(Error::LimitExceeded {
                what: "batch bytes",
                limit: options.batch_bytes_max,
                actual: batch_bytes,
            });
        }
        let inner = &*self.inner;
        let mut state = lock_state(inner);
        inner.check_writable(&state)?;
        if let Some(at) = at {
            if at < state.next_position || at == u64::MAX {
                return Err(Error::InvalidArgument(format!(
                    "a batch at position {at}: the next position is {}, positions never go back",
                    state.next_position
                )));
            }
            // The skipped positions are never written: a gap, as compaction leaves them.
            state.next_position = at;
        }
        // Positions end at u64::MAX - 1 (frames refuse u64::MAX). A log recovered near the top
        // of the position space refuses the batch instead of overflowing `next_position`. Found
        // by fuzzing (segment_recovery).
        let positions_left = u64::MAX - state.next_position;
        if payloads.len() as u64 > positions_left {
            return Err(Error::LimitExceeded {
                what: "log positions",
                limit: u64::MAX - 1,
                actual: state
                    .next_position
                    .saturating_add(payloads.len() as u64 - 1),
            });
        }
        while state.needs_roll(batch_bytes, options.segment_bytes_max) {
            state = inner.roll(state, batch_bytes)?;
        }
        let durable_mark = inner.durable_position.load(Ordering::Acquire);
        let first = state.next_position;
        let count = payloads.len();
        let before = state.buffer.len();
        for (index, payload) in payloads.iter().enumerate() {
            let mut flags = 0;
            if index == 0 {
                flags |= FLAG_BATCH_FIRST;
            }
            if index + 1 == count {
                flags |= FLAG_BATCH_LAST;
            }
            let position = first + index as u64;
            let offset = state.end_offset + (state.buffer.len() - before) as u64;
            if state
                .last_indexed_offset
                .is_none_or(|last| offset - last >= options.index_interval_bytes)
            {
                state.active.push_index(IndexEntry { position, offset });
                state.last_indexed_offset = Some(offset);
            }
            frame::encode_frame(
                &mut state.buffer,
                position,
                durable_mark,
                flags,
                payload.as_ref(),
            );
        }
        assert_eq!(
            (state.buffer.len() - before) as u64,
            batch_bytes,
            "frame sizes"
        );
        state.end_offset += batch_bytes;
        state.next_position += count as u64;
        state.buffer_records += count;
        state.active.add_records(count as u64);
        if state.buffer.len() >= options.buffer_bytes_max {
            inner.write_out(&mut state)?;
        }
        // Only a gathering group-commit leader waits for appends: waking anyone else per append
        // costs a futex call each (measured: ~18% of unsynced append time).
        let wake = state.gathering;
        drop(state);
        if wake {
            inner.gathered.notify_one();
        }
        Ok(AppendReceipt {
            first,
            last: first + count as u64 - 1,
        })
    }

    /// Waits until `position` is durable, leading a sync if none is under way.
    pub fn wait_durable(&self, position: u64) -> Result<()> {
        self.inner.sync_to(position, true)
    }

    /// Makes every appended record durable; returns the durable position.
    pub fn sync(&self) -> Result<u64> {
        let head = self.last_position();
        self.inner.sync_to(head, false)?;
        Ok(self.durable_position())
    }

    /// The highest position known durable: readers see records up to here.
    pub fn durable_position(&self) -> u64 {
        self.inner.durable_position.load(Ordering::Acquire)
    }

    /// The last position appended (durable or not); 0 for an empty log.
    pub fn last_position(&self) -> u64 {
        lock_state(&self.inner).next_position - 1
    }

    /// True after a failed write or sync: appends fail until the WAL is reopened.
    pub fn is_poisoned(&self) -> bool {
        lock_state(&self.inner).poisoned.is_some()
    }

    /// The failure that poisoned the WAL (the OS error and the file), `None` while it is not.
    pub fn poisoned_reason(&self) -> Option<String> {
        lock_state(&self.inner).poisoned.clone()
    }

    /// The options the WAL was opened with.
    pub fn options(&self) -> &WalOptions {
        &self.inner.options
    }

    /// The directory holding the segment files.
    pub fn wal_dir(&self) -> &Path {
        &self.inner.wal_dir
    }

    /// An iterator over durable records from `position` on (the first record at or after it;
    /// gaps are skipped). It verifies every frame. When it returns `None` it has caught up; calling
    /// `next` again later yields records that became durable since.
    pub fn read_from(&self, position: u64) -> WalReader {
        WalReader::new(self.inner.clone(), position)
    }

    /// The segments, oldest first.
    pub fn segments(&self) -> Vec<SegmentInfo> {
        let state = lock_state(&self.inner);
        let active_base = state.active.base;
        drop(state);
        let segments = self.inner.segments();
        let manifest = self.inner.manifest();
        segments
            .iter()
            .map(|segment| SegmentInfo {
                path: segment.path.clone(),
                base: segment.base,
                last_position: segment.last_position(),
                bytes: segment.durable_len(),
                active: segment.base == active_base,
                compacted_through: manifest
                    .entry(segment.base)
                    .map_or(0, |entry| entry.compacted_through),
            })
            .collect()
    }

    /// Records, durably in the manifest, the mark compaction keeps for each listed sealed
    /// segment (the engine: the snapshot position its last compaction of the segment saw).
    /// The WAL gives it no meaning; it survives restarts and segment rewrites, and a new
    /// segment starts at 0. Bases that are not segments are ignored.
    pub fn set_compacted_through(&self, marks: &[(u64, u64)]) -> Result<()> {
        let inner = &*self.inner;
        let state = lock_state(inner);
        inner.check_writable(&state)?;
        drop(state);
        inner.update_manifest(|manifest| {
            for &(base, mark) in marks {
                if let Some(entry) = manifest
                    .segments
                    .iter_mut()
                    .find(|entry| entry.base == base && !entry.removing)
                {
                    entry.compacted_through = mark;
                }
            }
        })
    }

    /// The manifest as last written (a read-only handle: as read at open).
    pub fn manifest(&self) -> Manifest {
        self.inner.manifest().clone()
    }

    /// Removes whole sealed segments whose records all lie below `position`. Returns the
    /// removed files. The active segment is never removed.
    pub fn truncate_before(&self, position: u64) -> Result<Vec<PathBuf>> {
        let inner = &*self.inner;
        let _compaction = inner.compaction_lock();
        let mut state = lock_state(inner);
        inner.check_writable(&state)?;
        let active_base = state.active.base;
        let mut segments = inner
            .segments
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let victims = segments
            .windows(2)
            .take_while(|pair| matches!(pair, [first, next] if first.base != active_base && next.base <= position))
            .count();
        if victims == 0 {
            return Ok(Vec::new());
        }
        let bases: Vec<u64> = segments
            .iter()
            .take(victims)
            .map(|segment| segment.base)
            .collect();
        // Durability: the manifest marks the segments as being removed before their files go,
        // so a crash in between never looks like missing segments.
        if let Err(error) = inner.mark_removing(&bases) {
            inner.poison_with(&mut state, error.to_string());
            return Err(error);
        }
        let mut removed = Vec::new();
        for segment in segments.drain(..victims) {
            inner
                .storage
                .remove_file(&segment.path)
                .map_err(|source| Error::io(&segment.path, source))?;
            // The sidecar goes after its segment (an orphan sidecar is removed at open).
            let sidecar = inner.wal_dir.join(crate::sidecar::file_name(segment.base));
            if inner.storage.exists(&sidecar) {
                inner
                    .storage
                    .remove_file(&sidecar)
                    .map_err(|source| Error::io(&sidecar, source))?;
            }
            removed.push(segment.path.clone());
        }
        drop(segments);
        drop(state);
        // Durability: fsync the directory so the removals survive a crash.
        inner
            .storage
            .sync_dir(&inner.wal_dir)
            .map_err(|source| Error::io(&inner.wal_dir, source))?;
        Ok(removed)
    }

    /// A read-only handle's damage: the corruption open stopped at (see
    /// [`RecoveryReport::damage`]). Readers return every record before it, then its error.
    pub fn damage(&self) -> Option<&Damage> {
        self.inner.damage.as_ref()
    }

    /// Read-only handles: picks up records and segments a live writer made since open.
    /// Returns the new last position. A writer handle needs no refresh.
    pub fn refresh(&self) -> Result<u64> {
        let inner = &*self.inner;
        if !inner.read_only || inner.damage.is_some() {
            // A damaged log is known only up to its damage: nothing after it is picked up.
            return Ok(self.durable_position());
        }
        let _state = lock_state(inner);
        let mut last_position = inner.durable_position.load(Ordering::Acquire);
        let known: Vec<u64> = inner
            .segments()
            .iter()
            .map(|segment| segment.base)
            .collect();
        for (base, path) in open::segment_paths(inner.storage.as_ref(), &inner.wal_dir)? {
            if known.contains(&base) || base <= last_position {
                continue;
            }
            let Ok(file) = inner.storage.open_file(&path, OpenMode::Read) else {
                continue;
            };
            let len = file.len().map_err(|source| Error::io(&path, source))?;
            let mut header = [0u8; SEGMENT_HEADER_BYTES];
            if len < SEGMENT_HEADER_BYTES as u64 || file.read_exact_at(0, &mut header).is_err() {
                continue;
            }
            if segment::decode_header(&header) != Ok(base) {
                continue;
            }
            let segment = Arc::new(Segment::new(base, path, file));
            inner
                .segments
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .push(segment);
        }
        for segment in inner.segments().iter() {
            if segment.last_position() != 0 && segment.last_position() < last_position {
                continue;
            }
            let len = segment
                .file
                .len()
                .map_err(|source| Error::io(&segment.path, source))?;
            let start = ScanStart {
                offset: segment.durable_len(),
                after_position: last_position.max(segment.base - 1),
                last_indexed_offset: None,
            };
            let scan = recovery::scan_segment(
                segment.file.as_ref(),
                len,
                start,
                crate::options::RECORD_BYTES_LIMIT,
                inner.options.index_interval_bytes,
            )?;
            if let Some(problem) = &scan.problem
                && problem.provably_durable
            {
                return Err(Error::corrupted(
                    &segment.path,
                    problem.bad_offset,
                    problem.reason.clone(),
                ));
            }
            for entry in &scan.index {
                segment.push_index(*entry);
            }
            let last = if scan.records > 0 {
                scan.last_position
            } else {
                0
            };
            segment.set_durable(scan.valid_end, last);
            last_position = last_position.max(last);
        }
        inner
            .durable_position
            .store(last_position, Ordering::Release);
        Ok(last_position)
    }

    /// Syncs everything and stops the WAL. Dropping without `close` also syncs, best effort.
    pub fn close(self) -> Result<()> {
        self.stop()
    }

    /// [`Wal::close`] through a shared reference, for an owner that shares the WAL in an `Arc`
    /// and must release it while other holders (readers, handles) live on: syncs everything,
    /// stops, writes the sidecars and releases the directory's lock, so the log can be opened
    /// again at once. Afterwards appends and syncs fail with [`Error::Closed`]; readers still
    /// read the records that were durable. A second call does nothing and returns `Ok`.
    pub fn stop(&self) -> Result<()> {
        let inner = &*self.inner;
        if lock_state(inner).closed {
            return Ok(());
        }
        let result = if inner.read_only {
            Ok(())
        } else {
            let head = lock_state(inner).next_position - 1;
            inner.sync_to(head, false)
        };
        if result.is_ok() && !inner.read_only {
            inner.trim_preallocated();
            // Sidecars of the segments sealed since open spare the next open their scan; the
            // active segment's (a checkpoint of its synced prefix) spares it the rescan.
            // A checkpoint kept since open still describes the active segment: nothing was
            // written to it, so it is not rewritten (and synced) again.
            let (active_base, checkpoint_kept) = {
                let state = lock_state(inner);
                (state.active.base, state.checkpoint_kept)
            };
            for segment in inner.segments().iter() {
                let active = segment.base == active_base;
                if (active && !checkpoint_kept) || (!active && !segment.has_sidecar()) {
                    open::write_sidecar(inner.storage.as_ref(), &inner.wal_dir, segment);
                }
            }
        }
        inner.stop.store(true, Ordering::Release);
        lock_state(inner).closed = true;
        inner.changed.notify_all();
        inner.gathered.notify_all();
        let syncer = self
            .syncer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(syncer) = syncer {
            let _ = syncer.join();
        }
        // Readers hold `Inner` and may outlive this handle; a closed WAL writes nothing more,
        // so it must not keep the next writer out for as long as a reader lives.
        drop(
            inner
                .lock
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .take(),
        );
        result
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        if let Err(error) = self.stop() {
            tracing::warn!(%error, "WAL dropped without close and its final sync failed");
        }
    }
}

impl Wal {
    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }
}

impl Inner {
    pub(crate) fn storage(&self) -> &dyn Storage {
        self.storage.as_ref()
    }

    pub(crate) fn wal_dir(&self) -> &Path {
        &self.wal_dir
    }

    pub(crate) fn compaction_lock(&self) -> MutexGuard<'_, ()> {
        self.compaction
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The sealed (not active) segment starting at `base`.
    pub(crate) fn sealed_segment(&self, base: u64) -> Result<Arc<Segment>> {
        let state = lock_state(self);
        self.check_writable(&state)?;
        if state.active.base == base {
            return Err(Error::InvalidArgument(format!(
                "segment {base} is the active segment"
            )));
        }
        drop(state);
        self.segments()
            .iter()
            .find(|segment| segment.base == base)
            .cloned()
            .ok_or_else(|| Error::InvalidArgument(format!("no segment starts at position {base}")))
    }

    /// Removes a sealed segment (and its sidecar) whose records were all dropped.
    pub(crate) fn remove_sealed(&self, segment: &Arc<Segment>) -> Result<()> {
        // Durability: the manifest marks the segment as being removed before its file goes.
        if let Err(error) = self.mark_removing(&[segment.base]) {
            self.poison_with(&mut lock_state(self), error.to_string());
            return Err(error);
        }
        let sidecar = self.wal_dir.join(crate::sidecar::file_name(segment.base));
        self.storage
            .remove_file(&segment.path)
            .map_err(|source| Error::io(&segment.path, source))?;
        if self.storage.exists(&sidecar) {
            self.storage
                .remove_file(&sidecar)
                .map_err(|source| Error::io(&sidecar, source))?;
        }
        // Durability: fsync the directory so the removal survives a crash.
        self.storage
            .sync_dir(&self.wal_dir)
            .map_err(|source| Error::io(&self.wal_dir, source))?;
        self.segments
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .retain(|existing| !Arc::ptr_eq(existing, segment));
        Ok(())
    }

    /// Puts a rewritten segment in place of the old one and writes its sidecar.
    pub(crate) fn install_replacement(&self, old: &Arc<Segment>, new: Arc<Segment>) {
        open::write_sidecar(self.storage.as_ref(), &self.wal_dir, &new);
        let mut segments = self
            .segments
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(slot) = segments
            .iter_mut()
            .find(|existing| Arc::ptr_eq(existing, old))
        {
            *slot = new;
        }
    }

    /// Seals the active segment when it holds records: the same path as a roll.
    pub(crate) fn seal_active(&self) -> Result<Option<u64>> {
        let state = lock_state(self);
        self.check_writable(&state)?;
        if state.end_offset <= SEGMENT_HEADER_BYTES as u64 {
            return Ok(None);
        }
        let base = state.active.base;
        let state = self.roll(state, u64::MAX)?;
        drop(state);
        if let Some(sealed) = self.segments().iter().find(|segment| segment.base == base) {
            open::write_sidecar(self.storage.as_ref(), &self.wal_dir, sealed);
        }
        Ok(Some(base))
    }

    pub(crate) fn segments(&self) -> std::sync::RwLockReadGuard<'_, Vec<Arc<Segment>>> {
        self.segments
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn damage(&self) -> Option<&Damage> {
        self.damage.as_ref()
    }

    pub(crate) fn durable(&self) -> u64 {
        self.durable_position.load(Ordering::Acquire)
    }

    fn check_writable(&self, state: &WriterState) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        if let Some(reason) = &state.poisoned {
            return Err(Error::Poisoned {
                reason: reason.clone(),
            });
        }
        if state.closed {
            return Err(Error::Closed);
        }
        Ok(())
    }

    /// Removes the active segment's checkpoint kept by open, durably, before the segment's
    /// first write (see `open::Opened::checkpoint_kept`). Runs under the writer lock, once per
    /// open at most. A failure poisons the WAL: the directory's state is unknown.
    fn retire_checkpoint(&self, state: &mut WriterState) -> Result<()> {
        if !state.checkpoint_kept {
            return Ok(());
        }
        // Durability: the checkpoint's removal is on disk (directory fsync) before any byte of
        // the segment it describes changes, or a later open could trust a stale prefix.
        match open::remove_active_sidecar(self.storage.as_ref(), &self.wal_dir, state.active.base) {
            Ok(()) => {
                state.checkpoint_kept = false;
                Ok(())
            }
            Err(error) => {
                self.poison_with(state, error.to_string());
                Err(error)
            }
        }
    }

    fn poison(&self, state: &mut WriterState, path: &Path, error: &std::io::Error) {
        self.poison_with(state, format!("{} on {}", error, path.display()));
    }

    fn poison_with(&self, state: &mut WriterState, reason: String) {
        tracing::error!(%reason, "WAL poisoned");
        state.poisoned = Some(reason);
        self.changed.notify_all();
        self.gathered.notify_all();
    }

    pub(crate) fn manifest(&self) -> MutexGuard<'_, Manifest> {
        self.manifest
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Stores the manifest with `change` applied, durably; entries being removed whose files
    /// are gone are dropped on the way. The in-memory copy changes only once the store
    /// succeeded. A failure leaves the file in an unknown state: callers poison the WAL.
    fn update_manifest(&self, change: impl FnOnce(&mut Manifest)) -> Result<()> {
        let mut manifest = self.manifest();
        let mut next = manifest.clone();
        change(&mut next);
        next.segments.retain(|entry| {
            !entry.removing
                || self
                    .storage
                    .exists(&self.wal_dir.join(segment::file_name(entry.base)))
        });
        manifest::store(self.storage.as_ref(), &self.wal_dir, &next)?;
        *manifest = next;
        Ok(())
    }

    /// Marks segments as being removed in the manifest (before their files are removed).
    fn mark_removing(&self, bases: &[u64]) -> Result<()> {
        self.update_manifest(|manifest| {
            for entry in &mut manifest.segments {
                if bases.contains(&entry.base) {
                    entry.removing = true;
                }
            }
        })
    }

    /// Hands the buffer to the OS without syncing (the buffer grew past its limit).
    fn write_out(&self, state: &mut WriterState) -> Result<()> {
        self.retire_checkpoint(state)?;
        self.preallocate(state, state.written_offset + state.buffer.len() as u64);
        let bytes = std::mem::take(&mut state.buffer);
        let segment = state.active.clone();
        let result = segment.file.write_all_at(state.written_offset, &bytes);
        state.written_offset += bytes.len() as u64;
        state.buffer = bytes;
        state.buffer.clear();
        if let Err(source) = result {
            self.poison(state, &segment.path, &source);
            return Err(Error::io(&segment.path, source));
        }
        Ok(())
    }

    /// Returns once `target` is durable: leads a sync when none runs, else waits for it.
    /// With `gather`, a group-commit leader first waits for companions (appenders waiting for
    /// their own records); an explicit `sync` (the engine's syncer, close, the interval thread)
    /// syncs at once: it already batches whatever was written meanwhile.
    fn sync_to(&self, target: u64, gather: bool) -> Result<()> {
        let mut state = lock_state(self);
        loop {
            if self.durable() >= target {
                return Ok(());
            }
            if let Some(reason) = &state.poisoned {
                return Err(Error::Poisoned {
                    reason: reason.clone(),
                });
            }
            if self.read_only {
                return Err(Error::ReadOnly);
            }
            if state.sync_in_progress {
                state = self
                    .changed
                    .wait(state)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                continue;
            }
            state.sync_in_progress = true;
            if let (true, SyncPolicy::GroupCommit { delay, records_max }) =
                (gather, self.options.sync_policy)
            {
                state = self.gather(state, delay, records_max);
            }
            return self.lead_sync(state);
        }
    }

    /// The group-commit wait: until `records_max` records are buffered or `delay` passed.
    fn gather<'a>(
        &'a self,
        mut state: MutexGuard<'a, WriterState>,
        delay: Duration,
        records_max: usize,
    ) -> MutexGuard<'a, WriterState> {
        let deadline = Instant::now() + delay;
        state.gathering = true;
        while state.buffer_records < records_max && state.poisoned.is_none() && !state.closed {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            state = self
                .gathered
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
        state.gathering = false;
        state
    }

    /// Writes the buffer and syncs the active segment with the writer lock released.
    fn lead_sync(&self, mut state: MutexGuard<'_, WriterState>) -> Result<()> {
        // A write that failed while a group-commit leader gathered (lock released) lost bytes
        // of records up to the head: a sync now would succeed and call them durable.
        if let Some(reason) = &state.poisoned {
            let error = Error::Poisoned {
                reason: reason.clone(),
            };
            state.sync_in_progress = false;
            drop(state);
            self.changed.notify_all();
            return Err(error);
        }
        let end = state.written_offset + state.buffer.len() as u64;
        if !state.buffer.is_empty()
            && let Err(error) = self.retire_checkpoint(&mut state)
        {
            state.sync_in_progress = false;
            drop(state);
            self.changed.notify_all();
            return Err(error);
        }
        if !state.buffer.is_empty() {
            self.preallocate(&mut state, end);
        }
        let _span = tracing::debug_span!("wal_sync", records = state.buffer_records).entered();
        let spare = std::mem::take(&mut state.spare);
        let mut bytes = std::mem::replace(&mut state.buffer, spare);
        let segment = state.active.clone();
        let offset = state.written_offset;
        let last = state.next_position - 1;
        state.written_offset += bytes.len() as u64;
        debug_assert_eq!(state.written_offset, end);
        state.buffer_records = 0;
        drop(state);
        let result = if bytes.is_empty() {
            Ok(())
        } else {
            segment.file.write_all_at(offset, &bytes)
        };
        let result = result.and_then(|()| segment.file.sync_data());
        let mut state = lock_state(self);
        state.sync_in_progress = false;
        bytes.clear();
        if state.spare.capacity() < bytes.capacity() {
            state.spare = bytes;
        }
        match result {
            Ok(()) => {
                segment.set_durable(end, last);
                self.durable_position.fetch_max(last, Ordering::AcqRel);
                drop(state);
                self.changed.notify_all();
                Ok(())
            }
            Err(source) => {
                self.poison(&mut state, &segment.path, &source);
                Err(Error::io(&segment.path, source))
            }
        }
    }

    /// Before bytes are written to the active segment up to `end`: when `end` passes the zeros
    /// already written ahead, writes zeros from `end` on, `preallocate_bytes` of them (never
    /// past `segment_bytes_max`), unless the write itself is at least half that long. Runs
    /// under the writer lock, which orders it before any write at or past `end` (those are
    /// handed out under the same lock), so zeros never land on a frame. Once per `preallocate_bytes` of appends; the append whose sync follows pays the
    /// size change, the next ones overwrite zeros in place. A failure (a disk too full for the
    /// zeros but not for the frames) is not an append's failure: zeros are not data, so it is
    /// logged and the segment grows append by append from then on.
    fn preallocate(&self, state: &mut WriterState, end: u64) {
        if end <= state.allocated_end {
            return;
        }
        if state.preallocation_failed
            || end - state.written_offset >= self.options.preallocate_bytes / 2
        {
            // A large write (a bulk load's buffer) grows the file by itself, and its size
            // change is paid once for many records: zeros ahead of it would only be
            // overwritten by the next large write, doubling the bytes written.
            state.allocated_end = end;
            return;
        }
        let target = end
            .saturating_add(self.options.preallocate_bytes)
            .min(self.options.segment_bytes_max.max(end));
        if target > end {
            let zeros = vec![0u8; usize::try_from(target - end).unwrap_or(0)];
            let segment = state.active.clone();
            if let Err(error) = segment.file.write_all_at(end, &zeros) {
                // Whatever part of the zeros was written lies past `end`, where the frames
                // about to be written and the next ones go: nothing is lost or misread.
                tracing::warn!(
                    segment = %segment.path.display(),
                    %error,
                    "could not preallocate; the segment grows append by append"
                );
                state.preallocation_failed = true;
                state.allocated_end = end;
                return;
            }
        }
        state.allocated_end = target;
        assert!(state.allocated_end >= end);
    }

    /// At a clean close, after the final sync: cuts the active segment's preallocated zeros,
    /// so the file ends with its last frame and the checkpoint written next covers all of it.
    /// Best effort: when it fails, the zeros stay and the next open reads them as the end of
    /// the data (the checkpoint then covers a prefix).
    fn trim_preallocated(&self) {
        let mut state = lock_state(self);
        while state.sync_in_progress {
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        if !state.buffer.is_empty() || state.poisoned.is_some() || state.closed {
            return;
        }
        let segment = state.active.clone();
        let trimmed = trim_to(segment.file.as_ref(), state.written_offset).and_then(|cut| {
            // Durability: the trim is on disk before the checkpoint that covers the file.
            if cut {
                segment.file.sync_data()
            } else {
                Ok(())
            }
        });
        match trimmed {
            Ok(()) => state.allocated_end = state.written_offset,
            Err(error) => tracing::warn!(
                segment = %segment.path.display(),
                %error,
                "could not trim the preallocated tail at close; the next open reads past it"
            ),
        }
    }

    /// Seals the active segment (write, sync) and starts a new one. Rare, so it runs under the
    /// writer lock after any sync under way has finished.
    fn roll<'a>(
        &'a self,
        mut state: MutexGuard<'a, WriterState>,
        batch_bytes: u64,
    ) -> Result<MutexGuard<'a, WriterState>> {
        while state.sync_in_progress {
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        self.check_writable(&state)?;
        // Another appender may have rolled while this one waited.
        if !state.needs_roll(batch_bytes, self.options.segment_bytes_max) {
            return Ok(state);
        }
        let _span = tracing::info_span!("wal_roll", next_position = state.next_position).entered();
        self.write_out(&mut state)?;
        let old = state.active.clone();
        // A sealed segment ends with its last frame: its preallocated zeros go, and the sync
        // below makes the trim durable with the frames.
        if let Err(source) = trim_to(old.file.as_ref(), state.written_offset) {
            self.poison(&mut state, &old.path, &source);
            return Err(Error::io(&old.path, source));
        }
        state.allocated_end = state.written_offset;
        // Durability: the old segment is synced before the new one exists, so only the last
        // segment can ever hold an unsynced tail.
        if let Err(source) = old.file.sync_data() {
            self.poison(&mut state, &old.path, &source);
            return Err(Error::io(&old.path, source));
        }
        let last = state.next_position - 1;
        old.set_durable(state.written_offset, last);
        self.durable_position.fetch_max(last, Ordering::AcqRel);
        let segment =
            match create_segment(self.storage.as_ref(), &self.wal_dir, state.next_position) {
                Ok(segment) => segment,
                Err(error) => {
                    let reason = error.to_string();
                    tracing::error!(%reason, "WAL poisoned: could not create a segment");
                    state.poisoned = Some(reason);
                    return Err(error);
                }
            };
        // Durability: the manifest lists the new segment (and how far the log reached) before
        // any frame is written to it. A crash before this leaves an unlisted segment holding
        // only its header, which the next open adopts.
        if let Err(error) = self.update_manifest(|manifest| {
            manifest.reached = manifest.reached.max(last);
            manifest.segments.push(ManifestSegment {
                base: segment.base,
                compacted_through: 0,
                removing: false,
            });
        }) {
            self.poison_with(&mut state, error.to_string());
            return Err(error);
        }
        self.segments
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(segment.clone());
        state.active = segment;
        state.end_offset = SEGMENT_HEADER_BYTES as u64;
        state.written_offset = SEGMENT_HEADER_BYTES as u64;
        state.allocated_end = SEGMENT_HEADER_BYTES as u64;
        state.preallocation_failed = false;
        state.last_indexed_offset = None;
        self.changed.notify_all();
        Ok(state)
    }
}

/// Cuts `file` to `len` when it is longer (preallocated zeros past its last frame); true when it
/// cut. The file's own length decides, not `WriterState::allocated_end`: a failed run of zeros
/// may have written part of itself past what the writer recorded. Does not sync.
fn trim_to(file: &dyn crate::storage::StorageFile, len: u64) -> std::io::Result<bool> {
    if file.len()? <= len {
        return Ok(false);
    }
    file.set_len(len)?;
    Ok(true)
}

/// Creates a segment file with its header, durably (file and directory synced).
fn create_segment(storage: &dyn Storage, wal_dir: &Path, base: u64) -> Result<Arc<Segment>> {
    let path = wal_dir.join(segment::file_name(base));
    let file = storage
        .open_file(&path, OpenMode::CreateNew)
        .map_err(|source| Error::io(&path, source))?;
    file.write_all_at(0, &segment::encode_header(base))
        .map_err(|source| Error::io(&path, source))?;
    // Durability: the header is synced before any frame is written behind it.
    file.sync_data()
        .map_err(|source| Error::io(&path, source))?;
    // Durability: fsync the directory so the new segment's name survives a crash.
    storage
        .sync_dir(wal_dir)
        .map_err(|source| Error::io(wal_dir, source))?;
    tracing::debug!(segment = %path.display(), "segment created");
    Ok(Arc::new(Segment::new(base, path, file)))
}

fn spawn_syncer(inner: Arc<Inner>, interval: Duration) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("logbook-wal-sync".into())
        .spawn(move || {
            let mut state = lock_state(&inner);
            let mut next_sync = Instant::now() + interval;
            while !inner.stop.load(Ordering::Acquire) {
                let now = Instant::now();
                if now < next_sync {
                    state = inner
                        .changed
                        .wait_timeout(state, next_sync - now)
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .0;
                    continue;
                }
                next_sync = now + interval;
                if state.poisoned.is_some() {
                    continue;
                }
                let head = state.next_position - 1;
                drop(state);
                if let Err(error) = inner.sync_to(head, false) {
                    tracing::error!(%error, "interval sync failed");
                }
                state = lock_state(&inner);
            }
        })
        .map_err(|source| Error::io("<sync thread>", source))
}
