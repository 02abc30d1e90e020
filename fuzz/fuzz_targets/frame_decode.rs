#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| logbook_fuzz::checks::frame_decode::check(data));
