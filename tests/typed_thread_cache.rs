//! The per-type thread cache of derived types (`Pooled::acquire` through the type's own
//! `thread_local!`):
//!
//! - a `Default` that panics on the fast path, after the block was popped, loses no block;
//! - threads that bind the cache and exit strand no block, and counts stay exact;
//! - a thread-local destructor that runs after the thread's cache table is gone can still
//!   acquire and release (the per-type cell was unbound, so nothing dangles);
//! - a guarded derived type never takes the unguarded fast path: its guard still catches
//!   an overwritten canary;
//! - thread-local destructors that acquire, lend, redeem and release values of derived
//!   types and of a `Pool::new` pool at thread exit, before or after the thread's caches
//!   are torn down or as the thread's only pool use, leave nothing live, lent or stranded.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread;

use tally_pool::{Handle, Pool, PoolConfig, PoolError, Pooled, RawHandle};

use common::typed::live;

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

// ----- pools used by thread-local destructors ---------------------------------------------

/// The cap of each pool used at thread exit ([`EXIT_CAP`]), large enough that no acquire
/// can be refused: 24 threads each hold up to 100 values of a type at once, and each may
/// strand up to 64 cached blocks and a fresh range (a 64th of the cap) of each pool until
/// it exits, 24 × (100 + 64 + 256) = 10,080 blocks at worst. (A cap of 256 refused
/// acquires whenever three threads' traffic overlapped.)
#[derive(Pooled, Debug, Default)]
#[pooled(capacity = 16, max_capacity = 16384, guard = "off", per_node = false)]
struct ExitDerived {
    seq: u64,
    check: u64,
}

#[derive(Pooled, Debug, Default)]
#[pooled(capacity = 16, max_capacity = 16384, guard = "canary")]
struct ExitGuarded {
    seq: u64,
    check: u64,
}

#[derive(Debug, Default)]
struct ExitPlain {
    seq: u64,
    check: u64,
}

/// Cap of the pools used at thread exit: see [`ExitDerived`].
const EXIT_CAP: usize = 16_384;

fn exit_plain_pool() -> &'static Pool<ExitPlain> {
    static POOL: OnceLock<&'static Pool<ExitPlain>> = OnceLock::new();
    POOL.get_or_init(|| {
        Pool::new(
            PoolConfig::new("thread-cache-exit-plain")
                .capacity(16)
                .max_capacity(EXIT_CAP),
        )
        .unwrap()
    })
}

/// Destructors that ran, and what went wrong in them (a panic escaping a thread-local
/// destructor would abort the test binary, so they report instead).
static EXIT_RUNS: AtomicU64 = AtomicU64::new(0);
static EXIT_ERRORS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn exit_check(seq: u64) -> u64 {
    seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0xe417
}

/// Acquires, lends, redeems and releases values of every kind, `rounds` times.
macro_rules! exit_traffic {
    ($ty:ident, $acquire:expr, $acquire_with:expr, $redeem:expr, $rounds:expr) => {{
        let mut held: Vec<Handle<$ty>> = Vec::new();
        let mut tokens: Vec<RawHandle<$ty>> = Vec::new();
        for seq in 0..$rounds {
            let mut h: Handle<$ty> = if seq % 2 == 0 {
                ($acquire)().map_err(|e| format!("acquire: {e}"))?
            } else {
                ($acquire_with)($ty::default()).map_err(|e| format!("acquire_with: {e}"))?
            };
            h.seq = seq;
            h.check = exit_check(seq);
            if seq % 3 == 0 {
                held.push(h);
            } else {
                tokens.push(Handle::into_raw(h));
            }
        }
        for raw in tokens {
            let h = ($redeem)(raw).map_err(|e| format!("redeem: {e}"))?;
            if h.check != exit_check(h.seq) {
                return Err(format!("value {} damaged", h.seq));
            }
            if ($redeem)(raw).is_ok() {
                return Err("a token redeemed twice".into());
            }
            held.push(h);
        }
        if held.iter().any(|h| h.check != exit_check(h.seq)) {
            return Err("a held value damaged".into());
        }
        drop(held);
        Ok::<(), String>(())
    }};
}

fn traffic(rounds: u64) -> Result<(), String> {
    exit_traffic!(
        ExitDerived,
        ExitDerived::acquire,
        ExitDerived::acquire_with,
        ExitDerived::redeem,
        rounds
    )?;
    exit_traffic!(
        ExitGuarded,
        ExitGuarded::acquire,
        ExitGuarded::acquire_with,
        ExitGuarded::redeem,
        rounds
    )?;
    let plain = exit_plain_pool();
    exit_traffic!(
        ExitPlain,
        || plain.acquire(),
        |v| plain.acquire_with(v),
        |r| plain.redeem(r),
        rounds
    )
}

/// Uses the pools from its destructor, at thread exit.
struct UsesPoolsOnExit;

impl Drop for UsesPoolsOnExit {
    fn drop(&mut self) {
        let result = catch_unwind(|| traffic(40))
            .unwrap_or_else(|_| Err("panicked".into()))
            .map_err(|e| format!("{:?}: {e}", thread::current().id()));
        if let Err(e) = result {
            EXIT_ERRORS.lock().unwrap().push(e);
        }
        EXIT_RUNS.fetch_add(1, Ordering::SeqCst);
    }
}

thread_local! {
    static USES_POOLS_ON_EXIT: UsesPoolsOnExit = const { UsesPoolsOnExit };
}

/// A `thread_local!` whose destructor acquires, lends (`into_raw`), redeems and releases
/// values (40 of each type) of a derived unguarded type (the per-type fast path), a
/// derived `Canary` type and a `Pool::new` pool, at thread exit, leaves
/// `live_blocks == 0` and `leaked_raw == 0` in all three. 24 threads exit, a third of
/// each: with the thread-local set before the thread's first pool call (its destructor
/// runs after the thread's caches are gone), after it (before they go), and as the
/// thread's only pool use (its caches are made during thread exit). Afterwards no block
/// is stranded in a dead thread's cache: each pool hands out its whole cap again.
#[test]
fn thread_local_destructors_that_use_pools_leave_nothing_behind() {
    let threads: Vec<_> = (0..24)
        .map(|t| {
            thread::spawn(move || {
                match t % 3 {
                    0 => {
                        USES_POOLS_ON_EXIT.with(|_| {});
                        traffic(100)?;
                    }
                    1 => {
                        traffic(100)?;
                        USES_POOLS_ON_EXIT.with(|_| {});
                    }
                    _ => USES_POOLS_ON_EXIT.with(|_| {}),
                }
                Ok::<(), String>(())
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap().unwrap();
    }
    assert_eq!(EXIT_RUNS.load(Ordering::SeqCst), 24);
    let errors = EXIT_ERRORS.lock().unwrap().clone();
    assert!(errors.is_empty(), "at thread exit: {errors:#?}");

    fn settled<T: Default + 'static>(pool: &'static Pool<T>, cap: usize) {
        let stats = pool.stats();
        assert_eq!(stats.live_blocks, 0, "{}: {stats:?}", pool.name());
        assert_eq!(stats.allocations, stats.frees, "{}: {stats:?}", pool.name());
        assert_eq!(stats.corruption_events, 0, "{}: {stats:?}", pool.name());
        assert_eq!(pool.leaked_raw(), 0, "{}", pool.name());
        let all: Vec<_> = (0..cap)
            .map(|i| {
                pool.acquire()
                    .unwrap_or_else(|e| panic!("{}: value {i} of the cap: {e}", pool.name()))
            })
            .collect();
        assert!(
            matches!(pool.acquire(), Err(PoolError::Exhausted { .. })),
            "{}",
            pool.name()
        );
        drop(all);
        assert_eq!(live(pool), 0);
    }
    settled(ExitDerived::pool(), EXIT_CAP);
    settled(exit_plain_pool(), EXIT_CAP);
    // A per-node pool's cap is per node: fill what its stats say.
    let guarded_cap = ExitGuarded::pool().stats().max_capacity;
    settled(ExitGuarded::pool(), guarded_cap);
}
