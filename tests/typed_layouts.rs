//! Values of odd layouts in `Pool::new` pools, under every guard level.
//!
//! - zero-sized, `#[repr(align(4096))]`, 40,000-byte, 40,003-byte and 256 KiB values are
//!   acquired, written, read back, lent and redeemed, and dropped, twice over, with aligned
//!   and distinct blocks and exact `live_blocks`, `leaked_raw` and `corruption_events`;
//! - `#[repr(align(8192))]` and 300,000-byte types are refused by `Pool::new` with
//!   `UnsupportedLayout` naming their layout.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::HashSet;
use std::thread;

use tally_pool::{GuardLevel, Handle, Pool, PoolConfig, PoolError};

use common::guards::GUARDS;
use common::typed::{addr, live};

#[derive(Debug, Clone, Copy, PartialEq)]
struct Zst;

#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(align(4096))]
struct Page {
    x: u64,
    y: [u8; 7],
}

/// 40,000 bytes: above the largest size class (32 KiB), a few to a chunk.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Forty([u8; 40_000]);

/// 40,003 bytes: not a multiple of 8, so the canary follows the rounded-up size.
#[derive(Debug, Clone, Copy, PartialEq)]
struct FortyOdd([u8; 40_003]);

/// 256 KiB, the largest block a pool serves.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Max([u8; 256 * 1024]);

#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(align(8192))]
struct Align8192(u8);

#[derive(Debug, Clone, Copy, PartialEq)]
struct TooBig([u8; 300_000]);

/// Fills a byte array with a pattern of `seed`, and checks it.
fn fill(bytes: &mut [u8], seed: u64) {
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = (seed as usize ^ i.wrapping_mul(31)) as u8;
    }
}

fn filled(bytes: &[u8], seed: u64) -> bool {
    bytes
        .iter()
        .enumerate()
        .all(|(i, &b)| b == (seed as usize ^ i.wrapping_mul(31)) as u8)
}

/// How to make, change and check values of a type, for [`exercise`].
trait Sample: Send + Sized + 'static {
    fn make(seed: u64) -> Box<Self>;
    fn change(&mut self, seed: u64);
    fn holds(&self, seed: u64) -> bool;
}

impl Sample for Zst {
    fn make(_: u64) -> Box<Self> {
        Box::new(Zst)
    }
    fn change(&mut self, _: u64) {
        *self = Zst;
    }
    fn holds(&self, _: u64) -> bool {
        *self == Zst
    }
}

impl Sample for Page {
    fn make(seed: u64) -> Box<Self> {
        Box::new(Page {
            x: seed,
            y: [seed as u8; 7],
        })
    }
    fn change(&mut self, seed: u64) {
        *self = Page {
            x: seed,
            y: [seed as u8; 7],
        };
    }
    fn holds(&self, seed: u64) -> bool {
        self.x == seed && self.y == [seed as u8; 7]
    }
}

macro_rules! sample_bytes {
    ($ty:ident, $len:expr) => {
        impl Sample for $ty {
            fn make(seed: u64) -> Box<Self> {
                // Built on the heap: a debug build copies a by-value array several times.
                let mut b = Box::new($ty([0; $len]));
                fill(&mut b.0, seed);
                b
            }
            fn change(&mut self, seed: u64) {
                fill(&mut self.0, seed);
            }
            fn holds(&self, seed: u64) -> bool {
                filled(&self.0, seed)
            }
        }
    };
}

sample_bytes!(Forty, 40_000);
sample_bytes!(FortyOdd, 40_003);
sample_bytes!(Max, 256 * 1024);

/// Runs a pool of `T` under `guard` through two rounds of: acquire `count` values with
/// `acquire_with`, write each (through the handle), read every one back, lend every
/// other one out and redeem it, then drop them all. Checks alignment, distinct blocks
/// (but for zero-sized `T`, whose blocks are still distinct), `live_blocks`,
/// `leaked_raw` and `corruption_events`.
fn exercise<T: Sample>(name: &str, guard: GuardLevel, count: u64) {
    let pool = Pool::<T>::new(
        PoolConfig::new(format!("{name}-{guard:?}"))
            .capacity(1)
            .max_capacity(count as usize)
            .guard(guard),
    )
    .unwrap_or_else(|e| panic!("{name} under {guard:?}: {e}"));
    for round in 0..2u64 {
        let mut hs: Vec<Handle<T>> = (0..count)
            .map(|i| {
                pool.acquire_with(*T::make(i))
                    .unwrap_or_else(|e| panic!("{name} {guard:?} value {i}: {e}"))
            })
            .collect();
        let addrs: HashSet<usize> = hs.iter().map(addr).collect();
        assert_eq!(
            addrs.len(),
            count as usize,
            "{name} {guard:?}: blocks shared"
        );
        for (i, h) in (0..).zip(&hs) {
            assert_eq!(addr(h) % core::mem::align_of::<T>(), 0, "{name} {guard:?}");
            assert!(
                h.holds(i),
                "{name} {guard:?} round {round}: value {i} as acquired"
            );
        }
        for (i, h) in (0..).zip(hs.iter_mut()) {
            h.change(1000 + i + round);
        }
        let mut back = Vec::new();
        for (i, h) in (0..).zip(hs) {
            if i % 2 == 0 {
                let raw = Handle::into_raw(h);
                back.push(
                    pool.redeem(raw)
                        .unwrap_or_else(|e| panic!("{name} {guard:?}: redeem of value {i}: {e}")),
                );
                assert!(
                    matches!(pool.redeem(raw), Err(PoolError::StaleHandle { .. })),
                    "{name} {guard:?}: a token redeemed twice"
                );
            } else {
                back.push(h);
            }
        }
        assert_eq!(pool.leaked_raw(), 0);
        for (i, h) in (0..).zip(&back) {
            assert!(
                h.holds(1000 + i + round),
                "{name} {guard:?} round {round}: value {i} as written"
            );
        }
        assert_eq!(live(pool), count, "{name} {guard:?}");
        drop(back);
        let stats = pool.stats();
        assert_eq!(stats.live_blocks, 0, "{name} {guard:?}: {stats:?}");
        assert_eq!(stats.corruption_events, 0, "{name} {guard:?}: {stats:?}");
        assert_eq!(pool.leaked_raw(), 0, "{name} {guard:?}");
    }
}

fn refused<T: 'static>(name: &str, size: usize, align: usize) {
    for guard in GUARDS {
        match Pool::<T>::new(
            PoolConfig::new(name)
                .capacity(0)
                .max_capacity(4)
                .guard(guard),
        ) {
            Err(PoolError::UnsupportedLayout { layout, reason }) => {
                assert_eq!(
                    (layout.size(), layout.align()),
                    (size, align),
                    "{name} {guard:?}"
                );
                assert!(!reason.is_empty());
            }
            Err(e) => panic!("{name} {guard:?}: refused with {e:?}"),
            Ok(_) => panic!("{name} {guard:?}: accepted"),
        }
    }
}

/// Zero-sized, `#[repr(align(4096))]`, 40,000-byte (and 40,003-byte) and
/// 256 KiB values work in `Pool::new` pools under `GuardLevel::Off`, `Canary` and `Full`:
/// acquire_with, write, read back, into_raw and redeem, drop, and `live_blocks` is 0
/// again, twice over (so the second round reuses blocks a guard has checked or
/// poisoned). 300 zero-sized and `Page` values, 30 of 40 KB (several chunks) and 5 of
/// 256 KiB (two chunks) per guard. `#[repr(align(8192))]` and 300,000-byte types are
/// refused by `Pool::new` with `UnsupportedLayout` naming their layout, under every guard.
#[test]
fn odd_layouts_work_under_every_guard_and_oversized_ones_are_refused() {
    // Debug builds move large values through the stack several times.
    thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(|| {
            for guard in GUARDS {
                exercise::<Zst>("layouts-zst", guard, 300);
                exercise::<Page>("layouts-page", guard, 300);
                exercise::<Forty>("layouts-40k", guard, 30);
                exercise::<FortyOdd>("layouts-40k-odd", guard, 30);
                exercise::<Max>("layouts-256k", guard, 5);
            }
        })
        .unwrap()
        .join()
        .unwrap();
    refused::<Align8192>("layouts-align8192", 8192, 8192);
    refused::<TooBig>("layouts-300k", 300_000, 1);
}
