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

mod common;

use std::time::Duration;

use tally_pool::block::BlockPool;
use tally_pool::numa::{with_node_override, Topology};
use tally_pool::{Pool, PoolConfig, PoolError};

use common::block::{allocate_until_exhausted, free_all, pool_capped, Block};
use common::threads::{run_steps, Step};

/// A cap this small puts a pool at its cap within a handful of calls.
const CAP: usize = 64;

/// How long each workload runs.
const RUN_FOR: Duration = Duration::from_millis(if cfg!(miri) { 200 } else { 2500 });

/// How long a thread may go without progress before the test fails.
const STALL: Duration = Duration::from_secs(10);

/// One round: allocates until the pool says `Exhausted`, then frees everything.
fn allocate_to_cap_and_free(pool: &BlockPool) -> usize {
    let got = allocate_until_exhausted(pool, CAP);
    let n = got.len();
    free_all(pool, got);
    n
}

/// Runs `allocators` threads doing [`allocate_to_cap_and_free`] rounds and one thread
/// calling `stats()` in a loop, for [`RUN_FOR`]; fails if any thread makes no progress
/// for [`STALL`].
fn run_against_stats(name: &str, allocators: usize) {
    let pool = pool_capped(name, CAP);
    let mut steps: Vec<Step> = (0..allocators)
        .map(|i| {
            let pool = pool.clone();
            let step: Box<dyn Fn() + Send> = Box::new(move || {
                allocate_to_cap_and_free(&pool);
            });
            (format!("allocating thread {i}"), step)
        })
        .collect();
    let limit = (CAP * allocators) as u64;
    let reader = pool.clone();
    steps.push((
        "stats thread".to_owned(),
        Box::new(move || {
            let s = reader.stats();
            // Each thread is read at its own instant, so the threads' live blocks can add
            // up to more than the cap, but not to more than each holding all of it.
            assert!(s.frees <= s.allocations, "{s:?}");
            assert!(s.live_blocks <= limit, "{s:?}");
        }),
    ));
    run_steps(RUN_FOR, STALL, steps);

    let s = pool.stats();
    assert_eq!(s.live_blocks, 0, "{s:?}");
    assert_eq!(s.allocations, s.frees, "{s:?}");
    assert!(s.allocations >= CAP as u64, "{s:?}");
    // Every block is free again: the whole cap can be allocated once more.
    assert_eq!(allocate_to_cap_and_free(&pool), CAP);
}

#[test]
fn stats_in_a_loop_never_stalls_a_thread_that_allocates_to_the_cap() {
    run_against_stats("stats-vs-one", 1);
}

#[test]
fn stats_in_a_loop_never_stalls_two_threads_that_allocate_to_the_cap() {
    run_against_stats("stats-vs-two", 2);
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
    run_steps(
        RUN_FOR,
        STALL,
        vec![
            ("acquiring thread on node 0".into(), acquirer(0)),
            ("acquiring thread on node 1".into(), acquirer(1)),
            (
                "stats thread".into(),
                Box::new(move || {
                    let s = pool.stats();
                    assert!(s.frees <= s.allocations, "{s:?}");
                }),
            ),
        ],
    );
    let s = pool.stats();
    assert_eq!((s.live_blocks, s.allocations), (0, s.frees), "{s:?}");
}
