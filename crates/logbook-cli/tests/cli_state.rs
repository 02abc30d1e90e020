//! `state runs|workflows|rooms|jobs [ID]`: the built-in projections rebuilt read-only.

mod common;

use common::{append, path, room_lines, run};
use std::path::PathBuf;

fn state_log() -> (tempfile::TempDir, PathBuf) {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("log");
    let lines = [
        r#"{"stream":"workflow/wf1","type":"workflow.started","data":{"definition_id":"report","phases":["plan","write"]}}"#,
        r#"{"stream":"run/r1","type":"run.started","data":{"kind":"workflow_child","agent_id":"planner","workflow_id":"wf1"}}"#,
        r#"{"stream":"workflow/wf1","type":"workflow.phase_started","data":{"phase":"plan","child_run_ids":["r1"]}}"#,
        r#"{"stream":"run/r1","type":"run.telemetry","data":{"tokens_in":100,"tokens_out":20}}"#,
        r#"{"stream":"run/r1","type":"run.completed","data":{"result_ref":"plan.md"}}"#,
        r#"{"stream":"workflow/wf1","type":"workflow.phase_completed","data":{"phase":"plan","child_run_ids":["r1"],"result_ref":"plan.md"}}"#,
        r#"{"stream":"run/r2","type":"run.started","data":{"kind":"subagent","agent_id":"writer","parent_run_id":"r1"}}"#,
        r#"{"stream":"job/j1","type":"job.queued","data":{"kind":"embed"}}"#,
        r#"{"stream":"job/j1","type":"job.claimed","data":{"worker":"w1","lease_expires_at_ms":99999999999999}}"#,
        r#"{"stream":"job/j1","type":"job.progress","data":{"stage":"embedding","percent":40,"done":4,"total":10}}"#,
    ];
    let mut all: Vec<String> = lines.iter().map(|line| (*line).to_owned()).collect();
    all.extend(room_lines("lobby", 5));
    all.push(r#"{"stream":"room/lobby","type":"room.message_edited","data":{"message_id":"m1","body":"fixed"}}"#.to_owned());
    all.push(
        r#"{"stream":"room/lobby","type":"room.message_deleted","data":{"message_id":"m2"}}"#
            .to_owned(),
    );
    append(&dir, &all);
    (temp, dir)
}

#[test]
fn runs_and_one_run() {
    let (_temp, dir) = state_log();
    let runs = run(&["state", path(&dir), "runs", "--json"]).ok().json();
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0]["run_id"], "r1");
    assert_eq!(runs[0]["status"], "completed");
    assert_eq!(runs[1]["status"], "running");
    assert_eq!(runs[1]["parent_run_id"], "r1");
    let one = run(&["state", path(&dir), "runs", "r1", "--json"])
        .ok()
        .json();
    assert_eq!(one["children"], serde_json::json!(["r2"]));
    assert_eq!(one["telemetry"]["tokens_in"], 100);
    assert_eq!(one["result_ref"], "plan.md");
    let swapped = run(&["state", "runs", path(&dir)]).ok().stdout;
    assert!(swapped.starts_with("RUN"), "{swapped}");
    assert!(swapped.contains("r2"), "{swapped}");
    let detail = run(&["state", path(&dir), "runs", "r2"]).ok().stdout;
    assert!(detail.contains("parent run     r1"), "{detail}");
}

#[test]
fn a_workflow_with_its_resume_plan() {
    let (_temp, dir) = state_log();
    let workflow = run(&["state", path(&dir), "workflows", "wf1", "--json"])
        .ok()
        .json();
    assert_eq!(workflow["definition_id"], "report");
    let plan = &workflow["resume_plan"];
    assert_eq!(plan["completed"][0]["phase"], "plan");
    assert_eq!(plan["completed"][0]["result_ref"], "plan.md");
    assert_eq!(plan["to_relaunch"][0]["phase"], "write");
    assert_eq!(plan["to_relaunch"][0]["reason"], "not started");
    assert_eq!(workflow["telemetry"]["tokens_out"], 20);
    let human = run(&["state", path(&dir), "workflows", "wf1"]).ok().stdout;
    assert!(human.contains("reuse     plan"), "{human}");
    assert!(human.contains("relaunch  write"), "{human}");
    let list = run(&["state", path(&dir), "workflows", "--json"])
        .ok()
        .json();
    assert_eq!(list.as_array().unwrap().len(), 1);
}

#[test]
fn jobs_and_rooms() {
    let (_temp, dir) = state_log();
    let jobs = run(&["state", path(&dir), "jobs", "--json"]).ok().json();
    assert_eq!(jobs[0]["job_id"], "j1");
    assert_eq!(jobs[0]["claim"]["worker"], "w1");
    assert_eq!(jobs[0]["progress"]["percent"], 40);
    let human = run(&["state", path(&dir), "jobs", "j1"]).ok().stdout;
    assert!(human.contains("embedding 40% (4/10)"), "{human}");
    let rooms = run(&["state", path(&dir), "rooms", "--json"]).ok().json();
    assert_eq!(rooms[0]["room_id"], "lobby");
    assert_eq!(rooms[0]["messages_posted"], 5);
    let room = run(&["state", path(&dir), "rooms", "lobby", "--json"])
        .ok()
        .json();
    assert_eq!(room["messages_deleted"], 1);
}

#[test]
fn room_history_pages_with_edits_and_deletions() {
    let (_temp, dir) = state_log();
    let args = [
        "state",
        path(&dir),
        "rooms",
        "lobby",
        "--history",
        "--limit",
        "2",
        "--json",
    ];
    let page = run(&args).ok().json();
    let versions: Vec<u64> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|message| message["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, vec![5, 4], "newest first");
    let next = page["next"].as_u64().unwrap();
    assert_eq!(next, 4);
    let before = next.to_string();
    let mut older = args.to_vec();
    older.extend(["--before", &before]);
    let page = run(&older).ok().json();
    let messages = page["messages"].as_array().unwrap();
    assert_eq!(messages[0]["version"], 3);
    assert_eq!(messages[0]["deleted"], true);
    assert_eq!(messages[0]["body"], "");
    assert_eq!(messages[1]["version"], 2);
    assert_eq!(messages[1]["body"], "fixed");
    assert_eq!(messages[1]["edited"], true);
    let human = run(&["state", path(&dir), "rooms", "lobby", "--history"])
        .ok()
        .stdout;
    assert_eq!(human.lines().count(), 5);
    assert!(human.contains("ada: fixed (edited)"), "{human}");
}

#[test]
fn unknown_ids_and_entities_are_clear_errors() {
    let (_temp, dir) = state_log();
    let missing = run(&["state", path(&dir), "runs", "nope"]).failed();
    assert_eq!(missing.code, 1);
    assert!(missing.stderr.contains("nope"), "{}", missing.stderr);
    let entity = run(&["state", path(&dir), "planets"]).failed();
    assert_eq!(entity.code, 2);
    let history = run(&["state", path(&dir), "runs", "--history"]).failed();
    assert_eq!(history.code, 2);
}
