//! A pool whose own bookkeeping is refused memory by the global allocator reports it, and
//! loses nothing: growth returns `PoolError::OutOfMemory` (not an abort from an infallible
//! allocation), reclaim, which runs when memory is short, gives nothing back that time
//! and leaves every free block where it can be allocated again, and a thread refused room
//! for its cache of the pool uses the pool without one. The global allocator here is
//! `TallyAlloc` (see `tests/wrapped`) wrapped in one that refuses the requests of a thread
//! that asks it to, all of them or all after the first few. Creating a block or a typed
//! pool refused at any of its requests is `PoolError::OutOfMemory`, never an abort.
#![allow(clippy::unwrap_used, clippy::panic)]

use core::alloc::{GlobalAlloc, Layout};
use core::cell::Cell;
use core::ptr::NonNull;
use std::collections::HashSet;

use tally_pool::block::{BlockPool, BlockPoolConfig};
use tally_pool::{Pool, PoolConfig, PoolError};

mod wrapped;
use wrapped::{Inner, INNER};

thread_local! {
    /// Whether this thread's requests are refused.
    static REFUSE: Cell<bool> = const { Cell::new(false) };
    /// Requests still granted before refusals begin, while `REFUSE` is set.
    static GRANT: Cell<u64> = const { Cell::new(0) };
    /// Requests refused on this thread.
    static REFUSED: Cell<u64> = const { Cell::new(0) };
    /// The smallest request refused, while `REFUSE` is set (0: every one).
    static SMALLEST: Cell<usize> = const { Cell::new(0) };
}

/// Whether to refuse this request (counted if so).
fn refuse(layout: Layout) -> bool {
    if !REFUSE.try_with(Cell::get).unwrap_or(false)
        || layout.size() < SMALLEST.try_with(Cell::get).unwrap_or(0)
    {
        return false;
    }
    let granted = GRANT.try_with(|g| {
        let left = g.get();
        g.set(left.saturating_sub(1));
        left > 0
    });
    if granted.unwrap_or(false) {
        return false;
    }
    let _ = REFUSED.try_with(|n| n.set(n.get() + 1));
    true
}

/// Runs `f` with this thread's requests refused after the first `grant`; returns its
/// result and how many were refused.
fn refusing_after<R>(grant: u64, f: impl FnOnce() -> R) -> (R, u64) {
    let before = REFUSED.with(Cell::get);
    GRANT.with(|g| g.set(grant));
    REFUSE.with(|r| r.set(true));
    let result = f();
    REFUSE.with(|r| r.set(false));
    (result, REFUSED.with(Cell::get) - before)
}

/// Runs `f` with every request of this thread refused.
fn refusing<R>(f: impl FnOnce() -> R) -> (R, u64) {
    refusing_after(0, f)
}

struct Refusing(Inner);

// SAFETY: a request is either refused (null, which the contract allows) or passed on
// unchanged to the inner allocator, which upholds the contract; a freed block came from
// the inner allocator, refusals never hand one out.
unsafe impl GlobalAlloc for Refusing {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if refuse(layout) {
            return core::ptr::null_mut();
        }
        // SAFETY: the caller's contract, passed on.
        unsafe { self.0.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if refuse(layout) {
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
        if refuse(Layout::from_size_align(new_size, layout.align()).unwrap_or(layout)) {
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
fn growth_refused_memory_for_its_bookkeeping_is_out_of_memory() {
    // Refused at its first request (the new chunks' vector), then at its second (the
    // probe before the mapping's shared `Arc`).
    for grant in [0, 1] {
        let pool = pool();
        let mut held = fill(&pool, 1);
        // Room for more blocks than a chunk holds: the test itself asks for no memory
        // below.
        held.reserve((1 << 20) / 256);
        let (result, refused) = refusing_after(grant, || loop {
            match pool.allocate() {
                Ok(block) => held.push(block),
                Err(e) => break e,
            }
        });
        assert!(
            matches!(result, PoolError::OutOfMemory { .. }),
            "{grant}: {result:?}"
        );
        assert!(refused > 0, "the allocator was never asked");
        assert_eq!(pool.stats().chunks, 1, "no chunk was added");
        // Once memory is there again, the pool grows.
        held.push(pool.allocate().unwrap());
        assert_eq!(pool.stats().chunks, 2);
        free_all(&pool, held);
    }
}

/// Allocates from `pool` until it maps a chunk beyond its `chunks`: how many blocks it
/// handed out before, each once (checked), and the blocks, to free.
fn until_growth(pool: &BlockPool, chunks: usize) -> (usize, Vec<NonNull<u8>>) {
    let mut got = Vec::new();
    let mut seen = HashSet::new();
    loop {
        let block = pool.allocate().unwrap();
        got.push(block);
        assert!(
            seen.insert(block.as_ptr() as usize),
            "a block handed out twice"
        );
        if pool.stats().chunks > chunks {
            return (got.len() - 1, got);
        }
    }
}

#[test]
#[cfg_attr(miri, ignore = "maps whole chunks")]
fn reclaim_refused_memory_gives_nothing_back_and_loses_no_block() {
    // Without a reclaim: how many blocks four chunks hand out before a fifth is mapped.
    let control = pool();
    free_all(&control, fill(&control, 4));
    let (whole, blocks) = until_growth(&control, 4);
    free_all(&control, blocks);
    // Refused at each of its requests in turn, until one reclaim needs no more.
    for grant in 0.. {
        let pool = pool();
        free_all(&pool, fill(&pool, 4));
        let (given, refused) = refusing_after(grant, || pool.reclaim());
        if refused == 0 {
            assert!(given > 0, "with memory, reclaim gives the free chunks back");
            assert!(grant > 4, "reclaim asked for memory only {grant} times");
            return;
        }
        assert_eq!(given, 0, "refused at request {grant}");
        assert_eq!(pool.stats().chunks, 4, "no chunk was given back");
        // Every block is still there, once: a lost one would map the fifth chunk
        // earlier, a duplicate would be handed out twice.
        let (after, blocks) = until_growth(&pool, 4);
        assert_eq!(after, whole, "refused at request {grant}");
        free_all(&pool, blocks);
    }
}

/// On a new thread that first uses `warm_up` (if any), allocates two blocks of `pool` and
/// frees them with every request of the thread refused; checks that both were handed out,
/// distinct, and that the allocator was asked.
fn two_blocks_refused(pool: &BlockPool, warm_up: Option<&BlockPool>) {
    let held = fill(pool, 1);
    let (blocks, refused) = std::thread::scope(|s| {
        s.spawn(|| {
            if let Some(other) = warm_up {
                let b = other.allocate().unwrap();
                // SAFETY: allocated just above from `other`, freed once.
                unsafe { other.free(b) }.unwrap();
            }
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
    free_all(pool, held);
}

#[test]
#[cfg_attr(miri, ignore = "maps whole chunks")]
fn a_thread_refused_memory_for_its_cache_uses_the_pool_uncached() {
    // The thread's first calls on any pool: its table of caches needs room.
    two_blocks_refused(&pool(), None);
}

#[test]
#[cfg_attr(miri, ignore = "maps whole chunks")]
fn a_thread_refused_memory_for_its_cache_of_a_second_pool_uses_it_uncached() {
    // A first pool gives the thread's table of caches its room; the second pool's cache is
    // then the first thing the thread asks memory for.
    two_blocks_refused(&pool(), Some(&pool()));
}

/// Creates a pool with this thread's requests of at least 1 MiB refused after the first
/// `grant`, for every `grant` until creation asks for nothing that is refused: each attempt
/// must create the pool or return `PoolError::OutOfMemory`, never abort the process on an
/// infallible allocation. Requests that grow with the configuration are the ones a real
/// limit refuses; Rust's own collections abort on a refused small one. Returns how many
/// such requests creation makes.
fn create_refused<P>(what: &str, create: impl Fn() -> Result<P, PoolError>) -> u64 {
    SMALLEST.with(|s| s.set(1 << 20));
    for grant in 0.. {
        let (result, refused) = refusing_after(grant, &create);
        match result {
            Ok(_) if refused == 0 => {
                SMALLEST.with(|s| s.set(0));
                return grant;
            }
            // A refusal that creation can do without (a registration, a cache).
            Ok(_) => {}
            Err(PoolError::OutOfMemory { .. }) => {}
            Err(e) => panic!("{what}, refused after {grant} requests: {e}"),
        }
    }
    unreachable!()
}

#[test]
#[cfg_attr(miri, ignore = "maps whole chunks")]
fn creation_refused_a_large_request_is_out_of_memory() {
    // The typed pool's token table holds a word per chunk the cap allows: 16 MiB of chunk
    // addresses for 256 KiB values (four a chunk) up to eight million of them.
    let typed = create_refused("a typed pool", || {
        let config = PoolConfig::new("refused-at-creation")
            .capacity(4)
            .max_capacity(1 << 23);
        Pool::<[[u8; 1 << 12]; 64]>::new(config).map(|_| ())
    });
    assert!(typed > 0, "creation asked for no large request");
    create_refused("a block pool", || {
        BlockPool::new(
            BlockPoolConfig::new(Layout::from_size_align(1 << 18, 8).unwrap())
                .capacity(4)
                .max_capacity(1 << 23),
        )
    });
}
