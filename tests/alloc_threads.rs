//! Thread exit flushes `TallyAlloc`'s thread caches: 10,000 short threads allocate, free
//! and exit, and the allocator's live bytes return to their baseline while what it maps
//! stays bounded (exited threads' blocks are reused). One test in its own binary, so that
//! nothing else allocates meanwhile.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::HashMap;

use tally_pool::alloc::TallyAlloc;

#[global_allocator]
static GLOBAL: TallyAlloc = TallyAlloc::new();

fn short_thread(i: usize) -> usize {
    std::thread::spawn(move || {
        let v: Vec<String> = (0..50).map(|k| format!("{i}-{k}")).collect();
        let m: HashMap<&str, usize> = v.iter().map(|s| (s.as_str(), s.len())).collect();
        let boxed: Vec<Box<[u8; 3000]>> = (0..4).map(|_| Box::new([1; 3000])).collect();
        m.len() + boxed.len()
    })
    .join()
    .unwrap()
}

#[test]
fn ten_thousand_short_threads_leave_nothing_live() {
    let threads = if cfg!(miri) { 20 } else { 10_000 };
    // Whatever std sets up on the first spawns is in the baseline.
    for i in 0..8 {
        assert_eq!(short_thread(i), 54);
    }
    // Figures only: a kept `AllocStats` would itself be live at the second look.
    let figures = || {
        let s = GLOBAL.stats();
        let cached: u64 = s.classes.iter().map(|c| c.cached_blocks).sum();
        let allocations: u64 = s.classes.iter().map(|c| c.allocations).sum();
        (
            s.live_bytes(),
            s.mapped_bytes(),
            cached,
            allocations,
            s.reentries,
        )
    };
    let (live, mapped, cached, allocations, _) = figures();
    for i in 0..threads {
        assert_eq!(short_thread(i), 54);
    }
    let (live_after, mapped_after, cached_after, allocations_after, reentries) = figures();
    assert_eq!(reentries, 0);
    assert_eq!(live_after, live, "live bytes return to the baseline");
    assert!(
        cached_after <= cached + 64 * 80,
        "exited threads keep no cache: {cached} then {cached_after}"
    );
    // Blocks of exited threads are reused: at most one more chunk per class in use.
    assert!(
        mapped_after <= mapped + 16 * (1 << 20),
        "mapped {mapped} then {mapped_after}"
    );
    assert!(allocations_after - allocations >= threads as u64 * 54);
}
