//! [`PoolShared`]: the state a `BlockPool` and every thread cache of it share.
//!
//! This file holds the state, its creation and teardown, and the epoch by which a pool asks
//! every thread to flush its cache. The pool's work is spread over one file per concern,
//! each an `impl PoolShared` block:
//!
//! | file | concern |
//! |---|---|
//! | `guard` | canaries and poison, and the pointer checks of a free |
//! | `refill` | the slow paths between a thread's cache and the depot or its fresh range; thread exit; work without a cache |
//! | `growth` | chunks: mapping, carving, prefaulting, checking their headers |
//! | `reclaim` | giving chunks whose blocks are all free back to the OS |

use core::alloc::Layout;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{
    AtomicBool as StdAtomicBool, AtomicU64 as StdAtomicU64, AtomicUsize, Ordering as StdOrdering,
};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use super::cache::{self, CacheRoster, ThreadCache, CACHE_CAPACITY, FAST_SLOTS};
use super::chunk::geometry::Geometry;
use super::chunk::list::ChunkList;
use super::chunk::registry::{self, MAX_POOLS};
use super::config::{BlockPoolConfig, GuardLevel, OnCritical};
use super::depot::Depot;
use super::overflow::Overflow;
use super::stats::PoolCounters;
use crate::error::{ConfigReason, PoolError, PoolName};
use crate::numa::Topology;
use crate::stats::{self, Kind, Registration, Source};
use crate::sync::{AtomicU64, Mutex, Ordering};
use crate::sys::budget::{self, PressureLevel};

/// Bits of a pool's stamp that count epochs; the rest hold the pool's id.
const EPOCH_BITS: u32 = 24;

/// Source of pool ids; never reused, so a cache can tell its pool from a later one.
static NEXT_UID: StdAtomicU64 = StdAtomicU64::new(1);

/// Most blocks a thread's cache carves at a time (see [`PoolShared::fresh_batch`]): with
/// batches of 32, one refill in 64 takes the growth lock while a pool grows, rather than
/// every one.
pub(super) const FRESH_RANGE: usize = 2048;

/// Most bytes of blocks a thread's cache carves at a time: 2,048 blocks of 64 bytes, fewer
/// of larger blocks, so that what an idle thread strands stays small in bytes too.
const FRESH_BYTES: usize = 128 * 1024;

/// The state a `BlockPool` and every thread cache of it share.
#[derive(Debug)]
pub(super) struct PoolShared {
    /// Unique for the life of the process.
    pub(super) uid: u64,
    /// The registry slot: unique among live pools.
    pub(super) slot: u32,
    /// What the registry holds for this pool's chunks: `slot + 1`.
    pub(super) registry_tag: u32,
    /// Where the fast paths find this pool's cache: `cache::fast_index(slot)`, so at most
    /// `FAST_SLOTS`.
    pub(super) fast_index: usize,
    /// `fast_index` for an unguarded pool, `FAST_SLOTS` (the entry that stays null) for a
    /// guarded one: where the unguarded fast paths look, so that they need not read
    /// `guard`. At most `FAST_SLOTS`.
    pub(super) unguarded_index: usize,
    pub(super) geometry: Geometry,
    pub(super) guard: GuardLevel,
    /// The pool's id in the high 40 bits and an epoch in the low 24. A cache whose copy
    /// differs belongs to another pool or must flush first. The epoch is bumped (wrapping
    /// within its bits, never touching the id), and then every cache closed, to ask every
    /// thread to flush its cache on its next operation (see the `cache` module docs).
    pub(super) stamp: AtomicU64,
    /// Most blocks one thread's cache holds for this pool: `CACHE_CAPACITY`, or less for a
    /// small pool so that idle threads cannot strand much of its cap (see `cache_limit`).
    /// Invariant: `2 <= cache_limit <= CACHE_CAPACITY`.
    pub(super) cache_limit: usize,
    /// Blocks moved per trade with the depot: half of `cache_limit`, at least 1.
    pub(super) batch: usize,
    /// Blocks a thread's cache carves at a time into its fresh range, which its refills
    /// then take a batch at a time without the growth lock: at least `batch`, else at most
    /// [`FRESH_RANGE`] blocks, [`FRESH_BYTES`] bytes and a 64th of the cap, so that idle
    /// threads strand little of a pool.
    pub(super) fresh_batch: usize,
    pub(super) canary_secret: u64,
    /// The name, as `BlockPool::name` and the statistics give it.
    pub(super) name: String,
    /// The name as the pool's errors carry it: interned (see `PoolName`).
    pub(super) error_name: PoolName,
    pub(super) layout: Layout,
    pub(super) node: u32,
    pub(super) max_capacity: usize,
    /// Blocks never given back to the OS (`BlockPoolConfig::reserve`): reclaim keeps enough
    /// chunks to hold them. At most `max_capacity`.
    pub(super) reserve: usize,
    /// Whether growth is refused under critical pressure.
    pub(super) on_critical: OnCritical,
    /// When a slow path (refill, spill, flush, growth on demand, work without a cache)
    /// last ran, in [`now_ms`] milliseconds: a pool whose last slow path is older than an
    /// idle time is idle. Never written by the fast paths, nor by growth ahead of demand.
    pub(super) last_slow: StdAtomicU64,
    pub(super) depot: Depot,
    /// Fresh blocks growth ahead of demand last aimed to keep ready (see
    /// `PoolShared::ahead_target`); 0 before its first pass. Written by growth ahead (the
    /// pressure monitor's thread, or a caller of `Source::grow_ahead`); `ahead_carved` is
    /// also written under the growth lock.
    pub(super) ahead: AtomicUsize,
    /// `ChunkList::carved_ever` as growth ahead last read it: demand is what was carved
    /// since (see `PoolShared::grow_ahead`).
    pub(super) ahead_carved: AtomicUsize,
    /// Free blocks a spill could not put into a magazine (see `overflow`).
    pub(super) overflow: Overflow,
    /// Whether a layer above keeps values in this pool's free blocks (a recycling typed
    /// pool): then no link may be written into their payload (see `overflow`).
    pub(super) keeps_contents: StdAtomicBool,
    /// The growth lock.
    pub(super) growth: Mutex<ChunkList>,
    pub(super) caches: CacheRoster,
    pub(super) counters: PoolCounters,
    /// Written into every chunk header mapped from now on (see `ChunkHeader::owner`).
    pub(super) owner: AtomicUsize,
    /// Written into every chunk header mapped from now on (see
    /// `ChunkHeader::cache_index`). Invariant: at most `FAST_SLOTS`.
    pub(super) cache_index: AtomicUsize,
    /// Binds new chunks to `node` before their first touch, when set.
    pub(super) topology: Option<Topology>,
    /// Whether memory is faulted in ahead of use (see `growth::PREFAULT_STEP`) rather than
    /// on first use.
    pub(super) prefault: bool,
    /// This state itself, for the statistics' `reclaim`, which is handed `&self` only.
    pub(super) this: Weak<PoolShared>,
    /// The pool's membership in the statistics registry, for a pool listed on its own
    /// (`BlockPool::new`; a typed pool lists itself instead of its node pools). It leaves
    /// the registry when this state drops with the last handle.
    pub(super) registration: OnceLock<Registration>,
}

impl PoolShared {
    pub(super) fn new(config: BlockPoolConfig) -> Result<Arc<Self>, PoolError> {
        let BlockPoolConfig {
            name,
            layout,
            capacity,
            max_capacity,
            guard,
            node,
            prefault,
            topology,
            reserve,
            on_critical,
            huge_pages,
            lock: lock_pages,
        } = config;
        let error_name = PoolName::new(&name);
        let invalid = |reason: String| PoolError::InvalidConfig {
            pool: error_name,
            reason: ConfigReason::new(&reason),
        };
        if max_capacity == 0 {
            return Err(invalid("`max_capacity` must be at least 1".into()));
        }
        if capacity > max_capacity {
            return Err(invalid(format!(
                "`capacity` ({capacity}) exceeds `max_capacity` ({max_capacity})"
            )));
        }
        let reserve = reserve.unwrap_or(capacity);
        if reserve > max_capacity {
            return Err(invalid(format!(
                "`reserve` ({reserve}) exceeds `max_capacity` ({max_capacity}); lower it or raise the cap"
            )));
        }
        let geometry = Geometry::new(layout, guard)
            .map_err(|reason| PoolError::UnsupportedLayout { layout, reason })?;
        // A capacity beyond what the address space can hold would otherwise be mapped (a
        // header page written in each chunk) until the OS refuses, which on an
        // overcommitting system is long after the process has run out of memory.
        if capacity.div_ceil(geometry.blocks_per_chunk) > registry::MAX_CHUNKS {
            return Err(invalid(format!(
                "`capacity` ({capacity}) needs more chunks than the address space holds"
            )));
        }
        let batch = (cache_limit(max_capacity) / 2).max(1);
        let slot = registry::take_slot().ok_or(PoolError::TooManyPools { max: MAX_POOLS })?;
        let uid = NEXT_UID.fetch_add(1, StdOrdering::Relaxed);
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(uid);
        let pool = Arc::new_cyclic(|this| Self {
            uid,
            slot,
            registry_tag: slot + 1,
            fast_index: cache::fast_index(slot),
            unguarded_index: match guard {
                GuardLevel::Off => cache::fast_index(slot),
                GuardLevel::Canary | GuardLevel::Full => FAST_SLOTS,
            },
            geometry,
            guard,
            stamp: AtomicU64::new(uid << EPOCH_BITS),
            cache_limit: cache_limit(max_capacity),
            batch,
            fresh_batch: (max_capacity / 64)
                .min(FRESH_BYTES / geometry.stride)
                .clamp(batch, FRESH_RANGE),
            canary_secret: hasher.finish() | 1,
            name,
            error_name,
            layout,
            node,
            max_capacity,
            reserve,
            on_critical,
            last_slow: StdAtomicU64::new(note_slow_path(now_ms())),
            depot: Depot::new(),
            ahead: AtomicUsize::new(0),
            ahead_carved: AtomicUsize::new(0),
            overflow: Overflow::new(),
            keeps_contents: StdAtomicBool::new(false),
            growth: Mutex::new(ChunkList::new().with_pages(huge_pages, lock_pages)),
            caches: CacheRoster::new(),
            counters: PoolCounters::default(),
            owner: AtomicUsize::new(0),
            cache_index: AtomicUsize::new(FAST_SLOTS),
            topology,
            prefault,
            this: Weak::clone(this),
            registration: OnceLock::new(),
        });
        if huge_pages {
            pool.counters.request_huge_pages();
        }
        pool.reserve(capacity)?;
        Ok(pool)
    }

    /// Lists the pool in the statistics registry as a component of kind `block`, until
    /// this state drops. Creation's slow path, one short lock.
    pub(super) fn list(self: &Arc<Self>) {
        let weak: Weak<dyn Source> = Arc::downgrade(self) as Weak<dyn Source>;
        let registration = stats::registry::register_pool(self.name.as_str(), Kind::Block, weak);
        // A second listing would drop here and leave the registry at once.
        let _ = self.registration.set(registration);
    }

    /// Records `owner` in the header of every chunk mapped from now on, and whether frees
    /// may go through those headers straight into the freeing thread's cache (see
    /// `BlockPool::set_chunk_owner`).
    pub(super) fn set_chunk_owner(&self, owner: usize, free_via_header: bool) {
        self.owner.store(owner, StdOrdering::Relaxed);
        let index = if free_via_header {
            self.unguarded_index
        } else {
            FAST_SLOTS
        };
        self.cache_index.store(index, StdOrdering::Relaxed);
    }

    #[inline]
    pub(super) fn stamp(&self) -> u64 {
        self.stamp.load(Ordering::Relaxed)
    }

    /// Whether this pool's threads use the fast paths: its slot is one the fast table
    /// covers.
    pub(super) fn fast_paths(&self) -> bool {
        self.fast_index < FAST_SLOTS
    }

    /// The calling thread's cache of this pool as the fast paths see it (see
    /// `cache::lookup`): `None` if the thread has none yet or the pool's slot is beyond the
    /// fast table. The borrow ends before the thread's next slow path.
    #[inline(always)]
    pub(super) fn thread_cache(&self) -> Option<&ThreadCache> {
        cache::lookup(self, self.fast_index)
    }

    /// Whether `addr` is the start of a block in a chunk of this pool. Reads only the
    /// registry.
    #[inline(always)]
    pub(super) fn owns_block(&self, addr: usize) -> bool {
        registry::tag(addr) == self.registry_tag && self.geometry.is_block_start(addr)
    }

    /// Asks every thread to flush its cache on its next call: bumps the epoch, then
    /// closes every cache (the order the `cache` module docs rely on).
    pub(super) fn bump_epoch(&self) {
        let mask = (1u64 << EPOCH_BITS) - 1;
        let mut now = self.stamp.load(Ordering::Relaxed);
        loop {
            let next = (now & !mask) | (now.wrapping_add(1) & mask);
            match self
                .stamp
                .compare_exchange_weak(now, next, Ordering::SeqCst, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(seen) => now = seen,
            }
        }
        self.caches.close_all();
    }

    /// Records that a slow path ran at `now` ([`clock`]; see `last_slow`): one load, and a
    /// store only when the clock moved, so that threads' slow paths do not fight over
    /// the line.
    pub(super) fn touch(&self, now: u64) {
        if self.last_slow.load(StdOrdering::Relaxed) != now {
            // The process-wide mark first: a thread that finds `last_slow` at `now`
            // skips both, so whoever stored it must have raised the mark already.
            note_slow_path(now);
            self.last_slow.store(now, StdOrdering::Relaxed);
        }
    }

    /// Whether no slow path has run for `idle_after`, as of `now` ([`now_ms`]).
    pub(super) fn is_idle(&self, now: u64, idle_after: Duration) -> bool {
        now.saturating_sub(self.last_slow.load(StdOrdering::Relaxed)) >= millis(idle_after)
    }

    /// `Err(PoolError::Pressure)`, counted, if this pool refuses to grow now: it is
    /// configured [`OnCritical::Refuse`] and the pressure level is `Critical`. Growth's
    /// slow path only.
    pub(super) fn check_pressure(&self) -> Result<(), PoolError> {
        self.check_pressure_at(budget::level())
    }

    /// [`Self::check_pressure`] at `level`.
    pub(super) fn check_pressure_at(&self, level: PressureLevel) -> Result<(), PoolError> {
        if self.refuses_at(level) {
            self.counters
                .pressure_refusals
                .fetch_add(1, StdOrdering::Relaxed);
            return Err(PoolError::Pressure {
                pool: self.error_name,
                level,
            });
        }
        Ok(())
    }

    /// Whether this pool refuses to grow at `level`.
    pub(super) fn refuses_at(&self, level: PressureLevel) -> bool {
        self.on_critical == OnCritical::Refuse && level >= PressureLevel::Critical
    }

    /// The error for an allocation refused at the cap, counted.
    pub(super) fn exhausted(&self) -> PoolError {
        self.counters.exhausted.fetch_add(1, StdOrdering::Relaxed);
        PoolError::Exhausted {
            pool: self.error_name,
            max_capacity: self.max_capacity,
        }
    }
}

/// The idleness clock as the slow paths read it: milliseconds since the process first
/// read [`now_ms`], as of the last call to it. One relaxed load, no clock read: the
/// pressure monitor advances it every tick ([`advance_clock`]) and every growth pass
/// between ticks ([`any_pool_busy`]), and so does every pool's creation. Between advances
/// it stands still, so slow paths then record a time up to one tick old, which only ever
/// makes a pool look idle a tick early.
pub(super) fn clock() -> u64 {
    CLOCK.load(StdOrdering::Relaxed)
}

/// The last value [`now_ms`] read.
static CLOCK: StdAtomicU64 = StdAtomicU64::new(0);

/// Milliseconds since the first call in this process, read from the OS clock; advances
/// [`clock`] to it.
pub(super) fn now_ms() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    let base = *BASE.get_or_init(Instant::now);
    let now = millis(base.elapsed());
    CLOCK.fetch_max(now, StdOrdering::Relaxed);
    now
}

/// The latest `last_slow` of any pool, at least: every write of a pool's `last_slow` is
/// preceded by raising this to the value written, so that [`any_pool_busy`] answers for
/// every pool at once.
static LAST_SLOW_ANY: StdAtomicU64 = StdAtomicU64::new(0);

/// Raises [`LAST_SLOW_ANY`] to `now`, returned: a load, and a write at most once a
/// millisecond for all pools together (the first slow path of a new millisecond).
fn note_slow_path(now: u64) -> u64 {
    if LAST_SLOW_ANY.load(StdOrdering::Relaxed) < now {
        LAST_SLOW_ANY.fetch_max(now, StdOrdering::Relaxed);
    }
    now
}

/// Whether any pool of this process may be busy: false when no pool's slow path ran
/// within `idle_after`, so that every pool is idle (`PoolShared::is_idle`) and growth
/// ahead of demand has nothing to do for any of them. Advances the idleness clock
/// ([`clock`]), as the pressure monitor's growth passes between ticks need.
pub(crate) fn any_pool_busy(idle_after: Duration) -> bool {
    now_ms().saturating_sub(LAST_SLOW_ANY.load(StdOrdering::Relaxed)) < millis(idle_after)
}

/// Advances the idleness clock ([`clock`]) to the time: the pressure monitor's first act
/// each tick.
pub(crate) fn advance_clock() {
    now_ms();
}

/// `d` in whole milliseconds, saturating.
pub(super) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The per-thread cache limit of a pool capped at `max_capacity` blocks.
///
/// A thread that stops calling into a pool keeps its cached blocks until it exits, and an
/// allocation can only take blocks from the depot or new memory. Full-size caches suit
/// pools whose cap dwarfs them; a smaller pool caches at most a sixteenth of its cap per
/// thread (and at least 2 blocks), so that idle threads strand little of it.
fn cache_limit(max_capacity: usize) -> usize {
    (max_capacity / 16).clamp(2, CACHE_CAPACITY)
}

impl Drop for PoolShared {
    fn drop(&mut self) {
        // Threads still hold caches of this pool in their tables (and fast tables); closed,
        // they cannot hand out its blocks to the next pool in this slot.
        self.caches.close_all();
        let growth = self.lock_growth();
        for chunk in &growth.chunks {
            registry::unregister(chunk.base());
        }
        drop(growth);
        // The regions unmap when `growth` drops with `self`; the slot is free for reuse
        // now that no chunk names it.
        registry::release_slot(self.slot);
    }
}
