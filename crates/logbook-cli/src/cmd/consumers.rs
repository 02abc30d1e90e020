//! `consumers`: the durable consumers of a log (a directory or a `postgres://` URL) with their
//! positions, lag and last checkpoint time; `--reset NAME --to P` (an operator's action)
//! appends a checkpoint so that consumer resumes after P.
//!
//! Owns: the command line, the listing's text and JSON, the reset's message. Must never: write
//! when listing (the list is read-only, no lock, beside a live writer), or reset a consumer
//! past the log's durable position (refused, exit 1).

use crate::Io;
use crate::model::Model;
use crate::output::{Out, Usage, format_time};
use anyhow::{Context, Result};
use clap::Args;
use logbook::inspect::ConsumerInfo;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct ConsumersArgs {
    /// The log directory, or a `postgres://` URL (listing is read-only).
    dir: PathBuf,
    /// One JSON object per consumer, one per line.
    #[arg(long)]
    json: bool,
    /// Reset this consumer (an operator's action; needs --to): it resumes after --to the
    /// next time it is opened, and a handle open now fails at its next checkpoint.
    #[arg(long, value_name = "NAME", requires = "to")]
    reset: Option<String>,
    /// The position the reset consumer resumes after (0: the whole log again; at most the
    /// log's durable position).
    #[arg(long, value_name = "P", requires = "reset")]
    to: Option<u64>,
}

pub fn consumers<M: Model>(args: ConsumersArgs, io: &mut Io<'_>) -> Result<ExitCode> {
    if let (Some(name), Some(to)) = (&args.reset, args.to) {
        return reset::<M>(&args.dir, name, to, io);
    }
    let listed = list(&args.dir)?;
    let mut out = Out::to(&mut *io.stdout);
    if args.json {
        for consumer in &listed {
            out.json(&to_json(consumer))?;
        }
    } else if listed.is_empty() {
        out.line("no durable consumers (none has written a checkpoint)")?;
    } else {
        out.line(format!(
            "{:<32} {:>12} {:>12}  last checkpoint",
            "consumer", "position", "lag"
        ))?;
        for consumer in &listed {
            out.line(format!(
                "{:<32} {:>12} {:>12}  {} (position {})",
                consumer.name,
                consumer.position,
                consumer.lag,
                format_time(consumer.checkpointed_at_ms),
                consumer.checkpoint_position
            ))?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// The consumers of a directory or a database, read-only.
pub fn list(dir: &Path) -> Result<Vec<ConsumerInfo>> {
    if let Some(url) = super::postgres_url(dir) {
        let runtime = super::runtime()?;
        let log = super::remote_log(&runtime, dir, &url)?;
        return runtime.block_on(log.consumers()).with_context(|| {
            format!(
                "reading the PostgreSQL database {} failed",
                super::display_target(dir)
            )
        });
    }
    let inspector = super::inspector(dir)?;
    inspector
        .consumers()
        .map_err(|error| super::read_error(dir, error))
}

/// A consumer as one JSON object (`logbook consumers --json`, `logbook stats --json`).
pub fn to_json(consumer: &ConsumerInfo) -> serde_json::Value {
    json!({
        "name": consumer.name,
        "position": consumer.position,
        "lag": consumer.lag,
        "checkpoint_position": consumer.checkpoint_position,
        "checkpointed_at_ms": consumer.checkpointed_at_ms,
    })
}

fn reset<M: Model>(dir: &Path, name: &str, to: u64, io: &mut Io<'_>) -> Result<ExitCode> {
    logbook::consumer::consumer_stream(name).map_err(|error| Usage(format!("--reset: {error}")))?;
    if super::postgres_url(dir).is_none() {
        super::require_log(dir)?;
    }
    let runtime = super::runtime()?;
    let log = M::open(&runtime, dir).with_context(|| {
        format!(
            "cannot open the log in {} for writing",
            super::display_target(dir)
        )
    })?;
    let result = runtime.block_on(M::logbook(&log).reset_consumer(name, to));
    let closed = M::close(&runtime, log);
    result.with_context(|| format!("cannot reset consumer {name}"))?;
    closed.context("closing the log")?;
    Out::to(&mut *io.stdout).line(format!(
        "reset consumer {name}: it resumes after position {to} when it is next opened (a \
         handle open now fails at its next checkpoint)"
    ))?;
    Ok(ExitCode::SUCCESS)
}
