//! The floor: a thread-local intrusive free list of 64-byte blocks, not a pool.

use core::cell::Cell;
use core::mem::MaybeUninit;
use core::ptr::{null_mut, NonNull};
use std::sync::{Mutex, PoisonError};

use super::global::Block;
use crate::contender::{Contender, Remote};
use crate::fatal;
use crate::order::Order;

/// The floor: each thread has its own intrusive stack of cache-line-aligned blocks carved
/// from leaked slabs, linked through their first word. A thread that frees blocks others
/// allocated (the W3 consumer) hands its whole stack to a global stash every 4,096 frees,
/// from which a thread with an empty stack refills (else a new slab). No per-block
/// synchronisation at all: its W3/W4 numbers are not like-for-like (in W3 the producer pops
/// blocks whose links the consumer just wrote, a cross-core miss per block).
#[derive(Debug)]
pub struct Floor;

/// A free block of the floor, as seen by the stack.
#[repr(C)]
struct FreeNode {
    next: *mut FreeNode,
}

/// A block of a floor slab: cache-line aligned, as the other contenders' blocks are (but
/// glibc's).
#[repr(C, align(64))]
struct FloorSlot(MaybeUninit<Order>);

/// Blocks per slab the floor carves, and frees between two hand-overs in W3.
const FLOOR_BATCH: usize = 4096;

thread_local! {
    /// Top of this thread's floor stack.
    static FLOOR_HEAD: Cell<*mut FreeNode> = const { Cell::new(null_mut()) };
    /// Remote frees since this thread last handed its stack to the stash.
    static FLOOR_REMOTE: Cell<usize> = const { Cell::new(0) };
}

/// A whole floor stack, handed between threads through [`FLOOR_STASH`].
struct FreeList(NonNull<FreeNode>);

// SAFETY: a `FreeList` is the only handle to the blocks it links; whoever holds it owns them.
unsafe impl Send for FreeList {}

/// Stacks handed over by threads that free more than they allocate (or exit).
static FLOOR_STASH: Mutex<Vec<FreeList>> = Mutex::new(Vec::new());

impl Floor {
    /// Pops the first block of `list` and makes the rest this thread's stack.
    #[inline(always)]
    fn adopt(list: NonNull<FreeNode>) -> NonNull<Order> {
        // SAFETY: `list` is a free block this thread now owns; its first word is a link.
        let next = unsafe { (*list.as_ptr()).next };
        FLOOR_HEAD.set(next);
        list.cast()
    }

    /// Refills an empty stack: a stack from the stash, else a new slab (never returned).
    #[cold]
    #[inline(never)]
    fn refill() -> NonNull<Order> {
        let stashed = FLOOR_STASH
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        if let Some(FreeList(list)) = stashed {
            return Self::adopt(list);
        }
        let slab = Box::leak(Box::<[FloorSlot]>::new_uninit_slice(FLOOR_BATCH));
        let Some((first, rest)) = slab.split_first_mut() else {
            fatal!("floor: empty slab")
        };
        let mut next: *mut FreeNode = null_mut();
        for block in rest.iter_mut().rev() {
            let node = block.as_mut_ptr().cast::<FreeNode>();
            // SAFETY: `node` is a fresh, leaked, 64-aligned 64-byte block owned by no one else.
            unsafe { node.write(FreeNode { next }) };
            next = node;
        }
        FLOOR_HEAD.set(next);
        NonNull::from(first).cast()
    }

    /// Hands this thread's whole stack to the stash.
    fn spill() {
        FLOOR_REMOTE.set(0);
        if let Some(list) = NonNull::new(FLOOR_HEAD.replace(null_mut())) {
            FLOOR_STASH
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(FreeList(list));
        }
    }
}

impl Contender for Floor {
    type Item = Block;

    #[inline(always)]
    fn acquire(&self, make: impl FnOnce() -> Order) -> Block {
        let ptr = match NonNull::new(FLOOR_HEAD.get()) {
            Some(head) => Self::adopt(head),
            None => Self::refill(),
        };
        // SAFETY: a free floor block: 64-aligned, 64 bytes, now owned by this thread alone.
        unsafe { Block::fill(ptr, make()) }
    }

    #[inline(always)]
    fn release(&self, item: Block, check: impl FnOnce(&Order)) {
        check(item.order());
        let node = item.0.cast::<FreeNode>().as_ptr();
        // SAFETY: the block is given back and ours now; its first word becomes the link.
        unsafe {
            node.write(FreeNode {
                next: FLOOR_HEAD.get(),
            })
        };
        FLOOR_HEAD.set(node);
    }

    fn thread_exit(&self) {
        Self::spill();
    }
}

impl Remote for Floor {
    type Releaser = Self;

    fn releaser(&self) -> &Self {
        self
    }

    #[inline(always)]
    fn release_remote(releaser: &Self, item: Block, check: impl FnOnce(&Order)) {
        releaser.release(item, check);
        let frees = FLOOR_REMOTE.get() + 1;
        if frees >= FLOOR_BATCH {
            Self::spill();
        } else {
            FLOOR_REMOTE.set(frees);
        }
    }

    fn remote_exit(_releaser: &Self) {
        Self::spill();
    }
}

crate::runs!([] Floor, remote);
