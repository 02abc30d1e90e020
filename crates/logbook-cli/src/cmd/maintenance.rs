//! `snapshot` and `compact`: the engine's own operations, run as the log's one writer (they take
//! the directory lock, so a live service must run them itself through its `Logbook`).

use crate::output::Out;
use anyhow::{Context, Result};
use clap::Args;
use logbook::{BuiltinLog, LogbookOptions};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct MaintenanceArgs {
    /// The log directory, or a `postgres://` URL.
    dir: PathBuf,
    /// One JSON document.
    #[arg(long)]
    json: bool,
}

fn name(path: &Path) -> String {
    path.display().to_string()
}

/// Opens the existing log as its writer, runs `operation`, closes it.
fn with_log<T>(
    dir: &Path,
    operation: impl AsyncFnOnce(&BuiltinLog) -> logbook::Result<T>,
) -> Result<T> {
    let runtime = super::runtime()?;
    let options = LogbookOptions::default();
    let opened = match super::postgres_url(dir) {
        Some(url) => runtime.block_on(BuiltinLog::open_postgres(&url, options)),
        None => {
            super::require_log(dir)?;
            runtime.block_on(BuiltinLog::open(dir, options))
        }
    };
    let (log, _) = opened.with_context(|| {
        format!(
            "cannot open the log in {} for writing",
            super::display_target(dir)
        )
    })?;
    let result = runtime.block_on(operation(&log));
    let closed = runtime.block_on(log.close());
    let value = result?;
    closed.context("closing the log")?;
    Ok(value)
}

pub fn snapshot(args: MaintenanceArgs) -> Result<ExitCode> {
    let info =
        with_log(&args.dir, async |log| log.log().snapshot().await).context("snapshot failed")?;
    let mut out = Out::new();
    if args.json {
        out.json(
            &json!({"file": name(&info.path), "position": info.position, "bytes": info.bytes}),
        )?;
    } else {
        out.line(format!(
            "snapshot at position {} written: {} ({} bytes); the next open replays only what follows it",
            info.position,
            name(&info.path),
            info.bytes
        ))?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

pub fn compact(args: MaintenanceArgs) -> Result<ExitCode> {
    let report =
        with_log(&args.dir, async |log| log.log().compact().await).context("compaction failed")?;
    let mut out = Out::new();
    if args.json {
        let segments: Vec<_> = report
            .segments
            .iter()
            .map(|segment| {
                json!({
                    "file": name(&segment.segment),
                    "records_kept": segment.records_kept,
                    "records_dropped": segment.records_dropped,
                    "bytes_before": segment.bytes_before,
                    "bytes_after": segment.bytes_after,
                    "removed": segment.removed,
                })
            })
            .collect();
        out.json(&json!({
            "snapshot_position": report.snapshot_position,
            "segments_read": report.segments_read,
            "bytes_read": report.bytes_read,
            "segments_rewritten": report.segments_rewritten,
            "segments_removed": report.segments_removed,
            "records_dropped": report.records_dropped,
            "bytes_reclaimed": report.bytes_reclaimed,
            "snapshots_removed": report.snapshots_removed.iter().map(|path| name(path)).collect::<Vec<_>>(),
            "segments": segments,
        }))?;
    } else {
        out.line(format!(
            "compacted below the snapshot at position {}: {} records dropped, {} bytes reclaimed",
            report.snapshot_position, report.records_dropped, report.bytes_reclaimed
        ))?;
        out.line(format!(
            "  read {} segments ({} bytes): only those holding records that died since their last compaction",
            report.segments_read, report.bytes_read
        ))?;
        for segment in &report.segments {
            let after = if segment.removed {
                "removed".to_owned()
            } else {
                format!("{} bytes", segment.bytes_after)
            };
            out.line(format!(
                "  {}: {} records dropped, {} kept, {} bytes -> {after}",
                name(&segment.segment),
                segment.records_dropped,
                segment.records_kept,
                segment.bytes_before
            ))?;
        }
        for path in &report.snapshots_removed {
            out.line(format!("  older snapshot removed: {}", name(path)))?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
