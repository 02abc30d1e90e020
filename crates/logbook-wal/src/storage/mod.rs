//! The storage seam: every byte the WAL reads or writes goes through these two traits.
//!
//! Owns: the minimal set of file-system operations the WAL needs (positional reads and writes,
//! length changes, data sync, directory listing, rename, removal, directory sync and the
//! exclusive directory lock). Must never: buffer, retry or reorder anything itself; durability
//! decisions belong to the WAL, which must see every failure exactly as the OS reported it.
//!
//! Two implementations: [`FileStorage`] (the real file system) and [`MemoryStorage`] (keeps
//! written-but-unsynced bytes apart so tests can crash, tear and fail on demand).

mod file;
mod memory;

pub use file::{FileStorage, LOCK_HOLDER_BYTES_MAX, lock_holder};
pub use memory::{CrashMode, FaultKind, FaultOp, MemoryStorage};

use std::fmt::Debug;
use std::io;
use std::path::Path;
use std::sync::Arc;

/// How [`Storage::open_file`] opens a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Existing file, reads only.
    Read,
    /// Existing file, reads and writes.
    ReadWrite,
    /// A new file that must not exist yet, reads and writes (mode 0600 on Unix).
    CreateNew,
}

/// A handle on one open file. All access is positional, so one handle serves a writer and
/// any number of readers at once.
// `len` is a fallible query of a file, not the size of a collection: no `is_empty` wanted.
#[allow(clippy::len_without_is_empty)]
pub trait StorageFile: Send + Sync + Debug {
    /// Reads up to `buf.len()` bytes at `offset`; returns how many were read (0 at the end).
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize>;
    /// Writes all of `buf` at `offset`, extending the file if needed.
    fn write_all_at(&self, offset: u64, buf: &[u8]) -> io::Result<()>;
    /// The current length in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Truncates or extends the file.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Makes the file's data (and the metadata needed to read it back) durable: `fdatasync`.
    fn sync_data(&self) -> io::Result<()>;

    /// Reads exactly `buf.len()` bytes at `offset`, or fails with `UnexpectedEof`.
    fn read_exact_at(&self, mut offset: u64, mut buf: &mut [u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let read = self.read_at(offset, buf)?;
            if read == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "short read"));
            }
            buf = &mut buf[read..];
            offset += read as u64;
        }
        Ok(())
    }
}

/// A held exclusive lock; dropping it releases the lock.
pub trait LockGuard: Send + Sync + Debug {}

/// The file-system operations the WAL uses.
pub trait Storage: Send + Sync + Debug {
    /// Creates a directory and its parents (mode 0700 on Unix).
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// The names of the entries in a directory (not sorted).
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// True when the path exists.
    fn exists(&self, path: &Path) -> bool;
    /// Opens a file.
    fn open_file(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>>;
    /// Removes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Atomically renames a file, replacing any file at `to`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes the directory's entries (creations, removals, renames) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Takes an exclusive lock on `path` (created if missing). `Ok(None)` when another holder
    /// has it.
    fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn LockGuard>>>;

    /// True when paths name real files, so other components (the engine's sled index) may
    /// keep files of their own beside the log. False for in-memory storage.
    fn is_file_system(&self) -> bool {
        false
    }
}
