//! [`ThreadCache`]: one thread's free blocks of one pool, and the fast operations on it.
//!
//! The fast operations ([`ThreadCache::pop`], [`ThreadCache::push`] and
//! [`ThreadCache::push_in_remembered_chunk`]) read nothing of the pool and execute no
//! atomic read-modify-write, lock or syscall. They are correct only on the thread that owns
//! the cache, so they are `unsafe fn`s whose callers prove that they hold their own thread's
//! cache: one the thread's table or fast table gave them (see `table` and `fast_table`).

use core::cell::UnsafeCell as StdUnsafeCell;
use core::ptr::{null_mut, NonNull};
use std::sync::atomic::{
    AtomicU64 as StdAtomicU64, AtomicUsize as StdAtomicUsize, Ordering as StdOrdering,
};

use crate::block::chunk::geometry::{is_stride_multiple, Geometry};
use crate::block::chunk::CHUNK_SIZE;
use crate::block::depot::MAGAZINE_SIZE;
use crate::block::stats::{ThreadCounters, ThreadCounts};
use crate::sync::{fence, spin_loop, yield_now, AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// Free blocks a thread's cache holds at most: two magazines.
pub(crate) const CACHE_CAPACITY: usize = 2 * MAGAZINE_SIZE;

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
// The push reads the count and the limit as bytes.
const _: () = assert!(LEN_BITS == 8 && CACHE_CAPACITY <= u8::MAX as usize);
/// What a counted pop adds to [`ThreadCache::tally`] besides taking one block off.
const ONE_POP: u64 = 1 << LEN_BITS;
const _: () = assert!((CACHE_CAPACITY as u64) < ONE_POP);
/// [`ThreadCache::tally`] while a section runs: a count above any `limit`, so that a fast
/// operation the section's own thread makes meanwhile (from inside the slow path, which
/// only a global allocator built on the pools can do) misses without touching the blocks
/// the section holds.
const IN_SECTION: u64 = LEN_MASK;
const _: () = assert!((CACHE_CAPACITY as u64) < IN_SECTION - 1);

/// The blocks a cache holds.
///
/// Invariants: `len <= CACHE_CAPACITY`, and `ptrs[..len]` are free (non-null) blocks of the
/// cache's pool that no one else holds, where `len` is this field inside a section of a
/// [`ThreadCache`] (and for a cache attached to no thread) and the count in
/// `ThreadCache::tally` outside one. `remembered_span` is 0, or `remembered_first` is the
/// first block of a chunk of the cache's pool that the registry vouched for (the
/// *remembered chunk*), `remembered_span` the geometry's span and `stride_magic` its stride
/// magic (see [`ThreadCache::remember_chunk`]). The `fresh_left` blocks from `fresh_next`
/// on, one stride apart in one chunk, are carved blocks of the cache's pool that no one else
/// holds and that were never handed out.
#[derive(Debug)]
#[repr(C)]
pub(crate) struct CachedBlocks {
    /// The number of cached blocks while a slow path works on them (see above).
    pub(crate) len: usize,
    /// Where the blocks of the remembered chunk, the chunk `BlockPool::free` last vouched
    /// for through the registry, begin: with `remembered_span`, a range that holds only
    /// that chunk's blocks. Chunks never change pool while their pool lives.
    pub(crate) remembered_first: usize,
    /// Bytes of block range at `remembered_first`: 0 while no chunk is remembered.
    pub(crate) remembered_span: usize,
    /// The pool's `Geometry::stride_magic`, for the block-start test of
    /// [`ThreadCache::push_in_remembered_chunk`].
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
    /// An empty cache that remembers no chunk.
    pub(crate) const fn new(stamp: u64) -> Self {
        Self {
            len: 0,
            remembered_first: 0,
            remembered_span: 0,
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
/// Invariants: `blocks` is only accessed by the thread whose table holds the cache (its
/// *owner*), and `tally`, `settled_len`, `section`, `fresh_left` and `counters` are written
/// only by it; other threads (the pool's statistics, flush requests, the pool's drop) read
/// those and store 0 into `limit`. `limit` is 0 or the pool's `cache_limit`, so at most
/// `CACHE_CAPACITY`.
///
/// A cache is *open* while `limit` is not 0 and *closed* once another thread, or its owner,
/// stored 0 into it ([`Self::close`]): the fast operations serve only an open cache, and
/// only the owner's slow path reopens it ([`Self::reopen`]; see the `cache` module docs).
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
    /// counted since the last section above them (the tally invariant). During a section:
    /// [`IN_SECTION`].
    tally: AtomicU64,
    blocks: StdUnsafeCell<CachedBlocks>,
    /// The number of cached blocks when the last section ended.
    settled_len: AtomicU64,
    /// Odd while a section runs; bumped at its start and at its end.
    section: AtomicU64,
    /// `blocks.fresh_left` as the last section left it, for readers on other threads (the
    /// fresh range changes only in sections). A std atomic under loom too: statistics
    /// only, off the models' paths.
    fresh_left: StdAtomicUsize,
    pub(crate) counters: ThreadCounters,
    pub(crate) pool_uid: u64,
    /// 1 while another thread asks this cache alone to flush ([`Self::request_flush`]),
    /// until the owner's slow path takes the request ([`Self::take_flush_request`]). After
    /// the fast paths' fields, which never read it.
    flush_requested: AtomicU32,
    /// When the owner's last slow path ran (the pool's idleness clock, in milliseconds),
    /// written only by the owner's slow paths. A std atomic under loom too: read only to
    /// choose which caches to ask, never part of a protocol.
    last_slow: StdAtomicU64,
}

// SAFETY: `blocks` is touched only by the owning thread (type invariant), and never for
// the shared cache of unbound cells, which has no owner (see `ThreadCache::unbound`); the
// counters are atomics; the block pointers are plain addresses.
unsafe impl Sync for ThreadCache {}
// SAFETY: as above; a cache moves between threads only inside an `Arc` whose other holders
// read counters alone.
unsafe impl Send for ThreadCache {}

/// A closed, empty [`ThreadCache`] of the pool `$pool_uid` with `$counters`, attached to
/// no thread: the body of [`ThreadCache::detached`] and of the `const`
/// `ThreadCache::unbound`.
macro_rules! closed_cache {
    ($pool_uid:expr, $counters:expr) => {
        ThreadCache {
            limit: AtomicUsize::new(0),
            tally: AtomicU64::new(0),
            settled_len: AtomicU64::new(0),
            section: AtomicU64::new(0),
            fresh_left: StdAtomicUsize::new(0),
            pool_uid: $pool_uid,
            blocks: StdUnsafeCell::new(CachedBlocks::new(0)),
            counters: $counters,
            flush_requested: AtomicU32::new(0),
            last_slow: StdAtomicU64::new(0),
        }
    };
}

impl ThreadCache {
    /// An open, empty cache of the pool `pool_uid`, whose fast paths may hold `limit`
    /// blocks (the pool's `cache_limit`), in step with the pool stamp `stamp`, for blocks
    /// laid out with the stride magic `stride_magic`.
    pub(crate) fn new(pool_uid: u64, limit: usize, stamp: u64, stride_magic: u64) -> Self {
        Self {
            limit: AtomicUsize::new(limit),
            tally: AtomicU64::new(0),
            settled_len: AtomicU64::new(0),
            section: AtomicU64::new(0),
            fresh_left: StdAtomicUsize::new(0),
            pool_uid,
            blocks: StdUnsafeCell::new(CachedBlocks {
                stride_magic,
                ..CachedBlocks::new(stamp)
            }),
            counters: ThreadCounters::default(),
            flush_requested: AtomicU32::new(0),
            last_slow: StdAtomicU64::new(0),
        }
    }

    /// The cache every unbound [`CacheCell`](super::CacheCell) points at: closed and
    /// empty, held by no thread's table and listed in no pool's roster, so that nothing
    /// ever reopens, closes, enters or counts it, and a fast operation on it misses on its
    /// own checks (`limit` 0) without touching its blocks or writing anything. It stays as
    /// this makes it for good, so every thread may read it at once. Outside loom, whose
    /// atomics have no `const` constructor.
    #[cfg(not(loom))]
    pub(crate) const fn unbound() -> Self {
        closed_cache!(0, ThreadCounters::zero())
    }

    /// A cache attached to no thread table, for counting the work of one slow-path call.
    pub(crate) fn detached(pool_uid: u64) -> Self {
        closed_cache!(pool_uid, ThreadCounters::default())
    }

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
        // The fast paths miss until `leave` (see `IN_SECTION`); readers on other threads
        // wait out the section, so never read this.
        self.tally.store(IN_SECTION, Ordering::Relaxed);
    }

    /// Ends the section [`Self::enter`] started: the fast paths go on from `blocks.len`.
    fn leave(&self, blocks: &CachedBlocks) {
        let len = blocks.len as u64 & LEN_MASK;
        self.tally.store(len, Ordering::Relaxed);
        self.settled_len.store(len, Ordering::Relaxed);
        self.fresh_left
            .store(blocks.fresh_left, StdOrdering::Relaxed);
        let section = self.section.load(Ordering::Relaxed);
        self.section
            .store((section | 1).wrapping_add(1), Ordering::Release);
    }

    /// Runs `f` in a section of this cache (see [`ThreadCache::enter`]), with mutable
    /// access to its blocks: the slow paths' way in. `None`, without running `f`, when the
    /// calling thread is inside a section of this cache already: a call made from inside
    /// the slow path (by a global allocator built on the pools) then takes the path
    /// without a cache, instead of a second borrow of the blocks.
    ///
    /// # Safety
    ///
    /// The calling thread owns this cache: one its table gave it (`with_cache`, thread
    /// exit), or an *open* cache from its fast table, which is the calling thread's cache of
    /// the live pool in that slot (see [`Self::push_in_remembered_chunk`]), so that a slow
    /// path that starts from a fast path's miss need not look it up again. No other
    /// reference to the cache's blocks is live (a fast operation's has ended), and `f` does
    /// not call `with_cache`, `bind` or this (none of what `f` reaches in this crate does).
    pub(crate) unsafe fn in_section<R>(
        &self,
        f: impl FnOnce(&ThreadCache, &mut CachedBlocks) -> R,
    ) -> Option<R> {
        // Only the owner (the calling thread) writes `section`: odd means one of this
        // thread's calls is inside a section of this cache, further up the stack.
        if self.section.load(Ordering::Relaxed) & 1 != 0 {
            return None;
        }
        // SAFETY: this thread owns the cache's blocks (caller), no other reference to them
        // is live (caller), and no section of this thread holds them (just checked).
        let blocks = unsafe { &mut *self.blocks.get() };
        self.enter(blocks);
        let section = Section {
            cache: self,
            blocks,
        };
        Some(f(section.cache, &mut *section.blocks))
    }

    /// Takes back the allocation a pop counted for a block the caller refuses.
    ///
    /// # Safety
    ///
    /// As for [`Self::in_section`]: the calling thread owns this cache and holds no other
    /// reference to its blocks.
    pub(crate) unsafe fn refuse_popped(&self) {
        // SAFETY: the caller's contract, passed on; the closure reaches nothing of the table.
        // A pop just succeeded, so no section of this cache runs: the count is taken back.
        let _ = unsafe { self.in_section(|cache, _| cache.counters.refused.bump()) };
    }

    /// The counts of this cache's thread, from any thread, as they were at one instant
    /// (a sequence-lock read: it waits out a section the owner is in). The caller holds
    /// no lock a section might take.
    pub(crate) fn counts(&self) -> ThreadCounts {
        let mut waits = 0u32;
        loop {
            let before = self.section.load(Ordering::Acquire);
            if before & 1 == 0 {
                let tally = self.tally.load(Ordering::Relaxed);
                let settled = self.settled_len.load(Ordering::Relaxed);
                let c = &self.counters;
                let pops = tally >> LEN_BITS;
                let pushes = (tally & LEN_MASK).wrapping_sub(settled).wrapping_add(pops);
                let counts = ThreadCounts {
                    allocations: c
                        .allocations
                        .get()
                        .wrapping_add(pops)
                        .wrapping_sub(c.refused.get()),
                    frees: c.frees.get().wrapping_add(pushes),
                    depot_exchanges: c.depot_exchanges.get(),
                    cached: tally & LEN_MASK,
                    fresh: self.fresh_left.load(StdOrdering::Relaxed) as u64,
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

    /// Makes the owner's fast paths miss until its slow path reopens the cache. Any thread.
    pub(crate) fn close(&self) {
        self.limit.store(0, Ordering::SeqCst);
    }

    /// Whether the cache is closed (by a flush request, from any thread including the
    /// owner, or by its pool's drop).
    #[inline]
    pub(crate) fn is_closed(&self) -> bool {
        self.limit.load(Ordering::Relaxed) == 0
    }

    /// Asks this cache alone to flush on its owner's next slow path, from any thread: sets
    /// the request, then closes the cache, so the owner's next call takes a slow path. The
    /// order is the epoch's (see the module docs): the owner reopens, then (after the
    /// `SeqCst` fence of [`Self::reopen`]) takes the request, so either it sees the request
    /// or this close lands after its reopen and sends its next call back to the slow path.
    pub(crate) fn request_flush(&self) {
        self.flush_requested.store(1, Ordering::SeqCst);
        self.close();
    }

    /// Whether another thread asked this cache to flush since the owner last took a
    /// request; takes the request. The owner's slow paths call it after reopening. A load,
    /// and a swap only when a request is there.
    pub(crate) fn take_flush_request(&self) -> bool {
        self.flush_requested.load(Ordering::SeqCst) != 0
            && self.flush_requested.swap(0, Ordering::SeqCst) != 0
    }

    /// Whether the cache holds blocks, cached or in its fresh range, as far as another
    /// thread can tell now.
    pub(crate) fn holds_blocks(&self) -> bool {
        self.tally.load(Ordering::Relaxed) & LEN_MASK != 0
            || self.fresh_left.load(StdOrdering::Relaxed) != 0
    }

    /// Records that the owner's slow path ran at `now` (milliseconds of the pool's clock).
    /// Owner only.
    pub(crate) fn mark_slow(&self, now: u64) {
        self.last_slow.store(now, StdOrdering::Relaxed);
    }

    /// When the owner's last slow path ran, as [`Self::mark_slow`] recorded it.
    pub(crate) fn last_slow(&self) -> u64 {
        self.last_slow.load(StdOrdering::Relaxed)
    }

    /// Lets the fast paths hold up to `limit` blocks again; the caller then checks the
    /// pool's epoch (see the module docs).
    ///
    /// # Safety
    ///
    /// A slow path of the owner thread of this cache calls this, with the cache's pool
    /// alive (it holds the pool) and `limit` that pool's `cache_limit`. (Reopened by anyone
    /// else, a cache of a dropped pool would serve its owner's fast paths blocks of memory
    /// that is gone.)
    pub(crate) unsafe fn reopen(&self, limit: usize) {
        self.limit.store(limit, Ordering::Relaxed);
        fence(Ordering::SeqCst);
    }
}

/// The fast operations.
impl ThreadCache {
    /// The hot path of `allocate`: pops a block and counts the allocation. `None` when the
    /// cache is empty or closed; the caller takes the slow path.
    ///
    /// # Safety
    ///
    /// The calling thread owns this cache (its table or fast table gave it), and holds no
    /// other reference to its blocks but a section's (in which the pop misses without
    /// touching them: see [`IN_SECTION`]); or the cache is the one [`Self::unbound`] made,
    /// whose count and limit stay 0, so that the pop only reads them and misses.
    #[inline(always)]
    pub(crate) unsafe fn pop(&self) -> Option<NonNull<u8>> {
        let tally = self.tally.load(Ordering::Relaxed);
        let index = ((tally & LEN_MASK) as usize).wrapping_sub(1);
        if index >= self.limit.load(Ordering::Relaxed) {
            return None;
        }
        // SAFETY: this thread owns the cache's blocks (caller), and no section holds them:
        // during one, `index` is `IN_SECTION - 1`, above any limit.
        let blocks = unsafe { &*self.blocks.get() };
        // SAFETY: `index < limit <= CACHE_CAPACITY` (ThreadCache invariant).
        let raw = unsafe { *blocks.ptrs.get_unchecked(index) };
        // SAFETY: the entries below the count `index + 1` are free blocks, never null.
        let ptr = unsafe { NonNull::new_unchecked(raw) };
        // One block fewer, one allocation more: `index + 1 >= 1`, so no borrow crosses into
        // the pops.
        self.tally
            .store(tally.wrapping_add(ONE_POP - 1), Ordering::Relaxed);
        Some(ptr)
    }

    /// The hot path of `free`: pushes `ptr`; the free is counted by the block count (see
    /// [`ThreadCache`]). False when the cache is full or closed; the caller takes the slow
    /// path.
    ///
    /// # Safety
    ///
    /// As for [`Self::pop`]; and `ptr` is a free block of this cache's pool that no one else
    /// holds: the caller gives it to the cache (a block it owns and frees, vouched for by
    /// the registry or by the caller's own contract).
    #[inline(always)]
    pub(crate) unsafe fn push(&self, ptr: *mut u8) -> bool {
        let tally = self.tally.load(Ordering::Relaxed);
        // SAFETY: `tally` was just loaded by this thread, which owns the cache (caller);
        // `ptr` as the caller vouches.
        unsafe { self.push_loaded(tally, ptr) }
    }

    /// [`Self::push`] with the count word already loaded.
    ///
    /// # Safety
    ///
    /// As for [`Self::push`]; and `tally` is the count word as this thread last loaded or
    /// stored it (only the owning thread stores it, so it is still the current value).
    #[inline(always)]
    unsafe fn push_loaded(&self, tally: u64, ptr: *mut u8) -> bool {
        // The count is the low byte of `tally` and `limit` fits in a byte (see `LEN_BITS`):
        // byte compares, which need no mask.
        let len = tally as u8;
        if len >= self.limit.load(Ordering::Relaxed) as u8 {
            return false;
        }
        let len = usize::from(len);
        // SAFETY: this thread owns the cache's blocks (caller), and no section holds them:
        // during one, `len` is `IN_SECTION`, above any limit.
        let blocks = unsafe { &mut *self.blocks.get() };
        // SAFETY: `len < limit <= CACHE_CAPACITY` (ThreadCache invariant).
        unsafe { *blocks.ptrs.get_unchecked_mut(len) = ptr };
        // `len + 1 <= CACHE_CAPACITY` fits in the count's bits.
        self.tally.store(tally + 1, Ordering::Relaxed);
        true
    }

    /// Remembers the chunk holding `addr`, for [`Self::push_in_remembered_chunk`].
    ///
    /// # Safety
    ///
    /// The calling thread owns this cache, holds no other reference to its blocks and is
    /// in no section of it (a push onto it just succeeded); and the registry just vouched
    /// for `addr` as a block of this cache's pool, whose geometry is `geometry`.
    #[inline(always)]
    pub(crate) unsafe fn remember_chunk(&self, addr: usize, geometry: &Geometry) {
        // SAFETY: this thread owns the cache's blocks and no reference to them is live
        // (caller).
        let blocks = unsafe { &mut *self.blocks.get() };
        blocks.remembered_first = (addr & !(CHUNK_SIZE - 1)) + geometry.first_offset;
        blocks.remembered_span = geometry.span();
    }

    /// [`Self::push`] for a block start of the remembered chunk (see [`CachedBlocks`]). One
    /// subtraction, one comparison and the multiplication of [`is_stride_multiple`] check
    /// it, all on the cache's first line.
    ///
    /// Sound without the registry because only an open cache takes the push (or answers
    /// [`RememberedPush::Full`]), and an open cache in the fast table is the cache of the
    /// live pool in that slot (a dropped pool's caches are closed, and only a slow path of
    /// the pool that owns a cache reopens it), whose remembered chunk the registry vouched
    /// for and which stays that pool's while it lives. An offset below `remembered_span`
    /// lies in that chunk's block range, since the range ends within the chunk.
    ///
    /// # Safety
    ///
    /// As for [`Self::pop`]; and if `ptr` is a block start of this cache's pool, it is a
    /// block the caller owns and gives back (a caller may pass any other address, which
    /// this refuses as [`RememberedPush::NotVouched`] without reading it).
    #[inline(always)]
    pub(crate) unsafe fn push_in_remembered_chunk(&self, ptr: *mut u8) -> RememberedPush {
        let tally = self.tally.load(Ordering::Relaxed);
        if tally == IN_SECTION {
            // A section of this thread holds the blocks (see `IN_SECTION`).
            return RememberedPush::NotVouched;
        }
        // SAFETY: this thread owns the cache's blocks (caller), holds no other reference
        // to them, and is in no section of this cache (just checked); the borrow ends before
        // `push_loaded` takes its own.
        let (first, span, magic) = unsafe {
            let blocks = &*self.blocks.get();
            (
                blocks.remembered_first,
                blocks.remembered_span,
                blocks.stride_magic,
            )
        };
        let offset = (ptr as usize).wrapping_sub(first);
        if !(offset < span && is_stride_multiple(offset, magic)) {
            return RememberedPush::NotVouched;
        }
        // SAFETY: the caller owns this cache and `tally` is its count word, loaded above by
        // this thread; `ptr` is a block start of the remembered chunk, so of this cache's
        // pool (see above), which the caller owns and gives back.
        if unsafe { self.push_loaded(tally, ptr) } {
            RememberedPush::Pushed
        } else if self.is_closed() {
            RememberedPush::NotVouched
        } else {
            RememberedPush::Full
        }
    }
}

/// What [`ThreadCache::push_in_remembered_chunk`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RememberedPush {
    /// The block is in the cache.
    Pushed,
    /// The block is a block start of the remembered chunk, and the cache is open but full:
    /// the block is vouched for, and the caller spills without asking the registry again.
    Full,
    /// Not a block start of the remembered chunk, or the cache is closed: the caller asks
    /// the registry.
    NotVouched,
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

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_fast_operation_inside_a_section_misses_without_touching_the_blocks() {
        let cache = ThreadCache::new(1, 4, 0, 0);
        let mut slots = [0u64; 4];
        let block = slots.as_mut_ptr().cast::<u8>();
        // SAFETY: this thread owns `cache` and holds no reference to its blocks; `block`
        // stands for a free block of its pool (the cache never reads a block).
        assert!(unsafe { cache.push(block) });
        // From inside the slow path, as a global allocator built on the pool would call:
        // under miri, a fast operation that touched the blocks would be caught here.
        let section = |cache: &ThreadCache, blocks: &mut CachedBlocks| {
            assert_eq!(blocks.len, 1);
            // SAFETY: the calls this test is about: this thread owns `cache`, and the only
            // reference to its blocks is the section's.
            let popped = unsafe { cache.pop() };
            // SAFETY: as above.
            let pushed = unsafe { cache.push(block) };
            // SAFETY: as above.
            let remembered = unsafe { cache.push_in_remembered_chunk(block) };
            // SAFETY: as above.
            let nested = unsafe { cache.in_section(|_, _| ()) };
            blocks.len = 0; // the section hands the block out
            (popped, pushed, remembered, nested)
        };
        // SAFETY: this thread owns `cache`, and no reference to its blocks is live.
        let inside = unsafe { cache.in_section(section) };
        assert_eq!(
            inside,
            Some((None, false, RememberedPush::NotVouched, None))
        );
        // The section's count stands, and the fast paths serve again.
        let counts = cache.counts();
        assert_eq!((counts.cached, counts.frees), (0, 1));
        // SAFETY: as above, no section runs.
        assert!(unsafe { cache.push(block) });
        // SAFETY: as above.
        assert_eq!(unsafe { cache.pop() }, NonNull::new(block));
    }
}
