//! `logbook::import` streams (issue 16): a 100 MB room file, generated here into a temporary
//! directory, imports with memory bounded by one element, not by the file: the parser never
//! held more than the largest message, and the process's peak resident set stays far below
//! the file's size. Its own test binary, so the peak is this test's alone.

use logbook::import::{self, ImportFormat};
use logbook::{BuiltinLog, LogbookOptions};
use std::io::Write;

/// The generated file's size.
const FILE_BYTES: u64 = 100 << 20;
/// Each message's body.
const BODY_BYTES: usize = 1000;

/// The process's peak resident set (`VmHWM`), in bytes.
fn peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status
        .lines()
        .find(|line| line.starts_with("VmHWM:"))
        .expect("VmHWM in /proc/self/status");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|value| value.parse().ok())
        .expect("VmHWM value");
    kib * 1024
}

/// Writes a room file of about `FILE_BYTES` to `path`, streaming; returns the message count.
fn generate(path: &std::path::Path) -> u64 {
    let file = std::fs::File::create(path).expect("create");
    let mut out = std::io::BufWriter::new(file);
    write!(
        out,
        "{{\"id\": \"large\", \"name\": \"Large\", \"created_at_ms\": 1, \"messages\": ["
    )
    .unwrap();
    let body = "b".repeat(BODY_BYTES);
    let mut written = 0u64;
    let mut count = 0u64;
    while written < FILE_BYTES {
        let separator = if count == 0 { "" } else { "," };
        let line = format!(
            "{separator}\n{{\"id\": \"m{count}\", \"author\": \"user{}\", \"body\": \"{body}\", \"timestamp_ms\": {}}}",
            count % 100,
            1_700_000_000_000 + count
        );
        out.write_all(line.as_bytes()).unwrap();
        written += line.len() as u64;
        count += 1;
    }
    write!(out, "\n]}}\n").unwrap();
    out.flush().unwrap();
    count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mb_room_file_imports_with_memory_bounded_by_one_element() {
    let temp = tempfile::tempdir().unwrap();
    let file = temp.path().join("room.json");
    let messages = generate(&file);
    let dir = temp.path().join("log");
    let (log, _) = BuiltinLog::open(&dir, LogbookOptions::default())
        .await
        .unwrap();
    let report = import::import_file(&log, ImportFormat::Room, &file)
        .await
        .unwrap();
    assert_eq!(report.elements, messages);
    assert_eq!(report.events, messages + 1);
    assert_eq!(report.events_written, messages + 1);
    assert!(report.input_bytes >= FILE_BYTES);
    // One message is about 1,080 bytes of JSON: that is what the parser held at once.
    assert!(
        report.element_bytes_largest < 2 * BODY_BYTES as u64,
        "largest element {} bytes",
        report.element_bytes_largest
    );
    assert_eq!(
        log.rooms().read().room("large").unwrap().messages_posted,
        messages
    );
    log.close().await.unwrap();
    let peak = peak_rss_bytes();
    eprintln!(
        "imported {messages} messages ({} bytes); peak RSS {peak} bytes",
        report.input_bytes
    );
    assert!(
        peak < FILE_BYTES / 2,
        "peak RSS {peak} bytes for a {FILE_BYTES}-byte file"
    );
}
