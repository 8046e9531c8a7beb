//! The benchmark harness of tally-pool: what `benches/*.rs` share, so that each of them is a
//! short list of what it runs. Contenders ([`contenders`], called through [`contender`]'s
//! adapters under both inlinings), workloads W1–W6 ([`workload`]), the [`timer`],
//! statistics ([`stats`]), the targets, judged in one place ([`targets`]), the block and
//! typed ratio tables ([`suite`]) and their comparison with a saved run ([`baseline`]), the
//! peers comparison ([`survey`]) and its serde_json output ([`results`]), which
//! `benches/report.py` turns into `BENCHMARKS.md`; the global-allocator workloads
//! ([`alloc_workloads`]) and what `/proc` says of a bench's process ([`process`]).

// Contenders hold foreign pools and allocators, most without `Debug`.
#![allow(missing_debug_implementations)]

pub mod alloc_workloads;
pub mod baseline;
pub mod contender;
pub mod order;
pub mod process;
pub mod results;
pub mod stats;
pub mod suite;
pub mod survey;
pub mod targets;
pub mod timer;
pub mod workload;

/// Every contender: tally-pool itself, the floor, general-purpose allocators and the pool
/// and slab crates users would pick instead.
pub mod contenders {
    mod floor;
    mod global;
    mod peers;
    mod tally;

    pub use floor::Floor;
    pub use global::{Block, Global, SystemBox, JEMALLOC, MIMALLOC, SYSTEM};
    pub use peers::*;
    pub use tally::*;
}

pub use contender::{Contender, Forced, Inlining, Pair, Plain, Remote, Runs, With};
pub use order::{fatal, OrDie, Order, Same, Spread, Stamp};
pub use workload::{Mode, Workload};
