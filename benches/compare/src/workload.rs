//! The workloads, each run round after round with every peer once per round, in an order that
//! rotates every round (A B C D, then B C D A, ...), so machine drift and order effects cancel
//! out in the medians.

use crate::event::{OTHER_STREAM, READ_STREAM, STREAMS};
use crate::measure::{DiskBytes, device_counters, disk_bytes};
use crate::report::Table;
use crate::{BenchResult, peer_logbook, peer_raw, peer_sled, peer_sqlite, replay};
use logbook::SyncPolicy;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tempfile::TempDir;
use tokio::runtime::Runtime;

/// A system under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Peer {
    /// logbook with default options (group commit, 1 ms, 256 records).
    Logbook,
    /// logbook with the plan's tuned sync policy (append workloads only).
    LogbookTuned,
    /// SQLite, WAL mode, `synchronous=FULL`.
    Sqlite,
    /// sled 0.34.7 with an explicit fsync of its log file.
    Sled,
    /// The raw framed file.
    Raw,
    /// Plain SQL on PostgreSQL (the `postgres` workload only, not in [`Peer::ALL`]).
    PgSql,
    /// logbook-postgres (the `postgres` workload only, not in [`Peer::ALL`]).
    LogbookPostgres,
}

impl Peer {
    /// Every peer, in table order.
    pub const ALL: [Peer; 5] = [
        Peer::Logbook,
        Peer::LogbookTuned,
        Peer::Sqlite,
        Peer::Sled,
        Peer::Raw,
    ];

    /// The name used on the command line and in the table.
    pub fn name(self) -> &'static str {
        match self {
            Peer::Logbook => "logbook",
            Peer::LogbookTuned => "logbook-tuned",
            Peer::Sqlite => "sqlite",
            Peer::Sled => "sled",
            Peer::Raw => "raw",
            Peer::PgSql => "postgres-sql",
            Peer::LogbookPostgres => "logbook-postgres",
        }
    }
}

/// What to run and how big.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Rounds of every workload; the table shows medians over them.
    pub rounds: usize,
    /// How long each append run lasts.
    pub append_duration: Duration,
    /// Concurrent writers of the append workload.
    pub writer_counts: Vec<usize>,
    /// Events of the read workload's stream.
    pub read_events: u64,
    /// Events of the tail workload's stream.
    pub tail_events: u64,
    /// Events of another stream appended after the tail stream (0: the stream ends the log).
    pub tail_other_events: u64,
    /// Events of the replay workload's log.
    pub replay_events: u64,
    /// How long warm tail queries repeat per run.
    pub tail_budget: Duration,
    /// The peers to run.
    pub peers: Vec<Peer>,
    /// The sync policy of [`Peer::LogbookTuned`].
    pub tuned_policy: SyncPolicy,
    /// Where temporary directories go (on the disk under test).
    pub base_dir: PathBuf,
}

/// One append run.
#[derive(Debug, Clone)]
pub struct AppendOutcome {
    /// Durable appends completed.
    pub appends: u64,
    /// With one writer (one append outstanding): how long each append took until it was
    /// acknowledged durable. Empty with more writers.
    pub latencies: Vec<Duration>,
    /// From the first append to the last acknowledgement.
    pub elapsed: Duration,
    /// fsyncs (or `fdatasync`s) issued, when the peer can tell.
    pub syncs: Option<u64>,
    /// Bytes on disk after close.
    pub disk: DiskBytes,
}

/// One read run.
#[derive(Debug, Clone, Copy)]
pub struct ReadOutcome {
    /// Events per second.
    pub events_per_second: f64,
    /// Allocations per event read (process-wide, during the run), where the peer counts them.
    pub allocations_per_event: Option<f64>,
}

impl ReadOutcome {
    /// Checks that every event was read.
    pub fn new(read: u64, elapsed: Duration, expected: u64) -> BenchResult<ReadOutcome> {
        if read != expected {
            return Err(format!("read {read} events, expected {expected}").into());
        }
        Ok(ReadOutcome {
            events_per_second: read as f64 / elapsed.as_secs_f64(),
            allocations_per_event: None,
        })
    }

    /// With the allocations made during the run (`read` events).
    pub fn with_allocations(mut self, allocations: u64, read: u64) -> ReadOutcome {
        self.allocations_per_event = Some(allocations as f64 / read.max(1) as f64);
        self
    }
}

/// The PostgreSQL peers run in the `postgres` workload only (they are not in [`Peer::ALL`]).
fn postgres_only(peer: Peer) -> crate::BenchError {
    format!("peer {} runs only in the postgres workload", peer.name()).into()
}

/// The peers (or their indexes) of a round, rotated by the round number.
fn rotated<T: Clone>(items: &[T], round: usize) -> Vec<T> {
    let mut order = items.to_vec();
    if !order.is_empty() {
        let shift = round % order.len();
        order.rotate_left(shift);
    }
    order
}

fn run_append(
    runtime: &Runtime,
    plan: &Plan,
    peer: Peer,
    dir: &Path,
    writers: usize,
) -> BenchResult<AppendOutcome> {
    let duration = plan.append_duration;
    match peer {
        Peer::Logbook => {
            let policy = logbook::WalOptions::default().sync_policy;
            peer_logbook::append(runtime, dir, policy, writers, duration)
        }
        Peer::LogbookTuned => {
            peer_logbook::append(runtime, dir, plan.tuned_policy, writers, duration)
        }
        Peer::Sqlite => peer_sqlite::append(dir, writers, duration),
        Peer::Sled => peer_sled::append(dir, writers, duration),
        Peer::Raw => peer_raw::append(dir, writers, duration),
        Peer::PgSql | Peer::LogbookPostgres => Err(postgres_only(peer)),
    }
}

/// Durable appends/s of 200-byte events over 1,000 streams, per writer count; bytes on disk
/// per event after the runs with 16 writers (or the first writer count when 16 is not run).
pub fn append(runtime: &Runtime, plan: &Plan, table: &mut Table) -> BenchResult<()> {
    let bytes_writers = if plan.writer_counts.contains(&16) {
        16
    } else {
        plan.writer_counts.first().copied().unwrap_or(1)
    };
    for round in 0..plan.rounds {
        for &writers in &plan.writer_counts {
            assert!((1..=STREAMS).contains(&writers), "1 to 1,000 writers");
            let workload = format!("durable appends, {writers} writer(s)");
            for peer in rotated(&plan.peers, round) {
                let dir = TempDir::new_in(&plan.base_dir)?;
                let device_before = device_counters(dir.path());
                let outcome = run_append(runtime, plan, peer, dir.path(), writers)?;
                let device = device_counters(dir.path()).zip(device_before);
                let seconds = outcome.elapsed.as_secs_f64();
                let rate = outcome.appends as f64 / seconds;
                table.figure(&workload, peer, "appends/s", true, rate);
                if let (Some(p50), Some(p99)) = (
                    percentile_us(&outcome.latencies, 50),
                    percentile_us(&outcome.latencies, 99),
                ) {
                    let latency = "durable append latency p50, 1 writer (one outstanding)";
                    table.figure(latency, peer, "µs", false, p50);
                    let latency = "durable append latency p99, 1 writer (one outstanding)";
                    table.figure(latency, peer, "µs", false, p99);
                }
                if let Some(syncs) = outcome.syncs {
                    table.detail(&workload, peer, "fsyncs/s", syncs as f64 / seconds);
                    let per_sync = outcome.appends as f64 / syncs.max(1) as f64;
                    table.detail(&workload, peer, "appends/fsync", per_sync);
                }
                if let Some((after, before)) = device {
                    let flushes = after.flushes.saturating_sub(before.flushes) as f64;
                    table.detail(&workload, peer, "device flushes/s", flushes / seconds);
                    let sectors = after.sectors_written.saturating_sub(before.sectors_written);
                    let per_append = (sectors * 512) as f64 / outcome.appends.max(1) as f64;
                    table.detail(&workload, peer, "device B written/append", per_append);
                }
                if writers == bytes_writers && outcome.appends > 0 {
                    let workload = format!("bytes on disk per event, after {writers} writers");
                    let appends = outcome.appends as f64;
                    table.figure(
                        &workload,
                        peer,
                        "B/event",
                        false,
                        outcome.disk.apparent as f64 / appends,
                    );
                    let allocated = outcome.disk.allocated as f64 / appends;
                    table.detail(&workload, peer, "allocated B/event", allocated);
                }
            }
        }
        eprintln!("append: round {}/{} done", round + 1, plan.rounds);
    }
    Ok(())
}

/// The `percent`th percentile (nearest rank) of the latencies in microseconds; `None` when
/// there are none.
fn percentile_us(latencies: &[Duration], percent: usize) -> Option<f64> {
    if latencies.is_empty() {
        return None;
    }
    let mut sorted = latencies.to_vec();
    sorted.sort_unstable();
    let rank = (sorted.len() * percent)
        .div_ceil(100)
        .clamp(1, sorted.len());
    Some(sorted[rank - 1].as_secs_f64() * 1e6)
}

/// The peers of the read and tail workloads (the tuned logbook only differs in sync policy).
fn read_peers(plan: &Plan) -> Vec<Peer> {
    plan.peers
        .iter()
        .copied()
        .filter(|peer| *peer != Peer::LogbookTuned)
        .collect()
}

fn load(runtime: &Runtime, peer: Peer, dir: &Path, streams: &[(&str, u64)]) -> BenchResult<()> {
    match peer {
        Peer::Logbook | Peer::LogbookTuned => peer_logbook::load(runtime, dir, streams),
        Peer::Sqlite => peer_sqlite::load(dir, streams),
        Peer::Sled => peer_sled::load(dir, streams),
        Peer::Raw => peer_raw::load(dir, streams),
        Peer::PgSql | Peer::LogbookPostgres => Err(postgres_only(peer)),
    }
}

/// Loads `(stream, events)` one after the other into a fresh directory per peer.
fn load_all(
    runtime: &Runtime,
    plan: &Plan,
    streams: &[(&str, u64)],
    table: &mut Table,
) -> BenchResult<Vec<(Peer, TempDir)>> {
    let events: u64 = streams.iter().map(|(_, events)| events).sum();
    let mut loaded = Vec::new();
    for peer in read_peers(plan) {
        let dir = TempDir::new_in(&plan.base_dir)?;
        let started = std::time::Instant::now();
        load(runtime, peer, dir.path(), streams)?;
        eprintln!(
            "loaded {events} events into {} in {:.1} s",
            peer.name(),
            started.elapsed().as_secs_f64()
        );
        let disk = disk_bytes(dir.path())?;
        let workload = format!("bytes on disk per event, log of {events} events");
        table.figure(
            &workload,
            peer,
            "B/event",
            false,
            disk.apparent as f64 / events as f64,
        );
        table.detail(
            &workload,
            peer,
            "allocated B/event",
            disk.allocated as f64 / events as f64,
        );
        loaded.push((peer, dir));
    }
    Ok(loaded)
}

/// `read_stream` (pages of 500) and catch-up subscription throughput over one stream.
pub fn read(runtime: &Runtime, plan: &Plan, table: &mut Table) -> BenchResult<()> {
    let events = plan.read_events;
    let loaded = load_all(runtime, plan, &[(READ_STREAM, events)], table)?;
    let stream_workload = format!("read_stream forward, {events} events, pages of 500");
    let catch_up_workload = format!("catch-up subscribe(1), {events} events");
    for round in 0..plan.rounds {
        for index in rotated(&(0..loaded.len()).collect::<Vec<_>>(), round) {
            let (peer, dir) = (&loaded[index].0, loaded[index].1.path());
            let [read_stream, catch_up] = match peer {
                Peer::Logbook | Peer::LogbookTuned => peer_logbook::read(runtime, dir, events)?,
                Peer::Sqlite => peer_sqlite::read(dir, events)?,
                Peer::Sled => peer_sled::read(dir, events)?,
                Peer::Raw => peer_raw::read(dir, events)?,
                Peer::PgSql | Peer::LogbookPostgres => return Err(postgres_only(*peer)),
            };
            let rate = read_stream.events_per_second;
            table.figure(&stream_workload, *peer, "events/s", true, rate);
            let rate = catch_up.events_per_second;
            table.figure(&catch_up_workload, *peer, "events/s", true, rate);
            for (workload, outcome) in [
                (&stream_workload, read_stream),
                (&catch_up_workload, catch_up),
            ] {
                if let Some(allocations) = outcome.allocations_per_event {
                    table.detail(workload, *peer, "allocs/event", allocations);
                }
            }
        }
        eprintln!("read: round {}/{} done", round + 1, plan.rounds);
    }
    Ok(())
}

/// The newest 50 events of a long stream: warm query latency, and open + first query.
pub fn tail(runtime: &Runtime, plan: &Plan, table: &mut Table) -> BenchResult<()> {
    let events = plan.tail_events;
    let streams = [
        (READ_STREAM, events),
        (OTHER_STREAM, plan.tail_other_events),
    ];
    let loaded = load_all(runtime, plan, &streams, table)?;
    let behind = match plan.tail_other_events {
        0 => String::new(),
        other => format!(" followed by {other} of another stream"),
    };
    let warm_workload = format!("newest 50 of a stream of {events} events{behind}, warm");
    let cold_workload = format!("open + newest 50 of a stream of {events} events{behind}");
    for round in 0..plan.rounds {
        for index in rotated(&(0..loaded.len()).collect::<Vec<_>>(), round) {
            let (peer, dir) = (&loaded[index].0, loaded[index].1.path());
            let (cold, warm) = match peer {
                Peer::Logbook | Peer::LogbookTuned => peer_logbook::tail(runtime, dir, plan)?,
                Peer::Sqlite => peer_sqlite::tail(dir, plan)?,
                Peer::Sled => peer_sled::tail(dir, plan)?,
                Peer::Raw => peer_raw::tail(dir, plan)?,
                Peer::PgSql | Peer::LogbookPostgres => return Err(postgres_only(*peer)),
            };
            let micros = warm.as_secs_f64() * 1e6;
            table.figure(&warm_workload, *peer, "µs/query", false, micros);
            let millis = cold.as_secs_f64() * 1e3;
            table.figure(&cold_workload, *peer, "ms", false, millis);
        }
        eprintln!("tail: round {}/{} done", round + 1, plan.rounds);
    }
    Ok(())
}

/// Replay of a log of built-in events into the built-in projections (`BuiltinLog::open`, no
/// snapshot, stream index kept) against a raw checksummed scan of the same segment files. Only
/// the `logbook` and `raw` peers take part.
pub fn replay(runtime: &Runtime, plan: &Plan, table: &mut Table) -> BenchResult<()> {
    let events = plan.replay_events;
    let peers: Vec<Peer> = [Peer::Logbook, Peer::Raw]
        .into_iter()
        .filter(|peer| plan.peers.contains(peer))
        .collect();
    let dir = TempDir::new_in(&plan.base_dir)?;
    let started = std::time::Instant::now();
    replay::build(runtime, dir.path(), events)?;
    let wal = disk_bytes(&dir.path().join("wal"))?;
    let all = disk_bytes(dir.path())?;
    eprintln!(
        "built a log of {events} built-in events in {:.1} s: {:.0} B/event in wal/, {:.0} in all",
        started.elapsed().as_secs_f64(),
        wal.apparent as f64 / events as f64,
        all.apparent as f64 / events as f64
    );
    let workload = format!("replay of {events} built-in events (no snapshot) vs raw scan");
    for round in 0..plan.rounds {
        for peer in rotated(&peers, round) {
            let cpu_before = replay::cpu_time();
            let (elapsed, allocations) = match peer {
                Peer::Raw => (replay::scan(dir.path(), events)?, None),
                _ => {
                    let replayed = replay::open(runtime, dir.path(), events)?;
                    (replayed.elapsed, Some(replayed.allocations))
                }
            };
            // The process's CPU time over the run (the replay's close included, a small part):
            // the raw scan keeps one core busy, the replay up to two when the machine gives
            // them (`docs/benchmarks.md`, session 20).
            let cpu = replay::cpu_since(cpu_before);
            let seconds = elapsed.as_secs_f64();
            eprintln!("replay: {} {:.1} ms", peer.name(), seconds * 1e3);
            table.figure(&workload, peer, "events/s", true, events as f64 / seconds);
            table.detail(&workload, peer, "ms", seconds * 1e3);
            if let Some(cpu) = cpu {
                table.detail(&workload, peer, "cpu ms", cpu.as_secs_f64() * 1e3);
            }
            if let Some(allocations) = allocations {
                table.detail(
                    &workload,
                    peer,
                    "allocs/event",
                    allocations as f64 / events as f64,
                );
            }
        }
        eprintln!("replay: round {}/{} done", round + 1, plan.rounds);
    }
    if plan.peers.contains(&Peer::Logbook) {
        replay_rss(runtime, plan, dir.path(), table)?;
    }
    Ok(())
}

/// Events of the small log the replay's peak RSS is compared with.
const RSS_SMALL_EVENTS: u64 = 10_000;

/// Peak RSS of one replay in a fresh process, of a 10k-event log and of the workload's log
/// (the projections' state is the same in both: [`replay::ROOMS`] rooms, each with its last
/// message), so the ratio shows what replay itself holds as the log grows.
fn replay_rss(runtime: &Runtime, plan: &Plan, big: &Path, table: &mut Table) -> BenchResult<()> {
    let small = TempDir::new_in(&plan.base_dir)?;
    replay::build(runtime, small.path(), RSS_SMALL_EVENTS)?;
    let workload = format!(
        "peak RSS of a replay in a fresh process: {} vs {RSS_SMALL_EVENTS} events",
        plan.replay_events
    );
    for round in 0..plan.rounds {
        let small_kib = replay::peak_rss(small.path(), RSS_SMALL_EVENTS)?;
        let big_kib = replay::peak_rss(big, plan.replay_events)?;
        eprintln!(
            "replay rss: {RSS_SMALL_EVENTS} events {small_kib} KiB, {} events {big_kib} KiB",
            plan.replay_events
        );
        table.figure(
            &workload,
            Peer::Logbook,
            "MiB",
            false,
            big_kib as f64 / 1024.0,
        );
        table.detail(
            &workload,
            Peer::Logbook,
            "small MiB",
            small_kib as f64 / 1024.0,
        );
        table.detail(
            &workload,
            Peer::Logbook,
            "big/small",
            big_kib as f64 / small_kib as f64,
        );
        eprintln!("replay rss: round {}/{} done", round + 1, plan.rounds);
    }
    Ok(())
}
