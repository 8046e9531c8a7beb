//! Tokens that were never issued: random `u64` words, and issued tokens with a few bits
//! flipped, redeemed against a pool with a history of lent, redeemed and dropped values.
//!
//! - random words are all refused (`Err`, never `Ok`), with `WrongPool`, `InvalidHandle`
//!   or `StaleHandle` only, also when they carry the pool's own tag bits;
//! - tokens made by flipping 1 to 3 bits of an outstanding or a stale token redeem only
//!   when the result is bit for bit an outstanding token, and then to that token's value;
//!   an outstanding token is never refused, and a stale one is always `StaleHandle`;
//! - afterwards the failed redeems have changed nothing: every held value is intact, every
//!   outstanding token redeems its value, and the pool empties.
//!
//! Counts are the largest that keep each test within about 10 s of a debug build on two
//! cores, and shrink under Miri.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::{HashMap, HashSet};

use tally_pool::{Handle, Pool, PoolConfig, PoolError, RawHandle};

use common::rng::Rng;
use common::typed::live;

/// A hasher for token sets: a 64-bit mix instead of SipHash, which dominates the mutation
/// test's time in a debug build.
#[derive(Default, Clone, Copy)]
struct TokenHasher(u64);

impl std::hash::Hasher for TokenHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }

    fn write_u64(&mut self, n: u64) {
        // splitmix64's finaliser: tokens of one block differ only in their high bits,
        // which a plain multiply would leave out of the low bits that pick a bucket.
        let mut x = self.0 ^ n;
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        self.0 = x ^ (x >> 31);
    }
}

type Tokens<V> = HashMap<u64, V, std::hash::BuildHasherDefault<TokenHasher>>;
type TokenSet = HashSet<u64, std::hash::BuildHasherDefault<TokenHasher>>;

/// Redeem errors counted by kind: `WrongPool`, `InvalidHandle`, `StaleHandle`, other.
#[derive(Debug, Default)]
struct Tally {
    wrong_pool: u64,
    invalid: u64,
    stale: u64,
    other: u64,
}

impl Tally {
    fn count(&mut self, e: &PoolError) {
        match e {
            PoolError::WrongPool { .. } => self.wrong_pool += 1,
            PoolError::InvalidHandle { .. } => self.invalid += 1,
            PoolError::StaleHandle { .. } => self.stale += 1,
            _ => self.other += 1,
        }
    }
}

/// The value lent under the `i`th token of the token tests.
fn value_of(i: u64) -> u64 {
    i.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ 0x7e57_ab1e
}

/// The pool tag field of a token (bits 52 to 57, from the `raw` module's layout).
const TAG_FIELD: u64 = 0x3f << 52;

/// A pool's history for the token tests: every value was lent and redeemed 0 to 3 times,
/// then a third of them is held, a third is out as tokens and a third was dropped (and
/// its block reused by later values).
struct History {
    pool: &'static Pool<u64>,
    held: Vec<(Handle<u64>, u64)>,
    /// Outstanding tokens and the values they lend.
    out: HashMap<u64, u64>,
    /// Tokens issued and redeemed since.
    stale: Vec<u64>,
}

fn history(name: &str, values: u64) -> History {
    let pool =
        Pool::<u64>::new(PoolConfig::new(name).capacity(1024).max_capacity(1 << 16)).unwrap();
    let mut held = Vec::new();
    let mut out = HashMap::new();
    let mut stale = Vec::new();
    for i in 0..values {
        let v = value_of(i);
        let mut h = pool.acquire_with(v).unwrap();
        for _ in 0..i % 4 {
            let raw = Handle::into_raw(h);
            stale.push(raw.to_bits());
            h = pool.redeem(raw).unwrap();
        }
        match i % 3 {
            0 => held.push((h, v)),
            1 => {
                let bits = Handle::into_raw(h).to_bits();
                assert!(out.insert(bits, v).is_none(), "a token was issued twice");
            }
            _ => drop(h),
        }
    }
    assert_eq!(pool.leaked_raw(), out.len() as u64);
    assert_eq!(live(pool), (held.len() + out.len()) as u64);
    History {
        pool,
        held,
        out,
        stale,
    }
}

/// After the token tests: failed redeems changed nothing, every outstanding token still
/// redeems its value, every stale token is `StaleHandle`, and the pool empties.
fn history_aftermath(h: History) {
    let History {
        pool,
        held,
        out,
        stale,
    } = h;
    assert_eq!(pool.leaked_raw(), out.len() as u64, "leaked_raw changed");
    assert_eq!(live(pool), (held.len() + out.len()) as u64, "live changed");
    for (h, v) in &held {
        assert_eq!(**h, *v, "a held value changed");
    }
    for &bits in &stale {
        match pool.redeem(RawHandle::from(bits)) {
            Err(PoolError::StaleHandle { .. }) => {}
            Ok(h) => panic!("stale token {bits:#018x} redeemed {}", *h),
            Err(e) => panic!("stale token {bits:#018x}: {e:?}"),
        }
    }
    let back: Vec<_> = out
        .iter()
        .map(|(&bits, &v)| {
            let h = pool.redeem(RawHandle::from(bits)).unwrap();
            assert_eq!(*h, v, "token {bits:#018x} redeemed another value");
            h
        })
        .collect();
    drop((back, held));
    assert_eq!((live(pool), pool.leaked_raw()), (0, 0));
    assert_eq!(pool.stats().corruption_events, 0);
}

// ----- random tokens ---------------------------------------------------------------------

/// How many random words [`random_tokens_redeem_nothing`] redeems.
fn random_tokens() -> u64 {
    if cfg!(miri) {
        2_000
    } else {
        10_000_000
    }
}

/// Random `u64` tokens redeemed against a `Pool<u64>` with 200 live values, 200 lent out
/// and 200 dropped, whose blocks were lent and redeemed 0 to 3 times before (so 900 stale
/// tokens exist), are all refused: `Err`, never `Ok`, and only with `WrongPool`,
/// `InvalidHandle` or `StaleHandle`. 10,000,000 fully random words (2,000 under Miri),
/// then a tenth as many again with the pool's own tag bits, which get past the tag to the block tables and generation words. (A random word
/// equal to an outstanding token would rightly redeem; it would be re-lent and counted,
/// at odds of about 2^-54 per word.)
#[test]
fn random_tokens_redeem_nothing() {
    let mut h = history("tokens-random", 600);
    let tag = h.out.keys().next().unwrap() & TAG_FIELD;
    let mut rng = Rng::new(0x00c0_ffee_1234_5678);
    let mut tally = Tally::default();
    let mut accepted = Vec::new();
    let mut lucky = 0u64;
    let n = random_tokens();
    for i in 0..n + n / 10 {
        let mut bits = rng.next();
        if i >= n {
            bits = bits & !TAG_FIELD | tag;
        }
        match h.pool.redeem(RawHandle::from(bits)) {
            Err(e) => tally.count(&e),
            Ok(got) => match h.out.remove(&bits) {
                Some(v) if *got == v => {
                    lucky += 1;
                    let again = Handle::into_raw(got).to_bits();
                    h.stale.push(bits);
                    h.out.insert(again, v);
                }
                _ => {
                    accepted.push(format!("{bits:#018x} redeemed {}", *got));
                    // Keep the value out of circulation: the test fails anyway.
                    core::mem::forget(got);
                }
            },
        }
    }
    eprintln!("random tokens: {tally:?}, {lucky} equal to an outstanding token");
    assert!(
        accepted.is_empty(),
        "{} random tokens redeemed values (results: {tally:?}): {:#?}",
        accepted.len(),
        &accepted[..accepted.len().min(8)]
    );
    assert_eq!(tally.other, 0, "unexpected errors: {tally:?}");
    // The tagged tokens all got past the tag check.
    assert!(tally.invalid + tally.stale >= n / 10, "{tally:?}");
    history_aftermath(h);
}

// ----- mutated tokens --------------------------------------------------------------------

/// How many mutated tokens [`mutated_tokens_redeem_only_as_outstanding_tokens`] redeems.
fn mutations() -> u64 {
    if cfg!(miri) {
        2_000
    } else {
        MUTATIONS
    }
}

/// The largest count that keeps `mutated_tokens_redeem_only_as_outstanding_tokens` well
/// under 10 s in a debug build (12,000,000 took 9.5 s on two busy cores).
const MUTATIONS: u64 = 8_000_000;

/// The tokens of [`mutated_tokens_redeem_only_as_outstanding_tokens`]: the outstanding
/// ones as a vector (to pick from) with an index (to look up), and the stale ones as a
/// vector with a set.
struct TokenBook {
    /// Outstanding tokens and the values they lend.
    out: Vec<(u64, u64)>,
    /// The slot in `out` of each outstanding token.
    index: Tokens<usize>,
    stale: Vec<u64>,
    stale_set: TokenSet,
    /// Values lent again so far.
    relends: u64,
}

impl TokenBook {
    fn new(out: HashMap<u64, u64>, stale: Vec<u64>) -> Self {
        let out: Vec<(u64, u64)> = out.into_iter().collect();
        let index = out.iter().enumerate().map(|(i, t)| (t.0, i)).collect();
        let stale_set = stale.iter().copied().collect();
        Self {
            out,
            index,
            stale,
            stale_set,
            relends: 0,
        }
    }

    /// Slot `slot`'s value, just redeemed: checks it, changes it and lends it again; its
    /// old token becomes stale.
    fn relend(&mut self, slot: usize, got: Handle<u64>) {
        let (old, v) = self.out[slot];
        assert_eq!(*got, v, "token {old:#018x} redeemed another value");
        let mut got = got;
        *got = v.rotate_left(7) ^ 1;
        let new = Handle::into_raw(got).to_bits();
        assert!(
            !self.index.contains_key(&new) && !self.stale_set.contains(&new),
            "token {new:#018x} issued twice"
        );
        self.index.remove(&old);
        self.index.insert(new, slot);
        self.out[slot] = (new, v.rotate_left(7) ^ 1);
        self.stale.push(old);
        self.stale_set.insert(old);
        self.relends += 1;
    }
}

/// With 600 tokens outstanding (and ~2,700 stale ones, a number that grows as
/// the test re-lends), a token made by flipping 1 to 3 random bits of a random outstanding
/// or stale token redeems only if it is bit for bit an outstanding token, and then to that
/// token's value; an outstanding token is never refused. Every redeem that succeeds
/// re-lends the value (changed, so that a later redeem shows which value came back), and
/// the new token joins the outstanding set while the old one becomes stale; one step in
/// 64 also redeems and re-lends an outstanding token unchanged, so the set keeps moving.
/// 8,000,000 mutations (2,000 under Miri): 5 to 6 s of a debug build on two busy cores.
#[test]
fn mutated_tokens_redeem_only_as_outstanding_tokens() {
    let mut h = history("tokens-mutated", 1800);
    assert_eq!(h.out.len(), 600);
    let mut book = TokenBook::new(core::mem::take(&mut h.out), core::mem::take(&mut h.stale));
    let mut rng = Rng::new(0x0bad_5eed_0000_0002);
    let mut tally = Tally::default();
    let mut bad = Vec::new();
    let mut hits = 0u64;

    for step in 0..mutations() {
        if step % 64 == 0 {
            let slot = rng.index(book.out.len());
            let got = h.pool.redeem(RawHandle::from(book.out[slot].0)).unwrap();
            book.relend(slot, got);
        }
        let from = if rng.below(2) == 0 {
            book.out[rng.index(book.out.len())].0
        } else {
            book.stale[rng.index(book.stale.len())]
        };
        let mut mask = 0u64;
        for _ in 0..=rng.below(3) {
            mask |= 1 << rng.below(64);
        }
        let candidate = from ^ mask;
        match (
            h.pool.redeem(RawHandle::from(candidate)),
            book.index.get(&candidate).copied(),
        ) {
            (Ok(got), Some(slot)) => {
                hits += 1;
                book.relend(slot, got);
            }
            (Ok(got), None) => {
                bad.push(format!(
                    "{candidate:#018x} (from {from:#018x}) redeemed {}",
                    *got
                ));
                core::mem::forget(got);
            }
            (Err(e), Some(_)) => bad.push(format!(
                "outstanding token {candidate:#018x} refused: {e:?}"
            )),
            (Err(e), None) => {
                if book.stale_set.contains(&candidate)
                    && !matches!(e, PoolError::StaleHandle { .. })
                {
                    bad.push(format!("stale token {candidate:#018x}: {e:?}"));
                }
                tally.count(&e);
            }
        }
        if bad.len() > 16 {
            break;
        }
    }
    eprintln!(
        "mutated tokens: {tally:?}; {hits} mutations hit an outstanding token, {} re-lends, {} stale tokens",
        book.relends,
        book.stale.len()
    );
    assert!(bad.is_empty(), "{bad:#?}");
    assert_eq!(tally.other, 0, "unexpected errors: {tally:?}");
    h.out = book.out.into_iter().collect();
    h.stale = book.stale;
    history_aftermath(h);
}
