//! Model test: random sequences of appends, batches, relaxed appends, syncs, crashes of every
//! flavour, clean reopens and reads on the in-memory storage, checked against a plain `Vec` of
//! what the WAL acknowledged.
//!
//! After every crash and reopen: recovery succeeds (an honest crash is never corruption), every
//! record acknowledged as durable is present and byte-identical at its position, and what
//! follows is a prefix of what was appended that ends at a batch boundary (nothing follows a
//! gap, a batch is all-or-nothing). Cases: `LOGBOOK_MODEL_CASES` (default 2000).

use logbook_tests::{MEMORY_DIR, payload, read_all};
use logbook_wal::{
    CrashMode, Durability, MemoryStorage, RecoveryReport, SyncPolicy, Wal, WalOptions,
};
use proptest::prelude::*;
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone)]
enum Op {
    Append(usize),
    AppendBatch(Vec<usize>),
    AppendRelaxed(usize),
    Sync,
    Crash(CrashMode),
    Reopen,
    Read(u64),
}

fn crash_mode() -> impl Strategy<Value = CrashMode> {
    prop_oneof![
        Just(CrashMode::LoseUnsynced),
        Just(CrashMode::KeepUnsynced),
        any::<u64>().prop_map(|seed| CrashMode::KeepPrefix { seed }),
        any::<u64>().prop_map(|seed| CrashMode::Reorder { seed }),
        any::<u64>().prop_map(|seed| CrashMode::Tear { seed }),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0usize..200).prop_map(Op::Append),
        3 => prop::collection::vec(0usize..120, 1..6).prop_map(Op::AppendBatch),
        2 => (0usize..100).prop_map(Op::AppendRelaxed),
        2 => Just(Op::Sync),
        3 => crash_mode().prop_map(Op::Crash),
        1 => Just(Op::Reopen),
        1 => any::<u64>().prop_map(Op::Read),
    ]
}

fn wal_options() -> impl Strategy<Value = WalOptions> {
    let policy = prop_oneof![
        Just(SyncPolicy::Always),
        Just(SyncPolicy::Never),
        (1usize..4).prop_map(|records_max| SyncPolicy::GroupCommit {
            delay: Duration::ZERO,
            records_max,
        }),
    ];
    let buffer_bytes_max = prop_oneof![Just(0usize), 1usize..400, Just(1usize << 20)];
    let index_interval_bytes = prop_oneof![Just(1u64), 16u64..512];
    let sizes = (200u64..1500, buffer_bytes_max, index_interval_bytes);
    (policy, sizes, any::<bool>()).prop_map(
        |(sync_policy, sizes, verify_sealed_segments_on_open)| WalOptions {
            sync_policy,
            segment_bytes_max: sizes.0,
            buffer_bytes_max: sizes.1,
            index_interval_bytes: sizes.2,
            verify_sealed_segments_on_open,
            ..WalOptions::default()
        },
    )
}

/// The reference: what was appended (index = position - 1) and what must survive a crash.
struct Model {
    storage: MemoryStorage,
    options: WalOptions,
    wal: Option<Wal>,
    appended: Vec<Vec<u8>>,
    /// Positions that end a batch: the only places recovery may stop.
    batch_ends: BTreeSet<u64>,
    /// Every position up to here was acknowledged as durable.
    durable_floor: u64,
    /// A fresh number per append, so a stale or misplaced record never compares equal.
    serial: u64,
}

impl Model {
    fn new(options: WalOptions) -> Model {
        let storage = MemoryStorage::new();
        let mut model = Model {
            storage,
            options,
            wal: None,
            appended: Vec::new(),
            batch_ends: BTreeSet::new(),
            durable_floor: 0,
            serial: 0,
        };
        let report = model.open();
        assert_eq!(report.last_position, 0);
        model
    }

    fn wal(&self) -> &Wal {
        self.wal.as_ref().expect("the model keeps a WAL open")
    }

    fn open(&mut self) -> RecoveryReport {
        let (wal, report) = Wal::open_with_storage(
            Arc::new(self.storage.clone()),
            Path::new(MEMORY_DIR),
            self.options.clone(),
        )
        .unwrap_or_else(|error| panic!("recovery must succeed after an honest crash: {error}"));
        assert!(report.salvage.is_none());
        self.wal = Some(wal);
        report
    }

    fn policy_waits(&self) -> bool {
        matches!(
            self.options.sync_policy,
            SyncPolicy::Always | SyncPolicy::GroupCommit { .. }
        )
    }

    fn next_payload(&mut self, len: usize) -> Vec<u8> {
        self.serial += 1;
        payload(self.serial, len)
    }

    fn append(&mut self, lens: &[usize], durability: Durability) {
        let payloads: Vec<Vec<u8>> = lens.iter().map(|&len| self.next_payload(len)).collect();
        let receipt = self
            .wal()
            .append_batch_with(&payloads, durability)
            .expect("append");
        let first = self.appended.len() as u64 + 1;
        assert_eq!(receipt.first, first, "positions are gapless");
        assert_eq!(receipt.last, first + lens.len() as u64 - 1);
        self.appended.extend(payloads);
        self.batch_ends.insert(receipt.last);
        if durability == Durability::Policy && self.policy_waits() {
            self.durable_floor = receipt.last;
        }
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Append(len) => self.append(&[*len], Durability::Policy),
            Op::AppendBatch(lens) => self.append(lens, Durability::Policy),
            Op::AppendRelaxed(len) => self.append(&[*len], Durability::Relaxed),
            Op::Sync => {
                let durable = self.wal().sync().expect("sync");
                assert_eq!(durable, self.appended.len() as u64);
                self.durable_floor = durable;
            }
            Op::Crash(mode) => {
                // The WAL is alive: its handles go stale, so dropping it writes nothing.
                self.storage.crash(*mode);
                drop(self.wal.take());
                let report = self.open();
                self.check_recovered(report.last_position);
            }
            Op::Reopen => {
                self.wal.take().expect("open").close().expect("clean close");
                let report = self.open();
                assert_eq!(report.last_position, self.appended.len() as u64);
                assert!(report.tail_cut.is_none(), "a clean close leaves no tail");
                self.check_recovered(report.last_position);
            }
            Op::Read(from) => self.check_read(from % (self.appended.len() as u64 + 2)),
        }
        self.check_positions();
    }

    fn check_positions(&mut self) {
        let wal = self.wal();
        let (last, durable) = (wal.last_position(), wal.durable_position());
        assert_eq!(last, self.appended.len() as u64);
        assert!(durable >= self.durable_floor, "durable {durable} < floor");
        assert!(durable <= last);
        // What the WAL calls durable must survive a crash too.
        self.durable_floor = durable;
    }

    /// After recovery to `last`: the durable floor kept, a batch boundary, identical records.
    fn check_recovered(&mut self, last: u64) {
        assert!(
            last >= self.durable_floor,
            "lost acknowledged records: recovered to {last}, durable floor {}",
            self.durable_floor
        );
        assert!(
            last <= self.appended.len() as u64,
            "recovered records never appended"
        );
        assert!(
            last == 0 || self.batch_ends.contains(&last),
            "recovery stopped inside a batch at {last}"
        );
        let records = read_all(self.wal(), 1);
        assert_eq!(records.len() as u64, last, "records after recovery");
        for (index, record) in records.iter().enumerate() {
            assert_eq!(record.position, index as u64 + 1, "nothing follows a gap");
            assert!(
                record.payload == self.appended[index],
                "payload at {}",
                record.position
            );
        }
        self.appended.truncate(last as usize);
        self.batch_ends.retain(|&end| end <= last);
        assert_eq!(
            self.wal().durable_position(),
            last,
            "recovered records are durable"
        );
        self.durable_floor = last;
    }

    fn check_read(&self, from: u64) {
        let durable = self.wal().durable_position();
        let records = read_all(self.wal(), from);
        let first = from.max(1);
        assert_eq!(records.len() as u64, (durable + 1).saturating_sub(first));
        for (record, position) in records.iter().zip(first..) {
            assert_eq!(record.position, position);
            assert!(record.payload == self.appended[position as usize - 1]);
        }
    }
}

fn cases() -> u32 {
    std::env::var("LOGBOOK_MODEL_CASES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(2000)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn wal_matches_the_model_across_crashes(
        options in wal_options(),
        ops in prop::collection::vec(op(), 1..60),
    ) {
        let mut model = Model::new(options);
        for op in &ops {
            model.apply(op);
        }
        // A final crash that loses everything unsynced, then a clean close and reopen.
        model.apply(&Op::Crash(CrashMode::LoseUnsynced));
        model.apply(&Op::Reopen);
    }
}
