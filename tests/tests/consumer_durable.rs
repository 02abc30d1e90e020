//! Durable named consumers (issue 15): a consumer resumes after its last checkpoint after a
//! reopen, on both backends, replaying at most what was acknowledged and not checkpointed;
//! filters deliver only matching events without decoding the others' payloads; a slow
//! consumer never blocks appends; `Stats` shows each consumer's position and lag; two handles
//! of one name conflict clearly (in one process at once, across replicas at the checkpoint).

use logbook::{
    Consumer, ConsumerFilter, ConsumerOptions, Error, Event, ExpectedVersion, Logbook,
    LogbookOptions, MemoryStorage, NewEvent, Projections, StreamId, codec,
};
use logbook_tests::backends::Home;
use logbook_tests::{CounterEvent, added, on_both_backends, test_options};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Checkpoints only when asked (or at close): the tests decide when one is written.
fn manual_checkpoints() -> ConsumerOptions {
    ConsumerOptions {
        checkpoint_every_events: u64::MAX,
        checkpoint_interval: Duration::from_secs(3600),
        ..ConsumerOptions::default()
    }
}

async fn next_position<E: Event>(consumer: &mut Consumer<E>) -> u64 {
    tokio::time::timeout(Duration::from_secs(30), consumer.next())
        .await
        .expect("consumer stalled")
        .expect("consumer ended")
        .expect("consumer error")
        .position
}

async fn append_counts(log: &Logbook<CounterEvent>, stream: &str, count: u64) -> Vec<u64> {
    let stream = StreamId::new(stream).unwrap();
    let mut positions = Vec::new();
    for amount in 0..count {
        let written = log
            .append(&stream, ExpectedVersion::Any, vec![added(amount, "")])
            .await
            .unwrap();
        positions.push(written.last_position);
    }
    positions
}

/// Consume, ack some, checkpoint, ack more without a checkpoint, drop; after a reopen the
/// consumer resumes right after the checkpoint: the acknowledged-but-not-checkpointed events
/// come again (at least once), nothing before them, nothing skipped.
async fn resume(home: Home) {
    let (log, _) = home.open(test_options(), Projections::new()).await;
    let first = append_counts(&log, "counter/a", 10).await;
    let mut consumer = log.consumer("billing", manual_checkpoints()).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..10 {
        seen.push(next_position(&mut consumer).await);
    }
    assert_eq!(
        seen, first,
        "every user event, in order, no checkpoint record"
    );
    consumer.ack(first[5]).await.unwrap();
    assert_eq!(consumer.checkpoint().await.unwrap(), first[5]);
    consumer.ack(first[7]).await.unwrap();
    assert_eq!(
        consumer.checkpointed(),
        first[5],
        "ack alone writes nothing"
    );
    let stats = log.stats();
    let billing = &stats.consumers[0];
    assert_eq!(billing.name, "billing");
    assert_eq!(billing.position, first[5]);
    assert_eq!(billing.acked, Some(first[7]));
    assert_eq!(
        billing.lag, 2,
        "the two user events after first[7]; its claim and checkpoint are no events"
    );
    drop(consumer); // a crash as far as the consumer knows: first[7] was never checkpointed
    // A snapshot past the checkpoint: the reopen replays nothing of the consumer's stream and
    // must still find its checkpoint.
    log.snapshot().await.unwrap();
    log.close().await.unwrap();

    let (log, _) = home.open(test_options(), Projections::new()).await;
    let restored = log.stats().consumers;
    assert_eq!(restored.len(), 1, "{restored:?}");
    assert_eq!(restored[0].position, first[5], "restored at open");
    let mut consumer = log.consumer("billing", manual_checkpoints()).await.unwrap();
    let later = append_counts(&log, "counter/b", 3).await;
    let mut resumed = Vec::new();
    for _ in 0..7 {
        resumed.push(next_position(&mut consumer).await);
    }
    let mut expected = first[6..].to_vec();
    expected.extend(&later);
    assert_eq!(
        resumed, expected,
        "resumes after the checkpoint: no gap, no extra"
    );
    consumer.ack(later[2]).await.unwrap();
    assert_eq!(consumer.close().await.unwrap(), later[2]);
    let stats = log.stats();
    let billing = &stats.consumers[0];
    assert_eq!((billing.position, billing.acked), (later[2], None));
    // Only the checkpoint record written by close lies above the position: no event.
    assert_eq!(stats.durable_position - later[2], 1);
    assert_eq!(billing.lag, 0);
    // Typed reads never see the checkpoint stream.
    let all = log.read_all(1, 1000).await.unwrap();
    assert_eq!(all.len(), 13);
    log.close().await.unwrap();
}

on_both_backends!(consumer_resumes_after_its_checkpoint, resume);

/// A second handle of a name open in this process is refused at once; after close, it opens.
async fn in_use(home: Home) {
    let (log, _) = home.open(test_options(), Projections::new()).await;
    append_counts(&log, "counter/a", 2).await;
    let consumer = log.consumer("mailer", manual_checkpoints()).await.unwrap();
    match log.consumer("mailer", manual_checkpoints()).await {
        Err(Error::ConsumerInUse { name }) => assert_eq!(name, "mailer"),
        Err(other) => panic!("expected ConsumerInUse, got {other}"),
        Ok(_) => panic!("expected ConsumerInUse, got a second handle"),
    }
    consumer.close().await.unwrap();
    let again = log.consumer("mailer", manual_checkpoints()).await.unwrap();
    again.close().await.unwrap();
    assert!(matches!(
        log.consumer("no spaces", manual_checkpoints()).await,
        Err(Error::InvalidRequest(_))
    ));
    log.close().await.unwrap();
}

on_both_backends!(a_second_handle_in_one_process_is_refused, in_use);

/// On PostgreSQL, another replica (a second `open_postgres` handle) opening the same consumer
/// takes it over: it resumes after the first one's checkpoint, and the first handle's next
/// checkpoint fails with `ConsumerConflict` instead of both working silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_replica_takes_over() {
    let home = Home::postgres();
    let (first_replica, _) = home.open(test_options(), Projections::new()).await;
    let positions = append_counts(&first_replica, "counter/a", 6).await;
    let mut first = first_replica
        .consumer("shipper", manual_checkpoints())
        .await
        .unwrap();
    for _ in 0..6 {
        next_position(&mut first).await;
    }
    first.ack(positions[3]).await.unwrap();
    first.checkpoint().await.unwrap();

    let (second_replica, _) = home
        .open::<CounterEvent>(test_options(), Projections::new())
        .await;
    let mut second = second_replica
        .consumer("shipper", manual_checkpoints())
        .await
        .unwrap();
    assert_eq!(next_position(&mut second).await, positions[4]);
    assert_eq!(next_position(&mut second).await, positions[5]);

    first.ack(positions[5]).await.unwrap();
    match first.checkpoint().await {
        Err(Error::ConsumerConflict { name, .. }) => assert_eq!(name, "shipper"),
        other => panic!("expected ConsumerConflict, got {other:?}"),
    }
    second.ack(positions[5]).await.unwrap();
    assert_eq!(second.close().await.unwrap(), positions[5]);
    drop(first);
    first_replica.close().await.unwrap();
    second_replica.close().await.unwrap();
}

/// Decodes of [`Probe`] payloads: a filtered-out event must never add one.
static PROBE_DECODES: AtomicU64 = AtomicU64::new(0);

/// An event that counts how often its payload is decoded.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
enum Probe {
    Kept(u64),
    Skipped(u64),
}

impl Event for Probe {
    fn event_type(&self) -> &'static str {
        match self {
            Probe::Kept(_) => "probe.kept",
            Probe::Skipped(_) => "probe.skipped",
        }
    }

    fn schema_version(&self) -> u16 {
        1
    }

    fn encode_payload(&self) -> logbook::EventResult<Vec<u8>> {
        codec::encode(self)
    }

    fn decode_payload(_: &str, _: u16, payload: &[u8]) -> logbook::EventResult<Self> {
        PROBE_DECODES.fetch_add(1, Ordering::SeqCst);
        codec::decode(payload, 1024)
    }
}

/// A filter on a stream pattern and event types delivers only matching events and decodes no
/// other payload; once every delivered event is acknowledged, the checkpoint covers the
/// filtered-out events after them too (lag 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_deliver_only_matching_events_without_decoding_the_rest() {
    let storage = Arc::new(MemoryStorage::new());
    let (log, _) = Logbook::<Probe>::open_with_storage(storage, "/log", test_options())
        .await
        .unwrap();
    let mut kept = Vec::new();
    for index in 0..60u64 {
        let (stream, event) = match index % 6 {
            0 => ("room/a", Probe::Kept(index)),
            1 => ("room/b", Probe::Skipped(index)),
            2 => ("job/a", Probe::Kept(index)),
            _ => ("job/b", Probe::Skipped(index)),
        };
        let written = log
            .append(
                &StreamId::new(stream).unwrap(),
                ExpectedVersion::Any,
                vec![NewEvent::new(event)],
            )
            .await
            .unwrap();
        if index % 6 == 0 {
            kept.push(written.last_position);
        }
    }
    let options = ConsumerOptions {
        filter: ConsumerFilter::streams("room/*")
            .unwrap()
            .with_event_types(["probe.kept"])
            .unwrap(),
        ..manual_checkpoints()
    };
    let mut consumer = log.consumer("rooms", options).await.unwrap();
    let before = PROBE_DECODES.load(Ordering::SeqCst);
    let mut delivered = Vec::new();
    for _ in 0..kept.len() {
        delivered.push(next_position(&mut consumer).await);
    }
    assert_eq!(delivered, kept);
    assert_eq!(
        PROBE_DECODES.load(Ordering::SeqCst) - before,
        kept.len() as u64,
        "only the delivered events' payloads were decoded"
    );
    // Ack the last delivered one and pass the rest of the log (filtered out): nothing more
    // comes, and the checkpoint covers the whole log read so far.
    consumer.ack(*kept.last().unwrap()).await.unwrap();
    let tail = tokio::time::timeout(Duration::from_millis(300), consumer.next()).await;
    assert!(tail.is_err(), "no further matching event: {tail:?}");
    let checkpointed = consumer.checkpoint().await.unwrap();
    assert_eq!(
        checkpointed, 60,
        "through the last user event (60), filtered out; the claim (61) does not count"
    );
    let stats = log.stats();
    assert_eq!(stats.consumers[0].position, 60);
    assert_eq!(
        stats.consumers[0].lag, 0,
        "its claim and its newest checkpoint are no events"
    );
    assert!(ConsumerFilter::streams("$consumer/*").is_err());
    consumer.close().await.unwrap();
    log.close().await.unwrap();
}

/// A consumer that does not read never blocks appends (its live buffer overflows and it
/// reads the log instead), its lag shows in `Stats`, and it then receives every event once,
/// in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_never_blocks_appends() {
    let options = LogbookOptions {
        subscription_buffer: 4,
        ..test_options()
    };
    let storage = Arc::new(MemoryStorage::new());
    let (log, _) = Logbook::<CounterEvent>::open_with_storage(storage, "/log", options)
        .await
        .unwrap();
    let mut consumer = log.consumer("slow", manual_checkpoints()).await.unwrap();
    let first = append_counts(&log, "counter/first", 1).await[0];
    assert_eq!(next_position(&mut consumer).await, first);
    consumer.ack(2).await.unwrap();
    let started = Instant::now();
    let positions = tokio::time::timeout(
        Duration::from_secs(60),
        append_counts(&log, "counter/busy", 2000),
    )
    .await
    .expect("appends were blocked by the idle consumer");
    let appended_in = started.elapsed();
    let stats = log.stats();
    let slow = &stats.consumers[0];
    assert_eq!(slow.acked, Some(2));
    assert_eq!(slow.lag, stats.durable_position - 2);
    assert!(slow.lag >= 2000, "{slow:?}");
    let mut received = Vec::new();
    for _ in 0..positions.len() {
        received.push(next_position(&mut consumer).await);
    }
    assert_eq!(received, positions);
    consumer.ack(*positions.last().unwrap()).await.unwrap();
    consumer.close().await.unwrap();
    log.close().await.unwrap();
    eprintln!("2000 appends beside an idle consumer took {appended_in:?}");
}

/// Checkpoints are batched: acknowledging every event one by one writes one checkpoint per
/// `checkpoint_every_events` positions, not one per event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_are_batched() {
    let storage = Arc::new(MemoryStorage::new());
    let (log, _) = Logbook::<CounterEvent>::open_with_storage(storage, "/log", test_options())
        .await
        .unwrap();
    let positions = append_counts(&log, "counter/a", 500).await;
    let options = ConsumerOptions {
        checkpoint_every_events: 100,
        checkpoint_interval: Duration::from_secs(3600),
        ..ConsumerOptions::default()
    };
    let mut consumer = log.consumer("batched", options).await.unwrap();
    for expected in &positions {
        let position = next_position(&mut consumer).await;
        assert_eq!(position, *expected);
        consumer.ack(position).await.unwrap();
    }
    consumer.close().await.unwrap();
    let checkpoint_stream = StreamId::new("$consumer/batched").unwrap();
    let version = log.stream_version(&checkpoint_stream).unwrap().unwrap();
    // The claim, one per 100 positions (5), none left for close: 6 records, versions 0..=5.
    assert_eq!(version, 5);
    log.close().await.unwrap();
}

/// The interval checkpoints an idle consumer's acknowledgement while `next` waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_interval_checkpoints_while_waiting() {
    let storage = Arc::new(MemoryStorage::new());
    let (log, _) = Logbook::<CounterEvent>::open_with_storage(storage, "/log", test_options())
        .await
        .unwrap();
    let positions = append_counts(&log, "counter/a", 3).await;
    let options = ConsumerOptions {
        checkpoint_every_events: u64::MAX,
        checkpoint_interval: Duration::from_millis(200),
        ..ConsumerOptions::default()
    };
    let mut consumer = log.consumer("idle", options).await.unwrap();
    for _ in 0..3 {
        next_position(&mut consumer).await;
    }
    consumer.ack(positions[2]).await.unwrap();
    let waited = tokio::time::timeout(Duration::from_millis(800), consumer.next()).await;
    assert!(waited.is_err(), "no event was appended");
    assert_eq!(consumer.checkpointed(), positions[2]);
    assert_eq!(log.stats().consumers[0].position, positions[2]);
    drop(consumer);
    log.close().await.unwrap();
}

/// The checkpoint stream stays small: every 64 checkpoints it is truncated behind the newest
/// one, compaction purges the rest, and the consumer still resumes after its checkpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_checkpoints_are_truncated_and_compacted_away() {
    let storage = Arc::new(MemoryStorage::new());
    let (log, _) =
        Logbook::<CounterEvent>::open_with_storage(storage.clone(), "/log", test_options())
            .await
            .unwrap();
    let positions = append_counts(&log, "counter/a", 130).await;
    let every_event = ConsumerOptions {
        checkpoint_every_events: 1,
        checkpoint_interval: Duration::from_secs(3600),
        ..ConsumerOptions::default()
    };
    let mut consumer = log.consumer("chatty", every_event.clone()).await.unwrap();
    for _ in 0..positions.len() {
        let position = next_position(&mut consumer).await;
        consumer.ack(position).await.unwrap();
    }
    assert_eq!(consumer.checkpointed(), 130);
    consumer.close().await.unwrap();
    log.compact().await.unwrap();
    let raw = log.read_all_raw(1, 10_000).await.unwrap();
    let versions: Vec<u64> = raw
        .iter()
        .filter(|raw| raw.envelope.stream().as_str() == "$consumer/chatty")
        .map(|raw| raw.envelope.stream_version())
        .collect();
    // The claim (0) and 130 checkpoints (1..=130); truncated below 128 after the 128th.
    assert_eq!(versions, vec![128, 129, 130]);
    log.close().await.unwrap();
    let (log, _) = Logbook::<CounterEvent>::open_with_storage(storage, "/log", test_options())
        .await
        .unwrap();
    assert_eq!(log.stats().consumers[0].position, 130);
    let mut consumer = log.consumer("chatty", every_event).await.unwrap();
    let later = append_counts(&log, "counter/a", 1).await;
    assert_eq!(next_position(&mut consumer).await, later[0]);
    drop(consumer);
    log.close().await.unwrap();
}

/// A checkpoint is nothing of the projections', yet each projection is as of it once applied:
/// a projection's applied position reaches the durable position live and after a reopen (a
/// health page comparing the two must not see a lag that never closes).
#[tokio::test]
async fn projections_are_as_of_a_checkpoint_they_skip() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = logbook::BuiltinLog::open(dir.path(), test_options())
        .await
        .unwrap();
    let room = StreamId::room("lobby").unwrap();
    let created =
        logbook::BuiltinEvent::from_json("room.created", serde_json::json!({"name": "Lobby"}))
            .unwrap();
    log.log()
        .append(&room, ExpectedVersion::NoStream, vec![created.into()])
        .await
        .unwrap();
    log.log().reset_consumer("mailer", 1).await.unwrap();
    let durable = log.log().sync().await.unwrap();
    assert!(durable >= 2, "the checkpoint follows the room event");
    log.log().wait_applied(durable).await.unwrap();
    assert_eq!(log.jobs().applied_position(), durable, "live");
    log.close().await.unwrap();

    let (log, _) = logbook::BuiltinLog::open(dir.path(), test_options())
        .await
        .unwrap();
    let durable = log.log().stats().durable_position;
    log.log().wait_applied(durable).await.unwrap();
    assert_eq!(log.jobs().applied_position(), durable, "after the replay");
    assert_eq!(log.rooms().applied_position(), durable, "after the replay");
    log.close().await.unwrap();
}

/// Lag counts events, not positions: an idle consumer that acknowledged everything shows 0
/// after its own checkpoint (and another consumer's), also after a reopen from a snapshot
/// that stands for those checkpoints; one behind by N events shows N, with and without a
/// handle open.
async fn lag_in_events(home: Home) {
    let (log, _) = home
        .open::<CounterEvent>(test_options(), Projections::new())
        .await;
    let first = append_counts(&log, "counter/keep", 5).await;
    let options = ConsumerOptions {
        filter: ConsumerFilter::streams("counter/keep").unwrap(),
        ..manual_checkpoints()
    };
    let mut consumer = log.consumer("idle", options).await.unwrap();
    for &position in &first {
        assert_eq!(next_position(&mut consumer).await, position);
    }
    consumer.ack(first[4]).await.unwrap();
    assert_eq!(consumer.checkpoint().await.unwrap(), first[4]);
    log.reset_consumer("other", first[4]).await.unwrap();
    let lag = |log: &Logbook<CounterEvent>| {
        let stats = log.stats();
        let idle = stats.consumers.iter().find(|c| c.name == "idle").unwrap();
        (stats.durable_position, idle.lag)
    };
    let (durable, idle_lag) = lag(&log);
    assert_eq!(
        durable,
        first[4] + 3,
        "its claim, its checkpoint and the other's are in the log"
    );
    assert_eq!(idle_lag, 0, "acknowledged every event");
    let behind = append_counts(&log, "counter/keep", 7).await;
    assert_eq!(lag(&log).1, 7, "behind by 7 matching events");
    consumer.close().await.unwrap();
    assert_eq!(lag(&log).1, 7, "without a handle: from its checkpoint");
    log.snapshot().await.unwrap();
    log.close().await.unwrap();

    let (log, _) = home
        .open::<CounterEvent>(test_options(), Projections::new())
        .await;
    assert_eq!(
        lag(&log).1,
        7,
        "after a reopen from a snapshot past the checkpoints"
    );
    let mut consumer = log.consumer("idle", manual_checkpoints()).await.unwrap();
    for &position in &behind {
        assert_eq!(next_position(&mut consumer).await, position);
    }
    consumer.ack(behind[6]).await.unwrap();
    consumer.checkpoint().await.unwrap();
    assert_eq!(lag(&log).1, 0, "caught up again");
    consumer.close().await.unwrap();
    log.close().await.unwrap();
}

on_both_backends!(lag_counts_events_not_positions, lag_in_events);

/// On PostgreSQL a consumer's filter is in the SQL: the rows it rejects are never fetched.
/// Proof: their payloads are overwritten with garbage in the database (a snapshot stands for
/// them, so the engine itself never reads them again); a read of any of them would fail its
/// envelope check. The consumer gets exactly the matching events across runs of rejected
/// ones longer than one statement's scan, its checkpoint passes over the rejected runs, and
/// a restart resumes with no gap and no duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filtered_consumer_on_postgres_never_fetches_rejected_rows() {
    let home = Home::postgres();
    let run = logbook_postgres::FILTER_SCAN_POSITIONS_MAX + 600;
    let (log, _) = home
        .open::<CounterEvent>(test_options(), Projections::new())
        .await;
    let mut kept = Vec::new();
    let mut last = 0;
    for skipped in [run, 100, run] {
        kept.push(append_counts(&log, "counter/keep", 1).await[0]);
        last = append_batches(&log, "counter/skip", skipped).await;
    }
    let taken = log.snapshot().await.unwrap();
    assert!(
        taken.position >= last,
        "{taken:?} stands for every appended row"
    );
    log.close().await.unwrap();
    let Home::Postgres(database) = &home else {
        unreachable!("a postgres home")
    };
    let changed = logbook_tests::pg::Cluster::shared().psql(
        database.name(),
        "WITH c AS (UPDATE logbook_events SET payload = '\\x00'::bytea \
         WHERE stream = 'counter/skip' RETURNING 1) SELECT count(*) FROM c",
    );
    assert_eq!(changed, (2 * run + 100).to_string());

    let options = || ConsumerOptions {
        filter: ConsumerFilter::streams("counter/keep").unwrap(),
        ..manual_checkpoints()
    };
    // First run: two events, a checkpoint at the second, then a crash (no close).
    let (log, _) = home
        .open::<CounterEvent>(test_options(), Projections::new())
        .await;
    let mut consumer = log.consumer("rare", options()).await.unwrap();
    assert_eq!(next_position(&mut consumer).await, kept[0]);
    assert_eq!(next_position(&mut consumer).await, kept[1]);
    consumer.ack(kept[1]).await.unwrap();
    assert_eq!(consumer.checkpoint().await.unwrap(), kept[1]);
    drop(consumer);
    log.close().await.unwrap();

    // Second run: resumes at the third event, then passes the last rejected run.
    let (log, _) = home
        .open::<CounterEvent>(test_options(), Projections::new())
        .await;
    let mut consumer = log.consumer("rare", options()).await.unwrap();
    assert_eq!(
        next_position(&mut consumer).await,
        kept[2],
        "no gap, no duplicate"
    );
    consumer.ack(kept[2]).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let more = tokio::time::timeout(Duration::from_millis(200), consumer.next()).await;
        assert!(more.is_err(), "no further matching event: {more:?}");
        if consumer.checkpoint().await.unwrap() == last {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the position never passed {last}"
        );
    }
    let stats = log.stats();
    let rare = stats.consumers.iter().find(|c| c.name == "rare").unwrap();
    assert_eq!((rare.position, rare.lag), (last, 0), "{rare:?}");
    consumer.close().await.unwrap();
    log.close().await.unwrap();

    // Third run: nothing more to deliver.
    let (log, _) = home
        .open::<CounterEvent>(test_options(), Projections::new())
        .await;
    let mut consumer = log.consumer("rare", options()).await.unwrap();
    assert_eq!(consumer.checkpointed(), last);
    let more = tokio::time::timeout(Duration::from_millis(500), consumer.next()).await;
    assert!(more.is_err(), "nothing after the checkpoint: {more:?}");
    consumer.close().await.unwrap();
    log.close().await.unwrap();
}

/// Appends `count` events to `stream` in batches of 1,000; returns the last position.
async fn append_batches(log: &Logbook<CounterEvent>, stream: &str, count: u64) -> u64 {
    let stream = StreamId::new(stream).unwrap();
    let mut last = 0;
    let mut left = count;
    while left > 0 {
        let batch = left.min(1000);
        let events = (0..batch).map(|amount| added(amount, "")).collect();
        last = log
            .append(&stream, ExpectedVersion::Any, events)
            .await
            .unwrap()
            .last_position;
        left -= batch;
    }
    last
}
