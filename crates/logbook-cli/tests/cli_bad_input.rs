//! Bad input: one clear line naming the file or line, a non-zero exit, never a panic, and
//! nothing written by read-only commands.

mod common;

use common::{files, first_segment, path, room_log, run, run_with_input};

const READ_ONLY: &[&[&str]] = &[
    &["dump"],
    &["dump", "--frames"],
    &["verify"],
    &["stats"],
    &["tail"],
    &["state", "runs"],
    &["repair"],
];

fn with_dir<'a>(command: &[&'a str], dir: &'a str) -> Vec<&'a str> {
    let mut args = vec![command[0], dir];
    args.extend(&command[1..]);
    args
}

#[test]
fn a_missing_directory_is_named_and_not_created() {
    let temp = tempfile::tempdir().unwrap();
    let missing = temp.path().join("missing");
    for command in READ_ONLY {
        let output = run(&with_dir(command, path(&missing))).failed();
        assert_eq!(output.code, 2, "{command:?}");
        assert!(
            output.stderr.contains(path(&missing)),
            "{command:?}: {}",
            output.stderr
        );
        assert!(!missing.exists(), "{command:?} created the directory");
    }
}

#[test]
fn a_directory_that_is_not_a_log_is_named_and_left_alone() {
    let temp = tempfile::tempdir().unwrap();
    std::fs::write(temp.path().join("notes.txt"), "hello").unwrap();
    let before = files(temp.path());
    for command in READ_ONLY {
        let output = run(&with_dir(command, path(temp.path()))).failed();
        assert!(
            output.stderr.contains("not a logbook directory"),
            "{command:?}: {}",
            output.stderr
        );
        assert_eq!(files(temp.path()), before, "{command:?} wrote something");
    }
}

#[test]
fn corrupt_files_are_named_without_a_panic() {
    let (_temp, dir) = room_log(3);
    let segment = first_segment(&dir);
    let mut bytes = std::fs::read(&segment).unwrap();
    for byte in &mut bytes[40..90] {
        *byte = 0xff;
    }
    std::fs::write(&segment, &bytes).unwrap();
    let before = files(&dir);
    for command in [&["dump"][..], &["stats"], &["tail"], &["state", "rooms"]] {
        let output = run(&with_dir(command, path(&dir))).failed();
        assert!(
            output.stderr.contains(path(&segment)),
            "{command:?}: {}",
            output.stderr
        );
    }
    let verify = run(&["verify", path(&dir)]);
    assert_eq!(verify.code, 1);
    assert!(verify.stdout.contains(path(&segment)), "{}", verify.stdout);
    assert_eq!(files(&dir), before, "read-only commands wrote something");
    // Garbage that is not even a segment header.
    std::fs::write(&segment, "not a segment at all".repeat(5)).unwrap();
    run(&["dump", path(&dir)]).failed();
    let verify = run(&["verify", path(&dir)]);
    assert_eq!(verify.code, 1);
    assert!(
        verify.stdout.contains("at byte offset 0"),
        "{}",
        verify.stdout
    );
}

#[test]
fn bad_json_and_unknown_types_name_the_line() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("log");
    let output = run_with_input(&["append", path(&dir)], "not json\n").failed();
    assert!(output.stderr.contains("line 1"), "{}", output.stderr);
    assert!(output.stderr.contains("invalid JSON"), "{}", output.stderr);
    let output = run_with_input(
        &["append", path(&dir)],
        "{\"stream\":\"run/r1\",\"type\":\"run.teleported\",\"data\":{}}\n",
    )
    .failed();
    assert!(
        output.stderr.contains("run.teleported"),
        "{}",
        output.stderr
    );
    let output = run_with_input(&["append", path(&dir)], "\u{fffd}\n[1,2]\n").failed();
    assert!(output.stderr.contains("line 1"), "{}", output.stderr);
    assert!(
        run(&["dump", path(&dir)]).ok().stdout.is_empty(),
        "nothing was written"
    );
}
