use super::*;
use proptest::prelude::*;

fn section(id: &str, version: u16, bytes: &[u8]) -> SnapshotSection {
    SnapshotSection {
        id: id.to_owned(),
        version,
        bytes: bytes.to_vec(),
    }
}

fn small() -> Snapshot {
    Snapshot {
        position: 42,
        sections: vec![section("engine", 1, b"e"), section("rooms", 2, b"hi")],
    }
}

/// A hand-built file: any header field and table entry, with correct checksums unless the test
/// breaks them afterwards. Lets tests build what the encoder refuses to.
struct Raw {
    version: u16,
    algorithm: u8,
    reserved: [u8; 5],
    position: u64,
    count: Option<u32>,
    entries: Vec<(Vec<u8>, u16, Vec<u8>)>,
}

impl Raw {
    fn new(entries: Vec<(Vec<u8>, u16, Vec<u8>)>) -> Self {
        Raw {
            version: SNAPSHOT_FORMAT_VERSION,
            algorithm: CHECKSUM_CRC32,
            reserved: [0; 5],
            position: 7,
            count: None,
            entries,
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let mut out = SNAPSHOT_MAGIC.to_vec();
        out.extend_from_slice(&self.version.to_le_bytes());
        out.push(self.algorithm);
        out.extend_from_slice(&self.reserved);
        out.extend_from_slice(&self.position.to_le_bytes());
        let count = self.count.unwrap_or(self.entries.len() as u32);
        out.extend_from_slice(&count.to_le_bytes());
        let checksum = crc32fast::hash(&out);
        out.extend_from_slice(&checksum.to_le_bytes());
        for (id, version, bytes) in &self.entries {
            out.extend_from_slice(&(id.len() as u16).to_le_bytes());
            out.extend_from_slice(id);
            out.extend_from_slice(&version.to_le_bytes());
            out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
            out.extend_from_slice(&crc32fast::hash(bytes).to_le_bytes());
        }
        for (_, _, bytes) in &self.entries {
            out.extend_from_slice(bytes);
        }
        let checksum = crc32fast::hash(&out);
        out.extend_from_slice(&checksum.to_le_bytes());
        out
    }
}

fn corruption(result: Result<Snapshot>) -> (u64, Corruption) {
    match result {
        Err(Error::Corrupted {
            file: None,
            offset,
            reason,
        }) => (offset, reason),
        other => panic!("expected corruption, got {other:?}"),
    }
}

/// Rewrites the trailer checksum after a test changed bytes before it.
fn fix_trailer(bytes: &mut Vec<u8>) {
    let end = bytes.len() - SNAPSHOT_TRAILER_BYTES;
    let checksum = crc32fast::hash(&bytes[..end]);
    bytes.truncate(end);
    bytes.extend_from_slice(&checksum.to_le_bytes());
}

#[test]
fn round_trip_of_several_shapes() {
    let long_id = "x".repeat(SECTION_ID_BYTES_MAX);
    let many: Vec<_> = (0..SECTIONS_MAX)
        .map(|index| section(&format!("s{index}"), index as u16, &[index as u8; 3]))
        .collect();
    let cases = [
        Snapshot::default(),
        small(),
        Snapshot {
            position: u64::MAX,
            sections: vec![
                section("é", u16::MAX, b""),
                section(&long_id, 0, &[0; 1000]),
            ],
        },
        Snapshot {
            position: 1,
            sections: many,
        },
    ];
    for snapshot in cases {
        let bytes = encode_snapshot(&snapshot);
        assert_eq!(bytes.len() as u64, snapshot.validate().unwrap());
        assert_eq!(decode_snapshot(&bytes).unwrap(), snapshot);
        assert_eq!(Raw::new(raw_entries(&snapshot)).bytes().len(), bytes.len());
    }
}

fn raw_entries(snapshot: &Snapshot) -> Vec<(Vec<u8>, u16, Vec<u8>)> {
    let sections = snapshot.sections.iter();
    let entry = |s: &SnapshotSection| (s.id.as_bytes().to_vec(), s.version, s.bytes.clone());
    sections.map(entry).collect()
}

/// The example in FORMAT-SNAPSHOT.md, byte for byte: changing it changes the format.
#[test]
fn small_snapshot_has_the_documented_bytes() {
    let expected = "\
        4c4f47424b534e50 0100 01 0000000000 2a00000000000000 02000000 000980d1\
        0600 656e67696e65 0100 0100000000000000 5a7adaef\
        0500 726f6f6d73 0200 0200000000000000 ac2a93d8\
        65 6869 acb7310b";
    let expected: String = expected.split_whitespace().collect();
    let actual: String = encode_snapshot(&small())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    assert_eq!(actual, expected);
}

#[test]
fn every_bit_flip_is_detected() {
    let bytes = encode_snapshot(&small());
    for index in 0..bytes.len() {
        for bit in 0..8 {
            let mut flipped = bytes.clone();
            flipped[index] ^= 1 << bit;
            assert!(
                decode_snapshot(&flipped).is_err(),
                "flip of bit {bit} in byte {index} went unnoticed"
            );
        }
    }
}

#[test]
fn every_truncation_is_detected() {
    let bytes = encode_snapshot(&small());
    for length in 0..bytes.len() {
        let error = decode_snapshot(&bytes[..length]).unwrap_err();
        assert!(
            matches!(
                error,
                Error::Corrupted {
                    reason: Corruption::Truncated { .. },
                    ..
                }
            ),
            "truncation to {length} bytes: {error}"
        );
    }
}

#[test]
fn trailing_bytes_are_rejected() {
    let mut bytes = encode_snapshot(&small());
    let length = bytes.len() as u64;
    bytes.push(0);
    let (offset, reason) = corruption(decode_snapshot(&bytes));
    assert_eq!(
        (offset, reason),
        (length, Corruption::TrailingBytes { count: 1 })
    );
}

#[test]
fn bad_magic_is_rejected_even_when_short() {
    for input in [&b"LOGBKWAL\x01\x00"[..], b"x", b"LOGBX"] {
        assert_eq!(
            corruption(decode_snapshot(input)),
            (0, Corruption::BadMagic)
        );
    }
    let (_, reason) = corruption(decode_snapshot(b"LOGB"));
    assert!(matches!(reason, Corruption::Truncated { .. }), "{reason}");
}

#[test]
fn unknown_version_and_algorithm_are_unsupported() {
    let mut raw = Raw::new(raw_entries(&small()));
    raw.version = 2;
    let error = decode_snapshot(&raw.bytes()).unwrap_err();
    assert!(
        matches!(
            error,
            Error::Unsupported {
                offset: 8,
                field: "format version",
                found: 2,
                supported: 1,
                ..
            }
        ),
        "{error}"
    );
    raw.version = SNAPSHOT_FORMAT_VERSION;
    raw.algorithm = 2;
    let error = decode_snapshot(&raw.bytes()).unwrap_err();
    assert!(
        matches!(
            error,
            Error::Unsupported {
                offset: 10,
                field: "checksum algorithm",
                ..
            }
        ),
        "{error}"
    );
}

#[test]
fn header_checksum_and_reserved_bytes_are_checked() {
    let mut bytes = encode_snapshot(&small());
    bytes[16] ^= 1; // the position, covered by the header checksum
    let (offset, reason) = corruption(decode_snapshot(&bytes));
    assert_eq!(offset, 28);
    assert!(
        matches!(reason, Corruption::HeaderChecksum { .. }),
        "{reason}"
    );

    let mut raw = Raw::new(raw_entries(&small()));
    raw.reserved[4] = 1;
    let decoded = decode_snapshot(&raw.bytes());
    assert_eq!(corruption(decoded), (11, Corruption::ReservedNotZero));
}

#[test]
fn section_table_rules_are_enforced() {
    let entry = |id: &[u8]| (id.to_vec(), 1, b"data".to_vec());
    let (offset, reason) = corruption(decode_snapshot(&Raw::new(vec![entry(b"")]).bytes()));
    assert_eq!((offset, reason), (32, Corruption::EmptySectionId));

    let bytes = Raw::new(vec![entry(b"ok"), entry(b"\xff\xfe")]).bytes();
    assert_eq!(
        corruption(decode_snapshot(&bytes)).1,
        Corruption::SectionIdNotUtf8
    );

    let bytes = Raw::new(vec![entry(b"twin"), entry(b"other"), entry(b"twin")]).bytes();
    let reason = Corruption::DuplicateSectionId { id: "twin".into() };
    assert_eq!(corruption(decode_snapshot(&bytes)).1, reason);

    let long = vec![b'x'; SECTION_ID_BYTES_MAX + 1];
    let error = decode_snapshot(&Raw::new(vec![entry(&long)]).bytes()).unwrap_err();
    assert!(
        matches!(
            error,
            Error::LimitExceeded {
                what: "section id bytes",
                actual: 129,
                ..
            }
        ),
        "{error}"
    );
}

#[test]
fn too_many_sections_are_refused_before_any_allocation() {
    let mut raw = Raw::new(Vec::new());
    raw.count = Some(SECTIONS_MAX as u32 + 1);
    let error = decode_snapshot(&raw.bytes()).unwrap_err();
    assert!(
        matches!(
            error,
            Error::LimitExceeded {
                offset: 24,
                what: "section count",
                ..
            }
        ),
        "{error}"
    );
    // A count within the limit that the input cannot hold is refused before the table is read.
    raw.count = Some(SECTIONS_MAX as u32);
    let (offset, reason) = corruption(decode_snapshot(&raw.bytes()));
    assert_eq!(offset, 32);
    assert!(matches!(
        reason,
        Corruption::Truncated {
            structure: "section table",
            ..
        }
    ));
}

#[test]
fn a_huge_section_length_is_a_truncation_not_an_allocation() {
    let mut bytes = Raw::new(vec![(b"big".to_vec(), 1, b"abc".to_vec())]).bytes();
    // The length field of the only entry: header 32, id length 2, id 3, version 2.
    bytes[39..47].copy_from_slice(&u64::MAX.to_le_bytes());
    fix_trailer(&mut bytes);
    let (offset, reason) = corruption(decode_snapshot(&bytes));
    assert_eq!(offset, 32 + 2 + 3 + 2 + 8 + 4);
    assert!(
        matches!(
            reason,
            Corruption::Truncated {
                needed: u64::MAX,
                ..
            }
        ),
        "{reason}"
    );
}

#[test]
fn section_and_trailer_checksums_are_checked() {
    let mut bytes = encode_snapshot(&small());
    let data_offset = bytes.len() - SNAPSHOT_TRAILER_BYTES - 3;
    bytes[data_offset] ^= 0x10; // the `engine` section's byte
    fix_trailer(&mut bytes);
    let (offset, reason) = corruption(decode_snapshot(&bytes));
    assert_eq!(offset, data_offset as u64);
    assert!(
        matches!(&reason, Corruption::SectionChecksum { id, .. } if id == "engine"),
        "{reason}"
    );

    let mut bytes = encode_snapshot(&small());
    let last = bytes.len() - 1;
    bytes[last] ^= 0x80;
    let (offset, reason) = corruption(decode_snapshot(&bytes));
    assert_eq!(offset, last as u64 - 3);
    assert!(
        matches!(reason, Corruption::TrailerChecksum { .. }),
        "{reason}"
    );
}

#[test]
fn validate_refuses_what_cannot_be_encoded() {
    let mut snapshot = small();
    snapshot.sections.push(section("rooms", 1, b""));
    assert!(matches!(
        snapshot.validate(),
        Err(Error::InvalidSnapshot { .. })
    ));

    let snapshot = Snapshot {
        position: 1,
        sections: vec![section("", 1, b"")],
    };
    assert!(matches!(
        snapshot.validate(),
        Err(Error::InvalidSnapshot { .. })
    ));

    let snapshot = Snapshot {
        position: 1,
        sections: vec![section(&"x".repeat(SECTION_ID_BYTES_MAX + 1), 1, b"")],
    };
    assert!(matches!(
        snapshot.validate(),
        Err(Error::LimitExceeded { .. })
    ));

    let sections = (0..=SECTIONS_MAX).map(|index| section(&index.to_string(), 1, b""));
    let snapshot = Snapshot {
        position: 1,
        sections: sections.collect(),
    };
    let error = snapshot.validate().unwrap_err();
    assert!(
        matches!(
            error,
            Error::LimitExceeded {
                what: "section count",
                actual: 65,
                ..
            }
        ),
        "{error}"
    );
}

#[test]
#[should_panic(expected = "duplicate section id")]
fn encode_panics_on_an_invalid_snapshot() {
    let mut snapshot = small();
    snapshot.sections.push(section("engine", 1, b""));
    encode_snapshot(&snapshot);
}

fn arbitrary_snapshot() -> impl Strategy<Value = Snapshot> {
    let section = (
        "[a-z.]{1,12}",
        any::<u16>(),
        prop::collection::vec(any::<u8>(), 0..64),
    );
    (any::<u64>(), prop::collection::vec(section, 0..6)).prop_map(|(position, sections)| {
        let mut unique: Vec<SnapshotSection> = Vec::new();
        for (id, version, bytes) in sections {
            if unique.iter().all(|section| section.id != id) {
                unique.push(SnapshotSection { id, version, bytes });
            }
        }
        Snapshot {
            position,
            sections: unique,
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn garbage_is_an_error(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        prop_assert!(decode_snapshot(&bytes).is_err());
    }

    /// Garbage behind a valid header reaches the table and length checks.
    #[test]
    fn garbage_after_a_valid_header_is_an_error(
        count in 0u32..=70,
        position in any::<u64>(),
        rest in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        let mut raw = Raw::new(Vec::new());
        raw.count = Some(count);
        raw.position = position;
        let mut bytes = raw.bytes();
        bytes.truncate(SNAPSHOT_HEADER_BYTES);
        bytes.extend_from_slice(&rest);
        prop_assert!(decode_snapshot(&bytes).is_err());
    }

    #[test]
    fn encoded_snapshots_round_trip(snapshot in arbitrary_snapshot()) {
        prop_assert_eq!(decode_snapshot(&encode_snapshot(&snapshot))?, snapshot);
    }

    #[test]
    fn changed_bytes_are_detected(
        snapshot in arbitrary_snapshot(),
        changes in prop::collection::vec((any::<prop::sample::Index>(), 1u8..), 1..4),
    ) {
        let mut bytes = encode_snapshot(&snapshot);
        for (index, change) in changes {
            let at = index.index(bytes.len());
            bytes[at] ^= change;
        }
        if bytes != encode_snapshot(&snapshot) {
            prop_assert!(decode_snapshot(&bytes).is_err());
        }
    }
}
