//! [`StaticPool`]: the `static` home of a derived type's pool, created on first use, and
//! the `#[pooled(...)]` settings it is created with.

use core::marker::PhantomData;
use std::sync::OnceLock;

use super::config::PoolConfig;
use super::pool::Pool;
use super::recycle::{recycle_value, Recycle, RecycleFn};
use crate::block::facade::OnCritical;
use crate::block::facade::{CacheCell, GuardLevel};

/// A derived type's per-thread cell (the derive declares one `thread_local!` per type, and
/// [`Pooled::thread_cache`](super::Pooled) returns it), bound on each thread to the
/// thread's cache of the type's pool, so that `acquire` is one thread-local load and a
/// pop.
///
/// The cell is typed so that no two types can share one: `thread_cache` must return a
/// `TypeCache<Self>`, and only `Self`'s acquires pop from it, so the blocks a cell hands out
/// are always those of a pool of `Self`, sized and aligned for it. Used by the code
/// `#[derive(Pooled)]` generates; not part of the stable API.
#[derive(Debug)]
pub struct TypeCache<T> {
    cell: CacheCell,
    _type: PhantomData<fn() -> T>,
}

impl<T> TypeCache<T> {
    /// An unbound cell: the first slow path on each thread binds it.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            cell: CacheCell::new(),
            _type: PhantomData,
        }
    }
}

impl<T> Default for TypeCache<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> AsRef<CacheCell> for TypeCache<T> {
    fn as_ref(&self) -> &CacheCell {
        &self.cell
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
    /// `track_sites` (0: off).
    pub track_sites: u32,
    /// `reserve` (`None`: the capacity).
    pub reserve: Option<usize>,
    /// `on_critical`.
    pub on_critical: OnCritical,
    /// `huge_pages`.
    pub huge_pages: bool,
    /// `lock`.
    pub lock: bool,
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
            let mut config = PoolConfig::new(c.name)
                .capacity(c.capacity)
                .max_capacity(c.max_capacity)
                .guard(c.guard)
                .per_node(c.per_node)
                .on_critical(c.on_critical)
                .huge_pages(c.huge_pages)
                .lock(c.lock);
            if let Some(reserve) = c.reserve {
                config = config.reserve(reserve);
            }
            let pool = Pool::create_static(config, self.recycle);
            if c.track_sites > 0 {
                pool.track_sites(c.track_sites);
            }
            pool
        })
    }
}

/// [`StaticPool::new_recycling`], as the derive calls it: a free function whose type
/// parameter carries the bound, so that a type that is not `Recycle + Send` is reported at
/// the type argument, which the derive spans at the `recycle` key.
pub const fn recycling_static_pool<T: Recycle + Send>(config: StaticConfig) -> StaticPool<T> {
    StaticPool::new_recycling(config)
}
