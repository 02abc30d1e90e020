//! Helpers shared by the CLI tests: run the built `logbook` binary, build logs through it, read
//! directories byte for byte.
#![allow(dead_code)]

use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// What a run of the binary produced.
#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// The stdout lines parsed as JSON, one object per line.
    pub fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|line| {
                serde_json::from_str(line).unwrap_or_else(|error| panic!("{line}: {error}"))
            })
            .collect()
    }

    /// The whole stdout parsed as one JSON document.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|error| panic!("{}: {error}", self.stdout))
    }

    /// Asserts a clean exit and returns self.
    pub fn ok(self) -> Self {
        assert_eq!(
            self.code, 0,
            "stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }

    /// Asserts a failure that is one clear line and no panic.
    pub fn failed(self) -> Self {
        assert_ne!(self.code, 0, "stdout: {}", self.stdout);
        assert!(!self.stderr.contains("panicked"), "{}", self.stderr);
        assert_eq!(self.stderr.trim().lines().count(), 1, "{}", self.stderr);
        assert!(self.stderr.starts_with("error: "), "{}", self.stderr);
        self
    }
}

pub fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_logbook"))
}

/// Runs `logbook ARGS` with `stdin` (empty when `None`).
pub fn run_with_input(args: &[&str], stdin: &str) -> Output {
    let mut child = binary()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn logbook");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin.as_bytes()).expect("write stdin");
    drop(input);
    let output = child.wait_with_output().expect("wait logbook");
    Output {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

pub fn run(args: &[&str]) -> Output {
    run_with_input(args, "")
}

pub fn path(dir: &Path) -> &str {
    dir.to_str().expect("UTF-8 path")
}

/// Appends NDJSON lines; returns the acknowledgements.
pub fn append(dir: &Path, lines: &[String]) -> Vec<Value> {
    let input = lines.join("\n") + "\n";
    run_with_input(&["append", path(dir)], &input)
        .ok()
        .json_lines()
}

/// `room.created` for `room/<room>`, then `messages` posts by ada.
pub fn room_lines(room: &str, messages: usize) -> Vec<String> {
    let mut lines = vec![format!(
        r#"{{"stream":"room/{room}","type":"room.created","data":{{"name":"{room}"}}}}"#
    )];
    for index in 0..messages {
        lines.push(format!(
            r#"{{"stream":"room/{room}","type":"room.message_posted","data":{{"message_id":"m{index}","author":"ada","body":"message {index}"}}}}"#
        ));
    }
    lines
}

/// A fresh log under a temporary directory with one room of `messages` posts.
pub fn room_log(messages: usize) -> (tempfile::TempDir, PathBuf) {
    let temp = tempfile::tempdir().expect("tempdir");
    let dir = temp.path().join("log");
    append(&dir, &room_lines("lobby", messages));
    (temp, dir)
}

/// Every file under `dir` (recursively) with its bytes.
pub fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut found = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current).expect("read_dir") {
            let entry = entry.expect("entry");
            let path = entry.path();
            let relative = path.strip_prefix(dir).expect("prefix").to_path_buf();
            if entry.file_type().expect("file type").is_dir() {
                found.insert(relative, b"<dir>".to_vec());
                pending.push(path);
            } else {
                found.insert(relative, std::fs::read(&path).expect("read"));
            }
        }
    }
    found
}

/// The single segment file of a small log.
pub fn first_segment(dir: &Path) -> PathBuf {
    dir.join("wal").join("00000000000000000001.seg")
}

/// `dump --frames --json`: the byte offset of each frame, by position.
pub fn frame_offsets(dir: &Path) -> BTreeMap<u64, u64> {
    run(&["dump", path(dir), "--frames", "--json"])
        .ok()
        .json_lines()
        .iter()
        .filter_map(|frame| Some((frame["position"].as_u64()?, frame["offset"].as_u64()?)))
        .collect()
}

/// Flips one bit of a file at `offset`.
pub fn flip_bit(file: &Path, offset: u64) {
    let mut bytes = std::fs::read(file).expect("read");
    bytes[offset as usize] ^= 0x04;
    std::fs::write(file, bytes).expect("write");
}

/// Cuts the last `bytes` bytes off a file (a torn tail).
pub fn tear(file: &Path, bytes: u64) {
    let len = std::fs::metadata(file).expect("metadata").len();
    let handle = std::fs::OpenOptions::new()
        .write(true)
        .open(file)
        .expect("open");
    handle.set_len(len - bytes).expect("set_len");
}

/// A log of one room with `messages` posts in segments of at most 2 KiB, written through the
/// engine (the CLI always uses the default 64 MiB segments).
pub fn multi_segment_log(messages: usize) -> (tempfile::TempDir, PathBuf) {
    use logbook::{BuiltinEvent, BuiltinLog, LogbookOptions, StreamId};
    let temp = tempfile::tempdir().expect("tempdir");
    let dir = temp.path().join("log");
    let mut options = LogbookOptions::default();
    options.wal.segment_bytes_max = 2048;
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let (log, _) = BuiltinLog::open(&dir, options).await.expect("open");
        let room = StreamId::room("lobby").expect("stream");
        let created = BuiltinEvent::from_json("room.created", serde_json::json!({"name": "Lobby"}));
        log.execute(&room, created.expect("event")).await.expect("create");
        for index in 0..messages {
            let data = serde_json::json!({"message_id": format!("m{index}"), "author": "ada", "body": format!("message {index}")});
            let posted = BuiltinEvent::from_json("room.message_posted", data).expect("event");
            log.execute(&room, posted).await.expect("post");
        }
        log.close().await.expect("close");
    });
    (temp, dir)
}

/// The segment files of a log, oldest first.
pub fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir.join("wal"))
        .expect("wal dir")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "seg"))
        .collect();
    found.sort();
    found
}
