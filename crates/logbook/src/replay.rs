//! The open's replay: the log's records past the newest snapshot (and past the stream index's
//! marker) into the durable stream table, the stream index and the projections.
//!
//! Owns: the order of that work and, for a long replay, its split over two threads: the
//! opening thread reads the records, checks their frames and applies the index; a second
//! thread decodes their envelopes, applies them to the catalog, decodes the payloads and
//! applies them to the projections, in position order, taking the records a chunk at a time
//! (a block of the WAL reader and where each record lies in it) from a bounded queue. Must
//! never: apply a record out of position order, skip one, hold more than
//! [`PIPELINE_CHUNKS_MAX`] chunks (each a block of the WAL reader), report an error past the
//! first one, or finish before the projections have every record.

use crate::apply::{self, DurableRecord, INDEX_BATCH_RECORDS, IndexBatch};
use crate::error::{Error, Result};
use crate::index::StreamIndex;
use crate::projections::Applier;
use crate::streams::{ReplayRun, StreamTable};
use logbook_compaction::CompactionPolicy;
use logbook_projection::EnvelopeDecoder;
use logbook_wal::{Located, Wal};
use std::sync::mpsc;

/// Records past the snapshot from which a replay hands the projections' work to a second
/// thread: below it the thread's start and hand-offs cost more than they save.
pub(crate) const PIPELINE_RECORDS_MIN: u64 = 50_000;
/// Chunks queued for the projections' thread; with the one it applies and the one being
/// filled, at most `PIPELINE_CHUNKS_MAX` chunks exist. A chunk holds the records of one block
/// of the WAL reader (at most its read-ahead, 256 KiB, or one larger record), so the replay's
/// memory is bounded by `(PIPELINE_CHUNKS_MAX + 1)` blocks whatever the log's size: 2.25 MiB,
/// or a record more.
///
/// Eight chunks rather than four: a block is read into again only after about 2 MiB of others
/// went through the projections' thread, so its bytes have left that core's cache (1 MiB of
/// L2 on the machines measured) and the kernel's copy into it does not stall on taking each
/// cache line back from the other core. perf showed those stalls (then in a copy of the
/// records into the chunk) as 9% of the replay's samples; `docs/benchmarks.md`, session 15.
const PIPELINE_QUEUE: usize = 6;
pub(crate) const PIPELINE_CHUNKS_MAX: usize = PIPELINE_QUEUE + 2;

/// Rebuilds the stream table and the projections from the log past `start`'s snapshot
/// position, and brings the stream index up to date from where it was complete. Returns the
/// table and how many records were applied.
pub(crate) fn replay(
    wal: &Wal,
    applier: &dyn Applier,
    index: &StreamIndex,
    index_complete: u64,
    start: (StreamTable, u64),
    compaction: &CompactionPolicy,
) -> Result<(StreamTable, u64)> {
    let _span = tracing::info_span!("replay").entered();
    let (streams, snapshot_position) = start;
    let tail = Tail {
        wal,
        index,
        index_complete,
        snapshot_position,
        compaction,
    };
    let ahead = wal.durable_position().saturating_sub(snapshot_position);
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    if ahead >= PIPELINE_RECORDS_MIN && cores > 1 {
        pipelined(&tail, applier, streams)
    } else {
        in_line(&tail, applier, streams)
    }
}

/// The replay on the calling thread alone.
fn in_line(
    tail: &Tail<'_>,
    applier: &dyn Applier,
    mut streams: StreamTable,
) -> Result<(StreamTable, u64)> {
    // The projections take the records a chunk at a time (flushed after the last one).
    let mut replayer = applier.replayer();
    let mut run = ReplayRun::default();
    let count = tail.read(|durable| {
        apply::apply_catalog_in_run(&mut streams, &mut run, tail.compaction, durable)?;
        replayer.apply(durable, run.stream_id())
    })?;
    streams.end_run(&mut run);
    replayer.flush();
    Ok((streams, count))
}

/// What a replay reads: the log from where the snapshot or the index ends.
struct Tail<'a> {
    wal: &'a Wal,
    index: &'a StreamIndex,
    index_complete: u64,
    snapshot_position: u64,
    compaction: &'a CompactionPolicy,
}

impl Tail<'_> {
    /// The first record a replay reads: the first past the snapshot or past the index's marker.
    fn first(&self) -> u64 {
        self.index_complete.min(self.snapshot_position) + 1
    }

    /// Adds `durable` to `batch` when it is past the index's marker, and writes the batch to
    /// the index when it is full.
    fn index(&self, batch: &mut IndexBatch, durable: &DurableRecord<'_>) -> Result<()> {
        if durable.position > self.index_complete {
            batch.add(self.index, durable)?;
            if batch.len() >= INDEX_BATCH_RECORDS {
                batch.flush(self.index)?;
            }
        }
        Ok(())
    }

    /// Reads every record from where the snapshot or the index ends, each decoded once and
    /// borrowed from the reader's buffer: one past the snapshot is handed to `project` (which
    /// applies it to the catalog and the projections), one past the index's marker is added to
    /// the index. Returns how many records were past the snapshot.
    fn read(&self, mut project: impl FnMut(&DurableRecord<'_>) -> Result<()>) -> Result<u64> {
        let mut count = 0u64;
        let mut index_batch = IndexBatch::default();
        let mut reader = self.wal.read_from(self.first());
        let mut decoder = EnvelopeDecoder::new();
        while let Some(record) = reader.next_ref() {
            let (position, bytes) = record?;
            let durable = DurableRecord::decode_with(&mut decoder, position, bytes)?;
            if position > self.snapshot_position {
                count += 1;
                project(&durable)?;
            }
            self.index(&mut index_batch, &durable)?;
        }
        index_batch.flush(self.index)?;
        Ok(count)
    }

    /// [`Tail::read`] for the two-thread replay, over a lending reader
    /// ([`logbook_wal::WalReader::lending_blocks`]): a record past the snapshot is noted in
    /// `chunk` by where it lies in the reader's block (its frame checked, its envelope left to
    /// the projections' thread), and once the reader moves to another block, the chunk and
    /// the block it read from go to `send` together, so no record is copied between the
    /// threads. `send` returns a spent chunk to fill next (its block goes back to the reader),
    /// or `None` to stop the read early: the projections' thread stopped on an error. Returns
    /// how many records were past the snapshot.
    fn read_into(&self, mut send: impl FnMut(Chunk) -> Option<Chunk>) -> Result<u64> {
        let mut count = 0u64;
        let mut index_batch = IndexBatch::default();
        // A replay reads on to the end: its first read is a full read-ahead, not 8 KiB doubling,
        // so the reader runs a full queue of records ahead while the projections' thread is
        // slow at the start (a log's first records create its streams and entities).
        let mut reader = self
            .wal
            .read_from(self.first())
            .reading_through(self.wal.durable_position())
            .lending_blocks();
        let mut chunk = Chunk::default();
        let read = self.locate_all(
            &mut reader,
            &mut chunk,
            &mut send,
            &mut index_batch,
            &mut count,
        );
        // The records located before the end, or before an error, go to the projections' thread
        // whatever happened: an error it finds in them is earlier in the log than this one, and
        // is the one the open reports.
        reader.end_block();
        let sent = ship(&mut reader, &mut chunk, &mut send);
        if !read? || !sent {
            // The projections' thread stopped on an error: reported by the caller.
            return Ok(count);
        }
        index_batch.flush(self.index)?;
        Ok(count)
    }

    /// The loop of [`Tail::read_into`]: notes each record past the snapshot in `chunk` and
    /// ships the chunk with its block whenever the reader moves to another block; adds each
    /// record past the index's marker to `index_batch`. False when `send` stopped the read.
    fn locate_all(
        &self,
        reader: &mut logbook_wal::WalReader,
        chunk: &mut Chunk,
        send: &mut impl FnMut(Chunk) -> Option<Chunk>,
        index_batch: &mut IndexBatch,
        count: &mut u64,
    ) -> Result<bool> {
        let mut decoder = EnvelopeDecoder::new();
        while let Some(record) = reader.next_located() {
            let record = record?;
            let position = record.position;
            if record.new_block && !ship(reader, chunk, send) {
                return Ok(false);
            }
            if position <= self.snapshot_position || position > self.index_complete {
                // For the index (the snapshot holds what is at or below its position for
                // everything else).
                let bytes =
                    reader
                        .block_bytes(record.at, record.len)
                        .ok_or_else(|| Error::Corrupted {
                            position,
                            reason: "a record not in the reader's block".to_owned(),
                        })?;
                let durable = DurableRecord::decode_with(&mut decoder, position, bytes)?;
                self.index(index_batch, &durable)?;
            }
            if position > self.snapshot_position {
                *count += 1;
                chunk.push(record);
            }
        }
        Ok(true)
    }
}

/// Hands `chunk` (the records of the block `reader` just retired) to `send` with that block,
/// takes back the chunk `send` returns to fill next, and gives its spent block to the reader.
/// False when `send` returned none (the projections' thread stopped).
fn ship(
    reader: &mut logbook_wal::WalReader,
    chunk: &mut Chunk,
    send: &mut impl FnMut(Chunk) -> Option<Chunk>,
) -> bool {
    let block = reader.take_block();
    if chunk.records.is_empty() {
        // Only records the projections do not take came from it.
        if let Some(block) = block {
            reader.give_block(block);
        }
        return true;
    }
    // A retired block always follows a record returned from it; without one the chunk's
    // records are not found on the other side, which fails the open (never a panic).
    chunk.block = block.unwrap_or_default();
    let Some(mut next) = send(std::mem::take(chunk)) else {
        return false;
    };
    reader.give_block(std::mem::take(&mut next.block));
    next.records.clear();
    *chunk = next;
    true
}

/// The records of one block of the WAL reader, for the projections' thread: each record's
/// position and where its bytes (a checked frame's payload: the envelope) lie in the block,
/// as the reader returned them.
#[derive(Default)]
struct Chunk {
    records: Vec<Located>,
    block: Vec<u8>,
}

impl Chunk {
    fn push(&mut self, record: Located) {
        debug_assert!(
            self.records
                .last()
                .is_none_or(|last| last.position < record.position)
        );
        self.records.push(record);
    }

    /// Decodes each record's envelope (through `decoder`, which checks a run's stream id and
    /// event type once, with the same checks and errors as [`DurableRecord::decode`]) and
    /// applies it to the catalog (through `run`, which the caller ends after the last chunk)
    /// and the projections, in order, stopping at the first error.
    fn apply(
        &self,
        decoder: &mut EnvelopeDecoder,
        streams: &mut StreamTable,
        run: &mut ReplayRun,
        compaction: &CompactionPolicy,
        replayer: &mut dyn crate::projections::Replayer,
    ) -> Result<()> {
        for &Located {
            position, at, len, ..
        } in &self.records
        {
            let bytes = at
                .checked_add(len)
                .and_then(|end| self.block.get(at..end))
                .ok_or_else(|| Error::Corrupted {
                    position,
                    reason: "a record not in its replay chunk's block".to_owned(),
                })?;
            let durable = DurableRecord::decode_with(decoder, position, bytes)?;
            apply::apply_catalog_in_run(streams, run, compaction, &durable)?;
            replayer.apply(&durable, run.stream_id())?;
        }
        Ok(())
    }
}

/// The replay over two threads: this one reads, checks and decodes each record's envelope and
/// applies the index; a scoped thread applies the records to the catalog (which it hands back
/// when it ends) and the projections, a chunk at a time, in order. Its outcome is waited for
/// before this returns, so the catalog and the projections hold every record (or the open
/// fails with the first error of either thread).
fn pipelined(
    tail: &Tail<'_>,
    applier: &dyn Applier,
    mut streams: StreamTable,
) -> Result<(StreamTable, u64)> {
    std::thread::scope(|scope| {
        let (full, queued) = mpsc::sync_channel::<Chunk>(PIPELINE_QUEUE);
        let (spent, recycled) = mpsc::channel::<Chunk>();
        let span = tracing::Span::current();
        let (running, started) = mpsc::sync_channel::<()>(1);
        let projections = std::thread::Builder::new()
            .name("logbook-replay".into())
            .spawn_scoped(scope, move || -> Result<StreamTable> {
                let _ = running.send(());
                let _span = span.entered();
                let mut replayer = applier.replayer();
                let mut run = ReplayRun::default();
                let mut decoder = EnvelopeDecoder::new();
                for chunk in queued {
                    chunk.apply(
                        &mut decoder,
                        &mut streams,
                        &mut run,
                        tail.compaction,
                        replayer.as_mut(),
                    )?;
                    // Back to the reader, block and all (the reader reads into it again at the
                    // length it has, so nothing is filled with zeros); it may be done and
                    // gone: the chunk is then dropped.
                    let _ = spent.send(chunk);
                }
                streams.end_run(&mut run);
                replayer.flush();
                Ok(streams)
            })
            .map_err(|error| Error::Task(error.to_string()))?;
        // Wait until the new thread runs. Left alone, the scheduler here often kept it queued
        // on this thread's core until this one blocked (0.5 to 2 ms later: the reader fills
        // the queue first, then waits); blocking now, for the 20 to 100 µs it takes to start,
        // lets it run at once and the two threads spread over two cores. (An error means it
        // ended already: its outcome is reported below.)
        let _ = started.recv();
        let mut chunks = 1usize;
        let read = tail.read_into(|chunk| {
            if full.send(chunk).is_err() {
                // The projections' thread stopped on an error: reported below.
                return None;
            }
            // A spent chunk if there is one; a new one only while every other chunk is queued
            // or in use (so at most PIPELINE_CHUNKS_MAX ever exist).
            Some(recycled.try_recv().unwrap_or_else(|_| {
                chunks += 1;
                assert!(chunks <= PIPELINE_CHUNKS_MAX, "replay chunks unbounded");
                Chunk::default()
            }))
        });
        // No more chunks: the projections' thread applies what is queued and ends.
        drop(full);
        let projected = match projections.join() {
            Ok(outcome) => outcome,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        // The projections' thread only ever saw records the reader read before any error of
        // its own: an error of that thread is the first in the log, and is the one reported.
        let projected = projected?;
        Ok((projected, read?))
    })
}

/// Fills an empty stream index with the log's records up to `through`, and flushes it: the
/// rebuild of an index that opened in the background (from a recent file) and turned out
/// unusable. The records past `through` are in the index's in-memory tail already.
pub(crate) fn fill_index(wal: &Wal, index: &StreamIndex, through: u64) -> Result<()> {
    let mut batch = IndexBatch::default();
    let mut reader = wal.read_from(1);
    let mut decoder = EnvelopeDecoder::new();
    while let Some(record) = reader.next_ref() {
        let (position, payload) = record?;
        if position > through {
            break;
        }
        let durable = DurableRecord::decode_with(&mut decoder, position, payload)?;
        batch.add(index, &durable)?;
        if batch.len() >= INDEX_BATCH_RECORDS {
            batch.flush(index)?;
        }
    }
    batch.flush(index)?;
    index.insert(&[], through)?;
    index.flush()
}
