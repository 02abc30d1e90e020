//! Buffered, checked reading of frames from a segment file.
//!
//! Owns: read-ahead over positional reads and the checks of one frame read from disk (bounds,
//! header, checksum). Must never: read past the limit it is given (readers pass the durable
//! length, so they never see bytes a sync has not covered), allocate more than the read-ahead
//! chunk plus one frame that fits below the limit, or take a pooled buffer's stale bytes for
//! the file's ([`BufferPool`]: read-ahead buffers kept for the next reader, bounded).
#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

use crate::frame::{self, FRAME_HEADER_BYTES, FrameError, FrameHeader};
use crate::storage::StorageFile;
use std::io;
use std::sync::Mutex;

/// The most bytes read ahead at a time (sequential scans grow to this).
pub(crate) const READ_AHEAD_BYTES_MAX: usize = 256 << 10;
/// The first read after a seek: one sparse-index interval (4 KiB by default) plus a frame or
/// two, so a point read costs a few KiB, not a full read-ahead.
pub(crate) const READ_AHEAD_BYTES_MIN: usize = 8 << 10;

/// The most read-ahead buffers a [`BufferPool`] keeps.
pub(crate) const POOLED_BUFFERS_MAX: usize = 4;
/// The largest buffer a [`BufferPool`] keeps (one grown past it for a large frame is freed).
pub(crate) const POOLED_BUFFER_BYTES_MAX: usize = 2 * READ_AHEAD_BYTES_MAX;

/// Read-ahead buffers of dropped readers, kept for the next ones: a reader made per page of a
/// stream's events would otherwise allocate a buffer of up to [`READ_AHEAD_BYTES_MAX`] for
/// each page and fill it with zeros before reading into it. At most [`POOLED_BUFFERS_MAX`]
/// buffers of at most [`POOLED_BUFFER_BYTES_MAX`] bytes each (2 MiB in all).
#[derive(Debug, Default)]
pub(crate) struct BufferPool {
    buffers: Mutex<Vec<Vec<u8>>>,
}

impl BufferPool {
    /// A kept buffer, at the length it had (bytes of a former read: a cursor reads over them).
    pub(crate) fn take(&self) -> Option<Vec<u8>> {
        self.buffers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .pop()
    }

    /// Keeps `buffer` for a later reader, unless the pool is full or the buffer too large.
    pub(crate) fn give(&self, buffer: Vec<u8>) {
        if buffer.is_empty() || buffer.capacity() > POOLED_BUFFER_BYTES_MAX {
            return;
        }
        let mut buffers = self
            .buffers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if buffers.len() < POOLED_BUFFERS_MAX {
            buffers.push(buffer);
        }
        debug_assert!(buffers.len() <= POOLED_BUFFERS_MAX);
    }

    /// Buffers kept now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.buffers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .len()
    }
}

/// A read-ahead buffer over one file. The read-ahead doubles while reads stay sequential and
/// drops back to the minimum after a seek.
#[derive(Debug)]
pub(crate) struct Cursor {
    buffer: Vec<u8>,
    /// File offset of `buffer[0]`.
    start: u64,
    read_ahead: usize,
    /// The size of the next read, when the caller knows how far it will read
    /// ([`Cursor::hint`]); once used, the read-ahead doubles from it as after any read.
    hint: Option<usize>,
    /// Whether buffers that frames were returned from are kept for the caller instead of
    /// being read over ([`Cursor::lend`]); `None` when not lending.
    lending: Option<Lending>,
    /// A fresh CRC-32 hasher, cloned for each frame ([`frame::verify_checksum_with`]).
    crc: crc32fast::Hasher,
    /// A buffer of a former reader ([`BufferPool`]), read into instead of a new one; its
    /// bytes mean nothing until a read overwrites them.
    spare: Option<Vec<u8>>,
}

/// The buffers of a lending cursor: a buffer a frame was returned from is retired (handed to
/// the caller) when the cursor needs another, and the cursor reads into a spare instead.
#[derive(Debug, Default)]
struct Lending {
    /// Whether a frame of the current buffer was returned to the caller.
    lent: bool,
    /// Whether the buffer was retired since the caller last asked ([`Cursor::take_fresh`]).
    fresh: bool,
    /// The buffer retired last, until the caller takes it.
    retired: Option<Vec<u8>>,
    /// Buffers handed back, read into next (at most [`SPARES_MAX`] are kept).
    spares: Vec<Vec<u8>>,
}

/// The most spare buffers a lending cursor keeps.
const SPARES_MAX: usize = 16;

impl Default for Cursor {
    fn default() -> Self {
        Cursor {
            buffer: Vec::new(),
            start: 0,
            read_ahead: READ_AHEAD_BYTES_MIN,
            hint: None,
            lending: None,
            crc: crc32fast::Hasher::new(),
            spare: None,
        }
    }
}

impl Cursor {
    pub(crate) fn new() -> Self {
        Cursor::default()
    }

    /// A cursor that reads into `spare` (a pooled buffer, any length) before it allocates.
    pub(crate) fn with_spare(spare: Option<Vec<u8>>) -> Self {
        Cursor {
            spare,
            ..Cursor::default()
        }
    }

    /// The buffers this cursor holds and the caller has no claim on (its current buffer and
    /// its unused spare; not a lent one), to pool them when the reader is dropped.
    pub(crate) fn take_buffers(&mut self) -> [Option<Vec<u8>>; 2] {
        let current = if self.lending.as_ref().is_some_and(|lending| lending.lent) {
            // Frames of it were handed out: the caller may still take it (`take_retired`).
            None
        } else {
            self.start = 0;
            Some(std::mem::take(&mut self.buffer))
        };
        [current, self.spare.take()]
    }

    /// Forgets buffered bytes (after the file changed under them, or another file is read).
    /// A lending cursor retires its buffer if a frame of it was returned.
    pub(crate) fn reset(&mut self) {
        self.retire();
        if let Some(lending) = &mut self.lending
            && !self.buffer.is_empty()
            && lending.spares.len() < SPARES_MAX
        {
            // Kept at its length: the next read takes it back without filling it with zeros.
            lending.spares.push(std::mem::take(&mut self.buffer));
        }
        if self.spare.is_none() && !self.buffer.is_empty() {
            // Likewise: read into again at its length.
            self.spare = Some(std::mem::take(&mut self.buffer));
        }
        self.buffer.clear();
        self.start = 0;
        self.read_ahead = READ_AHEAD_BYTES_MIN;
        self.hint = None;
    }

    /// The caller is about to read about `bytes` from its next offset on: the next read (the
    /// first after this) fetches that much at once, within [`READ_AHEAD_BYTES_MIN`] and
    /// [`READ_AHEAD_BYTES_MAX`], instead of starting small and doubling (a page of 500
    /// events of ~280 bytes took five reads, each growing and zeroing the buffer anew).
    pub(crate) fn hint(&mut self, bytes: u64) {
        let bytes = usize::try_from(bytes).unwrap_or(READ_AHEAD_BYTES_MAX);
        self.hint = Some(bytes.clamp(READ_AHEAD_BYTES_MIN, READ_AHEAD_BYTES_MAX));
    }

    /// Starts lending: buffers that frames were returned from ([`Cursor::lent`]) are kept for
    /// the caller ([`Cursor::take_retired`]) rather than read over.
    pub(crate) fn lend(&mut self) {
        self.lending.get_or_insert_with(Lending::default);
    }

    /// A frame of the current buffer was returned to the caller (lending only).
    pub(crate) fn lent(&mut self) {
        if let Some(lending) = &mut self.lending {
            lending.lent = true;
        }
    }

    /// Whether the buffer frames were returned from was retired since the last call.
    pub(crate) fn take_fresh(&mut self) -> bool {
        self.lending
            .as_mut()
            .is_some_and(|lending| std::mem::take(&mut lending.fresh))
    }

    /// The buffer retired last, if the caller has not taken it yet: the bytes from the file
    /// offset its frames were read at, every frame returned from it whole.
    pub(crate) fn take_retired(&mut self) -> Option<Vec<u8>> {
        self.lending.as_mut()?.retired.take()
    }

    /// Retires the current buffer now if a frame of it was returned (the end of a read).
    pub(crate) fn retire(&mut self) {
        let Some(lending) = &mut self.lending else {
            return;
        };
        if !lending.lent {
            return;
        }
        // A block the caller did not take is dropped: its records' bytes are gone with it.
        // Nothing is buffered now; the next read takes a spare.
        lending.retired = Some(std::mem::take(&mut self.buffer));
        lending.lent = false;
        lending.fresh = true;
        self.start = 0;
    }

    /// A buffer handed back by the caller, to read into next (lending only; kept at its
    /// length, so reading into it again fills no zeros).
    pub(crate) fn give(&mut self, buffer: Vec<u8>) {
        if let Some(lending) = &mut self.lending
            && lending.spares.len() < SPARES_MAX
        {
            lending.spares.push(buffer);
        }
    }

    /// The bytes `[offset, offset + len)`, which the caller guarantees lie below `limit`.
    fn bytes(
        &mut self,
        file: &dyn StorageFile,
        offset: u64,
        len: usize,
        limit: u64,
    ) -> io::Result<&[u8]> {
        let end = offset + len as u64;
        debug_assert!(end <= limit);
        let buffered_end = self.start + self.buffer.len() as u64;
        if offset < self.start || end > buffered_end {
            let sequential =
                !self.buffer.is_empty() && offset >= self.start && offset <= buffered_end;
            self.read_ahead = if let Some(hint) = self.hint.take() {
                hint
            } else if sequential {
                (self.read_ahead * 2).min(READ_AHEAD_BYTES_MAX)
            } else {
                READ_AHEAD_BYTES_MIN
            };
            let want = (limit - offset).min(len.max(self.read_ahead) as u64) as usize;
            // A lending cursor hands the caller a buffer frames were returned from, and reads
            // into a spare (at the length it had: filled with zeros only past it), else into a
            // new one allocated zeroed (`calloc`: a large one comes from the OS already zero,
            // where growing an empty vector would write every byte).
            self.retire();
            if self.buffer.is_empty()
                && let Some(spare) = self.spare.take()
            {
                // Kept at its length: resizing fills zeros only past it.
                self.buffer = spare;
            }
            if let Some(lending) = &mut self.lending
                && self.buffer.is_empty()
            {
                self.buffer = lending.spares.pop().unwrap_or_else(|| vec![0; want]);
            }
            self.buffer.resize(want, 0);
            self.start = offset;
            let mut filled = 0;
            while filled < want {
                let slot = self.buffer.get_mut(filled..).unwrap_or(&mut []);
                let read = file.read_at(offset + filled as u64, slot)?;
                if read == 0 {
                    break;
                }
                filled += read;
            }
            self.buffer.truncate(filled);
            if filled < len {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file shorter than expected",
                ));
            }
        }
        let at = (offset - self.start) as usize;
        self.buffer
            .get(at..at + len)
            .ok_or_else(|| io::Error::other("cursor bounds"))
    }

    /// Where the bytes `[offset, offset + len)` lie in the buffer, and the bytes, if they are
    /// buffered.
    pub(crate) fn located(&self, offset: u64, len: usize) -> Option<(usize, &[u8])> {
        let at = usize::try_from(offset.checked_sub(self.start)?).ok()?;
        Some((at, self.block_bytes(at, len)?))
    }

    /// The bytes `[at, at + len)` of the buffer.
    pub(crate) fn block_bytes(&self, at: usize, len: usize) -> Option<&[u8]> {
        self.buffer.get(at..at.checked_add(len)?)
    }

    /// Bytes `[offset, offset + len)` if they are buffered (the payload of the frame
    /// [`Cursor::read_frame`] returned last, for a borrowing reader).
    pub(crate) fn buffered(&self, offset: u64, len: usize) -> Option<&[u8]> {
        let at = usize::try_from(offset.checked_sub(self.start)?).ok()?;
        self.buffer.get(at..at.checked_add(len)?)
    }

    /// The frame at `offset` when it lies whole in the buffer and below `limit`, checked as
    /// [`Cursor::read_frame`] checks it (the same bytes, so the same verdict): its header and
    /// the index of its first byte in the buffer. `None` when it is not all buffered or would
    /// pass `limit`: [`Cursor::read_frame`] then reads it (or says what is wrong).
    ///
    /// The sequential scan's path: one bounds check for the header, one for the frame, and
    /// the checksum, with no read and no second lookup of the same bytes.
    #[inline]
    pub(crate) fn buffered_frame(
        &self,
        offset: u64,
        limit: u64,
        payload_bytes_max: u32,
    ) -> Option<Result<(FrameHeader, usize), FrameError>> {
        let at = usize::try_from(offset.checked_sub(self.start)?).ok()?;
        let header_end = at.checked_add(FRAME_HEADER_BYTES)?;
        if offset.checked_add(FRAME_HEADER_BYTES as u64)? > limit {
            return None;
        }
        let header_bytes = self.buffer.get(at..header_end)?;
        let header = match frame::decode_header(header_bytes, payload_bytes_max) {
            Ok(header) => header,
            Err(error) => return Some(Err(error)),
        };
        if offset.checked_add(header.frame_len())? > limit {
            return None;
        }
        let frame_end = at.checked_add(usize::try_from(header.frame_len()).ok()?)?;
        let bytes = self.buffer.get(at..frame_end)?;
        Some(
            frame::verify_checksum_with(self.crc.clone(), bytes, header.crc).map(|()| (header, at)),
        )
    }

    /// Reads and checks the frame at `offset`; `limit` is the end of the readable bytes.
    /// The outer `Result` is I/O; the inner one says whether the bytes are a valid frame.
    pub(crate) fn read_frame(
        &mut self,
        file: &dyn StorageFile,
        offset: u64,
        limit: u64,
        payload_bytes_max: u32,
    ) -> io::Result<Result<(FrameHeader, &[u8]), FrameError>> {
        if offset + FRAME_HEADER_BYTES as u64 > limit {
            return Ok(Err(FrameError::Truncated));
        }
        let header_bytes = self.bytes(file, offset, FRAME_HEADER_BYTES, limit)?;
        let header = match frame::decode_header(header_bytes, payload_bytes_max) {
            Ok(header) => header,
            Err(error) => return Ok(Err(error)),
        };
        if offset + header.frame_len() > limit {
            return Ok(Err(FrameError::Truncated));
        }
        let frame_len = header.frame_len() as usize;
        let hasher = self.crc.clone();
        let bytes = self.bytes(file, offset, frame_len, limit)?;
        let Some(payload) = bytes.get(FRAME_HEADER_BYTES..) else {
            return Ok(Err(FrameError::Truncated));
        };
        Ok(frame::verify_checksum_with(hasher, bytes, header.crc).map(|()| (header, payload)))
    }
}
