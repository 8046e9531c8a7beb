//! The typed layer, `Handle<Order>` of a 64-byte `#[derive(Pooled)]` order, against the
//! allocators, the floor and the untyped `BlockPool` it is built on, judged against
//! `tally_bench::targets::TYPED`; run as `benches/block.rs` is. The contenders are described
//! in the note the bench prints (`SUITE.note`).

use tally_bench::contenders::*;
use tally_bench::suite::{self, Suite};
use tally_bench::{targets, Pair, Same};
use tally_pool::block::GuardLevel;

const SUITE: Suite = Suite {
    name: "typed",
    group_prefix: "Order ",
    title: "Typed ratio table: Handle<Order> (64-byte #[derive(Pooled)] Order),",
    subject: "typed",
    columns: &[
        "typed",
        "typed-shared",
        "typed-acquire",
        "untyped",
        "floor",
        "jemalloc",
        "mimalloc",
        "system",
    ],
    targets: targets::TYPED,
    note: "(typed: acquire_with(Order { .. }), a pool per NUMA node; typed-shared: the same \
           with per_node = false, one shared pool; typed-acquire: acquire(), then the order \
           written through the handle; untyped: BlockPool GuardLevel::Off allocate + write + \
           free; floor is a per-thread free list, not a thread-safe pool: its W3/W4 numbers \
           are not like-for-like; see the notes at the top of benches/typed.rs.)",
};

fn main() {
    // `Typed::new` creates the derived pools now, not in a measurement.
    suite::run(
        &SUITE,
        &[
            ("typed", Pair::of(Same, Typed::<TypedOrder>::new())),
            (
                "typed-shared",
                Pair::of(Same, Typed::<TypedOrderShared>::new()),
            ),
            (
                "untyped",
                Pair::of(Same, TallyBlock::new("untyped", GuardLevel::Off)),
            ),
            (
                "typed-acquire",
                Pair::of(Same, TypedAcquire::<AcquiredOrder>::new()),
            ),
            ("floor", Pair::of(Same, Floor)),
            ("jemalloc", Pair::of(Same, JEMALLOC)),
            ("mimalloc", Pair::of(Same, MIMALLOC)),
            ("system", Pair::of(Same, SYSTEM)),
        ],
    );
}
