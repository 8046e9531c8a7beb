//! The allocator's paths without a thread cache, for a thread whose cache is gone (a
//! thread-local destructor that allocates after the thread's key destructor flushed it),
//! busy (re-entry) or not adopted, and the process-wide counts of how often they ran.

use core::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{current_node, heap, SizeClass};

/// Calls that found the cache busy: re-entry into the allocator from within it.
pub(super) static REENTRIES: AtomicU64 = AtomicU64::new(0);

/// Allocations made without a cache: the thread's cache was gone (a thread-local
/// destructor allocating after it) or busy.
static UNCACHED: AtomicU64 = AtomicU64::new(0);

/// Frees whose chunk header did not match the freed layout's class, dropped.
pub(super) static MISMATCHED: AtomicU64 = AtomicU64::new(0);

/// How many frees were dropped because the block's chunk header did not name the freed
/// layout's class.
pub(in crate::alloc) fn mismatched_frees() -> u64 {
    MISMATCHED.load(Ordering::Relaxed)
}

/// How many allocations were made without the thread's cache.
pub(in crate::alloc) fn uncached_allocations() -> u64 {
    UNCACHED.load(Ordering::Relaxed)
}

/// How many allocator calls found the thread's cache busy (re-entered the allocator from
/// within it). The allocator's paths never do that; this stays 0.
pub(in crate::alloc) fn reentries() -> u64 {
    REENTRIES.load(Ordering::Relaxed)
}

/// `allocate` without a cache: one block from the heap of the thread's node.
#[cold]
#[inline(never)]
pub(super) fn allocate_uncached(class: SizeClass, index: usize) -> *mut u8 {
    UNCACHED.fetch_add(1, Ordering::Relaxed);
    let node = current_node();
    let Some(heap) = heap::heap(node, index) else {
        return ptr::null_mut();
    };
    let mut one = [ptr::null_mut(); 1];
    if heap.take(class, node, &mut one) == 1 {
        heap.counts.allocations.fetch_add(1, Ordering::Relaxed);
    }
    let [block] = one;
    block
}

/// `free` without the cache: the block goes to its home heap, named by its chunk's
/// header (a block freed with another class's layout is dropped and counted). `refused`
/// says whether a cache of another node saw it (a cross-node free); without one (the
/// thread's cache gone or busy), the thread's node decides whether the free is remote.
///
/// # Safety
///
/// As [`free`]'s.
#[cold]
#[inline(never)]
pub(super) unsafe fn free_uncached(block: NonNull<u8>, index: usize, refused: bool) {
    // SAFETY: the block was handed out by this allocator for a size class (contract).
    let Some(home) = (unsafe { heap::home_of(block, index) }) else {
        MISMATCHED.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let remote = refused || current_node() != home;
    let Some(heap) = heap::heap(home, index) else {
        return;
    };
    // SAFETY: the block is a free block of its home heap of this class, given up by the
    // caller (contract).
    unsafe { heap.give(&[block.as_ptr()]) };
    heap.counts.frees.fetch_add(1, Ordering::Relaxed);
    if remote {
        heap.counts.remote_frees.fetch_add(1, Ordering::Relaxed);
    }
}
