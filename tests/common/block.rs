//! Block pools: a small pool, and allocating, tagging and freeing blocks the test holds.

use core::alloc::Layout;
use core::ptr::NonNull;
use std::collections::HashSet;

use tally_pool::block::{BlockPool, BlockPoolConfig};
use tally_pool::PoolError;

use super::errors::expect_exhausted;
use super::stamp::{check, stamp};

/// The block type of [`config`]: 32 bytes, 8-aligned.
pub(crate) type Block = [u64; 4];

/// A pool of [`Block`]s named `name`.
pub(crate) fn config(name: &str) -> BlockPoolConfig {
    BlockPoolConfig::new(Layout::new::<Block>()).name(name)
}

/// A pool of [`Block`]s named `name` that hands out at most `max_capacity` at a time.
pub(crate) fn pool_capped(name: &str, max_capacity: usize) -> BlockPool {
    BlockPool::new(config(name).max_capacity(max_capacity)).unwrap()
}

/// The block at `addr`, an address a pool handed out.
pub(crate) fn block(addr: usize) -> NonNull<u8> {
    NonNull::new(addr as *mut u8).unwrap()
}

/// Frees a block the caller owns: allocated from `pool`, and no free of it has returned
/// `Ok` since (a refused free leaves it the caller's). Once this returns `Ok` the caller
/// does not use the block again.
pub(crate) fn free_owned(pool: &BlockPool, block: NonNull<u8>) -> Result<(), PoolError> {
    // SAFETY: callers pass a block they own, as said above, and stop using it once this
    // returns `Ok`: `BlockPool::free`'s contract.
    unsafe { pool.free(block) }
}

/// Allocates `n` blocks of at least a word each, tagging each with its address; returns
/// their addresses, each the caller's to free.
#[track_caller]
pub(crate) fn allocate_n(pool: &BlockPool, n: usize) -> Vec<usize> {
    let addrs: Vec<usize> = (0..n)
        .map(|i| {
            let b = pool
                .allocate()
                .unwrap_or_else(|e| panic!("allocation {i} of {n}: {e}"));
            stamp(b, 1, b.as_ptr() as u64);
            b.as_ptr() as usize
        })
        .collect();
    let distinct: HashSet<_> = addrs.iter().collect();
    assert_eq!(distinct.len(), n, "no block handed out twice");
    addrs
}

/// Allocates until the pool, capped at `cap`, says `Exhausted`, tagging each block as
/// [`allocate_n`] does; returns the addresses.
#[track_caller]
pub(crate) fn allocate_until_exhausted(pool: &BlockPool, cap: usize) -> Vec<usize> {
    let mut got = Vec::new();
    loop {
        let result = pool.allocate();
        let Ok(b) = result else {
            expect_exhausted(&result, cap, "allocating until exhausted");
            return got;
        };
        stamp(b, 1, b.as_ptr() as u64);
        got.push(b.as_ptr() as usize);
        assert!(got.len() <= cap, "more than the cap of {cap} handed out");
    }
}

/// Checks the tags of blocks the calling thread owns and frees them: each allocated from
/// `pool` by [`allocate_n`] or [`allocate_until_exhausted`] (here, or on a thread that
/// handed it over and kept no copy) and not freed since.
#[track_caller]
pub(crate) fn free_all(pool: &BlockPool, addrs: impl IntoIterator<Item = usize>) {
    for a in addrs {
        check(block(a), 1, a as u64, "a block lost its tag while live");
        free_owned(pool, block(a)).unwrap();
    }
}

/// Panics unless an allocation from `pool`, capped at `cap`, is refused with `Exhausted`.
#[track_caller]
pub(crate) fn assert_exhausted(pool: &BlockPool, cap: usize) {
    expect_exhausted(&pool.allocate(), cap, "an allocation at the cap");
}
