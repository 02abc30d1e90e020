//! Catch-up subscriptions: from the start, the middle and the head; a slow subscriber with a
//! tiny live buffer receives every event exactly once, in order; catch-up across chunks has no
//! gap or repeat, even when `next()` futures are dropped mid-read.

use logbook::{ExpectedVersion, Logbook, LogbookOptions, MemoryStorage, StreamId};
use logbook_tests::{CounterEvent, added, test_options};
use std::sync::Arc;
use std::time::Duration;

async fn open(options: LogbookOptions) -> Logbook<CounterEvent> {
    let storage = Arc::new(MemoryStorage::new());
    Logbook::open_with_storage(storage, "/log", options)
        .await
        .unwrap()
        .0
}

async fn collect(subscription: &mut logbook::Subscription<CounterEvent>, count: usize) -> Vec<u64> {
    let mut positions = Vec::new();
    while positions.len() < count {
        let event = tokio::time::timeout(Duration::from_secs(20), subscription.next())
            .await
            .expect("subscription stalled")
            .expect("subscription ended")
            .expect("subscription error");
        positions.push(event.position);
    }
    positions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_start_middle_and_head() {
    let log = open(test_options()).await;
    let stream = StreamId::new("counter/sub").unwrap();
    for amount in 0..50 {
        log.append(&stream, ExpectedVersion::Any, vec![added(amount, "")])
            .await
            .unwrap();
    }
    let mut from_start = log.subscribe(0);
    let mut from_middle = log.subscribe(26);
    let mut from_head = log.subscribe(51);
    for amount in 50..80 {
        log.append(&stream, ExpectedVersion::Any, vec![added(amount, "")])
            .await
            .unwrap();
    }
    assert_eq!(
        collect(&mut from_start, 80).await,
        (1..=80).collect::<Vec<_>>()
    );
    assert_eq!(
        collect(&mut from_middle, 55).await,
        (26..=80).collect::<Vec<_>>()
    );
    assert_eq!(
        collect(&mut from_head, 30).await,
        (51..=80).collect::<Vec<_>>()
    );
    let stats = log.stats();
    assert_eq!(stats.subscribers.len(), 3);
    assert!(
        stats
            .subscribers
            .iter()
            .all(|subscriber| subscriber.lag == 0),
        "{stats:?}"
    );
    drop((from_start, from_middle, from_head));
    assert!(log.stats().subscribers.is_empty());
    log.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_subscriber_with_tiny_buffer_gets_everything_once_in_order() {
    let mut options = test_options();
    options.subscription_buffer = 1;
    let log = open(options).await;
    let total = 3_000u64;
    let writers: Vec<_> = (0..4)
        .map(|writer| {
            let log = log.clone();
            tokio::spawn(async move {
                let stream = StreamId::new(format!("counter/w{writer}")).unwrap();
                for amount in 0..total / 4 {
                    log.append(&stream, ExpectedVersion::Any, vec![added(amount, "slow")])
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    let mut subscription = log.subscribe(1);
    let mut positions = Vec::new();
    while positions.len() < total as usize {
        let event = tokio::time::timeout(Duration::from_secs(30), subscription.next())
            .await
            .expect("stalled")
            .expect("ended")
            .expect("error");
        positions.push(event.position);
        if positions.len() % 100 == 0 {
            // Slower than the writers: the live buffer overflows and the subscriber must fall
            // back to reading the log.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    for writer in writers {
        writer.await.unwrap();
    }
    assert_eq!(positions, (1..=total).collect::<Vec<_>>());
    log.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_only_see_durable_events_and_relaxed_ones_arrive() {
    let log = open(test_options()).await;
    let stream = StreamId::new("counter/relaxed").unwrap();
    let mut subscription = log.subscribe(1);
    let result = log
        .append_with(
            &stream,
            ExpectedVersion::Any,
            vec![added(1, "tick")],
            logbook::AppendDurability::Relaxed,
        )
        .await
        .unwrap();
    // A relaxed append is made durable by the syncer shortly after, then delivered.
    let event = tokio::time::timeout(Duration::from_secs(5), subscription.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(event.position, result.first_position);
    assert!(log.stats().durable_position >= result.last_position);
    log.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_is_a_stream_and_ends_after_close() {
    use futures_util::StreamExt;
    let log = open(test_options()).await;
    let stream = StreamId::new("counter/stream").unwrap();
    for amount in 0..5 {
        log.append(&stream, ExpectedVersion::Any, vec![added(amount, "")])
            .await
            .unwrap();
    }
    let events = log.subscribe(1).into_stream();
    let handle = log.clone();
    handle.close().await.unwrap();
    let positions: Vec<u64> = tokio::time::timeout(
        Duration::from_secs(5),
        events.map(|event| event.unwrap().position).collect(),
    )
    .await
    .unwrap();
    assert_eq!(positions, vec![1, 2, 3, 4, 5]);
}

/// Catch-up across many chunks (1,024 records each), with appends landing during the catch-up
/// and `next()` futures dropped mid-read (a timeout that fires): every event still arrives
/// exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_across_chunks_with_dropped_reads_has_no_gap_or_repeat() {
    let log = open(test_options()).await;
    let stream = StreamId::new("counter/ahead").unwrap();
    let first = 5_000u64;
    for chunk in 0..first / 500 {
        let events = (0..500)
            .map(|amount| added(chunk * 500 + amount, "ahead"))
            .collect();
        log.append(&stream, ExpectedVersion::Any, events)
            .await
            .unwrap();
    }
    let more = 3_000u64;
    let appender = {
        let log = log.clone();
        let stream = stream.clone();
        tokio::spawn(async move {
            for amount in 0..more {
                log.append(&stream, ExpectedVersion::Any, vec![added(amount, "late")])
                    .await
                    .unwrap();
            }
        })
    };
    let mut subscription = log.subscribe(1);
    let mut positions = Vec::new();
    let mut dropped = 0u32;
    let mut cut_last = false;
    while positions.len() < (first + more) as usize {
        if !cut_last {
            // One poll: an event ready at once is taken; a call that has to wait (a chunk
            // read on the blocking pool, or the live wait) is dropped there.
            let polled = tokio::select! {
                biased;
                event = subscription.next() => Some(event),
                () = std::future::ready(()) => None,
            };
            match polled {
                Some(event) => positions.push(event.expect("ended").expect("error").position),
                None => {
                    dropped += 1;
                    cut_last = true;
                }
            }
            continue;
        }
        // After a cut, a patient call, so the subscription moves on.
        cut_last = false;
        let event = tokio::time::timeout(Duration::from_secs(20), subscription.next())
            .await
            .unwrap_or_else(|_| panic!("subscription stalled at {}", positions.len()))
            .expect("ended")
            .expect("error");
        positions.push(event.position);
    }
    appender.await.unwrap();
    assert_eq!(positions, (1..=first + more).collect::<Vec<_>>());
    // At least one cut per chunk of the first 5,000 (each needs a read).
    assert!(dropped >= 4, "reads were cut short: {dropped}");
    log.close().await.unwrap();
}
