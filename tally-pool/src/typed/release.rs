//! The release paths of `Pool<T>`: how a dropped handle's value goes back, from any thread:
//! straight onto the thread's cache for a direct pool, else dropped or recycled and
//! returned to its home node, even when its `Drop` or `recycle` panics.

use core::ptr::NonNull;
use std::panic::{catch_unwind, AssertUnwindSafe};

use super::pool::Pool;
use super::recycle::RecycleSlot;
use crate::block::facade::{self, BlockPool};
use crate::error::PoolError;
use crate::stats::registry::drop_payload;

impl<T: 'static> Pool<T> {
    /// The pool that owns the block `ptr` points into.
    ///
    /// # Safety
    ///
    /// `ptr` must be a live value handed out by a `Pool<T>` (a handle's pointer).
    #[inline(always)]
    pub(super) unsafe fn owning(ptr: NonNull<T>) -> &'static Self {
        // SAFETY: a live value sits in a block its pool handed out; a pool that has handed
        // out a value is never dropped (only a pool whose creation failed is freed, before
        // it handed out anything), so neither are its node pools.
        let owner = unsafe { facade::chunk_owner(ptr.cast()) };
        // SAFETY: every chunk of a typed pool's node pools was mapped after `create` set
        // their owner word to the address of the `Pool<T>` it had leaked, which lives
        // forever once its creation succeeded (and a value exists only then).
        unsafe { &*(owner as *const Self) }
    }

    /// A dropped handle's release past the header's fast path: the free through the
    /// header for a block of another pool than the thread's last such free, else finds
    /// the owning pool and releases there; out of line so that the handle's drop stays
    /// small.
    ///
    /// # Safety
    ///
    /// `ptr` must be a live value handed out by a `Pool<T>` that no handle owns any more.
    #[inline(never)]
    pub(super) unsafe fn release_owned(ptr: NonNull<T>) {
        // SAFETY: the caller's contract: a live value in a block of a typed pool, whose
        // node pools are never dropped, that nothing owns any more; given back as it is,
        // since `T` needs no drop. Only a direct pool lets this free through.
        if !core::mem::needs_drop::<T>() && unsafe { facade::free_via_header_lookup(ptr.cast()) } {
            return;
        }
        // SAFETY: the caller's contract.
        let pool = unsafe { Self::owning(ptr) };
        // SAFETY: the caller's contract: a live value of `pool` that nothing owns any more.
        unsafe { pool.release(ptr) };
    }

    /// Drops (or recycles) the value at `ptr` and returns its block.
    ///
    /// # Safety
    ///
    /// `ptr` must be a live value of this pool that no handle owns any more.
    #[inline(always)]
    pub(super) unsafe fn release(&self, ptr: NonNull<T>) {
        if !core::mem::needs_drop::<T>() {
            if let Some(direct) = &self.direct {
                // SAFETY: `ptr` is a live value of this pool (caller), so an allocated block
                // of `direct`, its one node pool; nothing owns it any more and `T` needs no
                // drop, so the block goes back as it is.
                if unsafe { direct.push_cached(ptr.cast()) } {
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
        // SAFETY: `ptr` is a live value of this pool (caller), so a live block of one of its
        // node pools.
        let Some(home) = (unsafe { inner.nodes.index_of_block(ptr.cast()) }) else {
            return;
        };
        inner.nodes.count_free_from(home);
        self.released_site(ptr);
        let Some(node) = inner.nodes.pool(home) else {
            return;
        };
        // Returns the block to its home node even if the value's `Drop` or `recycle`
        // panics.
        let guard = ReturnBlock {
            block_pool: node,
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
                let value = ptr.as_ptr().cast::<u8>();
                if core::mem::needs_drop::<T>() {
                    // SAFETY: as above; `recycle` is `recycle_value::<T>`.
                    unsafe { recycle(value) };
                } else {
                    // A handle of a `T` without drop glue releases through a function that
                    // cannot unwind (`handle::release_without_drop_glue`): the panic stops
                    // here, after the panic hook reported it, and the guard returns the
                    // block empty as it would while unwinding. The payload goes first: the
                    // guard's free may run a `tracing` subscriber, whose panic must not
                    // unwind past a live payload (whose drop could panic again, which
                    // aborts).
                    // SAFETY: as above; `recycle` is `recycle_value::<T>`.
                    let recycled = catch_unwind(AssertUnwindSafe(|| unsafe { recycle(value) }));
                    if let Err(payload) = recycled {
                        drop_payload(payload);
                        drop(guard);
                        return;
                    }
                }
                guard.drop_value = false;
                guard.full = true;
                drop(guard);
            }
        }
    }
}

/// Frees a block when dropped, also during unwinding.
pub(super) struct ReturnBlock<'a, T> {
    pub(super) block_pool: &'a BlockPool,
    pub(super) recycling: bool,
    pub(super) block: NonNull<T>,
    /// For recycling pools: whether the block still holds a value.
    pub(super) full: bool,
    /// Whether the block holds a valid value that nothing else owns, which the guard drops
    /// before returning the block (a recycling pool whose `recycle` panicked).
    pub(super) drop_value: bool,
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
        // once, here. A guard's finding is counted in the pool's stats; the block is then
        // withdrawn, which is all a destructor can do.
        let freed = unsafe { self.block_pool.free_unchecked(self.block.cast()) };
        // A refusal of the depot's memory reaches only a pool whose free blocks can carry
        // no overflow link (`block/overflow.rs`): an unguarded recycling pool. The block
        // stays out of circulation, and ours (`free_unchecked`); its recycled value is
        // dropped so that what it owns is not leaked with it.
        if let Err(PoolError::OutOfMemory { .. }) = freed {
            if self.recycling && self.full {
                // SAFETY: `full`: the block holds a valid value (`recycle` returned) at its
                // start (`RecycleSlot<T>` is `repr(C)`, value first) that nothing else owns: the
                // free failed, so the block is still this guard's alone; nothing reads it again.
                unsafe { core::ptr::drop_in_place(self.block.as_ptr()) };
            }
        }
    }
}

#[cfg(all(test, feature = "tracing", not(loom)))]
mod tests {
    use std::panic::{catch_unwind, AssertUnwindSafe};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Level, Metadata, Subscriber};

    use crate::{GuardLevel, Pool, PoolConfig, Recycle};

    /// Counts error events, and panics on each.
    struct PanicsOnErrors(Arc<AtomicUsize>);

    impl Subscriber for PanicsOnErrors {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &Attributes<'_>) -> Id {
            Id::from_u64(1)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, event: &Event<'_>) {
            if *event.metadata().level() == Level::ERROR {
                self.0.fetch_add(1, Ordering::SeqCst);
                panic!("expected: a subscriber that panics on errors");
            }
        }
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }

    /// Damages the canary after `h`'s value, as an overrun would, and drops `h` under a
    /// subscriber that panics on every error event: whether the drop returned, and how
    /// many error events the subscriber saw.
    fn drop_damaged<T: 'static>(pool: &Pool<T>, mut h: crate::Handle<T>) -> (bool, usize) {
        let block = core::ptr::NonNull::from(&mut *h).cast::<u8>();
        let node = pool.inner.as_ref().unwrap().nodes.pool(0).unwrap();
        node.canary_of(block).unwrap().store(0, Ordering::Relaxed);
        let errors = Arc::new(AtomicUsize::new(0));
        let subscriber = PanicsOnErrors(Arc::clone(&errors));
        let dropped = tracing::subscriber::with_default(subscriber, || {
            catch_unwind(AssertUnwindSafe(|| drop(h)))
        });
        (dropped.is_ok(), errors.load(Ordering::SeqCst))
    }

    /// A handle of a type without drop glue cannot unwind from its drop: a subscriber that
    /// panics while it reports the damage a guard found in the block stops there (before,
    /// the panic reached a function that cannot unwind, and the process aborted), and the
    /// damaged block stays withdrawn.
    #[test]
    fn a_subscriber_panicking_in_the_drop_of_a_handle_without_drop_glue_stops_there() {
        let config = PoolConfig::new("release-subscriber-panics")
            .guard(GuardLevel::Canary)
            .capacity(2)
            .max_capacity(2);
        let pool = Pool::<u64>::new(config).unwrap();
        let h = pool.acquire_with(5).unwrap();
        let (returned, errors) = drop_damaged(pool, h);
        assert!(
            returned,
            "the panic reached the code that dropped the handle"
        );
        assert_eq!(errors, 1, "one event, for the damage");
        let stats = pool.stats();
        assert_eq!(stats.corruption_events, 1);
        // The guard refused the free: the block is out of circulation, never freed, so it
        // stays counted as live, as any refused free leaves it; one of the two blocks is
        // left to hand out.
        assert_eq!(stats.live_blocks, 1);
        let a = pool.acquire().unwrap();
        assert!(
            pool.acquire().is_err(),
            "the withdrawn block was handed out"
        );
        drop(a);
    }

    /// A panic payload whose drop panics as well.
    struct Bomb;

    impl Drop for Bomb {
        fn drop(&mut self) {
            panic!("expected: a payload whose drop panics");
        }
    }

    /// Recycled by a panic whose payload is a [`Bomb`]; no drop glue.
    #[derive(Default)]
    struct Jams(u64);

    impl Recycle for Jams {
        fn recycle(&mut self) {
            std::panic::panic_any(Bomb);
        }
    }

    /// The same with a `recycle` that panics first, with a payload whose drop panics: the
    /// payload is gone before the guard's free runs the subscriber, whose panic then does
    /// not unwind past it (which aborted).
    #[test]
    fn a_subscriber_panicking_after_a_panicking_recycle_stops_there_too() {
        assert!(!core::mem::needs_drop::<Jams>());
        let config = PoolConfig::new("release-recycle-subscriber-panics")
            .guard(GuardLevel::Canary)
            .capacity(2)
            .max_capacity(2);
        let pool = Pool::<Jams>::new_recycling(config).unwrap();
        let mut h = pool.acquire().unwrap();
        h.0 = 3;
        let (returned, errors) = drop_damaged(pool, h);
        assert!(returned, "a panic reached the code that dropped the handle");
        assert_eq!(errors, 1, "one event, for the damage");
        assert_eq!(pool.stats().corruption_events, 1);
        let a = pool.acquire().unwrap();
        assert_eq!(a.0, 0, "the block that came back holds a fresh value");
        assert!(
            pool.acquire().is_err(),
            "the withdrawn block was handed out"
        );
        drop(a);
    }
}
