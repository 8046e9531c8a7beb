//! `TallyAlloc` as the global allocator of every test binary that declares `mod common;`,
//! so that the pools, the registry, the pressure monitor and the tests' own collections all
//! run on the crate's allocator.
//!
//! Not under fault injection, where the OS would refuse the allocator's own mappings too
//! (`tests/alloc_fault.rs` tests that on its own), and not under `--cfg
//! tally_system_allocator`, which the AddressSanitizer, ThreadSanitizer and valgrind steps
//! of `.ci/run` set: they watch the library's own heap allocations (its `Arc`s, `Box`es and
//! tables) only while those go through the system allocator. The `alloc_*` tests install
//! `TallyAlloc` themselves and run under those tools with it.

#[cfg(not(any(tally_fault_injection, tally_system_allocator)))]
#[global_allocator]
static GLOBAL: tally_pool::alloc::TallyAlloc = tally_pool::alloc::TallyAlloc::new();

/// The bytes the process has mapped for pools and tables: `pressure::mapped_bytes()`
/// without the global allocator's own chunks and mappings, which the allocator counts
/// exactly. Read until the allocator's figure is the same before and after, so that an
/// allocation between the two reads cannot skew it.
pub(crate) fn pool_mapped_bytes() -> u64 {
    let allocator = || tally_pool::alloc::TallyAlloc::new().stats().mapped_bytes();
    loop {
        let before = allocator();
        let total = tally_pool::pressure::mapped_bytes();
        if allocator() == before {
            return total.saturating_sub(before);
        }
    }
}
