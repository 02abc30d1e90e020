//! `logbook`: look inside a log, check it, repair it, write to it, and watch the demo.
//!
//! A thin shell over the engine crate: every read goes through `logbook::inspect` (read-only,
//! no lock, never a byte written), every write through `logbook::BuiltinLog`. This crate holds
//! argument parsing, formatting and exit codes only.
//!
//! Exit codes: 0 success; 1 a failed operation or, for `verify`, a corrupt log; 2 usage and
//! I/O errors (a missing directory, a directory that is not a log).
#![forbid(unsafe_code)]

mod cmd;
mod demo;
mod output;
mod progress;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Look inside a logbook log, check it, repair it, write to it.
#[derive(Debug, Parser)]
#[command(name = "logbook", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print events in position order (or raw frames with --frames).
    Dump(cmd::dump::DumpArgs),
    /// Check every segment header, frame checksum and event; exit 1 when anything is corrupt.
    Verify(cmd::verify::VerifyArgs),
    /// Segments, events by type and stream kind, largest streams, reclaimable garbage.
    Stats(cmd::stats::StatsArgs),
    /// The last events; with -f, follow new ones as they become durable.
    Tail(cmd::dump::TailArgs),
    /// Rebuild the built-in projections and print runs, workflows, rooms or jobs.
    State(cmd::state::StateArgs),
    /// Take projection snapshots (comes with compaction).
    Snapshot(cmd::maintenance::MaintenanceArgs),
    /// Compact the log and print what was reclaimed (comes with compaction).
    Compact(cmd::maintenance::MaintenanceArgs),
    /// Salvage a damaged log: cut a torn tail, and cut at the first corruption or, with
    /// --keep-intact, drop only the damaged frames (only with --yes).
    Repair(cmd::repair::RepairArgs),
    /// Append newline-delimited JSON events from stdin, acknowledging each once durable.
    #[command(after_help = cmd::write::APPEND_HELP)]
    Append(cmd::write::AppendArgs),
    /// List the built-in event types `append` accepts: fields, schema versions, streams.
    Types(cmd::types::TypesArgs),
    /// Delete a stream (a tombstone; compaction removes its bytes).
    DeleteStream(cmd::write::DeleteArgs),
    /// Hide a stream's events below a version (compaction removes their bytes).
    TruncateStream(cmd::write::TruncateArgs),
    /// Simulate an agent service, kill it with SIGKILL mid-work, and show the recovery.
    Demo(demo::DemoArgs),
    /// The demo's writer process (started by `demo`).
    #[command(name = "__demo-writer", hide = true)]
    DemoWriter {
        /// The log directory.
        dir: PathBuf,
    },
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Dump(args) => cmd::dump::dump(args),
        Command::Verify(args) => cmd::verify::verify(args),
        Command::Stats(args) => cmd::stats::stats(args),
        Command::Tail(args) => cmd::dump::tail(args),
        Command::State(args) => cmd::state::state(args),
        Command::Snapshot(args) => cmd::maintenance::snapshot(args),
        Command::Compact(args) => cmd::maintenance::compact(args),
        Command::Repair(args) => cmd::repair::repair(args),
        Command::Append(args) => cmd::write::append(args),
        Command::Types(args) => cmd::types::types(args),
        Command::DeleteStream(args) => cmd::write::delete_stream(args),
        Command::TruncateStream(args) => cmd::write::truncate_stream(args),
        Command::Demo(args) => demo::demo(args),
        Command::DemoWriter { dir } => demo::writer::run(&dir),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(error) if error.is::<output::BrokenPipe>() => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!(
                "error: {}{}",
                output::one_line(&error),
                output::lock_holder_note(&error)
            );
            ExitCode::from(output::exit_code(&error))
        }
    }
}
