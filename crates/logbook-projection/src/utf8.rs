//! Bytes read as text: the one check every string of every decoded record goes through.
//!
//! Owns: [`text`], `std::str::from_utf8` with a fast path for ASCII, which is what ids,
//! names and most message bodies are, and [`is_printable_ascii`], the fast path of the value
//! rules' control-character check. Must never: return a `str` over bytes that
//! `std::str::from_utf8` refuses, or refuse bytes it accepts.
//!
//! The fast path reads 16 bytes at a time and ORs them together, with no branch per word or
//! byte: on a 180-byte ASCII body it took about half the time of `from_utf8` here (5.4 ns
//! against 9.9 ns) and a fifth of it on a 12-byte id (1.3 against 7.0 ns), which `from_utf8`
//! walks a byte at a time until its reads are aligned (`docs/benchmarks.md`, session 16).

/// The high bit of every byte of a 16-byte word: set in a byte that is not ASCII.
const HIGH_BITS_16: u128 = 0x8080_8080_8080_8080_8080_8080_8080_8080;
const HIGH_BITS_8: u64 = 0x8080_8080_8080_8080;

/// Whether every byte is ASCII (below 0x80), told from a few wide words: all whole 16-byte
/// words plus one that ends at the last byte (overlapping the one before: only its high bits
/// count, so reading a byte twice changes nothing).
#[inline]
pub(crate) fn is_ascii(bytes: &[u8]) -> bool {
    let len = bytes.len();
    if let Some(last) = bytes.last_chunk::<16>() {
        let (words, _) = bytes.as_chunks::<16>();
        let all = words.iter().fold(u128::from_ne_bytes(*last), |all, word| {
            all | u128::from_ne_bytes(*word)
        });
        return all & HIGH_BITS_16 == 0;
    }
    if let (Some(first), Some(last)) = (bytes.first_chunk::<8>(), bytes.last_chunk::<8>()) {
        return (u64::from_ne_bytes(*first) | u64::from_ne_bytes(*last)) & HIGH_BITS_8 == 0;
    }
    debug_assert!(len < 8);
    bytes.iter().fold(0u8, |all, byte| all | byte) < 0x80
}

/// `0x01` in every byte of a word.
const ONES_8: u64 = 0x0101_0101_0101_0101;

/// Whether a word holds a byte outside printable ASCII (`0x20..=0x7e`): a byte below `0x20`
/// turns its high bit on when `0x20` is taken from it (and the byte's own high bit was off),
/// one above `0x7e` has its high bit on already or turns it on when `0x01` is added. A borrow
/// or carry between bytes starts only at a byte that is itself outside the range, so it can
/// only flag a word that is flagged anyway.
#[inline(always)]
fn outside_printable(word: u64) -> bool {
    let below_space = word.wrapping_sub(0x20 * ONES_8) & !word;
    let above_tilde = word.wrapping_add(ONES_8) | word;
    (below_space | above_tilde) & HIGH_BITS_8 != 0
}

/// Whether every byte is printable ASCII (`0x20..=0x7e`: what ids and names almost always
/// are), told a word at a time: the whole words, then one that ends at the last byte.
#[inline]
pub(crate) fn is_printable_ascii(bytes: &[u8]) -> bool {
    let Some(last) = bytes.last_chunk::<8>() else {
        return bytes.iter().all(|byte| (0x20..0x7f).contains(byte));
    };
    let (words, _) = bytes.as_chunks::<8>();
    !outside_printable(u64::from_ne_bytes(*last))
        && words
            .iter()
            .all(|word| !outside_printable(u64::from_ne_bytes(*word)))
}

/// `bytes` as text, or `None` when they are not UTF-8: exactly `std::str::from_utf8(bytes).ok()`,
/// faster when every byte is ASCII.
#[inline]
pub(crate) fn text(bytes: &[u8]) -> Option<&str> {
    if is_ascii(bytes) {
        // SAFETY: `is_ascii` checked that every byte is below 0x80 (a test compares it with
        // `<[u8]>::is_ascii` on every length up to 64 and on arbitrary bytes), and a sequence
        // of ASCII bytes is valid UTF-8, each byte a character of its own.
        #[allow(unsafe_code)]
        let text = unsafe { std::str::from_utf8_unchecked(bytes) };
        return Some(text);
    }
    std::str::from_utf8(bytes).ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_byte_past_ascii_is_found_at_every_length_and_place() {
        for len in 0..=64usize {
            let ascii = vec![b'a'; len];
            assert!(is_ascii(&ascii), "{len}");
            assert_eq!(text(&ascii), Some("a".repeat(len).as_str()));
            for at in 0..len {
                for byte in [0x80u8, 0xC3, 0xFF] {
                    let mut bytes = ascii.clone();
                    bytes[at] = byte;
                    assert!(!is_ascii(&bytes), "{len} {at} {byte:#x}");
                    assert_eq!(text(&bytes), std::str::from_utf8(&bytes).ok());
                }
            }
        }
        // Control characters and DEL are ASCII (what they mean is the value rules' business).
        assert!(is_ascii(b"\0\x01\x1f\x7f"));
    }

    #[test]
    fn printable_ascii_is_told_at_every_length_and_place() {
        let printable = |bytes: &[u8]| bytes.iter().all(|byte| (0x20..0x7f).contains(byte));
        for len in 0..=40usize {
            let base: Vec<u8> = (0..len).map(|at| b' ' + (at % 95) as u8).collect();
            assert!(is_printable_ascii(&base), "{len}");
            for at in 0..len {
                for byte in [0x00u8, 0x1f, 0x20, 0x7e, 0x7f, 0x80, 0xff] {
                    let mut bytes = base.clone();
                    bytes[at] = byte;
                    assert_eq!(
                        is_printable_ascii(&bytes),
                        printable(&bytes),
                        "{len} {at} {byte:#x}"
                    );
                }
            }
        }
    }

    proptest! {
        #[test]
        fn printable_ascii_is_the_byte_range(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let expected = bytes.iter().all(|byte| (0x20..0x7f).contains(byte));
            prop_assert_eq!(is_printable_ascii(&bytes), expected);
        }

        #[test]
        fn printable_ascii_near_the_edges(
            bytes in proptest::collection::vec(prop_oneof![0x1eu8..0x22, 0x7cu8..0x82, 0xfeu8..=0xff], 0..40),
        ) {
            let expected = bytes.iter().all(|byte| (0x20..0x7f).contains(byte));
            prop_assert_eq!(is_printable_ascii(&bytes), expected);
        }

        #[test]
        fn text_is_from_utf8(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            prop_assert_eq!(is_ascii(&bytes), bytes.is_ascii());
            prop_assert_eq!(text(&bytes), std::str::from_utf8(&bytes).ok());
        }

        #[test]
        fn text_is_from_utf8_on_mostly_ascii(
            base in "[ -~]{0,200}",
            changes in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
            unicode in "[a-zé🦀]{0,40}",
        ) {
            let mut bytes = format!("{base}{unicode}").into_bytes();
            for (at, byte) in changes {
                if !bytes.is_empty() {
                    let at = at.index(bytes.len());
                    bytes[at] = byte;
                }
            }
            prop_assert_eq!(is_ascii(&bytes), bytes.is_ascii());
            prop_assert_eq!(text(&bytes), std::str::from_utf8(&bytes).ok());
        }
    }
}
