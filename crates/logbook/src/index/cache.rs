//! The stream index's memory of the last chunk sled holds for the streams read most recently.
//!
//! Owns: for at most [`CACHED_STREAMS_MAX`] streams, the decoded highest chunk sled holds for
//! the stream (or that sled holds none), so the newest events of a stream (a chat room's last
//! messages, a forward read that reached the stream's end) are found without a sled range
//! query and without decoding a chunk. Must never: answer with a chunk older than sled's once
//! the index call that wrote sled returned (every write to a stream's chunks invalidates its
//! entry, and a chunk read from sled before an invalidation is never stored after it), or grow
//! past its bound.
//!
//! Memory: at most [`CACHED_STREAMS_MAX`] entries of one stream id (at most 1 KiB, the stream
//! id limit) and one chunk (at most [`chunk::CHUNK_VERSIONS`] entries of 16 bytes): under
//! 300 KiB in all.

use super::chunk;
use std::collections::VecDeque;
use std::sync::Arc;

/// Streams whose last chunk is remembered (least recently used dropped first).
pub(crate) const CACHED_STREAMS_MAX: usize = 16;

/// A stream's highest chunk in sled, decoded.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct LastChunk {
    /// The chunk number (versions `number * CHUNK_VERSIONS ..`).
    pub(crate) number: u64,
    /// Its (version, position) entries, ascending.
    pub(crate) entries: Vec<(u64, u64)>,
}

/// What the cache knows of one stream: its last chunk, or `None` when sled holds no chunk of
/// it (every entry of the stream is in the index's in-memory tail, or it has none).
pub(crate) type Known = Option<Arc<LastChunk>>;

#[derive(Debug, Default)]
pub(crate) struct ChunkCache {
    /// Bumped by every invalidation: a chunk read from sled under an older generation may
    /// predate the write that invalidated it, so it is not stored.
    generation: u64,
    /// Most recently used last.
    streams: VecDeque<(Box<str>, Known)>,
}

impl ChunkCache {
    /// The generation to pass to [`ChunkCache::store`] for a chunk about to be read from sled.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// What is known of `stream`, if anything (and marks it used).
    pub(crate) fn get(&mut self, stream: &str) -> Option<Known> {
        let at = self
            .streams
            .iter()
            .position(|(name, _)| &**name == stream)?;
        let entry = self.streams.remove(at)?;
        let known = entry.1.clone();
        self.streams.push_back(entry);
        Some(known)
    }

    /// Remembers `known`, read from sled while the cache was at `generation`; dropped when an
    /// invalidation came in between.
    pub(crate) fn store(&mut self, generation: u64, stream: &str, known: Known) {
        if generation != self.generation {
            return;
        }
        debug_assert!(known.as_ref().is_none_or(|last| {
            !last.entries.is_empty()
                && last.entries.len() <= chunk::CHUNK_VERSIONS as usize
                && last
                    .entries
                    .iter()
                    .all(|entry| chunk::chunk_of(entry.0) == last.number)
        }));
        self.streams.retain(|(name, _)| &**name != stream);
        if self.streams.len() == CACHED_STREAMS_MAX {
            self.streams.pop_front();
        }
        self.streams.push_back((stream.into(), known));
    }

    /// Forgets `stream` (its chunks in sled changed or are about to).
    pub(crate) fn invalidate(&mut self, stream: &str) {
        self.generation += 1;
        self.streams.retain(|(name, _)| &**name != stream);
    }

    /// The streams it knows, most recently used first.
    pub(crate) fn most_recent_first(&self) -> Vec<Box<str>> {
        self.streams
            .iter()
            .rev()
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Forgets everything.
    pub(crate) fn clear(&mut self) {
        self.generation += 1;
        self.streams.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(number: u64) -> Known {
        let first = number * chunk::CHUNK_VERSIONS;
        Some(Arc::new(LastChunk {
            number,
            entries: vec![(first, first + 1)],
        }))
    }

    #[test]
    fn bounded_least_recently_used_first() {
        let mut cache = ChunkCache::default();
        for stream in 0..CACHED_STREAMS_MAX + 1 {
            let generation = cache.generation();
            cache.store(generation, &format!("s{stream}"), chunk(stream as u64));
            if stream == CACHED_STREAMS_MAX - 1 {
                // The cache is full; s0 is used again: s1 goes first.
                assert_eq!(cache.get("s0"), Some(chunk(0)));
            }
        }
        assert_eq!(cache.streams.len(), CACHED_STREAMS_MAX);
        assert_eq!(cache.get("s1"), None);
        assert_eq!(cache.get("s0"), Some(chunk(0)));
        assert_eq!(
            cache.get(&format!("s{CACHED_STREAMS_MAX}")),
            Some(chunk(CACHED_STREAMS_MAX as u64))
        );
    }

    #[test]
    fn a_chunk_read_before_an_invalidation_is_not_stored() {
        let mut cache = ChunkCache::default();
        let generation = cache.generation();
        cache.store(generation, "a", None);
        assert_eq!(cache.get("a"), Some(None), "known: no chunk in sled");
        let before = cache.generation();
        cache.invalidate("a");
        assert_eq!(cache.get("a"), None);
        cache.store(before, "a", chunk(3));
        assert_eq!(cache.get("a"), None, "stale: read before the invalidation");
        cache.store(cache.generation(), "a", chunk(4));
        assert_eq!(cache.get("a"), Some(chunk(4)));
        cache.clear();
        assert_eq!(cache.get("a"), None);
    }
}
