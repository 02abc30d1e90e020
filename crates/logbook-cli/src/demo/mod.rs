//! `demo <dir>`: an agent service writes to a log in a child process; the demo kills it with
//! SIGKILL in the middle of its work, reopens the log and shows what survived: recovery time,
//! events replayed, interrupted runs and jobs, the workflow's resume plan, the newest messages.

pub mod writer;

use crate::cmd::state::{plan_lines, progress_words, telemetry_line};
use crate::output::{Out, Usage, format_clock, shorten};
use anyhow::{Context, Result, anyhow};
use clap::Args;
use logbook::{BuiltinLog, BuiltinOpenReport, HistoryRequest, LogbookOptions};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// The longest the writer may take to start and to finish its set-up.
const WRITER_TIMEOUT: Duration = Duration::from_secs(30);
/// Live events shown while the service sets up (the rest are counted).
const LIVE_LINES_SHOWN: usize = 12;
/// Room messages shown after recovery.
const MESSAGES_SHOWN: usize = 5;

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// A new (or empty) directory for the demo's log.
    dir: PathBuf,
    /// How long the in-flight work runs before the SIGKILL, in milliseconds.
    #[arg(long, default_value_t = 1500, hide = true)]
    work_ms: u64,
}

/// What the parent saw of the writer.
#[derive(Debug, Default)]
struct Seen {
    live_events: u64,
}

pub fn demo(args: DemoArgs) -> Result<ExitCode> {
    check_dir(&args.dir)?;
    let mut out = Out::new();
    out.line("logbook demo: an agent service is killed mid-work; what does it get back?")?;
    out.line(format!("log directory: {}", args.dir.display()))?;
    out.line("")?;
    let started = Instant::now();
    let (mut child, lines, errors) = spawn_writer(&args.dir)?;
    let result = watch(&mut out, &mut child, &lines, &args);
    if result.is_err() {
        let _ = child.kill();
        let _ = child.wait();
        let stderr = errors
            .recv_timeout(Duration::from_secs(2))
            .unwrap_or_default();
        if !stderr.trim().is_empty() {
            eprintln!("writer process said: {}", stderr.trim());
        }
    }
    let seen = result?;
    let worked = started.elapsed();
    out.line(format!(
        "2. SIGKILL: the writer (pid {}) is killed after {:.1} s, mid-work",
        child.id(),
        worked.as_secs_f64()
    ))?;
    out.line(format!(
        "   its live subscriber had seen {} durable events",
        seen.live_events
    ))?;
    out.line("")?;
    out.flush()?;
    recover(&mut out, &args.dir)?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn check_dir(dir: &Path) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(error).with_context(|| format!("cannot read {}", dir.display())),
    };
    if entries.count() > 0 {
        return Err(Usage(format!(
            "{} is not empty: the demo needs a new or empty directory (remove it, or pick another)",
            dir.display()
        ))
        .into());
    }
    Ok(())
}

/// Starts `logbook __demo-writer <dir>`; its stdout lines and, once it ends, its stderr
/// arrive on the channels.
fn spawn_writer(dir: &Path) -> Result<(Child, Receiver<String>, Receiver<String>)> {
    let exe = std::env::current_exe().context("cannot find the logbook executable")?;
    let mut child = Command::new(exe)
        .arg("__demo-writer")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start the writer process")?;
    let (line_sender, lines) = mpsc::channel();
    let stdout = child.stdout.take().context("the writer has no stdout")?;
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line_sender.send(line).is_err() {
                break;
            }
        }
    });
    let (error_sender, errors) = mpsc::channel();
    let mut stderr = child.stderr.take().context("the writer has no stderr")?;
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        let _ = error_sender.send(text);
    });
    Ok((child, lines, errors))
}

fn next_line(lines: &Receiver<String>, deadline: Instant) -> Result<String> {
    let wait = deadline.saturating_duration_since(Instant::now());
    match lines.recv_timeout(wait) {
        Ok(line) => Ok(line),
        Err(RecvTimeoutError::Timeout) => Err(anyhow!("the writer process did not report in time")),
        Err(RecvTimeoutError::Disconnected) => Err(anyhow!("the writer process stopped early")),
    }
}

/// Interesting live events are shown while the service sets up; ticks are only counted.
fn show_live(out: &mut Out, line: &str, seen: &mut Seen, shown: &mut usize) -> Result<()> {
    let Some(rest) = line.strip_prefix("live ") else {
        return Ok(());
    };
    seen.live_events += 1;
    let fields: Vec<&str> = rest.splitn(4, '\t').collect();
    let [position, stream, event_type, summary] = fields.as_slice() else {
        return Ok(());
    };
    let boring = [
        "run.event",
        "run.telemetry",
        "job.progress",
        "job.heartbeat",
        "room.member_joined",
    ];
    if *shown >= LIVE_LINES_SHOWN || boring.contains(event_type) {
        return Ok(());
    }
    *shown += 1;
    let detail = match *event_type {
        "room.message_posted" => format!("  {}", shorten(summary, 50)),
        _ => String::new(),
    };
    // "position" is a log position; the runs table below says "run.event seq" for a run's own
    // sequence numbers, so the two never read alike.
    let line = format!("   live  position {position:<4} {stream:<20} {event_type:<24}{detail}");
    out.line(line.trim_end())?;
    out.flush()
}

/// Follows the writer through its set-up and in-flight work, then kills it.
fn watch(
    out: &mut Out,
    child: &mut Child,
    lines: &Receiver<String>,
    args: &DemoArgs,
) -> Result<Seen> {
    let deadline = Instant::now() + WRITER_TIMEOUT;
    while next_line(lines, deadline)? != "ready" {}
    out.line(format!(
        "1. The service starts (writer process {}): a workflow with child runs, jobs, a chat room;",
        child.id()
    ))?;
    out.line("   a live subscriber in the service receives each event once it is durable:")?;
    let mut seen = Seen::default();
    let mut shown = 0;
    loop {
        let line = next_line(lines, deadline)?;
        if line == "mark midpoint" {
            break;
        }
        show_live(out, &line, &mut seen, &mut shown)?;
    }
    out.line("   ... now in flight: run-search-3 reads sources, embed-corpus makes progress, chat goes on")?;
    out.line("")?;
    out.flush()?;
    let kill_at = Instant::now() + Duration::from_millis(args.work_ms);
    while let Ok(line) = lines.recv_timeout(kill_at.saturating_duration_since(Instant::now())) {
        show_live(out, &line, &mut seen, &mut shown)?;
        if Instant::now() >= kill_at {
            break;
        }
    }
    // SIGKILL: no destructor, no flush, no close. Only what reached the OS survives.
    child.kill().context("cannot kill the writer process")?;
    child.wait().context("cannot reap the writer process")?;
    while let Ok(line) = lines.recv_timeout(Duration::from_millis(200)) {
        show_live(out, &line, &mut seen, &mut shown)?;
    }
    Ok(seen)
}

fn recover(out: &mut Out, dir: &Path) -> Result<()> {
    let runtime = crate::cmd::runtime()?;
    let (log, report) = runtime
        .block_on(BuiltinLog::open(dir, LogbookOptions::default()))
        .with_context(|| format!("cannot reopen the log in {}", dir.display()))?;
    let shown = show_recovery(out, &log, &report, &runtime);
    let closed = runtime.block_on(log.close());
    shown?;
    closed.context("closing the log")?;
    out.line("")?;
    out.line("Look inside (read-only, safe beside a live writer):")?;
    for command in [
        "logbook dump {} --limit 20",
        "logbook state {} workflows wf-report",
        "logbook state {} rooms lobby --history --limit 10",
        "logbook stats {}",
        "logbook verify {}",
    ] {
        out.line(format!(
            "   {}",
            command.replace("{}", &dir.display().to_string())
        ))?;
    }
    Ok(())
}

fn show_recovery(
    out: &mut Out,
    log: &BuiltinLog,
    report: &BuiltinOpenReport,
    runtime: &tokio::runtime::Runtime,
) -> Result<()> {
    let opened = &report.log;
    let tail = opened.wal.tail_cut.as_ref().map_or_else(
        || "none (every written byte was whole)".to_owned(),
        |cut| format!("{} bytes of an unfinished write cut", cut.bytes_dropped),
    );
    out.line("3. Reopen: recovery, then replay into the projections")?;
    out.line(format!(
        "   recovery time      {:.1} ms",
        opened.duration.as_secs_f64() * 1000.0
    ))?;
    let start = opened.snapshot.used.as_ref().map_or_else(
        || "none: the whole log is replayed".to_owned(),
        |snapshot| {
            format!(
                "position {}: only the events after it are replayed",
                snapshot.position
            )
        },
    );
    out.line(format!("   snapshot           {start}"))?;
    out.line(format!("   events replayed    {}", opened.events_replayed))?;
    out.line(format!("   streams            {}", opened.streams))?;
    out.line(format!("   torn tail          {tail}"))?;
    out.line("")?;
    let interrupted = &report.interrupted;
    out.line("4. Interrupted runs: not marked failed, the service decides")?;
    for run in &interrupted.runs {
        let checkpoint = run.checkpoint.as_ref().map_or_else(
            || "no checkpoint".to_owned(),
            |checkpoint| format!("checkpoint: {}", shorten(&checkpoint.data, 60)),
        );
        let last = run
            .last_run_event_sequence
            .map_or_else(|| "-".to_owned(), |sequence| sequence.to_string());
        out.line(format!(
            "   {:<14} {:<17} {:<14} last run.event seq {:<4} {checkpoint}",
            run.run_id,
            run.kind.as_str(),
            run.status.as_str(),
            last
        ))?;
    }
    out.line("")?;
    out.line("5. Interrupted jobs: claimed, no terminal event; last progress kept")?;
    for job in &interrupted.jobs {
        let progress = job
            .progress
            .as_ref()
            .map_or_else(|| "-".to_owned(), progress_words);
        out.line(format!(
            "   {:<14} {:<12} claimed by {:<9} attempt {}  {progress}",
            job.job_id, job.kind, job.claim.worker, job.attempts
        ))?;
    }
    out.line("")?;
    for workflow in &interrupted.workflows {
        out.line(format!(
            "6. Resume plan of workflow {} ({}): reuse what completed, relaunch the rest",
            workflow.workflow_id, workflow.definition_id
        ))?;
        for line in plan_lines(&workflow.plan) {
            out.line(format!("   {line}"))?;
        }
        if let Some(totals) = log.runs().read().workflow_telemetry(&workflow.workflow_id) {
            out.line(format!("   child telemetry: {}", telemetry_line(&totals)))?;
        }
        out.line("")?;
    }
    let page =
        runtime.block_on(log.room_history("lobby", HistoryRequest::newest(MESSAGES_SHOWN)))?;
    out.line("7. Newest messages in room/lobby (read from the log, not from memory)")?;
    for message in page.messages.iter().rev() {
        out.line(format!(
            "   {}  {:<12} {}",
            format_clock(message.timestamp_ms),
            message.author,
            shorten(&message.body, 70)
        ))?;
    }
    Ok(())
}
