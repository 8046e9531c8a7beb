//! Large mappings kept for reuse after their free: a fixed set of slots per node, each one
//! atomic word, so that a program that frees and allocates buffers of the same size in
//! turn (a `Vec` grown past 32 KiB, a 64 KiB read buffer per request) pays for `mmap`,
//! `mbind`, `munmap` and the page faults once rather than on every call.
//!
//! A slot holds a mapping's address, page-aligned, with its length in pages in the low
//! bits (at most [`MAX_PAGES`], below a page's 4,096): one word says everything, so a slot
//! is taken or filled with one compare-and-swap, with no lock and no allocation, from any
//! thread, in a thread-local destructor and in a child after `fork` alike. A mapping sits
//! in at most one slot, and only while no one uses it: whoever fills a slot gives the
//! mapping up, whoever empties it owns it. A word names its mapping completely, so a slot
//! emptied and refilled with the same word between another thread's load and its swap
//! still holds a mapping that is free to take (no ABA hazard).

use core::ptr::NonNull;

use crate::sync::{AtomicU64, AtomicUsize, Ordering};
use crate::sys::PAGE;

/// Slots of one node (fewer in the loom model, whose cost grows with every atomic access).
#[cfg(not(loom))]
pub(super) const SLOTS: usize = 32;
#[cfg(loom)]
pub(super) const SLOTS: usize = 3;

/// Pages of the longest mapping kept: 1 MiB. Beyond it the system calls cost little next
/// to touching the memory, and a kept mapping would hold much memory for one caller.
pub(super) const MAX_PAGES: usize = 256;

/// Bytes one node keeps at most: 16 MiB.
pub(super) const MAX_BYTES: usize = 16 << 20;

const PAGE_BITS: u64 = PAGE as u64 - 1;

/// The mappings one node keeps.
///
/// Invariants: a non-zero slot is `address | pages` of one whole mapping of `pages` pages
/// (`1..=MAX_PAGES`) that nothing uses and no other slot names; `bytes` is at least the
/// sum of the kept mappings' lengths (a filler adds before it fills a slot, a taker
/// subtracts after it empties one) and at most [`MAX_BYTES`] plus the lengths of the
/// fills in progress.
#[derive(Debug)]
pub(super) struct Retained {
    slots: [AtomicU64; SLOTS],
    bytes: AtomicUsize,
}

impl Retained {
    #[cfg(not(loom))]
    pub(super) const fn new() -> Self {
        Self {
            slots: [const { AtomicU64::new(0) }; SLOTS],
            bytes: AtomicUsize::new(0),
        }
    }

    #[cfg(loom)]
    pub(super) fn new() -> Self {
        Self {
            slots: core::array::from_fn(|_| AtomicU64::new(0)),
            bytes: AtomicUsize::new(0),
        }
    }

    /// The word of a mapping of `len` bytes at `ptr`, if it may be kept: `len` a whole
    /// number of pages, at most [`MAX_PAGES`], and `ptr` page-aligned.
    fn word(ptr: usize, len: usize) -> Option<u64> {
        let pages = len / PAGE;
        let fits = len % PAGE == 0 && (1..=MAX_PAGES).contains(&pages) && ptr % PAGE == 0;
        (fits && ptr != 0).then_some(ptr as u64 | pages as u64)
    }

    /// Keeps the mapping of `len` bytes at `ptr`; false, leaving it the caller's, if it is
    /// too long, the node keeps [`MAX_BYTES`] already, or every slot is full.
    ///
    /// # Safety
    ///
    /// `ptr..ptr + len` is one whole mapping that the caller owns and gives up when this
    /// returns true: it neither uses nor unmaps it afterwards.
    pub(super) unsafe fn put(&self, ptr: NonNull<u8>, len: usize) -> bool {
        let Some(word) = Self::word(ptr.as_ptr() as usize, len) else {
            return false;
        };
        if self.bytes.fetch_add(len, Ordering::Relaxed) + len > MAX_BYTES {
            self.bytes.fetch_sub(len, Ordering::Relaxed);
            return false;
        }
        for slot in &self.slots {
            // Release: the caller's last use of the memory happens before the next
            // owner's first (it takes the slot with Acquire).
            if slot.load(Ordering::Relaxed) == 0
                && slot
                    .compare_exchange(0, word, Ordering::Release, Ordering::Relaxed)
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
        if len % PAGE != 0 || !(1..=MAX_PAGES).contains(&(len / PAGE)) {
            return None;
        }
        let pages = (len / PAGE) as u64;
        for slot in &self.slots {
            let word = slot.load(Ordering::Relaxed);
            if word != 0
                && word & PAGE_BITS == pages
                && slot
                    .compare_exchange(word, 0, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                self.bytes.fetch_sub(len, Ordering::Relaxed);
                return NonNull::new((word & !PAGE_BITS) as usize as *mut u8);
            }
        }
        None
    }

    /// Empties every slot, handing each mapping and its length to `give_back`, which now
    /// owns it; returns the bytes handed over.
    pub(super) fn drain(&self, mut give_back: impl FnMut(NonNull<u8>, usize)) -> usize {
        let mut total = 0;
        for slot in &self.slots {
            let word = slot.swap(0, Ordering::Acquire);
            let len = (word & PAGE_BITS) as usize * PAGE;
            if let Some(ptr) = NonNull::new((word & !PAGE_BITS) as usize as *mut u8) {
                self.bytes.fetch_sub(len, Ordering::Relaxed);
                total += len;
                give_back(ptr, len);
            }
        }
        total
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
        NonNull::new((n * 1024 * PAGE) as *mut u8).unwrap()
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
        assert!(!put(&r, NonNull::new((PAGE + 8) as *mut u8).unwrap(), PAGE));
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

/// Loom: two threads fill and take at once; every mapping ends with exactly one owner and
/// the byte count with the sum of what is kept.
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;

    fn at(n: usize) -> NonNull<u8> {
        NonNull::new((n * 1024 * PAGE) as *mut u8).unwrap_or(NonNull::dangling())
    }

    #[test]
    fn loom_retained_put_and_take_race() {
        loom::model(|| {
            let r = Arc::new(Retained::new());
            let r2 = Arc::clone(&r);
            // SAFETY: fake addresses, never used as memory.
            assert!(unsafe { r.put(at(1), PAGE) });
            let t = loom::thread::spawn(move || {
                let got = r2.take(PAGE);
                // SAFETY: as above.
                let kept = unsafe { r2.put(at(2), PAGE) };
                (got, kept)
            });
            let mine = r.take(PAGE);
            let (theirs, kept) = t.join().unwrap();
            assert!(kept);
            let mut owned: Vec<_> = [mine, theirs].into_iter().flatten().collect();
            owned.extend(core::iter::from_fn(|| r.take(PAGE)));
            owned.sort();
            assert_eq!(owned, [at(1), at(2)], "each mapping has exactly one owner");
            assert_eq!(r.bytes(), 0);
        });
    }
}
