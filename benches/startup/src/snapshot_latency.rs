//! Append latency with `SyncPolicy::Always` from one task while periodic snapshots are taken,
//! against idle rounds, alternated in the same run on one log of `--latency-messages` room
//! messages (1M by default). The log is reopened (untimed) before each round: with the snapshot
//! policy off for idle rounds, and a snapshot due every [`SNAPSHOT_EVERY_EVENTS`] events for the
//! busy ones, so a busy round of 1,500 appends takes about 1,500 / 25 = 60 snapshots, each cut
//! at a position past 1M, encoded and written (file fsync, rename, directory fsync) while the
//! appender waits for its own fsyncs. A first idle round is not recorded: it absorbs the
//! writeback of the freshly built log. Besides quantiles the report counts appends slower
//! than [`SLOW_US`]: a snapshot that stalls the syncer costs one such append per snapshot, too
//! few to move a p99 when snapshots are slow to write.

use crate::BenchResult;
use crate::build;
use crate::latency::{append_many, quantile};
use logbook::model::RoomCreated;
use logbook::{BuiltinLog, LogbookOptions, Projection, SnapshotPolicy, StreamId, SyncPolicy};
use std::path::Path;
use std::time::{Duration, Instant};

/// A periodic snapshot is due after this many applied events in the busy rounds.
pub const SNAPSHOT_EVERY_EVENTS: u64 = 25;
/// An append slower than this (µs) is counted as stalled.
pub const SLOW_US: f64 = 20_000.0;

/// Samples in microseconds, per kind of round.
pub struct Report {
    messages: u64,
    rooms: u64,
    appends: usize,
    rounds: usize,
    idle: Vec<f64>,
    busy: Vec<f64>,
    /// Bytes of the newest snapshot file after the last busy round.
    snapshot_bytes: u64,
    /// Round trip of one on-demand snapshot of the log (cut, encode, write), ms.
    snapshot_ms: f64,
    /// What the syncer pays per snapshot for the rooms projection (clone), and what it paid
    /// before (encode), µs.
    rooms_clone_us: f64,
    rooms_encode_us: f64,
}

impl Report {
    pub fn print(mut self) {
        self.idle.sort_by(f64::total_cmp);
        self.busy.sort_by(f64::total_cmp);
        println!(
            "\nappend latency while periodic snapshots are taken, SyncPolicy::Always, one appender, \
             {} appends per round, {} rounds alternated, log of {} messages in {} rooms, a \
             snapshot every {} events in the busy rounds ({} bytes each, {:.1} ms for one \
             on-demand snapshot; rooms projection: clone {:.0} us, encode {:.0} us)",
            self.appends,
            self.rounds,
            self.messages,
            self.rooms,
            SNAPSHOT_EVERY_EVENTS,
            self.snapshot_bytes,
            self.snapshot_ms,
            self.rooms_clone_us,
            self.rooms_encode_us,
        );
        let line = |name: &str, samples: &[f64]| {
            println!(
                "  {name:<12} p50 {:>8.0} us  p90 {:>8.0} us  p99 {:>8.0} us  p99.9 {:>8.0} us  \
                 max {:>8.0} us  ({} appends, {} over {:.0} ms)",
                quantile(samples, 0.5),
                quantile(samples, 0.9),
                quantile(samples, 0.99),
                quantile(samples, 0.999),
                quantile(samples, 1.0),
                samples.len(),
                samples.iter().filter(|&&us| us >= SLOW_US).count(),
                SLOW_US / 1e3,
            );
        };
        line("idle", &self.idle);
        line("snapshotting", &self.busy);
        let ratio = quantile(&self.busy, 0.99) / quantile(&self.idle, 0.99);
        let verdict = if ratio <= 1.5 { "ok" } else { "MISSED" };
        println!(
            "  p99 snapshotting / idle: {ratio:.2}x (<= 1.5x {verdict}); p50 {:.2}x",
            quantile(&self.busy, 0.5) / quantile(&self.idle, 0.5)
        );
    }
}

fn options(busy: bool) -> LogbookOptions {
    let mut options = LogbookOptions::default();
    options.wal.sync_policy = SyncPolicy::Always;
    options.snapshots = if busy {
        SnapshotPolicy {
            every_events: SNAPSHOT_EVERY_EVENTS,
            ..SnapshotPolicy::default()
        }
    } else {
        SnapshotPolicy {
            every_events: u64::MAX,
            every_bytes: u64::MAX,
            every: Duration::from_secs(365 * 24 * 3600),
            ..SnapshotPolicy::default()
        }
    };
    options
}

/// The size of the newest snapshot file in the log directory.
fn newest_snapshot_bytes(dir: &Path) -> BenchResult<u64> {
    let mut newest = (String::new(), 0);
    for entry in std::fs::read_dir(dir.join("snapshots"))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".snap") && name > newest.0 {
            newest = (name, entry.metadata()?.len());
        }
    }
    Ok(newest.1)
}

/// How long cloning and encoding the rooms projection's state take, in µs.
fn time_rooms_state(log: &BuiltinLog) -> BenchResult<(f64, f64)> {
    let state = log.rooms().read();
    let started = Instant::now();
    let copy = state.clone();
    let clone_us = started.elapsed().as_secs_f64() * 1e6;
    drop(state);
    let started = Instant::now();
    let encoded = copy.snapshot()?;
    let encode_us = started.elapsed().as_secs_f64() * 1e6;
    drop((copy, encoded));
    Ok((clone_us, encode_us))
}

/// Builds a fresh log of `messages` messages in `dir`, then measures.
pub async fn measure(
    dir: &Path,
    messages: u64,
    rooms: u64,
    appends: usize,
    rounds: usize,
) -> BenchResult<Report> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    let built = build::write(dir, messages, rooms, LogbookOptions::default()).await?;
    eprintln!("snapshot latency log: {built:?}");
    let appender = StreamId::room("appender")?;
    let mut report = Report {
        messages,
        rooms,
        appends,
        rounds,
        idle: Vec::new(),
        busy: Vec::new(),
        snapshot_bytes: 0,
        snapshot_ms: 0.0,
        rooms_clone_us: 0.0,
        rooms_encode_us: 0.0,
    };
    // Round 0 is the unrecorded warm-up.
    for round in 0..=rounds {
        let busy = round % 2 == 0 && round > 0;
        let (log, _) = BuiltinLog::open(dir, options(busy)).await?;
        if round == 0 {
            (report.rooms_clone_us, report.rooms_encode_us) = time_rooms_state(&log)?;
            let created = RoomCreated {
                name: "Appender".into(),
                topic: None,
                created_by: None,
            };
            log.execute(&appender, created.into()).await?;
        }
        let samples = append_many(&log, &appender, appends, round).await?;
        if busy {
            report.busy.extend(samples);
        } else if round > 0 {
            report.idle.extend(samples);
        }
        if round == rounds {
            let started = Instant::now();
            log.log().snapshot().await?;
            report.snapshot_ms = started.elapsed().as_secs_f64() * 1e3;
        }
        log.close().await?;
    }
    report.snapshot_bytes = newest_snapshot_bytes(dir)?;
    Ok(report)
}
