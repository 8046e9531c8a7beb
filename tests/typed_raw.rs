//! `tally_pool::RawHandle<T>` tokens: lending values out as `u64`s and redeeming them.
//!
//! - a token round-trips through `u64` and through other threads, the value intact;
//! - a token redeems once: a second redeem (also after the value was dropped and its block
//!   reused, even while the new owner's value is itself out as a token) is `StaleHandle`
//!   and never hands out another value; racing redeems of one token let exactly one win;
//! - forged tokens (0, `u64::MAX`, every single-bit flip and many random bit flips of a
//!   valid token, random words, and never-issued tokens whose checksum was searched for)
//!   are refused with `InvalidHandle` or `WrongPool`, never redeemed, never a panic;
//! - a token of pool A redeemed in pool B of the same `T` is `WrongPool` or
//!   `InvalidHandle`, and stays good in A;
//! - `leaked_raw` counts the tokens out, and failed redeems leave it (and `live_blocks`)
//!   alone;
//! - `RawHandle` is `Copy`, `Eq`, `Hash`, 8 bytes;
//! - a property test runs random acquire / write / into_raw / redeem / drop sequences
//!   against a model, checking values, drops, `live_blocks`, `leaked_raw` and errors.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::channel;
use std::sync::{Arc, Barrier};
use std::thread;

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use tally_pool::{GuardLevel, Handle, Pool, PoolError, RawHandle, Recycle};

use common::guards::any_guard;
use common::rng::Rng;
use common::typed::{addr, config, live};

#[derive(Debug, Clone, PartialEq, Default)]
struct Order {
    id: u64,
    price: i64,
    text: String,
}

fn order(id: u64) -> Order {
    Order {
        id,
        price: -(id as i64) * 3,
        text: format!("order-{id}"),
    }
}

// ----- round trips ------------------------------------------------------------------------

#[test]
fn a_token_round_trips_through_u64() {
    let pool = Pool::<Order>::new(config("raw-u64", 4, 64)).unwrap();
    let h = pool.acquire_with(order(1)).unwrap();
    let at = addr(&h);
    let raw = Handle::into_raw(h);
    assert_eq!(pool.leaked_raw(), 1);
    assert_eq!(live(pool), 1, "a lent value stays live");
    let bits: u64 = raw.into();
    assert_eq!(bits, raw.to_bits());
    let back = RawHandle::<Order>::from(bits);
    assert_eq!(back, raw);
    let mut h = pool.redeem(back).unwrap();
    assert_eq!(*h, order(1));
    assert_eq!(addr(&h), at, "the value never moved");
    assert_eq!(pool.leaked_raw(), 0);
    assert_eq!(live(pool), 1);

    // Lend the same value again: a new token, and only the new one redeems.
    h.price = 5;
    let raw2 = Handle::into_raw(h);
    assert_ne!(raw2, raw, "each lending gets its own token");
    assert!(matches!(
        pool.redeem(raw),
        Err(PoolError::StaleHandle { .. })
    ));
    let h = pool.redeem(RawHandle::from(u64::from(raw2))).unwrap();
    assert_eq!((h.id, h.price, h.text.as_str()), (1, 5, "order-1"));
    drop(h);
    assert_eq!((live(pool), pool.leaked_raw()), (0, 0));
}

#[test]
fn tokens_cross_threads_both_ways() {
    const N: u64 = 300;
    let pool = Pool::<Order>::new(config("raw-threads", 16, 1024)).unwrap();
    let tokens: Vec<u64> = (0..N)
        .map(|i| Handle::into_raw(pool.acquire_with(order(i)).unwrap()).into())
        .collect();
    assert_eq!(pool.leaked_raw(), N);
    let (tx, rx) = channel::<u64>();
    let worker = thread::spawn(move || {
        for (i, bits) in (0..).zip(tokens) {
            let mut h = pool.redeem(RawHandle::from(bits)).unwrap();
            assert_eq!(*h, order(i));
            h.text.push_str("-seen");
            tx.send(Handle::into_raw(h).into()).unwrap();
        }
    });
    let mut count = 0;
    for (i, bits) in (0..).zip(rx.iter()) {
        let h = pool.redeem(RawHandle::<Order>::from(bits)).unwrap();
        assert_eq!(h.id, i);
        assert_eq!(h.text, format!("order-{i}-seen"));
        count += 1;
    }
    worker.join().unwrap();
    assert_eq!(count, N);
    assert_eq!((live(pool), pool.leaked_raw()), (0, 0));

    // Lent on another thread, redeemed and dropped here; and the other way round.
    let bits: u64 =
        thread::spawn(move || Handle::into_raw(pool.acquire_with(order(7)).unwrap()).into())
            .join()
            .unwrap();
    assert_eq!(*pool.redeem(RawHandle::from(bits)).unwrap(), order(7));
    let raw = Handle::into_raw(pool.acquire_with(order(8)).unwrap());
    thread::spawn(move || assert_eq!(*pool.redeem(raw).unwrap(), order(8)))
        .join()
        .unwrap();
    assert_eq!((live(pool), pool.leaked_raw()), (0, 0));
}

#[derive(Debug, Default)]
struct Kept {
    items: Vec<u32>,
}

impl Recycle for Kept {
    fn recycle(&mut self) {
        self.items.clear();
    }
}

#[test]
fn tokens_of_a_recycling_pool() {
    let pool = Pool::<Kept>::new_recycling(config("raw-recycling", 1, 1)).unwrap();
    let mut h = pool.acquire().unwrap();
    h.items.extend(0..100);
    let raw = Handle::into_raw(h);
    let h = pool.redeem(raw).unwrap();
    assert_eq!(h.items.len(), 100);
    let ptr = h.items.as_ptr();
    drop(h);
    assert!(matches!(
        pool.redeem(raw),
        Err(PoolError::StaleHandle { .. })
    ));
    let h = pool.acquire().unwrap();
    assert!(h.items.is_empty());
    assert_eq!(h.items.as_ptr(), ptr, "recycled");
    let raw2 = Handle::into_raw(h);
    assert!(matches!(
        pool.redeem(raw),
        Err(PoolError::StaleHandle { .. })
    ));
    assert_eq!(pool.redeem(raw2).unwrap().items.as_ptr(), ptr);
    assert_eq!((live(pool), pool.leaked_raw()), (0, 0));
}

// ----- stale tokens -----------------------------------------------------------------------

#[test]
fn a_second_redeem_is_stale() {
    let pool = Pool::<Order>::new(config("raw-double", 4, 64)).unwrap();
    let raw = Handle::into_raw(pool.acquire_with(order(3)).unwrap());
    let h = pool.redeem(raw).unwrap();
    for _ in 0..3 {
        match pool.redeem(raw) {
            Err(PoolError::StaleHandle { pool }) => assert_eq!(pool, "raw-double"),
            other => panic!("second redeem: {other:?}"),
        }
    }
    assert_eq!((live(pool), pool.leaked_raw()), (1, 0));
    assert_eq!(*h, order(3), "a failed redeem leaves the value alone");
    drop(h);
    assert!(matches!(
        pool.redeem(raw),
        Err(PoolError::StaleHandle { .. })
    ));
    assert_eq!((live(pool), pool.leaked_raw()), (0, 0));
}

#[test]
fn an_old_token_never_reaches_the_blocks_next_owner() {
    // One block: every value lives in it, one after another.
    let pool = Pool::<Order>::new(config("raw-reuse", 1, 1)).unwrap();
    let first = pool.acquire_with(order(0)).unwrap();
    let block = addr(&first);
    let mut old: Vec<RawHandle<Order>> = vec![Handle::into_raw(first)];
    drop(pool.redeem(old[0]).unwrap());
    let rounds: u64 = if cfg!(miri) { 20 } else { 2000 };
    for i in 1..rounds {
        let h = pool.acquire_with(order(i)).unwrap();
        assert_eq!(addr(&h), block, "the block is reused");
        // The new owner holds a handle: old tokens are stale.
        let j = (i as usize * 7919) % old.len();
        match pool.redeem(old[j]) {
            Err(PoolError::StaleHandle { .. }) => {}
            Ok(stolen) => panic!(
                "round {i}: old token {j} redeemed the new owner's value {:?}",
                *stolen
            ),
            Err(e) => panic!("round {i}: old token {j}: {e:?}"),
        }
        assert_eq!(*h, order(i));
        // The new owner's value is out as a token too: old tokens are still stale.
        let raw = Handle::into_raw(h);
        let check: Vec<usize> = if i % 500 == 0 {
            (0..old.len()).collect()
        } else {
            vec![old.len() - 1, j]
        };
        for j in check {
            match pool.redeem(old[j]) {
                Err(PoolError::StaleHandle { .. }) => {}
                Ok(stolen) => panic!(
                    "round {i}: old token {j} redeemed the lent value {:?}",
                    *stolen
                ),
                Err(e) => panic!("round {i}: old token {j}: {e:?}"),
            }
        }
        assert_eq!(pool.leaked_raw(), 1);
        let h = pool.redeem(raw).unwrap();
        assert_eq!(*h, order(i), "the new owner's value is intact");
        old.push(raw);
        drop(h);
    }
    assert_eq!((live(pool), pool.leaked_raw()), (0, 0));
    assert_eq!(
        old.iter().collect::<HashSet<_>>().len(),
        old.len(),
        "tokens never repeat"
    );
}

#[test]
fn racing_redeems_of_one_token_let_exactly_one_win() {
    const THREADS: usize = 4;
    let rounds = if cfg!(miri) { 5 } else { 200 };
    let pool = Pool::<Order>::new(config("raw-race", 16, 1024)).unwrap();
    for round in 0..rounds {
        let raw = Handle::into_raw(pool.acquire_with(order(round)).unwrap());
        let barrier = Arc::new(Barrier::new(THREADS));
        let threads: Vec<_> = (0..THREADS)
            .map(|_| {
                let barrier = Arc::clone(&barrier);
                thread::spawn(move || {
                    barrier.wait();
                    match pool.redeem(raw) {
                        Ok(h) => {
                            assert_eq!(*h, order(round));
                            true
                        }
                        Err(PoolError::StaleHandle { .. }) => false,
                        Err(e) => panic!("{e:?}"),
                    }
                })
            })
            .collect();
        let wins = threads
            .into_iter()
            .map(|t| t.join().unwrap())
            .filter(|&won| won)
            .count();
        assert_eq!(wins, 1, "round {round}");
    }
    assert_eq!((live(pool), pool.leaked_raw()), (0, 0));
}

// ----- forged and foreign tokens ----------------------------------------------------------

/// Token layout (bit 0 first), from the `raw` module's documentation.
const BLOCK_MASK: u64 = (1 << 25) - 1;
const CHECK_SHIFT: u32 = 58;

fn refused(e: &PoolError) -> bool {
    matches!(
        e,
        PoolError::InvalidHandle { .. } | PoolError::WrongPool { .. }
    )
}

/// Redeems every candidate but `valid` and returns a description of each one that was not
/// refused with `InvalidHandle` or `WrongPool`, or for one of the tokens in `issued`
/// (issued and redeemed since), with `StaleHandle`.
fn try_forgeries(
    pool: &'static Pool<u64>,
    valid: u64,
    issued: &HashSet<u64>,
    candidates: &[u64],
) -> (Vec<String>, HashMap<&'static str, usize>) {
    let mut bad = Vec::new();
    let mut kinds = HashMap::new();
    for &c in candidates {
        if c == valid {
            continue;
        }
        if issued.contains(&c) {
            *kinds.entry("issued before").or_insert(0) += 1;
            match pool.redeem(RawHandle::from(c)) {
                Err(PoolError::StaleHandle { .. }) => {}
                other => bad.push(format!("{c:#018x}, issued and redeemed before: {other:?}")),
            }
            continue;
        }
        match pool.redeem(RawHandle::from(c)) {
            Ok(h) => {
                *kinds.entry("Ok").or_insert(0) += 1;
                bad.push(format!(
                    "{c:#018x} (xor {:#018x}) redeemed value {}",
                    c ^ valid,
                    *h
                ));
                // Keep the value out of circulation: the test fails anyway.
                core::mem::forget(h);
            }
            Err(e) => {
                let kind = match e {
                    PoolError::InvalidHandle { .. } => "InvalidHandle",
                    PoolError::WrongPool { .. } => "WrongPool",
                    PoolError::StaleHandle { .. } => "StaleHandle",
                    _ => "other",
                };
                *kinds.entry(kind).or_insert(0) += 1;
                if !refused(&e) {
                    bad.push(format!("{c:#018x} (xor {:#018x}): {e:?}", c ^ valid));
                }
            }
        }
    }
    (bad, kinds)
}

/// A pool with a history (40 live values whose blocks were lent and redeemed 0 to 4
/// times), one value out as a token, and forgeries of that token.
struct Forgery {
    pool: &'static Pool<u64>,
    /// The live values (all but 17).
    hs: Vec<Handle<u64>>,
    /// Tokens issued and redeemed before: redeemed again, they are stale, not forged.
    issued: HashSet<u64>,
    /// The token out, lending value 17.
    valid: u64,
    candidates: Vec<u64>,
}

fn forgery_setup(name: &str) -> Forgery {
    let pool = Pool::<u64>::new(config(name, 64, 4096)).unwrap();
    let mut hs: Vec<Handle<u64>> = Vec::new();
    let mut issued = HashSet::new();
    for i in 0..40u64 {
        let mut h = pool.acquire_with(i).unwrap();
        for _ in 0..i % 5 {
            let raw = Handle::into_raw(h);
            issued.insert(raw.to_bits());
            h = pool.redeem(raw).unwrap();
        }
        hs.push(h);
    }
    // The one token out: value 17, whose block is at generation 2.
    let lent = hs.swap_remove(17);
    let valid: u64 = Handle::into_raw(lent).into();
    assert_eq!(pool.leaked_raw(), 1);

    let mut rng = Rng::new(0x5eed_0ff0_12ee);
    let samples = if cfg!(miri) { 200 } else { 100_000 };
    let mut candidates = vec![0, u64::MAX, !valid, valid & !(0x3f << CHECK_SHIFT)];
    candidates.extend((0..64).map(|bit| valid ^ (1 << bit)));
    for _ in 0..samples {
        // 1 to 4 flipped bits anywhere.
        let mut mask = 0u64;
        for _ in 0..=rng.below(4) {
            mask |= 1 << rng.below(64);
        }
        candidates.push(valid ^ mask);
    }
    // Flips confined to the block and generation fields, where the checksum is all that
    // stands between a forgery and a block of this pool.
    for _ in 0..samples {
        candidates.push(valid ^ (rng.next() & ((1 << 49) - 1)) ^ 1);
    }
    candidates.extend((0..samples / 10).map(|_| rng.next()));
    Forgery {
        pool,
        hs,
        issued,
        valid,
        candidates,
    }
}

fn forgery_aftermath(pool: &'static Pool<u64>, hs: &[Handle<u64>], valid: u64) {
    assert_eq!(pool.leaked_raw(), 1, "failed redeems changed leaked_raw");
    assert_eq!(live(pool), 40);
    assert_eq!(
        *pool.redeem(RawHandle::from(valid)).unwrap(),
        17,
        "the real token still redeems"
    );
    assert_eq!(
        hs.iter().map(|h| **h).sum::<u64>(),
        (0..40).sum::<u64>() - 17
    );
}

/// The safety half: no forgery redeems anything or panics, whatever error it gets.
#[test]
fn forged_tokens_never_redeem() {
    let Forgery {
        pool,
        hs,
        valid,
        candidates,
        ..
    } = forgery_setup("raw-forged-safe");
    let mut ok = Vec::new();
    for &c in &candidates {
        if c == valid {
            continue;
        }
        match pool.redeem(RawHandle::from(c)) {
            Err(
                PoolError::InvalidHandle { .. }
                | PoolError::WrongPool { .. }
                | PoolError::StaleHandle { .. },
            ) => {}
            Err(e) => panic!("{c:#018x}: {e:?}"),
            Ok(h) => {
                ok.push(format!("{c:#018x} (xor {:#018x}) -> {}", c ^ valid, *h));
                core::mem::forget(h);
            }
        }
    }
    assert!(ok.is_empty(), "forged tokens redeemed values: {ok:#?}");
    forgery_aftermath(pool, &hs, valid);
}

/// The classification half: a forgery is `InvalidHandle` or `WrongPool` (a token that
/// really was issued and redeemed is `StaleHandle`).
#[test]
fn forged_tokens_are_refused_as_invalid_or_wrong_pool() {
    let Forgery {
        pool,
        hs,
        issued,
        valid,
        candidates,
    } = forgery_setup("raw-forged-kind");
    let (bad, kinds) = try_forgeries(pool, valid, &issued, &candidates);
    assert!(
        bad.is_empty(),
        "{} of {} forged tokens were not refused with InvalidHandle/WrongPool (results: {kinds:?}); first: {:#?}",
        bad.len(),
        candidates.len(),
        &bad[..bad.len().min(8)]
    );
    forgery_aftermath(pool, &hs, valid);
}

/// Tokens for the lent value's own block under generations it never reached, checksums
/// found by trying all 64: `InvalidHandle`, not `StaleHandle`.
#[test]
fn a_token_of_a_generation_never_reached_is_invalid() {
    const GEN_SHIFT: u32 = 25;
    const GEN_MASK: u64 = ((1 << 24) - 1) << GEN_SHIFT;
    let pool = Pool::<u64>::new(config("raw-far-generation", 8, 1024)).unwrap();
    // The block goes through generations 0 and 1; its token of generation 2 is out.
    let mut h = pool.acquire_with(5).unwrap();
    let mut issued = HashSet::new();
    for _ in 0..2 {
        let raw = Handle::into_raw(h);
        issued.insert(raw.to_bits());
        h = pool.redeem(raw).unwrap();
    }
    let valid: u64 = Handle::into_raw(h).into();
    assert_eq!((valid & GEN_MASK) >> GEN_SHIFT, 2, "token layout");
    let mut candidates = Vec::new();
    for generation in [
        3u64,
        4,
        1000,
        (1 << 23) - 1,
        1 << 23,
        (1 << 23) + 2,
        (1 << 24) - 1,
    ] {
        let body = valid & !GEN_MASK & !(0x3f << CHECK_SHIFT) | generation << GEN_SHIFT;
        candidates.extend((0..64).map(|check| body | check << CHECK_SHIFT));
    }
    let (bad, kinds) = try_forgeries(pool, valid, &issued, &candidates);
    assert!(
        bad.is_empty(),
        "tokens of generations the block never reached not refused with InvalidHandle (results: {kinds:?}): {bad:#?}"
    );
    assert_eq!((live(pool), pool.leaked_raw()), (1, 1));
    assert_eq!(*pool.redeem(RawHandle::from(valid)).unwrap(), 5);
}

/// A block's generation has 24 bits: lent and redeemed 2^24 times, one value's token
/// comes back to the generation bits of its first token. That first token, redeemed long
/// ago, stays refused as stale, and the holder's current token redeems.
#[test]
fn a_token_from_before_the_generation_wrapped_is_refused() {
    const GEN_FIELD: u64 = ((1 << 24) - 1) << 25;
    let pool = Pool::<u64>::new(config("raw-wrap", 8, 1024)).unwrap();
    let first = Handle::into_raw(pool.acquire_with(9).unwrap());
    let mut h = pool.redeem(first).unwrap();
    let mut second = None;
    for _ in 1..1u64 << 24 {
        let raw = Handle::into_raw(h);
        second.get_or_insert(raw);
        h = pool.redeem(raw).unwrap();
    }
    let now = Handle::into_raw(h);
    assert_eq!(now.to_bits() & GEN_FIELD, first.to_bits() & GEN_FIELD);
    assert_ne!(now, first, "the checksum tells the epochs apart");
    for old in [first, second.unwrap()] {
        assert!(
            matches!(pool.redeem(old), Err(PoolError::StaleHandle { .. })),
            "a token of the previous epoch redeemed"
        );
    }
    assert_eq!((live(pool), pool.leaked_raw()), (1, 1));
    let h = pool.redeem(now).unwrap();
    assert_eq!((*h, live(pool), pool.leaked_raw()), (9, 1, 0));
}

/// Tokens that were never issued, for blocks never lent of a chunk this pool lent from,
/// checksums found by trying all 64: `InvalidHandle`, not `StaleHandle`.
#[test]
fn a_never_issued_token_for_a_block_never_lent_is_invalid() {
    let pool = Pool::<u64>::new(config("raw-never-issued", 8, 1024)).unwrap();
    let hs: Vec<_> = (0..4).map(|i| pool.acquire_with(i).unwrap()).collect();
    let lent = pool.acquire_with(4).unwrap();
    let valid: u64 = Handle::into_raw(lent).into();
    let block = valid & BLOCK_MASK;
    let mut candidates = Vec::new();
    for delta in 1..=8u64 {
        // The same generation, node and pool tag, for a nearby block of the same chunk
        // (live and never lent, or never carved), under each of the 64 checksums.
        let other = (block ^ delta) & BLOCK_MASK;
        let body = valid & !BLOCK_MASK & !(0x3f << CHECK_SHIFT) | other;
        candidates.extend((0..64).map(|check| body | check << CHECK_SHIFT));
    }
    let (bad, kinds) = try_forgeries(pool, valid, &HashSet::new(), &candidates);
    assert!(
        bad.is_empty(),
        "never-issued tokens not refused with InvalidHandle/WrongPool (results: {kinds:?}): {bad:#?}"
    );
    assert_eq!((live(pool), pool.leaked_raw()), (5, 1));
    assert_eq!(*pool.redeem(RawHandle::from(valid)).unwrap(), 4);
    drop(hs);
}

#[test]
fn a_token_of_another_pool_is_refused() {
    let a = Pool::<u64>::new(config("raw-pool-a", 8, 1024)).unwrap();
    let b = Pool::<u64>::new(config("raw-pool-b", 8, 1024)).unwrap();
    let b_values: Vec<_> = (0..50).map(|i| b.acquire_with(1000 + i).unwrap()).collect();
    let tokens: Vec<RawHandle<u64>> = (0..50)
        .map(|i| Handle::into_raw(a.acquire_with(i).unwrap()))
        .collect();
    for (i, &t) in tokens.iter().enumerate() {
        match b.redeem(t) {
            Err(PoolError::WrongPool { pool } | PoolError::InvalidHandle { pool }) => {
                assert_eq!(pool, "raw-pool-b")
            }
            Ok(h) => panic!("token {i} of pool A redeemed value {} of pool B", *h),
            Err(e) => panic!("token {i} of pool A in pool B: {e:?}"),
        }
    }
    assert_eq!((live(b), b.leaked_raw()), (50, 0));
    assert!(b_values.iter().zip(1000..).all(|(h, v)| **h == v));
    // The tokens are still good where they were made.
    for (i, t) in (0..).zip(tokens) {
        assert_eq!(*a.redeem(t).unwrap(), i);
    }
    assert_eq!((live(a), a.leaked_raw()), (0, 0));
}

// ----- counting, traits -------------------------------------------------------------------

#[test]
fn leaked_raw_counts_tokens_out() {
    let pool = Pool::<Order>::new(config("raw-leaked", 8, 256)).unwrap();
    assert_eq!(pool.leaked_raw(), 0);
    let tokens: Vec<_> = (0..100)
        .map(|i| {
            let raw = Handle::into_raw(pool.acquire_with(order(i)).unwrap());
            assert_eq!(pool.leaked_raw(), i + 1);
            raw
        })
        .collect();
    let held: Vec<_> = (0..10)
        .map(|i| pool.acquire_with(order(1000 + i)).unwrap())
        .collect();
    assert_eq!((live(pool), pool.leaked_raw()), (110, 100));
    let mut back = Vec::new();
    for (i, &t) in (0..).zip(&tokens) {
        back.push(pool.redeem(t).unwrap());
        assert_eq!(pool.leaked_raw(), 99 - i);
        // A failed redeem changes nothing.
        assert!(pool.redeem(t).is_err());
        assert!(pool.redeem(RawHandle::from(0)).is_err());
        assert_eq!(pool.leaked_raw(), 99 - i);
    }
    assert_eq!((live(pool), pool.leaked_raw()), (110, 0));
    drop((back, held));
    assert_eq!(live(pool), 0);
}

#[test]
fn raw_handles_are_copy_eq_hash() {
    let pool = Pool::<Order>::new(config("raw-traits", 8, 256)).unwrap();
    assert_eq!(core::mem::size_of::<RawHandle<Order>>(), 8);
    assert_eq!(core::mem::size_of::<RawHandle<[u8; 4096]>>(), 8);
    let tokens: Vec<_> = (0..100)
        .map(|i| Handle::into_raw(pool.acquire_with(order(i)).unwrap()))
        .collect();
    let set: HashSet<RawHandle<Order>> = tokens.iter().copied().collect();
    assert_eq!(set.len(), 100, "tokens of live values are distinct");
    let copy = tokens[5];
    assert_eq!(copy, tokens[5]);
    assert!(set.contains(&copy));
    assert!(set.contains(&RawHandle::from(u64::from(tokens[9]))));
    let by_token: HashMap<RawHandle<Order>, u64> = tokens.iter().copied().zip(0..).collect();
    assert_eq!(by_token[&copy], 5);
    let debug = format!("{copy:?}");
    assert!(
        debug.contains("Order") && debug.contains(&format!("{:#018x}", copy.to_bits())),
        "{debug}"
    );
    // Relending a value makes a token no earlier one equals.
    let h = pool.redeem(copy).unwrap();
    let relent = Handle::into_raw(h);
    assert!(!set.contains(&relent));
    assert_eq!(*pool.redeem(relent).unwrap(), order(5));
    for t in tokens {
        if t != copy {
            drop(pool.redeem(t).unwrap());
        }
    }
    assert_eq!((live(pool), pool.leaked_raw()), (0, 0));
}

// ----- model ------------------------------------------------------------------------------

static MODEL_DROPS: AtomicUsize = AtomicUsize::new(0);

#[derive(Debug, PartialEq)]
struct Val(u64);

impl Drop for Val {
    fn drop(&mut self) {
        MODEL_DROPS.fetch_add(1, Ordering::SeqCst);
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// `acquire_with(Val(n))`.
    Acquire(u64),
    /// Write into the handle at this index (modulo the handles held).
    Write(usize, u64),
    /// `into_raw` the handle at this index.
    IntoRaw(usize),
    /// Redeem the token at this index (modulo every token ever issued).
    Redeem(usize),
    /// Drop the handle at this index.
    Drop(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => any::<u64>().prop_map(Op::Acquire),
        1 => (any::<usize>(), any::<u64>()).prop_map(|(i, v)| Op::Write(i, v)),
        3 => any::<usize>().prop_map(Op::IntoRaw),
        3 => any::<usize>().prop_map(Op::Redeem),
        2 => any::<usize>().prop_map(Op::Drop),
    ]
}

fn run_model(max: usize, guard: GuardLevel, ops: &[Op]) {
    let pool = Pool::<Val>::new(config("raw-model", 0, max).guard(guard)).unwrap();
    let drops_before = MODEL_DROPS.load(Ordering::SeqCst);
    let mut handles: Vec<(Handle<Val>, u64)> = Vec::new();
    // Every token issued, with the value it lends while out.
    let mut tokens: Vec<(RawHandle<Val>, Option<u64>)> = Vec::new();
    let mut created = 0usize;
    let mut dropped = 0usize;
    for (step, op) in ops.iter().enumerate() {
        let out = tokens.iter().filter(|t| t.1.is_some()).count();
        match *op {
            Op::Acquire(v) => {
                created += 1;
                match pool.acquire_with(Val(v)) {
                    Ok(h) => {
                        assert!(handles.len() + out < max, "step {step}: over the cap");
                        handles.push((h, v));
                    }
                    Err(e) => {
                        assert_eq!(handles.len() + out, max, "step {step}: {:?}", e.error);
                        assert!(matches!(e.error, PoolError::Exhausted { .. }));
                        assert_eq!(e.value.0, v, "step {step}: the value came back");
                        dropped += 1;
                    }
                }
            }
            Op::Write(i, v) if !handles.is_empty() => {
                let n = handles.len();
                let (h, model) = &mut handles[i % n];
                h.0 = v;
                *model = v;
            }
            Op::IntoRaw(i) if !handles.is_empty() => {
                let n = handles.len();
                let (h, v) = handles.swap_remove(i % n);
                let raw = Handle::into_raw(h);
                assert!(
                    tokens.iter().all(|t| t.0 != raw),
                    "step {step}: a token was issued twice"
                );
                tokens.push((raw, Some(v)));
            }
            Op::Redeem(i) if !tokens.is_empty() => {
                let n = tokens.len();
                let (raw, lent) = &mut tokens[i % n];
                match (pool.redeem(*raw), lent.take()) {
                    (Ok(h), Some(v)) => {
                        assert_eq!(h.0, v, "step {step}: redeemed value");
                        handles.push((h, v));
                    }
                    (Err(PoolError::StaleHandle { .. }), None) => {}
                    (Ok(h), None) => {
                        panic!("step {step}: a redeemed token redeemed again, to {:?}", h.0)
                    }
                    (Err(e), lent) => panic!("step {step}: token lending {lent:?}: {e:?}"),
                }
            }
            Op::Drop(i) if !handles.is_empty() => {
                let n = handles.len();
                drop(handles.swap_remove(i % n));
                dropped += 1;
            }
            _ => {}
        }
        let out = tokens.iter().filter(|t| t.1.is_some()).count();
        assert_eq!(
            live(pool),
            (handles.len() + out) as u64,
            "step {step}: live_blocks"
        );
        assert_eq!(pool.leaked_raw(), out as u64, "step {step}: leaked_raw");
        assert_eq!(
            MODEL_DROPS.load(Ordering::SeqCst) - drops_before,
            dropped,
            "step {step}: drops"
        );
        for (h, v) in &handles {
            assert_eq!(h.0, *v, "step {step}: a held value changed");
        }
    }
    // Redeem everything still out; then every token is stale.
    for (raw, lent) in &mut tokens {
        if let Some(v) = lent.take() {
            let h = pool.redeem(*raw).unwrap();
            assert_eq!(h.0, v);
            handles.push((h, v));
        }
    }
    dropped += handles.len();
    drop(handles);
    for (raw, _) in &tokens {
        assert!(matches!(
            pool.redeem(*raw),
            Err(PoolError::StaleHandle { .. })
        ));
    }
    assert_eq!((live(pool), pool.leaked_raw()), (0, 0));
    assert_eq!(MODEL_DROPS.load(Ordering::SeqCst) - drops_before, dropped);
    assert_eq!(dropped, created, "every value dropped exactly once");
}

proptest! {
    // A failing case's seed goes to `tests/typed_raw.proptest-regressions`, committed, and
    // every later run tries the seeds there first.
    #![proptest_config(ProptestConfig {
        cases: if cfg!(miri) { 2 } else { 48 },
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions"
        ))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_token_traffic_matches_the_model(
        max in 1..=6usize,
        guard in any_guard(),
        ops in prop::collection::vec(op(), 1..120),
    ) {
        run_model(max, guard, &ops);
    }
}
