//! How `tally_pool::block::BlockPool` reports misuse and bad configurations.
//!
//! Each kind of corruption the guards promise to catch is provoked on purpose: a write one
//! byte past a block's usable size, double frees before the block is reused (under
//! `Canary` and `Full`), frees of never-carved blocks and of blocks of a reclaimed chunk
//! (under `Canary` and `Full`), frees of foreign pointers (from a `Box`, from another pool,
//! from the stack, from a dropped pool, wild addresses), frees of interior pointers, and
//! writes into freed blocks under `Full`. Each must come back as the right
//! `PoolError::Corruption { kind, address, .. }`, be counted in
//! `stats().corruption_events`, leave the pool usable (allocations and frees still work,
//! no block is handed out twice) and withdraw a damaged block for good.
//!
//! `BlockPool::free` is an `unsafe fn`, and every free here keeps to its contract: the test
//! frees blocks it owns (`free_owned`), or pointers the contract allows because the pool
//! detects them (`free_refused`): foreign and interior pointers at every guard level,
//! and under `Canary` and `Full` blocks that nobody holds. What is not tested, because the
//! contract makes it undefined behaviour: a stale free (of a block handed out again since
//! it was freed), which no guard can tell from the new owner's free; and, under `Off`, a
//! double free, a free of a never-carved block or of a block of a reclaimed chunk, which
//! `Off` does not detect (it checks pointers only) and which put the block into
//! circulation twice.
//!
//! The configuration errors are checked too: `Exhausted` at `max_capacity`,
//! `InvalidConfig` for `capacity > max_capacity` or a zero cap, `UnsupportedLayout` for
//! oversize or over-aligned blocks, and every message is checked for the facts a reader
//! needs (pool name, numbers, what to change).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use core::alloc::Layout;
use core::ptr::NonNull;
use std::collections::HashSet;

use tally_pool::block::{BlockPool, BlockPoolConfig, GuardLevel, CHUNK_SIZE};
use tally_pool::{CorruptionKind, PoolError};

use common::block::free_owned;
use common::guards::{GUARDED, GUARDS};
use common::stamp::{check, stamp};

fn pool_of(name: &str, layout: Layout, guard: GuardLevel) -> BlockPool {
    BlockPool::new(BlockPoolConfig::new(layout).name(name).guard(guard)).unwrap()
}

fn pool(name: &str, guard: GuardLevel) -> BlockPool {
    pool_of(name, Layout::new::<[u64; 8]>(), guard)
}

/// The kind and address of a `Corruption` error; panics on anything else.
#[track_caller]
fn corruption<T: core::fmt::Debug>(
    result: Result<T, PoolError>,
) -> (CorruptionKind, usize, String) {
    match result {
        Err(e @ PoolError::Corruption { .. }) => {
            let message = e.to_string();
            let PoolError::Corruption { kind, address, .. } = e else {
                unreachable!()
            };
            (kind, address, message)
        }
        other => panic!("expected PoolError::Corruption, got {other:?}"),
    }
}

/// Frees a pointer that the test does not own but that `BlockPool::free`'s contract allows,
/// and returns how the pool refused it: a pointer that is not the start of a block of
/// `pool` (any guard level), or, under `Canary` and `Full`, a block of `pool` that nobody
/// holds (free and not handed out since, never carved, or in a reclaimed chunk). No other
/// thread allocates from `pool` meanwhile: each test's pools are its own.
#[track_caller]
fn free_refused(pool: &BlockPool, p: NonNull<u8>) -> (CorruptionKind, usize, String) {
    // SAFETY: callers pass a pointer of one of the kinds above, which the contract allows:
    // no block that someone holds, and no other thread allocates from `pool` meanwhile.
    corruption(unsafe { pool.free(p) })
}

/// Flips every bit of the byte at `p`, so the result differs from what was there whatever
/// it was.
fn flip_byte(p: *mut u8) {
    // SAFETY: callers pass a byte inside a chunk of a live pool (a block, or the canary
    // right after it), which stays mapped and writable while the pool lives.
    let old = unsafe { p.read_volatile() };
    // SAFETY: as above.
    unsafe { p.write_volatile(!old) };
}

/// Allocates and frees `n` blocks in a few patterns, checking they are distinct, hold
/// their data and never equal `withdrawn`; returns nothing but panics on any failure.
#[track_caller]
fn assert_usable(pool: &BlockPool, n: usize, withdrawn: &[usize]) {
    let before = pool.stats();
    let blocks: Vec<NonNull<u8>> = (0..n).map(|_| pool.allocate().unwrap()).collect();
    let addrs: HashSet<usize> = blocks.iter().map(|b| b.as_ptr() as usize).collect();
    assert_eq!(addrs.len(), n, "every block handed out is distinct");
    for w in withdrawn {
        assert!(
            !addrs.contains(w),
            "the withdrawn block {w:#x} was handed out again"
        );
    }
    for (i, b) in blocks.iter().enumerate() {
        stamp(*b, 1, i as u64 ^ 0xABCD_0000);
    }
    for (i, b) in blocks.iter().enumerate() {
        check(*b, 1, i as u64 ^ 0xABCD_0000, "a block in use");
        free_owned(pool, *b).unwrap();
    }
    let after = pool.stats();
    assert_eq!(
        after.allocations - before.allocations,
        n as u64,
        "{after:?}"
    );
    assert_eq!(after.frees - before.frees, n as u64, "{after:?}");
    assert_eq!(
        after.corruption_events, before.corruption_events,
        "{after:?}"
    );
}

// ----- canary ---------------------------------------------------------------------------

#[test]
fn write_past_the_end_is_caught_on_free() {
    for guard in GUARDED {
        let pool = pool("canary-victim", guard);
        let block = pool.allocate().unwrap();
        let addr = block.as_ptr() as usize;
        assert_eq!(pool.block_size(), 64);
        flip_byte(block.as_ptr().wrapping_add(pool.block_size()));

        let (kind, address, message) = corruption(free_owned(&pool, block));
        assert_eq!(kind, CorruptionKind::CanaryOverwritten, "{guard:?}");
        assert_eq!(address, addr, "{guard:?}");
        assert!(message.contains("`canary-victim`"), "{message}");
        assert!(message.contains(&format!("{addr:#x}")), "{message}");
        assert!(
            message.contains("canary") && message.contains("past its end"),
            "{message}"
        );
        let stats = pool.stats();
        assert_eq!(stats.corruption_events, 1, "{guard:?}: {stats:?}");
        assert_eq!(stats.frees, 0, "a refused free is not counted: {stats:?}");

        // The block stays out of circulation: freeing it again is refused again, and it is
        // never handed out.
        let (kind, _, _) = corruption(free_owned(&pool, block));
        assert_eq!(kind, CorruptionKind::CanaryOverwritten, "{guard:?}");
        assert_eq!(pool.stats().corruption_events, 2);
        assert_usable(&pool, 1000, &[addr]);
    }
}

/// The contract is "a write one byte past `block_size()` is caught", whatever the layout's
/// size. For sizes that are not a multiple of 8 the check word sits after padding, so the
/// byte at `block_size()` must either be the canary or be inside what `block_size()`
/// reports as usable.
///
/// LIBRARY BUG (found by this test): for layouts whose size is above 8 and not a multiple
/// of 8 (e.g. 12 bytes), `block_size()` returns the layout's size (12) but the canary
/// starts at the next multiple of 8 (16): a write at `block + block_size()` lands in
/// padding and the free succeeds (sizes 9-15, 17-23, 25-31, 33-39 here, under `Canary`
/// and `Full`). Either fix makes this pass: round the usable size up to 8 (so that
/// `block_size()` reports the padding as usable), or check the bytes from `size` to the
/// canary too.
#[test]
fn write_one_byte_past_block_size_is_caught_for_every_size() {
    let mut missed = Vec::new();
    for guard in GUARDED {
        for size in 1..=40usize {
            let layout = Layout::from_size_align(size, 1).unwrap();
            let pool = pool_of("odd-sizes", layout, guard);
            let block = pool.allocate().unwrap();
            flip_byte(block.as_ptr().wrapping_add(pool.block_size()));
            match free_owned(&pool, block) {
                Err(PoolError::Corruption {
                    kind: CorruptionKind::CanaryOverwritten,
                    ..
                }) => {}
                other => missed.push(format!(
                    "{guard:?} size {size} (block_size {}): {other:?}",
                    pool.block_size()
                )),
            }
        }
    }
    assert!(
        missed.is_empty(),
        "a write one byte past block_size() went undetected for:\n{}",
        missed.join("\n")
    );
}

#[test]
fn canary_overwritten_while_free_is_caught_on_reuse() {
    for guard in GUARDED {
        let pool = pool("canary-reuse", guard);
        let block = pool.allocate().unwrap();
        let addr = block.as_ptr() as usize;
        free_owned(&pool, block).unwrap();
        flip_byte(block.as_ptr().wrapping_add(pool.block_size()));
        // The cache is LIFO: the next allocation tries the damaged block first.
        let (kind, address, _) = corruption(pool.allocate());
        assert_eq!(
            (kind, address),
            (CorruptionKind::CanaryOverwritten, addr),
            "{guard:?}"
        );
        assert_eq!(pool.stats().corruption_events, 1);
        assert_usable(&pool, 1000, &[addr]);
    }
}

// ----- double free ----------------------------------------------------------------------

#[test]
fn double_free_is_caught() {
    for guard in GUARDED {
        let pool = pool("twice", guard);
        let a = pool.allocate().unwrap();
        let addr = a.as_ptr() as usize;
        free_owned(&pool, a).unwrap();
        // Nothing was allocated since: `a` is free, and nobody holds it.
        let (kind, address, message) = free_refused(&pool, a);
        assert_eq!(
            (kind, address),
            (CorruptionKind::DoubleFree, addr),
            "{guard:?}"
        );
        assert!(
            message.contains("`twice`") && message.contains("double free"),
            "{message}"
        );
        assert!(message.contains(&format!("{addr:#x}")), "{message}");
        let stats = pool.stats();
        assert_eq!(stats.corruption_events, 1, "{stats:?}");
        assert_eq!(
            (stats.allocations, stats.frees, stats.live_blocks),
            (1, 1, 0),
            "{stats:?}"
        );

        // The block is in circulation once, not twice.
        let x = pool.allocate().unwrap();
        let y = pool.allocate().unwrap();
        assert_ne!(
            x, y,
            "{guard:?}: a double free put the block into circulation twice"
        );
        free_owned(&pool, x).unwrap();
        free_owned(&pool, y).unwrap();
        assert_usable(&pool, 1000, &[]);
    }
}

#[test]
fn double_free_is_caught_after_the_block_moved_to_the_depot_and_on_another_thread() {
    for guard in GUARDED {
        let pool = pool("twice-far", guard);
        let a = pool.allocate().unwrap();
        let others: Vec<_> = (0..500).map(|_| pool.allocate().unwrap()).collect();
        free_owned(&pool, a).unwrap();
        // `reclaim` flushes this thread's cache, `a` included, into the depot; the live
        // `others` keep the chunk from being reclaimed.
        pool.reclaim();
        assert_eq!(pool.stats().chunks, 1);
        // Still nothing allocated since: `a` is free in the depot.
        let (kind, _, _) = free_refused(&pool, a);
        assert_eq!(kind, CorruptionKind::DoubleFree, "{guard:?}");
        let addr = a.as_ptr() as usize;
        let kind = std::thread::scope(|s| {
            // This thread waits in `join`: nothing allocates meanwhile.
            s.spawn(|| {
                let a = NonNull::new(addr as *mut u8).unwrap();
                free_refused(&pool, a).0
            })
            .join()
            .unwrap()
        });
        assert_eq!(kind, CorruptionKind::DoubleFree, "{guard:?}");
        for b in others {
            free_owned(&pool, b).unwrap();
        }
        assert_eq!(pool.stats().corruption_events, 2);
        assert_eq!(pool.stats().live_blocks, 0);
        // No block comes back twice.
        let blocks: Vec<_> = (0..501).map(|_| pool.allocate().unwrap()).collect();
        let distinct: HashSet<_> = blocks.iter().map(|b| b.as_ptr() as usize).collect();
        assert_eq!(distinct.len(), 501, "{guard:?}");
        for b in blocks {
            free_owned(&pool, b).unwrap();
        }
    }
}

// ----- foreign and interior pointers ----------------------------------------------------

#[test]
fn foreign_pointers_are_refused() {
    for guard in GUARDS {
        let pool = pool("home", guard);
        let other = pool_of("elsewhere", Layout::new::<[u64; 8]>(), guard);
        let held = pool.allocate().unwrap();
        stamp(held, 1, 0x600D);

        let boxed = Box::new([0u64; 8]);
        let from_box = NonNull::from(&*boxed).cast::<u8>();
        let (kind, address, message) = free_refused(&pool, from_box);
        assert_eq!(
            (kind, address),
            (CorruptionKind::ForeignPointer, from_box.as_ptr() as usize)
        );
        assert!(message.contains("`home`"), "{message}");
        assert!(
            message.contains("belongs to no chunk of this pool"),
            "{message}"
        );
        assert_eq!(
            *boxed, [0u64; 8],
            "the pool did not write through a foreign pointer"
        );

        // A block of another pool: refused, and left untouched, so its own pool takes it.
        let theirs = other.allocate().unwrap();
        stamp(theirs, 1, 0xBEEF);
        let (kind, address, _) = free_refused(&pool, theirs);
        assert_eq!(
            (kind, address),
            (CorruptionKind::ForeignPointer, theirs.as_ptr() as usize)
        );
        check(theirs, 1, 0xBEEF, "a block of another pool");
        free_owned(&other, theirs).unwrap();
        assert_eq!(other.stats().corruption_events, 0);

        let on_stack = [0u64; 8];
        let stack_ptr = NonNull::from(&on_stack).cast::<u8>();
        let (kind, _, _) = free_refused(&pool, stack_ptr);
        assert_eq!(kind, CorruptionKind::ForeignPointer, "{guard:?}");
        assert_eq!(on_stack, [0u64; 8]);

        // Wild addresses, mapped or not, are refused without being read.
        for wild in [8usize, 4096, 1 << 47, usize::MAX & !7] {
            let (kind, address, _) = free_refused(&pool, NonNull::new(wild as *mut u8).unwrap());
            assert_eq!(
                (kind, address),
                (CorruptionKind::ForeignPointer, wild),
                "{guard:?}"
            );
        }

        // A block of a pool that has been dropped (its memory is unmapped).
        let gone = {
            let dropped = pool_of("dropped", Layout::new::<[u64; 8]>(), guard);
            dropped.allocate().unwrap()
        };
        let (kind, _, _) = free_refused(&pool, gone);
        assert_eq!(kind, CorruptionKind::ForeignPointer, "{guard:?}");

        assert_eq!(
            pool.stats().corruption_events,
            8,
            "{guard:?}: {:?}",
            pool.stats()
        );
        check(held, 1, 0x600D, "a block held all along");
        free_owned(&pool, held).unwrap();
        assert_usable(&pool, 1000, &[]);
    }
}

#[test]
fn interior_pointers_are_refused() {
    for guard in GUARDS {
        let pool = pool("interior", guard);
        let block = pool.allocate().unwrap();
        let addr = block.as_ptr() as usize;
        let size = pool.block_size();
        let mut offsets = vec![1, 7, 8, size / 2, size - 1];
        if guard != GuardLevel::Off {
            // The canary word after the block.
            offsets.push(size);
        }
        let mut expected_events = 0;
        for offset in offsets {
            let p = NonNull::new(block.as_ptr().wrapping_add(offset)).unwrap();
            let (kind, address, message) = free_refused(&pool, p);
            assert_eq!(
                (kind, address),
                (CorruptionKind::InteriorPointer, addr + offset),
                "{guard:?} offset {offset}"
            );
            assert!(
                message.contains("not point at the start of a block"),
                "{message}"
            );
            expected_events += 1;
        }
        // The chunk's header.
        let header = NonNull::new((addr & !(CHUNK_SIZE - 1)) as *mut u8).unwrap();
        let (kind, _, _) = free_refused(&pool, header);
        assert_eq!(kind, CorruptionKind::InteriorPointer, "{guard:?}");
        expected_events += 1;
        assert_eq!(pool.stats().corruption_events, expected_events);

        // None of that disturbed the block: it frees normally, once.
        free_owned(&pool, block).unwrap();
        if guard != GuardLevel::Off {
            assert_eq!(free_refused(&pool, block).0, CorruptionKind::DoubleFree);
        }
        let stats = pool.stats();
        assert_eq!(
            (stats.allocations, stats.frees, stats.live_blocks),
            (1, 1, 0),
            "{stats:?}"
        );
        assert_usable(&pool, 1000, &[]);
    }
}

// ----- blocks nobody holds --------------------------------------------------------------

/// The start of the block `blocks` blocks after `block` in a pool of 8-aligned blocks: the
/// stride is the usable size plus, under a guard, the 8-byte check word. Asserts that it
/// lies in the same chunk.
fn block_after(pool: &BlockPool, block: NonNull<u8>, blocks: usize) -> NonNull<u8> {
    let canary = if pool.guard() == GuardLevel::Off {
        0
    } else {
        8
    };
    let stride = pool.block_size() + canary;
    let addr = block.as_ptr() as usize;
    let after = addr + stride * blocks;
    assert_eq!(
        after & !(CHUNK_SIZE - 1),
        addr & !(CHUNK_SIZE - 1),
        "block {blocks} after {addr:#x} is in another chunk"
    );
    NonNull::new(after as *mut u8).unwrap()
}

#[test]
fn a_never_carved_block_is_refused_under_canary_and_full() {
    for guard in GUARDED {
        let pool = pool("never-carved", guard);
        let first = pool.allocate().unwrap();
        // The first allocation carved at most 2,048 of the chunk's 14,562 blocks of 72
        // bytes: 10,000 blocks on lies a block start that nobody carved yet.
        let uncarved = block_after(&pool, first, 10_000);
        let addr = uncarved.as_ptr() as usize;
        let (kind, address, message) = free_refused(&pool, uncarved);
        assert_eq!(
            (kind, address),
            (CorruptionKind::CanaryOverwritten, addr),
            "{guard:?}: its check word never held the allocated mark: {message}"
        );
        assert!(message.contains("`never-carved`"), "{message}");
        let stats = pool.stats();
        assert_eq!(
            (stats.corruption_events, stats.frees, stats.live_blocks),
            (1, 0, 1),
            "{guard:?}: {stats:?}"
        );

        // The refusal left the block alone: once the pool carves that far, it hands the
        // block out like any other, once.
        let mut blocks = vec![first];
        loop {
            assert!(
                blocks.len() < 14_000,
                "{guard:?}: {addr:#x} was never handed out"
            );
            let b = pool.allocate().unwrap();
            blocks.push(b);
            if b == uncarved {
                break;
            }
        }
        let distinct: HashSet<_> = blocks.iter().map(|b| b.as_ptr() as usize).collect();
        assert_eq!(
            distinct.len(),
            blocks.len(),
            "{guard:?}: a block handed out twice"
        );
        for b in blocks {
            free_owned(&pool, b).unwrap();
        }
        assert_eq!(pool.stats().corruption_events, 1);
        assert_usable(&pool, 1000, &[]);
    }
}

#[test]
fn a_block_of_a_reclaimed_chunk_is_refused_under_canary_and_full() {
    for guard in GUARDED {
        let pool = pool("reclaimed", guard);
        // At most 56 blocks of 72 bytes fit in the chunk's first page, which reclaim keeps
        // (it holds the header): blocks there keep the free mark (a double free), and the
        // check words of the others read as zero once their pages are given back.
        let blocks: Vec<_> = (0..100).map(|_| pool.allocate().unwrap()).collect();
        for &b in &blocks {
            free_owned(&pool, b).unwrap();
        }
        assert!(pool.reclaim() > 0);
        assert_eq!(pool.stats().chunks, 0, "{guard:?}");

        let mut kinds = HashSet::new();
        for &b in &blocks {
            let (kind, address, message) = free_refused(&pool, b);
            assert_eq!(address, b.as_ptr() as usize, "{guard:?}");
            assert!(
                matches!(
                    kind,
                    CorruptionKind::DoubleFree | CorruptionKind::CanaryOverwritten
                ),
                "{guard:?}: {message}"
            );
            kinds.insert(kind);
        }
        assert!(
            kinds.contains(&CorruptionKind::CanaryOverwritten),
            "{guard:?}: some blocks lay past the kept page: {kinds:?}"
        );
        let stats = pool.stats();
        assert_eq!(
            (stats.corruption_events, stats.frees, stats.live_blocks),
            (100, 100, 0),
            "{guard:?}: {stats:?}"
        );

        // The chunk is reused, and none of its blocks is handed out twice.
        assert_usable(&pool, 1000, &[]);
        assert_eq!(pool.stats().corruption_events, 100);
    }
}

// ----- use after free -------------------------------------------------------------------

/// Frees a block, writes into it, and allocates until the pool reports it. Returns the
/// blocks allocated successfully on the way and the freed block's address.
fn provoke_use_after_free(pool: &BlockPool, offset: usize) -> (Vec<NonNull<u8>>, usize) {
    let victim = pool.allocate().unwrap();
    let addr = victim.as_ptr() as usize;
    free_owned(pool, victim).unwrap();
    flip_byte(victim.as_ptr().wrapping_add(offset));
    let mut got = Vec::new();
    for _ in 0..10_000 {
        match pool.allocate() {
            Ok(b) => got.push(b),
            Err(e) => {
                let (kind, address, message) = corruption::<()>(Err(e));
                assert_eq!(
                    (kind, address),
                    (CorruptionKind::UseAfterFree, addr),
                    "{message}"
                );
                assert!(message.contains("use after free"), "{message}");
                assert!(message.contains(&format!("{addr:#x}")), "{message}");
                return (got, addr);
            }
        }
    }
    panic!("a write into a freed block was never reported under GuardLevel::Full");
}

#[test]
fn use_after_free_is_caught_on_reuse_under_full() {
    for offset in [0, 17, 63] {
        let pool = pool("uaf", GuardLevel::Full);
        let (got, addr) = provoke_use_after_free(&pool, offset);
        // The cache is LIFO, so the very next allocation met the damaged block.
        assert!(
            got.is_empty(),
            "offset {offset}: reported after {} allocations",
            got.len()
        );
        assert_eq!(pool.stats().corruption_events, 1);
        // The next allocation proceeds with another block, and the damaged one stays out.
        let next = pool.allocate().unwrap();
        assert_ne!(next.as_ptr() as usize, addr);
        free_owned(&pool, next).unwrap();
        assert_usable(&pool, 1000, &[addr]);
        assert_eq!(pool.stats().corruption_events, 1);
    }
}

#[test]
fn use_after_free_is_caught_after_the_block_went_through_the_depot() {
    let pool = pool("uaf-depot", GuardLevel::Full);
    let victim = pool.allocate().unwrap();
    let addr = victim.as_ptr() as usize;
    let others: Vec<_> = (0..300).map(|_| pool.allocate().unwrap()).collect();
    for b in others {
        free_owned(&pool, b).unwrap();
    }
    // Another thread frees the victim and exits: its cache, the victim alone, goes to the
    // depot as the most recent magazine.
    std::thread::scope(|s| {
        s.spawn(|| free_owned(&pool, NonNull::new(addr as *mut u8).unwrap()).unwrap())
            .join()
            .unwrap();
    });
    flip_byte(victim.as_ptr().wrapping_add(40));
    // A third thread, with an empty cache, takes that magazine first: it must meet the
    // damaged block and report it, then carry on with other blocks.
    let (found, ok) = std::thread::scope(|s| {
        s.spawn(|| {
            let mut ok = Vec::new();
            let mut found = None;
            for _ in 0..400 {
                match pool.allocate() {
                    Ok(b) => ok.push(b.as_ptr() as usize),
                    Err(e) => {
                        assert!(found.is_none(), "a second error: {e}");
                        found = Some((ok.len(), corruption::<()>(Err(e))));
                    }
                }
            }
            for &b in &ok {
                free_owned(&pool, NonNull::new(b as *mut u8).unwrap()).unwrap();
            }
            (found, ok)
        })
        .join()
        .unwrap()
    });
    let (after, (kind, address, _)) =
        found.expect("the write into the freed block was not reported");
    assert_eq!((kind, address), (CorruptionKind::UseAfterFree, addr));
    assert_eq!(
        after, 0,
        "the victim's magazine was the last one pushed, so it came first"
    );
    assert_eq!(ok.len(), 399);
    assert!(!ok.contains(&addr), "the damaged block was handed out");
    assert_eq!(pool.stats().corruption_events, 1);
}

/// `stats().allocations` counts successful allocations and `live_blocks` the blocks
/// allocated and not yet freed; an allocation refused because the guard found the block
/// damaged is neither.
///
/// LIBRARY BUG (found by this test): `BlockPool::allocate` bumps the thread's allocation
/// counter before `hand_out` checks the guard (fast path in `block/mod.rs`, and
/// `allocate_slow` / `allocate_uncached` in `block/pool.rs`), so each refused allocation
/// counts as a successful one and `live_blocks` stays one too high forever.
#[test]
fn refused_allocations_are_not_counted() {
    let pool = pool("uaf-stats", GuardLevel::Full);
    let (got, _) = provoke_use_after_free(&pool, 0);
    assert!(got.is_empty());
    let stats = pool.stats();
    assert_eq!(stats.corruption_events, 1, "{stats:?}");
    assert_eq!(
        stats.allocations, 1,
        "one successful allocation (the victim): {stats:?}"
    );
    assert_eq!(stats.frees, 1, "{stats:?}");
    assert_eq!(stats.live_blocks, 0, "the test holds no block: {stats:?}");
}

// ----- exhaustion and configuration -----------------------------------------------------

#[test]
fn exhaustion_names_the_pool_and_the_cap() {
    let pool = BlockPool::new(
        BlockPoolConfig::new(Layout::new::<[u64; 8]>())
            .name("order-book")
            .max_capacity(10),
    )
    .unwrap();
    let mut blocks: Vec<_> = (0..10).map(|_| pool.allocate().unwrap()).collect();
    let err = pool.allocate().unwrap_err();
    assert_eq!(
        err,
        PoolError::Exhausted {
            pool: "order-book".into(),
            max_capacity: 10
        }
    );
    let message = err.to_string();
    assert!(message.contains("`order-book`"), "{message}");
    assert!(message.contains("cap of 10 blocks"), "{message}");
    assert!(message.contains("raise `max_capacity`"), "{message}");
    assert_eq!(pool.stats().live_blocks, 10);
    assert_eq!(
        pool.stats().corruption_events,
        0,
        "exhaustion is not corruption"
    );

    // Freeing one makes room for exactly one.
    free_owned(&pool, blocks.pop().unwrap()).unwrap();
    blocks.push(pool.allocate().unwrap());
    assert!(matches!(
        pool.allocate(),
        Err(PoolError::Exhausted {
            max_capacity: 10,
            ..
        })
    ));
    for b in blocks {
        free_owned(&pool, b).unwrap();
    }
    assert_eq!(pool.stats().live_blocks, 0);
    let again: Vec<_> = (0..10).map(|_| pool.allocate().unwrap()).collect();
    assert_eq!(
        again
            .iter()
            .map(|b| b.as_ptr())
            .collect::<HashSet<_>>()
            .len(),
        10
    );
    for b in again {
        free_owned(&pool, b).unwrap();
    }
}

#[test]
fn exhaustion_across_several_chunks() {
    // 64 KiB blocks: about 15 to a chunk, so a cap of 40 needs three chunks.
    let pool = BlockPool::new(
        BlockPoolConfig::new(Layout::from_size_align(64 * 1024, 8).unwrap())
            .name("big-blocks")
            .guard(GuardLevel::Off)
            .max_capacity(40),
    )
    .unwrap();
    let blocks: Vec<_> = (0..40).map(|_| pool.allocate().unwrap()).collect();
    let err = pool.allocate().unwrap_err();
    assert!(
        err.to_string().contains("`big-blocks`") && err.to_string().contains("40"),
        "{err}"
    );
    let stats = pool.stats();
    assert_eq!(stats.chunks, 3, "{stats:?}");
    assert_eq!(
        stats.capacity, 40,
        "capacity is capped at max_capacity: {stats:?}"
    );
    assert_eq!(stats.max_capacity, 40);
    for b in blocks {
        free_owned(&pool, b).unwrap();
    }
    assert!(pool.reclaim() > 0);
    assert_eq!(pool.stats().chunks, 0);
}

#[test]
fn capacity_above_max_capacity_is_invalid() {
    let err = BlockPool::new(
        BlockPoolConfig::new(Layout::new::<u64>())
            .name("too-eager")
            .capacity(100)
            .max_capacity(10),
    )
    .unwrap_err();
    assert!(
        matches!(&err, PoolError::InvalidConfig { pool, .. } if pool == "too-eager"),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains("invalid pool configuration"), "{message}");
    assert!(message.contains("`too-eager`"), "{message}");
    assert!(message.contains("`capacity` (100)"), "{message}");
    assert!(message.contains("`max_capacity` (10)"), "{message}");

    let err = BlockPool::new(
        BlockPoolConfig::new(Layout::new::<u64>())
            .name("no-room")
            .max_capacity(0),
    )
    .unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, PoolError::InvalidConfig { .. }), "{err:?}");
    assert!(
        message.contains("`no-room`") && message.contains("at least 1"),
        "{message}"
    );

    // Equal is fine.
    let pool = BlockPool::new(
        BlockPoolConfig::new(Layout::new::<u64>())
            .capacity(10)
            .max_capacity(10),
    )
    .unwrap();
    let blocks: Vec<_> = (0..10).map(|_| pool.allocate().unwrap()).collect();
    assert!(matches!(pool.allocate(), Err(PoolError::Exhausted { .. })));
    for b in blocks {
        free_owned(&pool, b).unwrap();
    }
}

#[test]
fn unsupported_layouts_are_refused_with_the_reason() {
    let too_big = Layout::from_size_align(256 * 1024 + 1, 8).unwrap();
    let err = BlockPool::new(BlockPoolConfig::new(too_big).name("huge")).unwrap_err();
    assert!(
        matches!(err, PoolError::UnsupportedLayout { layout, .. } if layout == too_big),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains("size 262145"), "{message}");
    assert!(message.contains("alignment 8"), "{message}");
    assert!(message.contains("256 KiB"), "{message}");

    let too_aligned = Layout::from_size_align(64, 8192).unwrap();
    let err = BlockPool::new(BlockPoolConfig::new(too_aligned)).unwrap_err();
    assert!(
        matches!(err, PoolError::UnsupportedLayout { .. }),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains("alignment 8192"), "{message}");
    assert!(message.contains("at most 4096"), "{message}");

    // The limits themselves are accepted, under every guard.
    for guard in GUARDS {
        let largest = Layout::from_size_align(256 * 1024, 4096).unwrap();
        let pool = pool_of("largest", largest, guard);
        let blocks: Vec<_> = (0..5).map(|_| pool.allocate().unwrap()).collect();
        for (i, b) in blocks.iter().enumerate() {
            assert_eq!(b.as_ptr() as usize % 4096, 0, "{guard:?}");
            stamp(*b, 1, i as u64);
            let last = b.as_ptr().wrapping_add(256 * 1024 - 1);
            // SAFETY: the block is live and 256 KiB long, so its last byte is inside it.
            unsafe { last.write(0x5A) };
        }
        for (i, b) in blocks.into_iter().enumerate() {
            check(b, 1, i as u64, "a block in use");
            free_owned(&pool, b).unwrap();
        }
    }
}

#[test]
fn interior_pointers_are_refused_in_a_chunk_already_freed_into() {
    // `free` skips the registry for the chunk this thread last freed into; the block-start
    // check must still refuse interior pointers there.
    let pool = pool("known-chunk", GuardLevel::Off);
    let blocks: Vec<_> = (0..4).map(|_| pool.allocate().unwrap()).collect();
    free_owned(&pool, blocks[0]).unwrap();
    free_owned(&pool, blocks[1]).unwrap();
    let addr = blocks[2].as_ptr() as usize;
    for offset in [1, 8, pool.block_size() - 8] {
        let p = NonNull::new((addr + offset) as *mut u8).unwrap();
        let (kind, at, _) = free_refused(&pool, p);
        assert_eq!((kind, at), (CorruptionKind::InteriorPointer, addr + offset));
    }
    free_owned(&pool, blocks[2]).unwrap();
    free_owned(&pool, blocks[3]).unwrap();
    let stats = pool.stats();
    assert_eq!(
        (stats.live_blocks, stats.corruption_events),
        (0, 3),
        "{stats:?}"
    );
}

#[test]
fn a_block_of_another_pool_is_refused_where_a_dropped_pool_had_its_chunk() {
    // Pool A is freed into (this thread remembers A's chunk), then dropped. B takes A's
    // registry slot and C is created after it; mmap tends to hand A's chunk to one of them.
    // Whichever chunk C got, B must refuse C's blocks and take its own.
    for round in 0..20 {
        let a = pool("dropped", GuardLevel::Off);
        let x = a.allocate().unwrap();
        free_owned(&a, x).unwrap();
        drop(a);
        let b = pool("slot-heir", GuardLevel::Off);
        let c = pool("other", GuardLevel::Off);
        let foreign = c.allocate().unwrap();
        let (kind, at, _) = free_refused(&b, foreign);
        assert_eq!(
            (kind, at),
            (CorruptionKind::ForeignPointer, foreign.as_ptr() as usize),
            "round {round}"
        );
        let own = b.allocate().unwrap();
        free_owned(&b, own).unwrap();
        free_owned(&c, foreign).unwrap();
        assert_eq!(b.stats().live_blocks, 0);
        assert_eq!(c.stats().live_blocks, 0);
    }
}
