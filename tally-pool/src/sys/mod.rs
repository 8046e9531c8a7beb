//! The only module that talks to the operating system about memory and NUMA placement.
//!
//! - [`mem`]: maps, advises, prefaults and unmaps memory ([`Region`]), registers every
//!   mapping with LeakSanitizer, and stands in for `mmap` under miri.
//! - [`budget`]: the process-wide count of bytes mapped, the current pressure level and
//!   the thresholds of the own budget, which a crossing mapping checks synchronously.
//! - [`limits`]: `getrlimit` and the calling thread's kernel id, for the pressure monitor.
//! - `pages`: transparent huge pages and locking in memory (`MADV_HUGEPAGE`, `mlock`).
//! - [`numa`]: `mbind`, `get_mempolicy`, `sched_getcpu` and the thread affinity calls.
//! - [`placement`]: `move_pages` with no target node: where pages really are.
//! - `fork`: `pthread_atfork`, for the global allocator's locks.
//! - [`arc_room`]: whether the global allocator gives an `Arc`'s block now, asked with
//!   `std::alloc` (forbidden elsewhere too) before the `Arc::new`s that run when memory is
//!   short.
//! - `fault`: under `--cfg tally_fault_injection` only, makes `mmap`, `mbind`, `madvise`
//!   and `munmap` refuse when a test asks; otherwise its hooks are the literal `false`.
//!
//! `clippy.toml` forbids the raw memory and NUMA calls everywhere else
//! (`disallowed-methods`), and this module alone allows them, so every region the crate
//! owns is created and destroyed here, and every `unsafe` call into the OS has its proof in
//! one place.

// This is the module the lint confines raw memory and NUMA calls to.
#![allow(clippy::disallowed_methods)]

pub(crate) mod budget;
#[cfg(tally_fault_injection)]
pub mod fault;
#[cfg(not(tally_fault_injection))]
mod fault;
mod fork;
pub(crate) mod limits;
mod mem;
mod numa;
mod pages;
pub(crate) mod placement;

pub(crate) use fork::at_fork;
#[cfg(all(test, target_os = "linux", not(loom)))]
pub(crate) use mem::resident_pages;
pub(crate) use mem::{map, map_aligned, Region, PAGE};
pub(crate) use numa::{
    bind_to_node, current_cpu, current_node, node_of_page, policy_node, prefer_node,
    set_thread_affinity, thread_affinity, SysFailed,
};
#[cfg(all(test, target_os = "linux", not(miri)))]
pub(crate) use numa::{policy_of, PREFERRED};
pub(crate) use pages::{memlock_limit, thp_mode, ThpMode};

/// Whether the global allocator gives a block the size of an `Arc<T>`'s now: asks for one
/// and gives it straight back. Call it just before `Arc::new`, which has no fallible form
/// on stable Rust and aborts the process when refused: a refusal here lets the caller take
/// its fallback instead. A caching allocator (`TallyAlloc`, glibc's, mimalloc, jemalloc)
/// hands the probe's block out again to the `Arc::new` that follows on the same thread, so
/// only memory that runs out between the two calls still aborts.
pub(crate) fn arc_room<T>() -> bool {
    // The layout of an `Arc`'s allocation: its two counts, then the value.
    let Ok((layout, _)) =
        core::alloc::Layout::new::<[usize; 2]>().extend(core::alloc::Layout::new::<T>())
    else {
        return false;
    };
    let layout = layout.pad_to_align();
    // SAFETY: `layout` has a non-zero size (the two counts).
    let probe = unsafe { std::alloc::alloc(layout) };
    // Without this, an optimised build removes the allocation and its deallocation as
    // unused, and the probe always succeeds.
    let probe = core::hint::black_box(probe);
    if probe.is_null() {
        return false;
    }
    // SAFETY: allocated just above with `layout`, and never used.
    unsafe { std::alloc::dealloc(probe, layout) };
    true
}
