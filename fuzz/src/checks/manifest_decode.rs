//! Target `manifest_decode`: the WAL manifest's decoder (`logbook_wal::manifest::decode`) and the
//! comparison of a manifest with segment files (`manifest::compare`), on arbitrary bytes.
//!
//! Input: one control byte, then the bytes. Control bit 0 clear: the rest is a manifest file,
//! decoded as is. Set: the rest starts with 8 bytes of "reached" and a small segment list built
//! from the following bytes, encoded, then a byte of it flipped (by the next input byte), so the
//! fuzzer spends its time near valid manifests.
//!
//! Properties: nothing panics; a decoded manifest re-encodes to exactly its bytes; comparing it
//! with any set of segment files never panics, and every listed live segment without a file is
//! reported missing; a manifest built from valid parts round-trips.

use logbook_wal::manifest::{self, Finding, Manifest, ManifestSegment};
use std::path::Path;

/// The longest input worth decoding (bigger only repeats entries).
pub const INPUT_BYTES_MAX: usize = 4096;

/// Runs every check on one input; panics only on a bug.
pub fn check(data: &[u8]) {
    if data.len() > INPUT_BYTES_MAX {
        return;
    }
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    if control & 1 == 0 {
        check_bytes(rest);
    } else {
        check_built(rest);
    }
}

fn check_bytes(bytes: &[u8]) {
    let Ok(decoded) = manifest::decode(bytes) else {
        return;
    };
    assert!(
        manifest::encode(&decoded) == bytes,
        "a decoded manifest does not re-encode to its bytes"
    );
    // Files: every other listed base, plus a base past the end with a header-only length.
    let mut files: Vec<(u64, u64)> = decoded
        .segments
        .iter()
        .step_by(2)
        .map(|segment| (segment.base, 100))
        .collect();
    if let Some(last) = decoded.segments.last()
        && let Some(next) = last.base.checked_add(1)
    {
        files.push((next, 32));
    }
    let findings = manifest::compare(&decoded, Path::new("/wal"), &files);
    for segment in decoded.segments.iter().filter(|segment| !segment.removing) {
        let on_disk = files.iter().any(|(base, _)| *base == segment.base);
        let reported = findings.iter().any(
            |finding| matches!(finding, Finding::Missing { base, .. } if *base == segment.base),
        );
        assert_eq!(
            !on_disk, reported,
            "segment {} missing: {findings:?}",
            segment.base
        );
    }
}

fn check_built(bytes: &[u8]) {
    let Some((reached, rest)) = bytes.split_first_chunk::<8>() else {
        return;
    };
    let mut segments = Vec::new();
    let mut base = 0u64;
    let mut chunks = rest.chunks_exact(3);
    for chunk in &mut chunks {
        let [step, mark, state] = [chunk[0], chunk[1], chunk[2]];
        base = base.saturating_add(u64::from(step) + 1);
        if base == u64::MAX {
            break;
        }
        segments.push(ManifestSegment {
            base,
            compacted_through: u64::from(mark),
            removing: state & 1 == 1,
        });
    }
    let built = Manifest {
        reached: u64::from_le_bytes(*reached),
        segments,
    };
    let mut encoded = manifest::encode(&built);
    assert_eq!(
        manifest::decode(&encoded).ok(),
        Some(built.clone()),
        "round trip"
    );
    if let Some(&flip) = chunks.remainder().first() {
        let at = usize::from(flip) % encoded.len();
        encoded[at] ^= 1 << (flip % 8);
        assert!(
            manifest::decode(&encoded).is_err(),
            "a flipped bit at {at} went unnoticed"
        );
    }
}
