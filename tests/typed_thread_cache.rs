//! The per-type thread cache of derived types (`Pooled::acquire` through the type's own
//! `thread_local!`):
//!
//! - a `Default` that panics on the fast path, after the block was popped, loses no block;
//! - threads that bind the cache and exit strand no block, and counts stay exact;
//! - a thread-local destructor that runs after the thread's cache table is gone can still
//!   acquire and release (the per-type cell was unbound, so nothing dangles);
//! - a guarded derived type never takes the unguarded fast path: its guard still catches
//!   an overwritten canary.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;

use tally_pool::{Handle, PoolError, Pooled, RawHandle};

/// When set, `Flaky::default` panics.
static PANIC_IN_DEFAULT: AtomicBool = AtomicBool::new(false);

const FLAKY_CAP: usize = 64;

#[derive(Pooled, Debug)]
#[pooled(capacity = 64, max_capacity = 64, guard = "off", per_node = false)]
struct Flaky {
    value: u64,
}

impl Default for Flaky {
    fn default() -> Self {
        assert!(
            !PANIC_IN_DEFAULT.load(Ordering::Relaxed),
            "Flaky::default asked to panic"
        );
        Self { value: 7 }
    }
}

#[test]
fn a_panicking_default_on_the_fast_path_loses_no_block() {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    // Warm this thread's cache so that the next acquires pop without a slow path.
    let warm: Vec<Handle<Flaky>> = (0..8).map(|_| Flaky::acquire().unwrap()).collect();
    drop(warm);
    PANIC_IN_DEFAULT.store(true, Ordering::Relaxed);
    for _ in 0..4 * FLAKY_CAP {
        assert!(catch_unwind(AssertUnwindSafe(Flaky::acquire)).is_err());
    }
    PANIC_IN_DEFAULT.store(false, Ordering::Relaxed);
    std::panic::set_hook(hook);
    // Every block of the capped pool is still there.
    let all: Vec<Handle<Flaky>> = (0..FLAKY_CAP).map(|_| Flaky::acquire().unwrap()).collect();
    assert!(all.iter().all(|h| h.value == 7));
    assert!(matches!(Flaky::acquire(), Err(PoolError::Exhausted { .. })));
    assert_eq!(Flaky::pool().stats().live_blocks, FLAKY_CAP as u64);
    drop(all);
    assert_eq!(Flaky::pool().stats().live_blocks, 0);
}

#[derive(Pooled, Default, Debug)]
#[pooled(capacity = 256, max_capacity = 256, guard = "off")]
struct Churned {
    id: u64,
    payload: [u64; 7],
}

#[test]
fn threads_that_bind_the_cache_and_exit_strand_nothing() {
    const THREADS: u64 = 8;
    const ROUNDS: u64 = 10_000;
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            thread::spawn(move || {
                let mut held = Vec::new();
                for i in 0..ROUNDS {
                    let mut h = Churned::acquire().unwrap();
                    h.id = t * ROUNDS + i;
                    h.payload = [i; 7];
                    held.push(h);
                    if held.len() == 8 {
                        // Release in a different order than acquired.
                        while let Some(h) = held.pop() {
                            assert_eq!(h.id / ROUNDS, t);
                            assert_eq!(h.payload, [h.id % ROUNDS; 7]);
                        }
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let stats = Churned::pool().stats();
    assert_eq!(stats.allocations, THREADS * ROUNDS, "{stats:?}");
    assert_eq!(stats.frees, THREADS * ROUNDS, "{stats:?}");
    assert_eq!(stats.live_blocks, 0, "{stats:?}");
    // The exited threads' caches went back to the depot: the whole cap is available here.
    let all: Vec<Handle<Churned>> = (0..256).map(|_| Churned::acquire().unwrap()).collect();
    assert!(matches!(
        Churned::acquire(),
        Err(PoolError::Exhausted { .. })
    ));
    drop(all);
}

#[derive(Pooled, Default, Debug)]
#[pooled(capacity = 16, max_capacity = 1024, guard = "off")]
struct Late {
    n: u64,
}

static LATE_RUNS: AtomicU64 = AtomicU64::new(0);

/// A thread-local whose destructor acquires and releases a `Late` after the thread's
/// cache table has been torn down (destructors run in reverse order of registration, and
/// this one registers first).
struct AcquiresOnExit;

impl Drop for AcquiresOnExit {
    fn drop(&mut self) {
        let mut h = Late::acquire().unwrap();
        h.n = 42;
        let raw: RawHandle<Late> = Handle::into_raw(h);
        let h = Late::redeem(raw).unwrap();
        assert_eq!(h.n, 42);
        drop(h);
        let _ = Late::acquire_with(Late { n: 1 }).map(drop);
        LATE_RUNS.fetch_add(1, Ordering::Relaxed);
    }
}

thread_local! {
    static ON_EXIT: AcquiresOnExit = const { AcquiresOnExit };
}

#[test]
fn a_thread_local_destructor_after_the_cache_table_can_still_acquire() {
    thread::spawn(|| {
        // Registered first, so destroyed after the cache table below.
        ON_EXIT.with(|_| {});
        // Binds `Late`'s per-type cell and registers the cache table's destructor.
        for i in 0..100 {
            let mut h = Late::acquire().unwrap();
            h.n = i;
        }
    })
    .join()
    .unwrap();
    assert_eq!(LATE_RUNS.load(Ordering::Relaxed), 1);
    let stats = Late::pool().stats();
    assert_eq!(stats.live_blocks, 0, "{stats:?}");
    assert_eq!(stats.allocations, 102, "{stats:?}");
    assert_eq!(stats.frees, 102, "{stats:?}");
}

#[derive(Pooled, Default, Debug)]
#[pooled(capacity = 64, max_capacity = 64, guard = "canary", per_node = false)]
struct Guarded {
    words: [u64; 4],
}

#[test]
fn a_guarded_derived_type_keeps_its_guard_on_every_acquire() {
    // Warm the thread's paths, as a fast path would have been bound by now.
    for _ in 0..16 {
        drop(Guarded::acquire().unwrap());
    }
    let before = Guarded::pool().stats().corruption_events;
    let h = Guarded::acquire().unwrap();
    let canary = (&*h as *const Guarded)
        .cast_mut()
        .cast::<u64>()
        .wrapping_add(4);
    // SAFETY: one word past the 32-byte value lies the canary the pool put there, inside
    // the block's stride in a mapped, writable chunk; overwriting it is the bug the guard
    // exists to catch.
    unsafe { canary.write(0xdead_beef) };
    drop(h);
    assert_eq!(
        Guarded::pool().stats().corruption_events,
        before + 1,
        "the overwritten canary went unnoticed"
    );
    // The damaged block is withdrawn; the others still come out whole.
    let rest: Vec<Handle<Guarded>> = (0..63).map(|_| Guarded::acquire().unwrap()).collect();
    assert!(rest.iter().all(|h| h.words == [0; 4]));
}
