//! Concurrency across "replicas": optimistic concurrency between two pools, and the no-gap
//! proof: writer tasks in several processes append through their process's group committer
//! while followers ([`logbook_postgres::Follower`]) in other processes follow the log; every
//! follower sees every acknowledged event exactly once, in position order, the same on every
//! follower, and the acknowledged positions are dense.
//!
//! The child processes are this test binary itself, run with `--exact` on
//! [`child_process_entry_point`] and an environment variable saying the role.

mod common;

use common::{fresh_database, open, request};
use logbook_postgres::{
    AppendRequest, Error, ExpectedVersion, FollowOptions, PgStore, StoreOptions,
};
use std::collections::{BTreeMap, HashMap};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ROLE_VAR: &str = "LOGBOOK_PG_TEST_CHILD_ROLE";
const URL_VAR: &str = "LOGBOOK_PG_TEST_CHILD_URL";
const WRITER_PROCESSES: usize = 2;
const READER_PROCESSES: usize = 2;
const TASKS_PER_WRITER: usize = 8;
const ROUNDS_PER_TASK: usize = 25;
const EVENTS_PER_REQUEST: usize = 2;
/// Each round: two concurrent appends, one to the task's own stream, one to a stream every
/// writer shares.
const EVENTS_PER_ROUND: usize = 2 * EVENTS_PER_REQUEST;
/// Writers: the child processes plus this process.
const TOTAL_EVENTS: u64 =
    ((WRITER_PROCESSES + 1) * TASKS_PER_WRITER * ROUNDS_PER_TASK * EVENTS_PER_ROUND) as u64;
const SHARED_STREAMS: usize = 3;
const READ_DEADLINE: Duration = Duration::from_secs(120);
const READ_PAGE: usize = 97;

/// (position, stream, version)
type Seen = (u64, String, u64);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_with_the_same_expected_version_one_wins_the_other_gets_the_actual() {
    let database = fresh_database();
    let first = open(&database).await;
    let second = open(&database).await;
    first
        .append_group(&[request("room/contended", ExpectedVersion::NoStream, 1)])
        .await
        .expect("seed");
    for round in 0..20u64 {
        let a = [request("room/contended", ExpectedVersion::Exact(round), 1)];
        let b = [request("room/contended", ExpectedVersion::Exact(round), 1)];
        let (a, b) = tokio::join!(first.append_group(&a), second.append_group(&b));
        let outcomes = [a.expect("group a").remove(0), b.expect("group b").remove(0)];
        let wins = outcomes.iter().filter(|outcome| outcome.is_ok()).count();
        assert_eq!(wins, 1, "round {round}: {outcomes:?}");
        let loser = outcomes.iter().find_map(|outcome| outcome.as_ref().err());
        assert!(
            matches!(loser, Some(Error::WrongExpectedVersion { actual: Some(actual), expected: ExpectedVersion::Exact(expected), .. }) if *actual == round + 1 && *expected == round),
            "round {round}: {loser:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readers_in_other_processes_see_every_acknowledged_event_once_in_order() {
    let database = fresh_database();
    open(&database).await;
    let url = database.connection_string();
    let spawn = |role: &str| {
        Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "child_process_entry_point",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ROLE_VAR, role)
            .env(URL_VAR, &url)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn child test process")
    };
    let readers: Vec<_> = (0..READER_PROCESSES).map(|_| spawn("reader")).collect();
    let writers: Vec<_> = (0..WRITER_PROCESSES)
        .map(|n| spawn(&format!("writer{n}")))
        .collect();
    let local_reader = tokio::spawn(follow(url.clone()));
    let mut acknowledged = write_as(&url, "local").await;

    for writer in writers {
        let output = tokio::task::spawn_blocking(move || writer.wait_with_output())
            .await
            .expect("join")
            .expect("writer output");
        assert!(output.status.success(), "a writer process failed");
        acknowledged.extend(parse(&output.stdout, "ack"));
    }
    acknowledged.sort();
    check_acknowledged(&acknowledged);

    let mut followed = vec![local_reader.await.expect("local reader")];
    for reader in readers {
        let output = tokio::task::spawn_blocking(move || reader.wait_with_output())
            .await
            .expect("join")
            .expect("reader output");
        assert!(output.status.success(), "a reader process failed");
        followed.push(parse(&output.stdout, "seen"));
    }
    for (n, seen) in followed.iter().enumerate() {
        assert_eq!(
            seen.len(),
            acknowledged.len(),
            "reader {n} saw a different count"
        );
        assert!(
            seen == &acknowledged,
            "reader {n} saw another sequence than was acknowledged"
        );
    }
}

/// The child side: a no-op unless run by the test above with its environment variables.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn child_process_entry_point() {
    let (Ok(role), Ok(url)) = (std::env::var(ROLE_VAR), std::env::var(URL_VAR)) else {
        return;
    };
    let lines: Vec<String> = if role == "reader" {
        follow(url)
            .await
            .iter()
            .map(|seen| line("seen", seen))
            .collect()
    } else {
        write_as(&url, &role)
            .await
            .iter()
            .map(|seen| line("ack", seen))
            .collect()
    };
    // The first line starts after libtest's "test child_process_entry_point ... ".
    println!("\n{}", lines.join("\n"));
}

fn line(tag: &str, (position, stream, version): &Seen) -> String {
    format!("{tag} {position} {stream} {version}")
}

fn parse(stdout: &[u8], tag: &str) -> Vec<Seen> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|line| {
            let mut words = line.split(' ');
            if words.next() != Some(tag) {
                return None;
            }
            let position = words.next()?.parse().ok()?;
            let stream = words.next()?.to_string();
            let version = words.next()?.parse().ok()?;
            Some((position, stream, version))
        })
        .collect()
}

/// `TASKS_PER_WRITER` tasks, each appending `ROUNDS_PER_TASK` rounds of two concurrent appends
/// through the group committer; returns what was acked.
async fn write_as(url: &str, writer: &str) -> Vec<Seen> {
    let store = PgStore::open(url, StoreOptions::default())
        .await
        .expect("open writer");
    let tasks = (0..TASKS_PER_WRITER).map(|task| {
        let store = store.clone();
        let own = format!("room/{writer}-{task}");
        tokio::spawn(async move {
            let mut acked = Vec::new();
            for round in 0..ROUNDS_PER_TASK {
                let shared = format!("room/shared-{}", (task + round) % SHARED_STREAMS);
                let own = request(&own, ExpectedVersion::Any, EVENTS_PER_REQUEST);
                let shared = request(&shared, ExpectedVersion::Any, EVENTS_PER_REQUEST);
                let (own_outcome, shared_outcome) =
                    tokio::join!(store.append(own.clone()), store.append(shared.clone()));
                acked.extend(acknowledged_events(&own, own_outcome.expect("append")));
                acked.extend(acknowledged_events(
                    &shared,
                    shared_outcome.expect("append"),
                ));
            }
            acked
        })
    });
    let mut acked = Vec::new();
    for task in tasks {
        acked.extend(task.await.expect("writer task"));
    }
    acked
}

fn acknowledged_events(request: &AppendRequest, appended: logbook_postgres::Appended) -> Vec<Seen> {
    (0..appended.count)
        .map(|n| {
            (
                appended.first_position + n,
                request.stream.to_string(),
                appended.first_version + n,
            )
        })
        .collect()
}

/// Follows the log from position 1 with a [`logbook_postgres::Follower`] until the last
/// position; asserts order as it goes.
async fn follow(url: String) -> Vec<Seen> {
    let store = PgStore::open(&url, StoreOptions::default())
        .await
        .expect("open reader");
    let options = FollowOptions {
        page_max: READ_PAGE,
        ..FollowOptions::default()
    };
    let mut follower = store.follow(1, options);
    let started = Instant::now();
    let mut seen: Vec<Seen> = Vec::new();
    let mut last = 0;
    while last < TOTAL_EVENTS {
        let left = READ_DEADLINE.saturating_sub(started.elapsed());
        assert!(!left.is_zero(), "follower stuck after position {last}");
        for raw in follower.next_page_within(left).await.expect("follow") {
            assert!(
                raw.position > last,
                "position {} after {last}",
                raw.position
            );
            last = raw.position;
            let envelope = &raw.envelope;
            seen.push((
                raw.position,
                envelope.stream().to_string(),
                envelope.stream_version(),
            ));
        }
    }
    seen
}

/// Acknowledged positions are 1..=TOTAL, each once, and each stream's versions are dense and
/// ascend with position.
fn check_acknowledged(acknowledged: &[Seen]) {
    let positions: Vec<u64> = acknowledged
        .iter()
        .map(|(position, ..)| *position)
        .collect();
    let expected: Vec<u64> = (1..=TOTAL_EVENTS).collect();
    assert!(
        positions == expected,
        "acknowledged positions are not 1..={TOTAL_EVENTS}"
    );
    let mut versions: HashMap<&str, Vec<u64>> = HashMap::new();
    for (_, stream, version) in acknowledged {
        versions.entry(stream).or_default().push(*version);
    }
    let bad: BTreeMap<&str, usize> = versions
        .iter()
        .filter(|(_, list)| !list.iter().copied().eq(0..list.len() as u64))
        .map(|(stream, list)| (*stream, list.len()))
        .collect();
    assert!(
        bad.is_empty(),
        "streams whose versions are not dense in position order: {bad:?}"
    );
}
