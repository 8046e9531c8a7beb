//! The overflow list: free blocks that a spill could not put into a magazine because the
//! OS refused the depot the memory for one.
//!
//! The depot's magazines live in segments mapped as the depot grows, so a spill (a full
//! cache handing a batch to the depot, a flush, a free on an exiting thread) can need new
//! memory. A `free`, and a handle's drop above all, has no good answer to a refusal there:
//! the block would stay out of circulation for good. So the blocks go onto this list
//! instead, which needs no memory of its own: it is linked through the free blocks
//! themselves, and refills take blocks from it before they carve or grow.
//!
//! Why a list through the blocks rather than magazine memory reserved at growth: the
//! depot may need up to one magazine per free block (a thread exiting, or freeing without
//! a cache, spills one block per magazine), so a reservation that never fails costs a
//! magazine (272 bytes) per block; the list costs nothing until the OS refuses.
//!
//! Where a block's link lives:
//!
//! - **under a guard** (`Canary`, `Full`): in its check word, as `free mark ^ next`. The
//!   payload is not touched, so `Full`'s poison and a recycling pool's value stay as they
//!   are, and taking the block off the list writes the free mark back. While the block is
//!   on the list, a second free of it is refused, since the word cannot hold the allocated
//!   mark (`next` is a multiple of 8, so `free mark ^ next` differs from its complement),
//!   but is reported as an overwritten check word rather than a double free unless the
//!   block is the list's last.
//! - **without a guard**: in the first word of its payload, unless the pool keeps values in
//!   its free blocks (a recycling typed pool, `PoolShared::keeps_contents`); such a pool
//!   has nowhere to link a block, and its spill reports the refusal as before.
//!
//! Every link is checked before it is followed (a block start of this pool, by the
//! registry, and 0 exactly after the list's count of blocks): a write into a free block
//! cannot send a refill to a foreign address, nor walk it past the count. A damaged link
//! cuts the list there; the block that held it and the blocks after it are withdrawn,
//! never handed out again, and counted so.
//!
//! The list sits behind a `Mutex` that only this file takes, and never while waiting for
//! anything else; a refill under the growth lock may take it (growth, then overflow).
//! The fast paths never look at it, and the slow paths only read its length (one load)
//! unless it holds blocks. Its blocks count as in the depot (`Depot::count_in`): free in
//! the statistics. Reclaim takes the whole list, counts its blocks as free in their
//! chunks, and puts back those of the chunks that stay.
//!
//! This file holds the list, generic over where the links live ([`Links`]); the pool's
//! side (the links in its blocks, the free count, the report of a damaged link) is in
//! `refill.rs`, and the tests in `overflow_tests.rs`.

use std::sync::atomic::{AtomicUsize as StdAtomicUsize, Ordering as StdOrdering};

use crate::sync::{lock, Mutex};

/// Where a listed block keeps its link: the pool whose free blocks the list holds (see the
/// module docs; `refill.rs` implements it for `PoolShared`).
pub(super) trait Links {
    /// Links the free block at `addr` to `next`.
    ///
    /// # Safety
    ///
    /// The caller holds the list's lock and the block: a carved block start of this pool in
    /// a live chunk, free, in no cache, magazine or user's hands, whose free blocks can carry
    /// a link.
    unsafe fn set_link(&self, addr: usize, next: usize);

    /// The link of the listed block at `addr`, and restores what a free block of this pool
    /// holds there (the free mark under a guard).
    ///
    /// # Safety
    ///
    /// The caller holds the list's lock, and `addr` is on the list (so `set_link` wrote it).
    unsafe fn take_link(&self, addr: usize) -> usize;

    /// Whether `addr` could be a listed block: a block start in a live chunk of this pool.
    fn is_listed_block(&self, addr: usize) -> bool;
}

/// The head of the list and its length.
///
/// Invariant: `head` is 0 or the address of a free block of the pool that no cache, magazine
/// or user holds, whose link (see the module docs) names the next block, 0 after the last;
/// `count` blocks are on the list, each once.
#[derive(Debug, Default)]
struct List {
    head: usize,
    count: usize,
}

/// Blocks a spill could not place in the depot (see the module docs).
///
/// Invariant: every call passes the same `Links`, the pool that owns the list.
#[derive(Debug)]
pub(super) struct Overflow {
    list: Mutex<List>,
    /// `List::count`, stored under the lock, so that a refill can skip the lock while the
    /// list is empty.
    len: StdAtomicUsize,
}

/// What [`Overflow::take`] found besides the blocks it took.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Taken {
    /// Blocks written into `out`.
    pub(super) n: usize,
    /// A damaged link: the listed block whose link named no block of the pool, or ended the
    /// list before or after `count` blocks (it is not among the `n` taken), and how many
    /// blocks, that one included, were cut off the list and withdrawn.
    pub(super) damaged: Option<(usize, usize)>,
}

impl Overflow {
    pub(super) fn new() -> Self {
        Self {
            list: Mutex::new(List::default()),
            len: StdAtomicUsize::new(0),
        }
    }

    /// Blocks on the list, as last stored.
    pub(super) fn len(&self) -> usize {
        self.len.load(StdOrdering::Acquire)
    }

    /// Puts the blocks of `ptrs` onto the list.
    ///
    /// # Safety
    ///
    /// `links` is the pool that owns the list, and its free blocks can carry a link; each
    /// pointer is a checked, free block of it that the caller holds and gives up.
    pub(super) unsafe fn push(&self, links: &impl Links, ptrs: &[*mut u8]) {
        let mut list = lock(&self.list);
        for &p in ptrs {
            let addr = p as usize;
            // SAFETY: the caller gives up `addr`, a free block of `links` that can carry a
            // link, and this thread holds the list's lock.
            unsafe { links.set_link(addr, list.head) };
            list.head = addr;
        }
        list.count += ptrs.len();
        self.len.store(list.count, StdOrdering::Release);
    }

    /// Takes up to `out.len()` blocks off the list into `out`, each free as the guard
    /// expects. Skips the lock while the list is empty. A link that names no block of the
    /// pool cuts the list there (see [`Taken::damaged`]).
    ///
    /// # Safety
    ///
    /// `links` is the pool that owns the list.
    pub(super) unsafe fn take(&self, links: &impl Links, out: &mut [*mut u8]) -> Taken {
        let mut taken = Taken::default();
        if self.len() == 0 || out.is_empty() {
            return taken;
        }
        let mut list = lock(&self.list);
        for slot in out.iter_mut() {
            if list.head == 0 || list.count == 0 {
                break;
            }
            let addr = list.head;
            // Only a write into a free block (undefined behaviour in the writer) breaks the
            // invariant; the checks below catch what they can of such damage.
            // SAFETY: `addr` is the list's head, under the list's lock: a listed block of
            // `links` by `List`'s invariant and the caller's.
            let next = unsafe { links.take_link(addr) };
            list.count -= 1;
            // The link must agree with the count: 0 exactly after the last block, else a
            // block of the pool.
            let damaged = if next == 0 {
                list.count != 0
            } else {
                list.count == 0 || !links.is_listed_block(next)
            };
            if damaged {
                // A write into `addr` damaged its link: it and the blocks after it are
                // withdrawn, never handed out.
                taken.damaged = Some((addr, list.count + 1));
                *list = List::default();
                break;
            }
            *slot = addr as *mut u8;
            taken.n += 1;
            list.head = next;
        }
        self.len.store(list.count, StdOrdering::Release);
        taken
    }
}
