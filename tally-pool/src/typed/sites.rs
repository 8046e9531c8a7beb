//! Call sites of sampled acquires: [`Pool::track_sites`] makes a pool remember where one
//! acquire in `n` was made (`#[track_caller]`) and when, until the value is released, so
//! that the statistics can name the lines that hold live values (`stats::report`'s
//! `leaks[].sites`).
//!
//! # How it stays off the hot path
//!
//! The table is allocated by the first `track_sites` call with `n > 0`; until then a pool
//! has an empty `OnceLock` that only slow paths read. Sampling is decided on slow paths
//! only:
//!
//! - a pool that is not *direct* (guarded, recycling, several nodes) takes its slow path
//!   on every acquire and release, so each acquire counts one and sampled values stay in
//!   the pool's own blocks, whose releases it sees;
//! - a direct pool serves most acquires from the thread's cache without looking at the
//!   pool, and frees most values straight into it. Only an acquire that finds the cache
//!   empty reaches the pool: it counts as the refill batch of acquires it stands for
//!   (half the cache, `BlockPool::cache_limit` / 2), so a thread whose live values grow
//!   is sampled at about one acquire in `n`, while one that acquires and releases in
//!   turn is not sampled at all. When a sample is due, the acquire sampled is a random
//!   one of the next batch: until it comes, the thread's acquires are served by the
//!   pool's *twin* and leave its cache empty, so each of them reaches the pool (a program
//!   whose acquires follow a fixed period would otherwise always be sampled at the call
//!   that empties the cache). The twin is a pool of the same type that is not direct,
//!   mapped on the first sample, whose memory and counts the pool's `stats()` and its
//!   report row include (it is not a component of its own); a sampled value lives there, so that its release reaches the table wherever it
//!   happens. A direct pool samples at most one acquire per refill, so `n` below the
//!   batch samples as often as the batch allows. After a sample the pool refills the
//!   thread's cache as the acquire would have (one block taken and given back, which the
//!   pool's counters show as one acquire and one release more). A direct pool whose slot
//!   the thread caches' fast table does not cover (a process with more than 256 pools
//!   alive) sees every acquire, and counts each as one.
//!
//! A value lent as a token keeps its entry; redeeming it moves the entry's site to the
//! redeeming call (its new owner) and keeps its age; releasing it clears the entry, on
//! any thread. Sampled values of a direct pool are not counted against its
//! `max_capacity`: the twin has its own.

use core::ptr::NonNull;
use std::any::Any;
use std::panic::Location;
use std::sync::atomic::Ordering;

use super::config::PoolConfig;
use super::error::AcquireError;
use super::handle::Handle;
use super::pool::Pool;
use super::site_table::{AnyPool, SiteTable};
use crate::stats::Site;

/// `pool` as the `Pool<T>` it is, if it is one.
fn downcast<T: 'static>(pool: &'static AnyPool) -> Option<&'static Pool<T>> {
    let any: &'static (dyn Any + Send + Sync) = pool;
    any.downcast_ref()
}

/// The pool that samples `table`, as a `Pool<T>`.
fn main_of<T: 'static>(table: &SiteTable) -> Option<&'static Pool<T>> {
    downcast(table.main)
}

/// The twin of `table`'s direct pool, made on first use; `None` if it cannot be
/// made (the pool then samples nothing).
fn twin<T: 'static>(table: &'static SiteTable) -> Option<&'static Pool<T>> {
    let twin = *table.twin.get_or_init(|| {
        let main: &'static Pool<T> = main_of(table)?;
        // Sampled values are a share of the pool's: the pool's cap bounds them too, and
        // sizes the twin's token table.
        let mut config = PoolConfig::new(format!("{}/sampled", main.name))
            .capacity(0)
            .max_capacity(main.stats().max_capacity.max(1))
            .per_node(false)
            .prefault(false);
        if let Some(topology) = main.topology() {
            config = config.topology(topology.clone());
        }
        let twin: &'static Pool<T> = Pool::create_twin(config).ok()?;
        let _ = twin.sites.set(table);
        Some(twin as &'static AnyPool)
    });
    downcast(twin?)
}

impl<T: 'static> Pool<T> {
    /// Remembers the call site of one acquire in `every` (`0` turns tracking off; any
    /// other value is used as it is, not rounded), for
    /// [`stats::report`](crate::stats::report), which lists for each leak suspect the
    /// sites that hold the most live values and the age of their oldest.
    ///
    /// `acquire`, `acquire_with` and `redeem` are `#[track_caller]`: the site is the line
    /// that called them. Sampling happens on the pool's slow paths only; a pool that
    /// tracks nothing runs exactly as before. A pool whose values go straight between
    /// handles and thread caches (unguarded, not recycling, one node) sees only the
    /// acquires its thread caches cannot serve; each stands for a refill batch of
    /// acquires, so a growing population is sampled at about one in `every`, and at most
    /// one acquire per refill. The `typed/sites.rs` module docs have the details.
    ///
    /// ```
    /// use tally_pool::{Handle, Pool, PoolConfig, GuardLevel};
    ///
    /// let pool = Pool::<u64>::new(PoolConfig::new("doc-sites").guard(GuardLevel::Canary))?;
    /// pool.track_sites(1);
    /// let line = line!() + 1;
    /// let kept = pool.acquire_with(7).map_err(|e| e.error)?;
    /// let sites = pool.live_sites();
    /// assert_eq!(sites[0].live, 1);
    /// assert_eq!(sites[0].location.line(), line);
    /// drop(kept);
    /// assert!(pool.live_sites().is_empty());
    /// # Ok::<(), tally_pool::PoolError>(())
    /// ```
    pub fn track_sites(&'static self, every: u32) {
        if every == 0 && self.sites.get().is_none() {
            return;
        }
        let table = *self
            .sites
            .get_or_init(|| Box::leak(Box::new(SiteTable::new(self))));
        table.every.store(every, Ordering::Relaxed);
    }

    /// The sampling set by [`Pool::track_sites`]: one acquire in this many, `0` for off.
    ///
    /// ```
    /// use tally_pool::{Pool, PoolConfig};
    /// let pool = Pool::<u8>::new(PoolConfig::new("doc-sampling"))?;
    /// assert_eq!(pool.site_sampling(), 0);
    /// pool.track_sites(1024);
    /// assert_eq!(pool.site_sampling(), 1024);
    /// # Ok::<(), tally_pool::PoolError>(())
    /// ```
    pub fn site_sampling(&self) -> u32 {
        self.sites
            .get()
            .map_or(0, |t| t.every.load(Ordering::Relaxed))
    }

    /// The sites of the sampled values that are live now, most live first (empty when
    /// the pool tracks no sites).
    pub fn live_sites(&self) -> Vec<Site> {
        match self.sites.get() {
            Some(table) if table.is_main(self) => table.sites(),
            _ => Vec::new(),
        }
    }

    /// The sites for the pool's statistics snapshot: `None` unless the pool tracks sites
    /// (or still holds sampled values). A twin reports its pool's: it holds the sampled
    /// values.
    pub(super) fn site_snapshot(&self) -> Option<Vec<Site>> {
        let table = self.sites.get()?;
        let on = table.every.load(Ordering::Relaxed) != 0;
        (on || table.live.load(Ordering::Relaxed) != 0).then(|| table.sites())
    }

    /// The pool a value's handle should name: a twin's values belong to its pool.
    pub(super) fn canonical(&'static self) -> &'static Self {
        self.sites
            .get()
            .and_then(|table| main_of(table))
            .unwrap_or(self)
    }

    /// `acquire_with`'s slow path on a pool that has a site table: counts the acquire,
    /// and for a sampled one places the value (in the twin, for a direct pool) and
    /// records its site.
    #[cold]
    #[inline(never)]
    pub(super) fn acquire_with_tracked(
        &'static self,
        table: &'static SiteTable,
        value: T,
        location: &'static Location<'static>,
    ) -> Result<Handle<T>, AcquireError<T>> {
        if !table.is_main(self) {
            return self.acquire_with_untracked(value);
        }
        let Some(direct) = &self.direct else {
            if !table.tick(1) {
                return self.acquire_with_untracked(value);
            }
            let handle = self.acquire_with_untracked(value)?;
            table.record(Handle::block_of(&handle).as_ptr() as usize, location);
            return Ok(handle);
        };
        let (Some(twin), Some(record)) = (twin(table), table.due(direct)) else {
            return self.acquire_with_untracked(value);
        };
        match twin.acquire_with_untracked(value) {
            Ok(handle) if record => {
                table.record(Handle::block_of(&handle).as_ptr() as usize, location);
                // Refill the thread's empty cache, as the acquire would have, so that the
                // next batch of acquires find blocks at hand.
                if let Ok(block) = direct.allocate() {
                    // SAFETY: allocated just above from this block pool, freed once,
                    // untouched.
                    let _ = unsafe { direct.free_unchecked(block) };
                }
                Ok(handle)
            }
            // On the way to the sampled acquire: served by the twin, so the thread's cache
            // stays empty and the next acquire comes here too.
            Ok(handle) => Ok(handle),
            Err(e) => {
                table.pending.store(0, Ordering::Relaxed);
                self.acquire_with_untracked(e.value)
            }
        }
    }

    /// After an acquire of a recycling pool (never direct): counts it and records a
    /// sampled one.
    #[cold]
    #[inline(never)]
    pub(super) fn acquired_recycled(
        &self,
        table: &SiteTable,
        block: NonNull<T>,
        location: &'static Location<'static>,
    ) {
        if table.is_main(self) && table.tick(1) {
            table.record(block.as_ptr() as usize, location);
        }
    }

    /// A value of this pool is released (its block goes back now): clears its entry. Only
    /// pools that are not direct keep sampled values in their own blocks.
    #[inline]
    pub(super) fn released_site(&self, block: NonNull<T>) {
        if let Some(table) = self.sites.get() {
            if self.direct.is_none() {
                table.forget(block.as_ptr() as usize);
            }
        }
    }

    /// A value was redeemed at `location`: its entry, if any, names that call now.
    #[inline]
    pub(super) fn redeemed_site(&self, block: NonNull<T>, location: &'static Location<'static>) {
        if let Some(table) = self.sites.get() {
            table.moved(block.as_ptr() as usize, location);
        }
    }

    /// The twin a token of another pool may come from.
    pub(super) fn twin_of(&self) -> Option<&'static Self> {
        let table = self.sites.get()?;
        if !table.is_main(self) {
            return None;
        }
        downcast(table.twin.get().copied().flatten()?)
    }
}
