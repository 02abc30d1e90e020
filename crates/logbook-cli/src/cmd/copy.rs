//! `copy`: a whole log from one home to another (a directory, a `postgres://` URL), either way,
//! positions and payload bytes kept. A thin shell over [`logbook::copy::copy_log`].

use crate::output::Out;
use anyhow::{Context, Result};
use clap::Args;
use logbook::copy::{Location, copy_log};
use serde_json::json;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct CopyArgs {
    /// The log to copy: a directory or a `postgres://` URL.
    from: String,
    /// Where to: a new (or empty) directory, or an empty PostgreSQL database by URL.
    to: String,
    /// One JSON document.
    #[arg(long)]
    json: bool,
}

pub fn copy(args: CopyArgs) -> Result<ExitCode> {
    let (from, to) = (Location::parse(&args.from), Location::parse(&args.to));
    let runtime = super::runtime()?;
    let report = runtime
        .block_on(copy_log(&from, &to))
        .with_context(|| format!("cannot copy {from} to {to}; nothing was written"))?;
    let mut out = Out::new();
    if args.json {
        out.json(&json!({
            "records": report.records,
            "hidden_skipped": report.hidden_skipped,
            "streams": report.streams,
            "last_position": report.last_position,
        }))?;
    } else {
        out.line(format!(
            "copied {} records of {} streams (last position {}) from {from} to {to}; {} records \
             hidden by deletes and truncations were left out",
            report.records, report.streams, report.last_position, report.hidden_skipped
        ))?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
