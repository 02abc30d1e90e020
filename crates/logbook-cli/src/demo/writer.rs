//! The demo's writer: a small agent service in its own process, writing through `BuiltinLog`
//! until the parent kills it with SIGKILL.
//!
//! It reports to the parent on stdout, one line each: `ready`, `mark midpoint` (the set-up is
//! durable and the in-flight work begins), and `live <position>\t<stream>\t<type>\t<summary>`
//! for every event its live subscriber receives.

use anyhow::{Context, Result};
use logbook::{AppendDurability, BuiltinEvent, BuiltinLog, LogbookOptions, StreamId};
use serde_json::{Value, json};
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

/// The in-flight work stops by itself after this many ticks (about a minute), in case the
/// parent died without killing it.
const TICKS_MAX: u64 = 3000;
/// The pause between two steps of the set-up, and between two ticks of in-flight work.
const STEP_PAUSE: Duration = Duration::from_millis(12);
/// Items the embedding job works through.
const EMBED_TOTAL: u64 = 10_000;
/// Items the embedding job finishes per tick.
const EMBED_PER_TICK: u64 = 40;

/// One line to the parent; a closed pipe means the parent is gone: stop.
fn say(line: &str) {
    let mut stdout = std::io::stdout().lock();
    if writeln!(stdout, "{line}")
        .and_then(|()| stdout.flush())
        .is_err()
    {
        std::process::exit(0);
    }
}

pub fn run(dir: &Path) -> Result<ExitCode> {
    let runtime = crate::cmd::runtime()?;
    runtime.block_on(service(dir))?;
    Ok(ExitCode::SUCCESS)
}

struct Service {
    log: BuiltinLog,
}

impl Service {
    async fn emit(
        &self,
        stream: &str,
        event_type: &str,
        data: Value,
        durability: AppendDurability,
    ) -> Result<()> {
        let stream = StreamId::new(stream)?;
        let event = BuiltinEvent::from_json(event_type, data)?;
        self.log
            .execute_with(&stream, event, durability)
            .await
            .with_context(|| format!("{event_type} on {stream}"))?;
        Ok(())
    }

    /// Appends and waits until durable.
    async fn step(&self, stream: &str, event_type: &str, data: Value) -> Result<()> {
        self.emit(stream, event_type, data, AppendDurability::Policy)
            .await
    }

    /// Appends a high-frequency event (durable within milliseconds, not waited for).
    async fn tick(&self, stream: &str, event_type: &str, data: Value) -> Result<()> {
        self.emit(stream, event_type, data, AppendDurability::Relaxed)
            .await
    }

    async fn say_in_lobby(&self, id: &str, author: &str, body: &str) -> Result<()> {
        let data = json!({"message_id": id, "author": author, "body": body});
        self.step("room/lobby", "room.message_posted", data).await
    }

    fn lease(&self) -> u64 {
        self.log.log().now_ms() + 60_000
    }
}

async fn pause() {
    tokio::time::sleep(STEP_PAUSE).await;
}

async fn service(dir: &Path) -> Result<()> {
    let (log, _) = BuiltinLog::open(dir, LogbookOptions::default()).await?;
    let subscriber = tokio::spawn(live_subscriber(log.clone()));
    say("ready");
    let service = Service { log };
    lobby(&service).await?;
    jobs(&service).await?;
    plan_phase(&service).await?;
    gather_phase(&service).await?;
    triage(&service).await?;
    service
        .say_in_lobby(
            "m4",
            "search-bot",
            "search-2 hit a rate limit; search-3 keeps reading",
        )
        .await?;
    say("mark midpoint");
    in_flight(&service).await?;
    subscriber.abort();
    service.log.close().await?;
    Ok(())
}

async fn live_subscriber(log: BuiltinLog) {
    let mut subscription = log.log().subscribe(1);
    while let Some(Ok(event)) = subscription.next().await {
        let summary = match &event.event {
            BuiltinEvent::RoomMessagePosted(posted) => {
                format!("{}: {}", posted.author, posted.body)
            }
            other => crate::output::shorten(&other.to_json().to_string(), 60),
        };
        say(&format!(
            "live {}\t{}\t{}\t{}",
            event.position, event.stream, event.event_type, summary
        ));
    }
}

async fn lobby(service: &Service) -> Result<()> {
    let created = json!({"name": "Lobby", "topic": "Q4 report", "created_by": "ada"});
    service.step("room/lobby", "room.created", created).await?;
    for member in ["ada", "grace", "planner-bot", "search-bot"] {
        let joined = json!({ "member": member });
        service
            .step("room/lobby", "room.member_joined", joined)
            .await?;
    }
    service
        .say_in_lobby(
            "m1",
            "ada",
            "Kicking off the Q4 report. Planner, you're up.",
        )
        .await
}

async fn jobs(service: &Service) -> Result<()> {
    let queued = json!({"kind": "thumbnails", "input": "assets/*.png"});
    service.step("job/thumbnails", "job.queued", queued).await?;
    let claim = json!({"worker": "worker-2", "lease_expires_at_ms": service.lease()});
    service.step("job/thumbnails", "job.claimed", claim).await?;
    let progress = json!({"stage": "resize", "percent": 100, "done": 48, "total": 48});
    service
        .step("job/thumbnails", "job.progress", progress)
        .await?;
    let done = json!({"result": "48 thumbnails"});
    service
        .step("job/thumbnails", "job.succeeded", done)
        .await?;
    let queued = json!({"kind": "embeddings", "input": "corpus-2025q4"});
    service
        .step("job/embed-corpus", "job.queued", queued)
        .await?;
    let claim = json!({"worker": "worker-1", "lease_expires_at_ms": service.lease()});
    service
        .step("job/embed-corpus", "job.claimed", claim)
        .await?;
    let queued = json!({"kind": "reindex", "input": "search-index"});
    service.step("job/reindex", "job.queued", queued).await
}

async fn start_child(service: &Service, run: &str, agent: &str) -> Result<()> {
    let started = json!({
        "kind": "workflow_child",
        "agent_id": agent,
        "workflow_id": "wf-report",
        "parent_thread_id": "thread-42",
        "prompt_ref": format!("prompts/{agent}.md"),
    });
    service
        .step(&format!("run/{run}"), "run.started", started)
        .await
}

async fn work(service: &Service, run: &str, steps: u64, tokens: u64) -> Result<()> {
    let stream = format!("run/{run}");
    for sequence in 0..steps {
        let event = json!({"sequence": sequence, "event_type": "tool_call", "payload": format!("step {sequence}")});
        service.step(&stream, "run.event", event).await?;
        pause().await;
    }
    let telemetry = json!({
        "tokens_in": tokens,
        "tokens_out": tokens / 3,
        "cost_estimate_micros": tokens * 11,
        "elapsed_ms": steps * 900,
        "tool_calls": {"search": steps},
        "model": "large-model",
        "provider": "example-ai",
    });
    service.step(&stream, "run.telemetry", telemetry).await
}

async fn plan_phase(service: &Service) -> Result<()> {
    let started = json!({
        "definition_id": "quarterly-report",
        "parent_thread_id": "thread-42",
        "input": "Q4 revenue report for the board",
        "phases": ["plan", "gather", "write", "review"],
    });
    service
        .step("workflow/wf-report", "workflow.started", started)
        .await?;
    start_child(service, "run-planner", "planner").await?;
    let phase = json!({"phase": "plan", "child_run_ids": ["run-planner"]});
    service
        .step("workflow/wf-report", "workflow.phase_started", phase)
        .await?;
    work(service, "run-planner", 3, 1800).await?;
    let done = json!({"summary": "4-section outline", "result_ref": "artifacts/plan.md"});
    service
        .step("run/run-planner", "run.completed", done)
        .await?;
    let phase = json!({"phase": "plan", "child_run_ids": ["run-planner"], "result_ref": "artifacts/plan.md"});
    service
        .step("workflow/wf-report", "workflow.phase_completed", phase)
        .await?;
    service
        .say_in_lobby(
            "m2",
            "planner-bot",
            "Plan ready (artifacts/plan.md). Three searchers go.",
        )
        .await
}

async fn gather_phase(service: &Service) -> Result<()> {
    let children = ["run-search-1", "run-search-2", "run-search-3"];
    let phase = json!({"phase": "gather", "child_run_ids": children});
    service
        .step("workflow/wf-report", "workflow.phase_started", phase)
        .await?;
    for child in children {
        start_child(service, child, "searcher").await?;
    }
    work(service, "run-search-1", 4, 2400).await?;
    let done = json!({"summary": "12 sources", "result_ref": "artifacts/sources-1.json"});
    service
        .step("run/run-search-1", "run.completed", done)
        .await?;
    work(service, "run-search-2", 2, 900).await?;
    let failed = json!({"error": "search API rate limit (HTTP 429)"});
    service
        .step("run/run-search-2", "run.failed", failed)
        .await?;
    service
        .say_in_lobby("m3", "grace", "search-1 is back with 12 sources, nice.")
        .await
}

async fn triage(service: &Service) -> Result<()> {
    let started =
        json!({"kind": "background_agent", "agent_id": "triage", "parent_thread_id": "thread-42"});
    service
        .step("run/run-triage", "run.started", started)
        .await?;
    let event = json!({"sequence": 0, "event_type": "review", "payload": "3 PRs ready to merge"});
    service.step("run/run-triage", "run.event", event).await?;
    let checkpoint = json!({
        "reason": "awaiting_user",
        "data": "{\"pending_prs\":[118,121,124],\"question\":\"merge all three?\"}",
    });
    service
        .step("run/run-triage", "run.checkpointed", checkpoint)
        .await?;
    let status = json!({"status": "awaiting_user", "reason": "needs approval to merge 3 PRs"});
    service
        .step("run/run-triage", "run.status_changed", status)
        .await
}

/// The lobby's chatter during the in-flight work.
fn chat(tick: u64) -> (&'static str, String) {
    match tick / 10 % 4 {
        0 | 2 => (
            "search-bot",
            format!("search-3: read source {tick}, {} facts noted", tick * 3 / 2),
        ),
        1 => (
            "grace",
            format!(
                "Embeddings at {}%, looking good.",
                (tick + 1) * EMBED_PER_TICK * 100 / EMBED_TOTAL
            ),
        ),
        _ => (
            "ada",
            "Once gather is done, I'll review the draft.".to_owned(),
        ),
    }
}

/// The work in flight when the parent kills the process: a search run reading sources, the
/// embedding job making progress, chat in the lobby. Never ends on its own before
/// [`TICKS_MAX`].
async fn in_flight(service: &Service) -> Result<()> {
    for tick in 0..TICKS_MAX {
        let event =
            json!({"sequence": tick, "event_type": "fetch", "payload": format!("source {tick}")});
        service.tick("run/run-search-3", "run.event", event).await?;
        if tick % 5 == 4 {
            let telemetry = json!({"tokens_in": 600, "tokens_out": 150, "cost_estimate_micros": 6600, "elapsed_ms": 4500, "tool_calls": {"fetch": 5}});
            service
                .tick("run/run-search-3", "run.telemetry", telemetry)
                .await?;
        }
        let done = ((tick + 1) * EMBED_PER_TICK).min(EMBED_TOTAL);
        let progress = json!({
            "stage": "embedding",
            "percent": done * 100 / EMBED_TOTAL,
            "done": done,
            "total": EMBED_TOTAL,
            "message": format!("batch {}", tick + 1),
        });
        service
            .tick("job/embed-corpus", "job.progress", progress)
            .await?;
        if tick % 10 == 9 {
            let (author, body) = chat(tick);
            let id = format!("m{}", 5 + tick / 10);
            service.say_in_lobby(&id, author, &body).await?;
        }
        if tick % 25 == 24 {
            let heartbeat = json!({"worker": "worker-1", "lease_expires_at_ms": service.lease()});
            service
                .tick("job/embed-corpus", "job.heartbeat", heartbeat)
                .await?;
        }
        pause().await;
    }
    Ok(())
}
