//! A trading pipeline on pooled objects: the **feed** sends each `Handle<Quote>` to the
//! **strategy** over a channel (a handle moves between threads like a `Box`); the strategy lends
//! each `Order` as a `u64` token (`Handle::into_raw`) through a ring of plain `u64`s, as through
//! shared memory or FFI; **execution** redeems it with the checked `Order::redeem` and sends a
//! `Handle<Fill>` to the main thread, which books it. At the end: each stage's latency and every
//! pool's report. The stages poll, yielding between polls, to share a small machine.
//!
//! ```sh
//! cargo run --release --example order_pipeline                  # 500,000 quotes at 200,000/s
//! cargo run --release --example order_pipeline -- --rate max --report memory.json  # unpaced
//! cargo run --release --example order_pipeline -- --leak-every 50 --leak-window 2 --messages 2000000
//! cargo run --release --features metrics --example order_pipeline -- --prometheus 127.0.0.1:9100
//! ```

use std::error::Error;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError};
use std::sync::LazyLock;
use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use tally_pool::stats::{self, LeakConfig};
use tally_pool::{arena, Handle, PoolError, Pooled, RawHandle};

const INSTRUMENTS: usize = 16;
const SLOTS: usize = 1024; // in each channel, and in the ring of order tokens
const SIGNAL: i64 = 24 * 16; // how far (in 1/16 ticks) a mid must stray from its average to trade
const REDELIVER_EVERY: u64 = 1_000; // the ring sends 1 token in N twice (at-least-once)
const USAGE: &str = "usage: order_pipeline [--messages N] [--rate N | --rate max] \
                     [--report FILE] [--prometheus ADDR] [--leak-every N] [--leak-window SECS]";

// `capacity` values are mapped up front, so the hot path never waits on the OS; `max_capacity`
// bounds what a leak can take: past it, acquires fail with `PoolError::Exhausted`.
#[derive(Pooled, Default)]
#[pooled(capacity = 4096, max_capacity = 65_536, name = "quotes")]
struct Quote {
    instrument: usize,
    bid: i64,
    ask: i64,
    size: i64,
    sent_ns: u64, // when the feed sent it, in ns since the start
}

// Orders are lent to code that sees only a `u64`: a canary after each block catches a write
// past its end when the order is released, for 8 bytes a block and one CAS a release.
#[derive(Pooled)]
#[pooled(capacity = 4096, max_capacity = 65_536, name = "orders")]
#[pooled(guard = "canary")]
struct Order {
    qty: i64, // shares to buy (positive) or sell (negative)
    price: i64,
    quote_ns: u64, // the `sent_ns` of the quote behind it
    sent_ns: u64,  // when the strategy sent it
}

#[derive(Pooled)]
#[pooled(capacity = 4096, max_capacity = 65_536, name = "fills")]
struct Fill {
    qty: i64,
    price: i64,
}

/// Receives by polling: a parked thread takes tens of µs to wake, a polling one a few.
fn poll<T>(channel: &Receiver<T>) -> Option<T> {
    loop {
        match channel.try_recv() {
            Err(TryRecvError::Empty) => thread::yield_now(),
            received => return received.ok(), // a value, or `None`: the sender is gone
        }
    }
}

/// Nanoseconds since the start: the stamps that stages on different threads compare.
fn now_ns() -> u64 {
    static START: LazyLock<Instant> = LazyLock::new(Instant::now);
    u64::try_from(START.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Market data: `messages` quotes from a random walk, `rate` a second (`None`: unpaced).
fn feed(
    messages: u64,
    rate: Option<f64>,
    out: SyncSender<Handle<Quote>>,
    bar: &ProgressBar,
) -> Result<(), PoolError> {
    let (mut rng, mut mid, begun) = (0x9e37_79b9_7f4a_7c15_u64, 10_000_i64, now_ns());
    for seq in 0..messages {
        if let Some(rate) = rate {
            // Sleep until this quote is due; the quotes due meanwhile go out as a burst.
            let due = begun + (seq as f64 * 1e9 / rate) as u64;
            thread::sleep(Duration::from_nanos(due.saturating_sub(now_ns())));
        }
        rng ^= rng << 13; // xorshift64
        rng ^= rng >> 7;
        rng ^= rng << 17;
        mid = (mid + (rng % 5) as i64 - 2).clamp(1_000, 1_000_000);
        let mut quote = Quote::acquire()?;
        quote.instrument = (rng >> 8) as usize % INSTRUMENTS;
        quote.bid = mid + 1_000 * quote.instrument as i64 - 1;
        (quote.ask, quote.size) = (quote.bid + 2, 100 * (1 + (rng >> 16) as i64 % 10));
        quote.sent_ns = now_ns();
        if out.send(quote).is_err() {
            break; // the strategy stopped (main reports why); the quote is released here
        }
        if seq % 4096 == 0 {
            bar.set_position(seq); // the bar reads the clock: not at every quote
        }
    }
    Ok(())
}

/// Strategy: trades when a mid strays from its moving average. Returns the orders sent.
fn strategy(
    quotes: Receiver<Handle<Quote>>,
    tokens: SyncSender<u64>,
    latency: &mut Histogram<u64>,
) -> Result<u64, PoolError> {
    let (mut orders, mut averages) = (0, [0_i64; INSTRUMENTS]); // in 1/16 ticks; 0: none yet
    while let Some(quote) = poll(&quotes) {
        latency.saturating_record(now_ns().saturating_sub(quote.sent_ns));
        let Some(average) = averages.get_mut(quote.instrument) else {
            continue; // not an instrument this strategy trades
        };
        let mid = (quote.bid + quote.ask) * 8;
        *average = if *average == 0 { mid } else { *average }; // the instrument's first quote
        let deviation = mid - *average;
        *average += deviation / 16;
        let (qty, price) = match deviation {
            d if d <= -SIGNAL => (quote.size / 2, quote.ask),
            d if d >= SIGNAL => (-quote.size / 2, quote.bid),
            _ => continue, // the quote goes back to its pool here, from this thread
        };
        let order = Order::acquire_with(Order {
            qty,
            price,
            quote_ns: quote.sent_ns,
            sent_ns: now_ns(),
        })?;
        // The order stays in its pool, counted in `leaked_raw`, until the token is redeemed.
        let token = u64::from(Handle::into_raw(order));
        orders += 1;
        let copies = if orders % REDELIVER_EVERY == 0 { 2 } else { 1 };
        // `send` waits while the ring is full: back-pressure from execution.
        if (0..copies).any(|_| tokens.send(token).is_err()) {
            // Execution stopped: take the order back so that it returns to its pool.
            drop(Order::redeem(RawHandle::from(token)));
            break;
        }
    }
    Ok(orders)
}

/// Execution: redeems each token and fills the order. Returns the redelivered tokens refused.
fn execution(
    tokens: Receiver<u64>,
    fills: SyncSender<Handle<Fill>>,
    [route, tick_to_trade]: [&mut Histogram<u64>; 2],
) -> Result<u64, PoolError> {
    let mut redelivered = 0;
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
        let now = now_ns();
        route.saturating_record(now.saturating_sub(order.sent_ns));
        tick_to_trade.saturating_record(now.saturating_sub(order.quote_ns));
        let (qty, price) = (order.qty, order.price);
        drop(order); // the order goes back to its pool here, from this thread
        let fill = Fill::acquire_with(Fill { qty, price })?;
        if fills.send(fill).is_err() {
            break; // main stopped reading
        }
    }
    Ok(redelivered)
}

/// Books the fills, each going back to its pool here, but one in `leak_every` (0: none), which
/// it forgets on purpose; returns (fills, shares, net cash). It wakes at most once a
/// millisecond, for a batch: waking for each fill would take a core.
fn book(fills: Receiver<Handle<Fill>>, leak_every: u64) -> (u64, i64, i64) {
    let (mut count, mut shares, mut cash) = (0, 0, 0);
    while let Ok(first) = fills.recv() {
        // The batch is gathered in this thread's scratch arena: one pointer bump a fill, and
        // the memory is reused by the next batch instead of freed (`arena` module docs).
        arena::scratch(|bump| {
            let mut batch = arena::bumpalo::collections::Vec::new_in(bump);
            batch.extend(std::iter::once(first).chain(fills.try_iter()));
            for fill in batch {
                (count, shares) = (count + 1, shares + fill.qty.abs());
                cash -= fill.qty * fill.price;
                if leak_every != 0 && count % leak_every == 0 {
                    std::mem::forget(fill); // a leak: the report names the line that acquired it
                }
            }
        });
        thread::sleep(Duration::from_millis(1));
    }
    (count, shares, cash)
}

/// Values of `T` still out: held by a handle, or lent as a token and not redeemed.
fn out<T: Pooled>() -> u64 {
    T::pool().stats().live_blocks + T::pool().leaked_raw()
}

fn main() -> Result<(), Box<dyn Error>> {
    let (mut messages, mut rate, mut leak_every, mut leak_window) = (500_000, Some(2e5), 0, 2);
    let (mut report_to, mut prometheus) = (None, None);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_default();
        let number = || match value.replace('_', "").parse::<u64>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("{flag} `{value}`: not a positive number; {USAGE}")),
        };
        match flag.as_str() {
            "--messages" => messages = number()?,
            "--rate" if value == "max" => rate = None,
            "--rate" => rate = Some(number()? as f64),
            "--leak-every" => leak_every = number()?,
            "--leak-window" => leak_window = number()?,
            "--report" => report_to = Some(value),
            "--prometheus" => prometheus = Some(value),
            _ => return Err(format!("unknown argument `{flag}`; {USAGE}").into()),
        }
    }
    let window = Duration::from_secs(leak_window);
    if leak_every != 0 {
        // Remember where 1 fill in 16 was acquired. Fills are small: suspect a leak from
        // 4 KiB of growth over the window, instead of the default 1 MiB.
        Fill::pool().track_sites(16);
        stats::configure_leaks(LeakConfig::default().window(window).min_growth_bytes(4096));
    }
    if let Some(addr) = &prometheus {
        #[cfg(feature = "metrics")]
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .with_http_listener(addr.parse::<std::net::SocketAddr>()?)
            .install()?;
        #[cfg(not(feature = "metrics"))]
        return Err(format!("--prometheus {addr} needs `--features metrics`").into());
    }
    // The sampler feeds the leak detector and the Prometheus series.
    let sampling = leak_every != 0 || prometheus.is_some();
    let sampler = sampling.then(|| stats::start_sampler(window / 20));
    let sampler = sampler.transpose()?; // an error if the sampler thread cannot start

    let pace = rate.map_or("unpaced".into(), |r| format!("{r:.0} quotes/s"));
    println!("order_pipeline: {messages} quotes over {INSTRUMENTS} instruments, {pace}");
    let style = ProgressStyle::with_template("{bar:40} {human_pos}/{human_len} quotes")?;
    let bar = &ProgressBar::new(messages).with_style(style); // drawn only on a terminal
    let (quote_tx, quote_rx) = sync_channel(SLOTS);
    // Only `u64`s cross here, as they would through shared memory or a C callback.
    let (token_tx, token_rx) = sync_channel::<u64>(SLOTS);
    let (fill_tx, fill_rx) = sync_channel(SLOTS);
    // Latencies in ns, from 1 ns to 60 s with three significant digits.
    let histogram = || Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3);
    let mut latencies = [histogram()?, histogram()?, histogram()?];

    let start = Instant::now();
    let [to_strategy, to_execution, tick_to_trade] = &mut latencies;
    let outcome = thread::scope(|s| -> Result<_, Box<dyn Error>> {
        // Consumers first, so that they are running when the first quote comes.
        let executor = s.spawn(move || execution(token_rx, fill_tx, [to_execution, tick_to_trade]));
        let strategist = s.spawn(move || strategy(quote_rx, token_tx, to_strategy));
        let feeder = s.spawn(move || feed(messages, rate, quote_tx, bar));
        let book = book(fill_rx, leak_every);
        let panicked = |_| "a pipeline thread panicked";
        feeder.join().map_err(panicked)??;
        let orders = strategist.join().map_err(panicked)??;
        Ok((orders, executor.join().map_err(panicked)??, book))
    });
    let (orders, redelivered, (fills, shares, cash)) = outcome?;
    let secs = start.elapsed().as_secs_f64();
    bar.finish_and_clear();

    println!("{secs:.2} s, {:.0} quotes/s", messages as f64 / secs);
    println!("{orders} orders, {fills} fills: {shares} shares, net cash {cash}");
    println!("{redelivered} redelivered order tokens refused as stale");
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
    if let Some(path) = &report_to {
        std::fs::write(path, report.to_json())?;
    }
    // Every value is back in its pool and no order token is out, but the fills forgotten.
    let forgotten = fills.checked_div(leak_every).unwrap_or(0);
    let out = [out::<Quote>(), out::<Order>(), out::<Fill>()];
    if out != [0, 0, forgotten] {
        return Err(format!("quotes, orders and fills out after the run: {out:?}").into());
    }
    Ok(())
}
