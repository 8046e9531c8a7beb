//! Typed pools: a configuration, and what tests read off pools and handles.

use tally_pool::{Handle, Pool, PoolConfig};

/// A pool named `name` that maps `capacity` blocks up front and holds at most
/// `max_capacity` values.
pub(crate) fn config(name: &str, capacity: usize, max_capacity: usize) -> PoolConfig {
    PoolConfig::new(name)
        .capacity(capacity)
        .max_capacity(max_capacity)
}

/// Values live in `pool`, lent ones included.
pub(crate) fn live<T: 'static>(pool: &Pool<T>) -> u64 {
    pool.stats().live_blocks
}

/// Where a handle's value is: two live handles never share it.
pub(crate) fn addr<T: 'static>(h: &Handle<T>) -> usize {
    let r: &T = h;
    r as *const T as usize
}
