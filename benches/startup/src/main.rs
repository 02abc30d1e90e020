//! Startup cost independent of history: logs of 10K, 1M and 10M room messages, each with a
//! snapshot, opened by a fresh process.
//!
//! ```text
//! cargo run --release -p logbook-bench-startup -- [--quick] [--sizes N,N,..] [--dir PATH]
//!     [--rebuild] [--opens N] [--appends N] [--rounds N] [--skip-latency] [--no-deletes]
//!     [--snapshot-latency-only] [--snapshot-rooms N]
//! ```
//!
//! - **Open**: a child process (this binary, `open <dir>`) opens the log with `BuiltinLog` and
//!   default options, prints its open time and its peak RSS (`VmHWM` of `/proc/self/status`,
//!   read just after open), then times history pages and exits. Median of `--opens` children.
//! - **History page**: `room_history` of 50 messages, newest first, from the top of a room and
//!   from its middle (cursor), first page of the process (cold) and median of 30 (warm).
//! - **Append latency**: p50/p99 of single appends with `SyncPolicy::Always` from one task, while
//!   `compact()` runs in a loop (streams being deleted meanwhile) and idle, alternated round by
//!   round in the same run.
//! - **Append latency during snapshots**: the same appender, while periodic snapshots of a log
//!   of 1M messages are taken, against idle rounds, alternated in the same run
//!   (`snapshot_latency.rs`). `--snapshot-latency-only` runs only this part; `--snapshot-rooms`
//!   spreads that log over more rooms (default 10), so each snapshot copies and encodes more.
//!
//! Ratios are against the smallest log and the idle rounds. Logs are built with
//! `SyncPolicy::Never` and appends of up to 10,000 events, kept under `--dir` (default
//! `/tmp/logbook-bench-startup`) and reused by later runs unless `--rebuild`. `--quick` uses
//! 10K, 100K and 1M messages.
#![forbid(unsafe_code)]

mod build;
mod child;
mod latency;
mod snapshot_latency;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// Any error, with its message: this is a benchmark binary, errors end the run.
pub type BenchError = Box<dyn std::error::Error + Send + Sync>;
/// A result with [`BenchError`].
pub type BenchResult<T> = Result<T, BenchError>;

/// What the command line asked for.
#[derive(Debug, Clone)]
struct Plan {
    sizes: Vec<u64>,
    dir: PathBuf,
    rebuild: bool,
    opens: usize,
    appends: usize,
    rounds: usize,
    latency_messages: u64,
    skip_latency: bool,
    /// Compact without deleting a room first (diagnosis: compaction with nothing to drop).
    no_deletes: bool,
    /// Only the append latency during periodic snapshots.
    snapshot_latency_only: bool,
    /// Rooms of the snapshot latency log.
    snapshot_rooms: u64,
}

fn parse(args: &[String]) -> BenchResult<Plan> {
    let mut plan = Plan {
        sizes: vec![10_000, 1_000_000, 10_000_000],
        dir: PathBuf::from("/tmp/logbook-bench-startup"),
        rebuild: false,
        opens: 5,
        appends: 1500,
        rounds: 4,
        latency_messages: 1_000_000,
        skip_latency: false,
        no_deletes: false,
        snapshot_latency_only: false,
        snapshot_rooms: build::ROOMS,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--quick" => {
                plan.sizes = vec![10_000, 100_000, 1_000_000];
                plan.opens = 3;
                plan.appends = 800;
                plan.latency_messages = 200_000;
            }
            "--sizes" => {
                let list = value()?;
                plan.sizes = list.split(',').map(str::parse).collect::<Result<_, _>>()?;
            }
            "--dir" => plan.dir = PathBuf::from(value()?),
            "--rebuild" => plan.rebuild = true,
            "--opens" => plan.opens = value()?.parse()?,
            "--appends" => plan.appends = value()?.parse()?,
            "--rounds" => plan.rounds = value()?.parse()?,
            "--skip-latency" => plan.skip_latency = true,
            "--no-deletes" => plan.no_deletes = true,
            "--snapshot-latency-only" => plan.snapshot_latency_only = true,
            "--snapshot-rooms" => plan.snapshot_rooms = value()?.parse()?,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    plan.sizes.sort_unstable();
    if plan.sizes.is_empty() || plan.opens == 0 || plan.rounds < 2 {
        return Err("need at least one size, one open and two rounds".into());
    }
    Ok(plan)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("open") => match args.get(1) {
            Some(dir) => child::run(Path::new(dir)),
            None => Err("open <dir>".into()),
        },
        Some("build-session") => build::session(&args[1..]),
        _ => parse(&args).and_then(|plan| run(&plan)),
    };
    if let Err(error) = result {
        eprintln!("error: {error}");
        std::process::exit(1);
    }
}

fn run(plan: &Plan) -> BenchResult<()> {
    eprintln!("{plan:?}");
    let started = Instant::now();
    std::fs::create_dir_all(&plan.dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if plan.snapshot_latency_only {
        measure_snapshot_latency(plan, &runtime)?;
        println!("total {:.0} s", started.elapsed().as_secs_f64());
        return Ok(());
    }
    let mut rows = Vec::new();
    for &messages in &plan.sizes {
        let dir = build::log_dir(&plan.dir, messages);
        let built = runtime.block_on(build::ensure(&dir, messages, plan.rebuild))?;
        eprintln!("{messages} messages: {built:?}");
        let mut opens = Vec::new();
        for _ in 0..plan.opens {
            opens.push(open_in_child(&dir)?);
        }
        rows.push(Row::new(messages, built, &opens));
    }
    print_open_table(&rows);
    if !plan.skip_latency {
        let dir = plan.dir.join("latency");
        let report = runtime.block_on(latency::measure(
            &dir,
            plan.latency_messages,
            plan.appends,
            plan.rounds,
            !plan.no_deletes,
        ))?;
        report.print();
        measure_snapshot_latency(plan, &runtime)?;
    }
    println!("total {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

fn measure_snapshot_latency(plan: &Plan, runtime: &tokio::runtime::Runtime) -> BenchResult<()> {
    let dir = plan.dir.join("snapshot-latency");
    let report = runtime.block_on(snapshot_latency::measure(
        &dir,
        plan.latency_messages,
        plan.snapshot_rooms.max(1),
        plan.appends,
        plan.rounds,
    ))?;
    report.print();
    Ok(())
}

/// Runs `open <dir>` in a fresh process and parses its `RESULT` line.
fn open_in_child(dir: &Path) -> BenchResult<child::Measured> {
    let output = Command::new(std::env::current_exe()?)
        .arg("open")
        .arg(dir)
        .output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(format!("the open child failed ({}): {stderr}", output.status).into());
    }
    let line = stdout
        .lines()
        .find(|line| line.starts_with("RESULT "))
        .ok_or_else(|| format!("no RESULT line from the child: {stdout}"))?;
    child::Measured::parse(line)
}

/// The median of the samples (the lower middle for an even count).
pub fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples
        .get(samples.len().saturating_sub(1) / 2)
        .copied()
        .unwrap_or(0.0)
}

/// One log's figures: medians over the children.
struct Row {
    messages: u64,
    built: build::Built,
    open_ms: f64,
    hwm_mb: f64,
    page_cold_us: f64,
    page_warm_us: f64,
    page_middle_us: f64,
    last: child::Measured,
}

impl Row {
    fn new(messages: u64, built: build::Built, opens: &[child::Measured]) -> Row {
        let pick = |field: fn(&child::Measured) -> f64| {
            median(&mut opens.iter().map(field).collect::<Vec<_>>())
        };
        Row {
            messages,
            built,
            open_ms: pick(|measured| measured.open_us / 1000.0),
            hwm_mb: pick(|measured| measured.hwm_kb / 1024.0),
            page_cold_us: pick(|measured| measured.page_cold_us),
            page_warm_us: pick(|measured| measured.page_warm_us),
            page_middle_us: pick(|measured| measured.page_middle_us),
            last: opens.last().cloned().unwrap_or_default(),
        }
    }
}

fn verdict(ratio: f64, target: f64) -> &'static str {
    if ratio <= target { "ok" } else { "MISSED" }
}

fn print_open_table(rows: &[Row]) {
    let Some(base) = rows.first() else { return };
    println!(
        "\n{:>10} {:>9} {:>4} | {:>9} {:>6} | {:>8} {:>6} | {:>9} {:>9} {:>6} {:>9} | {:>8} {:>9}",
        "messages",
        "log MB",
        "segs",
        "open ms",
        "x",
        "RSS MB",
        "x",
        "page cold",
        "page warm",
        "x",
        "page mid",
        "replayed",
        "scanned"
    );
    for row in rows {
        let open_ratio = row.open_ms / base.open_ms;
        let rss_ratio = row.hwm_mb / base.hwm_mb;
        let page_ratio = row.page_warm_us / base.page_warm_us;
        println!(
            "{:>10} {:>9.1} {:>4} | {:>9.1} {:>6.2} | {:>8.1} {:>6.2} | {:>7.0}us {:>7.0}us \
             {:>6.2} {:>7.0}us | {:>8} {:>7.1}MB",
            row.messages,
            row.built.log_bytes as f64 / 1e6,
            row.last.segments,
            row.open_ms,
            open_ratio,
            row.hwm_mb,
            rss_ratio,
            row.page_cold_us,
            row.page_warm_us,
            page_ratio,
            row.page_middle_us,
            row.last.replayed,
            row.last.bytes_scanned as f64 / 1e6,
        );
    }
    if let Some(largest) = rows.last().filter(|row| row.messages != base.messages) {
        let open = largest.open_ms / base.open_ms;
        let rss = largest.hwm_mb / base.hwm_mb;
        let page = largest.page_warm_us / base.page_warm_us;
        let cold = largest.page_cold_us / base.page_cold_us;
        println!(
            "targets, {} vs {} messages: open {:.2}x (<= 1.5x {}), peak RSS {:.2}x (<= 1.5x {}), \
             history page {:.2}x warm (<= 1.5x {}), {:.2}x cold",
            largest.messages,
            base.messages,
            open,
            verdict(open, 1.5),
            rss,
            verdict(rss, 1.5),
            page,
            verdict(page, 1.5),
            cold,
        );
    }
    for row in rows {
        println!(
            "{:>10}: built in {:.1} s ({:.0} B/event), index {}, snapshot at {}",
            row.messages,
            row.built.seconds,
            row.built.log_bytes as f64 / row.messages as f64,
            row.last.index,
            row.last.snapshot,
        );
    }
}
