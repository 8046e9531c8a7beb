//! A pool's roster of thread caches: every live cache of the pool, and the totals of the
//! caches whose threads have exited.
//!
//! The list and the totals change together, under one lock, so that a statistics snapshot
//! counts every thread exactly once (see [`CacheRoster::counts`]).

use std::sync::Arc;

use super::thread_cache::ThreadCache;
use crate::block::stats::{CacheTotals, CountSum};
use crate::sync::{lock, Mutex};

/// Every live thread cache of one pool, and the totals of those retired.
#[derive(Debug)]
pub(crate) struct CacheRoster {
    /// Every live thread cache of the pool. A loom `Mutex` under loom: flush requests
    /// and the pool's drop close caches under it, and the models check that against the
    /// caches' owners.
    caches: Mutex<Vec<Arc<ThreadCache>>>,
    /// The counts of retired caches, plus operations done without a cache. Folded into
    /// under the lock of `caches`.
    totals: CacheTotals,
}

impl CacheRoster {
    pub(crate) fn new() -> Self {
        Self {
            caches: Mutex::new(Vec::new()),
            totals: CacheTotals::default(),
        }
    }

    /// Lists a new cache of the pool; false, listing nothing, if the allocator refused
    /// the list room for it.
    ///
    /// The room is asked for with the lock released: the global allocator may be one
    /// built on the pools, which may call this pool, whose exhaustion takes this lock
    /// (`close_all`). A list outgrown meanwhile is asked for again.
    pub(crate) fn adopt(&self, cache: &Arc<ThreadCache>) -> bool {
        let mut room: Vec<Arc<ThreadCache>> = Vec::new();
        loop {
            let mut caches = lock(&self.caches);
            if caches.len() == caches.capacity() && room.capacity() > caches.len() {
                // Move the list into the larger buffer; the old one is freed below,
                // once the lock is released.
                room.append(&mut caches);
                core::mem::swap(&mut *caches, &mut room);
            }
            if caches.len() < caches.capacity() {
                caches.push(Arc::clone(cache));
                return true;
            }
            let want = caches.len().saturating_mul(2).max(4);
            drop(caches);
            if room.try_reserve_exact(want).is_err() {
                return false;
            }
        }
    }

    /// Makes every thread's fast paths on this pool miss.
    pub(crate) fn close_all(&self) {
        for cache in lock(&self.caches).iter() {
            cache.close();
        }
    }

    /// Asks every cache whose owner's last slow path ran at or before `since` (milliseconds of
    /// the pool's clock) and that holds blocks to flush on its owner's next slow path
    /// ([`ThreadCache::request_flush`]). Returns how many were asked.
    pub(crate) fn request_flush_idle(&self, since: u64) -> usize {
        let mut asked = 0;
        for cache in lock(&self.caches).iter() {
            if cache.last_slow() <= since && cache.holds_blocks() {
                cache.request_flush();
                asked += 1;
            }
        }
        asked
    }

    /// Folds the counts of `cache`, whose thread is exiting and whose blocks went back to
    /// the pool, into the totals, and unlists it.
    pub(crate) fn retire(&self, cache: &Arc<ThreadCache>) {
        let c = cache.counts();
        // Fold and unlist under the lock that `counts` reads under, so that no snapshot
        // counts this thread twice (or not at all).
        let mut caches = lock(&self.caches);
        self.totals.fold(c);
        caches.retain(|other| !Arc::ptr_eq(other, cache));
    }

    /// The totals that operations done without a cache count into (thread exit).
    pub(crate) fn uncached(&self) -> &CacheTotals {
        &self.totals
    }

    /// The counts of every thread that ever used the pool, summed.
    pub(crate) fn counts(&self) -> CountSum {
        let mut caches = Vec::new();
        let sum = self.sum_into(&mut caches, |c, n| {
            c.reserve_exact(n);
            true
        });
        sum.unwrap_or_default()
    }

    /// [`Self::counts`], or `None` if the allocator refused the copy of the list of
    /// caches: for reclaim, which runs when memory is short.
    pub(crate) fn try_counts(&self) -> Option<CountSum> {
        self.sum_into(&mut Vec::new(), |c, n| c.try_reserve_exact(n).is_ok())
    }

    /// The counts, read through a copy of the list of caches in `caches`, after `reserve`
    /// makes room for it; `None` if it could not.
    fn sum_into(
        &self,
        caches: &mut Vec<Arc<ThreadCache>>,
        reserve: impl Fn(&mut Vec<Arc<ThreadCache>>, usize) -> bool,
    ) -> Option<CountSum> {
        // The totals and the list of live caches together, under the lock that a thread's
        // exit folds its counts and unlists its cache under (`retire`). The caches' counts
        // are read only after the guard is gone: `ThreadCache::counts` waits out a slow
        // path of the cache's thread, and a slow path at the cap takes this lock
        // (`carve_range`, `bump_epoch`, `close_all`), so reading under it can deadlock.
        //
        // Each thread is still counted exactly once. One that retired before the lock was
        // taken is in the totals read here and not in the list. One that retires after the
        // lock is released folds its counts into totals that were already read, so they
        // are counted once, through its cache, which the copy of the list keeps alive.
        //
        // The copy's room is asked for with the lock released, as in `adopt`.
        let mut sum = loop {
            let wanted = lock(&self.caches).len();
            if !reserve(caches, wanted) {
                return None;
            }
            let listed = lock(&self.caches);
            if listed.len() <= caches.capacity() {
                caches.extend(listed.iter().cloned());
                break self.totals.load();
            }
        };
        for c in caches.iter() {
            sum.add(c.counts());
        }
        Some(sum)
    }
}
