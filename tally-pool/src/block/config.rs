//! How to build a block pool: [`BlockPoolConfig`], the [`GuardLevel`] it checks at, and
//! what it does under critical memory pressure ([`OnCritical`]).

use core::alloc::Layout;

use crate::numa::Topology;

/// How much checking a pool does on free and reuse. See the [module docs](super#guards).
///
/// Every level refuses foreign and interior pointers. No level detects a free of a block
/// that was handed out again since the caller freed it (a stale free): the contract of
/// [`BlockPool::free`](super::BlockPool::free) rules it out.
///
/// ```
/// use core::alloc::Layout;
/// use tally_pool::block::{BlockPool, BlockPoolConfig, GuardLevel};
/// use tally_pool::{CorruptionKind, PoolError};
///
/// let pool = BlockPool::new(BlockPoolConfig::new(Layout::new::<u64>()).guard(GuardLevel::Canary))?;
/// let block = pool.allocate()?;
/// // SAFETY: allocated above, freed once.
/// unsafe { pool.free(block) }?;
/// // SAFETY: the block is free and nothing was allocated since: under `Canary` the
/// // contract allows this double free, which the pool refuses.
/// let again = unsafe { pool.free(block) };
/// assert!(matches!(again, Err(PoolError::Corruption { kind: CorruptionKind::DoubleFree, .. })));
/// # Ok::<(), PoolError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum GuardLevel {
    /// Pointer checks only: `free` refuses foreign and interior pointers, reading only the
    /// chunk registry. A double free, or a free of a never-carved block or of a block of a
    /// reclaimed chunk, is not detected: it puts the block into circulation twice.
    Off,
    /// A check word (canary) after each block, saying whether the block is allocated,
    /// flipped and verified on free and verified on reuse. Adds to `Off`: a free of a block
    /// that is free (a double free before the block is reused), never carved, or in a
    /// reclaimed chunk; a write past a block's end, caught on free (or on reuse, if the
    /// block was free). Costs 8 bytes a block and a compare-and-swap a free.
    #[default]
    Canary,
    /// `Canary`, plus a poison fill of freed blocks verified on reuse: adds writes into a
    /// freed block, caught when the block is next handed out. Costs a fill on free and a
    /// scan on reuse.
    Full,
}

impl GuardLevel {
    /// The level's lowercase name, as reports show it: `"off"`, `"canary"` or `"full"`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            GuardLevel::Off => "off",
            GuardLevel::Canary => "canary",
            GuardLevel::Full => "full",
        }
    }
}

/// What a pool does when it needs a new chunk while memory pressure is
/// [`Critical`](crate::pressure::PressureLevel::Critical).
///
/// The check sits where a pool maps or reuses a chunk, never on the paths that hand out
/// cached blocks: a `Refuse` pool still serves every block it has.
///
/// ```
/// use core::alloc::Layout;
/// use tally_pool::block::{BlockPoolConfig, OnCritical};
///
/// let config = BlockPoolConfig::new(Layout::new::<u64>()).on_critical(OnCritical::Refuse);
/// assert_eq!(config.on_critical, OnCritical::Refuse);
/// assert_eq!(OnCritical::default(), OnCritical::Grow);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum OnCritical {
    /// Grow as at any other level (up to `max_capacity`).
    #[default]
    Grow,
    /// Fail fast: refuse to map a chunk with
    /// [`PoolError::Pressure`](crate::PoolError::Pressure) while the level is `Critical`.
    Refuse,
}

/// How to build a [`BlockPool`](super::BlockPool).
///
/// ```
/// use core::alloc::Layout;
/// use tally_pool::block::{BlockPoolConfig, GuardLevel};
///
/// let config = BlockPoolConfig::new(Layout::new::<u128>())
///     .name("ticks")
///     .capacity(4096)
///     .guard(GuardLevel::Off);
/// assert_eq!(config.capacity, 4096);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BlockPoolConfig {
    /// Name used in errors and reports. Default `"block-pool"`.
    pub name: String,
    /// Layout of every block.
    pub layout: Layout,
    /// Blocks mapped (and pre-faulted, if `prefault`) when the pool is created. Default 0.
    pub capacity: usize,
    /// Most blocks the pool will ever have in circulation. Default: no cap but memory.
    pub max_capacity: usize,
    /// Checks on free and reuse. Default [`GuardLevel::Canary`].
    pub guard: GuardLevel,
    /// NUMA node the memory belongs to. Default 0.
    pub node: u32,
    /// Touch the pre-allocated memory at creation so that first use takes no page fault,
    /// and, as the pool grows, fault in 256 KiB of a chunk at a time ahead of the blocks
    /// handed out. Default true.
    pub prefault: bool,
    /// When set, every chunk is bound to `node` of this topology before its first touch
    /// (`mbind` on this machine's topology; recorded only on a synthetic one). Default
    /// `None`: memory goes wherever the OS puts it.
    pub topology: Option<Topology>,
    /// Blocks the pool never gives back to the OS, whatever the memory pressure: enough
    /// chunks stay mapped (and faulted in) to hold them, so a burst after a quiet period
    /// does not fault. At most `max_capacity`. Default `None`: `capacity`.
    pub reserve: Option<usize>,
    /// What the pool does when it needs a new chunk under critical memory pressure.
    /// Default [`OnCritical::Grow`].
    pub on_critical: OnCritical,
    /// Back the pool's memory with transparent huge pages: chunks are mapped two at a time,
    /// as one 2 MiB-aligned 2 MiB range advised `MADV_HUGEPAGE`, so that one huge page (one
    /// TLB entry) covers both. Where the system has transparent huge pages off, or refuses
    /// the advice, the pool works with normal pages and its statistics say so
    /// ([`HugePages`](super::HugePages), which also says what reclaim does to a huge
    /// page). Default false.
    pub huge_pages: bool,
    /// Lock the pool's memory (`mlock`): each chunk is faulted in whole and locked as it is
    /// mapped, never swapped out, so that no access to it takes a fault. Mapping a chunk
    /// the OS refuses to lock fails with [`PoolError::LockRefused`](crate::PoolError::LockRefused)
    /// (the locked-memory limit, `ulimit -l`), and the refused chunk is unmapped. Reclaim
    /// unlocks the chunks it gives back (the OS refuses to discard locked pages); reusing
    /// one locks it again, with the same error if the OS refuses. Default false.
    pub lock: bool,
}

impl BlockPoolConfig {
    /// The defaults for blocks of `layout`.
    pub fn new(layout: Layout) -> Self {
        Self {
            name: "block-pool".into(),
            layout,
            capacity: 0,
            max_capacity: usize::MAX,
            guard: GuardLevel::default(),
            node: 0,
            prefault: true,
            topology: None,
            reserve: None,
            on_critical: OnCritical::Grow,
            huge_pages: false,
            lock: false,
        }
    }

    /// The reserve in force: [`Self::reserve`], else [`Self::capacity`].
    ///
    /// ```
    /// use core::alloc::Layout;
    /// use tally_pool::block::BlockPoolConfig;
    /// let config = BlockPoolConfig::new(Layout::new::<u64>()).capacity(512);
    /// assert_eq!(config.reserved(), 512);
    /// assert_eq!(config.reserve(100).reserved(), 100);
    /// ```
    pub fn reserved(&self) -> usize {
        self.reserve.unwrap_or(self.capacity)
    }

    /// Sets [`Self::name`].
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Sets [`Self::capacity`].
    pub fn capacity(mut self, blocks: usize) -> Self {
        self.capacity = blocks;
        self
    }

    /// Sets [`Self::max_capacity`].
    pub fn max_capacity(mut self, blocks: usize) -> Self {
        self.max_capacity = blocks;
        self
    }

    /// Sets [`Self::guard`].
    pub fn guard(mut self, guard: GuardLevel) -> Self {
        self.guard = guard;
        self
    }

    /// Sets [`Self::node`].
    pub fn node(mut self, node: u32) -> Self {
        self.node = node;
        self
    }

    /// Sets [`Self::topology`].
    pub fn topology(mut self, topology: Topology) -> Self {
        self.topology = Some(topology);
        self
    }

    /// Sets [`Self::prefault`].
    pub fn prefault(mut self, prefault: bool) -> Self {
        self.prefault = prefault;
        self
    }

    /// Sets [`Self::reserve`]: `blocks` the pool never gives back. Creation refuses a
    /// reserve above `max_capacity`.
    ///
    /// ```
    /// use core::alloc::Layout;
    /// use tally_pool::block::{BlockPool, BlockPoolConfig};
    /// use tally_pool::PoolError;
    ///
    /// let too_big = BlockPoolConfig::new(Layout::new::<u64>()).max_capacity(10).reserve(11);
    /// assert!(matches!(BlockPool::new(too_big), Err(PoolError::InvalidConfig { .. })));
    /// ```
    pub fn reserve(mut self, blocks: usize) -> Self {
        self.reserve = Some(blocks);
        self
    }

    /// Sets [`Self::on_critical`].
    pub fn on_critical(mut self, on_critical: OnCritical) -> Self {
        self.on_critical = on_critical;
        self
    }

    /// Sets [`Self::huge_pages`].
    ///
    /// ```
    /// use core::alloc::Layout;
    /// use tally_pool::block::{BlockPool, BlockPoolConfig, HugePages};
    ///
    /// let pool = BlockPool::new(BlockPoolConfig::new(Layout::new::<[u8; 64]>()).huge_pages(true))?;
    /// let block = pool.allocate()?;
    /// // Active, or Unavailable with the reason where the system has no huge pages.
    /// assert_ne!(pool.stats().huge_pages, HugePages::Off);
    /// // SAFETY: allocated above, freed once.
    /// unsafe { pool.free(block) }?;
    /// # Ok::<(), tally_pool::PoolError>(())
    /// ```
    pub fn huge_pages(mut self, huge_pages: bool) -> Self {
        self.huge_pages = huge_pages;
        self
    }

    /// Sets [`Self::lock`].
    ///
    /// ```
    /// use core::alloc::Layout;
    /// use tally_pool::block::{BlockPool, BlockPoolConfig};
    /// use tally_pool::PoolError;
    ///
    /// match BlockPool::new(BlockPoolConfig::new(Layout::new::<u64>()).capacity(1).lock(true)) {
    ///     Ok(pool) => assert!(pool.stats().locked_bytes > 0),
    ///     // The locked-memory limit (`ulimit -l`) is too low for one chunk.
    ///     Err(e) => assert!(matches!(e, PoolError::LockRefused { .. })),
    /// }
    /// ```
    pub fn lock(mut self, lock: bool) -> Self {
        self.lock = lock;
        self
    }
}
