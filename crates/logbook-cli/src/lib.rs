//! The `logbook` command-line tool, as a library: look inside a log, check it, repair it, write
//! to it; the `logbook` binary for the built-in event model, and the same tool for a service's
//! own events.
//!
//! A service ships its own binary (say `mylog`) whose `dump`, `tail` and `append` show and
//! accept its events as their serde JSON (`examples/mylog.rs` is a whole one); its `main` is
//! three lines:
//!
//! ```no_run
//! # use logbook::{EventResult, codec};
//! #[derive(serde::Serialize, serde::Deserialize)]
//! enum MyEvent {
//!     Started { name: String },
//!     Finished,
//! }
//!
//! impl logbook::Event for MyEvent {
//!     // ...
//! #   fn event_type(&self) -> &'static str {
//! #       match self { MyEvent::Started { .. } => "task.started", MyEvent::Finished => "task.finished" }
//! #   }
//! #   fn schema_version(&self) -> u16 { 1 }
//! #   fn encode_payload(&self) -> EventResult<Vec<u8>> { codec::encode(self) }
//! #   fn decode_payload(_: &str, _: u16, payload: &[u8]) -> EventResult<Self> {
//! #       codec::decode(payload, 64 * 1024)
//! #   }
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     logbook_cli::run::<MyEvent>()
//! }
//! ```
//!
//! What a custom binary gets ([`run`]): `dump`, `tail`, `append`, `verify`, `stats`, `repair`,
//! `delete-stream`, `truncate-stream`, `copy` and `consumers`, as in `logbook` (same options, exit codes and output
//! keys). An event's `data` is its serde JSON (`serde_json::to_value(&event)`), and an `append`
//! line's `data` is read back with `serde_json::from_value`, so `dump --json` piped through
//! `jq -c '{stream, type, data}'` appends the same events again; an `append` line's `type` may be
//! left out (when given it must be the event's `Event::event_type`). Left out, because they
//! belong to the built-in model or need the service's projections: `state`, `types`,
//! `snapshot`, `compact` and `demo` (a service takes snapshots and compacts through its own
//! engine, which knows its projections). The program name in help and usage text is the
//! binary's file name ([`run`]) or the one given ([`run_named`]). Tests run the tool in process
//! with [`run_with`], which reads and writes the given streams instead of the process's.
//!
//! Exit codes: 0 success; 1 a failed operation or, for `verify`, a corrupt log; 2 usage and
//! I/O errors (a missing directory, a directory that is not a log, a PostgreSQL URL that cannot
//! be parsed, a server that cannot be reached).
//!
//! Every command that takes a log directory also takes a `postgres://` URL; `dump`, `stats`,
//! `verify`, `tail`, `state` and `repair` open it read-only (`logbook::inspect::RemoteLog`,
//! `RemoteEvents`).
//!
//! Owns: argument parsing, formatting and exit codes. Every read goes through
//! `logbook::inspect` (read-only, no lock, never a byte written), every write through the
//! engine (`logbook::BuiltinLog` or `logbook::Logbook`). Must never: be depended on by the
//! engine crates (the dependency goes one way: `logbook-cli` uses `logbook`), or change the
//! output of the built-in `logbook` binary for the sake of custom binaries.
#![forbid(unsafe_code)]

mod cmd;
mod demo;
mod model;
mod output;
mod progress;

use clap::{Parser, Subcommand};
use logbook::Event;
use model::{Builtin, Model, Serde};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::ffi::OsString;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

/// The streams a run of the tool reads and writes: the process's own ([`run`], [`run_from`])
/// or any others ([`run_with`], for tests). Progress bars and a few notes (`note: ... the log's
/// creation was not finished`) always go to the process's stderr.
pub struct Io<'a> {
    /// What `append` reads its lines from.
    pub stdin: &'a mut dyn BufRead,
    /// Where the output goes.
    pub stdout: &'a mut dyn Write,
    /// Where the one-line error goes.
    pub stderr: &'a mut dyn Write,
}

/// Look inside a logbook log, check it, repair it, write to it.
#[derive(Debug, Parser)]
#[command(name = "logbook", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    #[command(flatten)]
    Common(CommonCommand),
    /// Rebuild the built-in projections and print runs, workflows, rooms or jobs.
    State(cmd::state::StateArgs),
    /// Take projection snapshots (comes with compaction).
    Snapshot(cmd::maintenance::MaintenanceArgs),
    /// Compact the log and print what was reclaimed (comes with compaction).
    Compact(cmd::maintenance::MaintenanceArgs),
    /// List the built-in event types `append` accepts: fields, schema versions, streams.
    Types(cmd::types::TypesArgs),
    /// Import a JSON file a service keeps today (a task registry, a room file, a run dump)
    /// as built-in events: checked whole first, written once (a second import adds nothing).
    #[command(after_help = cmd::import::IMPORT_HELP)]
    Import(cmd::import::ImportArgs),
    /// Simulate an agent service, kill it with SIGKILL mid-work, and show the recovery.
    Demo(demo::DemoArgs),
    /// The demo's writer process (started by `demo`).
    #[command(name = "__demo-writer", hide = true)]
    DemoWriter {
        /// The log directory.
        dir: PathBuf,
    },
}

/// Look inside a log of this service's events, check it, repair it, write to it.
#[derive(Debug, Parser)]
struct CustomCli {
    #[command(subcommand)]
    command: CommonCommand,
}

/// The commands every binary has, the `logbook` binary and a service's own: those that do not
/// depend on the built-in model or on the service's projections. `append`'s after-help (the
/// line format) is the built-in one here; [`parse_custom`] puts the custom one in its place.
#[derive(Debug, Subcommand)]
enum CommonCommand {
    /// Print events in position order (or raw frames with --frames).
    Dump(cmd::dump::DumpArgs),
    /// Check every segment header, frame checksum and event (on a postgres:// URL every row,
    /// read-only); exit 1 when anything is corrupt.
    Verify(cmd::verify::VerifyArgs),
    /// Segments, events by type and stream kind, largest streams, reclaimable garbage (on a
    /// postgres:// URL: rows, streams, snapshots and table sizes, read-only).
    Stats(cmd::stats::StatsArgs),
    /// The last events; with -f, follow new ones as they become durable.
    Tail(cmd::dump::TailArgs),
    /// Salvage a damaged log: cut a torn tail, and cut at the first corruption or, with
    /// --keep-intact, drop only the damaged frames (only with --yes). On a postgres:// URL it
    /// only checks: PostgreSQL has nothing to cut.
    Repair(cmd::repair::RepairArgs),
    /// Append newline-delimited JSON events from stdin, acknowledging each once durable.
    #[command(after_help = cmd::write::APPEND_HELP)]
    Append(cmd::write::AppendArgs),
    /// Delete a stream (a tombstone, or with --soft a reusable delete; compaction removes its
    /// bytes). A stream that never had an event is an error.
    DeleteStream(cmd::write::DeleteArgs),
    /// Hide a stream's events below a version (compaction removes their bytes).
    TruncateStream(cmd::write::TruncateArgs),
    /// Copy a whole log between a directory and a PostgreSQL database (`postgres://...`),
    /// either way: positions, versions and payload bytes kept; the target must be new or empty.
    Copy(cmd::copy::CopyArgs),
    Consumers(cmd::consumers::ConsumersArgs),
}

fn run_builtin_command(command: Command, io: &mut Io<'_>) -> anyhow::Result<ExitCode> {
    match command {
        Command::Common(command) => run_common_command::<Builtin>(command, io),
        Command::State(args) => cmd::state::state(args),
        Command::Snapshot(args) => cmd::maintenance::snapshot(args),
        Command::Compact(args) => cmd::maintenance::compact(args),
        Command::Types(args) => cmd::types::types(args),
        Command::Import(args) => cmd::import::import(args, io),
        Command::Demo(args) => demo::demo(args),
        Command::DemoWriter { dir } => demo::writer::run(&dir),
    }
}

fn run_common_command<M: Model>(
    command: CommonCommand,
    io: &mut Io<'_>,
) -> anyhow::Result<ExitCode> {
    match command {
        CommonCommand::Dump(args) => cmd::dump::dump::<M>(args, io),
        CommonCommand::Verify(args) => cmd::verify::verify(args, io),
        CommonCommand::Stats(args) => cmd::stats::stats(args, io),
        CommonCommand::Tail(args) => cmd::dump::tail::<M>(args, io),
        CommonCommand::Repair(args) => cmd::repair::repair(args, io),
        CommonCommand::Append(args) => cmd::write::append::<M>(args, io),
        CommonCommand::DeleteStream(args) => cmd::write::delete_stream::<M>(args, io),
        CommonCommand::TruncateStream(args) => cmd::write::truncate_stream::<M>(args, io),
        CommonCommand::Copy(args) => cmd::copy::copy(args),
        CommonCommand::Consumers(args) => cmd::consumers::consumers::<M>(args, io),
    }
}

/// The exit code of a command's result; an error is one line on `stderr`.
fn finish(result: anyhow::Result<ExitCode>, stderr: &mut dyn Write) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(error) if error.is::<output::BrokenPipe>() => ExitCode::SUCCESS,
        Err(error) => {
            // Nothing is left to tell when stderr itself cannot be written.
            let _ = writeln!(
                stderr,
                "error: {}{}",
                output::one_line(&error),
                output::lock_holder_note(&error)
            );
            ExitCode::from(output::exit_code(&error))
        }
    }
}

/// Runs `command` with the process's own stdin, stdout and stderr.
fn with_process_io(command: impl FnOnce(&mut Io<'_>) -> ExitCode) -> ExitCode {
    let stdin = std::io::stdin();
    let mut stdin = stdin.lock();
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    command(&mut Io {
        stdin: &mut stdin,
        stdout: &mut stdout,
        stderr: &mut stderr,
    })
}

/// The `logbook` binary: the built-in event model, every command, arguments from the process.
pub fn run_builtin() -> ExitCode {
    let cli = Cli::parse();
    with_process_io(|io| {
        let result = run_builtin_command(cli.command, io);
        finish(result, io.stderr)
    })
}

/// The tool for a service's own events `E`, arguments from the process; the program name in
/// help and usage text is the binary's file name. See the crate docs for what it offers.
pub fn run<E>() -> ExitCode
where
    E: Event + Serialize + DeserializeOwned,
{
    run_from::<E, _, _>(std::env::args_os())
}

/// [`run`] with the program name `name` in help and usage text (e.g. `"mylog"`).
pub fn run_named<E>(name: &'static str) -> ExitCode
where
    E: Event + Serialize + DeserializeOwned,
{
    let mut args = std::env::args_os();
    let _ = args.next();
    run_from::<E, _, _>(std::iter::once(OsString::from(name)).chain(args))
}

/// [`run`] with the given arguments (the first is the program name) and the process's own
/// stdin, stdout and stderr. `--help`, `--version` and usage errors print and exit as clap does.
pub fn run_from<E, I, T>(args: I) -> ExitCode
where
    E: Event + Serialize + DeserializeOwned,
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let command = match parse_custom(args) {
        Ok(command) => command,
        Err(error) => error.exit(),
    };
    with_process_io(|io| {
        let result = run_common_command::<Serde<E>>(command, io);
        finish(result, io.stderr)
    })
}

/// [`run_from`] reading and writing the given streams instead of the process's (what tests
/// call): help and usage errors are written to `io` too, with clap's exit code.
pub fn run_with<E, I, T>(args: I, io: &mut Io<'_>) -> ExitCode
where
    E: Event + Serialize + DeserializeOwned,
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let command = match parse_custom(args) {
        Ok(command) => command,
        Err(error) => {
            let text = error.render().to_string();
            let sink = match error.use_stderr() {
                true => &mut *io.stderr,
                false => &mut *io.stdout,
            };
            // Nothing is left to tell when the stream itself cannot be written.
            let _ = sink.write_all(text.as_bytes());
            let code = u8::try_from(error.exit_code()).unwrap_or(2);
            return ExitCode::from(code);
        }
    };
    let result = run_common_command::<Serde<E>>(command, io);
    finish(result, io.stderr)
}

/// The custom binary's command line; the program name in help and usage text comes from the
/// first argument (clap's `bin_name`).
fn parse_custom<I, T>(args: I) -> Result<CommonCommand, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    use clap::{CommandFactory, FromArgMatches};
    let command = CustomCli::command().mut_subcommand("append", |append| {
        append.after_help(cmd::write::CUSTOM_APPEND_HELP)
    });
    let matches = command.try_get_matches_from(args)?;
    CustomCli::from_arg_matches(&matches).map(|cli| cli.command)
}
