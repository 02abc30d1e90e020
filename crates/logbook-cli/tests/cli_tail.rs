//! `tail`: the last N events; with -f, new events as they become durable, from a read-only
//! handle beside the writer.

mod common;

use common::{binary, path, room_log, run};
use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

#[test]
fn the_last_n_events() {
    let (_temp, dir) = room_log(5);
    let events = run(&["tail", path(&dir), "-n", "2", "--json"])
        .ok()
        .json_lines();
    let positions: Vec<u64> = events
        .iter()
        .map(|event| event["position"].as_u64().unwrap())
        .collect();
    assert_eq!(positions, vec![5, 6]);
    let human = run(&["tail", path(&dir)]).ok().stdout;
    assert_eq!(human.lines().count(), 6, "the default is 10, the log has 6");
}

#[test]
fn follow_prints_events_a_live_writer_makes_durable() {
    let (_temp, dir) = room_log(1);
    let mut tail = binary()
        .args(["tail", path(&dir), "-n", "1", "-f", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (sender, lines) = mpsc::channel();
    let stdout = tail.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if sender.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let first = lines.recv_timeout(Duration::from_secs(20)).unwrap();
    assert!(first.contains("\"position\":2"), "{first}");

    // A writer that stays open (stdin not closed) and appends one event at a time.
    let mut writer = binary()
        .args(["append", path(&dir)])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = writer.stdin.take().unwrap();
    let mut acks = BufReader::new(writer.stdout.take().unwrap()).lines();
    for index in 0..3 {
        writeln!(
            input,
            r#"{{"stream":"room/lobby","type":"room.message_posted","data":{{"message_id":"live{index}","author":"grace","body":"live {index}"}}}}"#
        )
        .unwrap();
        input.flush().unwrap();
        let ack = acks.next().unwrap().unwrap();
        let seen = lines
            .recv_timeout(Duration::from_secs(20))
            .expect("tail -f saw the event");
        let seen: serde_json::Value = serde_json::from_str(&seen).unwrap();
        let ack: serde_json::Value = serde_json::from_str(&ack).unwrap();
        assert_eq!(seen["position"], ack["position"]);
        assert_eq!(seen["data"]["body"], format!("live {index}"));
    }
    drop(input);
    assert!(writer.wait().unwrap().success());
    tail.kill().unwrap();
    tail.wait().unwrap();
}
