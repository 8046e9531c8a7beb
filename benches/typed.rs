//! The typed layer, `Handle<Order>` of a 64-byte `#[derive(Pooled)]` order, against the
//! allocators, the floor and the untyped `BlockPool` it is built on, judged against
//! `tally_bench::targets::TYPED`; run as `benches/block.rs` is (groups `Order W1 churn` and so
//! on, tables in `target/typed.json`). Contenders:
//!
//! - **typed**: `acquire_with(order)`, released by dropping the handle, one pool per NUMA node
//!   (the derive's default); **typed-shared**: the same with `per_node = false`, which the
//!   per-node fast path must stay within 5 % of on W1; **typed-acquire**: `acquire()`, then
//!   the order written through the handle (a pool of its own: no two contenders share one).
//! - **untyped**: a `BlockPool` (`GuardLevel::Off`): `allocate`, a write, `free`; the typed
//!   layer's overhead is `typed - untyped`.
//! - **floor**, **jemalloc**, **mimalloc**, **system**: as in `benches/block.rs`.

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
