//! A `#[global_allocator]` that serves small requests from a `BlockPool`, which the block
//! module's limits forbid: the pool's slow paths allocate through the global allocator, so
//! the pool is called again from inside itself. Such a call must stay sound and end: it
//! takes the path without a cache instead of a second borrow of the thread's cache table,
//! so the first call on a thread (whose cache table grows) recurses once, not without end.
//! The allocator falls back to the system allocator whenever the pool says no
//! (`PoolError::Reentered` when growth would have to wait for itself).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;
use std::alloc::System;
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::channel;
use std::sync::OnceLock;
use std::time::Duration;

use tally_pool::block::{BlockPool, BlockPoolConfig, GuardLevel};
use tally_pool::PoolError;

static POOL: OnceLock<BlockPool> = OnceLock::new();
/// The deepest the allocator was entered on one thread.
static DEEPEST: AtomicUsize = AtomicUsize::new(0);
/// Requests the pool served, and blocks it took back.
static SERVED: AtomicUsize = AtomicUsize::new(0);
static RETURNED: AtomicUsize = AtomicUsize::new(0);
/// The lowest and highest address the pool served: the frees to ask it to take back.
static LOWEST: AtomicUsize = AtomicUsize::new(usize::MAX);
static HIGHEST: AtomicUsize = AtomicUsize::new(0);
/// Frees of a block the pool served that it refused.
static REFUSED: AtomicUsize = AtomicUsize::new(0);
/// Requests the pool answered with `PoolError::Reentered`, and with any other error.
static REENTERED: AtomicUsize = AtomicUsize::new(0);
static FAILED: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Whether this thread's small requests go to the pool.
    static ROUTE: Cell<bool> = const { Cell::new(false) };
    /// How deep this thread is inside the allocator.
    static DEPTH: Cell<usize> = const { Cell::new(0) };
}

struct PoolFirst;

impl PoolFirst {
    fn from_pool(layout: Layout) -> Option<NonNull<u8>> {
        if !ROUTE.try_with(Cell::get).unwrap_or(false) || layout.size() > 64 || layout.align() > 8 {
            return None;
        }
        let pool = POOL.get()?;
        let depth = DEPTH.try_with(|d| d.replace(d.get() + 1) + 1).ok()?;
        DEEPEST.fetch_max(depth, Ordering::Relaxed);
        // Deeper than any sound call can go: fall back rather than overflow the stack.
        let block = match (depth <= 8).then(|| pool.allocate()) {
            Some(Ok(block)) => Some(block),
            Some(Err(PoolError::Reentered { .. })) => {
                REENTERED.fetch_add(1, Ordering::Relaxed);
                None
            }
            Some(Err(_)) | None => {
                FAILED.fetch_add(1, Ordering::Relaxed);
                None
            }
        };
        let _ = DEPTH.try_with(|d| d.set(d.get() - 1));
        if let Some(block) = block {
            SERVED.fetch_add(1, Ordering::Relaxed);
            LOWEST.fetch_min(block.as_ptr() as usize, Ordering::Relaxed);
            HIGHEST.fetch_max(block.as_ptr() as usize, Ordering::Relaxed);
        }
        block
    }
}

// SAFETY: a request is served by the pool (a block of 64 bytes, 8-aligned, enough for the
// layouts routed to it) or by `System`; a pointer goes back to the pool if it lies where
// the pool's blocks do (its one chunk, far from `System`'s heap), else to `System`, which
// made it.
unsafe impl GlobalAlloc for PoolFirst {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match Self::from_pool(layout) {
            Some(block) => block.as_ptr(),
            // SAFETY: the caller's contract, passed on.
            None => unsafe { System.alloc(layout) },
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let ours = (LOWEST.load(Ordering::Relaxed)..=HIGHEST.load(Ordering::Relaxed))
            .contains(&(ptr as usize));
        if let (true, Some(pool), Some(block)) = (ours, POOL.get(), NonNull::new(ptr)) {
            // SAFETY: `ptr` is a live block the pool handed out, given up (caller).
            let counter = match unsafe { pool.free(block) } {
                Ok(()) => &RETURNED,
                Err(_) => &REFUSED,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // SAFETY: not the pool's, so `System`'s, with the layout it was made with.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: PoolFirst = PoolFirst;

#[test]
fn a_pool_behind_the_global_allocator_is_reentered_once_and_loses_nothing() {
    let config = BlockPoolConfig::new(Layout::new::<[u8; 64]>()).guard(GuardLevel::Off);
    assert!(POOL.set(BlockPool::new(config).unwrap()).is_ok());
    let pool = POOL.get().unwrap();
    let (done, finished) = channel();
    let worker = std::thread::spawn(move || {
        ROUTE.with(|r| r.set(true));
        // The thread's first call makes its cache, whose table asks this allocator for
        // room, which asks the pool again. Then ordinary work, all of whose small requests
        // go to the pool.
        let first = pool.allocate().unwrap();
        let mut strings: Vec<String> = (0..2000).map(|i| format!("order {i}")).collect();
        strings.retain(|s| s.len() % 2 == 0);
        let blocks: Vec<_> = (0..500).map(|_| pool.allocate().unwrap()).collect();
        for b in blocks.into_iter().chain([first]) {
            // SAFETY: allocated above, freed once.
            unsafe { pool.free(b) }.unwrap();
        }
        drop(strings);
        ROUTE.with(|r| r.set(false));
        done.send(()).unwrap();
    });
    finished
        .recv_timeout(Duration::from_secs(60))
        .expect("the thread did not finish: a call from inside the pool waited for itself");
    // Joined: its cache went back to the pool as it exited.
    worker.join().unwrap();
    let deepest = DEEPEST.load(Ordering::Relaxed);
    assert!(
        SERVED.load(Ordering::Relaxed) > 2000,
        "the pool served the work"
    );
    assert_eq!(deepest, 2, "the pool was entered {deepest} deep");
    // The first chunk's bookkeeping asked for room while growth held its lock: that call
    // could not grow and said so; no call failed otherwise.
    assert!(
        REENTERED.load(Ordering::Relaxed) > 0,
        "growth was never re-entered"
    );
    assert_eq!(FAILED.load(Ordering::Relaxed), 0);
    // The pool counts live exactly the blocks it served and was not given back: what the
    // pool itself keeps in them (its list of thread caches) is still in use.
    let stats = pool.stats();
    let out = SERVED.load(Ordering::Relaxed) - RETURNED.load(Ordering::Relaxed);
    assert_eq!(stats.live_blocks as usize, out, "{stats:?}");
    assert!(out <= 1, "{out} blocks out after the thread exited");
    assert_eq!(REFUSED.load(Ordering::Relaxed), 0);
    assert_eq!(stats.corruption_events, 0);
}
