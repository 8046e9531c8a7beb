//! Per-thread magazine caches: the hot path.
//!
//! Each thread holds, per pool, an array of up to [`CACHE_CAPACITY`] free block pointers.
//! Allocate pops, free pushes; neither executes an atomic read-modify-write, a lock or a
//! syscall. When the array runs empty the thread takes one full magazine from the depot;
//! when it runs full it hands one magazine's worth back. Holding two magazines' worth and
//! trading one gives hysteresis, so a thread that alternates allocate and free at the
//! boundary does not trade on every call.
//!
//! Caches live in a thread-local table indexed by pool slot. A cache names its pool by a
//! unique id, so a cache left behind by a dropped pool whose slot was reused is recognised
//! and discarded. The table's destructor flushes every cache back to its pool's depot when
//! the thread exits, so no block is stranded.

use core::cell::{Cell, UnsafeCell as StdUnsafeCell};
use core::ptr::{null_mut, NonNull};
use std::sync::atomic::{AtomicU64 as StdAtomicU64, Ordering as StdOrdering};
use std::sync::{Arc, Weak};

use super::depot::MAGAZINE_SIZE;
use super::pool::{count_free, PoolShared};
use crate::sync::thread_local;

/// Free blocks a thread's cache holds at most: two magazines.
pub(crate) const CACHE_CAPACITY: usize = 2 * MAGAZINE_SIZE;

/// A per-thread statistics counter: written only by its thread (a load and a store, no
/// read-modify-write), read by any thread.
#[derive(Debug, Default)]
pub(crate) struct Counter(StdAtomicU64);

impl Counter {
    #[inline]
    pub(crate) fn bump(&self) {
        self.0
            .store(self.0.load(StdOrdering::Relaxed) + 1, StdOrdering::Relaxed);
    }

    #[inline]
    pub(crate) fn get(&self) -> u64 {
        self.0.load(StdOrdering::Relaxed)
    }
}

/// The counters of one thread for one pool.
#[derive(Debug, Default)]
pub(crate) struct ThreadCounters {
    pub(crate) allocations: Counter,
    pub(crate) frees: Counter,
    pub(crate) cross_thread_frees: Counter,
    pub(crate) depot_exchanges: Counter,
}

/// The blocks a cache holds.
///
/// Invariant: `len <= CACHE_CAPACITY`, and `ptrs[..len]` are free (non-null) blocks of the
/// cache's pool that no one else holds.
#[derive(Debug)]
pub(crate) struct CachedBlocks {
    pub(crate) len: usize,
    pub(crate) ptrs: [*mut u8; CACHE_CAPACITY],
    /// The pool stamp (id and epoch) this cache last synchronised with.
    pub(crate) stamp: u64,
}

/// One thread's cache for one pool.
///
/// Invariant: `blocks` is only accessed by the thread whose table holds the cache; other
/// threads (the pool's statistics) only read `counters`.
#[derive(Debug)]
pub(crate) struct ThreadCache {
    pub(crate) pool_uid: u64,
    pub(crate) blocks: StdUnsafeCell<CachedBlocks>,
    pub(crate) counters: ThreadCounters,
    pub(crate) pool: Weak<PoolShared>,
}

// SAFETY: `blocks` is touched only by the owning thread (type invariant); the counters are
// atomics; the block pointers are plain addresses.
unsafe impl Sync for ThreadCache {}
// SAFETY: as above; a cache moves between threads only inside an `Arc` whose other holders
// read counters alone.
unsafe impl Send for ThreadCache {}

impl ThreadCache {
    pub(crate) fn new(pool: &Arc<PoolShared>) -> Self {
        Self {
            pool_uid: pool.uid,
            blocks: StdUnsafeCell::new(CachedBlocks {
                len: 0,
                ptrs: [null_mut(); CACHE_CAPACITY],
                stamp: pool.stamp(),
            }),
            counters: ThreadCounters::default(),
            pool: Arc::downgrade(pool),
        }
    }
}

impl ThreadCache {
    /// A cache attached to no thread table, for counting the work of one slow-path call.
    pub(crate) fn detached(pool_uid: u64) -> Self {
        Self {
            pool_uid,
            blocks: StdUnsafeCell::new(CachedBlocks {
                len: 0,
                ptrs: [null_mut(); CACHE_CAPACITY],
                stamp: 0,
            }),
            counters: ThreadCounters::default(),
            pool: Weak::new(),
        }
    }
}

/// The caches of one thread, by pool slot.
#[derive(Debug)]
///
/// Invariant: the thread's `FAST[slot]` is null or the address of the cache that
/// `caches[slot]` holds, for every slot below [`FAST_SLOTS`]; so it stays valid as long as
/// that entry does.
pub(crate) struct CacheTable {
    caches: StdUnsafeCell<Vec<Option<Arc<ThreadCache>>>>,
}

/// Addresses of the caches of the first pool slots. A thread-local with no destructor, so
/// the hot path reaches it without the registration check a destructor needs.
type FastTable = [Cell<*const ThreadCache>; FAST_SLOTS];

/// Pool slots whose caches the hot path finds in one load, without the `Vec`.
const FAST_SLOTS: usize = 64;

impl CacheTable {
    const fn new() -> Self {
        Self {
            caches: StdUnsafeCell::new(Vec::new()),
        }
    }

    /// The cache for a slot at or above `FAST_SLOTS`, if this thread has one.
    #[cold]
    fn get_slow(&self, slot: usize) -> Option<&ThreadCache> {
        // SAFETY: only this thread touches its table, and no `&mut` to `caches` is live
        // while a fast path runs (fast paths call nothing that installs).
        let caches = unsafe { &*self.caches.get() };
        caches.get(slot)?.as_deref()
    }
}

/// The calling thread's cache for `slot`, passed to `f`.
#[inline(always)]
fn with_fast<R>(slot: usize, f: impl FnOnce(Option<&ThreadCache>) -> R) -> R {
    if slot < FAST_SLOTS {
        FAST.with(|fast| {
            let p = fast.get(slot).map_or(core::ptr::null(), Cell::get);
            // SAFETY: table invariant: a non-null fast entry points to the cache that the
            // thread's `caches[slot]` keeps alive; entries change only in `install` (not
            // running now) and when the table drops (which nulls them first).
            f((!p.is_null()).then(|| unsafe { &*p }))
        })
    } else {
        match CACHES.try_with(|table| table.get_slow(slot).map(|c| c as *const ThreadCache)) {
            // SAFETY: as above: the table keeps the cache alive while this thread runs.
            Ok(Some(p)) => f(Some(unsafe { &*p })),
            _ => f(None),
        }
    }
}

impl Drop for CacheTable {
    fn drop(&mut self) {
        let _ = FAST.try_with(|fast| fast.iter().for_each(|f| f.set(core::ptr::null())));
        for cache in self.caches.get_mut().drain(..).flatten() {
            if let Some(pool) = cache.pool.upgrade() {
                pool.retire_cache(&cache);
            }
        }
    }
}

/// Does for `pool` what thread exit does: returns this thread's cached blocks to the
/// depot and folds its counters into the pool. The loom models call it at the end of a
/// thread body, because loom runs thread-local destructors outside its model of the
/// thread.
#[cfg(all(test, loom))]
pub(crate) fn retire_current(pool: &Arc<PoolShared>) {
    let _ = CACHES.try_with(|table| {
        // SAFETY: the table belongs to this thread and no other reference to it is live.
        let caches = unsafe { &mut *table.caches.get() };
        let _ = FAST.try_with(|fast| {
            if let Some(f) = fast.get(pool.slot as usize) {
                f.set(core::ptr::null());
            }
        });
        let cache = caches.get_mut(pool.slot as usize).and_then(Option::take);
        if let Some(cache) = cache.filter(|c| c.pool_uid == pool.uid) {
            pool.retire_cache(&cache);
        }
    });
}

#[cfg(not(loom))]
thread_local! {
    static CACHES: CacheTable = const { CacheTable::new() };
    static FAST: FastTable = const { [const { Cell::new(core::ptr::null()) }; FAST_SLOTS] };
}
#[cfg(loom)]
thread_local! {
    static CACHES: CacheTable = CacheTable::new();
    static FAST: FastTable = [const { Cell::new(core::ptr::null()) }; FAST_SLOTS];
}

/// What [`pop_fast`] found.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Popped {
    /// A block, counted as allocated.
    Block(NonNull<u8>),
    /// A block the guard refused: withdrawn from circulation, not counted.
    Refused(NonNull<u8>),
    /// The cache could not serve: missing, empty, out of date, or the thread is exiting.
    Miss,
}

/// The hot path of `allocate`: pops the calling thread's cache for `pool` and lets the
/// guard (`PoolShared::guard_accepts`) check the block. On a miss the caller takes the
/// slow path, which sorts each case out.
#[inline(always)]
pub(crate) fn pop_fast(pool: &PoolShared) -> Popped {
    with_fast(pool.slot as usize, |cache| {
        let Some(cache) = cache else {
            return Popped::Miss;
        };
        // SAFETY: this thread owns `cache.blocks` (ThreadCache invariant) and holds no other
        // reference to it.
        let blocks = unsafe { &mut *cache.blocks.get() };
        // One comparison checks that the cache is this pool's (not one left by a dropped
        // pool that had the slot) and that no flush was asked for.
        if blocks.stamp != pool.stamp() {
            return Popped::Miss;
        }
        let Some(index) = blocks.len.checked_sub(1) else {
            return Popped::Miss;
        };
        // SAFETY: `index < len <= CACHE_CAPACITY` (CachedBlocks invariant).
        let raw = unsafe { *blocks.ptrs.get_unchecked(index) };
        // SAFETY: the entries below `len` are free blocks, which are never null.
        let ptr = unsafe { NonNull::new_unchecked(raw) };
        blocks.len = index;
        if !pool.guard_accepts(ptr.as_ptr() as usize) {
            return Popped::Refused(ptr);
        }
        cache.counters.allocations.bump();
        Popped::Block(ptr)
    })
}

/// The hot path of `free`: pushes `ptr`, already vouched for, onto the calling thread's
/// cache for `pool`. False when that is not possible; the caller takes the slow path.
#[inline(always)]
pub(crate) fn push_fast(pool: &PoolShared, ptr: *mut u8) -> bool {
    with_fast(pool.slot as usize, |cache| {
        let Some(cache) = cache else { return false };
        // SAFETY: this thread owns `cache.blocks` (ThreadCache invariant) and holds no other
        // reference to it.
        let blocks = unsafe { &mut *cache.blocks.get() };
        if blocks.stamp != pool.stamp() || blocks.len >= pool.cache_limit {
            return false;
        }
        // SAFETY: `len < cache_limit <= CACHE_CAPACITY` (PoolShared invariant), so the
        // entry is in bounds.
        unsafe { *blocks.ptrs.get_unchecked_mut(blocks.len) = ptr };
        blocks.len += 1;
        count_free(cache);
        true
    })
}

/// Runs `f` with the calling thread's cache for `pool` and mutable access to its blocks,
/// creating the cache on first use. Returns `None` while the thread's table is being torn
/// down at thread exit; the caller then works on the depot directly.
///
/// `f` must not call `with_cache` again (it would alias the table); nothing in this crate
/// that `f` reaches does.
#[inline]
pub(crate) fn with_cache<R>(
    pool: &Arc<PoolShared>,
    f: impl FnOnce(&ThreadCache, &mut CachedBlocks) -> R,
) -> Option<R> {
    CACHES
        .try_with(|table| {
            let slot = pool.slot as usize;
            // SAFETY: the table belongs to this thread, and no reference into it outlives
            // this closure; `f` does not re-enter `with_cache` (documented above), so this
            // is the only live reference to the table.
            let caches = unsafe { &mut *table.caches.get() };
            let cache = match caches.get(slot) {
                Some(Some(c)) if c.pool_uid == pool.uid => c,
                _ => install(caches, pool)?,
            };
            // SAFETY: this thread owns `cache.blocks` (ThreadCache invariant) and holds no
            // other reference to it.
            let blocks = unsafe { &mut *cache.blocks.get() };
            Some(f(cache, blocks))
        })
        .ok()
        .flatten()
}

#[cold]
fn install<'t>(
    caches: &'t mut Vec<Option<Arc<ThreadCache>>>,
    pool: &Arc<PoolShared>,
) -> Option<&'t Arc<ThreadCache>> {
    let slot = pool.slot as usize;
    if caches.len() <= slot {
        caches.resize(slot + 1, None);
    }
    let entry = caches.get_mut(slot)?;
    // A cache left by a dropped pool that had this slot: its blocks belonged to memory that
    // is gone, so they are forgotten, not flushed.
    let cache = Arc::new(ThreadCache::new(pool));
    pool.adopt_cache(&cache);
    let _ = FAST.try_with(|fast| {
        if let Some(f) = fast.get(slot) {
            f.set(Arc::as_ptr(&cache));
        }
    });
    *entry = Some(cache);
    entry.as_ref()
}
