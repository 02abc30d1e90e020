//! The open's replay: the log's records past the newest snapshot (and past the stream index's
//! marker) into the durable stream table, the stream index and the projections.
//!
//! Owns: the order of that work and, for a long replay, its split over two threads: the
//! opening thread reads the records, checks them, decodes their envelopes and applies the
//! index; a second thread applies them to the catalog, decodes the payloads and applies them to
//! the projections, in position order, taking the records a chunk at a time (their decoded
//! envelopes, [`EnvelopeBatch`]) from a bounded queue. Must never: apply a record out of
//! position order, skip one, hold more than [`PIPELINE_CHUNKS_MAX`] chunks of
//! [`PIPELINE_CHUNK_BYTES`], or finish before the projections have every record.

use crate::apply::{self, DurableRecord, INDEX_BATCH_RECORDS, IndexBatch};
use crate::error::{Error, Result};
use crate::index::StreamIndex;
use crate::projections::Applier;
use crate::streams::{ReplayRun, StreamTable};
use logbook_compaction::CompactionPolicy;
use logbook_projection::{EnvelopeBatch, EnvelopeDecoder};
use logbook_wal::Wal;
use std::sync::mpsc;

/// Records past the snapshot from which a replay hands the projections' work to a second
/// thread: below it the thread's start and hand-offs cost more than they save.
pub(crate) const PIPELINE_RECORDS_MIN: u64 = 50_000;
/// Bytes of records (their envelopes and positions, [`Chunk::bytes`]) per chunk handed to the
/// projections' thread.
pub(crate) const PIPELINE_CHUNK_BYTES: usize = 128 * 1024;
/// Chunks queued for the projections' thread; with the one it applies and the one being
/// filled, at most `PIPELINE_CHUNKS_MAX` chunks exist: the replay's memory is bounded by
/// `PIPELINE_CHUNKS_MAX * (PIPELINE_CHUNK_BYTES + one record)` (2 MiB and a record) whatever
/// the log's size.
///
/// Sixteen chunks of 128 KiB rather than four of 256 KiB: a chunk is filled again only after
/// about 2 MiB of others went through the projections' thread, so its bytes have left that
/// core's cache (1 MiB of L2 on the machines measured) and the copy into it does not stall on
/// taking each cache line back from the other core. perf showed those stalls as 9% of the
/// replay's samples; `docs/benchmarks.md`, session 15.
const PIPELINE_QUEUE: usize = 14;
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
        replayer.apply(durable)
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

    /// [`Tail::read`] for the two-thread replay: a record past the snapshot is decoded
    /// straight into `chunk` (its envelope checked and copied in one pass,
    /// [`EnvelopeBatch::decode_push`]), and `send` is called with the chunk whenever it holds
    /// [`PIPELINE_CHUNK_BYTES`] (it returns false to stop the read early: the projections'
    /// thread stopped on an error). Returns how many records were past the snapshot; what is
    /// left in `chunk` is for the caller to send.
    fn read_into(
        &self,
        chunk: &mut Chunk,
        mut send: impl FnMut(&mut Chunk) -> bool,
    ) -> Result<u64> {
        let mut count = 0u64;
        let mut index_batch = IndexBatch::default();
        let mut reader = self.wal.read_from(self.first());
        let mut decoder = EnvelopeDecoder::new();
        while let Some(record) = reader.next_ref() {
            let (position, bytes) = record?;
            if position <= self.snapshot_position {
                // Only the index reads it (the snapshot holds it for everything else).
                let durable = DurableRecord::decode_with(&mut decoder, position, bytes)?;
                self.index(&mut index_batch, &durable)?;
                continue;
            }
            count += 1;
            chunk.decode_push(position, bytes)?;
            if position > self.index_complete {
                self.index(&mut index_batch, &chunk.last()?)?;
            }
            if chunk.bytes() >= PIPELINE_CHUNK_BYTES && !send(chunk) {
                return Ok(count);
            }
        }
        index_batch.flush(self.index)?;
        Ok(count)
    }
}

/// Records decoded on the reading thread, copied out of the reader's buffer for the
/// projections' thread: their positions and envelopes (which come back without a second
/// decode).
#[derive(Default)]
struct Chunk {
    positions: Vec<u64>,
    envelopes: EnvelopeBatch,
}

impl Chunk {
    /// Decodes the record at `position` into the chunk (its envelope checked as
    /// [`DurableRecord::decode`] checks it, with the same errors); a refused record leaves the
    /// chunk as it was.
    fn decode_push(&mut self, position: u64, bytes: &[u8]) -> Result<()> {
        debug_assert!(self.positions.last().is_none_or(|last| *last < position));
        // A chunk is sent at PIPELINE_CHUNK_BYTES, far below the batch's 4 GiB limit, which is
        // the only other refusal.
        self.envelopes
            .decode_push(bytes)
            .map_err(|error| Error::Corrupted {
                position,
                reason: error.to_string(),
            })?;
        self.positions.push(position);
        debug_assert_eq!(self.positions.len(), self.envelopes.len());
        Ok(())
    }

    /// The record pushed last (its engine event, if any, decoded and checked).
    fn last(&self) -> Result<DurableRecord<'_>> {
        let index = self.positions.len().checked_sub(1);
        self.record(index.unwrap_or(usize::MAX))
    }

    /// The record pushed `index`-th.
    fn record(&self, index: usize) -> Result<DurableRecord<'_>> {
        let position = self.positions.get(index).copied().unwrap_or_default();
        let envelope = self.envelopes.get(index).ok_or_else(|| Error::Corrupted {
            position,
            reason: format!("a replay chunk holds no envelope {index}"),
        })?;
        DurableRecord::with_envelope(position, envelope)
    }

    fn bytes(&self) -> usize {
        self.envelopes.bytes() + self.positions.len() * std::mem::size_of::<u64>()
    }

    fn clear(&mut self) {
        self.positions.clear();
        self.envelopes.clear();
    }

    /// Applies every record to the catalog (through `run`, which the caller ends after the
    /// last chunk) and the projections, in order.
    fn apply(
        &self,
        streams: &mut StreamTable,
        run: &mut ReplayRun,
        compaction: &CompactionPolicy,
        replayer: &mut dyn crate::projections::Replayer,
    ) -> Result<()> {
        for index in 0..self.positions.len() {
            let durable = self.record(index)?;
            apply::apply_catalog_in_run(streams, run, compaction, &durable)?;
            replayer.apply(&durable)?;
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
        let projections = std::thread::Builder::new()
            .name("logbook-replay".into())
            .spawn_scoped(scope, move || -> Result<StreamTable> {
                let _span = span.entered();
                let mut replayer = applier.replayer();
                let mut run = ReplayRun::default();
                for mut chunk in queued {
                    chunk.apply(&mut streams, &mut run, tail.compaction, replayer.as_mut())?;
                    chunk.clear();
                    // The reader may be done and gone: the chunk is then dropped.
                    let _ = spent.send(chunk);
                }
                streams.end_run(&mut run);
                replayer.flush();
                Ok(streams)
            })
            .map_err(|error| Error::Task(error.to_string()))?;
        let mut chunk = Chunk::default();
        let mut chunks = 1usize;
        let read = tail.read_into(&mut chunk, |chunk| {
            if full.send(std::mem::take(chunk)).is_err() {
                // The projections' thread stopped on an error: reported below.
                return false;
            }
            // A spent chunk if there is one; a new one only while every other chunk is queued
            // or in use (so at most PIPELINE_CHUNKS_MAX ever exist).
            *chunk = recycled.try_recv().unwrap_or_else(|_| {
                chunks += 1;
                assert!(chunks <= PIPELINE_CHUNKS_MAX, "replay chunks unbounded");
                Chunk::default()
            });
            true
        });
        if read.is_ok() && !chunk.positions.is_empty() {
            // An error here means the projections' thread stopped: reported below.
            let _ = full.send(chunk);
        }
        // No more chunks: the projections' thread applies what is queued and ends.
        drop(full);
        let projected = match projections.join() {
            Ok(outcome) => outcome,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        let count = read?;
        Ok((projected?, count))
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
