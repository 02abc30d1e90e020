//! One record on disk: the frame.
//!
//! Owns: the byte layout of a frame (see `docs/format.md`), its encoding and its checked
//! decoding. Must never: panic or allocate on behalf of bytes it has not yet validated, and never
//! accept a frame whose checksum, flags or reserved bytes are wrong.
//!
//! ```text
//! offset size field
//!      0    4 payload_len   u32 LE, bytes of payload after the 28-byte header
//!      4    4 crc32         u32 LE, CRC-32 (crc32fast) of bytes 8 .. 28 + payload_len
//!      8    8 position      u64 LE, the record's global position (>= 1, < u64::MAX)
//!     16    8 durable_mark  u64 LE, the durable position when the frame was written (< position)
//!     24    1 flags         bit 0 BATCH_FIRST, bit 1 BATCH_LAST, other bits zero
//!     25    3 reserved      zero
//!     28    n payload
//! ```
#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

/// Bytes of a frame header.
pub const FRAME_HEADER_BYTES: usize = 28;

/// Flag: the first frame of a batch (a single record has both flags).
pub const FLAG_BATCH_FIRST: u8 = 0b01;
/// Flag: the last frame of a batch.
pub const FLAG_BATCH_LAST: u8 = 0b10;
const FLAGS_KNOWN: u8 = FLAG_BATCH_FIRST | FLAG_BATCH_LAST;

/// The validated header of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Bytes of payload.
    pub payload_len: u32,
    /// The stored checksum.
    pub crc: u32,
    /// The record's position.
    pub position: u64,
    /// The durable position known to the writer when it wrote this frame.
    pub durable_mark: u64,
    /// Batch flags.
    pub flags: u8,
}

impl FrameHeader {
    /// True for the first frame of a batch.
    pub fn is_batch_first(&self) -> bool {
        self.flags & FLAG_BATCH_FIRST != 0
    }

    /// True for the last frame of a batch.
    pub fn is_batch_last(&self) -> bool {
        self.flags & FLAG_BATCH_LAST != 0
    }

    /// Bytes of the whole frame, header included.
    pub fn frame_len(&self) -> u64 {
        FRAME_HEADER_BYTES as u64 + u64::from(self.payload_len)
    }
}

/// Why bytes are not a valid frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// Fewer bytes than a header, or than the header's payload length.
    Truncated,
    /// The header's payload length is over the record limit.
    TooLarge,
    /// Unknown flag bits or non-zero reserved bytes.
    BadHeader,
    /// Position zero or `u64::MAX`, or a durable mark not below the position.
    BadPosition,
    /// The checksum does not match.
    Checksum,
}

impl FrameError {
    /// A human reason, for error messages.
    pub fn reason(self) -> &'static str {
        match self {
            FrameError::Truncated => "frame truncated (torn write or end of file)",
            FrameError::TooLarge => "frame length over the record limit",
            FrameError::BadHeader => "frame header has unknown flags or non-zero reserved bytes",
            FrameError::BadPosition => "frame header has an impossible position or durable mark",
            FrameError::Checksum => "frame checksum mismatch",
        }
    }
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    if let Some(slice) = bytes.get(at..at + 4) {
        word.copy_from_slice(slice);
    }
    u32::from_le_bytes(word)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    if let Some(slice) = bytes.get(at..at + 8) {
        word.copy_from_slice(slice);
    }
    u64::from_le_bytes(word)
}

/// Appends one encoded frame to `out`.
///
/// Panics if the payload is over `u32::MAX` bytes or the position invariants do not hold: the
/// caller checks limits first, so either would be a bug.
pub fn encode_frame(
    out: &mut Vec<u8>,
    position: u64,
    durable_mark: u64,
    flags: u8,
    payload: &[u8],
) {
    assert!(position >= 1, "positions start at 1");
    assert!(
        durable_mark < position,
        "durable mark {durable_mark} >= position {position}"
    );
    assert!(flags & !FLAGS_KNOWN == 0, "unknown flags {flags:#x}");
    let payload_len = u32::try_from(payload.len()).expect("payload length checked by the caller");
    let start = out.len();
    out.extend_from_slice(&payload_len.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&position.to_le_bytes());
    out.extend_from_slice(&durable_mark.to_le_bytes());
    out.extend_from_slice(&[flags, 0, 0, 0]);
    out.extend_from_slice(payload);
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(out.get(start + 8..).unwrap_or(&[]));
    let crc = hasher.finalize().to_le_bytes();
    if let Some(slot) = out.get_mut(start + 4..start + 8) {
        slot.copy_from_slice(&crc);
    }
    debug_assert_eq!(out.len() - start, FRAME_HEADER_BYTES + payload.len());
}

/// Decodes and checks a header's fields (not the checksum, which needs the payload).
pub fn decode_header(bytes: &[u8], payload_bytes_max: u32) -> Result<FrameHeader, FrameError> {
    if bytes.len() < FRAME_HEADER_BYTES {
        return Err(FrameError::Truncated);
    }
    let header = FrameHeader {
        payload_len: u32_at(bytes, 0),
        crc: u32_at(bytes, 4),
        position: u64_at(bytes, 8),
        durable_mark: u64_at(bytes, 16),
        flags: bytes.get(24).copied().unwrap_or(0xff),
    };
    let reserved = bytes.get(25..28).unwrap_or(&[1]);
    if header.flags & !FLAGS_KNOWN != 0 || reserved != [0, 0, 0] {
        return Err(FrameError::BadHeader);
    }
    // No writer gives out position u64::MAX (it would leave no next position, and open computes
    // `last position + 1`): a frame claiming it is damaged. Found by fuzzing (segment_recovery).
    if header.position == 0 || header.position == u64::MAX || header.durable_mark >= header.position
    {
        return Err(FrameError::BadPosition);
    }
    if header.payload_len > payload_bytes_max {
        return Err(FrameError::TooLarge);
    }
    Ok(header)
}

/// Checks the checksum of a whole frame (its header then its payload, contiguous): the CRC-32 of
/// its bytes from offset 8 to its end. One call over the contiguous bytes: crc32fast folds 64
/// bytes at a time and hashes what is left a byte at a time, so a header and a payload hashed
/// apart cost about 1.7 times as much for a 270-byte frame (`docs/benchmarks.md`, session 15),
/// as [`encode_frame`] hashes them.
pub fn verify_checksum(frame: &[u8], expected: u32) -> Result<(), FrameError> {
    verify_checksum_with(crc32fast::Hasher::new(), frame, expected)
}

/// [`verify_checksum`] with a fresh `hasher` (a clone of one made before: `Hasher::new` asks
/// the CPU's features every time, a tenth of the check's cost on a 270-byte frame).
pub(crate) fn verify_checksum_with(
    mut hasher: crc32fast::Hasher,
    frame: &[u8],
    expected: u32,
) -> Result<(), FrameError> {
    if frame.len() < FRAME_HEADER_BYTES {
        return Err(FrameError::Truncated);
    }
    hasher.update(frame.get(8..).unwrap_or_default());
    if hasher.finalize() == expected {
        Ok(())
    } else {
        Err(FrameError::Checksum)
    }
}

/// Decodes one whole frame from the front of `bytes`: its header and payload slice.
pub fn decode_frame(
    bytes: &[u8],
    payload_bytes_max: u32,
) -> Result<(FrameHeader, &[u8]), FrameError> {
    let header = decode_header(bytes, payload_bytes_max)?;
    let end = FRAME_HEADER_BYTES
        .checked_add(header.payload_len as usize)
        .ok_or(FrameError::TooLarge)?;
    let frame = bytes.get(..end).ok_or(FrameError::Truncated)?;
    let payload = frame
        .get(FRAME_HEADER_BYTES..)
        .ok_or(FrameError::Truncated)?;
    verify_checksum(frame, header.crc)?;
    Ok((header, payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut out = Vec::new();
        encode_frame(&mut out, 7, 3, FLAG_BATCH_FIRST | FLAG_BATCH_LAST, b"hello");
        assert_eq!(out.len(), FRAME_HEADER_BYTES + 5);
        let (header, payload) = decode_frame(&out, 1024).unwrap();
        assert_eq!(payload, b"hello");
        assert_eq!((header.position, header.durable_mark), (7, 3));
        assert!(header.is_batch_first() && header.is_batch_last());
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let mut frame = Vec::new();
        encode_frame(&mut frame, 9, 8, FLAG_BATCH_FIRST, b"payload bytes");
        for bit in 0..frame.len() * 8 {
            let mut bad = frame.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_frame(&bad, 1024).is_err(), "bit {bit} undetected");
        }
    }

    #[test]
    fn zeros_and_short_input_are_errors() {
        assert_eq!(
            decode_frame(&[0; 64], 1024).unwrap_err(),
            FrameError::BadPosition
        );
        assert_eq!(
            decode_frame(&[0; 10], 1024).unwrap_err(),
            FrameError::Truncated
        );
        let mut frame = Vec::new();
        encode_frame(&mut frame, 1, 0, FLAG_BATCH_LAST, &[5; 100]);
        assert_eq!(
            decode_frame(&frame[..60], 1024).unwrap_err(),
            FrameError::Truncated
        );
        assert_eq!(decode_frame(&frame, 99).unwrap_err(), FrameError::TooLarge);
    }
}
