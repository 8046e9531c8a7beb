//! How a contender is called. An adapter ([`Contender`]) is written once and runs under two
//! [`Inlining`]s: [`Forced`] calls it from `#[inline(always)]` functions, [`Plain`] from
//! `#[inline]` ones, which the compiler inlines or not on its own, as it would a user's
//! wrapper. [`With`] is a contender under an inlining and a [`Stamp`]; a bench holds its
//! object-safe face, [`Runs`].

use core::any::type_name;
use core::marker::PhantomData;

use crate::order::{Order, Stamp};
use crate::workload::{Body, Workload};

/// Something that hands out [`Order`]s and takes them back.
pub trait Contender: 'static {
    /// What the user holds while the object is live: a handle, a guard, a key or a pointer.
    type Item;
    /// Acquires an object and writes `make()` into it. Aborts on failure.
    fn acquire(&self, make: impl FnOnce() -> Order) -> Self::Item;
    /// Reads the object back with `check` and releases it.
    fn release(&self, item: Self::Item, check: impl FnOnce(&Order));
    /// Called on a helper thread (W3, W4) before it exits.
    fn thread_exit(&self) {}
}

/// A contender whose objects can be released on another thread than the one that acquired
/// them (W3), through a [`Remote::Releaser`] that the other thread may hold.
pub trait Remote: Contender {
    /// What the releasing thread needs: the contender, or `()` when items release themselves.
    type Releaser: Sync + 'static;
    /// The releaser of this contender.
    fn releaser(&self) -> &Self::Releaser;
    /// [`Contender::release`] on the releasing thread.
    fn release_remote(r: &Self::Releaser, item: Self::Item, check: impl FnOnce(&Order));
    /// Called on the releasing thread before it exits.
    fn remote_exit(_releaser: &Self::Releaser) {}
}

/// How the workload's loop calls a contender: plain calls (a closure need not be inlined even
/// when forced).
pub trait Inlining: 'static {
    /// Calls [`Contender::acquire`].
    fn acquire<C: Contender>(c: &C, make: impl FnOnce() -> Order) -> C::Item;
    /// Calls [`Contender::release`].
    fn release<C: Contender>(c: &C, item: C::Item, check: impl FnOnce(&Order));
    /// Calls [`Remote::release_remote`].
    fn release_remote<C: Remote>(r: &C::Releaser, item: C::Item, check: impl FnOnce(&Order));
}

macro_rules! inlining {
    ($(#[$doc:meta])* $name:ident, #[$inline:meta]) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub enum $name {}

        impl Inlining for $name {
            #[$inline]
            fn acquire<C: Contender>(c: &C, make: impl FnOnce() -> Order) -> C::Item {
                c.acquire(make)
            }

            #[$inline]
            fn release<C: Contender>(c: &C, item: C::Item, check: impl FnOnce(&Order)) {
                c.release(item, check)
            }

            #[$inline]
            fn release_remote<C: Remote>(
                r: &C::Releaser, item: C::Item, check: impl FnOnce(&Order),
            ) {
                C::release_remote(r, item, check)
            }
        }
    };
}

inlining!(
    /// Adapters called from `#[inline(always)]` functions: always inlined.
    Forced, #[inline(always)]
);
inlining!(
    /// Adapters called from `#[inline]` functions: inlined where the compiler chooses to.
    Plain, #[inline]
);

/// The names of the two inlinings, in the order [`Pair::both`] returns them.
pub const INLININGS: [&str; 2] = ["forced", "plain"];

/// Contender `C` under inlining `I`, stamping its orders with `S`.
pub struct With<C: 'static, I, S>(pub(crate) &'static C, PhantomData<fn() -> (I, S)>);

impl<C: Contender, I: Inlining, S: Stamp> With<C, I, S> {
    /// Acquires the object of iteration `i`.
    #[inline(always)]
    pub fn acquire(&self, i: u64) -> C::Item {
        I::acquire(self.0, || Order::new::<S>(i))
    }

    /// Checks and releases the object of iteration `i`.
    #[inline(always)]
    pub fn release(&self, item: C::Item, i: u64) {
        I::release(self.0, item, |order| order.check::<S>(i, type_name::<C>))
    }

    /// Checks and releases the object of iteration `i` on the releasing thread.
    #[inline(always)]
    pub fn release_remote(r: &C::Releaser, item: C::Item, i: u64)
    where
        C: Remote,
    {
        I::release_remote::<C>(r, item, |order| order.check::<S>(i, type_name::<C>))
    }
}

/// A built contender, behind a trait object; each method is monomorphic inside.
pub trait Runs {
    /// Bytes of what the user holds per live object.
    fn handle_bytes(&self) -> usize;
    /// Sets up `w` (scratch space, a helper thread) and calls `body` with a runner, or says
    /// why the contender cannot run `w`.
    fn session(&self, w: Workload, body: Body<'_>) -> Result<(), &'static str>;
    /// W5 (see [`crate::workload::memory`]).
    fn memory(&self, n: usize) -> Option<u64>;
    /// W6 (see [`crate::workload::latency`]).
    fn latency(&self, n: usize, warm: bool) -> Vec<u64>;
}

/// Implements [`Runs`] for a contender under every inlining and stamp: `shared` ones release
/// the same way on any thread (this implements [`Remote`]) and run W1–W4; `remote` ones
/// implement [`Remote`] and run W1–W4, or W1–W3 given why not W4; `local` ones W1–W2.
#[macro_export]
macro_rules! runs {
    ([$($g:tt)*] $ty:ty, shared) => {
        impl<$($g)*> $crate::Remote for $ty {
            type Releaser = Self;

            fn releaser(&self) -> &Self {
                self
            }

            #[inline(always)]
            fn release_remote(r: &Self, item: Self::Item, check: impl FnOnce(&$crate::Order)) {
                $crate::Contender::release(r, item, check)
            }
        }
        $crate::runs!([$($g)*] $ty, remote);
    };
    ([$($g:tt)*] $ty:ty, remote) => {
        $crate::runs!(@impl [$($g)*] $ty, |me, w, body| match w {
            $crate::Workload::Pipeline => $crate::workload::pipeline_session(me, body),
            _ => $crate::workload::contended_session(me, body),
        });
    };
    ([$($g:tt)*] $ty:ty, remote, $w4:literal) => {
        $crate::runs!(@impl [$($g)*] $ty, |me, w, body| match w {
            $crate::Workload::Pipeline => $crate::workload::pipeline_session(me, body),
            _ => return Err($w4),
        });
    };
    ([$($g:tt)*] $ty:ty, local, $why:literal) => {
        $crate::runs!(@impl [$($g)*] $ty, |_me, _w, _body| return Err($why));
    };
    (@impl [$($g:tt)*] $ty:ty, |$me:ident, $w:ident, $body:ident| $two_threads:expr) => {
        impl<I: $crate::Inlining, S: $crate::Stamp, $($g)*> $crate::Runs
            for $crate::With<$ty, I, S>
        {
            fn handle_bytes(&self) -> usize {
                size_of::<<$ty as $crate::Contender>::Item>()
            }

            fn session(
                &self,
                w: $crate::Workload,
                body: $crate::workload::Body<'_>,
            ) -> Result<(), &'static str> {
                match w {
                    $crate::Workload::Churn => $crate::workload::churn_session(self, body),
                    $crate::Workload::Burst => $crate::workload::burst_session(self, body),
                    $w => {
                        let ($me, $body) = (self, body);
                        $two_threads
                    }
                }
                Ok(())
            }

            fn memory(&self, n: usize) -> Option<u64> {
                $crate::workload::memory(self, n)
            }

            fn latency(&self, n: usize, warm: bool) -> Vec<u64> {
                $crate::workload::latency(self, n, warm)
            }
        }
    };
}

/// A contender under both inlinings; both share the one contender (and its pool).
pub struct Pair([Box<dyn Runs>; 2]);

impl Pair {
    /// The pair of `contender` (leaked) stamping with `S`.
    pub fn of<S: Stamp, C: Contender>(_stamp: S, contender: C) -> Self
    where
        With<C, Forced, S>: Runs,
        With<C, Plain, S>: Runs,
    {
        let c: &'static C = Box::leak(Box::new(contender));
        let forced: Box<dyn Runs> = Box::new(With::<C, Forced, S>(c, PhantomData));
        Self([forced, Box::new(With::<C, Plain, S>(c, PhantomData))])
    }

    /// The contender under [`Forced`], then under [`Plain`] (as [`INLININGS`] names them).
    pub fn both(&self) -> [&dyn Runs; 2] {
        let [forced, plain] = &self.0;
        [&**forced, &**plain]
    }

    /// The contender under [`Forced`].
    pub fn forced(&self) -> &dyn Runs {
        self.both()[0]
    }
}
