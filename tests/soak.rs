//! A long run of mixed operations on four threads, counted to the block.
//!
//! Ignored by default; run it in release for `SOAK_SECS` seconds (default 120):
//!
//! ```text
//! cargo test --release --test soak -- --ignored --nocapture
//! ```
//!
//! Four worker threads run at all times. Each runs a random mix of operations on three
//! pools (a derived type on the fast path, a derived type with a `Drop` and a canary, and
//! a runtime `Pool<u64>`): `acquire`, `acquire_with`, releases here, releases on another
//! thread (through each thread's inbox), `into_raw` into a shared token queue and redeems
//! from it on whichever thread comes next, redeems of random `u64`s (each must be refused),
//! `reclaim`, `Pool::stats` and `stats::report()`. A worker exits after a random number of
//! operations, leaving half its values in other threads' inboxes, and a new thread takes
//! its place, so thread exits and new threads run all along.
//!
//! Every value carries a stamp that its releaser checks. At the end, with every inbox
//! drained and every token redeemed: every value created was dropped exactly once,
//! every pool's allocations equal its frees and no block is live, no token is out, and
//! after `reclaim` no pool keeps a chunk mapped. It prints the operation count and rate.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use tally_pool::{stats, Handle, Pool, PoolConfig, PoolError, Pooled, RawHandle};

use common::rng::Rng;

const THREADS: usize = 4;
/// Values a worker holds at most.
const HELD: usize = 256;
/// Values waiting in one inbox at most.
const INBOX: usize = 1024;
/// Tokens waiting at most.
const TOKENS: usize = 4096;

/// The check word of a stamp.
fn check_of(id: u64) -> u64 {
    id.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x50a4_50a4
}

/// On the fast path: no `Drop`, unguarded.
#[derive(Pooled, Default)]
#[pooled(name = "soak-quote", capacity = 4096)]
struct Quote {
    id: u64,
    check: u64,
}

static CREATED: AtomicU64 = AtomicU64::new(0);
static DROPPED: AtomicU64 = AtomicU64::new(0);
static BAD_DROPS: AtomicU64 = AtomicU64::new(0);

/// Counted on creation and on drop; a canary after each block.
#[derive(Pooled)]
#[pooled(name = "soak-tracked", guard = "canary", capacity = 1024)]
struct Tracked {
    id: u64,
    check: u64,
    fills: [u64; 6],
}

impl Tracked {
    fn new(id: u64) -> Self {
        CREATED.fetch_add(1, Ordering::Relaxed);
        Self {
            id,
            check: check_of(id),
            fills: [id; 6],
        }
    }
}

impl Default for Tracked {
    fn default() -> Self {
        Self::new(0)
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if self.check != check_of(self.id) || self.fills != [self.id; 6] {
            BAD_DROPS.fetch_add(1, Ordering::Relaxed);
        }
        self.check = !self.check;
        DROPPED.fetch_add(1, Ordering::Relaxed);
    }
}

fn plain() -> &'static Pool<u64> {
    static POOL: OnceLock<&'static Pool<u64>> = OnceLock::new();
    POOL.get_or_init(|| Pool::<u64>::new(PoolConfig::new("soak-u64").capacity(2048)).unwrap())
}

/// A value of one of the three pools.
enum Value {
    Quote(Handle<Quote>),
    Tracked(Handle<Tracked>),
    Plain(Handle<u64>),
}

impl Value {
    /// Panics unless the value carries a whole stamp.
    fn check(&self) {
        match self {
            Value::Quote(h) => assert_eq!(h.check, check_of(h.id), "a quote's stamp"),
            Value::Tracked(h) => {
                assert_eq!(h.check, check_of(h.id), "a tracked value's stamp");
                assert_eq!(h.fills, [h.id; 6], "a tracked value's fill");
            }
            Value::Plain(h) => assert_eq!(**h >> 40, 0x5a, "a plain value's stamp"),
        }
    }
}

/// A token of one of the three pools.
#[derive(Clone, Copy)]
enum Token {
    Quote(RawHandle<Quote>),
    Tracked(RawHandle<Tracked>),
    Plain(RawHandle<u64>),
}

impl Token {
    fn redeem(self) -> Value {
        match self {
            Token::Quote(t) => Value::Quote(Quote::redeem(t).unwrap()),
            Token::Tracked(t) => Value::Tracked(Tracked::redeem(t).unwrap()),
            Token::Plain(t) => Value::Plain(plain().redeem(t).unwrap()),
        }
    }
}

/// What the threads share.
struct Shared {
    inboxes: Vec<ArrayQueue<Value>>,
    tokens: ArrayQueue<Token>,
    stop: AtomicBool,
    ops: AtomicU64,
    forged: AtomicU64,
    threads: AtomicU64,
}

/// Counts of one worker.
#[derive(Default)]
struct Tally {
    ops: u64,
    forged: u64,
}

fn acquire(rng: &mut Rng, next_id: &mut u64) -> Value {
    *next_id += 1;
    let id = *next_id;
    match rng.below(6) {
        0 => {
            let mut h = Quote::acquire().unwrap();
            h.id = id;
            h.check = check_of(id);
            Value::Quote(h)
        }
        1 => Value::Quote(
            Quote::acquire_with(Quote {
                id,
                check: check_of(id),
            })
            .map_err(|e| e.error)
            .unwrap(),
        ),
        2 => {
            let mut h = Tracked::acquire().unwrap();
            h.id = id;
            h.check = check_of(id);
            h.fills = [id; 6];
            Value::Tracked(h)
        }
        3 => Value::Tracked(
            Tracked::acquire_with(Tracked::new(id))
                .map_err(|e| e.error)
                .unwrap(),
        ),
        4 => {
            let mut h = plain().acquire().unwrap();
            *h = (0x5a << 40) | (id & 0xff_ffff_ffff);
            Value::Plain(h)
        }
        _ => Value::Plain(
            plain()
                .acquire_with((0x5a << 40) | (id & 0xff_ffff_ffff))
                .map_err(|e| e.error)
                .unwrap(),
        ),
    }
}

fn into_raw(v: Value) -> Token {
    v.check();
    match v {
        Value::Quote(h) => Token::Quote(Handle::into_raw(h)),
        Value::Tracked(h) => Token::Tracked(Handle::into_raw(h)),
        Value::Plain(h) => Token::Plain(Handle::into_raw(h)),
    }
}

/// A random `u64` redeemed on one of the pools: it must be refused.
fn redeem_forged(rng: &mut Rng) {
    let bits = rng.next();
    let refused = match bits % 3 {
        0 => Quote::redeem(RawHandle::from(bits)).err(),
        1 => Tracked::redeem(RawHandle::from(bits)).err(),
        _ => plain().redeem(RawHandle::from(bits)).err(),
    };
    match refused {
        Some(PoolError::StaleHandle { .. })
        | Some(PoolError::InvalidHandle { .. })
        | Some(PoolError::WrongPool { .. }) => {}
        Some(e) => panic!("a random token {bits:#x} refused with {e:?}"),
        None => panic!("a random token {bits:#x} redeemed"),
    }
}

fn worker(shared: Arc<Shared>, slot: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    let mut held: Vec<Value> = Vec::with_capacity(HELD);
    let mut tally = Tally::default();
    let mut next_id = seed << 32;
    let lifetime = 200_000 + rng.below(2_000_000);
    for _ in 0..lifetime {
        if tally.ops % 1024 == 0 && shared.stop.load(Ordering::Relaxed) {
            break;
        }
        tally.ops += 1;
        let r = rng.below(1000);
        match r {
            // Acquire, and release at once or later.
            0..=299 => {
                let v = acquire(&mut rng, &mut next_id);
                if held.len() < HELD {
                    held.push(v);
                } else {
                    v.check();
                }
            }
            300..=579 => {
                if let Some(v) = held.pop() {
                    v.check();
                }
            }
            // Release on another thread.
            580..=679 => {
                if let Some(v) = held.pop() {
                    v.check();
                    let to = (slot + 1 + rng.index(THREADS - 1)) % THREADS;
                    let _ = shared.inboxes[to].push(v);
                }
            }
            // Releases sent here.
            680..=729 => {
                for _ in 0..8 {
                    match shared.inboxes[slot].pop() {
                        Some(v) => v.check(),
                        None => break,
                    }
                }
            }
            // A token out, a token in.
            730..=799 => {
                if let Some(v) = held.pop() {
                    if let Err(token) = shared.tokens.push(into_raw(v)) {
                        token.redeem().check();
                    }
                }
            }
            800..=869 => {
                if let Some(t) = shared.tokens.pop() {
                    let v = t.redeem();
                    v.check();
                    if held.len() < HELD {
                        held.push(v);
                    }
                }
            }
            870..=989 => {
                redeem_forged(&mut rng);
                tally.forged += 1;
            }
            990..=997 => {
                let s = match rng.below(3) {
                    0 => Quote::pool().stats(),
                    1 => Tracked::pool().stats(),
                    _ => plain().stats(),
                };
                // Per-thread counts read while threads work need not agree with each
                // other (a free may be seen before the allocation it follows); the exact
                // counts are checked at the end, when nothing is in flight.
                std::hint::black_box(s);
            }
            _ => {
                if rng.below(64) == 0 {
                    let _ = match rng.below(3) {
                        0 => Quote::pool().reclaim(),
                        1 => Tracked::pool().reclaim(),
                        _ => plain().reclaim(),
                    };
                } else if rng.below(64) == 0 {
                    let report = stats::report();
                    assert!(report.components.iter().any(|c| c.name == "soak-u64"));
                }
            }
        }
    }
    // Exit: half the values to other threads, the rest dropped here.
    for (i, v) in held.into_iter().enumerate() {
        v.check();
        if i % 2 == 0 {
            let to = (slot + 1 + i % (THREADS - 1)) % THREADS;
            let _ = shared.inboxes[to].push(v);
        }
    }
    shared.ops.fetch_add(tally.ops, Ordering::Relaxed);
    shared.forged.fetch_add(tally.forged, Ordering::Relaxed);
}

fn soak_secs() -> u64 {
    std::env::var("SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120)
}

#[test]
#[ignore = "a long soak: cargo test --release --test soak -- --ignored --nocapture"]
fn four_threads_of_mixed_operations_keep_every_block_accounted_for() {
    let secs = soak_secs();
    let shared = Arc::new(Shared {
        inboxes: (0..THREADS).map(|_| ArrayQueue::new(INBOX)).collect(),
        tokens: ArrayQueue::new(TOKENS),
        stop: AtomicBool::new(false),
        ops: AtomicU64::new(0),
        forged: AtomicU64::new(0),
        threads: AtomicU64::new(0),
    });
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let mut seed = 1u64;
    let spawn = |slot: usize, seed: u64| {
        let shared = Arc::clone(&shared);
        shared.threads.fetch_add(1, Ordering::Relaxed);
        thread::spawn(move || worker(shared, slot, seed))
    };
    let mut workers: Vec<_> = (0..THREADS)
        .map(|slot| {
            seed += 1;
            Some(spawn(slot, seed))
        })
        .collect();
    let mut last_print = start;
    while Instant::now() < deadline {
        for (slot, w) in workers.iter_mut().enumerate() {
            if w.as_ref().is_some_and(|h| h.is_finished()) {
                w.take().unwrap().join().expect("a worker panicked");
                seed += 1;
                *w = Some(spawn(slot, seed));
            }
        }
        if last_print.elapsed() >= Duration::from_secs(10) {
            last_print = Instant::now();
            println!(
                "soak: {:>4.0} s, {} threads started, {} operations by exited threads",
                start.elapsed().as_secs_f64(),
                shared.threads.load(Ordering::Relaxed),
                shared.ops.load(Ordering::Relaxed)
            );
        }
        thread::sleep(Duration::from_millis(2));
    }
    shared.stop.store(true, Ordering::Relaxed);
    for w in workers.into_iter().flatten() {
        w.join().expect("a worker panicked");
    }
    let elapsed = start.elapsed().as_secs_f64();

    // Drain: every value left in an inbox, every token out.
    for inbox in &shared.inboxes {
        while let Some(v) = inbox.pop() {
            v.check();
        }
    }
    let mut redeemed_at_end = 0;
    while let Some(t) = shared.tokens.pop() {
        t.redeem().check();
        redeemed_at_end += 1;
    }

    let ops = shared.ops.load(Ordering::Relaxed);
    let forged = shared.forged.load(Ordering::Relaxed);
    println!(
        "soak: {ops} operations in {elapsed:.1} s ({:.1} M/s) on {} threads started ({THREADS} at a time); {forged} random tokens refused; {redeemed_at_end} tokens redeemed at the end",
        ops as f64 / elapsed / 1e6,
        shared.threads.load(Ordering::Relaxed)
    );

    assert_eq!(BAD_DROPS.load(Ordering::Relaxed), 0, "values dropped torn");
    assert_eq!(
        CREATED.load(Ordering::Relaxed),
        DROPPED.load(Ordering::Relaxed),
        "every tracked value created was dropped exactly once"
    );
    let pools = [
        (
            "soak-quote",
            Quote::pool().stats(),
            Quote::pool().leaked_raw(),
        ),
        (
            "soak-tracked",
            Tracked::pool().stats(),
            Tracked::pool().leaked_raw(),
        ),
        ("soak-u64", plain().stats(), plain().leaked_raw()),
    ];
    for (name, s, leaked) in &pools {
        println!(
            "soak: {name}: {} allocations, {} frees, {} cross-thread, {} chunks, {} bytes mapped",
            s.allocations, s.frees, s.cross_thread_frees, s.chunks, s.bytes_mapped
        );
        assert_eq!(
            s.live_blocks, 0,
            "{name}: live blocks after everything was released"
        );
        assert_eq!(
            s.allocations, s.frees,
            "{name}: acquired - released = live = 0"
        );
        assert_eq!(*leaked, 0, "{name}: tokens out");
        assert_eq!(s.corruption_events, 0, "{name}: corruption");
    }
    let released = Quote::pool().reclaim() + Tracked::pool().reclaim() + plain().reclaim();
    for (name, s) in [
        ("soak-quote", Quote::pool().stats()),
        ("soak-tracked", Tracked::pool().stats()),
        ("soak-u64", plain().stats()),
    ] {
        println!(
            "soak: {name} after reclaim: {} chunks, {} bytes mapped",
            s.chunks, s.bytes_mapped
        );
        assert_eq!(s.chunks, 0, "{name}: every chunk given back after reclaim");
    }
    println!("soak: reclaim gave back {released} bytes");
}
