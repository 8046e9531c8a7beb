//! Scratch arenas: reset on return, retention up to the limit, nesting, trims, the
//! statistics component, many threads, unwinding and thread teardown.
//!
//! The retain limit and trim requests are process-wide, so these tests run one at a time
//! ([`serial`]); other tests of the crate may request trims (a pressure monitor at High), so
//! a test whose figures a trim would change runs again when one came meanwhile
//! ([`untrimmed`]).

use std::cell::RefCell;
use std::fmt::Write;
use std::ptr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::channel;
use std::sync::{Arc, Barrier, Mutex, MutexGuard};

use bumpalo::collections::{String as BumpString, Vec as BumpVec};

use super::local::{component_id, trim_epoch};
use super::*;
use crate::stats::{self, Kind};

/// Serialises the tests of this module, and (some call `stats::report()`, which moves the
/// baseline of "refused since the last report") with those of the report.
fn serial() -> (MutexGuard<'static, ()>, MutexGuard<'static, ()>) {
    static SERIAL: Mutex<()> = Mutex::new(());
    let arena = SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    (arena, stats::tests::serial())
}

/// Sets the retain limit for one test and puts the default back after it.
struct Limit;

impl Limit {
    fn set(bytes: usize) -> Self {
        set_retain_limit(bytes);
        Self
    }
}

impl Drop for Limit {
    fn drop(&mut self) {
        set_retain_limit(DEFAULT_RETAIN_LIMIT);
    }
}

/// Trims requested by the running test through [`trim_here`].
static OWN_TRIMS: AtomicU64 = AtomicU64::new(0);

/// [`trim`], counted as the running test's own.
fn trim_here() {
    OWN_TRIMS.fetch_add(1, Ordering::SeqCst);
    trim();
}

/// Runs `body` until no trim but its own ([`trim_here`]) was requested while it ran.
fn untrimmed<T>(mut body: impl FnMut() -> T) -> T {
    for _ in 0..100 {
        let (before, own) = (trim_epoch(), OWN_TRIMS.load(Ordering::SeqCst));
        let result = body();
        if trim_epoch() - before == OWN_TRIMS.load(Ordering::SeqCst) - own {
            return result;
        }
    }
    panic!("trims kept coming for 100 attempts");
}

/// Bytes handed out by `bump` so far: its chunk bytes less the room left in its chunk.
fn used(bump: &Bump) -> usize {
    bump.allocated_bytes() - bump.chunk_capacity()
}

#[test]
fn the_arena_is_reset_on_return_and_its_memory_reused() {
    let _serial = serial();
    let (first, second, used_at_entry, kept) = untrimmed(|| {
        let first = scratch(|bump| {
            bump.alloc_slice_fill_copy(1000, 7_u64);
            bump.alloc(1_u64) as *const u64 as usize
        });
        scratch(|bump| {
            let used_at_entry = used(bump);
            let kept = bump.allocated_bytes();
            let second = bump.alloc_slice_fill_copy(1000, 9_u64);
            assert!(second.iter().all(|&x| x == 9));
            let second = bump.alloc(2_u64) as *const u64 as usize;
            (first, second, used_at_entry, kept)
        })
    });
    assert_eq!(
        used_at_entry, 0,
        "the second call starts from an empty arena"
    );
    assert!(kept >= 8000, "the first call's chunk is kept: {kept} bytes");
    assert_eq!(first, second, "the same layouts land at the same addresses");
}

#[test]
fn capacity_is_kept_up_to_the_limit_and_not_beyond() {
    let _serial = serial();
    let _limit = Limit::set(64 << 10);
    let (small, large, count) = untrimmed(|| {
        trim_here();
        scratch(|bump| {
            bump.alloc_slice_fill_copy(16 << 10, 1_u8);
        });
        let small = retained_bytes();
        scratch(|bump| {
            bump.alloc_slice_fill_copy(256 << 10, 1_u8);
        });
        let large = retained_bytes();
        // What a call made with the limit in force starts with.
        let count = scratch(|bump| bump.allocated_bytes());
        (small, large, count)
    });
    assert!(small > 16 << 10 && small <= 64 << 10, "kept {small} bytes");
    assert_eq!(large, 0, "a chunk above the limit is freed, not kept");
    assert_eq!(count, 0);

    let _none = Limit::set(0);
    let kept = untrimmed(|| {
        scratch(|bump| {
            bump.alloc(1_u8);
        });
        retained_bytes()
    });
    assert_eq!(kept, 0, "a limit of 0 keeps nothing");
}

#[test]
fn idle_arenas_are_freed_smallest_first_and_at_most_max_idle() {
    let _serial = serial();
    let one = untrimmed(|| {
        trim_here();
        scratch(|bump| {
            bump.alloc_slice_fill_copy(1024, 0_u8);
        });
        retained_bytes()
    });
    assert!(one > 1024);
    // Six levels deep, each with the same allocation: four arenas stay.
    fn nest(depth: usize) {
        scratch(|bump| {
            bump.alloc_slice_fill_copy(1024, depth as u8);
            if depth > 1 {
                nest(depth - 1);
            }
        });
    }
    let deep = untrimmed(|| {
        trim_here();
        nest(6);
        retained_bytes()
    });
    assert_eq!(deep, MAX_IDLE_ARENAS * one);

    // A larger arena pushes out smaller ones when the limit is reached: measure the
    // arena a call leaves when it grows one of `one` with a 4 KiB allocation…
    let grow = || {
        scratch(|bump| {
            bump.alloc_slice_fill_copy(4096, 0_u8);
        })
    };
    let big = untrimmed(|| {
        trim_here();
        scratch(|bump| {
            bump.alloc_slice_fill_copy(1024, 0_u8);
        });
        grow();
        retained_bytes()
    });
    assert!(big >= 2 * one, "{big} against {one}");
    // … then, with room for it and two of `one`, grow one of four.
    let _limit = Limit::set(big + 2 * one);
    let (four, after) = untrimmed(|| {
        trim_here();
        nest(4);
        let four = retained_bytes();
        grow();
        (four, retained_bytes())
    });
    assert_eq!(four, 4 * one);
    assert_eq!(
        after,
        big + 2 * one,
        "the larger arena stays, the smallest go"
    );
}

#[test]
fn a_nested_call_gets_a_separate_arena() {
    let _serial = serial();
    scratch(|outer| {
        let kept = outer.alloc_slice_fill_copy(4096, 0xAA_u8);
        for _ in 0..3 {
            scratch(|inner| {
                assert!(!ptr::eq(outer, inner));
                let other = inner.alloc_slice_fill_copy(64 << 10, 0x55_u8);
                let inside = |p: *const u8| kept.as_ptr_range().contains(&p);
                assert!(!inside(other.as_ptr()));
                assert!(!inside(other.as_ptr().wrapping_add(other.len() - 1)));
            });
        }
        assert!(
            kept.iter().all(|&b| b == 0xAA),
            "the inner resets left the outer alone"
        );
        let later = outer.alloc(3_u32);
        assert_eq!(*later, 3);
    });
}

#[test]
fn trim_frees_now_on_the_calling_thread_and_later_on_others() {
    let _serial = serial();
    let (before, after) = untrimmed(|| {
        scratch(|bump| {
            bump.alloc_slice_fill_copy(8192, 0_u8);
        });
        let before = retained_bytes();
        trim_here();
        (before, retained_bytes())
    });
    assert!(before > 8192);
    assert_eq!(after, 0);

    // An arena lent when the trim comes is freed when its call returns.
    scratch(|bump| {
        bump.alloc_slice_fill_copy(8192, 0_u8);
        trim_here();
    });
    assert_eq!(retained_bytes(), 0);

    // Another thread keeps its arena until its own next call.
    let (to_owner, owner_rx) = channel::<()>();
    let (to_main, main_rx) = channel::<usize>();
    let owner = std::thread::spawn(move || {
        scratch(|bump| {
            bump.alloc_slice_fill_copy(8192, 0_u8);
        });
        to_main.send(retained_bytes()).unwrap();
        owner_rx.recv().unwrap(); // the trim was requested
        let idle = retained_bytes();
        let at_entry = scratch(|bump| bump.allocated_bytes());
        (idle, at_entry)
    });
    assert!(main_rx.recv().unwrap() > 8192);
    trim_here();
    to_owner.send(()).unwrap();
    let (idle, at_entry) = owner.join().unwrap();
    assert!(idle > 8192, "never freed by another thread");
    assert_eq!(at_entry, 0, "freed by the owner at its next call");
}

#[test]
fn the_report_shows_each_threads_arena() {
    let _serial = serial();
    let (id, inside, lent, outside, kept) = untrimmed(|| {
        trim_here();
        scratch(|bump| {
            bump.alloc_slice_fill_copy(4096, 0_u8);
        });
        let lent = retained_bytes();
        let id = component_id().unwrap();
        let row = |report: &stats::MemoryReport| {
            report
                .components
                .iter()
                .find(|c| c.id == id)
                .cloned()
                .unwrap()
        };
        let inside = scratch(|_| row(&stats::report()));
        (id, inside, lent, row(&stats::report()), retained_bytes())
    });
    assert_eq!(inside.kind, Kind::Arena);
    assert!(inside.name.starts_with("scratch ("), "{}", inside.name);
    assert_eq!(inside.live_objects, 1);
    assert_eq!(inside.memory.live_bytes, lent as u64);
    assert_eq!(inside.memory.free_bytes, 0);
    assert_eq!(outside.live_objects, 0);
    assert_eq!(outside.memory.live_bytes, 0);
    assert_eq!(outside.memory.free_bytes, kept as u64);
    assert_eq!(outside.memory.mapped_bytes, kept as u64);
    assert_eq!(outside.counters.acquires, outside.counters.releases);
    assert!(outside.counters.acquires >= 2);
    assert_eq!(
        stats::report()
            .components
            .iter()
            .filter(|c| c.id == id)
            .count(),
        1
    );

    // A thread's component leaves the report when the thread exits.
    let there = std::thread::spawn(|| {
        scratch(|bump| {
            bump.alloc(1_u8);
        });
        component_id().unwrap()
    })
    .join()
    .unwrap();
    assert!(!stats::report().components.iter().any(|c| c.id == there));
}

#[test]
fn many_threads_each_use_their_own_arena() {
    let _serial = serial();
    let threads = 8;
    let batches = if cfg!(miri) { 5 } else { 2_000 };
    let barrier = Arc::new(Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let mut total = 0_u64;
                for b in 0..batches {
                    total += scratch(|bump| {
                        let mut ids = BumpVec::new_in(bump);
                        ids.extend((0..64_u64).map(|i| i + t as u64 + b as u64));
                        let mut line = BumpString::new_in(bump);
                        for id in &ids {
                            write!(line, "{id},").unwrap();
                        }
                        let parsed: u64 = line
                            .split(',')
                            .filter(|s| !s.is_empty())
                            .map(|s| s.parse::<u64>().unwrap())
                            .sum();
                        assert_eq!(parsed, ids.iter().sum::<u64>());
                        parsed
                    });
                }
                assert!(retained_bytes() <= retain_limit());
                let id = component_id().unwrap();
                barrier.wait(); // all alive: the report lists every one
                barrier.wait();
                (total, id)
            })
        })
        .collect();
    barrier.wait();
    let report = stats::report();
    barrier.wait();
    let mut ids = Vec::new();
    for (t, handle) in handles.into_iter().enumerate() {
        let (total, id) = handle.join().unwrap();
        let expected: u64 = (0..batches as u64)
            .map(|b| (0..64).map(|i| i + t as u64 + b).sum::<u64>())
            .sum();
        assert_eq!(total, expected);
        let row = report.components.iter().find(|c| c.id == id).unwrap();
        assert_eq!(row.kind, Kind::Arena);
        assert_eq!(row.counters.acquires, batches as u64);
        ids.push(id);
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), threads, "one component per thread");
}

#[test]
fn an_unwinding_closure_gives_its_arena_back() {
    let _serial = serial();
    let caught = std::panic::catch_unwind(|| {
        scratch(|bump| {
            bump.alloc_slice_fill_copy(2048, 0_u8);
            panic!("a failing batch");
        })
    });
    assert!(caught.is_err());
    let (used_at_entry, open) = scratch(|bump| {
        let id = component_id().unwrap();
        let row = stats::report().components.into_iter().find(|c| c.id == id);
        (used(bump), row.unwrap().live_objects)
    });
    assert_eq!(used_at_entry, 0, "reset after the unwind");
    assert_eq!(open, 1, "only this call is counted as running");
}

#[test]
fn an_allocation_limit_set_in_a_call_does_not_outlive_it() {
    let _serial = serial();
    scratch(|bump| bump.set_allocation_limit(Some(0)));
    let limit = scratch(|bump| bump.allocation_limit());
    assert_eq!(limit, None);
}

/// Calls [`scratch`] from a thread-local destructor and records what it computed.
struct LateUser(Arc<AtomicU64>);

impl Drop for LateUser {
    fn drop(&mut self) {
        let value = scratch(|bump| {
            let mut v = BumpVec::new_in(bump);
            v.extend([20_u64, 22]);
            v.iter().sum::<u64>()
        });
        self.0.store(value, Ordering::SeqCst);
        retained_bytes(); // and reads the retained bytes, without a panic
        trim_here();
    }
}

std::thread_local! {
    static LATE: RefCell<Option<LateUser>> = const { RefCell::new(None) };
}

#[test]
fn calls_during_thread_teardown_work() {
    let _serial = serial();
    // Either order of initialisation: the arena's storage torn down before or after the
    // destructor that calls `scratch`.
    for arena_first in [true, false] {
        let seen = Arc::new(AtomicU64::new(0));
        let late = LateUser(Arc::clone(&seen));
        std::thread::spawn(move || {
            if arena_first {
                scratch(|bump| {
                    bump.alloc(1_u8);
                });
            }
            LATE.with(|slot| *slot.borrow_mut() = Some(late));
            if !arena_first {
                scratch(|bump| {
                    bump.alloc(1_u8);
                });
            }
        })
        .join()
        .unwrap();
        assert_eq!(
            seen.load(Ordering::SeqCst),
            42,
            "arena first: {arena_first}"
        );
    }
}
