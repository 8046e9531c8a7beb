//! Growth ahead of demand: while the pressure monitor runs, it maps (and in a pre-faulting
//! pool faults in) the chunks a growing pool is about to carve, so that an acquire neither
//! maps nor faults memory. How far ahead follows demand ([`PoolShared::ahead_target`]).

use std::sync::atomic::Ordering as StdOrdering;

use super::chunk::list::ChunkList;
use super::chunk::CHUNK_SIZE;
use super::shared::{clock, now_ms, PoolShared};
use crate::stats::Urgency;
use crate::sys::budget::{self, PressureLevel};
use crate::sys::PAGE;

/// Most bytes of fresh blocks a growing pool keeps ready ahead of demand (see
/// `PoolShared::ahead_target`): 5 ms of 64-byte blocks at 25 million acquires a second,
/// many times what one of the pressure monitor's growth polls needs.
const AHEAD_BYTES: usize = 8 << 20;

/// How many passes' worth of demand growth ahead keeps ready: a pass that comes late by
/// up to this many polls still finds its pool ahead.
const AHEAD_PASSES: usize = 4;

/// Most mappings one pass of growth ahead makes.
const AHEAD_MAPPINGS: usize = 4;

impl PoolShared {
    /// Fresh blocks a growing pool keeps ready ahead of demand at least: four trades with a
    /// thread cache, and at least one fresh range.
    pub(super) fn low_watermark(&self) -> usize {
        (4 * self.batch).max(self.fresh_batch)
    }

    /// The most fresh blocks a pool keeps ready ahead: [`AHEAD_BYTES`] of blocks, and
    /// never fewer than twice the low watermark.
    fn ahead_cap(&self) -> usize {
        (AHEAD_BYTES / self.geometry.stride.max(1)).max(2 * self.low_watermark())
    }

    /// How many blocks to keep ready ahead of demand, given that threads carved `taken`
    /// blocks since the last pass: [`AHEAD_PASSES`] times that, or half the last target
    /// if that is more (so that a target decays over a few passes once demand stops),
    /// between twice the low watermark and [`Self::ahead_cap`].
    fn ahead_target(&self, taken: usize) -> usize {
        let floor = 2 * self.low_watermark();
        let last = self.ahead.load(StdOrdering::Relaxed);
        let target = taken
            .saturating_mul(AHEAD_PASSES)
            .max(last / 2)
            .min(self.ahead_cap())
            .max(floor);
        self.ahead.store(target, StdOrdering::Relaxed);
        target
    }

    /// The blocks an acquire can have without a mapping, and the uncarved blocks the cap
    /// still allows beyond them. The first is the free blocks in the depot and on the
    /// overflow list, and the uncarved blocks of the active chunks of `growth` within the
    /// cap (blocks in threads' caches are not counted); the caller holds the growth lock.
    fn room(&self, growth: &ChunkList) -> (usize, usize) {
        let active = self.counters.active_chunks.load(StdOrdering::Relaxed);
        // Every carved block lies in an active chunk (a reclaimed chunk has none carved).
        let uncarved = active
            .saturating_mul(self.geometry.blocks_per_chunk)
            .saturating_sub(growth.carved_total);
        let cap_left = self.max_capacity.saturating_sub(growth.carved_total);
        // `depot.blocks()` counts the overflow list's blocks too (`overflow_push`).
        let ready = uncarved.min(cap_left) + self.depot.blocks();
        (ready, cap_left.saturating_sub(uncarved))
    }

    /// Whether growth ahead may add `bytes` of mapped memory at `level`: only below `High`
    /// pressure, and never so that the mapping itself would raise the level of the own
    /// budget (growth ahead is optional; an acquire that needs the memory may do that).
    fn may_grow_ahead(level: PressureLevel, bytes: usize) -> bool {
        level < PressureLevel::High
            && budget::level_for(budget::mapped().saturating_add(bytes)) <= level
    }

    /// Growth ahead of demand, on the calling thread (the pressure monitor's): if the pool
    /// is growing (a slow path ran within `Urgency::IDLE_AFTER`) and fewer blocks are
    /// ready for it without a mapping than its target ([`Self::ahead_target`]), it makes
    /// reclaimed chunks active again, then maps new ones: each is mapped, and in a
    /// pre-faulting pool faulted in whole (within the cap), before the growth lock is
    /// taken to add it; a reused chunk is faulted in again just after, without the lock.
    /// (Whole chunks, because every uncarved block of an active chunk counts as ready: so
    /// up to a chunk more than the target is resident, which the own budget counted when
    /// it was mapped and the cgroup and system sources see once it is faulted in.)
    /// Threads then carve their fresh ranges from memory that is mapped and faulted in, so
    /// an acquire neither maps nor faults, and a thread that waits for the growth lock
    /// waits for a carve, never for a new chunk to be faulted in. Refills
    /// stay on the thread's own fresh range rather than trading with the depot, whose
    /// magazines another core would have written. Stays within `max_capacity` and its
    /// chunk ids; does nothing at `High` pressure or above, nor where the mapping would
    /// raise the level (see [`Self::may_grow_ahead`]). Returns the bytes of blocks made
    /// ready.
    pub(super) fn grow_ahead(&self) -> usize {
        self.grow_ahead_at(budget::level)
    }

    /// [`Self::grow_ahead`] with `level` for the pressure level.
    fn grow_ahead_at(&self, level: fn() -> PressureLevel) -> usize {
        // An idle pool takes no lock: the monitor passes over many of them each tick. The
        // clock's last reading comes first: it is never ahead of the time, so a pool idle
        // by it is idle, and the OS clock is read only for pools that look busy by it.
        if self.is_idle(clock(), Urgency::IDLE_AFTER)
            || self.is_idle(now_ms(), Urgency::IDLE_AFTER)
            || level() >= PressureLevel::High
        {
            return 0;
        }
        let bpc = self.geometry.blocks_per_chunk;
        let mut growth = self.lock_growth();
        // Demand: blocks carved since the last pass (whoever carved them).
        let carved = growth.carved_ever;
        let taken = carved.wrapping_sub(self.ahead_carved.swap(carved, StdOrdering::Relaxed));
        let target = self.ahead_target(taken);
        let (mut made, mut mappings) = (0usize, 0);
        // Bounded, so that the monitor gets back to its other work while demand lasts.
        while mappings < AHEAD_MAPPINGS {
            let (ready, cap_left) = self.room(&growth);
            if ready >= target || cap_left == 0 || !Self::may_grow_ahead(level(), CHUNK_SIZE) {
                break;
            }
            let lock_pages = growth.lock;
            if let Some(id) = growth.chunks.iter().position(|c| c.reclaimed) {
                // Before any new id: a reclaimed chunk is reused first.
                let Some(chunk) = growth.chunks.get_mut(id) else {
                    break;
                };
                if self.revive(chunk, lock_pages).is_err() {
                    break;
                }
                let blocks = bpc.min(cap_left);
                made += blocks;
                mappings += 1;
                self.counters
                    .expansions_ahead
                    .fetch_add(1, StdOrdering::Relaxed);
                if self.prefault && !lock_pages {
                    // Faulted in again as a new chunk is, but just after it is active again
                    // (a locking pool's revive faulted it in already), without the lock.
                    // Threads may carve it meanwhile: the advice touches no byte, and a
                    // carve faults in what it takes itself if it comes first. Reclaim may
                    // not give it back meanwhile (`populating`), which would leave its
                    // pages resident but counted as given back.
                    let end = self.geometry.first_offset + blocks * self.geometry.stride;
                    let (region, from, to) = chunk.populate_later(PAGE, end);
                    chunk.populating = true;
                    drop(growth);
                    let faulted = region.populate_if_supported(from, to);
                    growth = self.lock_growth();
                    if let Some(chunk) = growth.chunks.get_mut(id) {
                        chunk.populating = false;
                        if faulted {
                            chunk.faulted = chunk.faulted.max(end.min(CHUNK_SIZE));
                        }
                    }
                }
                continue;
            }
            let plan = self.next_mapping(&growth);
            let n = plan.chunks();
            if growth.chunks.len() + n > self.max_chunks()
                || !Self::may_grow_ahead(level(), n * CHUNK_SIZE)
            {
                break;
            }
            // All of the mapping's blocks within the cap, not just what the target lacks:
            // `room` counts every uncarved block of an active chunk as ready, so a part
            // left out here would later be faulted in by the thread that carves it.
            let fault = if self.prefault {
                (n * bpc).min(cap_left)
            } else {
                0
            };
            drop(growth);
            let prepared = self.prepare_chunks(plan, fault);
            growth = self.lock_growth();
            let Ok(chunks) = prepared else {
                break;
            };
            // Threads or another caller may have mapped or carved meanwhile: no chunk id
            // past what the cap needs, and nothing the target no longer wants.
            let (ready, cap_left) = self.room(&growth);
            if ready >= target
                || cap_left == 0
                || growth.chunks.len() + n > self.max_chunks()
                || self.install_chunks(&mut growth, chunks).is_err()
            {
                break; // what was not installed is unmapped as it drops
            }
            // Every chunk of the mapping counts (a huge-page pool maps a pair).
            self.counters
                .expansions
                .fetch_add(n as u64, StdOrdering::Relaxed);
            self.counters
                .expansions_ahead
                .fetch_add(n as u64, StdOrdering::Relaxed);
            made += (n * bpc).min(cap_left);
            mappings += 1;
        }
        drop(growth);
        self.counters
            .blocks_grown_ahead
            .fetch_add(made as u64, StdOrdering::Relaxed);
        made * self.geometry.stride
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use crate::sync::lock;
    use core::alloc::Layout;

    use super::*;
    use crate::block::config::BlockPoolConfig;
    use crate::block::growth::tests::pool;

    #[test]
    fn growth_ahead_maps_and_faults_in_whole_chunks_within_the_cap() {
        let p = pool(true);
        let (low, bpc, stride) = (
            p.low_watermark(),
            p.geometry.blocks_per_chunk,
            p.geometry.stride,
        );
        // A slow path just now, before each pass: the pool is growing, however slow the
        // machine (the idle time is a second).
        let pass = |p: &PoolShared| {
            p.touch(now_ms());
            p.grow_ahead()
        };
        let ready = pass(&p);
        {
            let growth = lock(&p.growth);
            assert_eq!(growth.chunks.len(), 1);
            assert_eq!(ready, bpc * stride);
            assert!(p.room(&growth).0 >= 2 * low);
            // Threads carve their own ranges from it. Every block counted as ready is
            // faulted in, the whole chunk, not just the target (twice the watermark):
            // a part left out would be faulted in by the thread that carves it.
            assert_eq!(growth.carved_total, 0);
            assert!(2 * low < bpc);
            let faulted = growth.chunks[0].faulted;
            assert_eq!(faulted, p.geometry.first_offset + bpc * stride);
        }
        assert_eq!(p.depot.blocks(), 0);
        // Nothing carved since: nothing more.
        assert_eq!(pass(&p), 0);
        assert_eq!(p.counters.expansions_ahead.load(StdOrdering::Relaxed), 1);
        // A thread carving it all maps nothing.
        {
            let mut growth = lock(&p.growth);
            while growth.carved_total < bpc {
                p.carve_range(&mut growth, p.fresh_batch).unwrap();
            }
        }
        assert_eq!(p.counters.expansions.load(StdOrdering::Relaxed), 1);
        // Demand of a whole chunk since the last pass: four times that is the target, at
        // most the cap, so several chunks are mapped ahead.
        pass(&p);
        let chunks = lock(&p.growth).chunks.len();
        assert_eq!(
            p.ahead.load(StdOrdering::Relaxed),
            (4 * bpc).min(p.ahead_cap())
        );
        assert!(chunks > 2, "{chunks} chunks");
        // A small cap bounds it: one chunk, six blocks' worth faulted in and counted.
        let capped = PoolShared::new(
            BlockPoolConfig::new(Layout::new::<u64>())
                .capacity(0)
                .max_capacity(6),
        )
        .unwrap();
        assert!(2 * capped.low_watermark() > 6);
        assert_eq!(pass(&capped), 6 * capped.geometry.stride);
        assert_eq!(pass(&capped), 0);
        let growth = lock(&capped.growth);
        assert_eq!((growth.chunks.len(), growth.carved_total), (1, 0));
        assert_eq!(capped.room(&growth), (6, 0));
        let g = capped.geometry;
        assert_eq!(growth.chunks[0].faulted, g.first_offset + 6 * g.stride);
        assert_eq!(capped.counters.exhausted.load(StdOrdering::Relaxed), 0);
    }

    /// The overflow list's blocks are counted into the depot's by `overflow_push`: growth
    /// ahead counts each of them once as ready, so it grows as much as demand needs.
    #[test]
    fn listed_blocks_count_once_as_ready() {
        let p = pool(false);
        let mut out = Vec::new();
        {
            let mut growth = lock(&p.growth);
            while out.len() < 100 {
                p.carve(&mut growth, 100 - out.len(), |_, b| out.push(b))
                    .unwrap();
            }
        }
        let before = p.room(&lock(&p.growth)).0;
        assert!(p.overflow_push(&out));
        let after = p.room(&lock(&p.growth)).0;
        assert_eq!(
            after - before,
            100,
            "100 free blocks made ready, counted {}",
            after - before
        );
    }

    #[test]
    fn a_reclaimed_chunk_is_reused_before_a_new_one_is_mapped() {
        let p = pool(true);
        p.touch(now_ms());
        assert!(p.grow_ahead() > 0);
        assert!(p.reclaim() > 0);
        assert!(lock(&p.growth).chunks[0].reclaimed);
        for _ in 0..3 {
            p.touch(now_ms());
            p.grow_ahead();
        }
        let growth = lock(&p.growth);
        assert_eq!(growth.chunks.len(), 1, "no new chunk id");
        assert!(!growth.chunks[0].reclaimed);
        assert_eq!(p.counters.expansions_ahead.load(StdOrdering::Relaxed), 2);
    }

    #[test]
    #[cfg(target_os = "linux")]
    #[cfg_attr(miri, ignore = "miri has no mincore and faults nothing in")]
    fn a_reclaimed_chunk_reused_ahead_of_demand_is_faulted_in_again() {
        let p = pool(true);
        let resident = |p: &PoolShared| {
            let growth = lock(&p.growth);
            let end = p.geometry.first_offset + p.geometry.blocks_per_chunk * p.geometry.stride;
            let (region, from, to) = growth.chunks[0].populate_later(PAGE, end);
            let pages = crate::sys::resident_pages(&region);
            pages[from / PAGE..to / PAGE].iter().filter(|&&r| r).count()
        };
        p.touch(now_ms());
        assert!(p.grow_ahead() > 0);
        let all = resident(&p);
        assert!(all > 0);
        assert!(p.reclaim() > 0);
        assert_eq!(resident(&p), 0, "given back");
        p.touch(now_ms());
        assert!(p.grow_ahead() > 0);
        let growth = lock(&p.growth);
        assert!(!growth.chunks[0].reclaimed && !growth.chunks[0].populating);
        let faulted = growth.chunks[0].faulted;
        drop(growth);
        // Where the kernel has `MADV_POPULATE_WRITE` (Linux 5.14); elsewhere nothing is
        // faulted in ahead, and `faulted` does not claim it was.
        let probe = crate::sys::map_aligned(2 * PAGE, PAGE).unwrap();
        if probe.populate_if_supported(0, PAGE) {
            assert_eq!(resident(&p), all, "faulted in again before any carve");
            let g = p.geometry;
            assert_eq!(faulted, g.first_offset + g.blocks_per_chunk * g.stride);
        } else {
            assert_eq!((resident(&p), faulted), (0, PAGE.min(faulted)));
        }
    }

    #[test]
    fn a_chunk_being_faulted_in_ahead_is_not_given_back() {
        let p = pool(true);
        p.touch(now_ms());
        assert!(p.grow_ahead() > 0);
        lock(&p.growth).chunks[0].populating = true;
        assert_eq!(p.reclaimable(Urgency::Critical, Urgency::IDLE_AFTER), 0);
        assert_eq!(p.reclaim(), 0);
        lock(&p.growth).chunks[0].populating = false;
        assert!(p.reclaimable(Urgency::Critical, Urgency::IDLE_AFTER) > 0);
        assert!(p.reclaim() > 0);
    }

    #[test]
    fn the_target_follows_demand_and_decays() {
        let p = pool(true);
        let floor = 2 * p.low_watermark();
        let cap = p.ahead_cap();
        assert_eq!(p.ahead_target(0), floor);
        // 5,000 blocks carved since the last pass.
        assert!(floor < 20_000 && 20_000 < cap);
        assert_eq!(p.ahead_target(5000), 20_000);
        // Far more than the cap allows.
        assert_eq!(p.ahead_target(10 * cap), cap);
        // Nothing carved: half the last target, pass after pass, down to the floor.
        assert_eq!(p.ahead_target(0), (cap / 2).max(floor));
        assert_eq!(p.ahead_target(0), (cap / 4).max(floor));
        for _ in 0..20 {
            p.ahead_target(0);
        }
        assert_eq!(p.ahead_target(0), floor);
    }

    #[test]
    fn an_idle_pool_does_not_grow_ahead() {
        let p = pool(true);
        let idle = super::super::shared::millis(Urgency::IDLE_AFTER);
        // The clock counts from the process's first reading: wait until it can show idle.
        while now_ms() < idle {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        // The last slow path, exactly the idle time before the clock's last reading.
        p.last_slow.store(clock() - idle, StdOrdering::Relaxed);
        assert_eq!(p.grow_ahead(), 0);
        assert!(lock(&p.growth).chunks.is_empty());
        // Busy again, by the clock's last reading.
        p.touch(clock());
        assert!(p.grow_ahead() > 0);
    }

    #[test]
    fn growth_ahead_does_nothing_at_high_pressure_or_above() {
        let p = pool(true);
        p.touch(now_ms());
        assert_eq!(p.grow_ahead_at(|| PressureLevel::High), 0);
        assert_eq!(p.grow_ahead_at(|| PressureLevel::Critical), 0);
        assert!(lock(&p.growth).chunks.is_empty());
        assert!(p.grow_ahead_at(|| PressureLevel::Moderate) > 0);
    }

    #[test]
    fn a_pool_that_does_not_prefault_maps_ahead_without_faulting() {
        let p = pool(false);
        p.touch(now_ms());
        assert!(p.grow_ahead() > 0);
        assert!(lock(&p.growth).chunks.iter().all(|c| c.faulted == 0));
    }
}
