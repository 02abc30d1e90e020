//! The payload codec: bincode 2 through serde, `standard()` configuration.
//!
//! Owns: every use of bincode in the workspace. bincode is pinned (`=2.0.1`) and frozen upstream
//! (RUSTSEC-2025-0141: unmaintained); its format will not move under us, and because each envelope
//! records [`CODEC_BINCODE2`], changing codec later is a new codec id, not a rewrite of old logs.
//! Also the one reader of bincode's bytes outside bincode: `decode_three_strs`, a replay's read of
//! a posted message's strings, which reads only the usual bytes itself and hands any others to
//! bincode, so its answer is bincode's for any input (checked by a property test).
//! Never: decodes without a memory limit, accepts trailing bytes, or uses serde features that
//! need a self-describing format (`deserialize_any`, `flatten`, `untagged`,
//! `skip_serializing_if`): bincode writes every field, in order, with no names. An event whose
//! payload needs one of them is refused at append ([`crate::readback`]); the rules are stated on
//! [`crate::Event`].
//!
//! Memory bound: bincode reserves a string's or a byte vector's length *before* reading it, so a
//! garbage length prefix could ask for any amount. Every decode runs with a bincode limit of 16
//! times the input length (at least 1 MiB): the limit counts the in-memory size of every decoded
//! value, which for our types (strings, integers, options, sequences) is at most 8 times its
//! encoded size, so valid inputs always pass and garbage fails before it can allocate more.

use bincode::config::Configuration;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// Codec id of bincode 2.0.1, `standard()` configuration (little endian, varint integers),
/// through serde. Id 0 is never valid; ids 128 to 255 are left to applications.
pub const CODEC_BINCODE2: u8 = 1;

/// The longest input [`decode`] accepts, whatever limit the caller passes.
pub const DECODE_INPUT_BYTES_MAX: usize = 256 * 1024 * 1024;

/// The ratio between the memory a decode may reserve and its input length.
const MEMORY_PER_INPUT_BYTE: usize = 16;

const MIB: usize = 1024 * 1024;

fn config() -> Configuration {
    bincode::config::standard()
}

/// Encodes `value` with the codec [`CODEC_BINCODE2`].
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    bincode::serde::encode_to_vec(value, config()).map_err(|error| Error::Encode {
        what: "value",
        reason: error.to_string(),
    })
}

/// Decodes a `T` that must fill `bytes` exactly; `bytes_max` bounds the input length.
///
/// Never panics, refuses trailing bytes, and never reserves more than 16 times the input length
/// (at least 1 MiB), whatever length prefixes the input claims.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], bytes_max: usize) -> Result<T> {
    check_input(bytes, bytes_max)?;
    let (value, read) = limited!(bytes.len(), |config| {
        bincode::serde::decode_from_slice(bytes, config)
    })?;
    filled(bytes, read)?;
    Ok(value)
}

/// Runs `$decode` (a closure of a bincode configuration) with the smallest bincode limit tier
/// that keeps [`MEMORY_PER_INPUT_BYTE`] for an input of `$len` bytes (the limit is a type
/// parameter), its error as the crate's.
macro_rules! limited {
    ($len:expr, |$config:ident| $decode:expr) => {{
        let claimed = $len.saturating_mul(MEMORY_PER_INPUT_BYTE);
        let decoded = if claimed <= MIB {
            let $config = config().with_limit::<MIB>();
            $decode
        } else if claimed <= 16 * MIB {
            let $config = config().with_limit::<{ 16 * MIB }>();
            $decode
        } else if claimed <= 256 * MIB {
            let $config = config().with_limit::<{ 256 * MIB }>();
            $decode
        } else {
            let $config = config().with_limit::<{ 4096 * MIB }>();
            $decode
        };
        decoded.map_err(|error| Error::Decode {
            what: "value",
            reason: error.to_string(),
        })
    }};
}
use limited;

/// Refuses an input longer than `bytes_max` or [`DECODE_INPUT_BYTES_MAX`].
fn check_input(bytes: &[u8], bytes_max: usize) -> Result<()> {
    let limit = bytes_max.min(DECODE_INPUT_BYTES_MAX);
    if bytes.len() > limit {
        return Err(Error::LimitExceeded {
            what: "encoded value",
            limit,
            actual: bytes.len(),
        });
    }
    Ok(())
}

/// Refuses bytes left after a value that took `read` of `bytes`.
fn filled(bytes: &[u8], read: usize) -> Result<()> {
    if read != bytes.len() {
        return Err(Error::Decode {
            what: "value",
            reason: format!("{} trailing bytes after {read}", bytes.len() - read),
        });
    }
    Ok(())
}

/// Decodes a value that borrows from `bytes` (a tuple of `&str`, say) and fills `bytes`
/// exactly, with bincode's own decoder (the format serde's path writes: a struct's fields one
/// after the other), so nothing is allocated: what a payload's
/// [`crate::EventPayload::decode_into`] copies into the buffers it holds. The same errors as
/// [`decode`] for the same bytes and `bytes_max`.
pub(crate) fn decode_borrowed<'a, T: bincode::BorrowDecode<'a, ()>>(
    bytes: &'a [u8],
    bytes_max: usize,
) -> Result<T> {
    check_input(bytes, bytes_max)?;
    let (value, read) = limited!(bytes.len(), |config| {
        bincode::borrow_decode_from_slice(bytes, config)
    })?;
    filled(bytes, read)?;
    Ok(value)
}

/// Three strings that fill `bytes` exactly (a struct of three `String` fields, as serde's path
/// encodes it), borrowed: [`decode_borrowed`] of a `(&str, &str, &str)`, with the same value
/// and the same errors for any bytes.
///
/// A replay decodes a posted message this way on every event, so the usual bytes (lengths
/// below 65,536 written as bincode's one- or three-byte varints, valid UTF-8, nothing left
/// over) are read here directly; anything else goes to bincode, whose value or error is the
/// answer. `three_strs_read_like_bincode` checks the two agree on any bytes.
pub(crate) fn decode_three_strs(bytes: &[u8], bytes_max: usize) -> Result<(&str, &str, &str)> {
    check_input(bytes, bytes_max)?;
    if let Some(strs) = three_strs(bytes) {
        return Ok(strs);
    }
    decode_borrowed(bytes, bytes_max)
}

/// The usual bytes of three strings ([`decode_three_strs`]), or `None` for any others. The
/// first two are checked as UTF-8 in one call when the second's length is one ASCII byte
/// (below 128): with that byte between them, the span is valid UTF-8 exactly when both strings
/// are, and each starts or ends beside it, on a character boundary.
fn three_strs(bytes: &[u8]) -> Option<(&str, &str, &str)> {
    // bincode's standard varint: one byte up to 250, 251 then a little-endian u16.
    let length = |at: usize| -> Option<(usize, usize)> {
        match *bytes.get(at)? {
            first @ 0..=250 => Some((usize::from(first), at + 1)),
            251 => {
                let len: [u8; 2] = bytes.get(at + 1..at + 3)?.try_into().ok()?;
                Some((usize::from(u16::from_le_bytes(len)), at + 3))
            }
            _ => None,
        }
    };
    let (first_len, first_start) = length(0)?;
    let first_end = first_start.checked_add(first_len)?;
    let (second_len, second_start) = length(first_end)?;
    let second_end = second_start.checked_add(second_len)?;
    let (third_len, third_start) = length(second_end)?;
    let third_end = third_start.checked_add(third_len)?;
    if third_end != bytes.len() {
        return None;
    }
    let text = |start: usize, end: usize| crate::utf8::text(bytes.get(start..end)?);
    let (first, second) = if second_start == first_end + 1 && second_len < 128 {
        let span = text(first_start, second_end)?;
        (
            span.get(..first_len)?,
            span.get(second_start - first_start..)?,
        )
    } else {
        (
            text(first_start, first_end)?,
            text(second_start, second_end)?,
        )
    };
    Some((first, second, text(third_start, third_end)?))
}

/// Deserializes a `String` through `deserialize_str` (for `#[serde(deserialize_with)]` on hot
/// event fields): bincode over a slice lends the bytes, so the string is allocated once at its
/// length and copied once, instead of through a zero-filled buffer as bincode decodes a
/// `String`. The same encoding and the same UTF-8 check (invalid bytes are an error).
pub(crate) fn string<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<String, D::Error> {
    struct Text;
    impl serde::de::Visitor<'_> for Text {
        type Value = String;

        fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            formatter.write_str("a string")
        }

        fn visit_str<Error: serde::de::Error>(
            self,
            value: &str,
        ) -> std::result::Result<String, Error> {
            Ok(value.to_owned())
        }

        fn visit_string<Error: serde::de::Error>(
            self,
            value: String,
        ) -> std::result::Result<String, Error> {
            Ok(value)
        }
    }
    deserializer.deserialize_str(Text)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Sample {
        name: String,
        count: u64,
        tags: Vec<String>,
        maybe: Option<String>,
        map: BTreeMap<String, u64>,
    }

    fn sample() -> Sample {
        Sample {
            name: "ada".into(),
            count: 300,
            tags: vec!["x".into(), String::new()],
            maybe: Some("y".into()),
            map: BTreeMap::from([("a".into(), 1), ("b".into(), u64::MAX)]),
        }
    }

    #[test]
    fn round_trip() {
        let bytes = encode(&sample()).expect("encode");
        assert_eq!(decode::<Sample>(&bytes, 1024).expect("decode"), sample());
    }

    #[test]
    fn format_is_frozen() {
        // bincode standard(): varint integers (one byte below 251, then a 251 marker and a u16),
        // length-prefixed strings, 0/1 option tags.
        let bytes = encode(&("ab", 250u64, 251u64, Some(1u8))).expect("encode");
        assert_eq!(bytes, [2, b'a', b'b', 250, 251, 251, 0, 1, 1]);
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Lent {
        #[serde(deserialize_with = "super::string")]
        text: String,
    }

    /// A `String` decoded through `string` reads what a plain `String` wrote (from bincode
    /// and from JSON), and invalid UTF-8 is an error, never a panic.
    #[test]
    fn a_lent_string_decodes_like_a_string_and_checks_utf8() {
        let value = Lent {
            text: "grüße".to_owned(),
        };
        let bytes = encode(&value).unwrap();
        assert_eq!(bytes, encode(&"grüße".to_owned()).unwrap());
        assert_eq!(decode::<Lent>(&bytes, usize::MAX).unwrap(), value);
        let json = serde_json::to_string(&value).unwrap();
        assert_eq!(serde_json::from_str::<Lent>(&json).unwrap(), value);
        let escaped = r#"{"text":"a\nb"}"#;
        assert_eq!(serde_json::from_str::<Lent>(escaped).unwrap().text, "a\nb");
        let mut bad = bytes.clone();
        let last = bad.len() - 1;
        bad[last] = 0xff;
        assert!(decode::<Lent>(&bad, usize::MAX).is_err());
    }

    #[test]
    fn refuses_trailing_bytes() {
        let mut bytes = encode(&sample()).expect("encode");
        bytes.push(0);
        let error = decode::<Sample>(&bytes, 1024).expect_err("trailing");
        assert!(matches!(error, Error::Decode { .. }), "{error}");
    }

    #[test]
    fn refuses_truncation_at_every_length() {
        let bytes = encode(&sample()).expect("encode");
        for length in 0..bytes.len() {
            assert!(
                decode::<Sample>(&bytes[..length], 1024).is_err(),
                "length {length}"
            );
        }
    }

    #[test]
    fn refuses_input_over_the_limit() {
        let bytes = encode(&sample()).expect("encode");
        let error = decode::<Sample>(&bytes, 3).expect_err("limit");
        assert!(
            matches!(error, Error::LimitExceeded { limit: 3, .. }),
            "{error}"
        );
    }

    #[test]
    fn huge_length_prefix_does_not_allocate() {
        // A string claiming u64::MAX / 2 bytes: varint marker 253 then 8 bytes.
        let mut bytes = vec![253];
        bytes.extend_from_slice(&(u64::MAX / 2).to_le_bytes());
        let error = decode::<String>(&bytes, 1024).expect_err("limit");
        assert!(matches!(error, Error::Decode { .. }), "{error}");
        // And one that claims 900 KiB, above 16 times the 9-byte input but under 1 MiB tier.
        let mut bytes = vec![253];
        bytes.extend_from_slice(&(2u64 * 1024 * 1024).to_le_bytes());
        assert!(decode::<Vec<u8>>(&bytes, 1024).is_err());
    }

    /// Both answers for `bytes`: the direct read's and bincode's.
    fn three_strs_both_ways(bytes: &[u8]) -> (String, String) {
        let direct = decode_three_strs(bytes, 1 << 20);
        let bincode = decode_borrowed::<(&str, &str, &str)>(bytes, 1 << 20);
        (format!("{direct:?}"), format!("{bincode:?}"))
    }

    #[test]
    fn three_strs_read_like_bincode_at_the_edges() {
        let long = "x".repeat(300);
        let cases: Vec<Vec<u8>> = vec![
            encode(&("m1", "ada", "hello")).unwrap(),
            encode(&("", "", "")).unwrap(),
            encode(&("a".repeat(250), "b".repeat(251), long.as_str())).unwrap(),
            encode(&("é", "🦀", "x".repeat(70_000))).unwrap(),
            // A non-canonical length (251 then 2): bincode reads it, so must the direct read.
            vec![251, 2, 0, b'h', b'i', 0, 1, b'x'],
            // Invalid UTF-8, a short input, a trailing byte, a length past the end.
            vec![1, 0xff, 0, 0],
            vec![1, b'a', 0],
            vec![1, b'a', 0, 0, 0],
            vec![200, b'a', 0, 0],
            vec![251, 0xff],
            vec![],
            // The first two checked as one span: a character cut at the end of the first, or
            // at the start of the second; a second of 127 and of 128 to 250 bytes (its length
            // byte is then not ASCII, and each is checked alone).
            vec![1, 0xC3, 1, b'a', 0],
            vec![1, b'a', 1, 0xA9, 0],
            vec![2, 0xC3, 0xA9, 1, b'a', 0],
            encode(&("é", "b".repeat(127), "c")).unwrap(),
            encode(&("é", "b".repeat(128), "c")).unwrap(),
            encode(&("é", "🦀".repeat(50), "c")).unwrap(),
            // A second of 195 bytes (length byte 0xC3, a lead byte) that starts with a
            // continuation byte: invalid alone, though the span would read "aé...".
            [&[1, b'a', 195, 0xA9][..], &[b'b'; 194], &[0]].concat(),
        ];
        for bytes in cases {
            let (direct, bincode) = three_strs_both_ways(&bytes);
            assert_eq!(direct, bincode, "{bytes:?}");
        }
        let fine = encode(&("m1", "ada", "hello")).unwrap();
        assert_eq!(
            decode_three_strs(&fine, 1 << 20).unwrap(),
            ("m1", "ada", "hello")
        );
        assert!(matches!(
            decode_three_strs(&fine, 3),
            Err(Error::LimitExceeded { limit: 3, .. })
        ));
    }

    proptest! {
        #[test]
        fn three_strs_read_like_bincode(
            texts in (".{0,3}", ".{0,4}|[a-z]{120,135}|.{30,70}", "[a-zé]{0,300}"),
            changes in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
            cut in proptest::option::of(any::<prop::sample::Index>()),
        ) {
            let mut bytes = encode(&texts).unwrap();
            for (at, byte) in changes {
                let at = at.index(bytes.len());
                bytes[at] = byte;
            }
            if let Some(cut) = cut {
                bytes.truncate(cut.index(bytes.len() + 1));
            }
            let (direct, bincode) = three_strs_both_ways(&bytes);
            prop_assert_eq!(direct, bincode);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode::<Sample>(&bytes, 1024);
            let _ = decode::<Vec<String>>(&bytes, 1024);
            let _ = decode::<BTreeMap<String, Vec<u8>>>(&bytes, 1024);
        }
    }
}
