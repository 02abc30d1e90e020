//! A [`MemoryStorage`] whose files' `sync_data` calls go through a test's hook: to slow them
//! down like a disk's fsync, to see when one runs, or to record which thread made it.
//!
//! Owns: the pass-through `Storage`/`StorageFile` wrappers (every other call goes straight to
//! the memory storage). Must never change what a call does to the bytes: the hook decides only
//! what happens around the real sync, which it must call to let it happen.

use logbook_wal::storage::LockGuard;
use logbook_wal::{MemoryStorage, OpenMode, Storage, StorageFile};
use std::fmt::Debug;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What happens around each `sync_data` of a file of a [`HookedStorage`].
pub trait SyncHook: Debug + Send + Sync {
    /// Called in place of the sync of the file at `path`; `sync` is the real one.
    fn sync_data(&self, path: &Path, sync: &dyn Fn() -> io::Result<()>) -> io::Result<()>;
}

/// A [`MemoryStorage`] whose files' syncs go through `hook`.
#[derive(Debug, Clone)]
pub struct HookedStorage {
    /// The storage underneath (clone it to reopen the same files without the hook).
    pub inner: MemoryStorage,
    hook: Arc<dyn SyncHook>,
}

impl HookedStorage {
    /// `inner` with every file's sync going through `hook`.
    pub fn new(inner: MemoryStorage, hook: Arc<dyn SyncHook>) -> HookedStorage {
        HookedStorage { inner, hook }
    }
}

#[derive(Debug)]
struct HookedFile {
    inner: Arc<dyn StorageFile>,
    path: PathBuf,
    hook: Arc<dyn SyncHook>,
}

impl StorageFile for HookedFile {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read_at(offset, buf)
    }

    fn write_all_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.inner.write_all_at(offset, buf)
    }

    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.hook.sync_data(&self.path, &|| self.inner.sync_data())
    }
}

impl Storage for HookedStorage {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.inner.create_dir_all(dir)
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.inner.list_dir(dir)
    }

    fn exists(&self, path: &Path) -> bool {
        self.inner.exists(path)
    }

    fn open_file(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>> {
        Ok(Arc::new(HookedFile {
            inner: self.inner.open_file(path, mode)?,
            path: path.to_path_buf(),
            hook: self.hook.clone(),
        }))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.inner.remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.inner.sync_dir(dir)
    }

    fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn LockGuard>>> {
        self.inner.try_lock(path)
    }
}
