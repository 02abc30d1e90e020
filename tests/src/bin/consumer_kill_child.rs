//! The child process of `tests/tests/consumer_kill.rs`.
//!
//! `consumer_kill_child <dir>` opens the log in `<dir>` (`SyncPolicy::Always`), opens the
//! durable consumer `worker` (a checkpoint every 7 positions, no timer) and, until killed or
//! until the log's user events run out, handles each event: it prints `handled P` (flushed)
//! and then acknowledges P; after an acknowledgement that wrote a checkpoint it prints
//! `checkpoint C` (the checkpoint is durable by then). A short sleep per event gives the
//! parent time to kill it mid-work. Ends with `done` once every event up to `<last>` was
//! handled.

use logbook::{ConsumerOptions, Logbook};
use logbook_tests::{CounterEvent, test_options};
use std::io::Write;
use std::time::Duration;

fn fail(message: String) -> ! {
    eprintln!("consumer_kill_child: {message}");
    std::process::exit(1)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .unwrap_or_else(|| fail("usage: <dir> <last>".into()));
    let last: u64 = args
        .next()
        .and_then(|text| text.parse().ok())
        .unwrap_or_else(|| fail("usage: <dir> <last>".into()));
    let (log, _) = Logbook::<CounterEvent>::open(&dir, test_options())
        .await
        .unwrap_or_else(|error| fail(format!("open: {error}")));
    let options = ConsumerOptions {
        checkpoint_every_events: 7,
        checkpoint_interval: Duration::from_secs(3600),
        ..ConsumerOptions::default()
    };
    let mut consumer = log
        .consumer("worker", options)
        .await
        .unwrap_or_else(|error| fail(format!("consumer: {error}")));
    let mut stdout = std::io::stdout();
    while consumer.acked() < last {
        let event = match consumer.next().await {
            Some(Ok(event)) => event,
            Some(Err(error)) => fail(format!("next: {error}")),
            None => fail("the log closed".into()),
        };
        let _ = writeln!(stdout, "handled {}", event.position);
        let _ = stdout.flush();
        let before = consumer.checkpointed();
        consumer
            .ack(event.position)
            .await
            .unwrap_or_else(|error| fail(format!("ack: {error}")));
        if consumer.checkpointed() != before {
            let _ = writeln!(stdout, "checkpoint {}", consumer.checkpointed());
            let _ = stdout.flush();
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let _ = writeln!(stdout, "done");
    let _ = stdout.flush();
    consumer
        .close()
        .await
        .unwrap_or_else(|error| fail(format!("close: {error}")));
    log.close()
        .await
        .unwrap_or_else(|error| fail(format!("close log: {error}")));
}
