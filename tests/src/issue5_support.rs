//! Helpers for the snapshot and compaction tests (`snapshot_*`, `compaction_*`): the entities a
//! test targets and their streams, and the snapshot files of a log on memory.
//!
//! Owns: naming, and reading the records of a log on memory straight from its segment files
//! (so a test compares stored bytes, not what a read path makes of them). Must never: write to a
//! log.

use logbook::{MemoryStorage, StreamId};
use logbook_wal::frame;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// An entity of the built-in model a test acts on, by number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    /// `room/r<n>`.
    Room(u8),
    /// `run/run<n>`.
    Run(u8),
    /// `job/job<n>`.
    Job(u8),
}

/// The stream of a target.
pub fn stream_of(target: Target) -> StreamId {
    let stream = match target {
        Target::Room(room) => StreamId::room(&format!("r{room}")),
        Target::Run(run) => StreamId::run(&format!("run{run}")),
        Target::Job(job) => StreamId::job(&format!("job{job}")),
    };
    stream.expect("a valid stream id")
}

/// The `.snap` files of a log on a [`MemoryStorage`], sorted.
pub fn snapshot_files(storage: &MemoryStorage) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = storage
        .files()
        .into_iter()
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "snap")
        })
        .collect();
    files.sort();
    files
}

/// The records of one segment file: position -> payload bytes, as stored.
pub fn segment_records(bytes: &[u8]) -> BTreeMap<u64, Vec<u8>> {
    crate::segment_frames(bytes)
        .into_iter()
        .map(|found| {
            let at = found.offset as usize;
            let (header, payload) = frame::decode_frame(&bytes[at..], u32::MAX)
                .expect("segment_frames found a valid frame here");
            (header.position, payload.to_vec())
        })
        .collect()
}

/// Every segment file of a log in [`crate::MEMORY_DIR`] with its records, as stored.
pub fn memory_segment_records(
    storage: &MemoryStorage,
) -> BTreeMap<PathBuf, BTreeMap<u64, Vec<u8>>> {
    crate::memory_segments(storage)
        .into_iter()
        .map(|path| {
            let bytes = storage.file_contents(&path).expect("a listed segment");
            let records = segment_records(&bytes);
            (path, records)
        })
        .collect()
}

/// Every record of a log in [`crate::MEMORY_DIR`]: position -> payload bytes, as stored.
pub fn memory_records(storage: &MemoryStorage) -> BTreeMap<u64, Vec<u8>> {
    memory_segment_records(storage)
        .into_values()
        .flatten()
        .collect()
}
