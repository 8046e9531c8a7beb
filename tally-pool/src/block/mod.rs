//! The untyped, lock-free block allocator.
//!
//! A [`BlockPool`] hands out blocks of one [`Layout`] on one NUMA node. It is the layer
//! under the typed pools and the global allocator, and usable on its own.
//!
//! ```
//! use core::alloc::Layout;
//! use tally_pool::block::{BlockPool, BlockPoolConfig, GuardLevel};
//!
//! # fn main() -> Result<(), tally_pool::PoolError> {
//! let pool = BlockPool::new(
//!     BlockPoolConfig::new(Layout::new::<[u64; 8]>())
//!         .name("quotes")
//!         .capacity(10_000)
//!         .max_capacity(100_000)
//!         .guard(GuardLevel::Canary),
//! )?;
//! let block = pool.allocate()?;
//! // SAFETY: the block is 64 bytes, 8-aligned, and ours until freed.
//! unsafe { block.as_ptr().cast::<[u64; 8]>().write([7; 8]) };
//! // SAFETY: allocated above and freed once; `block` is not used afterwards.
//! unsafe { pool.free(block) }?;
//! assert_eq!(pool.stats().live_blocks, 0);
//! # Ok(())
//! # }
//! ```
//!
//! # How it works
//!
//! - **Chunks** of 1 MiB, aligned to their size, come from the `os` module. Each starts
//!   with a header (magic, pool id, node, block layout, checksum); blocks follow. A global
//!   registry maps every chunk to its pool, so `free` vouches for a pointer without
//!   reading the memory it points to.
//! - **The hot path** is a per-thread cache of free block pointers per pool: `allocate`
//!   pops, `free` pushes. No atomic read-modify-write, no lock, no syscall. The cached-block
//!   count and the thread's allocation count share one word, from which the frees follow,
//!   so statistics cost the hot path nothing beyond that word.
//! - **The depot** takes and gives whole magazines of 32 blocks when a cache runs full or
//!   empty: a lock-free stack, ABA-safe through generations (see `depot`).
//! - **Growth**: `capacity` blocks are mapped and pre-faulted up front; when the depot is
//!   empty, a thread carves a range of fresh blocks from the current chunk under the
//!   growth lock (up to 2,048 blocks, 128 KiB and a 64th of `max_capacity`, but never
//!   fewer than one batch of the cache) and then takes them a batch at a time without
//!   the lock. A flush gives an unused range back to its chunk. A new chunk is mapped when the current one runs
//!   out, up to `max_capacity` blocks ([`PoolError::Exhausted`]). An OS refusal is
//!   [`PoolError::OutOfMemory`].
//! - **Any thread may free**, including one that never allocated from the pool; a thread
//!   that exits hands its cached blocks back to the depot.
//! - **Reclaim** gives chunks whose blocks are all free back to the OS.
//!
//! # Guards
//!
//! | level | cost | detects |
//! |---|---|---|
//! | [`GuardLevel::Off`] | none | foreign and interior pointers |
//! | [`GuardLevel::Canary`] | 8 bytes a block, one CAS a free | + frees of blocks that are free (a double free before the block is reused), never carved, or in a reclaimed chunk; writes past a block's end |
//! | [`GuardLevel::Full`] | + a fill on free and a scan on reuse | + writes to freed blocks |
//!
//! - **Every level**: [`BlockPool::free`] refuses a pointer outside every chunk of the
//!   pool (a foreign pointer: from the heap, the stack, another pool, a dropped pool) and a
//!   pointer into a chunk of the pool that is not the start of a block (an interior
//!   pointer, or the chunk's header). It reads only the chunk registry, never the memory
//!   the pointer points to.
//! - **`Canary` and `Full`** put a check word after each block's usable bytes, holding a
//!   mark derived from the block's address that says "allocated" or "free". `free` flips
//!   it from allocated to free in one compare-and-swap, and refuses the block when the
//!   word does not hold the allocated mark: the block is free right now (a double free
//!   before the block is handed out again), it was never carved, it lies in a reclaimed
//!   chunk, or a write past the end of the block overwrote the word. `allocate` hands a
//!   block out only if its word holds the free mark, so a write past the end of a free
//!   block is caught on its reuse.
//! - **`Full`** adds a poison fill: `free` fills the block, and `allocate` checks the fill
//!   before it hands the block out again, so a write into a freed block is caught on the
//!   block's reuse.
//!
//! No level detects a *stale* free: a free of a block that was handed out again since the
//! caller freed it. The stale pointer has the same address as the new owner's, and the
//! block's check word says "allocated", as it should for its new owner: the free succeeds,
//! the block goes back into circulation while its new owner uses it, and the next
//! `allocate` hands it out a second time (under `Full`, the stale free also poisons the new
//! owner's bytes). This is why [`BlockPool::free`] is an `unsafe fn`: its `# Safety`
//! contract rules stale frees out. Under `Off`, `free` checks nothing beyond the pointer:
//! a double free, or a free of a never-carved block or of a block of a reclaimed chunk, is
//! accepted and puts the block into circulation twice, so the contract rules these out
//! too.
//!
//! Detected corruption is returned as [`PoolError::Corruption`] and counted in
//! [`BlockPoolStats::corruption_events`]; the pool stays usable. A refused `free` leaves
//! the block as it was: a block that was free stays in circulation once, and a block whose
//! check word was overwritten can never be freed, so it stays out of circulation. A block
//! that `allocate` finds damaged is withdrawn: it is never handed out again.
//!
//! # Limits
//!
//! - Blocks are at most 256 KiB, aligned to at most 4096 bytes.
//! - Each thread may hold free blocks of a pool in its cache: up to 64, and at most a
//!   sixteenth of `max_capacity` (at least 2), plus what is left of the fresh range it
//!   carved last (see Growth). An allocation can therefore report [`PoolError::Exhausted`]
//!   while idle threads hold free blocks. The error asks every thread to return its cache
//!   and range on its next call, and threads return them when they exit.
//! - Dropping the last `BlockPool` handle unmaps all its memory: blocks still allocated
//!   must not be used afterwards.

mod cache;
mod depot;
pub(crate) mod geometry;
mod per_node;
pub(crate) mod pool;
mod registry;
mod size_class;

#[cfg(all(test, loom))]
mod loom_tests;

use core::alloc::Layout;
use core::ptr::NonNull;
use std::sync::Arc;

pub use per_node::PerNodeBlockPool;
pub use size_class::{SizeClass, CLASS_COUNT, MAX_CLASS_SIZE};

use crate::error::PoolError;
use crate::numa::Topology;
#[doc(hidden)]
pub use cache::TypeCache;
pub(crate) use cache::{fast_cache, pop_fast, push_fast, push_hinted, Through};
use cache::{with_cache, KnownPush, ThreadCache};
use pool::PoolShared;

/// Bytes in a chunk, the unit in which pools map memory.
pub const CHUNK_SIZE: usize = registry::CHUNK_SIZE;

/// How much checking a pool does on free and reuse. See the [module docs](self#guards).
///
/// Every level refuses foreign and interior pointers. No level detects a free of a block
/// that was handed out again since the caller freed it (a stale free): the contract of
/// [`BlockPool::free`] rules it out.
///
/// ```
/// use core::alloc::Layout;
/// use tally_pool::block::{BlockPool, BlockPoolConfig, GuardLevel};
/// use tally_pool::{CorruptionKind, PoolError};
///
/// let pool = BlockPool::new(BlockPoolConfig::new(Layout::new::<u64>()).guard(GuardLevel::Canary))?;
/// let block = pool.allocate()?;
/// // SAFETY: allocated above, freed once.
/// unsafe { pool.free(block) }?;
/// // SAFETY: the block is free and nothing was allocated since: under `Canary` the
/// // contract allows this double free, which the pool refuses.
/// let again = unsafe { pool.free(block) };
/// assert!(matches!(again, Err(PoolError::Corruption { kind: CorruptionKind::DoubleFree, .. })));
/// # Ok::<(), PoolError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum GuardLevel {
    /// Pointer checks only: `free` refuses foreign and interior pointers, reading only the
    /// chunk registry. A double free, or a free of a never-carved block or of a block of a
    /// reclaimed chunk, is not detected: it puts the block into circulation twice.
    Off,
    /// A check word (canary) after each block, saying whether the block is allocated,
    /// flipped and verified on free and verified on reuse. Adds to `Off`: a free of a block
    /// that is free (a double free before the block is reused), never carved, or in a
    /// reclaimed chunk; a write past a block's end, caught on free (or on reuse, if the
    /// block was free). Costs 8 bytes a block and a compare-and-swap a free.
    #[default]
    Canary,
    /// `Canary`, plus a poison fill of freed blocks verified on reuse: adds writes into a
    /// freed block, caught when the block is next handed out. Costs a fill on free and a
    /// scan on reuse.
    Full,
}

/// How to build a [`BlockPool`].
///
/// ```
/// use core::alloc::Layout;
/// use tally_pool::block::{BlockPoolConfig, GuardLevel};
///
/// let config = BlockPoolConfig::new(Layout::new::<u128>())
///     .name("ticks")
///     .capacity(4096)
///     .guard(GuardLevel::Off);
/// assert_eq!(config.capacity, 4096);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BlockPoolConfig {
    /// Name used in errors and reports. Default `"block-pool"`.
    pub name: String,
    /// Layout of every block.
    pub layout: Layout,
    /// Blocks mapped (and pre-faulted, if `prefault`) when the pool is created. Default 0.
    pub capacity: usize,
    /// Most blocks the pool will ever have in circulation. Default: no cap but memory.
    pub max_capacity: usize,
    /// Checks on free and reuse. Default [`GuardLevel::Canary`].
    pub guard: GuardLevel,
    /// NUMA node the memory belongs to. Default 0.
    pub node: u32,
    /// Touch the pre-allocated memory at creation so that first use takes no page fault,
    /// and, as the pool grows, fault in 256 KiB of a chunk at a time ahead of the blocks
    /// handed out. Default true.
    pub prefault: bool,
    /// When set, every chunk is bound to `node` of this topology before its first touch
    /// (`mbind` on this machine's topology; recorded only on a synthetic one). Default
    /// `None`: memory goes wherever the OS puts it.
    pub topology: Option<Topology>,
}

impl BlockPoolConfig {
    /// The defaults for blocks of `layout`.
    pub fn new(layout: Layout) -> Self {
        Self {
            name: "block-pool".into(),
            layout,
            capacity: 0,
            max_capacity: usize::MAX,
            guard: GuardLevel::default(),
            node: 0,
            prefault: true,
            topology: None,
        }
    }

    /// Sets [`Self::name`].
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Sets [`Self::capacity`].
    pub fn capacity(mut self, blocks: usize) -> Self {
        self.capacity = blocks;
        self
    }

    /// Sets [`Self::max_capacity`].
    pub fn max_capacity(mut self, blocks: usize) -> Self {
        self.max_capacity = blocks;
        self
    }

    /// Sets [`Self::guard`].
    pub fn guard(mut self, guard: GuardLevel) -> Self {
        self.guard = guard;
        self
    }

    /// Sets [`Self::node`].
    pub fn node(mut self, node: u32) -> Self {
        self.node = node;
        self
    }

    /// Sets [`Self::topology`].
    pub fn topology(mut self, topology: Topology) -> Self {
        self.topology = Some(topology);
        self
    }

    /// Sets [`Self::prefault`].
    pub fn prefault(mut self, prefault: bool) -> Self {
        self.prefault = prefault;
        self
    }
}

/// A point-in-time view of a pool's counters.
///
/// Counters are kept per thread and summed when read. Each thread's counts are read as
/// they were at one instant, but different threads' at different instants, so a snapshot
/// taken while other threads work is consistent per thread, not across threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct BlockPoolStats {
    /// Blocks allocated and not yet freed.
    pub live_blocks: u64,
    /// Blocks the mapped chunks can hold, at most `max_capacity`.
    pub capacity: usize,
    /// The cap.
    pub max_capacity: usize,
    /// Chunks mapped and in use (not reclaimed).
    pub chunks: usize,
    /// Bytes of those chunks.
    pub bytes_mapped: usize,
    /// Successful allocations.
    pub allocations: u64,
    /// Successful frees.
    pub frees: u64,
    /// Frees a thread made beyond its own allocations: a lower bound on the frees of blocks
    /// that another thread allocated. A snapshot per thread, not a running count: it falls
    /// back when such a thread later allocates.
    pub cross_thread_frees: u64,
    /// Magazines traded between thread caches and the depot.
    pub depot_exchanges: u64,
    /// Chunks mapped or reused after creation because the pool ran low.
    pub expansions: u64,
    /// Bytes given back to the OS by [`BlockPool::reclaim`].
    pub reclaimed_bytes: u64,
    /// Corruption detected (each also returned as an error).
    pub corruption_events: u64,
    /// Chunks the OS refused to bind to the pool's node (they are used unbound).
    pub bind_failures: u64,
}

impl BlockPoolStats {
    /// Adds `other` to `self`, field by field (for pools made of several block pools).
    pub fn add(&mut self, other: &Self) {
        self.live_blocks += other.live_blocks;
        self.capacity += other.capacity;
        self.max_capacity = self.max_capacity.saturating_add(other.max_capacity);
        self.chunks += other.chunks;
        self.bytes_mapped += other.bytes_mapped;
        self.allocations += other.allocations;
        self.frees += other.frees;
        self.cross_thread_frees += other.cross_thread_frees;
        self.depot_exchanges += other.depot_exchanges;
        self.expansions += other.expansions;
        self.reclaimed_bytes += other.reclaimed_bytes;
        self.corruption_events += other.corruption_events;
        self.bind_failures += other.bind_failures;
    }
}

/// A lock-free pool of fixed-size blocks. Cloning gives another handle to the same pool.
///
/// See the [module docs](self) for how it works and an example.
#[derive(Debug, Clone)]
pub struct BlockPool {
    /// A copy of the pool's `plain_index`, so that the fast paths find the thread's cache
    /// without first loading the shared state's address.
    plain_index: usize,
    shared: Arc<PoolShared>,
}

impl BlockPool {
    /// Creates a pool and maps its initial `capacity`.
    ///
    /// # Errors
    ///
    /// [`PoolError::InvalidConfig`] if `capacity > max_capacity` or `max_capacity == 0`;
    /// [`PoolError::UnsupportedLayout`] for blocks over 256 KiB or aligned above 4096;
    /// [`PoolError::OutOfMemory`] if the OS refuses the initial memory;
    /// [`PoolError::TooManyPools`] when 65536 pools are alive.
    pub fn new(config: BlockPoolConfig) -> Result<Self, PoolError> {
        PoolShared::new(config).map(|shared| Self {
            plain_index: shared.plain_index,
            shared,
        })
    }

    /// Hands out one block. Its contents are unspecified: it is uninitialised memory of the
    /// pool's layout, valid for reads and writes until it is freed.
    ///
    /// ```
    /// # use core::alloc::Layout;
    /// # use tally_pool::block::{BlockPool, BlockPoolConfig};
    /// let pool = BlockPool::new(BlockPoolConfig::new(Layout::new::<u64>()).max_capacity(1)).unwrap();
    /// let a = pool.allocate().unwrap();
    /// assert!(pool.allocate().is_err(), "capped at one block");
    /// // SAFETY: allocated above, freed once.
    /// unsafe { pool.free(a) }.unwrap();
    /// ```
    ///
    /// # Errors
    ///
    /// [`PoolError::Exhausted`] at the cap, [`PoolError::OutOfMemory`] if the OS refuses a
    /// new chunk, [`PoolError::Corruption`] if the guard finds the block damaged (it is
    /// withdrawn; the next call proceeds with another block).
    #[inline(always)]
    pub fn allocate(&self) -> Result<NonNull<u8>, PoolError> {
        if let Some(cache) = cache::plain_cache(self, self.plain_index) {
            if let Some(block) = cache::pop_fast(cache) {
                return Ok(block);
            }
            if !cache.is_closed() {
                return self.refill_open(cache);
            }
        }
        self.allocate_other()
    }

    /// `allocate` when the thread's open cache of this unguarded pool is empty.
    #[cold]
    #[inline(never)]
    fn refill_open(&self, cache: &ThreadCache) -> Result<NonNull<u8>, PoolError> {
        cache::in_section(cache, |cache, blocks| {
            self.shared.allocate_slow(cache, blocks)
        })
    }

    /// `free` of a block of the known chunk when the thread's open cache of this unguarded
    /// pool is full.
    #[cold]
    #[inline(never)]
    fn spill_open(&self, cache: &ThreadCache, ptr: *mut u8) -> Result<(), PoolError> {
        cache::in_section(cache, |cache, blocks| {
            self.shared.free_slow(cache, blocks, ptr)
        })
    }

    /// `allocate` for a guarded pool, or when the cache of an unguarded one misses.
    #[inline(always)]
    fn allocate_other(&self) -> Result<NonNull<u8>, PoolError> {
        let pool = &*self.shared;
        if pool.guard != GuardLevel::Off {
            if let Some(cache) = cache::fast_cache(pool) {
                if let Some(block) = cache::pop_fast(cache) {
                    return pool.hand_out_popped(cache, block);
                }
            }
        }
        self.allocate_slow()
    }

    /// Everything `allocate` does beyond popping the cache of an unguarded pool.
    #[cold]
    #[inline(never)]
    fn allocate_slow(&self) -> Result<NonNull<u8>, PoolError> {
        let pool = &*self.shared;
        let result = with_cache(&self.shared, |cache, blocks| {
            if !cache.is_closed() && blocks.stamp == pool.stamp() {
                if let Some(index) = blocks.len.checked_sub(1) {
                    if let Some(&ptr) = blocks.ptrs.get(index) {
                        blocks.len = index;
                        let block = pool.hand_out(ptr)?;
                        cache.counters.allocations.bump();
                        return Ok(block);
                    }
                }
            }
            pool.allocate_slow(cache, blocks)
        });
        match result {
            Some(result) => result,
            None => pool.allocate_uncached(),
        }
    }

    /// Returns a block to the pool, from any thread.
    ///
    /// The pointer is checked before anything is read through it: the chunk registry tells
    /// whether it is the start of a block of this pool. Under a guard, the block's check
    /// word must then say that the block is allocated, and the free flips it to free. What
    /// each [`GuardLevel`] detects is in the [module docs](self#guards).
    ///
    /// ```
    /// # use core::alloc::Layout;
    /// # use core::ptr::NonNull;
    /// # use tally_pool::block::{BlockPool, BlockPoolConfig};
    /// # use tally_pool::{CorruptionKind, PoolError};
    /// let pool = BlockPool::new(BlockPoolConfig::new(Layout::new::<u64>())).unwrap();
    /// let block = pool.allocate().unwrap();
    /// // SAFETY: allocated above and freed once; `block` is not used afterwards.
    /// unsafe { pool.free(block) }.unwrap();
    ///
    /// let mut local = 0u64;
    /// // SAFETY: not a block of this pool: the contract allows it, and the pool refuses it
    /// // without reading it.
    /// let refused = unsafe { pool.free(NonNull::from(&mut local).cast()) };
    /// assert!(matches!(
    ///     refused,
    ///     Err(PoolError::Corruption { kind: CorruptionKind::ForeignPointer, .. })
    /// ));
    /// ```
    ///
    /// # Safety
    ///
    /// `block` must be one of:
    ///
    /// - **A block you own**: returned by [`Self::allocate`] on this pool, and no call to
    ///   `free` has returned `Ok` for it since (a call that returned an error leaves it
    ///   yours). When this call returns `Ok`, the block is no longer yours: it may be
    ///   handed out again at once, to any thread.
    /// - **Not the start of a block of this pool**, at any guard level: a pointer outside
    ///   every chunk of this pool (into the heap, the stack, another pool, a dropped pool,
    ///   or anywhere else) or into a chunk of this pool but not at a block's start. `free`
    ///   refuses it as [`CorruptionKind::ForeignPointer`] or
    ///   [`CorruptionKind::InteriorPointer`] without reading the memory it points to.
    ///   (A pointer into unmapped memory, such as a dropped pool's block, becomes a block
    ///   of this pool if the pool maps a new chunk there: free one only while no other
    ///   thread allocates from this pool.)
    /// - Under [`GuardLevel::Canary`] and [`GuardLevel::Full`] only, **a block of this
    ///   pool that nobody holds**: one that is free (freed, and not handed out again
    ///   since), never carved, or in a reclaimed chunk, while no other thread allocates
    ///   from this pool until this call returns (an `allocate` could hand the block out
    ///   meanwhile). Its check word does not hold the allocated mark, and `free` refuses
    ///   it as [`CorruptionKind::DoubleFree`] or [`CorruptionKind::CanaryOverwritten`].
    ///
    /// Anything else is undefined behaviour. In particular, never free a *stale* pointer:
    /// one whose block may have been handed out again since you freed it. Its address and
    /// the block's check word are exactly those the new owner's free would present, so no
    /// guard can tell the two apart: the free succeeds, and the block gets two owners
    /// (under `Full`, the free also fills the new owner's bytes with poison). Under
    /// [`GuardLevel::Off`], freeing any block of this pool that you do not own (a double
    /// free, a never-carved block, a block of a reclaimed chunk) is undefined behaviour
    /// too: it is not detected and puts the block into circulation twice.
    ///
    /// # Errors
    ///
    /// [`PoolError::Corruption`] for a foreign pointer, an interior pointer, or (under
    /// `Canary` and `Full`) a block whose check word does not say "allocated": a double
    /// free before reuse, a never-carved block, a block of a reclaimed chunk, or a check
    /// word overwritten by a write past the block's end. The error is counted; the block
    /// is left as it was, not put back, and the pool stays usable.
    ///
    /// [`PoolError::OutOfMemory`] if the OS refuses the pages the depot needs to take a
    /// magazine of blocks back. The block is not put back: it stays counted as live and
    /// stays yours, and is handed out again only if a later `free` of it succeeds (under
    /// `Canary` and `Full` none will, as its check word already says "free").
    ///
    /// [`CorruptionKind::ForeignPointer`]: crate::CorruptionKind::ForeignPointer
    /// [`CorruptionKind::InteriorPointer`]: crate::CorruptionKind::InteriorPointer
    /// [`CorruptionKind::DoubleFree`]: crate::CorruptionKind::DoubleFree
    /// [`CorruptionKind::CanaryOverwritten`]: crate::CorruptionKind::CanaryOverwritten
    #[inline(always)]
    pub unsafe fn free(&self, block: NonNull<u8>) -> Result<(), PoolError> {
        // A block start in the chunk this thread last freed into through the registry: the
        // chunk is this pool's for as long as the pool lives (see `push_known`).
        if let Some(cache) = cache::plain_cache(self, self.plain_index) {
            match cache::push_known(cache, block.as_ptr()) {
                KnownPush::Pushed => return Ok(()),
                KnownPush::Full => return self.spill_open(cache, block.as_ptr()),
                KnownPush::Unknown => {}
            }
        }
        self.free_other(block)
    }

    /// `free` through the registry: for a guarded pool, a block of another chunk than the
    /// known one, or a full or closed cache.
    #[inline(always)]
    fn free_other(&self, block: NonNull<u8>) -> Result<(), PoolError> {
        let pool = &*self.shared;
        let addr = block.as_ptr() as usize;
        if !pool.owns_block(addr) {
            return self.free_slow(block);
        }
        if pool.guard != GuardLevel::Off {
            pool.guard_free(addr)?;
        }
        if let Some(cache) = cache::fast_cache(pool) {
            if cache::push_fast(cache, block.as_ptr()) {
                if pool.guard == GuardLevel::Off {
                    cache::remember_chunk(cache, addr, &pool.geometry);
                }
                return Ok(());
            }
        }
        self.release(block.as_ptr())
    }

    /// Everything `free` does beyond pushing a vouched-for block of an unguarded pool.
    #[cold]
    #[inline(never)]
    fn free_slow(&self, block: NonNull<u8>) -> Result<(), PoolError> {
        self.shared.check_block(block.as_ptr() as usize)?;
        self.release(block.as_ptr())
    }

    /// Returns a block that is known to be an allocated block of this pool, skipping the
    /// registry lookup (the guard still checks it).
    ///
    /// # Safety
    ///
    /// `block` must have been returned by [`Self::allocate`] on this pool and not freed
    /// since.
    #[inline]
    pub(crate) unsafe fn free_unchecked(&self, block: NonNull<u8>) -> Result<(), PoolError> {
        let pool = &*self.shared;
        if pool.guard != GuardLevel::Off {
            pool.guard_free(block.as_ptr() as usize)?;
        }
        if let Some(cache) = cache::fast_cache(pool) {
            if cache::push_fast(cache, block.as_ptr()) {
                return Ok(());
            }
        }
        self.release(block.as_ptr())
    }

    /// Pushes a checked block into the cache, or takes the slow path.
    #[cold]
    #[inline(never)]
    fn release(&self, ptr: *mut u8) -> Result<(), PoolError> {
        let pool = &*self.shared;
        let result = with_cache(&self.shared, |cache, blocks| {
            if !cache.is_closed() && blocks.stamp == pool.stamp() && blocks.len < pool.cache_limit {
                if let Some(slot) = blocks.ptrs.get_mut(blocks.len) {
                    *slot = ptr;
                    blocks.len += 1;
                    cache.counters.frees.bump();
                    return Ok(());
                }
            }
            pool.free_slow(cache, blocks, ptr)
        });
        match result {
            Some(result) => result,
            None => pool.free_uncached(ptr),
        }
    }

    /// Points `cell`, a per-type cache cell of the calling thread, at the thread's cache of
    /// this pool, if the pool is unguarded and in a slot the fast table covers.
    pub(crate) fn bind_type_cache(&self, cell: &TypeCache) {
        cache::bind(&self.shared, cell);
    }

    pub(crate) fn shared(&self) -> &PoolShared {
        &self.shared
    }

    /// Gives chunks whose blocks are all free back to the OS and returns how many bytes it
    /// released. Safe to call while other threads allocate and free.
    ///
    /// The calling thread's cached blocks are returned first. Other threads are asked to
    /// return theirs on their next call; blocks an idle thread still holds keep their
    /// chunk alive until then (or until the thread exits). A reclaimed chunk keeps its
    /// address range and header page and is reused before a new chunk is mapped.
    ///
    /// ```
    /// # use core::alloc::Layout;
    /// # use tally_pool::block::{BlockPool, BlockPoolConfig};
    /// let pool = BlockPool::new(BlockPoolConfig::new(Layout::new::<[u8; 256]>())).unwrap();
    /// let blocks: Vec<_> = (0..1000).map(|_| pool.allocate().unwrap()).collect();
    /// for b in blocks {
    ///     // SAFETY: each block was allocated above and is freed once.
    ///     unsafe { pool.free(b) }.unwrap();
    /// }
    /// assert!(pool.reclaim() > 0);
    /// assert_eq!(pool.stats().chunks, 0);
    /// ```
    pub fn reclaim(&self) -> usize {
        let _ = with_cache(&self.shared, |cache, blocks| {
            self.shared.flush(cache, blocks)
        });
        self.shared.reclaim()
    }

    /// The pool's counters, summed over threads.
    pub fn stats(&self) -> BlockPoolStats {
        self.shared.stats()
    }

    /// Checks the header of every chunk.
    ///
    /// # Errors
    ///
    /// [`PoolError::Corruption`] naming the first chunk whose header is damaged.
    pub fn verify(&self) -> Result<(), PoolError> {
        self.shared.verify()
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        self.shared.name()
    }

    /// The layout the pool was created for.
    pub fn layout(&self) -> Layout {
        self.shared.layout()
    }

    /// The usable size of every block: the layout's size rounded up to a multiple of 8.
    pub fn block_size(&self) -> usize {
        self.shared.geometry.size
    }

    /// The NUMA node the pool's memory belongs to.
    pub fn node(&self) -> u32 {
        self.shared.node()
    }

    /// The guard level.
    pub fn guard(&self) -> GuardLevel {
        self.shared.guard
    }
}
