//! What a `tally_pool::Handle<T>` is and does.
//!
//! - `Deref`/`DerefMut` reach the pooled value, two handles never alias, and
//!   `Handle::pool` names the pool the value came from;
//! - `Debug` (and `Display`) of a handle is exactly the value's;
//! - `Handle<T>` and `Option<Handle<T>>` are 8 bytes for small, zero-sized, large and
//!   over-aligned `T`;
//! - every value is dropped exactly once: on a normal drop, on a drop on another thread,
//!   when `acquire_with` replaces a value a recycling pool kept, and when `acquire` at the
//!   cap throws its fresh `Default` away;
//! - `acquire_with` at the cap hands the very same value back (a heap buffer comes back
//!   intact, not copied, not dropped);
//! - zero-sized, 4 KiB and `#[repr(align(64))]` / `#[repr(align(4096))]` values work and
//!   their pointers are aligned; oversized layouts are refused with `UnsupportedLayout`;
//! - a dropping pool does not hand an old value back; a recycling pool does: a `Vec` keeps
//!   its buffer, `recycle` runs exactly once per release (also on another thread) and
//!   `Default` runs only for fresh blocks, under `Off` and `Canary`; `Full` refuses to
//!   recycle (its poison would overwrite the kept values) and drops every value instead.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

use tally_pool::{GuardLevel, Handle, Pool, PoolError, Recycle};

use common::drops::DropCounts;
use common::errors::expect_exhausted;
use common::guards::GUARDS;
use common::typed::{addr, config, live};

/// Defines a type whose values carry an id below `$ids` and count, per id, how often they
/// were dropped; every test that counts drops gets its own type, so tests running in
/// parallel cannot disturb each other's counts.
macro_rules! tracked {
    ($name:ident, $ids:expr) => {
        #[derive(Debug)]
        struct $name {
            id: usize,
            payload: Vec<u64>,
        }

        impl $name {
            const IDS: usize = $ids;

            fn drops() -> &'static DropCounts<$ids> {
                static DROPS: DropCounts<$ids> = DropCounts::new();
                &DROPS
            }

            fn new(id: usize) -> Self {
                assert!(id < Self::IDS);
                Self {
                    id,
                    payload: vec![id as u64; 3],
                }
            }

            fn dropped(id: usize) -> u8 {
                Self::drops().dropped(id)
            }

            #[allow(dead_code)]
            fn check(&self) {
                assert_eq!(
                    self.payload,
                    vec![self.id as u64; 3],
                    "value {} damaged",
                    self.id
                );
            }
        }

        impl Drop for $name {
            fn drop(&mut self) {
                Self::drops().count(self.id);
            }
        }
    };
}

// ----- Deref, Debug, size -----------------------------------------------------------------

#[derive(Debug, Default, Clone, PartialEq)]
struct Quote {
    bid: i64,
    ask: i64,
    venue: String,
}

fn spread(q: &Quote) -> i64 {
    q.ask - q.bid
}

#[test]
fn deref_and_deref_mut_reach_the_value() {
    let pool = Pool::<Quote>::new(config("handles-deref", 8, 64)).unwrap();
    let mut a = pool.acquire().unwrap();
    assert_eq!(*a, Quote::default());
    a.bid = 99;
    a.ask = 101;
    a.venue.push_str("XNAS");
    assert_eq!(spread(&a), 2);
    assert_eq!(a.venue, "XNAS");

    let mut b = pool
        .acquire_with(Quote {
            bid: 1,
            ask: 5,
            venue: "XLON".into(),
        })
        .unwrap();
    assert_ne!(addr(&a), addr(&b), "two live handles share a block");
    // Writing through one handle leaves the other alone.
    b.bid = -7;
    *b = Quote {
        venue: b.venue.clone() + "!",
        ..(*b).clone()
    };
    assert_eq!(
        *a,
        Quote {
            bid: 99,
            ask: 101,
            venue: "XNAS".into()
        }
    );
    assert_eq!(
        *b,
        Quote {
            bid: -7,
            ask: 5,
            venue: "XLON!".into()
        }
    );
    let r: &mut Quote = &mut b;
    std::mem::swap(&mut r.venue, &mut a.venue);
    assert_eq!((a.venue.as_str(), b.venue.as_str()), ("XLON!", "XNAS"));

    assert!(std::ptr::eq(Handle::pool(&a), pool));
    assert!(std::ptr::eq(Handle::pool(&b), pool));
    assert_eq!(live(pool), 2);
    drop(a);
    assert_eq!(live(pool), 1);
    drop(b);
    assert_eq!(live(pool), 0);
}

#[test]
fn handle_pool_tells_pools_of_one_type_apart() {
    let p1 = Pool::<u32>::new(config("handles-which-1", 1, 4)).unwrap();
    let p2 = Pool::<u32>::new(config("handles-which-2", 1, 4)).unwrap();
    let a = p1.acquire_with(1).unwrap();
    let b = p2.acquire_with(2).unwrap();
    assert!(std::ptr::eq(Handle::pool(&a), p1));
    assert!(std::ptr::eq(Handle::pool(&b), p2));
    assert_eq!(Handle::pool(&b).name(), "handles-which-2");
    drop(b);
    assert_eq!((live(p1), live(p2)), (1, 0));
    drop(a);
    assert_eq!((live(p1), live(p2)), (0, 0));
}

#[test]
fn debug_and_display_are_the_values() {
    let pool = Pool::<Quote>::new(config("handles-debug", 1, 4)).unwrap();
    let q = Quote {
        bid: 3,
        ask: 4,
        venue: "a \"quoted\" venue".into(),
    };
    let h = pool.acquire_with(q.clone()).unwrap();
    assert_eq!(format!("{h:?}"), format!("{q:?}"));
    assert_eq!(format!("{h:#?}"), format!("{q:#?}"));
    assert!(format!("{h:?}").starts_with("Quote { bid: 3"));

    let strings = Pool::<String>::new(config("handles-display", 1, 4)).unwrap();
    let s = strings.acquire_with("héllo".to_string()).unwrap();
    assert_eq!(format!("{s}|{s:?}|{s:>7}"), "héllo|\"héllo\"|  héllo");

    let nested = Pool::<Option<Vec<u8>>>::new(config("handles-debug-nested", 1, 4)).unwrap();
    let n = nested.acquire_with(Some(vec![1, 2])).unwrap();
    assert_eq!(format!("{n:?}"), "Some([1, 2])");
}

#[derive(Debug, Default, Clone, Copy, PartialEq)]
#[repr(align(64))]
struct Align64 {
    x: u64,
    y: u8,
}

#[derive(Clone, Copy, PartialEq)]
#[repr(align(4096))]
struct Align4096 {
    x: u64,
}

#[derive(Debug, Clone, PartialEq)]
struct Big {
    bytes: [u8; 4096],
}

impl Default for Big {
    fn default() -> Self {
        Self { bytes: [0; 4096] }
    }
}

#[test]
fn handles_are_one_pointer() {
    fn check<T: 'static>() {
        let name = core::any::type_name::<T>();
        assert_eq!(core::mem::size_of::<Handle<T>>(), 8, "Handle<{name}>");
        assert_eq!(
            core::mem::size_of::<Option<Handle<T>>>(),
            8,
            "Option<Handle<{name}>>"
        );
    }
    check::<u8>();
    check::<()>();
    check::<Quote>();
    check::<Big>();
    check::<Align64>();
    check::<Align4096>();
    check::<[u8; 256 * 1024]>();
    check::<Box<dyn fmt::Debug>>();
}

// ----- drops ------------------------------------------------------------------------------

tracked!(DropLocal, 256);

#[test]
fn values_are_dropped_once_when_their_handle_drops() {
    let pool = Pool::<DropLocal>::new(config("handles-drop-local", 16, 64)).unwrap();
    let mut handles: Vec<_> = (0..64)
        .map(|id| pool.acquire_with(DropLocal::new(id)).unwrap())
        .collect();
    assert_eq!(live(pool), 64);
    assert!((0..64).all(|id| DropLocal::dropped(id) == 0));
    // Drop in a scrambled order: every other one from the back, then the rest.
    let mut order: Vec<usize> = (0..64).rev().step_by(2).collect();
    order.extend((0..64).step_by(2));
    let mut slots: Vec<Option<Handle<DropLocal>>> = handles.drain(..).map(Some).collect();
    for (n, &i) in order.iter().enumerate() {
        let h = slots[i].take().unwrap();
        assert_eq!(h.id, i);
        h.check();
        drop(h);
        assert_eq!(
            DropLocal::dropped(i),
            1,
            "value {i} after its handle dropped"
        );
        assert_eq!(live(pool), 63 - n as u64);
    }
    assert!((0..64).all(|id| DropLocal::dropped(id) == 1));

    // The blocks are reused and the new values are the new ones, dropped once each too.
    let again: Vec<_> = (64..128)
        .map(|id| pool.acquire_with(DropLocal::new(id)).unwrap())
        .collect();
    for (h, id) in again.iter().zip(64..) {
        assert_eq!(h.id, id);
        h.check();
    }
    drop(again);
    assert!((0..128).all(|id| DropLocal::dropped(id) == 1));
    assert_eq!(live(pool), 0);
}

tracked!(DropRemote, 512);

#[test]
fn values_are_dropped_once_on_another_thread() {
    const N: usize = 200;
    let pool = Pool::<DropRemote>::new(config("handles-drop-remote", 0, N)).unwrap();
    let handles: Vec<_> = (0..N)
        .map(|id| pool.acquire_with(DropRemote::new(id)).unwrap())
        .collect();
    assert_eq!(live(pool), N as u64);
    thread::spawn(move || {
        for h in handles {
            h.check();
            let id = h.id;
            drop(h);
            assert_eq!(DropRemote::dropped(id), 1);
        }
    })
    .join()
    .unwrap();
    assert!((0..N).all(|id| DropRemote::dropped(id) == 1));
    assert_eq!(live(pool), 0);
    assert!(pool.stats().cross_thread_frees > 0);

    // Every block came back: the pool fills to its cap again, with the new values.
    let again: Vec<_> = (N..2 * N)
        .map(|id| pool.acquire_with(DropRemote::new(id)).unwrap())
        .collect();
    assert!(matches!(
        pool.acquire_with(DropRemote::new(2 * N)),
        Err(e) if matches!(e.error, PoolError::Exhausted { .. }) && e.value.id == 2 * N
    ));
    assert_eq!(
        DropRemote::dropped(2 * N),
        1,
        "the refused value, dropped by the test"
    );
    // A `Handle<T>` is `Send` for `T: Send`: drop half here and half on another thread.
    let (mine, theirs): (Vec<_>, Vec<_>) = again.into_iter().partition(|h| h.id % 2 == 0);
    let t = thread::spawn(move || drop(theirs));
    drop(mine);
    t.join().unwrap();
    assert!((0..=2 * N).all(|id| DropRemote::dropped(id) == 1));
    assert_eq!(live(pool), 0);
}

tracked!(DropDefault, 8);

static DEFAULT_IDS: AtomicUsize = AtomicUsize::new(0);

impl Default for DropDefault {
    fn default() -> Self {
        Self::new(DEFAULT_IDS.fetch_add(1, Ordering::SeqCst))
    }
}

#[test]
fn acquire_at_the_cap_drops_its_fresh_default_once() {
    let pool = Pool::<DropDefault>::new(config("handles-default-cap", 1, 1)).unwrap();
    let a = pool.acquire().unwrap();
    assert_eq!(a.id, 0);
    expect_exhausted(&pool.acquire(), 1, "an acquire at the cap");
    let built = DEFAULT_IDS.load(Ordering::SeqCst);
    assert!(built <= 2);
    for id in 1..built {
        assert_eq!(DropDefault::dropped(id), 1, "a refused default value");
    }
    assert_eq!(DropDefault::dropped(0), 0);
    drop(a);
    assert_eq!(DropDefault::dropped(0), 1);
    assert_eq!(live(pool), 0);
}

#[derive(Debug, Default)]
struct Counted {
    serial: usize,
    recycled: u32,
    tag: u64,
}

macro_rules! recycling_counts {
    ($name:ident) => {
        #[derive(Debug)]
        struct $name(Counted);

        impl $name {
            fn counters() -> &'static [AtomicUsize; 3] {
                static C: [AtomicUsize; 3] = [const { AtomicUsize::new(0) }; 3];
                &C
            }
            /// `Default` calls so far.
            fn defaults() -> usize {
                Self::counters()[0].load(Ordering::SeqCst)
            }
            /// `recycle` calls so far.
            fn recycles() -> usize {
                Self::counters()[1].load(Ordering::SeqCst)
            }
            /// Drops so far.
            fn drops() -> usize {
                Self::counters()[2].load(Ordering::SeqCst)
            }
        }

        impl Default for $name {
            fn default() -> Self {
                let serial = Self::counters()[0].fetch_add(1, Ordering::SeqCst);
                Self(Counted {
                    serial,
                    ..Counted::default()
                })
            }
        }

        impl Recycle for $name {
            fn recycle(&mut self) {
                Self::counters()[1].fetch_add(1, Ordering::SeqCst);
                self.0.recycled += 1;
                self.0.tag = 0;
            }
        }

        impl Drop for $name {
            fn drop(&mut self) {
                Self::counters()[2].fetch_add(1, Ordering::SeqCst);
            }
        }

        impl core::ops::Deref for $name {
            type Target = Counted;
            fn deref(&self) -> &Counted {
                &self.0
            }
        }

        impl core::ops::DerefMut for $name {
            fn deref_mut(&mut self) -> &mut Counted {
                &mut self.0
            }
        }
    };
}

tracked!(Replaced, 64);

static REPLACED_RECYCLES: AtomicUsize = AtomicUsize::new(0);

impl Recycle for Replaced {
    fn recycle(&mut self) {
        REPLACED_RECYCLES.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn acquire_with_drops_the_value_a_recycling_pool_kept_once() {
    let pool = Pool::<Replaced>::new_recycling(config("handles-replace", 1, 1)).unwrap();
    let a = pool.acquire_with(Replaced::new(0)).unwrap();
    drop(a);
    // Kept, not dropped.
    assert_eq!(REPLACED_RECYCLES.load(Ordering::SeqCst), 1);
    assert_eq!(Replaced::dropped(0), 0);
    assert_eq!(live(pool), 0);

    // One block: `acquire_with` moves the new value into the block that keeps value 0.
    let b = pool.acquire_with(Replaced::new(1)).unwrap();
    assert_eq!(b.id, 1);
    b.check();
    assert_eq!(
        Replaced::dropped(0),
        1,
        "the kept value is dropped when replaced"
    );
    assert_eq!(Replaced::dropped(1), 0);
    // At the cap, the value comes back to the caller, who drops it.
    let refused = pool.acquire_with(Replaced::new(2)).unwrap_err();
    assert!(matches!(refused.error, PoolError::Exhausted { .. }));
    assert_eq!(refused.value.id, 2);
    refused.value.check();
    drop(refused);
    assert_eq!(Replaced::dropped(2), 1);
    drop(b);
    assert_eq!(REPLACED_RECYCLES.load(Ordering::SeqCst), 2);

    // Replace repeatedly, dropping on another thread in between (recycle runs there).
    for id in 3..40 {
        let h = pool.acquire_with(Replaced::new(id)).unwrap();
        assert_eq!(Replaced::dropped(id - 2), 1, "value {} replaced", id - 2);
        h.check();
        if id % 2 == 0 {
            thread::spawn(move || drop(h)).join().unwrap();
        } else {
            drop(h);
        }
        assert_eq!(Replaced::dropped(id), 0, "value {id} is kept");
    }
    assert_eq!(REPLACED_RECYCLES.load(Ordering::SeqCst), 2 + 37);
    // Value 39 waits in the pool; every other value was dropped exactly once.
    assert!((0..39).all(|id| Replaced::dropped(id) == 1));
    assert_eq!(Replaced::dropped(39), 0);
    assert_eq!(live(pool), 0);
}

// ----- the cap ----------------------------------------------------------------------------

#[test]
fn acquire_with_at_the_cap_hands_the_same_value_back() {
    let pool = Pool::<Vec<u64>>::new(config("handles-cap-vec", 2, 2)).unwrap();
    let a = pool.acquire_with(vec![1]).unwrap();
    let b = pool.acquire().unwrap();
    let value: Vec<u64> = (0..1000).map(|i| i * 3).collect();
    let (ptr, cap) = (value.as_ptr(), value.capacity());
    let err = pool.acquire_with(value).unwrap_err();
    match &err.error {
        PoolError::Exhausted { pool, max_capacity } => {
            assert_eq!((pool.as_str(), *max_capacity), ("handles-cap-vec", 2));
        }
        other => panic!("expected Exhausted, got {other:?}"),
    }
    assert_eq!(err.value.as_ptr(), ptr, "the buffer was moved, not copied");
    assert_eq!(err.value.capacity(), cap);
    assert!(err.value.iter().copied().eq((0..1000).map(|i| i * 3)));
    assert_eq!(err.to_string(), err.error.to_string());
    assert!(format!("{err:?}").contains("Exhausted"));
    let source = std::error::Error::source(&err).unwrap().to_string();
    assert_eq!(source, err.error.to_string());
    let back = err.value;
    assert_eq!(live(pool), 2);

    // Once a block is free the same value goes in, still the same buffer.
    drop(a);
    let c = pool.acquire_with(back).unwrap();
    assert_eq!(c.as_ptr(), ptr);
    assert_eq!(c.len(), 1000);
    let as_pool_error: PoolError = pool.acquire_with(vec![]).unwrap_err().into();
    assert!(matches!(as_pool_error, PoolError::Exhausted { .. }));
    drop((b, c));
    assert_eq!(live(pool), 0);

    let strings = Pool::<String>::new(config("handles-cap-string", 0, 1)).unwrap();
    let held = strings.acquire_with("held".into()).unwrap();
    let s = "x".repeat(10_000);
    let p = s.as_ptr();
    let e = strings.acquire_with(s).unwrap_err();
    assert_eq!((e.value.as_ptr(), e.value.len()), (p, 10_000));
    assert!(e.value.bytes().all(|b| b == b'x'));
    assert_eq!(*held, "held");
}

tracked!(CapTracked, 8);

#[test]
fn a_refused_value_is_not_dropped_by_the_pool() {
    let pool = Pool::<CapTracked>::new(config("handles-cap-tracked", 1, 1)).unwrap();
    let a = pool.acquire_with(CapTracked::new(0)).unwrap();
    let err = pool.acquire_with(CapTracked::new(1)).unwrap_err();
    assert_eq!(
        CapTracked::dropped(1),
        0,
        "the pool dropped a value it handed back"
    );
    assert_eq!(err.value.id, 1);
    err.value.check();
    drop(err);
    assert_eq!(CapTracked::dropped(1), 1);
    drop(a);
    assert_eq!(CapTracked::dropped(0), 1);
}

// ----- layouts ----------------------------------------------------------------------------

#[derive(Debug, Default, PartialEq)]
struct Unit;

static UNIT_DROPS: AtomicUsize = AtomicUsize::new(0);

#[derive(Debug, Default)]
struct CountedUnit;

impl Drop for CountedUnit {
    fn drop(&mut self) {
        UNIT_DROPS.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn zero_sized_values_work() {
    let pool = Pool::<Unit>::new(config("handles-zst", 4, 300)).unwrap();
    let hs: Vec<_> = (0..300).map(|_| pool.acquire().unwrap()).collect();
    assert!(hs.iter().all(|h| **h == Unit));
    let addrs: HashSet<usize> = hs.iter().map(addr).collect();
    assert_eq!(
        addrs.len(),
        300,
        "zero-sized values still get one block each"
    );
    assert!(pool.acquire().is_err());
    assert_eq!(format!("{:?}", hs[0]), "Unit");
    drop(hs);
    assert_eq!(live(pool), 0);

    let units = Pool::<()>::new(config("handles-unit", 0, 8)).unwrap();
    let u = units.acquire_with(()).unwrap();
    let () = *u;
    drop(u);
    assert_eq!(live(units), 0);

    let counted = Pool::<CountedUnit>::new(config("handles-zst-drop", 0, 100)).unwrap();
    let hs: Vec<_> = (0..100).map(|_| counted.acquire().unwrap()).collect();
    assert_eq!(UNIT_DROPS.load(Ordering::SeqCst), 0);
    drop(hs);
    assert_eq!(UNIT_DROPS.load(Ordering::SeqCst), 100);
    assert_eq!(live(counted), 0);
}

#[test]
fn zero_sized_values_in_a_recycling_pool() {
    #[derive(Debug, Default)]
    struct Zst;
    impl Recycle for Zst {
        fn recycle(&mut self) {}
    }
    let pool = Pool::<Zst>::new_recycling(config("handles-zst-recycling", 0, 3)).unwrap();
    for _ in 0..10 {
        let hs: Vec<_> = (0..3).map(|_| pool.acquire().unwrap()).collect();
        assert!(pool.acquire().is_err());
        drop(hs);
    }
    assert_eq!(live(pool), 0);
}

#[test]
fn large_values_work() {
    let pool = Pool::<Big>::new(config("handles-big", 4, 600)).unwrap();
    // More than a chunk's worth (1 MiB / 4 KiB), so the pool grows mid-way.
    let mut hs: Vec<_> = (0..600).map(|_| pool.acquire().unwrap()).collect();
    for (i, h) in hs.iter_mut().enumerate() {
        assert!(h.bytes.iter().all(|&b| b == 0));
        h.bytes.fill(i as u8);
        h.bytes[4095] = !(i as u8);
    }
    for (i, h) in hs.iter().enumerate() {
        assert!(h.bytes[..4095].iter().all(|&b| b == i as u8), "value {i}");
        assert_eq!(h.bytes[4095], !(i as u8));
    }
    let addrs: HashSet<usize> = hs.iter().map(addr).collect();
    assert_eq!(addrs.len(), 600);
    drop(hs);
    assert_eq!(live(pool), 0);
    // A dropping pool builds fresh values: no old bytes come back.
    let h = pool.acquire().unwrap();
    assert!(h.bytes.iter().all(|&b| b == 0));

    // The largest block a pool serves, and one byte more. Debug builds copy a 256 KiB
    // argument several times on the stack: give the thread room.
    thread::Builder::new()
        .stack_size(32 << 20)
        .spawn(|| {
            let max = Pool::<[u8; 256 * 1024]>::new(config("handles-256k", 1, 2)).unwrap();
            let mut m = max.acquire_with([7; 256 * 1024]).unwrap();
            m[256 * 1024 - 1] = 9;
            assert!(m[..256 * 1024 - 1].iter().all(|&b| b == 7));
            assert_eq!(addr(&m) % 8, 0);
        })
        .unwrap()
        .join()
        .unwrap();
    let err = Pool::<[u8; 256 * 1024 + 1]>::new(config("handles-too-big", 0, 1)).unwrap_err();
    assert!(
        matches!(err, PoolError::UnsupportedLayout { .. }),
        "{err:?}"
    );
}

fn check_aligned<T: Copy + PartialEq + 'static>(pool: &'static Pool<T>, make: impl Fn(u64) -> T) {
    let align = core::mem::align_of::<T>();
    let hs: Vec<_> = (0..300)
        .map(|i| pool.acquire_with(make(i)).unwrap())
        .collect();
    for (i, h) in (0..).zip(&hs) {
        assert_eq!(addr(h) % align, 0, "value {i} of {}", pool.name());
        assert!(**h == make(i));
    }
    drop(hs);
    assert_eq!(live(pool), 0);
}

#[test]
fn over_aligned_values_are_aligned() {
    for guard in GUARDS {
        let p = Pool::<Align64>::new(config("handles-align64", 2, 300).guard(guard)).unwrap();
        check_aligned(p, |i| Align64 { x: i, y: i as u8 });
        let mut h = p.acquire().unwrap();
        h.y = 5;
        assert_eq!(addr(&h) % 64, 0);
        drop(h);

        let p = Pool::<Align4096>::new(config("handles-align4096", 2, 300).guard(guard)).unwrap();
        check_aligned(p, |i| Align4096 { x: i ^ 0xabcd });
    }

    #[derive(Debug, Default)]
    #[repr(align(64))]
    struct KeptAligned {
        x: u64,
    }
    impl Recycle for KeptAligned {
        fn recycle(&mut self) {
            self.x = 0;
        }
    }
    let p =
        Pool::<KeptAligned>::new_recycling(config("handles-align64-recycling", 2, 300)).unwrap();
    let mut hs: Vec<_> = (0..300).map(|_| p.acquire().unwrap()).collect();
    for (i, h) in (0..).zip(hs.iter_mut()) {
        assert_eq!(addr(h) % 64, 0);
        h.x = i;
    }
    for (i, h) in (0..).zip(&hs) {
        assert_eq!(h.x, i);
    }
}

// ----- dropping vs recycling pools --------------------------------------------------------

#[test]
fn a_dropping_pool_never_hands_an_old_value_back() {
    let pool = Pool::<Quote>::new(config("handles-no-reuse", 1, 1)).unwrap();
    for i in 0..100 {
        let mut h = pool.acquire().unwrap();
        assert_eq!(*h, Quote::default(), "round {i}");
        h.bid = i;
        h.venue.push_str("old");
    }
}

#[derive(Debug, Default)]
struct Batch {
    fills: Vec<u64>,
}

impl Recycle for Batch {
    fn recycle(&mut self) {
        self.fills.clear();
    }
}

#[test]
fn a_recycled_vec_keeps_its_buffer() {
    let pool = Pool::<Batch>::new_recycling(config("handles-recycle-vec", 1, 1)).unwrap();
    let mut b = pool.acquire().unwrap();
    assert!(b.fills.is_empty());
    b.fills.extend(0..1000);
    let (ptr, cap) = (b.fills.as_ptr(), b.fills.capacity());
    drop(b);
    for round in 0..10 {
        let mut b = pool.acquire().unwrap();
        assert!(b.fills.is_empty(), "round {round}: recycle cleared it");
        assert_eq!(b.fills.as_ptr(), ptr, "round {round}: the same buffer");
        assert_eq!(b.fills.capacity(), cap);
        b.fills.extend(0..1000);
        if round % 2 == 0 {
            thread::spawn(move || drop(b)).join().unwrap();
        }
    }
    assert_eq!(live(pool), 0);
}

recycling_counts!(CountsOff);
recycling_counts!(CountsCanary);
recycling_counts!(CountsFull);

fn recycle_counts<T>(
    guard: GuardLevel,
    defaults: fn() -> usize,
    recycles: fn() -> usize,
    drops: fn() -> usize,
) where
    T: Recycle + Default + Send + core::ops::DerefMut<Target = Counted> + 'static,
{
    const CAP: usize = 4;
    let name = format!("handles-recycle-counts-{guard:?}");
    let pool = Pool::<T>::new_recycling(config(&name, CAP, CAP).guard(guard))
        .unwrap_or_else(|e| panic!("{name}: {e:?}"));
    let mut first: Vec<_> = (0..CAP).map(|_| pool.acquire().unwrap()).collect();
    assert_eq!(defaults(), CAP, "{name}: one default per fresh block");
    let serials: HashSet<usize> = first.iter().map(|h| h.serial).collect();
    assert_eq!(serials, (0..CAP).collect::<HashSet<_>>(), "{name}");
    for (h, tag) in first.iter_mut().zip(1..) {
        assert_eq!((h.recycled, h.tag), (0, 0), "{name}: a fresh value");
        h.tag = tag;
    }
    drop(first);
    assert_eq!(recycles(), CAP, "{name}: one recycle per release");
    assert_eq!(drops(), 0, "{name}: a recycling pool keeps its values");

    for round in 1..=5u32 {
        let hs: Vec<_> = (0..CAP).map(|_| pool.acquire().unwrap()).collect();
        assert_eq!(defaults(), CAP, "{name}: recycled blocks need no default");
        let seen: HashSet<usize> = hs.iter().map(|h| h.serial).collect();
        assert_eq!(
            seen, serials,
            "{name}: round {round} got the same values back"
        );
        for h in &hs {
            assert_eq!(h.recycled, round, "{name}: recycled once per release");
            assert_eq!(h.tag, 0, "{name}: recycle reset the value");
        }
        assert!(pool.acquire().is_err());
        if round % 2 == 0 {
            thread::spawn(move || drop(hs)).join().unwrap();
        } else {
            drop(hs);
        }
        assert_eq!(recycles(), CAP * (round as usize + 1), "{name}");
    }
    assert_eq!(drops(), 0, "{name}");
    assert_eq!(live(pool), 0, "{name}");

    // `acquire_with` needs no default either, and replaces (drops) the kept value.
    let h = pool.acquire_with(T::default()).unwrap();
    assert_eq!(defaults(), CAP + 1);
    assert_eq!(drops(), 1, "{name}: the kept value that was replaced");
    assert_eq!(h.recycled, 0);
    drop(h);
    assert_eq!(recycles(), CAP * 6 + 1);
}

#[test]
fn recycling_counts_guard_off() {
    recycle_counts::<CountsOff>(
        GuardLevel::Off,
        CountsOff::defaults,
        CountsOff::recycles,
        CountsOff::drops,
    );
}

#[test]
fn recycling_counts_guard_canary() {
    recycle_counts::<CountsCanary>(
        GuardLevel::Canary,
        CountsCanary::defaults,
        CountsCanary::recycles,
        CountsCanary::drops,
    );
}

#[test]
fn recycling_counts_guard_full() {
    // A recycling pool keeps its values in free blocks, which `Full` fills with poison:
    // such a pool is refused, saying why, before it builds a value.
    const CAP: usize = 4;
    let name = "handles-recycle-counts-Full";
    match Pool::<CountsFull>::new_recycling(config(name, CAP, CAP).guard(GuardLevel::Full)) {
        Err(PoolError::InvalidConfig { pool, reason }) => {
            assert_eq!(pool, name);
            assert!(reason.contains("GuardLevel::Full"), "{reason}");
        }
        other => panic!("{name}: a recycling pool under `Full`: {other:?}"),
    }
    let counts = || {
        (
            CountsFull::defaults(),
            CountsFull::recycles(),
            CountsFull::drops(),
        )
    };
    assert_eq!(
        counts(),
        (0, 0, 0),
        "{name}: nothing built, recycled or dropped"
    );
    // The same type in a pool that does not recycle: under `Full` every release drops its
    // value and every acquire builds a fresh one, on the block the poison check passed.
    let pool = Pool::<CountsFull>::new(config(name, CAP, CAP).guard(GuardLevel::Full)).unwrap();
    for round in 1..=3 {
        let mut hs: Vec<_> = (0..CAP).map(|_| pool.acquire().unwrap()).collect();
        for h in &mut hs {
            assert_eq!((h.recycled, h.tag), (0, 0), "{name}: a fresh value");
            h.tag = round as u64;
        }
        // At the cap, `acquire` builds a value and drops it again.
        assert!(pool.acquire().is_err(), "{name}: at the cap");
        if round == 2 {
            thread::spawn(move || drop(hs)).join().unwrap();
        } else {
            drop(hs);
        }
        assert_eq!(
            counts(),
            ((CAP + 1) * round, 0, (CAP + 1) * round),
            "{name}: round {round}"
        );
    }
    assert_eq!(live(pool), 0, "{name}");
}
