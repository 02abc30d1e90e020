//! Chunk keys and values of the stream index.
//!
//! Owns: the byte layout of one sled entry, a *chunk* of up to [`CHUNK_VERSIONS`] consecutive
//! versions of one stream, and its checked decoding. Must never: trust bytes read from sled (a
//! malformed value is an error, never a panic or an unbounded allocation).
//!
//! ```text
//! key:   stream id UTF-8 bytes | 0x00 | chunk number u64 BE   (chunk = version / CHUNK_VERSIONS)
//! value: the first entry: version u64 LE, position u64 LE (16 bytes), then for each further
//!        entry: version - previous version, position - previous position, both LEB128 varints
//!        (each >= 1: versions and positions strictly ascend in a stream); all versions in the
//!        key's chunk, 1 <= n <= CHUNK_VERSIONS (gaps where compaction dropped a record)
//! ```
//!
//! A chunk of a busy room costs ~2-4 bytes per entry instead of 16 (at most 16 + 1,023 * 20
//! bytes).
//!
//! One sled entry per 1,024 versions instead of one per version: sled's memory, its open time
//! and its on-disk size grow with the number of keys, so a 10M-event log holds ~10K keys.

/// Versions per chunk (one sled entry).
pub(crate) const CHUNK_VERSIONS: u64 = 1024;
/// Bytes of the first entry of a chunk value.
const FIRST_ENTRY_BYTES: usize = 16;
/// The longest LEB128 encoding of a u64.
const VARINT_BYTES_MAX: usize = 10;
/// The largest valid chunk value.
pub(crate) const VALUE_BYTES_MAX: usize =
    FIRST_ENTRY_BYTES + (CHUNK_VERSIONS as usize - 1) * 2 * VARINT_BYTES_MAX;

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Reads a LEB128 varint at `*at`; `None` when truncated or longer than a u64.
fn get_varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*at)?;
        *at += 1;
        let bits = u64::from(byte & 0x7F);
        if shift == 63 && bits > 1 {
            return None;
        }
        value |= bits << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// The chunk that holds `version`.
pub(crate) fn chunk_of(version: u64) -> u64 {
    version / CHUNK_VERSIONS
}

/// The sled key of a stream's chunk.
pub(crate) fn key(stream: &str, chunk: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(stream.len() + 9);
    key.extend_from_slice(stream.as_bytes());
    key.push(0);
    key.extend_from_slice(&chunk.to_be_bytes());
    key
}

/// The chunk number of a key of `stream` (`None` when the key is not one of its chunks).
pub(crate) fn chunk_number(stream: &str, key: &[u8]) -> Option<u64> {
    let rest = key.strip_prefix(stream.as_bytes())?.strip_prefix(&[0])?;
    Some(u64::from_be_bytes(rest.try_into().ok()?))
}

/// Encodes entries (ascending versions and positions of one chunk).
pub(crate) fn encode(entries: &[(u64, u64)]) -> Vec<u8> {
    debug_assert!(!entries.is_empty() && entries.len() <= CHUNK_VERSIONS as usize);
    debug_assert!(
        entries
            .windows(2)
            .all(|pair| pair[0].0 < pair[1].0 && pair[0].1 < pair[1].1)
    );
    let mut value = Vec::with_capacity(FIRST_ENTRY_BYTES + entries.len() * 3);
    let mut previous: Option<(u64, u64)> = None;
    for &(version, position) in entries {
        match previous {
            None => {
                value.extend_from_slice(&version.to_le_bytes());
                value.extend_from_slice(&position.to_le_bytes());
            }
            Some((last_version, last_position)) => {
                put_varint(&mut value, version - last_version);
                put_varint(&mut value, position - last_position);
            }
        }
        previous = Some((version, position));
    }
    value
}

/// Decodes the value of chunk `chunk`; `Err` names what is wrong.
pub(crate) fn decode(chunk: u64, value: &[u8]) -> Result<Vec<(u64, u64)>, String> {
    if value.len() < FIRST_ENTRY_BYTES || value.len() > VALUE_BYTES_MAX {
        return Err(format!("chunk {chunk}: value of {} bytes", value.len()));
    }
    let u64_at = |at: usize| -> Option<u64> {
        Some(u64::from_le_bytes(value.get(at..at + 8)?.try_into().ok()?))
    };
    let (Some(mut version), Some(mut position)) = (u64_at(0), u64_at(8)) else {
        return Err(format!("chunk {chunk}: short first entry"));
    };
    // Every entry after the first takes at least two bytes: room for all of them at once (a
    // full chunk grew its vector eight times, on every read of it).
    let most = 1 + (value.len() - FIRST_ENTRY_BYTES) / 2;
    let mut entries = Vec::with_capacity(most.min(CHUNK_VERSIONS as usize));
    let mut at = FIRST_ENTRY_BYTES;
    loop {
        if chunk_of(version) != chunk {
            return Err(format!(
                "chunk {chunk}: version {version} does not belong to it"
            ));
        }
        if entries.len() == CHUNK_VERSIONS as usize {
            return Err(format!("chunk {chunk}: more than {CHUNK_VERSIONS} entries"));
        }
        entries.push((version, position));
        if at == value.len() {
            return Ok(entries);
        }
        let step = get_varint(value, &mut at).zip(get_varint(value, &mut at));
        let next = step
            .filter(|&(dv, dp)| dv >= 1 && dp >= 1)
            .and_then(|(dv, dp)| Some((version.checked_add(dv)?, position.checked_add(dp)?)));
        let Some(next) = next else {
            return Err(format!("chunk {chunk}: bad delta after version {version}"));
        };
        (version, position) = next;
    }
}

/// `existing` with `added` merged in (an added version replaces an existing one).
pub(crate) fn merge(existing: Vec<(u64, u64)>, added: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut merged = Vec::with_capacity(existing.len() + added.len());
    let (mut left, mut right) = (existing.into_iter().peekable(), added.iter().peekable());
    loop {
        match (left.peek(), right.peek()) {
            (Some(&(a, _)), Some(&&(b, entry))) => {
                if a < b {
                    merged.extend(left.next());
                } else {
                    if a == b {
                        left.next();
                    }
                    merged.push((b, entry));
                    right.next();
                }
            }
            (Some(_), None) => merged.extend(left.next()),
            (None, Some(&&entry)) => {
                merged.push(entry);
                right.next();
            }
            (None, None) => break,
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_merge() {
        const C: u64 = CHUNK_VERSIONS;
        let entries = vec![(C, 5), (C + 2, 9), (2 * C - 1, 40_000_000_000)];
        let value = encode(&entries);
        assert_eq!(decode(1, &value).unwrap(), entries);
        let dense: Vec<(u64, u64)> = (0..C).map(|v| (v, 1000 + v * 10)).collect();
        let value = encode(&dense);
        assert_eq!(
            value.len() as u64,
            16 + (C - 1) * 2,
            "one byte per delta when they are small"
        );
        assert_eq!(decode(0, &value).unwrap(), dense);
        let extreme = vec![(u64::MAX - 1, 1), (u64::MAX, u64::MAX)];
        assert_eq!(
            decode(chunk_of(u64::MAX), &encode(&extreme)).unwrap(),
            extreme
        );
        let merged = merge(entries, &[(C + 2, 11), (C + 3, 12)]);
        assert_eq!(
            merged,
            vec![
                (C, 5),
                (C + 2, 11),
                (C + 3, 12),
                (2 * C - 1, 40_000_000_000)
            ]
        );
        assert_eq!(chunk_number("room:a", &key("room:a", 7)), Some(7));
        assert_eq!(chunk_number("room:ab", &key("room:a", 7)), None);
    }

    #[test]
    fn malformed_values_are_errors() {
        assert!(decode(0, &[]).is_err());
        assert!(decode(0, &[0; 15]).is_err());
        assert!(decode(0, &vec![0; VALUE_BYTES_MAX + 1]).is_err());
        // A version outside the chunk.
        assert!(decode(0, &encode(&[(CHUNK_VERSIONS + 72, 1)])).is_err());
        let good = encode(&[(5, 1), (6, 3)]);
        // A zero delta (versions or positions not ascending), a truncated varint, an overflow.
        let mut zero = good.clone();
        zero[16] = 0;
        assert!(decode(0, &zero).is_err());
        let mut truncated = good.clone();
        truncated.push(0x80);
        assert!(decode(0, &truncated).is_err());
        let mut overflow = encode(&[(5, u64::MAX - 1)]);
        overflow.extend_from_slice(&[1, 2]);
        assert!(decode(0, &overflow).is_err());
        let mut too_long = good;
        too_long.extend_from_slice(&[0xFF; 11]);
        assert!(decode(0, &too_long).is_err());
        // More entries than a chunk holds.
        let mut many = encode(&[(0, 1)]);
        for _ in 0..CHUNK_VERSIONS {
            many.extend_from_slice(&[1, 1]);
        }
        assert!(decode(0, &many).is_err());
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = (state % 64) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|index| (state >> (index % 8 * 8)) as u8 ^ index as u8)
                .collect();
            let _ = decode(state % 3, &bytes);
        }
    }
}
