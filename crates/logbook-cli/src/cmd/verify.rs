//! `verify`: exit 0 when nothing is corrupt, 1 when anything is, 2 for usage or I/O errors.

use crate::Io;
use crate::output::Out;
use crate::progress::Bar;
use anyhow::Result;
use clap::Args;
use logbook::inspect::{self, Severity};
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The log directory.
    dir: PathBuf,
    /// One JSON document: the verdict, what was checked, every finding.
    #[arg(long)]
    json: bool,
}

pub fn verify(args: VerifyArgs, io: &mut Io<'_>) -> Result<ExitCode> {
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
