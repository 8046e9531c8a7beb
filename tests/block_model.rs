//! Model-based property test of `tally_pool::block::BlockPool`.
//!
//! Random sequences of operations (allocate a few blocks, free a random live block,
//! reclaim, free a random set of live blocks on another thread, allocate on another thread
//! and hand the blocks over) run against a small pool (`max_capacity` between 1 and 300,
//! any guard level) and against a model: the set of live blocks with the tag written into
//! each.
//!
//! After every operation: no block is handed out twice while live, `stats()` agrees with
//! the model (`live_blocks`, `allocations`, `frees`, `allocations - frees == live_blocks`),
//! and every live block still holds its tag (checked before each free, and for all live
//! blocks after each reclaim and at the end). An allocation on the test's thread succeeds
//! exactly when fewer than `max_capacity` blocks are live (the helper threads have exited,
//! so every free block is in this thread's cache or in the depot), and fails with
//! `Exhausted` otherwise. A reclaim with nothing live gives every chunk back. At the end,
//! after everything is freed, `max_capacity` blocks can be allocated again: every freed
//! block is reusable.
//!
//! Every free is of a block the model holds as live, so each keeps to the contract of the
//! `unsafe fn BlockPool::free`: the block was allocated from the pool and not freed since.
//! (Double frees and other misuse the guards detect are tested in `block_corruption.rs`.)
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use core::alloc::Layout;
use std::collections::HashSet;

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use tally_pool::block::{BlockPool, BlockPoolConfig, GuardLevel};
use tally_pool::PoolError;

use common::block::{block, free_owned};
use common::errors::expect_exhausted;
use common::guards::{any_guard, GUARDS};
use common::stamp::{check, stamp};
use common::stats::assert_counts;

/// Words (u64) in a block.
const WORDS: usize = 6;

#[derive(Debug, Clone)]
enum Op {
    /// Allocate this many blocks on the test's thread.
    Allocate(usize),
    /// Free the live block at this index (modulo the number of live blocks).
    Free(usize),
    /// `BlockPool::reclaim` on the test's thread.
    Reclaim,
    /// Free the live blocks at these indices on a helper thread, which then exits.
    FreeOnThread(Vec<usize>),
    /// Allocate up to this many blocks on a helper thread, which hands them over and exits.
    AllocateOnThread(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1..=40usize).prop_map(Op::Allocate),
        4 => any::<usize>().prop_map(Op::Free),
        1 => Just(Op::Reclaim),
        1 => prop::collection::vec(any::<usize>(), 1..60).prop_map(Op::FreeOnThread),
        1 => (1..=80usize).prop_map(Op::AllocateOnThread),
    ]
}

/// Frees `addr`, a block [`Model::take`] just took out of the live set. The model's live
/// set holds exactly the blocks allocated from `pool` and not freed since
/// (`Model::allocated` panics on a block handed out while live), and `take` removes a block
/// from it before it is freed: each block is freed once, by its owner.
fn free_live(pool: &BlockPool, addr: usize) {
    free_owned(pool, block(addr)).unwrap();
}

/// The model: live blocks and their tags, and the counts the pool must report.
#[derive(Debug, Default)]
struct Model {
    live: Vec<(usize, u64)>,
    set: HashSet<usize>,
    allocations: u64,
    frees: u64,
    next_tag: u64,
}

impl Model {
    /// Records a block the pool just handed out (and tagged with `tag`).
    #[track_caller]
    fn allocated(&mut self, addr: usize, tag: u64) {
        assert!(
            self.set.insert(addr),
            "block {addr:#x} handed out while still live"
        );
        self.live.push((addr, tag));
        self.allocations += 1;
    }

    /// Takes the live block at `index` modulo the number of live blocks, checking its tag.
    fn take(&mut self, index: usize) -> Option<usize> {
        if self.live.is_empty() {
            return None;
        }
        let (addr, tag) = self.live.swap_remove(index % self.live.len());
        check(block(addr), WORDS, tag, "a live block");
        assert!(self.set.remove(&addr));
        Some(addr)
    }

    fn tag(&mut self) -> u64 {
        self.next_tag += 1;
        self.next_tag
    }

    fn check_all(&self) {
        for &(addr, tag) in &self.live {
            check(block(addr), WORDS, tag, "a live block");
        }
    }
}

#[track_caller]
fn check_stats(pool: &BlockPool, model: &Model, after: &Op) {
    let stats = pool.stats();
    assert_counts(
        &stats,
        model.allocations,
        model.frees,
        model.live.len() as u64,
        format_args!("after {after:?}"),
    );
    assert!(
        stats.capacity <= stats.max_capacity,
        "after {after:?}: {stats:?}"
    );
}

fn run(guard: GuardLevel, cap: usize, prealloc: bool, ops: &[Op]) {
    let pool = BlockPool::new(
        BlockPoolConfig::new(Layout::new::<[u64; WORDS]>())
            .name("model")
            .guard(guard)
            .max_capacity(cap)
            .capacity(if prealloc { cap } else { 0 }),
    )
    .unwrap();
    let mut model = Model::default();

    for op in ops {
        match op {
            Op::Allocate(n) => {
                for _ in 0..*n {
                    let result = pool.allocate();
                    if model.live.len() < cap {
                        let addr = result
                            .unwrap_or_else(|e| {
                                panic!("{} of {cap} live, yet: {e}", model.live.len())
                            })
                            .as_ptr() as usize;
                        let tag = model.tag();
                        stamp(block(addr), WORDS, tag);
                        model.allocated(addr, tag);
                    } else {
                        expect_exhausted(&result, cap, "allocate at the cap");
                    }
                }
            }
            Op::Free(i) => {
                if let Some(addr) = model.take(*i) {
                    free_live(&pool, addr);
                    model.frees += 1;
                }
            }
            Op::Reclaim => {
                pool.reclaim();
                model.check_all();
                let chunks = pool.stats().chunks;
                if model.live.is_empty() {
                    assert_eq!(chunks, 0, "nothing is live, so every chunk is reclaimed");
                } else {
                    assert!(chunks > 0, "live blocks keep their chunk");
                }
            }
            Op::FreeOnThread(indices) => {
                let addrs: Vec<usize> = indices.iter().filter_map(|&i| model.take(i)).collect();
                let n = addrs.len() as u64;
                std::thread::scope(|s| {
                    s.spawn(|| {
                        for a in addrs {
                            free_live(&pool, a);
                        }
                    })
                    .join()
                    .unwrap();
                });
                model.frees += n;
            }
            Op::AllocateOnThread(n) => {
                let live = model.live.len();
                let first_tag = model.next_tag + 1;
                let got: Vec<(usize, u64)> = std::thread::scope(|s| {
                    s.spawn(|| {
                        let mut got = Vec::new();
                        for k in 0..*n {
                            let result = pool.allocate();
                            if live + got.len() == cap {
                                expect_exhausted(&result, cap, "helper thread at the cap");
                                break;
                            }
                            match result {
                                Ok(b) => {
                                    let tag = first_tag + k as u64;
                                    stamp(b, WORDS, tag);
                                    got.push((b.as_ptr() as usize, tag));
                                }
                                // Blocks cached by the test's thread are out of this
                                // thread's reach: documented, and allowed.
                                Err(PoolError::Exhausted { .. }) => break,
                                Err(e) => panic!("helper thread: {e}"),
                            }
                        }
                        got
                    })
                    .join()
                    .unwrap()
                });
                for (addr, tag) in got {
                    check(block(addr), WORDS, tag, "a block from the helper thread");
                    model.next_tag = tag;
                    model.allocated(addr, tag);
                }
            }
        }
        check_stats(&pool, &model, op);
    }

    // Free everything; then every block is reusable: the cap can be reached again.
    model.check_all();
    while let Some(addr) = model.take(0) {
        free_live(&pool, addr);
        model.frees += 1;
    }
    let end = Op::Free(0);
    check_stats(&pool, &model, &end);
    for _ in 0..cap {
        let addr = pool.allocate().unwrap().as_ptr() as usize;
        let tag = model.tag();
        stamp(block(addr), WORDS, tag);
        model.allocated(addr, tag);
    }
    expect_exhausted(&pool.allocate(), cap, "after re-allocating the cap");
    check_stats(&pool, &model, &Op::Allocate(cap));
    model.check_all();
    while let Some(addr) = model.take(0) {
        free_live(&pool, addr);
        model.frees += 1;
    }
    check_stats(&pool, &model, &end);
    pool.reclaim();
    assert_eq!(pool.stats().chunks, 0);
}

proptest! {
    // A failing case's seed goes to `tests/block_model.proptest-regressions`, committed,
    // and every later run tries the seeds there first. (The default would look for the
    // file in the same place, found only after failing to find a `lib.rs` beside the
    // tests: this says so.)
    #![proptest_config(ProptestConfig {
        cases: 64,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions"
        ))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn pool_matches_model(
        guard in any_guard(),
        cap in prop::sample::select(vec![1usize, 2, 63, 64, 65, 127, 128, 129, 200, 300]),
        prealloc in any::<bool>(),
        ops in prop::collection::vec(op(), 1..150),
    ) {
        run(guard, cap, prealloc, &ops);
    }
}

/// A fixed sequence that crosses every boundary of the caches, as a quick regression.
#[test]
fn fixed_sequence_through_every_boundary() {
    for guard in GUARDS {
        run(
            guard,
            300,
            false,
            &[
                Op::Allocate(40),
                Op::AllocateOnThread(80),
                Op::Allocate(40),
                Op::FreeOnThread((0..60).collect()),
                Op::Reclaim,
                Op::Allocate(40),
                Op::Allocate(40),
                Op::Allocate(40),
                Op::Allocate(40),
                Op::Allocate(40),
                Op::AllocateOnThread(80),
                Op::Free(3),
                Op::FreeOnThread((0..60).collect()),
                Op::FreeOnThread((0..60).collect()),
                Op::FreeOnThread((0..60).collect()),
                Op::Reclaim,
                Op::FreeOnThread((0..60).collect()),
                Op::Reclaim,
            ],
        );
    }
}
