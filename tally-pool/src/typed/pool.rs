//! `Pool<T>`: a typed pool over one block pool.

use core::alloc::Layout;
use core::fmt;
use core::marker::PhantomData;
use core::mem::MaybeUninit;
use core::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::thread::LocalKey;

use super::handle::Handle;
use super::raw::{self, Fields, RawHandle, EPOCHS, GEN_BITS, GEN_MASK, MAX_BLOCKS};

/// Where a generation word keeps its epoch: bit 0 says "out as a token", bits 1 to 24
/// hold the generation, and the six bits from here count the generation's wrap-arounds
/// modulo [`EPOCHS`].
const EPOCH_SHIFT: u32 = GEN_BITS + 1;
/// The generation word's top bit, set once its epoch has wrapped, so that tokens of every
/// epoch may have been issued.
const LAPPED: u32 = 1 << 31;

/// The epoch of a generation word.
fn epoch_of(word: u32) -> u32 {
    (word >> EPOCH_SHIFT) % EPOCHS
}
use crate::block::geometry::Geometry;
use crate::block::pool::PoolShared;
use crate::block::{
    self, BlockPool, BlockPoolConfig, BlockPoolStats, GuardLevel, Through, TypeCache, CHUNK_SIZE,
};
use crate::error::PoolError;
use crate::numa::{self, Topology};
use crate::os::{self, Region};

/// How to build a [`Pool`].
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
    /// Most values alive at once; at most 2^25 (33,554,432). Default 2^20.
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
}

/// Default `capacity` of a typed pool.
pub const DEFAULT_CAPACITY: usize = 1024;
/// Default `max_capacity` of a typed pool.
pub const DEFAULT_MAX_CAPACITY: usize = 1 << 20;
/// The largest `max_capacity` a typed pool accepts (the block field of a raw handle).
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
}

/// Types whose values a recycling pool keeps on release instead of dropping them.
///
/// `recycle` runs when a handle is dropped; the value then waits in the pool and the next
/// `acquire` returns it as it is, so a `Vec` inside keeps its capacity.
///
/// If `recycle` panics, the value is dropped as the panic left it (a `&mut` method that
/// panics leaves a valid value) and its block goes back to the pool empty: the next
/// `acquire` of that block makes a fresh value with `Default`. The panic goes on to the
/// code that dropped the handle (if the value's `Drop` panics too, the process aborts, as
/// for any value dropped while a panic unwinds).
///
/// ```
/// use tally_pool::{Pool, PoolConfig, Recycle};
///
/// #[derive(Default)]
/// struct Batch { fills: Vec<u64> }
///
/// impl Recycle for Batch {
///     fn recycle(&mut self) { self.fills.clear(); }
/// }
///
/// let pool = Pool::<Batch>::new_recycling(PoolConfig::new("batches").capacity(1)).unwrap();
/// let mut b = pool.acquire().unwrap();
/// b.fills.extend(0..100);
/// drop(b);
/// let b = pool.acquire().unwrap();
/// assert!(b.fills.is_empty() && b.fills.capacity() >= 100);
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` does not implement `Recycle`",
    note = "`#[pooled(recycle)]` keeps values on release; implement `tally_pool::Recycle` for `{Self}` to say how to reset one"
)]
pub trait Recycle {
    /// Resets the value for its next user.
    fn recycle(&mut self);
}

/// The error of an acquire that was handed a value: the value comes back with the error.
pub struct AcquireError<T> {
    /// Why the acquire failed.
    pub error: PoolError,
    /// The value that was to be pooled.
    pub value: T,
}

impl<T> fmt::Debug for AcquireError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AcquireError")
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl<T> fmt::Display for AcquireError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

impl<T> std::error::Error for AcquireError<T> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl<T> From<AcquireError<T>> for PoolError {
    fn from(e: AcquireError<T>) -> Self {
        e.error
    }
}

/// A block of a recycling pool: the value, and whether it holds one.
#[repr(C)]
struct RecycleSlot<T> {
    value: MaybeUninit<T>,
    full: bool,
}

/// Resets a recycled value in place; `ptr` is a `RecycleSlot<T>` holding a value.
type RecycleFn = unsafe fn(*mut u8);

/// # Safety
///
/// `ptr` must point to a valid, exclusively held `T`.
unsafe fn recycle_value<T: Recycle>(ptr: *mut u8) {
    // SAFETY: the caller gives a valid, exclusive `T`.
    unsafe { (*ptr.cast::<T>()).recycle() }
}

/// The pool of one NUMA node.
///
/// Invariants: `gens` holds `max_chunks * blocks_per_chunk` `AtomicU32`s (zero-filled),
/// `chunk_bases` has `max_chunks` entries, each 0 or the base of the chunk with that id.
struct NodePool {
    block: BlockPool,
    /// The node's id in the pool's topology (what chunk headers record).
    node: u32,
    blocks_per_chunk: usize,
    gens: Region,
    chunk_bases: Box<[AtomicUsize]>,
    /// Acquires this node served for a thread of another node, its own being full.
    remote_acquires: AtomicU64,
    /// Releases of this node's values by threads of another node.
    cross_node_releases: AtomicU64,
}

/// The parts of a working pool.
///
/// Invariant: `nodes` is non-empty and `nodes[i]` serves the topology's node index `i`
/// (or, with `per_node == false`, every node).
struct Inner {
    nodes: Box<[NodePool]>,
    topology: Topology,
    /// The id raw handles are bound to: the first node pool's.
    uid: u64,
    recycle: Option<RecycleFn>,
    leaked_raw: AtomicU64,
}

/// Nodes a raw handle can name (its node field has 3 bits). A machine with more nodes
/// gives pools to the first eight; threads of the others use the nearest of those.
const MAX_POOL_NODES: usize = 8;

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
pub struct Pool<T> {
    /// The block pool's shared state when the pool takes the plain fast path (no guard, no
    /// recycling), else null. Invariant: non-null only when `inner` is `Ok` and then equal
    /// to `inner.block.shared()`, which lives as long as `self` (pools are leaked).
    plain: *const PoolShared,
    name: String,
    inner: Result<Inner, PoolError>,
    _marker: PhantomData<fn() -> T>,
}

// SAFETY: `plain` is a shared pointer to the block pool's state, which is `Sync`; the rest
// is `Send + Sync` already. A pool holds no `T` except, in recycling pools (`T: Send` by
// construction), values waiting for their next handle.
unsafe impl<T> Send for Pool<T> {}
// SAFETY: as for `Send`.
unsafe impl<T> Sync for Pool<T> {}

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
            .field("nodes", &self.nodes.len())
            .field("topology", &self.topology)
            .finish_non_exhaustive()
    }
}

impl<T: 'static> Pool<T> {
    /// Creates a pool that drops values on release.
    ///
    /// # Errors
    ///
    /// [`PoolError::InvalidConfig`] for `capacity > max_capacity` or a `max_capacity` above
    /// [`MAX_CAPACITY`]; [`PoolError::OutOfMemory`] if the initial memory is refused.
    pub fn new(config: PoolConfig) -> Result<&'static Self, PoolError> {
        Self::create(config, None, false)
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
        Self::create(config, Some(recycle_value::<T>), false)
    }

    fn layout(recycling: bool) -> Layout {
        if recycling {
            Layout::new::<RecycleSlot<T>>()
        } else {
            Layout::new::<T>()
        }
    }

    /// Makes and leaks a pool. With `clamp`, a `max_capacity` just under the limit that
    /// whole chunks would overrun is lowered to fit instead of refused (static pools, whose
    /// settings were checked at compile time without knowing the chunk geometry).
    fn create(
        config: PoolConfig,
        recycle: Option<RecycleFn>,
        clamp: bool,
    ) -> Result<&'static Self, PoolError> {
        let PoolConfig {
            name,
            mut capacity,
            mut max_capacity,
            guard,
            prefault,
            per_node,
            topology,
        } = config;
        // Raw handles number blocks as `chunk id * blocks per chunk + index` in 25 bits, and
        // a pool maps whole chunks: the cap must stay within the whole chunks that fit.
        let layout = Self::layout(recycle.is_some());
        if let Ok(geometry) = Geometry::new(layout, guard) {
            let per_chunk = geometry.blocks_per_chunk;
            let most = MAX_BLOCKS / per_chunk * per_chunk;
            if max_capacity > most && max_capacity <= MAX_CAPACITY {
                if !clamp {
                    return Err(PoolError::InvalidConfig {
                        pool: name,
                        reason: format!(
                            "`max_capacity` ({max_capacity}) rounds up to whole chunks of {per_chunk} values, past what a raw handle can number; use at most {most}"
                        ),
                    });
                }
                max_capacity = most;
                capacity = capacity.min(most);
            }
        }
        if max_capacity > MAX_CAPACITY {
            return Err(PoolError::InvalidConfig {
                pool: name,
                reason: format!("`max_capacity` ({max_capacity}) is above the most a typed pool can number, {MAX_CAPACITY}"),
            });
        }
        if recycle.is_some() && guard == GuardLevel::Full {
            return Err(PoolError::InvalidConfig {
                pool: name,
                reason: "a recycling pool keeps values in free blocks, which `GuardLevel::Full` would poison; use `GuardLevel::Canary`".into(),
            });
        }
        if capacity > max_capacity {
            return Err(PoolError::InvalidConfig {
                pool: name,
                reason: format!("`capacity` ({capacity}) exceeds `max_capacity` ({max_capacity})"),
            });
        }
        let topology = topology.unwrap_or_else(|| Topology::system().clone());
        let node_ids: Vec<u32> = if per_node {
            topology
                .nodes()
                .iter()
                .take(MAX_POOL_NODES)
                .map(|n| n.id())
                .collect()
        } else {
            vec![topology.node_at(0).map_or(0, |n| n.id())]
        };
        let mut nodes = Vec::with_capacity(node_ids.len());
        for &node in &node_ids {
            nodes.push(NodePool::new(
                &name,
                layout,
                node,
                max_capacity,
                guard,
                prefault,
                &topology,
            )?);
        }
        let plain: *const PoolShared = match nodes.as_slice() {
            [only] if recycle.is_none() && guard == GuardLevel::Off => only.block.shared(),
            _ => core::ptr::null(),
        };
        let uid = nodes.first().map_or(0, |n| n.block.shared().uid);
        let inner = Inner {
            nodes: nodes.into_boxed_slice(),
            topology,
            uid,
            recycle,
            leaked_raw: AtomicU64::new(0),
        };
        let pool: &'static Self = Box::leak(Box::new(Self {
            plain,
            name,
            inner: Ok(inner),
            _marker: PhantomData,
        }));
        if let Ok(inner) = &pool.inner {
            for node in inner.nodes.iter() {
                // Chunks mapped from here on name this pool in their header, which is how
                // a handle finds its pool.
                node.block
                    .shared()
                    .set_owner(pool as *const Self as usize, !pool.plain.is_null());
                node.block.shared().reserve(capacity, prefault)?;
            }
        }
        Ok(pool)
    }

    /// A pool for a `static` (what the derive uses): creation errors are kept and returned
    /// by every acquire instead of being lost.
    pub(crate) fn create_static(config: PoolConfig, recycle: Option<RecycleFn>) -> &'static Self {
        let name = config.name.clone();
        match Self::create(config, recycle, true) {
            Ok(pool) => pool,
            Err(e) => Box::leak(Box::new(Self {
                plain: core::ptr::null(),
                name,
                inner: Err(e),
                _marker: PhantomData,
            })),
        }
    }

    fn inner(&self) -> Result<&Inner, PoolError> {
        self.inner.as_ref().map_err(Clone::clone)
    }

    /// Acquires a value: `T::default()`, or in a recycling pool a recycled value.
    ///
    /// # Errors
    ///
    /// [`PoolError::Exhausted`] at `max_capacity`, [`PoolError::OutOfMemory`], or the error
    /// that prevented the pool's creation.
    #[inline(always)]
    pub fn acquire(&'static self) -> Result<Handle<T>, PoolError>
    where
        T: Default,
    {
        let recycling = match &self.inner {
            Ok(inner) => inner.recycle.is_some(),
            Err(e) => return Err(e.clone()),
        };
        if !recycling {
            // Build the value before taking a block, so a panicking `default` loses nothing.
            return match self.acquire_with(T::default()) {
                Ok(handle) => Ok(handle),
                Err(e) => Err(e.error),
            };
        }
        let inner = self.inner()?;
        let block = self.allocate_block(inner)?.cast::<RecycleSlot<T>>();
        // The handle owns the block from here: if `default` panics below, its drop returns
        // the block (and sees `full == false`, so it drops nothing).
        let handle = FreshSlot {
            pool: self,
            slot: block,
        };
        // SAFETY: the block is allocated to us and laid out as a `RecycleSlot<T>`; a block
        // that never held a value reads `full == false` (fresh blocks are zero, and
        // release sets the flag).
        let full = unsafe { (*block.as_ptr()).full };
        if !full {
            let value = T::default();
            // SAFETY: the slot is ours and holds no value.
            unsafe { (*block.as_ptr()).value.write(value) };
            // SAFETY: as above; the value is now initialised.
            unsafe { (*block.as_ptr()).full = true };
        }
        Ok(handle.into_handle())
    }

    /// `acquire` for a derived type, through its per-thread cache cell `key`; `pool` is
    /// the type's pool. The first call on each thread takes [`Pool::acquire`] and binds the
    /// cell, which is then bound only for plain pools (no guard, no recycling, one node).
    ///
    /// Unlike [`Pool::acquire`], the fast path takes the block before it runs
    /// `T::default()` (so that the value is built in place), and gives it back if
    /// `default` panics: a `default` that itself acquires from the same pool holds one
    /// block more while it runs.
    #[inline(always)]
    pub(crate) fn acquire_through(
        key: &'static LocalKey<TypeCache>,
        pool: fn() -> &'static Self,
    ) -> Result<Handle<T>, PoolError>
    where
        T: Default,
    {
        let block = match TypeCache::pop_through(key) {
            Through::Block(block) => block,
            Through::Miss => return pool().acquire(),
            Through::Unbound => return Self::acquire_and_bind(key, pool),
        };
        // The block goes back if `default` panics; built after the pop, the value can be
        // written straight into the block.
        let guard = GiveBack { block, pool };
        let value = T::default();
        core::mem::forget(guard);
        // SAFETY: the cell is bound, so the pool is plain: a fresh block of it is sized and
        // aligned for `T`, ours, and needs no recycling slot.
        Ok(unsafe { Self::fill(block, value) })
    }

    /// `acquire_with` for a derived type; see [`Pool::acquire_through`].
    #[inline(always)]
    pub(crate) fn acquire_with_through(
        key: &'static LocalKey<TypeCache>,
        pool: fn() -> &'static Self,
        value: T,
    ) -> Result<Handle<T>, AcquireError<T>> {
        match TypeCache::pop_through(key) {
            // SAFETY: as in `acquire_through`.
            Through::Block(block) => Ok(unsafe { Self::fill(block, value) }),
            Through::Miss => pool().acquire_with(value),
            Through::Unbound => {
                let p = pool();
                let result = p.acquire_with(value);
                p.bind(key);
                result
            }
        }
    }

    /// Writes `value` into `block` and makes it a handle.
    ///
    /// # Safety
    ///
    /// `block` is a fresh block of a plain pool of `T`, owned by the caller.
    #[inline(always)]
    unsafe fn fill(block: NonNull<u8>, value: T) -> Handle<T> {
        let ptr = block.cast::<T>();
        // SAFETY: a block of a pool of `T` is sized and aligned for `T` (caller: ours).
        unsafe { ptr.as_ptr().write(value) };
        // SAFETY: the block holds a valid `T` and belongs to a pool of `T`.
        unsafe { Handle::from_block(ptr) }
    }

    #[inline(never)]
    fn acquire_and_bind(
        key: &'static LocalKey<TypeCache>,
        pool: fn() -> &'static Self,
    ) -> Result<Handle<T>, PoolError>
    where
        T: Default,
    {
        let p = pool();
        let result = p.acquire();
        p.bind(key);
        result
    }

    /// Returns a block taken by `acquire_through` whose value was never built.
    ///
    /// # Safety
    ///
    /// `block` is an allocated block of this pool, which is plain, holding no value.
    #[cold]
    #[inline(never)]
    unsafe fn give_back(&self, block: NonNull<u8>) {
        if let Ok(inner) = &self.inner {
            if let [only] = &*inner.nodes {
                // SAFETY: the caller's contract: an allocated block of this (one-node) pool.
                // An error here is a guard refusal, already counted by the pool; the block
                // is then withdrawn, as the guard intends.
                let _ = unsafe { only.block.free_unchecked(block) };
            }
        }
    }

    /// Binds the calling thread's cell `key` to its cache of this pool, if the pool is
    /// plain.
    fn bind(&self, key: &'static LocalKey<TypeCache>) {
        if self.plain.is_null() {
            return;
        }
        if let Ok(inner) = &self.inner {
            if let [only] = &*inner.nodes {
                key.with(|cell| only.block.bind_type_cache(cell));
            }
        }
    }

    /// Moves `value` into the pool.
    ///
    /// # Errors
    ///
    /// As [`Pool::acquire`], with `value` handed back in the [`AcquireError`].
    #[inline(always)]
    pub fn acquire_with(&'static self, value: T) -> Result<Handle<T>, AcquireError<T>> {
        // SAFETY: `plain` invariant: null, or the block pool's state, alive as long as the
        // (leaked) pool.
        if let Some(shared) = unsafe { self.plain.as_ref() } {
            if let Some(block) = block::fast_cache(shared).and_then(block::pop_fast) {
                let ptr = block.cast::<T>();
                // SAFETY: a fresh block of this pool is sized and aligned for `T` and ours.
                unsafe { ptr.as_ptr().write(value) };
                // SAFETY: the block holds a valid `T` and belongs to this pool.
                return Ok(unsafe { Handle::from_block(ptr) });
            }
        }
        let inner = match self.inner() {
            Ok(inner) => inner,
            Err(error) => return Err(AcquireError { error, value }),
        };
        let block = match self.allocate_block(inner) {
            Ok(block) => block,
            Err(error) => return Err(AcquireError { error, value }),
        };
        if inner.recycle.is_none() {
            let ptr = block.cast::<T>();
            // SAFETY: a fresh block of this pool is sized and aligned for `T` and ours.
            unsafe { ptr.as_ptr().write(value) };
            // SAFETY: the block holds a valid `T` and belongs to this pool.
            return Ok(unsafe { Handle::from_block(ptr) });
        }
        let slot = block.cast::<RecycleSlot<T>>();
        // SAFETY: the block is ours and laid out as a `RecycleSlot<T>`.
        let old =
            unsafe { core::mem::replace(&mut (*slot.as_ptr()).value, MaybeUninit::new(value)) };
        // SAFETY: as above.
        let was_full = core::mem::replace(unsafe { &mut (*slot.as_ptr()).full }, true);
        // SAFETY: the slot now holds `value`; the handle owns it from here.
        let handle = unsafe { Handle::from_block(slot.cast::<T>()) };
        if was_full {
            // SAFETY: `full` said the old value was initialised; it was moved out above.
            drop(unsafe { old.assume_init() });
        }
        Ok(handle)
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
    /// # Errors
    ///
    /// [`PoolError::StaleHandle`] if the token was redeemed already,
    /// [`PoolError::InvalidHandle`] if this pool never issued it,
    /// [`PoolError::WrongPool`] if another pool did.
    pub fn redeem(&'static self, raw: RawHandle<T>) -> Result<Handle<T>, PoolError>
    where
        T: Send,
    {
        let inner = self.inner()?;
        let invalid = || PoolError::InvalidHandle {
            pool: self.name.clone(),
        };
        let Some(token) = raw::unpack(inner.uid, raw.to_bits()) else {
            return Err(PoolError::WrongPool {
                pool: self.name.clone(),
            });
        };
        let f = token.fields;
        let node = inner.nodes.get(f.node as usize).ok_or_else(invalid)?;
        let block = f.block as usize;
        let (chunk, index) = (block / node.blocks_per_chunk, block % node.blocks_per_chunk);
        let base = node
            .chunk_bases
            .get(chunk)
            .map_or(0, |b| b.load(Ordering::Acquire));
        if base == 0 {
            return Err(invalid());
        }
        let word = node.gen_word(block).ok_or_else(invalid)?;
        let mut now = word.load(Ordering::Acquire);
        loop {
            let (epoch, lapped) = (epoch_of(now), now & LAPPED);
            if now != (lapped | epoch << EPOCH_SHIFT | f.generation << 1 | 1)
                || token.epoch(inner.uid) != epoch
            {
                return Err(self.refusal(now, &token, inner.uid));
            }
            let next = (f.generation + 1) & GEN_MASK;
            let new = match (next, epoch + 1) {
                (0, EPOCHS) => LAPPED,
                (0, epoch) => lapped | epoch << EPOCH_SHIFT,
                (next, _) => lapped | epoch << EPOCH_SHIFT | next << 1,
            };
            match word.compare_exchange(now, new, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break,
                Err(seen) => now = seen,
            }
        }
        inner.leaked_raw.fetch_sub(1, Ordering::Relaxed);
        let addr = node.block.shared().geometry.block_addr(base, index);
        let ptr = NonNull::new(addr as *mut T).ok_or_else(invalid)?;
        // SAFETY: the generation word said this block was lent out as this very token and
        // the CAS took it back exactly once: the block holds the valid `T` that `into_raw`
        // left there, and no handle to it exists.
        Ok(unsafe { Handle::from_block(ptr) })
    }

    /// Why a token is refused by a generation word `word` that is not "out at the
    /// token's generation and epoch".
    #[cold]
    fn refusal(&self, word: u32, token: &raw::Token, uid: u64) -> PoolError {
        let (generation, epoch) = ((word >> 1) & GEN_MASK, epoch_of(word));
        // A redeem always moves the block past the token's generation, so a token that was
        // redeemed is behind the block; one at or ahead of it was never issued. Every
        // token of an earlier epoch was issued (each epoch runs through every generation),
        // and so was every token of a later one once the epoch has lapped.
        let token_epoch = token.epoch(uid);
        let stale = match token_epoch.cmp(&epoch) {
            core::cmp::Ordering::Equal => token.fields.generation < generation,
            core::cmp::Ordering::Less => true,
            core::cmp::Ordering::Greater => word & LAPPED != 0,
        };
        if stale {
            PoolError::StaleHandle {
                pool: self.name.clone(),
            }
        } else {
            PoolError::InvalidHandle {
                pool: self.name.clone(),
            }
        }
    }

    /// How many values are out as raw handles and not yet redeemed.
    pub fn leaked_raw(&self) -> u64 {
        self.inner
            .as_ref()
            .map_or(0, |i| i.leaked_raw.load(Ordering::Relaxed))
    }

    /// The pool's counters, summed over its nodes.
    pub fn stats(&self) -> BlockPoolStats {
        let mut total = BlockPoolStats::default();
        if let Ok(inner) = &self.inner {
            for node in inner.nodes.iter() {
                total.add(&node.block.stats());
            }
        }
        total
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
            .iter()
            .map(|n| {
                let blocks = n.block.stats();
                let remote = n.remote_acquires.load(Ordering::Relaxed);
                NodeStats {
                    node: n.node,
                    local_acquires: blocks.allocations.saturating_sub(remote),
                    remote_acquires: remote,
                    cross_node_releases: n.cross_node_releases.load(Ordering::Relaxed),
                    bytes: blocks.bytes_mapped,
                    blocks,
                }
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
    /// (see [`numa::Placement`]), after the thread has been pinned to its node.
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
        let Some(node) = inner.nodes.get(inner.thread_node()) else {
            return Ok(0);
        };
        let want = (node.block.shared().cache_limit / 2).max(1);
        let mut taken = Vec::with_capacity(want);
        let mut failure = None;
        for _ in 0..want {
            match node.block.allocate() {
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
            let _ = unsafe { node.block.free_unchecked(block) };
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(count),
        }
    }

    /// The topology whose nodes this pool serves.
    pub fn topology(&self) -> Option<&Topology> {
        self.inner.as_ref().ok().map(|i| &i.topology)
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
            Ok(i) if i.recycle.is_none() => i.nodes.iter().map(|n| n.block.reclaim()).sum(),
            _ => 0,
        }
    }

    /// The pool that owns the block `ptr` points into.
    ///
    /// # Safety
    ///
    /// `ptr` must be a live value handed out by a `Pool<T>` (a handle's pointer).
    #[inline(always)]
    pub(crate) unsafe fn owning(ptr: NonNull<T>) -> &'static Self {
        let base = ptr.as_ptr() as usize & !(CHUNK_SIZE - 1);
        // SAFETY: a live value sits in a chunk of its pool; the chunk stays mapped (pools
        // are never dropped) and starts with a header whose `owner` is the `Pool<T>` that
        // was leaked, and so lives forever, before the chunk was mapped.
        let owner = unsafe { (*(base as *const crate::block::geometry::ChunkHeader)).owner };
        // SAFETY: see above: `owner` is the address of a `&'static Pool<T>`.
        unsafe { &*(owner as usize as *const Self) }
    }

    /// Drops (or recycles) the value at `ptr` and returns its block.
    ///
    /// # Safety
    ///
    /// `ptr` must be a live value of this pool that no handle owns any more.
    #[inline(always)]
    pub(crate) unsafe fn release(&self, ptr: NonNull<T>) {
        if !core::mem::needs_drop::<T>() {
            // SAFETY: `plain` invariant: null, or the block pool's state, alive as long as
            // the (leaked) pool.
            if let Some(cache) = unsafe { self.plain.as_ref() }.and_then(block::fast_cache) {
                if block::push_fast(cache, ptr.as_ptr().cast()) {
                    return;
                }
            }
        }
        // SAFETY: the caller's contract, passed on.
        unsafe { self.release_slow(ptr) }
    }

    /// `release` for values with a `Drop`, guarded or recycling pools, and full caches.
    ///
    /// # Safety
    ///
    /// As for `release`.
    #[inline(never)]
    unsafe fn release_slow(&self, ptr: NonNull<T>) {
        let Ok(inner) = &self.inner else { return };
        // SAFETY: `ptr` is a live value of this pool (caller).
        let Some(home) = (unsafe { inner.home_of(ptr.cast()) }) else {
            return;
        };
        if inner.nodes.len() > 1 && inner.thread_node() != home {
            if let Some(node) = inner.nodes.get(home) {
                node.cross_node_releases.fetch_add(1, Ordering::Relaxed);
            }
        }
        let Some(node) = inner.nodes.get(home) else {
            return;
        };
        // Returns the block to its home node even if the value's `Drop` or `recycle`
        // panics.
        let guard = ReturnBlock {
            block_pool: &node.block,
            recycling: inner.recycle.is_some(),
            block: ptr,
            full: false,
            drop_value: false,
        };
        match inner.recycle {
            None => {
                // SAFETY: the caller hands over a valid `T` that nothing else owns.
                unsafe { core::ptr::drop_in_place(ptr.as_ptr()) };
                drop(guard);
            }
            Some(recycle) => {
                // If `recycle` unwinds, the guard drops the value and returns the block
                // empty.
                let mut guard = guard;
                guard.drop_value = true;
                // SAFETY: as above; `recycle` is `recycle_value::<T>`.
                unsafe { recycle(ptr.as_ptr().cast()) };
                guard.drop_value = false;
                guard.full = true;
                drop(guard);
            }
        }
    }

    /// Lends the value out as a token; the counterpart of [`Self::redeem`].
    ///
    /// # Safety
    ///
    /// `ptr` must be a live value of this pool that no handle owns any more.
    pub(crate) unsafe fn lend(&self, ptr: NonNull<T>) -> RawHandle<T> {
        let Ok(inner) = &self.inner else {
            return RawHandle::from_bits(0);
        };
        let addr = ptr.as_ptr() as usize;
        let base = addr & !(CHUNK_SIZE - 1);
        // SAFETY: `ptr` is a live value of this pool (caller).
        let home = unsafe { inner.home_of(ptr.cast()) };
        let Some((home, node)) = home.and_then(|h| Some((h, inner.nodes.get(h)?))) else {
            return RawHandle::from_bits(0);
        };
        // SAFETY: `ptr` is a live block of this node's pool (caller, and `home_of`).
        let chunk = unsafe { node.block.shared().header_of(addr) }.chunk_id as usize;
        let index = node
            .block
            .shared()
            .geometry
            .index_of(addr)
            .unwrap_or(usize::MAX);
        let block = chunk
            .saturating_mul(node.blocks_per_chunk)
            .saturating_add(index);
        let (Some(bases), Some(word)) = (node.chunk_bases.get(chunk), node.gen_word(block)) else {
            // Cannot happen: chunk ids stay below `max_chunks` (see `create`). The value is
            // leaked rather than lent under a token that would not redeem.
            return RawHandle::from_bits(0);
        };
        bases.store(base, Ordering::Release);
        // The block is live and ours, so no redeem can change its word meanwhile (one
        // needs the word to say "out").
        let now = word.load(Ordering::Relaxed);
        word.store(now | 1, Ordering::Release);
        inner.leaked_raw.fetch_add(1, Ordering::Relaxed);
        let fields = Fields {
            block: block as u32,
            generation: (now >> 1) & GEN_MASK,
            node: home as u32,
        };
        RawHandle::from_bits(raw::pack(inner.uid, fields, epoch_of(now)))
    }
}

impl NodePool {
    fn new(
        name: &str,
        layout: Layout,
        node: u32,
        max_capacity: usize,
        guard: GuardLevel,
        prefault: bool,
        topology: &Topology,
    ) -> Result<Self, PoolError> {
        let block = BlockPool::new(
            BlockPoolConfig::new(layout)
                .name(name)
                .capacity(0)
                .max_capacity(max_capacity)
                .guard(guard)
                .node(node)
                .topology(topology.clone())
                .prefault(prefault),
        )?;
        let blocks_per_chunk = block.shared().geometry.blocks_per_chunk;
        let max_chunks = max_capacity.div_ceil(blocks_per_chunk);
        let words = max_chunks * blocks_per_chunk;
        let gens = os::map(words * core::mem::size_of::<AtomicU32>()).map_err(|e| {
            PoolError::OutOfMemory {
                pool: name.to_string(),
                bytes: words * core::mem::size_of::<AtomicU32>(),
                errno: e.errno,
            }
        })?;
        Ok(Self {
            block,
            node,
            blocks_per_chunk,
            gens,
            chunk_bases: (0..max_chunks).map(|_| AtomicUsize::new(0)).collect(),
            remote_acquires: AtomicU64::new(0),
            cross_node_releases: AtomicU64::new(0),
        })
    }

    fn gen_word(&self, block: usize) -> Option<&AtomicU32> {
        let len = self.chunk_bases.len() * self.blocks_per_chunk;
        (block < len).then(|| {
            // SAFETY: `gens` holds `len` zero-initialised AtomicU32s (type invariant) for
            // as long as `self` lives, and `block < len`.
            unsafe {
                &*self
                    .gens
                    .ptr()
                    .as_ptr()
                    .cast::<AtomicU32>()
                    .wrapping_add(block)
            }
        })
    }
}

impl Inner {
    /// The index of the node pool that serves the calling thread.
    #[inline]
    fn thread_node(&self) -> usize {
        if self.nodes.len() == 1 {
            return 0;
        }
        let index = numa::current_node_index(&self.topology);
        if index < self.nodes.len() {
            return index;
        }
        // A node beyond the ones with pools: the nearest one that has a pool.
        self.topology
            .nearest_indices(index)
            .iter()
            .copied()
            .find(|&i| i < self.nodes.len())
            .unwrap_or(0)
    }

    /// The index of the node pool a live block belongs to.
    ///
    /// # Safety
    ///
    /// `block` must be a live block of one of this pool's node pools.
    #[inline]
    unsafe fn home_of(&self, block: NonNull<u8>) -> Option<usize> {
        if self.nodes.len() == 1 {
            return Some(0);
        }
        let first = self.nodes.first()?;
        // SAFETY: the caller says `block` is a live block of this pool, so its chunk is
        // mapped and starts with a header (every node pool's chunks have one).
        let node = unsafe { first.block.shared().header_of(block.as_ptr() as usize) }.node;
        self.nodes.iter().position(|n| n.node == node)
    }
}

impl<T: 'static> Pool<T> {
    /// Takes a block from the calling thread's node, or from the nearest node with room.
    fn allocate_block(&self, inner: &Inner) -> Result<NonNull<u8>, PoolError> {
        let home = inner.thread_node();
        let Some(node) = inner.nodes.get(home) else {
            return Err(PoolError::InvalidConfig {
                pool: self.name.clone(),
                reason: "no node pool".into(),
            });
        };
        match node.block.allocate() {
            Err(PoolError::Exhausted { .. }) if inner.nodes.len() > 1 => {}
            other => return other,
        }
        for &i in inner.topology.nearest_indices(home).iter().skip(1) {
            if let Some(other) = inner.nodes.get(i) {
                if let Ok(block) = other.block.allocate() {
                    other.remote_acquires.fetch_add(1, Ordering::Relaxed);
                    return Ok(block);
                }
            }
        }
        let cap = inner
            .nodes
            .iter()
            .map(|n| n.block.shared().max_capacity())
            .fold(0, usize::saturating_add);
        Err(PoolError::Exhausted {
            pool: self.name.clone(),
            max_capacity: cap,
        })
    }
}

/// Frees a block when dropped, also during unwinding.
struct ReturnBlock<'a, T> {
    block_pool: &'a BlockPool,
    recycling: bool,
    block: NonNull<T>,
    /// For recycling pools: whether the block still holds a value.
    full: bool,
    /// Whether the block holds a valid value that nothing else owns, which the guard drops
    /// before returning the block (a recycling pool whose `recycle` panicked).
    drop_value: bool,
}

impl<T> Drop for ReturnBlock<'_, T> {
    fn drop(&mut self) {
        if self.drop_value {
            // SAFETY: field invariant: a valid value that only this guard drops.
            unsafe { core::ptr::drop_in_place(self.block.as_ptr()) };
        }
        if self.recycling {
            let slot = self.block.cast::<RecycleSlot<T>>().as_ptr();
            // SAFETY: in a recycling pool every block is a `RecycleSlot<T>` that this
            // guard holds exclusively until it frees it below.
            unsafe { (*slot).full = self.full };
        }
        // SAFETY: the block was allocated from this block pool and is released exactly
        // once, here. An error (a guard's finding) is counted in the pool's stats; the
        // block is then withdrawn, which is all a destructor can do.
        let _ = unsafe { self.block_pool.free_unchecked(self.block.cast()) };
    }
}

/// A recycling pool's block between allocation and the handle taking it over.
struct FreshSlot<T: 'static> {
    pool: &'static Pool<T>,
    slot: NonNull<RecycleSlot<T>>,
}

impl<T: 'static> FreshSlot<T> {
    fn into_handle(self) -> Handle<T> {
        let ptr = self.slot.cast::<T>();
        core::mem::forget(self);
        // SAFETY: the slot holds an initialised value (`full`), and the block is ours.
        unsafe { Handle::from_block(ptr) }
    }
}

impl<T: 'static> Drop for FreshSlot<T> {
    fn drop(&mut self) {
        // Reached only when `T::default()` panicked: the slot holds no value.
        if let Ok(inner) = &self.pool.inner {
            // SAFETY: the slot is a live block of this pool, allocated in `acquire`.
            let home = unsafe { inner.home_of(self.slot.cast()) };
            if let Some(node) = home.and_then(|h| inner.nodes.get(h)) {
                drop(ReturnBlock {
                    block_pool: &node.block,
                    recycling: true,
                    block: self.slot.cast::<T>(),
                    full: false,
                    drop_value: false,
                });
            }
        }
    }
}

/// Gives a block back to a plain pool if dropped, which `acquire_through` lets happen only
/// when `T::default()` panics.
struct GiveBack<T: 'static> {
    block: NonNull<u8>,
    pool: fn() -> &'static Pool<T>,
}

impl<T: 'static> Drop for GiveBack<T> {
    fn drop(&mut self) {
        // SAFETY: `acquire_through` took `block` from the plain pool `pool` returns, and no
        // value was written into it.
        unsafe { (self.pool)().give_back(self.block) };
    }
}

/// A `static` home for a derived type's pool, created on first use.
///
/// Used by the code `#[derive(Pooled)]` generates; not part of the stable API. Whether
/// the pool recycles is chosen by the constructor, and [`StaticPool::new_recycling`]
/// requires `T: Recycle + Send`, so no caller can pair a pool with another type's reset
/// function.
#[derive(Debug)]
pub struct StaticPool<T: 'static> {
    cell: OnceLock<&'static Pool<T>>,
    config: StaticConfig,
    /// `recycle_value::<T>` for a recycling pool, else `None`.
    recycle: Option<RecycleFn>,
}

/// The `#[pooled(...)]` settings of a derived type (what `recycle` says is the choice of
/// [`StaticPool`] constructor).
#[derive(Debug, Clone, Copy)]
pub struct StaticConfig {
    /// `name`, default the type's name.
    pub name: &'static str,
    /// `capacity`.
    pub capacity: usize,
    /// `max_capacity`.
    pub max_capacity: usize,
    /// `guard`.
    pub guard: GuardLevel,
    /// `per_node`.
    pub per_node: bool,
}

impl<T: 'static> StaticPool<T> {
    /// A pool to be created on first use with `config`, dropping values on release.
    pub const fn new(config: StaticConfig) -> Self {
        Self {
            cell: OnceLock::new(),
            config,
            recycle: None,
        }
    }

    /// A pool to be created on first use with `config`, keeping values on release and
    /// resetting them with [`Recycle::recycle`] (`#[pooled(recycle)]`).
    pub const fn new_recycling(config: StaticConfig) -> Self
    where
        T: Recycle + Send,
    {
        Self {
            cell: OnceLock::new(),
            config,
            recycle: Some(recycle_value::<T>),
        }
    }

    /// The pool, created on first call.
    #[inline(always)]
    pub fn get(&'static self) -> &'static Pool<T> {
        self.cell.get_or_init(|| {
            let c = self.config;
            let config = PoolConfig::new(c.name)
                .capacity(c.capacity)
                .max_capacity(c.max_capacity)
                .guard(c.guard)
                .per_node(c.per_node);
            Pool::create_static(config, self.recycle)
        })
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// The generation word of the block a token names, in a one-node pool.
    fn word_of(pool: &'static Pool<u64>, raw: RawHandle<u64>) -> &'static AtomicU32 {
        let inner = pool.inner.as_ref().unwrap();
        let token = raw::unpack(inner.uid, raw.to_bits()).unwrap();
        inner.nodes[0]
            .gen_word(token.fields.block as usize)
            .unwrap()
    }

    fn stale(r: Result<Handle<u64>, PoolError>) -> bool {
        matches!(r, Err(PoolError::StaleHandle { .. }))
    }

    #[test]
    fn the_last_generation_of_an_epoch_moves_to_the_next_epoch() {
        let pool = Pool::<u64>::new(PoolConfig::new("gen-epoch").per_node(false)).unwrap();
        let first = Handle::into_raw(pool.acquire_with(1).unwrap());
        let word = word_of(pool, first);
        let h = pool.redeem(first).unwrap();
        // As if the block had been lent until the last generation of epoch 5.
        word.store(5 << EPOCH_SHIFT | GEN_MASK << 1, Ordering::Relaxed);
        let last = Handle::into_raw(h);
        let h = pool.redeem(last).unwrap();
        assert_eq!(word.load(Ordering::Relaxed), 6 << EPOCH_SHIFT);
        let now = Handle::into_raw(h);
        // `first` has the generation bits of `now`, but was made in epoch 0.
        assert_ne!(first, now);
        assert!(stale(pool.redeem(first)) && stale(pool.redeem(last)));
        assert_eq!(*pool.redeem(now).unwrap(), 1);
    }

    #[test]
    fn a_lapped_epoch_keeps_telling_old_tokens_stale() {
        let pool = Pool::<u64>::new(PoolConfig::new("gen-lap").per_node(false)).unwrap();
        let first = Handle::into_raw(pool.acquire_with(2).unwrap());
        let word = word_of(pool, first);
        let h = pool.redeem(first).unwrap();
        // The last generation of the last epoch: the next redeem laps the epoch.
        word.store(
            (EPOCHS - 1) << EPOCH_SHIFT | GEN_MASK << 1,
            Ordering::Relaxed,
        );
        let last = Handle::into_raw(h);
        let h = pool.redeem(last).unwrap();
        assert_eq!(word.load(Ordering::Relaxed), LAPPED);
        let h = pool.redeem(Handle::into_raw(h)).unwrap();
        let now = Handle::into_raw(h);
        // Epoch 63 is ahead of epoch 0 but was lived through: stale, not never issued.
        assert!(stale(pool.redeem(last)));
        // `first` is generation 0 of epoch 0, long redeemed: stale too.
        assert!(stale(pool.redeem(first)));
        assert_eq!(*pool.redeem(now).unwrap(), 2);
    }

    #[test]
    fn before_a_lap_a_later_epoch_was_never_issued() {
        let pool = Pool::<u64>::new(PoolConfig::new("gen-ahead").per_node(false)).unwrap();
        let raw = Handle::into_raw(pool.acquire_with(3).unwrap());
        // The same fields sealed in epoch 1, which the block has not reached.
        let inner = pool.inner.as_ref().unwrap();
        let f = raw::unpack(inner.uid, raw.to_bits()).unwrap().fields;
        let ahead = RawHandle::from_bits(raw::pack(inner.uid, f, 1));
        assert!(matches!(
            pool.redeem(ahead),
            Err(PoolError::InvalidHandle { .. })
        ));
        assert_eq!(*pool.redeem(raw).unwrap(), 3);
    }
}
