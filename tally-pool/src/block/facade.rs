//! The contract between the block layer and the typed layer above it.
//!
//! Typed pools reach the block layer through this file and nothing else: the types it
//! re-exports and the crate-private operations it defines. Everything else in `block` is
//! `pub(super)` at most, so the compiler holds the seam in place.
//!
//! # What block provides
//!
//! | item | for |
//! |---|---|
//! | [`BlockPool`] and its public API, [`BlockPoolConfig`], [`BlockPoolStats`], [`GuardLevel`], [`HugePages`], [`OnCritical`], [`CHUNK_SIZE`] | what every user of the block layer has |
//! | [`PerNodeBlockPool`] with [`PerNodeBlockPool::with_nodes`], [`PerNodeBlockPool::thread_index`], [`PerNodeBlockPool::index_of_block`], [`PerNodeBlockPool::count_free_from`], [`PerNodeBlockPool::node_counts`], [`MAX_NODES`] | the one per-node router: a pool per node, the calling thread's node, a block's node, locality counts |
//! | [`BlockPool::pop_cached`], [`BlockPool::push_cached`] | the fast paths of a pool that needs nothing around them: the calling thread's cache, directly |
//! | [`CacheCell`], [`BlockPool::bind_cell`], [`CellPop`] | a per-thread pointer to the calling thread's cache that a layer above keeps in its own `thread_local!` |
//! | [`BlockPool::set_chunk_owner`], [`chunk_owner`] | one word per chunk that the layer above chooses, read back from any live block |
//! | [`free_via_header`], [`free_via_header_lookup`] | a free found through the block's chunk header, without the pool's address |
//! | [`BlockPool::free_unchecked`] | a free that skips the registry for a block known to be the pool's |
//! | [`BlockPool::uid`], [`BlockPool::blocks_per_chunk`], [`BlockPool::block_at`], [`BlockPool::block_index`], [`chunk_id`], [`blocks_per_chunk`] | naming blocks by chunk and index, for tokens |
//! | [`BlockPool::reserve`], [`BlockPool::cache_limit`] | growing ahead and sizing |
//! | [`audit_routers`], [`PlacementAudit`], [`AuditError`] | where the kernel says the pages of several node pools are, sampled together ([`PerNodeBlockPool::audit_placement`]) |
//! | [`BlockPool::source`] | a node pool's reclamation and growth ahead, which a layer above passes memory-pressure requests to |
//! | [`BlockPool::new_unlisted`], [`BlockPool::component_snapshot`], [`PerNodeBlockPool::refusals`], [`PerNodeBlockPool::crossings`] | a layer above that lists itself in the statistics as one component, over node pools that are not listed |
//!
//! # What the layer above promises
//!
//! The `# Safety` sections below. In short: it passes only blocks the pool handed out and
//! it owns; it frees each block once; and the pools whose chunks it reads (headers) are
//! alive while it reads them. Typed pools meet the last for good: they are never dropped.
//!
//! # Adding to the contract
//!
//! A new need of a layer above becomes an item here, documented in the table, rather than
//! a wider visibility inside `block`.

use core::alloc::Layout;
use core::ptr::NonNull;

pub(crate) use super::api::BlockPool;
pub(crate) use super::audit::{audit_routers, AuditError, PlacementAudit};
pub(crate) use super::cache::CacheCell;
pub(crate) use super::cache::CellPop;
use super::cache::{self, ThreadCache};
use super::chunk::geometry::Geometry;
use super::chunk::header::ChunkHeader;
pub(crate) use super::chunk::CHUNK_SIZE;
pub(crate) use super::config::{BlockPoolConfig, GuardLevel, OnCritical};
pub(crate) use super::per_node::{PerNodeBlockPool, MAX_NODES};
pub(crate) use super::stats::{BlockPoolStats, HugePages};
use crate::error::PoolError;

impl BlockPool {
    /// Pops a block off the calling thread's cache of this pool, counted as allocated: the
    /// unguarded fast path of [`Self::allocate`] alone. `None` for a guarded pool, or when
    /// the thread's cache is empty, closed or not made yet: then call [`Self::allocate`].
    #[inline(always)]
    pub(crate) fn pop_cached(&self) -> Option<NonNull<u8>> {
        let cache: &ThreadCache = self.unguarded_cache()?;
        // SAFETY: the fast table gave this thread its own cache; no other borrow of its
        // blocks is live.
        unsafe { cache.pop() }
    }

    /// Pushes `block` onto the calling thread's cache of this pool: the unguarded fast path
    /// of a free, without the registry lookup. False for a guarded pool, or when the
    /// thread's cache is full, closed or not made yet: then free it another way.
    ///
    /// # Safety
    ///
    /// `block` was handed out by this pool and not freed since, and the caller owns it and
    /// gives it back now.
    #[inline(always)]
    pub(crate) unsafe fn push_cached(&self, block: NonNull<u8>) -> bool {
        match self.unguarded_cache() {
            // SAFETY: the fast table gave this thread its own cache, and no other borrow of
            // its blocks is live; if it is open, it is this pool's cache (a closed cache
            // refuses the push), and `block` a block of this pool the caller gives back.
            Some(cache) => unsafe { cache.push(block.as_ptr()) },
            None => false,
        }
    }

    /// Returns a block that is known to be an allocated block of this pool, skipping the
    /// registry lookup (the guard still checks it).
    ///
    /// # Safety
    ///
    /// `block` must have been returned by [`Self::allocate`] (or [`Self::pop_cached`]) on
    /// this pool and not freed since.
    ///
    /// # Errors
    ///
    /// As [`Self::free`]: a guard's finding, or a refusal of the depot's memory.
    #[inline]
    pub(crate) unsafe fn free_unchecked(&self, block: NonNull<u8>) -> Result<(), PoolError> {
        let pool = &*self.shared;
        if pool.guard != GuardLevel::Off {
            pool.guard_free(block.as_ptr() as usize)
                .map_err(super::events::emitted)?;
        }
        if let Some(cache) = pool.thread_cache() {
            // SAFETY: the fast table gave this thread its own cache, and no other borrow of
            // its blocks is live; `block` is an allocated block of this pool (caller) that
            // the caller gives back, its guard (if any) flipped to free just above.
            if unsafe { cache.push(block.as_ptr()) } {
                return Ok(());
            }
        }
        self.release(block.as_ptr())
    }

    /// Points `cell`, a [`CacheCell`] of the calling thread, at the thread's cache of this
    /// pool, if the pool is unguarded and in a slot the fast table covers.
    pub(crate) fn bind_cell(&self, cell: &CacheCell) {
        cache::bind(&self.shared, cell);
    }

    /// Records `owner` in the header of every chunk mapped from now on ([`chunk_owner`]
    /// reads it back), and whether a free of their blocks may go through the header
    /// straight into the freeing thread's cache ([`free_via_header`]). A layer above that
    /// must see every free (to drop or reset a value, or to count it) says no.
    pub(crate) fn set_chunk_owner(&self, owner: usize, free_via_header: bool) {
        self.shared.set_chunk_owner(owner, free_via_header);
    }

    /// Tells the pool that a layer above keeps values in its free blocks (a recycling
    /// pool), so that it writes nothing into their payload (see `block/overflow.rs`).
    /// Call it before the first free.
    pub(crate) fn keep_free_contents(&self) {
        self.shared
            .keeps_contents
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Maps chunks until `capacity` blocks fit, pre-faulting them if the pool does.
    ///
    /// # Errors
    ///
    /// [`PoolError::OutOfMemory`] if the OS refuses a chunk, [`PoolError::LockRefused`] if
    /// the pool locks its memory and the OS refuses to lock one.
    pub(crate) fn reserve(&self, capacity: usize) -> Result<(), PoolError> {
        self.shared.reserve(capacity)
    }

    /// The pool as a statistics source, for a layer above that lists itself in its stead
    /// and passes [`Source::reclaim_idle`](crate::stats::Source::reclaim_idle),
    /// [`Source::reclaimable`](crate::stats::Source::reclaimable) and
    /// [`Source::grow_ahead`](crate::stats::Source::grow_ahead) on to each node pool.
    pub(crate) fn source(&self) -> &dyn crate::stats::Source {
        &*self.shared
    }

    /// The pool's id, unique for the life of the process.
    pub(crate) fn uid(&self) -> u64 {
        self.shared.uid
    }

    /// Most blocks one thread's cache holds for this pool.
    pub(crate) fn cache_limit(&self) -> usize {
        self.shared.cache_limit
    }

    /// Whether [`Self::pop_cached`] can serve this pool at all: its registry slot is one
    /// the fast table covers. A pool past it (in a process with more than 256 pools alive)
    /// serves every allocation on its slow path.
    pub(crate) fn has_fast_paths(&self) -> bool {
        self.shared.fast_paths()
    }

    /// Blocks in each chunk.
    pub(crate) fn blocks_per_chunk(&self) -> usize {
        self.shared.geometry.blocks_per_chunk
    }

    /// The address of block `index` of the chunk at `chunk_base`.
    pub(crate) fn block_at(&self, chunk_base: usize, index: usize) -> usize {
        self.shared.geometry.block_addr(chunk_base, index)
    }

    /// The index of the block starting at `addr` within its chunk, if `addr` is a block
    /// start of a chunk laid out as this pool's.
    pub(crate) fn block_index(&self, addr: usize) -> Option<usize> {
        self.shared.geometry.index_of(addr)
    }
}

/// Blocks in each chunk of a pool of `layout` at `guard`, or `None` for a layout no pool
/// can hold.
pub(crate) fn blocks_per_chunk(layout: Layout, guard: GuardLevel) -> Option<usize> {
    Geometry::new(layout, guard)
        .ok()
        .map(|g| g.blocks_per_chunk)
}

/// The owner word of the chunk holding `block` (see [`BlockPool::set_chunk_owner`]).
///
/// # Safety
///
/// `block` was handed out by a pool that stays alive until this returns, and is not freed.
#[inline(always)]
pub(crate) unsafe fn chunk_owner(block: NonNull<u8>) -> usize {
    // SAFETY: `block` lies in a chunk of a live pool (caller), mapped while it lives.
    unsafe { ChunkHeader::of(block.as_ptr() as usize) }.owner as usize
}

/// The id of the chunk holding `block` within its pool, in mapping order.
///
/// # Safety
///
/// As for [`chunk_owner`].
pub(crate) unsafe fn chunk_id(block: NonNull<u8>) -> u32 {
    // SAFETY: `block` lies in a chunk of a live pool (caller), mapped while it lives.
    unsafe { ChunkHeader::of(block.as_ptr() as usize) }.chunk_id
}

/// Frees `block` into the calling thread's cache of its pool, found through the block's
/// chunk header, if the thread's last free through a header went to the same pool: a
/// load, a compare and a push, inlined. False otherwise, and when the cache cannot take
/// it: then call [`free_via_header_lookup`], out of line.
///
/// # Safety
///
/// `block` was handed out by a pool that stays alive until this returns, is not freed, and
/// the caller owns it and gives it back now.
#[inline(always)]
pub(crate) unsafe fn free_via_header(block: NonNull<u8>) -> bool {
    // SAFETY: the caller's contract is `push_via_header`'s.
    unsafe { cache::push_via_header(block.as_ptr()) }
}

/// [`free_via_header`] for a block of any pool: finds the thread's cache through the
/// header's index and remembers it for the next free. False when the pool's owner does not
/// allow it (see [`BlockPool::set_chunk_owner`]), the pool is guarded, or the cache cannot
/// take it: then free it another way.
///
/// # Safety
///
/// As for [`free_via_header`].
pub(crate) unsafe fn free_via_header_lookup(block: NonNull<u8>) -> bool {
    // SAFETY: the caller's contract is `push_via_header_lookup`'s.
    unsafe { cache::push_via_header_lookup(block.as_ptr()) }
}
