//! Append latency with `SyncPolicy::Always` from one task: idle rounds and rounds during which
//! compaction runs without pause, alternated in the same run. Before each compacting round (not
//! timed) one room of 1/10th of the log is deleted, so the first compaction of the round has
//! records to drop in every segment; before each later one, room 0 is truncated a further
//! 1/200th of its history, so every compaction has records to drop and segments to rewrite (a
//! compaction with nothing new does nothing, and a loop of those would measure nothing).

use crate::BenchResult;
use crate::build::{self, ROOMS, room};
use logbook::model::{RoomCreated, RoomMessagePosted};
use logbook::{BuiltinLog, ExpectedVersion, LogbookOptions, StreamId, SyncPolicy};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Segments of the latency log: small, so compaction has many to rewrite.
const SEGMENT_BYTES_MAX: u64 = 4 << 20;

/// What the compaction loop did during the busy rounds.
#[derive(Debug, Clone, Default)]
struct Compactions {
    runs: u64,
    runs_dropping: u64,
    /// Time `delete_stream` took for each room deleted between rounds (ms).
    deletes_ms: Vec<f64>,
    records_dropped: u64,
    bytes_reclaimed: u64,
    segments_rewritten: u64,
    seconds: f64,
}

/// Samples in microseconds, per kind of round.
pub struct Report {
    messages: u64,
    appends: usize,
    rounds: usize,
    idle: Vec<f64>,
    busy: Vec<f64>,
    compactions: Compactions,
    segments_before: usize,
    segments_after: usize,
}

/// The `q` quantile (0..=1) of sorted samples.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted.get(index).copied().unwrap_or(0.0)
}

impl Report {
    pub fn print(mut self) {
        self.idle.sort_by(f64::total_cmp);
        self.busy.sort_by(f64::total_cmp);
        println!(
            "\nappend latency, SyncPolicy::Always, one appender, {} appends per round, {} rounds \
             alternated, log of {} messages in {} MiB segments",
            self.appends,
            self.rounds,
            self.messages,
            SEGMENT_BYTES_MAX >> 20
        );
        let line = |name: &str, samples: &[f64]| {
            println!(
                "  {name:<11} p50 {:>8.0} us  p90 {:>8.0} us  p99 {:>8.0} us  max {:>8.0} us  \
                 ({} appends)",
                quantile(samples, 0.5),
                quantile(samples, 0.9),
                quantile(samples, 0.99),
                quantile(samples, 1.0),
                samples.len()
            );
        };
        line("idle", &self.idle);
        line("compacting", &self.busy);
        let ratio = quantile(&self.busy, 0.99) / quantile(&self.idle, 0.99);
        let verdict = if ratio <= 2.0 { "ok" } else { "MISSED" };
        let compactions = &self.compactions;
        println!(
            "  p99 compacting / idle: {ratio:.2}x (<= 2x {verdict}); p50 {:.2}x",
            quantile(&self.busy, 0.5) / quantile(&self.idle, 0.5)
        );
        println!(
            "  during the busy rounds: {} compactions ({} dropped records) in {:.1} s, {} records \
             dropped, {:.1} MB reclaimed, {} segments rewritten",
            compactions.runs,
            compactions.runs_dropping,
            compactions.seconds,
            compactions.records_dropped,
            compactions.bytes_reclaimed as f64 / 1e6,
            compactions.segments_rewritten
        );
        println!(
            "  segments: {} before the rounds, {} after (a compaction seals the active one when something died); \
             delete_stream of a room of {} events took {:?} ms (untimed, between rounds)",
            self.segments_before,
            self.segments_after,
            self.messages / ROOMS,
            compactions
                .deletes_ms
                .iter()
                .map(|ms| ms.round())
                .collect::<Vec<_>>()
        );
    }
}

/// Builds a fresh log of `messages` messages in `dir`, then measures.
pub async fn measure(
    dir: &Path,
    messages: u64,
    appends: usize,
    rounds: usize,
    deletes: bool,
) -> BenchResult<Report> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    let mut options = LogbookOptions::default();
    options.wal.segment_bytes_max = SEGMENT_BYTES_MAX;
    let built = build::write(dir, messages, ROOMS, options.clone()).await?;
    eprintln!("latency log: {built:?}");
    options.wal.sync_policy = SyncPolicy::Always;
    let (log, _) = BuiltinLog::open(dir, options).await?;
    let appender = StreamId::room("appender")?;
    let created = RoomCreated {
        name: "Appender".into(),
        topic: None,
        created_by: None,
    };
    log.execute(&appender, created.into()).await?;
    let mut report = Report {
        messages,
        appends,
        rounds,
        idle: Vec::new(),
        busy: Vec::new(),
        compactions: Compactions::default(),
        segments_before: log.log().stats().backend.embedded().unwrap().segments,
        segments_after: 0,
    };
    let mut next_room = 1;
    let truncated = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let step = (messages / ROOMS / 200).max(1);
    for round in 0..rounds {
        let busy = round % 2 == 1;
        if busy && deletes && next_room < ROOMS {
            let started = Instant::now();
            log.log()
                .delete_stream(&room(next_room), ExpectedVersion::Any)
                .await?;
            let elapsed_ms = started.elapsed().as_secs_f64() * 1e3;
            report.compactions.deletes_ms.push(elapsed_ms);
            next_room += 1;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let compactor = busy.then(|| {
            let (log, stop, truncated) = (log.clone(), stop.clone(), truncated.clone());
            tokio::spawn(async move { compact_loop(&log, &stop, &truncated, step).await })
        });
        let samples = append_many(&log, &appender, appends, round).await?;
        stop.store(true, Ordering::Release);
        if let Some(compactor) = compactor {
            let done = compactor.await??;
            let total = &mut report.compactions;
            total.runs += done.runs;
            total.runs_dropping += done.runs_dropping;
            total.records_dropped += done.records_dropped;
            total.bytes_reclaimed += done.bytes_reclaimed;
            total.segments_rewritten += done.segments_rewritten;
            total.seconds += done.seconds;
            report.busy.extend(samples);
        } else {
            report.idle.extend(samples);
        }
    }
    report.segments_after = log.log().stats().backend.embedded().unwrap().segments;
    log.close().await?;
    Ok(report)
}

/// `appends` single appends of one message to `stream`, one at a time: each one's latency in µs.
pub async fn append_many(
    log: &BuiltinLog,
    stream: &StreamId,
    appends: usize,
    round: usize,
) -> BenchResult<Vec<f64>> {
    let mut samples = Vec::with_capacity(appends);
    for serial in 0..appends {
        let event = RoomMessagePosted {
            message_id: format!("a{round}-{serial}"),
            author: "appender".into(),
            body: format!("appended during round {round}: message {serial:>8}, about a chat line"),
        };
        let started = Instant::now();
        log.log()
            .append(
                stream,
                ExpectedVersion::Any,
                vec![logbook::BuiltinEvent::from(event).into()],
            )
            .await?;
        samples.push(started.elapsed().as_secs_f64() * 1e6);
    }
    Ok(samples)
}

/// Compacts, truncates room 0 a `step` further, and again, until stopped (at least once).
async fn compact_loop(
    log: &BuiltinLog,
    stop: &AtomicBool,
    truncated: &std::sync::atomic::AtomicU64,
    step: u64,
) -> BenchResult<Compactions> {
    let started = Instant::now();
    let mut done = Compactions::default();
    loop {
        let report = log.log().compact().await?;
        let before = truncated.fetch_add(step, Ordering::AcqRel) + step;
        log.log().truncate_stream(&room(0), before).await?;
        done.runs += 1;
        done.runs_dropping += u64::from(report.records_dropped > 0);
        done.records_dropped += report.records_dropped;
        done.bytes_reclaimed += report.bytes_reclaimed;
        done.segments_rewritten += report.segments_rewritten as u64;
        if stop.load(Ordering::Acquire) {
            break;
        }
    }
    done.seconds = started.elapsed().as_secs_f64();
    Ok(done)
}
