//! Tests of the overflow list, through the pool that owns it (`refill.rs`).

use core::alloc::Layout;
use std::collections::HashSet;
use std::sync::atomic::Ordering as StdOrdering;
use std::sync::Arc;

use super::config::{BlockPoolConfig, GuardLevel};
use super::shared::PoolShared;
use crate::sync::lock;

fn pool(guard: GuardLevel) -> Arc<PoolShared> {
    PoolShared::new(
        BlockPoolConfig::new(Layout::new::<[u64; 4]>())
            .capacity(4096)
            .guard(guard),
    )
    .unwrap()
}

/// `n` blocks carved and handed out, then freed (checked) by hand.
fn freed_blocks(p: &PoolShared, n: usize) -> Vec<*mut u8> {
    let mut growth = lock(&p.growth);
    let mut out = Vec::new();
    while out.len() < n {
        p.carve(&mut growth, n - out.len(), |_, b| out.push(b))
            .unwrap();
    }
    drop(growth);
    for &b in &out {
        assert!(p.guard_accepts(b as usize));
        p.check_block(b as usize).unwrap();
    }
    out
}

#[test]
fn blocks_come_back_each_once_and_free_as_the_guard_expects() {
    for guard in [GuardLevel::Off, GuardLevel::Canary, GuardLevel::Full] {
        let p = pool(guard);
        let blocks = freed_blocks(&p, 500);
        let before = p.depot.blocks();
        assert!(p.overflow_push(&blocks));
        assert_eq!(p.overflow.len(), 500);
        assert_eq!(p.depot.blocks(), before + 500, "counted as free");
        let mut seen = HashSet::new();
        let mut buf = [core::ptr::null_mut(); 37];
        loop {
            let n = p.overflow_take(&mut buf);
            if n == 0 {
                break;
            }
            for &b in &buf[..n] {
                assert!(seen.insert(b as usize), "{b:p} twice");
                // The guard hands it out: free mark and (Full) poison intact.
                assert!(p.hand_out(b).is_ok(), "{guard:?}: {b:p} refused");
            }
        }
        assert_eq!(seen.len(), 500);
        assert_eq!((p.overflow.len(), p.depot.blocks()), (0, before));
        assert_eq!(p.counters.withdrawn.load(StdOrdering::Relaxed), 0);
    }
}

#[test]
fn a_second_free_of_a_listed_block_is_refused() {
    for guard in [GuardLevel::Canary, GuardLevel::Full] {
        let p = pool(guard);
        let blocks = freed_blocks(&p, 3);
        assert!(p.overflow_push(&blocks));
        for &b in &blocks {
            assert!(p.check_block(b as usize).is_err(), "{guard:?}: {b:p}");
        }
        assert_eq!(p.overflow_take_all().unwrap().len(), 3);
    }
}

#[test]
fn a_damaged_link_withdraws_the_rest_of_the_list() {
    let p = pool(GuardLevel::Off);
    let blocks = freed_blocks(&p, 10);
    let before = p.depot.blocks();
    assert!(p.overflow_push(&blocks));
    // The head is the last block pushed; its link names the one before. A use after
    // free points it at the heap.
    let heap = Box::new(0u64);
    let head = *blocks.last().unwrap();
    // SAFETY: the test holds the pool alone and `head` is a block of it in a live chunk
    // (a stand-in for a user's write into a freed block).
    unsafe { head.cast::<usize>().write(&*heap as *const u64 as usize) };
    let taken = p.overflow_take_all().unwrap();
    assert_eq!(taken, []);
    assert_eq!(p.counters.withdrawn.load(StdOrdering::Relaxed), 10);
    assert_eq!((p.overflow.len(), p.depot.blocks()), (0, before));
}

#[test]
fn a_pool_that_keeps_values_in_free_blocks_links_none_unless_guarded() {
    let p = pool(GuardLevel::Off);
    p.keeps_contents.store(true, StdOrdering::Relaxed);
    let blocks = freed_blocks(&p, 2);
    assert!(!p.overflow_push(&blocks));
    assert_eq!(p.overflow.len(), 0);
    let g = pool(GuardLevel::Canary);
    g.keeps_contents.store(true, StdOrdering::Relaxed);
    let blocks = freed_blocks(&g, 2);
    // SAFETY: blocks of `g` the test holds alone.
    unsafe { blocks[0].cast::<u64>().write(0x5EED) };
    assert!(g.overflow_push(&blocks));
    assert_eq!(g.overflow_take_all().unwrap().len(), 2);
    // SAFETY: as above.
    let kept = unsafe { blocks[0].cast::<u64>().read() };
    assert_eq!(kept, 0x5EED, "payload kept");
}

#[test]
fn threads_pushing_and_taking_lose_and_duplicate_nothing() {
    let p = pool(GuardLevel::Canary);
    let per_thread = if cfg!(miri) { 20 } else { 400 };
    let blocks: Vec<Vec<usize>> = (0..4)
        .map(|_| {
            freed_blocks(&p, per_thread)
                .into_iter()
                .map(|b| b as usize)
                .collect()
        })
        .collect();
    let before = p.depot.blocks();
    let rounds = if cfg!(miri) { 2 } else { 200 };
    let got: Vec<Vec<usize>> = std::thread::scope(|s| {
        let workers: Vec<_> = blocks
            .iter()
            .map(|mine| {
                let p = &p;
                s.spawn(move || {
                    let mut held: Vec<*mut u8> = mine.iter().map(|&a| a as *mut u8).collect();
                    let mut buf = [core::ptr::null_mut(); 16];
                    for r in 0..rounds {
                        let k = (r * 7) % 32 + 1;
                        let at = held.len().saturating_sub(k);
                        assert!(p.overflow_push(&held[at..]));
                        held.truncate(at);
                        let n = p.overflow_take(&mut buf[..(r % 16) + 1]);
                        held.extend_from_slice(&buf[..n]);
                    }
                    held.into_iter().map(|b| b as usize).collect::<Vec<_>>()
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let mut all: Vec<usize> = got.concat();
    all.extend(
        p.overflow_take_all()
            .unwrap()
            .into_iter()
            .map(|b| b as usize),
    );
    all.sort_unstable();
    let mut want: Vec<usize> = blocks.concat();
    want.sort_unstable();
    assert_eq!(all, want, "every block once");
    assert_eq!((p.overflow.len(), p.depot.blocks()), (0, before));
    for a in all {
        assert!(p.hand_out(a as *mut u8).is_ok());
    }
}

/// A listed block whose check word was overwritten is reported and withdrawn with the
/// blocks after it: never handed out again (`take_link` restores the free mark, so the
/// guard would accept it later).
#[test]
fn a_block_whose_check_word_was_damaged_is_withdrawn() {
    let p = pool(GuardLevel::Canary);
    let blocks = freed_blocks(&p, 10);
    assert!(p.overflow_push(&blocks));
    let head = *blocks.last().unwrap();
    p.canary(head as usize)
        .unwrap()
        .store(0x4141_4141_4141_4141, crate::sync::Ordering::Relaxed);
    let taken = p.overflow_take_all().unwrap();
    assert_eq!(p.counters.corruption_events.load(StdOrdering::Relaxed), 1);
    assert!(
        !taken.contains(&head),
        "damaged block {head:p} taken, and the guard now accepts it: {}",
        p.hand_out(head).is_ok()
    );
    assert_eq!(p.counters.withdrawn.load(StdOrdering::Relaxed), 10);
    assert_eq!(p.overflow.len(), 0);
}

/// Without a guard, a write of 0 into a listed block's first word (a use-after-free that
/// sets a `next` field to null) ends the list early: the list is withdrawn whole rather
/// than left counting blocks it can no longer reach, which would count as free forever.
#[test]
fn a_list_cut_short_is_withdrawn_not_counted_forever() {
    let p = pool(GuardLevel::Off);
    let blocks = freed_blocks(&p, 10);
    let before = p.depot.blocks();
    assert!(p.overflow_push(&blocks));
    let head = *blocks.last().unwrap();
    // SAFETY: as in `a_damaged_link_withdraws_the_rest_of_the_list`.
    unsafe { head.cast::<usize>().write(0) };
    let taken = p.overflow_take_all().unwrap();
    assert_eq!(taken, []);
    assert_eq!(
        (
            p.overflow.len(),
            p.depot.blocks(),
            p.counters.withdrawn.load(StdOrdering::Relaxed)
        ),
        (0, before, 10)
    );
}

/// A listed block linked to itself: the walk stops at the list's count, hands the block
/// out once, and withdraws the rest, rather than counting below zero.
#[test]
fn a_link_cycle_ends_at_the_count() {
    let p = pool(GuardLevel::Off);
    let blocks = freed_blocks(&p, 2);
    assert!(p.overflow_push(&blocks));
    let head = *blocks.last().unwrap();
    // SAFETY: as above.
    unsafe { head.cast::<usize>().write(head as usize) };
    let mut buf = [core::ptr::null_mut(); 8];
    let n = p.overflow_take(&mut buf);
    assert_eq!(buf.get(..n), Some(&[head][..]));
    assert_eq!(p.counters.withdrawn.load(StdOrdering::Relaxed), 1);
    assert_eq!(p.overflow.len(), 0);
}
