//! `repair`: the explicit salvage. Without `--yes` it only reports what it would drop (and
//! exits 1 when that is anything); with `--yes` it cuts and prints exactly what was dropped.

use crate::output::Out;
use anyhow::{Context, Result};
use clap::Args;
use logbook::inspect::{self, RepairMode, RepairReport};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct RepairArgs {
    /// The log directory.
    dir: PathBuf,
    /// Really cut and remove. Without it nothing changes.
    #[arg(long)]
    yes: bool,
    /// One JSON document.
    #[arg(long)]
    json: bool,
}

fn name(path: &Path) -> String {
    path.display().to_string()
}

pub fn repair(args: RepairArgs) -> Result<ExitCode> {
    super::require_log(&args.dir)?;
    let mode = if args.yes {
        RepairMode::Apply
    } else {
        RepairMode::DryRun
    };
    let report = inspect::repair(&args.dir, mode)
        .with_context(|| format!("cannot repair the log in {}", args.dir.display()))?;
    let mut out = Out::new();
    if args.json {
        out.json(&to_json(&report))?;
    } else {
        human(&mut out, &args.dir, &report)?;
    }
    out.flush()?;
    let refused = mode == RepairMode::DryRun && report.drops_anything();
    Ok(if refused {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn to_json(report: &RepairReport) -> serde_json::Value {
    let recovery = &report.recovery;
    let frames: Vec<_> = report
        .dropped_frames
        .iter()
        .map(|dropped| {
            let event = dropped.frame.event.as_ref();
            json!({
                "file": name(&dropped.file),
                "offset": dropped.offset,
                "position": dropped.frame.position,
                "stream": event.map(|(stream, _, _)| stream),
                "version": event.map(|(_, version, _)| version),
                "type": event.map(|(_, _, event_type)| event_type),
            })
        })
        .collect();
    json!({
        "applied": report.mode == RepairMode::Apply,
        "drops_anything": report.drops_anything(),
        "last_position": recovery.last_position,
        "tail_cut": recovery.tail_cut.as_ref().map(|cut| json!({
            "file": name(&cut.segment),
            "offset": cut.offset,
            "bytes_dropped": cut.bytes_dropped,
            "reason": cut.reason,
        })),
        "salvage": recovery.salvage.as_ref().map(|salvage| json!({
            "file": name(&salvage.segment),
            "offset": salvage.offset,
            "reason": salvage.reason,
            "bytes_dropped": salvage.bytes_dropped,
            "segments_removed": salvage.segments_removed.iter().map(|path| name(path)).collect::<Vec<_>>(),
            "valid_frames_dropped": salvage.valid_frames_dropped,
        })),
        "removed_unfinished_segment": recovery.removed_unfinished_segment.as_deref().map(name),
        "manifest": recovery.manifest_findings.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "positions_lost": recovery.positions_lost.map(|(first, last)| json!({"first": first, "last": last})),
        "dropped_frames": frames,
        "snapshots_removed": report.snapshots_removed.iter().map(|path| name(path)).collect::<Vec<_>>(),
        "index_removed": report.index_removed.as_deref().map(name),
    })
}

fn human(out: &mut Out, dir: &Path, report: &RepairReport) -> Result<()> {
    let applied = report.mode == RepairMode::Apply;
    if !report.drops_anything() {
        out.line(format!(
            "nothing to repair in {}: no torn tail, no corruption (last position {})",
            dir.display(),
            report.recovery.last_position
        ))?;
        return Ok(());
    }
    let verb = if applied { "dropped" } else { "would drop" };
    let recovery = &report.recovery;
    if let Some(salvage) = &recovery.salvage {
        out.line(format!(
            "salvage: {verb} {} bytes of {} from byte offset {} ({})",
            salvage.bytes_dropped,
            name(&salvage.segment),
            salvage.offset,
            salvage.reason
        ))?;
        for removed in &salvage.segments_removed {
            out.line(format!(
                "salvage: {verb} the whole segment {}",
                name(removed)
            ))?;
        }
    }
    if let Some(cut) = &recovery.tail_cut {
        out.line(format!(
            "torn tail: {verb} {} bytes of {} from byte offset {} ({})",
            cut.bytes_dropped,
            name(&cut.segment),
            cut.offset,
            cut.reason
        ))?;
    }
    for finding in &recovery.manifest_findings {
        out.line(format!("manifest: {finding}"))?;
    }
    if let Some((first, last)) = recovery.positions_lost {
        out.line(format!(
            "end of the log: {verb} positions {first}..={last} (the log reached them, its segments no longer hold them)"
        ))?;
    }
    if let Some(path) = &recovery.removed_unfinished_segment {
        out.line(format!(
            "unfinished segment: {verb} {} (its header was never written whole)",
            name(path)
        ))?;
    }
    for path in &report.snapshots_removed {
        out.line(format!(
            "snapshot: {verb} {} (it describes events past the new end of the log)",
            name(path)
        ))?;
    }
    if let Some(path) = &report.index_removed {
        out.line(format!(
            "stream index: {verb} {} (derived data; the next open rebuilds it)",
            name(path)
        ))?;
    }
    out.line(format!("events {verb}: {}", report.dropped_frames.len()))?;
    for dropped in &report.dropped_frames {
        let event = dropped.frame.event.as_ref().map_or_else(
            || "<not an event envelope>".to_owned(),
            |(stream, version, event_type)| format!("{stream}@{version} {event_type}"),
        );
        out.line(format!(
            "  position {:>8}  {event}  ({} @ {})",
            dropped.frame.position,
            name(&dropped.file),
            dropped.offset
        ))?;
    }
    if applied {
        out.line(format!(
            "repaired: the log now ends at position {}",
            recovery.last_position
        ))?;
    } else {
        out.line(format!(
            "nothing was changed; run `logbook repair {} --yes` to apply",
            dir.display()
        ))?;
    }
    Ok(())
}
