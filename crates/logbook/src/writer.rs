//! The writer: the one thread that owns appends to the WAL.
//!
//! Owns: taking requests in arrival order, checking expected versions against the pending stream
//! table (`WriterState::pending_streams`, which includes its own appends not yet durable: the only
//! table that knows the next version; every read of it here is that table),
//! stamping versions and timestamps, and handing the encoded batch to the WAL's buffer; and,
//! for a lone request while the syncer is idle, syncing and settling it in this thread
//! ([`Seat::settle_lone`]: one hand-off fewer per append with one writer). The same code runs
//! on a caller's thread for a lone durable append that finds nothing queued
//! ([`Seat::try_lone`]); the [`Seat`] is the lock that makes either the only writer.
//! Must never: wait for a sync while the syncer holds work or more than one request came in
//! the batch (the syncer does then, so appends keep landing while a group is synced), write
//! anything for a request that failed its checks, or write anything once the engine is
//! poisoned.

use crate::backend::DeleteMode;
use crate::backend::DurableSink;
use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::options::AppendDurability;
use crate::poison::Poison;
use crate::seat::Seat;
use crate::streams::ExpectedVersion;
use crate::streams::StreamTable;
use crate::syncer::{Ack, SyncJob, SyncerIdle, SyncerStorage};
use crate::system::{self, SystemEvent};
use logbook_projection::{Envelope, EventData, StreamId};
use logbook_wal::{Durability, SyncPolicy, Wal};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, RwLock};
use tokio::sync::{mpsc, oneshot};

/// What the writer owns: the WAL it appends to, the pending stream table (its expected-version
/// authority), the clock it stamps with; the engine's poison it reads and sets only through the
/// [`DurableSink`]; and, to settle a lone request itself, the syncer's storage and whether the
/// syncer is idle.
pub(crate) struct WriterState {
    pub(crate) wal: Arc<Wal>,
    pub(crate) pending_streams: Arc<RwLock<StreamTable>>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) sink: Arc<dyn DurableSink>,
    pub(crate) syncer_storage: SyncerStorage,
    pub(crate) syncer_idle: Arc<SyncerIdle>,
}

impl WriterState {
    /// The engine's poison, once set.
    fn poison(&self) -> Option<Poison> {
        self.sink.poisoned()
    }

    /// [`WriterState::poison`], adopting a WAL poisoned behind the engine's back (a failed
    /// buffer write or segment roll under an append, or the `Interval` sync thread) at the
    /// first position that is not durable.
    fn adopt_wal_poison(&self) -> Option<Poison> {
        if let Some(poison) = self.poison() {
            return Some(poison);
        }
        let reason = self.wal.poisoned_reason()?;
        let reason = format!("a WAL write or sync failed: {reason}");
        Some(self.sink.poison(self.wal.durable_position() + 1, reason))
    }
}

/// Requests the writer takes at once before handing a job to the syncer.
pub(crate) const WRITER_BATCH_MAX: usize = 512;

/// What an append wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendResult {
    /// Position of the first event.
    pub first_position: u64,
    /// Position of the last event.
    pub last_position: u64,
    /// Stream version of the first event.
    pub first_version: u64,
    /// Stream version of the last event: the stream's new version.
    pub version: u64,
}

pub(crate) enum Command {
    Append {
        stream: StreamId,
        expected: ExpectedVersion,
        events: Vec<EventData>,
        durability: AppendDurability,
        reply: oneshot::Sender<Result<AppendResult>>,
    },
    Delete {
        stream: StreamId,
        expected: ExpectedVersion,
        mode: DeleteMode,
        reply: oneshot::Sender<Result<AppendResult>>,
    },
    Truncate {
        stream: StreamId,
        before_version: u64,
        reply: oneshot::Sender<Result<AppendResult>>,
    },
    Sync {
        reply: oneshot::Sender<Result<u64>>,
    },
    /// Snapshot once everything written before is durable and applied.
    Snapshot {
        reply: crate::snapshots::SnapshotReply,
    },
    /// Stop after the requests before this one; the syncer then finishes and stops too.
    Close {
        reply: oneshot::Sender<()>,
    },
}

pub(crate) fn run(
    seat: Arc<Seat>,
    mut requests: mpsc::Receiver<Command>,
    jobs: SyncSender<SyncJob>,
) {
    let mut closing = None;
    while let Some(first) = requests.blocking_recv() {
        let _span = tracing::debug_span!("commit_batch").entered();
        let Some(mut held) = seat.take_for_writer() else {
            // A caller panicked while it held the seat: the writer state may be half-changed.
            tracing::error!("a lone append panicked on its caller's thread; the writer stops");
            refuse(first, &|| Error::Closed);
            break;
        };
        let mut job = SyncJob::default();
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(command) = next.take() {
            if let Command::Close { reply } = command {
                closing = Some(reply);
                // Nothing after the close is written on a caller's thread either.
                held.stopped = true;
                break;
            }
            handle(&held.state, command, &mut job);
            taken += 1;
            if taken < WRITER_BATCH_MAX {
                next = requests.try_recv().ok();
            }
        }
        if job.is_empty() {
            // Nothing to sync or settle (refused or answered at once).
        } else if taken == 1 && job.must_sync() && held.state.syncer_idle.is_idle(held.sent) {
            // One request waits for a sync and the syncer holds nothing earlier: lead the sync
            // here rather than wake the syncer (the batch is one request, so no other append is
            // held back meanwhile; they queue and go to the syncer as one batch).
            let answers = seat.settle_lone(&held, job, || requests.is_empty());
            // The seat is free before the appender hears back (see `Seat::settle_lone`).
            drop(held);
            answers.send();
        } else {
            seat.not_lone();
            // Room in the syncer's backlog first: relaxed appends must not queue without limit
            // behind a slow fsync.
            held.state.syncer_storage.backlog.admit(job.record_bytes());
            held.sent += 1;
            if jobs.send(job).is_err() {
                break;
            }
        }
        if closing.is_some() {
            break;
        }
    }
    // The queue closed (every handle dropped) or the syncer is gone: nothing more is written
    // on callers' threads either.
    if let Some(mut held) = seat.take_for_writer() {
        held.stopped = true;
    }
    // Refuse what is still queued: the log is closing.
    requests.close();
    while let Ok(command) = requests.try_recv() {
        refuse(command, &|| Error::Closed);
    }
    drop(jobs);
    if let Some(reply) = closing {
        let _ = reply.send(());
    }
    tracing::debug!("writer stopped");
}

/// True for an append that waits for a sync of its own (the durability the lone path of
/// [`Seat::try_lone`] serves); false for every other request.
pub(crate) fn waits_for_own_sync(state: &WriterState, command: &Command) -> bool {
    matches!(command, Command::Append { durability, .. } if waits_for_sync(state, *durability))
}

fn waits_for_sync(state: &WriterState, durability: AppendDurability) -> bool {
    durability == AppendDurability::Policy
        && matches!(
            state.wal.options().sync_policy,
            SyncPolicy::Always | SyncPolicy::GroupCommit { .. }
        )
}

pub(crate) fn handle(state: &WriterState, command: Command, job: &mut SyncJob) {
    if let Some(poison) = state.poison() {
        // Nothing more is written once the engine is poisoned (see poison.rs).
        refuse(command, &|| poison.error());
        return;
    }
    match command {
        Command::Append {
            stream,
            expected,
            events,
            durability,
            reply,
        } => {
            let waits = waits_for_sync(state, durability);
            let result = append(state, &stream, expected, events, job);
            finish(result, waits, reply, job);
        }
        Command::Delete {
            stream,
            expected,
            mode,
            reply,
        } => {
            let result = delete(state, &stream, expected, mode, job);
            finish(
                result,
                waits_for_sync(state, AppendDurability::Policy),
                reply,
                job,
            );
        }
        Command::Truncate {
            stream,
            before_version,
            reply,
        } => {
            let result = truncate(state, &stream, before_version, job);
            finish(
                result,
                waits_for_sync(state, AppendDurability::Policy),
                reply,
                job,
            );
        }
        Command::Sync { reply } => job.sync_replies.push(reply),
        Command::Snapshot { reply } => job.snapshot_replies.push(reply),
        Command::Close { reply } => {
            let _ = reply.send(());
        }
    }
}

/// Answers a request with `error` without doing it.
fn refuse(command: Command, error: &dyn Fn() -> Error) {
    match command {
        Command::Append { reply, .. }
        | Command::Delete { reply, .. }
        | Command::Truncate { reply, .. } => {
            let _ = reply.send(Err(error()));
        }
        Command::Sync { reply } => {
            let _ = reply.send(Err(error()));
        }
        Command::Snapshot { reply } => {
            let _ = reply.send(Err(error()));
        }
        Command::Close { reply } => {
            let _ = reply.send(());
        }
    }
}

fn finish(
    result: Result<AppendResult>,
    waits: bool,
    reply: oneshot::Sender<Result<AppendResult>>,
    job: &mut SyncJob,
) {
    match result {
        Ok(result) if waits => job.acks.push(Ack { result, reply }),
        other => {
            // The caller may have gone away (cancelled future): nothing to tell then.
            let _ = reply.send(other);
        }
    }
}

fn append(
    state: &WriterState,
    stream: &StreamId,
    expected: ExpectedVersion,
    events: Vec<EventData>,
    job: &mut SyncJob,
) -> Result<AppendResult> {
    let mut streams = state
        .pending_streams
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let first_version = streams.check(stream, expected)?;
    let result = write(state, stream, first_version, events, job)?;
    streams.record(
        stream,
        first_version,
        result.first_position..=result.last_position,
    );
    Ok(result)
}

/// Encodes envelopes and hands them to the WAL as one atomic batch.
fn write(
    state: &WriterState,
    stream: &StreamId,
    first_version: u64,
    events: Vec<EventData>,
    job: &mut SyncJob,
) -> Result<AppendResult> {
    let count = events.len() as u64;
    assert!(
        count > 0,
        "empty appends are refused before they reach the writer"
    );
    let timestamp_ms = state.clock.now_ms();
    let payloads: Vec<Vec<u8>> = events
        .into_iter()
        .enumerate()
        .map(|(index, data)| {
            Envelope::new(
                stream.clone(),
                first_version + index as u64,
                timestamp_ms,
                data,
            )
            .encode()
        })
        .collect();
    let receipt = state
        .wal
        .append_batch_with(&payloads, Durability::Relaxed)
        .map_err(|error| match state.adopt_wal_poison() {
            // The write failed and poisoned the WAL: the engine refuses writes from now on.
            Some(poison) => poison.error(),
            None => Error::from(error),
        })?;
    assert_eq!(
        receipt.last - receipt.first + 1,
        count,
        "one position per event"
    );
    for (offset, payload) in payloads.into_iter().enumerate() {
        job.records
            .push((receipt.first + offset as u64, Arc::new(payload)));
    }
    Ok(AppendResult {
        first_position: receipt.first,
        last_position: receipt.last,
        first_version,
        version: first_version + count - 1,
    })
}

fn system_append(
    state: &WriterState,
    event: &SystemEvent,
    job: &mut SyncJob,
) -> Result<AppendResult> {
    let mut streams = state
        .pending_streams
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let system_stream = system::system_stream();
    let version = streams.check(&system_stream, ExpectedVersion::Any)?;
    let result = write(state, &system_stream, version, vec![event.to_data()?], job)?;
    streams.record(
        &system_stream,
        version,
        result.first_position..=result.last_position,
    );
    Ok(result)
}

fn delete(
    state: &WriterState,
    stream: &StreamId,
    expected: ExpectedVersion,
    mode: DeleteMode,
    job: &mut SyncJob,
) -> Result<AppendResult> {
    let next_version = {
        let streams = state
            .pending_streams
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // A stream that never had an event is an error, not a silent tombstone (whatever
        // was expected of it), except when the caller says so: a hard delete expecting
        // `NoStream` reserves the name for good.
        let existed = streams.get(stream).is_some_and(|state| state.existed());
        let reserves = mode == DeleteMode::Hard && expected == ExpectedVersion::NoStream;
        if !existed && !reserves {
            return Err(Error::StreamNotFound {
                stream: stream.to_string(),
            });
        }
        streams.check(stream, expected)?
    };
    let event = match mode {
        DeleteMode::Hard => SystemEvent::StreamDeleted {
            stream: stream.to_string(),
        },
        DeleteMode::Soft => SystemEvent::StreamSoftDeleted {
            stream: stream.to_string(),
            before_version: next_version,
        },
    };
    let result = system_append(state, &event, job)?;
    let mut streams = state
        .pending_streams
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    match mode {
        DeleteMode::Hard => streams.delete(stream, result.last_position),
        DeleteMode::Soft => streams.soft_delete(stream, next_version, result.last_position),
    }
    Ok(result)
}

fn truncate(
    state: &WriterState,
    stream: &StreamId,
    before_version: u64,
    job: &mut SyncJob,
) -> Result<AppendResult> {
    let current = {
        let streams = state
            .pending_streams
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        streams.check(stream, ExpectedVersion::Any)?
    };
    if before_version > current {
        return Err(Error::LimitExceeded {
            what: "truncate before_version (past the stream's end)",
            limit: current,
            actual: before_version,
        });
    }
    let event = SystemEvent::StreamTruncated {
        stream: stream.to_string(),
        before_version,
    };
    let result = system_append(state, &event, job)?;
    state
        .pending_streams
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .truncate(stream, before_version, result.first_position);
    Ok(result)
}
