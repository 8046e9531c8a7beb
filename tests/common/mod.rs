//! Helpers the integration tests share, one concern a file. Each test that needs them
//! declares `mod common;`; Cargo builds `tests/common/mod.rs` as a module of those tests,
//! not as a test of its own.

// Every test binary compiles the whole module and uses only part of it: what one binary
// leaves unused, another uses.
#![allow(dead_code)]

pub(crate) mod block;
pub(crate) mod drops;
pub(crate) mod errors;
pub(crate) mod global;
pub(crate) mod guards;
pub(crate) mod live_set;
pub(crate) mod pressure;
pub(crate) mod rng;
pub(crate) mod skip;
pub(crate) mod smaps;
pub(crate) mod stamp;
pub(crate) mod stats;
pub(crate) mod threads;
pub(crate) mod typed;
