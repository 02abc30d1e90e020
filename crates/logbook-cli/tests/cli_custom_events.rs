//! The CLI as a library for a service's own events: the example `mylog` binary's event type
//! (`examples/mylog.rs`, included here) run in process through `logbook_cli::run_with`.
//! `append` takes the events' serde JSON, `dump --json` and `tail` show it, a line of the wrong
//! shape is one clear error with exit code 1, `dump --json` round-trips through `append`, and
//! the program name in usage text is the binary's. Before, `logbook-cli` had no library: this
//! file did not compile.

#[path = "../examples/mylog.rs"]
#[allow(dead_code)]
mod mylog;

use mylog::TaskEvent;
use serde_json::{Value, json};
use std::path::Path;
use std::process::ExitCode;

/// What one in-process run of `mylog` produced.
struct Run {
    code: ExitCode,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(self) -> Run {
        assert_eq!(
            self.code,
            ExitCode::SUCCESS,
            "stdout: {}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        self
    }

    fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|line| {
                serde_json::from_str(line).unwrap_or_else(|error| panic!("{line}: {error}"))
            })
            .collect()
    }
}

/// Runs `mylog ARGS` in process with `stdin`.
fn mylog(args: &[&str], stdin: &str) -> Run {
    let mut input = stdin.as_bytes();
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    let argv = std::iter::once("mylog").chain(args.iter().copied());
    let code = logbook_cli::run_with::<TaskEvent, _, _>(
        argv,
        &mut logbook_cli::Io {
            stdin: &mut input,
            stdout: &mut stdout,
            stderr: &mut stderr,
        },
    );
    Run {
        code,
        stdout: String::from_utf8(stdout).expect("UTF-8 stdout"),
        stderr: String::from_utf8(stderr).expect("UTF-8 stderr"),
    }
}

fn path(dir: &Path) -> &str {
    dir.to_str().expect("UTF-8 path")
}

const STARTED: &str =
    r#"{"stream":"task/7","data":{"Started":{"name":"backup"}},"expected_version":"no_stream"}"#;
const PROGRESSED: &str =
    r#"{"stream":"task/7","type":"task.progressed","data":{"Progressed":{"percent":40}}}"#;

#[test]
fn custom_events_are_appended_from_json_and_dumped_as_json() {
    let temp = tempfile::tempdir().expect("tempdir");
    let dir = temp.path().join("log");
    let acks = mylog(
        &["append", path(&dir)],
        &format!("{STARTED}\n{PROGRESSED}\n"),
    )
    .ok()
    .json_lines();
    assert_eq!(
        acks,
        vec![
            json!({"position": 1, "stream": "task/7", "version": 0}),
            json!({"position": 2, "stream": "task/7", "version": 1}),
        ]
    );
    let events = mylog(&["dump", path(&dir), "--json"], "").ok().json_lines();
    assert_eq!(events.len(), 2);
    for event in &events {
        let keys: Vec<&str> = event
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        let mut expected = vec![
            "data",
            "position",
            "schema_version",
            "stream",
            "timestamp_ms",
            "type",
            "version",
        ];
        expected.sort_unstable();
        let mut keys = keys;
        keys.sort_unstable();
        assert_eq!(keys, expected, "{event}");
    }
    assert_eq!(events[0]["type"], "task.started");
    assert_eq!(events[0]["data"], json!({"Started": {"name": "backup"}}));
    assert_eq!(events[1]["type"], "task.progressed");
    assert_eq!(events[1]["data"], json!({"Progressed": {"percent": 40}}));
    assert_eq!(events[1]["schema_version"], 1);

    let tail = mylog(&["tail", path(&dir), "-n", "1"], "").ok();
    let lines: Vec<&str> = tail.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{}", tail.stdout);
    assert!(lines[0].contains("task/7@1"), "{}", lines[0]);
    assert!(lines[0].contains("task.progressed"), "{}", lines[0]);
    assert!(
        lines[0].contains(r#"{"Progressed":{"percent":40}}"#),
        "{}",
        lines[0]
    );
}

#[test]
fn a_line_of_the_wrong_shape_is_one_clear_error_and_nothing_is_written_for_it() {
    let temp = tempfile::tempdir().expect("tempdir");
    let dir = temp.path().join("log");
    let wrong = r#"{"stream":"task/7","data":{"Exploded":{"percent":40}}}"#;
    let run = mylog(&["append", path(&dir)], &format!("{STARTED}\n{wrong}\n"));
    assert_eq!(run.code, ExitCode::from(1), "{}", run.stderr);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(run.stderr.starts_with("error: line 2: "), "{}", run.stderr);
    assert!(run.stderr.contains("Exploded"), "{}", run.stderr);
    assert!(run.stderr.contains("serde JSON"), "{}", run.stderr);
    assert_eq!(run.json_lines().len(), 1, "the first line was acknowledged");

    let mismatch = r#"{"stream":"task/8","type":"task.finished","data":{"Started":{"name":"x"}}}"#;
    let run = mylog(&["append", path(&dir)], mismatch);
    assert_eq!(run.code, ExitCode::from(1), "{}", run.stderr);
    assert!(run.stderr.contains("task.started"), "{}", run.stderr);

    let events = mylog(&["dump", path(&dir), "--json"], "").ok().json_lines();
    assert_eq!(events.len(), 1, "only the first line was written");
}

#[test]
fn dump_json_appends_again_into_another_log() {
    let temp = tempfile::tempdir().expect("tempdir");
    let first = temp.path().join("first");
    let second = temp.path().join("second");
    let lines = [
        STARTED,
        PROGRESSED,
        r#"{"stream":"task/8","data":{"Failed":{"reason":"disk full","retry":true}}}"#,
        r#"{"stream":"task/7","data":"Finished"}"#,
    ];
    mylog(&["append", path(&first)], &lines.join("\n")).ok();
    let dumped = mylog(&["dump", path(&first), "--json"], "")
        .ok()
        .json_lines();
    // What `jq -c '{stream, type, data}'` makes of each dumped line.
    let input: Vec<String> = dumped
        .iter()
        .map(|event| {
            json!({"stream": event["stream"], "type": event["type"], "data": event["data"]})
                .to_string()
        })
        .collect();
    mylog(&["append", path(&second)], &input.join("\n")).ok();
    let again = mylog(&["dump", path(&second), "--json"], "")
        .ok()
        .json_lines();
    let shape = |events: &[Value]| -> Vec<(Value, Value, Value, Value)> {
        events
            .iter()
            .map(|event| {
                let field = |key: &str| event[key].clone();
                (
                    field("stream"),
                    field("version"),
                    field("type"),
                    field("data"),
                )
            })
            .collect()
    };
    assert_eq!(shape(&again), shape(&dumped));
    assert_eq!(dumped[3]["data"], json!("Finished"));
}

#[test]
fn the_usage_names_the_binary_and_offers_only_the_generic_commands() {
    let help = mylog(&["--help"], "").ok();
    assert!(
        help.stdout.contains("Usage: mylog <COMMAND>"),
        "{}",
        help.stdout
    );
    for command in [
        "dump",
        "tail",
        "append",
        "verify",
        "stats",
        "repair",
        "delete-stream",
    ] {
        assert!(help.stdout.contains(command), "{command}: {}", help.stdout);
    }
    for builtin_only in ["state", "types", "demo", "snapshot", "compact"] {
        assert!(
            !help.stdout.contains(&format!("  {builtin_only} ")),
            "{builtin_only}: {}",
            help.stdout
        );
    }
    let state = mylog(&["state", "/nowhere", "runs"], "");
    assert_eq!(state.code, ExitCode::from(2), "{}", state.stderr);
    assert!(state.stderr.contains("Usage: mylog"), "{}", state.stderr);
    let append_help = mylog(&["append", "--help"], "").ok();
    assert!(
        append_help.stdout.contains("the event's serde JSON"),
        "{}",
        append_help.stdout
    );
}

#[test]
fn a_missing_directory_is_a_usage_error_naming_it() {
    let temp = tempfile::tempdir().expect("tempdir");
    let missing = temp.path().join("missing");
    let run = mylog(&["dump", path(&missing)], "");
    assert_eq!(run.code, ExitCode::from(2), "{}", run.stderr);
    assert!(run.stderr.contains("no such directory"), "{}", run.stderr);
    assert!(run.stderr.contains(path(&missing)), "{}", run.stderr);
}
