//! Typed pools stay consistent when user code panics inside them.
//!
//! - a `Drop` that panics (caught around the handle's drop, on this thread or by a thread
//!   that dies of it) still returns the block: `live_blocks` goes back to 0, each value's
//!   `Drop` ran once, and the pool fills to `max_capacity` again;
//! - a `Default` that panics inside `acquire()` loses no block, in a dropping and in a
//!   recycling pool (with a `max_capacity` of 1 or 2, `max_capacity` values can still be
//!   acquired afterwards), and a recycling pool calls `Default` again for that block;
//! - a `recycle` that panics returns the block, and the next `acquire` gets a fresh
//!   `Default` value, not the half-reset one; the half-reset value is dropped at most once;
//!   for a type without drop glue the panic stops at the handle's drop, which returns;
//! - `acquire_with` replacing a kept value whose `Drop` panics leaves the pool consistent;
//! - counted value by value, 400 values per guard level and kind: in a dropping pool under
//!   every guard level, each value whose `Drop` panics is dropped exactly once and no block
//!   is lost; in a recycling pool under `Off` and `Canary`, a value whose `recycle`
//!   panicked is dropped exactly once and never handed out again, a value recycled
//!   normally is kept and not dropped, and `acquire_with` drops each kept value it
//!   replaces exactly once.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::HashSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Once;
use std::thread;

use tally_pool::{GuardLevel, Handle, Pool, PoolError, Recycle};

use common::drops::DropCounts;
use common::guards::GUARDS;
use common::typed::{config, live};

/// Keeps the expected panics of these tests out of the output.
fn quiet_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let expected = info
                .payload()
                .downcast_ref::<&str>()
                .is_some_and(|m| m.starts_with("expected:"));
            if !expected {
                default(info);
            }
        }));
    });
}

/// Checks that `pool` is empty, can hold `max` values again (and no more), and is empty
/// after they go.
fn refill<T: 'static>(pool: &'static Pool<T>, max: usize, make: impl Fn() -> T) {
    assert_eq!(live(pool), 0, "{}: blocks still live", pool.name());
    let hs: Vec<Handle<T>> = (0..max)
        .map(|i| {
            pool.acquire_with(make())
                .unwrap_or_else(|e| panic!("{}: value {i} of {max}: {:?}", pool.name(), e.error))
        })
        .collect();
    let over = pool.acquire_with(make()).map(drop);
    assert!(
        matches!(over, Err(ref e) if matches!(e.error, PoolError::Exhausted { .. })),
        "{}: more than max_capacity values",
        pool.name()
    );
    drop(hs);
    assert_eq!(live(pool), 0, "{}", pool.name());
}

// ----- Drop panics ------------------------------------------------------------------------

static BOMB_DROPS: AtomicUsize = AtomicUsize::new(0);

#[derive(Debug, Default)]
struct Bomb {
    armed: bool,
    /// Freed by the drop glue that runs after a panicking `Drop::drop`.
    #[allow(dead_code)]
    payload: Vec<u8>,
}

impl Drop for Bomb {
    fn drop(&mut self) {
        BOMB_DROPS.fetch_add(1, Ordering::SeqCst);
        if self.armed {
            panic!("expected: Bomb::drop");
        }
    }
}

#[test]
fn a_panicking_drop_returns_its_block() {
    quiet_panics();
    for guard in GUARDS {
        const MAX: usize = 3;
        let pool = Pool::<Bomb>::new(config("panics-drop", MAX, MAX).guard(guard)).unwrap();
        for round in 0..4 {
            let hs: Vec<_> = (0..MAX)
                .map(|i| {
                    pool.acquire_with(Bomb {
                        armed: i != 1,
                        payload: vec![1; 100],
                    })
                    .unwrap()
                })
                .collect();
            assert_eq!(live(pool), MAX as u64);
            let before = BOMB_DROPS.load(Ordering::SeqCst);
            let mut panics = 0;
            for h in hs {
                if catch_unwind(AssertUnwindSafe(|| drop(h))).is_err() {
                    panics += 1;
                }
            }
            assert_eq!(panics, MAX - 1, "{guard:?} round {round}");
            assert!(BOMB_DROPS.load(Ordering::SeqCst) >= before + MAX);
            assert_eq!(live(pool), 0, "{guard:?} round {round}: a block was lost");
            assert_eq!(pool.stats().corruption_events, 0, "{guard:?}");
        }
        refill(pool, MAX, Bomb::default);
    }
}

#[test]
fn a_thread_dying_of_a_panicking_drop_returns_the_block() {
    quiet_panics();
    const MAX: usize = 2;
    let pool = Pool::<Bomb>::new(config("panics-drop-thread", MAX, MAX)).unwrap();
    for _ in 0..3 {
        let h = pool
            .acquire_with(Bomb {
                armed: true,
                payload: vec![2; 10],
            })
            .unwrap();
        let joined = thread::spawn(move || drop(h)).join();
        assert!(joined.is_err(), "the drop panicked on that thread");
        assert_eq!(live(pool), 0);
    }
    refill(pool, MAX, Bomb::default);
}

static STRICT_DROPS: AtomicUsize = AtomicUsize::new(0);

/// Panics in `Drop`; counts each drop, so a double drop shows.
#[derive(Debug)]
struct StrictBomb(#[allow(dead_code)] u64);

impl Drop for StrictBomb {
    fn drop(&mut self) {
        STRICT_DROPS.fetch_add(1, Ordering::SeqCst);
        panic!("expected: StrictBomb::drop");
    }
}

#[test]
fn a_panicking_drop_runs_once() {
    quiet_panics();
    let pool = Pool::<StrictBomb>::new(config("panics-drop-once", 1, 1)).unwrap();
    for i in 0..20u64 {
        let h = pool.acquire_with(StrictBomb(i)).unwrap();
        assert!(catch_unwind(AssertUnwindSafe(|| drop(h))).is_err());
        assert_eq!(STRICT_DROPS.load(Ordering::SeqCst), i as usize + 1);
        assert_eq!(live(pool), 0);
    }
    // Nothing of the pool's own panicked: a value goes in and comes out normally.
    let h = pool.acquire_with(StrictBomb(99)).unwrap();
    assert_eq!(h.0, 99);
    assert!(catch_unwind(AssertUnwindSafe(|| drop(h))).is_err());
    assert_eq!(STRICT_DROPS.load(Ordering::SeqCst), 21);
    assert_eq!(live(pool), 0);
}

// ----- Default panics ---------------------------------------------------------------------

static FUSE_ARMED: AtomicBool = AtomicBool::new(false);
static FUSE_DEFAULTS: AtomicUsize = AtomicUsize::new(0);

#[derive(Debug)]
struct Fuse {
    fresh: bool,
    n: u64,
}

impl Default for Fuse {
    fn default() -> Self {
        if FUSE_ARMED.load(Ordering::SeqCst) {
            panic!("expected: Fuse::default");
        }
        FUSE_DEFAULTS.fetch_add(1, Ordering::SeqCst);
        Self { fresh: true, n: 0 }
    }
}

static KEPT_FUSE_ARMED: AtomicBool = AtomicBool::new(false);
static KEPT_FUSE_DEFAULTS: AtomicUsize = AtomicUsize::new(0);

#[derive(Debug)]
struct KeptFuse {
    fresh: bool,
    n: u64,
}

impl Default for KeptFuse {
    fn default() -> Self {
        if KEPT_FUSE_ARMED.load(Ordering::SeqCst) {
            panic!("expected: KeptFuse::default");
        }
        KEPT_FUSE_DEFAULTS.fetch_add(1, Ordering::SeqCst);
        Self { fresh: true, n: 0 }
    }
}

impl Recycle for KeptFuse {
    fn recycle(&mut self) {
        self.fresh = false;
        self.n = 0;
    }
}

#[test]
fn a_panicking_default_loses_no_block() {
    quiet_panics();
    for max in [1, 2] {
        let name = format!("panics-default-{max}");
        let pool = Pool::<Fuse>::new(config(&name, max, max)).unwrap();
        FUSE_ARMED.store(true, Ordering::SeqCst);
        for _ in 0..5 {
            assert!(catch_unwind(|| pool.acquire().map(drop)).is_err());
            assert_eq!(live(pool), 0, "{name}");
        }
        FUSE_ARMED.store(false, Ordering::SeqCst);
        let hs: Vec<_> = (0..max).map(|_| pool.acquire().unwrap()).collect();
        assert!(hs.iter().all(|h| h.fresh && h.n == 0));
        assert!(matches!(pool.acquire(), Err(PoolError::Exhausted { .. })));
        // At the cap with a panicking default: still nothing lost.
        FUSE_ARMED.store(true, Ordering::SeqCst);
        assert!(catch_unwind(|| pool.acquire().map(drop)).is_err());
        FUSE_ARMED.store(false, Ordering::SeqCst);
        assert_eq!(live(pool), max as u64);
        drop(hs);
        refill(pool, max, Fuse::default);
    }
}

#[test]
fn a_panicking_default_loses_no_block_of_a_recycling_pool() {
    quiet_panics();
    for (max, guard) in [(1, GuardLevel::Off), (2, GuardLevel::Canary)] {
        let name = format!("panics-default-recycling-{max}");
        let pool = Pool::<KeptFuse>::new_recycling(config(&name, max, max).guard(guard)).unwrap();
        KEPT_FUSE_ARMED.store(true, Ordering::SeqCst);
        for _ in 0..5 {
            // Here the block is taken first, then `default` runs in it.
            assert!(catch_unwind(|| pool.acquire().map(drop)).is_err());
            assert_eq!(live(pool), 0, "{name}");
        }
        KEPT_FUSE_ARMED.store(false, Ordering::SeqCst);
        let before = KEPT_FUSE_DEFAULTS.load(Ordering::SeqCst);
        let mut hs: Vec<_> = (0..max).map(|_| pool.acquire().unwrap()).collect();
        assert_eq!(
            KEPT_FUSE_DEFAULTS.load(Ordering::SeqCst),
            before + max,
            "{name}: the blocks whose default panicked get a default now"
        );
        assert!(hs.iter().all(|h| h.fresh && h.n == 0), "{name}");
        assert!(matches!(pool.acquire(), Err(PoolError::Exhausted { .. })));
        for h in &mut hs {
            h.n = 7;
        }
        drop(hs);
        // Now the blocks keep values: no default runs, so an armed one cannot panic.
        KEPT_FUSE_ARMED.store(true, Ordering::SeqCst);
        let hs: Vec<_> = (0..max).map(|_| pool.acquire().unwrap()).collect();
        KEPT_FUSE_ARMED.store(false, Ordering::SeqCst);
        assert!(
            hs.iter().all(|h| !h.fresh && h.n == 0),
            "{name}: recycled values"
        );
        drop(hs);
        assert_eq!(live(pool), 0);
    }
}

// ----- recycle panics ---------------------------------------------------------------------

static SPRING_DEFAULTS: AtomicUsize = AtomicUsize::new(0);
static SPRING_DROPS: AtomicUsize = AtomicUsize::new(0);
static SPRING_RECYCLES: AtomicUsize = AtomicUsize::new(0);

/// Whose `recycle` panics half-way through a reset when `jam` is set.
#[derive(Debug)]
struct Spring {
    /// 1 for a `Default` value, 2 once recycled, 99 while a reset is half done.
    state: u32,
    jam: bool,
    serial: usize,
    items: Vec<u32>,
}

impl Default for Spring {
    fn default() -> Self {
        let serial = SPRING_DEFAULTS.fetch_add(1, Ordering::SeqCst);
        Self {
            state: 1,
            jam: false,
            serial,
            items: Vec::new(),
        }
    }
}

impl Recycle for Spring {
    fn recycle(&mut self) {
        SPRING_RECYCLES.fetch_add(1, Ordering::SeqCst);
        self.state = 99;
        if self.jam {
            panic!("expected: Spring::recycle");
        }
        self.items.clear();
        self.state = 2;
    }
}

impl Drop for Spring {
    fn drop(&mut self) {
        SPRING_DROPS.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn a_panicking_recycle_returns_the_block_and_discards_the_value() {
    quiet_panics();
    let pool = Pool::<Spring>::new_recycling(config("panics-recycle", 1, 1)).unwrap();
    let mut h = pool.acquire().unwrap();
    assert_eq!((h.state, h.serial), (1, 0));
    h.items.extend([1, 2, 3]);
    drop(h);
    // A normal recycle keeps the value.
    let mut h = pool.acquire().unwrap();
    assert_eq!((h.state, h.serial, h.items.len()), (2, 0, 0));
    assert_eq!(SPRING_DEFAULTS.load(Ordering::SeqCst), 1);

    h.items.extend([4, 5]);
    h.jam = true;
    assert!(catch_unwind(AssertUnwindSafe(|| drop(h))).is_err());
    assert_eq!(SPRING_RECYCLES.load(Ordering::SeqCst), 2);
    assert_eq!(live(pool), 0, "the block came back");
    assert_eq!(
        SPRING_DROPS.load(Ordering::SeqCst),
        1,
        "the half-reset value is dropped, once"
    );

    // One block only: this is that block, and it holds a fresh value.
    let mut h = pool.acquire().unwrap();
    let got = (h.state, h.jam, h.items.len());
    let seen = format!("{h:?}");
    // Disarm before asserting, so a failure does not panic again while unwinding.
    h.jam = false;
    assert_eq!(
        got,
        (1, false, 0),
        "the half-reset value was handed out again: {seen}"
    );
    assert_eq!(h.serial, 1);
    assert_eq!(SPRING_DEFAULTS.load(Ordering::SeqCst), 2);
    drop(h);
    assert_eq!(SPRING_RECYCLES.load(Ordering::SeqCst), 3);
    // And it recycles normally again.
    let h = pool.acquire().unwrap();
    assert_eq!((h.state, h.serial), (2, 1));
    drop(h);
    assert_eq!(live(pool), 0);
    assert_eq!(pool.stats().corruption_events, 0);
}

static TALLY_RECYCLES: AtomicUsize = AtomicUsize::new(0);

/// Without drop glue, whose `recycle` panics when `jam` is set.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    count: u64,
    jam: bool,
}

impl Recycle for Tally {
    fn recycle(&mut self) {
        TALLY_RECYCLES.fetch_add(1, Ordering::SeqCst);
        self.count = 99;
        if self.jam {
            panic!("expected: Tally::recycle");
        }
        self.count = 0;
    }
}

/// A handle's drop for a type without drop glue cannot unwind (so that it inlines): a
/// panicking `recycle` stops there, and the pool is left as the unwinding path leaves it.
#[test]
fn a_panicking_recycle_of_a_type_without_drop_glue_stops_at_the_drop() {
    quiet_panics();
    assert!(!core::mem::needs_drop::<Tally>());
    let pool = Pool::<Tally>::new_recycling(config("panics-recycle-plain", 1, 1)).unwrap();
    let mut h = pool.acquire().unwrap();
    h.count = 5;
    drop(h);
    let mut h = pool.acquire().unwrap();
    assert_eq!(h.count, 0, "recycled");
    h.count = 7;
    h.jam = true;
    // Returns: the panic does not reach the caller.
    assert!(catch_unwind(AssertUnwindSafe(|| drop(h))).is_ok());
    assert_eq!(TALLY_RECYCLES.load(Ordering::SeqCst), 2);
    assert_eq!(live(pool), 0, "the block came back");
    // One block only: it holds a fresh `Default` value, not the half-reset one.
    let h = pool.acquire().unwrap();
    assert_eq!(
        (h.count, h.jam),
        (0, false),
        "the half-reset value was handed out"
    );
    drop(h);
    assert_eq!(TALLY_RECYCLES.load(Ordering::SeqCst), 3);
    assert_eq!(live(pool), 0);
    assert_eq!(pool.stats().corruption_events, 0);
}

static CRACKED_DROPS: AtomicUsize = AtomicUsize::new(0);

/// Kept by a recycling pool; its `Drop` panics when `cracked`.
#[derive(Debug, Default)]
struct Cracked {
    cracked: bool,
    id: u32,
}

impl Recycle for Cracked {
    fn recycle(&mut self) {}
}

impl Drop for Cracked {
    fn drop(&mut self) {
        CRACKED_DROPS.fetch_add(1, Ordering::SeqCst);
        if self.cracked {
            panic!("expected: Cracked::drop");
        }
    }
}

#[test]
fn acquire_with_replacing_a_value_whose_drop_panics() {
    quiet_panics();
    let pool = Pool::<Cracked>::new_recycling(config("panics-replace", 1, 1)).unwrap();
    let h = pool
        .acquire_with(Cracked {
            cracked: true,
            id: 1,
        })
        .unwrap();
    drop(h);
    assert_eq!(CRACKED_DROPS.load(Ordering::SeqCst), 0, "kept");
    // Replacing the kept value drops it, and that drop panics.
    let r = catch_unwind(|| {
        pool.acquire_with(Cracked {
            cracked: false,
            id: 2,
        })
        .map(drop)
    });
    assert!(r.is_err());
    assert_eq!(
        CRACKED_DROPS.load(Ordering::SeqCst),
        1,
        "the old value dropped once"
    );
    assert_eq!(live(pool), 0, "the new value's block came back");
    let h = pool.acquire().unwrap();
    assert!(!h.cracked, "the panicking value is gone");
    drop(h);
    let h = pool.acquire_with(Cracked::default()).unwrap();
    assert_eq!(h.id, 0);
    drop(h);
    assert_eq!(live(pool), 0);
}

// ----- Drop and recycle panics, counted value by value ------------------------------------

/// Counts the drops of every [`CountedBomb`], by id.
static COUNTED_BOMB_DROPS: DropCounts<4096> = DropCounts::new();

/// Panics in `Drop` (when `armed`) or in `recycle` (when `jammed`); counts its drops per
/// id, so a double or a missing drop shows.
#[derive(Debug)]
struct CountedBomb {
    id: usize,
    armed: bool,
    jammed: bool,
    /// Freed by the drop glue after a panicking `Drop::drop`.
    payload: Vec<u64>,
}

impl CountedBomb {
    fn new(armed: bool, jammed: bool) -> Self {
        let id = COUNTED_BOMB_DROPS.next_id();
        Self {
            id,
            armed,
            jammed,
            payload: vec![id as u64; 4],
        }
    }
}

impl Default for CountedBomb {
    fn default() -> Self {
        Self::new(false, false)
    }
}

impl Drop for CountedBomb {
    fn drop(&mut self) {
        COUNTED_BOMB_DROPS.count(self.id);
        if self.armed {
            panic!("expected: CountedBomb::drop");
        }
    }
}

impl Recycle for CountedBomb {
    fn recycle(&mut self) {
        if self.jammed {
            self.payload.clear();
            panic!("expected: CountedBomb::recycle");
        }
        self.payload = vec![self.id as u64; 4];
    }
}

fn drops(id: usize) -> u8 {
    COUNTED_BOMB_DROPS.dropped(id)
}

/// Drops `hs`, each inside `catch_unwind`; returns how many drops panicked.
fn drop_all(hs: Vec<Handle<CountedBomb>>) -> usize {
    hs.into_iter()
        .map(|h| catch_unwind(AssertUnwindSafe(|| drop(h))).is_err())
        .filter(|&panicked| panicked)
        .count()
}

/// Values whose `Drop` panics (2 of 3), dropped inside `catch_unwind` on this thread or on
/// a thread that dies of the panic, in a dropping pool under each guard level: every value
/// constructed is dropped exactly once (a counter per value), the payload freed by the
/// drop glue is checked, `live_blocks` is 0 after each round, no corruption is counted,
/// and the pool fills to its cap (64) again. And values whose `recycle` panics (1 of 2) in
/// a recycling pool under `Off` and `Canary` (`Full` refuses recycling pools): a value
/// whose `recycle` panicked is dropped exactly once and never handed out again, a value
/// recycled normally is kept and not dropped, and replacing kept values with
/// `acquire_with` drops each exactly once. 400 values per guard and kind.
#[test]
fn panicking_drop_and_recycle_drop_each_value_exactly_once() {
    quiet_panics();
    const MAX: usize = 64;
    for guard in GUARDS {
        let pool = Pool::<CountedBomb>::new(
            config(&format!("panics-counted-drop-{guard:?}"), MAX, MAX).guard(guard),
        )
        .unwrap();
        let mut ids = Vec::new();
        for round in 0..400 / 40 {
            let hs: Vec<_> = (0..40)
                .map(|i| {
                    pool.acquire_with(CountedBomb::new(i % 3 != 0, false))
                        .unwrap()
                })
                .collect();
            ids.extend(hs.iter().map(|h| h.id));
            let (here, there): (Vec<_>, Vec<_>) =
                hs.into_iter().enumerate().partition(|(i, _)| i % 4 != 0);
            let panics = drop_all(here.into_iter().map(|(_, h)| h).collect());
            let mut died = 0;
            for (_, h) in there {
                if thread::spawn(move || drop(h)).join().is_err() {
                    died += 1;
                }
            }
            assert_eq!(panics + died, 26, "{guard:?} round {round}");
            assert_eq!(live(pool), 0, "{guard:?} round {round}: a block was lost");
        }
        for &id in &ids {
            assert_eq!(
                drops(id),
                1,
                "{guard:?}: value {id} dropped {} times",
                drops(id)
            );
        }
        let stats = pool.stats();
        assert_eq!(stats.corruption_events, 0, "{guard:?}: {stats:?}");
        // Nothing lost: the whole cap is there again, and no more.
        let all: Vec<_> = (0..MAX).map(|_| pool.acquire().unwrap()).collect();
        assert!(matches!(pool.acquire(), Err(PoolError::Exhausted { .. })));
        let fresh: Vec<usize> = all.iter().map(|h| h.id).collect();
        drop_all(all);
        assert!(fresh.iter().all(|&id| drops(id) == 1));
        assert_eq!(live(pool), 0);
    }

    for guard in [GuardLevel::Off, GuardLevel::Canary] {
        let pool = Pool::<CountedBomb>::new_recycling(
            config(&format!("panics-counted-recycle-{guard:?}"), MAX, MAX).guard(guard),
        )
        .unwrap();
        // Values constructed, and the ids whose `recycle` panicked.
        let mut made = HashSet::new();
        let mut jammed = HashSet::new();
        for round in 0..400 / 40 {
            let hs: Vec<_> = (0..40)
                .map(|i| {
                    if i % 5 == 0 {
                        // A kept value, if this block holds one, or a fresh default.
                        let mut h = pool.acquire().unwrap();
                        h.jammed = i % 2 == 0;
                        h
                    } else {
                        // Replaces (and drops) the value the block kept, if any.
                        pool.acquire_with(CountedBomb::new(false, i % 2 == 0))
                            .unwrap()
                    }
                })
                .collect();
            for h in &hs {
                assert_eq!(drops(h.id), 0, "{guard:?}: a dropped value handed out");
                assert!(!jammed.contains(&h.id), "{guard:?}: a jammed value reused");
                assert_eq!(h.payload, vec![h.id as u64; 4], "{guard:?}: value damaged");
                made.insert(h.id);
                if h.jammed {
                    jammed.insert(h.id);
                }
            }
            let panics = drop_all(hs);
            assert_eq!(panics, 20, "{guard:?} round {round}");
            assert_eq!(live(pool), 0, "{guard:?} round {round}: a block was lost");
        }
        // Every value is either dropped exactly once (jammed, or replaced) or kept in a
        // block; take the kept ones out to see.
        let all: Vec<_> = (0..MAX).map(|_| pool.acquire().unwrap()).collect();
        assert!(matches!(pool.acquire(), Err(PoolError::Exhausted { .. })));
        let kept: HashSet<usize> = all.iter().map(|h| h.id).collect();
        assert_eq!(kept.len(), MAX);
        for &id in &made {
            let expected = u8::from(!kept.contains(&id));
            assert_eq!(drops(id), expected, "{guard:?}: value {id}");
        }
        for &id in &kept {
            assert!(!jammed.contains(&id), "{guard:?}: jammed value {id} kept");
            assert_eq!(drops(id), 0);
        }
        drop_all(all);
        // Replace every kept value: each is dropped once.
        let replacements: Vec<_> = (0..MAX)
            .map(|_| pool.acquire_with(CountedBomb::new(false, false)).unwrap())
            .collect();
        for &id in &kept {
            assert_eq!(drops(id), 1, "{guard:?}: replaced value {id}");
        }
        drop_all(replacements);
        assert_eq!(live(pool), 0);
        assert_eq!(pool.stats().corruption_events, 0, "{guard:?}");
    }
}
