//! Recycling: values a pool keeps on release and resets for their next user, instead of
//! dropping them.
//!
//! A recycling pool's blocks are [`RecycleSlot`]s: the value, and whether the slot holds
//! one. Release calls [`Recycle::recycle`] through a [`RecycleFn`] the pool was made with
//! (`recycle_value::<T>`, which only the constructors that require `T: Recycle` pick), and
//! the next acquire of the block takes the value as it is.

use core::mem::MaybeUninit;

/// Types whose values a recycling pool keeps on release instead of dropping them.
///
/// `recycle` runs when a handle is dropped; the value then waits in the pool and the next
/// `acquire` returns it as it is, so a `Vec` inside keeps its capacity.
///
/// If `recycle` panics, the value is dropped as the panic left it (a `&mut` method that
/// panics leaves a valid value) and its block goes back to the pool empty: the next
/// `acquire` of that block makes a fresh value with `Default`. The panic goes on to the
/// code that dropped the handle (if the value's `Drop` panics too, the process aborts, as
/// for any value dropped while a panic unwinds), except for a type without drop glue: its
/// handles' drop cannot unwind, which keeps it small enough for the compiler to inline into
/// the caller, so the panic stops there, once the panic hook has reported it, and the drop
/// returns. The panic's payload is dropped there too; a payload whose own drop panics is
/// followed up to four payloads deep, and one that goes on past that is leaked with
/// whatever it owns.
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

/// A block of a recycling pool: the value, and whether it holds one.
#[repr(C)]
pub(crate) struct RecycleSlot<T> {
    pub(crate) value: MaybeUninit<T>,
    /// Whether `value` is initialised. Fresh blocks read `false` (they are zero), and a
    /// release sets it.
    pub(crate) full: bool,
}

/// Resets a recycled value in place; `ptr` is a `RecycleSlot<T>` holding a value.
pub(crate) type RecycleFn = unsafe fn(*mut u8);

/// The [`RecycleFn`] of `T`.
///
/// # Safety
///
/// `ptr` must point to a valid, exclusively held `T`.
pub(crate) unsafe fn recycle_value<T: Recycle>(ptr: *mut u8) {
    // SAFETY: the caller gives a valid, exclusive `T`.
    unsafe { (*ptr.cast::<T>()).recycle() }
}
