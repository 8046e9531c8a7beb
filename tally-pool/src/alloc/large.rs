//! Layouts no size class serves: each gets a mapping of its own, bound to the calling
//! thread's node where the OS allows, resized with `mremap`.
//!
//! A mapping is the layout's size rounded up to a page, aligned to the layout's alignment
//! (at least a page). Nothing is stored beside it: `dealloc` and `realloc` get the layout
//! back from the caller and derive the mapping from it.
//!
//! A freed mapping of at most 1 MiB and page alignment is kept by the node its pages are
//! bound to ([`Retained`], [`home_node`]) for the next allocation of the same number of
//! pages by a thread of that node, up to 16 MiB a node; [`trim`] unmaps what is kept (a
//! pressure monitor calls it every round).

use core::alloc::Layout;
use core::cell::Cell;
use core::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use super::heap;
#[cfg(not(loom))]
use super::heap::MAX_NODES;
use super::retained::{Retained, MAX_PAGES};
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
    /// Allocations served by a kept mapping.
    pub(super) reused: AtomicU64,
}

impl LargeCounts {
    const fn new() -> Self {
        Self {
            mapped: AtomicUsize::new(0),
            live: AtomicUsize::new(0),
            allocations: AtomicU64::new(0),
            frees: AtomicU64::new(0),
            unbound: AtomicU64::new(0),
            reused: AtomicU64::new(0),
        }
    }
}

/// The counts of all large mappings, whatever their node (a free cannot tell a mapping's
/// node without asking the OS).
pub(super) static LARGE: LargeCounts = LargeCounts::new();

/// The mappings each node keeps.
#[cfg(not(loom))]
static RETAINED: [Retained; MAX_NODES] = [const { Retained::new() }; MAX_NODES];

/// The mappings node `node` (a heap index) keeps.
#[cfg(not(loom))]
fn retained(node: usize) -> Option<&'static Retained> {
    RETAINED.get(node)
}

/// None under loom, whose atomics cannot live in a static (`retained.rs` has the model).
#[cfg(loom)]
fn retained(_node: usize) -> Option<&'static Retained> {
    None
}

/// Whether any node keeps a mapping of `len` bytes now.
#[cfg(test)]
pub(crate) fn kept(len: usize) -> bool {
    (0..).map_while(retained).any(|r| r.holds(len))
}

/// Bytes every node keeps now.
pub(super) fn retained_bytes() -> usize {
    (0..).map_while(retained).map(Retained::bytes).sum()
}

/// Whether a thread has found itself on a node other than node 0: until then every
/// mapping of the allocator was bound to node 0 (or to no node).
static OTHER_NODE: AtomicBool = AtomicBool::new(false);

/// Notes that a thread found itself on `node` (see [`home_node`]); returns it.
pub(super) fn note_node(node: u32) -> u32 {
    if node != 0 && !OTHER_NODE.load(Ordering::Relaxed) {
        OTHER_NODE.store(true, Ordering::Relaxed);
    }
    node
}

/// Large allocations a thread serves from its node's kept mappings before it reads its
/// node again.
const NODE_REREAD: u32 = 64;

std::thread_local! {
    /// The calling thread's node (a heap index) for its large allocations, and how many
    /// more may use it before it is read again; 0 left: read it at the next one. A `const`
    /// thread-local without a destructor, so it works in any thread-local destructor.
    static LARGE_NODE: Cell<(usize, u32)> = const { Cell::new((0, 0)) };
}

/// The node whose kept mappings the calling thread's large allocation takes from: read
/// from the OS (`getcpu`) on every [`NODE_REREAD`]th call, and by every new mapping
/// ([`note_thread_node`]), so that a thread that moved finds its new node's mappings soon.
fn thread_node() -> usize {
    let remembered = LARGE_NODE.try_with(|n| {
        let (node, left) = n.get();
        (left > 0).then(|| {
            n.set((node, left - 1));
            node
        })
    });
    match remembered {
        Ok(Some(node)) => node,
        _ => note_thread_node(note_node(sys::current_node().unwrap_or(0))),
    }
}

/// Remembers `node`, just read from the OS, as the calling thread's for its next large
/// allocations; returns its heap index.
fn note_thread_node(node: u32) -> usize {
    let index = heap::index_of_node(node);
    let _ = LARGE_NODE.try_with(|n| n.set((index, NODE_REREAD)));
    index
}

/// Bytes of the largest mapping that alloc_zeroed takes from the kept ones and zeroes by
/// hand; a longer one is mapped afresh, its pages zero until touched.
const ZERO_BY_HAND: usize = 64 << 10;

/// Unmaps every mapping the nodes keep; returns the bytes unmapped.
pub(super) fn trim() -> usize {
    (0..)
        .map_while(retained)
        .map(|r| {
            r.drain(|ptr, len| {
                // SAFETY: a kept mapping is one whole page-aligned mapping that nothing
                // uses (`Retained` invariant), now ours alone (`drain`).
                unsafe { unmap_kept(ptr, len) };
            })
        })
        .sum()
}

/// Unmaps a kept mapping of `len` bytes, whatever the provenance of `ptr` (the pointer
/// it was freed with).
///
/// # Safety
///
/// `ptr..ptr + len` is one whole page-aligned mapping that was kept, now taken from its
/// slot by the caller, who does not use it afterwards.
unsafe fn unmap_kept(ptr: NonNull<u8>, len: usize) {
    let ptr = with_mapping_provenance(ptr);
    // SAFETY: as the caller promises; with the mapping's own provenance.
    drop(unsafe { Region::from_raw(ptr, len, PAGE) });
    LARGE.mapped.fetch_sub(len, Ordering::Relaxed);
}

/// The node (a heap index) whose kept mappings take the mapping at `ptr` when it is freed:
/// the node its pages are bound to. Until a thread has been on another node than node 0,
/// every mapping was bound to node 0 and no system call is made; after that, the mapping's
/// policy says (one `get_mempolicy`, far cheaper than the `munmap`, `mmap` and page faults
/// it saves), and a mapping the OS did not bind goes with the freeing thread's node.
fn home_node(ptr: NonNull<u8>) -> usize {
    if !OTHER_NODE.load(Ordering::Relaxed) {
        return 0;
    }
    sys::policy_node(ptr).map_or_else(thread_node, heap::index_of_node)
}

/// `ptr` (the start of a large mapping) with the provenance its mapping exposed (`map`,
/// `reallocate`) instead of the caller's: a pointer freed by a `Box` may carry a
/// provenance over the `Box`'s bytes only, which must neither unmap the whole mapping nor
/// be handed out again for a larger request of the same number of pages. A kept mapping
/// is kept as the caller's pointer (a pointer of the mapping, which leak checkers follow)
/// and re-derived when it is taken or unmapped.
fn with_mapping_provenance(ptr: NonNull<u8>) -> NonNull<u8> {
    let mapping: *mut u8 = core::ptr::with_exposed_provenance_mut(ptr.as_ptr().addr());
    NonNull::new(mapping).unwrap_or(ptr)
}

/// Bytes of the mapping for `layout`: its size rounded up to a page (at least one).
fn mapped_len(layout: Layout) -> Option<usize> {
    layout.size().max(1).checked_next_multiple_of(PAGE)
}

/// A kept mapping for `layout` from the calling thread's node, if one has its length.
fn reuse(layout: Layout, len: usize) -> Option<NonNull<u8>> {
    if layout.align() > PAGE || len > MAX_PAGES * PAGE {
        return None;
    }
    let ptr = with_mapping_provenance(retained(thread_node())?.take(len)?);
    let counts = &LARGE;
    counts.live.fetch_add(layout.size(), Ordering::Relaxed);
    counts.allocations.fetch_add(1, Ordering::Relaxed);
    counts.reused.fetch_add(1, Ordering::Relaxed);
    Some(ptr)
}

/// Memory for `layout`, zero-filled: a kept mapping zeroed by hand up to
/// [`ZERO_BY_HAND`], else a fresh one. `None` if the OS refuses.
pub(super) fn allocate_zeroed(layout: Layout) -> Option<NonNull<u8>> {
    let len = mapped_len(layout)?;
    if len <= ZERO_BY_HAND {
        if let Some(ptr) = reuse(layout, len) {
            // SAFETY: a mapping of `len >= layout.size()` bytes, now ours alone.
            unsafe { ptr.as_ptr().write_bytes(0, layout.size()) };
            return Some(ptr);
        }
    }
    map(layout, len)
}

/// Memory for `layout`: a kept mapping of its length, else a new one (zero-filled). `None`
/// if the OS refuses.
pub(super) fn allocate(layout: Layout) -> Option<NonNull<u8>> {
    let len = mapped_len(layout)?;
    reuse(layout, len).or_else(|| map(layout, len))
}

/// Maps `len` bytes (a whole number of pages) for `layout`, zero-filled, bound to the
/// calling thread's node. `None` if the OS refuses.
fn map(layout: Layout, len: usize) -> Option<NonNull<u8>> {
    let fresh = || {
        if layout.align() <= PAGE {
            sys::map(len)
        } else {
            sys::map_aligned(len, layout.align())
        }
        .ok()
    };
    // A refusal may come of the address space or memory the kept mappings hold (an
    // `RLIMIT_AS`, a cgroup's limit): they go back, and the mapping is asked for again.
    let region = match fresh() {
        Some(region) => region,
        None if trim() > 0 => fresh()?,
        None => return None,
    };
    // Frees and resizes re-derive the mapping's pointer with this provenance
    // (`with_mapping_provenance`).
    let _ = region.ptr().as_ptr().expose_provenance();
    let counts = &LARGE;
    let node = note_node(sys::current_node().unwrap_or(0));
    note_thread_node(node);
    if sys::prefer_node(region.ptr(), region.len(), node).is_err() {
        counts.unbound.fetch_add(1, Ordering::Relaxed);
    }
    counts.mapped.fetch_add(region.len(), Ordering::Relaxed);
    counts.live.fetch_add(layout.size(), Ordering::Relaxed);
    counts.allocations.fetch_add(1, Ordering::Relaxed);
    Some(region.into_raw().0)
}

/// Keeps what [`allocate`] mapped for `layout` for reuse on the node its pages are bound
/// to, or unmaps it.
///
/// # Safety
///
/// `ptr` came from [`allocate`], [`allocate_zeroed`] (or [`reallocate`]) with this `layout`
/// and is not used afterwards.
pub(super) unsafe fn free(ptr: NonNull<u8>, layout: Layout) {
    let Some(len) = mapped_len(layout) else {
        return;
    };
    let counts = &LARGE;
    counts.live.fetch_sub(layout.size(), Ordering::Relaxed);
    counts.frees.fetch_add(1, Ordering::Relaxed);
    if layout.align() <= PAGE && len <= MAX_PAGES * PAGE {
        if let Some(kept) = retained(home_node(ptr)) {
            // Kept as the caller's pointer: `reuse` and `trim` re-derive it
            // (`with_mapping_provenance`).
            // SAFETY: `ptr..ptr + len` is one whole page-aligned mapping (`allocate`
            // made it for `layout`, whose alignment is at most a page) that the caller
            // gives up (contract).
            if unsafe { kept.put(ptr, len) } {
                return;
            }
        }
    }
    let ptr = with_mapping_provenance(ptr);
    // SAFETY: `ptr..ptr + len` is the mapping `allocate` made for `layout` (contract),
    // with this alignment, and nothing uses it once the region drops.
    drop(unsafe { Region::from_raw(ptr, len, layout.align().max(PAGE)) });
    counts.mapped.fetch_sub(len, Ordering::Relaxed);
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
    let ptr = with_mapping_provenance(ptr);
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
    // It may have moved: the next free or resize re-derives its pointer from this.
    let _ = region.ptr().as_ptr().expose_provenance();
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

    /// A mapping's policy names the node it was bound to (what `home_node` files it
    /// under); an unbound mapping names none.
    #[cfg(all(target_os = "linux", not(miri)))]
    #[test]
    fn a_mapping_names_the_node_it_was_bound_to() {
        // A page count no other test asks for, so that no reuse hands out another mapping.
        let layout = Layout::from_size_align(47 * PAGE, 8).unwrap();
        let unbound = LARGE.unbound.load(Ordering::Relaxed);
        let node = sys::current_node().unwrap_or(0);
        let p = map(layout, 47 * PAGE).unwrap();
        let moved = sys::current_node().unwrap_or(0) != node;
        let named = sys::policy_node(p);
        // SAFETY: mapped just above for `layout`, not used again.
        unsafe { free(p, layout) };
        if moved {
            eprintln!("the thread moved to another node: the binding is not known");
        } else if LARGE.unbound.load(Ordering::Relaxed) == unbound {
            assert_eq!(named, Some(node));
        } else {
            eprintln!("mbind refused here: no policy to read");
        }
        let plain = sys::map(PAGE).unwrap();
        assert_eq!(sys::policy_node(plain.ptr()), None, "no policy set");
    }

    /// A caller may free a mapping through a pointer whose provenance covers only the
    /// bytes it asked for (a `Box`'s): the kept mapping is handed out again, for a request
    /// of the same number of pages, with the whole mapping's provenance. Under Miri's
    /// Stacked Borrows the write past the first request's bytes was undefined behaviour
    /// with the freed pointer's.
    #[test]
    fn a_mapping_freed_through_a_narrow_pointer_is_reused_whole() {
        // A page count no other test asks for, so that the reuse finds this mapping.
        let len = 37 * PAGE;
        let narrow_layout = Layout::from_size_align(len - 100, 8).unwrap();
        let p = allocate(narrow_layout).unwrap();
        // SAFETY: the mapping holds `len - 100` bytes at least, ours alone.
        let first = unsafe { core::slice::from_raw_parts_mut(p.as_ptr(), len - 100) };
        first[0] = 1;
        // A pointer whose provenance covers its one byte.
        let narrow = NonNull::from(&mut first[0]);
        // SAFETY: allocated above with `narrow_layout`, not used again.
        unsafe { free(narrow, narrow_layout) };
        let whole_layout = Layout::from_size_align(len, 8).unwrap();
        let q = allocate(whole_layout).unwrap();
        // SAFETY: the mapping holds `len` bytes, ours alone.
        let whole = unsafe { core::slice::from_raw_parts_mut(q.as_ptr(), len) };
        whole[len - 1] = 2;
        assert_eq!(whole[len - 1], 2);
        // SAFETY: allocated above with `whole_layout`, not used again.
        unsafe { free(q, whole_layout) };
        unmap_own_kept(len);
    }

    /// Unmaps the kept mapping of `len` bytes (a length only the calling test asks for)
    /// as `trim` would, without taking other tests' kept mappings; it may be gone already
    /// (a concurrent `trim`).
    fn unmap_own_kept(len: usize) {
        if let Some(kept) = retained(thread_node()).and_then(|r| r.take(len)) {
            // SAFETY: a kept mapping of `len` bytes, taken from its slot: ours alone.
            unsafe { unmap_kept(kept, len) };
        }
    }

    /// A pointer whose provenance covers the first byte of the mapping at `p` only, as a
    /// `Box<u8>`'s would.
    fn narrow(p: NonNull<u8>) -> NonNull<u8> {
        // SAFETY: `p` starts a mapping of at least one byte, ours alone.
        NonNull::from(unsafe { &mut *p.as_ptr() })
    }

    /// A kept mapping freed through a narrow pointer is unmapped whole (as `trim` does);
    /// Miri's Stacked Borrows refused the unmap with the narrow pointer's provenance.
    #[test]
    fn a_mapping_kept_through_a_narrow_pointer_is_unmapped_whole() {
        let len = 39 * PAGE;
        let layout = Layout::from_size_align(len, 8).unwrap();
        let p = allocate(layout).unwrap();
        // SAFETY: allocated above with `layout`, not used again.
        unsafe { free(narrow(p), layout) };
        unmap_own_kept(len);
    }

    /// A mapping too long to keep, freed through a narrow pointer, is unmapped whole.
    #[test]
    fn a_mapping_too_long_to_keep_freed_through_a_narrow_pointer_is_unmapped_whole() {
        let long = (MAX_PAGES + 1) * PAGE;
        let layout = Layout::from_size_align(long, 8).unwrap();
        let p = allocate(layout).unwrap();
        // SAFETY: allocated above with `layout`, not used again.
        unsafe { free(narrow(p), layout) };
    }

    /// A mapping resized through a narrow pointer moves whole.
    #[test]
    fn a_mapping_resized_through_a_narrow_pointer_moves_whole() {
        let long = (MAX_PAGES + 1) * PAGE;
        let layout = Layout::from_size_align(41 * PAGE, 8).unwrap();
        let p = allocate(layout).unwrap();
        let last = p.as_ptr().wrapping_add(41 * PAGE - 1);
        // SAFETY: the mapping holds `41 * PAGE` bytes, ours alone: `last` is its last.
        unsafe { last.write(9) };
        // SAFETY: allocated above with `layout`; not used again if it moves.
        let q = unsafe { reallocate(narrow(p), layout, long) }.unwrap_or(p);
        let grown = Layout::from_size_align(if q == p { 41 * PAGE } else { long }, 8).unwrap();
        // SAFETY: the mapping holds `grown.size()` bytes and kept the old ones.
        let bytes = unsafe { core::slice::from_raw_parts_mut(q.as_ptr(), grown.size()) };
        assert_eq!(bytes[41 * PAGE - 1], 9);
        bytes[grown.size() - 1] = 1;
        // SAFETY: the mapping of `grown`, not used again.
        unsafe { free(q, grown) };
        unmap_own_kept(41 * PAGE);
    }

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
