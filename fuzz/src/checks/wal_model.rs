//! Target `wal_model`: arbitrary operations on a WAL over the in-memory storage (appends,
//! batches, relaxed appends, syncs, crashes of every flavour, reopens, reads and injected write
//! or sync failures), checked against a plain `Vec` of what was appended.
//!
//! Input: an [`Input`] built by `arbitrary` from the bytes (options, then at most
//! [`OPS_MAX`] operations), with tiny segments so rolls happen all the time. The run ends with
//! a crash that loses everything unsynced and a clean reopen.
//!
//! Properties: nothing panics; positions are handed out gaplessly; an operation fails only with
//! `Io` (an injected fault) or `Poisoned` (after one), and a failure poisons the WAL. After
//! every crash and reopen, recovery succeeds in strict mode without salvage (an honest crash is
//! never corruption), every record acknowledged as durable (or that the WAL said was durable)
//! is there, byte for byte, and the log is a gapless prefix of what was appended ending on a
//! batch boundary (a batch is all or nothing). A reopen after a clean close keeps everything.
//! Reads return exactly the durable records.

use arbitrary::{Arbitrary, Unstructured};
use logbook_wal::{
    CrashMode, Durability, Error, FaultKind, FaultOp, MemoryStorage, Record, RecoveryReport,
    SyncPolicy, Wal, WalOptions,
};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The longest input: enough bytes for [`OPS_MAX`] operations with their arguments.
pub const INPUT_BYTES_MAX: usize = 4096;
/// The most operations run from one input.
pub const OPS_MAX: usize = 64;
/// The largest record appended.
const RECORD_BYTES_MAX: usize = 300;
/// The most records in one batch.
const BATCH_RECORDS_MAX: usize = 8;
/// Tiny segments: a few records each, so rolls happen all the time.
const SEGMENT_BYTES_MAX: u64 = 512;
const LOG_DIR: &str = "/log";

#[derive(Debug, Arbitrary)]
struct Input {
    /// Mostly `Always`; sometimes group commit or `Never` (see [`Model::new`]).
    policy: u8,
    buffer: u8,
    index_interval: u8,
    ops: Vec<Op>,
}

#[derive(Debug, Clone, Arbitrary)]
enum Op {
    Append(u16),
    Batch(Vec<u16>),
    Relaxed(u16),
    Sync,
    Crash(Flavour, u64),
    Reopen,
    Read(u16),
    Fault(Target, Failure),
}

#[derive(Debug, Clone, Copy, Arbitrary)]
enum Flavour {
    LoseUnsynced,
    KeepUnsynced,
    KeepPrefix,
    Reorder,
    Tear,
}

#[derive(Debug, Clone, Copy, Arbitrary)]
enum Target {
    Write,
    Sync,
}

#[derive(Debug, Clone, Copy, Arbitrary)]
enum Failure {
    Eio,
    Enospc,
}

/// Runs one operation sequence against the model; panics only on a bug.
pub fn check(data: &[u8]) {
    if data.len() > INPUT_BYTES_MAX {
        return;
    }
    let Ok(mut input) = Input::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    input.ops.truncate(OPS_MAX);
    let mut model = Model::new(&input);
    for op in &input.ops {
        model.apply(op);
    }
    model.apply(&Op::Crash(Flavour::LoseUnsynced, 0));
    model.apply(&Op::Reopen);
}

/// The reference: what was appended (index = position - 1) and what must survive a crash.
struct Model {
    storage: MemoryStorage,
    options: WalOptions,
    wal: Option<Wal>,
    /// Every record that got a position, acknowledged or not (a failed append may have
    /// written its frames: they may or may not survive).
    appended: Vec<Vec<u8>>,
    /// Positions that end a batch: the only places recovery may stop.
    batch_ends: BTreeSet<u64>,
    /// Every position up to here was acknowledged as durable.
    durable_floor: u64,
    /// A fresh number per record, so a misplaced or stale record never compares equal.
    serial: u64,
    /// An operation failed: the WAL must refuse writes until it is reopened.
    poisoned: bool,
}

impl Model {
    fn new(input: &Input) -> Model {
        let sync_policy = match input.policy % 8 {
            0 => SyncPolicy::GroupCommit {
                delay: Duration::ZERO,
                records_max: usize::from(input.policy / 8 % 4) + 1,
            },
            1 => SyncPolicy::Never,
            _ => SyncPolicy::Always,
        };
        let options = WalOptions {
            sync_policy,
            segment_bytes_max: SEGMENT_BYTES_MAX,
            buffer_bytes_max: [0, 64, 1 << 20][usize::from(input.buffer % 3)],
            index_interval_bytes: [1, 64, 4096][usize::from(input.index_interval % 3)],
            ..WalOptions::default()
        };
        let mut model = Model {
            storage: MemoryStorage::new(),
            options,
            wal: None,
            appended: Vec::new(),
            batch_ends: BTreeSet::new(),
            durable_floor: 0,
            serial: 0,
            poisoned: false,
        };
        let report = model.open();
        assert_eq!(report.last_position, 0, "a new log is empty");
        model
    }

    fn wal(&self) -> &Wal {
        self.wal.as_ref().expect("the model keeps a WAL open")
    }

    /// Opens in strict mode. An injected fault still pending may fail the open itself (with
    /// `Io`, never corruption); the faults are then cleared and the open must succeed.
    fn open(&mut self) -> RecoveryReport {
        let open = || {
            Wal::open_with_storage(
                Arc::new(self.storage.clone()),
                Path::new(LOG_DIR),
                self.options.clone(),
            )
        };
        let (wal, report) = match open() {
            Ok(opened) => opened,
            Err(error) => {
                assert!(matches!(error, Error::Io { .. }), "open failed: {error}");
                self.storage.clear_faults();
                open().unwrap_or_else(|error| panic!("open failed twice: {error}"))
            }
        };
        assert!(report.salvage.is_none(), "strict open salvaged");
        self.wal = Some(wal);
        self.poisoned = false;
        report
    }

    fn policy_waits(&self) -> bool {
        matches!(
            self.options.sync_policy,
            SyncPolicy::Always | SyncPolicy::GroupCommit { .. }
        )
    }

    fn next_payload(&mut self, len: u16) -> Vec<u8> {
        self.serial += 1;
        let mut state = self.serial;
        let len = usize::from(len) % (RECORD_BYTES_MAX + 1);
        (0..len)
            .map(|_| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                (state >> 56) as u8
            })
            .collect()
    }

    /// An operation failed: only a fault or the poisoning that follows one may cause that.
    fn failed(&mut self, what: &str, error: &Error) {
        assert!(
            matches!(error, Error::Io { .. } | Error::Poisoned { .. }),
            "{what} failed: {error}"
        );
        assert!(
            self.wal().is_poisoned(),
            "{what} failed without poisoning: {error}"
        );
        self.poisoned = true;
    }

    fn append(&mut self, lens: &[u16], durability: Durability) {
        let payloads: Vec<Vec<u8>> = lens.iter().map(|&len| self.next_payload(len)).collect();
        let before = self.appended.len() as u64;
        let count = payloads.len() as u64;
        match self.wal().append_batch_with(&payloads, durability) {
            Ok(receipt) => {
                assert!(!self.poisoned, "a poisoned WAL accepted an append");
                assert_eq!((receipt.first, receipt.last), (before + 1, before + count));
                self.appended.extend(payloads);
                self.batch_ends.insert(receipt.last);
                if durability == Durability::Policy && self.policy_waits() {
                    self.durable_floor = receipt.last;
                }
            }
            Err(error) => {
                self.failed("append", &error);
                // The batch may have been given positions (and bytes) before the failure.
                let last = self.wal().last_position();
                if last != before {
                    assert_eq!(last, before + count, "a failed batch took some positions");
                    self.appended.extend(payloads);
                    self.batch_ends.insert(last);
                }
            }
        }
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Append(len) => self.append(&[*len], Durability::Policy),
            Op::Batch(lens) => {
                let lens = lens.get(..lens.len().min(BATCH_RECORDS_MAX)).unwrap_or(&[]);
                self.append(
                    if lens.is_empty() { &[1] } else { lens },
                    Durability::Policy,
                );
            }
            Op::Relaxed(len) => self.append(&[*len], Durability::Relaxed),
            Op::Sync => match self.wal().sync() {
                Ok(durable) => {
                    // A poisoned WAL may answer Ok when nothing was left to sync: checked here.
                    assert_eq!(
                        durable,
                        self.appended.len() as u64,
                        "sync left records behind"
                    );
                    self.durable_floor = durable;
                }
                Err(error) => self.failed("sync", &error),
            },
            Op::Crash(flavour, seed) => {
                // The WAL is alive: its handles go stale, so dropping it writes nothing.
                self.storage.crash(crash_mode(*flavour, *seed));
                drop(self.wal.take());
                let report = self.open();
                self.check_recovered(report.last_position);
            }
            Op::Reopen => self.reopen(),
            Op::Read(from) => {
                let from = u64::from(*from) % (self.appended.len() as u64 + 2);
                self.check_read(from);
            }
            Op::Fault(target, failure) => {
                let op = match target {
                    Target::Write => FaultOp::Write,
                    Target::Sync => FaultOp::Sync,
                };
                let kind = match failure {
                    Failure::Eio => FaultKind::Eio,
                    Failure::Enospc => FaultKind::Enospc,
                };
                self.storage.inject_fault(op, 0, kind);
            }
        }
        self.check_positions();
    }

    /// Close (which may fail on a pending fault or a poisoned WAL) and open again, no crash:
    /// the OS keeps every byte written, so a clean close must lose nothing.
    fn reopen(&mut self) {
        let was_poisoned = self.poisoned;
        let closed = self.wal.take().expect("open").close();
        let clean = closed.is_ok() && !was_poisoned;
        if let Err(error) = &closed {
            assert!(
                matches!(error, Error::Io { .. } | Error::Poisoned { .. }),
                "close failed: {error}"
            );
        }
        let report = self.open();
        if clean {
            assert_eq!(
                report.last_position,
                self.appended.len() as u64,
                "clean close lost"
            );
            assert!(report.tail_cut.is_none(), "a clean close leaves no tail");
        }
        self.check_recovered(report.last_position);
    }

    fn check_positions(&mut self) {
        let wal = self.wal();
        let (last, durable) = (wal.last_position(), wal.durable_position());
        assert_eq!(last, self.appended.len() as u64, "positions are gapless");
        assert!(
            durable >= self.durable_floor,
            "durable position {durable} went back"
        );
        assert!(durable <= last, "durable position past the last position");
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
        for (record, expected) in records.iter().zip(&self.appended) {
            assert!(
                record.payload == *expected,
                "payload at {}",
                record.position
            );
        }
        self.appended.truncate(records.len());
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
            let expected = usize::try_from(position - 1)
                .ok()
                .and_then(|index| self.appended.get(index));
            assert!(Some(&record.payload) == expected, "payload at {position}");
        }
    }
}

/// Every record from `from` on, which must read without error and without a gap.
fn read_all(wal: &Wal, from: u64) -> Vec<Record> {
    let records: Vec<Record> = wal
        .read_from(from)
        .collect::<Result<_, _>>()
        .unwrap_or_else(|error| panic!("read from {from}: {error}"));
    for (record, position) in records.iter().zip(from.max(1)..) {
        assert_eq!(record.position, position, "a gap in the log");
    }
    records
}

fn crash_mode(flavour: Flavour, seed: u64) -> CrashMode {
    match flavour {
        Flavour::LoseUnsynced => CrashMode::LoseUnsynced,
        Flavour::KeepUnsynced => CrashMode::KeepUnsynced,
        Flavour::KeepPrefix => CrashMode::KeepPrefix { seed },
        Flavour::Reorder => CrashMode::Reorder { seed },
        Flavour::Tear => CrashMode::Tear { seed },
    }
}
