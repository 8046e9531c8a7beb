//! The `#[derive(Pooled)]` macro of tally-pool.
//!
//! This crate is an implementation detail of `tally-pool`: depend on `tally-pool` and use
//! the derive through it.
