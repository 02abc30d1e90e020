//! Creating a log durably, and recognising a creation that a crash cut short.
//!
//! Owns: creating the directories a log needs and making each new directory entry durable
//! (an fsync of the directory that holds it, deepest first, up to and including the parent of
//! the log directory) before the first append can be acknowledged; and the one rule that tells
//! a log whose creation never finished (its `wal/` holds no segment with a complete header)
//! from a log, with the empty stand-in segment a read-only open of such a log starts with.
//! Must never: create, sync or write anything for a read-only open, or call a log that has a
//! segment with a complete header unfinished (that one holds acknowledged records, or will).
//!
//! Why deepest first: POSIX makes a new directory entry durable only when the directory that
//! holds it is fsynced. Syncing `log/` (which holds `wal/`) before the parent (which holds
//! `log/`) means that whenever a crash keeps `log/`, it keeps `wal/` in it too.

use crate::error::{Error, Result};
use crate::open;
use crate::segment::{self, SEGMENT_HEADER_BYTES, Segment};
use crate::storage::{OpenMode, Storage, StorageFile};
use crate::wal::WAL_DIR_NAME;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Creates `dir` and every missing ancestor, then makes each new entry durable: fsyncs the
/// directory holding each created directory, deepest first (the root has no parent to sync).
/// Returns the directories it created, deepest first; nothing is synced when none was missing.
pub fn create_dir_all_durable(storage: &dyn Storage, dir: &Path) -> Result<Vec<PathBuf>> {
    let created: Vec<PathBuf> = dir
        .ancestors()
        .take_while(|ancestor| !ancestor.as_os_str().is_empty() && !storage.exists(ancestor))
        .map(Path::to_path_buf)
        .collect();
    if created.is_empty() {
        return Ok(created);
    }
    storage
        .create_dir_all(dir)
        .map_err(|source| Error::io(dir, source))?;
    for new_dir in &created {
        if let Some(parent) = new_dir.parent() {
            // Durability: fsync the parent so the new directory's entry survives a crash.
            storage
                .sync_dir(parent)
                .map_err(|source| Error::io(parent, source))?;
        }
    }
    Ok(created)
}

/// Creates `<dir>/wal/` durably for a writer open, and makes the names an earlier process may
/// have left unsynced durable before this open appends anything:
/// - the entries of an existing `wal/` (a process killed after creating a segment file and
///   before its directory fsync leaves a name that recovery accepts, and new appends would go
///   behind it): when the log has a complete segment, that fsync is left to the caller (this
///   returns `true`: see [`sync_existing_wal_dir`]);
/// - when the log holds no complete segment yet (a new log, or one whose creation a crash cut
///   short), the entries of the log directory and of its parent, whoever created them.
pub(crate) fn create_log_dirs(storage: &dyn Storage, dir: &Path) -> Result<bool> {
    let wal_dir = dir.join(WAL_DIR_NAME);
    let created = create_dir_all_durable(storage, &wal_dir)?;
    let existed = created.is_empty();
    if !creation_unfinished(storage, &wal_dir)? {
        return Ok(existed);
    }
    if existed {
        // Durability: deepest first, `wal/`'s own entries before the directories above it.
        sync_existing_wal_dir(storage, &wal_dir, false)?;
    }
    let synced = |target: &Path| {
        created
            .iter()
            .any(|new_dir| new_dir.parent() == Some(target))
    };
    for target in [Some(dir), dir.parent()].into_iter().flatten() {
        if !synced(target) {
            // Durability: the entries of `wal/` and of the log directory may date from a
            // creation that never synced them; the first acknowledged append needs both.
            storage
                .sync_dir(target)
                .map_err(|source| Error::io(target, source))?;
        }
    }
    Ok(false)
}

/// Makes the entries of an existing `wal/` durable (see [`create_log_dirs`]), unless the open
/// kept the active segment's checkpoint: then the writer's first write is preceded by the
/// checkpoint's removal and an fsync of `wal/`, which makes those names durable before anything
/// is appended behind them, and an open that appends nothing needs no fsync at all.
pub(crate) fn sync_existing_wal_dir(
    storage: &dyn Storage,
    wal_dir: &Path,
    checkpoint_kept: bool,
) -> Result<()> {
    if checkpoint_kept {
        return Ok(());
    }
    // Durability: fsync `wal/` so segment names a dead process never synced survive a crash
    // before appends are acknowledged behind them.
    storage
        .sync_dir(wal_dir)
        .map_err(|source| Error::io(wal_dir, source))
}

/// True when the log whose segments live in `wal_dir` was never finished: `wal_dir` holds no
/// segment file, or a single one that is at most a header long and whose header does not
/// decode (a crash before the first segment header was durable). Such a log holds no record.
/// Reads only.
pub fn creation_unfinished(storage: &dyn Storage, wal_dir: &Path) -> Result<bool> {
    let paths = open::segment_paths(storage, wal_dir)?;
    let [(_, path)] = paths.as_slice() else {
        return Ok(paths.is_empty());
    };
    let file = storage
        .open_file(path, OpenMode::Read)
        .map_err(|source| Error::io(path, source))?;
    let len = file.len().map_err(|source| Error::io(path, source))?;
    if len > SEGMENT_HEADER_BYTES as u64 {
        return Ok(false);
    }
    let mut header = [0u8; SEGMENT_HEADER_BYTES];
    let readable = &mut header[..len as usize];
    file.read_exact_at(0, readable)
        .map_err(|source| Error::io(path, source))?;
    Ok(segment::decode_header(readable).is_err())
}

/// The stand-in active segment of a read-only open of an unfinished log: never listed among
/// the segments (readers find nothing), and it reads as empty and refuses writes.
pub(crate) fn placeholder_segment(wal_dir: &Path) -> Arc<Segment> {
    let base = 1;
    let path = wal_dir.join(segment::file_name(base));
    Arc::new(Segment::new(base, path, Arc::new(NoFile)))
}

/// A file that does not exist: empty, read-only.
#[derive(Debug)]
struct NoFile;

fn no_file() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        "the log's creation was not finished: it has no segment file",
    )
}

impl StorageFile for NoFile {
    fn read_at(&self, _offset: u64, _buf: &mut [u8]) -> io::Result<usize> {
        Ok(0)
    }

    fn write_all_at(&self, _offset: u64, _buf: &[u8]) -> io::Result<()> {
        Err(no_file())
    }

    fn len(&self) -> io::Result<u64> {
        Ok(0)
    }

    fn set_len(&self, _len: u64) -> io::Result<()> {
        Err(no_file())
    }

    fn sync_data(&self) -> io::Result<()> {
        Err(no_file())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{CrashMode, MemoryStorage};

    #[test]
    fn created_directories_survive_a_power_cut() {
        let storage = MemoryStorage::new();
        storage.create_dir_all(Path::new("/a")).unwrap();
        storage.sync_dir(Path::new("/")).unwrap();
        let created = create_dir_all_durable(&storage, Path::new("/a/b/c")).unwrap();
        assert_eq!(created, [Path::new("/a/b/c"), Path::new("/a/b")]);
        assert!(
            create_dir_all_durable(&storage, Path::new("/a/b/c"))
                .unwrap()
                .is_empty()
        );
        storage.crash(CrashMode::LoseUnsynced);
        assert!(storage.exists(Path::new("/a/b/c")));
    }

    fn unfinished_with(segments: &[(&str, &[u8])]) -> bool {
        let storage = MemoryStorage::new();
        let wal_dir = Path::new("/log/wal");
        storage.create_dir_all(wal_dir).unwrap();
        for (name, bytes) in segments {
            storage.set_file_contents(&wal_dir.join(name), bytes.to_vec());
        }
        creation_unfinished(&storage, wal_dir).unwrap()
    }

    #[test]
    fn only_a_log_without_a_complete_segment_header_is_unfinished() {
        let first = segment::file_name(1);
        let header = segment::encode_header(1);
        assert!(unfinished_with(&[]));
        assert!(unfinished_with(&[(&first, b"")]));
        assert!(unfinished_with(&[(&first, &header[..10])]));
        assert!(unfinished_with(&[(&first, &[0xAB; SEGMENT_HEADER_BYTES])]));
        assert!(unfinished_with(&[("notes.txt", b"not a segment")]));
        assert!(!unfinished_with(&[(&first, &header)]));
        let mut with_frame = header.to_vec();
        with_frame.extend_from_slice(&[0; 40]);
        assert!(!unfinished_with(&[(&first, &with_frame)]));
        // A damaged header in a longer file is corruption, not an unfinished creation.
        with_frame[0] ^= 0xFF;
        assert!(!unfinished_with(&[(&first, &with_frame)]));
        let second = segment::file_name(10);
        assert!(!unfinished_with(&[(&first, &header), (&second, b"")]));
    }
}
