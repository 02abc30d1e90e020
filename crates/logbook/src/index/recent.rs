//! The stream index's recent file, `<dir>/index/recent`: what a clean close knew of the streams
//! used last, so that the next open answers their newest pages before sled has opened.
//!
//! Owns: the file's byte layout, its checked decoding, writing it (at a clean close, after
//! sled's final flush) and removing it (before sled is opened again). Must never: be trusted
//! when its checksum or any field is wrong (it is then ignored, never an error), outlive a
//! change to sled (it describes sled as a clean close left it: it is removed, and the removal
//! made durable, before sled is opened, so before anything can write to sled), or allocate
//! more than [`FILE_BYTES_MAX`] whatever its bytes.
//!
//! ```text
//! magic     8 bytes  "LGBKRCNT"
//! format    u32 LE   1
//! complete  u64 LE   sled's completeness marker when the file was written
//! count     u32 LE   streams that follow, 0..=CACHED_STREAMS_MAX
//! per stream:
//!   length  u32 LE   1..=STREAM_ID_BYTES_MAX
//!   stream  UTF-8 bytes
//!   kind    u8       0: sled holds no chunk of the stream; 1: its highest chunk follows
//!   (kind 1) number u64 LE, bytes u32 LE (16..=chunk::VALUE_BYTES_MAX), the chunk's value
//!            exactly as sled stores it (chunk.rs)
//! crc32     u32 LE   of every byte before it
//! ```
//!
//! Crash safety: the file is written to `recent.tmp` and renamed, without an fsync: a crash
//! can leave it missing or torn (the checksum rejects it; the open then waits for sled as
//! without it), never stale, because the open that reads it removes it durably before sled is
//! opened and so before any write to sled.

use super::cache::{CACHED_STREAMS_MAX, Known, LastChunk};
use super::chunk;
use logbook_projection::STREAM_ID_BYTES_MAX;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The file's name inside the index directory.
pub(crate) const FILE_NAME: &str = "recent";
const TEMPORARY_NAME: &str = "recent.tmp";
const MAGIC: &[u8; 8] = b"LGBKRCNT";
const FORMAT: u32 = 1;
/// The largest valid file: every stream at its longest id with a chunk at its largest value.
pub(crate) const FILE_BYTES_MAX: usize = 8
    + 4
    + 8
    + 4
    + CACHED_STREAMS_MAX * (4 + STREAM_ID_BYTES_MAX + 1 + 8 + 4 + chunk::VALUE_BYTES_MAX)
    + 4;

/// What the file holds: sled's marker and the highest chunk of each stream it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Recent {
    pub(crate) complete: u64,
    /// Most recently used first.
    pub(crate) streams: Vec<(String, Known)>,
}

pub(crate) fn path(index_dir: &Path) -> PathBuf {
    index_dir.join(FILE_NAME)
}

impl Recent {
    pub(crate) fn encode(&self) -> Vec<u8> {
        assert!(self.streams.len() <= CACHED_STREAMS_MAX);
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT.to_le_bytes());
        out.extend_from_slice(&self.complete.to_le_bytes());
        out.extend_from_slice(&(self.streams.len() as u32).to_le_bytes());
        for (stream, known) in &self.streams {
            assert!(!stream.is_empty() && stream.len() <= STREAM_ID_BYTES_MAX);
            out.extend_from_slice(&(stream.len() as u32).to_le_bytes());
            out.extend_from_slice(stream.as_bytes());
            match known {
                None => out.push(0),
                Some(last) => {
                    out.push(1);
                    out.extend_from_slice(&last.number.to_le_bytes());
                    let value = chunk::encode(&last.entries);
                    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
                    out.extend_from_slice(&value);
                }
            }
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        assert!(out.len() <= FILE_BYTES_MAX);
        out
    }

    /// Decodes a file's bytes; `Err` says what is wrong (the file is then not used).
    pub(crate) fn decode(bytes: &[u8]) -> Result<Recent, String> {
        if bytes.len() > FILE_BYTES_MAX {
            return Err(format!("{} bytes, more than {FILE_BYTES_MAX}", bytes.len()));
        }
        let Some((body, crc)) = bytes.split_last_chunk::<4>() else {
            return Err("shorter than its checksum".to_owned());
        };
        if crc32fast::hash(body) != u32::from_le_bytes(*crc) {
            return Err("checksum mismatch".to_owned());
        }
        let mut reader = Reader { bytes: body, at: 0 };
        if reader.take(MAGIC.len())? != MAGIC {
            return Err("not a recent file (magic)".to_owned());
        }
        let format = reader.u32()?;
        if format != FORMAT {
            return Err(format!("format {format}, expected {FORMAT}"));
        }
        let complete = reader.u64()?;
        let count = reader.u32()? as usize;
        if count > CACHED_STREAMS_MAX {
            return Err(format!("{count} streams, more than {CACHED_STREAMS_MAX}"));
        }
        let mut streams = Vec::with_capacity(count);
        for _ in 0..count {
            let length = reader.u32()? as usize;
            if length == 0 || length > STREAM_ID_BYTES_MAX {
                return Err(format!("stream id of {length} bytes"));
            }
            let stream = std::str::from_utf8(reader.take(length)?)
                .map_err(|_| "stream id not UTF-8".to_owned())?
                .to_owned();
            if streams.iter().any(|(seen, _)| *seen == stream) {
                return Err(format!("stream {stream} twice"));
            }
            let known = match reader.u8()? {
                0 => None,
                1 => {
                    let number = reader.u64()?;
                    let length = reader.u32()? as usize;
                    if length > chunk::VALUE_BYTES_MAX {
                        return Err(format!("chunk value of {length} bytes"));
                    }
                    let entries = chunk::decode(number, reader.take(length)?)?;
                    if entries
                        .last()
                        .is_some_and(|&(_, position)| position > complete)
                    {
                        return Err(format!("stream {stream}: a position past {complete}"));
                    }
                    Some(Arc::new(LastChunk { number, entries }))
                }
                kind => return Err(format!("stream {stream}: kind {kind}")),
            };
            streams.push((stream, known));
        }
        if reader.at != body.len() {
            return Err(format!(
                "{} bytes after the last stream",
                body.len() - reader.at
            ));
        }
        Ok(Recent { complete, streams })
    }

    /// Reads `<index_dir>/recent`: `None` when it is missing or unusable (why is logged).
    pub(crate) fn read(index_dir: &Path) -> Option<Recent> {
        let path = path(index_dir);
        let file = match std::fs::File::open(&path) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return None,
            Err(error) => {
                tracing::debug!(path = %path.display(), %error, "recent file not read");
                return None;
            }
        };
        let mut bytes = Vec::new();
        // One byte past the largest valid file: a longer one is refused, never read whole.
        if let Err(error) = file.take(FILE_BYTES_MAX as u64 + 1).read_to_end(&mut bytes) {
            tracing::debug!(path = %path.display(), %error, "recent file not read");
            return None;
        }
        match Recent::decode(&bytes) {
            Ok(recent) => Some(recent),
            Err(reason) => {
                tracing::warn!(path = %path.display(), %reason, "recent file ignored");
                None
            }
        }
    }

    /// Writes `<index_dir>/recent` (through a temporary file and a rename, no fsync: see the
    /// module's doc).
    pub(crate) fn write(&self, index_dir: &Path) -> std::io::Result<()> {
        let temporary = index_dir.join(TEMPORARY_NAME);
        std::fs::write(&temporary, self.encode())?;
        std::fs::rename(&temporary, path(index_dir))
    }
}

/// Removes `<index_dir>/recent` (and a leftover temporary file) and, when there was one, syncs
/// the directory so the removal is durable before the caller lets sled change. A missing
/// directory or file is not an error.
pub(crate) fn remove(index_dir: &Path) -> std::io::Result<()> {
    let mut removed = false;
    for name in [FILE_NAME, TEMPORARY_NAME] {
        match std::fs::remove_file(index_dir.join(name)) {
            Ok(()) => removed = true,
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) => {}
            Err(error) => return Err(error),
        }
    }
    if removed {
        std::fs::File::open(index_dir)?.sync_all()?;
    }
    Ok(())
}

/// A bounds-checked cursor over the file's body.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, length: usize) -> Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(length)
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| format!("truncated at byte {}", self.at))?;
        let taken = &self.bytes[self.at..end];
        self.at = end;
        Ok(taken)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, String> {
        let bytes = self.take(4)?;
        Ok(u32::from_le_bytes(bytes.try_into().map_err(|_| "u32")?))
    }

    fn u64(&mut self) -> Result<u64, String> {
        let bytes = self.take(8)?;
        Ok(u64::from_le_bytes(bytes.try_into().map_err(|_| "u64")?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Recent {
        Recent {
            complete: 5000,
            streams: vec![
                (
                    "room-a".to_owned(),
                    Some(Arc::new(LastChunk {
                        number: 2,
                        entries: (2048..2100).map(|v| (v, v + 900)).collect(),
                    })),
                ),
                ("room-b".to_owned(), None),
            ],
        }
    }

    #[test]
    fn round_trips_through_a_file() {
        let dir = tempfile::tempdir().unwrap();
        sample().write(dir.path()).unwrap();
        assert_eq!(Recent::read(dir.path()), Some(sample()));
        remove(dir.path()).unwrap();
        assert_eq!(Recent::read(dir.path()), None);
        assert!(!path(dir.path()).exists());
        // Removing what is not there (or where there is no directory) is fine.
        remove(dir.path()).unwrap();
        remove(&dir.path().join("missing")).unwrap();
    }

    #[test]
    fn every_truncation_and_every_flipped_byte_is_refused() {
        let bytes = sample().encode();
        for length in 0..bytes.len() {
            assert!(Recent::decode(&bytes[..length]).is_err(), "length {length}");
        }
        for at in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[at] ^= 0x41;
            assert!(Recent::decode(&flipped).is_err(), "byte {at}");
        }
    }

    #[test]
    fn a_chunk_past_the_marker_is_refused() {
        let mut recent = sample();
        recent.complete = 10;
        let error = Recent::decode(&recent.encode()).unwrap_err();
        assert!(error.contains("past 10"), "{error}");
    }

    /// A body with a valid checksum, so that decoding goes past the checksum.
    fn sealed(mut body: Vec<u8>) -> Vec<u8> {
        let crc = crc32fast::hash(&body);
        body.extend_from_slice(&crc.to_le_bytes());
        body
    }

    proptest! {
        #[test]
        fn any_bytes_decode_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = Recent::decode(&bytes);
            let _ = Recent::decode(&sealed(bytes));
        }

        #[test]
        fn any_bytes_after_a_valid_header_decode_without_panicking(
            tail in proptest::collection::vec(any::<u8>(), 0..600),
            count in 0u32..20,
        ) {
            let mut body = MAGIC.to_vec();
            body.extend_from_slice(&FORMAT.to_le_bytes());
            body.extend_from_slice(&u64::MAX.to_le_bytes());
            body.extend_from_slice(&count.to_le_bytes());
            body.extend_from_slice(&tail);
            let _ = Recent::decode(&sealed(body));
        }
    }
}
