//! The table of a pool's sampled acquires: where and when each live sampled value was
//! acquired, and when the next sample is due. `sites.rs` has the sampling policy and the
//! pool's side.

use std::any::Any;
use std::collections::HashMap;
use std::panic::{Location, RefUnwindSafe};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use crate::block::facade::BlockPool;
use crate::stats::Site;

/// A `Pool<T>` of any `T`, named without its type (the table serves every `T`). Unwind
/// safe, so that a pool stays usable inside `catch_unwind`.
pub(super) type AnyPool = dyn Any + Send + Sync + RefUnwindSafe;

/// Where and when one sampled value was acquired.
#[derive(Debug, Clone, Copy)]
struct Entry {
    location: &'static Location<'static>,
    since: Instant,
}

/// A pool's sampled acquires, by block address.
///
/// Invariant: `live` is the number of `entries` (read without the lock, to skip it when
/// there are none). An entry exists from a sampled acquire until the release of its value.
pub(super) struct SiteTable {
    /// The `Pool<T>` that samples (for a twin's table: the pool whose twin it is).
    pub(super) main: &'static AnyPool,
    /// Sample one acquire in this many; 0: off.
    pub(super) every: AtomicU32,
    /// Acquires counted so far (weighted, see the module docs).
    seen: AtomicU64,
    pub(super) live: AtomicUsize,
    /// Misses of a direct pool still to go before its sampled acquire (see `due`).
    pub(super) pending: AtomicU32,
    entries: Mutex<HashMap<usize, Entry>>,
    /// A direct pool's twin, a `Pool<T>` made on the first sample (`None`: it could not
    /// be made, and the pool samples nothing).
    pub(super) twin: OnceLock<Option<&'static AnyPool>>,
}

impl core::fmt::Debug for SiteTable {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SiteTable")
            .field("every", &self.every.load(Ordering::Relaxed))
            .field("live", &self.live.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl SiteTable {
    pub(super) fn new(main: &'static AnyPool) -> Self {
        Self {
            main,
            every: AtomicU32::new(0),
            seen: AtomicU64::new(0),
            live: AtomicUsize::new(0),
            pending: AtomicU32::new(0),
            entries: Mutex::new(HashMap::new()),
            twin: OnceLock::new(),
        }
    }

    /// For an acquire of the direct pool `direct` that found the thread's cache empty:
    /// `None` when it is not sampled (the pool serves it and refills the cache), else
    /// whether it is the sampled one (`Some(true)`) or one on the way to it
    /// (`Some(false)`). A sample is due when the counted acquires cross a multiple of
    /// `every`, each miss counting the batch it stands for; the acquire sampled is then a
    /// random one of the next batch (served by the twin until then), so that a program
    /// whose acquires follow a fixed period is not always sampled at the same call.
    pub(super) fn due(&self, direct: &BlockPool) -> Option<bool> {
        // A pool without fast paths sees every acquire here: each counts one, and is
        // sampled or not at once.
        let batch = if direct.has_fast_paths() {
            (direct.cache_limit() / 2).max(1) as u64
        } else {
            1
        };
        if let Ok(left) = self
            .pending
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| p.checked_sub(1))
        {
            return Some(left == 1);
        }
        if !self.tick(batch) {
            return None;
        }
        // splitmix64 of the count: a cheap, well-spread offset into the batch.
        let mut x = self
            .seen
            .load(Ordering::Relaxed)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        let offset = (x ^ (x >> 31)) % batch;
        self.pending
            .store(u32::try_from(offset).unwrap_or(0), Ordering::Relaxed);
        Some(offset == 0)
    }

    /// Counts `weight` acquires; true when they cross a multiple of `every`.
    pub(super) fn tick(&self, weight: u64) -> bool {
        let every = u64::from(self.every.load(Ordering::Relaxed));
        if every == 0 {
            return false;
        }
        let before = self.seen.fetch_add(weight, Ordering::Relaxed);
        before / every != before.wrapping_add(weight) / every
    }

    /// The entries, locked. A panic cannot leave them half-changed, so a poisoned lock
    /// is taken as it is.
    fn entries(&self) -> MutexGuard<'_, HashMap<usize, Entry>> {
        match self.entries.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    pub(super) fn record(&self, addr: usize, location: &'static Location<'static>) {
        let entry = Entry {
            location,
            since: Instant::now(),
        };
        let mut entries = self.entries();
        // A refused table goes without this site rather than abort the acquire.
        if entries.try_reserve(1).is_err() {
            return;
        }
        if entries.insert(addr, entry).is_none() {
            self.live.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Clears the entry of the value at `addr`, released now.
    pub(super) fn forget(&self, addr: usize) {
        if self.live.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut entries = self.entries();
        if entries.remove(&addr).is_some() {
            self.live.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Moves the entry of the value at `addr` (redeemed now) to `location`.
    pub(super) fn moved(&self, addr: usize, location: &'static Location<'static>) {
        if self.live.load(Ordering::Relaxed) == 0 {
            return;
        }
        if let Some(entry) = self.entries().get_mut(&addr) {
            entry.location = location;
        }
    }

    /// Whether `pool` is the pool that samples.
    pub(super) fn is_main<P>(&self, pool: &P) -> bool {
        core::ptr::eq(
            (self.main as *const AnyPool).cast::<()>(),
            (pool as *const P).cast::<()>(),
        )
    }

    /// The live sampled values by site, most live first.
    pub(super) fn sites(&self) -> Vec<Site> {
        let now = Instant::now();
        let mut by_site: HashMap<&'static Location<'static>, (u64, Instant)> = HashMap::new();
        for entry in self.entries().values() {
            let site = by_site.entry(entry.location).or_insert((0, entry.since));
            site.0 += 1;
            site.1 = site.1.min(entry.since);
        }
        let mut sites: Vec<Site> = by_site
            .into_iter()
            .map(|(location, (live, oldest))| {
                Site::new(location, live, Some(now.saturating_duration_since(oldest)))
            })
            .collect();
        sites.sort_by(|a, b| {
            b.live
                .cmp(&a.live)
                .then_with(|| b.oldest_age.cmp(&a.oldest_age))
        });
        sites
    }
}
