//! The chunks one pool mapped, and how many blocks of each are in circulation: what the
//! pool's growth lock protects.

use std::sync::Arc;

use super::CHUNK_SIZE;
use crate::sys::{Region, PAGE};

/// One chunk of a pool.
///
/// Invariant: `region` holds the chunk at `offset`: `region.ptr() + offset` is
/// `CHUNK_SIZE`-aligned and `offset + CHUNK_SIZE <= region.len()`; `offset` is 0, or
/// `CHUNK_SIZE` for the second chunk of a huge-page pair, whose region (2 MiB, aligned to
/// 2 MiB) the two chunks share. The chunk starts with a valid `ChunkHeader` of this pool
/// and is registered to the pool's slot. Blocks `0..carved` have been handed to
/// circulation (a cache, including its fresh range, the depot or a user); the rest are
/// untouched by anyone but the pool's growth path. A reclaimed chunk has `carved == 0`.
#[derive(Debug)]
pub(crate) struct Chunk {
    region: Arc<Region>,
    offset: usize,
    pub(crate) carved: usize,
    pub(crate) reclaimed: bool,
    /// Bytes from the chunk's start whose pages were faulted in ahead of use: carving
    /// keeps them ahead of the carved blocks (see `growth::PREFAULT_STEP`), and growth
    /// ahead of demand faults a new chunk in before the pool knows it.
    ///
    /// Invariant: every page holding a byte of `0..faulted` was faulted in: whatever set
    /// `faulted` faulted in up to it rounded up to a page (`reserve`, `carve_range`, or
    /// locking the whole chunk), and reclaim lowers it to at most `PAGE`, keeping page 0,
    /// the header's. In a pre-faulting pool, the carved blocks (if any) end at or before
    /// `faulted`. So the pages from `faulted` rounded up on hold no block in circulation,
    /// and the page that holds an unaligned `faulted` (and may hold some) is faulted in
    /// already: carving faults in from `faulted`, which `Region::prefault_range` rounds
    /// up to a page.
    pub(crate) faulted: usize,
    /// Whether the chunk's pages are locked in memory (`mlock`), all of them.
    pub(crate) locked: bool,
    /// Whether growth ahead is faulting the chunk's pages in without the growth lock
    /// (see `PoolShared::grow_ahead`): it cannot be given back meanwhile, or the pages
    /// would be faulted in again behind reclaim's back.
    pub(crate) populating: bool,
}

impl Chunk {
    /// The chunk at `offset` of `region`, just mapped (see the type's invariant): nothing
    /// carved, nothing faulted in.
    pub(crate) fn at(region: Arc<Region>, offset: usize) -> Self {
        Self {
            region,
            offset,
            carved: 0,
            reclaimed: false,
            faulted: 0,
            locked: false,
            populating: false,
        }
    }

    /// The chunk's address.
    pub(crate) fn base(&self) -> usize {
        self.ptr() as usize
    }

    /// The chunk's first byte, where its header sits.
    pub(crate) fn ptr(&self) -> *mut u8 {
        self.region.ptr().as_ptr().wrapping_add(self.offset)
    }

    /// Faults in the pages of the chunk's first `len` bytes, page 0 included
    /// (`Region::prefault`, with its contract).
    pub(crate) fn prefault(&self, len: usize) {
        let len = len.min(CHUNK_SIZE);
        if self.offset == 0 {
            self.region.prefault(len);
        } else {
            self.region.prefault_range(self.offset, self.offset + len);
        }
    }

    /// A way to fault in the chunk's bytes `from..to` later, without the growth lock:
    /// the region (kept mapped by the returned `Arc`) and the range in it, for
    /// `Region::populate_if_supported`, which touches no byte and so may run while other
    /// threads use the chunk.
    pub(crate) fn populate_later(&self, from: usize, to: usize) -> (Arc<Region>, usize, usize) {
        let to = to.min(CHUNK_SIZE);
        (
            Arc::clone(&self.region),
            self.offset + from.min(to),
            self.offset + to,
        )
    }

    /// `Region::prefault_range` over the chunk's bytes `from..to`, with its contract.
    pub(crate) fn prefault_range(&self, from: usize, to: usize) {
        let to = to.min(CHUNK_SIZE);
        if from < to {
            self.region
                .prefault_range(self.offset + from, self.offset + to);
        }
    }

    /// Locks the whole chunk in memory, faulting it in; the `errno` of a refusal, with
    /// nothing locked.
    pub(crate) fn lock(&mut self) -> Result<(), i32> {
        self.region.lock(self.offset, self.offset + CHUNK_SIZE)?;
        self.locked = true;
        self.faulted = CHUNK_SIZE;
        Ok(())
    }

    /// Locks the chunks of one mapping, consecutive in it, in one call (see
    /// [`Self::lock`]): a huge-page pair locked chunk by chunk would have its 2 MiB range
    /// split in two, and the first lock would fault its pages in at 4 KiB. The `errno` of
    /// a refusal, with nothing locked. Chunks of different mappings are locked one by one.
    pub(crate) fn lock_all(chunks: &mut [Chunk]) -> Result<(), i32> {
        let (Some(first), Some(last)) = (chunks.first(), chunks.last()) else {
            return Ok(());
        };
        let one_region = chunks.iter().all(|c| Arc::ptr_eq(&c.region, &first.region));
        if !one_region {
            for i in 0..chunks.len() {
                let Some(chunk) = chunks.get_mut(i) else {
                    break;
                };
                if let Err(errno) = chunk.lock() {
                    for locked in chunks.iter_mut().take(i) {
                        locked.unlock();
                    }
                    return Err(errno);
                }
            }
            return Ok(());
        }
        first.region.lock(first.offset, last.offset + CHUNK_SIZE)?;
        for chunk in chunks.iter_mut() {
            chunk.locked = true;
            chunk.faulted = CHUNK_SIZE;
        }
        Ok(())
    }

    /// Unlocks the whole chunk, if it is locked.
    fn unlock(&mut self) {
        if self.locked {
            self.region.unlock(self.offset, self.offset + CHUNK_SIZE);
            self.locked = false;
        }
    }

    /// Whether reclaim can give the chunk's pages back: `Region::discard_from` gives back
    /// only the end of a mapping, so the first chunk of a huge-page pair stays resident;
    /// nor while growth ahead faults it in (`populating`).
    pub(crate) fn can_give_back(&self) -> bool {
        self.offset + CHUNK_SIZE == self.region.len() && !self.populating
    }

    /// Gives the chunk's pages back to the OS but the header's, unlocking them first (the
    /// OS refuses to discard locked pages). Only for a chunk that [`Self::can_give_back`]
    /// and whose blocks are all out of circulation. `false` if the OS refused: nothing was
    /// given back, and a chunk that was locked is locked again; if that lock is refused
    /// too, the chunk stays unlocked and `locked` says so.
    pub(crate) fn give_back(&mut self) -> bool {
        let was_locked = self.locked;
        self.unlock();
        if !self.region.discard_from(self.offset + PAGE) {
            if was_locked {
                // Nothing was given back: the pages are all still there to lock.
                let _ = self.lock();
            }
            return false;
        }
        self.faulted = self.faulted.min(PAGE);
        true
    }

    /// `Region::reuse`: the bytes given back count as in use again, before they are
    /// touched.
    pub(crate) fn reuse(&self) {
        self.region.reuse();
    }
}

/// What the growth lock protects: the pool's chunks, in mapping order (a chunk's index is
/// its id), and how many of their blocks are in circulation.
#[derive(Debug)]
pub(crate) struct ChunkList {
    pub(crate) chunks: Vec<Chunk>,
    /// Sum of `carved` over all chunks: the blocks in circulation, bounded by
    /// `max_capacity`.
    pub(crate) carved_total: usize,
    /// Blocks ever carved (wrapping): growth ahead of demand reads demand from it.
    pub(crate) carved_ever: usize,
    /// A chunk likely to have uncarved blocks.
    pub(crate) cursor: usize,
    /// Whether chunks are mapped in 2 MiB pairs advised for huge pages.
    pub(crate) huge_pages: bool,
    /// Whether chunks are locked in memory as they are mapped.
    pub(crate) lock: bool,
}

impl ChunkList {
    pub(crate) fn new() -> Self {
        Self {
            chunks: Vec::new(),
            carved_total: 0,
            carved_ever: 0,
            cursor: 0,
            huge_pages: false,
            lock: false,
        }
    }

    /// The list of a pool that maps its chunks in huge-page pairs (`huge_pages`) and
    /// locks them (`lock`).
    pub(crate) fn with_pages(mut self, huge_pages: bool, lock: bool) -> Self {
        self.huge_pages = huge_pages;
        self.lock = lock;
        self
    }

    /// The number of chunks in use (not reclaimed).
    pub(crate) fn active(&self) -> usize {
        self.chunks.iter().filter(|c| !c.reclaimed).count()
    }

    /// An active chunk with uncarved blocks (of `blocks_per_chunk`), else a reclaimed one
    /// to reuse.
    pub(crate) fn chunk_with_room(&self, blocks_per_chunk: usize) -> Option<usize> {
        let has_room = |c: &Chunk| !c.reclaimed && c.carved < blocks_per_chunk;
        if self.chunks.get(self.cursor).is_some_and(has_room) {
            return Some(self.cursor);
        }
        self.chunks
            .iter()
            .position(has_room)
            .or_else(|| self.chunks.iter().position(|c| c.reclaimed))
    }
}
