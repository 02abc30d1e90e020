//! The embedded backend: today's WAL + sled stream index + snapshot files, behind [`Backend`].
//!
//! Owns: the request path to the writer thread (appends, deletes, truncations, syncs, close),
//! stream reads through the stream index, log reads from the WAL, the pending stream table's
//! answers (heads, expected versions), the snapshot files and the WAL's figures. The bytes on
//! disk are exactly those `docs/format.md` describes. Must never: apply a record to the
//! projections (the syncer hands durable records to the engine's one apply), or expose a record
//! above the durable position.

use super::{
    AppendRequest, Backend, BackendStats, BoxFuture, DeleteMode, EmbeddedStats, Record,
    SnapshotStorage, StreamHead,
};
use crate::engine::{Files, Shared, Threads};
use crate::error::{Error, Result};
use crate::seat::Seat;
use crate::streams::{Direction, ExpectedVersion};
use crate::writer::{AppendResult, Command};
use logbook_compaction::SnapshotInfo;
use logbook_projection::{RawEvent, StreamId};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};

/// The embedded log in one directory, reached through its writer thread.
pub(crate) struct Embedded {
    pub(crate) shared: Arc<Shared>,
    /// The WAL, the stream index and the snapshot files.
    pub(crate) files: Arc<Files>,
    pub(crate) requests: mpsc::Sender<Command>,
    /// The writer's seat: a lone durable append runs on the caller's thread through it.
    pub(crate) seat: Arc<Seat>,
    pub(crate) threads: Arc<Mutex<Threads>>,
}

fn blocking_error(error: tokio::task::JoinError) -> Error {
    Error::Task(error.to_string())
}

impl Embedded {
    async fn request<T>(&self, command: Command, reply: oneshot::Receiver<Result<T>>) -> Result<T> {
        self.requests
            .send(command)
            .await
            .map_err(|_| Error::Closed)?;
        reply.await.map_err(|_| Error::Closed)?
    }

    /// Stops the writer and syncer threads after everything is durable, then releases the
    /// files (the WAL's lock, the stream index) whatever handles still share them.
    async fn close_files(&self) -> Result<()> {
        let synced = self.sync().await;
        let (reply, receiver) = oneshot::channel();
        if self.requests.send(Command::Close { reply }).await.is_ok() {
            let _ = receiver.await;
        }
        let handles = {
            let mut threads = self
                .threads
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            (threads.writer.take(), threads.syncer.take())
        };
        tokio::task::spawn_blocking(move || {
            let (writer, syncer) = handles;
            for handle in [writer, syncer].into_iter().flatten() {
                if handle.join().is_err() {
                    tracing::error!("a background thread panicked");
                }
            }
        })
        .await
        .map_err(blocking_error)?;
        // Release the files now, not when the last `Arc<Shared>` goes: a clone of the handle
        // or a live `Subscription` the service still holds must not keep the WAL's lock and the
        // stream index open, or the next open in this process fails with `Locked` after
        // `close` returned `Ok` (tests/engine_close_releases.rs). Subscriptions still read
        // what was durable, then end; other handles get `Closed`.
        let (shared, files) = (self.shared.clone(), self.files.clone());
        let released = tokio::task::spawn_blocking(move || {
            shared.snapshots.stop();
            let index = files.index.release();
            let wal = files.wal.stop().map_err(Error::from);
            wal.and(index)
        })
        .await
        .map_err(blocking_error)?;
        synced?;
        released
    }
}

impl Backend for Embedded {
    fn append(&self, request: AppendRequest) -> BoxFuture<'_, Result<AppendResult>> {
        Box::pin(async move {
            let (reply, receiver) = oneshot::channel();
            let command = Command::Append {
                stream: request.stream,
                expected: request.expected,
                events: request.events,
                durability: request.durability,
                reply,
            };
            match self.seat.try_lone(&self.requests, command) {
                // Done on this thread: the reply is already there.
                Ok(()) => receiver.await.map_err(|_| Error::Closed)?,
                Err(command) => self.request(command, receiver).await,
            }
        })
    }

    fn delete_stream(
        &self,
        stream: StreamId,
        expected: ExpectedVersion,
        mode: DeleteMode,
    ) -> BoxFuture<'_, Result<AppendResult>> {
        Box::pin(async move {
            let (reply, receiver) = oneshot::channel();
            let command = Command::Delete {
                stream,
                expected,
                mode,
                reply,
            };
            self.request(command, receiver).await
        })
    }

    fn truncate_stream(
        &self,
        stream: StreamId,
        before_version: u64,
    ) -> BoxFuture<'_, Result<AppendResult>> {
        Box::pin(async move {
            let (reply, receiver) = oneshot::channel();
            let command = Command::Truncate {
                stream,
                before_version,
                reply,
            };
            self.request(command, receiver).await
        })
    }

    fn sync(&self) -> BoxFuture<'_, Result<u64>> {
        Box::pin(async move {
            let (reply, receiver) = oneshot::channel();
            self.request(Command::Sync { reply }, receiver).await
        })
    }

    fn read_stream(
        &self,
        stream: StreamId,
        from_version: u64,
        direction: Direction,
        max: usize,
    ) -> BoxFuture<'_, Result<Vec<RawEvent>>> {
        Box::pin(read_stream_with(
            &self.shared,
            &self.files,
            stream,
            from_version,
            direction,
            max,
            decode_raw,
        ))
    }

    fn read_all(&self, from_position: u64, max: usize) -> BoxFuture<'_, Result<Vec<Record>>> {
        let files = self.files.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let mut records = Vec::new();
                for record in files.wal.read_from(from_position).take(max) {
                    let record = record?;
                    records.push((record.position, Arc::new(record.payload)));
                }
                Ok(records)
            })
            .await
            .map_err(blocking_error)?
        })
    }

    fn stream_head(&self, stream: &StreamId) -> Option<StreamHead> {
        // The pending table: the head the next append continues.
        let streams = self
            .shared
            .pending_streams
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        streams.get(stream).map(StreamHead::of)
    }

    fn check_expected_version(&self, stream: &StreamId, expected: ExpectedVersion) -> Result<u64> {
        // The pending table: the writer checks the next append against it.
        self.shared
            .pending_streams
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .check(stream, expected)
    }

    fn stream_count(&self) -> usize {
        // The pending table: streams accepted so far, durable or not (as `head_position`).
        self.shared
            .pending_streams
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .len()
    }

    fn durable_position(&self) -> u64 {
        self.files.wal.durable_position()
    }

    fn head_position(&self) -> u64 {
        self.files.wal.last_position()
    }

    fn wait_durable(&self, position: u64) -> BoxFuture<'_, Result<u64>> {
        Box::pin(async move {
            let durable = self.files.wal.durable_position();
            if durable >= position {
                return Ok(durable);
            }
            // Under `SyncPolicy::Never` (and for relaxed appends until their delay passes)
            // nothing else would make `position` durable: sync now. (Found by
            // tests/compaction_purge.rs: execute() with `Never` waited forever.)
            self.sync().await
        })
    }

    fn snapshots(&self) -> Arc<dyn SnapshotStorage> {
        self.files.snapshot_store.clone()
    }

    fn snapshot(&self) -> BoxFuture<'_, Result<SnapshotInfo>> {
        Box::pin(async move {
            let (reply, receiver) = oneshot::channel();
            self.request(Command::Snapshot { reply }, receiver).await
        })
    }

    fn vacuum(&self) -> BoxFuture<'_, Result<()>> {
        // Compaction rewrites the segments themselves: nothing is left to reclaim here.
        Box::pin(async { Ok(()) })
    }

    fn stats(&self) -> BackendStats {
        let segments = self.files.wal.segments();
        BackendStats::Embedded(EmbeddedStats {
            segments: segments.len(),
            segment_bytes: segments.iter().map(|segment| segment.bytes).sum(),
            appends_on_caller: self.seat.taken_by_callers(),
        })
    }

    fn close(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(self.close_files())
    }
}

fn decode_raw(position: u64, payload: &[u8]) -> Result<RawEvent> {
    RawEvent::decode_record(position, payload).map_err(|error| Error::Corrupted {
        position,
        reason: error.to_string(),
    })
}

/// The most records of other streams a read goes through, rather than seeking past them, to
/// reach the next selected position: a seek is a binary search, a sparse-index lookup, a read
/// and a short scan, where a record read through is a CRC over bytes already buffered.
const READ_THROUGH_MAX: u64 = 256;

/// Pages of at most this many events are first tried on the caller's thread (see
/// [`read_stream_with`]): the newest messages of a chat room, a consumer's last event.
pub(crate) const INLINE_EVENTS_MAX: usize = 64;

/// The most frames a read on the caller's thread goes through (the selected records, records
/// of other streams read through, the frames a seek scans from the sparse index) before it
/// gives up and the page is read again on the blocking pool: with records of a few hundred
/// bytes, at most a few hundred KiB of the page cache.
pub(crate) const INLINE_FRAMES_MAX: u64 = 512;

/// Pages of at most this many events are read on the caller's thread when their records lie
/// within [`INLINE_FRAMES_MAX`] positions of one another (see [`read_stream_with`]): the
/// frame budget bounds the work, whatever the page's size.
pub(crate) const INLINE_PAGE_EVENTS_MAX: usize = INLINE_FRAMES_MAX as usize;

/// The positions a forward read through `selected` (ascending or descending) would cover.
fn span(selected: &[(u64, u64)]) -> u64 {
    let positions = selected.iter().map(|&(_, position)| position);
    match (positions.clone().min(), positions.max()) {
        (Some(low), Some(high)) => high - low + 1,
        _ => 0,
    }
}

/// Up to `max` durable, visible events of a stream from `from_version`, each record's bytes
/// handed to `decode` borrowed from the WAL reader's buffer: [`Embedded::read_stream`] and the
/// facade's typed read (which decodes straight into `RecordedEvent`s) share it.
///
/// The caller's thread reads a bounded number of frames (the selected records, records of
/// other streams read through, the frames a seek scans from the sparse index): at most
/// [`INLINE_FRAMES_MAX`], twice that for a whole page (below). Two thread hand-offs of
/// `spawn_blocking` cost more than reading a few hundred records from the page cache (a page
/// of 500 took 1.35x to 1.5x as long through the pool, session 19).
/// - A page of at most [`INLINE_EVENTS_MAX`] events whose positions the index has in memory
///   (its tail, or the cache of streams' last chunks): read here, within the budget.
/// - A page of at most [`INLINE_PAGE_EVENTS_MAX`] events, once sled has opened (its open may
///   rebuild the index: never waited for here): its positions from the index here (sled,
///   whose pages stay in memory once read), then its records here if they span at most
///   [`INLINE_FRAMES_MAX`] positions (giving up past twice that many frames: the seek to the
///   first one scans a few more); a page spread thinner goes to the blocking pool with the
///   positions found.
/// - Anything else, or a read that goes past the budget: the blocking pool.
///
/// The trade-off: a page whose records (or index pages) are no longer in memory waits for the
/// disk on the caller's thread (at most the budget's frames, a few preads of the WAL).
pub(crate) async fn read_stream_with<T: Send + 'static>(
    shared: &Shared,
    files: &Arc<Files>,
    stream: StreamId,
    from_version: u64,
    direction: Direction,
    max: usize,
    mut decode: impl FnMut(u64, &[u8]) -> Result<T> + Send + 'static,
) -> Result<Vec<T>> {
    // The pending table: a truncation or delete hides events as soon as it is accepted (the
    // index only ever holds durable positions, so nothing non-durable is read).
    let visible_from = shared
        .pending_streams
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .visible_from(&stream)?;
    let Some(visible_from) = visible_from else {
        return Ok(Vec::new());
    };
    if max <= INLINE_EVENTS_MAX {
        let selected = files.index.range_in_memory(
            stream.as_str(),
            from_version,
            visible_from,
            direction,
            max,
        )?;
        if let Some(selected) = selected
            && let Some(page) =
                read_positions(files, &selected, &mut decode, Some(INLINE_FRAMES_MAX))?
        {
            return Ok(page);
        }
    }
    if max <= INLINE_PAGE_EVENTS_MAX && files.index.sled_ready() {
        // A page the inline budget may cover: its positions from the index here (sled keeps
        // what it read in memory; not while sled is still opening, which may mean rebuilding
        // the index), its records here if they lie close enough together.
        let selected =
            files
                .index
                .range(stream.as_str(), from_version, visible_from, direction, max)?;
        // The budget leaves room for the frames the first seek scans up to the page.
        if span(&selected) <= INLINE_FRAMES_MAX
            && let Some(page) =
                read_positions(files, &selected, &mut decode, Some(2 * INLINE_FRAMES_MAX))?
        {
            return Ok(page);
        }
        // Spread thin among other streams' records: the blocking pool reads the positions
        // found (no second index query), with no frame budget.
        let files = files.clone();
        return tokio::task::spawn_blocking(move || {
            Ok(read_positions(&files, &selected, decode, None)?.unwrap_or_default())
        })
        .await
        .map_err(blocking_error)?;
    }
    let files = files.clone();
    tokio::task::spawn_blocking(move || {
        let selected =
            files
                .index
                .range(stream.as_str(), from_version, visible_from, direction, max)?;
        // No frame budget: always a page.
        Ok(read_positions(&files, &selected, decode, None)?.unwrap_or_default())
    })
    .await
    .map_err(blocking_error)?
}

/// What the reader found while looking for one selected position.
enum Found<T> {
    /// The selected record, decoded.
    Record(Result<T>),
    /// A record before it (another stream's): read through.
    Before,
    /// A record after it: compaction dropped the selected one (a superseded record).
    After,
}

/// Reads the records at the selected positions (ascending or descending), each checked, and
/// returns them in the order selected; `None` when it went through more than `frames_max`
/// frames before it was done.
///
/// A backward page is read forward: one reader from the lowest position, reading through short
/// runs of other streams' records and seeking only past long ones, then the results are put
/// back in the requested order (seeking once per event made the newest 50 of a stream cost 50
/// seeks).
fn read_positions<T>(
    files: &Files,
    selected: &[(u64, u64)],
    mut decode: impl FnMut(u64, &[u8]) -> Result<T>,
    frames_max: Option<u64>,
) -> Result<Option<Vec<T>>> {
    let descending = selected
        .first()
        .zip(selected.last())
        .is_some_and(|(first, last)| first.1 > last.1);
    let mut positions: Vec<u64> = selected.iter().map(|&(_, position)| position).collect();
    if descending {
        positions.reverse();
    }
    // The index hands out one order or the other; anything else is read sorted all the same.
    if !positions.is_sorted() {
        positions.sort_unstable();
    }
    let mut found = Vec::with_capacity(positions.len());
    let mut reader: Option<logbook_wal::WalReader> = None;
    let mut complete = true;
    // Frames read by the readers dropped so far.
    let mut frames_before = 0;
    'positions: for (at, &position) in positions.iter().enumerate() {
        let reuse = reader.as_ref().is_some_and(|reader| {
            let next = reader.next_position();
            next <= position && position - next <= READ_THROUGH_MAX
        });
        if !reuse {
            frames_before += reader.as_ref().map_or(0, |reader| reader.frames_read());
            // The run this reader reads through: up to the first gap it would seek past.
            let run = positions.get(at..).unwrap_or_default();
            let through = run
                .windows(2)
                .find(|pair| pair[1] - pair[0] > READ_THROUGH_MAX)
                .map_or(run.last().copied().unwrap_or(position), |pair| pair[0]);
            reader = Some(files.wal.read_from(position).reading_through(through));
        }
        let Some(current) = reader.as_mut() else {
            break;
        };
        loop {
            if frames_max.is_some_and(|max| frames_before + current.frames_read() > max) {
                return Ok(None);
            }
            let step = current.next_with(|at, bytes| match at.cmp(&position) {
                std::cmp::Ordering::Equal => Found::Record(decode(at, bytes)),
                std::cmp::Ordering::Less => Found::Before,
                std::cmp::Ordering::Greater => Found::After,
            });
            match step {
                Some(Ok(Found::Record(event))) => {
                    found.push(event?);
                    break;
                }
                Some(Ok(Found::Before)) => {}
                // Compaction dropped it: skip it, seek afresh for the next.
                Some(Ok(Found::After)) => {
                    frames_before += current.frames_read();
                    reader = None;
                    break;
                }
                // Not durable yet.
                None => {
                    complete = false;
                    break 'positions;
                }
                Some(Err(error)) => return Err(error.into()),
            }
        }
    }
    if descending {
        if !complete {
            // Read newest first, the first record missing ended the page before anything:
            // what read in the requested order would return.
            found.clear();
        }
        found.reverse();
    }
    Ok(Some(found))
}
