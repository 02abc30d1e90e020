//! A lending reader (`WalReader::lending_blocks`, what the two-thread replay reads through)
//! returns the records a plain reader returns, each found where it said in the block it said:
//! across read-ahead refills, records larger than the read-ahead, segment rolls, blocks handed
//! back dirty, and a start in the middle of the log.

use logbook_tests::{SplitMix, options, payload, read_all};
use logbook_wal::{SyncPolicy, Wal};

/// Appends `count` records of mixed sizes: mostly small, some of a few KiB, and a few larger
/// than the reader's 256 KiB read-ahead. Returns every payload, index = position - 1.
fn append(wal: &Wal, count: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut random = SplitMix(seed);
    let mut appended = Vec::new();
    for serial in 0..count as u64 {
        let len = match random.range(0, 100) {
            0 => random.range(256 << 10, 700 << 10),
            1..=9 => random.range(1 << 10, 8 << 10),
            _ => random.range(0, 400),
        } as usize;
        let bytes = payload(serial, len);
        assert_eq!(wal.append(&bytes).unwrap(), serial + 1);
        appended.push(bytes);
    }
    appended
}

/// Reads from `from` through a lending reader, checking every record against `appended` where
/// the reader said it is, in the block it ends up in; hands back every other block, soiled.
/// Returns the positions read and how many blocks were taken.
fn read_lending(wal: &Wal, from: u64, appended: &[Vec<u8>]) -> (Vec<u64>, usize) {
    let mut reader = wal.read_from(from).lending_blocks();
    let mut positions = Vec::new();
    // The records of the reader's current block: where they lie, and their position.
    let mut current: Vec<(usize, u64)> = Vec::new();
    let mut blocks = 0;
    let check_block = |block: Vec<u8>, records: &mut Vec<(usize, u64)>| -> Vec<u8> {
        assert!(
            !records.is_empty(),
            "a block with no record returned from it"
        );
        for &(at, position) in records.iter() {
            let expected = &appended[position as usize - 1];
            assert_eq!(
                block.get(at..at + expected.len()),
                Some(&expected[..]),
                "record {position} is not where the reader said in its block"
            );
        }
        records.clear();
        block
    };
    while let Some(record) = reader.next_located() {
        let record = record.unwrap();
        if record.new_block {
            let block = reader.take_block().expect("a retired block");
            let mut block = check_block(block, &mut current);
            blocks += 1;
            if blocks % 2 == 0 {
                // Handed back dirty: the reader reads over it, and never returns stale bytes.
                block.fill(0xA5);
                reader.give_block(block);
            }
        } else {
            assert!(reader.take_block().is_none(), "a block retired early");
        }
        let expected = &appended[record.position as usize - 1];
        assert_eq!(record.len, expected.len());
        assert_eq!(
            reader.block_bytes(record.at, record.len),
            Some(&expected[..]),
            "record {}",
            record.position
        );
        current.push((record.at, record.position));
        positions.push(record.position);
    }
    reader.end_block();
    match reader.take_block() {
        Some(block) => {
            check_block(block, &mut current);
            blocks += 1;
        }
        None => assert!(current.is_empty(), "the last block was not retired"),
    }
    assert!(reader.take_block().is_none());
    (positions, blocks)
}

#[test]
fn a_lending_reader_returns_every_record_where_it_said() {
    let dir = tempfile::tempdir().unwrap();
    // Segments of 2 MiB: the log rolls several times, with large records near the ends.
    let (wal, _) = Wal::open(dir.path(), options(SyncPolicy::Never, 2 << 20)).unwrap();
    let appended = append(&wal, 3_000, 0x5EED);
    wal.sync().unwrap();
    assert!(
        wal.segments().len() > 3,
        "the log should span several segments"
    );
    for from in [1, 2, 1_234, 2_999, 3_000] {
        let plain: Vec<u64> = read_all(&wal, from).iter().map(|r| r.position).collect();
        let (lent, blocks) = read_lending(&wal, from, &appended);
        assert_eq!(lent, plain, "from {from}");
        if from == 1 {
            // Each block is at most a read-ahead (or one larger record): many blocks.
            assert!(blocks > 10, "{blocks} blocks");
        }
    }
}

#[test]
fn a_lending_reader_of_an_empty_log_lends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(dir.path(), options(SyncPolicy::Never, 1 << 20)).unwrap();
    let mut reader = wal.read_from(1).lending_blocks();
    assert!(reader.next_located().is_none());
    reader.end_block();
    assert!(reader.take_block().is_none());
}
