//! `stats`: what is in a log, for people or (`--json`) scripts.

use crate::Io;
use crate::output::Out;
use crate::progress::Bar;
use anyhow::Result;
use clap::Args;
use logbook::inspect::LogStats;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// The log directory.
    dir: PathBuf,
    /// One JSON document.
    #[arg(long)]
    json: bool,
}

/// The directory of the engine's persistent stream index, when it has one.
const INDEX_DIR_NAME: &str = "index";

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |name| name.to_string_lossy().into_owned(),
    )
}

pub fn stats(args: StatsArgs, io: &mut Io<'_>) -> Result<ExitCode> {
    let inspector = super::inspector(&args.dir)?;
    let stats = inspector
        .stats(&Bar::new())
        .map_err(|error| super::read_error(&args.dir, error))?;
    let index = args.dir.join(INDEX_DIR_NAME).is_dir();
    let mut out = Out::to(&mut *io.stdout);
    if args.json {
        out.json(&to_json(&stats, index))?;
    } else {
        human(&mut out, &args.dir, &stats, index)?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn to_json(stats: &LogStats, index: bool) -> serde_json::Value {
    let segments: Vec<_> = stats
        .segments
        .iter()
        .map(|segment| {
            json!({
                "file": file_name(&segment.path),
                "base": segment.base,
                "first_position": segment.positions.map(|(first, _)| first),
                "last_position": segment.positions.map(|(_, last)| last),
                "records": segment.records,
                "bytes": segment.bytes,
            })
        })
        .collect();
    let largest: Vec<_> = stats
        .largest_streams
        .iter()
        .map(|stream| json!({"stream": stream.stream, "events": stream.events, "bytes": stream.bytes}))
        .collect();
    json!({
        "segments": segments,
        "segment_count": stats.segments.len(),
        "segment_bytes": stats.segment_bytes,
        "first_position": stats.positions.map(|(first, _)| first),
        "last_position": stats.positions.map(|(_, last)| last),
        "events": stats.events,
        "events_by_type": stats.events_by_type,
        "events_by_stream_kind": stats.events_by_kind,
        "streams": stats.streams,
        "largest_streams": largest,
        "deleted_streams": stats.deleted_streams,
        "truncated_streams": stats.truncated_streams,
        "reclaimable_events": stats.reclaimable_events,
        "reclaimable_bytes": stats.reclaimable_bytes,
        "snapshots": stats.snapshots.iter().map(|snapshot| json!({
            "file": file_name(&snapshot.path),
            "position": snapshot.position,
            "bytes": snapshot.bytes,
        })).collect::<Vec<_>>(),
        "stream_index_on_disk": index,
        "creation_unfinished": stats.creation_unfinished,
    })
}

fn human(out: &mut Out, dir: &Path, stats: &LogStats, index: bool) -> Result<()> {
    let range = stats.positions.map_or_else(
        || "empty".to_owned(),
        |(first, last)| format!("{first}..={last}"),
    );
    out.line(format!("log        {}", dir.display()))?;
    out.line(format!(
        "segments   {} files, {} bytes, positions {range}",
        stats.segments.len(),
        stats.segment_bytes
    ))?;
    for segment in &stats.segments {
        let positions = segment.positions.map_or_else(
            || "empty".to_owned(),
            |(first, last)| format!("{first}..={last}"),
        );
        out.line(format!(
            "           {}  {:>10} bytes  {:>8} records  {positions}",
            file_name(&segment.path),
            segment.bytes,
            segment.records
        ))?;
    }
    out.line(format!("events     {}", stats.events))?;
    out.line("by kind")?;
    for (kind, count) in &stats.events_by_kind {
        out.line(format!("           {kind:<28} {count:>10}"))?;
    }
    out.line("by type")?;
    for (event_type, count) in &stats.events_by_type {
        out.line(format!("           {event_type:<28} {count:>10}"))?;
    }
    out.line(format!(
        "streams    {} ({} deleted, {} truncated)",
        stats.streams, stats.deleted_streams, stats.truncated_streams
    ))?;
    out.line("largest")?;
    for stream in &stats.largest_streams {
        out.line(format!(
            "           {:<28} {:>10} events {:>12} bytes",
            stream.stream, stream.events, stream.bytes
        ))?;
    }
    out.line(format!(
        "garbage    {} events, {} bytes a compaction would reclaim",
        stats.reclaimable_events, stats.reclaimable_bytes
    ))?;
    match stats.snapshots.first() {
        None => out.line("snapshots  none (the next open replays the whole log)")?,
        Some(newest) => out.line(format!(
            "snapshots  {} (newest at position {}, {} bytes: open replays only what follows)",
            stats.snapshots.len(),
            newest.position,
            newest.bytes
        ))?,
    }
    out.line(format!(
        "index      {}",
        if index {
            "stream index on disk"
        } else {
            "no stream index on disk (stream table rebuilt in memory at open)"
        }
    ))?;
    Ok(())
}
