//! A durable consumer killed with SIGKILL: a child process (`consumer_kill_child`) handles the
//! events of a real log directory, acknowledging each and checkpointing every 7 positions,
//! and is killed after a random number of handled events, several times over. After each kill
//! the log's checkpoint is at least the last one the child reported (durable) and at most the
//! last event it handled; the next child resumes right after that checkpoint: no event is
//! skipped, and the events replayed are only those handled after the checkpoint (at most one
//! checkpoint interval's worth). Cycles: `LOGBOOK_KILL_CYCLES` (default 4); seed:
//! `LOGBOOK_KILL_SEED`.

use logbook::{ExpectedVersion, Logbook, Projections, StreamId};
use logbook_tests::{CounterEvent, SplitMix, added, seed_from_env, test_options};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const CHILD: &str = env!("CARGO_BIN_EXE_consumer_kill_child");
/// User events in the log (positions 1..=EVENTS; checkpoints come after them).
const EVENTS: u64 = 400;
/// The child's `checkpoint_every_events`.
const CHECKPOINT_EVERY: u64 = 7;

#[derive(Debug, Default)]
struct Cycle {
    handled: Vec<u64>,
    checkpoints: Vec<u64>,
    done: bool,
}

/// Runs a child until it handled `kill_after` events (or finished), kills it with SIGKILL.
fn run_child(dir: &Path, kill_after: Option<usize>) -> Cycle {
    let mut child = Command::new(CHILD)
        .arg(dir)
        .arg(EVENTS.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the child");
    let stdout = child.stdout.take().unwrap();
    let (lines, received) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap_or(0) > 0 {
            // A line cut by the kill has no newline: it was never reported in full.
            if let Some(complete) = line.strip_suffix('\n') {
                let _ = lines.send(complete.to_owned());
            }
            line.clear();
        }
    });
    let mut cycle = Cycle::default();
    let take = |cycle: &mut Cycle, line: &str| {
        if let Some(position) = line.strip_prefix("handled ") {
            cycle.handled.push(position.parse().unwrap());
        } else if let Some(position) = line.strip_prefix("checkpoint ") {
            cycle.checkpoints.push(position.parse().unwrap());
        } else if line == "done" {
            cycle.done = true;
        } else {
            panic!("unexpected line {line:?}");
        }
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cycle.done && kill_after.is_none_or(|limit| cycle.handled.len() < limit) {
        let left = deadline.saturating_duration_since(Instant::now());
        match received.recv_timeout(left) {
            Ok(line) => take(&mut cycle, &line),
            Err(error) => {
                let _ = child.kill();
                let mut stderr = String::new();
                let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
                panic!("no line from the child ({error}); its stderr: {stderr}");
            }
        }
    }
    if cycle.done {
        let status = child.wait().unwrap();
        assert!(status.success(), "the child failed: {status}");
    } else {
        // SIGKILL on Unix: no destructor runs, no checkpoint is written on the way out.
        child.kill().unwrap();
        assert!(!child.wait().unwrap().success(), "killed, not exited");
    }
    reader.join().unwrap();
    for line in received.try_iter() {
        take(&mut cycle, &line);
    }
    cycle
}

/// The consumer's checkpointed position as the log holds it (a read-only look: no claim).
async fn checkpointed(dir: &Path) -> u64 {
    let (log, _) =
        Logbook::<CounterEvent>::open_dir_with_projections(dir, test_options(), Projections::new())
            .await
            .unwrap();
    let position = log
        .stats()
        .consumers
        .iter()
        .find(|consumer| consumer.name == "worker")
        .map_or(0, |consumer| consumer.position);
    log.close().await.unwrap();
    position
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_consumer_resumes_after_its_durable_checkpoint() {
    let seed = seed_from_env("LOGBOOK_KILL_SEED");
    let cycles: usize = std::env::var("LOGBOOK_KILL_CYCLES")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(4);
    let mut random = SplitMix(seed);
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("log");
    {
        let (log, _) = Logbook::<CounterEvent>::open(&dir, test_options())
            .await
            .unwrap();
        let stream = StreamId::new("counter/work").unwrap();
        for amount in 0..EVENTS {
            log.append(&stream, ExpectedVersion::Any, vec![added(amount, "")])
                .await
                .unwrap();
        }
        log.close().await.unwrap();
    }
    let mut checkpoint = 0u64;
    let mut handled_once = vec![0u32; EVENTS as usize + 1];
    for cycle_index in 0..=cycles {
        let kill_after =
            (cycle_index < cycles).then(|| random.range(5, EVENTS / cycles as u64) as usize);
        let cycle = run_child(&dir, kill_after);
        // No gap: the child resumed right after the durable checkpoint, and went on in order.
        let expected: Vec<u64> = (checkpoint + 1..).take(cycle.handled.len()).collect();
        assert_eq!(
            cycle.handled, expected,
            "cycle {cycle_index} (seed {seed}) resumed after {checkpoint}"
        );
        for position in &cycle.handled {
            handled_once[*position as usize] += 1;
        }
        if cycle.done {
            assert_eq!(cycle.handled.last(), Some(&EVENTS));
            break;
        }
        let reported = cycle.checkpoints.last().copied().unwrap_or(checkpoint);
        let last_handled = cycle.handled.last().copied().unwrap_or(checkpoint);
        let durable = checkpointed(&dir).await;
        assert!(
            durable >= reported && durable <= last_handled,
            "cycle {cycle_index} (seed {seed}): checkpoint {durable}, reported {reported}, \
             last handled {last_handled}"
        );
        // What the next child replays: handled after the checkpoint, less than one batch
        // (plus the event whose ack was cut by the kill).
        assert!(
            last_handled - durable <= CHECKPOINT_EVERY,
            "cycle {cycle_index}: {} events to replay",
            last_handled - durable
        );
        checkpoint = durable;
    }
    assert!(
        handled_once[1..].iter().all(|count| *count >= 1),
        "every event handled at least once (seed {seed})"
    );
    assert_eq!(
        checkpointed(&dir).await,
        EVENTS,
        "the final close checkpointed the end"
    );
}
