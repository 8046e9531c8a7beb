//! A global allocator that uses scratch arenas, as the arena allows: a thread's first
//! `scratch` call may then come from inside the statistics registry, while that same thread
//! holds the registry's lock (a report allocates its list of members under it). In a binary
//! of its own, for its global allocator.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Write;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use tally_pool::arena;
use tally_pool::stats::{self, Component, Kind};

/// Takes a scratch arena for every allocation of 4 KiB or more (once per thread at a time),
/// then allocates from the system.
struct ScratchFirst;

thread_local!(static INSIDE: Cell<bool> = const { Cell::new(false) });

// SAFETY: every call is passed on to `System` as it came; the scratch arena only adds
// work before it.
unsafe impl GlobalAlloc for ScratchFirst {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() >= 4096 && INSIDE.try_with(|c| !c.replace(true)).unwrap_or(false) {
            arena::scratch(|bump| {
                bump.alloc(0u64);
            });
            let _ = INSIDE.try_with(|c| c.set(false));
        }
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with `layout` (see `alloc`).
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: ScratchFirst = ScratchFirst;

#[test]
fn a_first_scratch_inside_the_registry_neither_waits_nor_goes_uncounted() {
    // Members enough that a report's list of them takes 4 KiB or more.
    let members: Vec<Component> = (0..300)
        .map(|i| Component::register(format!("in-allocator-{i}")))
        .collect();
    let (done, finished) = mpsc::channel();
    thread::spawn(move || {
        // This thread's first scratch call comes from inside the report.
        let report = stats::report();
        // SAFETY: `gettid` has no preconditions.
        let name = format!("scratch (thread {})", unsafe { libc::gettid() });
        let listed = |report: &stats::MemoryReport| {
            report
                .components
                .iter()
                .find(|c| c.name == name && c.kind == Kind::Arena)
                .map(|c| c.counters.acquires)
        };
        // The registry was busy then; a call that finds it free joins, and the counters
        // include the calls before.
        arena::scratch(|bump| {
            bump.alloc(1u8);
        });
        let later = listed(&stats::report());
        let _ = done.send((report.components.len(), later));
    });
    let Ok((members_seen, later)) = finished.recv_timeout(Duration::from_secs(60)) else {
        // Not a panic: the thread still holds the registry, and a panic's unwinding
        // (dropping `members`, the test harness reporting) would wait for it too.
        let _ = std::io::stderr().write_all(
            b"a report whose first scratch call came from inside the registry did not return\n",
        );
        // SAFETY: ends the process at once; `exit` would run handlers that wait too.
        unsafe { libc::_exit(101) };
    };
    assert!(members_seen >= members.len(), "{members_seen}");
    assert!(matches!(later, Some(n) if n >= 2), "{later:?}");
}
