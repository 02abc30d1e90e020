//! The stream index's recent file across SIGKILL: a child (`index_kill_child`) opens a log
//! that the parent closed cleanly (so its index answers from `index/recent` while sled opens in
//! the background), appends batches of 100 events (enough for the index to write sled several
//! times), and is killed after a random number of acknowledged batches, or right after its
//! open, or lets it close cleanly. After each child the parent reopens the log and checks:
//! - no recent file survives a child killed after sled changed (its open removed the file
//!   before sled could change); one killed earlier may leave the parent's file, byte for byte
//!   (nothing else writes one but a clean close), and a clean close leaves one;
//! - every stream reads back exactly: all its acknowledged events, forward in pages and as its
//!   newest 50, and at most the one batch in flight at the kill besides.
//!
//! Then the parent closes the log cleanly, so the next child starts from a recent file again.
//!
//! Cycles: `LOGBOOK_INDEX_KILL_CYCLES` (default 6); seed: `LOGBOOK_INDEX_KILL_SEED`.

use logbook::{Logbook, StreamId};
use logbook_tests::child::LineChild;
use logbook_tests::{
    CounterEvent, SplitMix, newest_versions, seed_from_env, test_options, versions_forward,
};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const CHILD: &str = env!("CARGO_BIN_EXE_index_kill_child");
const STREAMS: usize = 3;
const BATCH: u64 = 100;
/// Batches a child appends when it is not killed (~30,000 events: sled is written at 16,384).
const APPENDS: u64 = 300;
/// Acknowledged batches after which sled has certainly been written: the index writes its
/// in-memory tail (16,384 entries) to sled before the batch that fills it is acknowledged.
const SLED_WRITTEN_AFTER: u64 = 16_384_u64.div_ceil(BATCH);

type Log = Logbook<CounterEvent>;

fn recent(dir: &Path) -> std::path::PathBuf {
    dir.join("index").join("recent")
}

/// Reads every stream back and checks it holds `acked[i]` events, or one batch more (in
/// flight at a kill); returns the counts found.
async fn check(dir: &Path, acked: &[u64; STREAMS], cycle: u64) -> [u64; STREAMS] {
    let (log, _) = Log::open(dir, test_options()).await.unwrap();
    let mut found = [0; STREAMS];
    for (index, count) in found.iter_mut().enumerate() {
        let stream = StreamId::new(format!("room/{index}")).unwrap();
        let versions = versions_forward(&log, &stream, 700).await;
        let n = versions.len() as u64;
        assert!(
            n == acked[index] || n == acked[index] + BATCH,
            "cycle {cycle}, room/{index}: {n} events, {} acknowledged",
            acked[index]
        );
        assert_eq!(versions, (0..n).collect::<Vec<_>>(), "cycle {cycle}");
        let newest = newest_versions(&log, &stream, 50).await;
        assert_eq!(
            newest,
            (n.saturating_sub(50)..n).rev().collect::<Vec<_>>(),
            "cycle {cycle}, room/{index}"
        );
        *count = n;
    }
    log.close().await.unwrap();
    assert!(
        recent(dir).exists(),
        "cycle {cycle}: the parent's clean close"
    );
    found
}

#[test]
fn a_killed_child_never_leaves_a_recent_file_and_every_stream_reads_back() {
    let seed = seed_from_env("LOGBOOK_INDEX_KILL_SEED");
    let cycles: u64 = std::env::var("LOGBOOK_INDEX_KILL_CYCLES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(6);
    let mut random = SplitMix(seed);
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut acked = [0u64; STREAMS];
    // The first open creates the log; its clean close writes the first recent file.
    acked = runtime.block_on(check(dir.path(), &acked, 0));
    let mut left = std::fs::read(recent(dir.path())).unwrap();
    for cycle in 1..=cycles {
        // Every third child closes cleanly; the others are killed: the first after sled was
        // written, then one in four right after its open (sled may still be opening), the rest
        // after 1..APPENDS acknowledged batches.
        let kill_after = match cycle % 3 {
            0 => None,
            _ if cycle == 1 => Some(SLED_WRITTEN_AFTER + 10),
            _ if random.range(0, 4) == 0 => Some(0),
            _ => Some(random.range(1, APPENDS)),
        };
        let mut child =
            LineChild::spawn(Command::new(CHILD).arg(dir.path()).arg(APPENDS.to_string()));
        let deadline = Instant::now() + Duration::from_secs(120);
        assert_eq!(child.expect_line(deadline), "open");
        let mut acks = 0u64;
        let record = |line: &str, acked: &mut [u64; STREAMS]| {
            let mut words = line.split(' ');
            match (words.next(), words.next(), words.next()) {
                (Some("ack"), Some(index), Some(count)) => {
                    let index: usize = index.parse().unwrap();
                    acked[index] = count.parse().unwrap();
                }
                (Some("closed"), None, None) => {}
                _ => panic!("bad line {line:?}"),
            }
        };
        let rest = match kill_after {
            Some(after) => {
                while acks < after {
                    let line = child.expect_line(deadline);
                    record(&line, &mut acked);
                    acks += 1;
                }
                child.kill()
            }
            None => child.wait_success(),
        };
        for line in &rest {
            record(line, &mut acked);
        }
        if let Some(after) = kill_after {
            match std::fs::read(recent(dir.path())) {
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => panic!("cycle {cycle}: {error}"),
                Ok(bytes) => {
                    assert!(
                        after < SLED_WRITTEN_AFTER,
                        "cycle {cycle}: a recent file survived a sled write ({after} batches)"
                    );
                    assert_eq!(
                        bytes, left,
                        "cycle {cycle}: only the parent's file may remain"
                    );
                }
            }
        } else {
            assert_eq!(rest.last().map(String::as_str), Some("closed"));
            assert!(recent(dir.path()).exists(), "cycle {cycle}: a clean close");
        }
        acked = runtime.block_on(check(dir.path(), &acked, cycle));
        left = std::fs::read(recent(dir.path())).unwrap();
    }
}
