//! Memory pressure: `cargo bench --bench pressure` (`-- --quick` for short runs) prints
//! medians, ratios and whether each target is met.

use std::hint::black_box;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tally_bench::process::{watch, Watched};
use tally_bench::stats::{median, p99, quantile};
use tally_bench::targets::verdict;
use tally_bench::{fatal, timer, Mode, OrDie};
use tally_pool::pressure::{self, PressureConfig, PressureLevel, PressureMonitor};
use tally_pool::stats::Urgency;
use tally_pool::{Handle, Pool, PoolConfig};

/// 4 KiB, so acquires map often; 64 bytes, the size of W1 and W6.
type Page = [[u64; 32]; 16];
type Small = [u64; 8];

fn pool<T: Default>(config: PoolConfig) -> &'static Pool<T> {
    Pool::new(config).or_die("pool")
}

/// `rounds` mapping acquires that cross 60 % of a budget set just above what is mapped:
/// the level right after each, a watcher thread's time from the crossing (mapped bytes)
/// becoming visible to the raised level, and the acquire against one with no budget.
fn crossing(rounds: usize) {
    let config = PoolConfig::new("bench-crossing").capacity(1);
    let pool: &'static Pool<Page> = pool(config.max_capacity(1 << 24));
    let mut held: Vec<Handle<Page>> = Vec::with_capacity(rounds * 600);
    let mapping_acquire = |held: &mut Vec<Handle<Page>>| loop {
        let before = pressure::mapped_bytes();
        let t = Instant::now();
        let h = pool.acquire();
        let level = pressure::level();
        let ns = t.elapsed().as_nanos() as f64;
        held.push(h.or_die("acquire"));
        if pressure::mapped_bytes() > before {
            return (ns, level);
        }
    };
    let watch = Arc::new(AtomicU64::new(u64::MAX)); // the mapped bytes that cross; 0: stop
    let gaps: Arc<Mutex<Vec<f64>>> = Arc::default();
    let (w, g) = (Arc::clone(&watch), Arc::clone(&gaps));
    let watcher = std::thread::spawn(move || loop {
        match w.load(Ordering::Acquire) {
            0 => return,
            at if at != u64::MAX && pressure::mapped_bytes() >= at => {
                let seen = Instant::now();
                while pressure::level() < PressureLevel::Moderate && seen.elapsed().as_secs() < 1 {}
                let gap = seen.elapsed().as_nanos() as f64;
                g.lock().or_die("gaps").push(gap);
                w.store(u64::MAX, Ordering::Release);
            }
            _ => std::hint::spin_loop(),
        }
    });
    let (mut plain, mut crossed) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        plain.push(mapping_acquire(&mut held).0);
        let budget = (pressure::mapped_bytes() + 1) * 5 / 3 + 1;
        let config = PressureConfig::default().budget(budget).grow_ahead(false);
        let config = config.interval(Duration::from_secs(3600));
        let monitor = PressureMonitor::start(config).or_die("start");
        watch.store((budget as f64 * 0.6) as u64, Ordering::Release);
        let (ns, level) = mapping_acquire(&mut held);
        if level < PressureLevel::Moderate {
            fatal!("the crossing acquire left the level {level:?}");
        }
        crossed.push(ns);
        while watch.load(Ordering::Acquire) != u64::MAX {
            std::thread::yield_now();
        }
        drop(monitor);
    }
    watch.store(0, Ordering::Release);
    watcher.join().or_die("watcher");
    let gaps = gaps.lock().or_die("gaps").clone();
    let (gap, gap99) = (median(&gaps) / 1e3, p99(&gaps) / 1e3);
    let (crossed, plain) = (median(&crossed) / 1e3, median(&plain) / 1e3);
    println!(
        "crossing: level raised inside the crossing acquire in {rounds} of {rounds} rounds; \
         crossing to raised level, seen from another thread: median {gap:.3} µs, p99 {gap99:.3} \
         µs; < 10 µs at p99: {}; the crossing acquire (it maps a chunk) median {crossed:.1} µs \
         against {plain:.1} µs with no budget (ratio {:.2})",
        verdict(gap99 < 10.0),
        crossed / plain
    );
}

/// A copy of the v2 fixture whose usage crosses 80 % (and goes back), `rounds` times.
fn fixture(rounds: usize) {
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pressure/v2");
    let root = std::env::temp_dir().join(format!("tally-pressure-bench-{}", std::process::id()));
    let cp = Command::new("cp").arg("-r").arg(&from).arg(&root).status();
    if !cp.is_ok_and(|s| s.success()) {
        fatal!("cp -r: failed");
    }
    let current = root.join("sys/fs/cgroup/app.slice/memory.current");
    let set = |share: f64| {
        let bytes = (share * f64::from(1u32 << 30)) as u64 + (100 << 20);
        let tmp = current.with_extension("tmp");
        std::fs::write(&tmp, format!("{bytes}\n")).or_die("write");
        std::fs::rename(&tmp, &current).or_die("rename");
    };
    set(0.30);
    let interval = Duration::from_millis(10);
    let config = PressureConfig::default().root(&root).interval(interval);
    let config = config.horizon(Duration::ZERO).min_dwell(Duration::ZERO);
    let monitor = PressureMonitor::start(config).or_die("start");
    let mut waits = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        std::thread::sleep(Duration::from_millis(7)); // a phase unrelated to the ticks
        let written = Instant::now();
        set(0.85);
        while monitor.level() < PressureLevel::High {
            std::thread::sleep(Duration::from_micros(100));
        }
        waits.push(written.elapsed().as_secs_f64() * 1e3);
        set(0.30);
        while monitor.level() != PressureLevel::Normal {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let worst = waits.iter().copied().fold(0.0, f64::max);
    println!(
        "fixture: cgroup v2 crossing to High: median {:.2} ms, worst {worst:.2} ms of {rounds} \
         rounds (interval 10 ms, polled every 0.1 ms); within two intervals: {}",
        median(&waits),
        verdict(worst <= 2.0 * interval.as_secs_f64() * 1e3)
    );
    drop(monitor);
    let _ = std::fs::remove_dir_all(root);
}

/// One tick with 100 pools registered, and the monitor's CPU at defaults, over `run`: with
/// every pool idle, then with one more pool busy, so that growth ahead visits them all.
fn ticks_and_cpu(run: Duration) {
    for i in 0..100 {
        let pool: &'static Pool<Small> = pool(PoolConfig::new(format!("bench-tick-{i}")));
        drop(pool.acquire().or_die("acquire"));
    }
    let monitor = PressureMonitor::start(PressureConfig::default()).or_die("start");
    // Idle: no slow path for the idle time.
    std::thread::sleep(Urgency::IDLE_AFTER + Duration::from_millis(100));
    let report = |what: &str, (ticks, cpu, busy, round): Watched| {
        let (med, p99_us) = (median(&ticks) / 1e3, p99(&ticks) / 1e3);
        println!(
            "tick: one tick with {what}: median {med:.1} µs, p99 {p99_us:.1} µs over {} \
             ticks; < 50 µs: {}",
            ticks.len(),
            verdict(med < 50.0)
        );
        println!(
            "cpu: monitor thread at defaults with {what}, over {:.1} s: {cpu:.2} % of a core \
             by /proc (schedstat), {busy:.2} % inside ticks by its own clock; < 1 %: {}",
            run.as_secs_f64(),
            verdict(cpu < 1.0)
        );
        if let Some(r) = round {
            println!(
                "  (a reclamation round ran inside that window: {} bytes back in {:.1} ms)",
                r.reclaimed_bytes,
                r.duration.as_secs_f64() * 1e3
            );
        }
    };
    report("100 idle pools", watch(&monitor, run));
    // One more pool, busy: a thread takes more values than a thread's cache holds and
    // gives them back, every millisecond.
    let pool: &'static Pool<Small> = pool(PoolConfig::new("bench-tick-busy"));
    let stop = AtomicU64::new(0);
    let watched = std::thread::scope(|s| {
        s.spawn(|| {
            while stop.load(Ordering::Relaxed) == 0 {
                let held: Vec<Handle<Small>> =
                    (0..256).map(|_| pool.acquire().or_die("busy")).collect();
                drop(held);
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        std::thread::sleep(Duration::from_millis(50));
        let watched = watch(&monitor, run);
        stop.store(1, Ordering::Relaxed);
        watched
    });
    report("101 pools, one of them busy", watched);
    drop(monitor);
}

/// ns per acquire + release of `n` on one pool, on this thread.
fn w1(pool: &'static Pool<Small>, n: u64) -> f64 {
    let t = Instant::now();
    for i in 0..n {
        black_box(&mut *pool.acquire().or_die("acquire"))[0] = i;
    }
    t.elapsed().as_nanos() as f64 / n as f64
}

/// W1 with no monitor and with a monitor at High asking for memory every 10 ms (idle
/// after 10 ms), in alternating rounds.
fn w1_reclaiming(rounds: usize, n: u64) {
    let pool: &'static Pool<Small> = pool(PoolConfig::new("bench-w1").capacity(4096));
    w1(pool, n);
    let (mut without, mut with) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        without.push(w1(pool, n));
        let budget = pressure::mapped_bytes() * 100 / 85; // 85 %: High
        let often = Duration::from_millis(10);
        let config = PressureConfig::default().budget(budget);
        let config = config.reclaim_every(often).idle_after(often);
        let monitor = PressureMonitor::start(config).or_die("start");
        with.push(w1(pool, n));
        let level = monitor.level();
        if level < PressureLevel::High {
            fatal!("the monitor is not at High: {level:?}");
        }
        drop(monitor);
    }
    let ratios: Vec<f64> = with.iter().zip(&without).map(|(a, b)| a / b).collect();
    let (with, without, ratio) = (median(&with), median(&without), median(&ratios));
    println!(
        "W1 while reclaiming: {with:.2} ns with the monitor at High, {without:.2} ns without; \
         median ratio {ratio:.3}; at most 1.10: {}",
        verdict(ratio <= 1.10)
    );
}

/// W6 on a fresh growing pool: p99.9 and p99.99 of single acquires in ns, and the share of
/// the pool's chunks that growth ahead of demand mapped.
struct W6(f64, f64, f64);

/// [`W6`] of `n` single acquires, all kept live.
fn w6(name: &str, n: usize, ns_per_tick: f64) -> W6 {
    let max = n.next_power_of_two() * 2;
    let pool: &'static Pool<Small> = pool(PoolConfig::new(name).capacity(64).max_capacity(max));
    let mut held = Vec::with_capacity(n);
    let mut ticks = vec![1u64; n];
    for slot in ticks.iter_mut() {
        let start = timer::now();
        let h = pool.acquire();
        *slot = timer::now().wrapping_sub(start);
        held.push(h.or_die("acquire"));
    }
    ticks.sort_unstable();
    let s = pool.stats();
    let at = |q| quantile(&ticks, q) as f64 * ns_per_tick;
    W6(
        at(0.999),
        at(0.9999),
        s.expansions_ahead as f64 / s.expansions.max(1) as f64,
    )
}

fn w6_both(rounds: usize, n: usize) {
    let ns_per_tick = timer::calibrate(Duration::from_millis(50));
    let (mut without, mut with) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        without.push(w6(&format!("bench-w6-off-{round}"), n, ns_per_tick));
        let monitor = PressureMonitor::start(PressureConfig::default()).or_die("start");
        with.push(w6(&format!("bench-w6-on-{round}"), n, ns_per_tick));
        drop(monitor);
    }
    let med = |v: &[W6], f: fn(&W6) -> f64| median(&v.iter().map(f).collect::<Vec<_>>());
    let (on, off) = (med(&with, |w| w.0), med(&without, |w| w.0));
    println!(
        "W6: p99.9 of one acquire while the pool grows ({n} acquires): {on:.0} ns with the \
         monitor, {off:.0} ns without (ratio {:.2}); < 100 ns with it: {}",
        on / off,
        verdict(on < 100.0)
    );
    println!(
        "W6: p99.99 {:.0} ns with the monitor, {:.0} ns without; chunks mapped ahead of \
         demand with the monitor: {:.0} %",
        med(&with, |w| w.1),
        med(&without, |w| w.1),
        100.0 * med(&with, |w| w.2)
    );
}

fn main() {
    let Some(mode) = Mode::start() else { return };
    let (rounds, n, run) = mode.pick([
        (200, 2_000_000, Duration::from_secs(5)),
        (40, 500_000, Duration::from_secs(2)),
        (3, 10_000, Duration::from_millis(100)),
    ]);
    println!("pressure benches ({} mode)", mode.name());
    // First, while the process holds no other memory: after `crossing`, the monitor's
    // housekeeping round would give back that pool's hundreds of megabytes inside the
    // windows that measure the monitor's own cost.
    ticks_and_cpu(run);
    crossing(rounds);
    fixture(rounds.min(40));
    w1_reclaiming(rounds.min(20), n as u64);
    w6_both(rounds.min(10), n / 2);
}
