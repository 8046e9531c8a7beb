//! Scratch arenas through the public API: the pressure monitor trims them at High and
//! Critical (each thread at its next call, never from another thread), every thread's arena
//! is a component of the report while the thread lives, and the retain limit holds on every
//! thread.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::fmt::Write;
use std::sync::mpsc::channel;
use std::sync::{Arc, Barrier, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tally_pool::arena::{self, bumpalo::collections::String, bumpalo::collections::Vec};
use tally_pool::pressure::{self, PressureConfig, PressureLevel, PressureMonitor};
use tally_pool::stats::{self, Kind};
use tally_pool::{Handle, Pool, PoolConfig};

/// The retain limit, trims and the monitor are process-wide: the tests take turns.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Fills a batch's temporary vector and string in the calling thread's arena; returns the
/// sum the string parses back to and the bytes the batch used.
fn batch(orders: u64, seed: u64) -> (u64, usize) {
    arena::scratch(|bump| {
        let mut ids = Vec::with_capacity_in(orders as usize, bump);
        ids.extend((0..orders).map(|i| seed + i));
        let mut line = String::new_in(bump);
        for id in &ids {
            write!(line, "{id};").unwrap();
        }
        let sum = line
            .split(';')
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<u64>().unwrap())
            .sum();
        (sum, bump.allocated_bytes() - bump.chunk_capacity())
    })
}

fn expected(orders: u64, seed: u64) -> u64 {
    (0..orders).map(|i| seed + i).sum()
}

#[test]
fn the_pressure_monitor_trims_every_threads_arena_at_its_next_call() {
    let _serial = serial();
    // A mapped pool chunk, so that a small budget puts the process at Critical.
    let pool: &'static Pool<[u64; 8]> = Pool::new(PoolConfig::new("arena-pressure")).unwrap();
    let held: Handle<[u64; 8]> = pool.acquire().unwrap();
    assert!(pressure::mapped_bytes() > 0);

    // Another thread keeps an idle arena while the monitor runs.
    let (to_owner, owner_rx) = channel::<()>();
    let (to_main, main_rx) = channel::<usize>();
    let owner = std::thread::spawn(move || {
        assert_eq!(batch(2_000, 1).0, expected(2_000, 1));
        to_main.send(arena::retained_bytes()).unwrap();
        owner_rx.recv().unwrap();
        let idle = arena::retained_bytes();
        let at_entry = arena::scratch(|bump| bump.allocated_bytes());
        (idle, at_entry)
    });
    let kept_there = main_rx.recv().unwrap();
    assert!(kept_there > 0);
    assert_eq!(batch(2_000, 7).0, expected(2_000, 7));
    let kept_here = arena::retained_bytes();
    assert!(kept_here > 0);

    let config = PressureConfig::default().budget(pressure::mapped_bytes() / 2);
    let monitor = PressureMonitor::start(config.interval(Duration::from_millis(10))).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while monitor
        .last_reclamation()
        .is_none_or(|r| r.level < PressureLevel::High)
    {
        assert!(Instant::now() < deadline, "no reclamation round at High");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(monitor.level() >= PressureLevel::High);
    drop(monitor);

    // `start` runs the first round on this thread, which frees its own arenas there (or at
    // its next call); the owner thread, idle meanwhile, frees its own at its next call.
    assert_eq!(arena::scratch(|bump| bump.allocated_bytes()), 0);
    to_owner.send(()).unwrap();
    let (idle, at_entry) = owner.join().unwrap();
    assert_eq!(idle, kept_there, "never freed by another thread");
    assert_eq!(at_entry, 0, "freed by its owner at its next call");
    drop(held);
}

#[test]
fn each_thread_is_a_component_of_the_report_while_it_lives() {
    let _serial = serial();
    let threads = 4;
    let barrier = Arc::new(Barrier::new(threads + 1));
    let (to_main, tids) = channel::<(i32, usize)>();
    let handles: std::vec::Vec<_> = (0..threads)
        .map(|t| {
            let (barrier, to_main) = (Arc::clone(&barrier), to_main.clone());
            std::thread::spawn(move || {
                for b in 0..100 {
                    let seed = (t * 1_000 + b) as u64;
                    assert_eq!(batch(64, seed).0, expected(64, seed));
                }
                // SAFETY: `gettid` takes no argument and cannot fail.
                let tid = unsafe { libc::gettid() };
                to_main.send((tid, arena::retained_bytes())).unwrap();
                barrier.wait(); // the report is taken
            })
        })
        .collect();
    let seen: std::vec::Vec<(i32, usize)> = (0..threads).map(|_| tids.recv().unwrap()).collect();
    let report = stats::report();
    barrier.wait();
    for handle in handles {
        handle.join().unwrap();
    }
    let after = stats::report();
    for (tid, kept) in seen {
        let name = format!("scratch (thread {tid})");
        let row = report.components.iter().find(|c| c.name == name);
        let row = row.unwrap_or_else(|| panic!("no component named {name:?}"));
        assert_eq!(row.kind, Kind::Arena);
        assert_eq!((row.counters.acquires, row.counters.releases), (100, 100));
        assert_eq!(row.live_objects, 0);
        assert_eq!(row.memory.free_bytes, kept as u64);
        assert!(kept > 0);
        assert!(
            !after.components.iter().any(|c| c.name == name),
            "{name} is still listed after its thread exited"
        );
    }
}

#[test]
fn the_retain_limit_holds_on_every_thread() {
    let _serial = serial();
    let before = arena::retain_limit();
    for limit in [0, 16 << 10, 256 << 10] {
        arena::set_retain_limit(limit);
        let kept: std::vec::Vec<(usize, usize)> = (0..4)
            .map(|t| {
                std::thread::spawn(move || {
                    let mut used = 0;
                    for b in 0..50 {
                        // Batches from about 1 KiB to about 40 KiB.
                        let orders = 100 + (b * 97 + t * 31) % 2_400;
                        let (sum, bytes) = batch(orders, b);
                        assert_eq!(sum, expected(orders, b));
                        used = used.max(bytes);
                    }
                    (arena::retained_bytes(), used)
                })
            })
            .map(|h| h.join().unwrap())
            .collect();
        for (retained, used) in kept {
            assert!(retained <= limit, "kept {retained} with a limit of {limit}");
            assert!(
                used > 16 << 10,
                "the batches outgrow the small limit: {used}"
            );
            if limit >= 256 << 10 {
                assert!(retained > 0, "nothing kept under a limit of {limit}");
            }
        }
    }
    arena::set_retain_limit(before);
}
