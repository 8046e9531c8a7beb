//! Two threads trade 64-byte pooled orders through a bounded channel.
//!
//! A producer acquires `Handle<Order>`s (every other one with `acquire()` and then filled
//! in, the rest with `acquire_with`) and sends them, as handles or as `u64` tokens, through
//! `std::sync::mpsc::sync_channel` to a consumer that redeems the tokens, checks every
//! order (sequence, checksum, payload) and drops it. At the end: every order created was
//! dropped exactly once (`created == dropped`, no drop of an unknown order),
//! `live_blocks == 0`, `leaked_raw == 0`, and blocks moved between the threads
//! (`cross_thread_frees > 0`). A third test runs the traffic both ways at once. Sizes shrink
//! under `debug_assertions` and Miri to keep the run short.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::sync_channel;
use std::thread;

use tally_pool::{Handle, Pool, PoolConfig, PoolError, RawHandle};

/// Orders each test sends.
fn orders() -> u64 {
    if cfg!(miri) {
        300
    } else if cfg!(debug_assertions) {
        1_000_000
    } else {
        2_000_000
    }
}

fn check_word(seq: u64) -> u64 {
    seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x0bad_cafe
}

/// Defines a 64-byte order type with its own creation and drop counters, so tests that run
/// in parallel count only their own orders.
macro_rules! order_type {
    ($name:ident) => {
        #[derive(Debug, Default)]
        #[repr(C)]
        struct $name {
            seq: u64,
            price: i64,
            qty: u32,
            side: u8,
            live: bool,
            check: u64,
            pad: [u64; 4],
        }

        impl $name {
            fn counters() -> &'static [AtomicU64; 2] {
                static C: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];
                &C
            }

            fn created() -> u64 {
                Self::counters()[0].load(Ordering::SeqCst)
            }

            fn dropped() -> u64 {
                Self::counters()[1].load(Ordering::SeqCst)
            }

            /// Fills in order `seq`, counting it created.
            fn fill(&mut self, seq: u64) {
                assert!(!self.live, "filling an order that is already live");
                Self::counters()[0].fetch_add(1, Ordering::Relaxed);
                *self = Self {
                    seq,
                    price: seq as i64 * -7,
                    qty: seq as u32 ^ 0x55,
                    side: (seq % 2) as u8,
                    live: true,
                    check: check_word(seq),
                    pad: [seq; 4],
                };
                // The assignment dropped the old (not live) value: not counted.
            }

            fn make(seq: u64) -> Self {
                let mut o = Self::default();
                o.fill(seq);
                o
            }

            fn verify(&self, seq: u64) {
                assert!(self.live, "order {seq} is not live");
                assert_eq!(self.seq, seq, "orders out of sequence");
                assert_eq!(self.check, check_word(seq), "order {seq} damaged");
                assert_eq!(self.price, seq as i64 * -7, "order {seq} damaged");
                assert_eq!(self.qty, seq as u32 ^ 0x55, "order {seq} damaged");
                assert_eq!(self.side, (seq % 2) as u8, "order {seq} damaged");
                assert_eq!(self.pad, [seq; 4], "order {seq} damaged");
            }
        }

        impl Drop for $name {
            fn drop(&mut self) {
                if self.live {
                    self.live = false;
                    assert_eq!(self.check, check_word(self.seq), "dropping a damaged order");
                    Self::counters()[1].fetch_add(1, Ordering::Relaxed);
                }
            }
        }

        const _: () = assert!(core::mem::size_of::<$name>() == 64);
    };
}

/// Acquires order `seq`, by `acquire` for even and `acquire_with` for odd sequence numbers.
macro_rules! acquire_order {
    ($pool:expr, $ty:ident, $seq:expr) => {{
        let seq = $seq;
        if seq % 2 == 0 {
            let mut h = $pool.acquire().unwrap();
            h.fill(seq);
            h
        } else {
            $pool
                .acquire_with($ty::make(seq))
                .map_err(PoolError::from)
                .unwrap()
        }
    }};
}

order_type!(HandleOrder);

#[test]
fn handles_through_a_channel() {
    let n = orders();
    let pool = Pool::<HandleOrder>::new(
        PoolConfig::new("stress-handles")
            .capacity(4096)
            .max_capacity(1 << 16),
    )
    .unwrap();
    let (tx, rx) = sync_channel::<Handle<HandleOrder>>(1024);
    let consumer = thread::spawn(move || {
        let mut next = 0;
        for h in rx {
            h.verify(next);
            drop(h);
            next += 1;
        }
        next
    });
    for seq in 0..n {
        tx.send(acquire_order!(pool, HandleOrder, seq)).unwrap();
    }
    drop(tx);
    assert_eq!(consumer.join().unwrap(), n);
    let stats = pool.stats();
    assert_eq!(HandleOrder::created(), n);
    assert_eq!(
        HandleOrder::dropped(),
        n,
        "every order dropped exactly once"
    );
    assert_eq!(stats.live_blocks, 0, "{stats:?}");
    assert_eq!(stats.allocations, n);
    assert_eq!(stats.frees, n);
    assert!(stats.cross_thread_frees > 0, "{stats:?}");
    assert_eq!(stats.corruption_events, 0);
}

order_type!(TokenOrder);

#[test]
fn tokens_through_a_channel() {
    let n = orders();
    let pool = Pool::<TokenOrder>::new(
        PoolConfig::new("stress-tokens")
            .capacity(4096)
            .max_capacity(1 << 16),
    )
    .unwrap();
    let (tx, rx) = sync_channel::<u64>(1024);
    let consumer = thread::spawn(move || {
        let mut next = 0;
        for bits in rx {
            let token = RawHandle::<TokenOrder>::from(bits);
            let h = pool.redeem(token).unwrap();
            h.verify(next);
            drop(h);
            // Spent, and the block may be in use again by now: stale either way.
            if next % 1024 == 0 {
                assert!(matches!(
                    pool.redeem(token),
                    Err(PoolError::StaleHandle { .. })
                ));
            }
            next += 1;
        }
        next
    });
    for seq in 0..n {
        let h = acquire_order!(pool, TokenOrder, seq);
        tx.send(Handle::into_raw(h).into()).unwrap();
    }
    drop(tx);
    assert_eq!(consumer.join().unwrap(), n);
    let stats = pool.stats();
    assert_eq!(TokenOrder::created(), n);
    assert_eq!(TokenOrder::dropped(), n, "every order dropped exactly once");
    assert_eq!(stats.live_blocks, 0, "{stats:?}");
    assert_eq!(pool.leaked_raw(), 0);
    assert!(stats.cross_thread_frees > 0, "{stats:?}");
    assert_eq!(stats.corruption_events, 0);
}

order_type!(BothWaysOrder);

#[test]
fn both_ways_at_once() {
    let n = orders() / 2;
    let pool = Pool::<BothWaysOrder>::new(
        PoolConfig::new("stress-both-ways")
            .capacity(4096)
            .max_capacity(1 << 16),
    )
    .unwrap();
    let (to_b, from_a) = sync_channel::<Handle<BothWaysOrder>>(256);
    let (to_a, from_b) = sync_channel::<u64>(256);
    // Thread B sends tokens of odd orders to A and checks A's even orders (handles).
    let b = thread::spawn(move || {
        let sender = thread::spawn(move || {
            for i in 0..n {
                let h = acquire_order!(pool, BothWaysOrder, 2 * i + 1);
                to_a.send(Handle::into_raw(h).into()).unwrap();
            }
        });
        for (i, h) in (0..).zip(from_a) {
            h.verify(2 * i);
        }
        sender.join().unwrap();
    });
    let a_sender = thread::spawn(move || {
        for i in 0..n {
            to_b.send(acquire_order!(pool, BothWaysOrder, 2 * i))
                .unwrap();
        }
    });
    for (i, bits) in (0..).zip(from_b) {
        pool.redeem(RawHandle::from(bits))
            .unwrap()
            .verify(2 * i + 1);
    }
    a_sender.join().unwrap();
    b.join().unwrap();
    let stats = pool.stats();
    assert_eq!(BothWaysOrder::created(), 2 * n);
    assert_eq!(
        BothWaysOrder::dropped(),
        2 * n,
        "every order dropped exactly once"
    );
    assert_eq!(stats.live_blocks, 0, "{stats:?}");
    assert_eq!(pool.leaked_raw(), 0);
    assert_eq!(stats.corruption_events, 0);
}
