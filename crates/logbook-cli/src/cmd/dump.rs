//! `dump` (events or raw frames) and `tail` (the last events, then follow), on a directory or
//! a `postgres://` URL (read-only: `logbook::inspect::RemoteEvents` and `RemoteLog`).

use crate::Io;
use crate::model::Model;
use crate::output::{self, Out};
use anyhow::{Context, Result};
use clap::Args;
use logbook::inspect::{self, EventFilter, FrameEntry};
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// How often `tail -f` looks for new durable events.
const FOLLOW_POLL_INTERVAL: Duration = Duration::from_millis(100);

#[derive(Debug, Args)]
pub struct DumpArgs {
    /// The log directory, or a `postgres://` URL (read-only: no schema change, no write).
    dir: PathBuf,
    /// The first position (inclusive).
    #[arg(long)]
    from: Option<u64>,
    /// The last position (inclusive).
    #[arg(long)]
    to: Option<u64>,
    /// Only this stream (e.g. room/lobby).
    #[arg(long)]
    stream: Option<String>,
    /// Only this event type (e.g. room.message_posted).
    #[arg(long = "type", value_name = "TYPE")]
    event_type: Option<String>,
    /// At most this many events (or frames).
    #[arg(long)]
    limit: Option<usize>,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
    /// Raw frame headers and byte offsets instead of events (debugging the format).
    #[arg(long)]
    frames: bool,
}

impl DumpArgs {
    fn filter(&self) -> EventFilter {
        EventFilter {
            from: self.from,
            to: self.to,
            stream: self.stream.clone(),
            event_type: self.event_type.clone(),
            limit: self.limit,
        }
    }
}

pub fn dump<M: Model>(args: DumpArgs, io: &mut Io<'_>) -> Result<ExitCode> {
    if let Some(url) = super::postgres_url(&args.dir) {
        return dump_postgres::<M>(&url, &args, io);
    }
    if args.frames {
        return dump_frames(&args, io);
    }
    let inspector = super::inspector(&args.dir)?;
    let mut out = Out::to(&mut *io.stdout);
    for raw in inspector.events(&args.filter()) {
        let raw = match raw {
            Ok(raw) => raw,
            Err(error) => {
                out.flush()?;
                return Err(super::read_error(&args.dir, error));
            }
        };
        if args.json {
            out.json(&output::event_json::<M>(&raw))?;
        } else {
            out.line(output::event_line::<M>(&raw))?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// `dump` of a log in a PostgreSQL database: the same lines, read page by page.
fn dump_postgres<M: Model>(url: &str, args: &DumpArgs, io: &mut Io<'_>) -> Result<ExitCode> {
    if args.frames {
        return Err(super::Usage(
            "--frames shows WAL frames: a PostgreSQL database has none".to_string(),
        )
        .into());
    }
    let runtime = super::runtime()?;
    let mut events = runtime
        .block_on(inspect::RemoteEvents::open(url, args.filter()))
        .context("cannot read the log in the PostgreSQL database")?;
    let mut out = Out::to(&mut *io.stdout);
    loop {
        let page = runtime
            .block_on(events.next_page())
            .context("reading the PostgreSQL database failed")?;
        if page.is_empty() {
            break;
        }
        for raw in &page {
            if args.json {
                out.json(&output::event_json::<M>(raw))?;
            } else {
                out.line(output::event_line::<M>(raw))?;
            }
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn frame_selected(filter: &EventFilter, entry: &FrameEntry) -> bool {
    let Ok(frame) = &entry.frame else {
        return true; // Bad spots are always shown.
    };
    let event = frame.event.as_ref();
    filter.from.is_none_or(|from| frame.position >= from)
        && filter.to.is_none_or(|to| frame.position <= to)
        && filter
            .stream
            .as_ref()
            .is_none_or(|stream| event.is_some_and(|(name, _, _)| name == stream))
        && filter
            .event_type
            .as_ref()
            .is_none_or(|wanted| event.is_some_and(|(_, _, event_type)| event_type == wanted))
}

fn dump_frames(args: &DumpArgs, io: &mut Io<'_>) -> Result<ExitCode> {
    super::require_log(&args.dir)?;
    let filter = args.filter();
    let entries = inspect::frames(&args.dir)?;
    if inspect::creation_unfinished(&args.dir)? {
        super::note_unfinished(&args.dir);
    }
    let mut out = Out::to(&mut *io.stdout);
    let selected = entries
        .iter()
        .filter(|entry| frame_selected(&filter, entry))
        .take(args.limit.unwrap_or(usize::MAX));
    for entry in selected {
        let file = entry.segment.file_name().map_or_else(
            || entry.segment.display().to_string(),
            |name| name.to_string_lossy().into_owned(),
        );
        match (&entry.frame, args.json) {
            (Ok(frame), true) => out.json(&json!({
                "segment": file,
                "offset": entry.offset,
                "payload_len": frame.payload_len,
                "crc": frame.crc,
                "position": frame.position,
                "durable_mark": frame.durable_mark,
                "flags": frame.flags,
                "stream": frame.event.as_ref().map(|(stream, _, _)| stream),
                "version": frame.event.as_ref().map(|(_, version, _)| version),
                "type": frame.event.as_ref().map(|(_, _, event_type)| event_type),
            }))?,
            (Err(reason), true) => out.json(&json!({
                "segment": file,
                "offset": entry.offset,
                "error": reason,
            }))?,
            (Ok(frame), false) => {
                let batch = match (frame.flags & 1 != 0, frame.flags & 2 != 0) {
                    (true, true) => "single",
                    (true, false) => "first",
                    (false, true) => "last",
                    (false, false) => "middle",
                };
                let event = frame.event.as_ref().map_or_else(
                    || "<not an event envelope>".to_owned(),
                    |(stream, version, event_type)| format!("{stream}@{version} {event_type}"),
                );
                out.line(format!(
                    "{file} @{:>10}  position {:>8}  len {:>7}  crc {:08x}  mark {:>8}  {batch:<6}  {event}",
                    entry.offset, frame.position, frame.payload_len, frame.crc, frame.durable_mark
                ))?;
            }
            (Err(reason), false) => {
                out.line(format!("{file} @{:>10}  BAD: {reason}", entry.offset))?;
            }
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub struct TailArgs {
    /// The log directory, or a `postgres://` URL (read-only: no schema change, no write).
    dir: PathBuf,
    /// How many of the last events to print.
    #[arg(short = 'n', long = "lines", default_value_t = 10)]
    count: usize,
    /// Keep following: print new events as they become durable (read-only, no lock).
    #[arg(short, long)]
    follow: bool,
    /// One JSON object per line (as `dump --json`).
    #[arg(long)]
    json: bool,
}

pub fn tail<M: Model>(args: TailArgs, io: &mut Io<'_>) -> Result<ExitCode> {
    if let Some(url) = super::postgres_url(&args.dir) {
        return tail_postgres::<M>(&url, &args, io);
    }
    let inspector = super::inspector(&args.dir)?;
    let mut out = Out::to(&mut *io.stdout);
    let print = |out: &mut Out<'_>, raw: &logbook::RawEvent| -> Result<()> {
        match args.json {
            true => out.json(&output::event_json::<M>(raw))?,
            false => out.line(output::event_line::<M>(raw))?,
        }
        out.flush()
    };
    let mut next = 1;
    let last = inspector
        .last_events(args.count)
        .map_err(|error| super::read_error(&args.dir, error))?;
    for raw in last {
        print(&mut out, &raw)?;
        next = raw.position + 1;
    }
    out.flush()?;
    if let Some(damage) = inspector.damage() {
        // The last events before the damage are printed; the log goes on after it.
        let note = "the events above are the last ones before the damage";
        return Err(super::damage_error(&args.dir, damage, note));
    }
    if !args.follow {
        return Ok(ExitCode::SUCCESS);
    }
    next = next.max(inspector.last_position() + 1);
    let filter = EventFilter {
        from: Some(next),
        ..EventFilter::default()
    };
    let mut events = inspector.events(&filter);
    loop {
        for raw in events.by_ref() {
            let raw = raw.map_err(|error| super::read_error(&args.dir, error))?;
            print(&mut out, &raw)?;
        }
        std::thread::sleep(FOLLOW_POLL_INTERVAL);
        inspector.refresh()?;
    }
}

/// How long `tail -f` on a URL waits for a page before it looks again (the follower wakes at
/// once on the writers' `NOTIFY`; this only bounds a wait).
const REMOTE_FOLLOW_WAIT: Duration = Duration::from_secs(1);

/// `tail` of a log in a PostgreSQL database: the last events, then (with `-f`) every new one
/// in position order, woken by the writers' `NOTIFY` and polling as a safety net. A server
/// that goes away while following is waited for (retried), as a replica's follower does.
fn tail_postgres<M: Model>(url: &str, args: &TailArgs, io: &mut Io<'_>) -> Result<ExitCode> {
    let runtime = super::runtime()?;
    let log = super::remote_log(&runtime, &args.dir, url)?;
    let failed = || {
        format!(
            "reading the PostgreSQL database {} failed",
            super::display_target(&args.dir)
        )
    };
    let mut out = Out::to(&mut *io.stdout);
    let print = |out: &mut Out<'_>, raw: &logbook::RawEvent| -> Result<()> {
        match args.json {
            true => out.json(&output::event_json::<M>(raw)),
            false => out.line(output::event_line::<M>(raw)),
        }
    };
    let head = runtime.block_on(log.last_position()).with_context(failed)?;
    let start = runtime
        .block_on(log.start_of_last(args.count))
        .with_context(failed)?;
    if let Some(mut next) = start {
        while next <= head {
            let page = runtime
                .block_on(log.events_from(next, inspect::REMOTE_PAGE_EVENTS))
                .with_context(failed)?;
            let Some(last) = page.last().map(|raw| raw.position) else {
                break;
            };
            for raw in page.iter().filter(|raw| raw.position <= head) {
                print(&mut out, raw)?;
            }
            next = last + 1;
        }
    }
    out.flush()?;
    if !args.follow {
        return Ok(ExitCode::SUCCESS);
    }
    let _guard = runtime.enter();
    let mut follower = log.follow(head + 1);
    loop {
        match runtime.block_on(follower.next_page_within(REMOTE_FOLLOW_WAIT)) {
            Ok(page) => {
                for raw in &page {
                    print(&mut out, raw)?;
                }
                out.flush()?;
            }
            Err(logbook::Error::Postgres(error)) if error.is_retryable() => {
                std::thread::sleep(FOLLOW_POLL_INTERVAL);
            }
            Err(error) => return Err(anyhow::Error::new(error).context(failed())),
        }
    }
}
