//! Poisoning at engine level: a durable event the projections cannot apply, or a failed WAL
//! fsync, is never acknowledged as success; the engine then refuses every later append, delete,
//! truncation, sync, snapshot and read-your-writes wait with `Error::Poisoned` naming the
//! position and cause, `Stats::poisoned` says so, reads of the log keep working, and a reopen
//! replays the log and carries on.

use logbook::{
    Error, Event, ExpectedVersion, Logbook, LogbookOptions, MemoryStorage, NewEvent, Projection,
    Projections, RecordedEvent, StreamId, SyncPolicy,
};
use logbook_projection::codec;
use logbook_tests::MEMORY_DIR;
use logbook_wal::{FaultKind, FaultOp};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

/// How many more times `Tally::decode_payload` reads a `tally.pill` (then it never does).
static PILL_READS_LEFT: AtomicU32 = AtomicU32::new(0);

/// A service's event type with a bug: `Pill` encodes fine but decodes only
/// [`PILL_READS_LEFT`] times, the way a `decode_payload` that changed between the append and the
/// read (a new version of the service) behaves. `append` decodes every event back before it
/// writes it, so a pill that never decodes is refused there; one read left lets it pass that
/// check and be written, and then the projections cannot decode it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tally {
    Added(u64),
    Pill,
}

impl Event for Tally {
    fn event_type(&self) -> &'static str {
        match self {
            Tally::Added(_) => "tally.added",
            Tally::Pill => "tally.pill",
        }
    }

    fn schema_version(&self) -> u16 {
        1
    }

    fn encode_payload(&self) -> logbook_projection::Result<Vec<u8>> {
        match self {
            Tally::Added(amount) => codec::encode(amount),
            Tally::Pill => Ok(Vec::new()),
        }
    }

    fn decode_payload(
        event_type: &str,
        schema_version: u16,
        payload: &[u8],
    ) -> logbook_projection::Result<Self> {
        match event_type {
            "tally.added" => Ok(Tally::Added(codec::decode(payload, 64)?)),
            "tally.pill"
                if PILL_READS_LEFT
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                        left.checked_sub(1)
                    })
                    .is_ok() =>
            {
                Ok(Tally::Pill)
            }
            _ => Err(logbook_projection::Error::UnknownEventType {
                event_type: event_type.to_owned(),
                schema_version: Some(schema_version),
            }),
        }
    }
}

/// The sum of every `Added`.
#[derive(Debug, Clone, Default)]
struct Sum {
    total: u64,
    events: u64,
}

impl Projection for Sum {
    type Event = Tally;

    fn id(&self) -> &'static str {
        "tests.sum"
    }

    fn state_version(&self) -> u16 {
        1
    }

    fn apply(&mut self, event: &RecordedEvent<Tally>) {
        if let Tally::Added(amount) = event.event {
            self.total += amount;
        }
        self.events += 1;
    }

    fn snapshot(&self) -> logbook_projection::Result<Vec<u8>> {
        logbook_projection::projection::snapshot_state(&(self.total, self.events))
    }

    fn restore(&mut self, state_version: u16, bytes: &[u8]) -> logbook_projection::Result<()> {
        (self.total, self.events) =
            logbook_projection::projection::restore_state(self.id(), 1, state_version, bytes)?;
        Ok(())
    }

    fn stream_deleted(&mut self, _stream: &StreamId) -> bool {
        false // totals over every stream: nothing kept per stream
    }

    fn stream_truncated(&mut self, _stream: &StreamId, _before_version: u64) -> bool {
        false
    }
}

fn options() -> LogbookOptions {
    let mut options = LogbookOptions::default();
    options.wal.sync_policy = SyncPolicy::Always;
    options
}

async fn open(storage: &Arc<MemoryStorage>) -> (Logbook<Tally>, logbook::ProjectionHandle<Sum>) {
    let mut projections = Projections::new();
    let sum = projections.register(Sum::default());
    let (log, _) =
        Logbook::open_with_projections(storage.clone(), MEMORY_DIR, options(), projections)
            .await
            .unwrap();
    (log, sum)
}

async fn add(log: &Logbook<Tally>, stream: &StreamId, amount: u64) -> logbook::Result<u64> {
    let written = log
        .append(
            stream,
            ExpectedVersion::Any,
            vec![NewEvent::new(Tally::Added(amount))],
        )
        .await?;
    Ok(written.last_position)
}

/// Every write path and read-your-writes wait fails with `Poisoned` at `position`.
async fn assert_refuses_writes(log: &Logbook<Tally>, stream: &StreamId, position: u64) {
    let is_poison =
        |error: &Error| matches!(error, Error::Poisoned { position: at, .. } if *at == position);
    let error = add(log, stream, 1).await.unwrap_err();
    assert!(is_poison(&error), "append: {error:?}");
    let relaxed = log
        .append_with(
            stream,
            ExpectedVersion::Any,
            vec![NewEvent::new(Tally::Added(1))],
            logbook::AppendDurability::Relaxed,
        )
        .await
        .unwrap_err();
    assert!(is_poison(&relaxed), "relaxed append: {relaxed:?}");
    let error = log
        .delete_stream(stream, ExpectedVersion::Any)
        .await
        .unwrap_err();
    assert!(is_poison(&error), "delete: {error:?}");
    let error = log.truncate_stream(stream, 1).await.unwrap_err();
    assert!(is_poison(&error), "truncate: {error:?}");
    let error = log.sync().await.unwrap_err();
    assert!(is_poison(&error), "sync: {error:?}");
    let error = log.snapshot().await.unwrap_err();
    assert!(is_poison(&error), "snapshot: {error:?}");
    let error = log.compact().await.unwrap_err();
    assert!(is_poison(&error), "compact: {error:?}");
    let error = log.wait_applied(position).await.unwrap_err();
    assert!(is_poison(&error), "wait_applied: {error:?}");
    let poison = log.stats().poisoned.expect("stats say poisoned");
    assert_eq!(poison.position, position);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_the_projections_cannot_decode_is_not_acknowledged_and_poisons_the_log() {
    let storage = Arc::new(MemoryStorage::new());
    let (log, sum) = open(&storage).await;
    let stream = StreamId::new("tally/a").unwrap();
    for amount in [1, 2, 3] {
        add(&log, &stream, amount).await.unwrap();
    }
    assert!(log.stats().poisoned.is_none());

    // A pill that never decodes is refused at append, before anything is written.
    let refused = log
        .append(
            &stream,
            ExpectedVersion::Any,
            vec![NewEvent::new(Tally::Pill)],
        )
        .await;
    assert!(
        matches!(
            refused,
            Err(Error::Event(logbook_projection::Error::Unreadable { .. }))
        ),
        "{refused:?}"
    );
    assert_eq!(log.stream_version(&stream).unwrap(), Some(2));
    assert!(log.stats().poisoned.is_none());

    // One that decodes once passes that check and is written: the projections cannot apply it.
    PILL_READS_LEFT.store(1, Ordering::SeqCst);
    let pill = log
        .append(
            &stream,
            ExpectedVersion::Any,
            vec![NewEvent::new(Tally::Pill)],
        )
        .await;
    // Before: acknowledged as applied (the failure was only logged).
    let Err(error) = pill else {
        panic!("an event the projections could not apply was acknowledged: {pill:?}");
    };
    let Error::Poisoned { position, reason } = &error else {
        panic!("expected Poisoned, got {error:?}");
    };
    let position = *position;
    assert_eq!(position, 4, "the failed event is named");
    assert!(
        reason.contains("tally.pill"),
        "the cause is named: {reason}"
    );
    assert_refuses_writes(&log, &stream, position).await;
    assert!(log.stats().poisoned.unwrap().reason.contains("projections"));

    // The projections hold exactly the events before the failed one.
    assert_eq!((sum.read().total, sum.read().events), (6, 3));
    assert_eq!(sum.applied_position(), 3);
    log.wait_applied(3).await.unwrap();
    // The log itself is readable: the failed event is durable.
    let raws = log.read_all_raw(1, 10).await.unwrap();
    assert_eq!(raws.len(), 4);
    assert_eq!(raws[3].envelope.event_type(), "tally.pill");
    assert_eq!(
        log.stream_version(&stream).unwrap(),
        Some(3),
        "four events, versions 0 to 3"
    );
    let _ = log.close().await;

    // A reopen replays: an event the type cannot decode is skipped and counted, the same way
    // on every replay, and the log carries on.
    let (log, sum) = open(&storage).await;
    assert_eq!(log.undecodable_events(), 1);
    assert_eq!(sum.read().total, 6);
    assert!(log.stats().poisoned.is_none());
    add(&log, &stream, 10).await.unwrap();
    assert_eq!(sum.read().total, 16);
    log.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fsync_fails_the_append_and_poisons_the_log() {
    let storage = Arc::new(MemoryStorage::new());
    let (log, sum) = open(&storage).await;
    let stream = StreamId::new("tally/a").unwrap();
    for amount in [1, 2] {
        add(&log, &stream, amount).await.unwrap();
    }

    storage.inject_fault(FaultOp::Sync, 0, FaultKind::Eio);
    let error = add(&log, &stream, 100).await.unwrap_err();
    storage.clear_faults();
    let Error::Poisoned { position, reason } = &error else {
        panic!("expected Poisoned, got {error:?}");
    };
    let position = *position;
    assert_eq!(position, 3, "the first position that is not durable");
    assert!(reason.contains("sync"), "the cause is named: {reason}");
    // The fault is gone, yet nothing is retried: every later write is refused.
    assert_refuses_writes(&log, &stream, position).await;
    assert_eq!(sum.read().total, 3, "the failed event was never applied");

    // Reads of what was durable keep working.
    let raws = log.read_all_raw(1, 10).await.unwrap();
    assert_eq!(raws.len(), 2);
    let _ = log.close().await;

    let (log, sum) = open(&storage).await;
    assert!(log.stats().poisoned.is_none());
    assert!(sum.read().total == 3 || sum.read().total == 103);
    add(&log, &stream, 10).await.unwrap();
    log.close().await.unwrap();
}
