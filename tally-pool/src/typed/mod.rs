//! Typed pools: `Pool<T>`, `Handle<T>`, `RawHandle<T>` and the `Pooled` trait.
//!
//! ```
//! use tally_pool::{Handle, Pooled, PoolError, RawHandle};
//!
//! #[derive(Pooled, Default, Debug)]
//! #[pooled(capacity = 1024, max_capacity = 65_536, name = "orders")]
//! pub struct Order { pub id: u64, pub price: i64, pub qty: u32 }
//!
//! # fn main() -> Result<(), PoolError> {
//! let mut o: Handle<Order> = Order::acquire()?;
//! o.qty = 100;
//! let raw: RawHandle<Order> = Handle::into_raw(o);
//! let o = Order::redeem(raw)?;
//! assert_eq!(o.qty, 100);
//! assert_eq!(Order::pool().stats().live_blocks, 1);
//! # Ok(())
//! # }
//! ```
//!
//! | file | what |
//! |---|---|
//! | `config` | [`PoolConfig`], its defaults and its checks |
//! | `pool`, `acquire`, `release` | [`Pool`]: creation and state; acquiring; releasing |
//! | `report` | a pool as one statistics component, over its node pools |
//! | `handle` | [`Handle`] |
//! | `token` | [`RawHandle`]: token layout, and the generation table that lends and redeems |
//! | `recycle` | [`Recycle`], and the slots of recycling pools |
//! | `sites` | call sites of sampled acquires ([`Pool::track_sites`]), and a direct pool's twin |
//! | `audit` | [`Pool::audit_placement`]: where the kernel says the pool's pages are |
//! | `static_pool` | the `static` pool of a derived type |
//! | `error` | [`AcquireError`] |
//!
//! Typed pools use the block layer only through `block::facade`. The [`Pooled`] trait, which
//! the derive implements, is defined here. User code that runs inside an acquire or a
//! release (`Default`, an `acquire_with_fn` closure, `Drop`, [`Recycle`]) may use any
//! pool; a `#[global_allocator]` must not serve requests from typed pools (see the block
//! module's [Limits](crate::block#limits)).

mod acquire;
mod audit;
mod config;
mod error;
mod handle;
mod pool;
mod recycle;
mod release;
mod report;
mod site_table;
mod sites;
pub(crate) mod static_pool;
mod token;

pub use config::{PoolConfig, DEFAULT_CAPACITY, DEFAULT_MAX_CAPACITY, MAX_CAPACITY};
pub use error::AcquireError;
pub use handle::Handle;
pub use pool::Pool;
pub use recycle::Recycle;
pub use token::RawHandle;

use std::thread::LocalKey;

use crate::error::PoolError;
use static_pool::TypeCache;

/// A type with its own `static` pool, made by `#[derive(Pooled)]`.
///
/// # Safety
///
/// Implementations must return from [`Pooled::pool`] the same pool on every call, a pool
/// made for `Self` by this crate. (The hidden `thread_cache` returns `None` or a cell typed
/// for `Self`, which no other type can use.) Only `#[derive(Pooled)]` implements this
/// trait; the hidden method it defines is how the derive opts in, and code that writes it
/// by hand takes on this contract.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a pooled type",
    label = "`{Self}` has no pool",
    note = "add `#[derive(Pooled)]` to `{Self}`, or use `tally_pool::Pool::<{Self}>::new` for types you cannot derive on"
)]
pub unsafe trait Pooled: Sized + 'static {
    /// The type's pool, created on first use.
    fn pool() -> &'static Pool<Self>;

    /// Acquires `Self::default()` (or a recycled value) from the type's pool.
    ///
    /// On a thread that has acquired this type before, this is one thread-local load and
    /// a pop from the thread's cache; the value is then built in the block (which goes
    /// back to the pool if `default` panics).
    ///
    /// # Errors
    ///
    /// See [`Pool::acquire`].
    #[inline(always)]
    #[track_caller]
    fn acquire() -> Result<Handle<Self>, PoolError>
    where
        Self: Default,
    {
        match Self::thread_cache() {
            Some(key) => Pool::acquire_via_cell(key),
            None => Self::pool().acquire(),
        }
    }

    /// Moves `value` into the type's pool.
    ///
    /// # Errors
    ///
    /// See [`Pool::acquire_with`]; the value comes back in the error.
    #[inline(always)]
    #[track_caller]
    fn acquire_with(value: Self) -> Result<Handle<Self>, AcquireError<Self>> {
        match Self::thread_cache() {
            Some(key) => Pool::acquire_with_via_cell(key, value),
            None => Self::pool().acquire_with(value),
        }
    }

    /// Acquires the value `make` returns, built straight into the block on the fast path
    /// (the block goes back to the pool if `make` panics).
    ///
    /// [`Pooled::acquire_with`] takes a value built beforehand: where the compiler sees it
    /// built (a struct literal in the call, say) it writes the fields straight into the
    /// block, but a value it keeps in memory (returned by a function it does not inline,
    /// or too large for registers) is copied into the block once. `acquire_with_fn` takes
    /// the block first and has `make` build the value in it, so use it for large types and
    /// for values made by a function. On a thread's first acquire, or when its cache is
    /// empty, `make` runs before a block is taken.
    ///
    /// ```
    /// use tally_pool::Pooled;
    ///
    /// #[derive(Pooled, Default)]
    /// struct Order { id: u64, legs: [u64; 8] }
    ///
    /// let order = Order::acquire_with_fn(|| Order { id: 7, legs: [1; 8] })?;
    /// assert_eq!((order.id, order.legs[7]), (7, 1));
    /// # Ok::<(), tally_pool::PoolError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// See [`Pool::acquire`]; the value is dropped.
    #[inline(always)]
    #[track_caller]
    fn acquire_with_fn(make: impl FnOnce() -> Self) -> Result<Handle<Self>, PoolError> {
        match Self::thread_cache() {
            Some(key) => Pool::acquire_with_fn_via_cell(key, make),
            None => Self::pool().acquire_with_fn(make),
        }
    }

    /// Turns a token back into a handle. Only `Send` types: a token may have crossed
    /// threads (see [`Handle::into_raw`]).
    ///
    /// # Errors
    ///
    /// See [`Pool::redeem`].
    #[inline]
    #[track_caller]
    fn redeem(raw: RawHandle<Self>) -> Result<Handle<Self>, PoolError>
    where
        Self: Send,
    {
        Self::pool().redeem(raw)
    }

    /// The type's own per-thread pointer to the calling thread's cache of its pool, which
    /// makes `acquire` one thread-local load and a pop. The derive declares one
    /// `thread_local!` per type; without it, `acquire` goes through [`Pooled::pool`].
    #[doc(hidden)]
    #[inline(always)]
    fn thread_cache() -> Option<&'static LocalKey<TypeCache<Self>>> {
        None
    }

    #[doc(hidden)]
    fn only_derive_is_allowed_to_implement_this_trait();
}
