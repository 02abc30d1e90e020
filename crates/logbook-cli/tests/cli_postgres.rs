//! The CLI on a PostgreSQL URL: `append`, `delete-stream`, `truncate-stream`, `snapshot` and
//! `compact` write through the engine's PostgreSQL backend, `dump` reads read-only, with the
//! same output as on a directory; the snapshot lands in the database. `stats`, `verify`,
//! `tail`, `state` and `repair` open the database read-only and write nothing (every row's
//! `xmin` and `ctid`, and the table list, compared before and after).

mod common;

use common::{room_lines, run, run_with_input};
use logbook_pgtest::Cluster;

#[test]
fn the_write_commands_and_dump_work_on_a_database() {
    let database = Cluster::shared().create_database();
    let url = database.url();
    let mut lines = room_lines("lobby", 4);
    lines.extend(room_lines("secret", 1));
    let acks = run_with_input(&["append", &url], &(lines.join("\n") + "\n")).ok();
    let acks = acks.json_lines();
    assert_eq!(acks.len(), lines.len());
    assert_eq!(acks[0]["position"], 1);
    assert_eq!(acks.last().unwrap()["position"], lines.len() as u64);

    run(&["delete-stream", &url, "--stream", "room/secret"]).ok();
    run(&[
        "truncate-stream",
        &url,
        "--stream",
        "room/lobby",
        "--before",
        "2",
    ])
    .ok();
    let dumped = run(&["dump", &url, "--json"]).ok().json_lines();
    let secret = dumped
        .iter()
        .filter(|event| event["stream"] == "room/secret")
        .count();
    assert_eq!(secret, 0, "the deleted room's rows are gone");
    let lobby_versions: Vec<u64> = dumped
        .iter()
        .filter(|event| event["stream"] == "room/lobby")
        .map(|event| event["version"].as_u64().unwrap())
        .collect();
    assert_eq!(lobby_versions, vec![2, 3, 4], "versions below 2 removed");
    let engine_events = dumped
        .iter()
        .filter(|event| event["stream"] == "$logbook")
        .count();
    assert_eq!(engine_events, 2, "the delete's and the truncation's events");

    let snapshot = run(&["snapshot", &url, "--json"]).ok().json();
    assert!(snapshot["position"].as_u64().unwrap() > 0);
    let rows = Cluster::shared().psql(database.name(), "SELECT count(*) FROM logbook_snapshots");
    assert_eq!(rows, "1");
    run(&["compact", &url]).ok();
    // The log is still whole for the next writer.
    let more = run_with_input(
        &["append", &url],
        &(room_lines("later", 0).join("\n") + "\n"),
    )
    .ok();
    assert_eq!(more.json_lines().len(), 1);
}

/// A database log with three rooms, a job, a deleted room and a truncated one:
/// positions 1..=5 room/lobby v0..=4, 6..=7 room/secret v0..=1, 8 job/j1 v0, 9 the delete
/// ($logbook v0), 10 the truncation of lobby below version 2 ($logbook v1).
fn database_with_purges() -> (logbook_pgtest::TestDatabase, String) {
    let database = Cluster::shared().create_database();
    let url = database.url();
    let mut lines = room_lines("lobby", 4);
    lines.extend(room_lines("secret", 1));
    lines.push(r#"{"stream":"job/j1","type":"job.queued","data":{"kind":"embed"}}"#.to_owned());
    run_with_input(&["append", &url], &(lines.join("\n") + "\n")).ok();
    run(&["delete-stream", &url, "--stream", "room/secret"]).ok();
    run(&[
        "truncate-stream",
        &url,
        "--stream",
        "room/lobby",
        "--before",
        "2",
    ])
    .ok();
    (database, url)
}

/// Everything in logbook's tables, with each row's `xmin` and `ctid` (an update or a rewrite
/// changes them even when the values stay), and the database's table list: equal before and
/// after a command means it wrote nothing and ran no DDL.
fn fingerprint(database: &logbook_pgtest::TestDatabase) -> String {
    Cluster::shared().psql(
        database.name(),
        "SELECT md5(string_agg(x, '|' ORDER BY x)) FROM (
             SELECT 'e' || position || ':' || xmin::text || ctid::text || md5(payload) || stream
                    || version || event_type AS x FROM logbook_events
             UNION ALL SELECT 's' || stream || ':' || xmin::text || ctid::text
                    || coalesce(head_version, -1) || deleted || truncated_before
                    FROM logbook_streams
             UNION ALL SELECT 'n' || position || ':' || xmin::text || md5(payload)
                    FROM logbook_snapshots
             UNION ALL SELECT 'l' || last_position || ':' || xmin::text FROM logbook_log
             UNION ALL SELECT 'v' || version || ':' || xmin::text FROM logbook_schema
             UNION ALL SELECT 't' || table_schema || '.' || table_name
                    FROM information_schema.tables
                    WHERE table_schema NOT IN ('pg_catalog', 'information_schema')
             UNION ALL SELECT 'i' || indexname FROM pg_indexes WHERE schemaname = 'public'
         ) rows",
    )
}

fn psql_u64(database: &logbook_pgtest::TestDatabase, sql: &str) -> u64 {
    Cluster::shared()
        .psql(database.name(), sql)
        .parse()
        .unwrap_or_else(|error| panic!("{sql}: {error}"))
}

#[test]
fn stats_on_a_database_show_what_was_written_and_write_nothing() {
    let (database, url) = database_with_purges();
    let before = fingerprint(&database);
    let stats = run(&["stats", &url, "--json"]).ok().json();
    assert_eq!(stats["backend"], "postgres");
    assert_eq!(stats["schema_version"], 2);
    assert_eq!(
        stats["events"],
        3 + 1 + 2,
        "lobby v2..=4, the job, two engine events"
    );
    assert_eq!(stats["first_position"], 3);
    assert_eq!(stats["last_position"], 10);
    assert_eq!(stats["head_position"], 10);
    assert_eq!(
        stats["payload_bytes"],
        psql_u64(
            &database,
            "SELECT sum(octet_length(payload)) FROM logbook_events"
        )
    );
    assert_eq!(stats["events_by_type"]["room.message_posted"], 3);
    assert_eq!(stats["events_by_type"]["job.queued"], 1);
    assert!(stats["events_by_type"].get("room.created").is_none());
    assert_eq!(stats["events_by_stream_kind"]["room"], 3);
    assert_eq!(stats["events_by_stream_kind"]["job"], 1);
    assert_eq!(stats["events_by_stream_kind"]["system"], 2);
    let streams = psql_u64(&database, "SELECT count(*) FROM logbook_streams");
    assert_eq!(stats["streams"], streams);
    assert_eq!(stats["deleted_streams"], 1);
    assert_eq!(stats["truncated_streams"], 1);
    assert_eq!(stats["live_streams"], streams - 1);
    assert_eq!(stats["streams_with_events"], 3, "lobby, the job, $logbook");
    assert_eq!(stats["largest_streams"][0]["stream"], "room/lobby");
    assert_eq!(stats["largest_streams"][0]["events"], 3);
    assert_eq!(stats["snapshot_count"], 0);
    assert!(stats["newest_snapshot_position"].is_null());
    let events_table = stats["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|table| table["table"] == "logbook_events")
        .expect("logbook_events listed")
        .clone();
    assert_eq!(
        events_table["total_bytes"],
        psql_u64(&database, "SELECT pg_total_relation_size('logbook_events')")
    );
    assert!(stats["oldest_timestamp_ms"].as_u64().unwrap() > 0);
    let human = run(&["stats", &url]).ok().stdout;
    assert!(human.contains("1 deleted, 1 truncated"), "{human}");
    assert!(human.contains("room/lobby"), "{human}");
    assert!(human.contains("logbook_events"), "{human}");
    assert_eq!(fingerprint(&database), before, "stats wrote nothing");

    run(&["snapshot", &url]).ok();
    let stats = run(&["stats", &url, "--json"]).ok().json();
    assert_eq!(stats["snapshot_count"], 1);
    assert_eq!(stats["newest_snapshot_position"], 10);
    assert_eq!(
        stats["snapshots"][0]["bytes"],
        psql_u64(
            &database,
            "SELECT octet_length(payload) FROM logbook_snapshots"
        )
    );
}

#[test]
fn verify_on_a_database_is_clean_with_purges_and_names_a_damaged_row() {
    let (database, url) = database_with_purges();
    run(&["snapshot", &url]).ok();
    let before = fingerprint(&database);
    let clean = run(&["verify", &url]).ok();
    assert!(clean.stdout.contains("ok: PostgreSQL"), "{}", clean.stdout);
    assert!(
        !clean.stdout.contains("corrupt") && !clean.stdout.contains("note"),
        "purged rows and their position gaps are not damage: {}",
        clean.stdout
    );
    let report = run(&["verify", &url, "--json"]).ok().json();
    assert_eq!(report["clean"], true);
    assert_eq!(report["events"], 6);
    assert_eq!(report["snapshots"], 1);
    assert_eq!(report["findings"], serde_json::json!([]));
    assert_eq!(fingerprint(&database), before, "verify wrote nothing");

    let flip_first_byte = "UPDATE logbook_events SET payload = set_byte(payload, 0, \
                           get_byte(payload, 0) # 255) WHERE position = 4";
    Cluster::shared().psql(database.name(), flip_first_byte);
    let damaged = run(&["verify", &url]);
    assert_eq!(damaged.code, 1, "the damage code: {}", damaged.stdout);
    assert!(
        damaged
            .stdout
            .contains("corrupt: logbook_events position 4: the payload"),
        "{}",
        damaged.stdout
    );
    assert!(
        damaged.stdout.contains("CORRUPT (1 problems)"),
        "{}",
        damaged.stdout
    );
    let json = run(&["verify", &url, "--json"]).json();
    assert_eq!(json["clean"], false);
    assert_eq!(json["findings"][0]["row"], "position 4");
    assert_eq!(json["findings"][0]["severity"], "corrupt");
    Cluster::shared().psql(database.name(), flip_first_byte);
    run(&["verify", &url]).ok();

    Cluster::shared().psql(
        database.name(),
        "UPDATE logbook_events SET version = version + 10 WHERE position = 5",
    );
    let damaged = run(&["verify", &url]);
    assert_eq!(damaged.code, 1, "{}", damaged.stdout);
    assert!(
        damaged.stdout.contains("logbook_events position 5")
            && damaged.stdout.contains("version column 14, envelope 4"),
        "{}",
        damaged.stdout
    );
    assert!(
        damaged.stdout.contains("stream room/lobby: head_version 4"),
        "the head no longer matches the newest row: {}",
        damaged.stdout
    );
    Cluster::shared().psql(
        database.name(),
        "UPDATE logbook_events SET version = version - 10 WHERE position = 5;
         UPDATE logbook_streams SET deleted = false WHERE stream = 'room/secret'",
    );
    let damaged = run(&["verify", &url]);
    assert_eq!(damaged.code, 1, "{}", damaged.stdout);
    assert!(
        damaged.stdout.contains("stream room/secret")
            && damaged.stdout.contains("engine event at position 9"),
        "{}",
        damaged.stdout
    );
}

#[test]
fn repair_on_a_database_checks_and_changes_nothing() {
    let (database, url) = database_with_purges();
    let before = fingerprint(&database);
    let clean = run(&["repair", &url, "--yes"]).ok();
    assert!(
        clean.stdout.contains("nothing to repair in PostgreSQL"),
        "{}",
        clean.stdout
    );
    let json = run(&["repair", &url, "--json"]).ok().json();
    assert_eq!(json["applied"], false);
    assert_eq!(json["clean"], true);
    assert_eq!(fingerprint(&database), before);

    Cluster::shared().psql(
        database.name(),
        "UPDATE logbook_events SET payload = set_byte(payload, 0, 0) WHERE position = 3",
    );
    let damaged_before = fingerprint(&database);
    for args in [
        vec!["repair", url.as_str()],
        vec!["repair", url.as_str(), "--yes"],
        vec!["repair", url.as_str(), "--keep-intact", "--yes"],
    ] {
        let damaged = run(&args);
        assert_eq!(damaged.code, 1, "{}", damaged.stdout);
        assert!(
            damaged.stdout.contains("logbook_events position 3")
                && damaged
                    .stdout
                    .contains("restore the database from the server's backups"),
            "{}",
            damaged.stdout
        );
    }
    assert_eq!(
        fingerprint(&database),
        damaged_before,
        "repair changed nothing"
    );
}

#[test]
fn state_on_a_database_equals_state_on_a_directory_copy() {
    let (database, url) = database_with_purges();
    let more = [
        r#"{"stream":"job/j1","type":"job.claimed","data":{"worker":"w1","lease_expires_at_ms":99999999999999}}"#.to_owned(),
    ];
    run_with_input(&["append", &url], &(more.join("\n") + "\n")).ok();
    let compare = |url: &str, label: &str, room: Option<&str>| {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("copy");
        run(&["copy", url, dir.to_str().unwrap()]).ok();
        for entity in ["rooms", "jobs", "runs", "workflows"] {
            let before = fingerprint(&database);
            let there = run(&["state", url, entity, "--json"]).ok().json();
            assert_eq!(fingerprint(&database), before, "state wrote nothing");
            let here = run(&["state", dir.to_str().unwrap(), entity, "--json"])
                .ok()
                .json();
            assert_eq!(there, here, "{label}: {entity}");
        }
        let Some(room) = room else { return };
        let detail = run(&["state", url, "rooms", room, "--json"]).ok().json();
        assert_eq!(detail["room_id"], room);
        let history = run(&["state", url, "rooms", room, "--history", "--json"])
            .ok()
            .json();
        assert_eq!(history["messages"].as_array().unwrap().len(), 2);
        let local = run(&[
            "state",
            dir.to_str().unwrap(),
            "rooms",
            room,
            "--history",
            "--json",
        ])
        .ok()
        .json();
        assert_eq!(history, local, "{label}: history");
    };
    compare(&url, "replayed from the rows", None);
    // From the shared snapshot plus the rows after it.
    run(&["snapshot", &url]).ok();
    run_with_input(
        &["append", &url],
        &(room_lines("kitchen", 2).join("\n") + "\n"),
    )
    .ok();
    compare(&url, "snapshot and tail", Some("kitchen"));
    let jobs = run(&["state", &url, "jobs", "--json"]).ok().json();
    assert_eq!(jobs[0]["job_id"], "j1");
    let rooms = run(&["state", &url, "rooms"]).ok().stdout;
    assert!(
        rooms.contains("kitchen") && !rooms.contains("secret"),
        "{rooms}"
    );
    assert_eq!(
        Cluster::shared().psql(database.name(), "SELECT count(*) FROM logbook_snapshots"),
        "1",
        "state stored no snapshot"
    );
}

#[test]
fn tail_on_a_database_prints_the_last_events_and_follows_new_ones() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    use std::time::Duration;

    let (database, url) = database_with_purges();
    let before = fingerprint(&database);
    let last: Vec<u64> = run(&["tail", &url, "-n", "2", "--json"])
        .ok()
        .json_lines()
        .iter()
        .map(|event| event["position"].as_u64().unwrap())
        .collect();
    assert_eq!(last, vec![9, 10]);
    let all = run(&["tail", &url, "-n", "100", "--json"])
        .ok()
        .json_lines();
    assert_eq!(all.len(), 6, "every row, purged ones gone");
    let human = run(&["tail", &url, "-n", "1"]).ok().stdout;
    assert_eq!(human.lines().count(), 1);
    assert!(human.contains("$logbook"), "{human}");
    assert_eq!(fingerprint(&database), before, "tail wrote nothing");

    run_with_input(
        &["append", &url],
        &(room_lines("kitchen", 0).join("\n") + "\n"),
    )
    .ok();
    let mut tail = common::binary()
        .args(["tail", &url, "-n", "1", "-f", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (sender, lines) = std::sync::mpsc::channel();
    let stdout = tail.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if sender.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let first = lines.recv_timeout(Duration::from_secs(20)).unwrap();
    assert!(first.contains("\"position\":11"), "{first}");
    for index in 0..3 {
        let line = format!(
            r#"{{"stream":"room/kitchen","type":"room.message_posted","data":{{"message_id":"live{index}","author":"grace","body":"live {index}"}}}}"#
        );
        let ack = run_with_input(&["append", &url], &(line + "\n"))
            .ok()
            .json_lines();
        let seen = lines
            .recv_timeout(Duration::from_secs(20))
            .expect("tail -f saw the event");
        let seen: serde_json::Value = serde_json::from_str(&seen).unwrap();
        assert_eq!(seen["position"], ack[0]["position"]);
        assert_eq!(seen["data"]["body"], format!("live {index}"));
    }
    tail.kill().unwrap();
    tail.wait().unwrap();
}

#[test]
fn read_commands_on_a_bad_target_say_so_in_one_line() {
    // A server that is not there: an I/O error (exit 2), the password never shown.
    let down = "postgres://ada:hunter2@127.0.0.1:1/nowhere";
    for command in ["stats", "verify", "tail", "repair"] {
        let failed = run(&[command, down]).failed();
        assert_eq!(failed.code, 2, "{command}: {}", failed.stderr);
        assert!(!failed.stderr.contains("hunter2"), "{}", failed.stderr);
        assert!(failed.stderr.contains("ada:***@"), "{}", failed.stderr);
        assert!(
            failed.stderr.contains("cannot connect"),
            "{}",
            failed.stderr
        );
    }
    let failed = run(&["state", down, "rooms"]).failed();
    assert_eq!(failed.code, 2, "{}", failed.stderr);
    // A database without a logbook schema: refused, and still without one.
    let empty = Cluster::shared().create_database();
    for command in ["stats", "verify", "tail", "repair"] {
        let failed = run(&[command, &empty.url()]).failed();
        assert_eq!(failed.code, 2, "as a directory that is not a log");
        assert!(
            failed.stderr.contains("holds no logbook schema"),
            "{command}: {}",
            failed.stderr
        );
    }
    run(&["state", &empty.url(), "runs"]).failed();
    assert_eq!(
        Cluster::shared().psql(
            empty.name(),
            "SELECT count(*) FROM information_schema.tables WHERE table_name LIKE 'logbook%'"
        ),
        "0",
        "no DDL"
    );
    // A newer schema than this tool reads.
    let (newer, url) = database_with_purges();
    Cluster::shared().psql(newer.name(), "UPDATE logbook_schema SET version = 99");
    let failed = run(&["verify", &url]).failed();
    assert!(
        failed.stderr.contains("schema version 99"),
        "{}",
        failed.stderr
    );
}

#[test]
fn verify_notes_the_version_gaps_a_copied_in_compacted_log_keeps_and_fails_on_removed_rows() {
    // A directory whose compaction dropped superseded progress events: job/j1 keeps versions
    // 0, 1, 4 and 5 (2 and 3 were superseded by 4 and the job finished after them).
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("log");
    let mut lines = vec![
        r#"{"stream":"job/j1","type":"job.queued","data":{"kind":"embed"}}"#.to_owned(),
        r#"{"stream":"job/j1","type":"job.claimed","data":{"worker":"w1","lease_expires_at_ms":99999999999999}}"#.to_owned(),
    ];
    for percent in [10, 50, 90] {
        lines.push(format!(
            r#"{{"stream":"job/j1","type":"job.progress","data":{{"percent":{percent}}}}}"#
        ));
    }
    lines.push(r#"{"stream":"job/j1","type":"job.succeeded","data":{}}"#.to_owned());
    common::append(&dir, &lines);
    run(&["compact", dir.to_str().unwrap()]).ok();
    let kept: Vec<u64> = run(&["dump", dir.to_str().unwrap(), "--json"])
        .ok()
        .json_lines()
        .iter()
        .map(|event| event["version"].as_u64().unwrap())
        .collect();
    assert_eq!(kept, vec![0, 1, 4, 5], "compaction left a gap");

    let database = Cluster::shared().create_database();
    let url = database.url();
    run(&["copy", dir.to_str().unwrap(), &url]).ok();
    let report = run(&["verify", &url]).ok();
    assert!(
        report
            .stdout
            .contains("note: logbook_streams stream job/j1: versions missing"),
        "a legitimate gap is a note: {}",
        report.stdout
    );
    assert!(
        report.stdout.contains("ok: PostgreSQL"),
        "{}",
        report.stdout
    );

    // A row removed behind logbook's back from the top of a stream: the head disagrees.
    Cluster::shared().psql(
        database.name(),
        "DELETE FROM logbook_events WHERE stream = 'job/j1' AND version = 5",
    );
    let damaged = run(&["verify", &url]);
    assert_eq!(damaged.code, 1, "{}", damaged.stdout);
    assert!(
        damaged
            .stdout
            .contains("stream job/j1: head_version 5, but the newest row is version 4"),
        "{}",
        damaged.stdout
    );
}
