//! The generic command path for a service's own events (`Logbook::execute`, issue 12 item 6):
//! a decision runs on durable state that includes the stream's newest event, its events are
//! appended with the version that state had, and a concurrent change makes it decide again
//! instead of slipping past its check. Before, only `BuiltinLog::execute` did this, for the
//! built-in model; a custom-event service had to hand-write the loop.

use logbook::{
    CommandError, ExpectedVersion, Logbook, Projection, Projections, RecordedEvent, StreamId,
};
use logbook_tests::{CounterEvent, added, test_options};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Each counter's total, by stream.
#[derive(Debug, Clone, Default)]
struct Totals(BTreeMap<String, u64>);

impl Projection for Totals {
    type Event = CounterEvent;

    fn id(&self) -> &'static str {
        "test.totals"
    }

    fn state_version(&self) -> u16 {
        1
    }

    fn apply(&mut self, event: &RecordedEvent<CounterEvent>) {
        let total = self.0.entry(event.stream.to_string()).or_default();
        match &event.event {
            CounterEvent::Added { amount, .. } => *total += amount,
            CounterEvent::Reset => *total = 0,
        }
    }

    fn snapshot(&self) -> logbook::EventResult<Vec<u8>> {
        logbook::snapshot_state(&self.0)
    }

    fn restore(&mut self, state_version: u16, bytes: &[u8]) -> logbook::EventResult<()> {
        self.0 = logbook::restore_state("test.totals", 1, state_version, bytes)?;
        Ok(())
    }

    fn stream_deleted(&mut self, stream: &StreamId) -> bool {
        self.0.remove(stream.as_str()).is_some()
    }

    fn stream_truncated(&mut self, _stream: &StreamId, _before_version: u64) -> bool {
        false
    }
}

fn total(state: &Totals, stream: &StreamId) -> u64 {
    state.0.get(stream.as_str()).copied().unwrap_or(0)
}

async fn open(dir: &std::path::Path) -> (Logbook<CounterEvent>, logbook::ProjectionHandle<Totals>) {
    let mut projections = Projections::new();
    let totals = projections.register(Totals::default());
    let (log, _) = Logbook::open_dir_with_projections(dir, test_options(), projections)
        .await
        .expect("open");
    (log, totals)
}

/// Many tasks race "add 1 unless the total reached the cap" on one stream. Every accepted
/// command is in the total (no lost update), and the cap holds: each decision was checked
/// against the state its append followed. With a plain read-then-`Any` append, the racing
/// tasks overshoot the cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_commands_never_lose_an_update_nor_pass_a_check() {
    const TASKS: u64 = 8;
    const COMMANDS_PER_TASK: u64 = 25;
    const CAP: u64 = 150;
    let dir = tempfile::tempdir().expect("temp dir");
    let (log, totals) = open(dir.path()).await;
    let log = Arc::new(log);
    let stream = StreamId::new("counter-race").expect("stream id");
    let mut workers = Vec::new();
    for _ in 0..TASKS {
        let (log, totals, stream) = (log.clone(), totals.clone(), stream.clone());
        workers.push(tokio::spawn(async move {
            let (mut accepted, mut refused, mut gave_up) = (0u64, 0u64, 0u64);
            for _ in 0..COMMANDS_PER_TASK {
                let result = log
                    .execute(&totals, &stream, |state: &Totals| {
                        if total(state, &stream) >= CAP {
                            Err("the counter is full")
                        } else {
                            Ok(vec![CounterEvent::Added {
                                amount: 1,
                                note: String::new(),
                            }])
                        }
                    })
                    .await;
                match result {
                    Ok(Some(_)) => accepted += 1,
                    Ok(None) => panic!("the decision never returns an empty batch"),
                    Err(CommandError::Rejected(reason)) => {
                        assert_eq!(reason, "the counter is full");
                        refused += 1;
                    }
                    Err(CommandError::Log(logbook::Error::WrongExpectedVersion { .. })) => {
                        gave_up += 1;
                    }
                    Err(CommandError::Log(other)) => panic!("log error: {other}"),
                }
            }
            (accepted, refused, gave_up)
        }));
    }
    let (mut accepted, mut refused, mut gave_up) = (0, 0, 0);
    for worker in workers {
        let (a, r, g) = worker.await.expect("worker");
        accepted += a;
        refused += r;
        gave_up += g;
    }
    assert_eq!(accepted + refused + gave_up, TASKS * COMMANDS_PER_TASK);
    let state_total = total(&totals.read(), &stream);
    assert_eq!(
        state_total, accepted,
        "every accepted command is counted once"
    );
    assert!(state_total <= CAP, "the cap held: {state_total}");
    assert!(
        refused > 0,
        "the cap was reached, so some commands were refused"
    );
    let version = log.stream_version(&stream).expect("version");
    assert_eq!(
        version,
        Some(accepted - 1),
        "one event per accepted command"
    );
    // The log agrees with the projection after a reopen (replay).
    let log = Arc::into_inner(log).expect("the workers are done");
    log.close().await.expect("close");
    let (log, totals) = open(dir.path()).await;
    assert_eq!(total(&totals.read(), &stream), accepted);
    log.close().await.expect("close");
}

/// A decision sees the stream's newest event even right after a plain append (read your
/// writes), a refusal writes nothing, and an empty decision appends nothing.
#[tokio::test]
async fn decisions_see_the_newest_event_and_refusals_write_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (log, totals) = open(dir.path()).await;
    let stream = StreamId::new("counter-one").expect("stream id");

    let created = log
        .execute(&totals, &stream, |state: &Totals| {
            assert_eq!(total(state, &stream), 0);
            Ok::<_, String>(vec![CounterEvent::Added {
                amount: 5,
                note: String::new(),
            }])
        })
        .await
        .expect("first command creates the stream")
        .expect("appended");
    assert_eq!(created.version, 0);

    log.append(&stream, ExpectedVersion::Exact(0), vec![added(2, "direct")])
        .await
        .expect("append");
    let mut seen = None;
    let refused = log
        .execute(&totals, &stream, |state: &Totals| {
            seen = Some(total(state, &stream));
            Err::<Vec<CounterEvent>, _>("no")
        })
        .await;
    assert_eq!(seen, Some(7), "the decision saw the append just before it");
    assert!(matches!(refused, Err(CommandError::Rejected("no"))));

    let nothing = log
        .execute(&totals, &stream, |_: &Totals| Ok::<_, String>(Vec::new()))
        .await
        .expect("an empty decision");
    assert!(nothing.is_none());
    assert_eq!(log.stream_version(&stream).expect("version"), Some(1));
    assert_eq!(log.read_all(0, 100).await.expect("read").len(), 2);
    log.close().await.expect("close");
}

/// A command on a deleted stream fails with the log's error, not a retry loop.
#[tokio::test]
async fn a_command_on_a_deleted_stream_fails_at_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (log, totals) = open(dir.path()).await;
    let stream = StreamId::new("counter-gone").expect("stream id");
    log.append(&stream, ExpectedVersion::NoStream, vec![added(1, "x")])
        .await
        .expect("append");
    log.delete_stream(&stream, ExpectedVersion::Exact(0))
        .await
        .expect("delete");
    let mut calls = 0;
    let result = log
        .execute(&totals, &stream, |_: &Totals| {
            calls += 1;
            Ok::<_, String>(vec![CounterEvent::Reset])
        })
        .await;
    assert!(
        matches!(
            result,
            Err(CommandError::Log(logbook::Error::StreamDeleted { .. }))
        ),
        "{result:?}"
    );
    assert_eq!(calls, 1, "no retry on anything but a version conflict");
    log.close().await.expect("close");
}

/// A stream that changes under every decision: `execute` decides exactly
/// `EXECUTE_ATTEMPTS_MAX` times, then returns the last version conflict with the actual
/// version, and writes none of the command's events (only the interfering appends are there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_keeps_changing_gives_up_after_the_attempt_limit() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (log, totals) = open(dir.path()).await;
    let stream = StreamId::new("counter-busy").expect("stream id");
    let interferer = log.clone();
    let mut decisions = 0u64;
    let result = log
        .execute(&totals, &stream, |_: &Totals| {
            decisions += 1;
            // Another writer lands an event between this decision and its append.
            let appended = tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(interferer.append(
                    &stream,
                    ExpectedVersion::Any,
                    vec![added(1, "interfering")],
                ))
            });
            appended.expect("interfering append");
            Ok::<_, String>(vec![CounterEvent::Added {
                amount: 100,
                note: "the command".into(),
            }])
        })
        .await;
    drop(interferer);
    let attempts = u64::from(logbook::EXECUTE_ATTEMPTS_MAX);
    assert_eq!(decisions, attempts, "one decision per attempt, no more");
    match result {
        Err(CommandError::Log(logbook::Error::WrongExpectedVersion { actual, .. })) => {
            assert_eq!(
                actual,
                Some(attempts - 1),
                "the conflict names the actual version"
            );
        }
        other => panic!("expected the last version conflict, got {other:?}"),
    }
    let events = log
        .read_stream(&stream, 0, logbook::Direction::Forward, 100)
        .await
        .expect("read");
    assert_eq!(
        events.len() as u64,
        attempts,
        "only the interfering appends"
    );
    assert_eq!(
        total(&totals.read(), &stream),
        attempts,
        "no event of the command applied"
    );
    log.close().await.expect("close");
}
