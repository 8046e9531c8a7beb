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
//!
//! # The fast paths and the limit
//!
//! [`pop_fast`] and [`push_fast`] read nothing of the pool: a cache's `limit` says how many
//! blocks the fast paths may hold, and other threads *close* a cache by storing 0 into it.
//! A pop needs `0 < len <= limit` and a push `len < limit`, so a closed cache serves
//! neither, and its owner takes the slow path on its next call, where it finds out why:
//!
//! - the pool asked every thread to flush (reclaim, or an allocation at the cap): the
//!   requester bumps the pool's epoch, then closes every cache; the owner reopens its
//!   cache, then (after a `SeqCst` fence that pairs with the requester's `SeqCst` epoch
//!   bump) compares the epoch with its own copy and flushes if it moved. Either the owner
//!   sees the new epoch or the requester's close lands after the reopen, so no request is
//!   lost;
//! - the pool was dropped: it closes every cache before its slot can be reused, so a
//!   thread whose fast table still points to the old cache misses, and the slow path
//!   replaces it.
//!
//! The fast paths know nothing of guards: for a guarded pool, `BlockPool` checks the guard
//! around them, and the per-type caches of typed pools serve unguarded pools only.
//!
//! # Finding the cache
//!
//! - `BlockPool` and `Pool<T>`: the pool's `fast_index` into a destructor-free
//!   thread-local table of cache pointers (`FAST`), one entry per pool slot below
//!   [`FAST_SLOTS`] and one that stays null for the rest.
//! - `#[derive(Pooled)]` types: their own `thread_local!` [`TypeCache`], bound on the first
//!   slow path, so `acquire` is one thread-local load and a pop.
//! - A handle's release: the `fast_hint` its chunk header carries (the pool's fast index
//!   when the typed pool is plain), then `FAST`: two loads, where going through the typed
//!   pool takes four, each waiting for the one before.

use core::cell::{Cell, UnsafeCell as StdUnsafeCell};
use core::ptr::{null_mut, NonNull};
use std::sync::{Arc, Weak};
use std::thread::LocalKey;

use super::depot::MAGAZINE_SIZE;
use super::geometry::{is_stride_multiple, ChunkHeader, Geometry};
use super::pool::PoolShared;
use super::registry::CHUNK_SIZE;
use crate::sync::{fence, spin_loop, thread_local, yield_now, AtomicU64, AtomicUsize, Ordering};

/// Free blocks a thread's cache holds at most: two magazines.
pub(crate) const CACHE_CAPACITY: usize = 2 * MAGAZINE_SIZE;

/// A per-thread statistics counter: written only by its thread (a load and a store, no
/// read-modify-write), read by any thread.
#[derive(Debug, Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    #[inline]
    pub(crate) fn bump(&self) {
        self.add(1);
    }

    #[inline]
    pub(crate) fn add(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    #[inline]
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The counters of one thread for one pool that the fast paths do not keep (see
/// [`ThreadCache::tally`]): what slow paths counted, and what the fast paths had counted
/// when the last slow path began.
#[derive(Debug, Default)]
pub(crate) struct ThreadCounters {
    pub(crate) allocations: Counter,
    pub(crate) frees: Counter,
    pub(crate) depot_exchanges: Counter,
    /// Blocks a guarded fast path popped, counted as allocations by the pop, then refused
    /// because their guard was broken.
    pub(crate) refused: Counter,
}

/// What one thread's counters for one pool said at one instant.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CacheCounts {
    pub(crate) allocations: u64,
    pub(crate) frees: u64,
    pub(crate) depot_exchanges: u64,
}

impl CacheCounts {
    /// Frees this thread made beyond its own allocations: blocks that other threads
    /// allocated, at the least. Frees of such blocks are not counted one by one.
    pub(crate) fn cross_thread_frees(&self) -> u64 {
        self.frees.saturating_sub(self.allocations)
    }
}

/// Bits of [`ThreadCache::tally`] that hold the number of cached blocks: enough for
/// [`CACHE_CAPACITY`], and at least a byte, which the fast paths read in one instruction.
const LEN_BITS: u32 = {
    let needed = usize::BITS - CACHE_CAPACITY.leading_zeros();
    if needed > 8 {
        needed
    } else {
        8
    }
};
const LEN_MASK: u64 = (1 << LEN_BITS) - 1;
/// What a counted pop adds to [`ThreadCache::tally`] besides taking one block off.
const ONE_POP: u64 = 1 << LEN_BITS;
const _: () = assert!((CACHE_CAPACITY as u64) < ONE_POP);

/// The blocks a cache holds.
///
/// Invariants: `len <= CACHE_CAPACITY`, and `ptrs[..len]` are free (non-null) blocks of the
/// cache's pool that no one else holds, where `len` is this field inside a section of a
/// [`ThreadCache`] (and for a cache attached to no thread) and the count in
/// `ThreadCache::tally` outside one. `known_span` is 0, or `known_first` is the first
/// block of a chunk of the cache's pool that the registry vouched for, `known_span` the
/// geometry's span and `stride_magic` its stride magic (see [`remember_chunk`]). The
/// `fresh_left` blocks from `fresh_next` on, one stride apart in one chunk, are carved
/// blocks of the cache's pool that no one else holds and that were never handed out.
#[derive(Debug)]
#[repr(C)]
pub(crate) struct CachedBlocks {
    /// The number of cached blocks while a slow path works on them (see above).
    pub(crate) len: usize,
    /// Where the blocks of the chunk `BlockPool::free` last vouched for through the
    /// registry begin: with `known_span`, a range that holds only that chunk's blocks.
    /// Chunks never change pool while their pool lives.
    pub(crate) known_first: usize,
    /// Bytes of block range at `known_first`: 0 while no chunk is known.
    pub(crate) known_span: usize,
    /// The pool's `Geometry::stride_magic`, for the block-start test of `push_known`.
    pub(crate) stride_magic: u64,
    /// The pool stamp (id and epoch) this cache last synchronised with.
    pub(crate) stamp: u64,
    pub(crate) ptrs: [*mut u8; CACHE_CAPACITY],
    /// The address of the first block of the thread's fresh range: blocks the pool carved
    /// for this cache in one go, which refills take a batch at a time without the growth
    /// lock. After `ptrs`, off the line the fast paths read.
    pub(crate) fresh_next: usize,
    /// Blocks left in the fresh range.
    pub(crate) fresh_left: usize,
}

impl CachedBlocks {
    /// An empty cache that knows no chunk.
    pub(crate) fn new(stamp: u64) -> Self {
        Self {
            len: 0,
            known_first: 0,
            known_span: 0,
            stride_magic: 0,
            stamp,
            ptrs: [null_mut(); CACHE_CAPACITY],
            fresh_next: 0,
            fresh_left: 0,
        }
    }
}

/// One thread's cache for one pool.
///
/// Invariants: `blocks` is only accessed by the thread whose table holds the cache, and
/// `tally`, `settled_len`, `section` and `counters` are written only by it; other threads
/// (the pool's statistics, flush requests, the pool's drop) read those and store 0 into
/// `limit`. `limit` is 0 or the pool's `cache_limit`, so at most `CACHE_CAPACITY`.
///
/// # Counting without counters
///
/// The fast paths keep the number of cached blocks and the allocations they count in one
/// word, `tally`, so that a pop or a push loads and stores one word besides the block
/// pointer. The frees they count follow from it: between two slow paths, the cached
/// blocks change only by fast pops and pushes, so
///
/// `pushes = len - settled_len + pops`,
///
/// where `settled_len` is the count the last slow path left. A slow path runs as a
/// *section* ([`ThreadCache::enter`], [`ThreadCache::leave`]): it moves the fast counts into
/// `counters`, works on `blocks.len`, and leaves `tally` holding its final count and no
/// pops. `section` is odd during a section, and readers retry across one (a sequence
/// lock), so a snapshot never mixes the counts of before and after a slow path. The pops
/// of `tally` wrap after `2^56` fast allocations on one thread with no slow path between.
#[derive(Debug)]
#[repr(C, align(64))]
pub(crate) struct ThreadCache {
    /// How many blocks the fast paths may hold (see the module docs). First, with `tally`
    /// and the first fields of `blocks`, so that the fast paths touch one cache line
    /// besides the block pointer.
    pub(crate) limit: AtomicUsize,
    /// Outside a section: the number of cached blocks (`ptrs[..len]`), at most
    /// `CACHE_CAPACITY`, in the low [`LEN_BITS`] bits, and the allocations the fast paths
    /// counted since the last section above them (the tally invariant).
    tally: AtomicU64,
    pub(crate) blocks: StdUnsafeCell<CachedBlocks>,
    /// The number of cached blocks when the last section ended.
    settled_len: AtomicU64,
    /// Odd while a section runs; bumped at its start and at its end.
    section: AtomicU64,
    pub(crate) counters: ThreadCounters,
    pub(crate) pool_uid: u64,
    pub(crate) pool: Weak<PoolShared>,
}

// SAFETY: `blocks` is touched only by the owning thread (type invariant); the counters are
// atomics; the block pointers are plain addresses.
unsafe impl Sync for ThreadCache {}
// SAFETY: as above; a cache moves between threads only inside an `Arc` whose other holders
// read counters alone.
unsafe impl Send for ThreadCache {}

impl ThreadCache {
    /// Starts a slow path of the owner thread: settles the fast paths' counts into
    /// `counters` and the number of cached blocks into `blocks.len`, which the slow path
    /// then works on. Every `enter` is followed by a [`Self::leave`] with the same blocks,
    /// and sections do not nest.
    fn enter(&self, blocks: &mut CachedBlocks) {
        let section = self.section.load(Ordering::Relaxed);
        self.section.store(section | 1, Ordering::Relaxed);
        // Pairs with the `Acquire` fence of `counts`: a reader that sees any change made
        // below sees the odd `section` too.
        fence(Ordering::Release);
        let tally = self.tally.load(Ordering::Relaxed);
        let len = tally & LEN_MASK;
        let pops = tally >> LEN_BITS;
        let pushes = len
            .wrapping_sub(self.settled_len.load(Ordering::Relaxed))
            .wrapping_add(pops);
        self.counters.allocations.add(pops);
        self.counters.frees.add(pushes);
        // `len <= CACHE_CAPACITY` (tally invariant), so it fits.
        blocks.len = len as usize;
    }

    /// Ends the section [`Self::enter`] started: the fast paths go on from `blocks.len`.
    fn leave(&self, blocks: &CachedBlocks) {
        let len = blocks.len as u64 & LEN_MASK;
        self.tally.store(len, Ordering::Relaxed);
        self.settled_len.store(len, Ordering::Relaxed);
        let section = self.section.load(Ordering::Relaxed);
        self.section
            .store((section | 1).wrapping_add(1), Ordering::Release);
    }

    /// Takes back the allocation a pop counted for a block the caller refuses. Owner thread
    /// only, outside a section.
    pub(crate) fn refuse_popped(&self) {
        in_section(self, |cache, _| cache.counters.refused.bump());
    }

    /// The counts of this cache's thread, from any thread, as they were at one instant
    /// (a sequence-lock read: it waits out a section the owner is in). The caller holds
    /// no lock a section might take.
    pub(crate) fn counts(&self) -> CacheCounts {
        let mut waits = 0u32;
        loop {
            let before = self.section.load(Ordering::Acquire);
            if before & 1 == 0 {
                let tally = self.tally.load(Ordering::Relaxed);
                let settled = self.settled_len.load(Ordering::Relaxed);
                let c = &self.counters;
                let pops = tally >> LEN_BITS;
                let pushes = (tally & LEN_MASK).wrapping_sub(settled).wrapping_add(pops);
                let counts = CacheCounts {
                    allocations: c
                        .allocations
                        .get()
                        .wrapping_add(pops)
                        .wrapping_sub(c.refused.get()),
                    frees: c.frees.get().wrapping_add(pushes),
                    depot_exchanges: c.depot_exchanges.get(),
                };
                fence(Ordering::Acquire);
                if self.section.load(Ordering::Relaxed) == before {
                    return counts;
                }
            }
            // A section is short, unless its thread lost the CPU: then let it run.
            waits = waits.saturating_add(1);
            if waits < 64 {
                spin_loop();
            } else {
                yield_now();
            }
        }
    }
}

impl ThreadCache {
    pub(crate) fn new(pool: &Arc<PoolShared>) -> Self {
        Self {
            limit: AtomicUsize::new(pool.cache_limit),
            tally: AtomicU64::new(0),
            settled_len: AtomicU64::new(0),
            section: AtomicU64::new(0),
            pool_uid: pool.uid,
            blocks: StdUnsafeCell::new(CachedBlocks {
                stride_magic: pool.geometry.stride_magic(),
                ..CachedBlocks::new(pool.stamp())
            }),
            counters: ThreadCounters::default(),
            pool: Arc::downgrade(pool),
        }
    }

    /// Makes the owner's fast paths miss until its slow path reopens the cache. Any thread.
    pub(crate) fn close(&self) {
        self.limit.store(0, Ordering::SeqCst);
    }

    /// Whether the cache was closed (by a flush request, from any thread including the
    /// owner, or by its pool's drop).
    #[inline]
    pub(crate) fn is_closed(&self) -> bool {
        self.limit.load(Ordering::Relaxed) == 0
    }

    /// Lets the fast paths hold up to `limit` blocks again. Owner thread only; the caller
    /// then checks the pool's epoch (see the module docs).
    pub(crate) fn reopen(&self, limit: usize) {
        self.limit.store(limit, Ordering::Relaxed);
        fence(Ordering::SeqCst);
    }
}

impl ThreadCache {
    /// A cache attached to no thread table, for counting the work of one slow-path call.
    pub(crate) fn detached(pool_uid: u64) -> Self {
        Self {
            limit: AtomicUsize::new(0),
            tally: AtomicU64::new(0),
            settled_len: AtomicU64::new(0),
            section: AtomicU64::new(0),
            pool_uid,
            blocks: StdUnsafeCell::new(CachedBlocks::new(0)),
            counters: ThreadCounters::default(),
            pool: Weak::new(),
        }
    }
}

/// The caches of one thread, by pool slot.
///
/// Invariants: for every slot below [`FAST_SLOTS`], the thread's `FAST[slot]` is null or
/// the address of the cache that `caches[slot]` holds, so it stays valid as long as that
/// entry does; `FAST[FAST_SLOTS]` is always null. Every `(slot, cell)` in `bound` names a
/// [`TypeCache`] of this thread whose pointer is null or the address of the cache
/// `caches[slot]` holds. (The cells are native thread-locals, as on every target this crate
/// builds for, so their storage lasts until the thread ends, past this table's destructor.)
#[derive(Debug)]
pub(crate) struct CacheTable {
    caches: StdUnsafeCell<Vec<Option<Arc<ThreadCache>>>>,
    bound: StdUnsafeCell<Vec<(usize, *const TypeCache)>>,
}

/// Addresses of the caches of the first pool slots, plus one entry that stays null for
/// every other slot. A thread-local with no destructor, so the hot path reaches it
/// without the registration check a destructor needs.
type FastTable = [Cell<*const ThreadCache>; FAST_SLOTS + 1];

/// Pool slots whose caches the hot path finds in one load. Pools in higher slots take the
/// slow path on every call.
pub(crate) const FAST_SLOTS: usize = 64;

/// The index into the fast table for a pool in `slot`: the slot itself, or the entry that
/// stays null. Always at most [`FAST_SLOTS`].
pub(crate) fn fast_index(slot: u32) -> usize {
    (slot as usize).min(FAST_SLOTS)
}

impl CacheTable {
    const fn new() -> Self {
        Self {
            caches: StdUnsafeCell::new(Vec::new()),
            bound: StdUnsafeCell::new(Vec::new()),
        }
    }

    /// Nulls every per-type cell bound to `slot`, or to any slot if `None`.
    fn unbind(&self, slot: Option<usize>) {
        // SAFETY: only this thread touches its table, and nothing else borrows `bound` now.
        let bound = unsafe { &mut *self.bound.get() };
        bound.retain(|&(s, cell)| {
            if slot.is_some_and(|slot| slot != s) {
                return true;
            }
            // SAFETY: table invariant: `cell` is a `TypeCache` of this thread, which lives
            // until the thread ends.
            unsafe { (*cell).0.set(core::ptr::null()) };
            false
        });
    }
}

/// The calling thread's fast-table entry at `index`, at most [`FAST_SLOTS`] (the caller
/// passes an index a `PoolShared` invariant bounds so): a cache, or null.
#[inline(always)]
fn fast_entry(index: usize) -> *const ThreadCache {
    FAST.with(|fast| {
        // SAFETY: `index <= FAST_SLOTS` (caller) and the table has `FAST_SLOTS + 1` entries.
        unsafe { fast.get_unchecked(index) }.get()
    })
}

impl Drop for CacheTable {
    fn drop(&mut self) {
        let _ = FAST.try_with(|fast| fast.iter().for_each(|f| f.set(core::ptr::null())));
        self.unbind(None);
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
            if let Some(f) = fast.get(pool.fast_index) {
                f.set(core::ptr::null());
            }
        });
        table.unbind(Some(pool.slot as usize));
        let cache = caches.get_mut(pool.slot as usize).and_then(Option::take);
        if let Some(cache) = cache.filter(|c| c.pool_uid == pool.uid) {
            pool.retire_cache(&cache);
        }
    });
}

#[cfg(not(loom))]
thread_local! {
    static CACHES: CacheTable = const { CacheTable::new() };
    static FAST: FastTable = const { [const { Cell::new(core::ptr::null()) }; FAST_SLOTS + 1] };
}
#[cfg(loom)]
thread_local! {
    static CACHES: CacheTable = CacheTable::new();
    static FAST: FastTable = [const { Cell::new(core::ptr::null()) }; FAST_SLOTS + 1];
}

/// The calling thread's cache of `pool` as the fast paths see it: `None` if the thread has
/// none yet or the pool's slot is beyond the fast table. It may be a closed cache of a
/// dropped pool that had the same slot; closed, it serves neither fast path (`limit` is 0),
/// and the slow path replaces it.
#[inline(always)]
pub(crate) fn fast_cache(pool: &PoolShared) -> Option<&ThreadCache> {
    cache_at(fast_entry(pool.fast_index))
}

/// [`fast_cache`] for an unguarded pool, `None` for a guarded one, from the pool's
/// `plain_index` (at most [`FAST_SLOTS`]): the fast paths of `BlockPool` learn both from
/// one load. `pool` anchors the borrow, which must end before the thread's next slow path
/// (see `cache_at`).
#[inline(always)]
pub(crate) fn plain_cache<P>(pool: &P, plain_index: usize) -> Option<&ThreadCache> {
    let _ = pool;
    cache_at(fast_entry(plain_index))
}

#[inline(always)]
fn cache_at<'a>(p: *const ThreadCache) -> Option<&'a ThreadCache> {
    // Entries change only in `install`, when the table drops (nulling them first) and, in
    // the loom models, in `retire_current`: none runs while a fast path of this thread
    // uses the borrow, which ends with the caller's pop or push.
    // SAFETY: table invariant: a non-null entry is the cache `caches[slot]` keeps alive
    // (closed, if its pool was dropped), and stays so for the borrow (see above).
    (!p.is_null()).then(|| unsafe { &*p })
}

/// The hot path of `allocate`: pops a block off `cache`, which must be the calling
/// thread's, and counts the allocation. `None` when the cache is empty or closed; the
/// caller takes the slow path.
#[inline(always)]
pub(crate) fn pop_fast(cache: &ThreadCache) -> Option<NonNull<u8>> {
    let tally = cache.tally.load(Ordering::Relaxed);
    let index = ((tally & LEN_MASK) as usize).wrapping_sub(1);
    if index >= cache.limit.load(Ordering::Relaxed) {
        return None;
    }
    // SAFETY: this thread owns `cache.blocks` (ThreadCache invariant) and holds no other
    // reference to it.
    let blocks = unsafe { &*cache.blocks.get() };
    // SAFETY: `index < limit <= CACHE_CAPACITY` (ThreadCache invariant).
    let raw = unsafe { *blocks.ptrs.get_unchecked(index) };
    // SAFETY: the entries below the count `index + 1` are free blocks, never null.
    let ptr = unsafe { NonNull::new_unchecked(raw) };
    // One block fewer, one allocation more: `index + 1 >= 1`, so no borrow crosses into
    // the pops.
    cache
        .tally
        .store(tally.wrapping_add(ONE_POP - 1), Ordering::Relaxed);
    Some(ptr)
}

/// The hot path of `free`: pushes `ptr`, a vouched-for block of the cache's pool, onto
/// `cache`, which must be the calling thread's; the free is counted by the block count
/// (see [`ThreadCache`]). False when the cache is full or closed; the caller takes the
/// slow path.
#[inline(always)]
pub(crate) fn push_fast(cache: &ThreadCache, ptr: *mut u8) -> bool {
    let tally = cache.tally.load(Ordering::Relaxed);
    let len = (tally & LEN_MASK) as usize;
    if len >= cache.limit.load(Ordering::Relaxed) {
        return false;
    }
    // SAFETY: this thread owns `cache.blocks` (ThreadCache invariant) and holds no other
    // reference to it.
    let blocks = unsafe { &mut *cache.blocks.get() };
    // SAFETY: `len < limit <= CACHE_CAPACITY` (ThreadCache invariant).
    unsafe { *blocks.ptrs.get_unchecked_mut(len) = ptr };
    // `len + 1 <= CACHE_CAPACITY` fits in the count's bits.
    cache.tally.store(tally + 1, Ordering::Relaxed);
    true
}

/// Records that the chunk holding `addr`, a block the registry just vouched for, belongs
/// to `cache`'s pool, whose geometry is `geometry`.
#[inline(always)]
pub(crate) fn remember_chunk(cache: &ThreadCache, addr: usize, geometry: &Geometry) {
    // SAFETY: this thread owns `cache.blocks` (ThreadCache invariant) and holds no other
    // reference to it.
    let blocks = unsafe { &mut *cache.blocks.get() };
    blocks.known_first = (addr & !(CHUNK_SIZE - 1)) + geometry.first_offset;
    blocks.known_span = geometry.span();
}

/// What [`push_known`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KnownPush {
    /// The block is in the cache.
    Pushed,
    /// The block is a block start of the known chunk, and the cache is open but full: the
    /// block is vouched for, and the caller spills without asking the registry again.
    Full,
    /// Not a block start of the known chunk, or the cache is closed: the caller asks the
    /// registry.
    Unknown,
}

/// [`push_fast`] for a block start of the chunk [`remember_chunk`] recorded. One
/// subtraction, one comparison and the multiplication of [`is_stride_multiple`] check it,
/// all on the cache's first line.
///
/// Sound without the registry because only an open cache takes the push (or answers
/// [`KnownPush::Full`]), and an open cache in the fast table is the cache of the live pool
/// in that slot (a dropped pool's caches are closed, and only a slow path of the pool that
/// owns a cache reopens it), whose known chunk the registry vouched for and which stays
/// that pool's while it lives. An offset below `known_span` lies in that chunk's block
/// range, since the range ends within the chunk.
#[inline(always)]
pub(crate) fn push_known(cache: &ThreadCache, ptr: *mut u8) -> KnownPush {
    // SAFETY: this thread owns `cache.blocks` (ThreadCache invariant) and holds no other
    // reference to it; the borrow ends before `push_fast` takes its own.
    let (first, span, magic) = unsafe {
        let blocks = &*cache.blocks.get();
        (blocks.known_first, blocks.known_span, blocks.stride_magic)
    };
    let offset = (ptr as usize).wrapping_sub(first);
    if !(offset < span && is_stride_multiple(offset, magic)) {
        return KnownPush::Unknown;
    }
    if push_fast(cache, ptr) {
        KnownPush::Pushed
    } else if cache.is_closed() {
        KnownPush::Unknown
    } else {
        KnownPush::Full
    }
}

/// A derived type's own per-thread pointer to this thread's cache of its pool, so that
/// `acquire` is one thread-local load and a pop.
///
/// Used by the code `#[derive(Pooled)]` generates (in a `thread_local!` with a `const`
/// initialiser); not part of the stable API.
///
/// Invariant: null, or the address of the calling thread's cache of the type's pool, held
/// by the thread's cache table, which nulls the pointer before it lets the cache go.
#[derive(Debug)]
pub struct TypeCache(Cell<*const ThreadCache>);

impl TypeCache {
    /// An unbound cell: the first `acquire` on each thread binds it.
    #[must_use]
    pub const fn new() -> Self {
        Self(Cell::new(core::ptr::null()))
    }

    /// Pops a block off the calling thread's cache bound to the cell `key`.
    #[inline(always)]
    pub(crate) fn pop_through(key: &'static LocalKey<TypeCache>) -> Through {
        // A closure this small keeps `with` inlined, so the access is one TLS load.
        let p = key.with(|cell| cell.0.get());
        if p.is_null() {
            return Through::Unbound;
        }
        // SAFETY: type invariant: a non-null pointer is this thread's cache, kept alive by
        // its table until the table nulls this cell, which happens only at thread exit or
        // in a slow path of this thread; the borrow ends with this pop.
        match pop_fast(unsafe { &*p }) {
            Some(block) => Through::Block(block),
            None => Through::Miss,
        }
    }
}

/// What [`TypeCache::pop_through`] found.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Through {
    /// A block, counted as allocated.
    Block(NonNull<u8>),
    /// The cell is bound, but the cache is empty or closed: the pool's slow path refills
    /// it, and the cell needs no binding.
    Miss,
    /// The cell is not bound on this thread (yet, or the pool is not plain).
    Unbound,
}

impl Default for TypeCache {
    fn default() -> Self {
        Self::new()
    }
}

/// Pushes `ptr`, the block of a value released by its handle, onto the calling thread's
/// cache of its pool, found through the hint in the block's chunk header: two loads
/// (header, fast table) instead of the four that go through the typed pool. False when the
/// pool is not plain or the cache cannot take it: the caller releases the usual way.
///
/// # Safety
///
/// `ptr` is the block of a live value of a typed pool whose type needs no drop, and no one
/// else owns it: the caller gives the block back.
#[inline(always)]
pub(crate) unsafe fn push_hinted(ptr: *mut u8) -> bool {
    let base = ptr as usize & !(CHUNK_SIZE - 1);
    // SAFETY: a live value of a typed pool lies in a chunk of it, mapped for good (typed
    // pools live for the rest of the process) and starting with a header written before
    // the chunk was published and read-only since.
    let hint = unsafe { (*(base as *const ChunkHeader)).fast_hint } as usize;
    let cache = FAST.with(|fast| fast.get(hint).map_or(core::ptr::null(), Cell::get));
    if cache.is_null() {
        return false;
    }
    // A hint below `FAST_SLOTS` is the slot of the chunk's pool, a plain typed pool, which
    // is never dropped and keeps its slot for good; a plain pool's release is exactly this
    // push of a block it owns (caller).
    // SAFETY: so this thread's fast entry for that slot is its live cache of that pool
    // (table invariant).
    push_fast(unsafe { &*cache }, ptr)
}

/// Binds `cell`, a `TypeCache` of the calling thread, to the thread's cache of `pool`
/// (creating it), if the pool is unguarded and has fast paths at all. Does nothing while
/// the thread exits.
pub(crate) fn bind(pool: &Arc<PoolShared>, cell: &TypeCache) {
    if !pool.fast_paths() || pool.guard != super::GuardLevel::Off {
        return;
    }
    let _ = CACHES.try_with(|table| {
        // SAFETY: the table belongs to this thread, and no other reference into it is live
        // (this is not called from within `with_cache`).
        let caches = unsafe { &mut *table.caches.get() };
        let cache = match caches.get(pool.slot as usize) {
            Some(Some(c)) if c.pool_uid == pool.uid => c,
            _ => match install(table, caches, pool) {
                Some(c) => c,
                None => return,
            },
        };
        let ptr = Arc::as_ptr(cache);
        // SAFETY: as above, this thread alone touches `bound`.
        let bound = unsafe { &mut *table.bound.get() };
        let cell_ptr: *const TypeCache = cell;
        if !bound.iter().any(|&(_, c)| c == cell_ptr) {
            bound.push((pool.slot as usize, cell_ptr));
        }
        cell.0.set(ptr);
    });
}

/// Runs `f` with the calling thread's cache for `pool` and mutable access to its blocks,
/// creating the cache on first use. Returns `None` while the thread's table is being torn
/// down at thread exit; the caller then works on the depot directly.
///
/// `f` must not call `with_cache` or `bind` (either would alias the table); nothing in
/// this crate that `f` reaches does.
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
                _ => install(table, caches, pool)?,
            };
            Some(in_section(cache, f))
        })
        .ok()
        .flatten()
}

/// Runs `f` in a section of `cache` (see [`ThreadCache::enter`]), a cache of the calling
/// thread: one `with_cache` found, or an *open* cache from the fast table, which is the
/// calling thread's cache of the live pool in that slot (see [`push_known`]), so a slow
/// path that starts from a fast path's miss need not look it up again. `f` must not call
/// `with_cache`, `bind` or this.
pub(crate) fn in_section<R>(
    cache: &ThreadCache,
    f: impl FnOnce(&ThreadCache, &mut CachedBlocks) -> R,
) -> R {
    // SAFETY: this thread owns `cache.blocks` (ThreadCache invariant); the fast path's
    // borrow has ended and `f` takes no other (documented above).
    let blocks = unsafe { &mut *cache.blocks.get() };
    cache.enter(blocks);
    let section = Section { cache, blocks };
    f(section.cache, &mut *section.blocks)
}

/// A section of `cache`'s owner over `blocks` (see [`ThreadCache::enter`]), left when
/// dropped, even by an unwinding panic, so that readers never wait for it forever.
struct Section<'a> {
    cache: &'a ThreadCache,
    blocks: &'a mut CachedBlocks,
}

impl Drop for Section<'_> {
    fn drop(&mut self) {
        self.cache.leave(self.blocks);
    }
}

#[cold]
fn install<'t>(
    table: &CacheTable,
    caches: &'t mut Vec<Option<Arc<ThreadCache>>>,
    pool: &Arc<PoolShared>,
) -> Option<&'t Arc<ThreadCache>> {
    let slot = pool.slot as usize;
    if caches.len() <= slot {
        caches.resize(slot + 1, None);
    }
    let entry = caches.get_mut(slot)?;
    // A cache left by a dropped pool that had this slot: its blocks belonged to memory that
    // is gone, so they are forgotten, not flushed. Nothing may point to it once it goes.
    table.unbind(Some(slot));
    let cache = Arc::new(ThreadCache::new(pool));
    pool.adopt_cache(&cache);
    let fast = if pool.fast_paths() {
        Arc::as_ptr(&cache)
    } else {
        core::ptr::null()
    };
    let _ = FAST.try_with(|table| {
        if let Some(f) = table.get(slot).filter(|_| slot < FAST_SLOTS) {
            f.set(fast);
        }
    });
    *entry = Some(cache);
    entry.as_ref()
}
