//! `tokens`: handles and raw tokens of typed pools against a model.
//!
//! Operations: acquire (`acquire` and `acquire_with`, derived types and runtime pools),
//! writes, releases (here or on another thread), `into_raw`, redeems of issued tokens on
//! their pool and on others, redeems of arbitrary and bit-flipped `u64`s, reclaim, stats.
//!
//! The model holds every live handle with the value last written through it, and every
//! token issued in this run with the value it carries. It checks:
//!
//! - only an outstanding token redeems, exactly once, on its own pool, and gives back
//!   the value it carried; a redeemed token is refused ever after, as stale or invalid;
//! - an arbitrary `u64` never redeems, unless it equals an outstanding token of that pool
//!   (which then counts as that token's one redeem);
//! - values read back are the values written; no two live handles share a block;
//! - a capped pool refuses only at its cap; at the end, with every token redeemed and
//!   every handle dropped, each pool counts no live block and no token out.

use std::sync::OnceLock;

use arbitrary::{Arbitrary, Unstructured};
use tally_pool::numa::Topology;
use tally_pool::{GuardLevel, Handle, Pool, PoolConfig, PoolError, Pooled, RawHandle, Recycle};

/// A value the model can stamp and read back.
pub trait Stamp: Send + Sized + 'static {
    /// The value carrying `v`.
    fn stamped(v: u64) -> Self;
    /// Writes `v` into the value in place.
    fn write(&mut self, v: u64);
    /// The stamp, or `None` if the value is torn (its parts disagree).
    fn read(&self) -> Option<u64>;
    /// The stamp of `Default::default()` (or of a recycled value).
    const FRESH: u64 = 0;
}

/// Off, small, derived.
#[derive(Pooled, Default)]
#[pooled(name = "fuzz-quote")]
pub struct Quote {
    id: u64,
    px: i64,
}

/// Canary, capped, odd size.
#[derive(Pooled, Default)]
#[pooled(
    name = "fuzz-capped",
    guard = "canary",
    capacity = 4,
    max_capacity = 24
)]
pub struct Capped {
    v: u64,
    pad: [u8; 5],
}

/// Full guard, wide.
#[derive(Pooled)]
#[pooled(name = "fuzz-wide", guard = "full")]
pub struct Wide {
    words: [u64; 33],
}

impl Default for Wide {
    fn default() -> Self {
        Self { words: [0; 33] }
    }
}

/// Recycling, with a heap part.
#[derive(Pooled, Default)]
#[pooled(name = "fuzz-book", recycle)]
pub struct Book {
    fills: Vec<u64>,
}

impl Recycle for Book {
    fn recycle(&mut self) {
        self.fills.clear();
    }
}

impl Stamp for Quote {
    fn stamped(v: u64) -> Self {
        Self {
            id: v,
            px: !v as i64,
        }
    }
    fn write(&mut self, v: u64) {
        *self = Self::stamped(v);
    }
    fn read(&self) -> Option<u64> {
        (self.px == !self.id as i64).then_some(self.id)
    }
    const FRESH: u64 = u64::MAX; // id 0, px 0: torn; handled by `fresh_ok`
}

impl Stamp for Capped {
    fn stamped(v: u64) -> Self {
        Self {
            v,
            pad: [v as u8; 5],
        }
    }
    fn write(&mut self, v: u64) {
        *self = Self::stamped(v);
    }
    fn read(&self) -> Option<u64> {
        self.pad
            .iter()
            .all(|&b| b == self.v as u8)
            .then_some(self.v)
    }
}

impl Stamp for Wide {
    fn stamped(v: u64) -> Self {
        Self { words: [v; 33] }
    }
    fn write(&mut self, v: u64) {
        self.words = [v; 33];
    }
    fn read(&self) -> Option<u64> {
        let first = self.words[0];
        self.words.iter().all(|&w| w == first).then_some(first)
    }
}

impl Stamp for Book {
    fn stamped(v: u64) -> Self {
        Self { fills: vec![v, v] }
    }
    fn write(&mut self, v: u64) {
        self.fills.clear();
        self.fills.extend([v, v]);
    }
    fn read(&self) -> Option<u64> {
        match self.fills.as_slice() {
            [] => Some(0),
            [a, b] if a == b => Some(*a),
            _ => None,
        }
    }
}

impl Stamp for u64 {
    fn stamped(v: u64) -> Self {
        v
    }
    fn write(&mut self, v: u64) {
        *self = v;
    }
    fn read(&self) -> Option<u64> {
        Some(*self)
    }
}

impl Stamp for String {
    fn stamped(v: u64) -> Self {
        v.to_string()
    }
    fn write(&mut self, v: u64) {
        *self = v.to_string();
    }
    fn read(&self) -> Option<u64> {
        if self.is_empty() {
            return Some(0);
        }
        self.parse().ok()
    }
}

impl Stamp for [u32; 3] {
    fn stamped(v: u64) -> Self {
        [v as u32, (v >> 32) as u32, (v as u32) ^ (v >> 32) as u32]
    }
    fn write(&mut self, v: u64) {
        *self = Self::stamped(v);
    }
    fn read(&self) -> Option<u64> {
        (self[2] == self[0] ^ self[1]).then_some(u64::from(self[0]) | u64::from(self[1]) << 32)
    }
}

/// A live value of some lane, type-erased.
pub trait Live: Send {
    fn get(&self) -> Option<u64>;
    fn set(&mut self, v: u64);
    fn addr(&self) -> usize;
    /// Lends the value out; the token's bits.
    fn into_raw(self: Box<Self>) -> u64;
}

impl<T: Stamp> Live for Handle<T> {
    fn get(&self) -> Option<u64> {
        (**self).read()
    }
    fn set(&mut self, v: u64) {
        (**self).write(v);
    }
    fn addr(&self) -> usize {
        core::ptr::from_ref::<T>(self) as usize
    }
    fn into_raw(self: Box<Self>) -> u64 {
        Handle::into_raw(*self).to_bits()
    }
}

/// One pool, type-erased.
pub trait Lane: Send + Sync {
    fn name(&self) -> &str;
    fn acquire(&self, with: Option<u64>) -> Result<Box<dyn Live>, PoolError>;
    fn redeem(&self, bits: u64) -> Result<Box<dyn Live>, PoolError>;
    fn reclaim(&self) -> usize;
    fn live_blocks(&self) -> u64;
    fn leaked_raw(&self) -> u64;
    /// The cap the model checks refusals against, if it is exact.
    fn cap(&self) -> Option<usize>;
    /// Whether a fresh (not `acquire_with`) value reads as `v`.
    fn fresh_ok(&self, v: Option<u64>) -> bool;
}

/// A derived type's pool, through the `Pooled` trait.
struct Derived<T> {
    name: &'static str,
    cap: Option<usize>,
    _t: core::marker::PhantomData<fn() -> T>,
}

/// A runtime pool.
struct Runtime<T: 'static> {
    pool: &'static Pool<T>,
    cap: Option<usize>,
}

fn fresh_ok<T: Stamp>(v: Option<u64>) -> bool {
    if T::FRESH == u64::MAX {
        // A default value need not carry a stamp; any readable or default value passes.
        return true;
    }
    v == Some(T::FRESH)
}

impl<T: Stamp + Pooled + Default> Lane for Derived<T> {
    fn name(&self) -> &str {
        self.name
    }
    fn acquire(&self, with: Option<u64>) -> Result<Box<dyn Live>, PoolError> {
        match with {
            None => T::acquire().map(|h| Box::new(h) as Box<dyn Live>),
            Some(v) => T::acquire_with(T::stamped(v))
                .map(|h| Box::new(h) as Box<dyn Live>)
                .map_err(|e| e.error),
        }
    }
    fn redeem(&self, bits: u64) -> Result<Box<dyn Live>, PoolError> {
        T::redeem(RawHandle::from(bits)).map(|h| Box::new(h) as Box<dyn Live>)
    }
    fn reclaim(&self) -> usize {
        T::pool().reclaim()
    }
    fn live_blocks(&self) -> u64 {
        T::pool().stats().live_blocks
    }
    fn leaked_raw(&self) -> u64 {
        T::pool().leaked_raw()
    }
    fn cap(&self) -> Option<usize> {
        self.cap
    }
    fn fresh_ok(&self, v: Option<u64>) -> bool {
        fresh_ok::<T>(v)
    }
}

impl<T: Stamp + Default> Lane for Runtime<T> {
    fn name(&self) -> &str {
        self.pool.name()
    }
    fn acquire(&self, with: Option<u64>) -> Result<Box<dyn Live>, PoolError> {
        match with {
            None => self.pool.acquire().map(|h| Box::new(h) as Box<dyn Live>),
            Some(v) => self
                .pool
                .acquire_with(T::stamped(v))
                .map(|h| Box::new(h) as Box<dyn Live>)
                .map_err(|e| e.error),
        }
    }
    fn redeem(&self, bits: u64) -> Result<Box<dyn Live>, PoolError> {
        self.pool
            .redeem(RawHandle::from(bits))
            .map(|h| Box::new(h) as Box<dyn Live>)
    }
    fn reclaim(&self) -> usize {
        self.pool.reclaim()
    }
    fn live_blocks(&self) -> u64 {
        self.pool.stats().live_blocks
    }
    fn leaked_raw(&self) -> u64 {
        self.pool.leaked_raw()
    }
    fn cap(&self) -> Option<usize> {
        self.cap
    }
    fn fresh_ok(&self, v: Option<u64>) -> bool {
        fresh_ok::<T>(v)
    }
}

fn runtime<T: Stamp + Default>(config: PoolConfig, cap: Option<usize>) -> Box<dyn Lane> {
    match Pool::<T>::new(config) {
        Ok(pool) => Box::new(Runtime { pool, cap }),
        Err(e) => panic!("creating a fuzz pool: {e}"),
    }
}

fn derived<T: Stamp + Pooled + Default>(name: &'static str, cap: Option<usize>) -> Box<dyn Lane> {
    Box::new(Derived::<T> {
        name,
        cap,
        _t: core::marker::PhantomData,
    })
}

/// The pools, made once per process: typed pools are never freed, so each run reuses them
/// and leaves them as it found them (no live value, no token out).
pub fn lanes() -> &'static [Box<dyn Lane>] {
    static LANES: OnceLock<Vec<Box<dyn Lane>>> = OnceLock::new();
    LANES.get_or_init(|| {
        let two_nodes = match Topology::synthetic(2, 1) {
            Ok(t) => t,
            Err(e) => panic!("a synthetic topology: {e}"),
        };
        vec![
            derived::<Quote>("fuzz-quote", None),
            derived::<Capped>("fuzz-capped", Some(24)),
            derived::<Wide>("fuzz-wide", None),
            derived::<Book>("fuzz-book", None),
            runtime::<u64>(PoolConfig::new("fuzz-u64-a").capacity(16), None),
            // Same type, so its tokens are `RawHandle<u64>` too: only the pool tells them apart.
            runtime::<u64>(
                PoolConfig::new("fuzz-u64-b").capacity(16).max_capacity(40),
                Some(40),
            ),
            runtime::<String>(
                PoolConfig::new("fuzz-string").guard(GuardLevel::Canary),
                None,
            ),
            runtime::<[u32; 3]>(PoolConfig::new("fuzz-two-nodes").topology(two_nodes), None),
        ]
    })
}

/// One step of a run.
#[derive(Arbitrary, Debug)]
pub enum Op {
    Acquire {
        lane: u8,
    },
    AcquireWith {
        lane: u8,
        value: u64,
    },
    Write {
        slot: u8,
        value: u64,
    },
    Read {
        slot: u8,
    },
    Release {
        slot: u8,
    },
    ReleaseOnThread {
        slot: u8,
    },
    IntoRaw {
        slot: u8,
    },
    /// A token issued in this run, on its own pool.
    Redeem {
        token: u8,
    },
    /// A token issued in this run, on its own pool, from another thread.
    RedeemOnThread {
        token: u8,
    },
    /// A token issued in this run, on some pool (its own or not).
    RedeemOn {
        token: u8,
        lane: u8,
    },
    /// A token with bits flipped.
    RedeemFlipped {
        token: u8,
        lane: u8,
        flip: u64,
    },
    /// Any `u64`.
    RedeemForged {
        lane: u8,
        bits: u64,
    },
    Reclaim {
        lane: u8,
    },
    Stats {
        lane: u8,
    },
}

/// A token issued in this run.
struct Token {
    lane: usize,
    bits: u64,
    value: Option<u64>,
    outstanding: bool,
}

/// A live handle of the model.
struct Held {
    lane: usize,
    live: Box<dyn Live>,
    value: Option<u64>,
}

struct Model {
    held: Vec<Held>,
    tokens: Vec<Token>,
}

fn pick(n: usize, i: u8) -> Option<usize> {
    (n > 0).then(|| usize::from(i) % n)
}

impl Model {
    fn live_in(&self, lane: usize) -> usize {
        self.held.iter().filter(|h| h.lane == lane).count()
            + self
                .tokens
                .iter()
                .filter(|t| t.lane == lane && t.outstanding)
                .count()
    }

    fn take(&mut self, lane: usize, live: Box<dyn Live>, value: Option<u64>, what: &str) {
        let name = lanes()[lane].name();
        let addr = live.addr();
        assert!(
            self.held.iter().all(|h| h.live.addr() != addr),
            "{name}: {what} handed out {addr:#x}, which a live handle holds"
        );
        let seen = live.get();
        match value {
            Some(v) => assert_eq!(seen, Some(v), "{name}: {what} at {addr:#x} reads back"),
            None => assert!(
                lanes()[lane].fresh_ok(seen),
                "{name}: {what} at {addr:#x} gave a fresh value reading {seen:?}"
            ),
        }
        self.held.push(Held {
            lane,
            live,
            value: seen,
        });
    }

    fn acquire(&mut self, lane: usize, with: Option<u64>) {
        let l = &lanes()[lane];
        match l.acquire(with) {
            Ok(live) => self.take(lane, live, with, "acquire"),
            Err(PoolError::Exhausted { .. }) => {
                let cap = l.cap();
                let live = self.live_in(lane);
                assert!(
                    cap.is_some_and(|cap| live >= cap),
                    "{}: Exhausted with {live} live (cap {cap:?})",
                    l.name()
                );
            }
            Err(e) => panic!("{}: acquire failed: {e}", l.name()),
        }
    }

    /// Redeems `bits` on `lane` and checks the result against the model.
    fn redeem(&mut self, lane: usize, bits: u64, on_thread: bool) {
        let l = &lanes()[lane];
        let result = if on_thread {
            std::thread::scope(|s| match s.spawn(|| l.redeem(bits)).join() {
                Ok(r) => r,
                Err(_) => panic!("{}: redeem panicked on another thread", l.name()),
            })
        } else {
            l.redeem(bits)
        };
        let issued = self
            .tokens
            .iter()
            .position(|t| t.lane == lane && t.bits == bits && t.outstanding);
        match (result, issued) {
            (Ok(live), Some(i)) => {
                self.tokens[i].outstanding = false;
                let value = self.tokens[i].value;
                self.take(lane, live, value, "redeem");
            }
            (Ok(live), None) => panic!(
                "{}: {bits:#018x} redeemed into {:#x}, but no outstanding token of this pool has these bits",
                l.name(),
                live.addr()
            ),
            (Err(e), Some(_)) => {
                panic!("{}: outstanding token {bits:#018x} refused: {e}", l.name())
            }
            (Err(e), None) => {
                let was_issued_here = self.tokens.iter().any(|t| t.lane == lane && t.bits == bits);
                let ok = match e {
                    PoolError::StaleHandle { .. } | PoolError::InvalidHandle { .. } => true,
                    PoolError::WrongPool { .. } => !was_issued_here,
                    _ => false,
                };
                assert!(ok, "{}: {bits:#018x} refused with {e:?}", l.name());
            }
        }
    }

    fn step(&mut self, op: Op) {
        let n = lanes().len();
        match op {
            Op::Acquire { lane } => self.acquire(usize::from(lane) % n, None),
            Op::AcquireWith { lane, value } => self.acquire(usize::from(lane) % n, Some(value)),
            Op::Write { slot, value } => {
                if let Some(i) = pick(self.held.len(), slot) {
                    let h = &mut self.held[i];
                    h.live.set(value);
                    h.value = Some(value);
                }
            }
            Op::Read { slot } => {
                if let Some(i) = pick(self.held.len(), slot) {
                    let h = &self.held[i];
                    assert_eq!(
                        h.live.get(),
                        h.value,
                        "{}: read back",
                        lanes()[h.lane].name()
                    );
                }
            }
            Op::Release { slot } => {
                if let Some(i) = pick(self.held.len(), slot) {
                    let h = self.held.swap_remove(i);
                    assert_eq!(
                        h.live.get(),
                        h.value,
                        "{}: read back",
                        lanes()[h.lane].name()
                    );
                    drop(h.live);
                }
            }
            Op::ReleaseOnThread { slot } => {
                if let Some(i) = pick(self.held.len(), slot) {
                    let h = self.held.swap_remove(i);
                    let (live, value) = (h.live, h.value);
                    let seen = std::thread::spawn(move || {
                        let seen = live.get();
                        drop(live);
                        seen
                    })
                    .join();
                    match seen {
                        Ok(seen) => {
                            assert_eq!(seen, value, "{}: read back", lanes()[h.lane].name())
                        }
                        Err(_) => panic!(
                            "{}: release panicked on another thread",
                            lanes()[h.lane].name()
                        ),
                    }
                }
            }
            Op::IntoRaw { slot } => {
                if let Some(i) = pick(self.held.len(), slot) {
                    let h = self.held.swap_remove(i);
                    let bits = h.live.into_raw();
                    let name = lanes()[h.lane].name();
                    assert!(
                        !self
                            .tokens
                            .iter()
                            .any(|t| t.lane == h.lane && t.bits == bits && t.outstanding),
                        "{name}: into_raw gave {bits:#018x}, the bits of an outstanding token"
                    );
                    self.tokens.push(Token {
                        lane: h.lane,
                        bits,
                        value: h.value,
                        outstanding: true,
                    });
                }
            }
            Op::Redeem { token } => {
                if let Some(i) = pick(self.tokens.len(), token) {
                    let (lane, bits) = (self.tokens[i].lane, self.tokens[i].bits);
                    self.redeem(lane, bits, false);
                }
            }
            Op::RedeemOnThread { token } => {
                if let Some(i) = pick(self.tokens.len(), token) {
                    let (lane, bits) = (self.tokens[i].lane, self.tokens[i].bits);
                    self.redeem(lane, bits, true);
                }
            }
            Op::RedeemOn { token, lane } => {
                if let Some(i) = pick(self.tokens.len(), token) {
                    let bits = self.tokens[i].bits;
                    self.redeem(usize::from(lane) % n, bits, false);
                }
            }
            Op::RedeemFlipped { token, lane, flip } => {
                if let Some(i) = pick(self.tokens.len(), token) {
                    let bits = self.tokens[i].bits ^ flip;
                    self.redeem(usize::from(lane) % n, bits, false);
                }
            }
            Op::RedeemForged { lane, bits } => self.redeem(usize::from(lane) % n, bits, false),
            Op::Reclaim { lane } => {
                let _ = lanes()[usize::from(lane) % n].reclaim();
            }
            Op::Stats { lane } => {
                let lane = usize::from(lane) % n;
                let l = &lanes()[lane];
                let out = self
                    .tokens
                    .iter()
                    .filter(|t| t.lane == lane && t.outstanding)
                    .count() as u64;
                assert_eq!(l.leaked_raw(), out, "{}: leaked_raw", l.name());
                assert_eq!(
                    l.live_blocks(),
                    self.live_in(lane) as u64,
                    "{}: live blocks",
                    l.name()
                );
            }
        }
    }

    /// Redeems every outstanding token, drops every handle, and checks that every pool is
    /// back to no live value and no token out.
    fn finish(mut self) {
        let outstanding: Vec<(usize, u64)> = self
            .tokens
            .iter()
            .filter(|t| t.outstanding)
            .map(|t| (t.lane, t.bits))
            .collect();
        for (lane, bits) in outstanding {
            self.redeem(lane, bits, false);
        }
        for h in self.held.drain(..) {
            assert_eq!(
                h.live.get(),
                h.value,
                "{}: read back",
                lanes()[h.lane].name()
            );
        }
        for t in &self.tokens {
            let l = &lanes()[t.lane];
            match l.redeem(t.bits) {
                Ok(live) => panic!(
                    "{}: token {:#018x} redeemed twice (into {:#x})",
                    l.name(),
                    t.bits,
                    live.addr()
                ),
                Err(PoolError::StaleHandle { .. } | PoolError::InvalidHandle { .. }) => {}
                Err(e) => panic!("{}: a redeemed token refused with {e:?}", l.name()),
            }
        }
        for l in lanes() {
            assert_eq!(l.leaked_raw(), 0, "{}: leaked_raw after the run", l.name());
            assert_eq!(
                l.live_blocks(),
                0,
                "{}: live blocks after the run",
                l.name()
            );
        }
    }
}

/// Runs the operations `data` describes and checks them against the model.
pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let mut model = Model {
        held: Vec::new(),
        tokens: Vec::new(),
    };
    let mut steps = 0;
    while !u.is_empty() && steps < 512 {
        let Ok(op) = Op::arbitrary(&mut u) else { break };
        if std::env::var_os("FUZZ_TRACE").is_some() {
            eprintln!("{op:?}");
        }
        model.step(op);
        steps += 1;
    }
    model.finish();
}
