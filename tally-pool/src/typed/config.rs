//! How to build a typed pool: [`PoolConfig`], its defaults, and the checks a pool makes of
//! it before it maps anything.

use core::alloc::Layout;

use super::token::MAX_BLOCKS;
use crate::block::facade::{self, GuardLevel, OnCritical};
use crate::error::{ConfigReason, PoolError, PoolName};
use crate::numa::Topology;

/// How to build a [`Pool`](super::Pool).
///
/// ```
/// use tally_pool::{GuardLevel, PoolConfig};
///
/// let config = PoolConfig::new("orders").capacity(65_536).max_capacity(1 << 20).guard(GuardLevel::Canary);
/// assert_eq!(config.max_capacity, 1 << 20);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PoolConfig {
    /// Name used in errors and reports.
    pub name: String,
    /// Values pre-allocated (mapped and pre-faulted) at creation. Default 1024.
    pub capacity: usize,
    /// Most values alive at once; at most [`MAX_CAPACITY`] rounded down to whole chunks of
    /// the type's blocks (for `u64`, 33,552,384). Default 2^20.
    pub max_capacity: usize,
    /// Checks on release and reuse. Default [`GuardLevel::Off`]: handles already rule out
    /// double and foreign releases.
    pub guard: GuardLevel,
    /// Touch pre-allocated memory at creation, and grown memory 256 KiB ahead of use.
    /// Default true.
    pub prefault: bool,
    /// One block pool per NUMA node, each with its own `capacity` and `max_capacity`,
    /// serving the threads of its node. Default true. With `false`, one pool serves every
    /// thread (for types where locality does not matter).
    pub per_node: bool,
    /// The topology whose nodes get pools. Default: this machine's
    /// ([`Topology::system`]). A synthetic topology lets tests act out several nodes.
    pub topology: Option<Topology>,
    /// Values per node whose memory the pool never gives back under memory pressure, so
    /// that a burst after a quiet period does not fault. At most `max_capacity`. Default
    /// `None`: `capacity`.
    pub reserve: Option<usize>,
    /// What the pool does when it needs a new chunk while memory pressure is `Critical`:
    /// grow anyway ([`OnCritical::Grow`], the default) or fail fast with
    /// [`PoolError::Pressure`] ([`OnCritical::Refuse`]).
    pub on_critical: OnCritical,
    /// Back the pool's memory with transparent huge pages (chunks mapped in 2 MiB pairs
    /// advised `MADV_HUGEPAGE`), for types read at random among many live values, where
    /// TLB misses dominate. Where the system has them off, the pool works with normal
    /// pages and [`BlockPoolStats::huge_pages`](crate::block::BlockPoolStats::huge_pages)
    /// says why ([`HugePages`](crate::block::HugePages) explains the fallback and what
    /// reclaim does to a huge page). Default false.
    pub huge_pages: bool,
    /// Lock the pool's memory (`mlock`): every chunk is faulted in whole and locked as it
    /// is mapped, so that no acquire, release or access takes a page fault and nothing is
    /// swapped out. A chunk the OS refuses to lock (the locked-memory limit, `ulimit -l`)
    /// fails creation or growth with [`PoolError::LockRefused`]: a chunk being mapped is
    /// unmapped again, while a reclaimed chunk being reused stays mapped, reclaimed, with
    /// only its header page resident. Reclaim unlocks the chunks it gives back, and reuse
    /// locks them again. The pool's
    /// bookkeeping (raw-handle generations, depot magazines) is not locked. Default false.
    pub lock: bool,
}

/// Default `capacity` of a typed pool.
pub const DEFAULT_CAPACITY: usize = 1024;
/// Default `max_capacity` of a typed pool.
pub const DEFAULT_MAX_CAPACITY: usize = 1 << 20;
/// The most values a raw handle can number (its block field): 2^25. A pool's
/// `max_capacity` must also round up to whole chunks within it, so the largest a typed pool
/// accepts is this rounded down to a multiple of the values per chunk, which depends on
/// the type (for `u64`, 33,552,384); a larger one is refused with an error naming it.
pub const MAX_CAPACITY: usize = MAX_BLOCKS;

impl PoolConfig {
    /// The defaults, named `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            capacity: DEFAULT_CAPACITY,
            max_capacity: DEFAULT_MAX_CAPACITY,
            guard: GuardLevel::Off,
            prefault: true,
            per_node: true,
            topology: None,
            reserve: None,
            on_critical: OnCritical::Grow,
            huge_pages: false,
            lock: false,
        }
    }

    /// Sets [`Self::capacity`].
    pub fn capacity(mut self, values: usize) -> Self {
        self.capacity = values;
        self
    }

    /// Sets [`Self::max_capacity`].
    pub fn max_capacity(mut self, values: usize) -> Self {
        self.max_capacity = values;
        self
    }

    /// Sets [`Self::guard`].
    pub fn guard(mut self, guard: GuardLevel) -> Self {
        self.guard = guard;
        self
    }

    /// Sets [`Self::prefault`].
    pub fn prefault(mut self, prefault: bool) -> Self {
        self.prefault = prefault;
        self
    }

    /// Sets [`Self::per_node`].
    pub fn per_node(mut self, per_node: bool) -> Self {
        self.per_node = per_node;
        self
    }

    /// Sets [`Self::topology`].
    pub fn topology(mut self, topology: Topology) -> Self {
        self.topology = Some(topology);
        self
    }

    /// Sets [`Self::reserve`]: `values` per node the pool never gives back.
    ///
    /// ```
    /// use tally_pool::{Pool, PoolConfig, PoolError};
    ///
    /// let config = PoolConfig::new("doc-reserve").capacity(64).reserve(4096);
    /// assert_eq!(config.reserved(), 4096);
    /// let too_big = PoolConfig::new("doc-reserve-cap").max_capacity(100).reserve(101);
    /// assert!(matches!(Pool::<u64>::new(too_big), Err(PoolError::InvalidConfig { .. })));
    /// ```
    pub fn reserve(mut self, values: usize) -> Self {
        self.reserve = Some(values);
        self
    }

    /// The reserve in force: [`Self::reserve`], else [`Self::capacity`].
    ///
    /// ```
    /// use tally_pool::PoolConfig;
    /// assert_eq!(PoolConfig::new("doc-reserved").capacity(300).reserved(), 300);
    /// ```
    pub fn reserved(&self) -> usize {
        self.reserve.unwrap_or(self.capacity)
    }

    /// Sets [`Self::on_critical`].
    ///
    /// ```
    /// use tally_pool::{OnCritical, PoolConfig};
    /// let config = PoolConfig::new("doc-refuse").on_critical(OnCritical::Refuse);
    /// assert_eq!(config.on_critical, OnCritical::Refuse);
    /// ```
    pub fn on_critical(mut self, on_critical: OnCritical) -> Self {
        self.on_critical = on_critical;
        self
    }
}

impl PoolConfig {
    /// Sets [`Self::huge_pages`].
    ///
    /// ```
    /// use tally_pool::block::HugePages;
    /// use tally_pool::{Pool, PoolConfig};
    ///
    /// let pool = Pool::<[u64; 8]>::new(PoolConfig::new("doc-huge").huge_pages(true))?;
    /// let stats = pool.stats();
    /// // `Active`, or `Unavailable` with the reason where the system has none.
    /// assert!(matches!(stats.huge_pages, HugePages::Active | HugePages::Unavailable(_)));
    /// # Ok::<(), tally_pool::PoolError>(())
    /// ```
    pub fn huge_pages(mut self, huge_pages: bool) -> Self {
        self.huge_pages = huge_pages;
        self
    }

    /// Sets [`Self::lock`].
    ///
    /// ```
    /// use tally_pool::{Pool, PoolConfig, PoolError};
    ///
    /// match Pool::<u64>::new(PoolConfig::new("doc-lock").per_node(false).lock(true)) {
    ///     Ok(pool) => assert!(pool.stats().locked_bytes > 0),
    ///     // Below one chunk of locked-memory limit (`ulimit -l`).
    ///     Err(e) => assert!(matches!(e, PoolError::LockRefused { .. })),
    /// }
    /// ```
    pub fn lock(mut self, lock: bool) -> Self {
        self.lock = lock;
        self
    }
}

impl PoolConfig {
    /// The configuration a pool of blocks of `layout` is made with, or why it cannot be:
    /// a typed pool that `recycling` keeps values in free blocks, which `GuardLevel::Full`
    /// would poison.
    ///
    /// Raw handles number blocks as `chunk id * blocks per chunk + index` in 25 bits, and a
    /// pool maps whole chunks: the cap must stay within the whole chunks that fit. With
    /// `clamp`, a `max_capacity` just under the limit that whole chunks would overrun is
    /// lowered to fit (and `capacity` with it) instead of refused: static pools, whose
    /// settings were checked at compile time without knowing the chunk geometry.
    ///
    /// # Errors
    ///
    /// [`PoolError::InvalidConfig`] saying what to change.
    pub(crate) fn checked(
        mut self,
        layout: Layout,
        recycling: bool,
        clamp: bool,
    ) -> Result<Self, PoolError> {
        let max_capacity = self.max_capacity;
        if let Some(per_chunk) = facade::blocks_per_chunk(layout, self.guard) {
            let most = MAX_BLOCKS / per_chunk * per_chunk;
            if max_capacity > most && max_capacity <= MAX_CAPACITY {
                if !clamp {
                    return Err(PoolError::InvalidConfig {
                        pool: PoolName::new(&self.name),
                        reason: ConfigReason::new(&format!(
                            "`max_capacity` ({max_capacity}) rounds up to whole chunks of {per_chunk} values, past what a raw handle can number; use at most {most}"
                        )),
                    });
                }
                self.max_capacity = most;
                self.capacity = self.capacity.min(most);
                self.reserve = self.reserve.map(|r| r.min(most));
            }
        }
        let (capacity, max_capacity) = (self.capacity, self.max_capacity);
        if max_capacity > MAX_CAPACITY {
            return Err(PoolError::InvalidConfig {
                pool: PoolName::new(&self.name),
                reason: ConfigReason::new(&format!("`max_capacity` ({max_capacity}) is above the most a typed pool can number, {MAX_CAPACITY}")),
            });
        }
        if recycling && self.guard == GuardLevel::Full {
            return Err(PoolError::InvalidConfig {
                pool: PoolName::new(&self.name),
                reason: "a recycling pool keeps values in free blocks, which `GuardLevel::Full` would poison; use `GuardLevel::Canary`".into(),
            });
        }
        if capacity > max_capacity {
            return Err(PoolError::InvalidConfig {
                pool: PoolName::new(&self.name),
                reason: ConfigReason::new(&format!(
                    "`capacity` ({capacity}) exceeds `max_capacity` ({max_capacity})"
                )),
            });
        }
        if let Some(reserve) = self.reserve.filter(|&r| r > max_capacity) {
            return Err(PoolError::InvalidConfig {
                pool: PoolName::new(&self.name),
                reason: ConfigReason::new(&format!("`reserve` ({reserve}) exceeds `max_capacity` ({max_capacity}); lower it or raise the cap")),
            });
        }
        Ok(self)
    }
}
