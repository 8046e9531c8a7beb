//! Typed pools under load from several threads at once.
//!
//! Two threads trade 64-byte pooled orders through a bounded channel. A producer acquires
//! `Handle<Order>`s (every other one with `acquire()` and then filled in, the rest with
//! `acquire_with`) and sends them, as handles or as `u64` tokens, through
//! `std::sync::mpsc::sync_channel` to a consumer that redeems the tokens, checks every
//! order (sequence, checksum, payload) and drops it. At the end: every order created was
//! dropped exactly once (`created == dropped`, no drop of an unknown order),
//! `live_blocks == 0`, `leaked_raw == 0`, and blocks moved between the threads
//! (`cross_thread_frees > 0`). A third test runs the traffic both ways at once. Sizes shrink
//! under `debug_assertions` and Miri to keep the run short.
//!
//! A fourth test calls `reclaim()` every 200 µs for 2 s while typed workers acquire and
//! release bursts of values, tokens are redeemed on other threads and block pool blocks
//! are freed on other threads: nothing is corrupted, no block is handed out twice, and the
//! counts stay exact.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use core::alloc::Layout;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::sync_channel;
use std::thread;
use std::time::{Duration, Instant};

use tally_pool::block::{BlockPool, BlockPoolConfig};
use tally_pool::stats::{Source, Urgency};
use tally_pool::{GuardLevel, Handle, Pool, PoolConfig, PoolError, RawHandle};

use common::block::{block, free_owned};
use common::live_set::LiveSet;
use common::rng::Rng;
use common::stamp::{damage, pattern, stamp};
use common::stats::assert_counts;
use common::threads::WorkerDone;
use common::typed::addr;

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

// ----- reclaim racing everything ----------------------------------------------------------

/// Words of a value (and of a block) in the reclaim race: 1 KiB, about a thousand to a
/// chunk, so that bursts free whole chunks.
const WORDS: usize = 128;

/// A pooled value whose every word is derived from its id.
#[derive(Debug)]
struct Stamped {
    words: [u64; WORDS],
}

impl Stamped {
    fn boxed(id: u64) -> Box<Self> {
        let mut s = Box::new(Stamped { words: [0; WORDS] });
        s.stamp(id);
        s
    }

    fn stamp(&mut self, id: u64) {
        for (i, w) in self.words.iter_mut().enumerate() {
            *w = pattern(id, i);
        }
    }

    fn intact(&self, id: u64) -> bool {
        self.words
            .iter()
            .enumerate()
            .all(|(i, &w)| w == pattern(id, i))
    }
}

/// How long the reclaim race runs.
fn race_time() -> Duration {
    if cfg!(miri) {
        Duration::from_millis(50)
    } else {
        Duration::from_secs(2)
    }
}

/// For at least 2 s (50 ms under Miri; the race says how long), a thread calls `reclaim()`
/// every 200 µs on two typed pools (`Off` and `Canary`) and on a `Canary` block pool
/// while: two workers per typed pool acquire bursts of 1 KiB values (up to 2,500,
/// several chunks' worth), stamp each with a per-value pattern, and check and release
/// them in random order; a lender lends values (`into_raw`) to a redeemer thread through
/// a channel, which redeems, checks and releases them; and an allocator sends block pool
/// blocks, stamped, to a freer thread, which checks and frees them. Every value and block is checked intact when it is released, no
/// block is handed out twice while live (a set of live addresses per pool), and at the end
/// every pool has `live_blocks == 0`, `leaked_raw == 0`, allocation and free counts equal
/// to the ones the threads counted, no corruption, and (the threads gone) a last
/// `reclaim()` leaves no chunk. Some reclaim must have given memory back while the threads
/// ran. (A reclaim walks every free block in the depot: in a debug build, with tens of
/// thousands free, one takes milliseconds, so the rounds run nearly back to back, 60 to
/// 110 of them in the 2 s.)
#[test]
fn reclaim_racing_workers_redeems_and_cross_thread_frees_corrupts_nothing() {
    let config = |name: &str, guard| {
        PoolConfig::new(name)
            .capacity(0)
            .max_capacity(1 << 16)
            .guard(guard)
            .per_node(false)
    };
    let plain = Pool::<Stamped>::new(config("stress-reclaim-off", GuardLevel::Off)).unwrap();
    let guarded =
        Pool::<Stamped>::new(config("stress-reclaim-canary", GuardLevel::Canary)).unwrap();
    let blocks = BlockPool::new(
        BlockPoolConfig::new(Layout::new::<[u64; WORDS]>())
            .name("stress-reclaim-blocks")
            .guard(GuardLevel::Canary),
    )
    .unwrap();
    let typed = [
        (plain, LiveSet::new("off")),
        (guarded, LiveSet::new("canary")),
    ];
    let block_set = LiveSet::new("blocks");
    let next_id = AtomicU64::new(1);
    // That the race was real: the reclaimer ran often and, at least once, found a chunk
    // with every block free while the threads ran. Under miri, and under ThreadSanitizer
    // (whose runs `.ci/run` marks with `TSAN_OPTIONS`), the threads run many times slower
    // and a run may take long before any chunk comes free: there the race lasts its time
    // and only the checks of what it left behind, below, apply. Elsewhere it lasts at
    // least its time and until both hold (a minute at most, then the checks fail).
    let instrumented = cfg!(miri) || std::env::var_os("TSAN_OPTIONS").is_some();
    let started = Instant::now();
    let stop = AtomicBool::new(false);
    let running = || !stop.load(Ordering::Relaxed);
    // Threads still working: 2 workers and a lender per typed pool, and the allocator.
    let working = AtomicUsize::new(7);
    let acquired = [AtomicU64::new(0), AtomicU64::new(0)];
    let released = [AtomicU64::new(0), AtomicU64::new(0)];
    let (block_allocs, block_frees) = (AtomicU64::new(0), AtomicU64::new(0));
    let reclaimed_while_running = AtomicU64::new(0);
    let reclaims = AtomicU64::new(0);
    let reclaim_nanos = AtomicU64::new(0);

    thread::scope(|s| {
        let (typed, block_set, next_id, working) = (&typed, &block_set, &next_id, &working);
        let (acquired, released) = (&acquired, &released);
        let (block_allocs, block_frees, blocks) = (&block_allocs, &block_frees, &blocks);
        let (reclaimed_while_running, reclaims) = (&reclaimed_while_running, &reclaims);
        let (reclaim_nanos, stop, running) = (&reclaim_nanos, &stop, &running);

        let mut threads = Vec::new();

        // The reclaimer.
        let reclaimer = s.spawn(move || {
            let mut round = 0u64;
            while working.load(Ordering::Acquire) > 0 {
                let start = Instant::now();
                // The explicit reclaim, and in turn what the pressure monitor asks: each
                // urgency through the typed pools' `Source` (passed on to their node
                // pools, keeping their reserve), and growth ahead of demand.
                let urgency =
                    [Urgency::Moderate, Urgency::High, Urgency::Critical][(round % 3) as usize];
                round += 1;
                let bytes = if round & 1 == 0 {
                    plain.reclaim() + guarded.reclaim() + blocks.reclaim()
                } else {
                    plain.grow_ahead();
                    blocks.grow_ahead();
                    Source::reclaim_idle(plain, urgency, Duration::ZERO)
                        + Source::reclaim_idle(guarded, urgency, Duration::ZERO)
                        + blocks.reclaim_idle(urgency, Duration::ZERO)
                };
                reclaim_nanos.fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
                reclaimed_while_running.fetch_add(bytes as u64, Ordering::Relaxed);
                let rounds = reclaims.fetch_add(1, Ordering::Relaxed) + 1;
                let elapsed = started.elapsed();
                let race_was_real = instrumented
                    || rounds > 10 && reclaimed_while_running.load(Ordering::Relaxed) > 0;
                if elapsed >= race_time() && race_was_real || elapsed >= Duration::from_secs(60) {
                    stop.store(true, Ordering::Relaxed);
                }
                // Waits 200 µs from the start of this round without sleeping: a sleeping
                // thread on two busy cores wakes only every few milliseconds.
                while start.elapsed() < Duration::from_micros(200) {
                    thread::yield_now();
                }
            }
        });

        for (p, (pool, set)) in typed.iter().enumerate() {
            let pool: &'static Pool<Stamped> = pool;
            // Workers: bursts acquired, stamped, checked and released in random order.
            for w in 0..2u64 {
                threads.push(s.spawn(move || {
                    let _done = WorkerDone(working);
                    let mut rng = Rng::new(0xab5e_0000 + 16 * p as u64 + w);
                    let mut held: Vec<(Handle<Stamped>, u64)> = Vec::new();
                    while running() {
                        // Mostly small batches kept in the thread's cache; now and then
                        // a burst over several chunks, all of it freed.
                        let (want, keep) = if rng.below(16) == 0 {
                            (1000 + rng.index(1500), 0)
                        } else {
                            (1 + rng.index(100), rng.index(30))
                        };
                        for _ in 0..want {
                            let id = next_id.fetch_add(1, Ordering::Relaxed);
                            let h = if rng.below(2) == 0 {
                                pool.acquire_with(*Stamped::boxed(id)).unwrap()
                            } else {
                                let mut h =
                                    pool.acquire_with(Stamped { words: [0; WORDS] }).unwrap();
                                h.stamp(id);
                                h
                            };
                            acquired[p].fetch_add(1, Ordering::Relaxed);
                            set.enter(addr(&h));
                            held.push((h, id));
                        }
                        while held.len() > keep {
                            let (h, id) = held.swap_remove(rng.index(held.len()));
                            assert!(h.intact(id), "{}: value {id} damaged", set.name());
                            set.leave(addr(&h));
                            drop(h);
                            released[p].fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    for (h, id) in held {
                        assert!(h.intact(id), "{}: value {id} damaged", set.name());
                        set.leave(addr(&h));
                        drop(h);
                        released[p].fetch_add(1, Ordering::Relaxed);
                    }
                }));
            }
            // A lender and a redeemer: tokens cross threads in batches.
            let (tx, rx) = sync_channel::<Vec<(u64, u64)>>(8);
            threads.push(s.spawn(move || {
                let _done = WorkerDone(working);
                let mut rng = Rng::new(0x1e4d_0000 + p as u64);
                while running() {
                    let batch: Vec<(u64, u64)> = (0..1 + rng.index(600))
                        .map(|_| {
                            let id = next_id.fetch_add(1, Ordering::Relaxed);
                            let h = pool.acquire_with(*Stamped::boxed(id)).unwrap();
                            acquired[p].fetch_add(1, Ordering::Relaxed);
                            set.enter(addr(&h));
                            (Handle::into_raw(h).to_bits(), id)
                        })
                        .collect();
                    tx.send(batch).unwrap();
                }
            }));
            threads.push(s.spawn(move || {
                for batch in rx {
                    for (bits, id) in batch {
                        let h = pool.redeem(RawHandle::from(bits)).unwrap();
                        assert!(h.intact(id), "{}: lent value {id} damaged", set.name());
                        set.leave(addr(&h));
                        drop(h);
                        released[p].fetch_add(1, Ordering::Relaxed);
                        assert!(
                            matches!(
                                pool.redeem(RawHandle::from(bits)),
                                Err(PoolError::StaleHandle { .. })
                            ),
                            "{}: a token redeemed twice",
                            set.name()
                        );
                    }
                }
            }));
        }

        // Block pool: allocated and stamped here, checked and freed on another thread,
        // which owns each block once it is sent: the allocator keeps no copy.
        let (tx, rx) = sync_channel::<Vec<(usize, u64)>>(8);
        threads.push(s.spawn(move || {
            let _done = WorkerDone(working);
            let mut rng = Rng::new(0xb10c);
            while running() {
                let batch: Vec<(usize, u64)> = (0..1 + rng.index(2500))
                    .map(|_| {
                        let b = blocks.allocate().unwrap();
                        block_allocs.fetch_add(1, Ordering::Relaxed);
                        let id = next_id.fetch_add(1, Ordering::Relaxed);
                        let at = b.as_ptr() as usize;
                        block_set.enter(at);
                        stamp(b, WORDS, id);
                        (at, id)
                    })
                    .collect();
                tx.send(batch).unwrap();
            }
        }));
        threads.push(s.spawn(move || {
            for batch in rx {
                for (at, id) in batch {
                    let damaged = damage(block(at), WORDS, id);
                    assert!(
                        damaged.is_none(),
                        "blocks: block {id} at {at:#x} damaged: {damaged:x?}"
                    );
                    block_set.leave(at);
                    free_owned(blocks, block(at))
                        .unwrap_or_else(|e| panic!("blocks: free of {at:#x}: {e}"));
                    block_frees.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));

        // Joined one by one, which waits for each thread's exit (its thread-local caches
        // go back to their pools then); the end of the scope would not.
        for t in threads {
            t.join().unwrap();
        }
        reclaimer.join().unwrap();
    });

    let rounds = reclaims.load(Ordering::Relaxed);
    let bytes = reclaimed_while_running.load(Ordering::Relaxed);
    eprintln!(
        "{rounds} reclaims ({} ms inside them) released {bytes} bytes while the threads ran; typed values: {:?} / {:?}, blocks: {}",
        reclaim_nanos.load(Ordering::Relaxed) / 1_000_000,
        acquired[0],
        acquired[1],
        block_allocs.load(Ordering::Relaxed)
    );
    if !instrumented {
        assert!(rounds > 10, "the reclaimer ran {rounds} times");
        assert!(
            bytes > 0,
            "no reclaim gave memory back while the threads ran"
        );
    }
    for (p, (pool, set)) in typed.iter().enumerate() {
        assert!(set.is_empty(), "{}: addresses still live", set.name());
        assert_counts(
            &pool.stats(),
            acquired[p].load(Ordering::Relaxed),
            released[p].load(Ordering::Relaxed),
            0,
            format_args!("{}", set.name()),
        );
        assert_eq!(pool.leaked_raw(), 0, "{}", set.name());
        pool.reclaim();
        let after = pool.stats();
        assert_eq!(after.chunks, 0, "{}: a chunk kept: {after:?}", set.name());
    }
    assert!(block_set.is_empty(), "blocks: addresses still live");
    assert_counts(
        &blocks.stats(),
        block_allocs.load(Ordering::Relaxed),
        block_frees.load(Ordering::Relaxed),
        0,
        format_args!("blocks"),
    );
    blocks.reclaim();
    assert_eq!(blocks.stats().chunks, 0, "blocks: {:?}", blocks.stats());
}
