//! `TallyAlloc` as the global allocator of a whole program: std collections, strings,
//! `format!`, `HashMap` growth, frees on another thread, thread-local destructors that
//! allocate (also after the thread's cache is gone), every alignment from 1 to 64 KiB,
//! sizes from 0 to 64 MiB, `realloc` up and down across classes, and a forked child that
//! allocates while other threads of the parent do.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use core::alloc::{GlobalAlloc, Layout};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::channel;
use std::sync::Arc;

use tally_pool::alloc::TallyAlloc;

#[global_allocator]
static GLOBAL: TallyAlloc = TallyAlloc::new();

#[test]
fn std_collections_strings_and_format() {
    let mut v: Vec<String> = (0..10_000).map(|i| format!("item {i:05}")).collect();
    v.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(v[0], "item 09999");
    let joined = v[..3].join(",");
    assert_eq!(joined, "item 09999,item 09998,item 09997");
    let mut q: VecDeque<Box<[u8; 100]>> = VecDeque::new();
    for i in 0..1000u32 {
        q.push_back(Box::new([i as u8; 100]));
        if i % 3 == 0 {
            q.pop_front();
        }
    }
    assert!(q.iter().all(|b| b.iter().all(|&x| x == b[0])));
    let tree: BTreeMap<u64, String> = (0..20_000u64).map(|i| (i * 7, i.to_string())).collect();
    assert_eq!(tree[&(1234 * 7)], "1234");
    let set: HashSet<String> = v.iter().cloned().collect();
    assert_eq!(set.len(), 10_000);
}

#[test]
fn hash_map_growth_keeps_every_entry() {
    let mut m: HashMap<u64, Vec<u64>> = HashMap::new();
    for i in 0..200_000u64 {
        m.insert(i, vec![i; (i % 17) as usize]);
    }
    for i in (0..200_000u64).step_by(997) {
        assert_eq!(m[&i], vec![i; (i % 17) as usize]);
    }
    m.retain(|k, _| k % 2 == 0);
    m.shrink_to_fit();
    assert_eq!(m.len(), 100_000);
}

#[test]
fn frees_on_another_thread() {
    let (tx, rx) = channel::<Vec<Box<u64>>>();
    let consumer = std::thread::spawn(move || {
        let mut total = 0u64;
        for batch in rx {
            total += batch.iter().map(|b| **b).sum::<u64>();
        }
        total
    });
    let producers: Vec<_> = (0..4u64)
        .map(|t| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for round in 0..200u64 {
                    let batch: Vec<Box<u64>> = (0..100)
                        .map(|i| Box::new(t * 1_000_000 + round * 100 + i))
                        .collect();
                    tx.send(batch).unwrap();
                }
            })
        })
        .collect();
    drop(tx);
    for p in producers {
        p.join().unwrap();
    }
    let expected: u64 = (0..4u64)
        .flat_map(|t| (0..20_000u64).map(move |k| t * 1_000_000 + k))
        .sum();
    assert_eq!(consumer.join().unwrap(), expected);
}

/// Allocates in its destructor, and checks what it allocated.
struct AllocatesOnDrop(usize);

impl Drop for AllocatesOnDrop {
    fn drop(&mut self) {
        let v: Vec<String> = (0..self.0).map(|i| format!("{i}")).collect();
        assert_eq!(
            v.last().map(String::as_str),
            Some(&*format!("{}", self.0 - 1))
        );
        let big = vec![7u8; 100_000];
        assert_eq!(big[99_999], 7);
        DROPS.fetch_add(1, Ordering::Relaxed);
    }
}

static DROPS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Touched before the thread's first allocation. Thread-local destructors all run
    /// before the allocator's flush (a `pthread_key_create` destructor), so this one
    /// allocates from the cache too.
    static EARLY: RefCell<Option<AllocatesOnDrop>> = const { RefCell::new(None) };
    /// Touched after.
    static LATE: RefCell<Option<AllocatesOnDrop>> = const { RefCell::new(None) };
}

/// A thread's body: `EARLY` is touched before its first allocation, `LATE` after.
fn early_and_late() -> usize {
    EARLY.with(|e| *e.borrow_mut() = Some(AllocatesOnDrop(500)));
    let keep: Vec<u64> = (0..1000).collect();
    LATE.with(|l| *l.borrow_mut() = Some(AllocatesOnDrop(300)));
    keep.len()
}

/// Allocates in a `pthread_key_create` destructor: that of a key created after the
/// allocator's, which runs after the allocator's flush in the same round.
extern "C" fn allocates_in_key_destructor(_: *mut libc::c_void) {
    drop(AllocatesOnDrop(500));
}

/// A bare pthread's body: `early_and_late`, then sets the key (given as its argument) of
/// [`allocates_in_key_destructor`].
extern "C" fn early_and_late_raw(key: *mut libc::c_void) -> *mut libc::c_void {
    early_and_late();
    // SAFETY: the key the test created; a non-null value runs its destructor at exit.
    let rc = unsafe {
        libc::pthread_setspecific(
            key as usize as libc::pthread_key_t,
            std::ptr::dangling::<libc::c_void>(),
        )
    };
    assert_eq!(rc, 0);
    std::ptr::null_mut()
}

#[test]
fn thread_local_destructors_that_allocate() {
    let before = DROPS.load(Ordering::Relaxed);
    let uncached = GLOBAL.stats().uncached_allocations;
    // std threads: the test harness's spawn hooks allocate before the body runs, so both
    // destructors run while the thread's cache exists.
    let threads: Vec<_> = (0..8).map(|_| std::thread::spawn(early_and_late)).collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), 1000);
    }
    // This thread has allocated, so the allocator's flush key exists: one created now
    // comes after it, and its destructor runs after the flush, when the cache is gone, and
    // allocates from the heaps directly.
    let mut key: libc::pthread_key_t = 0;
    // SAFETY: `key` is a valid place for the key; the destructor may run on any thread.
    let rc = unsafe { libc::pthread_key_create(&mut key, Some(allocates_in_key_destructor)) };
    assert_eq!(rc, 0);
    let raw: Vec<libc::pthread_t> = (0..8)
        .map(|_| {
            // SAFETY: a zeroed `pthread_t` is a valid value to be overwritten.
            let mut t: libc::pthread_t = unsafe { std::mem::zeroed() };
            // SAFETY: default attributes; the body is an `extern "C"` fn that takes the
            // key by value and returns null.
            let rc = unsafe {
                libc::pthread_create(
                    &mut t,
                    std::ptr::null(),
                    early_and_late_raw,
                    key as usize as *mut libc::c_void,
                )
            };
            assert_eq!(rc, 0);
            t
        })
        .collect();
    for t in raw {
        // SAFETY: a thread created above, joined once.
        assert_eq!(unsafe { libc::pthread_join(t, std::ptr::null_mut()) }, 0);
    }
    assert_eq!(DROPS.load(Ordering::Relaxed) - before, 40);
    let s = GLOBAL.stats();
    assert_eq!(s.reentries, 0);
    assert!(
        s.uncached_allocations - uncached >= 8 * 500,
        "{} allocations without a cache",
        s.uncached_allocations - uncached
    );
}

#[test]
fn every_alignment_from_1_to_64_kib() {
    let mut align = 1;
    while align <= 64 * 1024 {
        for size in [1, align, 3 * align + 1, 40_000] {
            let layout = Layout::from_size_align(size, align).unwrap();
            // SAFETY: non-zero size.
            let p = unsafe { GLOBAL.alloc(layout) };
            assert!(!p.is_null(), "{layout:?}");
            assert_eq!(p as usize % align, 0, "{layout:?}");
            // SAFETY: `size` writable bytes, ours.
            unsafe { p.write_bytes(0x5A, size) };
            // SAFETY: non-zero size.
            let z = unsafe { GLOBAL.alloc_zeroed(layout) };
            assert_eq!(z as usize % align, 0, "{layout:?}");
            // SAFETY: `size` initialised bytes, ours.
            let zs = unsafe { core::slice::from_raw_parts(z, size) };
            assert!(zs.iter().all(|&b| b == 0), "{layout:?}");
            // SAFETY: `size` initialised bytes, ours.
            let ps = unsafe { core::slice::from_raw_parts(p, size) };
            assert!(ps.iter().all(|&b| b == 0x5A), "{layout:?}");
            // SAFETY: allocated above with `layout`, freed once each.
            unsafe { GLOBAL.dealloc(p, layout) };
            // SAFETY: as above.
            unsafe { GLOBAL.dealloc(z, layout) };
        }
        align *= 2;
    }
}

#[test]
fn sizes_from_0_to_64_mib() {
    let mut sizes = vec![0usize, 1, 7, 8, 9, 127, 128, 129];
    let mut p = 256;
    while p <= 64 << 20 {
        sizes.extend([p - 1, p, p + 1]);
        p *= 2;
    }
    for size in sizes {
        let mut v: Vec<u8> = Vec::with_capacity(size);
        v.resize(size, 0xC3);
        if size > 0 {
            assert_eq!(v[0], 0xC3);
            assert_eq!(v[size - 1], 0xC3);
        }
        let z = vec![0u8; size];
        assert!(z.iter().step_by(4093).all(|&b| b == 0));
    }
}

#[test]
fn realloc_up_and_down_across_classes() {
    let mut v: Vec<u32> = Vec::new();
    for i in 0..300_000u32 {
        v.push(i);
    }
    for keep in [100_000usize, 10_000, 5000, 1000, 100, 10, 1] {
        v.truncate(keep);
        v.shrink_to_fit();
        assert!(v.iter().enumerate().all(|(i, &x)| x == i as u32));
    }
    let mut s = String::new();
    for i in 0..50_000 {
        s.push(char::from(b'a' + (i % 26) as u8));
    }
    s.truncate(3);
    s.shrink_to_fit();
    assert_eq!(s, "abc");
    // Large to large keeps the bytes (mremap).
    let mut big = vec![1u8; 40 << 20];
    big.extend(std::iter::repeat_n(2u8, 8 << 20));
    assert_eq!(
        (big[0], big[(40 << 20) - 1], big[(48 << 20) - 1]),
        (1, 1, 2)
    );
    big.truncate(1 << 20);
    big.shrink_to_fit();
    assert_eq!(big[(1 << 20) - 1], 1);
}

#[test]
fn a_forked_child_allocates() {
    use std::time::{Duration, Instant};
    let stop = Arc::new(AtomicBool::new(false));
    // Churners trade with the heaps at every round (a flush gives their caches back), so
    // that a fork often finds one of them inside a heap: without the fork handlers, the
    // child would find that heap locked forever.
    let churners: Vec<_> = (0..2)
        .map(|_| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let v: Vec<String> = (0..4).map(|i| i.to_string()).collect();
                    std::hint::black_box(v);
                    GLOBAL.flush_thread_cache();
                }
            })
        })
        .collect();
    let mut failure = None;
    for round in 0..200 {
        // SAFETY: the child only allocates, computes and `_exit`s.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            // Through the heaps the churners use: the cache starts empty.
            GLOBAL.flush_thread_cache();
            let v: Vec<String> = (0..1_000).map(|i| format!("{i}")).collect();
            let m: HashMap<usize, &str> = v.iter().enumerate().map(|(i, s)| (i, &**s)).collect();
            let big = vec![3u8; 1 << 20];
            let ok = m[&999] == "999" && big[(1 << 20) - 1] == 3;
            // SAFETY: ends the child at once, running nothing of the parent's.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        // A child that has not exited within the deadline is stuck: killed, and the test
        // fails rather than hangs.
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut status = 0;
        let waited = loop {
            // SAFETY: polls our own child, writing its status into a live local.
            let waited = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if waited != 0 {
                break waited;
            }
            if Instant::now() > deadline {
                // SAFETY: signals our own child, which has not been reaped.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                // SAFETY: reaps it, writing its status into a live local.
                unsafe { libc::waitpid(pid, &mut status, 0) };
                break 0;
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        if waited != pid {
            failure = Some(format!("child {round} stuck, killed"));
            break;
        }
        if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
            failure = Some(format!("child {round} failed"));
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for c in churners {
        c.join().unwrap();
    }
    assert_eq!(failure, None);
}

#[cfg(feature = "rayon")]
#[test]
fn rayon_workers_allocate_and_free_across_threads() {
    use rayon::prelude::*;
    let v: Vec<String> = (0..100_000)
        .into_par_iter()
        .map(|i| i.to_string())
        .collect();
    let total: usize = v.into_par_iter().map(|s| s.len()).sum();
    assert_eq!(total, 488_890);
}

#[test]
fn stats_see_live_blocks_and_locality() {
    let keep: Vec<Box<[u8; 200]>> = (0..1000).map(|_| Box::new([0; 200])).collect();
    let s = GLOBAL.stats();
    assert!(s.live_bytes() >= 200 * 1000);
    assert!(s.live_bytes() <= s.mapped_bytes());
    assert!(s.locality().is_some_and(|l| (0.0..=1.0).contains(&l)));
    assert!(s
        .classes
        .iter()
        .any(|c| c.block_size == 208 && c.live_blocks >= 1000));
    drop(keep);
    assert!(tally_pool::stats::report()
        .components
        .iter()
        .any(|c| c.kind == tally_pool::stats::Kind::Allocator && c.live_objects > 0));
}
