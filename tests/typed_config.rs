//! Configuration limits of typed pools: the cap a raw handle can number.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use tally_pool::typed::MAX_CAPACITY;
use tally_pool::{Pool, PoolConfig, PoolError, Pooled};

/// 64 bytes: 16,383 blocks a chunk, which does not divide 2^25.
#[derive(Default)]
#[allow(dead_code)]
struct Wide([u64; 8]);

#[test]
fn a_runtime_cap_that_whole_chunks_would_overrun_is_refused_with_the_limit() {
    let err = Pool::<Wide>::new(
        PoolConfig::new("wide")
            .capacity(0)
            .max_capacity(MAX_CAPACITY),
    )
    .unwrap_err();
    let PoolError::InvalidConfig { reason, .. } = &err else {
        panic!("{err}")
    };
    let most = MAX_CAPACITY / 16_383 * 16_383;
    assert!(reason.contains(&most.to_string()), "{reason}");
    // The limit it names is accepted.
    let pool = Pool::<Wide>::new(PoolConfig::new("wide").capacity(0).max_capacity(most)).unwrap();
    assert_eq!(pool.stats().max_capacity, most);
}

#[derive(Pooled, Default)]
#[pooled(capacity = 0, max_capacity = 33_554_432)]
#[allow(dead_code)]
struct WideStatic([u64; 8]);

#[test]
fn a_derived_cap_at_the_limit_is_lowered_to_whole_chunks_and_works() {
    let h = WideStatic::acquire().unwrap();
    let cap = WideStatic::pool().stats().max_capacity;
    assert!(
        cap <= MAX_CAPACITY && cap > MAX_CAPACITY - 16_383,
        "cap {cap}"
    );
    let raw = tally_pool::Handle::into_raw(h);
    assert!(WideStatic::redeem(raw).is_ok());
}

#[test]
fn a_cap_above_the_token_range_is_refused() {
    let err = Pool::<u64>::new(
        PoolConfig::new("huge")
            .capacity(0)
            .max_capacity(MAX_CAPACITY + 1),
    )
    .unwrap_err();
    assert!(matches!(err, PoolError::InvalidConfig { .. }), "{err}");
}
