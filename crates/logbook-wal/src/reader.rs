//! Reading records back: an iterator from any position, checked frame by frame.
//!
//! Owns: locating a position (segment by binary search on base positions, then the segment's
//! sparse index, then a short scan) and walking frames across segments. Must never: return a
//! record above the durable position, read bytes past a segment's durable length, or skip a bad
//! frame (it yields [`Error::Corrupted`] and stops).

use crate::cursor::Cursor;
use crate::error::{Error, Result};
use crate::frame::FRAME_HEADER_BYTES;
use crate::segment::{SEGMENT_HEADER_BYTES, Segment};
use crate::wal::{Inner, Record};
use std::sync::Arc;

/// An iterator over durable records, in position order, from a starting position.
///
/// Not fused: after `None` (caught up with the durable position), a later `next` returns
/// records that became durable in between. After an error it returns `None` for good. On a
/// read-only handle whose open stopped at corruption ([`Wal::damage`](crate::Wal::damage)), it
/// returns every record before the damage, then [`Error::Corrupted`] naming it.
pub struct WalReader {
    inner: Arc<Inner>,
    next_position: u64,
    segment: Option<Arc<Segment>>,
    offset: u64,
    cursor: Cursor,
    failed: bool,
    frames_read: u64,
    /// The reader ends after this position, without reading past it (see [`WalReader::up_to`]).
    last: u64,
    /// The caller means to read through this position (see [`WalReader::reading_through`]).
    through: Option<u64>,
}

impl std::fmt::Debug for WalReader {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("WalReader")
            .field("next_position", &self.next_position)
            .field("offset", &self.offset)
            .finish()
    }
}

impl WalReader {
    pub(crate) fn new(inner: Arc<Inner>, position: u64) -> Self {
        WalReader {
            cursor: Cursor::with_spare(inner.read_buffers.take()),
            inner,
            next_position: position.max(1),
            segment: None,
            offset: 0,
            failed: false,
            frames_read: 0,
            last: u64::MAX,
            through: None,
        }
    }

    /// Says the caller will read on through `last` (say, the last position of a page of a
    /// stream's events, found in the stream index): the first read from disk then fetches the
    /// bytes up to it at once (up to 256 KiB, estimated from the segment's sparse index), not
    /// 8 KiB doubling read after read. Changes no result, only how the bytes are read.
    pub fn reading_through(mut self, last: u64) -> Self {
        self.through = Some(last);
        self
    }

    /// Ends the reader after `last`: once a record at or above it was yielded, it returns
    /// `None` without reading a byte more (a reader of one segment does not read ahead into
    /// the next).
    pub fn up_to(mut self, last: u64) -> Self {
        self.last = last;
        self
    }

    /// Makes the reader lend its read buffers, so a scan that hands records to another thread
    /// need not copy them out: records come from [`WalReader::next_located`] with where they
    /// lie in the reader's current buffer (its block), and once the reader needs another
    /// buffer, the block is the caller's ([`WalReader::take_block`]). The same records, checks
    /// and errors as without.
    pub fn lending_blocks(mut self) -> Self {
        self.cursor.lend();
        self
    }

    /// The next record of a lending reader ([`WalReader::lending_blocks`]): as
    /// [`WalReader::next_ref`], but where its bytes lie in the reader's current block
    /// ([`WalReader::block_bytes`] lends them), and whether that block is new, that is, the
    /// records returned before it were in another block, now retired:
    /// [`WalReader::take_block`] returns that one. Every record of a block is returned before
    /// the first of the next.
    pub fn next_located(&mut self) -> Option<Result<Located>> {
        let (position, offset, len) = match self.next_frame()? {
            Ok(found) => found,
            Err(error) => return Some(Err(error)),
        };
        let new_block = self.cursor.take_fresh();
        match self.cursor.located(offset, len) {
            Some((at, _)) => Some(Ok(Located {
                position,
                at,
                len,
                new_block,
            })),
            None => Some(Err(not_buffered(&mut self.failed, &self.segment, offset))),
        }
    }

    /// The bytes `[at, at + len)` of the reader's current block: a record
    /// [`WalReader::next_located`] returned since the block began.
    pub fn block_bytes(&self, at: usize, len: usize) -> Option<&[u8]> {
        self.cursor.block_bytes(at, len)
    }

    /// The block retired last ([`WalReader::next_located`]), if not taken yet: the bytes the
    /// reader read at once, from a file offset that is the start of a frame; every record
    /// returned from it lies whole in it, where it said. A block not taken before the next is
    /// retired is dropped.
    pub fn take_block(&mut self) -> Option<Vec<u8>> {
        self.cursor.take_retired()
    }

    /// Retires the current block now if a record was returned from it (at the end of a scan,
    /// to take it with [`WalReader::take_block`]); the next record is read into another.
    pub fn end_block(&mut self) {
        self.cursor.retire();
    }

    /// Hands back a block the caller is done with, for the reader to read into again (a
    /// lending reader keeps at most 16; without lending it is dropped).
    pub fn give_block(&mut self, block: Vec<u8>) {
        self.cursor.give(block);
    }

    /// The position the next record returned will be at or after.
    pub fn next_position(&self) -> u64 {
        self.next_position
    }

    /// Frames read from disk so far (records returned plus those skipped while seeking).
    pub fn frames_read(&self) -> u64 {
        self.frames_read
    }

    /// Finds the segment holding `position` (or the first one after a gap) and the offset to
    /// scan from; `None` when there is none.
    fn locate(&mut self) -> Option<()> {
        let segments = self.inner.segments();
        let after = segments.partition_point(|segment| segment.base <= self.next_position);
        let segment = segments.get(after.saturating_sub(1))?.clone();
        drop(segments);
        self.offset = segment.seek_offset(self.next_position);
        self.cursor.reset();
        if let Some(last) = self.through.take()
            && last > self.next_position
        {
            // Where the scan for `last` starts, plus one sparse-index interval and a frame.
            let end = segment.seek_offset(last) + crate::cursor::READ_AHEAD_BYTES_MIN as u64;
            self.cursor.hint(end.saturating_sub(self.offset));
        }
        self.segment = Some(segment);
        Some(())
    }

    fn next_segment(&self, current: &Segment) -> Option<Arc<Segment>> {
        let segments = self.inner.segments();
        let after = segments.partition_point(|segment| segment.base <= current.base);
        segments.get(after).cloned()
    }

    /// The next record handed to `read` as its position and a borrow of its bytes (checked
    /// like every record [`Iterator::next`] returns), without copying them out of the reader's
    /// buffer; `read`'s result is returned. `None` and errors as for `next`.
    pub fn next_with<T>(&mut self, read: impl FnOnce(u64, &[u8]) -> T) -> Option<Result<T>> {
        Some(
            self.next_ref()?
                .map(|(position, payload)| read(position, payload)),
        )
    }

    /// The next record, borrowed from the reader's buffer: no copy and no allocation per
    /// record, for scans that decode each record and let it go (the replay at open). The same
    /// records, checks and errors as [`Iterator::next`].
    pub fn next_ref(&mut self) -> Option<Result<(u64, &[u8])>> {
        let (position, offset, len) = match self.next_frame()? {
            Ok(found) => found,
            Err(error) => return Some(Err(error)),
        };
        match self.cursor.buffered(offset, len) {
            Some(payload) => Some(Ok((position, payload))),
            None => Some(Err(not_buffered(&mut self.failed, &self.segment, offset))),
        }
    }

    /// The next record returned to the caller ([`WalReader::step_frame`]; `None` for good
    /// after an error), its frame lent from the cursor's buffer.
    fn next_frame(&mut self) -> Option<Result<(u64, u64, usize)>> {
        if self.failed {
            return None;
        }
        let found = self.step_frame()?;
        if found.is_ok() {
            self.cursor.lent();
        }
        Some(found)
    }

    /// Finds the next record and checks its frame: its position, and the file offset and
    /// length of its payload, which the cursor holds until the next read.
    fn step_frame(&mut self) -> Option<Result<(u64, u64, usize)>> {
        let durable = self.inner.durable();
        if self.next_position > self.last {
            return None;
        }
        if self.next_position > durable {
            // A read-only open that stopped at corruption: past the last record before it, the
            // reader fails there (never a silent end: the log goes on after the damage).
            let damage = self.inner.damage()?;
            self.failed = true;
            return Some(Err(damage.to_error()));
        }
        loop {
            if self.segment.is_none() {
                self.locate()?;
            }
            // Borrowed, not cloned: an `Arc` clone per record was two atomic operations on
            // every replayed record.
            let segment = self.segment.as_ref()?;
            let limit = segment.durable_len();
            if self.offset >= limit {
                let next = self.next_segment(segment)?;
                self.segment = Some(next);
                self.offset = SEGMENT_HEADER_BYTES as u64;
                self.cursor.reset();
                continue;
            }
            // The format's limit, not the configured one: lowering `record_bytes_max` must never
            // make a durable record unreadable.
            let max = crate::options::RECORD_BYTES_LIMIT;
            // A frame already buffered is checked where it lies; any other is read first.
            let frame = match self.cursor.buffered_frame(self.offset, limit, max) {
                Some(checked) => checked.map(|(header, _)| header),
                None => match self
                    .cursor
                    .read_frame(segment.file.as_ref(), self.offset, limit, max)
                {
                    Ok(frame) => frame.map(|(header, _)| header),
                    Err(source) => {
                        self.failed = true;
                        return Some(Err(Error::io(&segment.path, source)));
                    }
                },
            };
            let header = match frame {
                Ok(header) => header,
                Err(error) => {
                    self.failed = true;
                    let reason = error.reason();
                    return Some(Err(Error::corrupted(&segment.path, self.offset, reason)));
                }
            };
            if header.position > durable {
                return None;
            }
            self.frames_read += 1;
            self.offset += header.frame_len();
            if header.position < self.next_position {
                continue;
            }
            self.next_position = header.position + 1;
            let payload_offset = self.offset - header.frame_len() + FRAME_HEADER_BYTES as u64;
            return Some(Ok((
                header.position,
                payload_offset,
                header.payload_len as usize,
            )));
        }
    }
}

/// `step_frame` just read the frame at `offset` through the cursor, so it is buffered: this is
/// unreachable, but a failure (the reader stops), never a panic.
fn not_buffered(failed: &mut bool, segment: &Option<Arc<Segment>>, offset: u64) -> Error {
    *failed = true;
    let path = segment.as_ref().map(|segment| segment.path.clone());
    Error::corrupted(path.unwrap_or_default(), offset, "frame not buffered")
}

/// Where a record of a lending reader lies ([`WalReader::next_located`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Located {
    /// The record's position.
    pub position: u64,
    /// Where its bytes (the frame's payload) start in the reader's current block.
    pub at: usize,
    /// How many bytes it has.
    pub len: usize,
    /// Whether the block is new: the records returned before it are in the block
    /// [`WalReader::take_block`] returns now.
    pub new_block: bool,
}

impl Drop for WalReader {
    /// Hands the read-ahead buffers to the WAL's pool, for the next reader.
    fn drop(&mut self) {
        for buffer in self.cursor.take_buffers().into_iter().flatten() {
            self.inner.read_buffers.give(buffer);
        }
    }
}

impl Iterator for WalReader {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_with(|position, payload| Record {
            position,
            payload: payload.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::cursor::{POOLED_BUFFER_BYTES_MAX, POOLED_BUFFERS_MAX};
    use crate::{MemoryStorage, SyncPolicy, Wal, WalOptions};
    use std::path::Path;
    use std::sync::Arc;

    fn payload(position: u64) -> Vec<u8> {
        // Sizes from 1 byte to ~3 KiB, contents tied to the position.
        let len = 1 + (position * 7919 % 3000) as usize;
        (0..len).map(|at| (position as usize + at) as u8).collect()
    }

    #[test]
    fn pool_keeps_a_bounded_number_of_bounded_buffers() {
        let pool = crate::cursor::BufferPool::default();
        pool.give(Vec::new());
        pool.give(vec![0; POOLED_BUFFER_BYTES_MAX + 1]);
        assert_eq!(pool.len(), 0, "empty and oversized buffers are freed");
        for _ in 0..POOLED_BUFFERS_MAX + 3 {
            pool.give(vec![0; 4096]);
        }
        assert_eq!(pool.len(), POOLED_BUFFERS_MAX);
        assert!(pool.take().is_some());
        assert_eq!(pool.len(), POOLED_BUFFERS_MAX - 1);
    }

    /// Readers that start from pooled buffers full of stale bytes (of any length) read exactly
    /// what a fresh reader reads: a pooled buffer's bytes are never taken for the file's.
    #[test]
    fn readers_over_pooled_stale_buffers_read_the_right_records() -> crate::Result<()> {
        let storage = Arc::new(MemoryStorage::new());
        let options = WalOptions {
            sync_policy: SyncPolicy::Always,
            segment_bytes_max: 64 << 10,
            ..WalOptions::default()
        };
        let (wal, _) = Wal::open_with_storage(storage, Path::new("/log"), options)?;
        let last = 400u64;
        for position in 1..=last {
            assert_eq!(wal.append(&payload(position))?, position);
        }
        assert!(wal.segments().len() > 3, "reads cross segments");
        let mut state = 0x2545_F491_4F6C_DD1D_u64;
        let mut next = |bound: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % bound
        };
        for round in 0..200 {
            // Stale buffers of assorted lengths, filled with a byte no frame starts with.
            for _ in 0..POOLED_BUFFERS_MAX {
                let len = [1, 28, 4096, 9000, 70_000, 256 << 10][next(6) as usize];
                wal.inner().read_buffers.give(vec![0xA5; len]);
            }
            let from = 1 + next(last);
            let through = from + next(last - from + 1);
            let reader = wal.read_from(from);
            let reader = if round % 2 == 0 {
                reader.reading_through(through)
            } else {
                reader
            };
            let count = (through - from + 1) as usize;
            for (at, record) in reader.take(count).enumerate() {
                let record = record?;
                let position = from + at as u64;
                assert_eq!(record.position, position, "round {round}");
                assert_eq!(
                    record.payload,
                    payload(position),
                    "round {round}, {position}"
                );
            }
        }
        // Dropped readers handed their buffers back.
        assert!(wal.inner().read_buffers.len() > 0);
        wal.close()
    }
}
