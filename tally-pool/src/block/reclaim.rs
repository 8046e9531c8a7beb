//! Reclaim: giving chunks whose blocks are all free back to the OS, beyond the pool's
//! reserve, as much as an [`Urgency`] asks.
//!
//! A full reclaim first asks every thread to flush its cache (the epoch), then, under the
//! growth lock, takes every magazine out of the depot and every block off the overflow list
//! (see `overflow`): nobody can carve meanwhile, so a chunk whose carved blocks are all in
//! those has no block anywhere else. The overflow blocks of chunks that stay go back onto
//! the list. Such a
//! chunk keeps its address range, its registration and its header page, and is reused
//! before a new one is mapped; the rest of its pages go back to the OS (`MADV_DONTNEED`, so
//! they leave the resident set at once). Under memory pressure, enough chunks to hold the
//! reserve stay as they are, faulted in, the last chunks mapped going back first; an
//! explicit `BlockPool::reclaim` gives back every free chunk.
//!
//! By urgency ([`PoolShared::reclaim_idle`]), with "idle" meaning no slow path for the idle
//! time:
//!
//! | urgency | thread caches | chunks |
//! |---|---|---|
//! | `Low` | untouched | an idle pool gives back the chunks already wholly in its depot |
//! | `Moderate` | idle caches asked to flush | as `Low` |
//! | `High` | as `Moderate`; an idle pool asks all its caches | an idle pool gives back every free chunk |
//! | `Critical` | every cache asked | every pool gives back every free chunk |
//!
//! Reclaim runs when memory is short, so the vectors it works in are asked of the global
//! allocator fallibly, before anything moves: if the allocator refuses, every block stays
//! where it was and that round gives nothing back, where an infallible allocation would
//! abort the process.
//!
//! A cache asked to flush does so on its owner's next slow path: the fast paths take no
//! atomic read-modify-write, so no other thread can take blocks out of a cache whose owner
//! may be running, and the blocks of a thread that never calls the pool again stay in its
//! cache until it exits.

use std::sync::atomic::Ordering as StdOrdering;
use std::time::Duration;

use super::chunk::CHUNK_SIZE;
use super::depot::MAGAZINE_SIZE;
use super::shared::{millis, now_ms, PoolShared};
use crate::stats::Urgency;
use crate::sys::PAGE;

impl PoolShared {
    /// Gives back as much as `urgency` asks (see the module docs), a pool or cache being
    /// idle after `idle_after` without a slow path; returns the bytes given back to the OS.
    pub(super) fn reclaim_idle(&self, urgency: Urgency, idle_after: Duration) -> usize {
        let now = now_ms();
        let idle = self.is_idle(now, idle_after);
        // Nothing has been idle for longer than the process has run.
        if let (true, Some(since)) = (
            urgency >= Urgency::Moderate,
            now.checked_sub(millis(idle_after)),
        ) {
            self.caches.request_flush_idle(since);
        }
        if urgency >= Urgency::Critical || (urgency >= Urgency::High && idle) {
            self.release_free_chunks(true, self.reserve)
        } else if idle {
            self.release_free_chunks(false, self.reserve)
        } else {
            0
        }
    }

    /// The bytes [`Self::reclaim_idle`] could give back at `urgency`: the free blocks
    /// beyond the reserve (cached, in the depot, carved or not) of a pool the urgency
    /// reaches, in whole chunks less their header pages, and no more chunks than can be
    /// given back at all (the first chunk of a huge-page pair cannot). An estimate: free
    /// blocks may be spread over chunks that also hold live ones.
    pub(super) fn reclaimable(&self, urgency: Urgency, idle_after: Duration) -> usize {
        let reaches = urgency >= Urgency::Critical
            || (urgency >= Urgency::High && self.is_idle(now_ms(), idle_after));
        if !reaches {
            return 0;
        }
        let bpc = self.geometry.blocks_per_chunk.max(1);
        // Nothing is promised if the allocator refuses the count's copy of the caches.
        let Some(counts) = self.caches.try_counts() else {
            return 0;
        };
        let live = self.memory(&counts).live;
        let live = usize::try_from(live).unwrap_or(usize::MAX);
        let needed = live.max(self.reserve).div_ceil(bpc);
        let (active, givable) = {
            let growth = self.lock_growth();
            let givable = growth
                .chunks
                .iter()
                .filter(|c| !c.reclaimed && c.can_give_back())
                .count();
            (growth.active(), givable)
        };
        active.saturating_sub(needed).min(givable) * (CHUNK_SIZE - PAGE)
    }

    /// Gives every chunk whose carved blocks are all in the depot back to the OS, keeping
    /// its header page, and returns the bytes released: an explicit request, which does
    /// not keep the reserve. See `BlockPool::reclaim`.
    pub(super) fn reclaim(&self) -> usize {
        self.release_free_chunks(true, 0)
    }

    /// Gives back chunks whose carved blocks are all in the depot, keeping enough chunks
    /// for `reserve` blocks; asks every thread to flush its cache first if `ask_caches`.
    ///
    /// Memory is short exactly when reclaim is asked for, so its own vectors are asked of
    /// the allocator fallibly, before anything is given back: if it refuses, every block
    /// goes back where it was and nothing is given back this time (0), where an infallible
    /// allocation would abort the process.
    fn release_free_chunks(&self, ask_caches: bool, reserve: usize) -> usize {
        if ask_caches {
            self.bump_epoch();
        }
        let mut growth = self.lock_growth();
        let chunks = growth.chunks.len();
        let (Some(mut index), Some(mut free_in), Some(mut gone)) =
            (with_room(chunks), with_room(chunks), with_room(chunks))
        else {
            return 0;
        };
        // Chunk bases and positions, sorted by base for `position`.
        index.extend(growth.chunks.iter().enumerate().map(|(i, c)| (c.base(), i)));
        index.sort_unstable();
        let position = |p: *mut u8| {
            let base = p as usize & !(CHUNK_SIZE - 1);
            let found = index.binary_search_by_key(&base, |&(b, _)| b).ok();
            found.and_then(|k| index.get(k)).map(|&(_, i)| i)
        };
        free_in.resize(chunks, 0usize);
        gone.resize(chunks, false);
        // Take every magazine out of the depot: while the lock is held nobody can carve,
        // so every block of a chunk is either in these magazines or held elsewhere.
        let mut mags = Vec::new();
        while let Some(m) = self.depot.pop_full() {
            if mags.try_reserve(1).is_err() {
                self.depot.push_full(m);
                mags.iter().for_each(|&m| self.depot.push_full(m));
                return 0;
            }
            mags.push(m);
        }
        // And the overflow list, whose blocks are free too (see `overflow`).
        let Some(mut listed) = self.overflow_take_all() else {
            mags.iter().for_each(|&m| self.depot.push_full(m));
            return 0;
        };
        let mut popped = 0usize;
        for &m in &mags {
            // SAFETY: popped above, so owned by this thread.
            unsafe {
                self.depot.with_blocks(m, |b| {
                    popped += b.count;
                    for &p in b.ptrs.iter().take(b.count) {
                        if let Some(n) = position(p).and_then(|i| free_in.get_mut(i)) {
                            *n += 1;
                        }
                    }
                })
            };
        }
        for &p in &listed {
            if let Some(n) = position(p).and_then(|i| free_in.get_mut(i)) {
                *n += 1;
            }
        }
        // Room for the blocks of the magazines that stay, the last memory asked for.
        let Some(mut keep) = with_room(popped) else {
            mags.iter().for_each(|&m| self.depot.push_full(m));
            // They were on the list, so they can carry a link: this cannot refuse.
            let _ = self.overflow_push(&listed);
            return 0;
        };
        let mut freed = 0usize;
        let mut released = 0usize;
        // Chunks that hold the reserve stay: the last mapped go back first.
        let keep_chunks = reserve.div_ceil(self.geometry.blocks_per_chunk.max(1));
        let mut spare = growth.active().saturating_sub(keep_chunks);
        for ((chunk, &free), gone) in growth
            .chunks
            .iter_mut()
            .zip(&free_in)
            .zip(gone.iter_mut())
            .rev()
        {
            // Keep the page that holds the header; give back the rest.
            if spare > 0 && !chunk.reclaimed && free == chunk.carved && self.give_back(chunk) {
                spare -= 1;
                released += chunk.carved;
                chunk.carved = 0;
                chunk.reclaimed = true;
                *gone = true;
                freed += CHUNK_SIZE - PAGE;
                self.counters
                    .active_chunks
                    .fetch_sub(1, StdOrdering::Relaxed);
            }
        }
        growth.carved_total -= released;
        let stays = |p: *mut u8| position(p).and_then(|i| gone.get(i)).copied() != Some(true);
        // Put back the blocks of chunks that stay, packed into as few magazines as needed.
        for &m in &mags {
            // SAFETY: owned by this thread since the pop above.
            unsafe {
                self.depot.with_blocks(m, |b| {
                    let blocks = b.ptrs.iter().take(b.count).copied();
                    keep.extend(blocks.filter(|&p| stays(p)));
                    b.count = 0;
                })
            };
        }
        // The blocks of reclaimed chunks leave the depot; the rest go back in below.
        self.depot.count_out(popped - keep.len());
        listed.retain(|&p| stays(p));
        // They were on the list, so they can carry a link: this cannot refuse.
        let _ = self.overflow_push(&listed);
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
        self.counters
            .reclaimed_bytes
            .fetch_add(freed as u64, StdOrdering::Relaxed);
        freed
    }
}

/// An empty vector with room for `n` values, or `None` if the allocator refused it.
fn with_room<T>(n: usize) -> Option<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).ok()?;
    Some(v)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use core::alloc::Layout;
    use core::ptr::NonNull;
    use std::collections::HashSet;

    use crate::block::{BlockPool, BlockPoolConfig, GuardLevel};

    type Payload = [u64; 4];

    fn write(block: NonNull<u8>, value: Payload) {
        // SAFETY: `block` is a live block of a pool of `Payload`s that the test holds.
        unsafe { block.as_ptr().cast::<Payload>().write(value) }
    }

    fn read(block: NonNull<u8>) -> Payload {
        // SAFETY: as in `write`, and written there.
        unsafe { block.as_ptr().cast::<Payload>().read() }
    }

    fn free(pool: &BlockPool, block: NonNull<u8>) {
        // SAFETY: every block the tests free was allocated from `pool` and is freed once.
        unsafe { pool.free(block) }.unwrap();
    }

    /// One block stays live while `others` blocks of its chunk are allocated and freed: a
    /// reclaim must keep the chunk, and the live block its contents and its owner.
    fn one_live_block_keeps_its_chunk(guard: GuardLevel, others: usize) {
        let pool = BlockPool::new(
            BlockPoolConfig::new(Layout::new::<Payload>())
                .name("reclaim-one-live")
                .guard(guard)
                .prefault(false),
        )
        .unwrap();
        let live = pool.allocate().unwrap();
        write(live, [1, 2, 3, 4]);
        let rest: Vec<_> = (0..others).map(|_| pool.allocate().unwrap()).collect();
        for b in rest {
            free(&pool, b);
        }
        assert_eq!(pool.reclaim(), 0, "a chunk with a live block went back");
        let s = pool.stats();
        assert_eq!((s.chunks, s.live_blocks), (1, 1), "{s:?}");
        assert_eq!(read(live), [1, 2, 3, 4], "the live block lost its contents");
        // The chunk still hands out its other blocks, never the live one.
        let again: Vec<_> = (0..others + 1).map(|_| pool.allocate().unwrap()).collect();
        assert!(again.iter().all(|&b| b != live));
        for (i, &b) in again.iter().enumerate() {
            write(b, [i as u64; 4]);
        }
        assert_eq!(read(live), [1, 2, 3, 4]);
        write(live, [5, 6, 7, 8]);
        assert_eq!(read(live), [5, 6, 7, 8]);
        for b in again {
            free(&pool, b);
        }
        free(&pool, live);
        assert!(pool.reclaim() > 0, "the chunk is free now");
        assert_eq!(pool.stats().chunks, 0);
    }

    type Page = [u64; 512];

    fn page_pool(chunks: usize) -> (BlockPool, usize) {
        let probe = BlockPool::new(BlockPoolConfig::new(Layout::new::<Page>())).unwrap();
        let per_chunk = probe.blocks_per_chunk();
        let pool = BlockPool::new(
            BlockPoolConfig::new(Layout::new::<Page>())
                .name("reclaim-pages")
                .max_capacity(chunks * per_chunk)
                .prefault(false),
        )
        .unwrap();
        (pool, per_chunk)
    }

    fn allocate_distinct(pool: &BlockPool, n: usize) -> Vec<NonNull<u8>> {
        let blocks: Vec<_> = (0..n).map(|_| pool.allocate().unwrap()).collect();
        let distinct: HashSet<_> = blocks.iter().collect();
        assert_eq!(distinct.len(), n, "a block was handed out twice");
        blocks
    }

    #[test]
    fn the_caps_worth_allocates_again_after_a_reclaim() {
        let (pool, cap) = page_pool(1);
        for round in 0..2 {
            let blocks = allocate_distinct(&pool, cap);
            assert!(pool.allocate().is_err(), "round {round}: at the cap");
            for b in blocks {
                free(&pool, b);
            }
            assert!(pool.reclaim() > 0, "round {round}");
            assert_eq!(pool.stats().chunks, 0, "round {round}");
        }
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "minutes under miri (whole chunks carved, freed and reclaimed); the_caps_worth_allocates_again_after_a_reclaim keeps the path under miri"
    )]
    fn blocks_of_a_reclaimed_chunk_leave_circulation() {
        // Two chunks; one block of the first stays live, so only the second goes back. Its
        // blocks must leave the depot: they come back only when it is carved again, once.
        let (pool, per_chunk) = page_pool(2);
        let mut blocks = allocate_distinct(&pool, 2 * per_chunk);
        let live = blocks.remove(0);
        for b in blocks {
            free(&pool, b);
        }
        assert!(pool.reclaim() > 0);
        assert_eq!(pool.stats().chunks, 1);
        // What stays free is the first chunk's other blocks, counted once.
        let s = pool.component_snapshot();
        let size = s.object_size.unwrap();
        assert_eq!(s.live_objects, 1, "{s:?}");
        let idle = s.free_bytes + s.cached_bytes + s.fresh_bytes;
        assert_eq!(idle, (per_chunk as u64 - 1) * size, "{s:?}");
        let again = allocate_distinct(&pool, 2 * per_chunk - 1);
        assert!(!again.contains(&live));
        assert!(pool.allocate().is_err(), "the cap is reached");
        for b in again {
            free(&pool, b);
        }
        free(&pool, live);
    }

    #[test]
    fn reclaim_keeps_the_chunk_of_the_only_block_allocated() {
        one_live_block_keeps_its_chunk(GuardLevel::Off, 0);
        one_live_block_keeps_its_chunk(GuardLevel::Full, 0);
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "minutes under miri (whole chunks carved, freed and reclaimed); the_caps_worth_allocates_again_after_a_reclaim keeps the path under miri"
    )]
    fn reclaim_keeps_a_chunk_with_one_live_block_among_free_ones() {
        one_live_block_keeps_its_chunk(GuardLevel::Off, 100);
        one_live_block_keeps_its_chunk(GuardLevel::Canary, 100);
        one_live_block_keeps_its_chunk(GuardLevel::Full, 100);
    }

    #[test]
    fn a_huge_page_pool_says_it_can_give_back_only_what_reclaim_gives_back() {
        use std::time::Duration;

        use crate::stats::Urgency;
        // One pair, both chunks free, no reserve: only the second can go back.
        let pool = BlockPool::new(
            BlockPoolConfig::new(Layout::new::<Payload>())
                .capacity(1)
                .reserve(0)
                .huge_pages(true),
        )
        .unwrap();
        assert_eq!(pool.stats().chunks, 2);
        let idle = Duration::ZERO;
        let said = pool.source().reclaimable(Urgency::Critical, idle);
        assert_eq!(said, super::CHUNK_SIZE - super::PAGE);
        assert_eq!(pool.source().reclaim_idle(Urgency::Critical, idle), said);
        assert_eq!(pool.source().reclaimable(Urgency::Critical, idle), 0);
    }
}
