//! Reclamation under pressure, end to end: a pool grown to 256 MiB whose values were all
//! released, then a budget that puts the process at High. Within a second the resident set
//! (`/proc/self/statm`) must fall by at least 80 % of the bytes the components said they
//! could give back, and the pool's reserve must stay. Also: a pool that is still busy is
//! left alone at High, and the monitor grows a busy pool ahead of demand, at its ticks
//! and between them.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tally_pool::pressure::{self, PressureConfig, PressureLevel, PressureMonitor};
use tally_pool::stats::{Source, Urgency};
use tally_pool::{Handle, Pool, PoolConfig};

/// A 4 KiB value with a `Default`.
type Page = [[u64; 32]; 16];

const MIB: u64 = 1 << 20;

/// One monitor per process: the tests of this file take turns.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Resident bytes of this process.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[test]
#[cfg_attr(miri, ignore = "maps and measures hundreds of mebibytes")]
fn at_high_rss_falls_by_most_of_the_reclaimable_bytes_within_a_second() {
    let _serial = serial();
    let values = (256 * MIB / 4096) as usize;
    let pool: &'static Pool<Page> = Pool::new(
        PoolConfig::new("pressure-rss")
            .capacity(256)
            .max_capacity(2 * values),
    )
    .unwrap();
    let mut held: Vec<Handle<Page>> = Vec::with_capacity(values);
    for _ in 0..values {
        held.push(pool.acquire().unwrap());
    }
    drop(held);
    // Idle for longer than `idle_after`: no slow path since the last release.
    let idle_after = Duration::from_millis(100);
    std::thread::sleep(3 * idle_after);
    let before = rss();
    let budget = pressure::mapped_bytes() * 100 / 85; // 85 %: High
    let started = Instant::now();
    let config = PressureConfig::default()
        .budget(budget)
        .idle_after(idle_after);
    let monitor = PressureMonitor::start(config).unwrap();
    assert_eq!(monitor.level(), PressureLevel::High);
    // The round of the first tick, at High.
    let round = monitor.last_reclamation().unwrap();
    assert_eq!(round.level, PressureLevel::High);
    let reclaimable = round.reclaimable_bytes;
    assert!(reclaimable >= 200 * MIB, "{round:?}");
    let want = reclaimable * 8 / 10;
    let deadline = started + Duration::from_secs(1);
    let mut fell = before.saturating_sub(rss());
    while fell < want && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
        fell = before.saturating_sub(rss());
    }
    let took = started.elapsed();
    println!(
        "rss {} MiB before; reclaimable {} MiB, reclaimed {} MiB in {:?} (first round); \
         rss fell {} MiB ({:.0} % of reclaimable) after {took:?}",
        before / MIB,
        reclaimable / MIB,
        round.reclaimed_bytes / MIB,
        round.duration,
        fell / MIB,
        fell as f64 / reclaimable as f64 * 100.0
    );
    assert!(
        fell >= want,
        "rss fell {fell} bytes of {reclaimable} reclaimable"
    );
    // The budget counts what reclamation gave back: the level falls once its dwell is over.
    let deadline = Instant::now() + Duration::from_secs(2);
    while monitor.level() >= PressureLevel::High && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        monitor.level() < PressureLevel::High,
        "still {:?} with {} bytes mapped of a {budget}-byte budget",
        monitor.level(),
        pressure::mapped_bytes()
    );
    // The reserve stays: a burst of `capacity` values after the quiet period maps nothing.
    drop(monitor);
    let mapped = pressure::mapped_bytes();
    let again: Vec<Handle<Page>> = (0..256).map(|_| pool.acquire().unwrap()).collect();
    assert_eq!(pressure::mapped_bytes(), mapped);
    drop(again);
}

#[test]
#[cfg_attr(miri, ignore = "runs the monitor thread")]
fn a_busy_pool_is_left_alone_at_high() {
    let _serial = serial();
    let pool: &'static Pool<Page> = Pool::new(
        PoolConfig::new("pressure-busy")
            .capacity(256)
            .max_capacity(1 << 16),
    )
    .unwrap();
    let held: Vec<Handle<Page>> = (0..4096).map(|_| pool.acquire().unwrap()).collect();
    drop(held);
    // Just used (a slow path a moment ago), with an idle time of an hour.
    let idle_after = Duration::from_secs(3600);
    // Every round also unmaps the large mappings the global allocator keeps (the earlier
    // tests' big vectors): unmapped now, so that the round below answers for the pool alone.
    tally_pool::alloc::TallyAlloc::new().trim();
    // A monitor started and stopped once, so that what starting one maps (its thread's
    // first memory from the global allocator) is mapped before the budget is set from
    // what is mapped: the level below then answers for the pool at 85 %, however little
    // else the process has mapped.
    drop(PressureMonitor::start(PressureConfig::default().idle_after(idle_after)).unwrap());
    let budget = pressure::mapped_bytes() * 100 / 85;
    let config = PressureConfig::default()
        .budget(budget)
        .idle_after(idle_after);
    let monitor = PressureMonitor::start(config).unwrap();
    assert_eq!(monitor.level(), PressureLevel::High);
    let round = monitor.last_reclamation().unwrap();
    assert_eq!(round.reclaimed_bytes, 0, "{round:?}");
    drop(monitor);
}

/// A pool of 4 KiB values that starts small (16) and may grow to 65,536.
fn growing_pool(name: &str) -> &'static Pool<Page> {
    Pool::new(PoolConfig::new(name).capacity(16).max_capacity(1 << 16)).unwrap()
}

/// Waits up to 10 s for `monitor` to run `n` more ticks.
fn wait_ticks(monitor: &PressureMonitor, n: u64) {
    let ticks = monitor.ticks();
    let deadline = Instant::now() + Duration::from_secs(10);
    while monitor.ticks() < ticks + n {
        assert!(Instant::now() < deadline, "timed out waiting for {n} ticks");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
#[cfg_attr(miri, ignore = "runs the monitor thread")]
fn the_monitor_grows_a_busy_pool_ahead_of_demand() {
    let _serial = serial();
    let pool = growing_pool("pressure-ahead");
    let source: &dyn Source = pool;
    // The pool grows (slow paths now), then the monitor runs a few ticks.
    let mut held: Vec<Handle<Page>> = (0..2048).map(|_| pool.acquire().unwrap()).collect();
    let fresh_before = source.snapshot().fresh_bytes;
    let monitor = PressureMonitor::start(PressureConfig::default()).unwrap();
    wait_ticks(&monitor, 3);
    drop(monitor);
    let snapshot = source.snapshot();
    let stats = pool.stats();
    println!(
        "fresh before {fresh_before} bytes, after {} bytes; {stats:?}",
        snapshot.fresh_bytes
    );
    assert!(
        snapshot.fresh_bytes > fresh_before && stats.expansions_ahead > 0,
        "chunks mapped ahead, their blocks not yet carved: {snapshot:?}"
    );
    // What was made ready is acquired without a mapping on this thread.
    let ready = (snapshot.fresh_bytes / 4096) as usize;
    held.extend((0..ready / 2).map(|_| pool.acquire().unwrap()));
    assert_eq!(
        pool.stats().expansions,
        stats.expansions,
        "{:?}",
        pool.stats()
    );
    drop(held);
}

#[test]
#[cfg_attr(miri, ignore = "runs the monitor thread")]
fn a_pool_that_gets_busy_after_every_pool_was_idle_is_grown_ahead() {
    let _serial = serial();
    let pool = growing_pool("pressure-ahead-after-idle");
    // Every pool of the process idle (the tests take turns): no slow path for over the
    // idle time, so growth passes leave the pools out.
    std::thread::sleep(Urgency::IDLE_AFTER + Duration::from_millis(200));
    let monitor = PressureMonitor::start(PressureConfig::default()).unwrap();
    wait_ticks(&monitor, 3);
    let before = pool.stats().expansions_ahead;
    assert_eq!(before, 0, "an idle pool is not grown ahead");
    // Busy now: its own slow paths, not a new pool's creation, must bring it back.
    let held: Vec<Handle<Page>> = (0..2048).map(|_| pool.acquire().unwrap()).collect();
    let ticks = monitor.ticks();
    while pool.stats().expansions_ahead == before {
        assert!(
            monitor.ticks() < ticks + 20,
            "not grown ahead within 20 ticks of getting busy"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    drop(monitor);
    drop(held);
}

#[test]
#[cfg_attr(miri, ignore = "runs the monitor thread")]
fn between_ticks_the_monitor_keeps_a_growing_pool_ahead() {
    let _serial = serial();
    let pool = growing_pool("pressure-ahead-polls");
    let mut held: Vec<Handle<Page>> = (0..64).map(|_| pool.acquire().unwrap()).collect();
    // One tick, at the start, and none for a minute: what follows is the growth polls'.
    let config = PressureConfig::default().interval(Duration::from_secs(60));
    let monitor = PressureMonitor::start(config).unwrap();
    let ticks = monitor.ticks();
    let after_tick = pool.stats().expansions_ahead;
    assert!(after_tick > 0, "{:?}", pool.stats());
    let deadline = Instant::now() + Duration::from_secs(10);
    // Take what is ready, a little at a time, until growth ahead maps more.
    while pool.stats().expansions_ahead == after_tick {
        assert!(Instant::now() < deadline, "{:?}", pool.stats());
        for _ in 0..64 {
            match pool.acquire() {
                Ok(h) => held.push(h),
                Err(e) => panic!("{e}: no growth ahead between ticks: {:?}", pool.stats()),
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(monitor.ticks(), ticks);
    drop(monitor);
    drop(held);
}
