//! The `report` target: see `tally_pool_fuzz::report`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tally_pool_fuzz::report::run(data));
