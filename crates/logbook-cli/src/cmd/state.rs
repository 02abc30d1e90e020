//! `state runs|workflows|rooms|jobs [ID]`: the built-in projections, rebuilt read-only from a
//! directory or a `postgres://` URL (there from the newest shared snapshot plus the rows after
//! it: `logbook::inspect::RemoteLog::replay_builtin`; no snapshot is stored, nothing written).

use crate::output::{Out, Usage, format_time, shorten};
use crate::progress::Bar;
use anyhow::{Context, Result, anyhow};
use clap::{Args, ValueEnum};
use logbook::builtin_projections::{
    AgentRun, Job, JobProgressState, RelaunchReason, Room, RunFilter, TelemetryTotals, WorkflowRun,
};
use logbook::inspect::BuiltinState;
use logbook::{HistoryPage, PageRequest, ResumePlan};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Entity {
    Runs,
    Workflows,
    Rooms,
    Jobs,
}

#[derive(Debug, Args)]
#[command(override_usage = "logbook state <DIR> <runs|workflows|rooms|jobs> [ID] [OPTIONS]")]
pub struct StateArgs {
    /// The log directory or a `postgres://` URL, read-only (the entity may also come first:
    /// `state runs <DIR>`).
    dir: String,
    /// runs, workflows, rooms or jobs.
    entity: String,
    /// One entity's id (a run, workflow, room or job id, without the stream prefix).
    id: Option<String>,
    /// One JSON document.
    #[arg(long)]
    json: bool,
    /// With `rooms ROOM`: the room's messages, newest first, read from the log.
    #[arg(long)]
    history: bool,
    /// With --history: at most this many messages.
    #[arg(long, default_value_t = 20)]
    limit: usize,
    /// With --history: only messages with a stream version below this one.
    #[arg(long)]
    before: Option<u64>,
}

fn parse_entity(text: &str) -> Option<Entity> {
    Entity::from_str(text, true).ok()
}

impl StateArgs {
    /// Accepts `state DIR ENTITY` and `state ENTITY DIR`.
    fn resolve(&self) -> Result<(PathBuf, Entity)> {
        if let Some(entity) = parse_entity(&self.entity) {
            return Ok((PathBuf::from(&self.dir), entity));
        }
        if let Some(entity) = parse_entity(&self.dir) {
            return Ok((PathBuf::from(&self.entity), entity));
        }
        Err(Usage(format!(
            "unknown entity {:?}: expected runs, workflows, rooms or jobs",
            self.entity
        ))
        .into())
    }
}

/// Items asked of a paged query at a time.
const PAGE_ITEMS: usize = 1000;

/// Every item of a paged query; `page` returns one page's items and its next cursor.
fn all<T>(mut page: impl FnMut(&PageRequest) -> (Vec<T>, Option<u64>)) -> Vec<T> {
    let mut items = Vec::new();
    let mut request = PageRequest::first(PAGE_ITEMS);
    loop {
        let (more, next) = page(&request);
        items.extend(more);
        match next {
            Some(after) => request.after = Some(after),
            None => return items,
        }
    }
}

pub fn state(args: StateArgs) -> Result<ExitCode> {
    let (dir, entity) = args.resolve()?;
    if args.history && (entity != Entity::Rooms || args.id.is_none()) {
        return Err(Usage("--history needs `rooms ROOM`".to_owned()).into());
    }
    if let Some(url) = super::postgres_url(&dir) {
        return state_postgres(&args, &dir, &url, entity);
    }
    let inspector = super::inspector(&dir)?;
    let mut out = Out::new();
    if args.history {
        let room = args.id.as_deref().unwrap_or_default();
        let page = inspector
            .room_history(room, args.before, args.limit)
            .map_err(|error| super::read_error(&dir, error))?;
        history(&mut out, room, &page, args.json)?;
        out.flush()?;
        if let Some(damage) = inspector.damage() {
            let note = format!(
                "the history above is as of position {}, the last event before the damage",
                damage.last_position
            );
            return Err(super::damage_error(&dir, damage, &note));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let state = inspector
        .replay_builtin(&Bar::new())
        .map_err(|error| super::read_error(&dir, error))?;
    print_state(&mut out, &state, entity, &args)?;
    if let Some(damage) = &state.damage {
        // State up to the damage, never one that skips an event: labelled, and a failure.
        let note = format!(
            "the state above is as of position {}, the last event before the damage; later events are not in it",
            state.position
        );
        return Err(super::damage_error(&dir, damage, &note));
    }
    Ok(ExitCode::SUCCESS)
}

/// The entity (or entities) asked for, as the directory and the database both print them.
fn print_state(
    out: &mut Out,
    state: &BuiltinState,
    entity: Entity,
    args: &StateArgs,
) -> Result<()> {
    if state.undecodable > 0 && !args.json {
        eprintln!(
            "note: {} events could not be decoded by the built-in model and were skipped",
            state.undecodable
        );
    }
    let id = args.id.as_deref();
    match entity {
        Entity::Runs => runs(out, state, id, args.json)?,
        Entity::Workflows => workflows(out, state, id, args.json)?,
        Entity::Rooms => rooms(out, state, id, args.json)?,
        Entity::Jobs => jobs(out, state, id, args.json)?,
    }
    out.flush()
}

/// `state` of a log in a PostgreSQL database (`target` as given, for messages).
fn state_postgres(args: &StateArgs, target: &Path, url: &str, entity: Entity) -> Result<ExitCode> {
    let runtime = super::runtime()?;
    let log = super::remote_log(&runtime, target, url)?;
    let failed = || {
        format!(
            "reading the PostgreSQL database {} failed",
            super::display_target(target)
        )
    };
    let mut out = Out::new();
    if args.history {
        let room = args.id.as_deref().unwrap_or_default();
        let page = runtime
            .block_on(log.room_history(room, args.before, args.limit))
            .with_context(failed)?;
        history(&mut out, room, &page, args.json)?;
        out.flush()?;
        return Ok(ExitCode::SUCCESS);
    }
    let state = runtime
        .block_on(log.replay_builtin())
        .with_context(failed)?;
    for (snapshot, reason) in &state.snapshot.rejected {
        eprintln!(
            "note: snapshot {} not used ({reason}); the whole log was replayed",
            snapshot.display()
        );
    }
    print_state(&mut out, &state, entity, args)?;
    Ok(ExitCode::SUCCESS)
}

fn not_found(what: &str, id: &str) -> anyhow::Error {
    anyhow!("no {what} {id:?} in this log")
}

fn or_dash(value: Option<&str>) -> String {
    value.map_or_else(|| "-".to_owned(), str::to_owned)
}

fn time_or_dash(value: Option<u64>) -> String {
    value.map_or_else(|| "-".to_owned(), format_time)
}

/// Telemetry in one line.
pub fn telemetry_line(totals: &TelemetryTotals) -> String {
    let tools: u64 = totals.tool_calls.values().sum();
    format!(
        "{} tokens in, {} out, ${:.4} estimated, {} ms, {} tool calls",
        totals.tokens_in,
        totals.tokens_out,
        totals.cost_estimate_micros as f64 / 1e6,
        totals.elapsed_ms,
        tools
    )
}

fn runs(out: &mut Out, state: &BuiltinState, id: Option<&str>, json: bool) -> Result<()> {
    let Some(id) = id else {
        let runs = all(|page| {
            let page = state.runs.list_runs(&RunFilter::default(), page);
            (page.items, page.next)
        });
        if json {
            return out.json(&runs);
        }
        out.line(format!(
            "{:<20} {:<17} {:<14} {:<14} {:<20} {:>7}  UPDATED",
            "RUN", "KIND", "STATUS", "AGENT", "PARENT/WORKFLOW", "EVENTS"
        ))?;
        for run in runs {
            let parent = run.parent_run_id.as_deref().or(run.workflow_id.as_deref());
            out.line(format!(
                "{:<20} {:<17} {:<14} {:<14} {:<20} {:>7}  {}",
                run.run_id,
                run.kind.as_str(),
                run.status.as_str(),
                shorten(&run.agent_id, 14),
                or_dash(parent),
                run.run_event_count,
                format_time(run.updated_at_ms)
            ))?;
        }
        return Ok(());
    };
    let run = state.runs.run(id).ok_or_else(|| not_found("run", id))?;
    let children: Vec<&str> = state
        .runs
        .children(id)
        .iter()
        .map(|child| child.run_id.as_str())
        .collect();
    if json {
        let mut value = serde_json::to_value(run)?;
        value["children"] = json!(children);
        return out.json(&value);
    }
    run_detail(out, run, &children)
}

fn run_detail(out: &mut Out, run: &AgentRun, children: &[&str]) -> Result<()> {
    let rows = [
        ("run", run.run_id.clone()),
        ("kind", run.kind.as_str().to_owned()),
        ("status", run.status.as_str().to_owned()),
        ("status reason", or_dash(run.status_reason.as_deref())),
        ("agent", run.agent_id.clone()),
        ("parent run", or_dash(run.parent_run_id.as_deref())),
        ("parent thread", or_dash(run.parent_thread_id.as_deref())),
        ("workflow", or_dash(run.workflow_id.as_deref())),
        ("prompt", or_dash(run.prompt_ref.as_deref())),
        ("started", format_time(run.started_at_ms)),
        ("updated", format_time(run.updated_at_ms)),
        ("ended", time_or_dash(run.ended_at_ms)),
        (
            "run events",
            format!(
                "{} (last sequence {})",
                run.run_event_count,
                run.last_run_event_sequence
                    .map_or_else(|| "-".to_owned(), |sequence| sequence.to_string())
            ),
        ),
        ("telemetry", telemetry_line(&run.telemetry)),
        ("summary", or_dash(run.summary.as_deref())),
        ("result", or_dash(run.result_ref.as_deref())),
        ("error", or_dash(run.error.as_deref())),
        (
            "checkpoint",
            run.checkpoint.as_ref().map_or_else(
                || "-".to_owned(),
                |checkpoint| {
                    format!(
                        "{} at {}: {}",
                        serde_json::to_value(checkpoint.reason)
                            .ok()
                            .and_then(|value| value.as_str().map(str::to_owned))
                            .unwrap_or_default(),
                        format_time(checkpoint.recorded_at_ms),
                        shorten(&checkpoint.data, 80)
                    )
                },
            ),
        ),
        (
            "children",
            if children.is_empty() {
                "-".to_owned()
            } else {
                children.join(", ")
            },
        ),
    ];
    for (name, value) in rows {
        out.line(format!("{name:<14} {value}"))?;
    }
    Ok(())
}

/// A resume plan as JSON.
pub fn plan_json(plan: &ResumePlan) -> Value {
    let completed: Vec<Value> = plan
        .completed
        .iter()
        .map(|phase| {
            json!({"phase": phase.phase, "result_ref": phase.result_ref, "child_run_ids": phase.child_run_ids})
        })
        .collect();
    let relaunch: Vec<Value> = plan
        .to_relaunch
        .iter()
        .map(|phase| {
            let children: Vec<Value> = phase
                .completed_children
                .iter()
                .map(|child| json!({"run_id": child.run_id, "result_ref": child.result_ref}))
                .collect();
            json!({
                "phase": phase.phase,
                "reason": relaunch_reason(&phase.reason),
                "completed_children": children,
                "children_to_relaunch": phase.children_to_relaunch,
            })
        })
        .collect();
    json!({"workflow_id": plan.workflow_id, "completed": completed, "to_relaunch": relaunch})
}

/// Why a phase is relaunched, in words.
pub fn relaunch_reason(reason: &RelaunchReason) -> String {
    match reason {
        RelaunchReason::NotStarted => "not started".to_owned(),
        RelaunchReason::Interrupted => "interrupted".to_owned(),
        RelaunchReason::Failed(Some(error)) => format!("failed: {error}"),
        RelaunchReason::Failed(None) => "failed".to_owned(),
    }
}

fn workflows(out: &mut Out, state: &BuiltinState, id: Option<&str>, json: bool) -> Result<()> {
    let Some(id) = id else {
        let workflows = all(|page| {
            let page = state.runs.list_workflows(None, page);
            (page.items, page.next)
        });
        if json {
            return out.json(&workflows);
        }
        out.line(format!(
            "{:<20} {:<20} {:<10} {:<24} UPDATED",
            "WORKFLOW", "DEFINITION", "STATUS", "PHASES DONE"
        ))?;
        for workflow in workflows {
            let done = workflow
                .phases
                .iter()
                .filter(|phase| phase.status.as_str() == "completed")
                .count();
            out.line(format!(
                "{:<20} {:<20} {:<10} {:<24} {}",
                workflow.workflow_id,
                workflow.definition_id,
                workflow.status.as_str(),
                format!("{done}/{}", workflow.phases.len()),
                format_time(workflow.updated_at_ms)
            ))?;
        }
        return Ok(());
    };
    let workflow = state
        .runs
        .workflow(id)
        .ok_or_else(|| not_found("workflow", id))?;
    let plan = state.runs.resume_plan(id)?;
    let telemetry = state.runs.workflow_telemetry(id).unwrap_or_default();
    if json {
        let mut value = serde_json::to_value(workflow)?;
        value["resume_plan"] = plan_json(&plan);
        value["telemetry"] = serde_json::to_value(&telemetry)?;
        return out.json(&value);
    }
    workflow_detail(out, workflow, &plan, &telemetry)
}

fn workflow_detail(
    out: &mut Out,
    workflow: &WorkflowRun,
    plan: &ResumePlan,
    telemetry: &TelemetryTotals,
) -> Result<()> {
    out.line(format!("workflow       {}", workflow.workflow_id))?;
    out.line(format!("definition     {}", workflow.definition_id))?;
    out.line(format!("status         {}", workflow.status.as_str()))?;
    out.line(format!("input          {}", shorten(&workflow.input, 80)))?;
    out.line(format!(
        "started        {}",
        format_time(workflow.started_at_ms)
    ))?;
    out.line(format!(
        "ended          {}",
        time_or_dash(workflow.ended_at_ms)
    ))?;
    out.line(format!("children       {}", telemetry_line(telemetry)))?;
    out.line("phases")?;
    for phase in &workflow.phases {
        out.line(format!(
            "  {:<16} {:<10} children {}",
            phase.name,
            phase.status.as_str(),
            if phase.child_run_ids.is_empty() {
                "-".to_owned()
            } else {
                phase.child_run_ids.join(", ")
            }
        ))?;
    }
    out.line("resume plan")?;
    for line in plan_lines(plan) {
        out.line(format!("  {line}"))?;
    }
    Ok(())
}

/// A resume plan, one line per phase.
pub fn plan_lines(plan: &ResumePlan) -> Vec<String> {
    let mut lines = Vec::new();
    for phase in &plan.completed {
        lines.push(format!(
            "reuse     {:<10} result {} (from {})",
            phase.phase,
            or_dash(phase.result_ref.as_deref()),
            phase.child_run_ids.join(", ")
        ));
    }
    for phase in &plan.to_relaunch {
        let mut line = format!(
            "relaunch  {:<10} {}",
            phase.phase,
            relaunch_reason(&phase.reason)
        );
        if !phase.completed_children.is_empty() {
            let reused: Vec<String> = phase
                .completed_children
                .iter()
                .map(|child| match &child.result_ref {
                    Some(result) => format!("{} ({result})", child.run_id),
                    None => child.run_id.clone(),
                })
                .collect();
            line.push_str(&format!("; reuse {}", reused.join(", ")));
        }
        if !phase.children_to_relaunch.is_empty() {
            line.push_str(&format!(
                "; relaunch {}",
                phase.children_to_relaunch.join(", ")
            ));
        }
        lines.push(line);
    }
    lines
}

fn rooms(out: &mut Out, state: &BuiltinState, id: Option<&str>, json: bool) -> Result<()> {
    let Some(id) = id else {
        let rooms = all(|page| {
            let page = state.rooms.list_rooms(true, page);
            (page.items, page.next)
        });
        if json {
            return out.json(&rooms);
        }
        out.line(format!(
            "{:<20} {:<20} {:>7} {:>9}  LAST MESSAGE",
            "ROOM", "NAME", "MEMBERS", "MESSAGES"
        ))?;
        for room in rooms {
            out.line(format!(
                "{:<20} {:<20} {:>7} {:>9}  {}",
                room.room_id,
                shorten(&room.name, 20),
                room.members.len(),
                room.message_count(),
                last_message(room)
            ))?;
        }
        return Ok(());
    };
    let room = state.rooms.room(id).ok_or_else(|| not_found("room", id))?;
    if json {
        return out.json(room);
    }
    let members: Vec<&str> = room.members.iter().map(String::as_str).collect();
    out.line(format!("room           {}", room.room_id))?;
    out.line(format!("name           {}", room.name))?;
    out.line(format!("topic          {}", or_dash(room.topic.as_deref())))?;
    out.line(format!(
        "created by     {}",
        or_dash(room.created_by.as_deref())
    ))?;
    out.line(format!(
        "created        {}",
        format_time(room.created_at_ms)
    ))?;
    out.line(format!("archived       {}", room.archived))?;
    out.line(format!("members        {}", members.join(", ")))?;
    out.line(format!(
        "messages       {} ({} deleted)",
        room.message_count(),
        room.messages_deleted
    ))?;
    out.line(format!("last message   {}", last_message(room)))?;
    Ok(())
}

fn last_message(room: &Room) -> String {
    room.last_message.as_ref().map_or_else(
        || "-".to_owned(),
        |last| format!("{}: {}", last.author, shorten(&last.body, 60)),
    )
}

fn history(out: &mut Out, room: &str, page: &HistoryPage, json: bool) -> Result<()> {
    if json {
        return out.json(&json!({"room": room, "messages": page.messages, "next": page.next}));
    }
    for message in &page.messages {
        let flag = match (message.deleted, message.edited) {
            (true, _) => " (deleted)",
            (false, true) => " (edited)",
            _ => "",
        };
        out.line(format!(
            "{:>6}  {}  {}: {}{flag}",
            message.version,
            format_time(message.timestamp_ms),
            message.author,
            message.body
        ))?;
    }
    if let Some(next) = page.next {
        out.line(format!("(older messages: --before {next})"))?;
    }
    Ok(())
}

fn jobs(out: &mut Out, state: &BuiltinState, id: Option<&str>, json: bool) -> Result<()> {
    let Some(id) = id else {
        let jobs = all(|page| {
            let page = state.jobs.list_jobs(None, page);
            (page.items, page.next)
        });
        if json {
            return out.json(&jobs);
        }
        out.line(format!(
            "{:<20} {:<16} {:<10} {:<12} {:>8}  PROGRESS",
            "JOB", "KIND", "STATUS", "WORKER", "ATTEMPTS"
        ))?;
        for job in jobs {
            out.line(format!(
                "{:<20} {:<16} {:<10} {:<12} {:>8}  {}",
                job.job_id,
                shorten(&job.kind, 16),
                job.status.as_str(),
                job.claim
                    .as_ref()
                    .map_or("-", |claim| claim.worker.as_str()),
                job.attempts,
                progress_text(job)
            ))?;
        }
        return Ok(());
    };
    let job = state.jobs.job(id).ok_or_else(|| not_found("job", id))?;
    if json {
        return out.json(job);
    }
    out.line(format!("job            {}", job.job_id))?;
    out.line(format!("kind           {}", job.kind))?;
    out.line(format!("status         {}", job.status.as_str()))?;
    out.line(format!(
        "claim          {}",
        job.claim.as_ref().map_or_else(
            || "-".to_owned(),
            |claim| format!(
                "{} until {}",
                claim.worker,
                format_time(claim.lease_expires_at_ms)
            )
        )
    ))?;
    out.line(format!("attempts       {}", job.attempts))?;
    out.line(format!("progress       {}", progress_text(job)))?;
    out.line(format!("queued         {}", format_time(job.queued_at_ms)))?;
    out.line(format!("ended          {}", time_or_dash(job.ended_at_ms)))?;
    out.line(format!("result         {}", or_dash(job.result.as_deref())))?;
    out.line(format!("error          {}", or_dash(job.error.as_deref())))?;
    Ok(())
}

/// A job's last progress in words.
fn progress_text(job: &Job) -> String {
    job.progress
        .as_ref()
        .map_or_else(|| "-".to_owned(), progress_words)
}

/// A progress report in words: `embedding 61% (6100/10000) "batch 61"`.
pub fn progress_words(progress: &JobProgressState) -> String {
    let mut parts = Vec::new();
    if let Some(stage) = &progress.stage {
        parts.push(stage.clone());
    }
    if let Some(percent) = progress.percent {
        parts.push(format!("{percent}%"));
    }
    match (progress.done, progress.total) {
        (Some(done), Some(total)) => parts.push(format!("({done}/{total})")),
        (Some(done), None) => parts.push(format!("({done} done)")),
        _ => {}
    }
    if let Some(message) = &progress.message {
        parts.push(format!("{:?}", shorten(message, 40)));
    }
    if parts.is_empty() {
        return "-".to_owned();
    }
    parts.join(" ")
}
