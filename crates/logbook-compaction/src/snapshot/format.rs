//! The bytes of a snapshot file, format version 1: the encoder and the decoder.
//!
//! Owns: the layout described in `FORMAT-SNAPSHOT.md` (header, section table, section bytes,
//! trailer), its limits and every check a decoder makes. Must never: do I/O, panic on any input,
//! index or unwrap unchecked, or allocate a size read from the input before checking it against
//! the bytes that remain.
#![deny(clippy::unwrap_used, clippy::indexing_slicing, clippy::expect_used)]

use super::{Snapshot, SnapshotSection};
use crate::error::{Corruption, Error, Result};

/// The first 8 bytes of every snapshot file.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"LOGBKSNP";
/// The snapshot format version this build writes and reads.
pub const SNAPSHOT_FORMAT_VERSION: u16 = 1;
/// Checksum algorithm id 1: CRC-32 (ISO-HDLC), as computed by `crc32fast`.
pub const CHECKSUM_CRC32: u8 = 1;
/// Size of the fixed header.
pub const SNAPSHOT_HEADER_BYTES: usize = 32;
/// Size of the trailer (one CRC-32).
pub const SNAPSHOT_TRAILER_BYTES: usize = 4;
/// Most sections one snapshot may hold.
pub const SECTIONS_MAX: usize = 64;
/// Longest section id, in bytes of UTF-8.
pub const SECTION_ID_BYTES_MAX: usize = 128;
/// Largest snapshot file, every byte counted: 1 GiB.
pub const SNAPSHOT_BYTES_MAX: u64 = 1 << 30;

/// Bytes of one section-table entry besides its id: id length, state version, byte length, CRC.
const TABLE_ENTRY_FIXED_BYTES: usize = 2 + 2 + 8 + 4;
/// Offset of the header checksum: it covers every header byte before it.
const HEADER_CHECKSUM_OFFSET: usize = 28;

/// A snapshot encoded in pieces, so a writer can stream the section bytes it already holds
/// instead of copying them into one buffer.
pub(crate) struct EncodedParts<'a> {
    /// Header and section table.
    pub(crate) head: Vec<u8>,
    /// Each section's bytes, in table order.
    pub(crate) bodies: Vec<&'a [u8]>,
    /// The trailer checksum, little-endian.
    pub(crate) trailer: [u8; SNAPSHOT_TRAILER_BYTES],
    /// Length of the whole file.
    pub(crate) total_bytes: u64,
}

/// Checks that a snapshot can be encoded: section count, id lengths, unique ids, total size.
pub(crate) fn validate(snapshot: &Snapshot) -> Result<u64> {
    let limit = |what, limit: u64, actual: u64| Error::LimitExceeded {
        file: None,
        offset: 0,
        what,
        limit,
        actual,
    };
    let sections = &snapshot.sections;
    if sections.len() > SECTIONS_MAX {
        return Err(limit(
            "section count",
            SECTIONS_MAX as u64,
            sections.len() as u64,
        ));
    }
    let mut total = (SNAPSHOT_HEADER_BYTES + SNAPSHOT_TRAILER_BYTES) as u64;
    for (index, section) in sections.iter().enumerate() {
        let id_bytes = section.id.len();
        if id_bytes == 0 {
            return Err(Error::InvalidSnapshot {
                reason: format!("section {index} has an empty id"),
            });
        }
        if id_bytes > SECTION_ID_BYTES_MAX {
            let what = "section id bytes";
            return Err(limit(what, SECTION_ID_BYTES_MAX as u64, id_bytes as u64));
        }
        let earlier = sections.iter().take(index);
        if earlier.into_iter().any(|other| other.id == section.id) {
            return Err(Error::InvalidSnapshot {
                reason: format!("duplicate section id {:?}", section.id),
            });
        }
        total = total
            .saturating_add((TABLE_ENTRY_FIXED_BYTES + id_bytes) as u64)
            .saturating_add(section.bytes.len() as u64);
    }
    if total > SNAPSHOT_BYTES_MAX {
        return Err(limit("snapshot bytes", SNAPSHOT_BYTES_MAX, total));
    }
    Ok(total)
}

/// Encodes a validated snapshot into its header and table, its section bodies and its trailer.
pub(crate) fn encode_parts(snapshot: &Snapshot) -> Result<EncodedParts<'_>> {
    let total_bytes = validate(snapshot)?;
    let table_bytes: usize = snapshot
        .sections
        .iter()
        .map(|section| TABLE_ENTRY_FIXED_BYTES + section.id.len())
        .sum();
    let mut head = Vec::with_capacity(SNAPSHOT_HEADER_BYTES + table_bytes);
    head.extend_from_slice(&SNAPSHOT_MAGIC);
    head.extend_from_slice(&SNAPSHOT_FORMAT_VERSION.to_le_bytes());
    head.push(CHECKSUM_CRC32);
    head.extend_from_slice(&[0; 5]);
    head.extend_from_slice(&snapshot.position.to_le_bytes());
    // At most SECTIONS_MAX (checked by `validate`), so the cast cannot truncate.
    head.extend_from_slice(&(snapshot.sections.len() as u32).to_le_bytes());
    let header_checksum = crc32fast::hash(&head);
    head.extend_from_slice(&header_checksum.to_le_bytes());
    for section in &snapshot.sections {
        // At most SECTION_ID_BYTES_MAX (checked by `validate`).
        head.extend_from_slice(&(section.id.len() as u16).to_le_bytes());
        head.extend_from_slice(section.id.as_bytes());
        head.extend_from_slice(&section.version.to_le_bytes());
        head.extend_from_slice(&(section.bytes.len() as u64).to_le_bytes());
        head.extend_from_slice(&crc32fast::hash(&section.bytes).to_le_bytes());
    }
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&head);
    let mut bodies = Vec::with_capacity(snapshot.sections.len());
    for section in &snapshot.sections {
        hasher.update(&section.bytes);
        bodies.push(section.bytes.as_slice());
    }
    Ok(EncodedParts {
        head,
        bodies,
        trailer: hasher.finalize().to_le_bytes(),
        total_bytes,
    })
}

/// Encodes a snapshot into the bytes of a snapshot file.
///
/// # Panics
///
/// When the snapshot breaks a limit or has an empty or duplicate section id (see
/// [`Snapshot::validate`]); [`SnapshotStore::write`](crate::SnapshotStore::write) checks first
/// and returns the error instead.
pub fn encode_snapshot(snapshot: &Snapshot) -> Vec<u8> {
    let parts = match encode_parts(snapshot) {
        Ok(parts) => parts,
        Err(error) => panic!("encode_snapshot: {error}"),
    };
    let capacity = usize::try_from(parts.total_bytes).unwrap_or(usize::MAX);
    let mut bytes = Vec::with_capacity(capacity);
    bytes.extend_from_slice(&parts.head);
    for body in &parts.bodies {
        bytes.extend_from_slice(body);
    }
    bytes.extend_from_slice(&parts.trailer);
    bytes
}

/// Reads the input front to back; every read is checked against what remains.
struct Cursor<'a> {
    input: &'a [u8],
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn new(input: &'a [u8]) -> Self {
        Cursor { input, rest: input }
    }

    /// Offset of the next unread byte.
    fn offset(&self) -> u64 {
        (self.input.len() - self.rest.len()) as u64
    }

    fn remaining(&self) -> u64 {
        self.rest.len() as u64
    }

    fn take(&mut self, count: u64, structure: &'static str) -> Result<&'a [u8]> {
        let truncated = || {
            let reason = Corruption::Truncated {
                structure,
                needed: count,
                available: self.rest.len() as u64,
            };
            Error::corrupted(self.offset(), reason)
        };
        let count = usize::try_from(count).map_err(|_| truncated())?;
        let (taken, rest) = self.rest.split_at_checked(count).ok_or_else(truncated)?;
        self.rest = rest;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self, structure: &'static str) -> Result<[u8; N]> {
        let offset = self.offset();
        let bytes = self.take(N as u64, structure)?;
        <[u8; N]>::try_from(bytes).map_err(|_| {
            let reason = Corruption::Truncated {
                structure,
                needed: N as u64,
                available: bytes.len() as u64,
            };
            Error::corrupted(offset, reason)
        })
    }

    fn u8(&mut self, structure: &'static str) -> Result<u8> {
        Ok(u8::from_le_bytes(self.array(structure)?))
    }

    fn u16(&mut self, structure: &'static str) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array(structure)?))
    }

    fn u32(&mut self, structure: &'static str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(structure)?))
    }

    fn u64(&mut self, structure: &'static str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(structure)?))
    }
}

/// A decoded header: position and section count.
struct Header {
    position: u64,
    section_count: u32,
}

/// One section-table entry, borrowing its id from the input.
struct TableEntry<'a> {
    id: &'a str,
    version: u16,
    length: u64,
    checksum: u32,
}

/// Decodes the bytes of a snapshot file, checking every structure, length and checksum.
///
/// Never panics. No size read from the input is allocated before it has been checked against
/// the bytes that remain: in total it allocates the copied ids and section bytes (together less
/// than the input's length) plus bookkeeping for at most [`SECTIONS_MAX`] sections. Errors carry
/// no file name (`file: None`); [`SnapshotStore`](crate::SnapshotStore) adds it.
pub fn decode_snapshot(bytes: &[u8]) -> Result<Snapshot> {
    if bytes.len() as u64 > SNAPSHOT_BYTES_MAX {
        return Err(Error::LimitExceeded {
            file: None,
            offset: 0,
            what: "snapshot bytes",
            limit: SNAPSHOT_BYTES_MAX,
            actual: bytes.len() as u64,
        });
    }
    let mut cursor = Cursor::new(bytes);
    let header = decode_header(&mut cursor)?;
    let entries = decode_table(&mut cursor, header.section_count)?;
    let mut bodies = Vec::with_capacity(entries.len());
    for entry in &entries {
        let offset = cursor.offset();
        bodies.push((offset, cursor.take(entry.length, "section bytes")?));
    }
    let covered = cursor.offset();
    let trailer_offset = cursor.offset();
    let stored_trailer = cursor.u32("trailer")?;
    if cursor.remaining() != 0 {
        let reason = Corruption::TrailingBytes {
            count: cursor.remaining(),
        };
        return Err(Error::corrupted(cursor.offset(), reason));
    }
    for (entry, (offset, body)) in entries.iter().zip(&bodies) {
        let computed = crc32fast::hash(body);
        if computed != entry.checksum {
            let reason = Corruption::SectionChecksum {
                id: entry.id.to_owned(),
                stored: entry.checksum,
                computed,
            };
            return Err(Error::corrupted(*offset, reason));
        }
    }
    let covered = usize::try_from(covered).unwrap_or(usize::MAX);
    let computed = crc32fast::hash(bytes.get(..covered).unwrap_or_default());
    if computed != stored_trailer {
        let reason = Corruption::TrailerChecksum {
            stored: stored_trailer,
            computed,
        };
        return Err(Error::corrupted(trailer_offset, reason));
    }
    let sections = entries
        .iter()
        .zip(&bodies)
        .map(|(entry, (_, body))| SnapshotSection {
            id: entry.id.to_owned(),
            version: entry.version,
            bytes: body.to_vec(),
        })
        .collect();
    Ok(Snapshot {
        position: header.position,
        sections,
    })
}

/// Reads and checks the header, in this order: magic, format version, checksum algorithm,
/// header checksum, reserved bytes, section count limit.
fn decode_header(cursor: &mut Cursor<'_>) -> Result<Header> {
    let input = cursor.rest;
    let magic_seen = input.get(..SNAPSHOT_MAGIC.len()).unwrap_or(input);
    if !SNAPSHOT_MAGIC.starts_with(magic_seen) {
        return Err(Error::corrupted(0, Corruption::BadMagic));
    }
    cursor.array::<8>("header")?;
    let version = cursor.u16("header")?;
    if version != SNAPSHOT_FORMAT_VERSION {
        return Err(unsupported(8, "format version", version.into(), 1));
    }
    let algorithm = cursor.u8("header")?;
    if algorithm != CHECKSUM_CRC32 {
        return Err(unsupported(10, "checksum algorithm", algorithm.into(), 1));
    }
    let reserved = cursor.array::<5>("header")?;
    let position = cursor.u64("header")?;
    let section_count = cursor.u32("header")?;
    let stored = cursor.u32("header")?;
    let computed = crc32fast::hash(input.get(..HEADER_CHECKSUM_OFFSET).unwrap_or_default());
    if stored != computed {
        let reason = Corruption::HeaderChecksum { stored, computed };
        return Err(Error::corrupted(HEADER_CHECKSUM_OFFSET as u64, reason));
    }
    if reserved != [0; 5] {
        return Err(Error::corrupted(11, Corruption::ReservedNotZero));
    }
    if section_count as usize > SECTIONS_MAX {
        return Err(Error::LimitExceeded {
            file: None,
            offset: 24,
            what: "section count",
            limit: SECTIONS_MAX as u64,
            actual: section_count.into(),
        });
    }
    Ok(Header {
        position,
        section_count,
    })
}

fn unsupported(offset: u64, field: &'static str, found: u64, supported: u64) -> Error {
    Error::Unsupported {
        file: None,
        offset,
        field,
        found,
        supported,
    }
}

/// Reads the section table: ids (1..=128 bytes of UTF-8, unique), versions, lengths, checksums.
fn decode_table<'a>(cursor: &mut Cursor<'a>, count: u32) -> Result<Vec<TableEntry<'a>>> {
    // Every entry needs at least one id byte besides its fixed fields: check the count against
    // the input before reserving room for it.
    let needed = u64::from(count) * (TABLE_ENTRY_FIXED_BYTES as u64 + 1);
    if needed > cursor.remaining() {
        let reason = Corruption::Truncated {
            structure: "section table",
            needed,
            available: cursor.remaining(),
        };
        return Err(Error::corrupted(cursor.offset(), reason));
    }
    let mut entries: Vec<TableEntry<'a>> = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let offset = cursor.offset();
        let id_length = cursor.u16("section table entry")?;
        if id_length == 0 {
            return Err(Error::corrupted(offset, Corruption::EmptySectionId));
        }
        if usize::from(id_length) > SECTION_ID_BYTES_MAX {
            return Err(Error::LimitExceeded {
                file: None,
                offset,
                what: "section id bytes",
                limit: SECTION_ID_BYTES_MAX as u64,
                actual: id_length.into(),
            });
        }
        let id_offset = cursor.offset();
        let id = cursor.take(id_length.into(), "section id")?;
        let id = std::str::from_utf8(id)
            .map_err(|_| Error::corrupted(id_offset, Corruption::SectionIdNotUtf8))?;
        if entries.iter().any(|entry| entry.id == id) {
            let reason = Corruption::DuplicateSectionId { id: id.to_owned() };
            return Err(Error::corrupted(id_offset, reason));
        }
        let version = cursor.u16("section table entry")?;
        let length = cursor.u64("section table entry")?;
        let checksum = cursor.u32("section table entry")?;
        entries.push(TableEntry {
            id,
            version,
            length,
            checksum,
        });
    }
    Ok(entries)
}

#[cfg(test)]
mod tests;
