//! `import`: the fixtures of tests/fixtures/import/ through the binary, from a file and from
//! stdin (`-`), on a directory and on a PostgreSQL URL; a second import says "already
//! imported" (exit 0) and adds nothing; a bad file is one error line naming the JSON path and
//! line (exit 1) with nothing written; an unknown format is a usage error (exit 2).

mod common;

use common::{path, run, run_with_input};
use logbook_pgtest::Cluster;
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/import")
        .join(name)
}

fn fixture_arg(name: &str) -> String {
    fixture(name).to_str().expect("UTF-8").to_owned()
}

#[test]
fn a_file_and_stdin_import_once_and_show_in_state() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("log");
    let tasks = fixture_arg("tasks.json");
    let report = run(&["import", path(&dir), &tasks, "--format", "tasks", "--json"])
        .ok()
        .json();
    assert_eq!(report["already_imported"], false);
    assert_eq!(report["events_written"], 11);
    assert_eq!(report["entities"], 5);
    let marker = report["marker_stream"].as_str().unwrap().to_owned();
    assert!(marker.starts_with("import/"), "{marker}");

    let room = std::fs::read_to_string(fixture("room.json")).unwrap();
    let text = run_with_input(&["import", path(&dir), "-", "--format", "room"], &room).ok();
    assert!(
        text.stdout
            .starts_with("imported 4 messages into 1 streams"),
        "{}",
        text.stdout
    );

    let events = run(&["dump", path(&dir), "--json"]).ok().json_lines().len();
    let again = run_with_input(&["import", path(&dir), "-", "--format", "room"], &room).ok();
    assert!(
        again.stdout.starts_with("already imported"),
        "{}",
        again.stdout
    );
    let twice = run(&["import", path(&dir), &tasks, "--format", "tasks", "--json"])
        .ok()
        .json();
    assert_eq!(twice["already_imported"], true);
    assert_eq!(twice["marker_stream"], marker.as_str());
    assert_eq!(
        run(&["dump", path(&dir), "--json"]).ok().json_lines().len(),
        events
    );

    let jobs = run(&["state", path(&dir), "jobs", "--json"]).ok().stdout;
    assert!(
        jobs.contains("t-100") && jobs.contains("Succeeded"),
        "{jobs}"
    );
    let history = run(&["state", path(&dir), "rooms", "research", "--history"])
        .ok()
        .stdout;
    assert!(
        history.contains("grace: The cleaned 2024 set."),
        "{history}"
    );
}

#[test]
fn a_bad_file_is_one_line_naming_the_path_and_nothing_is_written() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("log");
    run(&[
        "import",
        path(&dir),
        &fixture_arg("runs.json"),
        "--format",
        "runs",
    ])
    .ok();
    let before = run(&["dump", path(&dir), "--json"]).ok().json_lines().len();
    let bad = "{\"id\": \"r\", \"name\": \"R\", \"created_at_ms\": 1, \"messages\": [\n\
        {\"id\": \"a\", \"author\": \"x\", \"body\": \"1\", \"timestamp_ms\": 1},\n\
        {\"id\": \"a\", \"author\": \"y\", \"body\": \"2\", \"timestamp_ms\": 2}\n]}";
    let failed = run_with_input(&["import", path(&dir), "-", "--format", "room"], bad).failed();
    assert_eq!(failed.code, 1);
    assert!(
        failed.stderr.contains("$.messages[1].id (line 3"),
        "{}",
        failed.stderr
    );
    assert!(
        failed.stderr.contains("duplicate message id"),
        "{}",
        failed.stderr
    );
    assert_eq!(
        run(&["dump", path(&dir), "--json"]).ok().json_lines().len(),
        before
    );

    let usage = run(&["import", path(&dir), "-", "--format", "chat"]).failed();
    assert_eq!(usage.code, 2);
    assert!(usage.stderr.contains("--format"), "{}", usage.stderr);
    let missing = run(&["import", path(&dir), "/no/such.json", "--format", "room"]).failed();
    assert_eq!(missing.code, 2);
}

#[test]
fn import_works_on_a_database() {
    let database = Cluster::shared().create_database();
    let url = database.url();
    let room = fixture_arg("room.json");
    let first = run(&["import", &url, &room, "--format", "room", "--json"])
        .ok()
        .json();
    assert_eq!(first["events_written"], 8);
    let again = run(&["import", &url, &room, "--format", "room", "--json"])
        .ok()
        .json();
    assert_eq!(again["already_imported"], true);
    let dumped = run(&["dump", &url, "--json"]).ok().json_lines();
    assert_eq!(dumped.len(), 9, "eight events and the marker");
    assert_eq!(dumped[8]["stream"], first["marker_stream"]);
}
