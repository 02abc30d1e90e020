//! The checks behind logbook's fuzz targets.
//!
//! Each module of [`checks`] is one target's whole logic, a `check(data: &[u8])` that panics
//! only on a real bug. The targets in `fuzz_targets/` are one-line wrappers, and the workspace
//! test `tests/tests/fuzz_corpus_replay.rs` includes the same files with `#[path]` to replay the
//! committed corpora and reproducers under a plain `cargo test`, without libFuzzer. So a module
//! here uses only `std`, `arbitrary`, `logbook-wal` and `logbook-projection`, and never `super`.
#![forbid(unsafe_code)]

pub mod checks;
