//! Snapshot files and their store: `<log dir>/snapshots/<20-digit position>.snap`.
//!
//! Owns: the [`Snapshot`] value (every projection's state at one log position, as opaque
//! versioned byte sections), its file format (the private `format` module; see
//! `FORMAT-SNAPSHOT.md`), and the [`SnapshotStore`], which writes snapshots crash-safely (temp
//! file, fsync, rename, directory fsync), lists them, loads the newest valid one and removes old
//! ones. Must never: interpret a section's bytes (the engine and its projections own them), touch
//! the WAL, fail a load because a snapshot file is bad (a bad snapshot is skipped and reported;
//! the WAL is the source of truth and a full replay is always possible), or publish a file under
//! a `.snap` name before its bytes are durable.

mod format;

pub use format::{
    CHECKSUM_CRC32, SECTION_ID_BYTES_MAX, SECTIONS_MAX, SNAPSHOT_BYTES_MAX,
    SNAPSHOT_FORMAT_VERSION, SNAPSHOT_HEADER_BYTES, SNAPSHOT_MAGIC, SNAPSHOT_TRAILER_BYTES,
    decode_snapshot, encode_snapshot,
};

use crate::error::{Corruption, Error, Result};
use logbook_wal::{OpenMode, Storage, StorageFile};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// Name of the snapshot directory inside the log directory.
pub const SNAPSHOT_DIR_NAME: &str = "snapshots";
/// Extension of a published snapshot file.
const SNAPSHOT_SUFFIX: &str = ".snap";
/// Extension of a snapshot being written.
const TEMP_SUFFIX: &str = ".snap.tmp";
/// Digits of the position in a file name.
const POSITION_DIGITS: usize = 20;
/// Largest single write: section bytes are written in pieces of at most this size.
const WRITE_CHUNK_BYTES: usize = 8 << 20;

/// One projection's (or the engine's own) state: opaque bytes under a unique id, with the
/// version of the state's encoding so a reader can refuse or convert an old one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotSection {
    /// Unique within the snapshot; 1..=[`SECTION_ID_BYTES_MAX`] bytes of UTF-8.
    pub id: String,
    /// Version of the encoding of `bytes`, chosen by the section's owner.
    pub version: u16,
    /// The state, encoded by its owner.
    pub bytes: Vec<u8>,
}

/// All state at one consistent log position: replaying the WAL from `position + 1` onwards on
/// top of it gives the current state.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    /// The last WAL position whose effects the sections include (0: none).
    pub position: u64,
    /// At most [`SECTIONS_MAX`] sections with unique ids.
    pub sections: Vec<SnapshotSection>,
}

impl Snapshot {
    /// The section with this id.
    pub fn section(&self, id: &str) -> Option<&SnapshotSection> {
        self.sections.iter().find(|section| section.id == id)
    }

    /// Checks that the snapshot can be encoded (limits, non-empty unique ids) and returns the
    /// size of its file.
    pub fn validate(&self) -> Result<u64> {
        format::validate(self)
    }
}

/// A snapshot file on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// The file.
    pub path: PathBuf,
    /// The position in its name (for a loaded snapshot, also the one in its header).
    pub position: u64,
    /// Its length.
    pub bytes: u64,
}

/// What [`SnapshotStore::load_newest`] found.
#[derive(Debug, Default)]
pub struct LoadOutcome {
    /// The newest valid snapshot, if any.
    pub snapshot: Option<(SnapshotInfo, Snapshot)>,
    /// Every newer snapshot file that was skipped, newest first, with the reason.
    pub rejected: Vec<(PathBuf, String)>,
}

/// The snapshot files of one log directory.
///
/// The store serialises its own operations, so one store may be shared by threads. Only one
/// store may write a directory at a time: the engine's directory lock ensures that across
/// processes.
#[derive(Debug)]
pub struct SnapshotStore {
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    operation: Mutex<()>,
}

/// The file name of the snapshot at `position`.
pub fn snapshot_file_name(position: u64) -> String {
    format!("{position:0POSITION_DIGITS$}{SNAPSHOT_SUFFIX}")
}

fn temp_file_name(position: u64) -> String {
    format!("{position:0POSITION_DIGITS$}{TEMP_SUFFIX}")
}

/// The position in a file name of exactly 20 ASCII digits followed by `suffix`.
fn parse_name(name: &str, suffix: &str) -> Option<u64> {
    let digits = name.strip_suffix(suffix)?;
    if digits.len() != POSITION_DIGITS || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

impl SnapshotStore {
    /// The store of `<log_dir>/snapshots`. Touches nothing on disk.
    pub fn new(storage: Arc<dyn Storage>, log_dir: &Path) -> Self {
        SnapshotStore {
            storage,
            dir: log_dir.join(SNAPSHOT_DIR_NAME),
            operation: Mutex::new(()),
        }
    }

    /// The snapshot directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn serialise(&self) -> MutexGuard<'_, ()> {
        // The mutex guards no data, so a panic while it was held left nothing half-changed.
        self.operation
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Writes a snapshot crash-safely and returns its file.
    ///
    /// Writes `<position>.snap.tmp`, fsyncs it, renames it to `<position>.snap` (replacing a
    /// snapshot of the same position) and fsyncs the directory, creating the directory (0700)
    /// and fsyncing its parent first if it is missing. A crash at any point leaves either the
    /// previous snapshots alone or the new one complete. On an error the temp file is removed
    /// (if it can be); an error from the final directory fsync leaves the new, complete file in
    /// place, but its name may not survive a crash, so do not remove older snapshots then.
    pub fn write(&self, snapshot: &Snapshot) -> Result<SnapshotInfo> {
        let parts = format::encode_parts(snapshot)?;
        let _serialised = self.serialise();
        self.ensure_dir()?;
        let path = self.dir.join(snapshot_file_name(snapshot.position));
        let temp = self.dir.join(temp_file_name(snapshot.position));
        if self.storage.exists(&temp) {
            // A crash during an earlier write left it: it was never published, so it is garbage.
            self.remove(&temp)?;
        }
        if let Err(error) = self.write_temp(&temp, &parts) {
            self.discard(&temp);
            return Err(error);
        }
        // The rename publishes only bytes that are already durable: a crash before the directory
        // fsync keeps either no new name or a name for a complete file.
        if let Err(source) = self.storage.rename(&temp, &path) {
            self.discard(&temp);
            return Err(Error::io(&temp, "rename", source));
        }
        // Durability: fsync the directory so the new snapshot's name survives a crash.
        self.sync_dir()?;
        tracing::info!(path = %path.display(), position = snapshot.position,
            bytes = parts.total_bytes, "snapshot written");
        Ok(SnapshotInfo {
            path,
            position: snapshot.position,
            bytes: parts.total_bytes,
        })
    }

    fn ensure_dir(&self) -> Result<()> {
        if self.storage.exists(&self.dir) {
            return Ok(());
        }
        // Durability: creates every missing directory (the log directory too, when the store
        // is used on its own) and fsyncs the parent of each, so their entries survive a crash.
        let created = logbook_wal::create_dir_all_durable(self.storage.as_ref(), &self.dir);
        created.map(|_| ()).map_err(|error| match error {
            logbook_wal::Error::Io { path, source } => {
                Error::io(path, "create directory durably", source)
            }
            other => Error::io(
                &self.dir,
                "create directory durably",
                io::Error::other(other),
            ),
        })
    }

    fn write_temp(&self, temp: &Path, parts: &format::EncodedParts<'_>) -> Result<()> {
        let io = |operation| move |source| Error::io(temp, operation, source);
        let file = self.storage.open_file(temp, OpenMode::CreateNew);
        let file: Arc<dyn StorageFile> = file.map_err(io("create"))?;
        file.write_all_at(0, &parts.head).map_err(io("write"))?;
        let mut offset = parts.head.len() as u64;
        for body in &parts.bodies {
            for chunk in body.chunks(WRITE_CHUNK_BYTES) {
                file.write_all_at(offset, chunk).map_err(io("write"))?;
                offset += chunk.len() as u64;
            }
        }
        file.write_all_at(offset, &parts.trailer)
            .map_err(io("write"))?;
        // Durability: the bytes must be on disk before the rename can publish them. A failed
        // fsync is never retried: the file is discarded and the error returned.
        file.sync_data().map_err(io("sync"))
    }

    /// Removes a temp file after a failed write; the failure being reported matters more than
    /// a failure to clean up, which `cleanup_temp` retries at the next open.
    fn discard(&self, temp: &Path) {
        if !self.storage.exists(temp) {
            return;
        }
        if let Err(error) = self.storage.remove_file(temp) {
            tracing::warn!(path = %temp.display(), %error, "could not remove snapshot temp file");
        }
    }

    fn remove(&self, path: &Path) -> Result<()> {
        match self.storage.remove_file(path) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(Error::io(path, "remove", source)),
        }
    }

    fn sync_dir(&self) -> Result<()> {
        let sync = self.storage.sync_dir(&self.dir);
        sync.map_err(|source| Error::io(&self.dir, "sync directory", source))
    }

    /// Entry names of the directory; none when it does not exist.
    fn names(&self) -> Result<Vec<String>> {
        match self.storage.list_dir(&self.dir) {
            Ok(names) => Ok(names),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(source) => Err(Error::io(&self.dir, "list directory", source)),
        }
    }

    /// Published snapshot files by name alone: `(position, path)`, newest first.
    fn candidates(&self) -> Result<Vec<(u64, PathBuf)>> {
        let mut found: Vec<(u64, PathBuf)> = self
            .names()?
            .into_iter()
            .filter_map(|name| Some((parse_name(&name, SNAPSHOT_SUFFIX)?, self.dir.join(name))))
            .collect();
        found.sort_by_key(|(position, _)| std::cmp::Reverse(*position));
        Ok(found)
    }

    /// The positions and paths of the snapshot files, by their names alone (nothing is
    /// opened), newest first.
    pub fn positions(&self) -> Result<Vec<(u64, PathBuf)>> {
        let _serialised = self.serialise();
        self.candidates()
    }

    /// The snapshot files whose names are valid, newest (highest position) first. Temp files
    /// and any other name are ignored. Nothing is read but each file's length.
    pub fn list(&self) -> Result<Vec<SnapshotInfo>> {
        let _serialised = self.serialise();
        let mut infos = Vec::new();
        for (position, path) in self.candidates()? {
            let bytes = match self.file_length(&path) {
                Ok(bytes) => bytes,
                Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                    continue;
                }
                Err(error) => return Err(error),
            };
            infos.push(SnapshotInfo {
                path,
                position,
                bytes,
            });
        }
        Ok(infos)
    }

    fn file_length(&self, path: &Path) -> Result<u64> {
        let file = self.storage.open_file(path, OpenMode::Read);
        let file = file.map_err(|source| Error::io(path, "open", source))?;
        file.len()
            .map_err(|source| Error::io(path, "length", source))
    }

    /// Removes every `<position>.snap.tmp` file: snapshots whose writing a crash or an error
    /// interrupted. Returns the removed paths.
    pub fn cleanup_temp(&self) -> Result<Vec<PathBuf>> {
        let _serialised = self.serialise();
        self.remove_temp_files()
    }

    fn remove_temp_files(&self) -> Result<Vec<PathBuf>> {
        let mut removed = Vec::new();
        for name in self.names()? {
            if parse_name(&name, TEMP_SUFFIX).is_some() {
                let path = self.dir.join(name);
                self.remove(&path)?;
                removed.push(path);
            }
        }
        if !removed.is_empty() {
            // Durability: fsync the directory so the removals survive a crash.
            self.sync_dir()?;
            tracing::info!(count = removed.len(), "stale snapshot temp files removed");
        }
        Ok(removed)
    }

    /// Loads the newest valid snapshot.
    ///
    /// Tries the files newest first. One that cannot be read, is truncated or damaged, is of an
    /// unknown format version, or whose header position differs from its name is recorded in
    /// [`LoadOutcome::rejected`] and the next older one is tried. `snapshot` is `None` when no
    /// file is valid, none exists, or the directory does not exist. Only a failure to list the
    /// directory is an error.
    pub fn load_newest(&self) -> Result<LoadOutcome> {
        let _serialised = self.serialise();
        let mut outcome = LoadOutcome::default();
        for (position, path) in self.candidates()? {
            match self.load_file(&path, position) {
                Ok(loaded) => {
                    outcome.snapshot = Some(loaded);
                    break;
                }
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "snapshot rejected");
                    outcome.rejected.push((path, error.to_string()));
                }
            }
        }
        Ok(outcome)
    }

    fn load_file(&self, path: &Path, position: u64) -> Result<(SnapshotInfo, Snapshot)> {
        let io = |operation| move |source| Error::io(path, operation, source);
        let file = self
            .storage
            .open_file(path, OpenMode::Read)
            .map_err(io("open"))?;
        let length = file.len().map_err(io("length"))?;
        if length > SNAPSHOT_BYTES_MAX {
            let error = Error::LimitExceeded {
                file: None,
                offset: 0,
                what: "snapshot bytes",
                limit: SNAPSHOT_BYTES_MAX,
                actual: length,
            };
            return Err(error.in_file(path));
        }
        // At most SNAPSHOT_BYTES_MAX, so it fits a usize on every supported target.
        let mut bytes = vec![0; usize::try_from(length).unwrap_or(usize::MAX)];
        file.read_exact_at(0, &mut bytes).map_err(io("read"))?;
        let snapshot = decode_snapshot(&bytes).map_err(|error| error.in_file(path))?;
        if snapshot.position != position {
            let reason = Corruption::PositionMismatch {
                name: position,
                header: snapshot.position,
            };
            return Err(Error::corrupted(16, reason).in_file(path));
        }
        let info = SnapshotInfo {
            path: path.to_path_buf(),
            position,
            bytes: length,
        };
        Ok((info, snapshot))
    }

    /// Keeps the newest `keep` snapshot files (by name, valid or not) and removes the rest, then
    /// fsyncs the directory. Returns the removed paths, newest first.
    pub fn retain(&self, keep: usize) -> Result<Vec<PathBuf>> {
        let _serialised = self.serialise();
        let doomed = self.candidates()?.into_iter().skip(keep);
        self.remove_all(doomed.map(|(_, path)| path))
    }

    /// Removes every snapshot file below `position`, and every temp file, then fsyncs the
    /// directory. Used for purges: an older snapshot, or an interrupted one, may still hold the
    /// bytes of deleted events. Returns the removed paths.
    pub fn remove_below(&self, position: u64) -> Result<Vec<PathBuf>> {
        let _serialised = self.serialise();
        let candidates = self.candidates()?.into_iter();
        let doomed = candidates.filter(|(found, _)| *found < position);
        let mut removed = self.remove_all(doomed.map(|(_, path)| path))?;
        // No write is in progress while this store's operations are serialised, so every temp
        // file left is from an interrupted write.
        removed.extend(self.remove_temp_files()?);
        Ok(removed)
    }

    /// Removes every snapshot file above `position` (the log's end after a salvage cut: they
    /// describe events that no longer exist, and would look valid again once new appends
    /// pass their position), then fsyncs the directory. Returns the removed paths.
    pub fn remove_above(&self, position: u64) -> Result<Vec<PathBuf>> {
        let _serialised = self.serialise();
        let candidates = self.candidates()?.into_iter();
        let doomed = candidates.filter(|(found, _)| *found > position);
        self.remove_all(doomed.map(|(_, path)| path))
    }

    fn remove_all(&self, paths: impl Iterator<Item = PathBuf>) -> Result<Vec<PathBuf>> {
        let mut removed = Vec::new();
        for path in paths {
            self.remove(&path)?;
            tracing::info!(path = %path.display(), "snapshot removed");
            removed.push(path);
        }
        if !removed.is_empty() {
            // Durability: fsync the directory so the removals survive a crash.
            self.sync_dir()?;
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests;
