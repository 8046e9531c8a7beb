//! `Handle<T>`: the owning, pointer-sized reference to a pooled value.

use core::fmt;
use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};
use core::ptr::NonNull;
use std::panic::{catch_unwind, AssertUnwindSafe};

use super::pool::Pool;
use super::token::RawHandle;
use crate::block::facade;
use crate::stats::registry::drop_payload;

/// An owned value in a pool: dereferences to `T`, returns the value to its pool when
/// dropped, on whatever thread drops it.
///
/// A `Handle<T>` is one pointer (8 bytes, and `Option<Handle<T>>` too). It is not `Clone`;
/// it is `Send` exactly when `T: Send` and `Sync` exactly when `T: Sync`. Its pool is found
/// from the chunk the value lives in, so the handle needs no second word.
///
/// ```
/// use tally_pool::{Handle, Pool, PoolConfig};
///
/// let pool = Pool::<String>::new(PoolConfig::new("names")).unwrap();
/// let mut name: Handle<String> = pool.acquire_with("bid".to_string()).unwrap();
/// name.push_str("-1");
/// let name = std::thread::spawn(move || name.len()).join().unwrap();
/// assert_eq!(name, 5);
/// assert_eq!(core::mem::size_of::<Option<Handle<String>>>(), 8);
/// ```
///
/// A handle is invariant in `T`, as its pool is: the value goes back to a pool of `T`, so
/// a handle cannot be turned into one of a supertype of `T`:
///
/// ```compile_fail,E0308
/// use tally_pool::Handle;
///
/// fn narrow(h: Handle<for<'a> fn(&'a str)>) -> Handle<fn(&'static str)> {
///     h
/// }
/// ```
pub struct Handle<T: 'static> {
    /// Invariant: points to a valid `T` in a live block of the `Pool<T>` named by the
    /// block's chunk header, and this handle is its only owner.
    ptr: NonNull<T>,
    /// Owns a `T` for the drop checker and for `Send`/`Sync` below.
    _owns: PhantomData<T>,
    /// Invariant in `T`: the value goes back to a pool typed `T` (recycled, or lent and
    /// redeemed), so a handle must not be upcast to a supertype of `T`.
    _invariant: PhantomData<fn(T) -> T>,
}

// SAFETY: a handle owns its `T` like a `Box<T>` does; moving it to another thread moves the
// `T`, which needs `T: Send`. Releasing the block from that thread is supported by the pool.
unsafe impl<T: Send + 'static> Send for Handle<T> {}
// SAFETY: `&Handle<T>` gives out only `&T`, which needs `T: Sync` to be shared.
unsafe impl<T: Sync + 'static> Sync for Handle<T> {}

impl<T: 'static> Handle<T> {
    /// # Safety
    ///
    /// `ptr` must point to a valid `T` in a block of a `Pool<T>` that nothing else owns.
    #[inline]
    pub(crate) unsafe fn from_block(ptr: NonNull<T>) -> Self {
        Self {
            ptr,
            _owns: PhantomData,
            _invariant: PhantomData,
        }
    }

    /// Lends the value out as a `u64`-sized token: the value stays in the pool (counted
    /// live) until [`Pool::redeem`] turns the token back into a handle.
    ///
    /// A token is a plain `u64` that can reach any thread, so the handle redeemed from it
    /// may be dropped on another thread than the one that lent it: only `T: Send` values
    /// can be lent (an `Rc` lent on one thread and redeemed on another would race its
    /// count).
    ///
    /// ```
    /// # use tally_pool::{Handle, Pool, PoolConfig};
    /// let pool = Pool::<u32>::new(PoolConfig::new("n")).unwrap();
    /// let raw = Handle::into_raw(pool.acquire_with(7).unwrap());
    /// assert_eq!(pool.leaked_raw(), 1);
    /// assert_eq!(*pool.redeem(raw).unwrap(), 7);
    /// assert_eq!(pool.leaked_raw(), 0);
    /// ```
    pub fn into_raw(this: Self) -> RawHandle<T>
    where
        T: Send,
    {
        let ptr = this.ptr;
        core::mem::forget(this);
        // SAFETY: handle invariant: a live value of its pool, now owned by no handle.
        let pool = unsafe { Pool::<T>::owning(ptr) };
        // SAFETY: as above.
        unsafe { pool.lend(ptr) }
    }

    /// The pool this value belongs to: the pool it was acquired from, also for a sampled
    /// value of a pool that tracks sites (which lives in that pool's twin, see
    /// [`Pool::track_sites`]).
    pub fn pool(this: &Self) -> &'static Pool<T> {
        // SAFETY: handle invariant.
        unsafe { Pool::<T>::owning(this.ptr) }.canonical()
    }

    /// The value's address: its block.
    #[inline]
    pub(super) fn block_of(this: &Self) -> NonNull<T> {
        this.ptr
    }
}

impl<T: 'static> Drop for Handle<T> {
    /// Gives the value back. For a `T` without drop glue this is a compare and a push
    /// onto the thread's cache, inlined, and a call that cannot unwind otherwise, so that a
    /// caller's own small `#[inline]` function around it stays small enough to be inlined
    /// too: a drop that may unwind costs every caller a landing pad that aborts. User code
    /// that panics inside such a drop (a `recycle`, see [`Recycle`](crate::Recycle), or,
    /// with feature `tracing`, a subscriber reporting what a guard found in the block)
    /// stops there once the panic hook has reported it; the block is back in the pool, or
    /// withdrawn if the guard refused it. For a `T` with drop glue such panics reach the
    /// code that dropped the handle.
    #[inline(always)]
    fn drop(&mut self) {
        if !core::mem::needs_drop::<T>() {
            // SAFETY: handle invariant: a live value in a block of a typed pool, whose node
            // pools are never dropped; this handle alone owns it and gives it back now, as
            // it is, since `T` needs no drop. Only a direct pool lets this free through.
            if unsafe { facade::free_via_header(self.ptr.cast()) } {
                return;
            }
            // SAFETY: as above: a live value of a typed pool, given back now.
            unsafe { release_without_drop_glue::<T>(self.ptr) };
            return;
        }
        // SAFETY: handle invariant: a live value of a typed pool, which this handle alone
        // owns and gives back now.
        unsafe { Pool::<T>::release_owned(self.ptr) };
    }
}

/// [`Pool::release_owned`] for a `T` without drop glue, behind the `C` ABI: it cannot
/// unwind (a panic reaching it would abort), which the compiler knows, so a handle's drop
/// needs no landing pad. The library does not panic and `T` has no `Drop`, but user code
/// runs inside: a recycling pool's `recycle`, whose panic `Pool::release_slow` catches
/// (it drops the payload, then returns the block empty), and, with feature `tracing`, the
/// subscriber that reports a guard's finding on the free, after the block was freed or
/// withdrawn, whose panic stops here, once the panic hook has reported it.
///
/// # Safety
///
/// As for [`Pool::release_owned`]; `T` needs no drop.
#[inline(never)]
unsafe extern "C" fn release_without_drop_glue<T: 'static>(ptr: NonNull<T>) {
    // SAFETY: the caller's contract. A panic leaves the block freed or withdrawn: the only
    // user code that runs after it is handed to the block pool is the subscriber, which
    // runs once the free is done (`block::events`).
    let released = catch_unwind(AssertUnwindSafe(|| unsafe {
        Pool::<T>::release_owned(ptr)
    }));
    if let Err(payload) = released {
        drop_payload(payload);
    }
}

impl<T: 'static> Deref for Handle<T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: handle invariant: a valid `T`, borrowed for as long as `self` is.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T: 'static> DerefMut for Handle<T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: handle invariant: a valid `T` owned by this handle alone.
        unsafe { self.ptr.as_mut() }
    }
}

impl<T: fmt::Debug + 'static> fmt::Debug for Handle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T: fmt::Display + 'static> fmt::Display for Handle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&**self, f)
    }
}
