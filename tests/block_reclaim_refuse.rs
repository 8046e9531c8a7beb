//! `on_critical = Refuse`, end to end with the pressure monitor: while the level is
//! `Critical`, a refusing pool serves every block it has and refuses to map a new chunk
//! with `PoolError::Pressure` (block and typed pools), a pool that grows keeps growing, and
//! once the monitor stops the refusing pool grows again.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use core::alloc::Layout;
use core::ptr::NonNull;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tally_pool::block::{BlockPool, BlockPoolConfig, GuardLevel};
use tally_pool::pressure::{self, PressureConfig, PressureLevel, PressureMonitor};
use tally_pool::{OnCritical, Pool, PoolConfig, PoolError};

/// One monitor per process: the tests of this file take turns.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// A monitor whose budget puts the process at `Critical` from its first tick, and whose
/// thread then stays out of the way.
fn critical() -> PressureMonitor {
    let config = PressureConfig::default()
        .budget(1)
        .interval(Duration::from_secs(3600));
    let monitor = PressureMonitor::start(config).unwrap();
    assert_eq!(pressure::level(), PressureLevel::Critical);
    monitor
}

fn config(name: &str, on_critical: OnCritical) -> BlockPoolConfig {
    BlockPoolConfig::new(Layout::new::<[u64; 8]>())
        .name(name)
        .guard(GuardLevel::Off)
        .on_critical(on_critical)
}

/// Frees a block allocated from `pool` and not freed since.
fn free(pool: &BlockPool, block: NonNull<u8>) {
    // SAFETY: every caller frees each block it allocated exactly once.
    unsafe { pool.free(block) }.unwrap();
}

#[test]
#[cfg_attr(miri, ignore = "starts the monitor thread")]
fn a_refusing_block_pool_refuses_to_grow_only_while_critical() {
    let _serial = serial();
    // One chunk, mapped at creation and kept as the reserve.
    let probe = BlockPool::new(config("refuse-probe", OnCritical::Grow).capacity(1)).unwrap();
    let per_chunk = probe.stats().capacity;
    let refusing =
        BlockPool::new(config("refusing", OnCritical::Refuse).capacity(per_chunk)).unwrap();
    let growing = BlockPool::new(config("growing", OnCritical::Grow).capacity(per_chunk)).unwrap();
    let monitor = critical();

    let mut held = Vec::new();
    let refused = loop {
        match refusing.allocate() {
            Ok(b) => held.push(b),
            Err(e) => break e,
        }
        assert!(held.len() <= per_chunk, "grew under Critical");
    };
    assert_eq!(held.len(), per_chunk, "every block it had was served");
    assert_eq!(
        refused,
        PoolError::Pressure {
            pool: "refusing".into(),
            level: PressureLevel::Critical,
        }
    );
    assert!(refused.to_string().contains("`refusing`"), "{refused}");
    let s = refusing.stats();
    assert_eq!((s.chunks, s.pressure_refusals), (1, 1), "{s:?}");
    // A block given back is served again without growing.
    free(&refusing, held.pop().unwrap());
    held.push(refusing.allocate().unwrap());

    // The default grows as at any level.
    let grown: Vec<NonNull<u8>> = (0..per_chunk + 1)
        .map(|_| growing.allocate().unwrap())
        .collect();
    assert!(growing.stats().chunks >= 2);
    assert_eq!(growing.stats().pressure_refusals, 0);

    drop(monitor);
    assert_eq!(pressure::level(), PressureLevel::Normal);
    held.push(refusing.allocate().unwrap());
    assert_eq!(refusing.stats().chunks, 2, "it grows again");
    for b in held {
        free(&refusing, b);
    }
    for b in grown {
        free(&growing, b);
    }
}

#[test]
#[cfg_attr(miri, ignore = "starts the monitor thread")]
fn a_refusing_typed_pool_returns_the_pressure_error() {
    let _serial = serial();
    let pool: &'static Pool<[u64; 8]> = Pool::new(
        PoolConfig::new("typed-refusing")
            .capacity(1)
            .per_node(false)
            .on_critical(OnCritical::Refuse),
    )
    .unwrap();
    let monitor = critical();
    let mut held = Vec::new();
    let refused = loop {
        match pool.acquire() {
            Ok(h) => held.push(h),
            Err(e) => break e,
        }
        assert!(held.len() < 1 << 20, "never refused");
    };
    assert!(
        matches!(
            &refused,
            PoolError::Pressure { pool, level: PressureLevel::Critical } if pool == "typed-refusing"
        ),
        "{refused:?}"
    );
    assert_eq!(pool.stats().chunks, 1);
    drop(monitor);
    held.push(pool.acquire().unwrap());
    assert_eq!(pool.stats().chunks, 2);
}

/// A derived type that refuses to grow under Critical pressure.
#[derive(tally_pool::Pooled, Default)]
#[pooled(capacity = 1, on_critical = "refuse", per_node = false)]
struct Refusing {
    _payload: [u64; 8],
}

/// A derived type that keeps 40,000 values (several chunks) through any pressure.
#[derive(tally_pool::Pooled, Default)]
#[pooled(capacity = 1, reserve = 40_000, per_node = false)]
struct Kept {
    _payload: [u64; 8],
}

#[test]
#[cfg_attr(miri, ignore = "starts the monitor thread")]
fn the_derive_keys_on_critical_and_reserve_reach_the_pool() {
    use tally_pool::stats::{Source as _, Urgency};
    use tally_pool::Pooled as _;
    let _serial = serial();

    let held: Vec<_> = (0..100_000).map(|_| Kept::acquire().unwrap()).collect();
    drop(held);
    let grown = Kept::pool().stats();
    Kept::pool().reclaim_idle(Urgency::Critical, Duration::ZERO);
    let kept = Kept::pool().stats();
    assert!(kept.chunks < grown.chunks, "{grown:?} -> {kept:?}");
    assert!(kept.capacity >= 40_000, "{grown:?} -> {kept:?}");

    let monitor = critical();
    let mut held = Vec::new();
    let refused = loop {
        match Refusing::acquire() {
            Ok(h) => held.push(h),
            Err(e) => break e,
        }
        assert!(held.len() < 1 << 20, "never refused");
    };
    assert!(
        matches!(&refused, PoolError::Pressure { pool, .. } if pool == "Refusing"),
        "{refused:?}"
    );
    assert_eq!(Refusing::pool().stats().chunks, 1);
    drop(monitor);
}
