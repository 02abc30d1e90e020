//! Walking the frames of segment files by hand, past bad frames: what `verify`, `--frames` and
//! `repair` see.
//!
//! Owns: listing segment files, reading one whole, and [`FrameWalker`], which decodes frame
//! after frame through `logbook_wal::frame` and, at a bad frame, reports it and resumes at the
//! next valid frame, so one problem does not hide the next. Must never: write, or trust a length
//! it has not checked against the bytes present.
#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

use super::check_log_dir;
use crate::error::{Error, Result};
use logbook_projection::EnvelopeRef;
use logbook_wal::frame::{self, FRAME_HEADER_BYTES, FrameError, FrameHeader};
use logbook_wal::segment::{self, SEGMENT_HEADER_BYTES};
use logbook_wal::storage::{OpenMode, StorageFile};
use logbook_wal::{FileStorage, Storage, WAL_DIR_NAME, WalOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The largest segment file read whole; a larger one is reported, not read.
pub(crate) const SEGMENT_SCAN_BYTES_MAX: u64 = 1 << 30;

/// A segment file found in a log's `wal/` directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SegmentFile {
    /// The base position its name gives.
    pub(crate) base: u64,
    pub(crate) path: PathBuf,
}

/// The segment files of the log in `dir`, sorted by base position, and the names in `wal/`
/// that are not segment files.
pub(crate) fn segment_files(
    storage: &dyn Storage,
    dir: &Path,
) -> Result<(Vec<SegmentFile>, Vec<PathBuf>)> {
    check_log_dir(storage, dir)?;
    let wal_dir = dir.join(WAL_DIR_NAME);
    let names = storage.list_dir(&wal_dir).map_err(|source| {
        Error::Wal(logbook_wal::Error::Io {
            path: wal_dir.clone(),
            source,
        })
    })?;
    let mut segments = Vec::new();
    let mut others = Vec::new();
    for name in names {
        match segment::parse_file_name(&name) {
            Some(base) => segments.push(SegmentFile {
                base,
                path: wal_dir.join(&name),
            }),
            None => others.push(wal_dir.join(&name)),
        }
    }
    segments.sort_by_key(|segment| segment.base);
    others.sort();
    Ok((segments, others))
}

pub(crate) fn io_error(path: &Path, source: std::io::Error) -> Error {
    Error::Wal(logbook_wal::Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a whole file (what is there now: a live writer may be appending).
pub(crate) fn read_file(storage: &dyn Storage, path: &Path) -> Result<Vec<u8>> {
    let file = storage
        .open_file(path, OpenMode::Read)
        .map_err(|source| io_error(path, source))?;
    read_all(file.as_ref(), path)
}

pub(crate) fn read_all(file: &dyn StorageFile, path: &Path) -> Result<Vec<u8>> {
    let len = file.len().map_err(|source| io_error(path, source))?;
    if len > SEGMENT_SCAN_BYTES_MAX {
        return Err(Error::LimitExceeded {
            what: "bytes of a segment file read whole",
            limit: SEGMENT_SCAN_BYTES_MAX,
            actual: len,
        });
    }
    let mut bytes = vec![0u8; len as usize];
    let mut filled = 0usize;
    while let Some(rest) = bytes.get_mut(filled..) {
        if rest.is_empty() {
            break;
        }
        let read = file
            .read_at(filled as u64, rest)
            .map_err(|source| io_error(path, source))?;
        if read == 0 {
            break; // Shorter than it was a moment ago: a writer cut its tail.
        }
        filled += read;
    }
    bytes.truncate(filled);
    Ok(bytes)
}

/// One step of a [`FrameWalker`].
#[derive(Debug)]
pub(crate) enum Walk<'a> {
    /// A valid frame.
    Frame {
        offset: u64,
        header: FrameHeader,
        payload: &'a [u8],
    },
    /// A bad frame (or an unfinished batch at the end).
    Bad {
        offset: u64,
        reason: String,
        /// The last valid position before it.
        after_position: u64,
        /// True when no valid frame follows it in the file: a torn tail, if the file is the
        /// last segment and nothing proves it was durable.
        at_end: bool,
    },
    /// Every byte from `offset` (a frame boundary after a complete batch) to the end is zero:
    /// space a writer preallocated, the end of the data in the last segment (damage in a
    /// sealed one, which its roll trims). The last step.
    Zeros { offset: u64, bytes: u64 },
}

/// Walks frames from an offset to the end of a buffer, resuming after bad frames.
#[derive(Debug)]
pub(crate) struct FrameWalker<'a> {
    bytes: &'a [u8],
    offset: usize,
    last_position: u64,
    record_bytes_max: u32,
    /// The offset of the first frame of the batch under way.
    batch_open: Option<usize>,
    /// The next frame follows a bad one: its batch flags are taken as they are.
    resumed: bool,
    finished: bool,
}

impl<'a> FrameWalker<'a> {
    /// Walks `bytes` from `offset`, expecting positions above `after_position`.
    pub(crate) fn new(bytes: &'a [u8], offset: u64, after_position: u64) -> Self {
        FrameWalker {
            bytes,
            offset: usize::try_from(offset).unwrap_or(usize::MAX),
            last_position: after_position,
            record_bytes_max: WalOptions::default().record_bytes_max,
            batch_open: None,
            resumed: false,
            finished: false,
        }
    }

    fn frame_at(&self, offset: usize) -> std::result::Result<(FrameHeader, &'a [u8]), FrameError> {
        let rest = self.bytes.get(offset..).ok_or(FrameError::Truncated)?;
        frame::decode_frame(rest, self.record_bytes_max)
    }

    /// The next offset after `offset` holding a valid frame above the last position.
    fn resume_point(&self, offset: usize) -> Option<usize> {
        let last_start = self.bytes.len().checked_sub(FRAME_HEADER_BYTES)?;
        (offset + 1..=last_start).find(|&candidate| {
            matches!(self.frame_at(candidate), Ok((header, _)) if header.position > self.last_position)
        })
    }

    fn bad(&mut self, offset: usize, reason: String) -> Walk<'a> {
        let resume = self.resume_point(offset);
        let after_position = self.last_position;
        self.batch_open = None;
        self.resumed = true;
        self.offset = resume.unwrap_or(self.bytes.len());
        Walk::Bad {
            offset: offset as u64,
            reason,
            after_position,
            at_end: resume.is_none(),
        }
    }
}

impl<'a> Iterator for FrameWalker<'a> {
    type Item = Walk<'a>;

    fn next(&mut self) -> Option<Walk<'a>> {
        if self.finished {
            return None;
        }
        let offset = self.offset;
        if offset >= self.bytes.len() {
            self.finished = true;
            let start = self.batch_open.take()?;
            return Some(Walk::Bad {
                offset: start as u64,
                reason: "unfinished batch: its last frame is missing at the end of the file"
                    .to_owned(),
                after_position: self.last_position,
                at_end: true,
            });
        }
        let (header, payload) = match self.frame_at(offset) {
            Ok(frame) => frame,
            Err(_)
                if self.batch_open.is_none()
                    && self
                        .bytes
                        .get(offset..)
                        .is_some_and(|rest| rest.iter().all(|&byte| byte == 0)) =>
            {
                self.finished = true;
                return Some(Walk::Zeros {
                    offset: offset as u64,
                    bytes: (self.bytes.len() - offset) as u64,
                });
            }
            Err(error) => return Some(self.bad(offset, error.reason().to_owned())),
        };
        if header.position <= self.last_position {
            let reason = format!(
                "frame position {} does not follow position {}",
                header.position, self.last_position
            );
            return Some(self.bad(offset, reason));
        }
        if self.resumed {
            self.batch_open = (!header.is_batch_last()).then_some(offset);
        } else if header.is_batch_first() == self.batch_open.is_some() {
            let reason = "frame batch flags do not match the batch structure".to_owned();
            return Some(self.bad(offset, reason));
        } else if header.is_batch_first() && !header.is_batch_last() {
            self.batch_open = Some(offset);
        } else if header.is_batch_last() {
            self.batch_open = None;
        }
        self.resumed = false;
        self.last_position = header.position;
        self.offset = offset + header.frame_len() as usize;
        Some(Walk::Frame {
            offset: offset as u64,
            header,
            payload,
        })
    }
}

/// A valid frame's header fields and, when its payload is an event envelope, the event's place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameSummary {
    /// Bytes of payload.
    pub payload_len: u32,
    /// The stored CRC-32.
    pub crc: u32,
    /// The record's position.
    pub position: u64,
    /// The durable position its writer knew.
    pub durable_mark: u64,
    /// Batch flags (bit 0 first, bit 1 last).
    pub flags: u8,
    /// The event's stream, version and type; `None` when the payload is not a valid envelope.
    pub event: Option<(String, u64, String)>,
}

/// One frame of a segment file, or a bad spot where no valid frame is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameEntry {
    /// The segment file.
    pub segment: PathBuf,
    /// Byte offset in the file.
    pub offset: u64,
    /// The frame, or why the bytes there are not one.
    pub frame: std::result::Result<FrameSummary, String>,
}

pub(crate) fn summary(header: &FrameHeader, payload: &[u8]) -> FrameSummary {
    FrameSummary {
        payload_len: header.payload_len,
        crc: header.crc,
        position: header.position,
        durable_mark: header.durable_mark,
        flags: header.flags,
        event: EnvelopeRef::decode(payload).ok().map(|envelope| {
            (
                envelope.stream.to_owned(),
                envelope.stream_version,
                envelope.event_type.to_owned(),
            )
        }),
    }
}

/// Every frame of the log in `dir` with its file and offset, bad spots included, for debugging
/// the format. Reads the files directly: works on a log that does not open.
pub fn frames(dir: impl AsRef<Path>) -> Result<Vec<FrameEntry>> {
    frames_with_storage(Arc::new(FileStorage::new()), dir.as_ref())
}

/// [`frames`] on any storage.
pub fn frames_with_storage(storage: Arc<dyn Storage>, dir: &Path) -> Result<Vec<FrameEntry>> {
    let (segments, _) = segment_files(storage.as_ref(), dir)?;
    let mut entries = Vec::new();
    let count = segments.len();
    for (index, segment) in segments.into_iter().enumerate() {
        let is_last = index + 1 == count;
        let bytes = read_file(storage.as_ref(), &segment.path)?;
        if let Err(reason) = segment::decode_header(&bytes) {
            entries.push(FrameEntry {
                segment: segment.path.clone(),
                offset: 0,
                frame: Err(reason.to_owned()),
            });
        }
        let start = SEGMENT_HEADER_BYTES as u64;
        for step in FrameWalker::new(&bytes, start, segment.base.saturating_sub(1)) {
            let (offset, frame) = match step {
                Walk::Frame {
                    offset,
                    header,
                    payload,
                } => (offset, Ok(summary(&header, payload))),
                Walk::Bad { offset, reason, .. } => (offset, Err(reason)),
                // The last segment's preallocated space is not a frame, nor a bad one.
                Walk::Zeros { .. } if is_last => continue,
                Walk::Zeros { offset, bytes } => (
                    offset,
                    Err(format!(
                        "{bytes} zero bytes after the last frame (in a sealed segment)"
                    )),
                ),
            };
            entries.push(FrameEntry {
                segment: segment.path.clone(),
                offset,
                frame,
            });
        }
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use logbook_wal::frame::{FLAG_BATCH_FIRST, FLAG_BATCH_LAST, encode_frame};

    fn log_bytes(frames: &[(u64, u8)]) -> Vec<u8> {
        let mut bytes = vec![0u8; SEGMENT_HEADER_BYTES];
        for &(position, flags) in frames {
            encode_frame(&mut bytes, position, position - 1, flags, b"payload");
        }
        bytes
    }

    const SINGLE: u8 = FLAG_BATCH_FIRST | FLAG_BATCH_LAST;

    #[test]
    fn walks_past_a_bad_frame_and_reports_both_problems() {
        let mut bytes = log_bytes(&[(1, SINGLE), (2, SINGLE), (3, SINGLE), (4, SINGLE)]);
        let frame_len = FRAME_HEADER_BYTES + 7;
        bytes[SEGMENT_HEADER_BYTES + frame_len + 30] ^= 0x10; // frame 2's payload
        bytes[SEGMENT_HEADER_BYTES + 3 * frame_len + 9] ^= 0x01; // frame 4's position
        let steps: Vec<_> = FrameWalker::new(&bytes, SEGMENT_HEADER_BYTES as u64, 0).collect();
        let bad: Vec<(u64, bool)> = steps
            .iter()
            .filter_map(|step| match step {
                Walk::Bad { offset, at_end, .. } => Some((*offset, *at_end)),
                Walk::Frame { .. } | Walk::Zeros { .. } => None,
            })
            .collect();
        let good = steps.len() - bad.len();
        assert_eq!(good, 2);
        assert_eq!(
            bad,
            vec![
                ((SEGMENT_HEADER_BYTES + frame_len) as u64, false),
                ((SEGMENT_HEADER_BYTES + 3 * frame_len) as u64, true),
            ]
        );
    }

    #[test]
    fn an_unfinished_batch_at_the_end_is_reported_at_its_first_frame() {
        let bytes = log_bytes(&[(1, SINGLE), (2, FLAG_BATCH_FIRST), (3, 0)]);
        let steps: Vec<_> = FrameWalker::new(&bytes, SEGMENT_HEADER_BYTES as u64, 0).collect();
        let last = steps.last().expect("steps");
        let expected = (SEGMENT_HEADER_BYTES + FRAME_HEADER_BYTES + 7) as u64;
        assert!(matches!(last, Walk::Bad { offset, at_end: true, .. } if *offset == expected));
    }

    #[test]
    fn zeros_after_a_complete_batch_end_the_walk_and_zeros_inside_one_are_bad() {
        let mut bytes = log_bytes(&[(1, SINGLE), (2, SINGLE)]);
        let end = bytes.len() as u64;
        bytes.resize(bytes.len() + 5000, 0);
        let steps: Vec<_> = FrameWalker::new(&bytes, SEGMENT_HEADER_BYTES as u64, 0).collect();
        assert_eq!(steps.len(), 3);
        assert!(
            matches!(steps[2], Walk::Zeros { offset, bytes: 5000 } if offset == end),
            "{steps:?}"
        );
        let mut open_batch = log_bytes(&[(1, SINGLE), (2, FLAG_BATCH_FIRST)]);
        open_batch.resize(open_batch.len() + 5000, 0);
        let steps: Vec<_> = FrameWalker::new(&open_batch, SEGMENT_HEADER_BYTES as u64, 0).collect();
        assert!(
            matches!(steps.last(), Some(Walk::Bad { at_end: true, .. })),
            "{steps:?}"
        );
    }

    #[test]
    fn garbage_never_panics() {
        let mut bytes = log_bytes(&[(1, SINGLE)]);
        bytes.extend((0..2000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
        let steps = FrameWalker::new(&bytes, 0, 0).count();
        assert!(steps >= 1);
    }
}
