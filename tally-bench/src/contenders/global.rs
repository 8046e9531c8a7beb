//! General-purpose allocators: `Box` with the system allocator, and any `GlobalAlloc`
//! called directly with `Order`'s layout (only one allocator can be the global one).

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;

use crate::contender::Contender;
use crate::fatal;
use crate::order::Order;
use crate::runs;

/// A block handed out as a raw pointer (the floor, the allocators, tally-pool's blocks).
#[derive(Debug)]
pub struct Block(pub(crate) NonNull<Order>);

// SAFETY: a `Block` is the only reference to its object; whoever holds it owns the object,
// and every contender that hands out `Block`s takes them back on any thread.
unsafe impl Send for Block {}

impl Block {
    /// Writes `order` into a fresh block.
    ///
    /// # Safety
    ///
    /// `ptr` is an 8-aligned block of at least 64 bytes that nothing else uses.
    #[inline(always)]
    pub(crate) unsafe fn fill(ptr: NonNull<Order>, order: Order) -> Self {
        // SAFETY: the caller's guarantee.
        unsafe { ptr.as_ptr().write(order) };
        Self(ptr)
    }

    /// The order in the block.
    #[inline(always)]
    pub(crate) fn order(&self) -> &Order {
        // SAFETY: a `Block` always holds an `Order` written by `fill`, owned by its holder.
        unsafe { self.0.as_ref() }
    }
}

/// The layout the allocators and block pools are asked for.
pub(crate) const LAYOUT: Layout = Layout::new::<Order>();

/// A general-purpose allocator called through `GlobalAlloc` with `Order`'s layout, as
/// `Box<Order>` would be; the label names it in error messages.
#[derive(Debug)]
pub struct Global<A>(A, &'static str);

/// jemalloc.
pub const JEMALLOC: Global<tikv_jemallocator::Jemalloc> =
    Global(tikv_jemallocator::Jemalloc, "jemalloc");
/// mimalloc.
pub const MIMALLOC: Global<mimalloc::MiMalloc> = Global(mimalloc::MiMalloc, "mimalloc");
/// The system allocator (glibc's malloc).
pub const SYSTEM: Global<std::alloc::System> = Global(std::alloc::System, "system");

impl<A: GlobalAlloc + 'static> Contender for Global<A> {
    type Item = Block;

    #[inline(always)]
    fn acquire(&self, make: impl FnOnce() -> Order) -> Block {
        // SAFETY: `LAYOUT` has a non-zero size.
        let ptr = unsafe { self.0.alloc(LAYOUT) };
        let Some(ptr) = NonNull::new(ptr.cast::<Order>()) else {
            fatal!("{}: out of memory", self.1)
        };
        // SAFETY: a fresh allocation of `LAYOUT`: 64 bytes, aligned for `Order`, ours.
        unsafe { Block::fill(ptr, make()) }
    }

    #[inline(always)]
    fn release(&self, item: Block, check: impl FnOnce(&Order)) {
        check(item.order());
        // SAFETY: the block came from `alloc` on this allocator with `LAYOUT` and its only
        // reference is consumed here.
        unsafe { self.0.dealloc(item.0.as_ptr().cast(), LAYOUT) }
    }
}

runs!([A: GlobalAlloc + Sync + 'static] Global<A>, shared);

/// `Box<Order>` with the process's allocator, which the benches leave as the system one.
#[derive(Debug)]
pub struct SystemBox;

impl Contender for SystemBox {
    type Item = Box<Order>;

    #[inline(always)]
    fn acquire(&self, make: impl FnOnce() -> Order) -> Box<Order> {
        Box::new(make())
    }

    #[inline(always)]
    fn release(&self, item: Box<Order>, check: impl FnOnce(&Order)) {
        check(&item);
        drop(item);
    }
}

runs!([] SystemBox, shared);
