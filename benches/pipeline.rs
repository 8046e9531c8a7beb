//! The order pipeline of `examples/order_pipeline.rs`, unpaced (feed -> strategy -> execution
//! -> main, bounded channels), on derived pools (handles between threads, orders as `u64`
//! tokens redeemed with `Order::redeem`) and on `Box` (orders as `Box::into_raw` addresses, so
//! never redelivered), in alternating rounds that must make the same decisions. Prints the
//! median messages/s of each and the median of the per-round ratios pooled/Box.
//! `TALLY_BENCH_QUICK=1` or `-- --quick`: fewer, shorter rounds; `--test`: one tiny round.

use std::ops::DerefMut;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError};
use std::thread;
use std::time::{Duration, Instant};

use tally_bench::stats::{median, paired, Samples, QUIET_SAMPLES};
use tally_bench::timer::{cpu_ticks, foreign_cpus, load_average};
use tally_bench::{fatal, Mode};
use tally_pool::{Handle, PoolError, Pooled, RawHandle};

const INSTRUMENTS: usize = 16;
/// Slots in each channel, and in the ring of order tokens.
const SLOTS: usize = 1024;
/// How far (in 1/16 ticks) a mid must stray from its average for the strategy to trade.
const SIGNAL: i64 = 24 * 16;
/// The largest position, long or short, that execution lets an instrument reach.
const POSITION_LIMIT: i64 = 20_000;

// The example's types and pool settings; the `Box` runs use the same structs.
#[derive(Pooled, Default, Debug)]
#[pooled(capacity = 4096, max_capacity = 65_536, name = "quotes")]
struct Quote {
    instrument: usize,
    bid: i64,
    ask: i64,
    size: i64,
}

#[derive(Pooled, Default, Debug)]
#[pooled(capacity = 4096, max_capacity = 65_536, name = "orders")]
#[pooled(guard = "canary")]
struct Order {
    instrument: usize,
    qty: i64,
    price: i64,
}

#[derive(Pooled, Default, Debug)]
#[pooled(capacity = 4096, max_capacity = 65_536, name = "fills")]
struct Fill {
    qty: i64,
    price: i64,
}

/// Where the pipeline's values live (`Own<T>`): the derived pools or `Box`.
trait Alloc {
    type Own<T: Pooled + Send>: DerefMut<Target = T> + Send;
    fn new<T: Pooled + Send>(value: T) -> Self::Own<T>;
    /// Moves `o` out of reach of the type system, as a `u64` token.
    fn lend(o: Order) -> u64;
    /// # Safety
    ///
    /// `token` came from [`Alloc::lend`] of the same implementation and is redeemed once.
    unsafe fn redeem(token: u64) -> Self::Own<Order>;
}

/// The derived pools: handles, and tokens redeemed through the pool's checks.
enum Pool {}

impl Alloc for Pool {
    type Own<T: Pooled + Send> = Handle<T>;
    /// Moves `value` into its pool, waiting while the pool is at its cap (back-pressure).
    fn new<T: Pooled + Send>(mut value: T) -> Handle<T> {
        loop {
            match T::acquire_with(value) {
                Ok(handle) => return handle,
                Err(e) if matches!(e.error, PoolError::Exhausted { .. }) => value = e.value,
                Err(e) => fatal!("pipeline: acquire failed: {}", e.error),
            }
            thread::yield_now();
        }
    }
    fn lend(o: Order) -> u64 {
        u64::from(Handle::into_raw(Self::new(o)))
    }
    unsafe fn redeem(token: u64) -> Handle<Order> {
        Order::redeem(RawHandle::from(token))
            .unwrap_or_else(|e| fatal!("pipeline: redeem failed: {e}"))
    }
}

impl Alloc for Box<()> {
    type Own<T: Pooled + Send> = Box<T>;
    fn new<T: Pooled + Send>(value: T) -> Box<T> {
        Box::new(value)
    }
    fn lend(o: Order) -> u64 {
        Box::into_raw(Box::new(o)).expose_provenance() as u64
    }
    unsafe fn redeem(token: u64) -> Box<Order> {
        let order = std::ptr::with_exposed_provenance_mut::<Order>(token as usize);
        // SAFETY: by the caller's contract `token` is the address `Box::into_raw` returned in
        // `lend` (its provenance exposed there), not yet rebuilt: this box is its only owner.
        unsafe { Box::from_raw(order) }
    }
}

/// Receives by polling, yielding the core between polls, as the example does.
fn poll<T>(channel: &Receiver<T>) -> Option<T> {
    loop {
        match channel.try_recv() {
            Ok(value) => return Some(value),
            Err(TryRecvError::Empty) => thread::yield_now(),
            Err(TryRecvError::Disconnected) => return None,
        }
    }
}

/// Market data: `messages` quotes from a random walk, unpaced.
fn feed<A: Alloc>(messages: u64, quotes: &SyncSender<A::Own<Quote>>) {
    let (mut rng, mut mid) = (0x9e37_79b9_7f4a_7c15_u64, 10_000_i64);
    for _ in 0..messages {
        rng ^= rng << 13; // xorshift64
        rng ^= rng >> 7;
        rng ^= rng << 17;
        mid = (mid + (rng % 5) as i64 - 2).clamp(1_000, 1_000_000);
        let mut quote = A::new(Quote::default());
        quote.instrument = (rng >> 8) as usize % INSTRUMENTS;
        quote.bid = mid + 1_000 * quote.instrument as i64 - 1;
        quote.ask = quote.bid + 2;
        quote.size = 100 * (1 + (rng >> 16) as i64 % 10);
        if quotes.send(quote).is_err() {
            break;
        }
    }
}

/// Strategy: trades when a mid strays from its moving average. Returns the orders sent.
fn strategy<A: Alloc>(quotes: &Receiver<A::Own<Quote>>, tokens: &SyncSender<u64>) -> u64 {
    let (mut orders, mut averages) = (0, [0_i64; INSTRUMENTS]);
    while let Some(quote) = poll(quotes) {
        let Some(average) = averages.get_mut(quote.instrument) else {
            continue;
        };
        let mid = (quote.bid + quote.ask) * 8;
        if *average == 0 {
            *average = mid;
        }
        let deviation = mid - *average;
        *average += deviation / 16;
        let (qty, price) = match deviation {
            d if d <= -SIGNAL => (quote.size / 2, quote.ask),
            d if d >= SIGNAL => (-quote.size / 2, quote.bid),
            _ => continue,
        };
        let instrument = quote.instrument;
        orders += 1;
        let order = Order {
            instrument,
            qty,
            price,
        };
        if tokens.send(A::lend(order)).is_err() {
            break; // execution panicked: the run aborts when it is joined
        }
    }
    orders
}

/// Execution: redeems each token, applies the position limit and fills what passes.
fn execution<A: Alloc>(tokens: &Receiver<u64>, fills: &SyncSender<A::Own<Fill>>) {
    let mut positions = [0_i64; INSTRUMENTS];
    while let Some(token) = poll(tokens) {
        // SAFETY: every token on the ring was lent once by `strategy` with the same `A`.
        let order = unsafe { A::redeem(token) };
        let within_limit = |pos: &&mut i64| (**pos + order.qty).abs() <= POSITION_LIMIT;
        let Some(position) = positions.get_mut(order.instrument).filter(within_limit) else {
            continue;
        };
        *position += order.qty;
        let (qty, price) = (order.qty, order.price);
        if fills.send(A::new(Fill { qty, price })).is_err() {
            break;
        }
    }
}

/// What a run decided: orders sent, and fills booked, shares traded and net cash.
type Decisions = (u64, (u64, i64, i64));

/// One run of `messages` quotes: its wall time, its decisions, and the foreign load.
fn run<A: Alloc>(messages: u64) -> (Duration, Decisions, f64) {
    let (quote_tx, quote_rx) = sync_channel::<A::Own<Quote>>(SLOTS);
    let (token_tx, token_rx) = sync_channel::<u64>(SLOTS);
    let (fill_tx, fill_rx) = sync_channel::<A::Own<Fill>>(SLOTS);
    let (cpu, start) = (cpu_ticks(), Instant::now());
    let decisions = thread::scope(|s| {
        let executor = s.spawn(move || execution::<A>(&token_rx, &fill_tx));
        let strategist = s.spawn(move || strategy::<A>(&quote_rx, &token_tx));
        let feeder = s.spawn(move || feed::<A>(messages, &quote_tx));
        // The book, as in the example: a batch at most once a millisecond.
        let mut book = (0_u64, 0_i64, 0_i64);
        while let Ok(first) = fill_rx.recv() {
            for fill in std::iter::once(first).chain(fill_rx.try_iter()) {
                let (n, shares, cash) = book;
                book = (n + 1, shares + fill.qty.abs(), cash - fill.qty * fill.price);
            }
            thread::sleep(Duration::from_millis(1));
        }
        let joined = (feeder.join(), strategist.join(), executor.join());
        let (Ok(()), Ok(orders), Ok(())) = joined else {
            fatal!("pipeline: a stage panicked")
        };
        (orders, book)
    });
    let wall = start.elapsed();
    (wall, decisions, foreign_cpus(cpu, cpu_ticks(), wall))
}

fn main() {
    let Some(mode) = Mode::start() else { return };
    let (messages, rounds) = mode.pick([(1_000_000_u64, 7), (50_000, 5), (5_000, 1)]);
    let load_before = load_average();
    // Warm-up: maps the pools' capacity, warms the allocator, and checks both agree.
    let decisions = run::<Pool>(messages).1;
    if run::<Box<()>>(messages).1 != decisions {
        fatal!("pipeline: Box and pooled decided apart");
    }
    let (mut pooled, mut boxed) = (Samples::default(), Samples::default());
    for round in 0..rounds {
        for pooled_turn in [round % 2 == 0, round % 2 != 0] {
            let (wall, seen, foreign) = match pooled_turn {
                true => run::<Pool>(messages),
                false => run::<Box<()>>(messages),
            };
            if seen != decisions {
                fatal!("pipeline: a run decided differently");
            }
            let cell = if pooled_turn { &mut pooled } else { &mut boxed };
            let ns = wall.as_secs_f64() * 1e9 / messages as f64;
            cell.push(ns, messages, foreign);
        }
    }
    let live = Quote::pool().stats().live_blocks + Fill::pool().stats().live_blocks;
    if live + Order::pool().stats().live_blocks + Order::pool().leaked_raw() != 0 {
        fatal!("pipeline: values left out of their pools");
    }

    let quiet = pooled.quiet_count() >= QUIET_SAMPLES && boxed.quiet_count() >= QUIET_SAMPLES;
    let (which, mode, (orders, (fills, _, _))) =
        (if quiet { "quiet" } else { "all" }, mode.name(), decisions);
    println!(
        "\nOrder pipeline ({mode} mode, {rounds} interleaved rounds of {messages} quotes, {orders} \
         orders, {fills} fills, unpaced): median of {which} samples"
    );
    for (label, samples) in [("pooled", &pooled), ("Box", &boxed)] {
        // Median messages/s, and the slowest and fastest round's.
        let ns = samples.chosen(quiet);
        let [median, slowest, fastest] = [
            median(&ns),
            *ns.last().unwrap_or(&f64::NAN),
            *ns.first().unwrap_or(&f64::NAN),
        ]
        .map(|ns| 1e9 / ns);
        println!("{label:<7}{median:>10.0} messages/s (rounds {slowest:.0} to {fastest:.0})");
    }
    // Box's ns per message over pooled's: pooled's throughput over Box's, per round.
    let ratio = paired(&boxed, &pooled, quiet).unwrap_or(f64::NAN);
    println!("pooled/Box throughput, median of paired ratios: {ratio:.3}");
    if let Some(load) = load_average() {
        let before = load_before.as_deref().unwrap_or("?");
        println!("Load average before/after: {before} / {load}.");
    }
}
