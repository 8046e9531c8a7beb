//! The acquire paths of `Pool<T>`: the fast paths of a direct pool (through the pool, or
//! through a derived type's [`CacheCell`]) and the slow path through the node pools, and
//! what they give back when `T::default()` panics.

use core::marker::PhantomData;
use core::mem::MaybeUninit;
use core::ptr::NonNull;
use std::panic::Location;
use std::thread::LocalKey;

use super::error::AcquireError;
use super::handle::Handle;
use super::pool::Pool;
use super::recycle::RecycleSlot;
use super::release::ReturnBlock;
use super::static_pool::TypeCache;
use super::Pooled;
use crate::block::facade::{CacheCell, CellPop};
use crate::error::PoolError;

impl<T: 'static> Pool<T> {
    /// Acquires a value: `T::default()`, or in a recycling pool a recycled value.
    ///
    /// # Errors
    ///
    /// [`PoolError::Exhausted`] at `max_capacity`, [`PoolError::OutOfMemory`],
    /// [`PoolError::Pressure`] when a pool configured to refuse growth under critical
    /// pressure needs a chunk, [`PoolError::LockRefused`] when a `lock` pool's new or reused
    /// chunk cannot be locked, or the error that prevented the pool's creation.
    #[inline(always)]
    #[track_caller]
    pub fn acquire(&'static self) -> Result<Handle<T>, PoolError>
    where
        T: Default,
    {
        if self.direct.is_some() {
            // Build the value before taking a block, so a panicking `default` loses nothing.
            return match self.acquire_with(T::default()) {
                Ok(handle) => Ok(handle),
                Err(e) => Err(e.error),
            };
        }
        self.acquire_indirect()
    }

    /// `acquire` for a pool that is not direct: a recycling or guarded pool, a pool with
    /// several node pools, or one whose creation failed.
    #[inline(never)]
    #[track_caller]
    fn acquire_indirect(&'static self) -> Result<Handle<T>, PoolError>
    where
        T: Default,
    {
        let recycling = match &self.inner {
            Ok(inner) => inner.recycle.is_some(),
            Err(e) => return Err(*e),
        };
        if !recycling {
            return match self.acquire_with(T::default()) {
                Ok(handle) => Ok(handle),
                Err(e) => Err(e.error),
            };
        }
        let inner = self.inner()?;
        let block = inner.nodes.allocate()?.cast::<RecycleSlot<T>>();
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
        let handle = handle.into_handle();
        if let Some(table) = self.sites.get() {
            self.acquired_recycled(table, Handle::block_of(&handle), Location::caller());
        }
        Ok(handle)
    }

    /// Returns a block taken by `acquire_via_cell` whose value was never built.
    ///
    /// # Safety
    ///
    /// `block` is an allocated block of this pool, which is direct, holding no value.
    #[cold]
    #[inline(never)]
    unsafe fn give_back(&self, block: NonNull<u8>) {
        if let Some(direct) = &self.direct {
            // SAFETY: the caller's contract: an allocated block of this direct pool, whose
            // one node pool is `direct`. An error here is a guard refusal, already counted
            // by the pool; the block is then withdrawn, as the guard intends.
            let _ = unsafe { direct.free_unchecked(block) };
        }
    }

    /// Acquires the value `make` returns. A pool made with `Pool::new` runs `make` before
    /// it takes a block, as [`Pool::acquire_with`] does; a derived type's
    /// [`Pooled::acquire_with_fn`](super::Pooled::acquire_with_fn) builds the value in the
    /// block.
    ///
    /// # Errors
    ///
    /// As [`Pool::acquire`]; the value is dropped.
    ///
    /// ```
    /// use tally_pool::{Pool, PoolConfig};
    /// let pool = Pool::<[u64; 8]>::new(PoolConfig::new("doc-with-fn"))?;
    /// let h = pool.acquire_with_fn(|| [7; 8])?;
    /// assert_eq!(h[3], 7);
    /// # Ok::<(), tally_pool::PoolError>(())
    /// ```
    #[inline(always)]
    #[track_caller]
    pub fn acquire_with_fn(
        &'static self,
        make: impl FnOnce() -> T,
    ) -> Result<Handle<T>, PoolError> {
        match self.acquire_with(make()) {
            Ok(handle) => Ok(handle),
            Err(e) => Err(e.error),
        }
    }

    /// Moves `value` into the pool.
    ///
    /// # Errors
    ///
    /// As [`Pool::acquire`], with `value` handed back in the [`AcquireError`].
    #[inline(always)]
    #[track_caller]
    pub fn acquire_with(&'static self, value: T) -> Result<Handle<T>, AcquireError<T>> {
        if let Some(direct) = &self.direct {
            if let Some(block) = direct.pop_cached() {
                let ptr = block.cast::<T>();
                // SAFETY: a fresh block of this pool is sized and aligned for `T` and ours.
                unsafe { ptr.as_ptr().write(value) };
                // SAFETY: the block holds a valid `T` and belongs to this pool.
                return Ok(unsafe { Handle::from_block(ptr) });
            }
        }
        self.acquire_with_slow(MaybeUninit::new(value))
    }

    /// `acquire_with` past the thread's cache.
    #[cold]
    #[inline(never)]
    #[track_caller]
    fn acquire_with_slow(
        &'static self,
        value: MaybeUninit<T>,
    ) -> Result<Handle<T>, AcquireError<T>> {
        // SAFETY: initialised by the caller.
        let value = unsafe { value.assume_init() };
        if let Some(table) = self.sites.get() {
            return self.acquire_with_tracked(table, value, Location::caller());
        }
        self.acquire_with_untracked(value)
    }

    /// `acquire_with` past the thread's cache, without sampling.
    #[inline(always)]
    pub(super) fn acquire_with_untracked(
        &'static self,
        value: T,
    ) -> Result<Handle<T>, AcquireError<T>> {
        let inner = match self.inner() {
            Ok(inner) => inner,
            Err(error) => return Err(AcquireError { error, value }),
        };
        let block = match inner.nodes.allocate() {
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
            let home = unsafe { inner.nodes.index_of_block(self.slot.cast()) };
            if let Some(node) = home.and_then(|h| inner.nodes.pool(h)) {
                drop(ReturnBlock {
                    block_pool: node,
                    recycling: true,
                    block: self.slot.cast::<T>(),
                    full: false,
                    drop_value: false,
                });
            }
        }
    }
}

/// The fast paths of a derived type, through its per-thread [`TypeCache`]. The type names
/// its pool and its cell (`T::pool()`, `T::thread_cache()`), so the slow paths take no
/// pointer to either: a caller's loop keeps no registers for them.
impl<T: Pooled> Pool<T> {
    /// `acquire` for a derived type, through its per-thread cache cell `key`. The first
    /// call on each thread takes [`Pool::acquire`] and binds the cell, which is then bound
    /// only for direct pools (see `Pool::direct`).
    ///
    /// Unlike [`Pool::acquire`], the fast path takes the block before it runs
    /// `T::default()` (so that the value is built in place), and gives it back if
    /// `default` panics: a `default` that itself acquires from the same pool holds one
    /// block more while it runs.
    #[inline(always)]
    #[track_caller]
    pub(super) fn acquire_via_cell(
        key: &'static LocalKey<TypeCache<T>>,
    ) -> Result<Handle<T>, PoolError>
    where
        T: Default,
    {
        let CellPop::Block(block) = CacheCell::pop(key) else {
            return Self::acquire_and_bind();
        };
        // The block goes back if `default` panics; built after the pop, the value can be
        // written straight into the block.
        let guard = GiveBack::<T> {
            block,
            _pool: PhantomData,
        };
        let value = T::default();
        core::mem::forget(guard);
        // SAFETY: the cell is bound, so the pool is direct: a fresh block of it is sized and
        // aligned for `T`, ours, and needs no recycling slot.
        Ok(unsafe { Self::fill(block, value) })
    }

    /// `acquire_with` for a derived type; see [`Pool::acquire_via_cell`].
    #[inline(always)]
    #[track_caller]
    pub(super) fn acquire_with_via_cell(
        key: &'static LocalKey<TypeCache<T>>,
        value: T,
    ) -> Result<Handle<T>, AcquireError<T>> {
        match CacheCell::pop(key) {
            // SAFETY: as in `acquire_via_cell`.
            CellPop::Block(block) => Ok(unsafe { Self::fill(block, value) }),
            CellPop::Miss | CellPop::Unbound => {
                Self::acquire_with_and_bind(MaybeUninit::new(value))
            }
        }
    }

    /// `acquire_with_fn` for a derived type: as [`Pool::acquire_via_cell`], with `make`
    /// instead of `T::default()`. On the fast path the block is taken first and the value
    /// `make` returns is written straight into it; the block goes back if `make` panics.
    #[inline(always)]
    #[track_caller]
    pub(super) fn acquire_with_fn_via_cell(
        key: &'static LocalKey<TypeCache<T>>,
        make: impl FnOnce() -> T,
    ) -> Result<Handle<T>, PoolError> {
        let CellPop::Block(block) = CacheCell::pop(key) else {
            return Self::acquire_with_fn_and_bind(make);
        };
        let guard = GiveBack::<T> {
            block,
            _pool: PhantomData,
        };
        let value = make();
        core::mem::forget(guard);
        // SAFETY: as in `acquire_via_cell`.
        Ok(unsafe { Self::fill(block, value) })
    }

    /// `acquire_via_cell` past the cell: the pool's own path, then binding the cell if it
    /// is not bound (which does nothing if the pool is not direct).
    #[cold]
    #[inline(never)]
    #[track_caller]
    fn acquire_and_bind() -> Result<Handle<T>, PoolError>
    where
        T: Default,
    {
        let p = T::pool();
        let result = p.acquire();
        p.bind_if_unbound();
        result
    }

    /// `acquire_with_via_cell` past the cell; see [`Self::acquire_and_bind`].
    #[cold]
    #[inline(never)]
    #[track_caller]
    fn acquire_with_and_bind(value: MaybeUninit<T>) -> Result<Handle<T>, AcquireError<T>> {
        // SAFETY: initialised by the caller.
        let value = unsafe { value.assume_init() };
        let p = T::pool();
        let result = p.acquire_with(value);
        p.bind_if_unbound();
        result
    }

    /// `acquire_with_fn_via_cell` past the cell; see [`Self::acquire_and_bind`].
    #[cold]
    #[inline(never)]
    #[track_caller]
    fn acquire_with_fn_and_bind(make: impl FnOnce() -> T) -> Result<Handle<T>, PoolError> {
        let p = T::pool();
        let result = p.acquire_with_fn(make);
        p.bind_if_unbound();
        result
    }

    /// Binds the calling thread's cell of `T` to its cache of this pool, if the cell is not
    /// bound yet and the pool is direct.
    fn bind_if_unbound(&self) {
        if let (Some(key), Some(direct)) = (T::thread_cache(), &self.direct) {
            key.with(|cell| {
                let cell = cell.as_ref();
                if !cell.is_bound() {
                    direct.bind_cell(cell);
                }
            });
        }
    }

    /// Writes `value` into `block` and makes it a handle.
    ///
    /// # Safety
    ///
    /// `block` is a fresh block of a direct pool of `T`, owned by the caller.
    #[inline(always)]
    unsafe fn fill(block: NonNull<u8>, value: T) -> Handle<T> {
        let ptr = block.cast::<T>();
        // SAFETY: a block of a pool of `T` is sized and aligned for `T` (caller: ours).
        unsafe { ptr.as_ptr().write(value) };
        // SAFETY: the block holds a valid `T` and belongs to a pool of `T`.
        unsafe { Handle::from_block(ptr) }
    }
}

/// Gives a block back to a direct pool if dropped, which `acquire_via_cell` lets happen only
/// when `T::default()` panics.
struct GiveBack<T: Pooled> {
    block: NonNull<u8>,
    _pool: PhantomData<fn() -> T>,
}

impl<T: Pooled> Drop for GiveBack<T> {
    fn drop(&mut self) {
        // SAFETY: `acquire_via_cell` took `block` from the direct pool `T::pool()` returns,
        // and no value was written into it.
        unsafe { T::pool().give_back(self.block) };
    }
}
