//! tally-pool: handles of `#[derive(Pooled)]` types, and the untyped `BlockPool`.

use core::hint::black_box;
use core::marker::PhantomData;

use tally_pool::block::{BlockPool, BlockPoolConfig, GuardLevel};
use tally_pool::{Handle, Pooled};

use super::global::{Block, LAYOUT};
use crate::contender::Contender;
use crate::fatal;
use crate::order::Order;
use crate::runs;

/// An [`Order`] in a `#[derive(Pooled)]` type: one type per pool configuration, and no two
/// contenders share a pool (each would leave the shared thread cache in its own state
/// between the other's samples: in one run that cost `typed` 0.23 ns per W1 iteration).
pub trait Derived: Pooled + Default + Send + Sync {
    /// Wraps an order.
    fn wrap(order: Order) -> Self;
    /// The order inside.
    fn order(&self) -> &Order;
    /// The order inside, to write.
    fn order_mut(&mut self) -> &mut Order;
}

macro_rules! derived {
    ($(#[$doc:meta])* $name:ident, $($pooled:tt)*) => {
        $(#[$doc])*
        #[derive(Pooled, Default, Debug)]
        #[pooled($($pooled)*)]
        pub struct $name(Order);

        impl Derived for $name {
            #[inline(always)]
            fn wrap(order: Order) -> Self {
                Self(order)
            }

            #[inline(always)]
            fn order(&self) -> &Order {
                &self.0
            }

            #[inline(always)]
            fn order_mut(&mut self) -> &mut Order {
                &mut self.0
            }
        }
    };
}

derived!(
    /// The typed bench's order: a pool per NUMA node (the derive's default).
    TypedOrder, capacity = 200_000, max_capacity = 262_144, name = "bench-orders"
);
derived!(
    /// [`TypedOrder`] with one pool for every thread (`per_node = false`).
    TypedOrderShared,
    capacity = 200_000, max_capacity = 262_144, name = "bench-orders-shared", per_node = false
);
derived!(
    /// [`TypedOrder`] in a pool of its own, for `typed-acquire`.
    AcquiredOrder, capacity = 200_000, max_capacity = 262_144, name = "bench-orders-acquire"
);
derived!(
    /// The peers bench's order for W1–W4: 131,072 pre-allocated, as other peers get.
    PeersOrder, capacity = 131_072, max_capacity = 2_097_152, name = "peers-order"
);
derived!(
    /// The peers bench's order for W5 and W6 with growth: starts at 1,024 and grows.
    GrowingOrder, capacity = 1024, max_capacity = 2_097_152, name = "peers-growing-order"
);
derived!(
    /// The peers bench's order for W6 pre-allocated: 1,000,000 pre-allocated.
    PreallocatedOrder,
    capacity = 1_000_000, max_capacity = 2_097_152, name = "peers-preallocated-order"
);

/// `T::acquire_with(T(order))` (`WITH`), or `T::acquire()` and then the order written through
/// the handle; released by dropping the handle.
#[derive(Debug)]
pub struct Typed<T, const WITH: bool = true>(PhantomData<fn() -> T>);

/// [`Typed`] through `T::acquire()`.
pub type TypedAcquire<T> = Typed<T, false>;

impl<T: Derived, const WITH: bool> Typed<T, WITH> {
    /// Creates the type's pool now, so that the first timed acquire does not.
    #[allow(clippy::new_without_default)] // Creating the pool is the point.
    pub fn new() -> Self {
        black_box(T::pool());
        Self(PhantomData)
    }
}

impl<T: Derived, const WITH: bool> Contender for Typed<T, WITH> {
    type Item = Handle<T>;

    #[inline(always)]
    fn acquire(&self, make: impl FnOnce() -> Order) -> Handle<T> {
        if WITH {
            return match T::acquire_with(T::wrap(make())) {
                Ok(handle) => handle,
                Err(err) => fatal!("tally-pool: acquire_with failed: {err}"),
            };
        }
        let mut handle = match T::acquire() {
            Ok(handle) => handle,
            Err(err) => fatal!("tally-pool: acquire failed: {err}"),
        };
        *handle.order_mut() = make();
        handle
    }

    #[inline(always)]
    fn release(&self, item: Handle<T>, check: impl FnOnce(&Order)) {
        check(item.order());
        drop(item);
    }
}

runs!([T: Derived, const WITH: bool] Typed<T, WITH>, shared);

/// A tally-pool `BlockPool` of 64-byte blocks: `allocate`, a write, and `free`.
#[derive(Debug)]
pub struct TallyBlock(BlockPool, &'static str);

impl TallyBlock {
    /// A pool of 200,000 pre-faulted blocks with `guard`, named `label`.
    pub fn new(label: &'static str, guard: GuardLevel) -> Self {
        let config = BlockPoolConfig::new(LAYOUT).name(label).capacity(200_000);
        match BlockPool::new(config.guard(guard).prefault(true)) {
            Ok(pool) => Self(pool, label),
            Err(err) => fatal!("{label}: BlockPool::new failed: {err}"),
        }
    }
}

impl Contender for TallyBlock {
    type Item = Block;

    #[inline(always)]
    fn acquire(&self, make: impl FnOnce() -> Order) -> Block {
        let ptr = match self.0.allocate() {
            Ok(block) => block.cast::<Order>(),
            Err(err) => fatal!("{}: allocate failed: {err}", self.1),
        };
        // SAFETY: a fresh block of a pool of `Order`'s layout, ours until freed.
        unsafe { Block::fill(ptr, make()) }
    }

    #[inline(always)]
    fn release(&self, item: Block, check: impl FnOnce(&Order)) {
        check(item.order());
        // SAFETY: `item` came from `acquire`, that is from `self.0.allocate()`, and a
        // `Block` is the only way to its block, given up here: the owner frees it once.
        let freed = unsafe { self.0.free(item.0.cast()) };
        if let Err(err) = freed {
            fatal!("{}: free failed: {err}", self.1);
        }
    }
}

runs!([] TallyBlock, shared);
