//! Layouts no size class serves: each gets a mapping of its own, bound to the calling
//! thread's node where the OS allows, resized with `mremap`.
//!
//! A mapping is the layout's size rounded up to a page, aligned to the layout's alignment
//! (at least a page). Nothing is stored beside it: `dealloc` and `realloc` get the layout
//! back from the caller and derive the mapping from it.

use core::alloc::Layout;
use core::ptr::NonNull;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::sys::{self, Region, PAGE};

/// Running counts of the large mappings.
#[derive(Debug)]
pub(super) struct LargeCounts {
    /// Bytes mapped now (whole pages).
    pub(super) mapped: AtomicUsize,
    /// Bytes the callers asked for, of the mappings alive now.
    pub(super) live: AtomicUsize,
    pub(super) allocations: AtomicU64,
    pub(super) frees: AtomicU64,
    /// Mappings the OS refused to bind to the node.
    pub(super) unbound: AtomicU64,
}

impl LargeCounts {
    const fn new() -> Self {
        Self {
            mapped: AtomicUsize::new(0),
            live: AtomicUsize::new(0),
            allocations: AtomicU64::new(0),
            frees: AtomicU64::new(0),
            unbound: AtomicU64::new(0),
        }
    }
}

/// The counts of all large mappings, whatever their node (a free cannot tell a mapping's
/// node without asking the OS).
pub(super) static LARGE: LargeCounts = LargeCounts::new();

/// Bytes of the mapping for `layout`: its size rounded up to a page (at least one).
fn mapped_len(layout: Layout) -> Option<usize> {
    layout.size().max(1).checked_next_multiple_of(PAGE)
}

/// Maps memory for `layout`, zero-filled. `None` if the OS refuses.
pub(super) fn allocate(layout: Layout) -> Option<NonNull<u8>> {
    let len = mapped_len(layout)?;
    let region = if layout.align() <= PAGE {
        sys::map(len)
    } else {
        sys::map_aligned(len, layout.align())
    }
    .ok()?;
    let counts = &LARGE;
    let node = sys::current_node().unwrap_or(0);
    if sys::prefer_node(region.ptr(), region.len(), node).is_err() {
        counts.unbound.fetch_add(1, Ordering::Relaxed);
    }
    counts.mapped.fetch_add(region.len(), Ordering::Relaxed);
    counts.live.fetch_add(layout.size(), Ordering::Relaxed);
    counts.allocations.fetch_add(1, Ordering::Relaxed);
    Some(region.into_raw().0)
}

/// Unmaps what [`allocate`] mapped for `layout`.
///
/// # Safety
///
/// `ptr` came from [`allocate`] (or [`reallocate`]) with this `layout` and is not used
/// afterwards.
pub(super) unsafe fn free(ptr: NonNull<u8>, layout: Layout) {
    let Some(len) = mapped_len(layout) else {
        return;
    };
    // SAFETY: `ptr..ptr + len` is the mapping `allocate` made for `layout` (contract),
    // with this alignment, and nothing uses it once the region drops.
    drop(unsafe { Region::from_raw(ptr, len, layout.align().max(PAGE)) });
    let counts = &LARGE;
    counts.mapped.fetch_sub(len, Ordering::Relaxed);
    counts.live.fetch_sub(layout.size(), Ordering::Relaxed);
    counts.frees.fetch_add(1, Ordering::Relaxed);
}

/// Resizes a mapping of at most page alignment to `new_size` bytes in place or by moving
/// it (`mremap`): the first `min(old, new)` bytes keep their values. `None` if the OS
/// refuses (the old mapping is then untouched) or the alignment is above a page.
///
/// # Safety
///
/// As [`free`]'s for `ptr` and `layout`; on success the old pointer is not used again.
pub(super) unsafe fn reallocate(
    ptr: NonNull<u8>,
    layout: Layout,
    new_size: usize,
) -> Option<NonNull<u8>> {
    if layout.align() > PAGE {
        return None;
    }
    let old_len = mapped_len(layout)?;
    let new_len = new_size.max(1).checked_next_multiple_of(PAGE)?;
    // SAFETY: the mapping `allocate` made for `layout` (contract), page-aligned.
    let region = unsafe { Region::from_raw(ptr, old_len, PAGE) };
    let region = match region.remap(new_len) {
        Ok(region) => region,
        Err((region, _)) => {
            // Still the caller's: give ownership back without unmapping.
            let _ = region.into_raw();
            return None;
        }
    };
    let counts = &LARGE;
    counts.mapped.fetch_add(new_len, Ordering::Relaxed);
    counts.mapped.fetch_sub(old_len, Ordering::Relaxed);
    counts.live.fetch_add(new_size, Ordering::Relaxed);
    counts.live.fetch_sub(layout.size(), Ordering::Relaxed);
    Some(region.into_raw().0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_mappings_are_aligned_zeroed_and_resizable() {
        for align in [8, PAGE, 4 * PAGE] {
            let layout = Layout::from_size_align(40_000, align).unwrap();
            let p = allocate(layout).unwrap();
            assert_eq!(p.as_ptr() as usize % align, 0);
            // SAFETY: the mapping holds 40,000 bytes, zero-filled, and is ours.
            let bytes = unsafe { core::slice::from_raw_parts_mut(p.as_ptr(), 40_000) };
            assert!(bytes.iter().all(|&b| b == 0));
            bytes[39_999] = 7;
            // SAFETY: allocated above with `layout`.
            match unsafe { reallocate(p, layout, 100_000) } {
                Some(q) => {
                    // SAFETY: the resized mapping holds 100,000 bytes and kept the old ones.
                    let bytes = unsafe { core::slice::from_raw_parts(q.as_ptr(), 100_000) };
                    assert_eq!(bytes[39_999], 7);
                    assert_eq!(bytes[99_999], 0);
                    let grown = Layout::from_size_align(100_000, align).unwrap();
                    // SAFETY: the mapping `reallocate` returned for `grown`.
                    unsafe { free(q, grown) };
                }
                None => {
                    assert!(align > PAGE, "only over-aligned mappings are not remapped");
                    // SAFETY: still the mapping of `layout`.
                    unsafe { free(p, layout) };
                }
            }
        }
    }
}
