//! The real file system, through `std::fs` positional I/O.
//!
//! Owns: mapping the [`Storage`] operations onto Unix system calls, with files created 0600 and
//! directories 0700. Must never: add buffering or hide an error (a failed `fdatasync` must reach
//! the WAL so it can poison itself). The one exception is the lock holder's PID written into
//! `LOCK` ([`lock_holder`]): a hint for the error a refused writer prints, never used to decide
//! anything, so failing to write or read it changes nothing.

use super::{LockGuard, OpenMode, Storage, StorageFile};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;

/// [`Storage`] on the real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct FileStorage;

impl FileStorage {
    /// The real file system.
    pub fn new() -> Self {
        FileStorage
    }
}

#[derive(Debug)]
struct RealFile(File);

impl StorageFile for RealFile {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.0.read_at(buf, offset) {
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }

    fn write_all_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.0.write_all_at(buf, offset)
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
}

#[derive(Debug)]
struct FileLock(#[allow(dead_code)] File);

impl LockGuard for FileLock {}

impl Storage for FileStorage {
    fn is_file_system(&self) -> bool {
        true
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if let Some(name) = entry.file_name().to_str() {
                names.push(name.to_owned());
            }
        }
        Ok(names)
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn open_file(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>> {
        let mut options = OpenOptions::new();
        match mode {
            OpenMode::Read => options.read(true),
            OpenMode::ReadWrite => options.read(true).write(true),
            OpenMode::CreateNew => options.read(true).write(true).create_new(true).mode(0o600),
        };
        Ok(Arc::new(RealFile(options.open(path)?)))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        // The parent of a relative one-component path (`log`) is the empty path: the current
        // directory.
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        File::open(dir)?.sync_all()
    }

    fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn LockGuard>>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)?;
        match file.try_lock() {
            Ok(()) => {
                write_lock_holder(&file);
                Ok(Some(Box::new(FileLock(file))))
            }
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(error)) => Err(error),
        }
    }
}

/// The most bytes of `LOCK` [`lock_holder`] reads: a decimal PID and a newline fit in 11.
pub const LOCK_HOLDER_BYTES_MAX: usize = 32;

/// Records this process as the holder of the lock just taken on `file`: its PID in decimal and
/// a newline, replacing what an earlier holder wrote. Errors are ignored: the PID is a hint.
// Durability: none wanted; the PID only names the holder while it holds the lock (a crash
// leaves a stale PID that the next holder overwrites when it takes the lock).
//
// The file is written in place and cut only when it was longer: truncating it on every open (a
// change of size the file system journals) cost up to ~0.3 ms of an open; a PID of the same
// length (or the same PID, a process that opens again) needs no size change at all.
fn write_lock_holder(file: &File) {
    let line = format!("{}\n", std::process::id());
    let mut found = [0u8; LOCK_HOLDER_BYTES_MAX + 1];
    let read = file.read_at(&mut found, 0).unwrap_or(found.len());
    if found.get(..read) == Some(line.as_bytes()) {
        return;
    }
    if file.write_all_at(line.as_bytes(), 0).is_ok() && read > line.len() {
        let _ = file.set_len(line.len() as u64);
    }
}

/// The process that holds (or last held) the lock file `path`, as its holder recorded it
/// (`<pid>\n`); `None` when the file cannot be read, is empty (a holder from before the PID was
/// recorded, or one between taking the lock and writing its PID) or holds anything else. Only a
/// hint for a refused writer's error: the lock itself is the `File::try_lock`.
pub fn lock_holder(path: &Path) -> Option<u32> {
    let file = File::open(path).ok()?;
    let mut buf = [0u8; LOCK_HOLDER_BYTES_MAX];
    let read = file.read_at(&mut buf, 0).ok()?;
    let text = std::str::from_utf8(buf.get(..read)?).ok()?;
    let pid = text.strip_suffix('\n')?;
    if pid.is_empty() || !pid.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok().filter(|pid| *pid > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_holder_is_this_process_and_garbage_names_none() {
        let temp = tempfile::tempdir().expect("tempdir");
        let path = temp.path().join("LOCK");
        let storage = FileStorage::new();
        let guard = storage.try_lock(&path).expect("lock").expect("free");
        assert_eq!(lock_holder(&path), Some(std::process::id()));
        assert!(storage.try_lock(&path).expect("lock").is_none());
        drop(guard);
        for garbage in [
            &b""[..],
            b"\n",
            b"12",
            b"-4\n",
            b"0\n",
            b"99999999999\n",
            b"\xff\n",
            &[b'7'; 40],
        ] {
            fs::write(&path, garbage).expect("write");
            assert_eq!(lock_holder(&path), None, "{garbage:?}");
        }
        assert_eq!(lock_holder(&temp.path().join("missing")), None);
        // A stale PID is replaced by the next holder.
        fs::write(&path, "4242424\n").expect("write");
        let guard = storage.try_lock(&path).expect("lock").expect("free");
        assert_eq!(lock_holder(&path), Some(std::process::id()));
        drop(guard);
        // Longer than any PID line (and longer than what is read of it): cut to the new line.
        fs::write(&path, [b'7'; 100]).expect("write");
        let guard = storage.try_lock(&path).expect("lock").expect("free");
        assert_eq!(
            fs::read(&path).expect("read"),
            format!("{}\n", std::process::id()).into_bytes()
        );
        drop(guard);
        // Shorter: written over, nothing left of it.
        fs::write(&path, "1\n").expect("write");
        let guard = storage.try_lock(&path).expect("lock").expect("free");
        assert_eq!(lock_holder(&path), Some(std::process::id()));
        drop(guard);
        // The same holder again: the file stays as it is.
        let before = fs::read(&path).expect("read");
        let _guard = storage.try_lock(&path).expect("lock").expect("free");
        assert_eq!(fs::read(&path).expect("read"), before);
    }

    #[test]
    fn sync_of_the_empty_path_syncs_the_current_directory() {
        // `Path::new("log").parent()` is the empty path; its directory is `.`.
        FileStorage::new().sync_dir(Path::new("")).unwrap();
    }
}
