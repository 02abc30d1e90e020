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
        Box::pin(async move {
            // The pending table: a truncation or delete hides events as soon as it is
            // accepted (the index only ever holds durable positions, so nothing non-durable
            // is read).
            let visible_from = self
                .shared
                .pending_streams
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .visible_from(&stream)?;
            let Some(visible_from) = visible_from else {
                return Ok(Vec::new());
            };
            let files = self.files.clone();
            tokio::task::spawn_blocking(move || {
                let selected = files.index.range(
                    stream.as_str(),
                    from_version,
                    visible_from,
                    direction,
                    max,
                )?;
                read_positions(&files, &selected)
            })
            .await
            .map_err(blocking_error)?
        })
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

/// Reads the records at `positions` (ascending or descending), each checked.
fn read_positions(files: &Files, selected: &[(u64, u64)]) -> Result<Vec<RawEvent>> {
    let mut raws = Vec::with_capacity(selected.len());
    let mut reader: Option<logbook_wal::WalReader> = None;
    for &(_, position) in selected {
        // The next position continues the same reader; anything else seeks (a binary search
        // and a sparse-index scan of at most one index interval).
        let reuse = reader
            .as_ref()
            .is_some_and(|reader| reader.next_position() == position);
        if !reuse {
            reader = Some(files.wal.read_from(position));
        }
        let Some(current) = reader.as_mut() else {
            break;
        };
        match current.next() {
            Some(Ok(record)) if record.position == position => {
                raws.push(decode_raw(position, &record.payload)?);
            }
            // Compaction dropped it (a superseded record): skip it, seek afresh for the next.
            Some(Ok(record)) if record.position > position => reader = None,
            Some(Ok(_)) | None => break, // not durable yet
            Some(Err(error)) => return Err(error.into()),
        }
    }
    Ok(raws)
}
