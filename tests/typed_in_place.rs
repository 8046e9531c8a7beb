//! `acquire_with_fn`: the value is built by a closure, in the block on the fast path; a
//! closure that panics loses no block, on the fast path and the slow one.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};

use tally_pool::{Pool, PoolConfig, PoolError, Pooled};

#[derive(Pooled, Default, Debug)]
#[pooled(capacity = 64, max_capacity = 64)]
struct Wide {
    words: [u64; 8],
}

#[test]
fn the_value_is_the_closures_on_every_path() {
    // The first call on this thread binds the cache (slow path); the rest pop from it.
    let held: Vec<_> = (0..64u64)
        .map(|i| Wide::acquire_with_fn(|| Wide { words: [i; 8] }).unwrap())
        .collect();
    for (i, h) in held.iter().enumerate() {
        assert_eq!(h.words, [i as u64; 8]);
    }
    // At the cap: the error, and the closure's value dropped.
    let refused = Wide::acquire_with_fn(|| Wide { words: [9; 8] });
    assert!(
        matches!(refused, Err(PoolError::Exhausted { .. })),
        "{refused:?}"
    );
    drop(held);
    assert_eq!(Wide::pool().stats().live_blocks, 0);
}

#[derive(Pooled, Default)]
struct Fragile {
    _words: [u64; 8],
}

#[test]
fn a_panicking_closure_loses_no_block() {
    // Once to bind this thread's cache, so that the next calls take the fast path.
    drop(Fragile::acquire_with_fn(Fragile::default).unwrap());
    for _ in 0..100 {
        let panicked = catch_unwind(AssertUnwindSafe(|| {
            Fragile::acquire_with_fn(|| panic!("a constructor that fails"))
        }));
        assert!(panicked.is_err());
    }
    let s = Fragile::pool().stats();
    assert_eq!(s.live_blocks, 0, "{s:?}");
    // Every block taken for a panicking closure went back: the pool serves them again.
    let held: Vec<_> = (0..100).map(|_| Fragile::acquire().unwrap()).collect();
    assert_eq!(Fragile::pool().stats().live_blocks, 100);
    drop(held);
}

#[test]
fn a_runtime_pool_builds_then_moves() {
    let pool = Pool::<String>::new(
        PoolConfig::new("in-place-strings")
            .capacity(1)
            .max_capacity(1),
    )
    .unwrap();
    let a = pool.acquire_with_fn(|| "a".repeat(3)).unwrap();
    assert_eq!(*a, "aaa");
    assert!(matches!(
        pool.acquire_with_fn(|| String::from("b")),
        Err(PoolError::Exhausted { .. })
    ));
    let panicked = catch_unwind(|| pool.acquire_with_fn(|| -> String { panic!("no") }));
    assert!(panicked.is_err());
    drop(a);
    assert_eq!(pool.stats().live_blocks, 0);
}

/// Used by one test only: live counts of a type other tests share would race.
#[derive(Pooled, Default)]
struct Nested {
    _words: [u64; 8],
}

#[test]
fn a_closure_may_use_the_same_pool() {
    // Bind the cache, so that the outer call takes the fast path and holds a popped block
    // while the closure acquires and releases from the same cache.
    drop(Nested::acquire_with_fn(Nested::default).unwrap());
    let before = Nested::pool().stats().live_blocks;
    let outer = Nested::acquire_with_fn(|| {
        drop(Nested::acquire_with_fn(Nested::default).unwrap());
        let _dropped_here = Nested::acquire().unwrap();
        Nested::default()
    })
    .unwrap();
    assert_eq!(Nested::pool().stats().live_blocks, before + 1);
    drop(outer);
    assert_eq!(Nested::pool().stats().live_blocks, before);
}
