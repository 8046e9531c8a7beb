//! A pool whose own bookkeeping is refused memory by the global allocator reports it, and
//! loses nothing: growth returns `PoolError::OutOfMemory` (not an abort from an infallible
//! allocation), reclaim, which runs when memory is short, gives nothing back that time
//! and leaves every free block where it can be allocated again, and a thread refused room
//! for its cache of the pool uses the pool without one. The global allocator here is
//! `TallyAlloc` (see `tests/wrapped`) wrapped in one that refuses every request of a
//! thread that asks it to.
#![allow(clippy::unwrap_used, clippy::panic)]

use core::alloc::{GlobalAlloc, Layout};
use core::cell::Cell;
use core::ptr::NonNull;
use std::collections::HashSet;

use tally_pool::block::{BlockPool, BlockPoolConfig};
use tally_pool::PoolError;

mod wrapped;
use wrapped::{Inner, INNER};

thread_local! {
    /// Whether this thread's requests are refused.
    static REFUSE: Cell<bool> = const { Cell::new(false) };
    /// Requests refused on this thread.
    static REFUSED: Cell<u64> = const { Cell::new(0) };
}

/// Whether to refuse this request (counted if so).
fn refuse() -> bool {
    let refused = REFUSE.try_with(Cell::get).unwrap_or(false);
    if refused {
        let _ = REFUSED.try_with(|n| n.set(n.get() + 1));
    }
    refused
}

/// Runs `f` with this thread's requests refused; returns its result and how many were.
fn refusing<R>(f: impl FnOnce() -> R) -> (R, u64) {
    let before = REFUSED.with(Cell::get);
    REFUSE.with(|r| r.set(true));
    let result = f();
    REFUSE.with(|r| r.set(false));
    (result, REFUSED.with(Cell::get) - before)
}

struct Refusing(Inner);

// SAFETY: a request is either refused (null, which the contract allows) or passed on
// unchanged to the inner allocator, which upholds the contract; a freed block came from
// the inner allocator, refusals never hand one out.
unsafe impl GlobalAlloc for Refusing {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if refuse() {
            return core::ptr::null_mut();
        }
        // SAFETY: the caller's contract, passed on.
        unsafe { self.0.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if refuse() {
            return core::ptr::null_mut();
        }
        // SAFETY: the caller's contract, passed on.
        unsafe { self.0.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { self.0.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if refuse() {
            return core::ptr::null_mut();
        }
        // SAFETY: the caller's contract, passed on.
        unsafe { self.0.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Refusing = Refusing(INNER);

/// A pool of 256-byte blocks that starts with one chunk.
fn pool() -> BlockPool {
    BlockPool::new(
        BlockPoolConfig::new(Layout::from_size_align(256, 8).unwrap())
            .capacity(1)
            .max_capacity(1 << 20),
    )
    .unwrap()
}

/// Allocates from `pool` until it has `chunks` chunks, at least one block (so that the
/// thread has its cache of the pool).
fn fill(pool: &BlockPool, chunks: usize) -> Vec<NonNull<u8>> {
    let mut held = vec![pool.allocate().unwrap()];
    while pool.stats().chunks < chunks {
        held.push(pool.allocate().unwrap());
    }
    held
}

fn free_all(pool: &BlockPool, blocks: Vec<NonNull<u8>>) {
    for b in blocks {
        // SAFETY: each block was allocated from `pool` and is freed once.
        unsafe { pool.free(b) }.unwrap();
    }
}

#[test]
#[cfg_attr(miri, ignore = "maps whole chunks")]
fn growth_refused_memory_for_its_list_is_out_of_memory() {
    let pool = pool();
    let mut held = fill(&pool, 1);
    // Room for more blocks than a chunk holds: the test itself asks for no memory below.
    held.reserve((1 << 20) / 256);
    let (result, refused) = refusing(|| loop {
        match pool.allocate() {
            Ok(block) => held.push(block),
            Err(e) => break e,
        }
    });
    assert!(
        matches!(result, PoolError::OutOfMemory { .. }),
        "{result:?}"
    );
    assert!(refused > 0, "the allocator was never asked");
    assert_eq!(pool.stats().chunks, 1, "no chunk was added");
    // Once memory is there again, the pool grows.
    held.push(pool.allocate().unwrap());
    assert_eq!(pool.stats().chunks, 2);
    free_all(&pool, held);
}

#[test]
#[cfg_attr(miri, ignore = "maps whole chunks")]
fn reclaim_refused_memory_gives_nothing_back_and_loses_no_block() {
    let pool = pool();
    let held = fill(&pool, 4);
    let carved = held.len();
    free_all(&pool, held);
    let (given, refused) = refusing(|| pool.reclaim());
    assert_eq!(given, 0);
    assert!(refused > 0, "the allocator was never asked");
    assert_eq!(pool.stats().chunks, 4, "no chunk was given back");
    // Every block is still there to allocate, once each, with no new chunk.
    let again: Vec<NonNull<u8>> = (0..carved).map(|_| pool.allocate().unwrap()).collect();
    let distinct: HashSet<usize> = again.iter().map(|b| b.as_ptr() as usize).collect();
    assert_eq!(distinct.len(), carved);
    assert_eq!(pool.stats().chunks, 4);
    free_all(&pool, again);
    // With memory, reclaim gives the free chunks back.
    assert!(pool.reclaim() > 0);
    assert!(pool.stats().chunks < 4);
}

#[test]
#[cfg_attr(miri, ignore = "maps whole chunks")]
fn a_thread_refused_memory_for_its_cache_uses_the_pool_uncached() {
    let pool = pool();
    let held = fill(&pool, 1);
    let (blocks, refused) = std::thread::scope(|s| {
        s.spawn(|| {
            // The thread's first calls on any pool: its table of caches needs room.
            refusing(|| {
                let a = pool.allocate().map(|b| b.as_ptr() as usize);
                let b = pool.allocate().map(|b| b.as_ptr() as usize);
                for block in [a, b].into_iter().flatten() {
                    // SAFETY: allocated just above from `pool`, freed once.
                    unsafe { pool.free(NonNull::new(block as *mut u8).unwrap()) }.unwrap();
                }
                (a, b)
            })
        })
        .join()
        .unwrap()
    });
    assert!(refused > 0, "the allocator was never asked");
    let (a, b) = (blocks.0.unwrap(), blocks.1.unwrap());
    assert_ne!(a, b);
    free_all(&pool, held);
}
