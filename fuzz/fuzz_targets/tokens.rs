//! The `tokens` target: see `tally_pool_fuzz::tokens`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tally_pool_fuzz::tokens::run(data));
