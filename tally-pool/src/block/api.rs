//! [`BlockPool`]: the handle users hold, and its fast paths.

use core::alloc::Layout;
use core::ptr::NonNull;
use std::sync::Arc;

use super::cache::{self, with_cache, RememberedPush, ThreadCache};
use super::config::{BlockPoolConfig, GuardLevel};
use super::events;
use super::shared::PoolShared;
use super::stats::BlockPoolStats;
use crate::error::PoolError;

/// A lock-free pool of fixed-size blocks. Cloning gives another handle to the same pool.
///
/// See the [module docs](super) for how it works and an example.
#[derive(Debug, Clone)]
pub struct BlockPool {
    /// A copy of the pool's `unguarded_index` (its fast index if it is unguarded, the fast
    /// table's always-null entry if not), so that the fast paths find the thread's cache
    /// without first loading the shared state's address.
    pub(super) unguarded_index: usize,
    pub(super) shared: Arc<PoolShared>,
}

impl BlockPool {
    /// Creates a pool and maps its initial `capacity`.
    ///
    /// The pool joins the statistics registry as a component of kind `block` under its
    /// name, and leaves it when its last handle drops (see [`stats`](crate::stats) and the
    /// [memory classes](super#memory-classes) it reports).
    ///
    /// ```
    /// # use core::alloc::Layout;
    /// # use tally_pool::block::{BlockPool, BlockPoolConfig};
    /// use tally_pool::stats::{self, Kind};
    /// let pool = BlockPool::new(BlockPoolConfig::new(Layout::new::<u64>()).name("doc-listed"))?;
    /// let listed = |r: &stats::MemoryReport| {
    ///     r.components.iter().any(|c| c.name == "doc-listed" && c.kind == Kind::Block)
    /// };
    /// assert!(listed(&stats::report()));
    /// drop(pool);
    /// assert!(!listed(&stats::report()));
    /// # Ok::<(), tally_pool::PoolError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`PoolError::InvalidConfig`] if `capacity > max_capacity`, `max_capacity == 0`,
    /// `reserve > max_capacity`, or `capacity` needs more 1 MiB chunks than the 48-bit
    /// address space holds;
    /// [`PoolError::UnsupportedLayout`] for blocks over 256 KiB or aligned above 4096;
    /// [`PoolError::OutOfMemory`] if the OS refuses the initial memory;
    /// [`PoolError::LockRefused`] if the pool locks its memory
    /// ([`BlockPoolConfig::lock`](super::BlockPoolConfig::lock)) and the OS refuses to lock
    /// the initial chunks (nothing stays mapped);
    /// [`PoolError::TooManyPools`] when 65536 pools are alive.
    pub fn new(config: BlockPoolConfig) -> Result<Self, PoolError> {
        let pool = Self::new_unlisted(config)?;
        pool.shared.list();
        Ok(pool)
    }

    /// [`Self::new`] without joining the statistics registry: for the node pools of a
    /// layer above that lists itself as one component.
    pub(crate) fn new_unlisted(config: BlockPoolConfig) -> Result<Self, PoolError> {
        PoolShared::new(config).map(|shared| Self {
            unguarded_index: shared.unguarded_index,
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
    /// new chunk, [`PoolError::LockRefused`] if the pool locks its memory and the OS
    /// refuses to lock a new or reused chunk, [`PoolError::Corruption`] if the guard finds the block damaged (it is
    /// withdrawn; the next call proceeds with another block).
    #[inline(always)]
    pub fn allocate(&self) -> Result<NonNull<u8>, PoolError> {
        if let Some(cache) = self.unguarded_cache() {
            // SAFETY: the fast table gave this thread its own cache; no other borrow of its
            // blocks is live.
            if let Some(block) = unsafe { cache.pop() } {
                return Ok(block);
            }
            if !cache.is_closed() {
                return self.refill_empty_cache(cache);
            }
        }
        self.allocate_guarded()
    }

    /// The calling thread's cache of this pool if the pool is unguarded (the fast table's
    /// always-null entry answers for a guarded one): the fast paths learn both from one
    /// load. The borrow ends before the thread's next slow path.
    #[inline(always)]
    pub(super) fn unguarded_cache(&self) -> Option<&ThreadCache> {
        cache::lookup(self, self.unguarded_index)
    }

    /// `allocate` when the thread's open cache of this unguarded pool is empty.
    #[cold]
    #[inline(never)]
    fn refill_empty_cache(&self, cache: &ThreadCache) -> Result<NonNull<u8>, PoolError> {
        // SAFETY: `cache` is this thread's open cache from its fast table (see `allocate`),
        // whose pop has ended; `refill_and_allocate` reaches nothing of the table.
        let result = unsafe {
            cache.in_section(|cache, blocks| self.shared.refill_and_allocate(cache, blocks))
        };
        let Some(result) = result else {
            // A call from inside a section of this cache: without it.
            return self.allocate_slow();
        };
        events::emit();
        result
    }

    /// `free` of a block of the remembered chunk when the thread's open cache of this
    /// unguarded pool is full.
    #[cold]
    #[inline(never)]
    fn spill_full_cache(&self, cache: &ThreadCache, ptr: *mut u8) -> Result<(), PoolError> {
        // SAFETY: `cache` is this thread's open cache from its fast table (see `free`),
        // whose push has ended; `spill_and_free` reaches nothing of the table.
        let result = unsafe {
            cache.in_section(|cache, blocks| self.shared.spill_and_free(cache, blocks, ptr))
        };
        let Some(result) = result else {
            // A call from inside a section of this cache: without it.
            return self.release(ptr);
        };
        events::emit();
        result
    }

    /// `allocate` for a guarded pool, or when the unguarded fast path found no open cache.
    #[inline(never)]
    fn allocate_guarded(&self) -> Result<NonNull<u8>, PoolError> {
        let pool = &*self.shared;
        if pool.guard != GuardLevel::Off {
            if let Some(cache) = pool.thread_cache() {
                // SAFETY: the fast table gave this thread its own cache; no other borrow of
                // its blocks is live.
                if let Some(block) = unsafe { cache.pop() } {
                    // SAFETY: `block` came off this thread's `cache` by the pop just above,
                    // whose borrow has ended.
                    return unsafe { pool.hand_out_popped(cache, block) }.map_err(events::emitted);
                }
            }
        }
        self.allocate_slow()
    }

    /// Everything `allocate` does beyond a fast pop.
    #[cold]
    #[inline(never)]
    fn allocate_slow(&self) -> Result<NonNull<u8>, PoolError> {
        let pool = &*self.shared;
        let result = with_cache(&self.shared, |cache, blocks| {
            pool.allocate_in_section(cache, blocks)
        });
        let result = match result {
            Some(result) => result,
            None => pool.allocate_uncached(),
        };
        events::emit();
        result
    }

    /// Returns a block to the pool, from any thread.
    ///
    /// The pointer is checked before anything is read through it: the chunk registry tells
    /// whether it is the start of a block of this pool. Under a guard, the block's check
    /// word must then say that the block is allocated, and the free flips it to free. What
    /// each [`GuardLevel`] detects is in the [module docs](super#guards).
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
    /// A `free` never fails for want of memory: when the OS refuses the pages the depot
    /// needs for a magazine, the blocks it would have held wait on an overflow list linked
    /// through the free blocks themselves (in the check word under a guard, in the first 8
    /// bytes of the block without one), which allocations empty before they carve or grow.
    /// Only a pool that a layer above keeps values in (an unguarded recycling typed pool)
    /// still reports [`PoolError::OutOfMemory`] there; a `BlockPool` made by `new` never
    /// does.
    ///
    /// [`CorruptionKind::ForeignPointer`]: crate::CorruptionKind::ForeignPointer
    /// [`CorruptionKind::InteriorPointer`]: crate::CorruptionKind::InteriorPointer
    /// [`CorruptionKind::DoubleFree`]: crate::CorruptionKind::DoubleFree
    /// [`CorruptionKind::CanaryOverwritten`]: crate::CorruptionKind::CanaryOverwritten
    #[inline(always)]
    pub unsafe fn free(&self, block: NonNull<u8>) -> Result<(), PoolError> {
        // A block start in the chunk this thread last freed into through the registry: the
        // chunk is this pool's for as long as the pool lives (see
        // `ThreadCache::push_in_remembered_chunk`).
        if let Some(cache) = self.unguarded_cache() {
            // SAFETY: the fast table gave this thread its own cache, and no other borrow of
            // its blocks is live. The pool is unguarded, so a block start of this pool is
            // one the caller owns and gives back (this function's contract).
            match unsafe { cache.push_in_remembered_chunk(block.as_ptr()) } {
                RememberedPush::Pushed => return Ok(()),
                RememberedPush::Full => return self.spill_full_cache(cache, block.as_ptr()),
                RememberedPush::NotVouched => {}
            }
        }
        self.free_checked(block)
    }

    /// `free` through the registry: for a guarded pool, a block outside the remembered
    /// chunk, or a full or closed cache.
    #[inline(never)]
    fn free_checked(&self, block: NonNull<u8>) -> Result<(), PoolError> {
        let pool = &*self.shared;
        let addr = block.as_ptr() as usize;
        if !pool.owns_block(addr) {
            return self.free_slow(block);
        }
        if pool.guard != GuardLevel::Off {
            pool.guard_free(addr).map_err(events::emitted)?;
        }
        if let Some(cache) = pool.thread_cache() {
            // SAFETY: the fast table gave this thread its own cache, no other borrow of its
            // blocks live; the registry vouched for `block` as a block start of this pool, which
            // the caller owns (`free`'s contract; a guard just flipped its canary to free).
            if unsafe { cache.push(block.as_ptr()) } {
                if pool.guard == GuardLevel::Off {
                    // SAFETY: the push succeeded, so the cache is open: this thread's cache
                    // of this live pool, whose chunk holding `addr` the registry vouched for
                    // just above.
                    unsafe { cache.remember_chunk(addr, &pool.geometry) };
                }
                return Ok(());
            }
        }
        self.release(block.as_ptr())
    }

    /// Everything `free` does beyond pushing a vouched-for block onto the cache.
    #[cold]
    #[inline(never)]
    fn free_slow(&self, block: NonNull<u8>) -> Result<(), PoolError> {
        self.shared
            .check_block(block.as_ptr() as usize)
            .map_err(events::emitted)?;
        self.release(block.as_ptr())
    }

    /// Puts a checked block into the calling thread's cache through its table (spilling a
    /// batch to the depot if need be), or into the depot if the thread is exiting.
    #[cold]
    #[inline(never)]
    pub(super) fn release(&self, ptr: *mut u8) -> Result<(), PoolError> {
        let pool = &*self.shared;
        let result = with_cache(&self.shared, |cache, blocks| {
            pool.free_in_section(cache, blocks, ptr)
        });
        let result = match result {
            Some(result) => result,
            None => pool.free_uncached(ptr),
        };
        events::emit();
        result
    }

    /// Gives chunks whose blocks are all free back to the OS and returns how many bytes it
    /// released. Safe to call while other threads allocate and free.
    ///
    /// The calling thread's cached blocks are returned first. Other threads are asked to
    /// return theirs on their next call; blocks an idle thread still holds keep their
    /// chunk alive until then (or until the thread exits). A reclaimed chunk keeps its
    /// address range and header page and is reused before a new chunk is mapped. In a
    /// pool with [`huge_pages`](super::BlockPoolConfig::huge_pages) only the second chunk
    /// of each 2 MiB pair can be given back: the first stays, free or not (see
    /// [`HugePages`](super::HugePages)).
    ///
    /// An explicit call gives back every free chunk, the reserve
    /// ([`BlockPoolConfig::reserve`](super::BlockPoolConfig::reserve)) included; the
    /// reclamation that memory pressure asks for through
    /// [`Source::reclaim_idle`](crate::stats::Source::reclaim_idle) keeps the reserve.
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
        let released = self.shared.reclaim();
        events::emit();
        released
    }

    /// The pool's counters, summed over threads.
    pub fn stats(&self) -> BlockPoolStats {
        let pool = &*self.shared;
        BlockPoolStats::from_parts(
            pool.caches.counts(),
            &pool.counters,
            pool.geometry.blocks_per_chunk,
            pool.max_capacity,
        )
    }

    /// Checks the header of every chunk.
    ///
    /// # Errors
    ///
    /// [`PoolError::Corruption`] naming the first chunk whose header is damaged.
    pub fn verify(&self) -> Result<(), PoolError> {
        self.shared.verify().map_err(events::emitted)
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The pool's name as its errors carry it.
    pub(crate) fn error_name(&self) -> crate::error::PoolName {
        self.shared.error_name
    }

    /// The layout the pool was created for.
    pub fn layout(&self) -> Layout {
        self.shared.layout
    }

    /// The usable size of every block: the layout's size rounded up to a multiple of 8.
    pub fn block_size(&self) -> usize {
        self.shared.geometry.size
    }

    /// The NUMA node the pool's memory belongs to.
    pub fn node(&self) -> u32 {
        self.shared.node
    }

    /// The guard level.
    pub fn guard(&self) -> GuardLevel {
        self.shared.guard
    }
}
