//! The child process of the process-level WAL tests (`tests/tests/wal_process_crash.rs` and
//! `tests/tests/wal_lock.rs`).
//!
//! - `wal_crash_child append <dir> <seed>`: opens the log with `SyncPolicy::Always` and appends
//!   single records and batches until killed (or for 60 s at most), printing `open <last>`
//!   once open, then `ack <first> <last> <digest>` once each append is acknowledged, flushed
//!   per line. The payload at position `p` is `logbook_tests::crash_payload(p)`, so the parent
//!   can check every record from its position alone.
//! - `wal_crash_child probe-lock <dir>`: tries to open the log for writing and prints
//!   `locked <path>` or `opened`.

use logbook_tests::{SplitMix, crash_child_options, crash_payload, digest};
use logbook_wal::{Error, Wal, WalOptions};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

fn fail(message: String) -> ! {
    eprintln!("wal_crash_child: {message}");
    std::process::exit(1)
}

fn append(dir: &Path, seed: u64) {
    // Every other child trusts the sidecars of sealed segments, so kills also land in opens
    // that skip the scan (the test's own reopen always scans).
    let options = WalOptions {
        verify_sealed_segments_on_open: seed.is_multiple_of(2),
        ..crash_child_options()
    };
    let (wal, report) =
        Wal::open(dir, options).unwrap_or_else(|error| fail(format!("open: {error}")));
    let mut out = std::io::stdout().lock();
    writeln!(out, "open {}", report.last_position)
        .and_then(|()| out.flush())
        .unwrap_or_else(|error| fail(format!("stdout: {error}")));
    let mut random = SplitMix(seed);
    let mut position = report.last_position + 1;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let count = if random.range(0, 4) == 0 {
            random.range(2, 6)
        } else {
            1
        };
        let payloads: Vec<Vec<u8>> = (position..position + count).map(crash_payload).collect();
        let receipt = wal
            .append_batch(&payloads)
            .unwrap_or_else(|error| fail(format!("append at {position}: {error}")));
        if receipt.first != position || receipt.last != position + count - 1 {
            fail(format!("expected {position}, got {receipt:?}"));
        }
        let batch_digest = digest(&payloads.concat());
        writeln!(
            out,
            "ack {} {} {batch_digest:016x}",
            receipt.first, receipt.last
        )
        .and_then(|()| out.flush())
        .unwrap_or_else(|error| fail(format!("stdout: {error}")));
        position = receipt.last + 1;
    }
}

fn probe_lock(dir: &Path) {
    match Wal::open(dir, crash_child_options()) {
        Ok(_) => println!("opened"),
        Err(Error::Locked { path }) => println!("locked {}", path.display()),
        Err(error) => fail(format!("open: {error}")),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1..).unwrap_or_default() {
        [mode, dir, seed] if mode == "append" => {
            let seed = seed
                .parse()
                .unwrap_or_else(|_| fail(format!("bad seed {seed}")));
            append(Path::new(dir), seed);
        }
        [mode, dir] if mode == "probe-lock" => probe_lock(Path::new(dir)),
        _ => fail("usage: wal_crash_child (append <dir> <seed> | probe-lock <dir>)".into()),
    }
}
