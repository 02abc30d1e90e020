//! `snapshot`: the engine writes a snapshot; `stats` lists it, `verify` checks it, `state`
//! starts from it.

mod common;

use common::{flip_bit, path, room_log, run};

#[test]
fn a_snapshot_is_written_listed_checked_and_used() {
    let (_temp, dir) = room_log(3);
    let info = run(&["snapshot", path(&dir), "--json"]).ok().json();
    assert_eq!(info["position"], 4);
    let file = std::path::PathBuf::from(info["file"].as_str().unwrap());
    assert!(file.starts_with(dir.join("snapshots")), "{file:?}");
    assert_eq!(
        std::fs::metadata(&file).unwrap().len(),
        info["bytes"].as_u64().unwrap()
    );
    let human = run(&["snapshot", path(&dir)]).ok().stdout;
    assert!(human.contains("snapshot at position 4"), "{human}");

    let stats = run(&["stats", path(&dir), "--json"]).ok().json();
    assert_eq!(stats["snapshots"][0]["position"], 4);
    let report = run(&["verify", path(&dir), "--json"]).ok().json();
    assert_eq!(report["snapshots"], 1);
    let rooms = run(&["state", path(&dir), "rooms", "lobby", "--json"])
        .ok()
        .json();
    assert_eq!(rooms["messages_posted"], 3);

    // A damaged snapshot is corruption to verify (the disk changed bytes), and the engine and
    // `state` fall back to a full replay.
    flip_bit(&file, 40);
    let output = run(&["verify", path(&dir)]);
    assert_eq!(output.code, 1, "{}", output.stdout);
    assert!(
        output
            .stdout
            .contains(&format!("corrupt: {}", file.display())),
        "{}",
        output.stdout
    );
    let rooms = run(&["state", path(&dir), "rooms", "lobby", "--json"])
        .ok()
        .json();
    assert_eq!(rooms["messages_posted"], 3);
}

#[test]
fn snapshot_needs_an_existing_log() {
    let temp = tempfile::tempdir().unwrap();
    let missing = temp.path().join("nope");
    let output = run(&["snapshot", path(&missing)]).failed();
    assert_eq!(output.code, 2);
    assert!(!missing.exists());
}
