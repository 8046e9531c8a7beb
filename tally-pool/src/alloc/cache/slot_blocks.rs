//! The slot blocks of exited threads, kept for new threads' caches.
//!
//! A list linked through each free block's first word, under a flag taken only by a
//! compare-exchange that never waits: a thread that finds it taken maps a fresh block, or
//! unmaps the one it gives back. So nothing spins, and a `fork` while another thread holds
//! the flag costs the child only the reuse of blocks (it maps and unmaps them instead).

use core::ptr::{self, NonNull};
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};

use super::SLOTS;
use crate::sys;

/// Bytes of a slot block: `SLOTS` addresses, in whole pages.
pub(super) const BYTES: usize = (SLOTS * size_of::<*mut u8>()).next_multiple_of(sys::PAGE);

/// Taken while a thread uses [`FREE`].
static TAKEN: AtomicBool = AtomicBool::new(false);
/// The first free block; each links to the next with its first word. Reached only
/// while holding [`TAKEN`] (the atomic only makes the static `Sync`).
static FREE: AtomicPtr<*mut u8> = AtomicPtr::new(ptr::null_mut());

fn try_lock() -> bool {
    TAKEN
        .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_ok()
}

fn unlock() {
    TAKEN.store(false, Ordering::Release);
}

/// A slot block no one else uses, `BYTES` long, or `None` if the OS refused memory.
pub(super) fn take() -> Option<NonNull<*mut u8>> {
    if try_lock() {
        let head = FREE.load(Ordering::Relaxed);
        if let Some(block) = NonNull::new(head) {
            // SAFETY: a block on the list is a free slot block (`give`'s contract),
            // whose first word links to the next, read under the flag.
            let next = unsafe { block.as_ptr().read() };
            FREE.store(next.cast(), Ordering::Relaxed);
            unlock();
            return Some(block);
        }
        unlock();
    }
    let region = sys::map(BYTES).ok()?;
    if region.len() != BYTES {
        return None;
    }
    let (block, _) = region.into_raw();
    Some(block.cast())
}

/// Puts a slot block on the free list (or unmaps it if another thread holds the list).
///
/// # Safety
///
/// `block` came from [`take`] and nothing uses it any more.
pub(super) unsafe fn give(block: NonNull<*mut u8>) {
    if try_lock() {
        let head = FREE.load(Ordering::Relaxed);
        // SAFETY: the block is ours alone (contract), `BYTES` long, aligned for an
        // address: its first word becomes the link.
        unsafe { block.as_ptr().write(head.cast()) };
        FREE.store(block.as_ptr(), Ordering::Relaxed);
        unlock();
    } else {
        // SAFETY: a block from `take` is a page-aligned `sys::map` region of `BYTES`
        // given up with `into_raw`, taken back once, here; nothing uses it (contract).
        drop(unsafe { sys::Region::from_raw(block.cast(), BYTES, sys::PAGE) });
    }
}
