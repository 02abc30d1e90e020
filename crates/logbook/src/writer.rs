//! The writer: the one thread that owns appends to the WAL.
//!
//! Owns: taking requests in arrival order, checking expected versions against the stream table,
//! stamping versions and timestamps, and handing the encoded batch to the WAL's buffer. Must
//! never: wait for a sync (the syncer does, so appends keep landing while a group is synced),
//! write anything for a request that failed its checks, or write anything once the engine is
//! poisoned.

use crate::engine::Shared;
use crate::error::{Error, Result};
use crate::options::AppendDurability;
use crate::streams::ExpectedVersion;
use crate::syncer::{Ack, SyncJob};
use crate::system::{self, SystemEvent};
use logbook_projection::{Envelope, EventData, StreamId};
use logbook_wal::{Durability, SyncPolicy};
use std::sync::Arc;
use std::sync::mpsc::SyncSender;
use tokio::sync::{mpsc, oneshot};

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
    shared: Arc<Shared>,
    mut requests: mpsc::Receiver<Command>,
    jobs: SyncSender<SyncJob>,
) {
    let mut closing = None;
    while let Some(first) = requests.blocking_recv() {
        let _span = tracing::debug_span!("commit_batch").entered();
        let mut job = SyncJob::default();
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(command) = next.take() {
            if let Command::Close { reply } = command {
                closing = Some(reply);
                break;
            }
            handle(&shared, command, &mut job);
            taken += 1;
            if taken < WRITER_BATCH_MAX {
                next = requests.try_recv().ok();
            }
        }
        if !job.is_empty() && jobs.send(job).is_err() {
            break;
        }
        if closing.is_some() {
            break;
        }
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

fn waits_for_sync(shared: &Shared, durability: AppendDurability) -> bool {
    durability == AppendDurability::Policy
        && matches!(
            shared.wal.options().sync_policy,
            SyncPolicy::Always | SyncPolicy::GroupCommit { .. }
        )
}

fn handle(shared: &Shared, command: Command, job: &mut SyncJob) {
    if let Some(poison) = shared.poison() {
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
            let waits = waits_for_sync(shared, durability);
            let result = append(shared, &stream, expected, events, job);
            finish(result, waits, reply, job);
        }
        Command::Delete {
            stream,
            expected,
            reply,
        } => {
            let result = delete(shared, &stream, expected, job);
            finish(
                result,
                waits_for_sync(shared, AppendDurability::Policy),
                reply,
                job,
            );
        }
        Command::Truncate {
            stream,
            before_version,
            reply,
        } => {
            let result = truncate(shared, &stream, before_version, job);
            finish(
                result,
                waits_for_sync(shared, AppendDurability::Policy),
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
    shared: &Shared,
    stream: &StreamId,
    expected: ExpectedVersion,
    events: Vec<EventData>,
    job: &mut SyncJob,
) -> Result<AppendResult> {
    let mut streams = shared
        .streams
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let first_version = streams.check(stream, expected)?;
    let result = write(shared, stream, first_version, events, job)?;
    streams.record(
        stream,
        first_version,
        result.first_position..=result.last_position,
    );
    Ok(result)
}

/// Encodes envelopes and hands them to the WAL as one atomic batch.
fn write(
    shared: &Shared,
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
    let timestamp_ms = shared.clock.now_ms();
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
    let receipt = shared
        .wal
        .append_batch_with(&payloads, Durability::Relaxed)
        .map_err(|error| match shared.adopt_wal_poison() {
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

fn system_append(shared: &Shared, event: &SystemEvent, job: &mut SyncJob) -> Result<AppendResult> {
    let mut streams = shared
        .streams
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let system_stream = system::system_stream();
    let version = streams.check(&system_stream, ExpectedVersion::Any)?;
    let result = write(shared, &system_stream, version, vec![event.to_data()?], job)?;
    streams.record(
        &system_stream,
        version,
        result.first_position..=result.last_position,
    );
    Ok(result)
}

fn delete(
    shared: &Shared,
    stream: &StreamId,
    expected: ExpectedVersion,
    job: &mut SyncJob,
) -> Result<AppendResult> {
    shared
        .streams
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .check(stream, expected)?;
    let result = system_append(
        shared,
        &SystemEvent::StreamDeleted {
            stream: stream.to_string(),
        },
        job,
    )?;
    shared
        .streams
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .delete(stream, result.last_position);
    Ok(result)
}

fn truncate(
    shared: &Shared,
    stream: &StreamId,
    before_version: u64,
    job: &mut SyncJob,
) -> Result<AppendResult> {
    let current = {
        let streams = shared
            .streams
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
    let result = system_append(shared, &event, job)?;
    shared
        .streams
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .truncate(stream, before_version, result.first_position);
    Ok(result)
}
