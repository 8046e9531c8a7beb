//! `tally_pool::block::BlockPool::stats` while other threads work on the pool.
//!
//! - `stats()` called in a loop from one thread never stalls threads that allocate a small
//!   pool to its cap and free it all again, in rounds (an allocation at the cap asks every
//!   cache to flush, under the lock of the pool's cache list, from within its thread's
//!   slow path, which a statistics read waits out): with one allocating thread and with
//!   two;
//! - once every thread is done and gone, the statistics add up: nothing live, as many
//!   frees as allocations;
//! - the same for a typed pool with one pool per node (on a synthetic two-node topology),
//!   whose acquires fall back to the other node at the cap: two threads that only acquire
//!   until refused and release, and one reading `stats()`.
//!
//! A stall would otherwise hang the test binary: a watchdog fails the test instead, without
//! joining the stuck threads.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use core::alloc::Layout;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use tally_pool::block::{BlockPool, BlockPoolConfig};
use tally_pool::numa::{with_node_override, Topology};
use tally_pool::{Pool, PoolConfig, PoolError};

type Block = [u64; 4];

/// A cap this small puts a pool at its cap within a handful of calls.
const CAP: usize = 64;

/// How long each workload runs.
const RUN_FOR: Duration = Duration::from_millis(if cfg!(miri) { 200 } else { 2500 });

/// How long a thread may go without progress before the test fails.
const STALL: Duration = Duration::from_secs(10);

fn pool_capped(name: &str, max_capacity: usize) -> BlockPool {
    BlockPool::new(
        BlockPoolConfig::new(Layout::new::<Block>())
            .name(name)
            .max_capacity(max_capacity),
    )
    .unwrap()
}

/// One round: allocates until the pool says `Exhausted`, then frees everything.
fn allocate_to_cap_and_free(pool: &BlockPool) -> usize {
    let mut got = Vec::new();
    loop {
        match pool.allocate() {
            Ok(b) => {
                got.push(b);
                assert!(got.len() <= CAP, "more than the cap of {CAP} handed out");
            }
            Err(PoolError::Exhausted { max_capacity, .. }) => {
                assert_eq!(max_capacity, CAP);
                break;
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    let n = got.len();
    for b in got {
        // SAFETY: `pool.allocate()` handed `b` to this thread above and it was not freed
        // since; it is freed once, here, and not used after.
        unsafe { pool.free(b) }.unwrap();
    }
    n
}

/// What a worker thread reports to the watchdog.
#[derive(Default)]
struct Progress {
    /// Rounds (or `stats` calls) done so far.
    steps: AtomicU64,
}

/// Runs `allocators` threads doing [`allocate_to_cap_and_free`] rounds and one thread
/// calling `stats()` in a loop, for [`RUN_FOR`]. Fails, without joining them, if any thread
/// makes no progress for [`STALL`].
fn run_against_stats(name: &str, allocators: usize) {
    let pool = pool_capped(name, CAP);
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers: Vec<(String, Arc<Progress>, thread::JoinHandle<()>)> = Vec::new();

    for i in 0..allocators {
        let (pool, stop) = (pool.clone(), Arc::clone(&stop));
        let progress = Arc::new(Progress::default());
        let mine = Arc::clone(&progress);
        let handle = thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                allocate_to_cap_and_free(&pool);
                mine.steps.fetch_add(1, Ordering::Relaxed);
            }
        });
        workers.push((format!("allocating thread {i}"), progress, handle));
    }
    {
        let (pool, stop) = (pool.clone(), Arc::clone(&stop));
        let progress = Arc::new(Progress::default());
        let mine = Arc::clone(&progress);
        let limit = (CAP * allocators) as u64;
        let handle = thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let s = pool.stats();
                // Each thread is read at its own instant, so the threads' live blocks can
                // add up to more than the cap, but not to more than each holding all of it.
                assert!(s.frees <= s.allocations, "{s:?}");
                assert!(s.live_blocks <= limit, "{s:?}");
                mine.steps.fetch_add(1, Ordering::Relaxed);
            }
        });
        workers.push(("stats thread".to_owned(), progress, handle));
    }

    watch(&workers, &stop);

    for (_, _, handle) in workers {
        handle.join().unwrap();
    }
    let s = pool.stats();
    assert_eq!(s.live_blocks, 0, "{s:?}");
    assert_eq!(s.allocations, s.frees, "{s:?}");
    assert!(s.allocations >= CAP as u64, "{s:?}");
    // Every block is free again: the whole cap can be allocated once more.
    assert_eq!(allocate_to_cap_and_free(&pool), CAP);
}

/// Lets the workers run for [`RUN_FOR`], then tells them to stop; returns once each has
/// made progress since (so each is out of the pool and about to see `stop`). Fails the test
/// if any of them makes none for [`STALL`].
///
/// A failure here leaves the stuck threads running: the test thread's panic still ends the
/// test, and the binary exits once every test is done, stuck threads or not.
fn watch(workers: &[(String, Arc<Progress>, thread::JoinHandle<()>)], stop: &AtomicBool) {
    let start = Instant::now();
    let mut last: Vec<(u64, Instant)> = workers
        .iter()
        .map(|(_, p, _)| (p.steps.load(Ordering::Relaxed), start))
        .collect();
    let mut stop_seen: Option<Vec<u64>> = None;
    loop {
        thread::sleep(Duration::from_millis(50));
        let now = Instant::now();
        for ((name, progress, handle), (steps, since)) in workers.iter().zip(&mut last) {
            let seen = progress.steps.load(Ordering::Relaxed);
            if seen != *steps || handle.is_finished() {
                *steps = seen;
                *since = now;
            } else if now - *since > STALL {
                panic!(
                    "{name} made no progress in the {STALL:?} from {:?} into the run on \
                     ({seen} steps done): the pool is deadlocked",
                    *since - start
                );
            }
        }
        match &stop_seen {
            None if now - start >= RUN_FOR => {
                stop.store(true, Ordering::Relaxed);
                stop_seen = Some(last.iter().map(|&(s, _)| s).collect());
            }
            Some(at_stop) => {
                let all_moved = workers
                    .iter()
                    .zip(at_stop)
                    .all(|((_, p, h), &s)| h.is_finished() || p.steps.load(Ordering::Relaxed) > s);
                if all_moved {
                    return;
                }
            }
            None => {}
        }
    }
}

#[test]
fn stats_in_a_loop_never_stalls_a_thread_that_allocates_to_the_cap() {
    run_against_stats("stats-vs-one", 1);
}

#[test]
fn stats_in_a_loop_never_stalls_two_threads_that_allocate_to_the_cap() {
    run_against_stats("stats-vs-two", 2);
}

/// Spawns one thread per step function, each calling it in a loop until told to stop, and
/// watches them as [`run_against_stats`] does.
fn run_steps(steps: Vec<(String, Box<dyn Fn() + Send>)>) {
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = steps
        .into_iter()
        .map(|(name, step)| {
            let stop = Arc::clone(&stop);
            let progress = Arc::new(Progress::default());
            let mine = Arc::clone(&progress);
            let handle = thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    step();
                    mine.steps.fetch_add(1, Ordering::Relaxed);
                }
            });
            (name, progress, handle)
        })
        .collect();
    watch(&workers, &stop);
    for (_, _, handle) in workers {
        handle.join().unwrap();
    }
}

#[test]
fn typed_pools_at_their_cap_on_two_nodes_never_stall() {
    let topology = Topology::synthetic(2, 1).unwrap();
    let pool = Pool::<Block>::new(
        PoolConfig::new("stats-vs-typed")
            .capacity(0)
            .max_capacity(CAP)
            .topology(topology),
    )
    .unwrap();
    let acquirer = |node: u32| -> Box<dyn Fn() + Send> {
        Box::new(move || {
            with_node_override(node, || {
                let mut held = Vec::new();
                loop {
                    match pool.acquire_with([u64::from(node); 4]) {
                        Ok(h) => held.push(h),
                        Err(e) => {
                            assert!(
                                matches!(e.error, PoolError::Exhausted { .. }),
                                "{}",
                                e.error
                            );
                            break;
                        }
                    }
                }
                // Both nodes' caps, and no more.
                assert!(held.len() <= 2 * CAP, "{} values live", held.len());
                assert!(held.iter().all(|h| **h == [u64::from(node); 4]));
            })
        })
    };
    run_steps(vec![
        ("acquiring thread on node 0".into(), acquirer(0)),
        ("acquiring thread on node 1".into(), acquirer(1)),
        (
            "stats thread".into(),
            Box::new(move || {
                let s = pool.stats();
                assert!(s.frees <= s.allocations, "{s:?}");
            }),
        ),
    ]);
    let s = pool.stats();
    assert_eq!((s.live_blocks, s.allocations), (0, s.frees), "{s:?}");
}
