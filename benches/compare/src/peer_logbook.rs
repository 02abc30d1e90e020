//! The logbook peer: the engine as a tokio service embeds it.

use crate::BenchResult;
use crate::event::{BenchEvent, EventPool, READ_STREAM, STREAMS, check, stream_name, streams_of};
use crate::measure::{self, disk_bytes};
use crate::workload::{AppendOutcome, Plan, ReadOutcome};
use logbook::{
    Direction, ExpectedVersion, Logbook, LogbookOptions, NewEvent, RecordedEvent, StreamId,
    SyncPolicy,
};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;

/// Events per append call while filling the read and tail logs.
const LOAD_BATCH: usize = 1000;
/// Events per `read_stream` page.
pub const READ_PAGE: usize = 500;
/// Events of the tail query.
pub const TAIL: usize = 50;

type Log = Logbook<BenchEvent>;

fn check_recorded(event: &RecordedEvent<BenchEvent>, version: u64) -> BenchResult<()> {
    let BenchEvent::Posted { body } = &event.event;
    check(
        event.stream.as_str(),
        event.version,
        event.timestamp_ms,
        body,
        version,
    )
}

fn options(policy: SyncPolicy) -> LogbookOptions {
    let mut options = LogbookOptions::default();
    options.wal.sync_policy = policy;
    options
}

/// `writers` tasks append one event per call to their own streams until the deadline.
pub fn append(
    runtime: &Runtime,
    dir: &Path,
    policy: SyncPolicy,
    writers: usize,
    duration: Duration,
) -> BenchResult<AppendOutcome> {
    runtime.block_on(async {
        let (log, _) = Log::open(dir, options(policy)).await?;
        let streams = (0..STREAMS)
            .map(|index| StreamId::new(stream_name(index)))
            .collect::<Result<Vec<_>, _>>()?;
        let streams = Arc::new(streams);
        let pool = Arc::new(EventPool::new()?);
        let syncs_before = measure::wal_syncs();
        let started = Instant::now();
        let deadline = started + duration;
        let mut tasks = tokio::task::JoinSet::new();
        for writer in 0..writers {
            let (log, streams, pool) = (log.clone(), streams.clone(), pool.clone());
            tasks.spawn(async move {
                let mine = streams_of(writer, writers);
                let mut count = 0u64;
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let stream = &streams[mine[count as usize % mine.len()]];
                    let event = NewEvent::new(pool.event(count));
                    let appended = Instant::now();
                    log.append(stream, ExpectedVersion::Any, vec![event])
                        .await?;
                    if writers == 1 {
                        latencies.push(appended.elapsed());
                    }
                    count += 1;
                }
                Ok::<(u64, Vec<Duration>), logbook::Error>((count, latencies))
            });
        }
        let mut appends = 0;
        let mut latencies = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            let (count, mine) = joined??;
            appends += count;
            latencies.extend(mine);
        }
        let elapsed = started.elapsed();
        let syncs = measure::wal_syncs() - syncs_before;
        log.close().await?;
        Ok(AppendOutcome {
            appends,
            latencies,
            elapsed,
            syncs: Some(syncs),
            disk: disk_bytes(dir)?,
        })
    })
}

/// Fills a log with `(stream, events)` one after the other, in atomic batches of
/// [`LOAD_BATCH`].
pub fn load(runtime: &Runtime, dir: &Path, streams: &[(&str, u64)]) -> BenchResult<()> {
    runtime.block_on(async {
        let (log, _) = Log::open(dir, options(SyncPolicy::Never)).await?;
        let pool = EventPool::new()?;
        for &(name, events) in streams {
            let stream = StreamId::new(name)?;
            let mut written = 0u64;
            while written < events {
                let count = (events - written).min(LOAD_BATCH as u64);
                let batch = (written..written + count)
                    .map(|index| NewEvent::new(pool.event(index)))
                    .collect();
                log.append(&stream, ExpectedVersion::Any, batch).await?;
                written += count;
            }
        }
        log.close().await?;
        Ok(())
    })
}

/// Reads `stream` forward from version 0 in pages of [`READ_PAGE`], each event checked;
/// returns how many were read.
async fn read_forward(log: &Log, stream: &StreamId) -> BenchResult<u64> {
    let mut from = 0u64;
    loop {
        let page = log
            .read_stream(stream, from, Direction::Forward, READ_PAGE)
            .await?;
        if page.is_empty() {
            return Ok(from);
        }
        for event in &page {
            check_recorded(event, from)?;
            from += 1;
        }
    }
}

/// Reads the whole stream forward in pages of [`READ_PAGE`], then catches up a subscription
/// from position 1 over the whole log.
pub fn read(runtime: &Runtime, dir: &Path, events: u64) -> BenchResult<[ReadOutcome; 2]> {
    runtime.block_on(async {
        let (log, _) = Log::open(dir, LogbookOptions::default()).await?;
        let stream = StreamId::new(READ_STREAM)?;
        let before = logbook_alloc_count::counts();
        let started = Instant::now();
        let from = read_forward(&log, &stream).await?;
        let elapsed = started.elapsed();
        let allocations = logbook_alloc_count::counts().since(before).allocations;
        let read_stream =
            ReadOutcome::new(from, elapsed, events)?.with_allocations(allocations, from);
        let before = logbook_alloc_count::counts();
        let started = Instant::now();
        let mut subscription = log.subscribe(1);
        let mut delivered = 0u64;
        while delivered < events {
            let Some(event) = subscription.next().await else {
                break;
            };
            check_recorded(&event?, delivered)?;
            delivered += 1;
        }
        let elapsed = started.elapsed();
        let allocations = logbook_alloc_count::counts().since(before).allocations;
        let catch_up =
            ReadOutcome::new(delivered, elapsed, events)?.with_allocations(allocations, delivered);
        drop(subscription);
        log.close().await?;
        Ok([read_stream, catch_up])
    })
}

/// `read-time` (internal): reads the [`READ_STREAM`] stream of the log in `dir` forward in
/// pages of [`READ_PAGE`], `rounds` times in one open, printing each time and the median (to
/// compare two builds on one kept log, their runs alternated). A `dir` that does not exist is
/// first filled with `events` events of that stream.
pub fn read_time(runtime: &Runtime, dir: &Path, events: u64, rounds: usize) -> BenchResult<()> {
    if !dir.exists() {
        load(runtime, dir, &[(READ_STREAM, events)])?;
    }
    let mut rates = Vec::with_capacity(rounds);
    runtime.block_on(async {
        let (log, _) = Log::open(dir, LogbookOptions::default()).await?;
        let stream = StreamId::new(READ_STREAM)?;
        for _ in 0..rounds {
            let started = Instant::now();
            let from = read_forward(&log, &stream).await?;
            let rate = ReadOutcome::new(from, started.elapsed(), events)?.events_per_second;
            println!("read_stream {rate:.0} events/s");
            rates.push(rate);
        }
        log.close().await?;
        BenchResult::Ok(())
    })?;
    rates.sort_by(f64::total_cmp);
    let median = rates.get(rates.len() / 2).copied().unwrap_or(f64::NAN);
    println!("median: read_stream {median:.0} events/s");
    Ok(())
}

/// The newest [`TAIL`] events, repeated for about `plan.tail_budget`: (open + first query,
/// warm query) durations.
pub fn tail(runtime: &Runtime, dir: &Path, plan: &Plan) -> BenchResult<(Duration, Duration)> {
    runtime.block_on(async {
        let stream = StreamId::new(READ_STREAM)?;
        let started = Instant::now();
        let (log, _) = Log::open(dir, LogbookOptions::default()).await?;
        let first = log
            .read_stream(&stream, u64::MAX, Direction::Backward, TAIL)
            .await?;
        let cold = started.elapsed();
        assert_eq!(first.len(), TAIL, "tail length");
        check_recorded(&first[0], plan.tail_events - 1)?;
        let started = Instant::now();
        let mut queries = 0u32;
        while started.elapsed() < plan.tail_budget || queries < 3 {
            let events = log
                .read_stream(&stream, u64::MAX, Direction::Backward, TAIL)
                .await?;
            std::hint::black_box(events);
            queries += 1;
        }
        let warm = started.elapsed() / queries;
        log.close().await?;
        Ok((cold, warm))
    })
}
