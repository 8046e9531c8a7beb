//! The shared heaps: one per node and size class, each holding free blocks and the
//! uncarved rest of its newest chunk, under a spin lock.
//!
//! Free blocks are kept as addresses: a stack of up to [`STACK`] of them, which caches
//! fill and drain a batch at a time by copying addresses, so the lock is usually held for
//! a copy alone; blocks beyond the stack's room go to an overflow list linked through
//! their first word, written (and, in a block never touched, faulted in) under the lock. Carving hands out addresses of the uncarved
//! range without touching it, marked [`FRESH`]: such a block reads as zero, which
//! `alloc_zeroed` uses. The mark travels with the address through caches and stacks
//! until the block is handed out (callers strip it) or linked into the overflow list.
//!
//! A heap's chunk is 1 MiB, aligned to its size, bound to the heap's node before its first
//! touch, and starts with a [`ChunkHeader`] that names the heap; blocks follow. Heaps are
//! process-wide statics, all zero at start: a heap maps its first chunk when first asked.
//! From its third chunk on ([`PAIRS_AFTER`]), a heap maps two at a time, 2 MiB-aligned and
//! advised for huge pages; the second waits as the heap's spare until the first is carved.

use core::cell::UnsafeCell;
use core::ptr::{self, NonNull};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use crate::block::{SizeClass, CLASS_COUNT};
use crate::sys;

/// Bytes of one chunk, and its alignment.
pub(super) const CHUNK: usize = 1 << 20;

/// Chunks a heap maps one at a time; after these it maps two at once, 2 MiB-aligned and
/// advised `MADV_HUGEPAGE`, so that a class in heavy use is backed by transparent huge
/// pages (one page fault and one TLB entry for 2 MiB instead of 512). A class that never
/// needs more keeps its memory in normal pages, touched only where it is used.
pub(super) const PAIRS_AFTER: usize = 2;

/// Nodes with a heap of their own; a node beyond shares the heap of `node % MAX_NODES`.
pub(super) const MAX_NODES: usize = 16;

/// Marks a chunk header as one of this allocator's.
const MAGIC: u64 = 0x7461_6c6c_7941_6c63;

/// The first bytes of a chunk. Written once, after binding and before any block of the
/// chunk is handed out; read-only afterwards.
#[repr(C)]
struct ChunkHeader {
    magic: u64,
    /// The index of the heap the chunk belongs to (`< MAX_NODES`).
    node: u32,
    /// The size class of its blocks.
    class: u32,
    /// The heap's chunk mapped before this one (null for its first): every chunk stays
    /// reachable from its heap.
    prev: *mut ChunkHeader,
}

/// Where a chunk of class `index` keeps its header: 64 bytes further for each class, so
/// that the headers a free reads do not all fall into the same cache set (chunks are
/// 1 MiB-aligned, and a header at offset 0 in each would).
#[inline(always)]
pub(super) const fn header_offset(index: usize) -> usize {
    (index % 64) * 64
}

/// The index of the heap that owns the block at `block`, of class `index`, or `None` if
/// the chunk's header at that class's place does not name this allocator and this class
/// (a pointer freed with another layout's class, or not from a chunk of this allocator).
///
/// # Safety
///
/// `block` lies inside a `CHUNK`-aligned chunk of this allocator whose headers were
/// written before the block was handed out (the case for every block of a size class it
/// handed out, whatever layout it is freed with); a pointer from elsewhere may read
/// memory it does not own.
#[inline(always)]
pub(super) unsafe fn home_of(block: NonNull<u8>, index: usize) -> Option<usize> {
    // The chunk's address, with the provenance its mapping exposed (`map_chunk`): `block`
    // may be a pointer whose provenance covers its own bytes only (a `Box`'s, freed), which
    // must not be used to read the header outside them.
    let base: *const u8 =
        core::ptr::with_exposed_provenance(block.as_ptr() as usize & !(CHUNK - 1));
    let field = |offset: usize| base.wrapping_add(header_offset(index) + offset);
    // SAFETY: the chunk starts at the block's address rounded down to `CHUNK` (chunks are
    // `CHUNK`-aligned, blocks never cross their end); its first page holds only zeros and
    // headers each written once, before any block was handed out: no read here races.
    let magic = unsafe {
        field(core::mem::offset_of!(ChunkHeader, magic))
            .cast::<u64>()
            .read()
    };
    // SAFETY: as above.
    let class = unsafe {
        field(core::mem::offset_of!(ChunkHeader, class))
            .cast::<u32>()
            .read()
    };
    if magic != MAGIC || class as usize != index {
        return None;
    }
    // SAFETY: as above.
    let node = unsafe {
        field(core::mem::offset_of!(ChunkHeader, node))
            .cast::<u32>()
            .read()
    };
    Some(node as usize)
}

/// The bit set in the address of a block that has not been written since its chunk was
/// mapped, so reads as zero: carved and never handed out. Blocks are aligned to at least
/// 8 bytes, so the bit is free in a block's address.
pub(super) const FRESH: usize = 1;

/// `block` without the [`FRESH`] bit.
#[inline(always)]
pub(super) fn untagged(block: *mut u8) -> *mut u8 {
    block.map_addr(|a| a & !FRESH)
}

/// Whether `block` carries the [`FRESH`] bit: it reads as zero.
#[inline(always)]
pub(super) fn is_fresh(block: *mut u8) -> bool {
    block.addr() & FRESH != 0
}

/// A free block on a heap's overflow list: its first word links to the next.
#[repr(C)]
struct FreeBlock {
    next: *mut FreeBlock,
}

/// A lock of a few instructions' hold time: an atomic flag, spinning briefly and then
/// yielding. No allocation, no destructor, and the fork handlers can take and release
/// every one of them.
struct SpinLock(AtomicBool);

impl SpinLock {
    const fn new() -> Self {
        Self(AtomicBool::new(false))
    }

    fn lock(&self) {
        // Counts up to 64 spins and then yields at every turn: no overflow however long
        // the holder stalls.
        let mut spins = 0u32;
        while self
            .0
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            // Wait on plain loads, which leave the cache line shared, until it looks free.
            while self.0.load(Ordering::Relaxed) {
                if spins < 64 {
                    spins += 1;
                    core::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
            }
        }
    }

    fn unlock(&self) {
        self.0.store(false, Ordering::Release);
    }
}

/// Free blocks a heap keeps as addresses in its stack, enough for several batches of
/// every class; the rest go to its overflow list.
pub(super) const STACK: usize = 256;

/// A heap's stack of free block addresses, kept apart from the heap so that taking every
/// heap's lock (the fork handlers) touches no stack.
///
/// Invariant: reached only under the lock of the heap of the same node and class, which
/// [`Heap`] pairs it with.
struct Stack(UnsafeCell<[*mut u8; STACK]>);

// SAFETY: the addresses are reached only under the lock of the heap the stack belongs to
// (invariant), and name free blocks no thread owns.
unsafe impl Sync for Stack {}

impl Stack {
    const fn new() -> Self {
        Self(UnsafeCell::new([ptr::null_mut(); STACK]))
    }
}

/// What the lock guards.
struct HeapState {
    /// The first `stacked` entries of the heap's [`Stack`] are free blocks.
    stacked: usize,
    /// Free blocks beyond the stack's room, linked through their first word; `free_count`
    /// of them.
    free: *mut FreeBlock,
    free_count: usize,
    /// The uncarved part of the newest chunk: `left` bytes from `bump`, a whole number of
    /// blocks, never written since the chunk was mapped.
    bump: *mut u8,
    left: usize,
    /// The newest chunk, whose header links to the older ones.
    newest: *mut ChunkHeader,
    /// The second chunk of the last pair mapped (see [`PAIRS_AFTER`]), mapped and bound
    /// but not yet installed, or null.
    spare: *mut u8,
}

/// Running counts of one heap, read by the statistics without the lock. Allocations,
/// frees and cached blocks of thread caches reach them when a cache trades with the heap,
/// when its thread exits, and when the thread asks for statistics.
#[derive(Debug)]
pub(super) struct HeapCounts {
    pub(super) chunks: AtomicUsize,
    /// Of those, the chunks mapped in pairs advised for huge pages.
    pub(super) paired_chunks: AtomicUsize,
    /// Blocks the chunks hold, carved or not.
    pub(super) blocks: AtomicUsize,
    /// Chunks the OS refused to bind to the node.
    pub(super) unbound_chunks: AtomicUsize,
    pub(super) carved: AtomicUsize,
    pub(super) free: AtomicUsize,
    /// Blocks in thread caches (a sum of signed deltas, wrapping).
    pub(super) cached: AtomicUsize,
    pub(super) allocations: AtomicU64,
    pub(super) frees: AtomicU64,
    /// Frees by a thread of another node, which sent the block home.
    pub(super) remote_frees: AtomicU64,
}

impl HeapCounts {
    const fn new() -> Self {
        Self {
            chunks: AtomicUsize::new(0),
            paired_chunks: AtomicUsize::new(0),
            blocks: AtomicUsize::new(0),
            unbound_chunks: AtomicUsize::new(0),
            carved: AtomicUsize::new(0),
            free: AtomicUsize::new(0),
            cached: AtomicUsize::new(0),
            allocations: AtomicU64::new(0),
            frees: AtomicU64::new(0),
            remote_frees: AtomicU64::new(0),
        }
    }
}

/// The lock, state and counts of the heap of one size class on one node, 128-byte
/// aligned so that no two heaps share a cache line (or an adjacent-line prefetch pair).
///
/// Invariant: `state` is read or written only while `lock` is held; an address in the
/// stack with the [`FRESH`] bit names a block not written since its chunk was mapped;
/// every block of the
/// heap's stack's first `stacked` entries, on its overflow list and in the uncarved range
/// is a free block of this heap's class in one of its chunks, owned by nobody else; a
/// non-null `spare` is the second chunk of a pair this heap mapped, bound and counted,
/// never written and known to nothing else.
#[repr(align(128))]
pub(super) struct ClassHeap {
    lock: SpinLock,
    state: UnsafeCell<HeapState>,
    pub(super) counts: HeapCounts,
}

// SAFETY: `state` is only reached under `lock` (invariant), and its pointers are to free
// blocks no thread owns; the rest is atomics.
unsafe impl Sync for ClassHeap {}

impl ClassHeap {
    const fn new() -> Self {
        Self {
            lock: SpinLock::new(),
            state: UnsafeCell::new(HeapState {
                stacked: 0,
                free: ptr::null_mut(),
                free_count: 0,
                bump: ptr::null_mut(),
                left: 0,
                newest: ptr::null_mut(),
                spare: ptr::null_mut(),
            }),
            counts: HeapCounts::new(),
        }
    }

    fn lock_for_fork(&self) {
        self.lock.lock();
    }

    fn unlock_after_fork(&self) {
        self.lock.unlock();
    }
}

/// The heap of one size class on one node: its lock and state with its stack.
///
/// Invariant: `stack` is the stack of `heap`'s node and class (only [`heap`] and [`all`]
/// make one).
#[derive(Clone, Copy)]
pub(super) struct Heap {
    heap: &'static ClassHeap,
    stack: &'static Stack,
}

impl core::ops::Deref for Heap {
    type Target = ClassHeap;

    fn deref(&self) -> &ClassHeap {
        self.heap
    }
}

impl Heap {
    /// Runs `f` on the state and the stack under the lock.
    #[inline]
    fn with<R>(&self, f: impl FnOnce(&mut HeapState, &mut [*mut u8; STACK]) -> R) -> R {
        self.heap.lock.lock();
        // SAFETY: the lock is held, so this is the only reference to the state (invariant)
        // until it is released below.
        let state = unsafe { &mut *self.heap.state.get() };
        // SAFETY: the stack is this heap's (invariant of `Heap`) and reached only under its
        // lock, which is held until below.
        let stack = unsafe { &mut *self.stack.0.get() };
        let r = f(state, stack);
        self.heap.lock.unlock();
        r
    }

    /// Takes up to `out.len()` (at least 1) free blocks of `class` into `out` and returns
    /// how many, installing the heap's spare or mapping a chunk (or a pair) bound to `node`
    /// (this heap's node index) if the heap has none left. 0 only if the OS refused the
    /// chunk or `out` is empty. The chunk is mapped, bound and its first page faulted in
    /// without the lock: a thread that finds the heap refilled or holding a spare meanwhile
    /// unmaps its own and takes again.
    ///
    /// Blocks come from the stack, else the overflow list, else the chunk's uncarved
    /// part, so the lock is held for a copy of at most `out.len()` addresses. An address
    /// may carry the [`FRESH`] bit: the block has not been written since the chunk was
    /// mapped.
    pub(super) fn take(&self, class: SizeClass, node: usize, out: &mut [*mut u8]) -> usize {
        if out.is_empty() {
            return 0;
        }
        register_fork_handlers();
        let size = class.size();
        loop {
            let n = self.with(|s, stack| {
                let n = self.take_locked(s, stack, size, out);
                if n > 0 || s.spare.is_null() {
                    return n;
                }
                // The second half of the pair mapped last: mapped, counted, never written,
                // and known to this heap alone.
                let spare = core::mem::replace(&mut s.spare, ptr::null_mut());
                self.install_chunk(s, spare, class, node, true);
                self.take_locked(s, stack, size, out)
            });
            if n > 0 {
                return n;
            }
            let pair = self.counts.chunks.load(Ordering::Relaxed) >= PAIRS_AFTER
                && HUGE_PAGES.load(Ordering::Relaxed);
            // A pair the OS refuses (4 MiB of address space for 2) may still leave room for
            // one chunk.
            let mapped = map_chunk(node, pair).or_else(|| pair.then(|| map_chunk(node, false))?);
            let Some(mapped) = mapped else {
                return 0;
            };
            let unused = self.with(|s, _| self.install_or_return(s, mapped, class, node));
            // Unmapped, if at all, after the lock is released.
            drop(unused);
        }
    }

    /// `take` under the lock: how many blocks it put in `out` (0 if the heap has none).
    fn take_locked(
        &self,
        s: &mut HeapState,
        stack: &mut [*mut u8; STACK],
        size: usize,
        out: &mut [*mut u8],
    ) -> usize {
        let want = out.len();
        if s.stacked > 0 {
            let n = want.min(s.stacked);
            let from = s.stacked - n;
            if let (Some(src), Some(dst)) = (stack.get(from..s.stacked), out.get_mut(..n)) {
                dst.copy_from_slice(src);
                s.stacked = from;
                self.counts.free.fetch_sub(n, Ordering::Relaxed);
                return n;
            }
        }
        if s.free_count > 0 {
            let mut n = 0;
            for slot in out.iter_mut().take(s.free_count) {
                *slot = s.free.cast();
                // SAFETY: `free` is one of the `free_count` blocks of the overflow list
                // (heap invariant); its first word links to the rest.
                s.free = unsafe { (*s.free).next };
                n += 1;
            }
            s.free_count -= n;
            self.counts.free.fetch_sub(n, Ordering::Relaxed);
            return n;
        }
        let mut n = 0;
        for slot in out.iter_mut() {
            if s.left < size {
                break;
            }
            // Carving writes nothing: the block is still as the mapping made it.
            *slot = s.bump.map_addr(|a| a | FRESH);
            s.bump = s.bump.wrapping_add(size);
            s.left -= size;
            n += 1;
        }
        self.counts.carved.fetch_add(n, Ordering::Relaxed);
        n
    }

    /// Puts free blocks of this heap back: onto the stack while it has room, the rest
    /// onto the overflow list.
    ///
    /// # Safety
    ///
    /// Every address in `blocks` is a block of this heap, free, owned by the caller, and
    /// not used by it afterwards; one with the [`FRESH`] bit has not been written since
    /// [`Heap::take`] gave it so.
    pub(super) unsafe fn give(&self, blocks: &[*mut u8]) {
        if blocks.is_empty() {
            return;
        }
        self.with(|s, stack| {
            // Counted under the lock, as `take` counts, so that the count never runs below
            // zero between a give and a take of the same blocks.
            self.counts.free.fetch_add(blocks.len(), Ordering::Relaxed);
            let room = STACK - s.stacked;
            let (now, rest) = blocks.split_at(room.min(blocks.len()));
            if let Some(dst) = stack.get_mut(s.stacked..s.stacked + now.len()) {
                dst.copy_from_slice(now);
                s.stacked += now.len();
            }
            for &block in rest {
                // Its link is written: it is no longer fresh.
                let b = untagged(block).cast::<FreeBlock>();
                // SAFETY: a free block the caller gave up (contract); its first word
                // becomes its link on the overflow list, which it joins.
                unsafe { b.write(FreeBlock { next: s.free }) };
                s.free = b;
                s.free_count += 1;
            }
        });
    }

    /// Installs `mapped` (see [`Self::install`]) unless the heap has room to carve a block
    /// of `class` or holds a spare: then gives it back, for the caller to unmap after the
    /// lock is released. Under the lock.
    fn install_or_return(
        &self,
        s: &mut HeapState,
        mapped: Mapped,
        class: SizeClass,
        node: usize,
    ) -> Option<sys::Region> {
        if s.left >= class.size() || !s.spare.is_null() {
            return Some(mapped.region);
        }
        self.install(s, mapped, class, node);
        None
    }

    /// Labels a chunk mapped for this heap, links it to the newest and makes it the
    /// carvable range; of a pair, the second chunk becomes the spare. Under the lock, with
    /// no carvable block and no spare left.
    fn install(&self, s: &mut HeapState, mapped: Mapped, class: SizeClass, node: usize) {
        let Mapped {
            region,
            bound,
            advised,
        } = mapped;
        // The chunks stay mapped for the life of the process.
        let (base, len) = region.into_raw();
        let chunks = len / CHUNK;
        if !bound {
            self.counts
                .unbound_chunks
                .fetch_add(chunks, Ordering::Relaxed);
        }
        self.counts.chunks.fetch_add(chunks, Ordering::Relaxed);
        let paired = chunks == 2;
        let blocks = (CHUNK - first_block(class, paired)) / class.size() * chunks;
        self.counts.blocks.fetch_add(blocks, Ordering::Relaxed);
        if paired {
            if advised {
                self.counts.paired_chunks.fetch_add(2, Ordering::Relaxed);
            }
            s.spare = base.as_ptr().wrapping_add(CHUNK);
        }
        self.install_chunk(s, base.as_ptr(), class, node, paired);
    }

    /// Labels the chunk at `base`, links it to the newest and makes it the carvable range,
    /// from [`first_block`]. Under the lock; `base` is a `CHUNK`-aligned chunk of `CHUNK`
    /// bytes this heap mapped (half of a pair if `paired`) and never wrote.
    fn install_chunk(
        &self,
        s: &mut HeapState,
        base: *mut u8,
        class: SizeClass,
        node: usize,
        paired: bool,
    ) {
        let header = ChunkHeader {
            magic: MAGIC,
            node: node as u32,
            class: class.index() as u32,
            prev: s.newest,
        };
        let at = base
            .wrapping_add(header_offset(class.index()))
            .cast::<ChunkHeader>();
        // SAFETY: `base` is the start of a fresh, writable, `CHUNK`-aligned chunk of `CHUNK`
        // bytes that only this heap knows of (caller); the header, at a multiple of 64
        // bytes below 4096, fits in its first page before the first block.
        unsafe { at.write(header) };
        let first = first_block(class, paired);
        s.newest = at;
        s.bump = base.wrapping_add(first);
        s.left = (CHUNK - first) / class.size() * class.size();
    }
}

/// One chunk, or a pair, that [`map_chunk`] mapped for a heap.
struct Mapped {
    region: sys::Region,
    /// Whether the OS bound it to the heap's node.
    bound: bool,
    /// Whether the OS took the advice to back it with huge pages (a pair only).
    advised: bool,
}

/// Maps a chunk, or two chunks 2 MiB-aligned and advised for huge pages (`pair`), binds
/// them to `node` and faults the first page in, without any lock; `None` if the OS refused
/// memory. The first touch of a pair backed by a huge page zeroes 2 MiB (after compacting
/// memory, if the kernel must to find one): done here, no heap waits for it.
fn map_chunk(node: usize, pair: bool) -> Option<Mapped> {
    let (region, advised) = if pair {
        let region = sys::map_aligned(2 * CHUNK, 2 * CHUNK).ok()?;
        let advised = region.advise_huge_pages().is_ok();
        (region, advised)
    } else {
        (sys::map_aligned(CHUNK, CHUNK).ok()?, false)
    };
    // Frees find a chunk's headers from a block's address (`home_of`), with this
    // provenance.
    let _ = region.ptr().as_ptr().expose_provenance();
    let bound = sys::prefer_node(region.ptr(), region.len(), node as u32).is_ok();
    // The chunk's first page then holds what it held, zeros: its blocks, carved later, still
    // read as zero, and its header place stays zero until the header is written.
    // SAFETY: the first byte of a fresh, writable mapping only this thread knows of,
    // holding zero, as the mapping made it; zero is written over it.
    unsafe { region.ptr().as_ptr().write_volatile(0) };
    Some(Mapped {
        region,
        bound,
        advised,
    })
}

/// The offset of a chunk's first block of `class`: past the header page, aligned to the
/// class, and for a chunk mapped alone at a colour of the class (one of 32 steps of 8 KiB,
/// plus the header's 64-byte step). Blocks are reused from the front of a chunk, so without
/// colours the blocks in use of every class would sit at the same offsets of their 1
/// MiB-aligned chunks and compete for the same cache sets. The bytes skipped are address
/// space only, never touched. Half of a pair (`paired`) has no colour: a huge page would
/// back the bytes skipped, and a class with pairs has more blocks in use than one chunk
/// holds.
pub(super) fn first_block(class: SizeClass, paired: bool) -> usize {
    let index = class.index();
    let colour = if paired {
        4096
    } else {
        4096 + (index * 7 % 32) * 8192 + header_offset(index)
    };
    colour.next_multiple_of(class.align().max(64))
}

/// Whether heaps past [`PAIRS_AFTER`] chunks map pairs advised for huge pages
/// ([`super::TallyAlloc::set_huge_pages`]).
static HUGE_PAGES: AtomicBool = AtomicBool::new(true);

/// Turns the mapping of chunk pairs for huge pages on or off for the chunks heaps map from
/// now on.
pub(super) fn set_huge_pages(on: bool) {
    HUGE_PAGES.store(on, Ordering::Relaxed);
}

/// Every heap: `HEAPS[node][class]`.
static HEAPS: [[ClassHeap; CLASS_COUNT]; MAX_NODES] =
    [const { [const { ClassHeap::new() }; CLASS_COUNT] }; MAX_NODES];

/// Every heap's stack: `STACKS[node][class]`, zero pages until a heap first keeps a block.
static STACKS: [[Stack; CLASS_COUNT]; MAX_NODES] =
    [const { [const { Stack::new() }; CLASS_COUNT] }; MAX_NODES];

/// The heap of class `index` on node `node`; `None` unless `node < MAX_NODES` and
/// `index < CLASS_COUNT` (their callers derive them in range, and `element` checks).
#[inline(always)]
pub(super) fn heap(node: usize, index: usize) -> Option<Heap> {
    Some(Heap {
        // SAFETY: `HEAPS` is a static of the shape `element` takes.
        heap: unsafe { element(&raw const HEAPS, node, index) }?,
        // SAFETY: `STACKS` is a static of the shape `element` takes.
        stack: unsafe { element(&raw const STACKS, node, index) }?,
    })
}

/// `table[node][index]`, or `None` out of range. Only the element is borrowed, never the
/// table: a tool that tracks borrows (miri) then checks one heap's bytes instead of the
/// tables' 2.6 MiB on every refill.
///
/// # Safety
///
/// `table` comes from `&raw const` of a non-`mut` static `[[T; C]; N]` (its provenance
/// covers the whole table, which lives for the rest of the process), and `T` is changed
/// only through an `UnsafeCell` (or atomics) inside it, never through a `&mut`.
#[inline(always)]
unsafe fn element<T, const C: usize, const N: usize>(
    table: *const [[T; C]; N],
    node: usize,
    index: usize,
) -> Option<&'static T> {
    if node >= N || index >= C {
        return None;
    }
    // SAFETY: an array's elements are laid out one after another without gaps, so
    // `[[T; C]; N]` holds `N * C` `T`s in a row, and `node * C + index < N * C`.
    let element = unsafe { table.cast::<T>().add(node * C + index) };
    // SAFETY: `element` points to a `T` of a static table, aligned as the table is, that
    // no one mutates but through its cells (caller): a `&'static T` may coexist with them.
    Some(unsafe { &*element })
}

/// Every heap's lock, state and counts, node by node.
pub(super) fn all() -> impl Iterator<Item = (usize, usize, &'static ClassHeap)> {
    HEAPS
        .iter()
        .enumerate()
        .flat_map(|(n, row)| row.iter().enumerate().map(move |(c, h)| (n, c, h)))
}

/// The heap index of a real node.
pub(super) fn index_of_node(node: u32) -> usize {
    node as usize % MAX_NODES
}

/// Registers the fork handlers once: before `fork` the forking thread takes every heap's
/// lock, so that no other thread is inside a heap; after it both processes release them.
/// A child thus finds every heap consistent. The caches of the parent's other threads do
/// not exist in the child: their blocks stay out of circulation there, counted as cached.
///
/// The first caller registers; every other caller goes on at once, never waiting for it
/// (a wait could outlast a `fork` and hang the child). A fork in the moment before the
/// first registration returns runs no handler, and its child may find a heap locked by a
/// thread of the parent: the window is the first `take` of the process. `fork` runs prepare handlers in the reverse order of
/// their registration and the others in order: a prepare handler registered before this
/// allocator's first `take` runs while every heap is locked, so it must not allocate
/// through the allocator.
fn register_fork_handlers() {
    static REGISTERED: AtomicBool = AtomicBool::new(false);
    if REGISTERED.load(Ordering::Relaxed) {
        return;
    }
    if REGISTERED
        .compare_exchange(false, true, Ordering::Relaxed, Ordering::Relaxed)
        .is_ok()
    {
        let _ = sys::at_fork(lock_all, unlock_all, unlock_all);
    }
}

unsafe extern "C" fn lock_all() {
    for (_, _, heap) in all() {
        heap.lock_for_fork();
    }
}

unsafe extern "C" fn unlock_all() {
    for (_, _, heap) in all() {
        heap.unlock_after_fork();
    }
}

#[cfg(test)]
mod tests;
