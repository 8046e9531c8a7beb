//! `BlockPool`: chunks, growth, guards, reclaim and statistics around the depot and the
//! thread caches.

use core::alloc::Layout;
use core::ptr::NonNull;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{
    AtomicU64 as StdAtomicU64, AtomicUsize as StdAtomicUsize, Ordering as StdOrdering,
};
use std::sync::Arc;

use super::cache::{CachedBlocks, ThreadCache, CACHE_CAPACITY};
use super::depot::{Depot, MAGAZINE_SIZE};
use super::geometry::{ChunkHeader, Geometry, POISON};
use super::registry::{self, CHUNK_SIZE, MAX_POOLS};
use super::{BlockPoolConfig, BlockPoolStats, GuardLevel};
use crate::error::{CorruptionKind, PoolError};
use crate::numa::Topology;
use crate::os::{self, Region, PAGE};
use crate::sync::{lock, AtomicU64, Mutex, Ordering};

/// Bits of a pool's stamp that count epochs; the rest hold the pool's id.
const EPOCH_BITS: u32 = 24;

/// Source of pool ids; never reused, so a cache can tell its pool from a later one.
static NEXT_UID: StdAtomicU64 = StdAtomicU64::new(1);

/// One chunk of a pool.
///
/// Invariant: `region` is `CHUNK_SIZE` bytes aligned to `CHUNK_SIZE`, starts with a valid
/// `ChunkHeader` of this pool, and is registered to the pool's slot. Blocks `0..carved`
/// have been handed to circulation (a cache, including its fresh range, the depot or a
/// user); the rest are untouched by anyone but the pool's growth path. A reclaimed chunk
/// has `carved == 0`.
#[derive(Debug)]
struct Chunk {
    region: Region,
    carved: usize,
    reclaimed: bool,
    /// Bytes from the chunk's start whose pages were faulted in ahead of use: carving
    /// keeps them ahead of the carved blocks (see `PREFAULT_STEP`).
    ///
    /// Invariant: every page holding a byte of `0..faulted` was faulted in: whatever set
    /// `faulted` faulted in up to it rounded up to a page (`reserve`, `carve_range`), and
    /// reclaim lowers it to at most `PAGE`, keeping page 0, the header's. In a
    /// pre-faulting pool, the carved blocks (if any) end at or before `faulted`. So the
    /// pages from `faulted` rounded up on hold no block in circulation, and the page that
    /// holds an unaligned `faulted` (and may hold some) is faulted in already: carving
    /// faults in from `faulted`, which `Region::prefault_range` rounds up to a page.
    faulted: usize,
}

/// How far ahead of the carved blocks a pre-faulting pool faults pages in, in one call:
/// one slow carve per 256 KiB of blocks rather than one fault per 4 KiB, and at most this
/// much memory resident beyond the blocks in use.
const PREFAULT_STEP: usize = 256 * 1024;

/// Most blocks a thread's cache carves at a time (see `PoolShared::fresh_batch`): with
/// batches of 32, one refill in 64 takes the growth lock while a pool grows, rather than
/// every one.
const FRESH_RANGE: usize = 2048;

/// Most bytes of blocks a thread's cache carves at a time: 2,048 blocks of 64 bytes, fewer
/// of larger blocks, so that what an idle thread strands stays small in bytes too.
const FRESH_BYTES: usize = 128 * 1024;

impl Chunk {
    fn base(&self) -> usize {
        self.region.ptr().as_ptr() as usize
    }
}

/// What the growth lock protects.
#[derive(Debug)]
struct Growth {
    chunks: Vec<Chunk>,
    /// Sum of `carved` over all chunks: the blocks in circulation, bounded by
    /// `max_capacity`.
    carved_total: usize,
    /// A chunk likely to have uncarved blocks.
    cursor: usize,
}

/// Totals of caches whose threads have exited, plus operations done without a cache.
#[derive(Debug, Default)]
struct Totals {
    allocations: StdAtomicU64,
    frees: StdAtomicU64,
    cross_thread_frees: StdAtomicU64,
    depot_exchanges: StdAtomicU64,
}

/// The state a `BlockPool` and every thread cache of it share.
#[derive(Debug)]
pub(crate) struct PoolShared {
    /// Unique for the life of the process.
    pub(crate) uid: u64,
    /// The registry slot: unique among live pools.
    pub(crate) slot: u32,
    /// What the registry holds for this pool's chunks: `slot + 1`.
    registry_tag: u32,
    /// Where the fast paths find this pool's cache: `cache::fast_index(slot)`, so at most
    /// `cache::FAST_SLOTS`.
    pub(crate) fast_index: usize,
    /// `fast_index` for an unguarded pool, `cache::FAST_SLOTS` (the entry that stays null)
    /// for a guarded one: where the unguarded fast paths look, so that they need not read
    /// `guard`. At most `cache::FAST_SLOTS`.
    pub(crate) plain_index: usize,
    pub(crate) geometry: Geometry,
    pub(crate) guard: GuardLevel,
    /// The pool's id in the high 40 bits and an epoch in the low 24. A cache whose copy
    /// differs belongs to another pool or must flush first. The epoch is bumped (wrapping
    /// within its bits, never touching the id), and then every cache closed, to ask every
    /// thread to flush its cache on its next operation (see the `cache` module docs).
    stamp: AtomicU64,
    /// Most blocks one thread's cache holds for this pool: `CACHE_CAPACITY`, or less for a
    /// small pool so that idle threads cannot strand much of its cap (see `cache_limit`).
    /// Invariant: `2 <= cache_limit <= CACHE_CAPACITY`.
    pub(crate) cache_limit: usize,
    /// Blocks moved per trade with the depot: half of `cache_limit`, at least 1.
    batch: usize,
    /// Blocks a thread's cache carves at a time into its fresh range, which its refills
    /// then take a batch at a time without the growth lock: at least `batch`, else at most
    /// [`FRESH_RANGE`] blocks, [`FRESH_BYTES`] bytes and a 64th of the cap, so that idle
    /// threads strand little of a pool.
    fresh_batch: usize,
    canary_secret: u64,
    name: String,
    layout: Layout,
    node: u32,
    max_capacity: usize,
    depot: Depot,
    growth: Mutex<Growth>,
    /// Every live thread cache of this pool. A loom `Mutex` under loom: flush requests
    /// and the pool's drop close caches under it, and the models check that against the
    /// caches' owners.
    caches: Mutex<Vec<Arc<ThreadCache>>>,
    totals: Totals,
    corruption_events: StdAtomicU64,
    expansions: StdAtomicU64,
    reclaimed_bytes: StdAtomicU64,
    active_chunks: StdAtomicUsize,
    /// Written into every chunk header mapped from now on (see `ChunkHeader::owner`).
    owner: StdAtomicUsize,
    /// Written into every chunk header mapped from now on (see `ChunkHeader::fast_hint`).
    /// Invariant: at most `cache::FAST_SLOTS`.
    fast_hint: StdAtomicUsize,
    /// Binds new chunks to `node` before their first touch, when set.
    topology: Option<Topology>,
    /// Whether memory is faulted in ahead of use (see `PREFAULT_STEP`) rather than on
    /// first use.
    prefault: bool,
    bind_failures: StdAtomicU64,
}

impl PoolShared {
    pub(crate) fn new(config: BlockPoolConfig) -> Result<Arc<Self>, PoolError> {
        let BlockPoolConfig {
            name,
            layout,
            capacity,
            max_capacity,
            guard,
            node,
            prefault,
            topology,
        } = config;
        let invalid = |reason: String| PoolError::InvalidConfig {
            pool: name.clone(),
            reason,
        };
        if max_capacity == 0 {
            return Err(invalid("`max_capacity` must be at least 1".into()));
        }
        if capacity > max_capacity {
            return Err(invalid(format!(
                "`capacity` ({capacity}) exceeds `max_capacity` ({max_capacity})"
            )));
        }
        let geometry = Geometry::new(layout, guard)
            .map_err(|reason| PoolError::UnsupportedLayout { layout, reason })?;
        let batch = (cache_limit(max_capacity) / 2).max(1);
        let slot = registry::take_slot().ok_or(PoolError::TooManyPools { max: MAX_POOLS })?;
        let uid = NEXT_UID.fetch_add(1, StdOrdering::Relaxed);
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(uid);
        let pool = Arc::new(Self {
            uid,
            slot,
            registry_tag: slot + 1,
            fast_index: super::cache::fast_index(slot),
            plain_index: match guard {
                GuardLevel::Off => super::cache::fast_index(slot),
                GuardLevel::Canary | GuardLevel::Full => super::cache::FAST_SLOTS,
            },
            geometry,
            guard,
            stamp: AtomicU64::new(uid << EPOCH_BITS),
            cache_limit: cache_limit(max_capacity),
            batch,
            fresh_batch: (max_capacity / 64)
                .min(FRESH_BYTES / geometry.stride)
                .clamp(batch, FRESH_RANGE),
            canary_secret: hasher.finish() | 1,
            name,
            layout,
            node,
            max_capacity,
            depot: Depot::new(),
            growth: Mutex::new(Growth {
                chunks: Vec::new(),
                carved_total: 0,
                cursor: 0,
            }),
            caches: Mutex::new(Vec::new()),
            totals: Totals::default(),
            corruption_events: StdAtomicU64::new(0),
            expansions: StdAtomicU64::new(0),
            reclaimed_bytes: StdAtomicU64::new(0),
            active_chunks: StdAtomicUsize::new(0),
            owner: StdAtomicUsize::new(0),
            fast_hint: StdAtomicUsize::new(super::cache::FAST_SLOTS),
            topology,
            prefault,
            bind_failures: StdAtomicU64::new(0),
        });
        pool.reserve(capacity, prefault)?;
        Ok(pool)
    }

    /// Maps chunks until `capacity` blocks fit, touching their pages if `prefault`.
    pub(crate) fn reserve(&self, capacity: usize, prefault: bool) -> Result<(), PoolError> {
        let geometry = self.geometry;
        let mut growth = lock(&self.growth);
        let have =
            growth.chunks.iter().filter(|c| !c.reclaimed).count() * geometry.blocks_per_chunk;
        let mut remaining = capacity.saturating_sub(have);
        while remaining > 0 {
            self.map_chunk(&mut growth)?;
            let here = remaining.min(geometry.blocks_per_chunk);
            if prefault {
                if let Some(chunk) = growth.chunks.last_mut() {
                    // The chunk `map_chunk` just added: nothing in it is carved, so faulting
                    // from 0 (header page included) touches nothing another thread holds.
                    let end = geometry.first_offset + here * geometry.stride;
                    chunk.region.prefault(end);
                    chunk.faulted = end;
                }
            }
            remaining -= here;
        }
        Ok(())
    }

    /// Names the typed pool that owns this block pool in every chunk mapped from now on;
    /// `plain` says whether handle releases may push straight into the thread's cache (see
    /// `ChunkHeader::fast_hint`).
    pub(crate) fn set_owner(&self, owner: usize, plain: bool) {
        self.owner.store(owner, StdOrdering::Relaxed);
        let hint = if plain {
            self.plain_index
        } else {
            super::cache::FAST_SLOTS
        };
        self.fast_hint.store(hint, StdOrdering::Relaxed);
    }

    /// The header of the chunk holding `addr`.
    ///
    /// # Safety
    ///
    /// `addr` must lie in a chunk of this pool (for example, a block that is allocated).
    pub(crate) unsafe fn header_of(&self, addr: usize) -> &ChunkHeader {
        let base = addr & !(CHUNK_SIZE - 1);
        // SAFETY: the caller says `base` is a chunk of this pool; chunks stay mapped while
        // the pool lives (`&self`) and begin with a header written before publication
        // and never written again.
        unsafe { &*(base as *const ChunkHeader) }
    }
}

impl PoolShared {
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn layout(&self) -> Layout {
        self.layout
    }

    pub(crate) fn node(&self) -> u32 {
        self.node
    }

    pub(crate) fn max_capacity(&self) -> usize {
        self.max_capacity
    }

    #[inline]
    pub(crate) fn stamp(&self) -> u64 {
        self.stamp.load(Ordering::Relaxed)
    }

    /// Whether this pool's threads use the fast paths: its slot is one the fast table
    /// covers.
    pub(crate) fn fast_paths(&self) -> bool {
        self.fast_index < super::cache::FAST_SLOTS
    }

    /// Whether `addr` is the start of a block in a chunk of this pool. Reads only the
    /// registry.
    #[inline(always)]
    pub(crate) fn owns_block(&self, addr: usize) -> bool {
        registry::tag(addr) == self.registry_tag && self.geometry.is_block_start(addr)
    }

    /// Asks every thread to flush its cache on its next call: bumps the epoch, then
    /// closes every cache (the order the `cache` module docs rely on).
    fn bump_epoch(&self) {
        let mask = (1u64 << EPOCH_BITS) - 1;
        let mut now = self.stamp.load(Ordering::Relaxed);
        loop {
            let next = (now & !mask) | (now.wrapping_add(1) & mask);
            match self
                .stamp
                .compare_exchange_weak(now, next, Ordering::SeqCst, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(seen) => now = seen,
            }
        }
        self.close_caches();
    }

    /// Makes every thread's fast paths on this pool miss.
    fn close_caches(&self) {
        for cache in lock(&self.caches).iter() {
            cache.close();
        }
    }

    fn corruption(&self, kind: CorruptionKind, address: usize) -> PoolError {
        self.corruption_events.fetch_add(1, StdOrdering::Relaxed);
        PoolError::Corruption {
            pool: self.name.clone(),
            kind,
            address,
        }
    }

    fn exhausted(&self) -> PoolError {
        PoolError::Exhausted {
            pool: self.name.clone(),
            max_capacity: self.max_capacity,
        }
    }

    // ----- guards -------------------------------------------------------------------

    fn alloc_mark(&self, addr: usize) -> u64 {
        self.canary_secret ^ (addr as u64).rotate_left(29)
    }

    fn canary(&self, addr: usize) -> Option<&StdAtomicU64> {
        let offset = self.geometry.canary_offset?;
        // Callers check first that `addr` starts a carved block of a live chunk of this pool.
        // SAFETY: so the canary word lies in the block's stride, 8-byte aligned (Geometry
        // invariant: block starts and `canary_offset` are multiples of 8), in a chunk that
        // stays mapped while the pool lives.
        Some(unsafe { &*((addr + offset) as *const StdAtomicU64) })
    }

    /// The checks of a free under a guard: flips the canary from "allocated" to "free"
    /// atomically (so two racing frees of one block cannot both pass), then poisons.
    #[inline]
    pub(crate) fn guard_free(&self, addr: usize) -> Result<(), PoolError> {
        let Some(canary) = self.canary(addr) else {
            return Ok(());
        };
        let mark = self.alloc_mark(addr);
        match canary.compare_exchange(mark, !mark, StdOrdering::AcqRel, StdOrdering::Acquire) {
            Ok(_) => {}
            Err(seen) if seen == !mark => {
                return Err(self.corruption(CorruptionKind::DoubleFree, addr))
            }
            Err(_) => return Err(self.corruption(CorruptionKind::CanaryOverwritten, addr)),
        }
        if self.guard == GuardLevel::Full {
            // SAFETY: the CAS above made this thread the one that frees the block, whose
            // `size` payload bytes lie in a live chunk of this pool.
            unsafe { core::ptr::write_bytes(addr as *mut u8, POISON, self.geometry.size) };
        }
        Ok(())
    }

    /// Marks a fresh block as free for the guard.
    fn guard_init(&self, addr: usize) {
        if let Some(canary) = self.canary(addr) {
            canary.store(!self.alloc_mark(addr), StdOrdering::Relaxed);
            if self.guard == GuardLevel::Full {
                // SAFETY: the block is being carved, or taken from the calling thread's
                // fresh range: no one else holds it; its payload lies in a live chunk of
                // this pool.
                unsafe { core::ptr::write_bytes(addr as *mut u8, POISON, self.geometry.size) };
            }
        }
    }

    /// Turns a free block into an allocated one, checking the guard.
    #[inline]
    pub(crate) fn hand_out(&self, ptr: *mut u8) -> Result<NonNull<u8>, PoolError> {
        let addr = ptr as usize;
        match NonNull::new(ptr) {
            Some(block) if self.guard_accepts(addr) => Ok(block),
            _ => Err(self.guard_refusal(addr)),
        }
    }

    /// The guarded fast path's second half: checks the guard on a block popped (and
    /// counted) off the calling thread's cache, withdrawing it and taking the count back
    /// if the guard refuses it.
    #[inline(always)]
    pub(crate) fn hand_out_popped(
        &self,
        cache: &ThreadCache,
        block: NonNull<u8>,
    ) -> Result<NonNull<u8>, PoolError> {
        let addr = block.as_ptr() as usize;
        if self.guard_accepts(addr) {
            return Ok(block);
        }
        cache.refuse_popped();
        Err(self.guard_refusal(addr))
    }

    /// Whether the guard lets the free block at `addr` be handed out; if so, marks it
    /// allocated. Always true without a guard. The caller holds the block alone.
    #[inline]
    pub(crate) fn guard_accepts(&self, addr: usize) -> bool {
        let Some(canary) = self.canary(addr) else {
            return true;
        };
        let mark = self.alloc_mark(addr);
        if canary.load(StdOrdering::Acquire) != !mark || !self.poison_intact(addr) {
            return false;
        }
        canary.store(mark, StdOrdering::Release);
        true
    }

    /// Under `Full`, whether the free block's poison fill is untouched.
    fn poison_intact(&self, addr: usize) -> bool {
        if self.guard != GuardLevel::Full {
            return true;
        }
        // SAFETY: the block is free and held by the calling thread alone (it came out of
        // its cache); its payload lies in a live chunk of this pool.
        let payload = unsafe { core::slice::from_raw_parts(addr as *const u8, self.geometry.size) };
        payload.iter().all(|&b| b == POISON)
    }

    /// The error for a block `guard_accepts` refused (or a null pointer), counted. The block
    /// is withdrawn: nothing puts it back.
    #[cold]
    #[inline(never)]
    pub(crate) fn guard_refusal(&self, addr: usize) -> PoolError {
        let kind = match self.canary(addr) {
            Some(canary) if canary.load(StdOrdering::Acquire) != !self.alloc_mark(addr) => {
                CorruptionKind::CanaryOverwritten
            }
            Some(_) => CorruptionKind::UseAfterFree,
            None => CorruptionKind::ForeignPointer,
        };
        self.corruption(kind, addr)
    }

    // ----- pointer checks -------------------------------------------------------------

    /// Vouches for `addr` as a block of this pool, reading only the registry.
    #[inline]
    pub(crate) fn check_block(&self, addr: usize) -> Result<(), PoolError> {
        if registry::tag(addr) != self.registry_tag {
            return Err(self.corruption(CorruptionKind::ForeignPointer, addr));
        }
        if !self.geometry.is_block_start(addr) {
            return Err(self.corruption(CorruptionKind::InteriorPointer, addr));
        }
        if self.guard != GuardLevel::Off {
            self.guard_free(addr)?;
        }
        Ok(())
    }

    // ----- slow paths of the cache --------------------------------------------------

    /// Allocation when the cache is empty, closed or out of date.
    #[cold]
    pub(crate) fn allocate_slow(
        &self,
        cache: &ThreadCache,
        blocks: &mut CachedBlocks,
    ) -> Result<NonNull<u8>, PoolError> {
        self.sync_stamp(cache, blocks)?;
        if blocks.len == 0 {
            self.refill(cache, blocks)?;
        }
        let index = blocks.len.checked_sub(1).ok_or_else(|| self.exhausted())?;
        let ptr = *blocks.ptrs.get(index).ok_or_else(|| self.exhausted())?;
        blocks.len = index;
        let block = self.hand_out(ptr)?;
        cache.counters.allocations.bump();
        Ok(block)
    }

    /// Free when the cache is full or out of date; `addr` was checked already.
    #[cold]
    pub(crate) fn free_slow(
        &self,
        cache: &ThreadCache,
        blocks: &mut CachedBlocks,
        ptr: *mut u8,
    ) -> Result<(), PoolError> {
        self.sync_stamp(cache, blocks)?;
        if blocks.len >= self.cache_limit {
            self.spill(cache, blocks, self.batch)?;
        }
        let slot = blocks
            .ptrs
            .get_mut(blocks.len)
            .ok_or_else(|| self.exhausted())?;
        *slot = ptr;
        blocks.len += 1;
        cache.counters.frees.bump();
        Ok(())
    }

    /// Reopens a closed cache and flushes it if the pool asked for it since the cache
    /// last looked (the protocol is in the `cache` module docs).
    fn sync_stamp(&self, cache: &ThreadCache, blocks: &mut CachedBlocks) -> Result<(), PoolError> {
        if cache.is_closed() {
            cache.reopen(self.cache_limit);
        }
        let stamp = self.stamp.load(Ordering::SeqCst);
        if blocks.stamp != stamp {
            if let Err(e) = self.flush(cache, blocks) {
                // The request still stands: closed, the cache sends the next call back here
                // to try again, rather than serving from the fast paths meanwhile.
                cache.close();
                return Err(e);
            }
            blocks.stamp = stamp;
        }
        Ok(())
    }

    /// Hands every cached block to the depot, and the fresh range back to its chunk (or,
    /// if blocks were carved after it there, to the depot too).
    pub(crate) fn flush(
        &self,
        cache: &ThreadCache,
        blocks: &mut CachedBlocks,
    ) -> Result<(), PoolError> {
        self.uncarve_range(blocks);
        loop {
            while blocks.len > 0 {
                self.spill(cache, blocks, self.batch)?;
            }
            if blocks.fresh_left == 0 {
                return Ok(());
            }
            self.take_fresh(blocks);
        }
    }

    /// Moves up to `n` blocks from the top of the cache into a magazine in the depot.
    fn spill(
        &self,
        cache: &ThreadCache,
        blocks: &mut CachedBlocks,
        n: usize,
    ) -> Result<(), PoolError> {
        let n = n.min(blocks.len).min(MAGAZINE_SIZE);
        let Some(mag) = self.depot.new_magazine() else {
            return Err(PoolError::OutOfMemory {
                pool: self.name.clone(),
                bytes: 0,
                errno: libc::ENOMEM,
            });
        };
        let from = blocks.len - n;
        // SAFETY: `new_magazine` hands out a magazine nobody else owns.
        let filled = unsafe {
            self.depot.with_blocks(mag, |m| {
                let src = blocks.ptrs.get(from..from + n)?;
                m.ptrs.get_mut(..n)?.copy_from_slice(src);
                m.count = n;
                Some(())
            })
        };
        if filled.flatten().is_none() {
            self.depot.push_empty(mag);
            return Err(PoolError::OutOfMemory {
                pool: self.name.clone(),
                bytes: 0,
                errno: libc::ENOMEM,
            });
        }
        blocks.len = from;
        self.depot.push_full(mag);
        cache.counters.depot_exchanges.bump();
        Ok(())
    }

    /// Fills an empty cache from the depot, else from the thread's fresh range, carving a
    /// new range under the growth lock when that is empty too.
    fn refill(&self, cache: &ThreadCache, blocks: &mut CachedBlocks) -> Result<(), PoolError> {
        if self.take_magazine(blocks) {
            cache.counters.depot_exchanges.bump();
            return Ok(());
        }
        if blocks.fresh_left == 0 {
            let mut growth = lock(&self.growth);
            // Another thread may have returned blocks while this one waited for the lock.
            if self.take_magazine(blocks) {
                cache.counters.depot_exchanges.bump();
                return Ok(());
            }
            let (first, got) = self.carve_range(&mut growth, self.fresh_batch)?;
            blocks.fresh_next = first;
            blocks.fresh_left = got;
        }
        self.take_fresh(blocks);
        Ok(())
    }

    /// Gives the fresh range back to its chunk if it is the last thing carved there, so
    /// that it needs no magazine and the chunk gets its room back.
    fn uncarve_range(&self, blocks: &mut CachedBlocks) {
        let left = blocks.fresh_left;
        if left == 0 {
            return;
        }
        let mut growth = lock(&self.growth);
        let end = blocks.fresh_next + left * self.geometry.stride;
        let base = blocks.fresh_next & !(CHUNK_SIZE - 1);
        let Growth {
            chunks,
            carved_total,
            ..
        } = &mut *growth;
        let Some(chunk) = chunks.iter_mut().find(|c| c.base() == base) else {
            return;
        };
        // The range is blocks `carved - left..carved` of its chunk: none of them was ever
        // touched (guards are set up as blocks leave the range), so they are uncarved
        // blocks again (Chunk invariant).
        if chunk.carved >= left && self.geometry.block_addr(base, chunk.carved) == end {
            chunk.carved -= left;
            *carved_total -= left;
            blocks.fresh_left = 0;
        }
    }

    /// Moves up to a batch of blocks from the fresh range into the cache, ready to hand
    /// out. Pops take the top of the cache, so the range's first block goes on top: fresh
    /// blocks go out in address order, which the hardware prefetcher follows.
    fn take_fresh(&self, blocks: &mut CachedBlocks) {
        let start = blocks.len;
        let n = self
            .batch
            .min(self.cache_limit.saturating_sub(start))
            .min(blocks.fresh_left);
        let stride = self.geometry.stride;
        let Some(dst) = blocks.ptrs.get_mut(start..start + n) else {
            return;
        };
        let mut addr = blocks.fresh_next;
        for slot in dst.iter_mut().rev() {
            // The range's blocks are this thread's alone (CachedBlocks invariant).
            self.guard_init(addr);
            *slot = addr as *mut u8;
            addr += stride;
        }
        blocks.len += n;
        blocks.fresh_next = addr;
        blocks.fresh_left -= n;
    }

    /// Pops a full magazine into the (empty) cache. False when the depot has none.
    fn take_magazine(&self, blocks: &mut CachedBlocks) -> bool {
        let Some(mag) = self.depot.pop_full() else {
            return false;
        };
        let start = blocks.len;
        // SAFETY: `pop_full` made this thread the magazine's owner.
        let moved = unsafe {
            self.depot.with_blocks(mag, |m| {
                let n = m.count.min(self.cache_limit.saturating_sub(start));
                let dst = blocks.ptrs.get_mut(start..start + n)?;
                dst.copy_from_slice(m.ptrs.get(m.count - n..m.count)?);
                m.count -= n;
                Some((n, m.count))
            })
        };
        match moved.flatten() {
            Some((n, left)) => {
                blocks.len += n;
                if left == 0 {
                    self.depot.push_empty(mag);
                } else {
                    self.depot.push_full(mag);
                }
                n > 0
            }
            None => false,
        }
    }

    /// Carves up to `want` fresh blocks and hands each to `put(i, ptr)`, ready to hand out.
    /// Returns how many; errs with `Exhausted` at the cap when none could be carved.
    fn carve(
        &self,
        growth: &mut Growth,
        want: usize,
        mut put: impl FnMut(usize, *mut u8),
    ) -> Result<usize, PoolError> {
        let (first, n) = self.carve_range(growth, want)?;
        for i in 0..n {
            let addr = first + i * self.geometry.stride;
            self.guard_init(addr);
            put(i, addr as *mut u8);
        }
        Ok(n)
    }

    /// Carves up to `want` consecutive fresh blocks of one chunk for the caller alone; their
    /// guards are not yet set up (see `guard_init`). Returns the first block's address and
    /// how many; errs with `Exhausted` at the cap.
    fn carve_range(&self, growth: &mut Growth, want: usize) -> Result<(usize, usize), PoolError> {
        let room = self.max_capacity.saturating_sub(growth.carved_total);
        if room == 0 {
            // Ask every thread to return its cached blocks, so that a retry can find them.
            self.bump_epoch();
            return Err(self.exhausted());
        }
        let want = want.min(room);
        let bpc = self.geometry.blocks_per_chunk;
        let index = match self.chunk_with_room(growth) {
            Some(i) => i,
            None => {
                self.map_chunk(growth)?;
                self.expansions.fetch_add(1, StdOrdering::Relaxed);
                growth.chunks.len() - 1
            }
        };
        growth.cursor = index;
        let Some(chunk) = growth.chunks.get_mut(index) else {
            return Ok((0, 0));
        };
        if chunk.reclaimed {
            chunk.reclaimed = false;
            self.active_chunks.fetch_add(1, StdOrdering::Relaxed);
            self.expansions.fetch_add(1, StdOrdering::Relaxed);
        }
        let n = want.min(bpc - chunk.carved);
        let end = self.geometry.first_offset + (chunk.carved + n) * self.geometry.stride;
        if self.prefault && end > chunk.faulted {
            // Fault in what these blocks need and the next `PREFAULT_STEP` bytes in one
            // call, rather than one page fault per 4 KiB of blocks later. Blocks already
            // carved end by `faulted` (Chunk invariant), and `prefault_range` starts at the
            // first page boundary from there: it touches no block another thread holds.
            debug_assert!(
                chunk.carved == 0
                    || self.geometry.first_offset + chunk.carved * self.geometry.stride
                        <= chunk.faulted
            );
            let to = end.max(chunk.faulted + PREFAULT_STEP).min(CHUNK_SIZE);
            chunk.region.prefault_range(chunk.faulted, to);
            chunk.faulted = to;
        }
        let first = self.geometry.block_addr(chunk.base(), chunk.carved);
        chunk.carved += n;
        growth.carved_total += n;
        Ok((first, n))
    }

    /// An active chunk with uncarved blocks, else a reclaimed one to reuse.
    fn chunk_with_room(&self, growth: &Growth) -> Option<usize> {
        let bpc = self.geometry.blocks_per_chunk;
        let has_room = |c: &Chunk| !c.reclaimed && c.carved < bpc;
        if growth.chunks.get(growth.cursor).is_some_and(has_room) {
            return Some(growth.cursor);
        }
        growth
            .chunks
            .iter()
            .position(has_room)
            .or_else(|| growth.chunks.iter().position(|c| c.reclaimed))
    }

    /// Maps, labels and registers one chunk.
    fn map_chunk(&self, growth: &mut Growth) -> Result<(), PoolError> {
        let oom = |errno| PoolError::OutOfMemory {
            pool: self.name.clone(),
            bytes: CHUNK_SIZE,
            errno,
        };
        let region = os::map_aligned(CHUNK_SIZE, CHUNK_SIZE).map_err(|e| oom(e.errno))?;
        // Bind before the first touch (the header write below), or the pages land
        // wherever the writing thread runs.
        if let Some(topology) = &self.topology {
            if topology.bind(region.ptr(), CHUNK_SIZE, self.node).is_err() {
                self.bind_failures.fetch_add(1, StdOrdering::Relaxed);
            }
        }
        let chunk_id = u32::try_from(growth.chunks.len()).map_err(|_| oom(libc::ENOMEM))?;
        let owner = self.owner.load(StdOrdering::Relaxed);
        let hint = u32::try_from(self.fast_hint.load(StdOrdering::Relaxed)).unwrap_or(u32::MAX);
        let header = ChunkHeader::new(self.uid, self.node, &self.geometry, chunk_id, owner, hint);
        // SAFETY: the region is fresh, writable, CHUNK_SIZE-aligned and larger than a
        // header, and nobody else knows it yet.
        unsafe { region.ptr().as_ptr().cast::<ChunkHeader>().write(header) };
        let base = region.ptr().as_ptr() as usize;
        if !registry::register(base, self.slot) {
            return Err(oom(libc::ENOMEM));
        }
        growth.chunks.push(Chunk {
            region,
            carved: 0,
            reclaimed: false,
            faulted: 0,
        });
        self.active_chunks.fetch_add(1, StdOrdering::Relaxed);
        Ok(())
    }

    // ----- without a cache (thread exit) ----------------------------------------------

    pub(crate) fn allocate_uncached(&self) -> Result<NonNull<u8>, PoolError> {
        let mut one = CachedBlocks::new(0);
        if !self.take_magazine(&mut one) {
            let mut growth = lock(&self.growth);
            if !self.take_magazine(&mut one) {
                let got = self.carve(&mut growth, 1, |_, p| {
                    if let Some(slot) = one.ptrs.first_mut() {
                        *slot = p;
                    }
                })?;
                one.len = got;
            }
        }
        let index = one.len.checked_sub(1).ok_or_else(|| self.exhausted())?;
        let ptr = *one.ptrs.get(index).ok_or_else(|| self.exhausted())?;
        one.len = index;
        // Give back what the magazine held beyond the one block.
        while one.len > 0 {
            self.spill_uncached(&mut one)?;
        }
        let block = self.hand_out(ptr)?;
        self.totals.allocations.fetch_add(1, StdOrdering::Relaxed);
        Ok(block)
    }

    pub(crate) fn free_uncached(&self, ptr: *mut u8) -> Result<(), PoolError> {
        let mut one = CachedBlocks::new(0);
        if let Some(slot) = one.ptrs.first_mut() {
            *slot = ptr;
            one.len = 1;
        }
        self.spill_uncached(&mut one)?;
        self.totals.frees.fetch_add(1, StdOrdering::Relaxed);
        Ok(())
    }

    fn spill_uncached(&self, blocks: &mut CachedBlocks) -> Result<(), PoolError> {
        let scratch = ThreadCache::detached(self.uid);
        self.spill(&scratch, blocks, self.batch)?;
        self.totals
            .depot_exchanges
            .fetch_add(scratch.counters.depot_exchanges.get(), StdOrdering::Relaxed);
        Ok(())
    }

    // ----- cache registry -----------------------------------------------------------

    pub(crate) fn adopt_cache(&self, cache: &Arc<ThreadCache>) {
        lock(&self.caches).push(Arc::clone(cache));
    }

    /// Called at thread exit: returns the cache's blocks and folds its counters.
    pub(crate) fn retire_cache(&self, cache: &Arc<ThreadCache>) {
        // Called from the owning thread's table destructor: the cache is this thread's.
        // Blocks that cannot be spilled (magazine indices or memory for them ran out) are
        // lost to the pool, not handed out twice: cached blocks, and the fresh range if
        // other blocks were carved after it in its chunk.
        let _ = super::cache::in_section(cache, |cache, blocks| self.flush(cache, blocks));
        let c = cache.counts();
        let t = &self.totals;
        // Fold and unlist under the lock that `stats` reads under, so that no snapshot
        // counts this thread twice (or not at all).
        let mut caches = lock(&self.caches);
        t.allocations.fetch_add(c.allocations, StdOrdering::Relaxed);
        t.frees.fetch_add(c.frees, StdOrdering::Relaxed);
        t.cross_thread_frees
            .fetch_add(c.cross_thread_frees(), StdOrdering::Relaxed);
        t.depot_exchanges
            .fetch_add(c.depot_exchanges, StdOrdering::Relaxed);
        caches.retain(|other| !Arc::ptr_eq(other, cache));
    }

    // ----- reclaim ------------------------------------------------------------------

    /// See [`super::BlockPool::reclaim`].
    pub(crate) fn reclaim(&self) -> usize {
        self.bump_epoch();
        let mut growth = lock(&self.growth);
        // Take every magazine out of the depot: while the lock is held nobody can carve,
        // so every block of a chunk is either in these magazines or held elsewhere.
        let mut mags = Vec::new();
        while let Some(m) = self.depot.pop_full() {
            mags.push(m);
        }
        let index: HashMap<usize, usize> = growth
            .chunks
            .iter()
            .enumerate()
            .map(|(i, c)| (c.base(), i))
            .collect();
        let mut free_in = vec![0usize; growth.chunks.len()];
        for &m in &mags {
            // SAFETY: popped above, so owned by this thread.
            unsafe {
                self.depot.with_blocks(m, |b| {
                    for &p in b.ptrs.iter().take(b.count) {
                        let base = p as usize & !(CHUNK_SIZE - 1);
                        if let Some(n) = index.get(&base).and_then(|&i| free_in.get_mut(i)) {
                            *n += 1;
                        }
                    }
                })
            };
        }
        let mut freed = 0usize;
        let mut gone: Vec<bool> = vec![false; growth.chunks.len()];
        let mut released = 0usize;
        for ((chunk, &free), gone) in growth.chunks.iter_mut().zip(&free_in).zip(gone.iter_mut()) {
            if !chunk.reclaimed && free == chunk.carved {
                // Keep the page that holds the header; give back the rest.
                chunk.region.discard_from(PAGE);
                chunk.faulted = chunk.faulted.min(PAGE);
                released += chunk.carved;
                chunk.carved = 0;
                chunk.reclaimed = true;
                *gone = true;
                freed += CHUNK_SIZE - PAGE;
                self.active_chunks.fetch_sub(1, StdOrdering::Relaxed);
            }
        }
        growth.carved_total -= released;
        // Put back the blocks of chunks that stay, packed into as few magazines as needed.
        let mut keep = Vec::new();
        for &m in &mags {
            // SAFETY: owned by this thread since the pop above.
            unsafe {
                self.depot.with_blocks(m, |b| {
                    for &p in b.ptrs.iter().take(b.count) {
                        let base = p as usize & !(CHUNK_SIZE - 1);
                        let dropped = index.get(&base).and_then(|&i| gone.get(i)).copied();
                        if dropped != Some(true) {
                            keep.push(p);
                        }
                    }
                    b.count = 0;
                })
            };
        }
        let mut rest = keep.as_slice();
        for &m in &mags {
            let n = rest.len().min(MAGAZINE_SIZE);
            let (now, later) = rest.split_at(n);
            // SAFETY: still owned by this thread.
            unsafe {
                self.depot.with_blocks(m, |b| {
                    if let Some(dst) = b.ptrs.get_mut(..n) {
                        dst.copy_from_slice(now);
                        b.count = n;
                    }
                })
            };
            rest = later;
            if n > 0 {
                self.depot.push_full(m);
            } else {
                self.depot.push_empty(m);
            }
        }
        drop(growth);
        self.reclaimed_bytes
            .fetch_add(freed as u64, StdOrdering::Relaxed);
        freed
    }

    // ----- statistics ---------------------------------------------------------------

    pub(crate) fn stats(&self) -> BlockPoolStats {
        let t = &self.totals;
        // The totals and the list of live caches together, under the lock that a thread's
        // exit folds its counts and unlists its cache under (`retire_cache`). The caches'
        // counts are read only after the guard is gone: `counts` waits out a slow path of
        // the cache's thread, and a slow path at the cap takes this lock (`carve_range`,
        // `bump_epoch`, `close_caches`), so reading under it can deadlock.
        //
        // Each thread is still counted exactly once. One that retired before the lock was
        // taken is in the totals read here and not in the list. One that retires after the
        // lock is released folds its counts into totals that were already read, so they
        // are counted once, through its cache, which the copy of the list keeps alive.
        let (totals, caches) = {
            let listed = lock(&self.caches);
            let totals = (
                t.allocations.load(StdOrdering::Relaxed),
                t.frees.load(StdOrdering::Relaxed),
                t.cross_thread_frees.load(StdOrdering::Relaxed),
                t.depot_exchanges.load(StdOrdering::Relaxed),
            );
            (
                totals,
                listed.iter().cloned().collect::<Vec<Arc<ThreadCache>>>(),
            )
        };
        let (mut allocations, mut frees, mut cross, mut exchanges) = totals;
        for c in &caches {
            let c = c.counts();
            allocations += c.allocations;
            frees += c.frees;
            cross += c.cross_thread_frees();
            exchanges += c.depot_exchanges;
        }
        let chunks = self.active_chunks.load(StdOrdering::Relaxed);
        BlockPoolStats {
            live_blocks: allocations.saturating_sub(frees),
            capacity: (chunks * self.geometry.blocks_per_chunk).min(self.max_capacity),
            max_capacity: self.max_capacity,
            chunks,
            bytes_mapped: chunks * CHUNK_SIZE,
            allocations,
            frees,
            cross_thread_frees: cross,
            depot_exchanges: exchanges,
            expansions: self.expansions.load(StdOrdering::Relaxed),
            reclaimed_bytes: self.reclaimed_bytes.load(StdOrdering::Relaxed),
            corruption_events: self.corruption_events.load(StdOrdering::Relaxed),
            bind_failures: self.bind_failures.load(StdOrdering::Relaxed),
        }
    }

    /// Checks every chunk header; the first broken one is an error.
    pub(crate) fn verify(&self) -> Result<(), PoolError> {
        let growth = lock(&self.growth);
        for chunk in &growth.chunks {
            // SAFETY: every chunk starts with a header written at mapping time and stays
            // mapped while it is in `chunks`.
            let header = unsafe { chunk.region.ptr().as_ptr().cast::<ChunkHeader>().read() };
            if !header.is_valid() || header.pool_uid != self.uid {
                return Err(self.corruption(CorruptionKind::ForeignPointer, chunk.base()));
            }
        }
        Ok(())
    }
}

/// The per-thread cache limit of a pool capped at `max_capacity` blocks.
///
/// A thread that stops calling into a pool keeps its cached blocks until it exits, and an
/// allocation can only take blocks from the depot or new memory. Full-size caches suit
/// pools whose cap dwarfs them; a smaller pool caches at most a sixteenth of its cap per
/// thread (and at least 2 blocks), so that idle threads strand little of it.
fn cache_limit(max_capacity: usize) -> usize {
    (max_capacity / 16).clamp(2, CACHE_CAPACITY)
}

impl Drop for PoolShared {
    fn drop(&mut self) {
        // Threads still hold caches of this pool in their tables (and fast tables); closed,
        // they cannot hand out its blocks to the next pool in this slot.
        self.close_caches();
        let growth = lock(&self.growth);
        for chunk in &growth.chunks {
            registry::unregister(chunk.base());
        }
        drop(growth);
        // The regions unmap when `growth` drops with `self`; the slot is free for reuse
        // now that no chunk names it.
        registry::release_slot(self.slot);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn pool(prefault: bool) -> Arc<PoolShared> {
        PoolShared::new(
            BlockPoolConfig::new(Layout::new::<[u64; 8]>())
                .capacity(0)
                .prefault(prefault),
        )
        .unwrap()
    }

    /// What a pool has faulted in of its first chunk once it has carved `total` blocks
    /// in all, carving up to `n` at a time.
    fn faulted_after(pool: &PoolShared, total: usize, n: usize) -> usize {
        let mut growth = lock(&pool.growth);
        while growth.carved_total < total {
            let n = n.min(total - growth.carved_total);
            pool.carve(&mut growth, n, |_, _| {}).unwrap();
        }
        growth.chunks.first().map_or(0, |c| c.faulted)
    }

    #[test]
    fn growth_faults_pages_in_a_step_ahead_of_the_carved_blocks() {
        let p = pool(true);
        let g = p.geometry;
        let step_blocks = (PREFAULT_STEP - g.first_offset) / g.stride;
        // The first carve faults in one step; carving up to its end needs no more.
        assert_eq!(faulted_after(&p, 1, 1), PREFAULT_STEP);
        assert_eq!(faulted_after(&p, step_blocks, 32), PREFAULT_STEP);
        // One block past it, the next step.
        assert_eq!(faulted_after(&p, step_blocks + 1, 1), 2 * PREFAULT_STEP);
        // Never past the chunk.
        assert_eq!(faulted_after(&p, g.blocks_per_chunk, 32), CHUNK_SIZE);
        assert_eq!(lock(&p.growth).chunks.len(), 1);
    }

    #[test]
    fn a_pool_that_does_not_prefault_faults_nothing_ahead() {
        let p = pool(false);
        assert_eq!(faulted_after(&p, 1000, 32), 0);
    }

    #[test]
    fn a_flushed_range_goes_back_to_its_chunk_unless_something_was_carved_after_it() {
        let p = PoolShared::new(
            BlockPoolConfig::new(Layout::new::<[u64; 8]>())
                .capacity(0)
                .guard(GuardLevel::Off),
        )
        .unwrap();
        assert!(
            p.geometry.blocks_per_chunk >= 2 * FRESH_RANGE,
            "two ranges in one chunk"
        );
        let cache = ThreadCache::detached(p.uid);
        let carved = || lock(&p.growth).carved_total;
        let (mut a, mut b) = (CachedBlocks::new(p.stamp()), CachedBlocks::new(p.stamp()));
        p.refill(&cache, &mut a).unwrap();
        p.refill(&cache, &mut b).unwrap();
        assert_eq!(carved(), 2 * FRESH_RANGE);
        assert_eq!((a.len, a.fresh_left), (p.batch, FRESH_RANGE - p.batch));
        // `b` carved after `a`: `a`'s range goes to the depot with its cached blocks.
        p.flush(&cache, &mut a).unwrap();
        assert_eq!((a.len, a.fresh_left, carved()), (0, 0, 2 * FRESH_RANGE));
        // `b`'s range is the chunk's tail: it is uncarved, its cached blocks spilled.
        p.flush(&cache, &mut b).unwrap();
        assert_eq!((b.len, b.fresh_left), (0, 0));
        assert_eq!(carved(), FRESH_RANGE + p.batch);
        // The depot holds exactly the blocks still carved, each once.
        let mut seen = std::collections::HashSet::new();
        let mut c = CachedBlocks::new(p.stamp());
        while p.take_magazine(&mut c) {
            for &ptr in c.ptrs.get(..c.len).unwrap() {
                assert!(seen.insert(ptr as usize), "block {ptr:p} twice");
            }
            c.len = 0;
        }
        assert_eq!(seen.len(), FRESH_RANGE + p.batch);
    }

    #[test]
    fn fresh_ranges_are_bounded_in_blocks_bytes_and_share_of_the_cap() {
        let fresh = |layout: Layout, max_capacity: usize| {
            let p = PoolShared::new(
                BlockPoolConfig::new(layout)
                    .capacity(0)
                    .max_capacity(max_capacity)
                    .guard(GuardLevel::Off),
            )
            .unwrap();
            (p.fresh_batch, p.batch)
        };
        let small = Layout::new::<[u64; 8]>();
        // Small blocks, large cap: the block bound.
        assert_eq!(fresh(small, usize::MAX), (FRESH_RANGE, 32));
        // A 64th of the cap.
        assert_eq!(fresh(small, 8192), (128, 32));
        // Never below a batch, which a small cap shrinks too.
        assert_eq!(fresh(small, 1000), (31, 31));
        // Large blocks: the byte bound, then the batch.
        assert_eq!(fresh(Layout::new::<[u8; 1024]>(), usize::MAX), (128, 32));
        assert_eq!(fresh(Layout::new::<[u8; 16384]>(), usize::MAX), (32, 32));
    }
}
