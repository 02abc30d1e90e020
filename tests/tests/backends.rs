//! The same behaviour on both backends, from one test body each (issue 13): append and read,
//! expected versions, subscriptions, delete (hard and soft), truncate, snapshots and reopen,
//! projections and their hooks. Each body runs on a fresh temporary directory (the embedded
//! WAL) and on a fresh database of the binary's throwaway PostgreSQL cluster
//! (`logbook_tests::on_both_backends!`); nothing in a body knows which one it runs on.

use logbook::{
    Direction, Error, ExpectedVersion, Logbook, Observer, Projection, ProjectionHandle,
    Projections, RecordedEvent, StreamId,
};
use logbook_tests::backends::Home;
use logbook_tests::{CounterEvent, added, on_both_backends, test_options};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Each counter's total and notes, by stream: notes are bytes copied out of events, so a purge
/// must drop them.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct Totals {
    totals: BTreeMap<String, u64>,
    notes: BTreeMap<String, Vec<(u64, String)>>,
}

impl Projection for Totals {
    type Event = CounterEvent;

    fn id(&self) -> &'static str {
        "test.backend_totals"
    }

    fn state_version(&self) -> u16 {
        1
    }

    fn apply(&mut self, event: &RecordedEvent<CounterEvent>) {
        let stream = event.stream.to_string();
        match &event.event {
            CounterEvent::Added { amount, note } => {
                *self.totals.entry(stream.clone()).or_default() += amount;
                self.notes
                    .entry(stream)
                    .or_default()
                    .push((event.version, note.clone()));
            }
            CounterEvent::Reset => {
                self.totals.insert(stream, 0);
            }
        }
    }

    fn snapshot(&self) -> logbook::EventResult<Vec<u8>> {
        logbook::snapshot_state(self)
    }

    fn restore(&mut self, state_version: u16, bytes: &[u8]) -> logbook::EventResult<()> {
        *self = logbook::restore_state("test.backend_totals", 1, state_version, bytes)?;
        Ok(())
    }

    fn stream_deleted(&mut self, stream: &StreamId) -> bool {
        let notes = self.notes.remove(stream.as_str()).is_some();
        self.totals.remove(stream.as_str()).is_some() || notes
    }

    fn stream_truncated(&mut self, stream: &StreamId, before_version: u64) -> bool {
        let Some(notes) = self.notes.get_mut(stream.as_str()) else {
            return false;
        };
        let before = notes.len();
        notes.retain(|(version, _)| *version >= before_version);
        notes.len() != before
    }
}

/// What the hooks saw.
#[derive(Default)]
struct Seen {
    restored: u64,
    upserted: Vec<String>,
    deleted: Vec<String>,
}

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Seen>>);

impl Observer<Totals> for Recorder {
    fn restored(&self, _state: &Totals) {
        self.0.lock().unwrap().restored += 1;
    }

    fn upserted(&self, _state: &Totals, event: &RecordedEvent<CounterEvent>) {
        self.0
            .lock()
            .unwrap()
            .upserted
            .push(event.stream.to_string());
    }

    fn deleted(&self, _state: &Totals, stream: &StreamId) {
        self.0.lock().unwrap().deleted.push(stream.to_string());
    }
}

async fn open(home: &Home) -> (Logbook<CounterEvent>, ProjectionHandle<Totals>, Recorder) {
    let mut projections = Projections::new();
    let totals = projections.register(Totals::default());
    let recorder = Recorder::default();
    totals.observe(recorder.clone());
    let (log, _report) = home.open(test_options(), projections).await;
    (log, totals, recorder)
}

fn stream(name: &str) -> StreamId {
    StreamId::new(name).expect("stream id")
}

fn amounts(events: &[RecordedEvent<CounterEvent>]) -> Vec<u64> {
    events
        .iter()
        .map(|event| match &event.event {
            CounterEvent::Added { amount, .. } => *amount,
            CounterEvent::Reset => 0,
        })
        .collect()
}

/// Appends are read back forward and backward, with positions and versions; the projection
/// has applied an append when it returns (read your writes); a hook saw each event.
async fn append_and_read(home: Home) {
    let (log, totals, recorder) = open(&home).await;
    let a = stream("counter-a");
    let first = log
        .append(
            &a,
            ExpectedVersion::NoStream,
            vec![added(1, "one"), added(2, "two")],
        )
        .await
        .expect("append");
    assert_eq!((first.first_version, first.version), (0, 1));
    assert_eq!(first.last_position, first.first_position + 1);
    let second = log
        .append(&a, ExpectedVersion::Exact(1), vec![added(3, "three")])
        .await
        .expect("append");
    assert_eq!(second.version, 2);
    assert!(second.first_position > first.last_position);
    assert_eq!(totals.read().totals.get("counter-a"), Some(&6));
    let forward = log
        .read_stream(&a, 0, Direction::Forward, 10)
        .await
        .expect("read");
    assert_eq!(amounts(&forward), vec![1, 2, 3]);
    let backward = log
        .read_stream(&a, 2, Direction::Backward, 2)
        .await
        .expect("read");
    assert_eq!(amounts(&backward), vec![3, 2]);
    let all = log.read_all(0, 100).await.expect("read all");
    assert_eq!(amounts(&all), vec![1, 2, 3]);
    assert_eq!(log.stream_version(&a).expect("version"), Some(2));
    assert_eq!(recorder.0.lock().unwrap().upserted.len(), 3);
    assert!(
        recorder.0.lock().unwrap().restored >= 1,
        "restored fires once at open"
    );
    log.close().await.expect("close");
}
on_both_backends!(append_and_read_back, append_and_read);

/// A wrong expected version is `WrongExpectedVersion` with the actual version, and writes
/// nothing; `NoStream` and `StreamExists` mean what they say.
async fn expected_versions(home: Home) {
    let (log, _totals, _) = open(&home).await;
    let a = stream("counter-a");
    log.append(&a, ExpectedVersion::NoStream, vec![added(1, "")])
        .await
        .expect("append");
    for expected in [
        ExpectedVersion::NoStream,
        ExpectedVersion::Exact(5),
        ExpectedVersion::Exact(1),
    ] {
        match log.append(&a, expected, vec![added(9, "")]).await {
            Err(Error::WrongExpectedVersion { actual, .. }) => assert_eq!(actual, Some(0)),
            other => panic!("{expected:?}: expected a conflict, got {other:?}"),
        }
    }
    let missing = log
        .append(
            &stream("counter-none"),
            ExpectedVersion::StreamExists,
            vec![added(1, "")],
        )
        .await;
    assert!(
        matches!(
            missing,
            Err(Error::WrongExpectedVersion { actual: None, .. })
        ),
        "{missing:?}"
    );
    log.append(&a, ExpectedVersion::StreamExists, vec![added(2, "")])
        .await
        .expect("stream exists");
    assert_eq!(
        amounts(&log.read_all(0, 100).await.expect("read")),
        vec![1, 2]
    );
    log.close().await.expect("close");
}
on_both_backends!(expected_versions_are_checked, expected_versions);

/// A subscription catches up from a position, then follows live appends, in position order,
/// with no gap and no duplicate.
async fn subscribe(home: Home) {
    let (log, _totals, _) = open(&home).await;
    let a = stream("counter-a");
    for amount in 1..=3 {
        log.append(&a, ExpectedVersion::Any, vec![added(amount, "")])
            .await
            .expect("append");
    }
    let first = log.read_all(0, 1).await.expect("read")[0].position;
    let mut subscription = log.subscribe(first + 1);
    let writer = log.clone();
    let appends = tokio::spawn(async move {
        for amount in 4..=6 {
            writer
                .append(
                    &stream("counter-a"),
                    ExpectedVersion::Any,
                    vec![added(amount, "")],
                )
                .await
                .expect("live append");
        }
    });
    let mut seen = Vec::new();
    let mut last_position = first;
    while seen.len() < 5 {
        let event = tokio::time::timeout(Duration::from_secs(20), subscription.next())
            .await
            .expect("the subscription delivers within 20 s")
            .expect("not ended")
            .expect("event");
        assert!(
            event.position > last_position,
            "position order, no duplicate"
        );
        last_position = event.position;
        seen.extend(amounts(std::slice::from_ref(&event)));
    }
    assert_eq!(seen, vec![2, 3, 4, 5, 6]);
    appends.await.expect("appends");
    drop(subscription);
    log.close().await.expect("close");
}
on_both_backends!(subscriptions_catch_up_then_follow, subscribe);

/// A hard delete drops the entity from the projection (the `deleted` hook fires), refuses
/// reads and appends, and survives a reopen; deleting a stream that never existed is
/// `StreamNotFound`.
async fn hard_delete(home: Home) {
    let (log, totals, recorder) = open(&home).await;
    let a = stream("counter-a");
    let b = stream("counter-b");
    log.append(&a, ExpectedVersion::NoStream, vec![added(1, "secret")])
        .await
        .expect("append");
    log.append(&b, ExpectedVersion::NoStream, vec![added(2, "kept")])
        .await
        .expect("append");
    let missing = log
        .delete_stream(&stream("counter-none"), ExpectedVersion::Any)
        .await;
    assert!(
        matches!(missing, Err(Error::StreamNotFound { .. })),
        "{missing:?}"
    );
    log.delete_stream(&a, ExpectedVersion::Exact(0))
        .await
        .expect("delete");
    assert!(!totals.read().notes.contains_key("counter-a"));
    assert_eq!(
        recorder.0.lock().unwrap().deleted,
        vec!["counter-a".to_string()]
    );
    let read = log.read_stream(&a, 0, Direction::Forward, 10).await;
    assert!(matches!(read, Err(Error::StreamDeleted { .. })), "{read:?}");
    let append = log
        .append(&a, ExpectedVersion::Any, vec![added(1, "")])
        .await;
    assert!(
        matches!(append, Err(Error::StreamDeleted { .. })),
        "{append:?}"
    );
    log.close().await.expect("close");

    let (log, totals, _) = open(&home).await;
    assert!(!totals.read().totals.contains_key("counter-a"));
    assert_eq!(totals.read().totals.get("counter-b"), Some(&2));
    let append = log
        .append(&a, ExpectedVersion::Any, vec![added(1, "")])
        .await;
    assert!(
        matches!(append, Err(Error::StreamDeleted { .. })),
        "{append:?}"
    );
    log.close().await.expect("close");
}
on_both_backends!(hard_deletes_are_final, hard_delete);

/// A soft delete hides every version and lets the stream start again with `NoStream`, its
/// versions continuing.
async fn soft_delete(home: Home) {
    let (log, totals, _) = open(&home).await;
    let a = stream("counter-a");
    log.append(
        &a,
        ExpectedVersion::NoStream,
        vec![added(1, "x"), added(2, "y")],
    )
    .await
    .expect("append");
    log.soft_delete_stream(&a, ExpectedVersion::Exact(1))
        .await
        .expect("soft delete");
    assert!(!totals.read().notes.contains_key("counter-a"));
    let read = log
        .read_stream(&a, 0, Direction::Forward, 10)
        .await
        .expect("read");
    assert!(read.is_empty(), "every version is hidden");
    let again = log
        .append(&a, ExpectedVersion::NoStream, vec![added(5, "again")])
        .await
        .expect("a soft-deleted stream starts again");
    assert_eq!(again.version, 2, "versions continue");
    let read = log
        .read_stream(&a, 0, Direction::Forward, 10)
        .await
        .expect("read");
    assert_eq!(amounts(&read), vec![5]);
    log.close().await.expect("close");
}
on_both_backends!(soft_deletes_let_a_stream_start_again, soft_delete);

/// A truncation hides the versions below it from reads and from the projection's copies; the
/// stream goes on.
async fn truncate(home: Home) {
    let (log, totals, _) = open(&home).await;
    let a = stream("counter-a");
    let events = (1..=4).map(|n| added(n, &format!("note {n}"))).collect();
    log.append(&a, ExpectedVersion::NoStream, events)
        .await
        .expect("append");
    log.truncate_stream(&a, 2).await.expect("truncate");
    let read = log
        .read_stream(&a, 0, Direction::Forward, 10)
        .await
        .expect("read");
    assert_eq!(amounts(&read), vec![3, 4]);
    let notes: Vec<u64> = totals.read().notes["counter-a"]
        .iter()
        .map(|(version, _)| *version)
        .collect();
    assert_eq!(notes, vec![2, 3], "the copies of hidden events are dropped");
    let beyond = log.truncate_stream(&a, 9).await;
    assert!(beyond.is_err(), "past the stream's end: {beyond:?}");
    log.append(&a, ExpectedVersion::Exact(3), vec![added(5, "")])
        .await
        .expect("the stream goes on");
    log.close().await.expect("close");
}
on_both_backends!(truncations_hide_older_versions, truncate);

/// A snapshot, then more appends: a reopen restores the projection from the snapshot plus the
/// tail (the same state as before), and hooks see `restored`.
async fn snapshot_and_reopen(home: Home) {
    let (log, totals, _) = open(&home).await;
    let a = stream("counter-a");
    log.append(&a, ExpectedVersion::NoStream, vec![added(10, "before")])
        .await
        .expect("append");
    let snapshot = log.snapshot().await.expect("snapshot");
    assert!(snapshot.position > 0);
    log.append(&a, ExpectedVersion::Exact(0), vec![added(5, "after")])
        .await
        .expect("append");
    let before = totals.read().totals.clone();
    log.close().await.expect("close");

    let (log, totals, recorder) = open(&home).await;
    assert_eq!(totals.read().totals, before);
    assert_eq!(recorder.0.lock().unwrap().restored, 1);
    assert_eq!(log.stream_version(&a).expect("version"), Some(1));
    log.append(&a, ExpectedVersion::Exact(1), vec![added(1, "")])
        .await
        .expect("append after reopen");
    assert_eq!(totals.read().totals.get("counter-a"), Some(&16));
    log.close().await.expect("close");
}
on_both_backends!(snapshots_restore_at_reopen, snapshot_and_reopen);
