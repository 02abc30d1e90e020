//! `verify`: exit 0 when nothing is corrupt, 1 when anything is, 2 for usage or I/O errors (on a
//! `postgres://` URL: a URL that cannot be parsed, a server that cannot be reached). On a URL
//! the checks are `logbook::inspect::RemoteLog::verify`'s, read-only; findings name the table
//! and the row (`logbook_events position 5`).

use crate::Io;
use crate::output::Out;
use crate::progress::Bar;
use anyhow::{Context, Result};
use clap::Args;
use logbook::inspect::{self, RemoteVerifyReport, Severity};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The log directory, or a `postgres://` URL (read-only: no schema change, no write).
    dir: PathBuf,
    /// One JSON document: the verdict, what was checked, every finding.
    #[arg(long)]
    json: bool,
}

pub fn verify(args: VerifyArgs, io: &mut Io<'_>) -> Result<ExitCode> {
    if let Some(url) = super::postgres_url(&args.dir) {
        let report = verify_remote(&args.dir, &url)?;
        let mut out = Out::to(&mut *io.stdout);
        match args.json {
            true => out.json(&remote_json(&report))?,
            false => remote_human(&mut out, &report)?,
        }
        out.flush()?;
        return Ok(remote_exit_code(&report));
    }
    super::require_log(&args.dir)?;
    let report = inspect::verify(&args.dir, &Bar::new())?;
    let mut out = Out::to(&mut *io.stdout);
    if args.json {
        if report.creation_unfinished {
            super::note_unfinished(&args.dir);
        }
        let findings: Vec<_> = report
            .findings
            .iter()
            .map(|finding| {
                json!({
                    "severity": finding.severity.as_str(),
                    "file": finding.file.display().to_string(),
                    "offset": finding.offset,
                    "reason": finding.reason,
                })
            })
            .collect();
        out.json(&json!({
            "clean": report.is_clean(),
            "segments": report.segments,
            "bytes": report.bytes,
            "frames": report.frames,
            "events": report.events,
            "checks": report.checks,
            "findings": findings,
            "findings_not_listed": report.findings_not_listed,
            "snapshots": report.snapshots,
            "unchecked": report.unchecked,
            "creation_unfinished": report.creation_unfinished,
        }))?;
    } else {
        for finding in &report.findings {
            out.line(format!(
                "{}: {} at byte offset {}: {}",
                finding.severity.as_str(),
                finding.file.display(),
                finding.offset,
                finding.reason
            ))?;
        }
        if report.findings_not_listed > 0 {
            out.line(format!(
                "corrupt: {} more findings not listed",
                report.findings_not_listed
            ))?;
        }
        if report.creation_unfinished {
            out.line(format!("note: {}", inspect::CREATION_UNFINISHED))?;
        }
        let corrupt = report
            .findings
            .iter()
            .filter(|finding| finding.severity == Severity::Corruption)
            .count() as u64
            + report.findings_not_listed;
        let verdict = if report.is_clean() {
            "ok".to_owned()
        } else {
            format!("CORRUPT ({corrupt} problems)")
        };
        out.line(format!(
            "{verdict}: {} segments, {} snapshots, {} bytes, {} frames, {} events checked",
            report.segments, report.snapshots, report.bytes, report.frames, report.events,
        ))?;
        out.line(format!("checked: {}", report.checks.join("; ")))?;
        for unchecked in &report.unchecked {
            out.line(format!("not checked: {unchecked}"))?;
        }
    }
    out.flush()?;
    Ok(if report.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Runs the checks on the log in the database at `url` (`target` as given, for messages).
pub fn verify_remote(target: &Path, url: &str) -> Result<RemoteVerifyReport> {
    let runtime = super::runtime()?;
    let log = super::remote_log(&runtime, target, url)?;
    runtime.block_on(log.verify()).with_context(|| {
        format!(
            "verifying the PostgreSQL database {} failed before every row was checked",
            super::display_target(target)
        )
    })
}

/// 0 when the database's log is clean, 1 (as for a corrupt directory) when it is not.
pub fn remote_exit_code(report: &RemoteVerifyReport) -> ExitCode {
    match report.is_clean() {
        true => ExitCode::SUCCESS,
        false => ExitCode::from(1),
    }
}

/// The report's findings as JSON objects.
pub fn remote_findings_json(report: &RemoteVerifyReport) -> Vec<serde_json::Value> {
    report
        .findings
        .iter()
        .map(|finding| {
            json!({
                "severity": finding.severity.as_str(),
                "table": finding.table,
                "row": finding.row,
                "reason": finding.reason,
            })
        })
        .collect()
}

fn remote_json(report: &RemoteVerifyReport) -> serde_json::Value {
    json!({
        "clean": report.is_clean(),
        "backend": "postgres",
        "target": report.target,
        "schema_version": report.schema_version,
        "head_position": report.head_position,
        "events": report.events,
        "bytes": report.bytes,
        "streams": report.streams,
        "snapshots": report.snapshots,
        "checks": report.checks,
        "findings": remote_findings_json(report),
        "findings_not_listed": report.findings_not_listed,
    })
}

/// One line per finding (`corrupt: logbook_events position 5: ...`).
pub fn remote_finding_lines(out: &mut Out, report: &RemoteVerifyReport) -> Result<()> {
    for finding in &report.findings {
        out.line(format!(
            "{}: {} {}: {}",
            finding.severity.as_str(),
            finding.table,
            finding.row,
            finding.reason
        ))?;
    }
    if report.findings_not_listed > 0 {
        out.line(format!(
            "corrupt: {} more findings not listed ({} of them corruption)",
            report.findings_not_listed, report.corruptions_not_listed
        ))?;
    }
    Ok(())
}

fn remote_human(out: &mut Out, report: &RemoteVerifyReport) -> Result<()> {
    remote_finding_lines(out, report)?;
    let verdict = match report.is_clean() {
        true => "ok".to_owned(),
        false => format!("CORRUPT ({} problems)", report.corruptions()),
    };
    out.line(format!(
        "{verdict}: PostgreSQL {} (schema version {}): {} events, {} streams, {} snapshots, {} \
         bytes checked; last position given {}",
        report.target,
        report.schema_version,
        report.events,
        report.streams,
        report.snapshots,
        report.bytes,
        report.head_position
    ))?;
    out.line(format!("checked: {}", report.checks.join("; ")))?;
    Ok(())
}
