//! loom models of the lock-free parts: the depot's stacks, cross-thread free, two racing
//! frees of one block under a guard, thread-exit flush, a fresh range returned while
//! another thread carves, reclaim racing a free, a flush request racing the owner's
//! reopening of its cache, a flush request for one idle cache racing its owner, and a
//! statistics snapshot racing the owner's fast and slow paths. Run with
//! `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test -p tally-pool --release --lib loom`.
//!
//! loom drops thread-locals outside its model of the thread, so the models end each
//! thread with `retire_current`, the function the thread-exit destructor calls; the
//! destructor itself is exercised by the std-thread tests in `tests/block_threads.rs`.
//!
//! Under loom a magazine holds 2 blocks and a thread cache 4, so every slow path (depot
//! trade, carve) happens within a handful of operations.

use core::alloc::Layout;
use core::ptr::NonNull;
use std::collections::HashSet;

use loom::thread;

use super::api::BlockPool;
use super::cache::{retire_current, with_cache};
use super::config::{BlockPoolConfig, GuardLevel};
use super::depot::Depot;
use crate::error::{CorruptionKind, PoolError};

fn pool(max: usize, guard: GuardLevel) -> BlockPool {
    BlockPool::new(
        BlockPoolConfig::new(Layout::new::<u64>())
            .max_capacity(max)
            .guard(guard)
            .prefault(false),
    )
    .unwrap()
}

/// Raw block addresses cross loom threads as integers.
fn addr(p: NonNull<u8>) -> usize {
    p.as_ptr() as usize
}

fn ptr(a: usize) -> NonNull<u8> {
    NonNull::new(a as *mut u8).unwrap()
}

/// Frees a block the caller owns: allocated from `pool` (on any model thread, which handed
/// it over) and not freed since.
fn free(pool: &BlockPool, block: NonNull<u8>) {
    // SAFETY: every model frees each block it allocated exactly once, and only those.
    unsafe { pool.free(block) }.unwrap();
}

#[test]
fn depot_pops_each_magazine_once_under_contention() {
    loom::model(|| {
        let depot = loom::sync::Arc::new(Depot::new());
        let ids: Vec<u32> = (0..3).map(|_| depot.new_magazine().unwrap()).collect();
        for &i in &ids {
            depot.push_full(i);
        }
        // Two threads each pop one magazine and push it back (the ABA pattern: A is popped,
        // B popped, A pushed back while another pop is between its load and its CAS).
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let depot = depot.clone();
                thread::spawn(move || {
                    let a = depot.pop_full();
                    let b = depot.pop_full();
                    if let Some(a) = a {
                        depot.push_full(a);
                    }
                    b
                })
            })
            .collect();
        let mut kept: Vec<u32> = handles
            .into_iter()
            .filter_map(|h| h.join().unwrap())
            .collect();
        while let Some(i) = depot.pop_full() {
            kept.push(i);
        }
        kept.sort_unstable();
        assert_eq!(kept, ids, "every magazine exactly once");
    });
}

#[test]
fn free_on_one_thread_races_allocate_on_another() {
    loom::model(|| {
        let pool = pool(3, GuardLevel::Canary);
        let a = addr(pool.allocate().unwrap());
        let b = addr(pool.allocate().unwrap());
        let remote = pool.clone();
        let t = thread::spawn(move || {
            free(&remote, ptr(a));
            retire_current(&remote.shared);
        });
        let c = addr(pool.allocate().unwrap());
        t.join().unwrap();
        assert!(c != b, "a live block was handed out again");
        free(&pool, ptr(b));
        free(&pool, ptr(c));
        assert_eq!(pool.stats().live_blocks, 0);
        // Every block is reusable: the cap's worth can be allocated again, all distinct.
        let again: HashSet<usize> = (0..3).map(|_| addr(pool.allocate().unwrap())).collect();
        assert_eq!(again.len(), 3);
    });
}

/// Two threads free one block at once, under `guard`: the canary's compare-and-swap lets
/// exactly one free through and tells the other it is a double free, so the block goes
/// back into circulation once.
fn racing_frees_of_one_block_let_exactly_one_through(guard: GuardLevel) {
    loom::model(move || {
        let pool = pool(3, guard);
        let block = addr(pool.allocate().unwrap());
        let remote = pool.clone();
        let t = thread::spawn(move || {
            // SAFETY: the block is this pool's; whichever free comes second frees a block
            // nobody holds while no thread allocates, which a guard refuses (`free`'s
            // contract).
            let freed = unsafe { remote.free(ptr(block)) };
            retire_current(&remote.shared);
            freed
        });
        // SAFETY: as above.
        let mine = unsafe { pool.free(ptr(block)) };
        let theirs = t.join().unwrap();
        let results = [mine, theirs];
        let through = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(through, 1, "both frees or none passed: {results:?}");
        assert!(
            results.iter().any(|r| matches!(
                r,
                Err(PoolError::Corruption {
                    kind: CorruptionKind::DoubleFree,
                    ..
                })
            )),
            "{results:?}"
        );
        let s = pool.stats();
        assert_eq!((s.frees, s.live_blocks), (1, 0), "{s:?}");
        // The block circulates once: the cap's worth allocates again, all distinct.
        let again: HashSet<usize> = (0..3).map(|_| addr(pool.allocate().unwrap())).collect();
        assert_eq!(again.len(), 3);
    });
}

#[test]
fn racing_frees_of_one_block_under_canary() {
    racing_frees_of_one_block_let_exactly_one_through(GuardLevel::Canary);
}

#[test]
fn racing_frees_of_one_block_under_full() {
    racing_frees_of_one_block_let_exactly_one_through(GuardLevel::Full);
}

#[test]
fn thread_exit_flushes_its_cache() {
    loom::model(|| {
        let pool = pool(3, GuardLevel::Off);
        let worker = pool.clone();
        let t = thread::spawn(move || {
            let blocks: Vec<_> = (0..3).map(|_| worker.allocate().unwrap()).collect();
            for b in blocks {
                free(&worker, b);
            }
            // The three free blocks sit in this thread's cache until it exits.
            retire_current(&worker.shared);
        });
        t.join().unwrap();
        let got: HashSet<usize> = (0..3).map(|_| addr(pool.allocate().unwrap())).collect();
        assert_eq!(got.len(), 3, "blocks cached by an exited thread were lost");
    });
}

#[test]
fn a_fresh_range_comes_back_whole_while_another_thread_carves() {
    loom::model(|| {
        // A cap of 256 makes ranges of 4 blocks, taken 2 at a time: the worker exits with
        // half its range unused, returned to its chunk or, if this thread carved after
        // it, to the depot.
        let pool = pool(256, GuardLevel::Off);
        let worker = pool.clone();
        let t = thread::spawn(move || {
            let b = worker.allocate().unwrap();
            free(&worker, b);
            retire_current(&worker.shared);
        });
        let mine: Vec<usize> = (0..3).map(|_| addr(pool.allocate().unwrap())).collect();
        assert_eq!(mine.iter().collect::<HashSet<_>>().len(), 3);
        t.join().unwrap();
        for &m in &mine {
            free(&pool, ptr(m));
        }
        // Every carved block is free: in the depot, or in this thread's cache and range,
        // which reclaim flushes first. A lost range would keep the chunk.
        assert!(pool.reclaim() > 0);
        let stats = pool.stats();
        assert_eq!((stats.chunks, stats.live_blocks), (0, 0), "{stats:?}");
    });
}

#[test]
fn reclaim_races_a_free() {
    loom::model(|| {
        let pool = pool(4, GuardLevel::Off);
        let blocks: Vec<usize> = (0..4).map(|_| addr(pool.allocate().unwrap())).collect();
        let remote = pool.clone();
        let last = blocks[3];
        let t = thread::spawn(move || {
            free(&remote, ptr(last));
            retire_current(&remote.shared);
        });
        for &b in &blocks[..3] {
            free(&pool, ptr(b));
        }
        let first = pool.reclaim();
        t.join().unwrap();
        // The worker has exited, so its cached block is back in the depot now.
        let second = pool.reclaim();
        assert!(first + second > 0, "the chunk was never reclaimed");
        assert_eq!(pool.stats().chunks, 0);
        // The pool still works and hands out distinct blocks after reclaim.
        let again: HashSet<usize> = (0..4).map(|_| addr(pool.allocate().unwrap())).collect();
        assert_eq!(again.len(), 4);
    });
}

#[test]
fn a_flush_request_racing_the_owner_is_never_lost() {
    loom::model(|| {
        let pool = pool(8, GuardLevel::Off);
        let a = pool.allocate().unwrap();
        free(&pool, a);
        let requester = pool.clone();
        // `reclaim` asks every thread to flush: it bumps the epoch and closes the caches,
        // racing this thread's own slow paths, which reopen its cache.
        let t = thread::spawn(move || {
            requester.reclaim();
        });
        let b = pool.allocate().unwrap();
        let c = pool.allocate().unwrap();
        free(&pool, b);
        free(&pool, c);
        t.join().unwrap();
        // The request happened before this call, so this call (or one before it) flushed:
        // the cache has caught up with the pool's epoch.
        let d = pool.allocate().unwrap();
        free(&pool, d);
        let synced = with_cache(&pool.shared, |_, blocks| {
            blocks.stamp == pool.shared.stamp()
        });
        assert_eq!(synced, Some(true), "a flush request was lost");
        retire_current(&pool.shared);
    });
}

#[test]
fn a_flush_request_for_one_cache_racing_its_owner_is_never_lost() {
    loom::model(|| {
        // A cap of 8: a cache limit of 2. The owner's cache holds both blocks below for the
        // whole race (a pop and a push keep it at 1 or 2), so the request always finds it
        // holding blocks and asks it.
        let pool = pool(8, GuardLevel::Off);
        let a = pool.allocate().unwrap();
        let b = pool.allocate().unwrap();
        free(&pool, a);
        free(&pool, b);
        let requester = pool.clone();
        // What the pressure monitor does at `Moderate` with an idle time the owner has
        // certainly exceeded: set the request, close the cache, racing the owner's own
        // slow paths, which reopen it.
        let t = thread::spawn(move || {
            let asked = requester.shared.caches.request_flush_idle(u64::MAX);
            assert_eq!(asked, 1);
        });
        let c = pool.allocate().unwrap();
        free(&pool, c);
        t.join().unwrap();
        // The request happened before this call, so this call (or one before it) took it
        // and flushed: none is left pending on an open cache.
        let d = pool.allocate().unwrap();
        free(&pool, d);
        let pending = with_cache(&pool.shared, |cache, _| cache.take_flush_request());
        assert_eq!(pending, Some(false), "a flush request was lost");
        let s = pool.stats();
        assert_eq!((s.allocations, s.frees, s.live_blocks), (4, 4, 0), "{s:?}");
        retire_current(&pool.shared);
    });
}

#[test]
fn a_snapshot_never_mixes_counts_from_before_and_after_a_slow_path() {
    loom::model(|| {
        // A cap of 8 gives a cache limit of 2 and a batch of 1: both allocations below are
        // slow paths that refill one block, the frees are fast pushes (counted by the
        // cached-block count alone), and the thread's exit flushes in a slow path that
        // settles those two pushes into the counters.
        let pool = pool(8, GuardLevel::Off);
        let owner = pool.clone();
        let t = thread::spawn(move || {
            let a = owner.allocate().unwrap();
            let b = owner.allocate().unwrap();
            free(&owner, a);
            free(&owner, b);
            retire_current(&owner.shared);
        });
        // Every state the owner passes through has at most 2 allocations, and frees of
        // blocks allocated before them: a torn read would count a push twice (or not at
        // all) and break one of these.
        let s = pool.stats();
        assert!(s.allocations <= 2, "{s:?}");
        assert!(s.frees <= s.allocations, "{s:?}");
        t.join().unwrap();
        let s = pool.stats();
        assert_eq!((s.allocations, s.frees, s.live_blocks), (2, 2, 0), "{s:?}");
    });
}
