//! One function per fast path, each as small as a user's wrapper can be, with a plain
//! `#[inline(never)]` boundary so that it keeps its own symbol. `check.sh` reads their sizes
//! from the symbol table: what the compiler inlines into a caller of `acquire`,
//! `acquire_with`, `acquire_with_fn`, a handle's drop and the block pool's `allocate` and
//! `free`.

use std::hint::black_box;
use std::ptr::NonNull;

use tally_pool::block::{BlockPool, BlockPoolConfig, GuardLevel};
use tally_pool::{Handle, PoolError, Pooled};

/// A 64-byte value, as in the benchmarks' W1.
#[derive(Pooled, Default, Clone, Copy)]
#[pooled(capacity = 1024)]
pub struct Order {
    fields: [u64; 8],
}

#[no_mangle]
#[inline(never)]
pub fn hot_acquire() -> Result<Handle<Order>, PoolError> {
    Order::acquire()
}

#[no_mangle]
#[inline(never)]
pub fn hot_acquire_with(i: u64) -> Option<Handle<Order>> {
    Order::acquire_with(Order { fields: [i; 8] }).ok()
}

#[no_mangle]
#[inline(never)]
pub fn hot_acquire_with_fn(i: u64) -> Result<Handle<Order>, PoolError> {
    Order::acquire_with_fn(|| Order { fields: [i; 8] })
}

#[no_mangle]
#[inline(never)]
pub fn hot_release(h: Handle<Order>) {
    drop(h);
}

#[no_mangle]
#[inline(never)]
pub fn hot_allocate(pool: &BlockPool) -> Result<NonNull<u8>, PoolError> {
    pool.allocate()
}

/// # Safety
///
/// `block` came from `pool` and is freed once.
#[no_mangle]
#[inline(never)]
pub unsafe fn hot_free(pool: &BlockPool, block: NonNull<u8>) -> Result<(), PoolError> {
    // SAFETY: the caller's contract.
    unsafe { pool.free(block) }
}

// Wrappers as a user writes them: a plain `#[inline]`, an error or a wrong value reported
// with `panic!`, each called from two places (a function called once is inlined whatever its
// size). `check.sh` fails if any of them keeps a symbol of its own, that is if the compiler
// did not inline it on its own: the error's drop on the unwinding path and its copy once
// made these callers too large for that.
#[inline]
fn plain_acquire(i: u64) -> Handle<Order> {
    match Order::acquire() {
        Ok(mut h) => {
            h.fields = [i; 8];
            h
        }
        Err(e) => panic!("acquire: {e}"),
    }
}

#[inline]
fn plain_acquire_with(i: u64) -> Handle<Order> {
    match Order::acquire_with(Order { fields: [i; 8] }) {
        Ok(h) => h,
        Err(e) => panic!("acquire_with: {e}"),
    }
}

#[inline]
fn plain_acquire_with_fn(i: u64) -> Handle<Order> {
    match Order::acquire_with_fn(|| Order { fields: [i; 8] }) {
        Ok(h) => h,
        Err(e) => panic!("acquire_with_fn: {e}"),
    }
}

/// Reads the value back, panics unless it holds `i` in every field, and drops the handle:
/// the drop's unwinding path (if the check panics) and its slow path once made this wrapper
/// too large to inline.
#[inline]
fn plain_release(h: Handle<Order>, i: u64) {
    let diff = h.fields.iter().fold(0, |d, &f| d | (f ^ i));
    if diff != 0 {
        panic!("released {i}: holds {:?}", h.fields);
    }
    drop(h);
}

#[inline(never)]
fn plain_one(i: u64) -> u64 {
    let (a, b, c) = (plain_acquire(i), plain_acquire_with(i), plain_acquire_with_fn(i));
    let sum = a.fields[0] + b.fields[1] + c.fields[2];
    plain_release(a, i);
    sum
}

#[inline(never)]
fn plain_many(n: u64) -> u64 {
    let mut held = Vec::new();
    for i in 0..n {
        held.push(plain_acquire(i));
        held.push(plain_acquire_with(i));
        held.push(plain_acquire_with_fn(i));
    }
    let sum = held.iter().map(|h| h.fields[3]).sum();
    for (k, h) in held.into_iter().enumerate() {
        plain_release(h, k as u64 / 3);
    }
    sum
}

fn main() -> Result<(), PoolError> {
    black_box(plain_one(black_box(7)) + plain_many(black_box(100)));
    let config = BlockPoolConfig::new(std::alloc::Layout::new::<[u64; 8]>())
        .name("hot-path")
        .guard(GuardLevel::Off);
    let pool = BlockPool::new(config)?;
    for i in 0..1000 {
        let a = hot_acquire()?;
        let b = hot_acquire_with(i).ok_or(PoolError::InvalidHandle {
            pool: "hot-path".into(),
        })?;
        let c = hot_acquire_with_fn(i)?;
        black_box((&a.fields, &b.fields, &c.fields));
        hot_release(a);
        hot_release(b);
        hot_release(c);
        let block = hot_allocate(&pool)?;
        // SAFETY: allocated just above from `pool`, freed once.
        unsafe { hot_free(&pool, block)? };
    }
    println!("hot paths ran");
    Ok(())
}
