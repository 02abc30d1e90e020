//! Read-only commands take no lock, work beside a live writer and never write a byte.

mod common;

use common::{binary, files, path, room_lines, room_log, run};
use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;

/// Every read-only command line, for a log in `dir`.
fn read_only_commands(dir: &str) -> Vec<Vec<String>> {
    let commands: &[&[&str]] = &[
        &["dump", dir],
        &["dump", dir, "--json", "--stream", "room/lobby"],
        &["dump", dir, "--frames"],
        &["verify", dir],
        &["verify", dir, "--json"],
        &["stats", dir],
        &["stats", dir, "--json"],
        &["tail", dir, "-n", "3"],
        &["state", dir, "rooms"],
        &["state", dir, "rooms", "lobby", "--history", "--json"],
        &["state", dir, "runs", "--json"],
        &["state", dir, "jobs"],
        &["state", dir, "workflows"],
        &["repair", dir],
    ];
    commands
        .iter()
        .map(|command| command.iter().map(|arg| (*arg).to_owned()).collect())
        .collect()
}

fn run_owned(command: &[String]) -> common::Output {
    let args: Vec<&str> = command.iter().map(String::as_str).collect();
    run(&args)
}

#[test]
fn read_only_commands_leave_a_closed_log_byte_identical() {
    let (_temp, dir) = room_log(5);
    let before = files(&dir);
    for command in read_only_commands(path(&dir)) {
        run_owned(&command).ok();
        assert_eq!(files(&dir), before, "{command:?} changed the directory");
    }
}

#[test]
fn read_only_commands_work_while_another_process_holds_the_write_lock() {
    let (_temp, dir) = room_log(2);
    let mut writer = binary()
        .args(["append", path(&dir)])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = writer.stdin.take().unwrap();
    let mut acks = BufReader::new(writer.stdout.take().unwrap()).lines();
    let line = &room_lines("lobby", 3)[3];
    writeln!(input, "{line}").unwrap();
    input.flush().unwrap();
    let ack: serde_json::Value = serde_json::from_str(&acks.next().unwrap().unwrap()).unwrap();
    assert_eq!(ack["position"], 4, "the writer is open and holds the lock");

    let second = common::run_with_input(&["append", path(&dir)], "").failed();
    assert!(second.stderr.contains("locked"), "{}", second.stderr);

    let wal_before = files(&dir.join("wal"));
    for command in read_only_commands(path(&dir)) {
        let output = run_owned(&command);
        assert_eq!(
            output.code, 0,
            "{command:?} beside a writer: {}",
            output.stderr
        );
    }
    let events = run(&["dump", path(&dir), "--json"]).ok().json_lines();
    assert_eq!(events.len(), 4, "the writer's durable event is visible");
    assert_eq!(
        files(&dir.join("wal")),
        wal_before,
        "no byte written to the segments"
    );

    drop(input);
    assert!(writer.wait().unwrap().success());
}
