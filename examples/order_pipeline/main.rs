//! A trading pipeline on pooled objects: market data -> strategy -> execution.
//!
//! * The **feed** thread acquires a `Quote` at a steady `--rate` and sends the `Handle<Quote>`
//!   to the strategy over a channel: a handle moves between threads like a `Box`.
//! * The **strategy** thread reads each quote (which goes back to its pool from there). When a
//!   price strays from its average it acquires an `Order` and lends it out as a `u64` token
//!   (`Handle::into_raw`) through a ring of plain `u64`s, a stand-in for shared memory or FFI.
//! * The **execution** thread turns each token back into a handle with the checked, safe
//!   `Order::redeem`, applies a risk limit and sends a `Handle<Fill>` to the main thread.
//!
//! It prints each stage's latency and the memory report of every pool (`stats::report()`). The
//! stages poll, yielding the core between polls, so that they share a small machine; on a real
//! one, pin each to its own core.
//!
//! ```sh
//! cargo run --release --example order_pipeline                  # 500,000 quotes at 200,000/s
//! cargo run --release --example order_pipeline -- --messages 200000 --rate max    # unpaced
//! cargo run --release --example order_pipeline -- --report memory.json  # the report as JSON too
//! cargo run --release --example order_pipeline -- --leak-every 50 --leak-window 2 --messages 2000000
//! cargo run --release --features metrics --example order_pipeline -- --prometheus 127.0.0.1:9100
//! ```

use std::error::Error;
use std::sync::mpsc::{sync_channel, Receiver, SendError, SyncSender, TryRecvError};
use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use tally_pool::{arena, stats, Handle, PoolError, Pooled, RawHandle};

mod cli; // the command line, the statistics it turns on, and the checks at the end
use cli::{check_pool, observe, parse_args};

const INSTRUMENTS: usize = 16;
/// Slots in each channel, and in the ring of order tokens.
const SLOTS: usize = 1024;
/// How far (in 1/16 ticks) a mid must stray from its average for the strategy to trade.
const SIGNAL: i64 = 24 * 16;
/// The largest position, long or short, that execution lets an instrument reach.
const POSITION_LIMIT: i64 = 20_000;
/// Every this many orders the ring delivers a token twice, as an at-least-once transport may.
const REDELIVER_EVERY: u64 = 1_000;

// `capacity` values are mapped up front, so the hot path never waits on the OS; `max_capacity`
// bounds what a runaway producer can take: past it, acquires fail with `PoolError::Exhausted`.
#[derive(Pooled, Default, Debug)]
#[pooled(capacity = 4096, max_capacity = 65_536, name = "quotes")]
struct Quote {
    instrument: usize,
    bid: i64,
    ask: i64,
    size: i64,
    /// When the feed sent it, in ns since the start.
    sent_ns: u64,
}

#[derive(Pooled, Default, Debug)]
#[pooled(capacity = 4096, max_capacity = 65_536, name = "orders")]
// Orders are lent to code that sees only a `u64`: a canary after each block catches a write past
// its end when the order is released, for 8 bytes a block and one CAS a release.
#[pooled(guard = "canary")]
struct Order {
    instrument: usize,
    /// Shares to buy (positive) or sell (negative).
    qty: i64,
    price: i64,
    /// The `sent_ns` of the quote behind it, and when the strategy sent the order.
    quote_ns: u64,
    sent_ns: u64,
}

#[derive(Pooled, Default, Debug)]
#[pooled(capacity = 4096, max_capacity = 65_536, name = "fills")]
struct Fill {
    qty: i64,
    price: i64,
}

/// Moves `value` into its pool, waiting while the pool is at its cap: the threads downstream
/// release values as they go, so exhaustion here is back-pressure, not a failure. The pools
/// record the caller's line as the acquire site (`track_sites`), as they do for `acquire_with`.
#[track_caller]
fn acquire_waiting<T: Pooled>(mut value: T) -> Result<Handle<T>, PoolError> {
    loop {
        match T::acquire_with(value) {
            Err(e) if matches!(e.error, PoolError::Exhausted { .. }) => value = e.value,
            result => return result.map_err(|e| e.error),
        }
        thread::yield_now();
    }
}

/// Receives by polling: a parked thread takes tens of µs to wake, a polling one a few.
fn poll<T>(channel: &Receiver<T>) -> Option<T> {
    loop {
        match channel.try_recv() {
            Ok(value) => return Some(value),
            Err(TryRecvError::Empty) => thread::yield_now(),
            Err(TryRecvError::Disconnected) => return None,
        }
    }
}

/// Nanoseconds since `start`: the stamps that stages on different threads compare.
fn ns_since(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Market data: `messages` quotes from a random walk, `rate` a second (`None`: unpaced).
fn feed(
    start: Instant,
    (messages, rate): (u64, Option<f64>),
    quotes: SyncSender<Handle<Quote>>,
    bar: &ProgressBar,
) -> Result<(), PoolError> {
    let (mut rng, mut mid) = (0x9e37_79b9_7f4a_7c15_u64, 10_000_i64);
    for seq in 0..messages {
        if let Some(rate) = rate {
            // Sleep until this quote is due; the quotes due meanwhile go out as a burst.
            let due = (seq as f64 * 1e9 / rate) as u64;
            thread::sleep(Duration::from_nanos(due.saturating_sub(ns_since(start))));
        }
        rng ^= rng << 13; // xorshift64
        rng ^= rng >> 7;
        rng ^= rng << 17;
        mid = (mid + (rng % 5) as i64 - 2).clamp(1_000, 1_000_000);
        let mut quote = acquire_waiting(Quote::default())?;
        quote.instrument = (rng >> 8) as usize % INSTRUMENTS;
        quote.bid = mid + 1_000 * quote.instrument as i64 - 1;
        quote.ask = quote.bid + 2;
        quote.size = 100 * (1 + (rng >> 16) as i64 % 10);
        quote.sent_ns = ns_since(start);
        if quotes.send(quote).is_err() {
            break; // the strategy stopped (main reports why); the quote is released here
        }
        if seq % 4096 == 0 {
            bar.set_position(seq);
        }
    }
    Ok(())
}

/// Strategy: trades when a mid strays from its moving average. Returns the orders sent.
fn strategy(
    start: Instant,
    quotes: Receiver<Handle<Quote>>,
    tokens: SyncSender<u64>,
    latency: &mut Histogram<u64>,
) -> Result<u64, PoolError> {
    let mut orders = 0;
    let mut averages = [0_i64; INSTRUMENTS]; // in 1/16 ticks; 0: no quote yet
    while let Some(quote) = poll(&quotes) {
        latency.saturating_record(ns_since(start).saturating_sub(quote.sent_ns));
        let Some(average) = averages.get_mut(quote.instrument) else {
            continue; // not an instrument this strategy trades
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
            _ => continue, // the quote goes back to its pool here, from this thread
        };
        let (instrument, quote_ns, sent_ns) = (quote.instrument, quote.sent_ns, ns_since(start));
        let order = acquire_waiting(Order {
            instrument,
            qty,
            price,
            quote_ns,
            sent_ns,
        })?;
        // The order stays in its pool, counted in `leaked_raw`, until the token is redeemed.
        let token = u64::from(Handle::into_raw(order));
        orders += 1;
        let copies = if orders % REDELIVER_EVERY == 0 { 2 } else { 1 };
        for _ in 0..copies {
            // `send` waits while the ring is full: back-pressure from execution.
            if let Err(SendError(token)) = tokens.send(token) {
                // Execution stopped: take the order back so that it returns to its pool.
                drop(Order::redeem(RawHandle::from(token)));
                return Ok(orders);
            }
        }
    }
    Ok(orders)
}

/// Execution: redeems each token, applies the position limit and fills what passes.
/// Returns the orders rejected and the redelivered tokens refused.
fn execution(
    start: Instant,
    tokens: Receiver<u64>,
    fills: SyncSender<Handle<Fill>>,
    (route, tick_to_trade): (&mut Histogram<u64>, &mut Histogram<u64>),
) -> Result<(u64, u64), PoolError> {
    let (mut rejected, mut redelivered) = (0, 0);
    let mut positions = [0_i64; INSTRUMENTS];
    while let Some(token) = poll(&tokens) {
        // The pool checks a token before it becomes a handle: a replayed, damaged or foreign
        // token is an error, never a second owner of an order.
        let order = match Order::redeem(RawHandle::from(token)) {
            Ok(order) => order,
            Err(PoolError::StaleHandle { .. }) => {
                redelivered += 1; // executed already: ignore the copy
                continue;
            }
            Err(e @ (PoolError::InvalidHandle { .. } | PoolError::WrongPool { .. })) => {
                eprintln!("execution: dropped a token: {e}");
                continue;
            }
            Err(e) => return Err(e),
        };
        let now = ns_since(start);
        route.saturating_record(now.saturating_sub(order.sent_ns));
        tick_to_trade.saturating_record(now.saturating_sub(order.quote_ns));
        let within_limit = |pos: &&mut i64| (**pos + order.qty).abs() <= POSITION_LIMIT;
        let Some(position) = positions.get_mut(order.instrument).filter(within_limit) else {
            rejected += 1;
            continue; // the order goes back to its pool here, from this thread
        };
        *position += order.qty;
        let (qty, price) = (order.qty, order.price);
        if fills.send(acquire_waiting(Fill { qty, price })?).is_err() {
            break; // main stopped reading
        }
    }
    Ok((rejected, redelivered))
}

/// Books the fills, each going back to its pool here, but one in `leak_every` (0: none), which
/// it forgets on purpose; returns (fills, shares, net cash). Main wakes at most once a
/// millisecond, for a batch: waking it for each fill would take a core.
fn book(fills: Receiver<Handle<Fill>>, leak_every: u64) -> (u64, i64, i64) {
    let mut book = (0, 0, 0);
    while let Ok(first) = fills.recv() {
        // The batch is gathered in this thread's scratch arena: one pointer bump a fill, and
        // the memory is reused by the next batch instead of freed (`arena` module docs).
        arena::scratch(|bump| {
            let mut batch = arena::bumpalo::collections::Vec::new_in(bump);
            batch.extend(std::iter::once(first).chain(fills.try_iter()));
            for fill in batch {
                book = (
                    book.0 + 1,
                    book.1 + fill.qty.abs(),
                    book.2 - fill.qty * fill.price,
                );
                if leak_every != 0 && book.0 % leak_every == 0 {
                    std::mem::forget(fill); // a leak: the report names the line that acquired it
                }
            }
        });
        thread::sleep(Duration::from_millis(1));
    }
    book
}

fn main() -> Result<(), Box<dyn Error>> {
    let o = parse_args()?;
    let (messages, rate) = (o.messages, o.rate);
    let sampler = observe(&o)?;
    let pace = rate.map_or("unpaced".into(), |r| format!("{r:.0} quotes/s"));
    println!("order_pipeline: {messages} quotes over {INSTRUMENTS} instruments, {pace}");
    let style = ProgressStyle::with_template("{bar:40} {human_pos}/{human_len} quotes")?;
    let bar = ProgressBar::new(messages).with_style(style); // drawn only on a terminal
    let (quote_tx, quote_rx) = sync_channel(SLOTS);
    // Only `u64`s cross here, as they would through shared memory or a C callback.
    let (token_tx, token_rx) = sync_channel::<u64>(SLOTS);
    let (fill_tx, fill_rx) = sync_channel::<Handle<Fill>>(SLOTS);
    // Latencies in ns, from 1 ns to 60 s with three significant digits.
    let histogram = || Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3);
    let mut latencies = [histogram()?, histogram()?, histogram()?];

    let start = Instant::now();
    let [to_strategy, to_execution, tick_to_trade] = &mut latencies;
    let outcome = thread::scope(|s| -> Result<_, Box<dyn Error>> {
        let (bar, routed) = (&bar, (to_execution, tick_to_trade));
        // Consumers first, so that they are running when the first quote comes.
        let executor = s.spawn(move || execution(start, token_rx, fill_tx, routed));
        let strategist = s.spawn(move || strategy(start, quote_rx, token_tx, to_strategy));
        let feeder = s.spawn(move || feed(start, (messages, rate), quote_tx, bar));
        let book = book(fill_rx, o.leak_every);
        let panicked = |_| "a pipeline thread panicked";
        feeder.join().map_err(panicked)??;
        let orders = strategist.join().map_err(panicked)??;
        Ok((orders, executor.join().map_err(panicked)??, book))
    });
    let (orders, (rejected, redelivered), (fills, shares, cash)) = outcome?;
    let secs = start.elapsed().as_secs_f64();
    bar.finish_and_clear();

    println!("{secs:.2} s, {:.0} quotes/s", messages as f64 / secs);
    println!("orders: {orders} sent, {rejected} rejected by risk, {fills} filled");
    println!("fills: {shares} shares, net cash {cash}");
    println!("tokens: {redelivered} redelivered copies refused as stale");
    println!("latency (µs)                p50      p99    p99.9      max");
    let stages = ["feed -> strategy", "strategy -> execution", "tick-to-trade"];
    for (stage, h) in stages.iter().zip(&latencies) {
        let [p50, p99, p999] = [0.5, 0.99, 0.999].map(|q| h.value_at_quantile(q) as f64 / 1e3);
        let max = h.max() as f64 / 1e3;
        println!("  {stage:<22}{p50:>8.1} {p99:>8.1} {p999:>8.1} {max:>8.1}");
    }
    drop(sampler); // stops the sampler; the report below reads the pools themselves
    let report = stats::report(); // every pool: memory classes, counters, leaks, health
    println!("{report}");
    if let Some(path) = &o.report {
        std::fs::write(path, report.to_json())?;
    }
    let forgotten = fills.checked_div(o.leak_every).unwrap_or(0);
    check_pool::<Quote>(0)?;
    check_pool::<Order>(0)?;
    check_pool::<Fill>(forgotten)
}
