//! `repair`: the explicit salvage. Without `--yes` it only reports what it would drop (and
//! exits 1 when that is anything); with `--yes` it repairs and prints exactly what was dropped.
//! By default it cuts the log at the first corruption; with `--keep-intact` it drops only the
//! damaged frames and keeps every intact frame after them, naming the positions given up.
//!
//! On a `postgres://` URL there is nothing for `repair` to do: PostgreSQL commits whole
//! transactions (no torn tail, no half-written frame), and logbook never rewrites shared rows.
//! It runs `verify`'s checks read-only, prints them, and says so: exit 0 when the database is
//! clean, 1 when it is damaged (damage in a database is restored from the server's backups,
//! never patched by logbook); `--yes` and `--keep-intact` change nothing there.

use crate::Io;
use crate::output::Out;
use anyhow::{Context, Result};
use clap::Args;
use logbook::KeepIntactReport;
use logbook::inspect::{self, RepairMode, RepairReport};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct RepairArgs {
    /// The log directory, or a `postgres://` URL (checked read-only: nothing to repair there).
    dir: PathBuf,
    /// Really repair. Without it nothing changes: the report says what would be dropped.
    #[arg(long)]
    yes: bool,
    /// Drop only the damaged frames (a partly damaged batch whole) and keep every intact frame
    /// after them, at their positions; without it the log is cut at the first corruption.
    #[arg(long)]
    keep_intact: bool,
    /// One JSON document.
    #[arg(long)]
    json: bool,
}

fn name(path: &Path) -> String {
    path.display().to_string()
}

pub fn repair(args: RepairArgs, io: &mut Io<'_>) -> Result<ExitCode> {
    if let Some(url) = super::postgres_url(&args.dir) {
        return repair_remote(&args, &url, io);
    }
    super::require_log(&args.dir)?;
    let mode = if args.yes {
        RepairMode::Apply
    } else {
        RepairMode::DryRun
    };
    let report = match args.keep_intact {
        true => inspect::repair_keep_intact(&args.dir, mode),
        false => inspect::repair(&args.dir, mode),
    }
    .with_context(|| format!("cannot repair the log in {}", args.dir.display()))?;
    let mut out = Out::to(&mut *io.stdout);
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
        "damaged_regions": report.kept_intact.as_ref().map(regions_json),
    })
}

fn regions_json(report: &KeepIntactReport) -> serde_json::Value {
    let regions: Vec<_> = report
        .regions
        .iter()
        .map(|region| {
            let (first, last) = region.positions_given_up();
            json!({
                "file": name(&region.segment),
                "start": region.start,
                "end": region.end,
                "bytes": region.bytes(),
                "bad_offset": region.bad_offset,
                "reason": region.reason,
                "after_position": region.after_position,
                "next_position": region.next_position,
                "positions_given_up": {"first": first, "last": last},
                "intact_frames_dropped": region.intact_frames_dropped,
            })
        })
        .collect();
    json!(regions)
}

/// The damaged regions of a keep-intact repair, one line each, then the batch mates dropped.
fn human_regions(out: &mut Out, verb: &str, report: &KeepIntactReport) -> Result<()> {
    for region in &report.regions {
        let positions = match region.positions_given_up() {
            (first, Some(last)) if first == last => format!("position {first}"),
            (first, Some(last)) => format!("positions {first}..={last}"),
            (first, None) => format!("every position from {first} on (nothing intact follows)"),
        };
        out.line(format!(
            "damaged region: {verb} bytes {}..{} of {} ({} bytes; {} at byte offset {}); gave up {positions}",
            region.start,
            region.end,
            name(&region.segment),
            region.bytes(),
            region.reason,
            region.bad_offset
        ))?;
        if !region.intact_frames_dropped.is_empty() {
            let mates: Vec<String> = region
                .intact_frames_dropped
                .iter()
                .map(u64::to_string)
                .collect();
            out.line(format!(
                "  the damage broke a batch: batches are atomic, so its intact frames at positions {} are {verb} with it",
                mates.join(", ")
            ))?;
        }
    }
    let given_up: u64 = report
        .regions
        .iter()
        .map(|region| match region.positions_given_up() {
            (first, Some(last)) => last + 1 - first,
            (_, None) => 0,
        })
        .sum();
    out.line(format!(
        "kept intact: {} records; {} damaged region(s), {given_up} position(s) given up",
        report.records_kept,
        report.regions.len()
    ))?;
    Ok(())
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
    if let Some(kept) = &report.kept_intact {
        human_regions(out, verb, kept)?;
    }
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
        if salvage.valid_frames_dropped > 0 {
            out.line(format!(
                "salvage: {} valid frames after the damage are lost by the cut; `logbook repair {} --keep-intact` drops only the damaged frames and keeps them",
                salvage.valid_frames_dropped,
                dir.display()
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
            "snapshot: {verb} {} (it describes events the repair drops)",
            name(path)
        ))?;
    }
    if let Some(path) = &report.index_removed {
        out.line(format!(
            "stream index: {verb} {} (derived data; the next open rebuilds it)",
            name(path)
        ))?;
    }
    if report.kept_intact.is_none() || !report.dropped_frames.is_empty() {
        out.line(format!("events {verb}: {}", report.dropped_frames.len()))?;
    }
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
        let keep = if report.kept_intact.is_some() {
            " --keep-intact"
        } else {
            ""
        };
        out.line(format!(
            "nothing was changed; run `logbook repair {}{keep} --yes` to apply",
            dir.display()
        ))?;
    }
    Ok(())
}

/// What `repair` says of a database: nothing to repair.
const REMOTE_NOTHING_TO_DO: &str = "PostgreSQL has no torn tails and no half-written frames: it \
     commits whole transactions, so there is nothing for `repair` to cut, and logbook never \
     rewrites shared rows; nothing was changed";

/// What `repair` says of a damaged database.
const REMOTE_RESTORE: &str = "the damage above is not repaired by logbook: restore the \
     database from the server's backups (or point-in-time recovery) to before it";

fn repair_remote(args: &RepairArgs, url: &str, io: &mut Io<'_>) -> Result<ExitCode> {
    let report = super::verify::verify_remote(&args.dir, url)?;
    let mut out = Out::to(&mut *io.stdout);
    if args.json {
        out.json(&json!({
            "applied": false,
            "drops_anything": false,
            "backend": "postgres",
            "target": report.target,
            "clean": report.is_clean(),
            "last_position": report.head_position,
            "findings": super::verify::remote_findings_json(&report),
            "findings_not_listed": report.findings_not_listed,
            "note": if report.is_clean() { REMOTE_NOTHING_TO_DO } else { REMOTE_RESTORE },
        }))?;
    } else {
        super::verify::remote_finding_lines(&mut out, &report)?;
        match report.is_clean() {
            true => out.line(format!(
                "nothing to repair in PostgreSQL {} (last position given {}): {REMOTE_NOTHING_TO_DO}",
                report.target, report.head_position
            ))?,
            false => out.line(format!(
                "CORRUPT ({} problems) in PostgreSQL {}: {REMOTE_RESTORE}; {REMOTE_NOTHING_TO_DO}",
                report.corruptions(),
                report.target
            ))?,
        }
    }
    out.flush()?;
    Ok(super::verify::remote_exit_code(&report))
}
