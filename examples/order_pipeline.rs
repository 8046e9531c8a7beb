//! An order pipeline on pooled objects: market data -> strategy -> risk and matching.
//!
//! Three threads hand objects along, each stamping the time as it goes:
//!
//! * the **feed** acquires a `Quote` from its pool, fills it from a random walk over 16
//!   instruments and sends the `Handle<Quote>` through a bounded queue;
//! * the **strategy** follows a moving average of each instrument's mid price and drops the
//!   quote (released on its own thread, not the feed's). When the mid strays from the
//!   average it acquires an `Order`, lends it out as a raw `u64` token
//!   (`u64::from(Handle::into_raw(order))`) and pushes the token through a ring of `u64`s.
//!   It also reads the fills that come back and keeps its positions;
//! * **risk and matching** redeems each token (`Order::redeem(RawHandle::from(bits))?`),
//!   checks order size and position limits, fills the order at its price and sends a
//!   `Handle<Fill>` back to the strategy.
//!
//! The latency of each hop goes into an HDR histogram. At the end the example prints the
//! throughput, the percentiles of each stage and each pool's statistics, and checks that every
//! value went back to its pool (`live_blocks` and `leaked_raw` both 0).
//!
//! The pipeline is generic over a trait, `Alloc`: the same code runs on `Box<T>` (on the system
//! allocator, with `Box::into_raw` pointers in the raw ring), and by default the pooled run is
//! followed by a `Box` run and the two are compared. Both runs make the same decisions, which
//! is checked too.
//!
//! ```sh
//! cargo run --release --example order_pipeline                       # pool, then Box
//! cargo run --release --example order_pipeline -- --messages 100000  # quotes per run
//! cargo run --release --example order_pipeline -- --alloc pool       # or --alloc box
//! ```
//!
//! A progress bar shows on long runs when standard output is a terminal.

use std::error::Error;
use std::fmt;
use std::io::IsTerminal as _;
use std::marker::PhantomData;
use std::ops::DerefMut;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use tally_pool::block::BlockPoolStats;
use tally_pool::{Handle, PoolError, Pooled, RawHandle};

/// Any error of a run; stages run on their own threads, so it is `Send`.
type BoxError = Box<dyn Error + Send + Sync>;

/// Quotes per run unless `--messages` says otherwise (a few seconds for both runs on 2 cores).
const DEFAULT_MESSAGES: u64 = 5_000_000;
/// Runs shorter than this show no progress bar.
const PROGRESS_MIN_MESSAGES: u64 = 500_000;
/// Instruments the feed quotes.
const INSTRUMENTS: usize = 16;
/// Slots of each queue between two stages.
const QUEUE_CAPACITY: usize = 1024;
/// How far (in ticks) the mid must stray from its average for the strategy to trade.
const SIGNAL_TICKS: i64 = 5;
/// Risk: the largest order accepted.
const MAX_ORDER_QTY: u32 = 450;
/// Risk: the largest position, long or short, in one instrument.
const POSITION_LIMIT: i64 = 50_000;
/// Histogram range: 1 ns to 60 s, three significant digits.
const HISTOGRAM_MAX_NS: u64 = 60_000_000_000;

/// Buy or sell.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Side {
    /// Take the ask.
    #[default]
    Buy,
    /// Hit the bid.
    Sell,
}

/// A top-of-book quote from the feed.
#[derive(Pooled, Default, Debug)]
#[pooled(capacity = 4096, max_capacity = 65_536, name = "quotes")]
struct Quote {
    seq: u64,
    instrument: u32,
    bid: i64,
    ask: i64,
    bid_qty: u32,
    ask_qty: u32,
    /// When the feed sent it, in ns since the run started.
    t_feed: u64,
}

/// An order from the strategy: 64 bytes.
#[derive(Pooled, Default, Debug)]
#[pooled(capacity = 4096, max_capacity = 65_536, name = "orders")]
struct Order {
    id: u64,
    quote_seq: u64,
    price: i64,
    qty: u32,
    instrument: u32,
    side: Side,
    /// The `t_feed` of the quote that triggered it.
    t_feed: u64,
    /// When the strategy sent it.
    t_strategy: u64,
    /// When risk and matching decided on it.
    t_risk: u64,
}

/// An execution report from matching back to the strategy.
#[derive(Pooled, Default, Debug)]
#[pooled(capacity = 4096, max_capacity = 65_536, name = "fills")]
struct Fill {
    order_id: u64,
    price: i64,
    qty: u32,
    instrument: u32,
    side: Side,
    /// The `t_feed` of the quote behind the order.
    t_feed: u64,
    /// When matching sent it.
    t_risk: u64,
}

/// The statistics of one pool after a run.
struct PoolReport {
    name: &'static str,
    stats: BlockPoolStats,
    leaked_raw: u64,
}

/// Where the pipeline's values live: pool handles or boxes.
///
/// Orders cross from the strategy to risk as `u64`s in a ring; the other values cross as
/// owned `Q`, `O` and `F`.
trait Alloc {
    /// Shown in reports.
    const NAME: &'static str;
    /// A quote in its home.
    type Q: DerefMut<Target = Quote> + Send;
    /// An order in its home.
    type O: DerefMut<Target = Order> + Send;
    /// A fill in its home.
    type F: DerefMut<Target = Fill> + Send;

    /// Creates what the run needs before the clock starts.
    fn prepare() -> Result<(), BoxError>;
    /// Houses a quote.
    fn quote(quote: Quote) -> Result<Self::Q, BoxError>;
    /// Houses an order.
    fn order(order: Order) -> Result<Self::O, BoxError>;
    /// Houses a fill.
    fn fill(fill: Fill) -> Result<Self::F, BoxError>;
    /// Turns an order into a `u64` for the raw ring.
    fn order_into_bits(order: Self::O) -> u64;
    /// Turns a `u64` from [`Alloc::order_into_bits`] back into the order.
    ///
    /// # Safety
    ///
    /// `bits` must come from `order_into_bits` of the same `Alloc`, and each value may be
    /// turned back only once.
    unsafe fn order_from_bits(bits: u64) -> Result<Self::O, BoxError>;
    /// The pools' statistics (none for `Box`).
    fn pools() -> Vec<PoolReport>;
}

/// Values in tally-pool's typed pools, orders in the ring as checked `RawHandle` tokens.
struct PoolAlloc;

impl Alloc for PoolAlloc {
    const NAME: &'static str = "pool";
    type Q = Handle<Quote>;
    type O = Handle<Order>;
    type F = Handle<Fill>;

    fn prepare() -> Result<(), BoxError> {
        // Creates the three pools (and reports a pool that could not be made).
        drop(Quote::acquire()?);
        drop(Order::acquire()?);
        drop(Fill::acquire()?);
        Ok(())
    }

    fn quote(quote: Quote) -> Result<Handle<Quote>, BoxError> {
        Ok(Quote::acquire_with(quote).map_err(PoolError::from)?)
    }

    fn order(order: Order) -> Result<Handle<Order>, BoxError> {
        Ok(Order::acquire_with(order).map_err(PoolError::from)?)
    }

    fn fill(fill: Fill) -> Result<Handle<Fill>, BoxError> {
        Ok(Fill::acquire_with(fill).map_err(PoolError::from)?)
    }

    fn order_into_bits(order: Handle<Order>) -> u64 {
        u64::from(Handle::into_raw(order))
    }

    unsafe fn order_from_bits(bits: u64) -> Result<Handle<Order>, BoxError> {
        // Checked by the pool: a stale, forged or foreign token is an error, not UB.
        Ok(Order::redeem(RawHandle::from(bits))?)
    }

    fn pools() -> Vec<PoolReport> {
        vec![
            pool_report::<Quote>(),
            pool_report::<Order>(),
            pool_report::<Fill>(),
        ]
    }
}

/// The statistics of `T`'s pool.
fn pool_report<T: Pooled>() -> PoolReport {
    let pool = T::pool();
    PoolReport {
        name: pool.name(),
        stats: pool.stats(),
        leaked_raw: pool.leaked_raw(),
    }
}

/// Values in `Box`es on the system allocator, orders in the ring as `Box::into_raw` pointers.
struct BoxAlloc;

impl Alloc for BoxAlloc {
    const NAME: &'static str = "box";
    type Q = Box<Quote>;
    type O = Box<Order>;
    type F = Box<Fill>;

    fn prepare() -> Result<(), BoxError> {
        Ok(())
    }

    fn quote(quote: Quote) -> Result<Box<Quote>, BoxError> {
        Ok(Box::new(quote))
    }

    fn order(order: Order) -> Result<Box<Order>, BoxError> {
        Ok(Box::new(order))
    }

    fn fill(fill: Fill) -> Result<Box<Fill>, BoxError> {
        Ok(Box::new(fill))
    }

    fn order_into_bits(order: Box<Order>) -> u64 {
        Box::into_raw(order).expose_provenance() as u64
    }

    unsafe fn order_from_bits(bits: u64) -> Result<Box<Order>, BoxError> {
        let ptr = std::ptr::with_exposed_provenance_mut::<Order>(usize::try_from(bits)?);
        // SAFETY: the caller hands over bits that `order_into_bits` made from a
        // `Box<Order>` and that were not turned back yet: the pointer owns a live box.
        Ok(unsafe { Box::from_raw(ptr) })
    }

    fn pools() -> Vec<PoolReport> {
        Vec::new()
    }
}

/// Nanoseconds since the run started.
#[derive(Clone, Copy)]
struct Clock(Instant);

impl Clock {
    fn now(self) -> u64 {
        u64::try_from(self.0.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// The error of a stage that stopped because another one failed.
#[derive(Debug)]
struct Stopped;

impl fmt::Display for Stopped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("stopped because another stage failed")
    }
}

impl Error for Stopped {}

/// The flags the stages share.
#[derive(Default)]
struct Signals {
    /// A stage failed: the others stop waiting.
    abort: AtomicBool,
    /// The strategy has pushed its last order.
    strategy_done: AtomicBool,
    /// Risk has pushed its last fill.
    risk_done: AtomicBool,
    /// Quotes the strategy has read, for the progress bar.
    progress: AtomicU64,
}

impl Signals {
    fn check(&self) -> Result<(), BoxError> {
        if self.abort.load(Ordering::Relaxed) {
            Err(Box::new(Stopped))
        } else {
            Ok(())
        }
    }
}

/// Runs one stage; on an error or a panic, tells the other stages to stop.
fn stage<R>(signals: &Signals, body: impl FnOnce() -> Result<R, BoxError>) -> Result<R, BoxError> {
    /// Sets `abort` unless disarmed, so a panicking stage also stops the others.
    struct AbortOnDrop<'a>(&'a AtomicBool, bool);
    impl Drop for AbortOnDrop<'_> {
        fn drop(&mut self) {
            if self.1 {
                self.0.store(true, Ordering::Relaxed);
            }
        }
    }
    let mut guard = AbortOnDrop(&signals.abort, true);
    let result = body();
    guard.1 = result.is_err();
    result
}

/// Waits by spinning a little, then by yielding the core: two cores run three stages.
struct Backoff(u32);

impl Backoff {
    const SPIN_ROUNDS: u32 = 6;

    fn new() -> Self {
        Self(0)
    }

    fn snooze(&mut self) {
        if self.0 < Self::SPIN_ROUNDS {
            for _ in 0..1u32 << self.0 {
                std::hint::spin_loop();
            }
            self.0 += 1;
        } else {
            std::thread::yield_now();
        }
    }
}

/// Pushes `item`, waiting (and calling `idle`) while the queue is full. Hands the item back
/// if the run is being stopped.
fn push_wait<T>(
    queue: &ArrayQueue<T>,
    mut item: T,
    signals: &Signals,
    mut idle: impl FnMut(),
) -> Result<(), (T, BoxError)> {
    let mut backoff = Backoff::new();
    loop {
        match queue.push(item) {
            Ok(()) => return Ok(()),
            Err(back) => item = back,
        }
        if let Err(e) = signals.check() {
            return Err((item, e));
        }
        idle();
        backoff.snooze();
    }
}

/// Pops an item, waiting (and calling `idle`) while the queue is empty.
fn pop_wait<T>(
    queue: &ArrayQueue<T>,
    signals: &Signals,
    mut idle: impl FnMut(),
) -> Result<T, BoxError> {
    let mut backoff = Backoff::new();
    loop {
        if let Some(item) = queue.pop() {
            return Ok(item);
        }
        signals.check()?;
        idle();
        backoff.snooze();
    }
}

/// The raw ring between strategy and risk: orders cross it as `u64`s.
///
/// Only [`TokenRing::push`] puts bits into the ring, always from [`Alloc::order_into_bits`],
/// and every pop takes its bits out once: that is what makes turning them back sound.
struct TokenRing<A: Alloc> {
    ring: ArrayQueue<u64>,
    _alloc: PhantomData<fn() -> A>,
}

impl<A: Alloc> TokenRing<A> {
    fn new(capacity: usize) -> Self {
        Self {
            ring: ArrayQueue::new(capacity),
            _alloc: PhantomData,
        }
    }

    /// Pushes `order` as bits, waiting while the ring is full.
    fn push(&self, order: A::O, signals: &Signals, idle: impl FnMut()) -> Result<(), BoxError> {
        let bits = A::order_into_bits(order);
        push_wait(&self.ring, bits, signals, idle).map_err(|(bits, e)| {
            // SAFETY: `bits` was made from an order just above and never entered the ring.
            drop(unsafe { A::order_from_bits(bits) });
            e
        })
    }

    /// Pops an order, if one is waiting.
    fn pop(&self) -> Option<Result<A::O, BoxError>> {
        let bits = self.ring.pop()?;
        // SAFETY: only `push` fills the ring, with bits from `order_into_bits`; this pop took
        // these bits out of the ring, so no one else turns them back.
        Some(unsafe { A::order_from_bits(bits) })
    }
}

impl<A: Alloc> Drop for TokenRing<A> {
    /// Releases the orders still in the ring (only after a failed run).
    fn drop(&mut self) {
        while let Some(order) = self.pop() {
            drop(order);
        }
    }
}

/// A latency histogram in nanoseconds.
fn histogram() -> Result<Histogram<u64>, BoxError> {
    Ok(Histogram::new_with_bounds(1, HISTOGRAM_MAX_NS, 3)?)
}

/// xorshift64*: the feed's deterministic source of prices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// The per-instrument entry of `table`.
fn slot<T>(table: &mut [T; INSTRUMENTS], instrument: u32) -> Result<&mut T, BoxError> {
    let index = usize::try_from(instrument)?;
    table
        .get_mut(index)
        .ok_or_else(|| format!("instrument {instrument} is not quoted").into())
}

/// Feed: makes `messages` quotes and sends them to the strategy.
fn feed<A: Alloc>(
    messages: u64,
    clock: Clock,
    quotes: &ArrayQueue<A::Q>,
    signals: &Signals,
) -> Result<u64, BoxError> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut mids = [10_000i64; INSTRUMENTS];
    for seq in 0..messages {
        let r = rng.next();
        let instrument = (r % INSTRUMENTS as u64) as u32;
        let mid = slot(&mut mids, instrument)?;
        *mid = (*mid + ((r >> 8) % 5) as i64 - 2).clamp(1_000, 1_000_000);
        let half_spread = 1 + ((r >> 16) % 2) as i64;
        let mut quote = A::quote(Quote {
            seq,
            instrument,
            bid: *mid - half_spread,
            ask: *mid + half_spread,
            bid_qty: 100 * (1 + ((r >> 24) % 10) as u32),
            ask_qty: 100 * (1 + ((r >> 32) % 10) as u32),
            t_feed: 0,
        })?;
        quote.t_feed = clock.now();
        push_wait(quotes, quote, signals, || {}).map_err(|(_, e)| e)?;
    }
    Ok(clock.now())
}

/// What the strategy learns from fills.
struct FillBook {
    latency: Histogram<u64>,
    round_trip: Histogram<u64>,
    /// Orders sent so far: a fill must name one of them.
    orders_sent: u64,
    fills: u64,
    filled_qty: u64,
    position: [i64; INSTRUMENTS],
    notional: i64,
    /// Fills naming an order or an instrument that does not exist.
    bad_fills: u64,
}

impl FillBook {
    /// Reads every fill waiting in `queue`.
    fn drain<F: DerefMut<Target = Fill>>(&mut self, queue: &ArrayQueue<F>, clock: Clock) {
        while let Some(fill) = queue.pop() {
            let now = clock.now();
            self.latency
                .saturating_record(now.saturating_sub(fill.t_risk));
            self.round_trip
                .saturating_record(now.saturating_sub(fill.t_feed));
            self.fills += 1;
            if fill.order_id == 0 || fill.order_id > self.orders_sent {
                self.bad_fills += 1;
            }
            self.filled_qty += u64::from(fill.qty);
            self.notional = self
                .notional
                .wrapping_add(fill.price.wrapping_mul(signed(fill.side, fill.qty)));
            match slot(&mut self.position, fill.instrument) {
                Ok(position) => *position += signed(fill.side, fill.qty),
                Err(_) => self.bad_fills += 1,
            }
            // The fill, acquired by risk, goes back to its pool here.
            drop(fill);
        }
    }
}

fn signed(side: Side, qty: u32) -> i64 {
    match side {
        Side::Buy => i64::from(qty),
        Side::Sell => -i64::from(qty),
    }
}

/// What the strategy reports.
struct StrategyReport {
    quote_latency: Histogram<u64>,
    orders: u64,
    book: FillBook,
    end: u64,
}

/// Strategy: reads quotes, sends orders, reads fills until risk is done.
fn strategy<A: Alloc>(
    messages: u64,
    clock: Clock,
    quotes: &ArrayQueue<A::Q>,
    ring: &TokenRing<A>,
    fills: &ArrayQueue<A::F>,
    signals: &Signals,
) -> Result<StrategyReport, BoxError> {
    let mut quote_latency = histogram()?;
    let mut book = FillBook {
        latency: histogram()?,
        round_trip: histogram()?,
        orders_sent: 0,
        fills: 0,
        filled_qty: 0,
        position: [0; INSTRUMENTS],
        notional: 0,
        bad_fills: 0,
    };
    // Moving averages of the mid, in 1/16 ticks (0: no quote yet).
    let mut averages = [0i64; INSTRUMENTS];
    let mut orders = 0u64;
    for seen in 1..=messages {
        let quote = pop_wait(quotes, signals, || book.drain(fills, clock))?;
        quote_latency.saturating_record(clock.now().saturating_sub(quote.t_feed));
        let mid16 = (quote.bid + quote.ask) * 8;
        let average = slot(&mut averages, quote.instrument)?;
        if *average == 0 {
            *average = mid16;
        }
        let deviation = mid16 - *average;
        *average += deviation / 16;
        let side = if deviation <= -SIGNAL_TICKS * 16 {
            Some(Side::Buy)
        } else if deviation >= SIGNAL_TICKS * 16 {
            Some(Side::Sell)
        } else {
            None
        };
        if let Some(side) = side {
            let (price, qty) = match side {
                Side::Buy => (quote.ask, quote.ask_qty / 2),
                Side::Sell => (quote.bid, quote.bid_qty / 2),
            };
            orders += 1;
            book.orders_sent = orders;
            let order = Order {
                id: orders,
                quote_seq: quote.seq,
                price,
                qty,
                instrument: quote.instrument,
                side,
                t_feed: quote.t_feed,
                t_strategy: 0,
                t_risk: 0,
            };
            // The quote, acquired by the feed, goes back to its pool here.
            drop(quote);
            let mut order = A::order(order)?;
            order.t_strategy = clock.now();
            ring.push(order, signals, || book.drain(fills, clock))?;
        }
        if seen & 4095 == 0 {
            signals.progress.store(seen, Ordering::Relaxed);
        }
    }
    signals.progress.store(messages, Ordering::Relaxed);
    signals.strategy_done.store(true, Ordering::Release);
    // Fills until risk has sent its last one.
    let mut backoff = Backoff::new();
    loop {
        let risk_done = signals.risk_done.load(Ordering::Acquire);
        book.drain(fills, clock);
        if risk_done {
            break;
        }
        signals.check()?;
        backoff.snooze();
    }
    Ok(StrategyReport {
        quote_latency,
        orders,
        book,
        end: clock.now(),
    })
}

/// What risk and matching report.
struct RiskReport {
    route_latency: Histogram<u64>,
    end_to_end: Histogram<u64>,
    orders: u64,
    rejected: u64,
    position: [i64; INSTRUMENTS],
    notional: i64,
    end: u64,
}

/// Risk and matching: redeems orders, checks limits, fills the accepted ones.
fn risk<A: Alloc>(
    clock: Clock,
    ring: &TokenRing<A>,
    fills: &ArrayQueue<A::F>,
    signals: &Signals,
) -> Result<RiskReport, BoxError> {
    let mut report = RiskReport {
        route_latency: histogram()?,
        end_to_end: histogram()?,
        orders: 0,
        rejected: 0,
        position: [0; INSTRUMENTS],
        notional: 0,
        end: 0,
    };
    // Orders arrive in the order of their quotes: a check that tokens carry the right values.
    let mut last_quote = None;
    let mut backoff = Backoff::new();
    loop {
        let strategy_done = signals.strategy_done.load(Ordering::Acquire);
        let Some(order) = ring.pop() else {
            if strategy_done {
                break;
            }
            signals.check()?;
            backoff.snooze();
            continue;
        };
        backoff = Backoff::new();
        let mut order = order?;
        if last_quote.is_some_and(|last| order.quote_seq <= last) {
            return Err(format!(
                "order {} for quote {} arrived out of order",
                order.id, order.quote_seq
            )
            .into());
        }
        last_quote = Some(order.quote_seq);
        report
            .route_latency
            .saturating_record(clock.now().saturating_sub(order.t_strategy));
        report.orders += 1;
        let position = slot(&mut report.position, order.instrument)?;
        let after = *position + signed(order.side, order.qty);
        let accepted = order.qty <= MAX_ORDER_QTY && after.abs() <= POSITION_LIMIT;
        order.t_risk = clock.now();
        report
            .end_to_end
            .saturating_record(order.t_risk.saturating_sub(order.t_feed));
        if !accepted {
            report.rejected += 1;
            continue; // the order goes back to its pool here
        }
        *position = after;
        report.notional = report
            .notional
            .wrapping_add(order.price.wrapping_mul(signed(order.side, order.qty)));
        let mut fill = A::fill(Fill {
            order_id: order.id,
            price: order.price,
            qty: order.qty,
            instrument: order.instrument,
            side: order.side,
            t_feed: order.t_feed,
            t_risk: 0,
        })?;
        // The order, acquired by the strategy, goes back to its pool here.
        drop(order);
        fill.t_risk = clock.now();
        push_wait(fills, fill, signals, || {}).map_err(|(_, e)| e)?;
    }
    signals.risk_done.store(true, Ordering::Release);
    report.end = clock.now();
    Ok(report)
}

/// The outcome of one run.
struct RunReport {
    quotes: u64,
    elapsed: Duration,
    strategy: StrategyReport,
    risk: RiskReport,
}

impl RunReport {
    /// What both allocators must agree on.
    fn outcome(&self) -> (u64, u64, u64, u64, [i64; INSTRUMENTS], i64) {
        (
            self.strategy.orders,
            self.risk.rejected,
            self.strategy.book.fills,
            self.strategy.book.filled_qty,
            self.risk.position,
            self.risk.notional,
        )
    }

    fn quotes_per_sec(&self) -> f64 {
        self.quotes as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

fn progress_bar(messages: u64, alloc: &str) -> ProgressBar {
    let visible = messages >= PROGRESS_MIN_MESSAGES
        && std::io::stdout().is_terminal()
        && std::io::stderr().is_terminal();
    if !visible {
        return ProgressBar::with_draw_target(Some(messages), ProgressDrawTarget::hidden());
    }
    let style = ProgressStyle::with_template(
        "{prefix:>4} [{bar:40}] {human_pos}/{human_len} quotes, {rate}, eta {eta}",
    )
    .map(|s| {
        s.progress_chars("=> ")
            .with_key("rate", |state: &ProgressState, w: &mut dyn fmt::Write| {
                let _ = write!(w, "{:.2} M quotes/s", state.per_sec() / 1e6);
            })
    })
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    ProgressBar::new(messages)
        .with_style(style)
        .with_prefix(alloc.to_string())
}

/// A stage's result from `join`, with a panic turned into an error.
fn joined<R>(name: &str, result: std::thread::Result<Result<R, BoxError>>) -> Result<R, BoxError> {
    result.map_err(|_| -> BoxError { format!("the {name} thread panicked").into() })?
}

/// The first error that is not a [`Stopped`], or any error.
fn first_error(errors: Vec<BoxError>) -> Option<BoxError> {
    let real = errors.iter().position(|e| !e.is::<Stopped>()).unwrap_or(0);
    errors.into_iter().nth(real)
}

/// Runs the pipeline once with `A`.
fn run<A: Alloc>(messages: u64) -> Result<RunReport, BoxError> {
    A::prepare()?;
    let quotes = ArrayQueue::<A::Q>::new(QUEUE_CAPACITY);
    let ring = TokenRing::<A>::new(QUEUE_CAPACITY);
    let fills = ArrayQueue::<A::F>::new(QUEUE_CAPACITY);
    let signals = Signals::default();
    let bar = progress_bar(messages, A::NAME);
    let clock = Clock(Instant::now());
    let (feed, strategy, risk) = std::thread::scope(|s| {
        let (quotes, ring, fills, signals) = (&quotes, &ring, &fills, &signals);
        let feed = s.spawn(move || stage(signals, || feed::<A>(messages, clock, quotes, signals)));
        let strategy = s.spawn(move || {
            stage(signals, || {
                strategy::<A>(messages, clock, quotes, ring, fills, signals)
            })
        });
        let risk = s.spawn(move || stage(signals, || risk::<A>(clock, ring, fills, signals)));
        if !bar.is_hidden() {
            while !(feed.is_finished() && strategy.is_finished() && risk.is_finished()) {
                bar.set_position(signals.progress.load(Ordering::Relaxed));
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        bar.finish_and_clear();
        (
            joined("feed", feed.join()),
            joined("strategy", strategy.join()),
            joined("risk", risk.join()),
        )
    });
    let (feed_end, strategy, risk) = match (feed, strategy, risk) {
        (Ok(f), Ok(s), Ok(r)) => (f, s, r),
        (f, s, r) => {
            let errors = [f.err(), s.err(), r.err()].into_iter().flatten().collect();
            return Err(first_error(errors).unwrap_or_else(|| "a stage failed".into()));
        }
    };
    let end = feed_end.max(strategy.end).max(risk.end);
    if strategy.book.bad_fills != 0 {
        return Err(format!(
            "{} fills named an unknown order or instrument",
            strategy.book.bad_fills
        )
        .into());
    }
    let book = &strategy.book;
    if book.fills + risk.rejected != risk.orders
        || risk.orders != strategy.orders
        || book.position != risk.position
        || book.notional != risk.notional
    {
        return Err(format!(
            "strategy and risk disagree: {} orders sent, {} received, {} rejected, {} fills; positions or notional differ: {}",
            strategy.orders,
            risk.orders,
            risk.rejected,
            book.fills,
            book.position != risk.position || book.notional != risk.notional
        )
        .into());
    }
    Ok(RunReport {
        quotes: messages,
        elapsed: Duration::from_nanos(end),
        strategy,
        risk,
    })
}

/// Prints a run's numbers.
fn print_run(report: &RunReport) {
    let s = &report.strategy;
    let r = &report.risk;
    let secs = report.elapsed.as_secs_f64();
    println!(
        "quotes     {} in {secs:.3} s: {:.2} M quotes/s, {:.1} ns per quote",
        thousands(report.quotes),
        report.quotes_per_sec() / 1e6,
        secs * 1e9 / report.quotes.max(1) as f64,
    );
    println!(
        "orders     {} ({:.1}% of quotes), {} rejected by risk, {} filled for {} shares",
        thousands(s.orders),
        100.0 * s.orders as f64 / report.quotes.max(1) as f64,
        thousands(r.rejected),
        thousands(s.book.fills),
        thousands(s.book.filled_qty),
    );
    println!(
        "{:<36}{:>11}{:>12}{:>12}{:>13}{:>13}",
        "latency (ns)", "count", "p50", "p99", "p99.9", "max"
    );
    let rows = [
        ("feed -> strategy", &s.quote_latency),
        ("strategy -> risk (raw ring)", &r.route_latency),
        ("risk -> strategy (fill)", &s.book.latency),
        ("tick to trade (quote -> decision)", &r.end_to_end),
        ("round trip (quote -> fill back)", &s.book.round_trip),
    ];
    for (name, h) in rows {
        println!(
            "  {name:<34}{:>11}{:>12}{:>12}{:>13}{:>13}",
            thousands(h.len()),
            thousands(h.value_at_quantile(0.5)),
            thousands(h.value_at_quantile(0.99)),
            thousands(h.value_at_quantile(0.999)),
            thousands(h.max()),
        );
    }
    println!(
        "  (the feed is not paced: queues run full, so latencies include the time spent queued)"
    );
}

/// Prints the pools' statistics and fails if a value did not come back.
fn check_pools(pools: &[PoolReport]) -> Result<(), BoxError> {
    if pools.is_empty() {
        return Ok(());
    }
    println!(
        "{:<8}{:>6}{:>12}{:>12}{:>12}{:>14}{:>9}{:>8}{:>9}{:>11}{:>9}",
        "pool",
        "live",
        "leaked_raw",
        "allocs",
        "frees",
        "cross-thread",
        "depot",
        "grown",
        "chunks",
        "capacity",
        "corrupt"
    );
    let mut problems = Vec::new();
    for p in pools {
        let st = &p.stats;
        println!(
            "{:<8}{:>6}{:>12}{:>12}{:>12}{:>14}{:>9}{:>8}{:>9}{:>11}{:>9}",
            p.name,
            thousands(st.live_blocks),
            thousands(p.leaked_raw),
            thousands(st.allocations),
            thousands(st.frees),
            thousands(st.cross_thread_frees),
            thousands(st.depot_exchanges),
            thousands(st.expansions),
            st.chunks,
            thousands(st.capacity as u64),
            st.corruption_events,
        );
        if st.live_blocks != 0 || p.leaked_raw != 0 || st.corruption_events != 0 {
            problems.push(format!(
                "pool `{}`: {} live, {} leaked_raw, {} corruption events after the run",
                p.name, st.live_blocks, p.leaked_raw, st.corruption_events
            ));
        }
    }
    if problems.is_empty() {
        println!("every pooled value went back to its pool: live 0, leaked_raw 0");
        Ok(())
    } else {
        Err(problems.join("; ").into())
    }
}

/// `1234567` as `1,234,567`.
fn thousands(n: u64) -> String {
    if n < 1000 {
        n.to_string()
    } else {
        format!("{},{:03}", thousands(n / 1000), n % 1000)
    }
}

/// Which allocators to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    Pool,
    Box,
    Both,
}

struct Args {
    messages: u64,
    which: Which,
}

const USAGE: &str = "usage: order_pipeline [--messages N] [--alloc pool|box|both]

  --messages N   quotes per run (default 5,000,000; `_` and `,` allowed: 1_000_000)
  --alloc WHICH  pool: tally-pool handles; box: Box<T>; both (default): pool, then box,
                 and print the pool/box throughput ratio";

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        messages: DEFAULT_MESSAGES,
        which: Which::Both,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let (key, inline) = match arg.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (arg.clone(), None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or(format!("{name} needs a value"))
        };
        match key.as_str() {
            "--messages" | "-n" => {
                let v = value("--messages")?;
                let n: u64 = v
                    .replace(['_', ','], "")
                    .parse()
                    .map_err(|e| format!("--messages {v}: {e}; expected a whole number"))?;
                if n == 0 {
                    return Err("--messages must be at least 1".into());
                }
                args.messages = n;
            }
            "--alloc" => {
                let v = value("--alloc")?;
                args.which = match v.as_str() {
                    "pool" => Which::Pool,
                    "box" => Which::Box,
                    "both" => Which::Both,
                    other => return Err(format!("--alloc {other}: expected pool, box or both")),
                };
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(args)
}

fn main_result(args: &Args) -> Result<(), BoxError> {
    println!(
        "order_pipeline: {} quotes per run over {INSTRUMENTS} instruments; feed, strategy and risk threads on {} cores; queues of {QUEUE_CAPACITY}",
        thousands(args.messages),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
    );
    println!(
        "sizes: Quote {} B, Order {} B, Fill {} B, Handle<Order> {} B, RawHandle<Order> {} B",
        size_of::<Quote>(),
        size_of::<Order>(),
        size_of::<Fill>(),
        size_of::<Handle<Order>>(),
        size_of::<RawHandle<Order>>(),
    );
    let mut pooled = None;
    if args.which != Which::Box {
        println!();
        println!("== pool: Handle<T> from #[derive(Pooled)] pools; orders cross as RawHandle u64 tokens ==");
        let report = match run::<PoolAlloc>(args.messages) {
            Ok(report) => report,
            Err(e) => {
                // Even a failed run must give every value back.
                if let Err(leak) = check_pools(&PoolAlloc::pools()) {
                    eprintln!("order_pipeline: after the failure: {leak}");
                }
                return Err(e);
            }
        };
        print_run(&report);
        check_pools(&PoolAlloc::pools())?;
        pooled = Some(report);
    }
    if args.which != Which::Pool {
        println!();
        println!(
            "== box: Box<T> on the system allocator; orders cross as Box::into_raw pointers =="
        );
        let report = run::<BoxAlloc>(args.messages)?;
        print_run(&report);
        if let Some(pooled) = &pooled {
            if pooled.outcome() != report.outcome() {
                return Err(
                    "the pool and box runs made different decisions: a value was corrupted".into(),
                );
            }
            println!();
            println!("same orders, rejects, fills and positions in both runs");
            println!(
                "pool/box throughput ratio: {:.2} ({:.2} vs {:.2} M quotes/s; above 1 means the pool run was faster)",
                pooled.quotes_per_sec() / report.quotes_per_sec(),
                pooled.quotes_per_sec() / 1e6,
                report.quotes_per_sec() / 1e6,
            );
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(msg) if msg.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(msg) => {
            eprintln!("order_pipeline: {msg}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match main_result(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("order_pipeline: error: {e}");
            ExitCode::FAILURE
        }
    }
}
