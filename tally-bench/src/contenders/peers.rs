//! The pool and slab crates users would pick instead, each called the way its documentation
//! shows. The bench that runs them builds them (it chooses what they pre-allocate).

use core::cell::RefCell;

use crate::contender::{Contender, Remote};
use crate::fatal;
use crate::order::Order;
use crate::runs;

pub use {lockfree_object_pool, nexus_pool, nexus_slab, object_pool, opool, sharded_slab, slab};

/// Leaks a pool: contenders live for the rest of the process, and guards borrow them.
pub fn leak<T>(value: T) -> &'static T {
    Box::leak(Box::new(value))
}

/// What the pools that reset a value on release do to an `Order`: nothing (every acquire
/// overwrites it).
pub fn reset(_: &mut Order) {}

// sharded-slab's `Pool` clears a value in place when it is released: the same.
impl sharded_slab::Clear for Order {
    fn clear(&mut self) {}
}

/// sharded-slab's `Pool`: `create_with` initialises a slot and returns its key, `get`
/// reads it, `clear` releases it.
pub struct ShardedPool(pub sharded_slab::Pool<Order>);

/// sharded-slab's `Slab`: `insert` returns a key, `take` removes the value.
pub struct ShardedSlab(pub sharded_slab::Slab<Order>);

/// lockfree-object-pool's `LinearObjectPool`.
pub struct Linear(pub &'static lockfree_object_pool::LinearObjectPool<Order>);

/// lockfree-object-pool's `SpinLockObjectPool`.
pub struct SpinLock(pub &'static lockfree_object_pool::SpinLockObjectPool<Order>);

/// object-pool's `Pool` (a locked stack of values; `pull` makes a new one when empty).
pub struct ObjectPool(pub &'static object_pool::Pool<Order>);

/// opool's concurrent `Pool` (values in a bounded queue; `get` makes a new one when empty).
pub struct Opool(pub &'static opool::Pool<OrderAllocator, Order>);

/// nexus-pool's `sync::Pool`: bounded, one acquiring thread (it is `Send` but not `Sync`),
/// guards released from any thread.
pub struct NexusSync(pub nexus_pool::sync::Pool<Order>);

/// nexus-pool's `local::Pool`: single-threaded, grows by calling its factory.
pub struct NexusLocal(pub nexus_pool::local::Pool<Order>);

/// slab's `Slab`: single-threaded, keys; in a `RefCell` because it needs `&mut`.
pub struct Slab(pub RefCell<slab::Slab<Order>>);

/// nexus-slab's `bounded::Slab`: single-threaded, fixed capacity, 8-byte `Slot` handles.
pub struct NexusBounded(pub nexus_slab::bounded::Slab<Order>);

/// nexus-slab's `unbounded::Slab`: single-threaded, grows by chunks (256 slots, its
/// default).
pub struct NexusUnbounded(pub nexus_slab::unbounded::Slab<Order>);

/// How opool makes an `Order`.
pub struct OrderAllocator;

impl opool::PoolAllocator<Order> for OrderAllocator {
    fn allocate(&self) -> Order {
        Order::default()
    }
}

/// Implements [`Contender`] for each `$ty`: `$acquire` returns the item holding `$order`;
/// `$release` gives `$it` back after calling `$check` on its order; then [`runs!`] with `$runs`.
macro_rules! contenders {
    ($($ty:ty => $item:ty, |$me:ident, $order:ident| $acquire:expr,
       |$it:ident, $check:ident| $release:expr, $($runs:tt),+;)*) => {$(
        impl Contender for $ty {
            type Item = $item;

            #[inline(always)]
            fn acquire(&self, make: impl FnOnce() -> Order) -> $item {
                let ($me, $order) = (self, make());
                $acquire
            }

            #[inline(always)]
            fn release(&self, $it: $item, $check: impl FnOnce(&Order)) {
                let $me = self;
                $release
            }
        }

        runs!([] $ty, $($runs),+);
    )*};
}

/// Implements [`Contender`] for pools whose guard dereferences to the `Order` and gives it
/// back on drop: `$pull` takes a guard from `$pool`, the contender's pool; then [`runs!`].
macro_rules! guards {
    ($($ty:ty => $item:ty, |$pool:ident| $pull:expr, $($runs:tt),+;)*) => {$(
        impl Contender for $ty {
            type Item = $item;

            #[inline(always)]
            fn acquire(&self, make: impl FnOnce() -> Order) -> $item {
                let ($pool, order) = (&self.0, make());
                let mut guard = $pull;
                *guard = order;
                guard
            }

            #[inline(always)]
            fn release(&self, guard: $item, check: impl FnOnce(&Order)) {
                check(&guard);
                drop(guard);
            }
        }

        runs!([] $ty, $($runs),+);
    )*};
}

guards! {
    Linear => lockfree_object_pool::LinearReusable<'static, Order>, |pool| pool.pull(), shared;
    SpinLock => lockfree_object_pool::SpinLockReusable<'static, Order>, |pool| pool.pull(),
        shared;
    ObjectPool => object_pool::Reusable<'static, Order>, |pool| pool.pull(Order::default),
        shared;
    Opool => opool::RefGuard<'static, OrderAllocator, Order>, |pool| pool.get(), shared;
    NexusSync => nexus_pool::sync::Pooled<Order>, |pool| match pool.try_acquire() {
        Some(guard) => guard,
        None => fatal!("nexus-pool sync: exhausted"),
    }, remote, "one acquiring thread: sync::Pool is Send but not Sync, so two threads cannot \
        acquire from one pool";
    NexusLocal => nexus_pool::local::Pooled<Order>, |pool| pool.acquire(), local,
        "single-threaded: local::Pool and its guards are neither Send nor Sync";
}

contenders! {
    ShardedPool => usize,
        |me, order| match me.0.create_with(|o| *o = order) {
            Some(key) => key,
            None => fatal!("sharded-slab Pool: full"),
        },
        |key, check| {
            match me.0.get(key) {
                Some(order) => check(&order),
                None => fatal!("sharded-slab Pool: key {key} not found"),
            }
            if !me.0.clear(key) {
                fatal!("sharded-slab Pool: clear({key}) failed");
            }
        }, shared;
    ShardedSlab => usize,
        |me, order| match me.0.insert(order) {
            Some(key) => key,
            None => fatal!("sharded-slab Slab: full"),
        },
        |key, check| match me.0.take(key) {
            Some(order) => check(&order),
            None => fatal!("sharded-slab Slab: key {key} not found"),
        }, shared;
    Slab => usize,
        |me, order| me.0.borrow_mut().insert(order),
        |key, check| match me.0.borrow_mut().try_remove(key) {
            Some(order) => check(&order),
            None => fatal!("slab: key {key} not found"),
        }, local, "single-threaded: Slab needs &mut to insert and remove (not Sync)";
    NexusBounded => nexus_slab::Slot<Order>,
        |me, order| match me.0.try_alloc(order) {
            Ok(slot) => slot,
            Err(_) => fatal!("nexus-slab: full"),
        },
        |slot, check| {
            check(&slot);
            me.0.free(slot);
        }, local, "single-threaded: the slab is not Sync and its Slot handles are not Send";
    NexusUnbounded => nexus_slab::Slot<Order>,
        |me, order| me.0.alloc(order),
        |slot, check| {
            check(&slot);
            me.0.free(slot);
        }, local, "single-threaded: the slab is not Sync and its Slot handles are not Send";
}

impl Remote for NexusSync {
    /// The guards return themselves; the releasing thread needs no access to the pool.
    type Releaser = ();

    fn releaser(&self) -> &() {
        &()
    }

    #[inline(always)]
    fn release_remote(_: &(), guard: Self::Item, check: impl FnOnce(&Order)) {
        check(&guard);
        drop(guard);
    }
}
