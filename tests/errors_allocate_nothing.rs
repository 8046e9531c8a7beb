//! A pool that refuses allocates nothing to say so: its errors carry the pool's interned
//! name, copied, not a `String` cloned on the error path. The global allocator here is
//! `TallyAlloc` (see `tests/wrapped`) wrapped in a counter of the calling thread's
//! allocations.
#![allow(clippy::unwrap_used, clippy::panic)]

use core::alloc::{GlobalAlloc, Layout};
use core::cell::Cell;

use tally_pool::block::{BlockPool, BlockPoolConfig};
use tally_pool::{Pool, PoolConfig, PoolError, RawHandle};

mod wrapped;
use wrapped::{Inner, INNER};

thread_local! {
    /// Allocations (and reallocations) made by this thread.
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

struct Counting(Inner);

fn count() {
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

// SAFETY: every call is passed on unchanged to the inner allocator, which upholds the
// `GlobalAlloc` contract; counting touches only a thread-local `Cell` with no destructor.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's contract, passed on.
        unsafe { self.0.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's contract, passed on.
        unsafe { self.0.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { self.0.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: the caller's contract, passed on.
        unsafe { self.0.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting(INNER);

/// Runs `f` twice (the first run may set up what a thread needs once, as a cache) and
/// returns what the second returned with the allocations it made.
fn allocations_of<R>(mut f: impl FnMut() -> R) -> (R, u64) {
    drop(f());
    let before = ALLOCATIONS.with(Cell::get);
    let result = f();
    (result, ALLOCATIONS.with(Cell::get) - before)
}

const fn copy<T: Copy>() {}
const _: () = copy::<PoolError>();

#[test]
fn an_exhausted_block_pool_allocates_nothing_to_refuse() {
    let config = BlockPoolConfig::new(Layout::new::<[u64; 8]>())
        .name("errors-block-exhausted")
        .capacity(1)
        .max_capacity(1);
    let pool = BlockPool::new(config).unwrap();
    let block = pool.allocate().unwrap();
    let (result, allocations) = allocations_of(|| pool.allocate());
    match result {
        Err(PoolError::Exhausted {
            pool: name,
            max_capacity: 1,
        }) => {
            assert_eq!(name, "errors-block-exhausted");
        }
        other => panic!("expected Exhausted, got {other:?}"),
    }
    assert_eq!(allocations, 0, "the refusal allocated");
    // SAFETY: `block` came from `pool` and is freed once.
    unsafe { pool.free(block).unwrap() };
}

#[test]
fn an_exhausted_typed_pool_allocates_nothing_to_refuse() {
    let pool: &'static Pool<[u64; 8]> = Pool::new(
        PoolConfig::new("errors-typed-exhausted")
            .capacity(1)
            .max_capacity(1),
    )
    .unwrap();
    let held = pool.acquire_with([1; 8]).unwrap();
    let (result, allocations) = allocations_of(|| pool.acquire_with([2; 8]));
    match result {
        Err(err) => {
            assert_eq!(err.value, [2; 8], "the value comes back");
            match err.error {
                PoolError::Exhausted { pool: name, .. } => {
                    assert_eq!(name.as_str(), "errors-typed-exhausted");
                }
                other => panic!("expected Exhausted, got {other:?}"),
            }
        }
        Ok(_) => panic!("a pool at its cap of 1 handed out a second value"),
    }
    assert_eq!(allocations, 0, "the refusal allocated");
    drop(held);
}

#[test]
fn a_forged_token_is_refused_without_allocating() {
    let pool: &'static Pool<u64> = Pool::new(PoolConfig::new("errors-forged-token")).unwrap();
    let (result, allocations) = allocations_of(|| pool.redeem(RawHandle::from(0x5a5a_5a5a)));
    match result {
        Err(PoolError::InvalidHandle { pool: name } | PoolError::WrongPool { pool: name }) => {
            assert_eq!(name, "errors-forged-token");
        }
        other => panic!("expected a refused token, got {other:?}"),
    }
    assert_eq!(allocations, 0, "the refusal allocated");
}
