//! The depot: where full and empty magazines wait between threads.
//!
//! A magazine is a fixed array of up to [`MAGAZINE_SIZE`] free block pointers. Threads
//! trade whole magazines with the depot, so the depot sees one operation per
//! `MAGAZINE_SIZE` blocks (Bonwick's magazine layer).
//!
//! # ABA safety: generations, not a double-width CAS
//!
//! Magazines live in segments that are never freed while the depot lives, and are named by
//! a 32-bit index. Each stack head is one `AtomicU64` holding the index of the top magazine
//! (plus one; zero is empty) in its low half and a generation in its high half that every
//! successful push or pop increments. A pop whose top was popped and pushed back in the
//! meantime sees a different generation and retries, so the classic ABA interleaving cannot
//! commit. A stale read of a magazine's `next` link is harmless: the link is an atomic in
//! memory that stays mapped, and the CAS that would use it fails. Stable Rust has no
//! 128-bit atomic, which rules out a tagged pointer with a double-width CAS; a 64-bit word
//! with 32-bit generations would need 2^32 operations on one stack between a pop's load and
//! its CAS to be fooled.

use core::ptr::null_mut;
use std::sync::atomic::{AtomicUsize as StdAtomicUsize, Ordering as StdOrdering};

use crate::sync::{AtomicPtr, AtomicU32, AtomicU64, Ordering, UnsafeCell};

/// Block pointers a magazine holds. Tiny under loom so that models stay small.
///
/// 32 rather than 64: a producer thread that hands blocks to a consumer through a queue
/// (W3 in `benches/`) gets them back sooner: 7 to 12 % faster per object, typed and
/// untyped, in runs with both threads pinned. A thread that frees 100,000 blocks and
/// allocates them again (W2) trades twice as often: about 10 % slower.
pub(crate) const MAGAZINE_SIZE: usize = if cfg!(loom) { 2 } else { 32 };

/// Magazines in the first segment; segment `k` holds `FIRST_SEGMENT << k`. Fifteen
/// magazines fill one 4 KiB page, so segment `k` takes `2^k` pages.
const FIRST_SEGMENT: usize = if cfg!(loom) { 2 } else { 15 };
/// Segments a depot can have: enough for every 32-bit index.
const SEGMENTS: usize = 32;

/// The free blocks a magazine holds.
#[derive(Debug)]
pub(crate) struct Blocks {
    /// How many entries of `ptrs` are valid, from the start.
    pub(crate) count: usize,
    /// Free block pointers; `ptrs[..count]` are valid.
    pub(crate) ptrs: [*mut u8; MAGAZINE_SIZE],
}

/// One magazine.
///
/// Invariant: `blocks` is accessed only by the magazine's owner: the thread that popped it
/// from a stack of the depot, or that took it fresh from [`Depot::new_magazine`]. Pushing
/// it (a release CAS) ends that ownership; the next pop (an acquire CAS) begins the next
/// one. `next` is written by the owner just before a push and may be read by anyone.
///
/// All-zero bytes are a valid magazine, the same as `Magazine::new`: every field is an
/// integer, an atomic integer or a raw pointer (null when zero), for which zero is a
/// valid value. The depot relies on this outside loom, where its segments are fresh
/// zero-filled pages.
#[derive(Debug)]
pub(crate) struct Magazine {
    next: AtomicU32,
    blocks: UnsafeCell<Blocks>,
}

impl Magazine {
    #[cfg(any(loom, test))]
    fn new() -> Self {
        Self {
            next: AtomicU32::new(0),
            blocks: UnsafeCell::new(Blocks {
                count: 0,
                ptrs: [null_mut(); MAGAZINE_SIZE],
            }),
        }
    }
}

/// A Treiber stack of magazine indices with a generation in the head (see module docs).
#[derive(Debug)]
struct Stack {
    /// Low 32 bits: top index + 1, or 0 when empty. High 32 bits: generation.
    head: AtomicU64,
}

const INDEX_MASK: u64 = 0xFFFF_FFFF;

impl Stack {
    fn new() -> Self {
        Self {
            head: AtomicU64::new(0),
        }
    }
}

/// Full and empty magazines of one pool.
#[derive(Debug)]
pub(crate) struct Depot {
    full: Stack,
    empty: Stack,
    /// Next never-used magazine index.
    fresh: AtomicU32,
    /// Blocks in the depot's magazines, for statistics: raised by [`Self::count_in`] before
    /// the push that makes them poppable, lowered by [`Self::count_out`] after the pop that
    /// takes them, so it never drops below the true count (the push's release and the
    /// pop's acquire order the two updates) and equals it when no trade is in flight. Next
    /// to the stack heads, whose line every trade takes anyway. A std atomic under loom
    /// too: statistics only, off the models' paths.
    blocks: StdAtomicUsize,
    /// Invariant: segment `k`, once non-null, points to `FIRST_SEGMENT << k` valid
    /// magazines that live as long as the depot, and never changes. Outside loom they lie
    /// in `mapped[k]`; under loom in a leaked `Box<[Magazine]>` that `Drop` frees.
    segments: [AtomicPtr<Magazine>; SEGMENTS],
    /// The mapping of each segment, set before its pointer is published and unmapped when
    /// the depot drops.
    #[cfg(not(loom))]
    mapped: [std::sync::OnceLock<crate::sys::Region>; SEGMENTS],
}

/// Magazines a depot faults in at a time outside loom: 64 pages' worth. A spill that takes
/// the first fresh magazine of such a step faults the whole step in with one call, so that
/// the spills after it take no page fault each (see [`Depot::add_segment`]).
const FAULT_STEP: usize = FIRST_SEGMENT * 64;

// SAFETY: the raw block pointers inside magazines are plain addresses; which thread may
// use a magazine's contents is governed by the ownership protocol on `Magazine`.
unsafe impl Send for Depot {}
// SAFETY: as for `Send`: shared access is through atomics, and `blocks` only by the owner.
unsafe impl Sync for Depot {}

/// Segment and offset of magazine `index`.
fn locate(index: u32) -> (usize, usize) {
    let i = index as usize / FIRST_SEGMENT + 1;
    let k = (usize::BITS - 1 - i.leading_zeros()) as usize;
    let start = FIRST_SEGMENT * ((1 << k) - 1);
    (k, index as usize - start)
}

impl Depot {
    pub(crate) fn new() -> Self {
        Self {
            full: Stack::new(),
            empty: Stack::new(),
            fresh: AtomicU32::new(0),
            blocks: StdAtomicUsize::new(0),
            segments: core::array::from_fn(|_| AtomicPtr::new(null_mut())),
            #[cfg(not(loom))]
            mapped: core::array::from_fn(|_| std::sync::OnceLock::new()),
        }
    }

    /// The magazine named `index`, which must have come from [`Self::new_magazine`].
    fn magazine(&self, index: u32) -> Option<&Magazine> {
        let (k, offset) = locate(index);
        let seg = self.segments.get(k)?.load(Ordering::Acquire);
        if seg.is_null() || offset >= FIRST_SEGMENT << k {
            return None;
        }
        // SAFETY: a non-null segment points to `FIRST_SEGMENT << k` live magazines that
        // live as long as `self` (field invariant), and `offset` is below that length.
        Some(unsafe { &*seg.wrapping_add(offset) })
    }

    /// A magazine that nobody else owns, with no blocks, or `None` when indices ran out.
    pub(crate) fn new_magazine(&self) -> Option<u32> {
        if let Some(index) = self.pop(&self.empty) {
            return Some(index);
        }
        let mut index = self.fresh.load(Ordering::Relaxed);
        loop {
            let next = index.checked_add(1)?;
            match self.fresh.compare_exchange_weak(
                index,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(current) => index = current,
            }
        }
        let (k, offset) = locate(index);
        let slot = self.segments.get(k)?;
        if slot.load(Ordering::Acquire).is_null() {
            self.add_segment(k, slot)?;
        } else if offset != 0 && offset % FAULT_STEP == 0 {
            self.fault_in(k, offset);
        }
        Some(index)
    }

    /// Faults in the step of segment `k` that starts at magazine `offset` (see
    /// [`FAULT_STEP`]); a no-op under loom, whose segments are boxes.
    ///
    /// Other threads may already hold magazines of the step (indices are handed out before
    /// their step is faulted in, and a segment is published before its first step is), so
    /// only advice that touches no byte is used: on kernels without it, the pages fault in
    /// on first use instead.
    fn fault_in(&self, k: usize, offset: usize) {
        #[cfg(not(loom))]
        if let Some(region) = self.mapped.get(k).and_then(std::sync::OnceLock::get) {
            let size = core::mem::size_of::<Magazine>();
            region.populate_if_supported(offset * size, (offset + FAULT_STEP) * size);
        }
        #[cfg(loom)]
        let _ = (k, offset);
    }

    /// Publishes segment `k` in `slot`, unless another thread did first. `None` when the OS
    /// refuses the memory.
    ///
    /// The segment is fresh zero-filled pages, which are valid empty magazines (see
    /// [`Magazine`]), so nothing is written to it. Its first [`FAULT_STEP`] magazines are
    /// faulted in now and each further step by the spill that takes its first magazine
    /// ([`Self::fault_in`]): a 4 MiB segment initialised at once would stall one `free` for
    /// milliseconds, and a page fault per 15 spills would put one in every few hundred.
    #[cfg(not(loom))]
    fn add_segment(&self, k: usize, slot: &AtomicPtr<Magazine>) -> Option<()> {
        let cell = self.mapped.get(k)?;
        if cell.get().is_none() {
            let bytes = (FIRST_SEGMENT << k).checked_mul(core::mem::size_of::<Magazine>())?;
            let region = crate::sys::map(bytes).ok()?;
            if cell.set(region).is_ok() {
                self.fault_in(k, 0);
            }
            // Else another thread mapped the segment first, and this mapping, never
            // published, is unmapped here.
        }
        let seg = cell.get()?.ptr().as_ptr().cast::<Magazine>();
        // Racing threads publish the same pointer; the mapping is in place before it.
        let _ = slot.compare_exchange(null_mut(), seg, Ordering::AcqRel, Ordering::Acquire);
        Some(())
    }

    /// Publishes segment `k` in `slot`, unless another thread did first.
    #[cfg(loom)]
    fn add_segment(&self, k: usize, slot: &AtomicPtr<Magazine>) -> Option<()> {
        let len = FIRST_SEGMENT << k;
        let seg: Box<[Magazine]> = (0..len).map(|_| Magazine::new()).collect();
        let seg = Box::into_raw(seg).cast::<Magazine>();
        if slot
            .compare_exchange(null_mut(), seg, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            let raw = core::ptr::slice_from_raw_parts_mut(seg, len);
            // SAFETY: `raw` is the box leaked just above, which lost the race and was
            // never published.
            drop(unsafe { Box::from_raw(raw) });
        }
        Some(())
    }

    /// Runs `f` on the blocks of magazine `index`.
    ///
    /// # Safety
    ///
    /// The calling thread must own the magazine (see [`Magazine`]).
    pub(crate) unsafe fn with_blocks<R>(
        &self,
        index: u32,
        f: impl FnOnce(&mut Blocks) -> R,
    ) -> Option<R> {
        let mag = self.magazine(index)?;
        // SAFETY: the caller owns the magazine, so no other thread accesses `blocks` now.
        Some(mag.blocks.with_mut(|b| f(unsafe { &mut *b })))
    }

    /// Pushes an owned magazine holding at least one block; ownership passes to the depot.
    pub(crate) fn push_full(&self, index: u32) {
        self.push(&self.full, index);
    }

    /// Pushes an owned, empty magazine for reuse.
    pub(crate) fn push_empty(&self, index: u32) {
        self.push(&self.empty, index);
    }

    /// Pops a magazine with blocks; the caller owns it.
    pub(crate) fn pop_full(&self) -> Option<u32> {
        self.pop(&self.full)
    }

    /// Counts `n` blocks into the depot: call it before pushing the magazine that holds
    /// them (see `blocks`).
    pub(crate) fn count_in(&self, n: usize) {
        self.blocks.fetch_add(n, StdOrdering::Relaxed);
    }

    /// Counts `n` blocks out of the depot: call it after popping the magazine that held
    /// them (see `blocks`).
    pub(crate) fn count_out(&self, n: usize) {
        self.blocks.fetch_sub(n, StdOrdering::Relaxed);
    }

    /// Blocks in the depot's magazines now (exact while no trade is in flight).
    pub(crate) fn blocks(&self) -> usize {
        self.blocks.load(StdOrdering::Relaxed)
    }

    /// Bytes of the depot's magazine segments: memory the depot holds while it lives.
    pub(crate) fn mapped_bytes(&self) -> usize {
        #[cfg(not(loom))]
        let bytes = self
            .mapped
            .iter()
            .filter_map(std::sync::OnceLock::get)
            .map(crate::sys::Region::len)
            .sum();
        #[cfg(loom)]
        let bytes = self
            .segments
            .iter()
            .enumerate()
            .filter(|(_, seg)| !seg.load(Ordering::Acquire).is_null())
            .map(|(k, _)| (FIRST_SEGMENT << k) * core::mem::size_of::<Magazine>())
            .sum();
        bytes
    }

    fn push(&self, stack: &Stack, index: u32) {
        let Some(mag) = self.magazine(index) else {
            return;
        };
        let mut head = stack.head.load(Ordering::Relaxed);
        loop {
            mag.next
                .store((head & INDEX_MASK) as u32, Ordering::Relaxed);
            let generation = (head >> 32).wrapping_add(1) << 32;
            let new = generation | (u64::from(index) + 1);
            match stack
                .head
                .compare_exchange_weak(head, new, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(current) => head = current,
            }
        }
    }

    fn pop(&self, stack: &Stack) -> Option<u32> {
        let mut head = stack.head.load(Ordering::Acquire);
        loop {
            let top = (head & INDEX_MASK) as u32;
            let index = top.checked_sub(1)?;
            let next = self.magazine(index)?.next.load(Ordering::Relaxed);
            let generation = (head >> 32).wrapping_add(1) << 32;
            let new = generation | u64::from(next);
            match stack
                .head
                .compare_exchange_weak(head, new, Ordering::Acquire, Ordering::Acquire)
            {
                Ok(_) => return Some(index),
                Err(current) => head = current,
            }
        }
    }
}

#[cfg(loom)]
impl Drop for Depot {
    fn drop(&mut self) {
        for (k, slot) in self.segments.iter().enumerate() {
            let seg = slot.load(Ordering::Acquire);
            if !seg.is_null() {
                let raw = core::ptr::slice_from_raw_parts_mut(seg, FIRST_SEGMENT << k);
                // SAFETY: non-null segments are leaked boxes of exactly this length (field
                // invariant); `&mut self` means no magazine is borrowed any more.
                drop(unsafe { Box::from_raw(raw) });
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn locate_covers_indices_without_gaps() {
        let mut expect = (0usize, 0usize);
        for i in 0..10_000u32 {
            let got = locate(i);
            assert_eq!(got, expect, "index {i}");
            expect.1 += 1;
            if expect.1 == FIRST_SEGMENT << expect.0 {
                expect = (expect.0 + 1, 0);
            }
        }
        assert!(locate(u32::MAX).0 < SEGMENTS);
    }

    #[test]
    fn mapped_bytes_are_the_segments_mapped_so_far() {
        let depot = Depot::new();
        assert_eq!(
            depot.mapped_bytes(),
            0,
            "no segment before the first magazine"
        );
        let first = FIRST_SEGMENT * core::mem::size_of::<Magazine>();
        let page = 4096;
        for _ in 0..FIRST_SEGMENT {
            depot.new_magazine().unwrap();
        }
        let one = depot.mapped_bytes();
        assert!(
            one >= first && one < first + page,
            "{one} bytes for {first}"
        );
        depot.new_magazine().unwrap();
        let two = depot.mapped_bytes() - one;
        assert!(
            two >= 2 * first && two < 2 * first + page,
            "{two} for {}",
            2 * first
        );
    }

    #[test]
    fn magazines_round_trip_through_the_stacks() {
        let depot = Depot::new();
        let a = depot.new_magazine().unwrap();
        let b = depot.new_magazine().unwrap();
        assert_ne!(a, b);
        // SAFETY: `a` and `b` are fresh, owned by this thread.
        unsafe {
            depot.with_blocks(a, |m| {
                m.ptrs[0] = core::ptr::dangling_mut::<u8>();
                m.count = 1;
            });
        }
        depot.push_full(a);
        depot.push_full(b);
        assert_eq!(depot.pop_full(), Some(b));
        assert_eq!(depot.pop_full(), Some(a));
        // SAFETY: `a` was just popped, so this thread owns it.
        let count = unsafe { depot.with_blocks(a, |m| m.count) };
        assert_eq!(count, Some(1));
        assert_eq!(depot.pop_full(), None);
        depot.push_empty(b);
        assert_eq!(
            depot.new_magazine(),
            Some(b),
            "empty magazines are reused first"
        );
    }

    #[test]
    fn zeroed_memory_is_an_empty_magazine() {
        let zero = core::mem::MaybeUninit::<Magazine>::zeroed();
        // SAFETY: all-zero bytes are a valid `Magazine` (type docs), which is what this
        // test checks, field by field, against `Magazine::new`.
        let zero = unsafe { zero.assume_init() };
        let fresh = Magazine::new();
        let view = |m: &Magazine| {
            m.blocks.with_mut(|b| {
                // SAFETY: this test owns `m`, and no other reference to its blocks is live.
                let b = unsafe { &*b };
                (b.count, b.ptrs)
            })
        };
        assert_eq!(
            zero.next.load(Ordering::Relaxed),
            fresh.next.load(Ordering::Relaxed)
        );
        assert_eq!(view(&zero), view(&fresh));
    }

    #[test]
    fn fresh_segments_read_as_empty_magazines() {
        let depot = Depot::new();
        // Enough magazines for four segments (15 + 30 + 60 + 120).
        let ids: Vec<u32> = (0..200).map(|_| depot.new_magazine().unwrap()).collect();
        for &i in &ids {
            // SAFETY: every index came fresh from `new_magazine`: this thread owns it.
            let got = unsafe { depot.with_blocks(i, |m| (m.count, m.ptrs)) };
            assert_eq!(got, Some((0, [null_mut(); MAGAZINE_SIZE])), "magazine {i}");
        }
        let pages: Vec<usize> = depot
            .mapped
            .iter()
            .filter_map(std::sync::OnceLock::get)
            .map(|r| r.len() / crate::sys::PAGE)
            .collect();
        assert_eq!(pages, [1, 2, 4, 8], "segment k takes 2^k pages");
    }

    #[test]
    fn threads_racing_for_new_segments_all_find_their_magazines() {
        // Under miri, which explores another interleaving per run, two rounds.
        let rounds = if cfg!(miri) { 2 } else { 20 };
        for _ in 0..rounds {
            let depot = Depot::new();
            let ids: Vec<Vec<u32>> = std::thread::scope(|s| {
                let workers: Vec<_> = (0..4)
                    .map(|_| {
                        s.spawn(|| {
                            (0..500)
                                .map(|_| {
                                    let i = depot.new_magazine().unwrap();
                                    // SAFETY: `i` came fresh from `new_magazine`: this
                                    // thread owns it.
                                    let count = unsafe { depot.with_blocks(i, |m| m.count) };
                                    assert_eq!(count, Some(0), "magazine {i}");
                                    i
                                })
                                .collect()
                        })
                    })
                    .collect();
                workers.into_iter().map(|w| w.join().unwrap()).collect()
            });
            let mut all: Vec<u32> = ids.concat();
            all.sort_unstable();
            assert_eq!(all, (0..2000).collect::<Vec<_>>());
        }
    }

    #[test]
    #[cfg(target_os = "linux")]
    #[cfg_attr(miri, ignore = "miri has no mincore and faults nothing in")]
    fn a_large_segment_is_faulted_in_a_step_at_a_time() {
        let depot = Depot::new();
        // Segments 0 to 6 hold 15 * (2^7 - 1) magazines; the next index opens segment 7,
        // 1,920 magazines on 128 pages.
        let first_of_7 = FIRST_SEGMENT * ((1 << 7) - 1);
        for _ in 0..=first_of_7 {
            depot.new_magazine().unwrap();
        }
        let resident = |depot: &Depot| {
            let region = depot.mapped[7].get().unwrap();
            crate::sys::resident_pages(region)
        };
        let size = core::mem::size_of::<Magazine>();
        let step_pages = (FAULT_STEP * size).div_ceil(crate::sys::PAGE);
        let got = resident(&depot);
        assert_eq!(got.len(), 128);
        assert!(
            got[..step_pages].iter().all(|&p| p),
            "the first step is faulted in"
        );
        assert!(
            got[step_pages..].iter().all(|&p| !p),
            "the rest is not, yet"
        );
        // Taking the first magazine of the second step faults that step in.
        for _ in 0..FAULT_STEP {
            depot.new_magazine().unwrap();
        }
        assert!(
            resident(&depot).iter().all(|&p| p),
            "both steps are faulted in"
        );
    }

    #[test]
    fn many_magazines_span_segments() {
        let depot = Depot::new();
        let ids: Vec<u32> = (0..1000).map(|_| depot.new_magazine().unwrap()).collect();
        for &i in &ids {
            depot.push_full(i);
        }
        let mut popped = Vec::new();
        while let Some(i) = depot.pop_full() {
            popped.push(i);
        }
        popped.sort_unstable();
        assert_eq!(popped, (0..1000).collect::<Vec<_>>());
    }
}
