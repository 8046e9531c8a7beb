//! A block pool as a statistics component: its memory split into the additive classes of
//! the [module docs](super#memory-classes), its counters, and its `reclaim`.
//!
//! Everything here runs on the thread that builds a report: it reads the counts the slow
//! paths keep (the chunk list under the growth lock, the depot's block count, each thread
//! cache's count and fresh range) and adds nothing to the fast paths.

use std::sync::atomic::Ordering as StdOrdering;
use std::time::Duration;

use super::api::BlockPool;
use super::cache::with_cache;
use super::chunk::CHUNK_SIZE;
use super::events;
use super::shared::PoolShared;
use super::stats::CountSum;
use crate::stats::{ComponentSnapshot, Counters, Source, Urgency};
use crate::sys::PAGE;

/// Where a pool's blocks are, and the bytes besides them, at one instant: the partition
/// of its mapped bytes (see the module docs of `block`, "Memory classes").
///
/// Invariant: `live + cached + free + withdrawn` are the carved blocks, and
/// `(carved + fresh) * block_size + metadata_bytes` is the mapped bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct PoolMemory {
    /// Bytes a block counts in its class: the usable size.
    pub(crate) block_size: u64,
    /// Carved blocks handed out (and not freed).
    pub(crate) live: u64,
    /// Carved blocks in thread caches, fresh ranges included.
    pub(crate) cached: u64,
    /// Carved blocks in the depot.
    pub(crate) free: u64,
    /// Blocks of active chunks not carved yet.
    pub(crate) fresh: u64,
    /// Carved blocks a guard found damaged and withdrawn (counted as metadata).
    pub(crate) withdrawn: u64,
    /// Chunk headers and tails, block padding and check words, the header pages of
    /// reclaimed chunks, the depot's magazines, withdrawn blocks.
    pub(crate) metadata_bytes: u64,
    /// Chunks in use.
    pub(crate) active_chunks: u64,
}

impl PoolMemory {
    /// Bytes of the blocks in `blocks`.
    fn bytes(&self, blocks: u64) -> u64 {
        blocks.saturating_mul(self.block_size)
    }

    /// Every byte the pool holds: the sum of the classes.
    #[cfg(all(test, not(loom)))]
    fn mapped_bytes(&self) -> u64 {
        self.bytes(self.live)
            .saturating_add(self.bytes(self.cached))
            .saturating_add(self.bytes(self.free))
            .saturating_add(self.bytes(self.fresh))
            .saturating_add(self.metadata_bytes)
    }
}

impl PoolShared {
    /// The pool's memory by class, given `threads`, the sum of its thread caches' counts
    /// (read first: a cache's count waits out its owner's slow path, which may take the
    /// growth lock taken here).
    ///
    /// Exact when no operation on the pool is in flight. While threads work, the counts
    /// are read at slightly different instants; each class is then clamped to what the
    /// carved blocks leave, so that none is negative and the classes still add up to the
    /// mapped bytes.
    pub(super) fn memory(&self, threads: &CountSum) -> PoolMemory {
        let depot = self.depot.blocks() as u64;
        let segments = self.depot.mapped_bytes() as u64;
        let (active, reclaimed, carved) = {
            let growth = self.lock_growth();
            let active = growth.active();
            (
                active as u64,
                growth.chunks.len().saturating_sub(active) as u64,
                growth.carved_total as u64,
            )
        };
        let per_chunk = self.geometry.blocks_per_chunk as u64;
        let block_size = self.geometry.size as u64;
        // Reclaimed chunks carve nothing, so the carved blocks lie in the active chunks.
        let slots = active.saturating_mul(per_chunk);
        let carved = carved.min(slots);
        let withdrawn = self
            .counters
            .withdrawn
            .load(StdOrdering::Relaxed)
            .min(carved);
        let usable = carved - withdrawn;
        let cached = threads.held.min(usable);
        let free = depot.min(usable - cached);
        let live = usable - cached - free;
        // All of a chunk but its blocks' usable bytes: header, tail, padding, check words.
        let chunk_overhead = CHUNK_SIZE as u64 - per_chunk.saturating_mul(block_size);
        let metadata_bytes = active
            .saturating_mul(chunk_overhead)
            .saturating_add(reclaimed.saturating_mul(PAGE as u64))
            .saturating_add(segments)
            .saturating_add(withdrawn.saturating_mul(block_size));
        PoolMemory {
            block_size,
            live,
            cached,
            free,
            fresh: slots - carved,
            withdrawn,
            metadata_bytes,
            active_chunks: active,
        }
    }

    /// The pool's statistics snapshot: its memory classes and counters (no type name, no
    /// nodes: a layer above adds those).
    pub(super) fn component_snapshot(&self) -> ComponentSnapshot {
        let threads = self.caches.counts();
        let memory = self.memory(&threads);
        let c = &self.counters;
        let per_chunk = self.geometry.blocks_per_chunk as u64;
        let max_capacity = self.max_capacity as u64;
        ComponentSnapshot {
            object_size: Some(memory.block_size),
            live_objects: memory.live,
            live_bytes: memory.bytes(memory.live),
            cached_bytes: memory.bytes(memory.cached),
            free_bytes: memory.bytes(memory.free),
            fresh_bytes: memory.bytes(memory.fresh),
            metadata_bytes: memory.metadata_bytes,
            released_bytes: c.reclaimed_bytes.load(StdOrdering::Relaxed),
            counters: Counters {
                capacity: Some(
                    memory
                        .active_chunks
                        .saturating_mul(per_chunk)
                        .min(max_capacity),
                ),
                max_capacity: (self.max_capacity != usize::MAX).then_some(max_capacity),
                acquires: threads.allocations,
                releases: threads.frees,
                cross_thread_releases: threads.cross_thread_frees,
                exhausted: c.exhausted.load(StdOrdering::Relaxed),
                corruptions: c.corruption_events.load(StdOrdering::Relaxed),
                growths: c.expansions.load(StdOrdering::Relaxed),
                depot_exchanges: threads.depot_exchanges,
            },
            last_corruption: self.last_corruption(),
            guard: Some(self.guard.name()),
            huge_pages: Some(c.huge_pages().report_text()),
            locked_bytes: c.locked_bytes.load(StdOrdering::Relaxed) as u64,
            ..ComponentSnapshot::default()
        }
    }

    /// Where the last corruption was seen, for the report: address, node and kind.
    fn last_corruption(&self) -> Option<String> {
        let last = match self.counters.last_corruption.lock() {
            Ok(last) => *last,
            Err(poisoned) => *poisoned.into_inner(),
        };
        last.map(|(kind, address)| format!("{address:#x}, node {}: {kind}", self.node))
    }
}

impl Source for PoolShared {
    fn snapshot(&self) -> ComponentSnapshot {
        self.component_snapshot()
    }

    /// [`Source::reclaim_idle`] with an idle time of zero, after returning the calling
    /// thread's own cached blocks (as [`BlockPool::reclaim`] does).
    fn reclaim(&self, urgency: Urgency) -> usize {
        if let Some(shared) = self.this.upgrade() {
            let _ = with_cache(&shared, |cache, blocks| shared.flush(cache, blocks));
        }
        Source::reclaim_idle(self, urgency, Duration::ZERO)
    }

    /// What `urgency` asks of a block pool, never beyond its reserve: see the `reclaim`
    /// module's table. Runs on the calling thread; asks caches to flush rather than
    /// touching them.
    fn reclaim_idle(&self, urgency: Urgency, idle_after: Duration) -> usize {
        let released = PoolShared::reclaim_idle(self, urgency, idle_after);
        events::emit();
        released
    }

    fn reclaimable(&self, urgency: Urgency, idle_after: Duration) -> usize {
        PoolShared::reclaimable(self, urgency, idle_after)
    }

    /// Maps and faults in chunks ahead of demand when fewer blocks are ready than recent
    /// demand needs (see `PoolShared::grow_ahead`).
    fn grow_ahead(&self) -> usize {
        let grown = PoolShared::grow_ahead(self);
        events::emit();
        grown
    }
}

/// The pool as the registry sees it: the same snapshot, reclamation and growth ahead of
/// demand, for code that holds the pool rather than its registry entry.
///
/// ```
/// use core::alloc::Layout;
/// use std::time::Duration;
/// use tally_pool::block::{BlockPool, BlockPoolConfig};
/// use tally_pool::stats::{Source, Urgency};
///
/// let pool = BlockPool::new(BlockPoolConfig::new(Layout::new::<u64>()).capacity(1000))?;
/// // Nothing is ever given back from the reserve (by default the capacity).
/// assert_eq!(pool.reclaim_idle(Urgency::Critical, Duration::ZERO), 0);
/// assert_eq!(pool.stats().chunks, 1);
/// # Ok::<(), tally_pool::PoolError>(())
/// ```
impl Source for BlockPool {
    fn snapshot(&self) -> ComponentSnapshot {
        self.shared.snapshot()
    }

    fn reclaim(&self, urgency: Urgency) -> usize {
        Source::reclaim(&*self.shared, urgency)
    }

    fn reclaim_idle(&self, urgency: Urgency, idle_after: Duration) -> usize {
        Source::reclaim_idle(&*self.shared, urgency, idle_after)
    }

    fn reclaimable(&self, urgency: Urgency, idle_after: Duration) -> usize {
        self.shared.reclaimable(urgency, idle_after)
    }

    fn grow_ahead(&self) -> usize {
        Source::grow_ahead(&*self.shared)
    }
}

impl BlockPool {
    /// The pool's statistics snapshot (see [`PoolShared::component_snapshot`]).
    pub(crate) fn component_snapshot(&self) -> ComponentSnapshot {
        self.shared.component_snapshot()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use crate::sync::lock;
    use core::alloc::Layout;
    use core::ptr::NonNull;

    use super::*;
    use crate::block::config::{BlockPoolConfig, GuardLevel};

    /// Every byte the pool has mapped, counted from its parts rather than by class.
    fn mapped(pool: &BlockPool) -> u64 {
        let shared = &pool.shared;
        let growth = lock(&shared.growth);
        let active = growth.active();
        let reclaimed = growth.chunks.len() - active;
        (active * CHUNK_SIZE + reclaimed * PAGE + shared.depot.mapped_bytes()) as u64
    }

    fn memory(pool: &BlockPool) -> PoolMemory {
        let threads = pool.shared.caches.counts();
        pool.shared.memory(&threads)
    }

    #[track_caller]
    fn check(pool: &BlockPool, live: u64) -> PoolMemory {
        let m = memory(pool);
        assert_eq!(m.mapped_bytes(), mapped(pool), "{m:?}");
        assert_eq!(m.live, live, "{m:?}");
        let s = pool.component_snapshot();
        assert_eq!(s.mapped_bytes(), m.mapped_bytes());
        assert_eq!(s.live_bytes, live * pool.block_size() as u64);
        m
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "carves more than a 1 MiB chunk of blocks per guard level"
    )]
    fn the_classes_partition_what_is_mapped() {
        for guard in [GuardLevel::Off, GuardLevel::Canary, GuardLevel::Full] {
            let pool = BlockPool::new_unlisted(
                BlockPoolConfig::new(Layout::new::<[u64; 3]>())
                    .capacity(100)
                    .guard(guard),
            )
            .unwrap();
            check(&pool, 0);
            let per_chunk = pool.blocks_per_chunk();
            let blocks: Vec<NonNull<u8>> = (0..per_chunk + 10)
                .map(|_| pool.allocate().unwrap())
                .collect();
            let m = check(&pool, blocks.len() as u64);
            assert_eq!(m.active_chunks, 2, "grew past the first chunk");
            for &b in &blocks {
                // SAFETY: allocated above, freed once.
                unsafe { pool.free(b) }.unwrap();
            }
            let m = check(&pool, 0);
            assert!(m.cached > 0 && m.free > 0, "{m:?}");
            assert!(pool.reclaim() > 0);
            let m = check(&pool, 0);
            assert_eq!((m.cached, m.free), (0, 0), "{m:?}");
        }
    }

    #[test]
    fn the_statistics_reclaim_is_the_pools() {
        let pool =
            BlockPool::new_unlisted(BlockPoolConfig::new(Layout::new::<[u8; 256]>())).unwrap();
        let blocks: Vec<NonNull<u8>> = (0..1000).map(|_| pool.allocate().unwrap()).collect();
        for b in blocks {
            // SAFETY: allocated above, freed once.
            unsafe { pool.free(b) }.unwrap();
        }
        let source: &dyn Source = &*pool.shared;
        let released = source.reclaim(Urgency::Critical);
        assert!(released > 0);
        assert_eq!(pool.stats().chunks, 0);
        assert_eq!(source.snapshot().released_bytes, released as u64);
        check(&pool, 0);
    }

    #[test]
    fn withdrawn_blocks_are_metadata() {
        let pool = BlockPool::new_unlisted(
            BlockPoolConfig::new(Layout::new::<u64>()).guard(GuardLevel::Full),
        )
        .unwrap();
        let block = pool.allocate().unwrap();
        // SAFETY: allocated above, freed once.
        unsafe { pool.free(block) }.unwrap();
        // SAFETY: the block is free and in this thread's cache: a write after release,
        // which the next allocation of it finds.
        unsafe { block.as_ptr().write(0) };
        assert!(pool.allocate().is_err());
        let m = check(&pool, 0);
        assert_eq!(m.withdrawn, 1);
        let s = pool.component_snapshot();
        assert_eq!(s.counters.corruptions, 1);
        assert!(s.last_corruption.unwrap().contains("use after free"));
    }
}
