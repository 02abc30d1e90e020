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
            self.request(command, receiver).await
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
        streams.get(stream).map(|state| StreamHead {
            last_version: state.last_version(),
            last_position: state.last_position(),
            deleted: state.deleted,
            truncated_before: state.truncated_before,
        })
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

/// Up to `max` durable, visible events of a stream from `from_version`, each record's bytes
/// handed to `decode` borrowed from the WAL reader's buffer: [`Embedded::read_stream`] and the
/// facade's typed read (which decodes straight into `RecordedEvent`s) share it.
pub(crate) async fn read_stream_with<T: Send + 'static>(
    shared: &Shared,
    files: &Arc<Files>,
    stream: StreamId,
    from_version: u64,
    direction: Direction,
    max: usize,
    decode: impl FnMut(u64, &[u8]) -> Result<T> + Send + 'static,
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
    let files = files.clone();
    tokio::task::spawn_blocking(move || {
        let selected =
            files
                .index
                .range(stream.as_str(), from_version, visible_from, direction, max)?;
        read_positions(&files, &selected, decode)
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
/// returns them in the order selected.
///
/// A backward page is read forward: one reader from the lowest position, reading through short
/// runs of other streams' records and seeking only past long ones, then the results are put
/// back in the requested order (seeking once per event made the newest 50 of a stream cost 50
/// seeks).
fn read_positions<T>(
    files: &Files,
    selected: &[(u64, u64)],
    mut decode: impl FnMut(u64, &[u8]) -> Result<T>,
) -> Result<Vec<T>> {
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
    'positions: for &position in &positions {
        let reuse = reader.as_ref().is_some_and(|reader| {
            let next = reader.next_position();
            next <= position && position - next <= READ_THROUGH_MAX
        });
        if !reuse {
            reader = Some(files.wal.read_from(position));
        }
        let Some(current) = reader.as_mut() else {
            break;
        };
        loop {
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
    Ok(found)
}
