//! Growth: mapping chunks, carving fresh blocks out of them under the growth lock, and
//! faulting pages in ahead of the carved blocks; giving an unused fresh range back; and
//! checking the headers of the chunks.
//!
//! `capacity` blocks are mapped (and pre-faulted) when the pool is created ([`reserve`]);
//! when a thread's cache finds the depot empty it carves a fresh range of up to
//! `fresh_batch` blocks ([`carve_range`]), mapping a new chunk when the current one is
//! full, up to `max_capacity` blocks. While the pressure monitor runs, `ahead` maps the
//! chunks ahead of demand with this file's `prepare_chunks` and `install_chunks`.
//!
//! [`reserve`]: PoolShared::reserve
//! [`carve_range`]: PoolShared::carve_range

use std::sync::atomic::Ordering as StdOrdering;
use std::sync::Arc;

use super::cache::{CachedBlocks, FAST_SLOTS};
use super::chunk::header::ChunkHeader;
use super::chunk::list::{Chunk, ChunkList};
use super::chunk::registry;
use super::chunk::CHUNK_SIZE;
use super::shared::PoolShared;
use super::stats::{ADVICE_REFUSED, ONE_CHUNK, THP_NEVER};
use crate::error::{CorruptionKind, PoolError};
use crate::sys;

/// How far ahead of the carved blocks a pre-faulting pool faults pages in, in one call:
/// one slow carve per 256 KiB of blocks rather than one fault per 4 KiB, and at most this
/// much memory resident beyond the blocks in use (growth ahead of demand, while the
/// pressure monitor runs, faults in whole chunks instead).
pub(super) const PREFAULT_STEP: usize = 256 * 1024;

impl PoolShared {
    /// Maps chunks until `capacity` blocks fit, touching their pages if the pool
    /// pre-faults.
    pub(super) fn reserve(&self, capacity: usize) -> Result<(), PoolError> {
        let geometry = self.geometry;
        let mut growth = self.lock_growth();
        let have = growth.active() * geometry.blocks_per_chunk;
        let mut remaining = capacity.saturating_sub(have);
        let first_new = growth.chunks.len();
        while growth.active() * geometry.blocks_per_chunk < capacity {
            self.map_chunk(&mut growth)?;
        }
        if self.prefault {
            for chunk in growth.chunks.iter_mut().skip(first_new) {
                let here = remaining.min(geometry.blocks_per_chunk);
                if here == 0 {
                    break;
                }
                // A chunk `map_chunk` just added: nothing in it is carved, so faulting from
                // 0 (header page included) touches nothing another thread holds.
                let end = geometry.first_offset + here * geometry.stride;
                if end > chunk.faulted {
                    chunk.prefault(end);
                    chunk.faulted = end;
                }
                remaining -= here;
            }
        }
        Ok(())
    }

    /// Carves up to `want` fresh blocks and hands each to `put(i, ptr)`, ready to hand out.
    /// Returns how many; errs with `Exhausted` at the cap when none could be carved.
    pub(super) fn carve(
        &self,
        growth: &mut ChunkList,
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
    pub(super) fn carve_range(
        &self,
        growth: &mut ChunkList,
        want: usize,
    ) -> Result<(usize, usize), PoolError> {
        let room = self.max_capacity.saturating_sub(growth.carved_total);
        if room == 0 {
            // Ask every thread to return its cached blocks, so that a retry can find them.
            self.bump_epoch();
            return Err(self.exhausted());
        }
        let want = want.min(room);
        let bpc = self.geometry.blocks_per_chunk;
        let index = match growth.chunk_with_room(bpc) {
            Some(i) => i,
            None => {
                self.check_pressure()?;
                let first_new = growth.chunks.len();
                self.map_chunk(growth)?;
                // A huge-page pool maps a pair: every chunk counts (see `expansions`).
                let added = growth.chunks.len() - first_new;
                self.counters
                    .expansions
                    .fetch_add(added as u64, StdOrdering::Relaxed);
                first_new
            }
        };
        growth.cursor = index;
        let lock_pages = growth.lock;
        let Some(chunk) = growth.chunks.get_mut(index) else {
            return Ok((0, 0));
        };
        if chunk.reclaimed {
            // Reusing a reclaimed chunk faults its pages in again: growth, as mapping is.
            self.check_pressure()?;
            self.revive(chunk, lock_pages)?;
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
            chunk.prefault_range(chunk.faulted, to);
            chunk.faulted = to;
        }
        let first = self.geometry.block_addr(chunk.base(), chunk.carved);
        chunk.carved += n;
        growth.carved_total += n;
        growth.carved_ever = growth.carved_ever.wrapping_add(n);
        Ok((first, n))
    }

    /// Makes a reclaimed chunk of this pool active again: its pages count as mapped again,
    /// and in a locking pool (`lock_pages`) they are locked. The caller holds the growth
    /// lock, `chunk` is one of its chunks, and the pool may grow at the current pressure.
    pub(super) fn revive(&self, chunk: &mut Chunk, lock_pages: bool) -> Result<(), PoolError> {
        chunk.reuse();
        if lock_pages {
            if let Err(errno) = chunk.lock() {
                // Given back again, as it was: the refused chunk stays reclaimed.
                chunk.give_back();
                return Err(self.lock_refused(errno, CHUNK_SIZE));
            }
            self.counters
                .locked_bytes
                .fetch_add(CHUNK_SIZE, StdOrdering::Relaxed);
        }
        chunk.reclaimed = false;
        self.counters
            .active_chunks
            .fetch_add(1, StdOrdering::Relaxed);
        self.counters.expansions.fetch_add(1, StdOrdering::Relaxed);
        Ok(())
    }

    /// Maps, labels and registers one chunk, or in a huge-page pool two (a pair sharing one
    /// 2 MiB-aligned mapping advised for huge pages); locks them in a locking pool. On
    /// failure nothing stays mapped or registered.
    fn map_chunk(&self, growth: &mut ChunkList) -> Result<(), PoolError> {
        let plan = self.next_mapping(growth);
        let chunks = self.prepare_chunks(plan, 0)?;
        self.install_chunks(growth, chunks)
    }

    /// How many chunks the cap needs in all: chunk ids stay below it.
    pub(super) fn max_chunks(&self) -> usize {
        self.max_capacity
            .div_ceil(self.geometry.blocks_per_chunk.max(1))
    }

    /// What the next mapping of `growth` is: one chunk or a huge-page pair, locked or not.
    pub(super) fn next_mapping(&self, growth: &ChunkList) -> Mapping {
        // A pair only while both chunks stay within the chunks the cap needs: chunk ids
        // past them would number blocks past what the cap promises (raw handles number
        // blocks by chunk id). The last chunk of an odd count is mapped alone.
        let pair = growth.huge_pages && growth.chunks.len() + 2 <= self.max_chunks();
        if growth.huge_pages && !pair && growth.chunks.is_empty() {
            self.counters.record_huge_pages(Err(ONE_CHUNK));
        }
        Mapping {
            pair,
            lock: growth.lock,
        }
    }

    /// Maps, binds and advises the chunks of `plan`, locks them in a locking pool, and
    /// faults in the pages of their first `prefault` blocks (in chunk order). Needs no
    /// lock: nobody knows the chunks until [`Self::install_chunks`] gives them to the
    /// pool, and dropping them unmaps them.
    pub(super) fn prepare_chunks(
        &self,
        plan: Mapping,
        prefault: usize,
    ) -> Result<Vec<Chunk>, PoolError> {
        let span = plan.chunks() * CHUNK_SIZE;
        let oom = |errno| PoolError::OutOfMemory {
            pool: self.error_name,
            bytes: span,
            errno,
        };
        // The chunks' vector first: a refusal of its memory is an error, not an abort.
        let mut chunks: Vec<Chunk> = Vec::new();
        chunks
            .try_reserve_exact(plan.chunks())
            .map_err(|_| oom(libc::ENOMEM))?;
        let region = sys::map_aligned(span, span).map_err(|e| oom(e.errno))?;
        // Bind before the first touch (the lock, the pre-fault or the header write), or the
        // pages land wherever the writing thread runs.
        if let Some(topology) = &self.topology {
            if topology.bind(region.ptr(), span, self.node).is_err() {
                self.counters
                    .bind_failures
                    .fetch_add(1, StdOrdering::Relaxed);
            }
        }
        if plan.pair {
            // Advise before the first touch too: the first fault then takes a huge page.
            self.counters.record_huge_pages(advise_huge_pages(&region));
        }
        // A refusal drops the region, which unmaps it.
        if !sys::arc_room::<sys::Region>() {
            return Err(oom(libc::ENOMEM));
        }
        let region = Arc::new(region);
        chunks
            .extend((0..span / CHUNK_SIZE).map(|i| Chunk::at(Arc::clone(&region), i * CHUNK_SIZE)));
        drop(region);
        if plan.lock {
            // The whole span in one call: locking a pair chunk by chunk splits its 2 MiB
            // range, and it gets no huge page. A refusal drops `chunks` and with them the
            // mapping: nothing is leaked or left locked.
            Chunk::lock_all(&mut chunks).map_err(|errno| self.lock_refused(errno, span))?;
        }
        let mut left = prefault;
        for chunk in chunks.iter_mut() {
            let blocks = left.min(self.geometry.blocks_per_chunk);
            left -= blocks;
            let end = self.geometry.first_offset + blocks * self.geometry.stride;
            let end = end.min(CHUNK_SIZE);
            if blocks > 0 && end > chunk.faulted {
                // Nobody else knows the chunk yet (see above), so touching it is safe.
                chunk.prefault(end);
                chunk.faulted = end;
            }
        }
        Ok(chunks)
    }

    /// Labels and registers `chunks` (from [`Self::prepare_chunks`]) and appends them to
    /// the pool's chunks. On failure nothing stays registered and the chunks are unmapped.
    pub(super) fn install_chunks(
        &self,
        growth: &mut ChunkList,
        chunks: Vec<Chunk>,
    ) -> Result<(), PoolError> {
        let span = chunks.len() * CHUNK_SIZE;
        let oom = |errno| PoolError::OutOfMemory {
            pool: self.error_name,
            bytes: span,
            errno,
        };
        // Room in the pool's list first: a refusal drops the chunks, which unmaps them.
        growth
            .chunks
            .try_reserve(chunks.len())
            .map_err(|_| oom(libc::ENOMEM))?;
        let first_id = growth.chunks.len();
        let owner = self.owner.load(StdOrdering::Relaxed);
        // At most `FAST_SLOTS` (`fast_table::NO_RECENT` relies on it), so it fits.
        let cache_index =
            u32::try_from(self.cache_index.load(StdOrdering::Relaxed).min(FAST_SLOTS))
                .unwrap_or(u32::MAX);
        for (i, chunk) in chunks.iter().enumerate() {
            let chunk_id = u32::try_from(first_id + i).map_err(|_| oom(libc::ENOMEM))?;
            let header = ChunkHeader::new(
                self.uid,
                self.node,
                self.geometry.block_shape(),
                chunk_id,
                owner,
                cache_index,
            );
            // SAFETY: the chunk is fresh, writable, CHUNK_SIZE-aligned and larger than a
            // header (Chunk invariant), and nobody else knows it yet.
            unsafe { chunk.ptr().cast::<ChunkHeader>().write(header) };
        }
        for (i, chunk) in chunks.iter().enumerate() {
            if !registry::register(chunk.base(), self.slot) {
                for registered in chunks.iter().take(i) {
                    registry::unregister(registered.base());
                }
                return Err(oom(libc::ENOMEM));
            }
        }
        let added = chunks.len();
        if chunks.iter().any(|c| c.locked) {
            self.counters
                .locked_bytes
                .fetch_add(span, StdOrdering::Relaxed);
        }
        growth.chunks.extend(chunks);
        self.counters
            .active_chunks
            .fetch_add(added, StdOrdering::Relaxed);
        Ok(())
    }

    /// [`PoolError::LockRefused`] for `bytes` the OS refused to lock with `errno`.
    fn lock_refused(&self, errno: i32, bytes: usize) -> PoolError {
        PoolError::LockRefused {
            pool: self.error_name,
            bytes,
            errno,
            limit: sys::memlock_limit(),
        }
    }

    /// Gives `chunk`'s pages back to the OS (see `Chunk::give_back`) if it can be, for
    /// reclaim; whether it was (not if the OS refused). The caller holds the growth lock
    /// and knows every block of the chunk to be out of circulation.
    pub(super) fn give_back(&self, chunk: &mut Chunk) -> bool {
        if !chunk.can_give_back() {
            return false;
        }
        let was_locked = chunk.locked;
        let given = chunk.give_back();
        // A refused discard locks the chunk again (`Chunk::give_back`); should that lock be
        // refused too, the chunk stays active unlocked and `locked_bytes` no longer counts
        // it.
        if was_locked && !chunk.locked {
            self.counters
                .locked_bytes
                .fetch_sub(CHUNK_SIZE, StdOrdering::Relaxed);
        }
        given
    }

    /// Gives the fresh range back to its chunk if it is the last thing carved there, so
    /// that it needs no magazine and the chunk gets its room back.
    pub(super) fn uncarve_range(&self, blocks: &mut CachedBlocks) {
        let left = blocks.fresh_left;
        if left == 0 {
            return;
        }
        let mut growth = self.lock_growth();
        let end = blocks.fresh_next + left * self.geometry.stride;
        let base = blocks.fresh_next & !(CHUNK_SIZE - 1);
        let ChunkList {
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

    /// Checks every chunk header; the first broken one is an error.
    pub(super) fn verify(&self) -> Result<(), PoolError> {
        let growth = self.lock_growth();
        for chunk in &growth.chunks {
            // SAFETY: every chunk starts with a header written at mapping time and stays
            // mapped while it is in `chunks`.
            let header = unsafe { chunk.ptr().cast::<ChunkHeader>().read() };
            if !header.is_valid() || header.pool_uid != self.uid {
                return Err(self.corruption(CorruptionKind::ForeignPointer, chunk.base()));
            }
        }
        Ok(())
    }
}

/// The shape of a pool's next mapping (see `PoolShared::next_mapping`).
#[derive(Debug, Clone, Copy)]
pub(super) struct Mapping {
    /// Two chunks sharing one 2 MiB mapping advised for huge pages, else one chunk.
    pair: bool,
    /// Whether the chunks are locked in memory.
    lock: bool,
}

impl Mapping {
    /// How many chunks it maps.
    pub(super) fn chunks(self) -> usize {
        if self.pair {
            2
        } else {
            1
        }
    }
}

/// Advises `region` for huge pages: `Ok`, or why the pool will use normal pages.
fn advise_huge_pages(region: &sys::Region) -> Result<(), &'static str> {
    if sys::thp_mode() == sys::ThpMode::Never {
        return Err(THP_NEVER);
    }
    region.advise_huge_pages().map_err(|_| ADVICE_REFUSED)
}

#[cfg(all(test, not(loom)))]
pub(super) mod tests {
    use crate::sync::lock;
    use core::alloc::Layout;
    use std::sync::Arc;

    use super::*;
    use crate::block::config::BlockPoolConfig;

    /// A pool of 64-byte blocks with nothing mapped, pre-faulting or not.
    pub(in crate::block) fn pool(prefault: bool) -> Arc<PoolShared> {
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
    fn a_refusing_pool_refuses_growth_only_at_critical() {
        use crate::block::config::OnCritical;
        use crate::sys::budget::PressureLevel;
        let refusing = PoolShared::new(
            BlockPoolConfig::new(Layout::new::<u64>())
                .name("refusing")
                .on_critical(OnCritical::Refuse),
        )
        .unwrap();
        let growing = pool(false);
        for level in PressureLevel::ALL {
            let critical = level == PressureLevel::Critical;
            assert_eq!(refusing.refuses_at(level), critical, "{level}");
            assert!(!growing.refuses_at(level), "{level}");
            assert!(growing.check_pressure_at(level).is_ok());
        }
        let err = refusing
            .check_pressure_at(PressureLevel::Critical)
            .unwrap_err();
        assert_eq!(
            err,
            PoolError::Pressure {
                pool: "refusing".into(),
                level: PressureLevel::Critical
            }
        );
        assert!(
            err.to_string().contains("refuses to grow under critical"),
            "{err}"
        );
        assert!(refusing.check_pressure_at(PressureLevel::High).is_ok());
        let refusals = refusing
            .counters
            .pressure_refusals
            .load(StdOrdering::Relaxed);
        assert_eq!(refusals, 1);
    }

    #[test]
    fn a_pool_that_does_not_prefault_faults_nothing_ahead() {
        let p = pool(false);
        assert_eq!(faulted_after(&p, 1000, 32), 0);
    }

    #[test]
    fn a_huge_page_pool_maps_aligned_pairs_and_gives_back_only_the_second() {
        let p = PoolShared::new(
            BlockPoolConfig::new(Layout::new::<[u64; 8]>())
                .capacity(1)
                .huge_pages(true),
        )
        .unwrap();
        {
            let growth = lock(&p.growth);
            assert_eq!(growth.chunks.len(), 2, "one pair");
            let (first, second) = (&growth.chunks[0], &growth.chunks[1]);
            assert_eq!(first.base() % (2 * CHUNK_SIZE), 0);
            assert_eq!(second.base(), first.base() + CHUNK_SIZE);
            assert!(!first.can_give_back() && second.can_give_back());
            assert_eq!(registry::tag(second.base()), p.registry_tag);
        }
        assert_eq!(p.counters.active_chunks.load(StdOrdering::Relaxed), 2);
        assert!(p.counters.huge_pages() != super::super::HugePages::Off);
        assert!(p.counters.huge_pages() != super::super::HugePages::Requested);
        assert!(p.verify().is_ok());
        // Both chunks are free: only the second goes back, header page kept.
        assert_eq!(p.reclaim(), CHUNK_SIZE - crate::sys::PAGE);
        let growth = lock(&p.growth);
        assert!(!growth.chunks[0].reclaimed && growth.chunks[1].reclaimed);
        drop(growth);
        assert!(p.verify().is_ok());
    }

    #[test]
    fn expansions_count_each_chunk_of_a_pair() {
        let p = PoolShared::new(
            BlockPoolConfig::new(Layout::new::<[u64; 8]>())
                .capacity(0)
                .huge_pages(true),
        )
        .unwrap();
        let mut growth = lock(&p.growth);
        p.carve(&mut growth, 1, |_, _| {}).unwrap();
        assert_eq!(growth.chunks.len(), 2, "one pair");
        drop(growth);
        assert_eq!(p.counters.expansions.load(StdOrdering::Relaxed), 2);
    }

    #[test]
    fn a_capacity_beyond_the_address_space_is_refused_as_a_config_error() {
        let bpc = pool(false).geometry.blocks_per_chunk;
        for capacity in [usize::MAX, (registry::MAX_CHUNKS + 1) * bpc] {
            let made = PoolShared::new(
                BlockPoolConfig::new(Layout::new::<[u64; 8]>())
                    .capacity(capacity)
                    .max_capacity(usize::MAX)
                    .prefault(false),
            );
            match made {
                Err(PoolError::InvalidConfig { reason, .. }) => {
                    assert!(reason.contains("address space"), "{reason}");
                }
                other => panic!("{capacity}: {:?}", other.map(|_| ())),
            }
        }
    }

    #[test]
    #[cfg_attr(miri, ignore = "miri has no mlock")]
    fn a_locking_pool_counts_locked_bytes_and_unlocks_what_it_gives_back() {
        let made = PoolShared::new(
            BlockPoolConfig::new(Layout::new::<u64>())
                .capacity(1)
                .lock(true),
        );
        let p = match made {
            Ok(p) => p,
            // A locked-memory limit below one chunk: refused with the limit named.
            Err(e) => {
                assert!(matches!(e, PoolError::LockRefused { .. }), "{e}");
                assert!(e.to_string().contains("ulimit -l"), "{e}");
                return;
            }
        };
        let locked = || p.counters.locked_bytes.load(StdOrdering::Relaxed);
        assert_eq!(locked(), CHUNK_SIZE);
        assert!(lock(&p.growth)
            .chunks
            .iter()
            .all(|c| c.locked && c.faulted == CHUNK_SIZE));
        assert_eq!(p.reclaim(), CHUNK_SIZE - crate::sys::PAGE);
        assert_eq!(locked(), 0);
        // Reused: locked again.
        let mut growth = lock(&p.growth);
        p.carve(&mut growth, 1, |_, _| {}).unwrap();
        assert!(growth.chunks[0].locked && !growth.chunks[0].reclaimed);
        drop(growth);
        assert_eq!(locked(), CHUNK_SIZE);
    }

    #[test]
    fn pairs_stay_within_the_chunks_the_cap_needs() {
        let bpc = pool(false).geometry.blocks_per_chunk;
        let p = PoolShared::new(
            BlockPoolConfig::new(Layout::new::<[u64; 8]>())
                .capacity(3 * bpc)
                .max_capacity(3 * bpc)
                .huge_pages(true),
        )
        .unwrap();
        let growth = lock(&p.growth);
        assert_eq!(growth.chunks.len(), 3, "a pair, then one alone");
        assert_eq!(growth.chunks[2].base() % CHUNK_SIZE, 0);
        assert!(growth.chunks[2].can_give_back());
        drop(growth);
        assert!(matches!(
            p.counters.huge_pages(),
            super::super::HugePages::Active | super::super::HugePages::Unavailable(_)
        ));
        let one = PoolShared::new(
            BlockPoolConfig::new(Layout::new::<[u64; 8]>())
                .capacity(1)
                .max_capacity(bpc)
                .huge_pages(true),
        )
        .unwrap();
        assert_eq!(lock(&one.growth).chunks.len(), 1);
        assert_eq!(
            one.counters.huge_pages(),
            super::super::HugePages::Unavailable(ONE_CHUNK)
        );
        assert!(one
            .counters
            .huge_pages()
            .report_text()
            .starts_with("unavailable: the pool's cap"));
    }
}
