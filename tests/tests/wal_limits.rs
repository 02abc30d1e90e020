//! Limits: a record over `record_bytes_max`, an empty batch, and a batch over
//! `batch_records_max` or `batch_bytes_max` are refused with typed errors, and nothing is
//! written (no byte, no position used). Options that make no sense are refused at open.

use logbook_tests::{MEMORY_DIR, memory_files, payload, positions, read_all};
use logbook_wal::{
    Durability, Error, MemoryStorage, RECORD_BYTES_LIMIT, SyncPolicy, Wal, WalOptions,
};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

fn limited(sync_policy: SyncPolicy) -> WalOptions {
    WalOptions {
        sync_policy,
        record_bytes_max: 100,
        batch_records_max: 4,
        batch_bytes_max: 300,
        segment_bytes_max: 1000,
        ..WalOptions::default()
    }
}

fn assert_limit(error: Error, expected_what: &str, expected_limit: u64, expected_actual: u64) {
    assert!(
        matches!(&error, Error::LimitExceeded { what, limit, actual }
            if *what == expected_what && *limit == expected_limit && *actual == expected_actual),
        "{error:?}"
    );
}

#[test]
fn over_limit_appends_are_refused_and_write_nothing() {
    for sync_policy in [SyncPolicy::Always, SyncPolicy::Never] {
        let storage = MemoryStorage::new();
        let (wal, _) = Wal::open_with_storage(
            Arc::new(storage.clone()),
            Path::new(MEMORY_DIR),
            limited(sync_policy),
        )
        .unwrap();
        wal.append(&payload(1, 10)).unwrap();
        wal.append(&payload(2, 10)).unwrap();
        wal.sync().unwrap();
        let files = memory_files(&storage);
        let syncs = storage.sync_calls();
        let (small, big) = (payload(0, 60), payload(0, 101));

        for durability in [Durability::Policy, Durability::Relaxed] {
            let refusals = [
                (
                    wal.append_batch_with(&[&big], durability),
                    "record bytes",
                    100,
                    101,
                ),
                (
                    wal.append_batch_with(&[&small, &big, &small], durability),
                    "record bytes",
                    100,
                    101,
                ),
                (
                    wal.append_batch_with(&[&payload(0, 1); 5], durability),
                    "records in a batch",
                    4,
                    5,
                ),
                (
                    wal.append_batch_with(&[&small; 4], durability),
                    "batch bytes",
                    300,
                    4 * (28 + 60),
                ),
            ];
            for (result, what, limit, actual) in refusals {
                assert_limit(result.unwrap_err(), what, limit, actual);
            }
            let empty: [&[u8]; 0] = [];
            assert!(matches!(
                wal.append_batch_with(&empty, durability),
                Err(Error::EmptyBatch)
            ));
        }
        assert!(matches!(wal.append(&big), Err(Error::LimitExceeded { .. })));

        assert_eq!(wal.last_position(), 2, "no position was used");
        assert_eq!(wal.durable_position(), 2);
        assert!(!wal.is_poisoned(), "a refusal is not a failure");
        wal.sync().unwrap();
        assert_eq!(memory_files(&storage), files, "nothing was written");
        assert_eq!(storage.sync_calls(), syncs, "nothing was synced");

        // Exactly at the limits is fine.
        assert_eq!(wal.append(&payload(3, 100)).unwrap(), 3);
        let at_limits = [
            payload(4, 47),
            payload(5, 47),
            payload(6, 47),
            payload(7, 47),
        ];
        assert_eq!(4 * (28 + 47), 300);
        assert_eq!(wal.append_batch(&at_limits).unwrap().last, 7);
        wal.sync().unwrap();
        assert_eq!(positions(&read_all(&wal, 1)), [1, 2, 3, 4, 5, 6, 7]);
    }
}

#[test]
fn nonsensical_options_are_refused_at_open() {
    let bad = [
        WalOptions {
            segment_bytes_max: 60,
            ..WalOptions::default()
        },
        WalOptions {
            record_bytes_max: RECORD_BYTES_LIMIT + 1,
            ..WalOptions::default()
        },
        WalOptions {
            batch_records_max: 0,
            ..WalOptions::default()
        },
        WalOptions {
            batch_bytes_max: 27,
            ..WalOptions::default()
        },
        WalOptions {
            index_interval_bytes: 0,
            ..WalOptions::default()
        },
        WalOptions {
            sync_policy: SyncPolicy::GroupCommit {
                delay: Duration::from_millis(1),
                records_max: 0,
            },
            ..WalOptions::default()
        },
        WalOptions {
            sync_policy: SyncPolicy::Interval(Duration::ZERO),
            ..WalOptions::default()
        },
    ];
    for options in bad {
        let storage = MemoryStorage::new();
        let result =
            Wal::open_with_storage(Arc::new(storage.clone()), Path::new(MEMORY_DIR), options);
        assert!(
            matches!(result, Err(Error::InvalidArgument(_))),
            "{result:?}"
        );
        assert!(storage.files().is_empty(), "a refused open writes nothing");
    }
}

/// Lowering `record_bytes_max` limits new appends only: a durable record over the new limit is
/// still read back, never cut as if it were a torn tail.
#[test]
fn lowering_the_record_limit_never_loses_durable_records() {
    let storage = std::sync::Arc::new(logbook_wal::MemoryStorage::new());
    let dir = std::path::Path::new("/log");
    let big = vec![7u8; 10_000];
    let options = logbook_wal::WalOptions {
        sync_policy: logbook_wal::SyncPolicy::Always,
        ..logbook_wal::WalOptions::default()
    };
    let (wal, _) =
        logbook_wal::Wal::open_with_storage(storage.clone(), dir, options.clone()).unwrap();
    assert_eq!(wal.append(b"small").unwrap(), 1);
    assert_eq!(wal.append(&big).unwrap(), 2);
    wal.close().unwrap();
    let lowered = logbook_wal::WalOptions {
        record_bytes_max: 1000,
        ..options
    };
    let (wal, report) = logbook_wal::Wal::open_with_storage(storage, dir, lowered).unwrap();
    assert_eq!(report.tail_cut, None);
    assert_eq!(report.last_position, 2);
    let records: Vec<_> = wal.read_from(1).collect::<Result<_, _>>().unwrap();
    assert_eq!(records[1].payload, big);
    assert!(
        wal.append(&big).is_err(),
        "new appends obey the lowered limit"
    );
}
