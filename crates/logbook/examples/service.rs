//! Embedding logbook in a tokio service: open the built-in model, execute validated commands,
//! follow the log with a live subscriber, query the projections, close.
//!
//! ```sh
//! cargo run -p logbook --example service -- /tmp/logbook-service
//! ```
//!
//! Run it twice: the second run finds the first run's state (and its interrupted work) on open.

use logbook::{
    BuiltinEvent, BuiltinLog, HistoryRequest, LogbookOptions, StreamId, builtin_projections,
};
use serde_json::json;
use std::error::Error;
use std::path::PathBuf;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let dir = std::env::args().nth(1).map_or_else(
        || std::env::temp_dir().join("logbook-service"),
        PathBuf::from,
    );

    // Open: recovery, replay into the built-in projections, and the restart view.
    let (log, report) = BuiltinLog::open(&dir, LogbookOptions::default()).await?;
    println!(
        "opened {} in {:?}: {} events replayed, {} runs and {} jobs interrupted",
        dir.display(),
        report.log.duration,
        report.log.events_replayed,
        report.interrupted.runs.len(),
        report.interrupted.jobs.len(),
    );

    // A live subscriber: every durable event from the current end on, in order, no gap.
    let mut subscription = log.log().subscribe(log.log().stats().durable_position + 1);
    let subscriber = tokio::spawn(async move {
        let mut seen = 0;
        while let Some(Ok(event)) = subscription.next().await {
            println!(
                "  live: #{} {} {}",
                event.position, event.stream, event.event_type
            );
            seen += 1;
            if seen == 4 {
                break;
            }
        }
    });

    // Commands are validated against durable state before anything is written.
    let generation = report.log.events_replayed;
    let room = StreamId::room(&format!("room-{generation}"))?;
    let created = BuiltinEvent::from_json("room.created", json!({"name": "Support"}))?;
    log.execute(&room, created).await?;
    let posted = json!({"message_id": "m1", "author": "ada", "body": "How can we help?"});
    log.execute(
        &room,
        BuiltinEvent::from_json("room.message_posted", posted)?,
    )
    .await?;

    let run = StreamId::run(&format!("run-{generation}"))?;
    let started = json!({"kind": "background_agent", "agent_id": "triage"});
    log.execute(&run, BuiltinEvent::from_json("run.started", started)?)
        .await?;
    let telemetry = json!({"tokens_in": 1200, "tokens_out": 300, "model": "large-model"});
    log.execute(&run, BuiltinEvent::from_json("run.telemetry", telemetry)?)
        .await?;

    // A command that breaks a rule is refused, and nothing is written.
    let duplicate = BuiltinEvent::from_json("room.created", json!({"name": "Again"}))?;
    let refused = log.execute(&room, duplicate).await;
    println!("duplicate room.created refused: {}", refused.is_err());

    // Queries: the projections (memory) and room history (read from the log).
    {
        let runs = log.runs().read();
        let filter = builtin_projections::RunFilter::default();
        let page = runs.list_runs(&filter, &logbook::PageRequest::first(100));
        let tokens = runs.telemetry_totals().tokens_in;
        println!("{} runs recorded, {tokens} tokens in", page.items.len());
    }
    let history = log
        .room_history(room.entity_id(), HistoryRequest::newest(10))
        .await?;
    for message in &history.messages {
        println!("  {}: {}", message.author, message.body);
    }

    subscriber.await?;
    // Close makes everything durable and stops the writer (on SIGTERM, do this before exit).
    log.close().await?;
    Ok(())
}
