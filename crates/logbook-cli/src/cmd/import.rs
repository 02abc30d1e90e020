//! `import`: a JSON file a service keeps today (a task registry, a room file, a run dump) made
//! into built-in events. A thin shell over [`logbook::import`]: it opens the log for writing
//! (a directory or a `postgres://` URL), reads the file (or stdin for `-`) and prints the
//! report. Must never: parse or write events itself.

use crate::Io;
use crate::model::{Builtin, Model};
use crate::output::{Out, Usage};
use anyhow::{Context, Result};
use clap::Args;
use logbook::import::{ImportFormat, ImportReport, import_file, import_spooled, spool};
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;

/// What `import --help` shows after the options.
pub const IMPORT_HELP: &str = "\
Formats (docs/import.md has every field and an example of each in tests/fixtures/import/):
  tasks  {\"version\": 1, \"tasks\": [{\"id\", \"status\", \"created_at_ms\", ...}]}  -> job/<id>
  room   {\"id\", \"name\", \"created_at_ms\", \"members\", \"messages\": [{\"id\", \"author\", \"body\", \"timestamp_ms\"}]}  -> room/<id>
  runs   {\"runs\": [{\"id\", \"kind\", \"agent_id\", \"status\", \"started_at_ms\", ...}]}  -> run/<id>
The whole file is checked before anything is written (an error names the JSON path, line and
column; exit 1, nothing written). Importing the same bytes again adds nothing: the marker
stream import/<sha256> records a finished import. An import cut short is completed by running
it again.";

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The log directory (created when missing; an existing one must be empty or a log), or a
    /// `postgres://` URL.
    dir: PathBuf,
    /// The JSON file, or `-` for stdin.
    file: PathBuf,
    /// The shape of the file: tasks, room or runs.
    #[arg(long)]
    format: String,
    /// One JSON object instead of a sentence.
    #[arg(long)]
    json: bool,
}

pub fn import(args: ImportArgs, io: &mut Io<'_>) -> Result<ExitCode> {
    let format: ImportFormat = args
        .format
        .parse()
        .map_err(|error: logbook::Error| Usage(format!("--format: {error}")))?;
    let stdin = args.file.as_os_str() == "-";
    if !stdin && !args.file.is_file() {
        return Err(Usage(format!("{}: no such file", args.file.display())).into());
    }
    // Stdin is copied to a temporary file first: the import reads its input twice.
    let spooled = match stdin {
        true => Some(spool(&mut *io.stdin).context("cannot read stdin")?),
        false => None,
    };
    if super::postgres_url(&args.dir).is_none() {
        super::require_log_or_empty(&args.dir)?;
    }
    let runtime = super::runtime()?;
    let log = Builtin::open(&runtime, &args.dir).with_context(|| {
        format!(
            "cannot open the log in {} for writing",
            super::display_target(&args.dir)
        )
    })?;
    let result = runtime.block_on(async {
        match spooled {
            Some(file) => import_spooled(&log, format, file).await,
            None => import_file(&log, format, &args.file).await,
        }
    });
    let closed = Builtin::close(&runtime, log);
    let report = result.with_context(|| format!("cannot import {}", args.file.display()))?;
    closed.context("closing the log")?;
    print(&report, args.json, io)?;
    Ok(ExitCode::SUCCESS)
}

fn print(report: &ImportReport, as_json: bool, io: &mut Io<'_>) -> Result<()> {
    let mut out = Out::to(&mut *io.stdout);
    if as_json {
        out.json(&json!({
            "format": report.format.as_str(),
            "sha256": report.sha256,
            "marker_stream": report.marker_stream,
            "already_imported": report.already_imported,
            "resumed_streams": report.resumed_streams,
            "input_bytes": report.input_bytes,
            "elements": report.elements,
            "entities": report.entities,
            "events": report.events,
            "events_written": report.events_written,
            "marker_position": report.marker_position,
            "element_bytes_largest": report.element_bytes_largest,
        }))?;
    } else if report.already_imported {
        out.line(format!(
            "already imported: {} holds the marker of this file (SHA-256 {}); nothing was added",
            report.marker_stream, report.sha256
        ))?;
    } else {
        let resumed = match report.resumed_streams {
            0 => String::new(),
            streams => format!(" (completed {streams} streams a previous attempt had started)"),
        };
        out.line(format!(
            "imported {} {} into {} streams: {} events written{resumed}, marker {} at position \
             {}",
            report.elements,
            report.format.elements_noun(),
            report.entities,
            report.events_written,
            report.marker_stream,
            report
                .marker_position
                .map_or("-".to_owned(), |p| p.to_string()),
        ))?;
    }
    out.flush()?;
    Ok(())
}
