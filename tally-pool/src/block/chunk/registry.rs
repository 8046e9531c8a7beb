//! The chunk registry: which pool owns the chunk at an address.
//!
//! A two-level radix table over the address space at chunk granularity (mimalloc's segment
//! map, with an owner per chunk instead of a bit). A lookup is two loads and never touches
//! the memory being looked up, so `free` can vouch for any pointer, even one into memory
//! that is not mapped, before it reads a byte of it.
//!
//! Owners are pool slots: small integers handed out while a pool is alive and reused after
//! it is dropped. A slot is stored as `slot + 1` so that zero means "no pool".
//!
//! The table uses std atomics under loom too: it is written only while a chunk is mapped
//! or unmapped, before the chunk is published to any other thread, so the models gain
//! nothing from exploring it.

use core::ptr::null_mut;
use std::sync::atomic::{AtomicPtr, AtomicU32, Ordering};

use crate::sys;

/// log2 of the chunk size.
pub(crate) const CHUNK_SHIFT: u32 = 20;
/// Bytes in a chunk, the unit in which pools map memory: 1 MiB. Chunks are aligned to
/// their size.
pub const CHUNK_SIZE: usize = 1 << CHUNK_SHIFT;

/// Address bits covered: 48, the user address space of x86_64 (4-level paging) and
/// aarch64.
const ADDRESS_BITS: u32 = 48;
const LEAF_BITS: u32 = 16;
const ROOT_BITS: u32 = ADDRESS_BITS - CHUNK_SHIFT - LEAF_BITS;
const LEAF_LEN: usize = 1 << LEAF_BITS;
const ROOT_LEN: usize = 1 << ROOT_BITS;

/// Most chunks the covered address space can hold: a pool whose capacity needs more can
/// never be built, and is refused before anything is mapped.
pub(crate) const MAX_CHUNKS: usize = 1 << (ADDRESS_BITS - CHUNK_SHIFT);

/// Invariant: each non-null entry points to `LEAF_LEN` `AtomicU32`s in a mapping that is
/// never unmapped; an entry, once set, never changes.
static ROOT: [AtomicPtr<AtomicU32>; ROOT_LEN] = [const { AtomicPtr::new(null_mut()) }; ROOT_LEN];

/// Most pools alive at once.
pub(crate) const MAX_POOLS: usize = 1 << 16;

fn split(addr: usize) -> Option<(usize, usize)> {
    let chunk = addr >> CHUNK_SHIFT;
    let root = chunk >> LEAF_BITS;
    (root < ROOT_LEN).then_some((root, chunk & (LEAF_LEN - 1)))
}

/// The table's entry for the chunk holding `addr`; `None` outside the covered address
/// space, or where no leaf is mapped (and `create` is false, or the OS refused one).
///
/// Only the two words read are borrowed, never the whole root or leaf: a tool that tracks
/// borrows (miri) then checks 12 bytes a lookup instead of the root's 32 KiB and a leaf's
/// 256 KiB.
#[inline(always)]
fn entry(addr: usize, create: bool) -> Option<&'static AtomicU32> {
    let (root, index) = split(addr)?;
    // SAFETY: `&raw const ROOT` has provenance over the whole root, and `root < ROOT_LEN`
    // (`split` checks it), so the offset stays inside `ROOT`.
    let slot = unsafe { (&raw const ROOT).cast::<AtomicPtr<AtomicU32>>().add(root) };
    // SAFETY: `slot` points to an element of the static `ROOT`, live for the whole process.
    let slot = unsafe { &*slot };
    let mut leaf = slot.load(Ordering::Acquire);
    if leaf.is_null() && create {
        leaf = new_leaf(slot);
    }
    if leaf.is_null() {
        return None;
    }
    // SAFETY: a non-null entry points to LEAF_LEN `AtomicU32`s in one live mapping (ROOT's
    // invariant), and `index < LEAF_LEN` (`split` masks it): the offset stays inside it.
    let entry = unsafe { leaf.add(index) };
    // The leaf's zeroes (written by the OS, or by `alloc_zeroed` under miri) happened
    // before `new_leaf`'s publishing swap, which the `Acquire` load above (or that swap's
    // own) synchronises with.
    // SAFETY: `entry` points into a leaf that is never freed (ROOT's invariant), aligned
    // for `AtomicU32` (`sys::map` gives page-aligned memory), zeroed and visible (above):
    // all-zero bytes are a valid `AtomicU32`, and the leaf is only accessed atomically.
    Some(unsafe { &*entry })
}

/// Maps a leaf for `slot` (or finds the one another thread mapped first); null if the OS
/// refuses.
#[cold]
fn new_leaf(slot: &AtomicPtr<AtomicU32>) -> *mut AtomicU32 {
    let Ok(region) = sys::map(LEAF_LEN * core::mem::size_of::<AtomicU32>()) else {
        return null_mut();
    };
    let fresh = region.ptr().as_ptr().cast::<AtomicU32>();
    match slot.compare_exchange(null_mut(), fresh, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => {
            // The leaf lives for the rest of the process.
            core::mem::forget(region);
            fresh
        }
        Err(current) => current, // `region` is unmapped on drop.
    }
}

/// What the registry holds for the chunk of `addr`: the owning pool's slot plus one, or 0
/// for a chunk no pool owns (including every address outside the table).
#[inline(always)]
pub(crate) fn tag(addr: usize) -> u32 {
    entry(addr, false).map_or(0, |t| t.load(Ordering::Acquire))
}

/// The slot of the pool that owns the chunk holding `addr`, if any.
#[inline]
pub(crate) fn owner(addr: usize) -> Option<u32> {
    tag(addr).checked_sub(1)
}

/// Records that the chunk at `base` belongs to pool `slot`. Returns false if the registry
/// could not map its table (the chunk must then not be used).
pub(crate) fn register(base: usize, slot: u32) -> bool {
    let Some(entry) = entry(base, true) else {
        return false;
    };
    entry.store(slot + 1, Ordering::Release);
    true
}

/// Forgets the owner of the chunk at `base`.
pub(crate) fn unregister(base: usize) {
    if let Some(entry) = entry(base, false) {
        entry.store(0, Ordering::Release);
    }
}

/// Slots of live pools; the lowest free one is reused first so thread-cache tables stay
/// short.
static SLOTS: std::sync::Mutex<Vec<bool>> = std::sync::Mutex::new(Vec::new());

/// Takes a free pool slot.
pub(crate) fn take_slot() -> Option<u32> {
    let mut used = SLOTS.lock().unwrap_or_else(|p| p.into_inner());
    let slot = match used.iter().position(|u| !u) {
        Some(i) => i,
        None if used.len() < MAX_POOLS => {
            used.push(false);
            used.len() - 1
        }
        None => return None,
    };
    *used.get_mut(slot)? = true;
    u32::try_from(slot).ok()
}

/// Gives a slot back; its chunks must all be unregistered.
pub(crate) fn release_slot(slot: u32) {
    let mut used = SLOTS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(u) = used.get_mut(slot as usize) {
        *u = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_lookup_unregister() {
        let region = sys::map_aligned(CHUNK_SIZE, CHUNK_SIZE).unwrap();
        let base = region.ptr().as_ptr() as usize;
        assert_eq!(owner(base), None);
        assert!(register(base, 41));
        assert_eq!(owner(base), Some(41));
        assert_eq!(owner(base + CHUNK_SIZE - 1), Some(41));
        assert_eq!(owner(base + CHUNK_SIZE), None);
        unregister(base);
        assert_eq!(owner(base), None);
    }

    #[test]
    fn addresses_outside_the_table_have_no_owner() {
        assert_eq!(owner(usize::MAX), None);
        assert_eq!(owner(1 << 60), None);
        assert!(!register(1 << 60, 3));
    }

    #[test]
    fn slots_are_reused() {
        let a = take_slot().unwrap();
        let b = take_slot().unwrap();
        assert_ne!(a, b);
        release_slot(a);
        let c = take_slot().unwrap();
        // Another test may take `a` between the two calls; either way slots stay unique.
        assert_ne!(c, b);
        release_slot(b);
        release_slot(c);
    }
}
