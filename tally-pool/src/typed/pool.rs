//! `Pool<T>`: a typed pool over one block pool per NUMA node.
//!
//! `Pool<T>`'s methods are spread by concern, each file an `impl` block:
//!
//! | file | concern |
//! |---|---|
//! | `pool` | creation, the per-node state, counters, and the token half of a pool (redeem, lend) |
//! | `acquire` | the acquire paths, fast and slow, and what they give back if `T::default()` panics |
//! | `release` | the release paths, fast and slow, and what they give back if `Drop` or `recycle` panics |

use core::alloc::Layout;
use core::fmt;
use core::marker::PhantomData;
use core::ptr::NonNull;
use std::panic::Location;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use super::config::PoolConfig;
use super::handle::Handle;
use super::recycle::{recycle_value, Recycle, RecycleFn, RecycleSlot};
use super::site_table::SiteTable;
use super::token::{self, RawHandle, Refusal, TokenTable};
use crate::block::facade::{
    BlockPool, BlockPoolConfig, BlockPoolStats, GuardLevel, PerNodeBlockPool,
};
use crate::error::{PoolError, PoolName};
use crate::numa::Topology;

/// The parts of a working pool.
///
/// Invariant: `tokens` holds one table per node pool of `nodes`, by the same index.
pub(super) struct Inner {
    /// The node pools, and the routing between them.
    pub(super) nodes: PerNodeBlockPool,
    pub(super) tokens: Box<[TokenTable]>,
    /// The id raw handles are bound to: the first node pool's.
    pub(super) uid: u64,
    pub(super) recycle: Option<RecycleFn>,
    pub(super) leaked_raw: AtomicU64,
}

/// Locality counters of one node's pool: see [`Pool::node_stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeStats {
    /// The node's id.
    pub node: u32,
    /// Acquires served by this node for its own threads.
    pub local_acquires: u64,
    /// Acquires served by this node for threads of another node whose pool was full.
    pub remote_acquires: u64,
    /// Values of this node released by threads of another node (each went back to this
    /// node's depot, not the releasing thread's node).
    pub cross_node_releases: u64,
    /// Bytes this node's pool has mapped.
    pub bytes: usize,
    /// The node pool's block counters.
    pub blocks: BlockPoolStats,
}

/// A pool of `T` values. Pools live for the rest of the program, like the statics that
/// `#[derive(Pooled)]` makes: [`Pool::new`] returns a `&'static Pool<T>`, so handles never
/// outlive their pool. Create pools once, at start-up.
///
/// | call | value comes from | on failure |
/// |---|---|---|
/// | [`acquire`](Self::acquire) | `T::default()`, or a recycled value | `PoolError` |
/// | [`acquire_with`](Self::acquire_with) | the argument | `AcquireError<T>`, value handed back |
/// | [`redeem`](Self::redeem) | a value lent out as a [`RawHandle`] | `PoolError` |
///
/// ```
/// use tally_pool::{Pool, PoolConfig};
///
/// #[derive(Debug, Default, PartialEq)]
/// struct Quote { bid: i64, ask: i64 }
///
/// let quotes = Pool::<Quote>::new(PoolConfig::new("quotes").capacity(1024)).unwrap();
/// let mut q = quotes.acquire().unwrap();
/// q.bid = 100;
/// assert_eq!(*q, Quote { bid: 100, ask: 0 });
/// drop(q); // back to the pool, from any thread
/// assert_eq!(quotes.stats().live_blocks, 0);
/// ```
///
/// A pool is invariant in `T`: it hands its values back as its own `T`, so a pool of
/// functions that take a reference of any lifetime cannot be used as a pool of functions
/// that keep a `&'static` one (which would let a value stored through one view be called
/// through the other with a short-lived reference):
///
/// ```compile_fail,E0308
/// use tally_pool::Pool;
///
/// fn narrow(p: &'static Pool<for<'a> fn(&'a str)>) -> &'static Pool<fn(&'static str)> {
///     p
/// }
/// ```
pub struct Pool<T> {
    /// The block pool of a *direct* pool, else `None`. A pool is direct when its values go
    /// straight between handles and the calling thread's block cache with nothing to do
    /// around them: it is unguarded, does not recycle, and has one node pool. Its acquires
    /// pop that cache and its releases of values that need no drop push onto it.
    ///
    /// Invariant: `Some` only when `inner` is `Ok`, and then the one node pool of
    /// `inner.nodes`.
    pub(super) direct: Option<BlockPool>,
    /// The name, as `Pool::name` and the statistics give it.
    pub(super) name: String,
    /// The name as the pool's errors carry it: interned (see `PoolName`).
    pub(super) error_name: PoolName,
    pub(super) inner: Result<Inner, PoolError>,
    /// Call sites of sampled acquires, once [`Pool::track_sites`] turned them on; shared
    /// with the pool's twin, if it has one. Read on slow paths only.
    pub(super) sites: OnceLock<&'static SiteTable>,
    /// Invariant in `T`: the pool hands its values back typed as `T` (redeem, recycled
    /// values), so a `Pool<for<'a> fn(&'a X)>` must not be usable as a `Pool<fn(&'static X)>`.
    _marker: PhantomData<fn(T) -> T>,
}

impl<T: 'static> fmt::Debug for Pool<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("type", &core::any::type_name::<T>())
            .field("name", &self.name)
            .field("stats", &self.stats())
            .finish()
    }
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inner")
            .field("nodes", &self.nodes.pools().len())
            .field("topology", self.nodes.topology())
            .finish_non_exhaustive()
    }
}

impl<T: 'static> Pool<T> {
    /// Creates a pool that drops values on release.
    ///
    /// The pool joins the statistics registry as one component of kind `typed`, named
    /// `config`'s name, with its type's name (see [`stats`](crate::stats)).
    ///
    /// # Errors
    ///
    /// [`PoolError::InvalidConfig`] for `capacity > max_capacity` or a `max_capacity` above
    /// [`MAX_CAPACITY`](super::MAX_CAPACITY); [`PoolError::OutOfMemory`] if the initial memory is refused;
    /// [`PoolError::LockRefused`] if the pool locks its memory
    /// ([`PoolConfig::lock`]) and the OS refuses to lock it.
    pub fn new(config: PoolConfig) -> Result<&'static Self, PoolError> {
        Self::create(config, None, false, false)
    }

    /// Creates a pool that keeps values on release and resets them with
    /// [`Recycle::recycle`]. Values may move between threads while they wait in the pool,
    /// so `T: Send`.
    ///
    /// # Errors
    ///
    /// As [`Pool::new`].
    pub fn new_recycling(config: PoolConfig) -> Result<&'static Self, PoolError>
    where
        T: Recycle + Send,
    {
        Self::create(config, Some(recycle_value::<T>), false, false)
    }

    fn layout(recycling: bool) -> Layout {
        if recycling {
            Layout::new::<RecycleSlot<T>>()
        } else {
            Layout::new::<T>()
        }
    }

    /// Makes and leaks a pool. With `clamp`, a `max_capacity` just under the limit that
    /// whole chunks would overrun is lowered to fit instead of refused (see
    /// [`PoolConfig::checked`]). With `indirect`, the pool is never direct (a twin, see
    /// `sites`).
    fn create(
        config: PoolConfig,
        recycle: Option<RecycleFn>,
        clamp: bool,
        indirect: bool,
    ) -> Result<&'static Self, PoolError> {
        let layout = Self::layout(recycle.is_some());
        let PoolConfig {
            name,
            capacity,
            max_capacity,
            guard,
            prefault,
            per_node,
            topology,
            reserve,
            on_critical,
            huge_pages,
            lock,
        } = config.checked(layout, recycle.is_some(), clamp)?;
        let topology = topology.unwrap_or_else(|| Topology::system().clone());
        let node_ids: Vec<u32> = if per_node {
            topology.nodes().iter().map(|n| n.id()).collect()
        } else {
            vec![topology.node_at(0).map_or(0, |n| n.id())]
        };
        let nodes = PerNodeBlockPool::with_nodes(
            BlockPoolConfig::new(layout)
                .name(&name)
                .capacity(0)
                .max_capacity(max_capacity)
                .guard(guard)
                .prefault(prefault)
                .reserve(reserve.unwrap_or(capacity))
                .on_critical(on_critical)
                .huge_pages(huge_pages)
                .lock(lock),
            &topology,
            &node_ids,
        )?;
        let tokens = nodes
            .pools()
            .iter()
            .map(|p| TokenTable::new(p, max_capacity))
            .collect::<Result<Box<[TokenTable]>, PoolError>>()?;
        let direct = match nodes.pools() {
            [only] if recycle.is_none() && guard == GuardLevel::Off && !indirect => {
                Some(only.clone())
            }
            _ => None,
        };
        let uid = nodes.pools().first().map_or(0, BlockPool::uid);
        let inner = Inner {
            nodes,
            tokens,
            uid,
            recycle,
            leaked_raw: AtomicU64::new(0),
        };
        let raw = Box::into_raw(Box::new(Self {
            direct,
            error_name: PoolName::new(&name),
            name,
            inner: Ok(inner),
            sites: OnceLock::new(),
            _marker: PhantomData,
        }));
        // SAFETY: `raw` comes from `Box::into_raw` just above, and is freed only below, when
        // creation fails, after the last use of this reference.
        let pool: &'static Self = unsafe { &*raw };
        let mut refused = None;
        if let Ok(inner) = &pool.inner {
            for node in inner.nodes.pools() {
                // Chunks mapped from here on name this pool in their header, which is how
                // a handle finds its pool; a direct pool's handles free through it.
                node.set_chunk_owner(pool as *const Self as usize, pool.direct.is_some());
                if inner.recycle.is_some() {
                    node.keep_free_contents();
                }
                if let Err(e) = node.reserve(capacity) {
                    refused = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = refused {
            // Nothing but the pool's own node pools knows it yet (no handle, no cache, not
            // listed): it is freed with every chunk and token table it mapped, not leaked.
            // SAFETY: `raw` came from `Box::into_raw` above and is freed once; `pool` and
            // the borrows through it are not used after this.
            drop(unsafe { Box::from_raw(raw) });
            return Err(e);
        }
        if !indirect {
            pool.list(); // a twin is reported as part of its pool
        }
        Ok(pool)
    }

    /// A pool for a `static` (what the derive uses): creation errors are kept and returned
    /// by every acquire instead of being lost.
    pub(super) fn create_static(config: PoolConfig, recycle: Option<RecycleFn>) -> &'static Self {
        let name = config.name.clone();
        match Self::create(config, recycle, true, false) {
            Ok(pool) => pool,
            Err(e) => Box::leak(Box::new(Self {
                direct: None,
                error_name: PoolName::new(&name),
                name,
                inner: Err(e),
                sites: OnceLock::new(),
                _marker: PhantomData,
            })),
        }
    }

    /// A pool that is never direct, for a direct pool's sampled values (see `sites`).
    pub(super) fn create_twin(config: PoolConfig) -> Result<&'static Self, PoolError> {
        Self::create(config, None, false, true)
    }

    pub(super) fn inner(&self) -> Result<&Inner, PoolError> {
        self.inner.as_ref().map_err(Clone::clone)
    }

    /// Turns a token back into a handle.
    ///
    /// Only memory the pool's own tables vouch for is read: the token's chunk must be one
    /// this pool mapped and lent a value from. Only `Send` types: the token may have been
    /// made on another thread (see [`Handle::into_raw`]).
    ///
    /// A token redeems at most once. Its block's generation has 24 bits, so a block lent
    /// 2^24 times wraps it and a token from before the wrap carries the same generation as
    /// a current one; its checksum, which also covers how often the generation wrapped
    /// (modulo 64), tells them apart, and the old token is refused as stale. Only a token
    /// whose block has been lent a multiple of 2^30 times since it was made would redeem
    /// in place of the current one (never two owners: each lend redeems once).
    ///
    /// Another pool's token is told apart by a 6-bit pool tag and a 6-bit checksum keyed
    /// by the pool, so the check is probabilistic: a token of another pool whose tag
    /// matches (1 in 64) and whose block number and generation name a value this pool
    /// has out as a token passes the checksum 1 time in 64, and then redeems that value.
    /// There is still one owner at a time (that value's own token is then refused as
    /// stale), and no memory outside this pool's values is read or handed out. Keep tokens
    /// of different pools apart where that matters, for example one queue per pool.
    ///
    /// # Errors
    ///
    /// [`PoolError::StaleHandle`] if the token was redeemed already,
    /// [`PoolError::InvalidHandle`] if this pool never issued it,
    /// [`PoolError::WrongPool`] if another pool did (as far as the tag tells; see above).
    #[track_caller]
    pub fn redeem(&'static self, raw: RawHandle<T>) -> Result<Handle<T>, PoolError>
    where
        T: Send,
    {
        let inner = self.inner()?;
        let invalid = || PoolError::InvalidHandle {
            pool: self.error_name,
        };
        let Some(token) = token::unpack(inner.uid, raw.to_bits()) else {
            // A sampled value of a pool that tracks sites lives in the pool's twin.
            if let Some(twin) = self.twin_of() {
                return twin.redeem(raw);
            }
            return Err(PoolError::WrongPool {
                pool: self.error_name,
            });
        };
        let node = token.fields.node as usize;
        let redeemed = match (inner.tokens.get(node), inner.nodes.pool(node)) {
            (Some(table), Some(block_pool)) => table.redeem(inner.uid, &token, block_pool),
            _ => Err(Refusal::NeverIssued),
        };
        let addr = match redeemed {
            Ok(addr) => addr,
            Err(refusal) => {
                // A sampled value lent by the twin whose 6-bit tag happens to be this pool's
                // (one twin in 64) reaches this pool's own table, which refuses it.
                if let Some(Ok(handle)) = self.twin_of().map(|twin| twin.redeem(raw)) {
                    return Ok(handle);
                }
                return Err(match refusal {
                    Refusal::Stale => PoolError::StaleHandle {
                        pool: self.error_name,
                    },
                    Refusal::NeverIssued => invalid(),
                });
            }
        };
        inner.leaked_raw.fetch_sub(1, Ordering::Relaxed);
        let ptr = NonNull::new(addr as *mut T).ok_or_else(invalid)?;
        self.redeemed_site(ptr, Location::caller());
        // SAFETY: the generation word said this block was lent out as this very token and
        // the CAS took it back exactly once: the block holds the valid `T` that `into_raw`
        // left there, and no handle to it exists.
        Ok(unsafe { Handle::from_block(ptr) })
    }

    /// Lends the value out as a token; the counterpart of [`Self::redeem`].
    ///
    /// # Safety
    ///
    /// `ptr` must be a live value of this pool that no handle owns any more.
    pub(super) unsafe fn lend(&self, ptr: NonNull<T>) -> RawHandle<T> {
        let Ok(inner) = &self.inner else {
            return RawHandle::from_bits(0);
        };
        // SAFETY: `ptr` is a live value of this pool (caller), so a live block of one of its
        // node pools.
        let home = unsafe { inner.nodes.index_of_block(ptr.cast()) };
        let found = home.and_then(|h| Some((h, inner.nodes.pool(h)?, inner.tokens.get(h)?)));
        let Some((home, block_pool, table)) = found else {
            return RawHandle::from_bits(0);
        };
        // SAFETY: `ptr` is a live value of `block_pool`, the node pool `home` of this pool,
        // whose table is `table`, and no handle owns it any more (caller).
        let Some(bits) = (unsafe { table.lend(inner.uid, home, block_pool, ptr.cast()) }) else {
            // Cannot happen (see `TokenTable::lend`). The value is leaked rather than lent
            // under a token that would not redeem.
            return RawHandle::from_bits(0);
        };
        inner.leaked_raw.fetch_add(1, Ordering::Relaxed);
        RawHandle::from_bits(bits)
    }

    /// How many values are out as raw handles and not yet redeemed (sampled values in
    /// the pool's twin included, see [`Pool::track_sites`]).
    pub fn leaked_raw(&self) -> u64 {
        let own = self
            .inner
            .as_ref()
            .map_or(0, |i| i.leaked_raw.load(Ordering::Relaxed));
        own.saturating_add(self.twin_of().map_or(0, |twin| twin.leaked_raw()))
    }

    /// The pool's counters, summed over its nodes, with the values that
    /// [`track_sites`](Self::track_sites) placed in the pool's twin (but not the twin's
    /// capacities).
    pub fn stats(&self) -> BlockPoolStats {
        let mut stats = match &self.inner {
            Ok(inner) => inner.nodes.stats(),
            Err(_) => BlockPoolStats::default(),
        };
        if let Some(twin) = self.twin_of() {
            let (capacity, max_capacity) = (stats.capacity, stats.max_capacity);
            stats.add(&twin.stats());
            (stats.capacity, stats.max_capacity) = (capacity, max_capacity);
        }
        stats
    }

    /// Locality counters per node: acquires served locally and remotely, releases that
    /// crossed nodes, and bytes per node.
    ///
    /// ```
    /// use tally_pool::numa::{with_node_override, Topology};
    /// use tally_pool::{Pool, PoolConfig};
    ///
    /// let topology = Topology::synthetic(2, 1)?;
    /// let pool = Pool::<u64>::new(PoolConfig::new("ticks").topology(topology))?;
    /// let on_1 = with_node_override(1, || pool.acquire_with(7)).map_err(|e| e.error)?;
    /// assert_eq!(pool.node_stats()[1].local_acquires, 1);
    /// with_node_override(0, || drop(on_1)); // released on node 0: goes home to node 1
    /// assert_eq!(pool.node_stats()[1].cross_node_releases, 1);
    /// assert_eq!(pool.locality(), 1.0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn node_stats(&self) -> Vec<NodeStats> {
        let Ok(inner) = &self.inner else {
            return Vec::new();
        };
        inner
            .nodes
            .node_counts()
            .into_iter()
            .map(|n| NodeStats {
                node: n.node,
                local_acquires: n.blocks.allocations.saturating_sub(n.remote_allocations),
                remote_acquires: n.remote_allocations,
                cross_node_releases: n.cross_node_frees,
                bytes: n.blocks.bytes_mapped,
                blocks: n.blocks,
            })
            .collect()
    }

    /// The fraction of acquires served by the acquiring thread's own node (1.0 when there
    /// were none).
    pub fn locality(&self) -> f64 {
        let (local, remote) = self.node_stats().iter().fold((0u64, 0u64), |(l, r), n| {
            (l + n.local_acquires, r + n.remote_acquires)
        });
        if local + remote == 0 {
            1.0
        } else {
            local as f64 / (local + remote) as f64
        }
    }

    /// Fills the calling thread's cache from its node's pool, so that its first acquires
    /// find blocks at hand; returns how many it cached. Meant for a worker's start hook
    /// (see [`Placement`](crate::numa::Placement)), after the thread has been pinned to its node.
    ///
    /// ```
    /// use tally_pool::{Pool, PoolConfig};
    ///
    /// let pool = Pool::<u64>::new(PoolConfig::new("warm"))?;
    /// assert!(pool.warm()? > 0);
    /// assert_eq!(pool.stats().live_blocks, 0);
    /// # Ok::<(), tally_pool::PoolError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// The error that prevented the pool's creation, or an OS refusal of memory.
    pub fn warm(&'static self) -> Result<usize, PoolError> {
        let inner = self.inner()?;
        let Some(node) = inner.nodes.pool(inner.nodes.thread_index()) else {
            return Ok(0);
        };
        let want = (node.cache_limit() / 2).max(1);
        let mut taken = Vec::new();
        if taken.try_reserve_exact(want).is_err() {
            return Err(PoolError::OutOfMemory {
                pool: self.error_name,
                bytes: want.saturating_mul(core::mem::size_of::<NonNull<u8>>()),
                errno: libc::ENOMEM,
            });
        }
        let mut failure = None;
        for _ in 0..want {
            match node.allocate() {
                Ok(block) => taken.push(block),
                Err(PoolError::Exhausted { .. }) => break,
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        let count = taken.len();
        for block in taken {
            // SAFETY: allocated just above from this block pool, freed once, untouched.
            let _ = unsafe { node.free_unchecked(block) };
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(count),
        }
    }

    /// The topology whose nodes this pool serves.
    pub fn topology(&self) -> Option<&Topology> {
        self.inner.as_ref().ok().map(|i| i.nodes.topology())
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Gives memory that no live value uses back to the OS; see [`BlockPool::reclaim`].
    ///
    /// A recycling pool keeps values in its free blocks, so it reclaims nothing (returning
    /// their memory would throw away values without dropping them).
    pub fn reclaim(&self) -> usize {
        match &self.inner {
            Ok(i) if i.recycle.is_none() => i.nodes.reclaim(),
            _ => 0,
        }
    }
}
