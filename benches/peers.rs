//! Side-by-side benchmarks of tally-pool against the pools and allocators users would pick
//! instead, on a 64-byte `Order`. `cargo bench --bench peers` runs it and writes
//! `target/peers.json`; `python3 benches/report.py` turns that into `BENCHMARKS.md` and
//! `docs/peers.svg`.
//!
//! # Peers
//!
//! tally-pool through `#[derive(Pooled)]` handles (`acquire_with`, release on drop); `Box`
//! with the system allocator (glibc); mimalloc and jemalloc called through `GlobalAlloc`;
//! sharded-slab's `Pool` (`create_with` → key, `get`, `clear`) and `Slab` (`insert`,
//! `take`); lockfree-object-pool's `LinearObjectPool` and `SpinLockObjectPool`;
//! object-pool; opool's concurrent `Pool`; nexus-pool's `sync::Pool` (one acquiring thread,
//! release from any) and `local::Pool`; slab's `Slab` and nexus-slab's `bounded::Slab`
//! (`unbounded::Slab` where it must grow), both single-threaded; and a hand-written
//! thread-local intrusive free list, the floor (not a pool: no synchronisation at all).
//! Each peer is called the way its documentation shows; where its API cannot express a
//! workload (a single-threaded slab in W3/W4, a pool with one acquiring thread in W4, a
//! fixed-capacity pool asked to grow) the cell is "n/a" with the reason.
//!
//! # Workloads
//!
//! Every object is written after it is acquired (all eight words) and read back (volatile
//! loads, checked) before it is released.
//!
//! - **W1 churn**: one thread, acquire → write → read → release.
//! - **W2 burst**: acquire 100,000 live, then release them all (time per object).
//! - **W3 pipeline**: this thread acquires and writes, a second thread reads and releases;
//!   the objects (handles, keys or pointers) travel through a
//!   `crossbeam_queue::ArrayQueue` of 1,024.
//! - **W4 contended**: two threads churn on one shared pool; time per pair of operations
//!   (one on each thread).
//! - **W5 memory**: 1,000,000 live objects, each peer in a fresh process (this binary
//!   re-executed with `TALLY_PEERS_CHILD` set): resident bytes from `/proc/self/statm`
//!   before the peer is built and after the millionth acquire, less the array of handles.
//! - **W6 tail latency**: single acquire calls (acquire and write, as above), each timed
//!   with `lfence; rdtsc` (calibrated against `Instant`; `Instant` where there is no
//!   invariant TSC), in a fresh process per peer: once while the peer grows from its
//!   smallest start (tally-pool: `capacity = 1024`) to 1,000,000 live, and once
//!   pre-allocated (the peer's own pre-allocation where it has one, then one untimed
//!   acquire-all/release-all pass). The full mode runs three such processes per peer and
//!   mode, in rounds that visit every peer in turn; the report publishes the median of each
//!   percentile over them, and the p99.9's range.
//!
//! W1–W4 run under criterion (its report lands in `target/criterion`), then in an
//! interleaved pass (rounds that visit every peer in turn, so that drift and other load
//! hit all peers alike), whose median and min–max over rounds are the published numbers.
//! Each sample also records how much CPU other processes used meanwhile (`/proc/stat` less
//! this process's own time from `/proc/self/stat`). On a shared machine a workload's table
//! uses only the samples during which others used under half a CPU, if every peer has at
//! least three of them (else all samples); the JSON keeps every sample either way.
//!
//! # Modes
//!
//! `TALLY_BENCH_QUICK=1` or `-- --quick`: short samples, 5 rounds, 200,000 objects in W5
//! and W6 (a CI smoke run, under 2 minutes; its numbers are indicative only). Without `--bench` (`cargo test --benches`) or
//! with `--test`: one tiny pass of everything, no file written. `TALLY_PEERS_JSON=path`
//! writes the results elsewhere.

#[path = "common/mod.rs"]
mod common;

use common::{backoff, load_average, with_helper};
use core::alloc::{GlobalAlloc, Layout};
use core::cell::{Cell, RefCell};
use core::fmt;
use core::marker::PhantomData;
use core::mem::MaybeUninit;
use core::ptr::{null_mut, NonNull};
use std::hint::{black_box, spin_loop};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{compiler_fence, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use criterion::{Criterion, SamplingMode, Throughput};
use crossbeam_queue::ArrayQueue;
use tally_pool::{Handle, Pooled};

// ---------------------------------------------------------------------------------------
// The object and the parameters
// ---------------------------------------------------------------------------------------

/// The object every workload acquires: an order-book entry of eight 8-byte words.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
struct Order {
    id: u64,
    account: u64,
    instrument: u64,
    price: i64,
    quantity: u64,
    filled: u64,
    side: u64,
    timestamp: u64,
}

/// Bytes of one [`Order`]: the payload of every workload.
const ORDER_BYTES: usize = 64;
const _: () = assert!(size_of::<Order>() == ORDER_BYTES);

/// Words of one [`Order`].
const ORDER_WORDS: usize = ORDER_BYTES / 8;

impl Order {
    /// The order written for iteration `i`: word `k` holds `i + k`.
    #[inline(always)]
    fn new(i: u64) -> Self {
        Self {
            id: i,
            account: i.wrapping_add(1),
            instrument: i.wrapping_add(2),
            price: i.wrapping_add(3) as i64,
            quantity: i.wrapping_add(4),
            filled: i.wrapping_add(5),
            side: i.wrapping_add(6),
            timestamp: i.wrapping_add(7),
        }
    }
}

/// Objects live at once in W2.
const BURST: usize = 100_000;

/// Capacity of the W3 queue.
const QUEUE_CAPACITY: usize = 1024;

/// Values pre-allocated by peers that can pre-allocate, for W1–W4 (at least [`BURST`]).
const WORKLOAD_CAPACITY: usize = 131_072;

/// Live objects in W5, and the most W6 times (and what its pre-allocated peers reserve).
const MILLION: usize = 1_000_000;

/// The environment variable that makes this binary a W5/W6 child.
const CHILD_ENV: &str = "TALLY_PEERS_CHILD";

/// Bytes of a page in `/proc/self/statm` (the base page on x86_64 and aarch64 Linux).
const PAGE_BYTES: u64 = 4096;

/// Reports a failure that makes the numbers meaningless and stops the process.
///
/// Aborting rather than panicking: a panic on a helper thread would leave the other thread
/// waiting for it forever.
#[cold]
#[inline(never)]
fn fatal(args: fmt::Arguments<'_>) -> ! {
    eprintln!("benches/peers.rs: {args}");
    std::process::abort()
}

/// Reads `order` back with volatile word loads (so neither the write after acquire nor this
/// read can be optimised away) and checks it holds `Order::new(i)`.
#[inline(always)]
fn check(order: &Order, i: u64, who: &str) {
    let words = (order as *const Order).cast::<u64>();
    let mut diff = 0;
    for k in 0..ORDER_WORDS {
        // SAFETY: `Order` is `repr(C)` with eight 8-byte integer fields, so word `k < 8` is
        // in bounds, aligned and initialised, and `order` is borrowed for the whole read.
        diff |= unsafe { words.wrapping_add(k).read_volatile() } ^ i.wrapping_add(k as u64);
    }
    if diff != 0 {
        mismatch(order, i, who);
    }
}

#[cold]
#[inline(never)]
fn mismatch(order: &Order, i: u64, who: &str) -> ! {
    fatal(format_args!(
        "{who}: object holds {order:?}, expected Order::new({i}) (handed out twice?)"
    ))
}

// ---------------------------------------------------------------------------------------
// The peer interface
// ---------------------------------------------------------------------------------------

/// Something that hands out [`Order`]s and takes them back.
trait Peer {
    /// What the user holds while the object is live: a handle, a guard, a key or a pointer.
    type Item;

    /// Acquires an object and writes `Order::new(i)` into it. Aborts on failure.
    fn acquire(&self, i: u64) -> Self::Item;

    /// Reads the object back (checking it holds `Order::new(i)`) and releases it.
    fn release(&self, item: Self::Item, i: u64);

    /// Called on a helper thread (W4) before it exits.
    fn thread_exit(&self) {}
}

/// A peer whose objects can be released on another thread than the one that acquired them
/// (W3), through a [`Remote::Releaser`] that the other thread may hold.
trait Remote: Peer {
    /// What the releasing thread needs: the peer itself, or nothing when items release
    /// themselves on drop but the peer may not be shared.
    type Releaser: Sync;

    fn releaser(&self) -> &Self::Releaser;

    /// [`Peer::release`] on the releasing thread.
    fn release_remote(releaser: &Self::Releaser, item: Self::Item, i: u64);

    /// Called on the releasing thread before it exits.
    fn remote_exit(_releaser: &Self::Releaser) {}
}

/// Implements [`Remote`] for a `Sync` peer that releases the same way on any thread.
macro_rules! remote_is_self {
    ([$($g:tt)*] $ty:ty) => {
        impl<$($g)*> Remote for $ty {
            type Releaser = Self;

            fn releaser(&self) -> &Self {
                self
            }

            #[inline(always)]
            fn release_remote(releaser: &Self, item: Self::Item, i: u64) {
                releaser.release(item, i)
            }
        }
    };
}

// ---------------------------------------------------------------------------------------
// tally-pool
// ---------------------------------------------------------------------------------------

/// An [`Order`] in a `#[derive(Pooled)]` type. One type per pool configuration, because a
/// derived type's pool settings are fixed at compile time.
trait TallyOrder: Pooled + Send + Sync {
    fn wrap(order: Order) -> Self;
    fn order(&self) -> &Order;
}

macro_rules! tally_order {
    ($name:ident) => {
        impl TallyOrder for $name {
            #[inline(always)]
            fn wrap(order: Order) -> Self {
                Self(order)
            }

            #[inline(always)]
            fn order(&self) -> &Order {
                &self.0
            }
        }
    };
}

/// tally-pool's `Order` for W1–W4: 131,072 pre-allocated, as the other peers that can
/// pre-allocate get.
#[derive(Pooled, Default)]
#[pooled(capacity = 131_072, max_capacity = 2_097_152, name = "peers-order")]
struct PooledOrder(Order);
tally_order!(PooledOrder);

/// tally-pool's `Order` for W5 and W6 with growth: starts at 1,024 and grows.
#[derive(Pooled, Default)]
#[pooled(
    capacity = 1024,
    max_capacity = 2_097_152,
    name = "peers-growing-order"
)]
struct GrowingOrder(Order);
tally_order!(GrowingOrder);

/// tally-pool's `Order` for W6 pre-allocated: 1,000,000 pre-allocated.
#[derive(Pooled, Default)]
#[pooled(
    capacity = 1_000_000,
    max_capacity = 2_097_152,
    name = "peers-preallocated-order"
)]
struct PreallocatedOrder(Order);
tally_order!(PreallocatedOrder);

/// tally-pool through a derived type's handles.
struct Tally<T>(PhantomData<fn() -> T>);

impl<T: TallyOrder> Tally<T> {
    /// Creates the type's pool now, so that the first timed acquire does not.
    fn new() -> Self {
        black_box(T::pool());
        Self(PhantomData)
    }
}

impl<T: TallyOrder> Peer for Tally<T> {
    type Item = Handle<T>;

    #[inline(always)]
    fn acquire(&self, i: u64) -> Handle<T> {
        match T::acquire_with(T::wrap(Order::new(i))) {
            Ok(handle) => handle,
            Err(err) => fatal(format_args!("tally-pool: acquire failed: {err}")),
        }
    }

    #[inline(always)]
    fn release(&self, item: Handle<T>, i: u64) {
        check(item.order(), i, "tally-pool");
        drop(item);
    }
}

remote_is_self!([T: TallyOrder] Tally<T>);

// ---------------------------------------------------------------------------------------
// The floor: a thread-local intrusive free list
// ---------------------------------------------------------------------------------------

/// A block handed out as a raw pointer (the floor, mimalloc, jemalloc).
struct Block(NonNull<Order>);

// SAFETY: a `Block` is the only reference to its object; whoever holds it owns the object,
// and every peer that hands out `Block`s takes them back on any thread.
unsafe impl Send for Block {}

impl Block {
    /// Writes `Order::new(i)` into a fresh block.
    ///
    /// # Safety
    ///
    /// `ptr` is an 8-aligned block of at least 64 bytes that nothing else uses.
    #[inline(always)]
    unsafe fn fill(ptr: NonNull<Order>, i: u64) -> Self {
        // SAFETY: the caller's guarantee.
        unsafe { ptr.as_ptr().write(Order::new(i)) };
        Self(ptr)
    }

    #[inline(always)]
    fn order(&self) -> &Order {
        // SAFETY: a `Block` always holds an `Order` written by `fill`, owned by its holder.
        unsafe { self.0.as_ref() }
    }
}

/// The floor: each thread has its own intrusive stack of cache-line-aligned blocks carved
/// from leaked slabs. As in `benches/block.rs`, a thread that frees blocks other threads
/// allocated (the W3 consumer) hands its whole stack to a global stash every 4,096 frees,
/// from which a thread with an empty stack refills (a new slab when the stash is empty).
/// Its W3/W4 numbers are not like-for-like: no per-object synchronisation at all.
struct Floor;

/// A free block of the floor, as seen by the stack.
#[repr(C)]
struct FreeNode {
    next: *mut FreeNode,
}

/// A block of a floor slab, cache-line aligned like the 64-byte blocks of mimalloc,
/// jemalloc and tally-pool.
#[repr(C, align(64))]
struct FloorSlot(MaybeUninit<Order>);

/// Blocks per slab the floor carves, and frees between two hand-overs in W3.
const FLOOR_BATCH: usize = 4096;

thread_local! {
    /// Top of this thread's floor stack.
    static FLOOR_HEAD: Cell<*mut FreeNode> = const { Cell::new(null_mut()) };
    /// Remote frees since this thread last handed its stack to the stash.
    static FLOOR_REMOTE: Cell<usize> = const { Cell::new(0) };
}

/// A whole floor stack, handed between threads through [`FLOOR_STASH`].
struct FreeList(NonNull<FreeNode>);

// SAFETY: a `FreeList` is the only handle to the blocks it links; whoever holds it owns them.
unsafe impl Send for FreeList {}

/// Stacks handed over by threads that free more than they allocate (or exit).
static FLOOR_STASH: Mutex<Vec<FreeList>> = Mutex::new(Vec::new());

impl Floor {
    /// Pops the first block of `list` and makes the rest this thread's stack.
    #[inline(always)]
    fn adopt(list: NonNull<FreeNode>) -> NonNull<Order> {
        // SAFETY: `list` is a free block this thread now owns; its first word is a link.
        let next = unsafe { (*list.as_ptr()).next };
        FLOOR_HEAD.set(next);
        list.cast()
    }

    /// Refills an empty stack: a stack from the stash, else a new slab (never returned).
    #[cold]
    #[inline(never)]
    fn refill() -> NonNull<Order> {
        let stashed = FLOOR_STASH
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        if let Some(FreeList(list)) = stashed {
            return Self::adopt(list);
        }
        let slab = Box::leak(Box::<[FloorSlot]>::new_uninit_slice(FLOOR_BATCH));
        let Some((first, rest)) = slab.split_first_mut() else {
            fatal(format_args!("floor: empty slab"))
        };
        let mut next: *mut FreeNode = null_mut();
        for block in rest.iter_mut().rev() {
            let node = block.as_mut_ptr().cast::<FreeNode>();
            // SAFETY: `node` is a fresh, leaked, 64-aligned 64-byte block owned by no one else.
            unsafe { node.write(FreeNode { next }) };
            next = node;
        }
        FLOOR_HEAD.set(next);
        NonNull::from(first).cast()
    }

    /// Hands this thread's whole stack to the stash.
    fn spill() {
        FLOOR_REMOTE.set(0);
        if let Some(list) = NonNull::new(FLOOR_HEAD.replace(null_mut())) {
            FLOOR_STASH
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(FreeList(list));
        }
    }
}

impl Peer for Floor {
    type Item = Block;

    #[inline(always)]
    fn acquire(&self, i: u64) -> Block {
        let ptr = match NonNull::new(FLOOR_HEAD.get()) {
            Some(head) => Self::adopt(head),
            None => Self::refill(),
        };
        // SAFETY: a free floor block: 64-aligned, 64 bytes, now owned by this thread alone.
        unsafe { Block::fill(ptr, i) }
    }

    #[inline(always)]
    fn release(&self, item: Block, i: u64) {
        check(item.order(), i, "floor");
        let node = item.0.cast::<FreeNode>().as_ptr();
        // SAFETY: the block is given back and ours now; its first word becomes the link.
        unsafe {
            node.write(FreeNode {
                next: FLOOR_HEAD.get(),
            })
        };
        FLOOR_HEAD.set(node);
    }

    fn thread_exit(&self) {
        Self::spill();
    }
}

impl Remote for Floor {
    type Releaser = Self;

    fn releaser(&self) -> &Self {
        self
    }

    #[inline(always)]
    fn release_remote(releaser: &Self, item: Block, i: u64) {
        releaser.release(item, i);
        let frees = FLOOR_REMOTE.get() + 1;
        if frees >= FLOOR_BATCH {
            Self::spill();
        } else {
            FLOOR_REMOTE.set(frees);
        }
    }

    fn remote_exit(_releaser: &Self) {
        Self::spill();
    }
}

// ---------------------------------------------------------------------------------------
// General-purpose allocators
// ---------------------------------------------------------------------------------------

/// `Box<Order>` with the process's allocator, which this binary leaves as the system one.
struct SystemBox;

impl Peer for SystemBox {
    type Item = Box<Order>;

    #[inline(always)]
    fn acquire(&self, i: u64) -> Box<Order> {
        Box::new(Order::new(i))
    }

    #[inline(always)]
    fn release(&self, item: Box<Order>, i: u64) {
        check(&item, i, "Box (system)");
        drop(item);
    }
}

remote_is_self!([] SystemBox);

/// A general-purpose allocator called through `GlobalAlloc` with `Order`'s layout.
struct Global<A> {
    alloc: A,
    label: &'static str,
}

/// The layout the allocators are asked for.
const LAYOUT: Layout = Layout::new::<Order>();

impl<A: GlobalAlloc> Peer for Global<A> {
    type Item = Block;

    #[inline(always)]
    fn acquire(&self, i: u64) -> Block {
        // SAFETY: `LAYOUT` has a non-zero size.
        let ptr = unsafe { self.alloc.alloc(LAYOUT) };
        let Some(ptr) = NonNull::new(ptr.cast::<Order>()) else {
            fatal(format_args!("{}: out of memory", self.label))
        };
        // SAFETY: a fresh allocation of `LAYOUT`: 64 bytes, aligned for `Order`, ours.
        unsafe { Block::fill(ptr, i) }
    }

    #[inline(always)]
    fn release(&self, item: Block, i: u64) {
        check(item.order(), i, self.label);
        // SAFETY: the block came from `alloc` on this allocator with `LAYOUT` and its only
        // reference is consumed here.
        unsafe { self.alloc.dealloc(item.0.as_ptr().cast(), LAYOUT) }
    }
}

remote_is_self!([A: GlobalAlloc + Sync] Global<A>);

// ---------------------------------------------------------------------------------------
// Pool and slab crates
// ---------------------------------------------------------------------------------------

// sharded-slab's `Pool` clears a value in place when it is released; an `Order` holds no
// resources, and every acquire overwrites it.
impl sharded_slab::Clear for Order {
    fn clear(&mut self) {}
}

/// sharded-slab's `Pool`: `create_with` initialises a slot and returns its key, `get`
/// reads it, `clear` releases it.
struct ShardedPool(sharded_slab::Pool<Order>);

impl Peer for ShardedPool {
    type Item = usize;

    #[inline(always)]
    fn acquire(&self, i: u64) -> usize {
        match self.0.create_with(|order| *order = Order::new(i)) {
            Some(key) => key,
            None => fatal(format_args!("sharded-slab Pool: full")),
        }
    }

    #[inline(always)]
    fn release(&self, key: usize, i: u64) {
        match self.0.get(key) {
            Some(order) => check(&order, i, "sharded-slab Pool"),
            None => fatal(format_args!("sharded-slab Pool: key {key} not found")),
        }
        if !self.0.clear(key) {
            fatal(format_args!("sharded-slab Pool: clear({key}) failed"));
        }
    }
}

remote_is_self!([] ShardedPool);

/// sharded-slab's `Slab`: `insert` returns a key, `take` removes the value.
struct ShardedSlab(sharded_slab::Slab<Order>);

impl Peer for ShardedSlab {
    type Item = usize;

    #[inline(always)]
    fn acquire(&self, i: u64) -> usize {
        match self.0.insert(Order::new(i)) {
            Some(key) => key,
            None => fatal(format_args!("sharded-slab Slab: full")),
        }
    }

    #[inline(always)]
    fn release(&self, key: usize, i: u64) {
        match self.0.take(key) {
            Some(order) => check(&order, i, "sharded-slab Slab"),
            None => fatal(format_args!("sharded-slab Slab: key {key} not found")),
        }
    }
}

remote_is_self!([] ShardedSlab);

/// Implements [`Peer`] for a pool whose `$pull` returns a guard that dereferences to an
/// `Order` and gives it back on drop.
macro_rules! guard_peer {
    ($ty:ident, $item:ty, $label:literal, |$pool:ident| $pull:expr) => {
        impl Peer for $ty {
            type Item = $item;

            #[inline(always)]
            fn acquire(&self, i: u64) -> $item {
                let $pool = &self.0;
                let mut guard = $pull;
                *guard = Order::new(i);
                guard
            }

            #[inline(always)]
            fn release(&self, guard: $item, i: u64) {
                check(&guard, i, $label);
                drop(guard);
            }
        }
    };
}

/// lockfree-object-pool's `LinearObjectPool`.
struct Linear(&'static lockfree_object_pool::LinearObjectPool<Order>);
guard_peer!(
    Linear,
    lockfree_object_pool::LinearReusable<'static, Order>,
    "lockfree-object-pool Linear",
    |pool| pool.pull()
);
remote_is_self!([] Linear);

/// lockfree-object-pool's `SpinLockObjectPool`.
struct SpinLock(&'static lockfree_object_pool::SpinLockObjectPool<Order>);
guard_peer!(
    SpinLock,
    lockfree_object_pool::SpinLockReusable<'static, Order>,
    "lockfree-object-pool SpinLock",
    |pool| pool.pull()
);
remote_is_self!([] SpinLock);

/// object-pool's `Pool` (a locked stack of values; `pull` makes a new one when empty).
struct ObjectPool(&'static object_pool::Pool<Order>);
guard_peer!(
    ObjectPool,
    object_pool::Reusable<'static, Order>,
    "object-pool",
    |pool| pool.pull(Order::default)
);
remote_is_self!([] ObjectPool);

/// How opool makes an `Order`.
struct OrderAllocator;

impl opool::PoolAllocator<Order> for OrderAllocator {
    fn allocate(&self) -> Order {
        Order::default()
    }
}

/// opool's concurrent `Pool` (values in a bounded queue; `get` makes a new one when empty).
struct Opool(&'static opool::Pool<OrderAllocator, Order>);
guard_peer!(
    Opool,
    opool::RefGuard<'static, OrderAllocator, Order>,
    "opool",
    |pool| pool.get()
);
remote_is_self!([] Opool);

/// nexus-pool's `sync::Pool`: bounded, one acquiring thread (it is `Send` but not `Sync`),
/// guards released from any thread.
struct NexusSync(nexus_pool::sync::Pool<Order>);
guard_peer!(
    NexusSync,
    nexus_pool::sync::Pooled<Order>,
    "nexus-pool sync",
    |pool| match pool.try_acquire() {
        Some(guard) => guard,
        None => fatal(format_args!("nexus-pool sync: exhausted")),
    }
);

impl Remote for NexusSync {
    /// The guards return themselves; the releasing thread needs no access to the pool.
    type Releaser = ();

    fn releaser(&self) -> &() {
        &()
    }

    #[inline(always)]
    fn release_remote(_releaser: &(), guard: nexus_pool::sync::Pooled<Order>, i: u64) {
        check(&guard, i, "nexus-pool sync");
        drop(guard);
    }
}

/// nexus-pool's `local::Pool`: single-threaded, grows by calling its factory.
struct NexusLocal(nexus_pool::local::Pool<Order>);
guard_peer!(
    NexusLocal,
    nexus_pool::local::Pooled<Order>,
    "nexus-pool local",
    |pool| pool.acquire()
);

/// slab's `Slab`: single-threaded, keys; in a `RefCell` because it needs `&mut`.
struct Slab(RefCell<slab::Slab<Order>>);

impl Peer for Slab {
    type Item = usize;

    #[inline(always)]
    fn acquire(&self, i: u64) -> usize {
        self.0.borrow_mut().insert(Order::new(i))
    }

    #[inline(always)]
    fn release(&self, key: usize, i: u64) {
        match self.0.borrow_mut().try_remove(key) {
            Some(order) => check(&order, i, "slab"),
            None => fatal(format_args!("slab: key {key} not found")),
        }
    }
}

/// nexus-slab's `bounded::Slab`: single-threaded, fixed capacity, 8-byte `Slot` handles.
struct NexusBounded(nexus_slab::bounded::Slab<Order>);

impl Peer for NexusBounded {
    type Item = nexus_slab::Slot<Order>;

    #[inline(always)]
    fn acquire(&self, i: u64) -> nexus_slab::Slot<Order> {
        match self.0.try_alloc(Order::new(i)) {
            Ok(slot) => slot,
            Err(_) => fatal(format_args!("nexus-slab: full")),
        }
    }

    #[inline(always)]
    fn release(&self, slot: nexus_slab::Slot<Order>, i: u64) {
        check(&slot, i, "nexus-slab");
        self.0.free(slot);
    }
}

/// nexus-slab's `unbounded::Slab`: single-threaded, grows by chunks (256 slots, its
/// default).
struct NexusUnbounded(nexus_slab::unbounded::Slab<Order>);

impl Peer for NexusUnbounded {
    type Item = nexus_slab::Slot<Order>;

    #[inline(always)]
    fn acquire(&self, i: u64) -> nexus_slab::Slot<Order> {
        self.0.alloc(Order::new(i))
    }

    #[inline(always)]
    fn release(&self, slot: nexus_slab::Slot<Order>, i: u64) {
        check(&slot, i, "nexus-slab");
        self.0.free(slot);
    }
}

// ---------------------------------------------------------------------------------------
// The catalogue
// ---------------------------------------------------------------------------------------

/// What a peer is, for the report's groupings and targets.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// tally-pool itself.
    Tally,
    /// The floor: not a pool.
    Floor,
    /// A general-purpose allocator.
    Allocator,
    /// A thread-safe pool or slab.
    Pool,
    /// A single-threaded pool or slab.
    Local,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Self::Tally => "tally",
            Self::Floor => "floor",
            Self::Allocator => "allocator",
            Self::Pool => "thread-safe pool",
            Self::Local => "single-thread pool",
        }
    }
}

/// Every peer.
#[derive(Clone, Copy, PartialEq, Eq)]
enum PeerId {
    Tally,
    Floor,
    SystemBox,
    Mimalloc,
    Jemalloc,
    ShardedPool,
    ShardedSlab,
    Linear,
    SpinLock,
    ObjectPool,
    Opool,
    NexusSync,
    NexusLocal,
    Slab,
    NexusSlab,
}

impl PeerId {
    const ALL: [Self; 15] = [
        Self::Tally,
        Self::Floor,
        Self::SystemBox,
        Self::Mimalloc,
        Self::Jemalloc,
        Self::ShardedPool,
        Self::ShardedSlab,
        Self::Linear,
        Self::SpinLock,
        Self::ObjectPool,
        Self::Opool,
        Self::NexusSync,
        Self::NexusLocal,
        Self::Slab,
        Self::NexusSlab,
    ];

    /// Label, kind, crate (for versions) and the API used.
    fn describe(self) -> (&'static str, Kind, &'static str, &'static str) {
        match self {
            Self::Tally => (
                "tally-pool",
                Kind::Tally,
                "tally-pool",
                "#[derive(Pooled)]: acquire_with, Handle released on drop",
            ),
            Self::Floor => (
                "floor",
                Kind::Floor,
                "",
                "thread-local intrusive free list (not a pool; no synchronisation)",
            ),
            Self::SystemBox => (
                "Box (system)",
                Kind::Allocator,
                "",
                "Box::new / drop with the system allocator (glibc malloc)",
            ),
            Self::Mimalloc => (
                "mimalloc",
                Kind::Allocator,
                "mimalloc",
                "GlobalAlloc::alloc / dealloc on MiMalloc",
            ),
            Self::Jemalloc => (
                "jemalloc",
                Kind::Allocator,
                "tikv-jemallocator",
                "GlobalAlloc::alloc / dealloc on Jemalloc",
            ),
            Self::ShardedPool => (
                "sharded-slab Pool",
                Kind::Pool,
                "sharded-slab",
                "Pool::create_with -> key, get, clear",
            ),
            Self::ShardedSlab => (
                "sharded-slab Slab",
                Kind::Pool,
                "sharded-slab",
                "Slab::insert -> key, take",
            ),
            Self::Linear => (
                "lockfree-object-pool Linear",
                Kind::Pool,
                "lockfree-object-pool",
                "LinearObjectPool::pull, guard dropped",
            ),
            Self::SpinLock => (
                "lockfree-object-pool SpinLock",
                Kind::Pool,
                "lockfree-object-pool",
                "SpinLockObjectPool::pull, guard dropped",
            ),
            Self::ObjectPool => (
                "object-pool",
                Kind::Pool,
                "object-pool",
                "Pool::pull(Order::default), guard dropped (the guard holds the value)",
            ),
            Self::Opool => (
                "opool",
                Kind::Pool,
                "opool",
                "concurrent Pool::get, guard dropped (the guard holds the value)",
            ),
            Self::NexusSync => (
                "nexus-pool sync",
                Kind::Pool,
                "nexus-pool",
                "sync::Pool::try_acquire, guard dropped on any thread (one acquiring thread; the guard holds the value)",
            ),
            Self::NexusLocal => (
                "nexus-pool local",
                Kind::Local,
                "nexus-pool",
                "local::Pool::acquire, guard dropped (the guard holds the value)",
            ),
            Self::Slab => (
                "slab",
                Kind::Local,
                "slab",
                "Slab::insert -> key, try_remove (in a RefCell)",
            ),
            Self::NexusSlab => (
                "nexus-slab",
                Kind::Local,
                "nexus-slab",
                "bounded::Slab::try_alloc / free (unbounded::Slab, chunks of 256, when growing)",
            ),
        }
    }

    fn label(self) -> &'static str {
        self.describe().0
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|&p| p == self).unwrap_or(0)
    }

    fn from_index(index: usize) -> Option<Self> {
        Self::ALL.get(index).copied()
    }
}

/// How a peer is built.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Setup {
    /// W1–W4: [`WORKLOAD_CAPACITY`] pre-allocated where the peer can pre-allocate.
    Workloads,
    /// W5 and W6 with growth: the peer's smallest start.
    Growing,
    /// W6 pre-allocated: [`MILLION`] pre-allocated where the peer can pre-allocate.
    Preallocated,
}

impl Setup {
    fn name(self) -> &'static str {
        match self {
            Self::Workloads => "workloads",
            Self::Growing => "growing",
            Self::Preallocated => "pre-allocated",
        }
    }
}

/// Leaks a pool: peers live for the rest of the process, and guards borrow them.
fn leak<T>(value: T) -> &'static T {
    Box::leak(Box::new(value))
}

/// Builds a peer, or says why it cannot be built that way.
fn build(id: PeerId, setup: Setup) -> Result<Box<dyn Runs>, &'static str> {
    let capacity = match setup {
        Setup::Workloads => WORKLOAD_CAPACITY,
        Setup::Growing => 0,
        Setup::Preallocated => MILLION,
    };
    let reset = |_: &mut Order| {};
    Ok(match id {
        PeerId::Tally => match setup {
            Setup::Workloads => Box::new(Tally::<PooledOrder>::new()),
            Setup::Growing => Box::new(Tally::<GrowingOrder>::new()),
            Setup::Preallocated => Box::new(Tally::<PreallocatedOrder>::new()),
        },
        PeerId::Floor => Box::new(Floor),
        PeerId::SystemBox => Box::new(SystemBox),
        PeerId::Mimalloc => Box::new(Global {
            alloc: mimalloc::MiMalloc,
            label: "mimalloc",
        }),
        PeerId::Jemalloc => Box::new(Global {
            alloc: tikv_jemallocator::Jemalloc,
            label: "jemalloc",
        }),
        PeerId::ShardedPool => Box::new(ShardedPool(sharded_slab::Pool::new())),
        PeerId::ShardedSlab => Box::new(ShardedSlab(sharded_slab::Slab::new())),
        PeerId::Linear => Box::new(Linear(leak(lockfree_object_pool::LinearObjectPool::new(
            Order::default,
            reset,
        )))),
        PeerId::SpinLock => Box::new(SpinLock(leak(
            lockfree_object_pool::SpinLockObjectPool::new(Order::default, reset),
        ))),
        PeerId::ObjectPool => Box::new(ObjectPool(leak(object_pool::Pool::new(
            capacity,
            Order::default,
        )))),
        PeerId::Opool => Box::new(Opool(leak(if capacity == 0 {
            // Values beyond the queue's size are dropped on release, not kept.
            opool::Pool::new(1024, OrderAllocator)
        } else {
            opool::Pool::new_prefilled(capacity, OrderAllocator)
        }))),
        PeerId::NexusSync => {
            if capacity == 0 {
                return Err("fixed capacity: sync::Pool cannot grow");
            }
            Box::new(NexusSync(nexus_pool::sync::Pool::new(
                capacity,
                Order::default,
                reset,
            )))
        }
        PeerId::NexusLocal => Box::new(NexusLocal(if capacity == 0 {
            nexus_pool::local::Pool::new(Order::default, reset)
        } else {
            nexus_pool::local::Pool::with_capacity(capacity, Order::default, reset)
        })),
        PeerId::Slab => Box::new(Slab(RefCell::new(slab::Slab::with_capacity(capacity)))),
        PeerId::NexusSlab => {
            if capacity == 0 {
                // SAFETY: nexus-slab's contract: every slot is freed to this slab, on the
                // thread that made it (slots are `!Send`), and the slab is never shared.
                // The peer is used from the thread that built it only.
                Box::new(NexusUnbounded(unsafe {
                    nexus_slab::unbounded::Slab::with_chunk_capacity(256)
                }))
            } else {
                // SAFETY: as above.
                Box::new(NexusBounded(unsafe {
                    nexus_slab::bounded::Slab::with_capacity(capacity)
                }))
            }
        }
    })
}

// ---------------------------------------------------------------------------------------
// Running a peer: the object-safe face of every peer
// ---------------------------------------------------------------------------------------

/// A runner: `run(n)` does `n` iterations of a workload and returns their time.
type Runner<'a> = &'a mut dyn FnMut(u64) -> Duration;

/// What a workload session hands its runner to.
type Body<'a> = &'a mut dyn FnMut(Runner<'_>);

/// A built peer, behind a trait object; each method is monomorphic inside.
trait Runs {
    /// Bytes of what the user holds per live object.
    fn handle_bytes(&self) -> usize;

    /// Sets up workload `w` (scratch space, a helper thread) and calls `body` with a
    /// runner, or says why the peer cannot run `w`.
    fn session(&self, w: Workload, body: Body<'_>) -> Result<(), &'static str>;

    /// W5: acquires `n` objects and returns the resident bytes with them all live.
    fn memory(&self, n: usize) -> Option<u64>;

    /// W6: times `n` single acquires (after one untimed pass of `n` if `warm`), in ticks.
    fn latency(&self, n: usize, warm: bool) -> Vec<u64>;
}

/// Implements [`Runs`] for a peer type: `shared` peers run all four workloads, `remote`
/// peers W1–W3 (with the reason they cannot run W4), `local` peers W1–W2.
macro_rules! runs {
    (@common) => {
        fn handle_bytes(&self) -> usize {
            size_of::<<Self as Peer>::Item>()
        }

        fn memory(&self, n: usize) -> Option<u64> {
            memory(self, n)
        }

        fn latency(&self, n: usize, warm: bool) -> Vec<u64> {
            latency(self, n, warm)
        }
    };
    ([$($g:tt)*] $ty:ty, shared) => {
        impl<$($g)*> Runs for $ty {
            runs!(@common);

            fn session(&self, w: Workload, body: Body<'_>) -> Result<(), &'static str> {
                match w {
                    Workload::Churn => churn_session(self, body),
                    Workload::Burst => burst_session(self, body),
                    Workload::Pipeline => pipeline_session(self, body),
                    Workload::Contended => contended_session(self, body),
                }
                Ok(())
            }
        }
    };
    ([$($g:tt)*] $ty:ty, remote, $w4:literal) => {
        impl<$($g)*> Runs for $ty {
            runs!(@common);

            fn session(&self, w: Workload, body: Body<'_>) -> Result<(), &'static str> {
                match w {
                    Workload::Churn => churn_session(self, body),
                    Workload::Burst => burst_session(self, body),
                    Workload::Pipeline => pipeline_session(self, body),
                    Workload::Contended => return Err($w4),
                }
                Ok(())
            }
        }
    };
    ([$($g:tt)*] $ty:ty, local, $why:literal) => {
        impl<$($g)*> Runs for $ty {
            runs!(@common);

            fn session(&self, w: Workload, body: Body<'_>) -> Result<(), &'static str> {
                match w {
                    Workload::Churn => churn_session(self, body),
                    Workload::Burst => burst_session(self, body),
                    Workload::Pipeline | Workload::Contended => return Err($why),
                }
                Ok(())
            }
        }
    };
}

runs!([T: TallyOrder] Tally<T>, shared);
runs!([] Floor, shared);
runs!([] SystemBox, shared);
runs!([A: GlobalAlloc + Sync] Global<A>, shared);
runs!([] ShardedPool, shared);
runs!([] ShardedSlab, shared);
runs!([] Linear, shared);
runs!([] SpinLock, shared);
runs!([] ObjectPool, shared);
runs!([] Opool, shared);
runs!(
    [] NexusSync,
    remote,
    "one acquiring thread: sync::Pool is Send but not Sync, so two threads cannot acquire from one pool"
);
runs!(
    [] NexusLocal,
    local,
    "single-threaded: local::Pool and its guards are neither Send nor Sync"
);
runs!(
    [] Slab,
    local,
    "single-threaded: Slab needs &mut to insert and remove (not Sync)"
);
runs!(
    [] NexusBounded,
    local,
    "single-threaded: the slab is not Sync and its Slot handles are not Send"
);
runs!(
    [] NexusUnbounded,
    local,
    "single-threaded: the slab is not Sync and its Slot handles are not Send"
);

// ---------------------------------------------------------------------------------------
// Workloads W1–W4
// ---------------------------------------------------------------------------------------

/// W1 (and each W4 thread): `n` times acquire, write, read, release.
#[inline(always)]
fn churn<P: Peer>(peer: &P, n: u64) {
    for i in 0..n {
        let item = peer.acquire(i);
        peer.release(item, i);
    }
}

/// W2: acquires [`BURST`] objects into `live`, then releases them all, in the same order.
#[inline(always)]
fn burst<P: Peer>(peer: &P, live: &mut Vec<P::Item>) {
    live.clear();
    for i in 0..BURST as u64 {
        live.push(peer.acquire(i));
    }
    for (i, item) in (0u64..).zip(live.drain(..)) {
        peer.release(item, i);
    }
}

/// W3 producer: acquires `n` objects, pushing each onto `queue`.
fn produce<P: Peer>(peer: &P, queue: &ArrayQueue<P::Item>, n: u64) {
    for i in 0..n {
        let mut item = peer.acquire(i);
        let mut spins = 0u32;
        while let Err(back) = queue.push(item) {
            item = back;
            backoff(&mut spins);
        }
    }
}

/// W3 consumer: pops `n` objects from `queue`, reads and releases each.
fn consume<P: Remote>(releaser: &P::Releaser, queue: &ArrayQueue<P::Item>, n: u64) {
    for i in 0..n {
        let mut spins = 0u32;
        let item = loop {
            match queue.pop() {
                Some(item) => break item,
                None => backoff(&mut spins),
            }
        };
        P::release_remote(releaser, item, i);
    }
}

fn churn_session<P: Peer>(peer: &P, body: Body<'_>) {
    body(&mut |n| {
        let start = Instant::now();
        churn(peer, n);
        start.elapsed()
    });
}

fn burst_session<P: Peer>(peer: &P, body: Body<'_>) {
    let mut live = Vec::with_capacity(BURST);
    body(&mut |n| {
        let start = Instant::now();
        for _ in 0..n {
            burst(peer, &mut live);
        }
        start.elapsed()
    });
}

fn pipeline_session<P: Remote>(peer: &P, body: Body<'_>)
where
    P::Item: Send,
{
    let queue = ArrayQueue::<P::Item>::new(QUEUE_CAPACITY);
    let releaser = peer.releaser();
    let queue_ref = &queue;
    with_helper(
        || P::remote_exit(releaser),
        |n| consume::<P>(releaser, queue_ref, n),
        |helper| {
            body(&mut |n| {
                let start = Instant::now();
                helper.start(n);
                produce(peer, queue_ref, n);
                helper.wait();
                start.elapsed()
            })
        },
    );
}

fn contended_session<P: Peer + Sync>(peer: &P, body: Body<'_>) {
    with_helper(
        || peer.thread_exit(),
        |n| churn(peer, n),
        |helper| {
            body(&mut |n| {
                let start = Instant::now();
                helper.start(n);
                churn(peer, n);
                helper.wait();
                start.elapsed()
            })
        },
    );
}

/// The timed workloads of the main process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Workload {
    Churn,
    Burst,
    Pipeline,
    Contended,
}

impl Workload {
    const ALL: [Self; 4] = [Self::Churn, Self::Burst, Self::Pipeline, Self::Contended];

    fn id(self) -> &'static str {
        match self {
            Self::Churn => "W1",
            Self::Burst => "W2",
            Self::Pipeline => "W3",
            Self::Contended => "W4",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Churn => "churn",
            Self::Burst => "burst",
            Self::Pipeline => "pipeline",
            Self::Contended => "contended",
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Self::Churn | Self::Burst | Self::Pipeline => "ns per object",
            Self::Contended => "ns per pair of operations (one on each thread)",
        }
    }

    /// Objects (W4: pairs of operations) one iteration stands for.
    fn objects_per_iteration(self) -> u64 {
        match self {
            Self::Burst => BURST as u64,
            Self::Churn | Self::Pipeline | Self::Contended => 1,
        }
    }

    /// Iterations per sample of the interleaved pass.
    /// Iterations of the first warm-up run of an interleaved sample.
    fn first_iterations(self, mode: Mode) -> u64 {
        match (self, mode) {
            (Self::Burst, _) => 1,
            (_, Mode::Test) => 1000,
            (_, Mode::Full | Mode::Quick) => 10_000,
        }
    }
}

// ---------------------------------------------------------------------------------------
// W5 and W6 (in child processes)
// ---------------------------------------------------------------------------------------

/// Resident bytes of this process, from `/proc/self/statm`.
fn resident_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = text.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * PAGE_BYTES)
}

/// W5: acquires `n` objects and reads the resident size with all of them live.
fn memory<P: Peer>(peer: &P, n: usize) -> Option<u64> {
    let mut items = Vec::with_capacity(n);
    for i in 0..n as u64 {
        items.push(peer.acquire(i));
    }
    let resident = resident_bytes();
    black_box(&items);
    // The child exits next: releasing a million objects is not part of the measurement.
    core::mem::forget(items);
    resident
}

/// W6: `n` acquires timed one by one, in ticks of [`now`], with all objects kept live.
fn latency<P: Peer>(peer: &P, n: usize, warm: bool) -> Vec<u64> {
    let mut items = Vec::with_capacity(n);
    // Touched now, so that recording a time never faults a page in.
    let mut ticks = vec![1u64; n];
    if warm {
        for i in 0..n as u64 {
            items.push(peer.acquire(i));
        }
        for (i, item) in (0u64..).zip(items.drain(..)) {
            peer.release(item, i);
        }
    }
    for (i, slot) in (0u64..).zip(ticks.iter_mut()) {
        let start = now();
        let item = peer.acquire(i);
        let end = now();
        *slot = end.wrapping_sub(start);
        items.push(item);
    }
    black_box(&items);
    core::mem::forget(items);
    ticks
}

/// Whether [`now`] reads the TSC (an invariant one), else `Instant`.
fn use_tsc() -> bool {
    static TSC: OnceLock<bool> = OnceLock::new();
    *TSC.get_or_init(|| {
        cfg!(target_arch = "x86_64")
            && std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|info| {
                info.lines()
                    .find(|line| line.starts_with("flags"))
                    .is_some_and(|flags| {
                        let has = |f: &str| flags.split_whitespace().any(|w| w == f);
                        has("constant_tsc") && has("nonstop_tsc")
                    })
            })
    })
}

/// The time base of `Instant`-based ticks.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// A timestamp: TSC ticks (`lfence; rdtsc; lfence`, so that the timed call neither starts
/// before the first read nor is still running at the second), or `Instant` nanoseconds.
#[inline(always)]
fn now() -> u64 {
    compiler_fence(Ordering::SeqCst);
    let t = if use_tsc() {
        tsc()
    } else {
        u64::try_from(epoch().elapsed().as_nanos()).unwrap_or(u64::MAX)
    };
    compiler_fence(Ordering::SeqCst);
    t
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn tsc() -> u64 {
    use core::arch::x86_64::{_mm_lfence, _rdtsc};
    // SAFETY: `lfence` is SSE2, which every x86_64 processor has; it only orders.
    unsafe { _mm_lfence() };
    // SAFETY: `rdtsc` exists on every x86_64 processor and only reads the time-stamp counter.
    let t = unsafe { _rdtsc() };
    // SAFETY: as for the first `lfence`.
    unsafe { _mm_lfence() };
    t
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn tsc() -> u64 {
    0
}

/// Nanoseconds per tick of [`now`], measured against `Instant` over `window`.
fn calibrate(window: Duration) -> f64 {
    if !use_tsc() {
        return 1.0;
    }
    let (t0, c0) = (Instant::now(), now());
    while t0.elapsed() < window {
        spin_loop();
    }
    let (c1, t1) = (now(), Instant::now());
    let ticks = c1.wrapping_sub(c0).max(1);
    t1.duration_since(t0).as_secs_f64() * 1e9 / ticks as f64
}

/// The value at quantile `q` of sorted `values`.
fn quantile(sorted: &[u64], q: f64) -> u64 {
    let len = sorted.len();
    if len == 0 {
        return 0;
    }
    let rank = ((q * len as f64).ceil() as usize).clamp(1, len);
    sorted.get(rank - 1).copied().unwrap_or(0)
}

/// Runs one W5 or W6 measurement in this (fresh) process and prints it as one JSON line.
fn child(task: &str) {
    let mut words = task.split_whitespace();
    let what = words.next().unwrap_or("");
    let id = words
        .next()
        .and_then(|w| w.parse().ok())
        .and_then(PeerId::from_index);
    let Some(id) = id else {
        fatal(format_args!("bad {CHILD_ENV} task {task:?}"))
    };
    let label = Json::str(id.label());
    let line = match what {
        "memory" => {
            let n: usize = words.next().and_then(|w| w.parse().ok()).unwrap_or(MILLION);
            let Some(before) = resident_bytes() else {
                println!(
                    "{}",
                    Json::obj(vec![
                        ("peer", label),
                        ("na", Json::str("no /proc/self/statm on this system"))
                    ])
                );
                return;
            };
            let (runs, setup) = match build(id, Setup::Growing) {
                Ok(runs) => (runs, Setup::Growing),
                Err(_) => match build(id, Setup::Preallocated) {
                    Ok(runs) => (runs, Setup::Preallocated),
                    Err(why) => fatal(format_args!("{}: {why}", id.label())),
                },
            };
            let after = runs.memory(n).unwrap_or(0);
            let handle_bytes = runs.handle_bytes();
            Json::obj(vec![
                ("peer", label),
                ("setup", Json::str(setup.name())),
                ("objects", Json::Int(n as u64)),
                ("payload_bytes", Json::Int((n * ORDER_BYTES) as u64)),
                ("handle_bytes", Json::Int(handle_bytes as u64)),
                ("handle_array_bytes", Json::Int((n * handle_bytes) as u64)),
                ("resident_before", Json::Int(before)),
                ("resident_after", Json::Int(after)),
            ])
        }
        "latency" => {
            let setup = match words.next() {
                Some("growing") => Setup::Growing,
                _ => Setup::Preallocated,
            };
            let n: usize = words.next().and_then(|w| w.parse().ok()).unwrap_or(MILLION);
            let ns_per_tick = calibrate(Duration::from_millis(50));
            let runs = match build(id, setup) {
                Ok(runs) => runs,
                Err(why) => {
                    println!(
                        "{}",
                        Json::obj(vec![
                            ("peer", label),
                            ("mode", Json::str(setup.name())),
                            ("na", Json::str(why)),
                        ])
                    );
                    return;
                }
            };
            // The timer's own cost: two reads back to back.
            let mut empty: Vec<u64> = (0..100_000)
                .map(|_| {
                    let start = now();
                    now().wrapping_sub(start)
                })
                .collect();
            empty.sort_unstable();
            // The counter's step: the smallest gap between two distinct readings.
            let resolution = empty
                .windows(2)
                .filter_map(|pair| match (pair.first(), pair.last()) {
                    (Some(&a), Some(&b)) if b > a => Some(b - a),
                    _ => None,
                })
                .min()
                .unwrap_or(1);
            let mut ticks = runs.latency(n, setup == Setup::Preallocated);
            ticks.sort_unstable();
            let ns = |t: u64| Json::Num(t as f64 * ns_per_tick);
            let mean = ticks.iter().map(|&t| t as f64).sum::<f64>() / n.max(1) as f64;
            Json::obj(vec![
                ("peer", label),
                ("mode", Json::str(setup.name())),
                ("n", Json::Int(n as u64)),
                (
                    "timer",
                    Json::str(if use_tsc() { "rdtsc" } else { "Instant" }),
                ),
                ("ns_per_tick", Json::Num(ns_per_tick)),
                ("timer_overhead_p50", ns(quantile(&empty, 0.5))),
                ("timer_resolution", ns(resolution)),
                ("mean", Json::Num(mean * ns_per_tick)),
                ("p50", ns(quantile(&ticks, 0.5))),
                ("p99", ns(quantile(&ticks, 0.99))),
                ("p999", ns(quantile(&ticks, 0.999))),
                ("p9999", ns(quantile(&ticks, 0.9999))),
                ("max", ns(ticks.last().copied().unwrap_or(0))),
            ])
        }
        _ => fatal(format_args!("bad {CHILD_ENV} task {task:?}")),
    };
    println!("{line}");
}

/// Runs `task` in a fresh copy of this binary and returns the JSON line it prints.
fn spawn_child(id: PeerId, task: &str) -> Json {
    let failed = |why: String| {
        eprintln!("{}: {why}", id.label());
        Json::obj(vec![
            ("peer", Json::str(id.label())),
            ("na", Json::Str(why)),
        ])
    };
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(err) => return failed(format!("cannot find this binary: {err}")),
    };
    let output = match Command::new(exe)
        .env(CHILD_ENV, task)
        .stdin(Stdio::null())
        .output()
    {
        Ok(output) => output,
        Err(err) => return failed(format!("cannot start a child: {err}")),
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    match stdout.lines().rev().find(|line| line.starts_with('{')) {
        Some(line) if output.status.success() => {
            println!("  {line}");
            Json::Raw(line.to_owned())
        }
        _ => {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let last = stderr.lines().last().unwrap_or("").trim().to_owned();
            failed(format!("child failed ({}): {last}", output.status))
        }
    }
}

// ---------------------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------------------

/// A JSON value, written by hand (the bench has no serde).
enum Json {
    Null,
    Bool(bool),
    Int(u64),
    Num(f64),
    Str(String),
    /// Already JSON (a child's line).
    Raw(String),
    Arr(Vec<Json>),
    Obj(Vec<(&'static str, Json)>),
}

impl Json {
    fn str(s: &str) -> Self {
        Self::Str(s.to_owned())
    }

    fn obj(fields: Vec<(&'static str, Json)>) -> Self {
        Self::Obj(fields)
    }

    fn opt_str(s: Option<String>) -> Self {
        s.map_or(Self::Null, Self::Str)
    }
}

fn write_json_str(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    f.write_str("\"")?;
    for c in s.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            c if (c as u32) < 0x20 => write!(f, "\\u{:04x}", c as u32)?,
            c => write!(f, "{c}")?,
        }
    }
    f.write_str("\"")
}

impl fmt::Display for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Null => f.write_str("null"),
            Self::Bool(b) => write!(f, "{b}"),
            Self::Int(n) => write!(f, "{n}"),
            Self::Num(x) if x.is_finite() => write!(f, "{x:.3}"),
            Self::Num(_) => f.write_str("null"),
            Self::Str(s) => write_json_str(f, s),
            Self::Raw(s) => f.write_str(s),
            Self::Arr(items) => {
                f.write_str("[")?;
                for (k, item) in items.iter().enumerate() {
                    if k > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str("]")
            }
            Self::Obj(fields) => {
                f.write_str("{")?;
                for (k, (key, value)) in fields.iter().enumerate() {
                    if k > 0 {
                        f.write_str(",")?;
                    }
                    write_json_str(f, key)?;
                    write!(f, ":{value}")?;
                }
                f.write_str("}")
            }
        }
    }
}

/// How long and how much.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Full,
    Quick,
    Test,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::Quick => "quick",
            Self::Test => "test",
        }
    }

    fn rounds(self) -> usize {
        match self {
            Self::Full => 15,
            Self::Quick => 5,
            Self::Test => 1,
        }
    }

    /// Warm-up and length of one sample of the interleaved pass.
    fn interleaved_times(self) -> (Duration, Duration) {
        match self {
            Self::Full => (Duration::from_millis(50), Duration::from_millis(100)),
            Self::Quick => (Duration::from_millis(15), Duration::from_millis(25)),
            Self::Test => (Duration::ZERO, Duration::ZERO),
        }
    }

    /// Acquires timed in W6.
    fn latency_n(self) -> usize {
        match self {
            Self::Full => MILLION,
            Self::Quick => 200_000,
            Self::Test => 10_000,
        }
    }

    /// Fresh processes per peer and mode in W6. A single process's p99.9 moves by tens of
    /// nanoseconds with what else the machine does; the published percentiles are the
    /// medians over these runs, which visit every peer in turn.
    fn latency_runs(self) -> usize {
        match self {
            Self::Full => 3,
            Self::Quick | Self::Test => 1,
        }
    }

    /// Live objects in W5 (lockfree-object-pool's `LinearObjectPool` scans its pages on every
    /// acquire, so a million live takes it a minute and more: the quick mode uses fewer).
    fn memory_n(self) -> usize {
        match self {
            Self::Full => MILLION,
            Self::Quick => 200_000,
            Self::Test => 10_000,
        }
    }
}

/// One peer's samples of one workload, or why it has none.
struct Samples {
    /// Nanoseconds per object, one per round.
    ns: Vec<f64>,
    /// Objects timed, one per round.
    objects: Vec<u64>,
    /// CPUs' worth of time other processes used during the sample, one per round.
    foreign: Vec<f64>,
    na: Option<&'static str>,
    criterion_median: Option<f64>,
}

/// A sample is quiet when other processes used less than this many CPUs during it.
const QUIET_CPUS: f64 = 0.5;

/// Quiet samples a cell needs before its workload's table is drawn from quiet samples only.
const QUIET_SAMPLES: usize = 3;

/// Clock ticks per second of `/proc/stat` and `/proc/self/stat` (`USER_HZ`, 100 on Linux).
const USER_HZ: f64 = 100.0;

/// Busy ticks of the whole machine and ticks used by this process (all its threads).
fn cpu_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal: all but idle and iowait are busy.
    let busy = [0, 1, 2, 5, 6, 7]
        .iter()
        .map(|&k| cpu.get(k).copied().unwrap_or(0))
        .sum();
    let own = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name: state is field 3, utime 14 and stime 15.
    let fields: Vec<&str> = own.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((busy, utime + stime))
}

/// CPUs' worth of time that other processes used between `before` and `after`.
fn foreign_cpus(before: Option<(u64, u64)>, after: Option<(u64, u64)>, wall: Duration) -> f64 {
    match (before, after) {
        (Some((busy0, own0)), Some((busy1, own1))) => {
            let other = busy1.saturating_sub(busy0) as f64 - own1.saturating_sub(own0) as f64;
            (other / USER_HZ / wall.as_secs_f64().max(1e-3)).max(0.0)
        }
        _ => f64::NAN,
    }
}

fn sorted(values: &[f64]) -> Vec<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v
}

fn median(values: &[f64]) -> f64 {
    let v = sorted(values);
    let len = v.len();
    match (v.get(len / 2), len % 2) {
        (Some(&hi), 0) => v.get(len / 2 - 1).map_or(hi, |&lo| (lo + hi) / 2.0),
        (Some(&mid), _) => mid,
        (None, _) => f64::NAN,
    }
}

impl Samples {
    fn quiet_count(&self) -> usize {
        self.foreign.iter().filter(|&&f| f < QUIET_CPUS).count()
    }

    /// The samples published: the quiet ones, or all.
    fn chosen(&self, quiet: bool) -> Vec<f64> {
        let v: Vec<f64> = self
            .ns
            .iter()
            .zip(&self.foreign)
            .filter(|&(_, &f)| !quiet || f < QUIET_CPUS)
            .map(|(&ns, _)| ns)
            .collect();
        sorted(&v)
    }

    fn to_json(&self, id: PeerId, quiet: bool) -> Json {
        let mut fields = vec![("peer", Json::str(id.label()))];
        if let Some(na) = self.na {
            fields.push(("na", Json::str(na)));
            return Json::obj(fields);
        }
        let v = self.chosen(quiet);
        fields.push(("median", Json::Num(median(&v))));
        fields.push(("min", Json::Num(v.first().copied().unwrap_or(f64::NAN))));
        fields.push(("max", Json::Num(v.last().copied().unwrap_or(f64::NAN))));
        fields.push(("samples_used", Json::Int(v.len() as u64)));
        let all = sorted(&self.ns);
        fields.push(("all_median", Json::Num(median(&all))));
        fields.push((
            "all_min",
            Json::Num(all.first().copied().unwrap_or(f64::NAN)),
        ));
        fields.push((
            "all_max",
            Json::Num(all.last().copied().unwrap_or(f64::NAN)),
        ));
        let mut objects = self.objects.clone();
        objects.sort_unstable();
        fields.push((
            "objects_per_sample_median",
            objects
                .get(objects.len() / 2)
                .map_or(Json::Null, |&n| Json::Int(n)),
        ));
        fields.push((
            "criterion_median",
            self.criterion_median.map_or(Json::Null, Json::Num),
        ));
        fields.push((
            "samples",
            Json::Arr(self.ns.iter().map(|&x| Json::Num(x)).collect()),
        ));
        fields.push((
            "foreign_cpus",
            Json::Arr(self.foreign.iter().map(|&x| Json::Num(x)).collect()),
        ));
        Json::obj(fields)
    }
}

/// The built peers of the main process.
type Built = Vec<(PeerId, Result<Box<dyn Runs>, &'static str>)>;

/// Criterion's groups; returns, per workload and peer, the median ns per object over
/// criterion's measurement samples.
fn criterion_groups(
    criterion: &mut Criterion,
    peers: &Built,
    sample_size: usize,
) -> Vec<Vec<Option<f64>>> {
    let mut all = Vec::new();
    for w in Workload::ALL {
        let mut group = criterion.benchmark_group(format!("peers {} {}", w.id(), w.name()));
        if w == Workload::Burst {
            group.throughput(Throughput::Elements(BURST as u64));
            // One iteration is a whole burst, which takes a slow peer a second: the same
            // iteration count for every sample, not criterion's linear ramp.
            group.sampling_mode(SamplingMode::Flat);
        }
        let mut medians = Vec::new();
        for (id, built) in peers {
            let Ok(runs) = built else {
                medians.push(None);
                continue;
            };
            let mut records: Vec<(u64, Duration)> = Vec::new();
            let _ = runs.session(w, &mut |run| {
                group.bench_function(id.label(), |b| {
                    b.iter_custom(|iters| {
                        let elapsed = run(iters);
                        records.push((iters, elapsed));
                        elapsed
                    })
                });
            });
            // Criterion calls the routine during warm-up, then once per sample.
            let per_object: Vec<f64> = records
                .iter()
                .rev()
                .take(sample_size)
                .map(|&(iters, d)| {
                    d.as_secs_f64() * 1e9 / (iters.max(1) * w.objects_per_iteration()) as f64
                })
                .collect();
            medians.push((per_object.len() == sample_size).then(|| median(&per_object)));
        }
        group.finish();
        all.push(medians);
    }
    all
}

/// The interleaved pass: `rounds` rounds, each visiting every workload and every peer (in
/// an order rotated each round), one sample each.
fn interleaved(peers: &Built, mode: Mode) -> Vec<Vec<Samples>> {
    let mut table: Vec<Vec<Samples>> = Workload::ALL
        .iter()
        .map(|_| {
            peers
                .iter()
                .map(|(_, built)| Samples {
                    ns: Vec::new(),
                    objects: Vec::new(),
                    foreign: Vec::new(),
                    na: built.as_ref().err().copied(),
                    criterion_median: None,
                })
                .collect()
        })
        .collect();
    let count = peers.len();
    for round in 0..mode.rounds() {
        for (w, row) in Workload::ALL.iter().zip(table.iter_mut()) {
            for k in 0..count {
                let p = (k + round) % count;
                let (Some((_, Ok(runs))), Some(cell)) = (peers.get(p), row.get_mut(p)) else {
                    continue;
                };
                let mut sample = None;
                let result = runs.session(*w, &mut |run| {
                    // Warm up (thread caches, the new helper thread, where the scheduler puts
                    // it) for a while, doubling the runs, then size the timed run from the
                    // last warm-up run so that every sample lasts about as long.
                    let (warm_up, length) = mode.interleaved_times();
                    let start = Instant::now();
                    let mut n = w.first_iterations(mode);
                    let mut last = run(n);
                    while start.elapsed() < warm_up {
                        n = n.saturating_mul(2);
                        last = run(n);
                    }
                    let per_iteration = last.as_secs_f64().max(1e-9) / n as f64;
                    let iterations = ((length.as_secs_f64() / per_iteration) as u64)
                        .clamp(1, 1 << 30)
                        .max(if mode == Mode::Test { n } else { 1 });
                    let before = cpu_ticks();
                    let elapsed = run(iterations);
                    let foreign = foreign_cpus(before, cpu_ticks(), elapsed);
                    let objects = iterations * w.objects_per_iteration();
                    sample = Some((
                        elapsed.as_secs_f64() * 1e9 / objects as f64,
                        objects,
                        foreign,
                    ));
                });
                match (result, sample) {
                    (Err(why), _) => cell.na = Some(why),
                    (Ok(()), Some((ns, objects, foreign))) => {
                        cell.ns.push(ns);
                        cell.objects.push(objects);
                        cell.foreign.push(foreign);
                    }
                    (Ok(()), None) => {}
                }
            }
        }
        eprintln!(
            "interleaved pass: round {} of {} done",
            round + 1,
            mode.rounds()
        );
    }
    table
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The first line of a command's output, if it runs.
fn command_line(program: &str, args: &[&str]) -> Option<String> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    output
        .status
        .success()
        .then(|| text.lines().next().unwrap_or("").trim().to_owned())
}

fn machine() -> Json {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_owned());
    let processors = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let read = |path: &str| {
        std::fs::read_to_string(path)
            .ok()
            .map(|s| s.trim().to_owned())
    };
    let git = command_line("git", &["rev-parse", "--short", "HEAD"]).map(|head| {
        let dirty = Command::new("git")
            .args(["status", "--porcelain", "--untracked-files=no"])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .is_ok_and(|o| !o.stdout.is_empty());
        if dirty {
            format!("{head} (with uncommitted changes)")
        } else {
            head
        }
    });
    Json::obj(vec![
        (
            "nproc",
            Json::Int(thread::available_parallelism().map_or(0, |n| n.get() as u64)),
        ),
        ("processors", Json::Int(processors as u64)),
        ("cpu", Json::opt_str(model)),
        ("kernel", Json::opt_str(read("/proc/sys/kernel/osrelease"))),
        (
            "transparent_hugepage",
            Json::opt_str(read("/sys/kernel/mm/transparent_hugepage/enabled")),
        ),
        ("rustc", Json::opt_str(command_line("rustc", &["-V"]))),
        ("git", Json::opt_str(git)),
        ("tsc", Json::Bool(use_tsc())),
    ])
}

/// Where the results go: `TALLY_PEERS_JSON`, else `peers.json` in cargo's target directory
/// (found above this binary by its `CACHEDIR.TAG`).
fn output_path() -> PathBuf {
    if let Some(path) = std::env::var_os("TALLY_PEERS_JSON") {
        return PathBuf::from(path);
    }
    let target = std::env::current_exe().ok().and_then(|exe| {
        exe.ancestors()
            .find(|dir| dir.join("CACHEDIR.TAG").is_file())
            .map(PathBuf::from)
    });
    target
        .unwrap_or_else(|| PathBuf::from("target"))
        .join("peers.json")
}

fn main() {
    if let Ok(task) = std::env::var(CHILD_ENV) {
        child(&task);
        return;
    }
    let args: Vec<String> = std::env::args().collect();
    let has = |flag: &str| args.iter().any(|a| a == flag);
    let mode = if has("--test") || !has("--bench") {
        Mode::Test
    } else if has("--quick") || std::env::var("TALLY_BENCH_QUICK").is_ok_and(|v| v == "1") {
        Mode::Quick
    } else {
        Mode::Full
    };
    let started = unix_now();
    let load_start = load_average();
    let (warm_up, measurement, sample_size) = match mode {
        Mode::Full => (Duration::from_secs(1), Duration::from_secs(2), 20),
        Mode::Quick | Mode::Test => (Duration::from_millis(50), Duration::from_millis(200), 10),
    };
    let clock = Instant::now();
    let mut phases: Vec<(&'static str, Json)> = Vec::new();
    let mut phase = |name: &'static str| {
        let seconds = clock.elapsed().as_secs_f64();
        eprintln!("peers: {name} done after {seconds:.0} s");
        phases.push((name, Json::Num(seconds)));
    };

    let peers: Built = PeerId::ALL
        .iter()
        .map(|&id| (id, build(id, Setup::Workloads)))
        .collect();
    let mut criterion = Criterion::default()
        .warm_up_time(warm_up)
        .measurement_time(measurement)
        .sample_size(sample_size)
        .nresamples(if mode == Mode::Full { 20_000 } else { 1_000 })
        .configure_from_args();
    let criterion_medians = criterion_groups(&mut criterion, &peers, sample_size);
    criterion.final_summary();
    if has("--list") {
        return;
    }
    let load_criterion = load_average();
    phase("criterion");

    let mut table = interleaved(&peers, mode);
    for (row, medians) in table.iter_mut().zip(&criterion_medians) {
        for (cell, m) in row.iter_mut().zip(medians) {
            cell.criterion_median = *m;
        }
    }
    let load_interleaved = load_average();
    phase("interleaved");
    println!();
    println!(
        "Interleaved pass ({} mode, {} rounds): median (min-max)",
        mode.name(),
        mode.rounds()
    );
    // A workload's table comes from quiet samples only if every peer has enough of them.
    let quiet: Vec<bool> = table
        .iter()
        .map(|row| {
            row.iter()
                .filter(|cell| cell.na.is_none())
                .all(|cell| cell.quiet_count() >= QUIET_SAMPLES)
        })
        .collect();
    for ((w, row), &quiet) in Workload::ALL.iter().zip(&table).zip(&quiet) {
        println!(
            "{} {} ({}), {}:",
            w.id(),
            w.name(),
            w.unit(),
            if quiet {
                "quiet samples"
            } else {
                "all samples (too few quiet ones)"
            }
        );
        for ((id, _), cell) in peers.iter().zip(row) {
            match cell.na {
                Some(why) => println!("  {:<30} n/a: {why}", id.label()),
                None => {
                    let v = cell.chosen(quiet);
                    println!(
                        "  {:<30} {:>9.1} ({:.1}-{:.1})",
                        id.label(),
                        median(&v),
                        v.first().copied().unwrap_or(f64::NAN),
                        v.last().copied().unwrap_or(f64::NAN)
                    );
                }
            }
        }
    }

    println!();
    println!(
        "W5 memory: {} live objects, one fresh process per peer",
        mode.memory_n()
    );
    let memory: Vec<Json> = PeerId::ALL
        .iter()
        .map(|&id| spawn_child(id, &format!("memory {} {}", id.index(), mode.memory_n())))
        .collect();
    let load_memory = load_average();
    phase("memory");
    println!();
    println!(
        "W6 latency: {} single acquires, {} fresh process(es) per peer and mode, in rounds \
         that visit every peer in turn",
        mode.latency_n(),
        mode.latency_runs()
    );
    let mut latency = Vec::new();
    for _ in 0..mode.latency_runs() {
        for setup in [Setup::Growing, Setup::Preallocated] {
            for id in PeerId::ALL {
                let task = format!(
                    "latency {} {} {}",
                    id.index(),
                    if setup == Setup::Growing {
                        "growing"
                    } else {
                        "preallocated"
                    },
                    mode.latency_n()
                );
                latency.push(spawn_child(id, &task));
            }
        }
    }
    let load_end = load_average();
    phase("latency");

    let peers_json = Json::Arr(
        peers
            .iter()
            .map(|(id, built)| {
                let (label, kind, krate, api) = id.describe();
                Json::obj(vec![
                    ("label", Json::str(label)),
                    ("kind", Json::str(kind.name())),
                    ("crate", Json::str(krate)),
                    ("api", Json::str(api)),
                    (
                        "handle_bytes",
                        built
                            .as_ref()
                            .map_or(Json::Null, |r| Json::Int(r.handle_bytes() as u64)),
                    ),
                ])
            })
            .collect(),
    );
    let workloads_json = Json::Arr(
        Workload::ALL
            .iter()
            .zip(&table)
            .zip(&quiet)
            .map(|((w, row), &quiet)| {
                Json::obj(vec![
                    ("id", Json::str(w.id())),
                    ("name", Json::str(w.name())),
                    ("unit", Json::str(w.unit())),
                    ("selection", Json::str(if quiet { "quiet" } else { "all" })),
                    (
                        "results",
                        Json::Arr(
                            peers
                                .iter()
                                .zip(row)
                                .map(|((id, _), cell)| cell.to_json(*id, quiet))
                                .collect(),
                        ),
                    ),
                ])
            })
            .collect(),
    );
    let load = |l: Option<String>| Json::opt_str(l);
    let results = Json::obj(vec![
        ("schema", Json::Int(1)),
        ("mode", Json::str(mode.name())),
        ("started_unix", Json::Int(started)),
        ("finished_unix", Json::Int(unix_now())),
        ("machine", machine()),
        ("seconds_after", Json::obj(phases)),
        (
            "load_average",
            Json::obj(vec![
                ("start", load(load_start)),
                ("after_criterion", load(load_criterion)),
                ("after_interleaved", load(load_interleaved)),
                ("after_memory", load(load_memory)),
                ("end", load(load_end)),
            ]),
        ),
        (
            "parameters",
            Json::obj(vec![
                ("order_bytes", Json::Int(ORDER_BYTES as u64)),
                ("burst", Json::Int(BURST as u64)),
                ("queue_capacity", Json::Int(QUEUE_CAPACITY as u64)),
                ("workload_capacity", Json::Int(WORKLOAD_CAPACITY as u64)),
                ("rounds", Json::Int(mode.rounds() as u64)),
                ("quiet_cpus", Json::Num(QUIET_CPUS)),
                ("quiet_samples", Json::Int(QUIET_SAMPLES as u64)),
                (
                    "sample_ms",
                    Json::Num(mode.interleaved_times().1.as_secs_f64() * 1e3),
                ),
                (
                    "warm_up_ms",
                    Json::Num(mode.interleaved_times().0.as_secs_f64() * 1e3),
                ),
                ("criterion_samples", Json::Int(sample_size as u64)),
                ("memory_objects", Json::Int(mode.memory_n() as u64)),
                ("latency_acquires", Json::Int(mode.latency_n() as u64)),
                ("latency_runs", Json::Int(mode.latency_runs() as u64)),
                ("tally_growing_capacity", Json::Int(1024)),
            ]),
        ),
        ("peers", peers_json),
        ("workloads", workloads_json),
        ("memory", Json::Arr(memory)),
        ("latency", Json::Arr(latency)),
    ]);
    if mode == Mode::Test {
        println!("test mode: results not written");
        return;
    }
    let path = output_path();
    match std::fs::write(&path, format!("{results}\n")) {
        Ok(()) => println!(
            "\nwrote {}; `python3 benches/report.py` turns it into BENCHMARKS.md",
            path.display()
        ),
        Err(err) => fatal(format_args!("cannot write {}: {err}", path.display())),
    }
}
