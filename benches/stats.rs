//! Statistics (`cargo bench --bench stats`; `-- --quick` for short runs; `cargo test
//! --benches` runs one tiny pass), printed as medians, ratios and verdicts:
//! `stats::report()` with 100 typed pools (< 1 ms); one `stats::sample()` with them, its
//! history covering the leak window so that it also judges it (< 200 µs); typed W1 and W3 (a
//! producer acquiring, a consumer releasing through a queue) with the sampler every 10 ms,
//! 100 times its usual rate, against none (within 2 %); W1 on a pool sampling one acquire in
//! 1,024 against one that tracks nothing (within 5 %). Rounds alternate; W1 and the
//! statistics calls are timed in thread CPU time, W3 in wall time.

use std::hint::black_box;
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use tally_bench::stats::{alternate, median};
use tally_bench::targets::verdict;
use tally_bench::{Mode, OrDie};
use tally_pool::stats::{self, LeakConfig};
use tally_pool::{Handle, Pool, PoolConfig, Pooled};

/// The 64-byte value of W1 and W3, and the same in a pool sampling one call site in 1,024.
#[derive(Pooled, Default)]
#[pooled(per_node = false)]
#[allow(dead_code)] // written, never read: its 64 bytes are the point
struct Plain([u64; 8]);

#[derive(Pooled, Default)]
#[pooled(per_node = false, track_sites = 1024)]
#[allow(dead_code)] // written, never read: its 64 bytes are the point
struct Tracked([u64; 8]);

/// The calling thread's CPU time in nanoseconds: what this thread spends, however many
/// other processes share the cores.
fn cpu_ns() -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid `timespec` to write; the clock id is one Linux has.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    t.tv_sec as f64 * 1e9 + t.tv_nsec as f64
}

/// The median of `rounds` CPU timings of `f`, each after `pause`, in microseconds.
fn median_us(rounds: usize, pause: Duration, mut f: impl FnMut()) -> f64 {
    let mut time = || {
        std::thread::sleep(pause);
        let t = cpu_ns();
        f();
        (cpu_ns() - t) / 1000.0
    };
    median(&(0..rounds).map(|_| time()).collect::<Vec<_>>())
}

/// W1: `n` acquires of `make(i)`, each released at once; CPU nanoseconds per pair.
fn w1<T: Pooled>(n: u64, make: fn(u64) -> T) -> f64 {
    let t = cpu_ns();
    for i in 0..n {
        let h = T::acquire_with(make(i))
            .map_err(|e| e.error)
            .or_die("acquire");
        black_box(&*h);
        drop(h);
    }
    (cpu_ns() - t) / n as f64
}

/// W3: this thread acquires `n` values and hands them through a queue to a consumer
/// thread, which releases them; wall nanoseconds per value (both wait by yielding).
fn w3(n: u64) -> f64 {
    let queue: ArrayQueue<Handle<Plain>> = ArrayQueue::new(1024);
    let t = Instant::now();
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut left = n;
            while left > 0 {
                match queue.pop() {
                    Some(h) => {
                        drop(h);
                        left -= 1;
                    }
                    None => std::thread::yield_now(),
                }
            }
        });
        for i in 0..n {
            let mut h = Plain::acquire_with(Plain([i; 8]))
                .map_err(|e| e.error)
                .or_die("acquire");
            while let Err(back) = queue.push(h) {
                h = back;
                std::thread::yield_now();
            }
        }
    });
    t.elapsed().as_nanos() as f64 / n as f64
}

/// A run with the sampler ticking every 10 ms.
fn sampled(run: impl FnOnce() -> f64) -> f64 {
    let _sampler = stats::start_sampler(Duration::from_millis(10)).or_die("start_sampler");
    run()
}

fn main() {
    let Some(mode) = Mode::start() else { return };
    let (rounds, n) = mode.pick([(31, 4_000_000), (11, 1_000_000), (3, 10_000)]);
    println!("stats benches ({} mode)", mode.name());
    // The measured pools first: pools past the 256th slot take no fast path.
    let _ = (Plain::pool(), Tracked::pool());

    // 100 typed pools with ten live values each, as a service with many types has.
    let config = |i| PoolConfig::new(format!("bench-stats-{i}")).capacity(64);
    let pools: Vec<&'static Pool<[u64; 8]>> = (0..100)
        .map(|i| Pool::new(config(i)).or_die("pool"))
        .collect();
    let held = pools
        .iter()
        .flat_map(|p| (0..10u64).map(|i| p.acquire_with([i; 8]).ok()));
    let _held: Vec<_> = held.collect();
    let report = median_us(rounds * 10, Duration::ZERO, || {
        drop(black_box(stats::report()))
    });
    let met = verdict(report < 1000.0);
    println!("report() with 100 pools: median {report:.1} µs (target < 1000 µs: {met})");
    let warming = median_us(rounds * 10, Duration::ZERO, stats::sample);
    // Then with a history that covers the leak window, each step 3 ms after the last so
    // that it adds a sample (they are spaced window / 480) and judges the window.
    stats::configure_leaks(LeakConfig::default().window(Duration::from_secs(1)));
    median_us(250, Duration::from_millis(5), stats::sample); // 1.25 s of history
    let sample = median_us(rounds * 10, Duration::from_millis(3), stats::sample);
    println!(
        "sample() with 100 pools: median {warming:.1} µs while the history \
         warms up, {sample:.1} µs judging a full window (target < 200 µs: {})",
        verdict(sample < 200.0)
    );

    let make = |i: u64| Plain([i; 8]);
    let _ = (w1(n / 10, make), w3(n / 10)); // warms the pools and caches
    let one = alternate(rounds, || w1(n, make), || sampled(|| w1(n, make)));
    let three = alternate(rounds, || w3(n / 4), || sampled(|| w3(n / 4)));
    for (w, [off, on, ratio]) in [("W1 (CPU)", one), ("W3 (wall)", three)] {
        println!(
            "typed {w}: {off:.2} ns without the sampler, {on:.2} ns with it every 10 ms: \
             ratio {ratio:.3} (target <= 1.02: {})",
            verdict(ratio <= 1.02)
        );
    }

    let tracked = |i: u64| Tracked([i; 8]);
    let _ = w1(n / 10, tracked);
    let [off, on, ratio] = alternate(rounds, || w1(n, make), || w1(n, tracked));
    println!(
        "typed W1: {off:.2} ns with track_sites off, {on:.2} ns with 1 in {}: ratio {ratio:.3} \
         (target <= 1.05: {})",
        Tracked::pool().site_sampling(),
        verdict(ratio <= 1.05)
    );
}
