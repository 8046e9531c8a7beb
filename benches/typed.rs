//! Criterion benchmarks of the typed layer, `Handle<Order>` from `#[derive(Pooled)]` on a
//! 64-byte order, against `Box`-style allocation on the system allocator, mimalloc and
//! jemalloc, the floor and the untyped `BlockPool` it is built on, followed by ratio tables
//! checked against the typed layer's targets (`tally_bench::targets::TYPED`).
//!
//! The workloads and the rest are those of `benches/block.rs` (criterion's groups are named
//! `Order W1 churn` and so on, apart from its; the tables go to `target/typed.json`).
//! Contenders:
//!
//! - **typed**: `acquire_with(order)`, released by dropping the handle, on a type with the
//!   derive's default `per_node = true`: one pool per NUMA node.
//! - **typed-shared**: the same on a type derived with `per_node = false` (one pool for
//!   every thread: the baseline issue 4 names). The per-node fast path must stay within
//!   5 % of the shared one on W1.
//! - **typed-acquire**: `acquire()` (a `Default` order, in a derived pool of its own, since
//!   no two contenders share a pool), then the order written through the handle.
//! - **untyped**: a `BlockPool` (`GuardLevel::Off`, the typed pool's setting): `allocate`,
//!   a write, `free`: what `typed` does without the handle, the derive's static pool and the
//!   typed pool's bookkeeping. The typed layer's overhead is `typed - untyped`.
//! - **floor**, **jemalloc**, **mimalloc**, **system**: as in `benches/block.rs`; the
//!   allocators do what `Box::new(order)` and dropping the box do.

use tally_bench::contenders::*;
use tally_bench::suite::{self, Suite};
use tally_bench::{targets, Pair, Same};
use tally_pool::block::GuardLevel;

/// The ratio tables: the typed layer against the floor, jemalloc and the untyped pool, and
/// the per-node pools against one shared pool.
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
