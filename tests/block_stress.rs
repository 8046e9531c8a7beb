//! Two-thread stress tests of `tally_pool::block::BlockPool`.
//!
//! Each test runs two phases on one pool, with two worker threads each:
//!
//! 1. **Producer/consumer**: one thread allocates blocks, stamps each with a sequence tag and
//!    sends the addresses (as `usize`, in batches of random size) through a bounded
//!    `std::sync::mpsc::sync_channel` to the other thread, which checks the tag and frees
//!    the block. The freeing thread never allocates, so every block crosses threads and
//!    the caches trade magazines through the depot in one direction.
//! 2. **Churn**: both threads allocate batches of random size (up to 300, more than a
//!    thread cache holds), stamp every word of every block with a tag naming the owner
//!    thread and the allocation, keep a random subset alive across rounds, and verify each
//!    block's tag right before freeing it. In `stress_with_concurrent_reclaim` a third
//!    thread meanwhile allocates bursts of blocks spanning several chunks, frees them and
//!    calls `reclaim()`, so that chunks are given back (and reused) while the workers run.
//!
//! Checked: no block is handed out twice while live (the tags, plus a shared set that
//! every allocation of a sampled address enters and every free leaves), no block overlaps
//! another (every word of a block is stamped and checked), the allocation and free counts
//! the test keeps match `BlockPool::stats()` exactly, `live_blocks` is 0 when all is freed,
//! every free of phase 1 counts as a cross-thread free, and after the threads have exited
//! (which returns their caches) `reclaim()` gives every chunk back (`chunks == 0`).
//!
//! Every free keeps to the contract of the `unsafe fn BlockPool::free`: each block is
//! allocated once, held by one thread at a time (the producer gives up what it sends) and
//! freed once, by its holder.
//!
//! # Sizes
//!
//! An *operation* is one `allocate` or one `free`. Each phase runs
//! `TALLY_STRESS_OPS` operations in total over both threads, by default 10,000,000 for
//! `GuardLevel::Off` (a quarter for `Canary`, a tenth for `Full` and for the
//! concurrent-reclaim test); under Miri the default is 2,000.
//!
//! Debug builds (what `cargo test --workspace` runs) use the same 10,000,000. Measured on
//! a two-core machine, the whole file (four tests, run in parallel) takes about 6 s in
//! debug when the machine is idle (`Off`: 2.4 s for the producer/consumer phase and 2.2 s
//! for the churn) and 12 to 16 s with other builds loading it (load average 5 to 6), against
//! about 1 s in release: well under the one-minute budget, so there is no separate debug
//! count. Set `TALLY_STRESS_OPS` to run more (or fewer).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use core::alloc::Layout;
use core::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::sync_channel;
use std::thread;
use std::time::{Duration, Instant};

use tally_pool::block::{BlockPool, BlockPoolConfig, GuardLevel};
use tally_pool::stats::{Source, Urgency};

use common::block::free_owned;
use common::live_set::LiveSet;
use common::rng::Rng;
use common::stamp::{check, stamp};
use common::stats::assert_counts;
use common::threads::WorkerDone;

/// Words (u64) in a block.
const WORDS: usize = 8;
/// The block type of the pools under test: 64 bytes, 8-aligned.
type Block = [u64; WORDS];

/// Operations per phase, release and debug builds alike (see the module docs for the
/// measurements).
const DEFAULT_OPS: usize = 10_000_000;
/// Operations per phase under Miri.
const MIRI_OPS: usize = 2_000;

/// Owner ids written into tags.
const PRODUCER: u64 = 1;

/// The operation count per phase for a test that runs `1 / divisor` of the full count.
fn ops_per_phase(divisor: usize) -> usize {
    let base = match std::env::var("TALLY_STRESS_OPS") {
        Ok(text) => text
            .trim()
            .parse::<usize>()
            .unwrap_or_else(|e| panic!("TALLY_STRESS_OPS={text:?} is not a count: {e}")),
        Err(_) if cfg!(miri) => MIRI_OPS,
        Err(_) => DEFAULT_OPS,
    };
    (base / divisor).max(4)
}

/// The tag of allocation number `seq` of thread `owner`.
fn tag(owner: u64, seq: u64) -> u64 {
    (owner << 56) | seq
}

/// What a worker thread did.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    allocations: u64,
    frees: u64,
}

impl core::ops::Add for Counts {
    type Output = Self;
    fn add(self, o: Self) -> Self {
        Self {
            allocations: self.allocations + o.allocations,
            frees: self.frees + o.frees,
        }
    }
}

fn new_pool(name: &str, guard: GuardLevel) -> BlockPool {
    BlockPool::new(
        BlockPoolConfig::new(Layout::new::<Block>())
            .name(name)
            .capacity(1024)
            .guard(guard),
    )
    .unwrap()
}

/// Phase 1: one thread allocates `ops / 2` blocks and sends them to another that frees
/// them.
fn producer_consumer(pool: &BlockPool, ops: usize, sample: &LiveSet) -> Counts {
    let blocks = (ops / 2) as u64;
    let (tx, rx) = sync_channel::<Vec<usize>>(64);
    thread::scope(|s| {
        let producer = s.spawn(move || {
            let mut rng = Rng::new(0x5EED_0001);
            let mut counts = Counts::default();
            let mut batch = Vec::new();
            let mut target = rng.range(1, 256);
            for seq in 0..blocks {
                let block = pool.allocate().unwrap();
                counts.allocations += 1;
                stamp(block, WORDS, tag(PRODUCER, seq));
                sample.enter(block.as_ptr() as usize);
                batch.push(block.as_ptr() as usize);
                if batch.len() >= target {
                    tx.send(core::mem::take(&mut batch)).unwrap();
                    target = rng.range(1, 256);
                }
            }
            if !batch.is_empty() {
                tx.send(batch).unwrap();
            }
            counts
        });
        let consumer = s.spawn(|| {
            let mut counts = Counts::default();
            let mut expect = 0u64;
            for batch in rx {
                for addr in batch {
                    let block = NonNull::new(addr as *mut u8).unwrap();
                    check(block, WORDS, tag(PRODUCER, expect), "producer/consumer");
                    expect += 1;
                    sample.leave(addr);
                    free_owned(pool, block).unwrap();
                    counts.frees += 1;
                }
            }
            assert_eq!(expect, blocks, "the consumer saw every block");
            counts
        });
        // Explicit joins wait for the threads to exit, thread-local destructors (which
        // return the caches) included.
        let made = producer.join().unwrap();
        let freed = consumer.join().unwrap();
        made + freed
    })
}

/// Phase 2: both threads allocate, stamp, verify and free, `ops / 2` operations each.
///
/// With `with_reclaimer`, a third thread runs meanwhile: it allocates a burst of blocks
/// spanning several chunks, stamps and checks them, frees them all and calls `reclaim()`
/// (or `reclaim_idle` at each urgency, or `grow_ahead`), again and again, so that chunks really are given back while the workers allocate and
/// free. A reclaim must never give back memory a live block is in (the tags would show it)
/// nor lose a block (the final reclaim would keep a chunk).
fn churn(pool: &BlockPool, ops: usize, sample: &LiveSet, with_reclaimer: bool) -> Counts {
    let per_thread = (ops / 2) as u64;
    let working = AtomicUsize::new(2);
    let released = AtomicUsize::new(0);
    thread::scope(|s| {
        let reclaimer = with_reclaimer.then(|| {
            s.spawn(|| {
                let mut rng = Rng::new(0x00EC_1A11);
                let mut counts = Counts::default();
                let mut rounds = 0u64;
                let mut burst = Vec::new();
                let mut seq = 0u64;
                let mut released_while_working = 0;
                // One more round once the workers are gone: it must reclaim.
                let mut last = false;
                while !last {
                    last = working.load(Ordering::Acquire) == 0;
                    for _ in 0..rng.range(5_000, 40_000) {
                        let block = pool.allocate().unwrap();
                        counts.allocations += 1;
                        let t = tag(9, seq);
                        seq += 1;
                        stamp(block, WORDS, t);
                        sample.enter(block.as_ptr() as usize);
                        burst.push((block, t));
                    }
                    for (block, t) in burst.drain(..) {
                        check(block, WORDS, t, "reclaimer burst");
                        sample.leave(block.as_ptr() as usize);
                        free_owned(pool, block).unwrap();
                        counts.frees += 1;
                    }
                    // Every urgency the pressure monitor asks for, and growth ahead of
                    // demand, in turn; the last round is a full reclaim.
                    let now = match rounds % 5 {
                        _ if last => pool.reclaim(),
                        0 => pool.reclaim(),
                        1 => pool.reclaim_idle(Urgency::Moderate, Duration::ZERO),
                        2 => pool.reclaim_idle(Urgency::High, Duration::ZERO),
                        3 => pool.reclaim_idle(Urgency::Critical, Duration::ZERO),
                        _ => {
                            pool.grow_ahead();
                            pool.reclaim_idle(Urgency::Low, Duration::ZERO)
                        }
                    };
                    released.fetch_add(now, Ordering::Relaxed);
                    if working.load(Ordering::Acquire) > 0 {
                        released_while_working += now;
                    }
                    rounds += 1;
                }
                eprintln!(
                    "{rounds} reclaims during the churn, {released_while_working} bytes released \
                     while the workers ran"
                );
                (rounds, counts)
            })
        });
        let (working, released) = (&working, &released);
        let workers: Vec<_> = (0..2u64)
            .map(|t| {
                s.spawn(move || {
                    // Counts this worker out when it returns or panics, so that the
                    // reclaimer stops either way.
                    let _done = WorkerDone(working);
                    let owner = 2 + t;
                    let mut rng = Rng::new(0xC0FF_EE00 + t);
                    let mut counts = Counts::default();
                    let mut live: Vec<(NonNull<u8>, u64)> = Vec::new();
                    let mut seq = 0u64;
                    let free_one =
                        |live: &mut Vec<(NonNull<u8>, u64)>, rng: &mut Rng, counts: &mut Counts| {
                            let i = rng.range(0, live.len() - 1);
                            let (block, tag) = live.swap_remove(i);
                            check(block, WORDS, tag, "churn");
                            sample.leave(block.as_ptr() as usize);
                            free_owned(pool, block).unwrap();
                            counts.frees += 1;
                        };
                    while counts.allocations + counts.frees + live.len() as u64 <= per_thread {
                        let room =
                            per_thread - counts.allocations - counts.frees - live.len() as u64;
                        // Allocate a batch, then free a random share of what is live, so
                        // that blocks have mixed lifetimes and the cache crosses its bounds.
                        // Alongside the reclaimer, smaller batches: each worker then mostly
                        // stays within its cache and its own blocks, so that other chunks
                        // can be entirely free while it works.
                        let (most, most_kept) = if with_reclaimer {
                            (100, 27)
                        } else {
                            (300, 200)
                        };
                        let want = rng.range(1, most).min((room / 2).max(1) as usize);
                        for _ in 0..want {
                            let block = pool.allocate().unwrap();
                            counts.allocations += 1;
                            let t = tag(owner, seq);
                            seq += 1;
                            stamp(block, WORDS, t);
                            sample.enter(block.as_ptr() as usize);
                            live.push((block, t));
                        }
                        let keep = rng.range(0, most_kept).min(live.len());
                        while live.len() > keep {
                            free_one(&mut live, &mut rng, &mut counts);
                        }
                    }
                    while !live.is_empty() {
                        free_one(&mut live, &mut rng, &mut counts);
                    }
                    counts
                })
            })
            .collect();
        let mut counts = workers
            .into_iter()
            .map(|w| w.join().unwrap())
            .fold(Counts::default(), |a, b| a + b);
        if let Some(r) = reclaimer {
            let (rounds, reclaimer_counts) = r.join().unwrap();
            counts = counts + reclaimer_counts;
            let released = released.load(Ordering::Relaxed);
            assert!(rounds >= 1);
            assert!(released > 0, "the reclaimer's bursts were never reclaimed");
        }
        counts
    })
}

/// Checks the pool's counters against `expected`, that nothing is live, and that a reclaim
/// gives every chunk back.
///
/// `reclaimed` says whether a concurrent reclaimer may already have given every chunk back.
fn check_quiescent(
    pool: &BlockPool,
    expected: Counts,
    phase: &str,
    sample: &LiveSet,
    reclaimed: bool,
) {
    let stats = pool.stats();
    // Every block was freed.
    assert_counts(
        &stats,
        expected.allocations,
        expected.frees,
        0,
        format_args!("{phase}"),
    );
    assert_eq!(sample.len(), 0, "{phase}: the live sample is empty");
    assert!(
        reclaimed || stats.chunks > 0,
        "{phase}: the pool has chunks before reclaim: {stats:?}"
    );
    let released = pool.reclaim();
    let after = pool.stats();
    assert!(
        reclaimed || released > 0,
        "{phase}: reclaim released nothing: {after:?}"
    );
    assert_eq!(
        after.chunks, 0,
        "{phase}: the worker threads have exited, so every block is in the depot and every \
         chunk must be reclaimed: {after:?}"
    );
    assert_eq!(after.bytes_mapped, 0, "{phase}: {after:?}");
    assert!(
        after.reclaimed_bytes >= released as u64,
        "{phase}: {after:?}"
    );
}

fn stress(name: &str, guard: GuardLevel, divisor: usize, reclaimer: bool) {
    let ops = ops_per_phase(divisor);
    let pool = new_pool(name, guard);
    let sample = LiveSet::sampled("stress");

    let start = Instant::now();
    let phase1 = producer_consumer(&pool, ops, &sample);
    assert_eq!(phase1.allocations, (ops / 2) as u64);
    assert_eq!(phase1.frees, (ops / 2) as u64);
    let stats = pool.stats();
    assert_eq!(
        stats.cross_thread_frees, phase1.frees,
        "every free of phase 1 was made by a thread that never allocated: {stats:?}"
    );
    assert!(
        stats.depot_exchanges > 0,
        "blocks crossed threads through the depot: {stats:?}"
    );
    check_quiescent(&pool, phase1, "phase 1 (producer/consumer)", &sample, false);
    let t1 = start.elapsed();

    let start = Instant::now();
    let phase2 = churn(&pool, ops, &sample, reclaimer);
    assert!(phase2.allocations + phase2.frees >= (ops as u64) - 2);
    let total = phase1 + phase2;
    let stats = pool.stats();
    assert_eq!(
        stats.cross_thread_frees, phase1.frees,
        "in phase 2 each thread frees only its own blocks: {stats:?}"
    );
    check_quiescent(&pool, total, "phase 2 (churn)", &sample, reclaimer);
    let t2 = start.elapsed();

    // The reclaimed chunks are reused.
    let block = pool.allocate().unwrap();
    stamp(block, WORDS, 7);
    check(block, WORDS, 7, "after reclaim");
    free_owned(&pool, block).unwrap();
    assert!(pool.reclaim() > 0);
    assert_eq!(pool.stats().chunks, 0);
    pool.verify().unwrap();

    eprintln!("{name}: {ops} operations per phase: producer/consumer {t1:.2?}, churn {t2:.2?}");
}

#[test]
fn stress_guard_off() {
    stress("stress-off", GuardLevel::Off, 1, false);
}

#[test]
fn stress_guard_canary() {
    stress("stress-canary", GuardLevel::Canary, 4, false);
}

#[test]
fn stress_guard_full() {
    stress("stress-full", GuardLevel::Full, 10, false);
}

/// The churn phase with a third thread reclaiming all the while.
#[test]
fn stress_with_concurrent_reclaim() {
    stress("stress-reclaim", GuardLevel::Canary, 10, true);
}
