//! The `blocks` target: see `tally_pool_fuzz::blocks`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tally_pool_fuzz::blocks::run(data));
