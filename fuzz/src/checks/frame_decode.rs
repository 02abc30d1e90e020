//! Target `frame_decode`: the frame decoder, the segment-header decoder and the segment file-name
//! parser of `logbook-wal`, on arbitrary bytes.
//!
//! Input: one control byte that sets the payload limit (`control * 8`, 0 to 2,040 bytes), then
//! the bytes to decode. Properties: nothing panics; `decode_header` and `decode_frame` agree;
//! a frame that decodes re-encodes to exactly its bytes, and so does a segment header; a
//! header-valid frame fails only as truncated or on its checksum; a file name that parses is
//! the name of its base position.

use logbook_wal::frame::{self, FrameError};
use logbook_wal::segment::{self, SEGMENT_HEADER_BYTES};

/// The longest input worth decoding: a frame at the largest payload limit, with room to spare.
pub const INPUT_BYTES_MAX: usize = 4096;

/// Runs every check on one input; panics only on a bug.
pub fn check(data: &[u8]) {
    if data.len() > INPUT_BYTES_MAX {
        return;
    }
    let Some((&control, bytes)) = data.split_first() else {
        return;
    };
    check_frame(bytes, u32::from(control) * 8);
    check_segment_header(bytes);
    if let Ok(name) = std::str::from_utf8(bytes)
        && let Some(base) = segment::parse_file_name(name)
    {
        assert!(base >= 1, "base position 0 parsed from {name:?}");
        assert_eq!(segment::file_name(base), name, "name does not round-trip");
    }
}

fn check_frame(bytes: &[u8], payload_bytes_max: u32) {
    let header = frame::decode_header(bytes, payload_bytes_max);
    if let Ok(header) = header {
        assert!(header.position >= 1 && header.position < u64::MAX);
        assert!(header.durable_mark < header.position);
        assert!(
            header.payload_len <= payload_bytes_max,
            "payload limit not enforced"
        );
    }
    match frame::decode_frame(bytes, payload_bytes_max) {
        Ok((decoded, payload)) => {
            assert_eq!(header, Ok(decoded), "header and frame decoders disagree");
            assert_eq!(payload.len() as u64, u64::from(decoded.payload_len));
            let mut encoded = Vec::new();
            frame::encode_frame(
                &mut encoded,
                decoded.position,
                decoded.durable_mark,
                decoded.flags,
                payload,
            );
            assert_eq!(encoded.len() as u64, decoded.frame_len());
            assert!(
                bytes.get(..encoded.len()) == Some(encoded.as_slice()),
                "a decoded frame does not re-encode to its bytes"
            );
        }
        Err(error) => match header {
            Err(header_error) => assert_eq!(error, header_error, "decoders disagree"),
            Ok(decoded) => {
                let expected = if (bytes.len() as u64) < decoded.frame_len() {
                    FrameError::Truncated
                } else {
                    FrameError::Checksum
                };
                assert_eq!(
                    error, expected,
                    "a header-valid frame failed for another reason"
                );
            }
        },
    }
}

fn check_segment_header(bytes: &[u8]) {
    if let Ok(base) = segment::decode_header(bytes) {
        assert!(base >= 1, "segment base position 0 accepted");
        let encoded = segment::encode_header(base);
        assert!(
            bytes.get(..SEGMENT_HEADER_BYTES) == Some(&encoded[..]),
            "a decoded segment header does not re-encode to its bytes"
        );
    }
}
