//! The child process: opens a log, measures, prints one `RESULT` line, exits.
//!
//! Peak RSS is `VmHWM` of `/proc/self/status` read right after open (before any page is read),
//! so it is what opening cost this process, runtime and binary included.

use crate::build::{ROOMS, room};
use crate::{BenchResult, median};
use logbook::{BuiltinLog, HistoryRequest, LogbookOptions, Order};
use std::path::Path;
use std::time::Instant;

/// Pages timed warm, per kind.
const WARM_PAGES: usize = 30;
/// Messages per page.
const PAGE: usize = 50;

/// What one child measured.
#[derive(Debug, Clone, Default)]
pub struct Measured {
    pub open_us: f64,
    pub wal_us: f64,
    pub hwm_kb: f64,
    pub page_cold_us: f64,
    pub page_warm_us: f64,
    pub page_middle_us: f64,
    pub replayed: u64,
    pub segments: u64,
    pub bytes_scanned: u64,
    pub index: String,
    pub snapshot: String,
}

impl Measured {
    fn line(&self) -> String {
        format!(
            "RESULT open_us={} wal_us={} hwm_kb={} page_cold_us={} page_warm_us={} \
             page_middle_us={} replayed={} segments={} bytes_scanned={} index={} snapshot={}",
            self.open_us,
            self.wal_us,
            self.hwm_kb,
            self.page_cold_us,
            self.page_warm_us,
            self.page_middle_us,
            self.replayed,
            self.segments,
            self.bytes_scanned,
            self.index,
            self.snapshot
        )
    }

    /// Parses the child's `RESULT` line.
    pub fn parse(line: &str) -> BenchResult<Measured> {
        let mut measured = Measured::default();
        for field in line.split(' ').skip(1) {
            let (key, value) = field
                .split_once('=')
                .ok_or_else(|| format!("bad field {field}"))?;
            match key {
                "open_us" => measured.open_us = value.parse()?,
                "wal_us" => measured.wal_us = value.parse()?,
                "hwm_kb" => measured.hwm_kb = value.parse()?,
                "page_cold_us" => measured.page_cold_us = value.parse()?,
                "page_warm_us" => measured.page_warm_us = value.parse()?,
                "page_middle_us" => measured.page_middle_us = value.parse()?,
                "replayed" => measured.replayed = value.parse()?,
                "segments" => measured.segments = value.parse()?,
                "bytes_scanned" => measured.bytes_scanned = value.parse()?,
                "index" => measured.index = value.to_owned(),
                "snapshot" => measured.snapshot = value.to_owned(),
                other => return Err(format!("unknown field {other}").into()),
            }
        }
        Ok(measured)
    }
}

/// A `kB` figure of `/proc/self/status`.
pub fn status_kb(key: &str) -> BenchResult<f64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|line| line.starts_with(key))
        .ok_or_else(|| format!("{key} missing from /proc/self/status"))?;
    let value = line
        .split_whitespace()
        .nth(1)
        .ok_or_else(|| format!("bad line {line}"))?;
    Ok(value.parse()?)
}

/// `open <dir>`.
pub fn run(dir: &Path) -> BenchResult<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(measure(dir))
}

async fn measure(dir: &Path) -> BenchResult<()> {
    let started = Instant::now();
    let (log, report) = BuiltinLog::open(dir, LogbookOptions::default()).await?;
    let open_us = started.elapsed().as_secs_f64() * 1e6;
    let hwm_kb = status_kb("VmHWM:")?;
    let report = report.log;
    let mut measured = Measured {
        open_us,
        wal_us: report.wal.duration.as_secs_f64() * 1e6,
        hwm_kb,
        replayed: report.events_replayed,
        segments: report.wal.segments as u64,
        bytes_scanned: report.wal.bytes_scanned,
        index: match &report.index.rebuilt {
            None => format!("complete@{}", report.index.complete_position),
            Some(_) => "rebuilt".to_owned(),
        },
        snapshot: report
            .snapshot
            .used
            .as_ref()
            .map_or("none".to_owned(), |used| used.position.to_string()),
        ..Measured::default()
    };
    measured.page_cold_us = time_page(&log, 0, None).await?;
    let mut warm = Vec::new();
    let mut middle = Vec::new();
    for index in 0..WARM_PAGES {
        let room_index = index as u64 % ROOMS;
        warm.push(time_page(&log, room_index, None).await?);
        let version = log.log().stream_version(&room(room_index))?.unwrap_or(0);
        middle.push(time_page(&log, room_index, Some(version / 2)).await?);
    }
    measured.page_warm_us = median(&mut warm);
    measured.page_middle_us = median(&mut middle);
    println!("{}", measured.line());
    log.close().await?;
    Ok(())
}

/// Times one history page of 50 messages, newest first, below `cursor`.
async fn time_page(log: &BuiltinLog, room_index: u64, cursor: Option<u64>) -> BenchResult<f64> {
    let request = HistoryRequest {
        order: Order::NewestFirst,
        cursor,
        limit: PAGE,
    };
    let room_id = format!("room-{room_index}");
    let started = Instant::now();
    let page = log.room_history(&room_id, request).await?;
    let elapsed = started.elapsed().as_secs_f64() * 1e6;
    if page.messages.len() != PAGE {
        return Err(format!("{room_id}: a page of {} messages", page.messages.len()).into());
    }
    Ok(elapsed)
}
