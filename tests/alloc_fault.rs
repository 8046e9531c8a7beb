//! `TallyAlloc` when the OS refuses memory (`tally_pool::fault`, built only with
//! `RUSTFLAGS="--cfg tally_fault_injection"`; without it `main` does nothing): allocation
//! returns null, never panics or aborts, `try_reserve` reports the failure, a refused
//! `mremap` leaves the old allocation intact, and everything works again once the OS says
//! yes. One thread, no test harness (bumpalo's `tests/try_alloc.rs` style), so that no
//! other thread allocates while the OS refuses.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use tally_pool::alloc::TallyAlloc;

#[global_allocator]
static GLOBAL: TallyAlloc = TallyAlloc::new();

#[cfg(not(tally_fault_injection))]
fn main() {}

#[cfg(tally_fault_injection)]
fn main() {
    checks::large_allocations_return_null_and_recover();
    checks::a_class_without_free_blocks_returns_null_and_recovers();
    checks::a_refused_mremap_keeps_the_old_allocation();
    checks::refusals_everywhere_with_threads_allocating();
    checks::a_refused_mapping_gives_back_the_kept_ones_and_retries();
    checks::a_refused_chunk_gives_back_the_kept_mappings_and_retries();
    checks::a_refused_chunk_pair_falls_back_to_one_chunk();
    assert_eq!(GLOBAL.stats().reentries, 0);
    println!("alloc_fault: all checks passed");
}

#[cfg(tally_fault_injection)]
mod checks {
    use core::alloc::{GlobalAlloc, Layout};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use tally_pool::fault::{self, Call, When};

    use super::GLOBAL;

    pub(super) fn large_allocations_return_null_and_recover() {
        let layout = Layout::from_size_align(1 << 20, 8).unwrap();
        let aligned = Layout::from_size_align(100, 64 * 1024).unwrap();
        {
            let refusal = fault::refuse(Call::Mmap, When::Always);
            // SAFETY: non-zero sizes.
            assert!(unsafe { GLOBAL.alloc(layout) }.is_null());
            // SAFETY: as above.
            assert!(unsafe { GLOBAL.alloc_zeroed(layout) }.is_null());
            // SAFETY: as above.
            assert!(unsafe { GLOBAL.alloc(aligned) }.is_null());
            let mut v: Vec<u8> = Vec::new();
            assert!(v.try_reserve(64 << 20).is_err(), "try_reserve reports it");
            assert!(refusal.refused() >= 4);
        }
        // SAFETY: non-zero size.
        let p = unsafe { GLOBAL.alloc_zeroed(layout) };
        assert!(!p.is_null(), "the OS says yes again");
        // SAFETY: allocated above with `layout`.
        unsafe { GLOBAL.dealloc(p, layout) };
        let mut v: Vec<u8> = Vec::new();
        v.try_reserve(64 << 20).unwrap();
    }

    pub(super) fn a_class_without_free_blocks_returns_null_and_recovers() {
        // 30,000 bytes: 31 blocks a chunk. Take blocks until the heap needs a new chunk,
        // which the OS refuses.
        let layout = Layout::from_size_align(30_000, 8).unwrap();
        let mut held = Vec::with_capacity(10_000);
        {
            let refusal = fault::refuse(Call::Mmap, When::Always);
            loop {
                // SAFETY: non-zero size.
                let p = unsafe { GLOBAL.alloc(layout) };
                if p.is_null() {
                    break;
                }
                held.push(p);
                assert!(held.len() < 10_000, "no refusal reached the allocator");
            }
            assert!(refusal.refused() >= 1);
            // Still null while refused, and freeing works meanwhile.
            // SAFETY: non-zero size.
            assert!(unsafe { GLOBAL.alloc(layout) }.is_null());
        }
        // SAFETY: non-zero size.
        let p = unsafe { GLOBAL.alloc(layout) };
        assert!(!p.is_null(), "a new chunk once the OS says yes");
        held.push(p);
        for p in held {
            // SAFETY: each allocated above with `layout`, freed once.
            unsafe { GLOBAL.dealloc(p, layout) };
        }
    }

    pub(super) fn a_refused_mremap_keeps_the_old_allocation() {
        let layout = Layout::from_size_align(1 << 20, 8).unwrap();
        // SAFETY: non-zero size.
        let p = unsafe { GLOBAL.alloc(layout) };
        assert!(!p.is_null());
        // SAFETY: 1 MiB writable bytes, ours.
        unsafe { p.write_bytes(0x11, 1 << 20) };
        {
            let _refusal = fault::refuse(Call::Mmap, When::Always);
            // SAFETY: `p` with `layout`; a null result leaves it ours.
            let q = unsafe { GLOBAL.realloc(p, layout, 8 << 20) };
            assert!(q.is_null());
        }
        // SAFETY: the old allocation is intact and still ours.
        let bytes = unsafe { core::slice::from_raw_parts(p, 1 << 20) };
        assert!(bytes.iter().all(|&b| b == 0x11));
        // SAFETY: `p` with `layout`.
        let q = unsafe { GLOBAL.realloc(p, layout, 8 << 20) };
        assert!(!q.is_null());
        // SAFETY: the first MiB moved with the mapping.
        let moved = unsafe { core::slice::from_raw_parts(q, 1 << 20) };
        assert_eq!(moved.last(), Some(&0x11));
        // SAFETY: `q` with the new size.
        unsafe { GLOBAL.dealloc(q, Layout::from_size_align(8 << 20, 8).unwrap()) };
    }

    /// Rules for every thread while other threads allocate: the rule list grows outside
    /// its lock, so nothing deadlocks, and the threads see nulls (handled) or blocks.
    pub(super) fn refusals_everywhere_with_threads_allocating() {
        let stop = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    let layout = Layout::from_size_align(2 << 20, 8).unwrap();
                    let (mut nulls, mut blocks) = (0u64, 0u64);
                    while !stop.load(Ordering::Relaxed) {
                        // SAFETY: non-zero size.
                        let p = unsafe { GLOBAL.alloc(layout) };
                        if p.is_null() {
                            nulls += 1;
                        } else {
                            blocks += 1;
                            // SAFETY: allocated just above with `layout`.
                            unsafe { GLOBAL.dealloc(p, layout) };
                        }
                    }
                    (nulls, blocks)
                })
            })
            .collect();
        // Forty rules that never refuse grow the process's rule list several times while
        // the workers' `mmap`s read it; then one that refuses half of the calls.
        let mut rules: Vec<_> = Vec::with_capacity(41);
        for _ in 0..40 {
            rules.push(fault::refuse_everywhere(Call::Mmap, When::Nth(u64::MAX)));
        }
        let chance = fault::refuse_everywhere(
            Call::Mmap,
            When::Chance {
                per_million: 500_000,
                seed: 7,
            },
        );
        while chance.calls() < 200 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert!(chance.refused() > 0);
        drop(chance);
        drop(rules);
        stop.store(true, Ordering::Relaxed);
        let (mut nulls, mut blocks) = (0, 0);
        for w in workers {
            let (n, b) = w.join().unwrap();
            nulls += n;
            blocks += b;
        }
        assert!(nulls > 0 && blocks > 0, "{nulls} nulls, {blocks} blocks");
    }

    /// Leaves the allocator keeping exactly one freed large mapping, of 9 pages (over
    /// 32 KiB, the largest size class).
    fn keep_one_mapping() {
        GLOBAL.trim();
        let kept = Layout::from_size_align(9 * 4096, 8).unwrap();
        // SAFETY: non-zero size.
        let p = unsafe { GLOBAL.alloc(kept) };
        assert!(!p.is_null());
        // SAFETY: allocated just above with `kept`, not used again.
        unsafe { GLOBAL.dealloc(p, kept) };
        assert_eq!(GLOBAL.stats().large.retained_bytes, 9 * 4096);
    }

    /// A large mapping the OS refuses once is asked for again after the allocator unmaps
    /// the mappings it keeps for reuse, which hold address space of the same limits.
    pub(super) fn a_refused_mapping_gives_back_the_kept_ones_and_retries() {
        keep_one_mapping();
        // Over 32 KiB, the largest size class, as the kept one.
        let other = Layout::from_size_align(13 * 4096, 8).unwrap();
        let q = {
            let refusal = fault::refuse(Call::Mmap, When::Nth(1));
            // SAFETY: non-zero size.
            let q = unsafe { GLOBAL.alloc(other) };
            assert_eq!(refusal.refused(), 1);
            q
        };
        assert!(!q.is_null(), "mapped on the second try");
        assert_eq!(
            GLOBAL.stats().large.retained_bytes,
            0,
            "the kept one went first"
        );
        // SAFETY: allocated above with `other`, not used again.
        unsafe { GLOBAL.dealloc(q, other) };
    }

    /// The same for a size class whose heap needs a new chunk: the first chunk the OS
    /// refuses is mapped on the second try, once the kept mappings are gone.
    pub(super) fn a_refused_chunk_gives_back_the_kept_mappings_and_retries() {
        keep_one_mapping();
        // 30,000 bytes: 31 blocks a chunk, so a new chunk comes soon.
        let layout = Layout::from_size_align(30_000, 8).unwrap();
        let mut held = Vec::with_capacity(10_000);
        {
            let refusal = fault::refuse(Call::Mmap, When::Nth(1));
            while refusal.refused() == 0 {
                // SAFETY: non-zero size.
                let p = unsafe { GLOBAL.alloc(layout) };
                assert!(
                    !p.is_null(),
                    "the refused chunk is mapped on the second try"
                );
                held.push(p);
                assert!(held.len() < 10_000, "no refusal reached the allocator");
            }
        }
        assert_eq!(
            GLOBAL.stats().large.retained_bytes,
            0,
            "the kept one went first"
        );
        for p in held {
            // SAFETY: each allocated above with `layout`, freed once.
            unsafe { GLOBAL.dealloc(p, layout) };
        }
    }

    /// A class in heavy use maps its chunks in 2 MiB pairs; when the OS refuses a pair, one
    /// chunk is asked for instead, before the kept mappings are given back.
    pub(super) fn a_refused_chunk_pair_falls_back_to_one_chunk() {
        keep_one_mapping();
        // 20,000 bytes: a class no other check uses, about 50 blocks a chunk.
        let layout = Layout::from_size_align(20_000, 8).unwrap();
        let size = tally_pool::block::SizeClass::for_layout(layout)
            .unwrap()
            .size();
        let mapped = || {
            let stats = GLOBAL.stats();
            let mut class = stats.classes.iter().filter(|c| c.block_size == size);
            class
                .next()
                .map_or((0, 0), |c| (c.mapped_bytes, c.huge_page_chunks))
        };
        let mut held = Vec::with_capacity(10_000);
        while mapped().0 < 2 << 20 {
            // SAFETY: non-zero size.
            let p = unsafe { GLOBAL.alloc(layout) };
            assert!(!p.is_null());
            held.push(p);
            assert!(held.len() < 10_000, "the class never had two chunks");
        }
        assert_eq!(
            mapped(),
            (2 << 20, 0),
            "the first two chunks are mapped alone"
        );
        {
            let refusal = fault::refuse(Call::Mmap, When::Nth(1));
            while refusal.refused() == 0 {
                // SAFETY: non-zero size.
                let p = unsafe { GLOBAL.alloc(layout) };
                assert!(!p.is_null(), "one chunk in place of the refused pair");
                held.push(p);
                assert!(held.len() < 10_000, "no refusal reached the allocator");
            }
        }
        assert_eq!(mapped(), (3 << 20, 0), "one more chunk, alone");
        assert_eq!(
            GLOBAL.stats().large.retained_bytes,
            9 * 4096,
            "nothing kept had to go"
        );
        for p in held {
            // SAFETY: each allocated above with `layout`, freed once.
            unsafe { GLOBAL.dealloc(p, layout) };
        }
    }
}
