//! `verify`: exit 0 when clean, 1 when corrupt (each problem with its file and byte offset),
//! 2 for usage or I/O errors.

mod common;

use common::{first_segment, flip_bit, frame_offsets, path, room_log, run, tear};

#[test]
fn a_clean_log_verifies() {
    let (_temp, dir) = room_log(4);
    let output = run(&["verify", path(&dir)]).ok();
    assert!(
        output.stdout.starts_with("ok: 1 segments"),
        "{}",
        output.stdout
    );
    let report = run(&["verify", path(&dir), "--json"]).ok().json();
    assert_eq!(report["clean"], true);
    assert_eq!(report["frames"], 5);
    assert_eq!(report["events"], 5);
    assert_eq!(report["findings"].as_array().unwrap().len(), 0);
}

#[test]
fn a_bit_flip_is_found_at_its_file_and_frame_offset_and_exits_1() {
    let (_temp, dir) = room_log(4);
    let offsets = frame_offsets(&dir);
    let segment = first_segment(&dir);
    // A bit in the payload of the frame at position 2, which later frames prove durable.
    flip_bit(&segment, offsets[&2] + 40);
    let output = run(&["verify", path(&dir)]);
    assert_eq!(output.code, 1, "{}", output.stdout);
    let expected = format!(
        "corrupt: {} at byte offset {}: frame checksum mismatch",
        segment.display(),
        offsets[&2]
    );
    assert!(
        output
            .stdout
            .lines()
            .any(|line| line.starts_with(&expected)),
        "{}",
        output.stdout
    );
    assert!(output.stdout.contains("CORRUPT"), "{}", output.stdout);
    let report = run(&["verify", path(&dir), "--json"]).json();
    assert_eq!(report["clean"], false);
    let findings = report["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!(findings[0]["offset"], offsets[&2]);
    assert_eq!(findings[0]["file"], segment.display().to_string());
    assert_eq!(findings[0]["severity"], "corrupt");
    assert_eq!(
        report["frames"], 4,
        "the frames after the bad one were still checked"
    );
}

#[test]
fn two_problems_are_both_reported() {
    let (_temp, dir) = room_log(6);
    let offsets = frame_offsets(&dir);
    let segment = first_segment(&dir);
    flip_bit(&segment, offsets[&2] + 35);
    flip_bit(&segment, offsets[&5] + 35);
    let report = run(&["verify", path(&dir), "--json"]).json();
    let found: Vec<u64> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|finding| finding["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(found, vec![offsets[&2], offsets[&5]]);
}

#[test]
fn a_torn_tail_is_not_corruption() {
    let (_temp, dir) = room_log(3);
    let offsets = frame_offsets(&dir);
    let segment = first_segment(&dir);
    tear(&segment, 7);
    let output = run(&["verify", path(&dir)]).ok();
    let tail = format!("tail: {} at byte offset {}", segment.display(), offsets[&4]);
    assert!(output.stdout.contains(&tail), "{}", output.stdout);
}

#[test]
fn a_damaged_segment_header_is_reported_at_offset_0() {
    let (_temp, dir) = room_log(2);
    let segment = first_segment(&dir);
    flip_bit(&segment, 3);
    let output = run(&["verify", path(&dir)]);
    assert_eq!(output.code, 1);
    let line = format!(
        "corrupt: {} at byte offset 0: segment header checksum mismatch",
        segment.display()
    );
    assert!(output.stdout.contains(&line), "{}", output.stdout);
}

#[test]
fn usage_and_io_errors_exit_2() {
    let temp = tempfile::tempdir().unwrap();
    let missing = temp.path().join("missing");
    let output = run(&["verify", path(&missing)]).failed();
    assert_eq!(output.code, 2);
    assert!(output.stderr.contains(path(&missing)), "{}", output.stderr);
    assert!(!missing.exists());
    let output = run(&["verify", path(temp.path())]).failed();
    assert_eq!(output.code, 2);
    assert!(
        output.stderr.contains("not a logbook directory"),
        "{}",
        output.stderr
    );
    let output = run(&["verify"]);
    assert_eq!(output.code, 2, "clap usage error");
}

#[test]
fn sealed_segments_and_their_sidecars_are_checked() {
    let (_temp, dir) = common::multi_segment_log(60);
    let segments = common::segments(&dir);
    assert!(segments.len() >= 3, "{segments:?}");
    let report = run(&["verify", path(&dir), "--json"]).ok().json();
    assert_eq!(report["findings"].as_array().unwrap().len(), 0, "{report}");
    assert_eq!(report["segments"], segments.len());
    assert_eq!(report["events"], 61);

    // A bit flip in a sidecar (derived data, but its checksum says the disk changed it).
    let sidecar = segments[0].with_extension("idx");
    if sidecar.exists() {
        flip_bit(&sidecar, 20);
        let output = run(&["verify", path(&dir)]);
        assert_eq!(output.code, 1, "{}", output.stdout);
        let line = format!(
            "corrupt: {} at byte offset 0: sidecar checksum mismatch",
            sidecar.display()
        );
        assert!(output.stdout.contains(&line), "{}", output.stdout);
        flip_bit(&sidecar, 20);
    }

    // A bit flip in the first frame of a sealed segment.
    flip_bit(&segments[0], 32 + 30);
    let output = run(&["verify", path(&dir)]);
    assert_eq!(output.code, 1, "{}", output.stdout);
    let line = format!(
        "corrupt: {} at byte offset 32: frame checksum mismatch",
        segments[0].display()
    );
    assert!(output.stdout.contains(&line), "{}", output.stdout);
}
