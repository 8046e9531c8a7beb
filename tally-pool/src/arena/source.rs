//! The statistics of one thread's scratch arenas: a [`Source`] of kind
//! [`Kind::Arena`](crate::stats::Kind::Arena), registered by the thread's first
//! [`scratch`](super::scratch) call (or, if the registry is locked then, by the first that
//! finds it free, counting the calls before) and pruned from the registry when the thread
//! exits.
//!
//! The memory classes (see the [module docs](super#statistics)): `live` is the footprint of
//! the arenas lent to running calls, `free` that of the idle arenas; nothing is cached, fresh
//! or metadata (bumpalo's chunk footers are counted in the footprints). The arenas' memory
//! comes from the global allocator, so `reclaim` gives nothing back from the reporting
//! thread: only the owner frees its arenas, and the pressure monitor asks it to with
//! [`trim`](super::trim).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::stats::{ComponentSnapshot, Counters, Source};

/// One thread's arena figures.
///
/// Invariant: only the owning thread writes them (a load and a store, no read-modify-write
/// instruction on the call path); reports read them from any thread, each figure consistent
/// on its own.
#[derive(Debug, Default)]
pub(super) struct ArenaCounters {
    /// Footprints of the arenas lent to running calls, as they were lent.
    lent_bytes: AtomicU64,
    /// Footprints of the idle arenas.
    retained_bytes: AtomicU64,
    /// Footprints freed by the retain limit and by trims, in total.
    released_bytes: AtomicU64,
    /// Calls running now.
    open_calls: AtomicU64,
    /// Calls begun.
    calls: AtomicU64,
    /// Calls ended (returned or unwound).
    returns: AtomicU64,
    /// Calls whose arena came back with a larger footprint than it was lent with.
    growths: AtomicU64,
}

/// Adds `by` (or subtracts, with `up` false) to a figure only this thread writes.
fn add(figure: &AtomicU64, by: usize, up: bool) {
    let by = u64::try_from(by).unwrap_or(u64::MAX);
    let now = figure.load(Ordering::Relaxed);
    let next = if up {
        now.saturating_add(by)
    } else {
        now.saturating_sub(by)
    };
    figure.store(next, Ordering::Relaxed);
}

fn set(figure: &AtomicU64, to: usize) {
    figure.store(u64::try_from(to).unwrap_or(u64::MAX), Ordering::Relaxed);
}

impl ArenaCounters {
    /// A call began with an arena of `footprint`; the idle arenas now keep `retained`.
    pub(super) fn lent(&self, footprint: usize, retained: usize) {
        add(&self.lent_bytes, footprint, true);
        set(&self.retained_bytes, retained);
        add(&self.open_calls, 1, true);
        add(&self.calls, 1, true);
    }

    /// A call that was lent an arena of `lent` ended; the arena came back with `returned`,
    /// the idle arenas now keep `retained`, and `freed` bytes of arenas were freed.
    pub(super) fn taken_back(&self, lent: usize, returned: usize, retained: usize, freed: usize) {
        add(&self.lent_bytes, lent, false);
        add(&self.open_calls, 1, false);
        add(&self.returns, 1, true);
        if returned > lent {
            add(&self.growths, 1, true);
        }
        set(&self.retained_bytes, retained);
        add(&self.released_bytes, freed, true);
    }

    /// A trim freed every idle arena, `freed` bytes.
    pub(super) fn idle_freed(&self, freed: usize) {
        set(&self.retained_bytes, 0);
        add(&self.released_bytes, freed, true);
    }
}

impl Source for ArenaCounters {
    fn snapshot(&self) -> ComponentSnapshot {
        let read = |figure: &AtomicU64| figure.load(Ordering::Relaxed);
        ComponentSnapshot {
            live_objects: read(&self.open_calls),
            live_bytes: read(&self.lent_bytes),
            free_bytes: read(&self.retained_bytes),
            released_bytes: read(&self.released_bytes),
            counters: Counters {
                acquires: read(&self.calls),
                releases: read(&self.returns),
                growths: read(&self.growths),
                ..Counters::default()
            },
            ..ComponentSnapshot::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_follow_calls() {
        let c = ArenaCounters::default();
        c.lent(0, 0);
        c.lent(4096, 100);
        let s = c.snapshot();
        assert_eq!((s.live_objects, s.live_bytes, s.free_bytes), (2, 4096, 100));
        assert_eq!((s.counters.acquires, s.counters.releases), (2, 0));
        c.taken_back(4096, 8192, 8292, 0);
        c.taken_back(0, 0, 8292, 0);
        let s = c.snapshot();
        assert_eq!((s.live_objects, s.live_bytes, s.free_bytes), (0, 0, 8292));
        assert_eq!((s.counters.releases, s.counters.growths), (2, 1));
        assert_eq!(s.mapped_bytes(), 8292);
        c.idle_freed(8292);
        let s = c.snapshot();
        assert_eq!(
            (s.free_bytes, s.released_bytes, s.mapped_bytes()),
            (0, 8292, 0)
        );
    }

    #[test]
    fn figures_saturate() {
        let c = ArenaCounters::default();
        c.taken_back(10, 0, 0, usize::MAX);
        let s = c.snapshot();
        assert_eq!((s.live_bytes, s.live_objects), (0, 0));
        c.idle_freed(1);
        assert_eq!(c.snapshot().released_bytes, u64::MAX);
    }
}
