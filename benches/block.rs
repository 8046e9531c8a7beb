//! `tally_pool::block::BlockPool` on 64-byte blocks (**tally**: `GuardLevel::Off`, 200,000
//! blocks pre-faulted, `allocate`, a write, `free`; **tally-canary**: `GuardLevel::Canary`)
//! against jemalloc, mimalloc and the system allocator (through `GlobalAlloc`) and the floor,
//! under criterion and then in ratio tables judged against `DESIGN.md`'s ratios
//! (`tally_bench::suite`, which also lists the environment variables), written to
//! `target/block.json`.

use tally_bench::contenders::*;
use tally_bench::suite::{self, Suite};
use tally_bench::{targets, Pair, Same};
use tally_pool::block::GuardLevel;

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
