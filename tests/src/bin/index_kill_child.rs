//! The child process of `tests/tests/index_kill.rs`.
//!
//! `index_kill_child <dir> <appends>` opens the log in `<dir>` (`SyncPolicy::Always`; after
//! the parent's clean close the stream index answers from its recent file while sled opens in
//! the background), prints `open`, then appends `<appends>` batches of 100 events, rotating
//! over the streams `room/0` .. `room/2`, and prints `ack <stream> <events>` after each (the
//! stream's event count once the batch is durable). Then it closes the log cleanly and prints
//! `closed`, unless the parent killed it first.

use logbook::{ExpectedVersion, Logbook, StreamId};
use logbook_tests::{CounterEvent, added, test_options};
use std::io::Write;

/// Events per append.
const BATCH: u64 = 100;
const STREAMS: u64 = 3;

fn fail(message: String) -> ! {
    eprintln!("index_kill_child: {message}");
    std::process::exit(1)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(appends)) = (args.next(), args.next().and_then(|a| a.parse().ok())) else {
        fail("usage: <dir> <appends>".into())
    };
    let appends: u64 = appends;
    let (log, _) = Logbook::<CounterEvent>::open(&dir, test_options())
        .await
        .unwrap_or_else(|error| fail(format!("open: {error}")));
    let mut stdout = std::io::stdout();
    let say = |stdout: &mut std::io::Stdout, line: String| {
        writeln!(stdout, "{line}").and_then(|()| stdout.flush())
    };
    say(&mut stdout, "open".into()).unwrap_or_else(|error| fail(format!("stdout: {error}")));
    for append in 0..appends {
        let index = append % STREAMS;
        let stream = StreamId::new(format!("room/{index}"))
            .unwrap_or_else(|error| fail(format!("stream: {error}")));
        let events = (0..BATCH).map(|amount| added(amount, "kill")).collect();
        let result = log
            .append(&stream, ExpectedVersion::Any, events)
            .await
            .unwrap_or_else(|error| fail(format!("append: {error}")));
        let count = result.version + 1;
        say(&mut stdout, format!("ack {index} {count}"))
            .unwrap_or_else(|error| fail(format!("stdout: {error}")));
    }
    log.close()
        .await
        .unwrap_or_else(|error| fail(format!("close: {error}")));
    say(&mut stdout, "closed".into()).unwrap_or_else(|error| fail(format!("stdout: {error}")));
}
