//! The persistent stream index: stream -> (version -> position), in sled.
//!
//! Owns: the sled tree under `<dir>/index/`, the position up to which it is complete, the
//! in-memory tail of entries not yet written to sled, and range queries that make
//! `read_stream` cost O(page) with no rebuild at startup. Must never: hold anything that cannot
//! be rebuilt from the WAL (sled is beta upstream; the WAL is the only source of truth), or
//! store event payloads (purged bytes must not linger here).
//!
//! Layout: one sled entry per stream chunk of [`chunk::CHUNK_VERSIONS`] versions, delta-encoded
//! (see `chunk.rs`). The completeness marker lives under a key starting with 0xFF, a byte no UTF-8
//! string starts with, and is written in the same atomic batch as the chunks it covers.
//!
//! Writes: durable records are first added to an in-memory tail (`Tail`); every
//! [`TAIL_ENTRIES_MAX`] entries, and at close, the tail is merged into its chunks and written
//! in one sled batch with the new marker. A crash loses at most the tail, which open catches up
//! from the WAL (a bounded scan of at most `TAIL_ENTRIES_MAX` records past the marker). Appends
//! thus cost sled nothing most of the time. Removals (deleted and truncated streams, records
//! compaction dropped) go to sled at once: replaying them after a crash is idempotent.
//!
//! Invariant: for every stream, every version in the tail is above every version in sled (the
//! tail holds the records after the marker, and a stream's versions grow with positions).

mod cache;
mod chunk;
mod flusher;
mod recent;

use crate::error::{Error, Result};
use crate::streams::Direction;
use cache::{CACHED_STREAMS_MAX, ChunkCache, Known, LastChunk};
use flusher::Flusher;
use recent::Recent;
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// The directory of the index inside the log directory.
pub const INDEX_DIR_NAME: &str = "index";
const COMPLETE_KEY: &[u8] = b"\xFFcomplete";
const FORMAT_KEY: &[u8] = b"\xFFformat";
/// Format 4: chunks of 1,024 versions, delta-encoded. (Formats 1 to 3 are rebuilt when found.)
const FORMAT: u64 = 4;
/// Entries kept in memory before they are written to sled: bounds both the memory of the
/// tail (~16 bytes per entry plus one string per stream) and the catch-up scan after a crash.
pub const TAIL_ENTRIES_MAX: usize = 16_384;
/// sled's page cache budget.
const CACHE_BYTES: u64 = 8 << 20;

/// What opening the index found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexReport {
    /// The position the index was complete up to when opened (0 after a rebuild).
    pub complete_position: u64,
    /// Why the index was wiped and rebuilt, if it was.
    pub rebuilt: Option<String>,
}

/// Durable entries not yet written to sled.
#[derive(Debug, Default)]
struct Tail {
    /// Per stream, (version, position) in ascending versions.
    streams: HashMap<String, Vec<(u64, u64)>>,
    entries: usize,
    /// The position the index (sled and tail together) is complete up to.
    complete: u64,
    /// The completeness marker sled holds (read at open, or last written): a write of an
    /// empty tail with this same marker would change nothing, so it is skipped (every sled
    /// write makes sled's next open regenerate and sync its snapshot).
    stored_complete: u64,
}

pub(crate) struct StreamIndex {
    /// `None` once [`StreamIndex::release`] closed it (at the engine's close), so that no
    /// handle the service still holds keeps sled's lock on the directory.
    db: RwLock<Option<sled::Db>>,
    path: PathBuf,
    tail: RwLock<Tail>,
    /// Serialises every writer (the syncer's inserts and removals, compaction's removals), so a
    /// flush sees a tail no one changes under it.
    /// It guards the streams written most recently (the last entry of each insert; most recent
    /// last, at most [`CACHED_STREAMS_MAX`]): with the streams read most recently, what the
    /// recent file describes at close.
    writer: Mutex<VecDeque<Box<str>>>,
    /// Entries the tail holds before it is written ([`TAIL_ENTRIES_MAX`]; smaller in tests).
    tail_max: usize,
    /// Writes sled's buffered changes to disk in the background (see `flusher.rs`).
    flusher: Flusher,
    /// The last sled chunk of the streams read most recently (see `cache.rs`). Lock order:
    /// `tail` before `cache`.
    cache: Mutex<ChunkCache>,
    /// sled while it opens in the background after an open that found a recent file (see
    /// [`StreamIndex::resolve`]); `Ready` otherwise.
    pending: Mutex<Pending>,
    /// Writes the recent file at release (false for an index in memory).
    persistent: bool,
}

/// Rebuilds an index that opened in the background and turned out unusable: fills the (new,
/// empty) index given with the log's records up to the position given, and flushes it.
pub(crate) type Rebuild = Box<dyn FnOnce(&StreamIndex, u64) -> Result<()> + Send>;

/// Where sled is, for an index whose open answered from the recent file.
enum Pending {
    /// sled is open (or released): [`StreamIndex::db`] is the answer.
    Ready,
    /// sled opens in the background; the first call that needs it waits.
    Opening(Box<Opening>),
    /// The background open and the rebuild after it failed: every call that needs sled fails
    /// with this reason.
    Failed(String),
}

struct Opening {
    opening: IndexOpening,
    /// sled's marker as the recent file recorded it (the index's complete position at open).
    expected: u64,
    rebuild: Rebuild,
}

/// What [`StreamIndex::try_open`] found: the index and its marker, or `None` for contents
/// this code did not write.
type Opened = Result<Option<(StreamIndex, u64)>>;

/// An index being opened on a thread of its own ([`StreamIndex::prepare_open`], then
/// [`IndexOpening::start`]). Dropped without [`IndexOpening::finish`] (the open failed
/// elsewhere), it waits for the outcome and drops it, so no sled handle outlives the failed
/// open and keeps the directory locked.
pub(crate) struct IndexOpening {
    path: PathBuf,
    /// The background open's outcome; `None` when nothing was started (open in line).
    outcome: Option<std::sync::mpsc::Receiver<Opened>>,
    /// Who opens: [`QUEUED`] until the background thread or `finish` claims it.
    claim: Arc<AtomicU8>,
    /// The recent file, read before the background open removed it.
    recent: Option<Recent>,
}

/// [`IndexOpening::claim`]: nobody has started the open yet.
const QUEUED: u8 = 0;
/// The background thread opens.
const IN_BACKGROUND: u8 = 1;
/// `finish` came first and opens in line (the background task, when it runs, does nothing):
/// a blocking pool with no idle thread never makes the open wait for one.
const IN_LINE: u8 = 2;

impl IndexOpening {
    /// Whether a recent file was read, so that [`IndexOpening::finish`] will not wait for
    /// sled: its open can start later ([`StreamIndex::start_opening`]).
    pub(crate) fn answers_from_recent(&self) -> bool {
        self.recent.is_some()
    }

    /// Starts sled's open on a thread of its own, unless it was started or claimed already.
    ///
    /// The thread is one of tokio's blocking pool when called within a runtime (an idle one
    /// starts at once; a new thread took ~170 µs to start running here), else a thread of its
    /// own. Without a thread, the open happens in line when its outcome is first needed.
    pub(crate) fn start(&mut self) {
        if self.outcome.is_some() || self.claim.load(Ordering::Acquire) != QUEUED {
            return;
        }
        let thread_path = self.path.clone();
        let (sender, receiver) = std::sync::mpsc::sync_channel(1);
        let thread_claim = self.claim.clone();
        let open = move || {
            if thread_claim
                .compare_exchange(QUEUED, IN_BACKGROUND, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                return;
            }
            // The receiver waits for this (also when dropped): a send fails only if it is gone.
            let _ = sender.send(StreamIndex::try_open(&thread_path));
        };
        let started = match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                drop(runtime.spawn_blocking(open));
                Ok(())
            }
            Err(_) => std::thread::Builder::new()
                .name("logbook-index-open".into())
                .spawn(open)
                .map(drop),
        };
        match started {
            Ok(()) => self.outcome = Some(receiver),
            // No thread: open on the caller's thread when the outcome is needed.
            Err(error) => {
                tracing::debug!(%error, "index open thread not started; opening in line")
            }
        }
    }

    /// Decides as [`StreamIndex::settle`] does (`log_end` and `salvaged` as there): a sled
    /// error or an unknown format means wipe and rebuild, a marker past the log's end is an
    /// error unless the log was salvaged. An open that never reported (its thread panicked) is
    /// an [`Error::Index`], never a rebuild.
    ///
    /// With a recent file (a clean close wrote it; never after a salvage), the open does not
    /// wait for sled: its marker is checked against `log_end` here, and the index answers from
    /// the recent file and its in-memory tail until a call needs sled (see
    /// [`StreamIndex::resolve`]; `rebuild` is what that call does when sled turns out
    /// unusable).
    pub(crate) fn finish(
        mut self,
        log_end: u64,
        salvaged: bool,
        rebuild: Rebuild,
    ) -> Result<(StreamIndex, IndexReport)> {
        if let Some(recent) = self.recent.take() {
            debug_assert!(!salvaged, "a salvaged open reads no recent file");
            if recent.complete > log_end {
                return Err(Error::Wal(logbook_wal::Error::LogBehind {
                    reached: recent.complete,
                    end: log_end,
                    evidence: format!("as the stream index {} records", self.path.display()),
                }));
            }
            let complete_position = recent.complete;
            let index = StreamIndex::opening(self, recent, rebuild);
            return Ok((
                index,
                IndexReport {
                    complete_position,
                    rebuilt: None,
                },
            ));
        }
        let path = self.path.clone();
        let opened = self.outcome()?;
        StreamIndex::settle(path, opened, log_end, salvaged)
    }

    /// Waits for the background open (or opens in line when no thread started it). The outer
    /// error: the open thread ended without an outcome (it panicked), never a reason to wipe.
    fn outcome(mut self) -> Result<Opened> {
        let in_line = self
            .claim
            .compare_exchange(QUEUED, IN_LINE, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        match self.outcome.take() {
            Some(outcome) if !in_line => outcome.recv().map_err(|_| Error::Index {
                path: self.path.clone(),
                reason: "the index open thread ended without an outcome (it panicked)".to_owned(),
            }),
            _ => Ok(StreamIndex::try_open(&self.path)),
        }
    }
}

impl Drop for IndexOpening {
    fn drop(&mut self) {
        let queued = self
            .claim
            .compare_exchange(QUEUED, IN_LINE, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if let Some(outcome) = self.outcome.take()
            && !queued
        {
            drop(outcome.recv());
        }
    }
}

fn sled_error(path: &Path, error: sled::Error) -> Error {
    Error::Index {
        path: path.to_path_buf(),
        reason: error.to_string(),
    }
}

fn u64_value(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

impl StreamIndex {
    /// An index that lives in memory only (for logs on in-memory storage): rebuilt at open.
    pub(crate) fn temporary() -> Result<(StreamIndex, IndexReport)> {
        let path = PathBuf::from("<memory>");
        let db = sled::Config::new()
            .temporary(true)
            .open()
            .map_err(|error| sled_error(&path, error))?;
        let mut index = StreamIndex::new(Some(db), path);
        index.persistent = false;
        // Nothing to write to disk.
        index.flusher.stop();
        index.insert(&[], 0)?;
        Ok((
            index,
            IndexReport {
                complete_position: 0,
                rebuilt: None,
            },
        ))
    }

    /// Prepares the open of the index of `log_dir` (sled's open is most of the CPU an open
    /// with a snapshot spends, about 1 ms here even for a small index), to run on a thread of
    /// its own once [`IndexOpening::start`] is called, while the caller does other work;
    /// [`IndexOpening::finish`] takes its outcome and decides (see [`StreamIndex::settle`]).
    /// The caller must hold the log's lock: the thread only opens, it never wipes (a wipe is
    /// decided by `finish`, on the caller's thread).
    ///
    /// Unless the log was `salvaged`, the recent file (`recent.rs`) is read first, on the
    /// caller's thread; the background open removes it (durably) before it opens sled. With a
    /// recent file the open need not wait for sled at all: the engine then starts the
    /// background open only after its replay, so that sled's open does not take a core from
    /// the replay's two threads ([`IndexOpening::answers_from_recent`]).
    pub(crate) fn prepare_open(log_dir: &Path, salvaged: bool) -> IndexOpening {
        let path = log_dir.join(INDEX_DIR_NAME);
        let recent = if salvaged { None } else { Recent::read(&path) };
        IndexOpening {
            path,
            outcome: None,
            claim: Arc::new(AtomicU8::new(QUEUED)),
            recent,
        }
    }

    /// Decides on the outcome of [`StreamIndex::try_open`] of `path` (`<log_dir>/index`): any
    /// sled error means wipe and rebuild. A marker
    /// past `log_end` proves the log once held durable records it no longer has: with
    /// `salvaged` false that is [`logbook_wal::Error::LogBehind`] (acknowledged events are
    /// missing: never a reason to drop the evidence); after an explicit salvage the index is
    /// rebuilt (it would point at positions that new appends reuse).
    fn settle(
        path: PathBuf,
        opened: Opened,
        log_end: u64,
        salvaged: bool,
    ) -> Result<(StreamIndex, IndexReport)> {
        match opened {
            Ok(Some((index, complete_position))) if complete_position > log_end && !salvaged => {
                drop(index);
                Err(Error::Wal(logbook_wal::Error::LogBehind {
                    reached: complete_position,
                    end: log_end,
                    evidence: format!("as the stream index {} records", path.display()),
                }))
            }
            Ok(Some((index, complete_position))) if complete_position <= log_end => Ok((
                index,
                IndexReport {
                    complete_position,
                    rebuilt: None,
                },
            )),
            outcome => {
                let reason = match outcome {
                    Err(error) => error.to_string(),
                    Ok(Some((index, complete_position))) => {
                        drop(index);
                        format!(
                            "index complete up to {complete_position}, past the log's end {log_end}"
                        )
                    }
                    Ok(None) => "index format unknown or marker missing".to_owned(),
                };
                tracing::warn!(path = %path.display(), %reason, "rebuilding the stream index");
                let index = Self::wiped(&path)?;
                Ok((
                    index,
                    IndexReport {
                        complete_position: 0,
                        rebuilt: Some(reason),
                    },
                ))
            }
        }
    }

    /// Opens; `Ok(None)` when the contents are not an index this code wrote. The recent file
    /// is removed first (and the removal synced): from here on sled may change.
    fn try_open(path: &Path) -> Opened {
        recent::remove(path).map_err(|source| Error::Io {
            path: recent::path(path),
            source,
        })?;
        let db = sled::Config::new()
            .path(path)
            .mode(sled::Mode::LowSpace)
            .cache_capacity(CACHE_BYTES)
            // No flusher thread started by the open: ours starts at the first change.
            .flush_every_ms(None)
            .open()
            .map_err(|error| sled_error(path, error))?;
        let index = StreamIndex::new(Some(db.clone()), path.to_path_buf());
        let format = db
            .get(FORMAT_KEY)
            .map_err(|error| sled_error(path, error))?;
        match format.as_deref().and_then(u64_value) {
            Some(FORMAT) => {}
            None if db.is_empty() => {
                let mut batch = sled::Batch::default();
                batch.insert(FORMAT_KEY, &FORMAT.to_le_bytes());
                batch.insert(COMPLETE_KEY, &0u64.to_le_bytes());
                db.apply_batch(batch)
                    .map_err(|error| sled_error(path, error))?;
                index.flusher.changed(&db);
            }
            _ => return Ok(None),
        }
        let complete = db
            .get(COMPLETE_KEY)
            .map_err(|error| sled_error(path, error))?;
        let Some(complete) = complete.as_deref().and_then(u64_value) else {
            return Ok(None);
        };
        {
            let mut tail = index.tail_write();
            tail.complete = complete;
            tail.stored_complete = complete;
        }
        Ok(Some((index, complete)))
    }

    fn new(db: Option<sled::Db>, path: PathBuf) -> StreamIndex {
        StreamIndex {
            db: RwLock::new(db),
            path,
            tail: RwLock::new(Tail::default()),
            writer: Mutex::new(VecDeque::new()),
            tail_max: TAIL_ENTRIES_MAX,
            flusher: Flusher::default(),
            cache: Mutex::new(ChunkCache::default()),
            pending: Mutex::new(Pending::Ready),
            persistent: true,
        }
    }

    /// An index whose sled is still opening in the background: complete up to the recent
    /// file's marker, its streams' last chunks in the cache.
    fn opening(opening: IndexOpening, recent: Recent, rebuild: Rebuild) -> StreamIndex {
        let index = StreamIndex::new(None, opening.path.clone());
        {
            let mut tail = index.tail_write();
            tail.complete = recent.complete;
            tail.stored_complete = recent.complete;
        }
        {
            let mut cache = index.lock_cache();
            // Most recently used first in the file, last in the cache.
            for (stream, known) in recent.streams.into_iter().rev() {
                let generation = cache.generation();
                cache.store(generation, &stream, known);
            }
        }
        *index.lock_pending() = Pending::Opening(Box::new(Opening {
            opening,
            expected: recent.complete,
            rebuild,
        }));
        index
    }

    /// Starts sled's background open if the index still answers from its recent file and the
    /// open has not started (the engine calls this once its replay is done).
    pub(crate) fn start_opening(&self) {
        if let Pending::Opening(opening) = &mut *self.lock_pending() {
            opening.opening.start();
        }
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The sled database; [`Error::Closed`] once released. (A clone of sled's handle: it lives
    /// only for the call that asked for it.) Waits for sled's background open, if any.
    fn db(&self) -> Result<sled::Db> {
        if let Some(db) = self.current_db() {
            return Ok(db);
        }
        self.resolve()?;
        self.current_db().ok_or(Error::Closed)
    }

    fn current_db(&self) -> Option<sled::Db> {
        self.db
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Waits for sled's background open and takes its handle. sled must hold what the recent
    /// file said (its marker as recorded); anything else (an error, an unknown format, another
    /// marker) means the index on disk cannot be trusted: it is wiped and rebuilt from the log
    /// up to that marker (the entries past it are in the tail), on this thread, before the
    /// call that needed sled goes on. A failure here fails every later call that needs sled.
    fn resolve(&self) -> Result<()> {
        let mut pending = self.lock_pending();
        let opening = match std::mem::replace(&mut *pending, Pending::Ready) {
            Pending::Ready => return Ok(()),
            Pending::Failed(reason) => {
                *pending = Pending::Failed(reason.clone());
                return Err(self.malformed(reason));
            }
            Pending::Opening(opening) => opening,
        };
        let Opening {
            opening,
            expected,
            rebuild,
        } = *opening;
        let attached = (|| -> Result<()> {
            // A background open that panicked is an error here too, never a rebuild.
            let (fresh, rebuilt) = match opening.outcome()? {
                Ok(Some((fresh, complete))) if complete == expected => (fresh, false),
                outcome => {
                    let reason = match outcome {
                        Err(error) => error.to_string(),
                        Ok(Some((fresh, complete))) => {
                            drop(fresh);
                            format!(
                                "index complete up to {complete}, its recent file said {expected}"
                            )
                        }
                        Ok(None) => "index format unknown or marker missing".to_owned(),
                    };
                    tracing::warn!(path = %self.path.display(), %reason, "rebuilding the stream index");
                    let fresh = Self::wiped(&self.path)?;
                    rebuild(&fresh, expected)?;
                    (fresh, true)
                }
            };
            fresh.flusher.stop();
            let db = fresh
                .db
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .take();
            *self
                .db
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) = db;
            if rebuilt {
                self.lock_cache().clear();
            }
            Ok(())
        })();
        if let Err(error) = &attached {
            *pending = Pending::Failed(error.to_string());
        }
        attached
    }

    /// Removes the index directory and opens a new, empty index there.
    fn wiped(path: &Path) -> Result<StreamIndex> {
        if path.exists() {
            std::fs::remove_dir_all(path).map_err(|source| Error::Io {
                path: path.to_path_buf(),
                source,
            })?;
        }
        let (index, _) = Self::try_open(path)?.ok_or_else(|| Error::Index {
            path: path.to_path_buf(),
            reason: "a new index could not be initialised".to_owned(),
        })?;
        Ok(index)
    }

    /// Flushes (as [`StreamIndex::flush`]) and closes the database, releasing its lock on the
    /// directory; later calls fail with [`Error::Closed`]. A second call does nothing.
    ///
    /// After a clean flush, writes the recent file (best effort: without it the next open
    /// waits for sled).
    pub(crate) fn release(&self) -> Result<()> {
        // The flush thread holds a handle of its own: stopped first, so that sled's lock is
        // free once this returns.
        self.flusher.stop();
        let resolved = self.resolve();
        // Held to the end: no index write (compaction's, say) comes between the final flush,
        // the recent file that describes it and the release.
        let writer = self.lock_writer();
        let flushed = if resolved.is_ok() && self.current_db().is_some() {
            let flushed = self.flush_locked();
            if flushed.is_ok()
                && self.persistent
                && let Err(error) = self.write_recent(&writer)
            {
                tracing::warn!(path = %self.path.display(), %error, "recent file not written");
            }
            flushed
        } else {
            Ok(())
        };
        drop(
            self.db
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .take(),
        );
        self.lock_cache().clear();
        resolved.and(flushed)
    }

    /// Writes the recent file: sled's marker and the last chunk of the streams read and
    /// written most recently (at most [`CACHED_STREAMS_MAX`]). Called after the final flush,
    /// when the tail is empty and sled's marker is the index's.
    fn write_recent(&self, written: &VecDeque<Box<str>>) -> Result<()> {
        let complete = {
            let tail = self.tail_read();
            if !tail.streams.is_empty() || tail.complete != tail.stored_complete {
                return Ok(());
            }
            tail.stored_complete
        };
        let read = self.lock_cache().most_recent_first();
        let mut streams: Vec<(String, Known)> = Vec::new();
        for stream in read.iter().chain(written.iter().rev()).map(|name| &**name) {
            if streams.len() == CACHED_STREAMS_MAX {
                break;
            }
            let valid = (1..=logbook_projection::STREAM_ID_BYTES_MAX).contains(&stream.len());
            if !valid || streams.iter().any(|(seen, _)| seen == stream) {
                continue;
            }
            let Some(known) = self.last_chunk(stream, false)? else {
                continue;
            };
            streams.push((stream.into(), known));
        }
        Recent { complete, streams }
            .write(&self.path)
            .map_err(|source| Error::Io {
                path: recent::path(&self.path),
                source,
            })
    }

    /// Remembers `stream` as the most recently written.
    fn note_written(written: &mut VecDeque<Box<str>>, stream: &str) {
        if written.back().is_some_and(|last| &**last == stream) {
            return;
        }
        written.retain(|name| &**name != stream);
        if written.len() == CACHED_STREAMS_MAX {
            written.pop_front();
        }
        written.push_back(stream.into());
    }

    fn tail_read(&self) -> std::sync::RwLockReadGuard<'_, Tail> {
        self.tail
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn tail_write(&self) -> std::sync::RwLockWriteGuard<'_, Tail> {
        self.tail
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, ChunkCache> {
        self.cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn lock_writer(&self) -> std::sync::MutexGuard<'_, VecDeque<Box<str>>> {
        self.writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn malformed(&self, reason: String) -> Error {
        Error::Index {
            path: self.path.clone(),
            reason,
        }
    }

    /// The decoded chunk `chunk` of `stream` (empty when absent).
    fn chunk(&self, stream: &str, chunk: u64) -> Result<Vec<(u64, u64)>> {
        let value = self
            .db()?
            .get(chunk::key(stream, chunk))
            .map_err(|error| sled_error(&self.path, error))?;
        match value {
            Some(value) => chunk::decode(chunk, &value).map_err(|reason| self.malformed(reason)),
            None => Ok(Vec::new()),
        }
    }

    /// A sled item of `stream`'s chunk range: its chunk number and decoded entries.
    fn chunk_item(
        &self,
        stream: &str,
        item: sled::Result<(sled::IVec, sled::IVec)>,
    ) -> Result<(u64, Vec<(u64, u64)>)> {
        let (key, value) = item.map_err(|error| sled_error(&self.path, error))?;
        let number = chunk::chunk_number(stream, &key)
            .ok_or_else(|| self.malformed("malformed chunk key".to_owned()))?;
        let entries = chunk::decode(number, &value).map_err(|reason| self.malformed(reason))?;
        Ok((number, entries))
    }

    /// The highest chunk sled holds of `stream` (`Some(None)`: it holds none), from the cache
    /// when it is there; otherwise read from sled and remembered, unless `memory_only`, which
    /// answers `None` instead.
    fn last_chunk(&self, stream: &str, memory_only: bool) -> Result<Option<Known>> {
        let generation = {
            let mut cache = self.lock_cache();
            if let Some(known) = cache.get(stream) {
                return Ok(Some(known));
            }
            cache.generation()
        };
        if memory_only {
            return Ok(None);
        }
        let keys = chunk::key(stream, 0)..=chunk::key(stream, u64::MAX);
        let known = match self.db()?.range(keys).next_back() {
            None => None,
            Some(item) => {
                let (number, entries) = self.chunk_item(stream, item)?;
                Some(Arc::new(LastChunk { number, entries }))
            }
        };
        self.lock_cache().store(generation, stream, known.clone());
        Ok(Some(known))
    }

    /// Records `(stream, version, position)` entries (ascending positions) and that the index
    /// is complete up to `complete_position`. Writes the tail to sled when it is full.
    pub(crate) fn insert(
        &self,
        entries: &[(String, u64, u64)],
        complete_position: u64,
    ) -> Result<()> {
        let mut written = self.lock_writer();
        let full = {
            let mut tail = self.tail_write();
            for (stream, version, position) in entries {
                let versions = tail.streams.entry(stream.clone()).or_default();
                debug_assert!(versions.last().is_none_or(|&(last, _)| last < *version));
                versions.push((*version, *position));
            }
            tail.entries += entries.len();
            debug_assert!(complete_position >= tail.complete || complete_position == 0);
            tail.complete = complete_position;
            tail.entries >= self.tail_max
        };
        if let Some((stream, _, _)) = entries.last() {
            Self::note_written(&mut written, stream);
        }
        if full { self.write_tail() } else { Ok(()) }
    }

    /// Merges the tail into its chunks and writes them with the marker in one sled batch.
    /// The caller holds the writer lock.
    fn write_tail(&self) -> Result<()> {
        let mut batch = sled::Batch::default();
        let complete = {
            let tail = self.tail_read();
            if tail.streams.is_empty() && tail.complete == tail.stored_complete {
                return Ok(());
            }
            for (stream, versions) in &tail.streams {
                for group in versions.chunk_by(|a, b| chunk::chunk_of(a.0) == chunk::chunk_of(b.0))
                {
                    let number = chunk::chunk_of(group[0].0);
                    let merged = chunk::merge(self.chunk(stream, number)?, group);
                    batch.insert(chunk::key(stream, number), chunk::encode(&merged));
                }
            }
            tail.complete
        };
        batch.insert(COMPLETE_KEY, &complete.to_le_bytes());
        let db = self.db()?;
        db.apply_batch(batch)
            .map_err(|error| sled_error(&self.path, error))?;
        self.flusher.changed(&db);
        let mut tail = self.tail_write();
        {
            // After sled changed and before the tail empties: a reader that saw the tail
            // before this point may still be served the old chunk, whose entries the tail it
            // copied completes; one after it reads sled afresh.
            let mut cache = self.lock_cache();
            for stream in tail.streams.keys() {
                cache.invalidate(stream);
            }
        }
        tail.streams.clear();
        tail.entries = 0;
        tail.stored_complete = complete;
        Ok(())
    }

    /// The (version, position) pairs of a stream from `from_version`, at most `max`, among
    /// versions at or above `visible_from`.
    pub(crate) fn range(
        &self,
        stream: &str,
        from_version: u64,
        visible_from: u64,
        direction: Direction,
        max: usize,
    ) -> Result<Vec<(u64, u64)>> {
        // Allowed to read sled, `select` always answers.
        let selected = self.select(stream, from_version, visible_from, direction, max, false)?;
        Ok(selected.unwrap_or_default())
    }

    /// Whether sled's handle is here (its background open was taken, see `resolve`): a query
    /// then never waits for that open, nor for a rebuild of the index from the log, which a
    /// read on the caller's thread must not do.
    pub(crate) fn sled_ready(&self) -> bool {
        self.current_db().is_some()
    }

    /// As [`StreamIndex::range`] when the answer is in memory (the tail and the cache of
    /// streams' last chunks), `None` when it would need sled, whose reads may wait for the
    /// disk: what a read on the caller's thread asks first.
    pub(crate) fn range_in_memory(
        &self,
        stream: &str,
        from_version: u64,
        visible_from: u64,
        direction: Direction,
        max: usize,
    ) -> Result<Option<Vec<(u64, u64)>>> {
        self.select(stream, from_version, visible_from, direction, max, true)
    }

    /// [`StreamIndex::range`]; with `memory_only`, `None` instead of reading sled.
    fn select(
        &self,
        stream: &str,
        from_version: u64,
        visible_from: u64,
        direction: Direction,
        max: usize,
        memory_only: bool,
    ) -> Result<Option<Vec<(u64, u64)>>> {
        let mut selected = Vec::new();
        if max == 0 {
            return Ok(Some(selected));
        }
        // The tail first, then sled: a flush writes sled (and invalidates the cache) before it
        // empties the tail, so every entry is seen at least once (twice at worst, removed below
        // by version). Only the tail entries a page can use are copied (the tail holds up to
        // 16K entries).
        let tail: Vec<(u64, u64)> = {
            let tail = self.tail_read();
            let versions = tail.streams.get(stream).map_or(&[][..], Vec::as_slice);
            match direction {
                Direction::Forward => {
                    let low = from_version.max(visible_from);
                    let start = versions.partition_point(|entry| entry.0 < low);
                    versions[start..].iter().take(max).copied().collect()
                }
                Direction::Backward => {
                    let end = versions.partition_point(|entry| entry.0 <= from_version);
                    versions[..end]
                        .iter()
                        .rev()
                        .take_while(|entry| entry.0 >= visible_from)
                        .take(max)
                        .copied()
                        .collect()
                }
            }
        };
        match direction {
            Direction::Forward => {
                let low = from_version.max(visible_from);
                let first_chunk = chunk::chunk_of(low);
                let Some(last) = self.last_chunk(stream, memory_only)? else {
                    return Ok(None);
                };
                match last.as_deref() {
                    // sled holds nothing of the stream at or above `low`'s chunk.
                    None => {}
                    Some(last) if last.number < first_chunk => {}
                    // The stream's end: the one chunk the page needs from sled is in memory.
                    Some(last) if last.number == first_chunk => {
                        let from_chunk = last.entries.iter().filter(|entry| entry.0 >= low);
                        selected.extend(from_chunk.take(max).copied());
                    }
                    Some(_) if memory_only => return Ok(None),
                    Some(_) => {
                        let keys = chunk::key(stream, first_chunk)..=chunk::key(stream, u64::MAX);
                        'chunks: for item in self.db()?.range(keys) {
                            let (_, entries) = self.chunk_item(stream, item)?;
                            for entry in entries.into_iter().filter(|entry| entry.0 >= low) {
                                selected.push(entry);
                                if selected.len() == max {
                                    break 'chunks;
                                }
                            }
                        }
                    }
                }
                let last = selected.last().map(|entry| entry.0);
                let fresh = tail
                    .into_iter()
                    .filter(|entry| last.is_none_or(|last| entry.0 > last));
                selected.extend(fresh.take(max - selected.len()));
            }
            Direction::Backward => {
                if from_version < visible_from {
                    return Ok(Some(selected));
                }
                let in_range = |version: u64| version >= visible_from && version <= from_version;
                selected.extend(tail);
                let below = selected.last().map(|entry| entry.0);
                let wanted =
                    |version: u64| in_range(version) && below.is_none_or(|below| version < below);
                if selected.len() == max {
                    return Ok(Some(selected));
                }
                let Some(last) = self.last_chunk(stream, memory_only)? else {
                    return Ok(None);
                };
                // sled holds no chunk of the stream.
                let Some(last) = last else {
                    return Ok(Some(selected));
                };
                let (low, high) = (chunk::chunk_of(visible_from), chunk::chunk_of(from_version));
                let mut sled_high = Some(high);
                if last.number <= high {
                    // The stream's last chunk, from memory: most backward pages end here.
                    for &entry in last.entries.iter().rev() {
                        if wanted(entry.0) {
                            selected.push(entry);
                            if selected.len() == max {
                                return Ok(Some(selected));
                            }
                        }
                    }
                    sled_high = last.number.checked_sub(1);
                }
                let Some(sled_high) = sled_high.filter(|&sled_high| sled_high >= low) else {
                    return Ok(Some(selected));
                };
                if memory_only {
                    return Ok(None);
                }
                let keys = chunk::key(stream, low)..=chunk::key(stream, sled_high);
                'back: for item in self.db()?.range(keys).rev() {
                    let (_, entries) = self.chunk_item(stream, item)?;
                    for entry in entries.into_iter().rev() {
                        if wanted(entry.0) {
                            selected.push(entry);
                            if selected.len() == max {
                                break 'back;
                            }
                        }
                    }
                }
            }
        }
        Ok(Some(selected))
    }

    /// Removes a stream's entries below `before_version` (all of them for `u64::MAX`); returns
    /// how many sled chunks were touched.
    pub(crate) fn remove(&self, stream: &str, before_version: u64) -> Result<u64> {
        let _writer = self.lock_writer();
        {
            let mut tail = self.tail_write();
            let mut removed = 0;
            if let Some(versions) = tail.streams.get_mut(stream) {
                let before = versions.len();
                versions.retain(|entry| entry.0 >= before_version);
                removed = before - versions.len();
                if versions.is_empty() {
                    tail.streams.remove(stream);
                }
            }
            tail.entries -= removed;
        }
        let mut batch = sled::Batch::default();
        let mut touched = 0;
        let last = chunk::chunk_of(before_version);
        for item in self
            .db()?
            .range(chunk::key(stream, 0)..=chunk::key(stream, last))
        {
            let (key, value) = item.map_err(|error| sled_error(&self.path, error))?;
            let number = chunk::chunk_number(stream, &key)
                .ok_or_else(|| self.malformed("malformed chunk key".to_owned()))?;
            touched += 1;
            if number < last || before_version == u64::MAX {
                batch.remove(key);
                continue;
            }
            let kept: Vec<(u64, u64)> = chunk::decode(number, &value)
                .map_err(|reason| self.malformed(reason))?
                .into_iter()
                .filter(|entry| entry.0 >= before_version)
                .collect();
            if kept.is_empty() {
                batch.remove(key);
            } else {
                batch.insert(key, chunk::encode(&kept));
            }
        }
        let db = self.db()?;
        let applied = db.apply_batch(batch);
        self.lock_cache().invalidate(stream);
        applied.map_err(|error| sled_error(&self.path, error))?;
        self.flusher.changed(&db);
        Ok(touched)
    }

    /// Removes one entry (a record compaction dropped).
    pub(crate) fn remove_entry(&self, stream: &str, version: u64) -> Result<()> {
        let _writer = self.lock_writer();
        {
            let mut tail = self.tail_write();
            if let Some(versions) = tail.streams.get_mut(stream)
                && let Ok(at) = versions.binary_search_by_key(&version, |entry| entry.0)
            {
                versions.remove(at);
                tail.entries -= 1;
                return Ok(());
            }
        }
        let number = chunk::chunk_of(version);
        let mut entries = self.chunk(stream, number)?;
        let before = entries.len();
        entries.retain(|entry| entry.0 != version);
        if entries.len() == before {
            return Ok(());
        }
        let key = chunk::key(stream, number);
        let db = self.db()?;
        let outcome = if entries.is_empty() {
            db.remove(key).map(|_| ())
        } else {
            db.insert(key, chunk::encode(&entries)).map(|_| ())
        };
        self.lock_cache().invalidate(stream);
        outcome.map_err(|error| sled_error(&self.path, error))?;
        self.flusher.changed(&db);
        Ok(())
    }

    /// Writes the tail and flushes sled's buffers to disk (at close; best effort durability
    /// of derived data: whatever is lost is caught up from the WAL at the next open).
    pub(crate) fn flush(&self) -> Result<()> {
        let _writer = self.lock_writer();
        self.flush_locked()
    }

    /// [`StreamIndex::flush`], the writer lock held by the caller.
    fn flush_locked(&self) -> Result<()> {
        self.write_tail()?;
        self.db()?
            .flush()
            .map(|_| ())
            .map_err(|error| sled_error(&self.path, error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[derive(Debug, Clone)]
    enum Op {
        /// Append `count` versions to stream `stream`.
        Append {
            stream: usize,
            count: u64,
        },
        Truncate {
            stream: usize,
            before: u64,
        },
        Delete {
            stream: usize,
        },
        DropEntry {
            stream: usize,
            version: u64,
        },
        Flush,
        Read {
            stream: usize,
            from: u64,
            backward: bool,
            max: usize,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0..4usize, 1..1200u64).prop_map(|(stream, count)| Op::Append { stream, count }),
            1 => (0..4usize, 0..6000u64).prop_map(|(stream, before)| Op::Truncate { stream, before }),
            1 => (0..4usize).prop_map(|stream| Op::Delete { stream }),
            2 => (0..4usize, 0..6000u64)
                .prop_map(|(stream, version)| Op::DropEntry { stream, version }),
            1 => Just(Op::Flush),
            4 => (0..4usize, 0..7000u64, any::<bool>(), 1..3000usize)
                .prop_map(|(stream, from, backward, max)| Op::Read { stream, from, backward, max }),
        ]
    }

    fn name(stream: usize) -> String {
        // Prefixes of each other on purpose: chunk keys must not leak across streams.
        "s".repeat(stream + 1)
    }

    /// Reads across chunk boundaries, with part of the stream in sled and part in the tail.
    #[test]
    fn ranges_cross_chunk_boundaries() {
        let (index, _) = StreamIndex::temporary().unwrap();
        let chunk = chunk::CHUNK_VERSIONS;
        let versions = 3 * chunk + 7;
        let entries: Vec<(String, u64, u64)> = (0..versions)
            .map(|version| ("room/a".to_owned(), version, 10 + 2 * version))
            .collect();
        let (flushed, tail) = entries.split_at((2 * chunk + 3) as usize);
        index.insert(flushed, 10 + 2 * (2 * chunk + 2)).unwrap();
        index.flush().unwrap();
        index.insert(tail, 10 + 2 * (versions - 1)).unwrap();
        index.remove_entry("room/a", chunk).unwrap();
        index.remove("room/a", 5).unwrap();
        let all: Vec<(u64, u64)> = (5..versions)
            .filter(|&version| version != chunk)
            .map(|version| (version, 10 + 2 * version))
            .collect();
        let forward = index
            .range(
                "room/a",
                chunk - 2,
                5,
                Direction::Forward,
                2 * chunk as usize,
            )
            .unwrap();
        let start = all.iter().position(|entry| entry.0 == chunk - 2).unwrap();
        assert_eq!(forward, all[start..start + 2 * chunk as usize].to_vec());
        let backward = index
            .range("room/a", u64::MAX, 5, Direction::Backward, usize::MAX)
            .unwrap();
        assert_eq!(backward, all.iter().rev().copied().collect::<Vec<_>>());
        // A stream whose id is a prefix of another's shares no chunk with it.
        assert!(
            index
                .range("room/", 0, 0, Direction::Forward, 10)
                .unwrap()
                .is_empty()
        );
    }

    /// A flush (a close) that would write an empty tail with the marker sled already holds
    /// writes nothing: sled then has no bytes to flush, and its next open no new snapshot to
    /// generate and sync. After a reopen the marker read back counts as written too.
    #[test]
    fn a_flush_that_changes_nothing_writes_nothing_to_sled() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(INDEX_DIR_NAME);
        let flushed_bytes = |index: &StreamIndex| index.db().unwrap().flush().unwrap();
        {
            let (index, complete) = StreamIndex::try_open(&path).unwrap().unwrap();
            assert_eq!(complete, 0);
            index
                .insert(
                    &[("room/a".to_owned(), 0, 1), ("room/a".to_owned(), 1, 2)],
                    2,
                )
                .unwrap();
            index.flush().unwrap();
            index.write_tail().unwrap();
            assert_eq!(flushed_bytes(&index), 0, "the second write wrote nothing");
            // A marker that moved (records of other streams) is written.
            index.insert(&[], 3).unwrap();
            index.write_tail().unwrap();
            assert!(flushed_bytes(&index) > 0, "the new marker was written");
            index.release().unwrap();
        }
        let (index, complete) = StreamIndex::try_open(&path).unwrap().unwrap();
        assert_eq!(complete, 3);
        flushed_bytes(&index);
        index.write_tail().unwrap();
        assert_eq!(
            flushed_bytes(&index),
            0,
            "a reopen with nothing new writes nothing"
        );
        assert_eq!(
            index
                .range("room/a", u64::MAX, 0, Direction::Backward, 10)
                .unwrap(),
            vec![(1, 2), (0, 1)]
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// The index (tail + chunks, with flushes at any point) answers every range query like
        /// a plain ordered map of the same entries.
        #[test]
        fn index_matches_a_model(ops in proptest::collection::vec(op(), 1..60), tail_max in 1..3000usize) {
            let (mut index, _) = StreamIndex::temporary().unwrap();
            index.tail_max = tail_max;
            let mut model: Vec<BTreeMap<u64, u64>> = vec![BTreeMap::new(); 4];
            let mut next_version = [0u64; 4];
            let mut visible = [0u64; 4];
            let mut position = 0u64;
            for op in ops {
                match op {
                    Op::Append { stream, count } => {
                        let mut entries = Vec::new();
                        for _ in 0..count {
                            position += 1;
                            let version = next_version[stream];
                            next_version[stream] += 1;
                            entries.push((name(stream), version, position));
                            model[stream].insert(version, position);
                        }
                        index.insert(&entries, position).unwrap();
                    }
                    Op::Truncate { stream, before } => {
                        index.remove(&name(stream), before).unwrap();
                        model[stream].retain(|&version, _| version >= before);
                        visible[stream] = visible[stream].max(before);
                    }
                    Op::Delete { stream } => {
                        index.remove(&name(stream), u64::MAX).unwrap();
                        model[stream].clear();
                        visible[stream] = u64::MAX;
                    }
                    Op::DropEntry { stream, version } => {
                        index.remove_entry(&name(stream), version).unwrap();
                        model[stream].remove(&version);
                    }
                    Op::Flush => index.flush().unwrap(),
                    Op::Read { stream, from, backward, max } => {
                        let visible_from = visible[stream].min(next_version[stream]);
                        let direction = if backward { Direction::Backward } else { Direction::Forward };
                        let got = index.range(&name(stream), from, visible_from, direction, max).unwrap();
                        // From memory when it can be: the same answer.
                        let in_memory = index
                            .range_in_memory(&name(stream), from, visible_from, direction, max)
                            .unwrap();
                        if let Some(in_memory) = in_memory {
                            prop_assert_eq!(&in_memory, &got);
                        }
                        let expected: Vec<(u64, u64)> = if backward {
                            if from < visible_from {
                                Vec::new()
                            } else {
                                model[stream].range(visible_from..=from).rev().take(max)
                                    .map(|(v, p)| (*v, *p)).collect()
                            }
                        } else {
                            model[stream].range(from.max(visible_from)..).take(max)
                                .map(|(v, p)| (*v, *p)).collect()
                        };
                        prop_assert_eq!(got, expected);
                    }
                }
                let tail = index.tail_read();
                let counted: usize = tail.streams.values().map(Vec::len).sum();
                prop_assert_eq!(counted, tail.entries);
                prop_assert!(tail.entries < index.tail_max);
            }
        }
    }
}
