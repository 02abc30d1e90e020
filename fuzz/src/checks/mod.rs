//! One module per fuzz target; see the crate docs.

pub mod envelope_decode;
pub mod frame_decode;
pub mod manifest_decode;
pub mod segment_recovery;
pub mod wal_model;
