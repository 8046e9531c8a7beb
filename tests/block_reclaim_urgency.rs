//! Reclamation by urgency and growth ahead of demand, as the pressure monitor drives them
//! through `stats::Source`, without the monitor: a pool's reserve survives a `Critical`
//! reclaim (block and typed pools, on two synthetic nodes) and is validated; `High`
//! reaches idle pools and leaves busy ones; `Moderate` asks an idle thread's cache, which
//! flushes on that thread's next call and not before; `grow_ahead` maps every chunk a
//! growing pool needs, so its acquiring thread maps none; the memory classes still
//! partition what is mapped after each urgency.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use core::alloc::Layout;
use core::ptr::NonNull;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use tally_pool::block::{BlockPool, BlockPoolConfig, GuardLevel, CHUNK_SIZE};
use tally_pool::numa::{with_node_override, Topology};
use tally_pool::stats::{Source, Urgency};
use tally_pool::{Pool, PoolConfig, PoolError};

type Value = [u64; 8];
const VALUE_BYTES: u64 = 64;

fn config(name: &str) -> BlockPoolConfig {
    BlockPoolConfig::new(Layout::new::<Value>())
        .name(name)
        .capacity(0)
        .guard(GuardLevel::Off)
}

/// Blocks in one chunk of the pools of [`config`].
fn per_chunk() -> usize {
    let probe = BlockPool::new(config("per-chunk").capacity(1)).unwrap();
    probe.stats().capacity
}

/// Frees a block allocated from `pool` and not freed since.
fn free(pool: &BlockPool, block: NonNull<u8>) {
    // SAFETY: every caller frees each block it allocated exactly once.
    unsafe { pool.free(block) }.unwrap();
}

/// Allocates `n` blocks and frees them all on a thread that then exits, so that every
/// block ends in the depot (the exiting thread's cache flushes).
fn churn(pool: &BlockPool, n: usize) {
    thread::scope(|s| {
        s.spawn(|| {
            let blocks: Vec<NonNull<u8>> = (0..n).map(|_| pool.allocate().unwrap()).collect();
            for b in blocks {
                free(pool, b);
            }
        })
        .join()
        .unwrap();
    });
}

/// Checks that `pool`'s memory classes cover exactly the blocks of its chunks in use.
#[track_caller]
fn assert_partition(pool: &BlockPool, what: &str) {
    let snap = Source::snapshot(pool);
    let s = pool.stats();
    let blocks = snap.live_bytes + snap.cached_bytes + snap.free_bytes + snap.fresh_bytes;
    assert_eq!(blocks, s.capacity as u64 * VALUE_BYTES, "{what}: {snap:?}");
    assert_eq!(snap.live_objects, s.live_blocks, "{what}");
    assert!(
        snap.mapped_bytes() >= s.bytes_mapped as u64,
        "{what}: {snap:?} {s:?}"
    );
    assert_eq!(snap.released_bytes, s.reclaimed_bytes, "{what}");
}

#[test]
#[cfg_attr(miri, ignore = "maps several chunks")]
fn the_reserve_survives_a_critical_reclaim() {
    let bpc = per_chunk();
    let pool = BlockPool::new(config("reserve-kept").reserve(2 * bpc)).unwrap();
    churn(&pool, 5 * bpc);
    let before = pool.stats();
    assert_eq!(before.chunks, 5, "{before:?}");
    let released = pool.reclaim_idle(Urgency::Critical, Duration::ZERO);
    let after = pool.stats();
    assert_eq!(after.chunks, 2, "the reserve's chunks stay: {after:?}");
    assert_eq!(after.bytes_mapped, 2 * CHUNK_SIZE);
    assert_eq!(
        after.reclaimed_bytes - before.reclaimed_bytes,
        released as u64
    );
    assert!(released >= 3 * (CHUNK_SIZE - 64 * 1024), "{released}");
    // Nothing more goes at any urgency.
    for urgency in [Urgency::Low, Urgency::High, Urgency::Critical] {
        assert_eq!(pool.reclaim_idle(urgency, Duration::ZERO), 0, "{urgency:?}");
    }
    assert_eq!(pool.stats().chunks, 2);
    // The reserve serves a burst without growing.
    let burst: Vec<NonNull<u8>> = (0..2 * bpc).map(|_| pool.allocate().unwrap()).collect();
    assert_eq!(pool.stats().expansions, before.expansions, "no growth");
    for b in burst {
        free(&pool, b);
    }
    // An explicit reclaim gives back the reserve too.
    assert!(pool.reclaim() > 0);
    assert_eq!(pool.stats().chunks, 0);
}

#[test]
#[cfg_attr(miri, ignore = "maps several chunks")]
fn a_typed_pool_keeps_its_reserve_on_every_node() {
    let bpc = per_chunk();
    let pool: &'static Pool<Value> = Pool::new(
        PoolConfig::new("typed-reserve-kept")
            .capacity(16)
            .reserve(bpc)
            .topology(Topology::synthetic(2, 1).unwrap()),
    )
    .unwrap();
    // Three chunks' worth on each node, all released on a thread that exits.
    thread::scope(|s| {
        s.spawn(|| {
            let held: Vec<_> = (0..6 * bpc)
                .map(|i| with_node_override(i as u32 % 2, || pool.acquire_with([i as u64; 8])))
                .collect::<Result<_, _>>()
                .unwrap();
            drop(held);
        })
        .join()
        .unwrap();
    });
    let grown: Vec<usize> = pool.node_stats().iter().map(|n| n.blocks.chunks).collect();
    assert!(grown.iter().all(|&c| c >= 3), "{grown:?}");
    let released = Source::reclaim_idle(pool, Urgency::Critical, Duration::ZERO);
    assert!(released > 0);
    let kept: Vec<usize> = pool.node_stats().iter().map(|n| n.blocks.chunks).collect();
    assert_eq!(kept, vec![1, 1], "one chunk holds each node's reserve");
    assert_eq!(pool.stats().live_blocks, 0);
}

#[test]
fn a_reserve_above_the_cap_is_refused() {
    let block = BlockPool::new(config("reserve-too-big").max_capacity(10).reserve(11));
    match block {
        Err(PoolError::InvalidConfig { pool, reason }) => {
            assert_eq!(pool, "reserve-too-big");
            assert!(reason.contains("`reserve` (11)"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    let typed = Pool::<u64>::new(
        PoolConfig::new("typed-reserve-too-big")
            .capacity(10)
            .max_capacity(100)
            .reserve(101),
    );
    match typed {
        Err(PoolError::InvalidConfig { reason, .. }) => {
            assert!(reason.contains("`reserve` (101)"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    // At the cap is fine.
    assert!(BlockPool::new(config("reserve-at-cap").max_capacity(10).reserve(10)).is_ok());
}

#[test]
#[cfg_attr(miri, ignore = "sleeps past an idle time")]
fn high_reaches_idle_pools_and_leaves_busy_ones() {
    let bpc = per_chunk();
    let idle = BlockPool::new(config("high-idle")).unwrap();
    let busy = BlockPool::new(config("high-busy")).unwrap();
    churn(&idle, 3 * bpc);
    churn(&busy, 3 * bpc);
    // Long enough that `busy`'s churn below and both calls that follow it end within it
    // however slow the build (a sanitizer's) and busy the machine.
    let idle_after = Duration::from_secs(3);
    thread::sleep(idle_after + Duration::from_millis(300));
    // Both are idle now: each estimates what High would give back (and reading the clock,
    // as the monitor's every tick does, advances the time the slow paths record).
    assert!(idle.reclaimable(Urgency::High, idle_after) > 0);
    assert!(busy.reclaimable(Urgency::High, idle_after) > 0);
    // `busy` goes through slow paths again: trades with its depot.
    churn(&busy, 200);
    assert_eq!(busy.reclaimable(Urgency::High, idle_after), 0);
    // Asked at once, before `idle_after` can pass again (under a sanitizer, reclaiming the
    // idle pool first took longer than that).
    let from_busy = busy.reclaim_idle(Urgency::High, idle_after);

    let from_idle = idle.reclaim_idle(Urgency::High, idle_after);
    assert!(from_idle > 0);
    assert_eq!(
        idle.stats().chunks,
        0,
        "an idle pool gives back every free chunk"
    );
    assert_eq!(from_busy, 0, "a busy pool keeps its chunks under High");
    assert_eq!(busy.stats().chunks, 3);
    // Critical reaches busy pools too.
    assert!(busy.reclaim_idle(Urgency::Critical, idle_after) > 0);
    assert_eq!(busy.stats().chunks, 0);
    assert_partition(&idle, "idle, after High");
    assert_partition(&busy, "busy, after Critical");
}

#[test]
#[cfg_attr(miri, ignore = "sleeps past an idle time")]
fn moderate_asks_an_idle_cache_which_flushes_on_its_next_call() {
    let pool = BlockPool::new(config("moderate-idle-cache")).unwrap();
    let block_bytes = pool.block_size() as u64;
    let pool = &pool;
    thread::scope(|s| {
        // Made inside the scope, so that a failing check drops `go_tx` and frees the
        // worker before the scope joins it.
        let (ready_tx, ready_rx) = mpsc::channel::<()>();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let worker = s.spawn(move || {
            let keep = pool.allocate().unwrap();
            let blocks: Vec<NonNull<u8>> = (0..40).map(|_| pool.allocate().unwrap()).collect();
            for b in blocks {
                free(pool, b);
            }
            // Idle now, its cache holding blocks.
            ready_tx.send(()).unwrap();
            go_rx.recv().unwrap();
            // One free: on a cache asked to flush, it takes the slow path and flushes.
            free(pool, keep);
            ready_tx.send(()).unwrap();
            go_rx.recv().unwrap();
        });
        ready_rx.recv().unwrap();
        let idle_after = Duration::from_millis(200);
        thread::sleep(idle_after + Duration::from_millis(200));
        let cached = Source::snapshot(pool).cached_bytes;
        assert!(cached >= 40 * block_bytes, "{cached}");
        pool.reclaim_idle(Urgency::Moderate, idle_after);
        // Nothing is taken from a cache while its owner may run: the blocks wait for it.
        assert_eq!(Source::snapshot(pool).cached_bytes, cached);
        go_tx.send(()).unwrap();
        ready_rx.recv().unwrap();
        let after = Source::snapshot(pool);
        // The worker flushed on its next call: its cached blocks went to the depot and
        // its fresh range back to its chunk (both counted as cached while it held them),
        // and it then cached the one block it freed.
        assert_eq!(after.cached_bytes, block_bytes, "{after:?}");
        assert_eq!(after.live_objects, 0);
        assert_partition(pool, "after the flush");
        go_tx.send(()).unwrap();
        worker.join().unwrap();
    });
}

#[test]
#[cfg_attr(miri, ignore = "maps several chunks")]
fn a_busy_cache_is_not_asked_under_moderate() {
    let pool = BlockPool::new(config("moderate-busy-cache")).unwrap();
    let blocks: Vec<NonNull<u8>> = (0..40).map(|_| pool.allocate().unwrap()).collect();
    for b in blocks {
        free(&pool, b);
    }
    let cached = Source::snapshot(&pool).cached_bytes;
    assert!(cached > 0);
    // An idle time of an hour: this thread's cache is not idle, so it stays open and a
    // free goes to it on the fast path.
    pool.reclaim_idle(Urgency::Moderate, Duration::from_secs(3600));
    let b = pool.allocate().unwrap();
    free(&pool, b);
    assert_eq!(Source::snapshot(&pool).cached_bytes, cached);
}

#[test]
#[cfg_attr(miri, ignore = "maps several chunks")]
fn growth_ahead_keeps_the_acquiring_thread_from_mapping() {
    let ahead = BlockPool::new(config("grow-ahead")).unwrap();
    let control = BlockPool::new(config("grow-on-demand")).unwrap();
    let mut held = Vec::new();
    for _ in 0..100 {
        // The monitor's tick.
        ahead.grow_ahead();
        for _ in 0..1000 {
            held.push((ahead.allocate().unwrap(), control.allocate().unwrap()));
        }
    }
    let s = ahead.stats();
    let c = control.stats();
    assert!(s.chunks >= 6, "{s:?}");
    assert_eq!(
        s.expansions, s.expansions_ahead,
        "every chunk was mapped by growth ahead, none by the acquiring thread: {s:?}"
    );
    assert!(s.blocks_grown_ahead >= 100_000, "{s:?}");
    assert!(c.expansions >= 6 && c.expansions_ahead == 0, "{c:?}");
    for (a, b) in held {
        free(&ahead, a);
        free(&control, b);
    }
    assert_eq!(
        (ahead.stats().live_blocks, control.stats().live_blocks),
        (0, 0)
    );
}

#[test]
fn growth_ahead_stops_at_its_watermark() {
    let pool = BlockPool::new(config("grow-ahead-idle")).unwrap();
    assert!(pool.grow_ahead() > 0, "a new pool counts as growing");
    // Full to its watermark: nothing more until acquires drain it.
    assert_eq!(pool.grow_ahead(), 0);
}

#[test]
#[cfg_attr(miri, ignore = "maps several chunks")]
fn the_classes_partition_what_is_mapped_after_each_urgency() {
    let bpc = per_chunk();
    let pool = BlockPool::new(config("classes-by-urgency").reserve(bpc)).unwrap();
    let mut released = 0u64;
    for urgency in [
        Urgency::Low,
        Urgency::Moderate,
        Urgency::High,
        Urgency::Critical,
    ] {
        churn(&pool, 3 * bpc);
        let held: Vec<NonNull<u8>> = (0..100).map(|_| pool.allocate().unwrap()).collect();
        assert_partition(&pool, &format!("before {urgency:?}"));
        released += pool.reclaim_idle(urgency, Duration::ZERO) as u64;
        assert_partition(&pool, &format!("after {urgency:?}"));
        assert_eq!(Source::snapshot(&pool).live_objects, 100);
        for b in held {
            free(&pool, b);
        }
    }
    assert!(released > 0);
    assert_eq!(pool.stats().reclaimed_bytes, released);
    assert!(pool.stats().chunks >= 1, "the reserve stays");
}
