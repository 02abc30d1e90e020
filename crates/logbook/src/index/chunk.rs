//! Chunk keys and values of the stream index.
//!
//! Owns: the byte layout of one sled entry, a *chunk* of up to [`CHUNK_VERSIONS`] consecutive
//! versions of one stream, and its checked decoding. Must never: trust bytes read from sled (a
//! malformed value is an error, never a panic or an unbounded allocation).
//!
//! ```text
//! key:   stream id UTF-8 bytes | 0x00 | chunk number u64 BE   (chunk = version / CHUNK_VERSIONS)
//! value: n * 16 bytes: version u64 LE, position u64 LE; versions strictly ascending, all in
//!        the key's chunk, 1 <= n <= CHUNK_VERSIONS (gaps where compaction dropped a record)
//! ```
//!
//! One sled entry per 128 versions instead of one per version: sled's memory, its open time and
//! its on-disk size grow with the number of keys, so a 10M-event log holds ~80K keys.

/// Versions per chunk (one sled entry).
pub(crate) const CHUNK_VERSIONS: u64 = 128;
/// Bytes of one (version, position) entry in a chunk value.
const ENTRY_BYTES: usize = 16;
/// The largest valid chunk value.
const VALUE_BYTES_MAX: usize = CHUNK_VERSIONS as usize * ENTRY_BYTES;

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

/// Encodes entries (ascending versions of one chunk).
pub(crate) fn encode(entries: &[(u64, u64)]) -> Vec<u8> {
    debug_assert!(entries.len() <= CHUNK_VERSIONS as usize);
    debug_assert!(entries.windows(2).all(|pair| pair[0].0 < pair[1].0));
    let mut value = Vec::with_capacity(entries.len() * ENTRY_BYTES);
    for (version, position) in entries {
        value.extend_from_slice(&version.to_le_bytes());
        value.extend_from_slice(&position.to_le_bytes());
    }
    value
}

/// Decodes the value of chunk `chunk`; `Err` names what is wrong.
pub(crate) fn decode(chunk: u64, value: &[u8]) -> Result<Vec<(u64, u64)>, String> {
    if value.is_empty() || value.len() > VALUE_BYTES_MAX || value.len() % ENTRY_BYTES != 0 {
        return Err(format!("chunk {chunk}: value of {} bytes", value.len()));
    }
    let mut entries = Vec::with_capacity(value.len() / ENTRY_BYTES);
    for entry in value.chunks_exact(ENTRY_BYTES) {
        let (version, position) = entry.split_at(8);
        let version = u64::from_le_bytes(version.try_into().map_err(|_| "short entry")?);
        let position = u64::from_le_bytes(position.try_into().map_err(|_| "short entry")?);
        if chunk_of(version) != chunk {
            return Err(format!(
                "chunk {chunk}: version {version} does not belong to it"
            ));
        }
        if entries.last().is_some_and(|&(last, _)| last >= version) {
            return Err(format!(
                "chunk {chunk}: versions not ascending at {version}"
            ));
        }
        entries.push((version, position));
    }
    Ok(entries)
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
        let entries = vec![(128, 5), (130, 9), (255, 40)];
        let value = encode(&entries);
        assert_eq!(decode(1, &value).unwrap(), entries);
        let merged = merge(entries, &[(130, 11), (131, 12)]);
        assert_eq!(merged, vec![(128, 5), (130, 11), (131, 12), (255, 40)]);
        assert_eq!(chunk_number("room:a", &key("room:a", 7)), Some(7));
        assert_eq!(chunk_number("room:ab", &key("room:a", 7)), None);
    }

    #[test]
    fn malformed_values_are_errors() {
        assert!(decode(0, &[]).is_err());
        assert!(decode(0, &[0; 15]).is_err());
        assert!(decode(0, &vec![0; VALUE_BYTES_MAX + 16]).is_err());
        // A version outside the chunk, and versions out of order.
        assert!(decode(0, &encode(&[(200, 1)])).is_err());
        let mut unordered = encode(&[(5, 1)]);
        unordered.extend_from_slice(&encode(&[(4, 2)]));
        assert!(decode(0, &unordered).is_err());
    }
}
