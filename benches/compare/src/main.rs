//! logbook against the peers a user would pick instead: SQLite, sled and a raw framed file.
//!
//! ```text
//! cargo run --release -p logbook-bench-compare -- [--quick] [append] [read] [tail] [replay]
//!     [postgres]
//! ```
//!
//! A binary, not criterion, so it can interleave the peers round after round (A B C D, B C D A,
//! ...) and report medians and ratios; see `docs/benchmarks.md` for the figures and the method.
//! Options: `--rounds N`, `--seconds S` (per append run), `--writers 1,16,256`,
//! `--peers logbook,logbook-tuned,sqlite,sled,raw`, `--tuned always|group:<delay_us>:<records>`,
//! `--tail-events N`, `--tail-other-events N`, `--replay-events N`, `--dir PATH` (where temporary
//! directories go; default the system's).
#![forbid(unsafe_code)]

mod event;
mod measure;
mod peer_logbook;
mod peer_postgres;
mod peer_raw;
mod peer_sled;
mod peer_sqlite;
mod replay;
mod report;
mod workload;

use logbook::SyncPolicy;
use std::time::{Duration, Instant};
use workload::{Peer, Plan};

/// Every allocation is counted (two relaxed atomic adds each, for every peer alike): the
/// replay workload reports allocations per replayed event.
#[global_allocator]
static ALLOCATOR: logbook_alloc_count::CountingAllocator = logbook_alloc_count::CountingAllocator;

/// Any error, with its message: this is a benchmark binary, errors end the run.
pub type BenchError = Box<dyn std::error::Error + Send + Sync>;
/// A result with [`BenchError`].
pub type BenchResult<T> = Result<T, BenchError>;

const WORKLOADS: [&str; 4] = ["append", "read", "tail", "replay"];
/// Workloads run only when named: `postgres` starts a PostgreSQL server of its own.
const NAMED_ONLY_WORKLOADS: [&str; 1] = ["postgres"];

fn main() {
    if let Err(error) = run() {
        eprintln!("error: {error}");
        std::process::exit(1);
    }
}

fn run() -> BenchResult<()> {
    // `logbook-bench-compare replay-rss DIR EVENTS` (internal): one replay in a fresh process,
    // printing its peak RSS (see `replay::rss_child`).
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [command, dir, events] = args.as_slice()
        && command == "replay-rss"
    {
        return replay::rss_child(dir.as_ref(), events.parse()?);
    }
    // `logbook-bench-compare replay-build DIR EVENTS` (internal): builds the replay workload's
    // log in DIR and keeps it, to profile `replay-rss DIR EVENTS` (one open) under callgrind.
    if let [command, dir, events] = args.as_slice()
        && command == "replay-build"
    {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        return replay::build(&runtime, dir.as_ref(), events.parse()?);
    }
    // `logbook-bench-compare replay-time DIR EVENTS ROUNDS` (internal): alternates a full
    // replay (`BuiltinLog::open`) of the log built in DIR with the raw scan of it, ROUNDS
    // times each, and prints each time and the median ratio: to compare two builds on one
    // kept log, their runs alternated. A DIR that does not exist is built first, in this
    // process, as the `replay` workload does.
    if let [command, dir, events, rounds] = args.as_slice()
        && command == "replay-time"
    {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        let events = events.parse()?;
        if !std::path::Path::new(dir).exists() {
            replay::build(&runtime, dir.as_ref(), events)?;
        }
        return replay::time(&runtime, dir.as_ref(), events, rounds.parse()?);
    }
    // `logbook-bench-compare read-time DIR EVENTS ROUNDS` (internal): `read_stream` of the
    // read workload's stream, ROUNDS times in one open of the log in DIR (built first if DIR
    // does not exist), each rate and the median printed: to compare two builds on one kept
    // log, their runs alternated.
    if let [command, dir, events, rounds] = args.as_slice()
        && command == "read-time"
    {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        return peer_logbook::read_time(&runtime, dir.as_ref(), events.parse()?, rounds.parse()?);
    }
    let (plan, workloads) = parse(std::env::args().skip(1).collect())?;
    measure::install_sync_counter()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    eprintln!("{plan:?}\nworkloads: {workloads:?}");
    let started = Instant::now();
    let mut table = report::Table::default();
    for workload in &workloads {
        match workload.as_str() {
            "append" => workload::append(&runtime, &plan, &mut table)?,
            "read" => workload::read(&runtime, &plan, &mut table)?,
            "tail" => workload::tail(&runtime, &plan, &mut table)?,
            "replay" => workload::replay(&runtime, &plan, &mut table)?,
            "postgres" => peer_postgres::run(&runtime, &plan, &mut table)?,
            other => return Err(format!("unknown workload {other}").into()),
        }
    }
    println!("{}", table.render());
    println!(
        "{} rounds, medians; spread is half the min-max range; total {:.0} s",
        plan.rounds,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn parse_policy(text: &str) -> BenchResult<SyncPolicy> {
    if text == "always" {
        return Ok(SyncPolicy::Always);
    }
    let parts: Vec<&str> = text.split(':').collect();
    match parts.as_slice() {
        ["group", delay_us, records] => Ok(SyncPolicy::GroupCommit {
            delay: Duration::from_micros(delay_us.parse()?),
            records_max: records.parse()?,
        }),
        _ => Err(format!("--tuned {text}: expected always or group:<delay_us>:<records>").into()),
    }
}

fn parse_peer(name: &str) -> BenchResult<Peer> {
    Peer::ALL
        .into_iter()
        .find(|peer| peer.name() == name)
        .ok_or_else(|| format!("unknown peer {name}").into())
}

fn parse(args: Vec<String>) -> BenchResult<(Plan, Vec<String>)> {
    let quick = args.iter().any(|arg| arg == "--quick");
    let mut plan = Plan {
        rounds: if quick { 3 } else { 5 },
        append_duration: Duration::from_millis(if quick { 500 } else { 2000 }),
        writer_counts: vec![1, 16, 256],
        read_events: 100_000,
        tail_events: if quick { 100_000 } else { 1_000_000 },
        tail_other_events: 0,
        replay_events: if quick { 100_000 } else { 1_000_000 },
        tail_budget: Duration::from_millis(if quick { 200 } else { 500 }),
        peers: Peer::ALL.to_vec(),
        tuned_policy: SyncPolicy::Always,
        base_dir: std::env::temp_dir(),
    };
    let mut workloads = Vec::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--quick" => {}
            "--rounds" => plan.rounds = value()?.parse()?,
            "--seconds" => plan.append_duration = Duration::from_secs_f64(value()?.parse()?),
            "--tail-events" => plan.tail_events = value()?.parse()?,
            "--tail-other-events" => plan.tail_other_events = value()?.parse()?,
            "--replay-events" => plan.replay_events = value()?.parse()?,
            "--dir" => plan.base_dir = value()?.into(),
            "--tuned" => plan.tuned_policy = parse_policy(&value()?)?,
            "--writers" => {
                plan.writer_counts = value()?
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()?;
            }
            "--peers" => {
                plan.peers = value()?
                    .split(',')
                    .map(parse_peer)
                    .collect::<BenchResult<_>>()?;
            }
            "--help" | "-h" => {
                println!("{}", include_str!("usage.txt"));
                std::process::exit(0);
            }
            name if WORKLOADS.contains(&name) || NAMED_ONLY_WORKLOADS.contains(&name) => {
                workloads.push(arg)
            }
            other => return Err(format!("unknown argument {other} (try --help)").into()),
        }
    }
    if workloads.is_empty() {
        workloads = WORKLOADS.iter().map(|name| name.to_string()).collect();
    }
    if plan.rounds == 0 {
        return Err("--rounds must be at least 1".into());
    }
    Ok((plan, workloads))
}
