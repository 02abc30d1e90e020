//! `logbook types`: the built-in event types `append` accepts, with their fields and schema
//! versions, for people and (`--json`) for scripts.
//!
//! Owns: the table of the built-in payloads' JSON fields ([`TYPES`]); its unit tests hold it
//! against the payload structs (every type listed once, every field named, required fields
//! exactly those `from_json` needs). The schema versions come from the model, never from here.
//! Never: opens a log or reads a file.

use crate::output::Out;
use anyhow::{Result, anyhow};
use clap::Args;
use logbook::BuiltinEvent;
use serde::Serialize;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct TypesArgs {
    /// Print one JSON object per type: `type`, `schema_version`, `stream`, `fields` (each with
    /// `name`, `type`, `required`).
    #[arg(long)]
    json: bool,
}

/// One JSON field of a built-in payload: name, JSON type, whether a line must give it.
/// A field that is not required may be left out (or `null`): it takes its empty value (`null`,
/// `""`, `0`, `[]`, `{}`, `false`).
type Field = (&'static str, &'static str, bool);

/// The JSON type names used below.
const STRING: &str = "string";
const U64: &str = "u64";
const STRINGS: &str = "[string]";
const RUN_KIND: &str = "\"subagent\" | \"worker_thread\" | \"background_agent\" | \"team_member\" | \"workflow_child\"";
const RUN_STATUS: &str = "\"pending\" | \"running\" | \"paused\" | \"awaiting_user\" | \"completed\" | \"failed\" | \"cancelled\"";
const CHECKPOINT_REASON: &str = "\"paused\" | \"awaiting_user\" | \"periodic\"";

/// Every built-in event type, in the model's order, with its JSON fields in declaration order.
pub const TYPES: &[(&str, &[Field])] = &[
    (
        "run.started",
        &[
            ("kind", RUN_KIND, true),
            ("agent_id", STRING, true),
            ("parent_run_id", STRING, false),
            ("parent_thread_id", STRING, false),
            ("prompt_ref", STRING, false),
            ("worker_thread_id", STRING, false),
            ("task_board_ref", STRING, false),
            ("task_card_ref", STRING, false),
            (
                "workflow_id",
                "string; a \"workflow_child\" run needs it",
                false,
            ),
        ],
    ),
    (
        "run.status_changed",
        &[("status", RUN_STATUS, true), ("reason", STRING, false)],
    ),
    (
        "run.event",
        &[
            ("sequence", U64, true),
            ("event_type", STRING, true),
            ("payload", STRING, false),
        ],
    ),
    (
        "run.telemetry",
        &[
            ("tokens_in", U64, false),
            ("tokens_out", U64, false),
            ("cost_estimate_micros", U64, false),
            ("elapsed_ms", U64, false),
            ("tool_calls", "{string: u64}", false),
            ("model", STRING, false),
            ("provider", STRING, false),
            ("error", STRING, false),
        ],
    ),
    (
        "run.checkpointed",
        &[("reason", CHECKPOINT_REASON, true), ("data", STRING, true)],
    ),
    (
        "run.completed",
        &[("summary", STRING, false), ("result_ref", STRING, false)],
    ),
    ("run.failed", &[("error", STRING, true)]),
    ("run.cancelled", &[("reason", STRING, false)]),
    (
        "workflow.started",
        &[
            ("definition_id", STRING, true),
            ("parent_thread_id", STRING, false),
            ("input", STRING, false),
            ("phases", STRINGS, false),
        ],
    ),
    (
        "workflow.phase_started",
        &[("phase", STRING, true), ("child_run_ids", STRINGS, false)],
    ),
    (
        "workflow.phase_completed",
        &[
            ("phase", STRING, true),
            ("child_run_ids", STRINGS, false),
            ("result_ref", STRING, false),
        ],
    ),
    (
        "workflow.phase_failed",
        &[
            ("phase", STRING, true),
            ("child_run_ids", STRINGS, false),
            ("error", STRING, true),
        ],
    ),
    (
        "workflow.completed",
        &[("summary", STRING, false), ("result_ref", STRING, false)],
    ),
    ("workflow.failed", &[("error", STRING, true)]),
    ("workflow.cancelled", &[("reason", STRING, false)]),
    (
        "room.created",
        &[
            ("name", STRING, true),
            ("topic", STRING, false),
            ("created_by", STRING, false),
        ],
    ),
    ("room.member_joined", &[("member", STRING, true)]),
    ("room.member_left", &[("member", STRING, true)]),
    (
        "room.message_posted",
        &[
            ("message_id", STRING, true),
            ("author", STRING, true),
            ("body", STRING, true),
        ],
    ),
    (
        "room.message_edited",
        &[("message_id", STRING, true), ("body", STRING, true)],
    ),
    ("room.message_deleted", &[("message_id", STRING, true)]),
    ("room.archived", &[("reason", STRING, false)]),
    (
        "job.queued",
        &[("kind", STRING, true), ("input", STRING, false)],
    ),
    (
        "job.claimed",
        &[("worker", STRING, true), ("lease_expires_at_ms", U64, true)],
    ),
    (
        "job.heartbeat",
        &[("worker", STRING, true), ("lease_expires_at_ms", U64, true)],
    ),
    (
        "job.progress",
        &[
            ("stage", STRING, false),
            ("percent", "u8 (0 to 100)", false),
            ("done", U64, false),
            ("total", U64, false),
            ("message", STRING, false),
        ],
    ),
    ("job.succeeded", &[("result", STRING, false)]),
    (
        "job.failed",
        &[("error", STRING, true), ("retryable", "bool", false)],
    ),
    ("job.cancelled", &[("reason", STRING, false)]),
    ("job.lease_expired", &[("worker", STRING, true)]),
];

#[derive(Debug, Serialize)]
struct FieldJson {
    name: &'static str,
    #[serde(rename = "type")]
    field_type: &'static str,
    required: bool,
}

#[derive(Debug, Serialize)]
struct TypeJson {
    #[serde(rename = "type")]
    event_type: &'static str,
    schema_version: u16,
    stream: String,
    fields: Vec<FieldJson>,
}

/// The stream an event type goes to: `run.started` to `run/<id>`.
fn stream_form(event_type: &str) -> String {
    let kind = event_type.split('.').next().unwrap_or(event_type);
    format!("{kind}/<id>")
}

fn described(event_type: &'static str, fields: &[Field]) -> Result<TypeJson> {
    let schema_version = BuiltinEvent::current_schema_version(event_type)
        .ok_or_else(|| anyhow!("{event_type}: not a built-in event type (a bug in `types`)"))?;
    Ok(TypeJson {
        event_type,
        schema_version,
        stream: stream_form(event_type),
        fields: fields
            .iter()
            .map(|&(name, field_type, required)| FieldJson {
                name,
                field_type,
                required,
            })
            .collect(),
    })
}

pub fn types(args: TypesArgs) -> Result<ExitCode> {
    let mut out = Out::new();
    for &(event_type, fields) in TYPES {
        let described = described(event_type, fields)?;
        if args.json {
            out.json(&described)?;
            continue;
        }
        out.line(format!(
            "{}  (schema version {}, stream {})",
            described.event_type, described.schema_version, described.stream
        ))?;
        for field in &described.fields {
            let optional = if field.required { "" } else { "  (optional)" };
            out.line(format!(
                "    {:<22} {}{optional}",
                field.name, field.field_type
            ))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Map, Value};
    use std::path::Path;

    #[test]
    fn every_builtin_type_is_listed_once_in_the_model_order() {
        let listed: Vec<&str> = TYPES.iter().map(|(event_type, _)| *event_type).collect();
        assert_eq!(listed, BuiltinEvent::EVENT_TYPES);
    }

    /// The committed fixture data of each type (every field present, optional ones too) has
    /// exactly the listed fields; JSON with only the required ones lacks no field (a value rule
    /// may still refuse it), JSON without any one of them is refused as missing that field.
    #[test]
    fn the_fields_match_the_payloads() {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/events");
        for &(event_type, fields) in TYPES {
            let text = std::fs::read_to_string(fixtures.join(format!("{event_type}.json")))
                .unwrap_or_else(|error| panic!("{event_type}: {error}"));
            let fixture: Value = serde_json::from_str(&text).expect("fixture JSON");
            let data = fixture["data"].as_object().expect("data object");
            let mut names: Vec<&str> = data.keys().map(String::as_str).collect();
            let mut listed: Vec<&str> = fields.iter().map(|field| field.0).collect();
            names.sort_unstable();
            listed.sort_unstable();
            assert_eq!(listed, names, "{event_type}");
            let required: Map<String, Value> = fields
                .iter()
                .filter(|field| field.2)
                .map(|field| (field.0.to_owned(), data[field.0].clone()))
                .collect();
            if let Err(error) = BuiltinEvent::from_json(event_type, Value::Object(required.clone()))
            {
                assert!(
                    !error.to_string().contains("missing field"),
                    "{event_type} with its required fields: {error}"
                );
            }
            for name in required.keys() {
                let mut short = required.clone();
                short.remove(name);
                match BuiltinEvent::from_json(event_type, Value::Object(short)) {
                    Ok(_) => panic!("{event_type} accepted without {name}"),
                    Err(error) => assert!(
                        error
                            .to_string()
                            .contains(&format!("missing field `{name}`")),
                        "{event_type} without {name}: {error}"
                    ),
                }
            }
        }
    }
}
