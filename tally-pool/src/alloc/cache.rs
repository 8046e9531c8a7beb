//! Thread caches: per thread and size class, a stack of the addresses of free blocks of
//! the thread's node, room for two batches.
//!
//! Allocation pops, a free of a block of the thread's node pushes: no atomic, no lock, and
//! the block itself is neither read nor written, so a block freed by another thread than
//! the one that used it stays in that thread's processor cache. A free reads the block's
//! chunk header only when the chunk is not the one the class's cache last checked. An
//! empty stack takes a batch from the node's heap, a full one gives its oldest batch back
//! (both copies of addresses); a block of another node goes straight home to its heap.
//! Every block in a cache belongs to the cache's node: when a refill finds the thread on
//! another node, the cache first gives everything back. The inlined fast paths only pop
//! or push; everything else is one call out of line.
//!
//! The cache is a zero-initialised `const` `thread_local!` without a destructor, so it
//! never allocates, reaching it checks nothing, and it adds nothing to the TLS image a
//! new thread copies: it holds the per-class counters and a pointer to its slots (under
//! 3 KiB in all). The slots themselves (about 53 KiB) are a mapping of their own, taken
//! when the cache is first used (`adopt`) from a list of the slots of exited threads, or
//! mapped then; a thread that never calls the allocator maps none.
//!
//! At adoption the thread also sets its value of one process-wide `pthread_key_create`
//! key, before the cache holds a block. The key's destructor gives everything back,
//! publishes the counts, marks the cache gone and returns its slots to the list. glibc
//! runs key destructors after the thread-local destructors and runs them again for keys
//! set meanwhile, so a cache adopted from a thread-local or a key destructor is flushed
//! too. A call after the flush finds the cache gone and works on the heaps directly. So
//! does a call while the cache is busy (re-entry from within the allocator, which nothing
//! on its paths does; such calls are counted in [`reentries`]), and one on a thread whose
//! adoption failed (no key, or no memory for the slots): it retries at its next refill.

use core::cell::{Cell, UnsafeCell};
use core::ptr::{self, NonNull};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{heap, large};
use crate::block::{SizeClass, CLASS_COUNT};
use crate::sys;

/// Refills between two reads of the thread's node.
const NODE_REFRESH: u32 = 64;

/// Blocks a class's cache trades with its heap at a time: 64 KiB worth, 2 to 64.
const fn batch_of(index: usize) -> usize {
    let size = match SizeClass::from_index(index) {
        Some(class) => class.size(),
        None => 8,
    };
    let b = 64 * 1024 / size;
    if b < 2 {
        2
    } else if b > 64 {
        64
    } else {
        b
    }
}

/// Room for two batches of every class, one class after another: every class's slots.
const SLOTS: usize = {
    let (mut total, mut i) = (0, 0);
    while i < CLASS_COUNT {
        total += 2 * batch_of(i);
        i += 1;
    }
    total
};

// Slot indices are `u16`s: this fails to build if they could not be.
const _: [(); 1] = [(); (SLOTS <= u16::MAX as usize) as usize];

/// One class's part of the thread's slots and its unpublished counts.
///
/// Invariant: `base <= top <= limit`, `limit - base` is two batches of the class and
/// `limit <= SLOTS`; slots `base..top` hold the cached blocks, most recently freed last.
/// `chunk` is 0 or the address of a chunk whose header names this class and the cache's
/// node (a chunk's header never changes and chunks are never unmapped, so it stays so
/// until the cache changes node).
#[derive(Clone, Copy)]
struct ClassCache {
    base: u16,
    top: u16,
    limit: u16,
    /// `top - base` as the heap's `cached` last saw it.
    published: u16,
    /// A chunk the cache knows to be of this class and its node: a free of a block in it
    /// needs no read of the chunk's header.
    chunk: usize,
    /// Blocks taken from the heap minus blocks given back, since the last publication
    /// (wrapping): with `frees` and the change in `top - base` it gives the allocations,
    /// which the fast path thus need not count.
    traded: u64,
    frees: u64,
}

impl ClassCache {
    /// How many blocks the cache holds.
    #[inline(always)]
    fn count(&self) -> usize {
        (self.top - self.base) as usize
    }
}

/// Every class's empty cache, each with its two batches of slots after the previous
/// class's: what a cache's classes become at adoption.
// Evaluated at compile time, where an index out of bounds fails the build.
#[allow(clippy::indexing_slicing)]
const CLASSES: [ClassCache; CLASS_COUNT] = {
    let mut classes = [UNADOPTED; CLASS_COUNT];
    let (mut base, mut i) = (0, 0);
    while i < CLASS_COUNT {
        let limit = base + 2 * batch_of(i);
        // At most `SLOTS`, which fits in a `u16` (checked above).
        classes[i].base = base as u16;
        classes[i].top = base as u16;
        classes[i].limit = limit as u16;
        base = limit;
        i += 1;
    }
    classes
};

/// A class's cache before adoption: no slots, so both fast paths go out of line.
const UNADOPTED: ClassCache = ClassCache {
    base: 0,
    top: 0,
    limit: 0,
    published: 0,
    chunk: 0,
    traded: 0,
    frees: 0,
};

/// A thread's caches.
///
/// Invariant: `slots` is null, and then every class is [`UNADOPTED`] (`limit` 0) and
/// `node` means nothing, or it is a slot block (see [`slot_blocks`]) this cache alone
/// uses, `SLOTS` addresses long. Every address in a class's slots `base..top` is a free
/// block of that class of the heap of `node`, owned by this cache alone, and no address
/// is in two slots; one with the [`heap::FRESH`] bit names a block not written since its
/// chunk was mapped.
struct CacheState {
    node: usize,
    refills: u32,
    classes: [ClassCache; CLASS_COUNT],
    slots: Slots,
}

impl CacheState {
    /// Whether the cache has its slots and knows its node.
    fn adopted(&self) -> bool {
        !self.slots.0.is_null()
    }
}

/// A cache's slots: null before adoption, then a slot block (see [`slot_blocks`]) of
/// `SLOTS` addresses that only the owning cache uses.
struct Slots(*mut *mut u8);

impl Slots {
    /// The slots, empty before adoption.
    fn get(&self) -> &[*mut u8] {
        if self.0.is_null() {
            return &[];
        }
        // SAFETY: a non-null pointer is a slot block of `SLOTS` addresses only this
        // cache uses (invariant), zero pages when mapped and written only with addresses
        // since; `&self` keeps `&mut` uses away while the slice lives.
        unsafe { core::slice::from_raw_parts(self.0, SLOTS) }
    }

    /// The slots, mutable, empty before adoption.
    fn get_mut(&mut self) -> &mut [*mut u8] {
        if self.0.is_null() {
            return &mut [];
        }
        // SAFETY: as in `get`; `&mut self` makes this the only reference into them.
        unsafe { core::slice::from_raw_parts_mut(self.0, SLOTS) }
    }
}

/// [`ThreadCache::mode`] of a cache no call is using.
const FREE: u8 = 0;
/// [`ThreadCache::mode`] of a cache a call is using.
const BUSY: u8 = 1;
/// [`ThreadCache::mode`] of a cache flushed at thread exit, never used again.
const GONE: u8 = 2;

/// The thread-local owner of a [`CacheState`].
///
/// Invariant: a reference to `state` exists only while `mode` is `BUSY`, set by the code
/// that made it; `mode` lives outside the state, so checking it never touches the state
/// an outer call may hold. A cache holds blocks only once its thread's value of the
/// flush key ([`flush_key`]) is set, whose destructor flushes it and sets `GONE` at
/// thread exit. The state is all zeroes until adoption, so the thread-local adds nothing
/// to the TLS image.
pub(super) struct ThreadCache {
    mode: Cell<u8>,
    state: UnsafeCell<CacheState>,
}

impl ThreadCache {
    const fn new() -> Self {
        Self {
            mode: Cell::new(FREE),
            state: UnsafeCell::new(CacheState {
                node: 0,
                refills: 0,
                classes: [UNADOPTED; CLASS_COUNT],
                slots: Slots(ptr::null_mut()),
            }),
        }
    }
}

/// The destructor of the flush key: flushes the thread's cache, marks it gone and gives
/// its slots back.
unsafe extern "C" fn flush_at_exit(_: *mut libc::c_void) {
    let _ = CACHE.try_with(|cache| {
        if cache.mode.replace(GONE) == FREE {
            // SAFETY: the mode was `FREE`, so no reference to the state exists
            // (invariant); `GONE` keeps every later call away from it.
            let state = unsafe { &mut *cache.state.get() };
            flush_all(state);
            let slots = core::mem::replace(&mut state.slots.0, ptr::null_mut());
            state.classes = [UNADOPTED; CLASS_COUNT];
            if let Some(slots) = NonNull::new(slots) {
                // SAFETY: the cache's own slot block (invariant), which it no longer uses:
                // the cache is gone for good.
                unsafe { slot_blocks::give(slots.cast()) };
            }
        }
    });
}

/// [`FLUSH_KEY`] before its creation.
const NO_KEY: usize = 0;
/// [`FLUSH_KEY`] while a thread creates the key.
const CREATING: usize = 1;

/// The flush key plus 2, or [`NO_KEY`] or [`CREATING`].
static FLUSH_KEY: AtomicUsize = AtomicUsize::new(NO_KEY);

/// The process's flush key, whose destructor is [`flush_at_exit`]: created by the first
/// caller; `None` while another thread creates it (never waiting for it, as a wait could
/// outlast a `fork` and hang the child) or if the C library refused it (a later call
/// tries again). A child forked while the key was being created never gets it: its
/// threads work without caches.
fn flush_key() -> Option<libc::pthread_key_t> {
    let key = FLUSH_KEY.load(Ordering::Acquire);
    if key >= 2 {
        return libc::pthread_key_t::try_from(key - 2).ok();
    }
    if key == CREATING
        || FLUSH_KEY
            .compare_exchange(NO_KEY, CREATING, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
    {
        return None;
    }
    let mut key: libc::pthread_key_t = 0;
    // SAFETY: `key` is a valid place for the key; `flush_at_exit` may run on any thread at
    // its exit, which it is made for. glibc keeps keys in a static table: no allocation.
    let created = unsafe { libc::pthread_key_create(&mut key, Some(flush_at_exit)) } == 0;
    match usize::try_from(key).ok().and_then(|k| k.checked_add(2)) {
        Some(stored) if created => {
            FLUSH_KEY.store(stored, Ordering::Release);
            Some(key)
        }
        _ => {
            FLUSH_KEY.store(NO_KEY, Ordering::Release);
            None
        }
    }
}

mod slot_blocks;
mod uncached;

use uncached::{allocate_uncached, free_uncached};
pub(super) use uncached::{mismatched_frees, reentries, uncached_allocations};

std::thread_local! {
    static CACHE: ThreadCache = const { ThreadCache::new() };
}

/// The calling thread's node as a heap index (node 0 where the OS cannot tell).
pub(super) fn current_node() -> usize {
    heap::index_of_node(large::note_node(sys::current_node().unwrap_or(0)))
}

/// Gives a cache that has no slots its slots and its node, after setting the thread's
/// value of the flush key; false, leaving it as it was (holding nothing), if the key does
/// not exist yet or the OS refused memory.
#[cold]
#[inline(never)]
fn adopt(state: &mut CacheState) -> bool {
    let Some(key) = flush_key() else {
        return false;
    };
    let Some(slots) = slot_blocks::take() else {
        return false;
    };
    // SAFETY: `key` is a key this process created and never deletes; any non-null value
    // makes its destructor run at thread exit.
    if unsafe { libc::pthread_setspecific(key, ptr::NonNull::<u8>::dangling().as_ptr().cast()) }
        != 0
    {
        // SAFETY: the block just taken, unused.
        unsafe { slot_blocks::give(slots) };
        return false;
    }
    state.slots = Slots(slots.as_ptr());
    state.classes = CLASSES;
    state.node = current_node();
    true
}

/// Runs `f` on the thread's cache state if it is not busy or gone, marking it busy.
fn with_state<R>(f: impl FnOnce(&mut CacheState) -> R) -> Option<R> {
    CACHE
        .try_with(|cache| {
            let r = enter(cache, f);
            if r.is_none() {
                bypass(cache);
            }
            r
        })
        .ok()
        .flatten()
}

/// Runs `f` on `cache`'s state unless it is busy or gone (`None` then), marking it busy
/// meanwhile.
fn enter<R>(cache: &ThreadCache, f: impl FnOnce(&mut CacheState) -> R) -> Option<R> {
    if cache.mode.get() != FREE {
        return None;
    }
    cache.mode.set(BUSY);
    // SAFETY: the mode was `FREE`, so no reference to the state exists (invariant; the
    // cache is not `Sync`, so only this thread reaches it); this one lives until `f`
    // returns, and the mode stays `BUSY` until then.
    let r = f(unsafe { &mut *cache.state.get() });
    cache.mode.set(FREE);
    Some(r)
}

/// Notes a call that finds the cache not `FREE`: a re-entry if it is busy.
#[cold]
#[inline(never)]
fn bypass(cache: &ThreadCache) {
    if cache.mode.get() == BUSY {
        uncached::REENTRIES.fetch_add(1, Ordering::Relaxed);
    }
}

/// A block of class `index`, or null if the OS refused memory or no class has that
/// index. The address carries [`heap::FRESH`] if the block reads as zero: the caller
/// strips it.
#[inline(always)]
pub(super) fn allocate(index: usize) -> *mut u8 {
    // The fast path only pops; everything else is one call out of line, after the cache
    // is released, so that the inlined code needs no saved registers.
    let popped = CACHE.try_with(|cache| {
        if cache.mode.get() != FREE {
            return ptr::null_mut();
        }
        cache.mode.set(BUSY);
        // SAFETY: as in `enter`: the mode was `FREE`, so this is the only reference to the
        // state, and it ends before the mode is `FREE` again.
        let state = unsafe { &mut *cache.state.get() };
        let block = match state.classes.get_mut(index) {
            Some(c) if c.top > c.base => {
                c.top -= 1;
                // SAFETY: `top < limit <= SLOTS` (invariant of `ClassCache`: it was at most
                // `limit` and is one less now), so the cache has its slots (an unadopted
                // one has `limit` 0) and the slot is in bounds of their block.
                let at = unsafe { state.slots.0.add(c.top as usize) };
                // SAFETY: a slot of the block only this cache uses (invariant of
                // `CacheState`); it held a cached block, which leaves the cache.
                unsafe { *at }
            }
            _ => ptr::null_mut(),
        };
        cache.mode.set(FREE);
        block
    });
    match popped {
        Ok(block) if !block.is_null() => block,
        _ => allocate_slow(index),
    }
}

/// `allocate` when the fast path found no cached block: a refill, or a block straight
/// from the heap if the thread's cache is busy or gone. If the OS refuses the chunk that
/// takes, the large mappings kept for reuse, which hold address space and memory of the
/// same limits, are unmapped and the block asked for once more.
#[cold]
#[inline(never)]
fn allocate_slow(index: usize) -> *mut u8 {
    let block = allocate_slow_once(index);
    if block.is_null() && large::trim() > 0 {
        return allocate_slow_once(index);
    }
    block
}

/// One try of [`allocate_slow`].
fn allocate_slow_once(index: usize) -> *mut u8 {
    let Some(class) = SizeClass::from_index(index) else {
        return ptr::null_mut();
    };
    match with_state(|state| match state.classes.get_mut(index) {
        // Refilled by a call between the fast path and here (none does, but the pop is
        // as cheap as the check).
        Some(c) if c.top > c.base => {
            c.top -= 1;
            state
                .slots
                .get()
                .get(c.top as usize)
                .copied()
                .unwrap_or(ptr::null_mut())
        }
        _ => refill(state, class, index),
    }) {
        Some(block) => block,
        None => allocate_uncached(class, index),
    }
}

/// What `free` did with a block, when it did not give it to its heap itself.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Freed {
    /// It joined the cache, or was dropped as freed with another class's layout.
    Done,
    /// It is of another node than the cache's: it goes home.
    Remote,
    /// The thread has no usable cache.
    NoCache,
}

/// Frees a block of `class` (index `index`).
///
/// # Safety
///
/// `block` was handed out by [`allocate`] (on any thread) for a size class and is not used
/// after this call. A block of another class than `index` is dropped (and counted).
#[inline(always)]
pub(super) unsafe fn free(block: NonNull<u8>, index: usize) {
    let chunk = block.as_ptr() as usize & !(heap::CHUNK - 1);
    // The fast path only pushes; everything else is one call out of line, after the
    // cache is released, so that the inlined code needs no saved registers.
    let pushed = CACHE.try_with(|cache| {
        if cache.mode.get() != FREE {
            return false;
        }
        cache.mode.set(BUSY);
        // SAFETY: as in `enter`: the mode was `FREE`, so this is the only reference to the
        // state, and it ends before the mode is `FREE` again.
        let state = unsafe { &mut *cache.state.get() };
        let pushed = match state.classes.get_mut(index) {
            // A chunk of this class and the cache's node (invariant of `ClassCache`).
            Some(c) if c.chunk == chunk && c.top < c.limit => {
                // SAFETY: `top < limit <= SLOTS` (the guard and the invariant of
                // `ClassCache`), so the cache has its slots (an unadopted one has
                // `limit` 0) and the slot is in bounds of their block.
                let at = unsafe { state.slots.0.add(c.top as usize) };
                // SAFETY: a slot of the block only this cache uses (invariant of
                // `CacheState`), and the state is ours alone: no other reference to it.
                let slot = unsafe { &mut *at };
                // The caller gave the block up (contract): it is free, of this class and
                // of this cache's node, so it may join the cache (invariant). Nothing
                // reads or writes it.
                *slot = block.as_ptr();
                c.top += 1;
                c.frees += 1;
                true
            }
            _ => false,
        };
        cache.mode.set(FREE);
        pushed
    });
    if pushed != Ok(true) {
        // SAFETY: as this function's contract.
        unsafe { free_slow(block, index) };
    }
}

/// `free` when the fast path could not push the block.
///
/// # Safety
///
/// As [`free`]'s.
#[cold]
#[inline(never)]
unsafe fn free_slow(block: NonNull<u8>, index: usize) {
    // SAFETY: as this function's contract.
    let freed = with_state(|state| unsafe { push_slow(state, block, index) });
    let freed = freed.unwrap_or(Freed::NoCache);
    if freed != Freed::Done {
        // SAFETY: the block is free and ours to give (contract).
        unsafe { free_uncached(block, index, freed == Freed::Remote) };
    }
}

/// `free` of a block the fast path could not push: one of a chunk the cache has not
/// seen, a cache that has not learned its node, a block of another node, or a full
/// cache. Reads the chunk's header.
///
/// # Safety
///
/// As [`free`]'s.
#[cold]
#[inline(never)]
unsafe fn push_slow(state: &mut CacheState, block: NonNull<u8>, index: usize) -> Freed {
    // SAFETY: the block was handed out by this allocator for a size class (contract).
    let Some(home) = (unsafe { heap::home_of(block, index) }) else {
        // Freed with another class's layout: putting it on this class's cache would hand
        // out a block too small. Dropped, and counted.
        uncached::MISMATCHED.fetch_add(1, Ordering::Relaxed);
        return Freed::Done;
    };
    if !state.adopted() && !adopt(state) {
        return Freed::NoCache;
    }
    if state.node != home {
        return Freed::Remote;
    }
    let Some(c) = state.classes.get(index) else {
        return Freed::NoCache;
    };
    if c.top == c.limit {
        spill(state, index);
    }
    let Some(c) = state.classes.get_mut(index) else {
        return Freed::NoCache;
    };
    // The header names this class and the cache's node.
    c.chunk = block.as_ptr() as usize & !(heap::CHUNK - 1);
    let top = c.top as usize;
    let Some(slot) = state
        .slots
        .get_mut()
        .get_mut(top)
        .filter(|_| c.top < c.limit)
    else {
        return Freed::NoCache;
    };
    // The caller gave the block up (contract): it is free, of this class and of this
    // cache's node, so it may join the cache (invariant). Nothing reads or writes it.
    *slot = block.as_ptr();
    c.top += 1;
    c.frees += 1;
    Freed::Done
}

/// `allocate` on an empty cache: publishes, takes a batch from the node's heap.
#[cold]
#[inline(never)]
fn refill(state: &mut CacheState, class: SizeClass, index: usize) -> *mut u8 {
    if !state.adopted() && !adopt(state) {
        return allocate_uncached(class, index);
    }
    refill_from_heap(state, class, index).map_or(ptr::null_mut(), NonNull::as_ptr)
}

/// `refill` of a cache that knows its node.
fn refill_from_heap(state: &mut CacheState, class: SizeClass, index: usize) -> Option<NonNull<u8>> {
    state.refills = state.refills.wrapping_add(1);
    if state.refills % NODE_REFRESH == 0 {
        let now = current_node();
        if now != state.node {
            flush_all(state);
            state.node = now;
            for c in &mut state.classes {
                c.chunk = 0;
            }
        }
    }
    let node = state.node;
    let heap = heap::heap(node, index)?;
    publish(state, index);
    let c = state.classes.get_mut(index)?;
    let (base, top) = (c.base as usize, c.top as usize);
    let out = state.slots.get_mut().get_mut(top..base + batch_of(index))?;
    let n = heap.take(class, node, out);
    if n == 0 {
        return None;
    }
    // `n` blocks now fill slots `top..top + n` (`n` is at most a batch: within `limit`);
    // the last of them leaves the cache at once.
    c.top = (top + n - 1) as u16;
    c.traded = c.traded.wrapping_add(n as u64);
    NonNull::new(*state.slots.get().get(c.top as usize)?)
}

/// Gives the oldest batch of class `index` back to the node's heap (everything if the
/// cache holds less), keeping the most recently freed blocks.
#[cold]
#[inline(never)]
fn spill(state: &mut CacheState, index: usize) {
    let node = state.node;
    let Some(c) = state.classes.get_mut(index) else {
        return;
    };
    let (base, top) = (c.base as usize, c.top as usize);
    let n = batch_of(index).min(top - base);
    let Some(held) = state.slots.get_mut().get_mut(base..top) else {
        return;
    };
    if let (Some(heap), Some(oldest)) = (heap::heap(node, index), held.get(..n)) {
        // SAFETY: the blocks were this cache's, free blocks of this node's heap of this
        // class (invariant), and are given up here: they leave the cache below.
        unsafe { heap.give(oldest) };
    }
    held.copy_within(n.., 0);
    c.top -= n as u16;
    c.traded = c.traded.wrapping_sub(n as u64);
    publish(state, index);
}

/// Gives every block of class `index` back to the node's heap.
fn spill_all(state: &mut CacheState, index: usize) {
    let node = state.node;
    let Some(c) = state.classes.get_mut(index) else {
        return;
    };
    if let (Some(heap), Some(held)) = (
        heap::heap(node, index),
        state.slots.get().get(c.base as usize..c.top as usize),
    ) {
        // SAFETY: the blocks were this cache's, free blocks of this node's heap of this
        // class (invariant), and are given up here: they leave the cache below.
        unsafe { heap.give(held) };
    }
    c.traded = c.traded.wrapping_sub(c.count() as u64);
    c.top = c.base;
    publish(state, index);
}

/// Publishes class `index`'s counts to the heap of the cache's node.
fn publish(state: &mut CacheState, index: usize) {
    let Some(heap) = heap::heap(state.node, index) else {
        return;
    };
    let Some(c) = state.classes.get_mut(index) else {
        return;
    };
    let counts = &heap.counts;
    // The cache now holds what it held at the last publication, plus what it traded, plus
    // what was freed into it, minus what was allocated from it. Signed deltas in two's
    // complement: every sum stays exact.
    let delta = (c.count() as u64).wrapping_sub(u64::from(c.published));
    let allocations = c.traded.wrapping_add(c.frees).wrapping_sub(delta);
    if allocations != 0 {
        counts.allocations.fetch_add(allocations, Ordering::Relaxed);
    }
    if c.frees != 0 {
        counts.frees.fetch_add(c.frees, Ordering::Relaxed);
    }
    if delta != 0 {
        // Truncated on a 32-bit target, where the wrapping sum stays exact all the same.
        counts.cached.fetch_add(delta as usize, Ordering::Relaxed);
    }
    c.traded = 0;
    c.frees = 0;
    c.published = c.top - c.base;
}

/// Gives every block back and publishes every count.
fn flush_all(state: &mut CacheState) {
    if !state.adopted() {
        return;
    }
    for index in 0..CLASS_COUNT {
        spill_all(state, index);
    }
}

/// Publishes the calling thread's counts (for statistics), if it has a cache.
pub(super) fn publish_mine() {
    let _ = with_state(|state| {
        if state.adopted() {
            for index in 0..CLASS_COUNT {
                publish(state, index);
            }
        }
    });
}

/// Gives the calling thread's cached blocks back to their heaps.
pub(super) fn flush_mine() {
    let _ = with_state(flush_all);
}

#[cfg(test)]
mod tests;
