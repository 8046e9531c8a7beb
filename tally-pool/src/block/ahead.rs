//! Growth ahead of demand: while the pressure monitor runs, it maps (and in a pre-faulting
//! pool faults in) the chunks a growing pool is about to carve, so that an acquire neither
//! maps nor faults memory. How far ahead follows demand ([`PoolShared::ahead_target`]).

use std::sync::atomic::Ordering as StdOrdering;

use super::chunk::list::ChunkList;
use super::shared::{now_ms, PoolShared};
use crate::stats::Urgency;
use crate::sync::lock;
use crate::sys::budget::{self, PressureLevel};

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

    /// How many fresh blocks to keep ready ahead of demand, from `room` (the fresh blocks
    /// ready now) and the level: [`AHEAD_PASSES`] times what threads took since the last
    /// pass left room, or half the last target if that is more (so that a target decays
    /// over a few passes once demand stops), between twice the low watermark and
    /// [`Self::ahead_cap`]. Twice the watermark under high pressure.
    fn ahead_target(&self, room: usize, level: PressureLevel) -> usize {
        let floor = 2 * self.low_watermark();
        if level >= PressureLevel::High {
            self.ahead.store(floor, StdOrdering::Relaxed);
            return floor;
        }
        // The pressure monitor's thread runs growth ahead; should a caller of
        // `Source::grow_ahead` race it, the target is only misjudged for a pass.
        let taken = self
            .ahead_room
            .load(StdOrdering::Relaxed)
            .saturating_sub(room);
        let last = self.ahead.load(StdOrdering::Relaxed);
        let target = taken
            .saturating_mul(AHEAD_PASSES)
            .max(last / 2)
            .min(self.ahead_cap())
            .max(floor);
        self.ahead.store(target, StdOrdering::Relaxed);
        target
    }

    /// The blocks an acquire can have without a mapping: the free blocks in the depot and
    /// on the overflow list, and the uncarved blocks of the active chunks of `growth`
    /// within what the cap still allows. Blocks in threads' caches are not counted.
    fn room(&self, growth: &ChunkList) -> usize {
        let bpc = self.geometry.blocks_per_chunk;
        let uncarved: usize = growth
            .chunks
            .iter()
            .filter(|c| !c.reclaimed)
            .map(|c| bpc.saturating_sub(c.carved))
            .sum();
        let uncarved = uncarved.min(self.max_capacity.saturating_sub(growth.carved_total));
        uncarved + self.depot.blocks() + self.overflow.len()
    }

    /// Growth ahead of demand, on the calling thread (the pressure monitor's): if the pool
    /// is growing (a slow path ran within `Urgency::IDLE_AFTER`) and its chunks hold fewer
    /// uncarved blocks than its target ([`Self::ahead_target`]), maps chunks and, in a
    /// pre-faulting pool, faults each in whole, before it takes the growth lock to add
    /// them. Threads then carve their fresh ranges from memory that is mapped and faulted
    /// in: an acquire neither maps nor faults, and a thread that waits for the growth lock
    /// waits for a carve, never for a mapping. Refills stay on the thread's own fresh
    /// range rather than trading with the depot, whose magazines another core would have
    /// written. Stays within `max_capacity`; does nothing at `Critical` pressure (when the
    /// monitor is taking memory back). Returns the bytes of blocks made ready.
    pub(super) fn grow_ahead(&self) -> usize {
        self.grow_ahead_at(budget::level())
    }

    /// [`Self::grow_ahead`] at pressure `level`.
    fn grow_ahead_at(&self, level: PressureLevel) -> usize {
        let now = now_ms();
        if self.is_idle(now, Urgency::IDLE_AFTER) {
            return 0;
        }
        if level >= PressureLevel::Critical {
            return 0;
        }
        let (mut room, mut plan) = {
            let growth = lock(&self.growth);
            (self.room(&growth), self.next_mapping(&growth))
        };
        let target = self.ahead_target(room, level);
        let mut made = 0usize;
        let mut mappings = 0;
        // Bounded, so that the monitor gets back to its other work while demand lasts.
        while room < target && mappings < AHEAD_MAPPINGS {
            let Ok(chunks) = self.prepare_chunks(plan, self.prefault) else {
                break;
            };
            let mut growth = lock(&self.growth);
            // Threads may have carved or mapped meanwhile: no chunk id past what the cap
            // needs, and no mapping the cap leaves no room for.
            let n = chunks.len();
            if growth.chunks.len() + n > self.max_chunks()
                || growth.carved_total >= self.max_capacity
                || self.refuses_at(budget::level())
                || self.install_chunks(&mut growth, chunks).is_err()
            {
                break; // what was not installed is unmapped as it drops
            }
            self.counters.expansions.fetch_add(1, StdOrdering::Relaxed);
            self.counters
                .expansions_ahead
                .fetch_add(1, StdOrdering::Relaxed);
            made += n * self.geometry.blocks_per_chunk;
            mappings += 1;
            room = self.room(&growth);
            plan = self.next_mapping(&growth);
        }
        self.ahead_room.store(room, StdOrdering::Relaxed);
        self.counters
            .blocks_grown_ahead
            .fetch_add(made as u64, StdOrdering::Relaxed);
        made * self.geometry.stride
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use core::alloc::Layout;
    use std::sync::Arc;

    use super::*;
    use crate::block::chunk::CHUNK_SIZE;
    use crate::block::config::BlockPoolConfig;

    fn pool(prefault: bool) -> Arc<PoolShared> {
        PoolShared::new(
            BlockPoolConfig::new(Layout::new::<[u64; 8]>())
                .capacity(0)
                .prefault(prefault),
        )
        .unwrap()
    }

    #[test]
    fn growth_ahead_maps_faulted_chunks_until_the_room_covers_its_target_within_the_cap() {
        let p = pool(true);
        let (low, bpc) = (p.low_watermark(), p.geometry.blocks_per_chunk);
        let ready = p.grow_ahead();
        {
            let growth = lock(&p.growth);
            assert_eq!(growth.chunks.len(), 1);
            assert_eq!(ready, bpc * p.geometry.stride);
            assert!(p.room(&growth) >= 2 * low);
            // Threads carve their own ranges from it, faulted in whole already.
            assert_eq!(growth.carved_total, 0);
            assert_eq!(growth.chunks[0].faulted, CHUNK_SIZE);
        }
        assert_eq!(p.depot.blocks(), 0);
        // The room covers the target: nothing more.
        assert_eq!(p.grow_ahead(), 0);
        assert_eq!(p.counters.expansions_ahead.load(StdOrdering::Relaxed), 1);
        // A thread carving it all maps nothing and faults nothing in.
        {
            let mut growth = lock(&p.growth);
            while growth.carved_total < bpc {
                p.carve_range(&mut growth, p.fresh_batch).unwrap();
            }
            assert_eq!(growth.chunks[0].faulted, CHUNK_SIZE);
        }
        assert_eq!(p.counters.expansions.load(StdOrdering::Relaxed), 1);
        // Demand of a whole chunk since the last pass: four times that is the target, at
        // most the cap, so several chunks are mapped ahead.
        p.grow_ahead();
        let chunks = lock(&p.growth).chunks.len();
        assert_eq!(
            p.ahead.load(StdOrdering::Relaxed),
            (4 * bpc).min(p.ahead_cap())
        );
        assert!(chunks > 2, "{chunks} chunks");
        // A small cap bounds it: one chunk, nothing carved, nothing refused.
        let capped = PoolShared::new(
            BlockPoolConfig::new(Layout::new::<u64>())
                .capacity(0)
                .max_capacity(6),
        )
        .unwrap();
        assert!(2 * capped.low_watermark() > 6);
        capped.grow_ahead();
        assert_eq!(capped.grow_ahead(), 0);
        let growth = lock(&capped.growth);
        assert_eq!((growth.chunks.len(), growth.carved_total), (1, 0));
        assert_eq!(capped.room(&growth), 6);
        assert_eq!(capped.counters.exhausted.load(StdOrdering::Relaxed), 0);
    }

    #[test]
    fn the_target_follows_demand_decays_and_drops_under_high_pressure() {
        let p = pool(true);
        let floor = 2 * p.low_watermark();
        let cap = p.ahead_cap();
        assert_eq!(p.ahead_target(0, PressureLevel::Normal), floor);
        // 5,000 blocks taken since the last pass.
        assert!(floor < 20_000 && 20_000 < cap);
        p.ahead_room.store(floor + 5000, StdOrdering::Relaxed);
        assert_eq!(p.ahead_target(floor, PressureLevel::Normal), 20_000);
        // Far more than the cap allows.
        p.ahead_room.store(10 * cap, StdOrdering::Relaxed);
        assert_eq!(p.ahead_target(0, PressureLevel::Normal), cap);
        // Nothing taken: half the last target, pass after pass, down to the floor.
        p.ahead_room.store(cap, StdOrdering::Relaxed);
        assert_eq!(
            p.ahead_target(cap, PressureLevel::Normal),
            (cap / 2).max(floor)
        );
        assert_eq!(
            p.ahead_target(cap, PressureLevel::Normal),
            (cap / 4).max(floor)
        );
        assert_eq!(p.ahead_target(0, PressureLevel::High), floor);
        assert_eq!(p.ahead_target(cap, PressureLevel::Normal), floor);
    }

    #[test]
    fn growth_ahead_does_nothing_at_critical_pressure() {
        let p = pool(true);
        assert_eq!(p.grow_ahead_at(PressureLevel::Critical), 0);
        assert!(lock(&p.growth).chunks.is_empty());
        assert!(p.grow_ahead_at(PressureLevel::High) > 0);
    }

    #[test]
    fn a_pool_that_does_not_prefault_maps_ahead_without_faulting() {
        let p = pool(false);
        assert!(p.grow_ahead() > 0);
        assert!(lock(&p.growth).chunks.iter().all(|c| c.faulted == 0));
    }
}
