#![doc = include_str!("../../README.md")]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing))]

extern crate self as tally_pool;

pub mod block;
mod error;
mod os;
mod sync;

pub use error::{CorruptionKind, PoolError};
