//! A durable consumer killed with SIGKILL: a child process (`consumer_kill_child`) handles the
//! events of a real log directory, acknowledging each and checkpointing every 7 positions,
//! and is killed after a random number of handled events, several times over. After each kill
//! the log's checkpoint is at least the last one the child reported (durable) and at most the
//! last event it handled; the next child resumes right after that checkpoint: no event is
//! skipped, and the events replayed are only those handled after the checkpoint (at most one
//! checkpoint interval's worth). Cycles: `LOGBOOK_KILL_CYCLES` (default 4); seed:
//! `LOGBOOK_KILL_SEED`.

use logbook::{ExpectedVersion, Logbook, Projections, StreamId};
use logbook_tests::child::LineChild;
use logbook_tests::{CounterEvent, SplitMix, added, seed_from_env, test_options};
use std::path::Path;
use std::process::Command;
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
    let mut child = LineChild::spawn(Command::new(CHILD).arg(dir).arg(EVENTS.to_string()));
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
        let line = child.expect_line(deadline);
        take(&mut cycle, &line);
    }
    let rest = if cycle.done {
        child.wait_success()
    } else {
        // SIGKILL on Unix: no destructor runs, no checkpoint is written on the way out.
        child.kill()
    };
    for line in rest {
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
