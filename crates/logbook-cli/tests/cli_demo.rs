//! `demo`: runs to the end, kills its writer with SIGKILL, and shows the recovery.

mod common;

use common::{path, run};

#[test]
fn the_demo_runs_to_the_end_and_its_log_is_sound() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("demo");
    let output = run(&["demo", path(&dir), "--work-ms", "600"]).ok();
    let text = &output.stdout;
    for section in [
        "1. The service starts",
        "2. SIGKILL",
        "3. Reopen",
        "recovery time",
        "events replayed",
        "4. Interrupted runs",
        "run-search-3",
        "run-triage",
        "awaiting_user",
        "pending_prs",
        "5. Interrupted jobs",
        "embed-corpus",
        "claimed by worker-1",
        "6. Resume plan of workflow wf-report",
        "reuse     plan",
        "relaunch  gather",
        "reuse run-search-1",
        "relaunch run-search-2, run-search-3",
        "7. Newest messages in room/lobby",
    ] {
        assert!(text.contains(section), "missing {section:?} in:\n{text}");
    }
    assert!(output.stderr.is_empty(), "{}", output.stderr);
    // A run's own sequence numbers (run.event) never read like log positions.
    let runs_table: Vec<&str> = text
        .lines()
        .skip_while(|line| !line.starts_with("4. Interrupted runs"))
        .skip(1)
        .take_while(|line| !line.is_empty())
        .collect();
    assert!(!runs_table.is_empty(), "{text}");
    for line in &runs_table {
        assert!(line.contains("last run.event seq "), "{line}");
        assert!(!line.contains('#'), "{line}");
    }
    let live: Vec<&str> = text
        .lines()
        .filter(|line| line.trim_start().starts_with("live"))
        .collect();
    assert!(!live.is_empty(), "{text}");
    for line in &live {
        assert!(line.contains("live  position "), "{line}");
    }
    let replayed: u64 = text
        .lines()
        .find_map(|line| line.trim().strip_prefix("events replayed"))
        .and_then(|count| count.trim().parse().ok())
        .expect("events replayed");
    assert!(replayed > 30, "{replayed}");

    run(&["verify", path(&dir)]).ok();
    let runs = run(&["state", path(&dir), "runs", "--json"]).ok().json();
    let running: Vec<&str> = runs
        .as_array()
        .unwrap()
        .iter()
        .filter(|run| run["status"] == "running")
        .map(|run| run["run_id"].as_str().unwrap())
        .collect();
    assert_eq!(running, vec!["run-search-3"]);

    let again = run(&["demo", path(&dir)]).failed();
    assert!(again.stderr.contains("not empty"), "{}", again.stderr);
}
