//! `stats`: what is in a log (a directory or a `postgres://` URL), for people or (`--json`)
//! scripts. On a URL the figures come from `logbook::inspect::RemoteLog::stats` (read-only);
//! the keys the directory output has keep their meaning, PostgreSQL-only figures have their own.

use crate::Io;
use crate::output::{Out, format_time};
use crate::progress::Bar;
use anyhow::{Context, Result};
use clap::Args;
use logbook::inspect::{ConsumerInfo, LogStats, RemoteStats};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// The log directory, or a `postgres://` URL (read-only: no schema change, no write).
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
    if let Some(url) = super::postgres_url(&args.dir) {
        let runtime = super::runtime()?;
        let log = super::remote_log(&runtime, &args.dir, &url)?;
        let (stats, consumers) = runtime
            .block_on(async {
                Ok::<_, logbook::Error>((log.stats().await?, log.consumers().await?))
            })
            .with_context(|| {
                format!(
                    "reading the PostgreSQL database {} failed",
                    super::display_target(&args.dir)
                )
            })?;
        let mut out = Out::to(&mut *io.stdout);
        if args.json {
            let mut value = remote_json(&stats);
            value["consumers"] = consumers_json(&consumers);
            out.json(&value)?;
        } else {
            remote_human(&mut out, &args.dir, &stats)?;
            consumers_human(&mut out, &consumers)?;
        }
        out.flush()?;
        return Ok(ExitCode::SUCCESS);
    }
    let inspector = super::inspector(&args.dir)?;
    let stats = inspector
        .stats(&Bar::new())
        .map_err(|error| super::read_error(&args.dir, error))?;
    let index = args.dir.join(INDEX_DIR_NAME).is_dir();
    let mut out = Out::to(&mut *io.stdout);
    if args.json {
        let mut value = to_json(&stats, index);
        value["consumers"] = consumers_json(&stats.consumers);
        out.json(&value)?;
    } else {
        human(&mut out, &args.dir, &stats, index)?;
        consumers_human(&mut out, &stats.consumers)?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn consumers_json(consumers: &[ConsumerInfo]) -> serde_json::Value {
    serde_json::Value::Array(consumers.iter().map(super::consumers::to_json).collect())
}

fn consumers_human(out: &mut Out, consumers: &[ConsumerInfo]) -> Result<()> {
    out.line(format!(
        "consumers  {} (durable consumers with a checkpoint)",
        consumers.len()
    ))?;
    for consumer in consumers {
        out.line(format!(
            "           {:<28} position {:>10}  lag {:>10}  checkpoint {}",
            consumer.name,
            consumer.position,
            consumer.lag,
            format_time(consumer.checkpointed_at_ms)
        ))?;
    }
    Ok(())
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

fn remote_json(stats: &RemoteStats) -> serde_json::Value {
    let largest: Vec<_> = stats
        .largest_streams
        .iter()
        .map(|stream| json!({"stream": stream.stream, "events": stream.events, "bytes": stream.bytes}))
        .collect();
    json!({
        "backend": "postgres",
        "target": stats.target,
        "schema_version": stats.schema_version,
        "first_position": stats.positions.map(|(first, _)| first),
        "last_position": stats.positions.map(|(_, last)| last),
        "head_position": stats.head_position,
        "events": stats.events,
        "payload_bytes": stats.payload_bytes,
        "oldest_timestamp_ms": stats.timestamps.map(|(oldest, _)| oldest),
        "newest_timestamp_ms": stats.timestamps.map(|(_, newest)| newest),
        "events_by_type": stats.events_by_type,
        "events_by_stream_kind": stats.events_by_kind,
        "streams": stats.streams,
        "live_streams": stats.live_streams,
        "streams_with_events": stats.streams_with_events,
        "largest_streams": largest,
        "deleted_streams": stats.deleted_streams,
        "truncated_streams": stats.truncated_streams,
        "snapshot_count": stats.snapshot_count,
        "newest_snapshot_position": stats.snapshots.first().map(|snapshot| snapshot.position),
        "snapshots": stats.snapshots.iter().map(|snapshot| json!({
            "position": snapshot.position,
            "bytes": snapshot.bytes,
            "created_ms": snapshot.created_ms,
        })).collect::<Vec<_>>(),
        "tables": stats.tables.iter().map(|table| json!({
            "table": table.table,
            "total_bytes": table.total_bytes,
            "live_rows": table.live_rows,
            "dead_rows": table.dead_rows,
        })).collect::<Vec<_>>(),
    })
}

fn remote_human(out: &mut Out, target: &Path, stats: &RemoteStats) -> Result<()> {
    let range = stats.positions.map_or_else(
        || "none".to_owned(),
        |(first, last)| format!("{first}..={last}"),
    );
    out.line(format!(
        "log        {} (PostgreSQL {}, schema version {})",
        super::display_target(target),
        stats.target,
        stats.schema_version
    ))?;
    out.line(format!(
        "positions  {range} in the rows; last position given {} (purged events leave gaps)",
        stats.head_position
    ))?;
    let times = stats
        .timestamps
        .map_or_else(String::new, |(oldest, newest)| {
            format!(", {} .. {}", format_time(oldest), format_time(newest))
        });
    out.line(format!(
        "events     {} ({} payload bytes{times})",
        stats.events, stats.payload_bytes
    ))?;
    out.line("by kind")?;
    for (kind, count) in &stats.events_by_kind {
        out.line(format!("           {kind:<28} {count:>10}"))?;
    }
    out.line("by type")?;
    for (event_type, count) in &stats.events_by_type {
        out.line(format!("           {event_type:<28} {count:>10}"))?;
    }
    out.line(format!(
        "streams    {} ({} live, {} deleted, {} truncated; {} with events)",
        stats.streams,
        stats.live_streams,
        stats.deleted_streams,
        stats.truncated_streams,
        stats.streams_with_events
    ))?;
    out.line("largest")?;
    for stream in &stats.largest_streams {
        out.line(format!(
            "           {:<28} {:>10} events {:>12} bytes",
            stream.stream, stream.events, stream.bytes
        ))?;
    }
    match stats.snapshots.first() {
        None => out.line("snapshots  none (an open replays the whole log)")?,
        Some(newest) => out.line(format!(
            "snapshots  {} (newest at position {}, {} bytes, stored {}: an open replays only \
             what follows)",
            stats.snapshot_count,
            newest.position,
            newest.bytes,
            format_time(newest.created_ms)
        ))?,
    }
    out.line("tables     (on disk with indexes and TOAST; dead rows: removed, not yet reclaimed by VACUUM)")?;
    for table in &stats.tables {
        out.line(format!(
            "           {:<28} {:>12} bytes {:>10} rows {:>8} dead",
            table.table, table.total_bytes, table.live_rows, table.dead_rows
        ))?;
    }
    Ok(())
}
