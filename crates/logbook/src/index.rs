//! The persistent stream index: stream -> (version -> position), in sled.
//!
//! Owns: the sled tree under `<dir>/index/`, the position up to which it is complete, and
//! range queries that make `read_stream` cost O(page) with no rebuild at startup. Must never:
//! hold anything that cannot be rebuilt from the WAL (sled is beta upstream; the WAL is the only
//! source of truth), or store event payloads (purged bytes must not linger here).
//!
//! Keys: the stream id's UTF-8 bytes, a 0x00 separator (stream ids contain no control
//! characters), the version as big-endian u64 (so keys sort by version). Values: the position,
//! little-endian u64. The completeness marker lives under a key starting with 0xFF, a byte no
//! UTF-8 string starts with, and is written in the same atomic batch as the entries it covers.

use crate::error::{Error, Result};
use crate::streams::Direction;
use std::path::{Path, PathBuf};

/// The directory of the index inside the log directory.
pub const INDEX_DIR_NAME: &str = "index";
const COMPLETE_KEY: &[u8] = b"\xFFcomplete";
const FORMAT_KEY: &[u8] = b"\xFFformat";
const FORMAT: u64 = 1;

/// What opening the index found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexReport {
    /// The position the index was complete up to when opened (0 after a rebuild).
    pub complete_position: u64,
    /// Why the index was wiped and rebuilt, if it was.
    pub rebuilt: Option<String>,
}

pub(crate) struct StreamIndex {
    db: sled::Db,
    path: PathBuf,
}

fn sled_error(path: &Path, error: sled::Error) -> Error {
    Error::Index {
        path: path.to_path_buf(),
        reason: error.to_string(),
    }
}

fn key(stream: &str, version: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(stream.len() + 9);
    key.extend_from_slice(stream.as_bytes());
    key.push(0);
    key.extend_from_slice(&version.to_be_bytes());
    key
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
        let index = StreamIndex { db, path };
        index.insert(&[], 0)?;
        Ok((
            index,
            IndexReport {
                complete_position: 0,
                rebuilt: None,
            },
        ))
    }

    /// Opens the index in `<log_dir>/index`; any sled error means wipe and rebuild.
    pub(crate) fn open(log_dir: &Path) -> Result<(StreamIndex, IndexReport)> {
        let path = log_dir.join(INDEX_DIR_NAME);
        match Self::try_open(&path) {
            Ok(Some((index, complete_position))) => Ok((
                index,
                IndexReport {
                    complete_position,
                    rebuilt: None,
                },
            )),
            outcome => {
                let reason = match outcome {
                    Err(error) => error.to_string(),
                    _ => "index format unknown or marker missing".to_owned(),
                };
                tracing::warn!(path = %path.display(), %reason, "rebuilding the stream index");
                if path.exists() {
                    std::fs::remove_dir_all(&path).map_err(|source| Error::Io {
                        path: path.clone(),
                        source,
                    })?;
                }
                let (index, _) = Self::try_open(&path)?.ok_or_else(|| Error::Index {
                    path: path.clone(),
                    reason: "a new index could not be initialised".to_owned(),
                })?;
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

    /// Opens; `Ok(None)` when the contents are not an index this code wrote.
    fn try_open(path: &Path) -> Result<Option<(StreamIndex, u64)>> {
        let db = sled::Config::new()
            .path(path)
            .mode(sled::Mode::LowSpace)
            .cache_capacity(16 << 20)
            .open()
            .map_err(|error| sled_error(path, error))?;
        let index = StreamIndex {
            db,
            path: path.to_path_buf(),
        };
        let format = index
            .db
            .get(FORMAT_KEY)
            .map_err(|error| sled_error(path, error))?;
        match format.as_deref().and_then(u64_value) {
            Some(FORMAT) => {}
            None if index.db.is_empty() => {
                let mut batch = sled::Batch::default();
                batch.insert(FORMAT_KEY, &FORMAT.to_le_bytes());
                batch.insert(COMPLETE_KEY, &0u64.to_le_bytes());
                index
                    .db
                    .apply_batch(batch)
                    .map_err(|error| sled_error(path, error))?;
            }
            _ => return Ok(None),
        }
        let complete = index
            .db
            .get(COMPLETE_KEY)
            .map_err(|error| sled_error(path, error))?;
        let Some(complete) = complete.as_deref().and_then(u64_value) else {
            return Ok(None);
        };
        Ok(Some((index, complete)))
    }

    /// Records `(stream, version, position)` entries and that the index is complete up to
    /// `complete_position`, atomically.
    pub(crate) fn insert(
        &self,
        entries: &[(String, u64, u64)],
        complete_position: u64,
    ) -> Result<()> {
        let mut batch = sled::Batch::default();
        for (stream, version, position) in entries {
            batch.insert(key(stream, *version), &position.to_le_bytes());
        }
        batch.insert(COMPLETE_KEY, &complete_position.to_le_bytes());
        self.db
            .apply_batch(batch)
            .map_err(|error| sled_error(&self.path, error))
    }

    /// The (version, position) pairs of a stream from `from_version`, at most `max`.
    pub(crate) fn range(
        &self,
        stream: &str,
        from_version: u64,
        visible_from: u64,
        direction: Direction,
        max: usize,
    ) -> Result<Vec<(u64, u64)>> {
        let low = key(stream, visible_from);
        let mut selected = Vec::new();
        let decode = |item: sled::Result<(sled::IVec, sled::IVec)>| -> Result<(u64, u64)> {
            let (key, value) = item.map_err(|error| sled_error(&self.path, error))?;
            let version = key
                .get(key.len().saturating_sub(8)..)
                .and_then(|bytes| Some(u64::from_be_bytes(bytes.try_into().ok()?)));
            match (version, u64_value(&value)) {
                (Some(version), Some(position)) => Ok((version, position)),
                _ => Err(Error::Index {
                    path: self.path.clone(),
                    reason: "malformed entry".to_owned(),
                }),
            }
        };
        match direction {
            Direction::Forward => {
                let start = key(stream, from_version.max(visible_from));
                let end = key(stream, u64::MAX);
                for item in self.db.range(start..=end).take(max) {
                    selected.push(decode(item)?);
                }
            }
            Direction::Backward => {
                if from_version < visible_from {
                    return Ok(selected);
                }
                let high = key(stream, from_version);
                for item in self.db.range(low..=high).rev().take(max) {
                    selected.push(decode(item)?);
                }
            }
        }
        Ok(selected)
    }

    /// Removes a stream's entries below `before_version` (all of them for `u64::MAX`).
    pub(crate) fn remove(&self, stream: &str, before_version: u64) -> Result<u64> {
        let mut batch = sled::Batch::default();
        let mut removed = 0;
        for item in self.db.range(key(stream, 0)..key(stream, before_version)) {
            let (key, _) = item.map_err(|error| sled_error(&self.path, error))?;
            batch.remove(key);
            removed += 1;
        }
        self.db
            .apply_batch(batch)
            .map_err(|error| sled_error(&self.path, error))?;
        Ok(removed)
    }

    /// Removes one entry (a record compaction dropped).
    pub(crate) fn remove_entry(&self, stream: &str, version: u64) -> Result<()> {
        self.db
            .remove(key(stream, version))
            .map(|_| ())
            .map_err(|error| sled_error(&self.path, error))
    }

    /// Flushes sled's buffers to disk (best effort durability of derived data).
    pub(crate) fn flush(&self) -> Result<()> {
        self.db
            .flush()
            .map(|_| ())
            .map_err(|error| sled_error(&self.path, error))
    }
}
