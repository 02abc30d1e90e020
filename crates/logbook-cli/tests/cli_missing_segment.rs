//! A segment file removed behind the log's back: `verify` names it and the positions it held
//! and exits 1, read-only commands and writers refuse, and `repair --yes` accepts the loss and
//! says exactly what it gave up.

mod common;

use common::{multi_segment_log, path, run, run_with_input, segments};

#[test]
fn a_removed_middle_segment_is_reported_refused_and_repaired_only_on_request() {
    let (_temp, dir) = multi_segment_log(60);
    let all = segments(&dir);
    assert!(all.len() >= 4, "{} segments", all.len());
    assert_eq!(run(&["verify", path(&dir)]).code, 0);
    let victim = &all[1];
    let base: u64 = victim
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let next: u64 = all[2]
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    std::fs::remove_file(victim).unwrap();
    let _ = std::fs::remove_file(victim.with_extension("idx"));

    let output = run(&["verify", path(&dir)]);
    assert_eq!(output.code, 1, "{}", output.stdout);
    let expected = format!(
        "segment {} is missing: positions {base}..={} are gone",
        victim.display(),
        next - 1
    );
    assert!(output.stdout.contains(&expected), "{}", output.stdout);
    let report = run(&["verify", path(&dir), "--json"]).json();
    assert_eq!(report["clean"], false);

    for args in [
        vec!["dump", path(&dir)],
        vec!["stats", path(&dir)],
        vec!["state", path(&dir), "rooms"],
    ] {
        let output = run(&args).failed();
        assert!(
            output.stderr.contains("missing"),
            "{args:?}: {}",
            output.stderr
        );
    }
    let line = r#"{"stream":"room/other","type":"room.created","data":{"name":"x"}}"#;
    let output = run_with_input(&["append", path(&dir)], line).failed();
    assert!(
        output.stderr.contains(&format!("positions {base}..=")),
        "{}",
        output.stderr
    );

    let dry = run(&["repair", path(&dir)]);
    assert_eq!(
        dry.code, 1,
        "a dry run that would drop something exits 1: {}",
        dry.stdout
    );
    assert_eq!(
        run(&["verify", path(&dir)]).code,
        1,
        "the dry run changed nothing"
    );
    let applied = run(&["repair", path(&dir), "--yes"]).ok();
    assert!(applied.stdout.contains(&expected), "{}", applied.stdout);
    assert_eq!(run(&["verify", path(&dir)]).code, 0);
    run_with_input(&["append", path(&dir)], line).ok();
}
