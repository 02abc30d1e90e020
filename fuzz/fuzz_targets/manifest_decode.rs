#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| logbook_fuzz::checks::manifest_decode::check(data));
