//! Process crash: a child process appends with `SyncPolicy::Always` and prints every
//! acknowledged position; the test kills it with SIGKILL at random moments, reopens the log and
//! checks that every acknowledged record is there and intact (the payload at position `p` is
//! derived from `p`). A quarter of the kills are timed from the spawn, so they also land in
//! the child's recovery; the rest from the moment the child reports its log open.
//! Cycles: `LOGBOOK_CRASH_CYCLES` (default 30); seed: `LOGBOOK_CRASH_SEED`.

use logbook_tests::child::LineChild;
use logbook_tests::{SplitMix, crash_child_options, crash_payload, digest, seed_from_env};
use logbook_wal::Wal;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const CHILD: &str = env!("CARGO_BIN_EXE_wal_crash_child");

/// One acknowledged append, as the child printed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ack {
    first: u64,
    last: u64,
    digest: u64,
}

fn parse_ack(line: &str) -> Ack {
    let fields: Vec<&str> = line.split(' ').collect();
    let [_, first, last, digest] = fields[..] else {
        panic!("bad line from the child: {line:?}");
    };
    Ack {
        first: first.parse().unwrap(),
        last: last.parse().unwrap(),
        digest: u64::from_str_radix(digest, 16).unwrap(),
    }
}

/// When a cycle's kill timer starts.
#[derive(Debug, Clone, Copy)]
enum KillClock {
    /// At spawn: the kill may land in the child's open (recovery, cut, sidecar writes).
    FromSpawn,
    /// Once the child reports its log open: the kill lands among appends.
    FromOpen,
}

/// Runs one child, kills it `lifetime` after `clock`, and returns what it acknowledged.
fn run_and_kill(dir: &Path, seed: u64, clock: KillClock, lifetime: Duration) -> Vec<Ack> {
    let child = LineChild::spawn(
        Command::new(CHILD)
            .arg("append")
            .arg(dir)
            .arg(seed.to_string()),
    );
    let mut lines = Vec::new();
    if let KillClock::FromOpen = clock {
        // A child that dies before opening closes its stdout; `kill` below reports it.
        let deadline = Instant::now() + Duration::from_secs(60);
        while let Ok(line) = child.recv_until(deadline) {
            let opened = line.starts_with("open ");
            lines.push(line);
            if opened {
                break;
            }
        }
    }
    std::thread::sleep(lifetime);
    // SIGKILL on Unix: no destructor, no final sync, no unlock.
    lines.extend(child.kill());
    lines
        .iter()
        .filter(|line| line.starts_with("ack "))
        .map(|line| parse_ack(line))
        .collect()
}

/// Reopens the log: it must recover, hold every acknowledged record, and nothing but records
/// derived from their positions, gapless from 1.
fn check_log(dir: &Path, acked_last: u64) -> u64 {
    let (wal, report) =
        Wal::open(dir, crash_child_options()).expect("recovery after SIGKILL succeeds");
    assert!(report.salvage.is_none());
    let last = report.last_position;
    assert!(
        last >= acked_last,
        "recovered to {last}, acknowledged {acked_last}"
    );
    let mut expected = 1;
    for record in wal.read_from(1) {
        let record = record.expect("every record reads back");
        assert_eq!(record.position, expected, "gapless");
        assert!(
            record.payload == crash_payload(record.position),
            "record {} damaged",
            record.position
        );
        expected += 1;
    }
    assert_eq!(expected - 1, last);
    wal.close().unwrap();
    last
}

#[test]
fn acknowledged_appends_survive_sigkill() {
    let cycles: u32 = std::env::var("LOGBOOK_CRASH_CYCLES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(30);
    let mut random = SplitMix(seed_from_env("LOGBOOK_CRASH_SEED"));
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("log");
    let started = Instant::now();
    let mut acked_last = 0;
    let mut acks_total = 0;
    let mut cycles_with_acks = 0;
    for cycle in 0..cycles {
        let clock = if random.range(0, 4) == 0 {
            KillClock::FromSpawn
        } else {
            KillClock::FromOpen
        };
        let lifetime = Duration::from_millis(random.range(20, 200));
        let acks = run_and_kill(&dir, random.next_u64(), clock, lifetime);
        for ack in &acks {
            assert_eq!(
                ack.first,
                acked_last + 1,
                "cycle {cycle}: acks follow each other"
            );
            let payloads: Vec<u8> = (ack.first..=ack.last).flat_map(crash_payload).collect();
            assert_eq!(
                ack.digest,
                digest(&payloads),
                "child and test agree on payloads"
            );
            acked_last = ack.last;
        }
        acks_total += acks.len();
        cycles_with_acks += usize::from(!acks.is_empty());
        // Positions a crash cut were never acknowledged; the next child reuses them.
        acked_last = check_log(&dir, acked_last);
        if (cycle + 1) % 100 == 0 {
            // Long soaks (LOGBOOK_CRASH_CYCLES) say how far they got.
            eprintln!(
                "{} kills, {acked_last} records, {:?}",
                cycle + 1,
                started.elapsed()
            );
        }
    }
    eprintln!(
        "{cycles} kills, {acks_total} acknowledged appends ({cycles_with_acks} cycles with acks), \
         {acked_last} records, {:?}",
        started.elapsed()
    );
    assert!(
        cycles_with_acks > 0,
        "no child ever appended: the test tested nothing"
    );
}
