//! Side-by-side benchmarks of tally-pool against the pools and allocators users would pick
//! instead, on a 64-byte `Order`: `tally_bench::survey` runs W1–W4 under both inlinings
//! (criterion, then the interleaved pass whose medians are published), then W5 memory and W6
//! tail latency with each peer in a fresh process, judges the targets and writes
//! `target/peers.json` (`TALLY_PEERS_JSON=path`: elsewhere), which `python3 benches/report.py`
//! turns into `BENCHMARKS.md` and `docs/peers.svg`.
//!
//! Each peer is called the way its documentation shows; where its API cannot express a
//! workload, the cell is "n/a" with the reason. `TALLY_BENCH_QUICK=1` or `-- --quick`: 5
//! rounds, 200,000 objects in W5 and W6 (indicative only); `--test` or no `--bench`: one tiny
//! pass, no file written.

use core::cell::RefCell;

use tally_bench::contenders::lockfree_object_pool::{LinearObjectPool, SpinLockObjectPool};
use tally_bench::contenders::*;
use tally_bench::survey::{self, Peer, WORKLOAD_CAPACITY};
use tally_bench::targets::kind;
use tally_bench::{Contender, Forced, Order, Pair, Plain, Runs, Spread, With};

/// A fresh order, for the pools that make their own.
fn new() -> Order {
    Order::default()
}

/// `contender`, built.
fn ok<C: Contender>(contender: C) -> Result<Pair, &'static str>
where
    With<C, Forced, Spread>: Runs,
    With<C, Plain, Spread>: Runs,
{
    Ok(Pair::of(Spread, contender))
}

/// Every peer, in the report's order; `build` gets how many values to pre-allocate (0: the
/// peer's smallest start).
const PEERS: &[Peer] = &[
    Peer {
        label: "tally-pool",
        kind: kind::TALLY,
        krate: "tally-pool",
        api: "#[derive(Pooled)]: acquire_with, Handle released on drop",
        build: |capacity| match capacity {
            WORKLOAD_CAPACITY => ok(Typed::<PeersOrder>::new()),
            0 => ok(Typed::<GrowingOrder>::new()),
            _ => ok(Typed::<PreallocatedOrder>::new()),
        },
    },
    Peer {
        label: "floor",
        kind: kind::FLOOR,
        krate: "",
        api: "thread-local intrusive free list (not a pool; no synchronisation)",
        build: |_| ok(Floor),
    },
    Peer {
        label: "Box (system)",
        kind: kind::ALLOCATOR,
        krate: "",
        api: "Box::new / drop with the system allocator (glibc malloc)",
        build: |_| ok(SystemBox),
    },
    Peer {
        label: "mimalloc",
        kind: kind::ALLOCATOR,
        krate: "mimalloc",
        api: "GlobalAlloc::alloc / dealloc on MiMalloc",
        build: |_| ok(MIMALLOC),
    },
    Peer {
        label: "jemalloc",
        kind: kind::ALLOCATOR,
        krate: "tikv-jemallocator",
        api: "GlobalAlloc::alloc / dealloc on Jemalloc",
        build: |_| ok(JEMALLOC),
    },
    Peer {
        label: "sharded-slab Pool",
        kind: kind::POOL,
        krate: "sharded-slab",
        api: "Pool::create_with -> key, get, clear",
        build: |_| ok(ShardedPool(sharded_slab::Pool::new())),
    },
    Peer {
        label: "sharded-slab Slab",
        kind: kind::POOL,
        krate: "sharded-slab",
        api: "Slab::insert -> key, take",
        build: |_| ok(ShardedSlab(sharded_slab::Slab::new())),
    },
    Peer {
        label: "lockfree-object-pool Linear",
        kind: kind::POOL,
        krate: "lockfree-object-pool",
        api: "LinearObjectPool::pull, guard dropped",
        build: |_| ok(Linear(leak(LinearObjectPool::new(new, reset)))),
    },
    Peer {
        label: "lockfree-object-pool SpinLock",
        kind: kind::POOL,
        krate: "lockfree-object-pool",
        api: "SpinLockObjectPool::pull, guard dropped",
        build: |_| ok(SpinLock(leak(SpinLockObjectPool::new(new, reset)))),
    },
    Peer {
        label: "object-pool",
        kind: kind::POOL,
        krate: "object-pool",
        api: "Pool::pull(Order::default), guard dropped (the guard holds the value)",
        build: |capacity| ok(ObjectPool(leak(object_pool::Pool::new(capacity, new)))),
    },
    Peer {
        label: "opool",
        kind: kind::POOL,
        krate: "opool",
        api: "concurrent Pool::get, guard dropped (the guard holds the value)",
        build: |capacity| {
            let pool = match capacity {
                // Values beyond the queue's size are dropped on release, not kept.
                0 => opool::Pool::new(1024, OrderAllocator),
                _ => opool::Pool::new_prefilled(capacity, OrderAllocator),
            };
            ok(Opool(leak(pool)))
        },
    },
    Peer {
        label: "nexus-pool sync",
        kind: kind::POOL,
        krate: "nexus-pool",
        api: "sync::Pool::try_acquire, guard dropped on any thread (one acquiring thread; the \
              guard holds the value)",
        build: |capacity| match capacity {
            0 => Err("fixed capacity: sync::Pool cannot grow"),
            _ => ok(NexusSync(nexus_pool::sync::Pool::new(capacity, new, reset))),
        },
    },
    Peer {
        label: "nexus-pool local",
        kind: kind::LOCAL,
        krate: "nexus-pool",
        api: "local::Pool::acquire, guard dropped (the guard holds the value)",
        build: |capacity| {
            let pool = match capacity {
                0 => nexus_pool::local::Pool::new(new, reset),
                _ => nexus_pool::local::Pool::with_capacity(capacity, new, reset),
            };
            ok(NexusLocal(pool))
        },
    },
    Peer {
        label: "slab",
        kind: kind::LOCAL,
        krate: "slab",
        api: "Slab::insert -> key, try_remove (in a RefCell)",
        build: |capacity| ok(Slab(RefCell::new(slab::Slab::with_capacity(capacity)))),
    },
    Peer {
        label: "nexus-slab",
        kind: kind::LOCAL,
        krate: "nexus-slab",
        api: "bounded::Slab::try_alloc / free (unbounded::Slab, chunks of 256, when growing)",
        build: |capacity| match capacity {
            // SAFETY: nexus-slab's contract: every slot is freed to this slab, on the thread
            // that made it (slots are `!Send`), and the slab is never shared: it is not
            // `Sync`, and the peer runs W1, W2, W5 and W6 only, on the thread that built it.
            0 => ok(NexusUnbounded(unsafe {
                nexus_slab::unbounded::Slab::with_chunk_capacity(256)
            })),
            // SAFETY: as above.
            _ => ok(NexusBounded(unsafe {
                nexus_slab::bounded::Slab::with_capacity(capacity)
            })),
        },
    },
];

fn main() {
    survey::run(PEERS);
}
