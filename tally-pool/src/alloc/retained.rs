//! Large mappings kept for reuse after their free: a fixed set of slots per node, each one
//! atomic pointer, so that a program that frees and allocates buffers of the same size in
//! turn (a `Vec` grown past 32 KiB, a 64 KiB read buffer per request) pays for `mmap`,
//! `mbind`, `munmap` and the page faults once rather than on every call.
//!
//! A slot holds a pointer to a mapping, page-aligned, with its length in pages in the low
//! bits (at most [`MAX_PAGES`], below a page's 4,096): one word says everything, so a slot
//! is taken or filled with one compare-and-swap, with no lock and no allocation, from any
//! thread, in a thread-local destructor and in a child after `fork` alike. A mapping sits
//! in at most one slot, and only while no one uses it: whoever fills a slot gives the
//! mapping up, whoever empties it owns it. A word names its mapping completely, so a slot
//! emptied and refilled with the same word between another thread's load and its swap
//! still holds a mapping that is free to take (no ABA hazard). The tag is added with
//! `map_addr`, so the pointer keeps the provenance it came with, and leak checkers see the
//! mapping as reachable; except in Miri for a mapping that was handed out again, whose
//! pointer `large` re-derived from the mapping's exposed address: Miri's leak check does
//! not follow such a pointer, and reports such a mapping still kept at exit as leaked.

use core::ptr::{null_mut, NonNull};

use crate::sync::{AtomicPtr, AtomicUsize, Ordering};
use crate::sys::PAGE;

/// Slots of one node (fewer in the loom model, whose cost grows with every atomic access).
#[cfg(not(loom))]
pub(super) const SLOTS: usize = 32;
#[cfg(loom)]
pub(super) const SLOTS: usize = 3;

/// Pages of the longest mapping kept: 1 MiB. Beyond it the system calls cost little next
/// to touching the memory, and a kept mapping would hold much memory for one caller.
pub(super) const MAX_PAGES: usize = 256;

/// Bytes one node keeps at most: 16 MiB (two of the longest mappings in the loom model,
/// so that it reaches the limit).
#[cfg(not(loom))]
pub(super) const MAX_BYTES: usize = 16 << 20;
#[cfg(loom)]
pub(super) const MAX_BYTES: usize = 2 * MAX_PAGES * PAGE;

/// The low bits of a page-aligned address, which carry the page count.
const PAGE_BITS: usize = PAGE - 1;

// The page count fits in the bits a page-aligned address leaves zero.
const _: () = assert!(MAX_PAGES <= PAGE_BITS);

/// The mappings one node keeps.
///
/// Invariants: a non-null slot is a pointer to one whole mapping of `pages` pages
/// (`1..=MAX_PAGES`) tagged with `pages` in its low bits, that nothing uses and no other
/// slot names; `bytes` is at least the sum of the kept mappings' lengths (a filler adds
/// before it fills a slot, a taker subtracts after it empties one) and at most
/// [`MAX_BYTES`] plus the lengths of the fills in progress.
#[derive(Debug)]
pub(super) struct Retained {
    slots: [AtomicPtr<u8>; SLOTS],
    bytes: AtomicUsize,
}

/// The mapping a slot's word names, and its length in bytes; `None` for an empty slot.
fn untag(word: *mut u8) -> Option<(NonNull<u8>, usize)> {
    let pages = word.addr() & PAGE_BITS;
    NonNull::new(word.map_addr(|a| a & !PAGE_BITS)).map(|ptr| (ptr, pages * PAGE))
}

impl Retained {
    #[cfg(not(loom))]
    pub(super) const fn new() -> Self {
        Self {
            slots: [const { AtomicPtr::new(null_mut()) }; SLOTS],
            bytes: AtomicUsize::new(0),
        }
    }

    #[cfg(loom)]
    pub(super) fn new() -> Self {
        Self {
            slots: core::array::from_fn(|_| AtomicPtr::new(null_mut())),
            bytes: AtomicUsize::new(0),
        }
    }

    /// The page count of a mapping of `len` bytes, if one that long may be kept: a whole
    /// number of pages, at most [`MAX_PAGES`].
    fn pages(len: usize) -> Option<usize> {
        let pages = len / PAGE;
        (len % PAGE == 0 && (1..=MAX_PAGES).contains(&pages)).then_some(pages)
    }

    /// Keeps the mapping of `len` bytes at `ptr`; false, leaving it the caller's, if it is
    /// too long or not page-aligned, the node keeps [`MAX_BYTES`] already, or every slot
    /// is full.
    ///
    /// # Safety
    ///
    /// `ptr..ptr + len` is one whole mapping that the caller owns and gives up when this
    /// returns true: it neither uses nor unmaps it afterwards.
    pub(super) unsafe fn put(&self, ptr: NonNull<u8>, len: usize) -> bool {
        let Some(pages) = Self::pages(len).filter(|_| ptr.as_ptr().addr() & PAGE_BITS == 0) else {
            return false;
        };
        let word = ptr.as_ptr().map_addr(|a| a | pages);
        if self.bytes.fetch_add(len, Ordering::Relaxed) + len > MAX_BYTES {
            self.bytes.fetch_sub(len, Ordering::Relaxed);
            return false;
        }
        for slot in &self.slots {
            // Release: the caller's last use of the memory happens before the next
            // owner's first (it takes the slot with Acquire).
            if slot.load(Ordering::Relaxed).is_null()
                && slot
                    .compare_exchange(null_mut(), word, Ordering::Release, Ordering::Relaxed)
                    .is_ok()
            {
                return true;
            }
        }
        self.bytes.fetch_sub(len, Ordering::Relaxed);
        false
    }

    /// A kept mapping of exactly `len` bytes, now the caller's; `None` if there is none.
    pub(super) fn take(&self, len: usize) -> Option<NonNull<u8>> {
        let pages = Self::pages(len)?;
        for slot in &self.slots {
            let word = slot.load(Ordering::Relaxed);
            if !word.is_null()
                && word.addr() & PAGE_BITS == pages
                && slot
                    .compare_exchange(word, null_mut(), Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                self.bytes.fetch_sub(len, Ordering::Relaxed);
                return untag(word).map(|(ptr, _)| ptr);
            }
        }
        None
    }

    /// Empties every slot, handing each mapping and its length to `give_back`, which now
    /// owns it; returns the bytes handed over.
    pub(super) fn drain(&self, mut give_back: impl FnMut(NonNull<u8>, usize)) -> usize {
        let mut total = 0;
        for slot in &self.slots {
            // Acquire: as in `take`, the last user's writes happen before ours.
            if let Some((ptr, len)) = untag(slot.swap(null_mut(), Ordering::Acquire)) {
                self.bytes.fetch_sub(len, Ordering::Relaxed);
                total += len;
                give_back(ptr, len);
            }
        }
        total
    }

    /// Whether a mapping of `len` bytes is kept now.
    #[cfg(test)]
    pub(super) fn holds(&self, len: usize) -> bool {
        Self::pages(len).is_some_and(|pages| {
            self.slots.iter().any(|slot| {
                let word = slot.load(Ordering::Relaxed);
                !word.is_null() && word.addr() & PAGE_BITS == pages
            })
        })
    }

    /// Bytes kept now (fills in progress included).
    pub(super) fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// Distinct page-aligned fake addresses: nothing here touches or unmaps them.
    fn at(n: usize) -> NonNull<u8> {
        NonNull::new(core::ptr::without_provenance_mut(n * 1024 * PAGE)).unwrap()
    }

    fn put(r: &Retained, ptr: NonNull<u8>, len: usize) -> bool {
        // SAFETY: the tests' addresses are never used as memory, so giving one up is moot.
        unsafe { r.put(ptr, len) }
    }

    #[test]
    fn a_mapping_comes_back_only_for_its_length() {
        let r = Retained::new();
        assert!(put(&r, at(1), 10 * PAGE));
        assert_eq!(r.bytes(), 10 * PAGE);
        assert_eq!(r.take(9 * PAGE), None);
        assert_eq!(r.take(11 * PAGE), None);
        assert_eq!(r.take(10 * PAGE), Some(at(1)));
        assert_eq!(r.take(10 * PAGE), None, "taken once");
        assert_eq!(r.bytes(), 0);
    }

    #[test]
    fn limits_refuse_and_leave_the_mapping_to_the_caller() {
        let r = Retained::new();
        assert!(!put(&r, at(1), (MAX_PAGES + 1) * PAGE), "too long");
        assert!(!put(&r, at(1), PAGE + 1), "not whole pages");
        let unaligned = core::ptr::without_provenance_mut(PAGE + 8);
        assert!(
            !put(&r, NonNull::new(unaligned).unwrap(), PAGE),
            "not page-aligned"
        );
        // 16 MiB in 1 MiB mappings: 16 fit, the 17th is over the byte limit.
        for n in 1..=16 {
            assert!(put(&r, at(n), MAX_PAGES * PAGE), "{n}");
        }
        assert!(!put(&r, at(17), MAX_PAGES * PAGE));
        assert_eq!(r.bytes(), MAX_BYTES);
        // Slots run out before bytes with small mappings.
        let r = Retained::new();
        for n in 1..=SLOTS {
            assert!(put(&r, at(n), PAGE));
        }
        assert!(!put(&r, at(SLOTS + 1), PAGE));
        assert_eq!(
            r.bytes(),
            SLOTS * PAGE,
            "a refused fill gives its bytes back"
        );
    }

    #[test]
    fn drain_hands_over_everything_once() {
        let r = Retained::new();
        assert!(put(&r, at(1), PAGE));
        assert!(put(&r, at(2), 3 * PAGE));
        let mut seen = Vec::new();
        assert_eq!(r.drain(|p, len| seen.push((p, len))), 4 * PAGE);
        seen.sort();
        assert_eq!(seen, [(at(1), PAGE), (at(2), 3 * PAGE)]);
        assert_eq!(r.drain(|_, _| unreachable!()), 0);
        assert_eq!(r.bytes(), 0);
    }
}

/// Loom: threads fill, take and drain at once. Each fake mapping has a cell that its
/// owner writes before it gives the mapping up and the next owner reads after it takes it,
/// so a fill or a take without Release and Acquire shows as a data race; every mapping
/// ends with exactly one owner and the byte count with the sum of what is kept.
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::cell::UnsafeCell;
    use loom::sync::Arc;

    /// Three fake mappings, each with the cell that stands for its memory.
    struct Mappings([UnsafeCell<u64>; 3]);

    impl Mappings {
        fn new() -> Arc<Self> {
            Arc::new(Self(core::array::from_fn(|_| UnsafeCell::new(0))))
        }

        /// Writes mapping `n` (1 to 3) as its owner, and gives it to `r`.
        fn give(&self, r: &Retained, n: usize, len: usize) -> bool {
            // SAFETY: the cell of a mapping this thread owns (loom checks that claim).
            self.0[n - 1].with_mut(|p| unsafe { *p = n as u64 });
            // SAFETY: fake addresses, never used as memory.
            unsafe { r.put(at(n), len) }
        }

        /// Reads a mapping `r` handed over, as its new owner; its number.
        fn read(&self, ptr: NonNull<u8>) -> usize {
            let n = ptr.as_ptr().addr() / (1024 * PAGE);
            // SAFETY: the cell of a mapping this thread now owns (loom checks that claim).
            assert_eq!(self.0[n - 1].with(|p| unsafe { *p }), n as u64);
            n
        }
    }

    fn at(n: usize) -> NonNull<u8> {
        NonNull::new(core::ptr::without_provenance_mut(n * 1024 * PAGE)).unwrap()
    }

    #[test]
    fn loom_retained_put_take_and_drain_race() {
        loom::model(|| {
            let (r, m) = (Arc::new(Retained::new()), Mappings::new());
            assert!(m.give(&r, 1, PAGE));
            let (r2, m2) = (Arc::clone(&r), Arc::clone(&m));
            let t = loom::thread::spawn(move || {
                assert!(m2.give(&r2, 2, PAGE));
                r2.take(PAGE).map(|p| m2.read(p))
            });
            // A take and a drain race the other thread's take and fill.
            let mut owned: Vec<usize> = r.take(PAGE).map(|p| m.read(p)).into_iter().collect();
            r.drain(|p, len| {
                assert_eq!(len, PAGE);
                owned.push(m.read(p));
            });
            owned.extend(t.join().unwrap());
            r.drain(|p, _| owned.push(m.read(p)));
            owned.sort();
            assert_eq!(owned, [1, 2], "each mapping has exactly one owner");
            assert_eq!(r.bytes(), 0);
        });
    }

    #[test]
    fn loom_retained_byte_limit_race() {
        loom::model(|| {
            let (r, m) = (Arc::new(Retained::new()), Mappings::new());
            let long = MAX_PAGES * PAGE;
            assert!(m.give(&r, 1, long));
            let (r2, m2) = (Arc::clone(&r), Arc::clone(&m));
            let t = loom::thread::spawn(move || m2.give(&r2, 2, long));
            let third = m.give(&r, 3, long);
            let second = t.join().unwrap();
            // Two fit under the limit: exactly one of the racing fills is refused, and it
            // gives its bytes back.
            assert_ne!(second, third);
            let kept = 2;
            assert_eq!(r.bytes(), kept * long);
            let mut owned = Vec::new();
            assert_eq!(r.drain(|p, _| owned.push(m.read(p))), kept * long);
            assert_eq!(owned.len(), kept);
            assert_eq!(r.bytes(), 0);
        });
    }
}
