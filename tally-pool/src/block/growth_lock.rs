//! The growth lock, counted per thread: a call that needs it while its thread holds a
//! growth lock already (only a global allocator built on the pools, called from inside
//! growth, makes one) does not wait for itself.

use core::cell::Cell;
use core::ops::{Deref, DerefMut};
use std::sync::TryLockError;

use super::chunk::list::ChunkList;
use super::shared::PoolShared;
use crate::error::PoolError;
use crate::sync::{lock, MutexGuard};

#[cfg(not(loom))]
crate::sync::thread_local! {
    /// How many growth locks (of any pool) the calling thread holds.
    static GROWTH_LOCKS: Cell<u32> = const { Cell::new(0) };
}
#[cfg(loom)]
crate::sync::thread_local! {
    static GROWTH_LOCKS: Cell<u32> = Cell::new(0);
}

/// A pool's growth lock, counted in [`GROWTH_LOCKS`] while held.
pub(super) struct GrowthGuard<'a>(MutexGuard<'a, ChunkList>);

impl GrowthGuard<'_> {
    fn count(delta: i32) {
        let _ = GROWTH_LOCKS.try_with(|n| n.set(n.get().saturating_add_signed(delta)));
    }
}

impl Deref for GrowthGuard<'_> {
    type Target = ChunkList;
    fn deref(&self) -> &ChunkList {
        &self.0
    }
}

impl DerefMut for GrowthGuard<'_> {
    fn deref_mut(&mut self) -> &mut ChunkList {
        &mut self.0
    }
}

impl Drop for GrowthGuard<'_> {
    fn drop(&mut self) {
        Self::count(-1);
    }
}

impl PoolShared {
    /// The growth lock, waited for.
    pub(super) fn lock_growth(&self) -> GrowthGuard<'_> {
        let guard = lock(&self.growth);
        GrowthGuard::count(1);
        GrowthGuard(guard)
    }

    /// The growth lock for an allocation. A thread that holds a growth lock already is
    /// inside a pool's growth, and is here only because growth's bookkeeping asked a
    /// global allocator built on the pools for memory (which the module's limits forbid):
    /// it may hold this very lock, so it does not wait, and gets
    /// [`PoolError::Reentered`] if the lock is taken.
    pub(super) fn lock_growth_to_allocate(&self) -> Result<GrowthGuard<'_>, PoolError> {
        if GROWTH_LOCKS.try_with(Cell::get).unwrap_or(0) == 0 {
            return Ok(self.lock_growth());
        }
        let guard = match self.growth.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => {
                return Err(PoolError::Reentered {
                    pool: self.error_name,
                })
            }
        };
        GrowthGuard::count(1);
        Ok(GrowthGuard(guard))
    }
}
