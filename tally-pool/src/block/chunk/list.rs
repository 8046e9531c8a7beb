//! The chunks one pool mapped, and how many blocks of each are in circulation: what the
//! pool's growth lock protects.

use crate::sys::Region;

/// One chunk of a pool.
///
/// Invariant: `region` is `CHUNK_SIZE` bytes aligned to `CHUNK_SIZE`, starts with a valid
/// `ChunkHeader` of this pool, and is registered to the pool's slot. Blocks `0..carved`
/// have been handed to circulation (a cache, including its fresh range, the depot or a
/// user); the rest are untouched by anyone but the pool's growth path. A reclaimed chunk
/// has `carved == 0`.
#[derive(Debug)]
pub(crate) struct Chunk {
    pub(crate) region: Region,
    pub(crate) carved: usize,
    pub(crate) reclaimed: bool,
    /// Bytes from the chunk's start whose pages were faulted in ahead of use: carving
    /// keeps them ahead of the carved blocks (see `growth::PREFAULT_STEP`).
    ///
    /// Invariant: every page holding a byte of `0..faulted` was faulted in: whatever set
    /// `faulted` faulted in up to it rounded up to a page (`reserve`, `carve_range`), and
    /// reclaim lowers it to at most `PAGE`, keeping page 0, the header's. In a
    /// pre-faulting pool, the carved blocks (if any) end at or before `faulted`. So the
    /// pages from `faulted` rounded up on hold no block in circulation, and the page that
    /// holds an unaligned `faulted` (and may hold some) is faulted in already: carving
    /// faults in from `faulted`, which `Region::prefault_range` rounds up to a page.
    pub(crate) faulted: usize,
}

impl Chunk {
    /// A chunk just mapped: nothing carved, nothing faulted in.
    pub(crate) fn new(region: Region) -> Self {
        Self {
            region,
            carved: 0,
            reclaimed: false,
            faulted: 0,
        }
    }

    /// The chunk's address.
    pub(crate) fn base(&self) -> usize {
        self.region.ptr().as_ptr() as usize
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
    /// A chunk likely to have uncarved blocks.
    pub(crate) cursor: usize,
}

impl ChunkList {
    pub(crate) fn new() -> Self {
        Self {
            chunks: Vec::new(),
            carved_total: 0,
            cursor: 0,
        }
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
