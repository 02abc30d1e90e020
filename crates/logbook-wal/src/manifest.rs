//! The manifest: `wal/MANIFEST`, the list of segments the log is made of and how far it reached.
//!
//! Owns: the manifest's byte format, its checked decoding, its durable replacement (temp file,
//! `fdatasync`, rename, directory fsync) and the comparison of the segments it lists with the
//! segment files on disk. It is what makes the set of segment files provable: a segment removed
//! behind the engine's back (a mistaken `rm`, an incomplete backup copy) is a *missing* segment,
//! a file nobody created through the WAL is an *unexpected* one, and a log whose segments end
//! before the position the manifest says the log reached has lost acknowledged records. Segment
//! files are only ever added or removed together with a manifest write, in an order that a crash
//! at any step leaves recognisable (see [`compare`]). Must never: be rewritten in place (always
//! temp + rename), be trusted after a failed check (a damaged manifest fails open: it is not
//! derived data), or be written by a read-only open.
//!
//! ```text
//! offset size field
//!      0    8 magic "LOGBKMAN"
//!      8    2 format version u16 LE (1)
//!     10    6 reserved, zero
//!     16    8 reached u64 LE: every position up to here was durable when this was written
//!     24    8 segments n u64 LE (at most MANIFEST_SEGMENTS_MAX)
//!     32 24*n entries, bases strictly ascending:
//!             base u64 LE, compacted through u64 LE, state u8 (0 live, 1 removing), 7 zero bytes
//!  32+24n   4 CRC-32 of every byte before it
//! ```
#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

use crate::error::{Error, Result};
use crate::segment;
use crate::storage::{OpenMode, Storage};
use std::path::{Path, PathBuf};

/// The manifest's file name, in `wal/`.
pub const MANIFEST_FILE_NAME: &str = "MANIFEST";
/// The magic bytes of a manifest.
pub const MANIFEST_MAGIC: [u8; 8] = *b"LOGBKMAN";
/// The manifest format version.
pub const MANIFEST_FORMAT_VERSION: u16 = 1;
/// The most segments a manifest lists (2^20 segments of the default 64 MiB are 64 TiB).
pub const MANIFEST_SEGMENTS_MAX: u64 = 1 << 20;
const HEADER_BYTES: usize = 32;
const ENTRY_BYTES: usize = 24;
const STATE_LIVE: u8 = 0;
const STATE_REMOVING: u8 = 1;

/// One segment the manifest lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ManifestSegment {
    /// The segment's base position (its file name).
    pub base: u64,
    /// An opaque mark the compaction above the WAL keeps per segment (the engine stores the
    /// snapshot position its last compaction of this segment saw); 0 for a new segment.
    pub compacted_through: u64,
    /// True while the segment is being removed: its file may still exist (a crash interrupted
    /// the removal) and is then removed by the next writable open; it holds nothing of the log.
    pub removing: bool,
}

/// A decoded manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    /// Every position up to here was durable when the manifest was written; the segments must
    /// still reach it (a segment's base minus one counts as reached: it was created then).
    pub reached: u64,
    /// The segments, ascending by base.
    pub segments: Vec<ManifestSegment>,
}

impl Manifest {
    /// The live (not being removed) segment bases, ascending.
    pub fn live_bases(&self) -> impl Iterator<Item = u64> + '_ {
        self.segments
            .iter()
            .filter(|segment| !segment.removing)
            .map(|segment| segment.base)
    }

    /// The entry of the segment with `base`.
    pub fn entry(&self, base: u64) -> Option<&ManifestSegment> {
        self.segments.iter().find(|segment| segment.base == base)
    }
}

/// Encodes a manifest. Panics when its bases do not ascend or it lists too many segments (the
/// WAL's invariants, not input).
pub fn encode(manifest: &Manifest) -> Vec<u8> {
    assert!(
        manifest
            .segments
            .windows(2)
            .all(|pair| matches!(pair, [a, b] if a.base < b.base)),
        "manifest bases ascend"
    );
    assert!(manifest.segments.len() as u64 <= MANIFEST_SEGMENTS_MAX);
    let mut out = Vec::with_capacity(HEADER_BYTES + ENTRY_BYTES * manifest.segments.len() + 4);
    out.extend_from_slice(&MANIFEST_MAGIC);
    out.extend_from_slice(&MANIFEST_FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&[0; 6]);
    out.extend_from_slice(&manifest.reached.to_le_bytes());
    out.extend_from_slice(&(manifest.segments.len() as u64).to_le_bytes());
    for segment in &manifest.segments {
        out.extend_from_slice(&segment.base.to_le_bytes());
        out.extend_from_slice(&segment.compacted_through.to_le_bytes());
        out.push(if segment.removing {
            STATE_REMOVING
        } else {
            STATE_LIVE
        });
        out.extend_from_slice(&[0; 7]);
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Why a manifest's bytes are refused, with the offset of the bad structure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// Byte offset in the file.
    pub offset: u64,
    /// What is wrong.
    pub reason: String,
}

fn fail<T>(offset: usize, reason: impl Into<String>) -> std::result::Result<T, DecodeError> {
    Err(DecodeError {
        offset: offset as u64,
        reason: reason.into(),
    })
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    let slice: [u8; 8] = bytes.get(at..at.checked_add(8)?)?.try_into().ok()?;
    Some(u64::from_le_bytes(slice))
}

/// Decodes a manifest; any garbage is an error, never a panic, and nothing is allocated
/// before the length is checked against the bytes present.
pub fn decode(bytes: &[u8]) -> std::result::Result<Manifest, DecodeError> {
    if bytes.get(..8) != Some(MANIFEST_MAGIC.as_slice()) {
        return fail(0, "bad magic (not a manifest)");
    }
    if bytes.len() < HEADER_BYTES + 4 {
        return fail(bytes.len(), "truncated header");
    }
    let version = bytes
        .get(8..10)
        .and_then(|slice| slice.try_into().ok())
        .map(u16::from_le_bytes);
    if version != Some(MANIFEST_FORMAT_VERSION) {
        return fail(8, format!("unsupported manifest version {version:?}"));
    }
    if bytes
        .get(10..16)
        .is_none_or(|reserved| reserved.iter().any(|&b| b != 0))
    {
        return fail(10, "reserved bytes are not zero");
    }
    let (Some(reached), Some(count)) = (u64_at(bytes, 16), u64_at(bytes, 24)) else {
        return fail(16, "truncated header");
    };
    if count > MANIFEST_SEGMENTS_MAX {
        return fail(
            24,
            format!("{count} segments, over the limit {MANIFEST_SEGMENTS_MAX}"),
        );
    }
    // count <= 2^20, so this cannot overflow.
    let expected = HEADER_BYTES + ENTRY_BYTES * count as usize + 4;
    if bytes.len() != expected {
        return fail(
            bytes.len().min(expected),
            format!("length {} does not match {count} segments", bytes.len()),
        );
    }
    let crc_at = expected - 4;
    let stored = bytes
        .get(crc_at..)
        .and_then(|slice| slice.try_into().ok())
        .map(u32::from_le_bytes);
    let body = bytes.get(..crc_at).unwrap_or_default();
    if stored != Some(crc32fast::hash(body)) {
        return fail(crc_at, "checksum mismatch");
    }
    let mut segments = Vec::with_capacity(count as usize);
    for index in 0..count as usize {
        let at = HEADER_BYTES + ENTRY_BYTES * index;
        let entry = bytes.get(at..at + ENTRY_BYTES).unwrap_or_default();
        let (Some(base), Some(compacted_through)) = (u64_at(entry, 0), u64_at(entry, 8)) else {
            return fail(at, "truncated entry");
        };
        let removing = match entry.get(16) {
            Some(&STATE_LIVE) => false,
            Some(&STATE_REMOVING) => true,
            other => return fail(at + 16, format!("unknown segment state {other:?}")),
        };
        if entry
            .get(17..)
            .is_none_or(|reserved| reserved.iter().any(|&b| b != 0))
        {
            return fail(at + 17, "reserved bytes are not zero");
        }
        if base == 0
            || segments
                .last()
                .is_some_and(|last: &ManifestSegment| last.base >= base)
        {
            return fail(at, format!("segment base {base} is zero or not ascending"));
        }
        segments.push(ManifestSegment {
            base,
            compacted_through,
            removing,
        });
    }
    Ok(Manifest { reached, segments })
}

/// Reads the manifest of `wal_dir`: `Ok(None)` when there is none (a log written before
/// manifests existed, or one whose creation a crash cut short before its first segment).
pub(crate) fn load(storage: &dyn Storage, wal_dir: &Path) -> Result<Option<Manifest>> {
    let path = wal_dir.join(MANIFEST_FILE_NAME);
    if !storage.exists(&path) {
        return Ok(None);
    }
    let file = storage
        .open_file(&path, OpenMode::Read)
        .map_err(|source| Error::io(&path, source))?;
    let len = file.len().map_err(|source| Error::io(&path, source))?;
    let limit = (HEADER_BYTES + 4) as u64 + ENTRY_BYTES as u64 * MANIFEST_SEGMENTS_MAX;
    if len > limit {
        return Err(Error::corrupted(
            &path,
            0,
            format!("manifest of {len} bytes, over the limit {limit}"),
        ));
    }
    let mut bytes = vec![0u8; len as usize];
    file.read_exact_at(0, &mut bytes)
        .map_err(|source| Error::io(&path, source))?;
    decode(&bytes)
        .map(Some)
        .map_err(|error| Error::corrupted(&path, error.offset, error.reason))
}

/// Replaces the manifest durably: temp file, `fdatasync`, rename, directory fsync.
pub(crate) fn store(storage: &dyn Storage, wal_dir: &Path, manifest: &Manifest) -> Result<()> {
    let path = wal_dir.join(MANIFEST_FILE_NAME);
    let temp = wal_dir.join(format!("{MANIFEST_FILE_NAME}.tmp"));
    let bytes = encode(manifest);
    let file = crate::rewrite::fresh_temp_file(storage, &temp)?;
    file.write_all_at(0, &bytes)
        .map_err(|source| Error::io(&temp, source))?;
    // Durability: the new manifest's bytes are on disk before its name replaces the old one.
    file.sync_data()
        .map_err(|source| Error::io(&temp, source))?;
    drop(file);
    storage
        .rename(&temp, &path)
        .map_err(|source| Error::io(&path, source))?;
    // Durability: fsync the directory so the rename (and any segment created before it)
    // survives a crash.
    storage
        .sync_dir(wal_dir)
        .map_err(|source| Error::io(wal_dir, source))
}

/// What comparing the manifest with the segment files found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// A live segment the manifest lists has no file: the positions from its base up to the next
    /// listed segment's base (exclusive; `None`: to the end of the log) are gone.
    Missing {
        /// The file that should exist.
        path: PathBuf,
        /// Its base position.
        base: u64,
        /// The last position it may have held, `None` for the last segment.
        last_position: Option<u64>,
    },
    /// A segment file the manifest does not list (and not an interrupted roll).
    Unexpected {
        /// The file.
        path: PathBuf,
    },
    /// A segment the manifest marks as being removed still has its file: a crash interrupted
    /// the removal. Not part of the log; a writable open removes it.
    Leftover {
        /// The file.
        path: PathBuf,
    },
    /// The newest segment file, not yet listed, holding only its header: a crash came between
    /// a roll's creation of the segment and the manifest write. A writable open adopts it.
    InterruptedRoll {
        /// The file.
        path: PathBuf,
    },
}

impl Finding {
    /// True when the finding means records are missing or foreign: open must refuse.
    pub fn is_error(&self) -> bool {
        matches!(self, Finding::Missing { .. } | Finding::Unexpected { .. })
    }
}

impl std::fmt::Display for Finding {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Finding::Missing {
                path,
                base,
                last_position: Some(last),
            } => write!(
                formatter,
                "segment {} is missing: positions {base}..={last} are gone",
                path.display()
            ),
            Finding::Missing { path, base, .. } => write!(
                formatter,
                "segment {} is missing: positions from {base} to the end of the log are gone",
                path.display()
            ),
            Finding::Unexpected { path } => write!(
                formatter,
                "segment {} is not in the manifest (a file the log never created, or a restored copy)",
                path.display()
            ),
            Finding::Leftover { path } => write!(
                formatter,
                "segment {} was being removed when a crash came (not part of the log)",
                path.display()
            ),
            Finding::InterruptedRoll { path } => write!(
                formatter,
                "segment {} is newer than the manifest and empty (a crash interrupted a roll)",
                path.display()
            ),
        }
    }
}

/// Compares the manifest with the segment files found: `(base, file length)` ascending (the
/// length is consulted only for files the manifest does not list).
pub fn compare(manifest: &Manifest, wal_dir: &Path, files: &[(u64, u64)]) -> Vec<Finding> {
    let path = |base: u64| wal_dir.join(segment::file_name(base));
    let on_disk = |base: u64| files.iter().any(|&(file, _)| file == base);
    let live: Vec<u64> = manifest.live_bases().collect();
    let newest_listed = manifest.segments.last().map_or(0, |segment| segment.base);
    let mut findings = Vec::new();
    for (index, &base) in live.iter().enumerate() {
        if !on_disk(base) {
            findings.push(Finding::Missing {
                path: path(base),
                base,
                last_position: live.get(index + 1).map(|next| next - 1),
            });
        }
    }
    for &(base, len) in files {
        match manifest.entry(base) {
            Some(entry) if entry.removing => findings.push(Finding::Leftover { path: path(base) }),
            Some(_) => {}
            None if base > newest_listed
                && len <= segment::SEGMENT_HEADER_BYTES as u64
                && files.last().is_some_and(|&(last, _)| last == base) =>
            {
                findings.push(Finding::InterruptedRoll { path: path(base) });
            }
            None => findings.push(Finding::Unexpected { path: path(base) }),
        }
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            reached: 15,
            segments: vec![
                ManifestSegment {
                    base: 1,
                    compacted_through: 12,
                    removing: false,
                },
                ManifestSegment {
                    base: 6,
                    compacted_through: 0,
                    removing: true,
                },
                ManifestSegment {
                    base: 11,
                    compacted_through: 0,
                    removing: false,
                },
                ManifestSegment {
                    base: 16,
                    compacted_through: 0,
                    removing: false,
                },
            ],
        }
    }

    #[test]
    fn round_trips() {
        let manifest = sample();
        let bytes = encode(&manifest);
        assert_eq!(bytes.len(), 32 + 24 * 4 + 4);
        assert_eq!(decode(&bytes).unwrap(), manifest);
        let empty = Manifest::default();
        assert_eq!(decode(&encode(&empty)).unwrap(), empty);
    }

    #[test]
    fn every_bit_flip_and_truncation_is_refused() {
        let bytes = encode(&sample());
        for at in 0..bytes.len() {
            for bit in 0..8 {
                let mut flipped = bytes.clone();
                flipped[at] ^= 1 << bit;
                assert!(decode(&flipped).is_err(), "flip at {at} bit {bit}");
            }
        }
        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len]).is_err(), "truncated to {len}");
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut state = 0x1234_5678_u64;
        for len in 0..400 {
            let mut bytes: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            if len >= 8 {
                bytes[..8].copy_from_slice(&MANIFEST_MAGIC);
            }
            let _ = decode(&bytes);
        }
        // A huge count is refused before anything is allocated.
        let mut bytes = encode(&Manifest::default());
        bytes[24..32].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(decode(&bytes).is_err());
    }

    #[test]
    fn compare_finds_missing_unexpected_leftover_and_interrupted_roll() {
        let manifest = sample();
        let dir = Path::new("/log/wal");
        // Segment 11 gone, 6 still there although being removed, 21 a new empty roll.
        let files = [(1, 100), (6, 100), (16, 100), (21, 32)];
        let findings = compare(&manifest, dir, &files);
        assert_eq!(
            findings,
            vec![
                Finding::Missing {
                    path: dir.join(segment::file_name(11)),
                    base: 11,
                    last_position: Some(15),
                },
                Finding::Leftover {
                    path: dir.join(segment::file_name(6)),
                },
                Finding::InterruptedRoll {
                    path: dir.join(segment::file_name(21)),
                },
            ]
        );
        // A frame in the unlisted segment: not an interrupted roll.
        let files = [(1, 100), (11, 100), (16, 100), (21, 90)];
        assert_eq!(
            compare(&manifest, dir, &files),
            vec![Finding::Unexpected {
                path: dir.join(segment::file_name(21)),
            }]
        );
        // An unlisted segment in the middle.
        let files = [(1, 100), (3, 32), (11, 100), (16, 100)];
        assert!(compare(&manifest, dir, &files)[0].is_error());
        // The last segment missing: to the end of the log.
        let files = [(1, 100), (11, 100)];
        assert_eq!(
            compare(&manifest, dir, &files),
            vec![Finding::Missing {
                path: dir.join(segment::file_name(16)),
                base: 16,
                last_position: None,
            }]
        );
    }
}
