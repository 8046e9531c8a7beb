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
//!   its free blocks (a recycling typed pool, [`PoolShared::keeps_contents`]); such a pool
//!   has nowhere to link a block, and its spill reports the refusal as before.
//!
//! Every link is checked before it is followed (a block start of this pool, by the
//! registry): a write into a free block cannot send a refill to a foreign address. A
//! damaged link cuts the list there; the blocks after it are withdrawn and counted so.
//!
//! The list sits behind a `Mutex` that only this file takes, and never while waiting for
//! anything else; a refill under the growth lock may take it (growth, then overflow).
//! The fast paths never look at it, and the slow paths only read its length (one load)
//! unless it holds blocks. Its blocks count as in the depot (`Depot::count_in`): free in
//! the statistics. Reclaim takes the whole list, counts its blocks as free in their
//! chunks, and puts back those of the chunks that stay.

use std::sync::atomic::{AtomicUsize as StdAtomicUsize, Ordering as StdOrdering};

use super::chunk::registry;
use super::config::GuardLevel;
use super::shared::PoolShared;
use crate::error::CorruptionKind;
use crate::sync::{lock, Mutex, Ordering};

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
#[derive(Debug)]
pub(super) struct Overflow {
    list: Mutex<List>,
    /// `List::count`, stored under the lock, so that a refill can skip the lock while the
    /// list is empty.
    len: StdAtomicUsize,
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
}

impl PoolShared {
    /// Whether a free block of this pool can carry a link.
    fn can_link(&self) -> bool {
        self.guard != GuardLevel::Off || !self.keeps_contents.load(StdOrdering::Relaxed)
    }

    /// Links the free block at `addr` to `next`.
    ///
    /// The caller holds the list's lock and the block: free, in no cache, magazine or
    /// user's hands, a carved block start of this pool in a live chunk.
    fn set_link(&self, addr: usize, next: usize) {
        if let Some(word) = self.canary(addr) {
            word.store(!self.alloc_mark(addr) ^ next as u64, Ordering::Release);
        } else {
            // SAFETY: `addr` starts a free block of this pool that the caller holds alone (see
            // above): 8 bytes or more (`Geometry`), 8-aligned (as every block start), in a chunk
            // mapped while the pool lives, and the pool keeps no value in it (`can_link`).
            unsafe { (addr as *mut usize).write(next) };
        }
    }

    /// The link of the listed block at `addr`, and restores what a free block of this
    /// pool holds there (the free mark under a guard).
    ///
    /// The caller holds the list's lock, and `addr` is on the list.
    fn take_link(&self, addr: usize) -> usize {
        if let Some(word) = self.canary(addr) {
            let free = !self.alloc_mark(addr);
            let next = word.load(Ordering::Acquire) ^ free;
            word.store(free, Ordering::Release);
            next as usize
        } else {
            // SAFETY: as in `set_link`, which wrote this word when the block went onto the
            // list; the list's lock orders that write before this read.
            unsafe { (addr as *const usize).read() }
        }
    }

    /// Puts the free blocks of `ptrs` onto the overflow list; false (and nothing done) if
    /// this pool's blocks cannot carry a link. Each pointer must be a checked, free block
    /// of this pool that the caller holds and gives up.
    pub(super) fn overflow_push(&self, ptrs: &[*mut u8]) -> bool {
        if !self.can_link() {
            return false;
        }
        if ptrs.is_empty() {
            return true;
        }
        // Counted before they can be taken (`Depot::count_in`).
        self.depot.count_in(ptrs.len());
        let mut list = lock(&self.overflow.list);
        for &p in ptrs {
            let addr = p as usize;
            self.set_link(addr, list.head);
            list.head = addr;
        }
        list.count += ptrs.len();
        self.overflow.len.store(list.count, StdOrdering::Release);
        true
    }

    /// Takes up to `out.len()` blocks off the overflow list into `out`, each free as the
    /// guard expects; returns how many. Skips the lock while the list is empty.
    pub(super) fn overflow_take(&self, out: &mut [*mut u8]) -> usize {
        if self.overflow.len() == 0 || out.is_empty() {
            return 0;
        }
        let mut list = lock(&self.overflow.list);
        let mut n = 0;
        for slot in out.iter_mut() {
            if list.head == 0 {
                break;
            }
            let addr = list.head;
            let next = self.take_link(addr);
            *slot = addr as *mut u8;
            n += 1;
            list.count -= 1;
            list.head = next;
            if next != 0 && !self.is_listed_block(next) {
                // A write into a listed block damaged its link: the blocks after it cannot
                // be found again. They leave the free count for the withdrawn one.
                let lost = list.count;
                *list = List::default();
                self.depot.count_out(lost);
                self.counters
                    .withdrawn
                    .fetch_add(lost as u64, StdOrdering::Relaxed);
                let _ = self.corruption(CorruptionKind::CanaryOverwritten, addr);
                break;
            }
        }
        self.overflow.len.store(list.count, StdOrdering::Release);
        drop(list);
        self.depot.count_out(n);
        n
    }

    /// Takes every block off the overflow list (for reclaim, under the growth lock); `None`,
    /// with every block back on the list, if the allocator refused the vector's memory.
    pub(super) fn overflow_take_all(&self) -> Option<Vec<*mut u8>> {
        let mut all = Vec::new();
        let mut buf = [core::ptr::null_mut(); 64];
        loop {
            let n = self.overflow_take(&mut buf);
            let taken = buf.get(..n).unwrap_or_default();
            if n == 0 {
                return Some(all);
            }
            if all.try_reserve(n).is_err() {
                // They were on the list, so they can carry a link: neither push refuses.
                let _ = self.overflow_push(taken);
                let _ = self.overflow_push(&all);
                return None;
            }
            all.extend_from_slice(taken);
        }
    }

    /// Whether `addr` could be a listed block: a block start in a chunk of this pool,
    /// vouched for by the registry alone.
    fn is_listed_block(&self, addr: usize) -> bool {
        registry::tag(addr) == self.registry_tag && self.geometry.is_block_start(addr)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use core::alloc::Layout;
    use std::collections::HashSet;
    use std::sync::Arc;

    use super::*;
    use crate::block::config::BlockPoolConfig;

    fn pool(guard: GuardLevel) -> Arc<PoolShared> {
        PoolShared::new(
            BlockPoolConfig::new(Layout::new::<[u64; 4]>())
                .capacity(4096)
                .guard(guard),
        )
        .unwrap()
    }

    /// `n` blocks carved and handed out, then freed (checked) by hand.
    fn freed_blocks(p: &PoolShared, n: usize) -> Vec<*mut u8> {
        let mut growth = lock(&p.growth);
        let mut out = Vec::new();
        while out.len() < n {
            p.carve(&mut growth, n - out.len(), |_, b| out.push(b))
                .unwrap();
        }
        drop(growth);
        for &b in &out {
            assert!(p.guard_accepts(b as usize));
            p.check_block(b as usize).unwrap();
        }
        out
    }

    #[test]
    fn blocks_come_back_each_once_and_free_as_the_guard_expects() {
        for guard in [GuardLevel::Off, GuardLevel::Canary, GuardLevel::Full] {
            let p = pool(guard);
            let blocks = freed_blocks(&p, 500);
            let before = p.depot.blocks();
            assert!(p.overflow_push(&blocks));
            assert_eq!(p.overflow.len(), 500);
            assert_eq!(p.depot.blocks(), before + 500, "counted as free");
            let mut seen = HashSet::new();
            let mut buf = [core::ptr::null_mut(); 37];
            loop {
                let n = p.overflow_take(&mut buf);
                if n == 0 {
                    break;
                }
                for &b in &buf[..n] {
                    assert!(seen.insert(b as usize), "{b:p} twice");
                    // The guard hands it out: free mark and (Full) poison intact.
                    assert!(p.hand_out(b).is_ok(), "{guard:?}: {b:p} refused");
                }
            }
            assert_eq!(seen.len(), 500);
            assert_eq!((p.overflow.len(), p.depot.blocks()), (0, before));
            assert_eq!(p.counters.withdrawn.load(StdOrdering::Relaxed), 0);
        }
    }

    #[test]
    fn a_second_free_of_a_listed_block_is_refused() {
        for guard in [GuardLevel::Canary, GuardLevel::Full] {
            let p = pool(guard);
            let blocks = freed_blocks(&p, 3);
            assert!(p.overflow_push(&blocks));
            for &b in &blocks {
                assert!(p.check_block(b as usize).is_err(), "{guard:?}: {b:p}");
            }
            assert_eq!(p.overflow_take_all().unwrap().len(), 3);
        }
    }

    #[test]
    fn a_damaged_link_withdraws_the_rest_of_the_list() {
        let p = pool(GuardLevel::Off);
        let blocks = freed_blocks(&p, 10);
        let before = p.depot.blocks();
        assert!(p.overflow_push(&blocks));
        // The head is the last block pushed; its link names the one before. A use after
        // free points it at the heap.
        let heap = Box::new(0u64);
        let head = *blocks.last().unwrap();
        // SAFETY: the test holds the pool alone and `head` is a block of it in a live chunk
        // (a stand-in for a user's write into a freed block).
        unsafe { head.cast::<usize>().write(&*heap as *const u64 as usize) };
        let taken = p.overflow_take_all().unwrap();
        assert_eq!(taken, [head]);
        assert_eq!(p.counters.withdrawn.load(StdOrdering::Relaxed), 9);
        assert_eq!((p.overflow.len(), p.depot.blocks()), (0, before));
    }

    #[test]
    fn a_pool_that_keeps_values_in_free_blocks_links_none_unless_guarded() {
        let p = pool(GuardLevel::Off);
        p.keeps_contents.store(true, StdOrdering::Relaxed);
        let blocks = freed_blocks(&p, 2);
        assert!(!p.overflow_push(&blocks));
        assert_eq!(p.overflow.len(), 0);
        let g = pool(GuardLevel::Canary);
        g.keeps_contents.store(true, StdOrdering::Relaxed);
        let blocks = freed_blocks(&g, 2);
        // SAFETY: blocks of `g` the test holds alone.
        unsafe { blocks[0].cast::<u64>().write(0x5EED) };
        assert!(g.overflow_push(&blocks));
        assert_eq!(g.overflow_take_all().unwrap().len(), 2);
        // SAFETY: as above.
        let kept = unsafe { blocks[0].cast::<u64>().read() };
        assert_eq!(kept, 0x5EED, "payload kept");
    }

    #[test]
    fn threads_pushing_and_taking_lose_and_duplicate_nothing() {
        let p = pool(GuardLevel::Canary);
        let per_thread = if cfg!(miri) { 20 } else { 400 };
        let blocks: Vec<Vec<usize>> = (0..4)
            .map(|_| {
                freed_blocks(&p, per_thread)
                    .into_iter()
                    .map(|b| b as usize)
                    .collect()
            })
            .collect();
        let before = p.depot.blocks();
        let rounds = if cfg!(miri) { 2 } else { 200 };
        let got: Vec<Vec<usize>> = std::thread::scope(|s| {
            let workers: Vec<_> = blocks
                .iter()
                .map(|mine| {
                    let p = &p;
                    s.spawn(move || {
                        let mut held: Vec<*mut u8> = mine.iter().map(|&a| a as *mut u8).collect();
                        let mut buf = [core::ptr::null_mut(); 16];
                        for r in 0..rounds {
                            let k = (r * 7) % 32 + 1;
                            let at = held.len().saturating_sub(k);
                            assert!(p.overflow_push(&held[at..]));
                            held.truncate(at);
                            let n = p.overflow_take(&mut buf[..(r % 16) + 1]);
                            held.extend_from_slice(&buf[..n]);
                        }
                        held.into_iter().map(|b| b as usize).collect::<Vec<_>>()
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).collect()
        });
        let mut all: Vec<usize> = got.concat();
        all.extend(
            p.overflow_take_all()
                .unwrap()
                .into_iter()
                .map(|b| b as usize),
        );
        all.sort_unstable();
        let mut want: Vec<usize> = blocks.concat();
        want.sort_unstable();
        assert_eq!(all, want, "every block once");
        assert_eq!((p.overflow.len(), p.depot.blocks()), (0, before));
        for a in all {
            assert!(p.hand_out(a as *mut u8).is_ok());
        }
    }
}
