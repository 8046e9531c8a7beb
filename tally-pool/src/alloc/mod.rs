//! [`TallyAlloc`]: a NUMA-aware global allocator over per-node size-class heaps.
//!
//! ```
//! use tally_pool::alloc::TallyAlloc;
//!
//! #[global_allocator]
//! static GLOBAL: TallyAlloc = TallyAlloc::new();
//!
//! let v: Vec<u64> = (0..1000).collect();
//! assert_eq!(v.iter().sum::<u64>(), 499_500);
//! let s = GLOBAL.stats(); // per size class and node: live, mapped, allocations, frees, locality
//! assert!(s.live_bytes() >= 8000);
//! ```
//!
//! # How it works
//!
//! - **Layouts up to 32 KiB, aligned to at most 4 KiB**, are rounded up to their
//!   [`SizeClass`] and served from a heap per node and class. A
//!   heap carves blocks from 1 MiB chunks, mapped when first needed, bound to the node
//!   before their first touch (`mbind` with `MPOL_PREFERRED`: a full node spills to others
//!   rather than failing a page fault), each starting with a header that names its heap.
//! - **Huge pages for classes in heavy use**: a heap's first two chunks are mapped one at a
//!   time and touched only where blocks are used; from its third on, it maps them two at
//!   once, 2 MiB-aligned and advised `MADV_HUGEPAGE`, so that where the kernel has
//!   transparent huge pages (`always` or `madvise`), 2 MiB of the class take one page fault
//!   and one TLB entry instead of 512. [`TallyAlloc::set_huge_pages`] turns this off.
//! - **Each thread caches** up to two batches of free blocks per class (a batch is 64 KiB
//!   worth, 2 to 64 blocks) as a stack of their addresses: allocation pops and a free of
//!   a block of the thread's node pushes, with no atomic instruction and no lock. A free
//!   neither reads nor writes the block, so a block handed to another thread and freed
//!   there stays in the processor cache of the thread that used it, and reads the chunk's
//!   header only for a chunk the cache has not checked before (each class's cache
//!   remembers the last one). A cache trades a batch with its node's heap when it runs
//!   empty or full: a copy of addresses into or out of the heap's stack (room for 256),
//!   under the heap's lock; only blocks beyond that room are linked through their first
//!   word. The heaps are 128-byte aligned, so no two share a cache line.
//! - **Frees go home**: a block freed by a thread of another node goes straight to its own
//!   node's heap, counted as a remote free; [`ClassStats::locality`] is the share of frees
//!   that were local.
//! - **Larger layouts** get a mapping of their own, bound to the calling thread's node;
//!   `realloc` between large sizes moves pages with `mremap` rather than copying.
//!   A freed mapping of at most 1 MiB (and page alignment) is kept, up to 16 MiB a
//!   node, for the next allocation of as many pages by a thread of the node its pages are
//!   bound to, so a buffer freed and allocated again costs no `mmap`, `munmap` or page
//!   fault (a thread reads its node every 64th large allocation; a free asks the OS for
//!   the mapping's node once the process has run on a node other than node 0).
//!   [`TallyAlloc::trim`] unmaps them, and so does every round of a running
//!   [pressure monitor](crate::pressure) (at Normal, every 10 s or its `idle_after`).
//! - `realloc` within a class returns the same pointer; across classes it copies once.
//! - `alloc_zeroed` takes zero pages as they are: a large layout's fresh mapping (a kept
//!   one only up to 64 KiB, zeroed by hand), and a
//!   block carved from a chunk and never handed out before (its address carries a mark
//!   through the caches and heaps until it is handed out or linked into a list). A block
//!   used before is zeroed by hand.
//! - **Thread exit** gives the thread's cached blocks back to their heaps and publishes its
//!   counts, so nothing is stranded, even for a cache first used from a thread-local or
//!   `pthread_key_create` destructor.
//! - **Failure** is a null pointer: the OS refusing a chunk or a mapping is the only
//!   failure (asked for once more after the kept large mappings, which count against the
//!   same limits, are unmapped), and nothing on any path panics.
//!
//! # What it never does
//!
//! No path of the allocator allocates: the heaps and their stacks are statics, the thread
//! cache is a zero-initialised `const` thread-local of counts and a pointer to its slots
//! with no destructor, so reaching it checks nothing; its slots are a mapping of their own,
//! taken from those of exited threads or mapped when the cache is first used, and its
//! flush at thread exit is the destructor of a `pthread_key_create` key, set when the cache
//! is first used, before it holds a block (glibc runs key destructors after the
//! thread-local ones, and again for keys set meanwhile). The chunk headers live in
//! the chunks, large mappings keep no record beside them (the caller's layout says what to
//! unmap), binding builds its node mask on the stack, and the only lock is a spin flag in
//! each heap, never held across a system call (but held across the page faults of linking
//! blocks into a heap's overflow list, and of a spare chunk's header page where no huge
//! page backs its pair; a new chunk's first page is faulted in before). Nothing waits for anything else: the fork
//! handlers are registered by the first thread to take from a heap while the others go on. It does not use the block pools' `BlockPool` (whose creation and
//! thread registration allocate), only their size classes and the `sys` layer.
//!
//! - **From a thread-local destructor**, once the thread's cache has been flushed (it is
//!   then marked gone for good), calls work on the heaps directly. A call that re-entered
//!   the allocator while the thread's cache is in use (a flag set for the few instructions
//!   of each call) would do the same; nothing does, and [`AllocStats::reentries`] counts
//!   it if it ever happened.
//! - **Across `fork`**: `pthread_atfork` handlers take every heap's lock before the fork
//!   and release them after it in both processes, so a child never finds a heap locked by
//!   a thread that does not exist there. The other threads' cached blocks stay out of
//!   circulation in the child. A fork made while the first heap access of the process is
//!   still registering the handlers runs none of them. The handlers are registered at that
//!   first heap access, so any `pthread_atfork` prepare handler registered earlier (by
//!   another library) runs after they took the locks, since `fork` runs prepare handlers
//!   in reverse order: such a handler must not allocate through this allocator, or the
//!   `fork` never returns. Use the allocator once early in `main` (before libraries that
//!   register fork handlers start) when that can happen.
//!
//! # Statistics
//!
//! [`TallyAlloc::stats`] gives, per class and node, live, cached, free and mapped figures,
//! allocations, frees, remote frees and locality; its first call lists the allocator in the
//! [statistics registry](crate::stats) as one component of kind `allocator` (registering
//! allocates, so it is not done on an allocation path).
//!
//! # Limits
//!
//! - Chunks are never given back to the OS; free blocks are reused by any thread of their
//!   node. A chunk pair backed by a huge page is resident whole from its first use, so a
//!   class in heavy use holds up to 2 MiB a node (its newest pair) beyond its blocks.
//! - Nodes from 16 on share heaps (`node % 16`), whose chunks are bound to the node of that
//!   index.
//! - Large mappings are counted for the process as a whole, not per node. Once a thread
//!   has run on a node other than node 0, a large free asks the OS which node the mapping
//!   is bound to (one `get_mempolicy`); a thread that moved to another node uses its old
//!   node's kept mappings for up to 64 more large allocations, or until it maps one.
//!   Without a pressure monitor, kept mappings stay until [`TallyAlloc::trim`]; a node
//!   whose 32 slots are full unmaps further frees, whatever sizes the kept ones have.
//! - A `fork` made while another thread keeps or takes a mapping leaves the child counting
//!   that mapping's bytes as kept for good (its limit of 16 MiB a node is then reached
//!   sooner).
//! - A thread that stops allocating keeps up to two batches per class until it exits.
//! - A thread's cache takes about 3 KiB of zero-initialised static thread-local storage
//!   (which glibc takes from the thread's stack) and, once used, a 53 KiB mapping for its
//!   slots, reused by later threads after it exits; the mappings count as mapped for the
//!   process but belong to no class.
//! - A process forked while its first thread cache was being set up works without caches.
//! - A cache first used in the last round of a thread's `pthread_key_create` destructors
//!   (glibc runs four while keys are set again) is never flushed.
//! - Allocating from a signal handler is not supported: a handler that interrupts its
//!   thread while it holds a heap's lock waits for that lock forever.
//! - A free with the wrong layout is caught only among size classes: the chunk header
//!   names the block's class, and a block freed as another class is dropped and counted
//!   ([`AllocStats::mismatched_frees`]). A large free trusts its layout to say what to
//!   unmap or keep, and a pointer the allocator never handed out is not detected; as with
//!   blocks, a large buffer used after its free or freed twice may be handed out again
//!   (kept), rather than fault.

mod cache;
mod heap;
mod large;
mod retained;
mod stats;

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::{self, NonNull};

use crate::block::SizeClass;

pub use stats::{AllocStats, ClassStats, LargeStats};

/// A NUMA-aware global allocator: size-class heaps per node with thread caches, and
/// mappings of their own for large layouts. See the [module docs](self).
///
/// All values share one process-wide state: `TallyAlloc` is a handle to it.
///
/// ```
/// use core::alloc::{GlobalAlloc, Layout};
/// use tally_pool::alloc::TallyAlloc;
///
/// let a = TallyAlloc::new();
/// let layout = Layout::from_size_align(100, 8).unwrap();
/// // SAFETY: the layout has a non-zero size.
/// let p = unsafe { a.alloc(layout) };
/// assert!(!p.is_null());
/// // SAFETY: same pointer, same layout; 104 bytes is 100's class, so it stays put.
/// let q = unsafe { a.realloc(p, layout, 104) };
/// assert_eq!(p, q);
/// // SAFETY: allocated above with this layout's alignment and size 104.
/// unsafe { a.dealloc(q, Layout::from_size_align(104, 8).unwrap()) };
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct TallyAlloc {
    _private: (),
}

impl TallyAlloc {
    /// The allocator, for `#[global_allocator]`.
    pub const fn new() -> Self {
        Self { _private: () }
    }

    /// Gives the calling thread's cached free blocks back to their heaps now, rather than
    /// at its exit (for a thread that is done allocating for a while).
    ///
    /// ```
    /// tally_pool::alloc::TallyAlloc::new().flush_thread_cache();
    /// ```
    pub fn flush_thread_cache(&self) {
        cache::flush_mine();
    }

    /// Unmaps the freed large mappings the allocator keeps for reuse (up to 16 MiB a
    /// node, each at most 1 MiB; see the [module docs](self)); returns the bytes
    /// unmapped. A running [pressure monitor](crate::pressure) calls it every round.
    ///
    /// ```
    /// use core::alloc::{GlobalAlloc, Layout};
    /// use tally_pool::alloc::TallyAlloc;
    ///
    /// let a = TallyAlloc::new();
    /// let layout = Layout::from_size_align(100_000, 8).unwrap();
    /// // SAFETY: non-zero size; freed with the same layout.
    /// unsafe { a.dealloc(a.alloc(layout), layout) };
    /// assert!(a.stats().large.retained_bytes > 0);
    /// assert!(a.trim() > 0);
    /// assert_eq!(a.stats().large.retained_bytes, 0);
    /// ```
    pub fn trim(&self) -> usize {
        large::trim()
    }

    /// Whether the heaps of classes in heavy use map their chunks in 2 MiB-aligned pairs
    /// advised for transparent huge pages (see the [module docs](self)); on by default.
    /// Applies to the chunks mapped from now on, in the whole process.
    ///
    /// A huge page is faulted in whole: the first touch of a pair zeroes 2 MiB at once and,
    /// with the kernel's `defrag` setting at `madvise` (its default), may first compact
    /// memory to find one. A process that would rather take 512 small faults than one
    /// such stall turns it off before it allocates much.
    ///
    /// ```
    /// use tally_pool::alloc::TallyAlloc;
    ///
    /// TallyAlloc::new().set_huge_pages(false);
    /// # TallyAlloc::new().set_huge_pages(true);
    /// ```
    pub fn set_huge_pages(&self, on: bool) {
        heap::set_huge_pages(on);
    }
}

/// Bytes of the large mappings the allocator keeps for reuse now.
pub(crate) fn retained_bytes() -> usize {
    large::retained_bytes()
}

/// Whether a large mapping of `len` bytes is kept now.
#[cfg(test)]
pub(crate) fn kept(len: usize) -> bool {
    large::kept(len)
}

/// The class of sizes up to 1024 bytes by `(size + 7) / 8`, for alignments up to 8 (which
/// every class has): what [`SizeClass::for_layout`] says, without its arithmetic.
// Evaluated at compile time, where an index out of bounds fails the build.
#[allow(clippy::indexing_slicing)]
const SMALL: [u8; 129] = {
    let mut table = [0u8; 129];
    let (mut k, mut index) = (0, 0);
    while k < 129 {
        while let Some(class) = SizeClass::from_index(index) {
            if class.size() >= k * 8 {
                break;
            }
            index += 1;
        }
        table[k] = index as u8;
        k += 1;
    }
    table
};

/// The index of the class of `layout`, or `None` for a large one:
/// [`SizeClass::for_layout`], through [`SMALL`] for small layouts. Every index it gives
/// is a class's (the caches check it once, where they use it).
#[inline(always)]
fn class_of(layout: Layout) -> Option<usize> {
    if layout.size() <= 1024 && layout.align() <= 8 {
        let index = SMALL.get((layout.size() + 7) >> 3)?;
        return Some(usize::from(*index));
    }
    SizeClass::for_layout(layout).map(SizeClass::index)
}

/// A block of class `index`, or null.
#[inline(always)]
fn allocate_block(index: usize) -> *mut u8 {
    heap::untagged(cache::allocate(index))
}

/// `block` (a block of a size class) with the provenance of its chunk, which the chunk's
/// mapping exposed (`heap::map_chunk`), instead of the caller's: a pointer freed by a `Box`
/// may carry a provenance over its own bytes only, which must neither reach the header nor
/// be handed out again for a larger request of the same class.
#[inline(always)]
fn with_chunk_provenance(block: NonNull<u8>) -> NonNull<u8> {
    let ptr: *mut u8 = ptr::with_exposed_provenance_mut(block.as_ptr() as usize);
    NonNull::new(ptr).unwrap_or(block)
}

// SAFETY: `alloc` returns null or a block of at least `layout.size()` bytes aligned to
// `layout.align()` (a class whose size and alignment cover the layout, or a mapping of
// the size rounded up to a page and aligned to at least the layout's alignment) that no
// other allocation overlaps until it is freed; `dealloc` and `realloc` derive the same
// class or mapping from the same layout; nothing unwinds.
unsafe impl GlobalAlloc for TallyAlloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match class_of(layout) {
            Some(index) => allocate_block(index),
            None => large::allocate(layout).map_or(ptr::null_mut(), NonNull::as_ptr),
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let Some(block) = NonNull::new(ptr) else {
            return;
        };
        match class_of(layout) {
            // SAFETY: `ptr` came from `alloc` with `layout` (the caller's contract), so
            // from this class, and is not used again.
            Some(index) => unsafe { cache::free(with_chunk_provenance(block), index) },
            // SAFETY: as above, from the mapping `large::allocate` made for `layout`.
            None => unsafe { large::free(block, layout) },
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        match class_of(layout) {
            Some(index) => {
                let block = cache::allocate(index);
                let p = heap::untagged(block);
                // A block carved and never handed out reads as zero (its chunk's pages
                // are as the mapping made them); any other may hold a previous owner's
                // bytes.
                if !p.is_null() && !heap::is_fresh(block) {
                    // SAFETY: a block just handed out, of at least `layout.size()`
                    // writable bytes.
                    unsafe { p.write_bytes(0, layout.size()) };
                }
                p
            }
            // A fresh mapping reads as zero; a kept one is zeroed.
            None => large::allocate_zeroed(layout).map_or(ptr::null_mut(), NonNull::as_ptr),
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return ptr::null_mut();
        };
        let Some(old) = NonNull::new(ptr) else {
            return ptr::null_mut();
        };
        match (class_of(layout), class_of(new_layout)) {
            (Some(a), Some(b)) if a == b => return with_chunk_provenance(old).as_ptr(),
            (None, None) => {
                // SAFETY: `ptr` is the mapping `large::allocate` made for `layout` (the
                // caller's contract); on success it is not used again.
                if let Some(p) = unsafe { large::reallocate(old, layout, new_size) } {
                    return p.as_ptr();
                }
            }
            _ => {}
        }
        // SAFETY: `new_layout` has the caller's alignment and a size the caller vouches
        // for (`realloc`'s contract).
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both are live, distinct allocations of at least the copied length.
            unsafe { ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size)) };
            // SAFETY: `ptr` came from this allocator with `layout`, and is not used again.
            unsafe { self.dealloc(ptr, layout) };
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    #[test]
    fn the_small_table_agrees_with_the_size_classes() {
        for size in 0..=2048 {
            for align in [1, 2, 4, 8, 16] {
                let l = layout(size, align);
                let class = SizeClass::for_layout(l).map(SizeClass::index);
                assert_eq!(class_of(l), class, "{l:?}");
            }
        }
    }

    #[test]
    fn blocks_are_aligned_distinct_and_reused() {
        let a = TallyAlloc::new();
        for align in [1, 8, 64, 4096] {
            for size in [1, 8, 24, 100, 4096, 32 * 1024] {
                let l = layout(size, align);
                // SAFETY: non-zero size.
                let ptrs: Vec<*mut u8> = (0..10).map(|_| unsafe { a.alloc(l) }).collect();
                for (i, &p) in ptrs.iter().enumerate() {
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "{l:?}");
                    // SAFETY: `size` writable bytes, ours.
                    unsafe { p.write_bytes(i as u8, size) };
                }
                for (i, &p) in ptrs.iter().enumerate() {
                    let last = p.wrapping_add(size - 1);
                    // SAFETY: as above; nothing else wrote them.
                    assert_eq!(unsafe { last.read() }, i as u8);
                }
                for p in ptrs {
                    // SAFETY: allocated above with `l`, freed once.
                    unsafe { a.dealloc(p, l) };
                }
            }
        }
    }

    #[test]
    fn zeroed_blocks_are_zero_after_reuse() {
        let a = TallyAlloc::new();
        let l = layout(200, 8);
        // SAFETY: non-zero size.
        let p = unsafe { a.alloc(l) };
        // SAFETY: 200 writable bytes, ours.
        unsafe { p.write_bytes(0xAB, 200) };
        // SAFETY: allocated above with `l`, freed once.
        unsafe { a.dealloc(p, l) };
        // SAFETY: non-zero size.
        let z = unsafe { a.alloc_zeroed(l) };
        // SAFETY: 200 initialised bytes, ours.
        assert!(unsafe { core::slice::from_raw_parts(z, 200) }
            .iter()
            .all(|&b| b == 0));
        // SAFETY: allocated above with `l`.
        unsafe { a.dealloc(z, l) };
    }

    #[test]
    fn zeroed_blocks_are_zero_whichever_way_they_come_back() {
        // Fresh blocks (not zeroed by hand), then the same blocks dirtied and freed, back
        // from the thread's cache, from the heap's stack and from its overflow list (more
        // than the stack holds); each must read as zero.
        let a = TallyAlloc::new();
        // Small blocks: the test is about where they come from, and runs under miri.
        let l = layout(40, 8);
        // More than a thread's cache (128 blocks of this class) and a heap's stack hold.
        let n = heap::STACK + 256;
        let check_and_dirty = |ptrs: &[*mut u8]| {
            for &p in ptrs {
                assert!(!p.is_null());
                // SAFETY: 40 initialised bytes, ours.
                let bytes = unsafe { core::slice::from_raw_parts_mut(p, 40) };
                assert!(bytes.iter().all(|&b| b == 0), "a zeroed block is not zero");
                bytes.fill(0xAB);
            }
        };
        let free_all = |ptrs: &[*mut u8]| {
            for &p in ptrs {
                // SAFETY: allocated with `l`, freed once.
                unsafe { a.dealloc(p, l) };
            }
        };
        for flush in [true, false, true] {
            // SAFETY: non-zero size.
            let ptrs: Vec<*mut u8> = (0..n).map(|_| unsafe { a.alloc_zeroed(l) }).collect();
            check_and_dirty(&ptrs);
            free_all(&ptrs);
            if flush {
                a.flush_thread_cache();
            }
        }
    }

    #[test]
    fn realloc_keeps_the_class_and_copies_across() {
        let a = TallyAlloc::new();
        let l = layout(20, 8);
        // SAFETY: non-zero size.
        let p = unsafe { a.alloc(l) };
        // SAFETY: 20 writable bytes.
        unsafe { p.write_bytes(9, 20) };
        // SAFETY: `p` with `l`; 24 is 20's class.
        let same = unsafe { a.realloc(p, l, 24) };
        assert_eq!(same, p);
        // SAFETY: `same` with size 24.
        let grown = unsafe { a.realloc(same, layout(24, 8), 50_000) };
        assert!(!grown.is_null());
        // SAFETY: the first 20 bytes were copied.
        assert!(unsafe { core::slice::from_raw_parts(grown, 20) }
            .iter()
            .all(|&b| b == 9));
        // SAFETY: `grown` with size 50,000.
        let shrunk = unsafe { a.realloc(grown, layout(50_000, 8), 10) };
        // SAFETY: the first 10 bytes were copied back.
        assert!(unsafe { core::slice::from_raw_parts(shrunk, 10) }
            .iter()
            .all(|&b| b == 9));
        // SAFETY: `shrunk` with size 10.
        unsafe { a.dealloc(shrunk, layout(10, 8)) };
    }

    #[test]
    fn a_free_with_another_class_s_layout_is_dropped_and_counted() {
        let a = TallyAlloc::new();
        let (big, small) = (layout(64, 8), layout(16, 8));
        // SAFETY: non-zero size.
        let p = unsafe { a.alloc(big) };
        assert!(!p.is_null());
        let before = a.stats().mismatched_frees;
        // SAFETY: a block of this allocator; the layout is wrong on purpose, which the
        // allocator detects from the chunk header.
        unsafe { a.dealloc(p, small) };
        assert_eq!(a.stats().mismatched_frees, before + 1);
        // SAFETY: non-zero size.
        let q: Vec<*mut u8> = (0..256).map(|_| unsafe { a.alloc(small) }).collect();
        assert!(!q.contains(&p), "the block never joins the 16-byte class");
        for q in q {
            // SAFETY: allocated above with `small`, freed once.
            unsafe { a.dealloc(q, small) };
        }
    }

    #[test]
    fn another_threads_frees_and_exit_return_every_block() {
        let a = TallyAlloc::new();
        // A class no other test here allocates from.
        let l = layout(48, 16);
        let counts = |a: &TallyAlloc| {
            let s = a.stats();
            let mine = s.classes.iter().filter(|c| c.block_size == 48);
            mine.fold((0, 0, 0), |(live, allocations, frees), c| {
                (
                    live + c.live_blocks,
                    allocations + c.allocations,
                    frees + c.frees,
                )
            })
        };
        let before = counts(&a);
        let ptrs: Vec<usize> = std::thread::spawn(move || {
            // SAFETY: non-zero size.
            (0..300).map(|_| unsafe { a.alloc(l) } as usize).collect()
        })
        .join()
        .unwrap();
        for p in ptrs {
            // SAFETY: allocated on the other thread with `l`, freed once here.
            unsafe { a.dealloc(p as *mut u8, l) };
        }
        a.flush_thread_cache();
        assert_eq!(a.stats().reentries, 0);
        let after = counts(&a);
        assert_eq!(after.0, before.0, "every block is back: live as before");
        assert_eq!(after.1 - before.1, 300, "allocations counted once each");
        assert_eq!(after.2 - before.2, 300, "frees counted once each");
    }
}
