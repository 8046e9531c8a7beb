//! Criterion benchmarks of `tally_pool::block::BlockPool` on 64-byte blocks against the
//! system allocator, mimalloc, jemalloc and a hand-written thread-local free list (the
//! "floor"), followed by ratio tables checked against the ratios in `DESIGN.md`.
//!
//! The workloads W1–W4 are `tally_bench::workload`'s; every contender runs every workload
//! in one process, once with its adapter forced inline and once with a plain `#[inline]`
//! one. The contenders are `tally_bench::contenders`':
//!
//! - **tally**: a `BlockPool` (`GuardLevel::Off`, 200,000 blocks pre-faulted): `allocate`,
//!   a write of the block, `free`. **tally-canary**: the same with `GuardLevel::Canary`.
//! - **jemalloc**, **mimalloc**, **system**: called through `GlobalAlloc::alloc`/`dealloc`
//!   with the block's layout, not installed as the global allocator.
//! - **floor**: not a thread-safe pool but a per-thread intrusive stack; its W3/W4 numbers
//!   are not like-for-like (no per-block synchronisation at all).
//!
//! Every block holds the iteration's number in all eight words (`tally_bench::Same`).
//! After criterion's groups come the ratio tables (`tally_bench::suite`: 11 samples per
//! workload and contender, interleaved, median ns per object), also written to
//! `target/block.json`. `TALLY_BENCH_QUICK=1`, `--test` or `cargo test --benches` select a
//! quick run; `TALLY_BENCH_WORKLOADS=W1,W3` limits the ratio pass to those workloads, and a
//! criterion filter that matches nothing (`-- none`) skips criterion's groups.

use tally_bench::contenders::*;
use tally_bench::suite::{self, Suite};
use tally_bench::{targets, Pair, Same};
use tally_pool::block::GuardLevel;

/// The ratio tables: DESIGN.md's ratios of `tally` to the floor and to jemalloc.
const SUITE: Suite = Suite {
    name: "block",
    group_prefix: "",
    title: "Ratio table:",
    subject: "tally",
    columns: &[
        "tally",
        "floor",
        "jemalloc",
        "mimalloc",
        "system",
        "tally-canary",
    ],
    targets: targets::DESIGN,
    note: "(floor is a per-thread free list, not a thread-safe pool: its W3/W4 numbers are \
           not like-for-like; see the notes at the top of benches/block.rs.)",
};

fn main() {
    let block = |label, guard| Pair::of(Same, TallyBlock::new(label, guard));
    suite::run(
        &SUITE,
        &[
            ("floor", Pair::of(Same, Floor)),
            ("tally", block("tally", GuardLevel::Off)),
            ("tally-canary", block("tally-canary", GuardLevel::Canary)),
            ("jemalloc", Pair::of(Same, JEMALLOC)),
            ("mimalloc", Pair::of(Same, MIMALLOC)),
            ("system", Pair::of(Same, SYSTEM)),
        ],
    );
}
