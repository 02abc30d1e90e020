//! The one error type of the compaction crate.
//!
//! Owns: every way a snapshot operation can fail, each naming the file, the byte offset and the
//! cause where one exists. Must never: hide an I/O error's kind, or merge a damaged snapshot file
//! with an ordinary I/O error (the store treats them differently: a damaged or unknown snapshot is
//! skipped and reported, a failure to list the directory is returned).

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// A `Result` whose error is this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong while writing, listing, loading or removing snapshots.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system I/O error on a named file or directory.
    #[error("I/O error on {}: {operation}: {source}", file.display())]
    Io {
        /// The file or directory the operation touched.
        file: PathBuf,
        /// What was being done (`"write"`, `"sync"`, `"rename"`, ...).
        operation: &'static str,
        /// The underlying error (its kind tells EIO from ENOSPC).
        #[source]
        source: io::Error,
    },
    /// Bytes that are not a well-formed snapshot of a supported format: damaged, truncated or
    /// never written by this crate.
    #[error(
        "corrupted snapshot {} at byte offset {offset}: {reason}",
        FileName(file)
    )]
    Corrupted {
        /// The snapshot file (`None` when bytes were decoded from memory).
        file: Option<PathBuf>,
        /// Byte offset of the bad structure within the file.
        offset: u64,
        /// What is wrong.
        reason: Corruption,
    },
    /// A well-formed header of a format version or checksum algorithm this build cannot read
    /// (written by a newer logbook, or damaged in exactly that field).
    #[error(
        "unsupported snapshot {} at byte offset {offset}: {field} is {found}, this build reads \
         {supported}",
        FileName(file)
    )]
    Unsupported {
        /// The snapshot file (`None` when bytes were decoded from memory).
        file: Option<PathBuf>,
        /// Byte offset of the field.
        offset: u64,
        /// Which field (`"format version"`, `"checksum algorithm"`).
        field: &'static str,
        /// The value found.
        found: u64,
        /// The value this build supports.
        supported: u64,
    },
    /// A snapshot (being written, or read from a file) is over one of the named limits
    /// ([`SECTIONS_MAX`](crate::SECTIONS_MAX), [`SECTION_ID_BYTES_MAX`](crate::SECTION_ID_BYTES_MAX),
    /// [`SNAPSHOT_BYTES_MAX`](crate::SNAPSHOT_BYTES_MAX)). Nothing was written.
    #[error(
        "limit exceeded in snapshot {} at byte offset {offset}: {what} is {actual}, limit is \
         {limit}",
        FileName(file)
    )]
    LimitExceeded {
        /// The snapshot file (`None` when the snapshot is in memory).
        file: Option<PathBuf>,
        /// Byte offset of the offending field (0 for a snapshot not yet encoded).
        offset: u64,
        /// Which limit.
        what: &'static str,
        /// The limit.
        limit: u64,
        /// The offending value.
        actual: u64,
    },
    /// A snapshot handed to [`SnapshotStore::write`](crate::SnapshotStore::write) that can never
    /// be encoded (an empty or duplicate section id). Nothing was written.
    #[error("invalid snapshot: {reason}")]
    InvalidSnapshot {
        /// What is wrong.
        reason: String,
    },
}

/// What is wrong with the bytes of a snapshot, in [`Error::Corrupted`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Corruption {
    /// The file does not start with the snapshot magic.
    #[error("bad magic: not a snapshot file")]
    BadMagic,
    /// The header checksum does not match the header.
    #[error("header checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    HeaderChecksum {
        /// The checksum in the file.
        stored: u32,
        /// The checksum of the bytes.
        computed: u32,
    },
    /// A reserved header byte is not zero.
    #[error("reserved header bytes are not zero")]
    ReservedNotZero,
    /// A structure reaches past the end of the input: the file is truncated or a length is
    /// damaged.
    #[error("{structure} needs {needed} bytes, only {available} remain")]
    Truncated {
        /// The structure being read.
        structure: &'static str,
        /// Bytes it needs.
        needed: u64,
        /// Bytes left in the input.
        available: u64,
    },
    /// Bytes follow the trailer.
    #[error("{count} bytes follow the trailer")]
    TrailingBytes {
        /// How many.
        count: u64,
    },
    /// A section id of length zero.
    #[error("empty section id")]
    EmptySectionId,
    /// A section id that is not UTF-8.
    #[error("section id is not UTF-8")]
    SectionIdNotUtf8,
    /// Two sections with the same id.
    #[error("duplicate section id {id:?}")]
    DuplicateSectionId {
        /// The repeated id.
        id: String,
    },
    /// A section's bytes do not match its checksum.
    #[error(
        "checksum mismatch in section {id:?}: stored {stored:#010x}, computed {computed:#010x}"
    )]
    SectionChecksum {
        /// The section.
        id: String,
        /// The checksum in the section table.
        stored: u32,
        /// The checksum of the bytes.
        computed: u32,
    },
    /// The trailer checksum does not match the file.
    #[error("trailer checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    TrailerChecksum {
        /// The checksum in the trailer.
        stored: u32,
        /// The checksum of the bytes before it.
        computed: u32,
    },
    /// The position in the header differs from the one in the file name.
    #[error("header position {header} differs from file name position {name}")]
    PositionMismatch {
        /// Position in the file name.
        name: u64,
        /// Position in the header.
        header: u64,
    },
}

/// Displays an optional file name, `<memory>` for bytes that came from no file.
struct FileName<'a>(&'a Option<PathBuf>);

impl fmt::Display for FileName<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(path) => write!(formatter, "{}", path.display()),
            None => formatter.write_str("<memory>"),
        }
    }
}

impl Error {
    pub(crate) fn io(file: impl Into<PathBuf>, operation: &'static str, source: io::Error) -> Self {
        Error::Io {
            file: file.into(),
            operation,
            source,
        }
    }

    pub(crate) fn corrupted(offset: u64, reason: Corruption) -> Self {
        Error::Corrupted {
            file: None,
            offset,
            reason,
        }
    }

    /// Names the file the error came from (decoding works on bytes and knows no file).
    pub(crate) fn in_file(mut self, path: &Path) -> Self {
        match &mut self {
            Error::Corrupted { file, .. }
            | Error::Unsupported { file, .. }
            | Error::LimitExceeded { file, .. } => *file = Some(path.to_path_buf()),
            Error::Io { .. } | Error::InvalidSnapshot { .. } => {}
        }
        self
    }

    /// True when the error says the bytes are not a valid snapshot (damaged, truncated, or of an
    /// unsupported format or size), as opposed to an I/O failure or a bad argument.
    pub fn is_bad_snapshot(&self) -> bool {
        matches!(
            self,
            Error::Corrupted { .. } | Error::Unsupported { .. } | Error::LimitExceeded { .. }
        )
    }
}
