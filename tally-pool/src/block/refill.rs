//! The slow paths of a thread's cache: trading magazines with the depot, taking blocks
//! from the thread's fresh range, synchronising with the pool's flush requests; the paths
//! of a thread without a cache (it is exiting); and the retirement of a cache at thread
//! exit.
//!
//! Every allocation and free goes one of these ways:
//!
//! | way | where | when |
//! |---|---|---|
//! | `ThreadCache::pop` / `push` | `cache`, called from `api` and `facade` (also through a `CacheCell` or a chunk header) | the fast paths: an open cache with a block or room |
//! | [`PoolShared::refill_and_allocate`] / [`PoolShared::spill_and_free`] | here | a fast path missed on an open cache from the fast table |
//! | [`PoolShared::allocate_in_section`] / [`PoolShared::free_in_section`] | here | the slow path found its cache through the thread's table |
//! | [`PoolShared::allocate_uncached`] / [`PoolShared::free_uncached`] | here | the thread's table is gone (thread exit) |

use core::ptr::NonNull;
use std::sync::atomic::Ordering as StdOrdering;
use std::sync::Arc;

use super::cache::{CachedBlocks, ThreadCache};
use super::chunk::registry;
use super::config::GuardLevel;
use super::depot::MAGAZINE_SIZE;
use super::overflow::Links;
use super::shared::{clock, PoolShared};
use crate::error::{CorruptionKind, PoolError};
use crate::sync::Ordering;

impl PoolShared {
    /// Allocation in a section of a cache the slow path found through the thread's table:
    /// takes the top block if the cache is open and in step with the pool, else
    /// [`Self::refill_and_allocate`].
    pub(super) fn allocate_in_section(
        &self,
        cache: &ThreadCache,
        blocks: &mut CachedBlocks,
    ) -> Result<NonNull<u8>, PoolError> {
        if !cache.is_closed() && blocks.stamp == self.stamp() {
            if let Some(index) = blocks.len.checked_sub(1) {
                if let Some(&ptr) = blocks.ptrs.get(index) {
                    blocks.len = index;
                    let block = self.hand_out(ptr)?;
                    cache.counters.allocations.bump();
                    return Ok(block);
                }
            }
        }
        self.refill_and_allocate(cache, blocks)
    }

    /// Free of a checked block in a section of a cache the slow path found through the
    /// thread's table: puts it on top if the cache is open, in step with the pool and not
    /// full, else [`Self::spill_and_free`].
    pub(super) fn free_in_section(
        &self,
        cache: &ThreadCache,
        blocks: &mut CachedBlocks,
        ptr: *mut u8,
    ) -> Result<(), PoolError> {
        if !cache.is_closed() && blocks.stamp == self.stamp() && blocks.len < self.cache_limit {
            if let Some(slot) = blocks.ptrs.get_mut(blocks.len) {
                *slot = ptr;
                blocks.len += 1;
                cache.counters.frees.bump();
                return Ok(());
            }
        }
        self.spill_and_free(cache, blocks, ptr)
    }

    /// Allocation when the cache is empty, closed or out of date: synchronises with the
    /// pool, refills the cache if it is empty, then takes a block.
    #[cold]
    pub(super) fn refill_and_allocate(
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

    /// Free when the cache is full or out of date: synchronises with the pool, spills a
    /// batch if the cache is full, then puts the block in. `ptr` was checked already.
    #[cold]
    pub(super) fn spill_and_free(
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
            // SAFETY: a slow path of `cache`'s owner runs this (callers hold a section of it),
            // on `self`, the live pool the cache belongs to: the thread's table found it by this
            // pool's id, or the fast table gave it open (an open entry is its slot's live pool's).
            unsafe { cache.reopen(self.cache_limit) };
        }
        let now = clock();
        self.touch(now);
        cache.mark_slow(now);
        let stamp = self.stamp.load(Ordering::SeqCst);
        // A request for this cache alone, taken after the reopen as the epoch is.
        let asked = cache.take_flush_request();
        if blocks.stamp != stamp || asked {
            if let Err(e) = self.flush(cache, blocks) {
                // The request still stands: closed, the cache sends the next call back here
                // to try again, rather than serving from the fast paths meanwhile.
                if asked {
                    cache.request_flush();
                }
                cache.close();
                return Err(e);
            }
            blocks.stamp = stamp;
        }
        Ok(())
    }

    /// Hands every cached block to the depot, and the fresh range back to its chunk (or,
    /// if blocks were carved after it there, to the depot too).
    pub(super) fn flush(
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

    /// Moves up to `n` blocks from the top of the cache into a magazine in the depot, or
    /// onto the overflow list if the OS refuses the depot the memory for a magazine. Errs
    /// only for a pool whose free blocks can carry no link (see `overflow`).
    fn spill(
        &self,
        cache: &ThreadCache,
        blocks: &mut CachedBlocks,
        n: usize,
    ) -> Result<(), PoolError> {
        let n = n.min(blocks.len).min(MAGAZINE_SIZE);
        let from = blocks.len - n;
        let Some(mag) = self.depot.new_magazine() else {
            let placed = blocks
                .ptrs
                .get(from..from + n)
                .is_some_and(|spilled| self.overflow_push(spilled));
            if !placed {
                return Err(PoolError::OutOfMemory {
                    pool: self.error_name,
                    bytes: 0,
                    errno: libc::ENOMEM,
                });
            }
            blocks.len = from;
            return Ok(());
        };
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
                pool: self.error_name,
                bytes: 0,
                errno: libc::ENOMEM,
            });
        }
        blocks.len = from;
        self.depot.count_in(n);
        self.depot.push_full(mag);
        cache.counters.depot_exchanges.bump();
        Ok(())
    }

    /// Fills an empty cache from the depot, else from the overflow list, else from the
    /// thread's fresh range, carving a new range under the growth lock when that is empty
    /// too.
    fn refill(&self, cache: &ThreadCache, blocks: &mut CachedBlocks) -> Result<(), PoolError> {
        if self.take_magazine(blocks) {
            cache.counters.depot_exchanges.bump();
            return Ok(());
        }
        if self.take_overflow(blocks) {
            return Ok(());
        }
        if blocks.fresh_left == 0 {
            let mut growth = self.lock_growth_to_allocate()?;
            // Another thread may have returned blocks while this one waited for the lock.
            if self.take_magazine(blocks) {
                cache.counters.depot_exchanges.bump();
                return Ok(());
            }
            if self.take_overflow(blocks) {
                return Ok(());
            }
            let (first, got) = self.carve_range(&mut growth, self.fresh_batch)?;
            blocks.fresh_next = first;
            blocks.fresh_left = got;
        }
        self.take_fresh(blocks);
        Ok(())
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

    /// Moves up to a batch of blocks from the overflow list into the cache. False when
    /// the list is empty (one load).
    fn take_overflow(&self, blocks: &mut CachedBlocks) -> bool {
        if self.overflow.len() == 0 {
            // The common case, checked here so that a refill from the fresh range makes no
            // call for it.
            return false;
        }
        let start = blocks.len;
        let end = (start + self.batch).min(self.cache_limit);
        let Some(dst) = blocks.ptrs.get_mut(start..end) else {
            return false;
        };
        let n = self.overflow_take(dst);
        blocks.len += n;
        n > 0
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
                self.depot.count_out(n);
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

    /// Called at thread exit, by the owner of `cache`: returns the cache's blocks and folds
    /// its counters.
    pub(super) fn retire_cache(&self, cache: &Arc<ThreadCache>) {
        // Called from the owning thread's table destructor: the cache is this thread's.
        // Blocks the depot cannot take for want of a magazine go onto the overflow list.
        // Only in a pool whose free blocks can carry no link (see `overflow`) are blocks
        // that cannot be spilled lost to the pool, not handed out twice: cached blocks, and
        // the fresh range if other blocks were carved after it in its chunk.
        // SAFETY: the caller is the cache's owner (see above), whose table no longer lends
        // the cache to any fast path; `flush` reaches nothing of the table.
        let _ = unsafe { cache.in_section(|cache, blocks| self.flush(cache, blocks)) };
        self.caches.retire(cache);
    }

    // Without a cache: the calling thread is exiting and its table is gone.

    /// Allocation without a cache: one block from the depot or a fresh carve, the rest of
    /// the magazine straight back.
    pub(super) fn allocate_uncached(&self) -> Result<NonNull<u8>, PoolError> {
        self.touch(clock());
        let mut one = CachedBlocks::new(0);
        if !self.take_magazine(&mut one) && !self.take_overflow(&mut one) {
            let mut growth = self.lock_growth_to_allocate()?;
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
        self.caches
            .uncached()
            .allocations
            .fetch_add(1, StdOrdering::Relaxed);
        Ok(block)
    }
    /// Free without a cache: the block goes to the depot in a magazine of its own.
    pub(super) fn free_uncached(&self, ptr: *mut u8) -> Result<(), PoolError> {
        self.touch(clock());
        let mut one = CachedBlocks::new(0);
        if let Some(slot) = one.ptrs.first_mut() {
            *slot = ptr;
            one.len = 1;
        }
        self.spill_uncached(&mut one)?;
        self.caches
            .uncached()
            .frees
            .fetch_add(1, StdOrdering::Relaxed);
        Ok(())
    }
    /// [`Self::spill`] for a cache attached to no thread, counted in the pool totals.
    fn spill_uncached(&self, blocks: &mut CachedBlocks) -> Result<(), PoolError> {
        let scratch = ThreadCache::detached(self.uid);
        self.spill(&scratch, blocks, self.batch)?;
        self.caches
            .uncached()
            .depot_exchanges
            .fetch_add(scratch.counters.depot_exchanges.get(), StdOrdering::Relaxed);
        Ok(())
    }
}

/// The overflow list's links live in the free blocks (see `overflow`): in the check word
/// under a guard, else in the payload's first word.
impl Links for PoolShared {
    unsafe fn set_link(&self, addr: usize, next: usize) {
        if let Some(word) = self.canary(addr) {
            word.store(!self.alloc_mark(addr) ^ next as u64, Ordering::Release);
        } else {
            // SAFETY: `addr` starts a free block of this pool the caller holds alone (trait docs):
            // 8 bytes or more (`Geometry`), 8-aligned (a block start), in a chunk mapped while
            // the pool lives, which keeps no value in it (`can_link`, checked by the caller).
            unsafe { (addr as *mut usize).write(next) };
        }
    }

    unsafe fn take_link(&self, addr: usize) -> usize {
        if let Some(word) = self.canary(addr) {
            let free = !self.alloc_mark(addr);
            let next = word.load(Ordering::Acquire) ^ free;
            word.store(free, Ordering::Release);
            next as usize
        } else {
            // SAFETY: as in `set_link`, which wrote this word when the block went onto the
            // list; the list's lock orders that write before this read.
            unsafe { (addr as *const usize).read() }
        }
    }

    fn is_listed_block(&self, addr: usize) -> bool {
        registry::tag(addr) == self.registry_tag && self.geometry.is_block_start(addr)
    }
}

/// The overflow list as the pool uses it: the free count, the withdrawn blocks of a damaged
/// list, and its corruption report.
impl PoolShared {
    /// Whether a free block of this pool can carry a link.
    fn can_link(&self) -> bool {
        self.guard != GuardLevel::Off || !self.keeps_contents.load(StdOrdering::Relaxed)
    }

    /// Puts the free blocks of `ptrs` onto the overflow list; false (and nothing done) if
    /// this pool's blocks cannot carry a link. Each pointer must be a checked, free block
    /// of this pool that the caller holds and gives up.
    pub(super) fn overflow_push(&self, ptrs: &[*mut u8]) -> bool {
        if !self.can_link() {
            return false;
        }
        if ptrs.is_empty() {
            return true;
        }
        // Counted before they can be taken (`Depot::count_in`).
        self.depot.count_in(ptrs.len());
        // SAFETY: the list is this pool's, whose blocks can carry a link (checked above);
        // the caller gives up the blocks, free and checked.
        unsafe { self.overflow.push(self, ptrs) };
        true
    }

    /// Takes up to `out.len()` blocks off the overflow list into `out`, each free as the
    /// guard expects; returns how many. Skips the lock while the list is empty.
    pub(super) fn overflow_take(&self, out: &mut [*mut u8]) -> usize {
        // SAFETY: the list is this pool's.
        let taken = unsafe { self.overflow.take(self, out) };
        if let Some((addr, lost)) = taken.damaged {
            // The blocks cut off leave the free count for the withdrawn one.
            self.depot.count_out(lost);
            self.counters
                .withdrawn
                .fetch_add(lost as u64, StdOrdering::Relaxed);
            let _ = self.corruption(CorruptionKind::CanaryOverwritten, addr);
        }
        if taken.n > 0 {
            // Not when nothing was taken: a locked write to the depot's shared count on every
            // refill from the fresh range would cost more than the rest of that refill.
            self.depot.count_out(taken.n);
        }
        taken.n
    }

    /// Takes every block off the overflow list (for reclaim, under the growth lock); `None`,
    /// with every block back on the list, if the allocator refused the vector's memory.
    pub(super) fn overflow_take_all(&self) -> Option<Vec<*mut u8>> {
        let mut all = Vec::new();
        let mut buf = [core::ptr::null_mut(); 64];
        loop {
            let n = self.overflow_take(&mut buf);
            let taken = buf.get(..n).unwrap_or_default();
            if n == 0 {
                return Some(all);
            }
            if all.try_reserve(n).is_err() {
                // They were on the list, so they can carry a link: neither push refuses.
                let _ = self.overflow_push(taken);
                let _ = self.overflow_push(&all);
                return None;
            }
            all.extend_from_slice(taken);
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use crate::sync::lock;
    use core::alloc::Layout;

    use super::*;
    use crate::block::config::{BlockPoolConfig, GuardLevel};
    use crate::block::shared::FRESH_RANGE;

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
