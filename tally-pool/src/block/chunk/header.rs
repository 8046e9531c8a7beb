//! The chunk header: the first bytes of every chunk, saying what the chunk is and whose.
//!
//! A chunk is [`CHUNK_SIZE`] bytes aligned to its size, so `addr & !(CHUNK_SIZE - 1)` is
//! the chunk, and the header, of any address in it ([`ChunkHeader::of`]). Blocks follow the
//! header on a cache line of their own (see `geometry`).

use super::registry::CHUNK_SIZE;

/// The value a chunk header's magic holds.
pub(crate) const CHUNK_MAGIC: u64 = 0x7A11_7900_C4C4_0001;

/// The layout of a chunk's blocks, as its header records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BlockShape {
    /// Usable bytes of a block.
    pub(crate) size: u32,
    /// Alignment of every block.
    pub(crate) align: u32,
    /// Distance between two blocks.
    pub(crate) stride: u32,
}

/// The first bytes of every chunk: what the chunk is and whose, with a checksum.
///
/// Written once when the chunk is mapped, before it is registered or published; read-only
/// afterwards, so any change is corruption.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub(crate) struct ChunkHeader {
    pub(crate) magic: u64,
    pub(crate) pool_uid: u64,
    pub(crate) node: u32,
    pub(crate) block_size: u32,
    pub(crate) block_align: u32,
    pub(crate) stride: u32,
    /// Index of the chunk in its pool, in mapping order; never reused while the pool lives.
    pub(crate) chunk_id: u32,
    /// Where a free through the header (`cache::push_via_header`) finds the calling
    /// thread's cache in its fast table: the pool's unguarded index if the pool's owner
    /// allows such frees (`BlockPool::set_chunk_owner`), else the fast table's always-null
    /// entry.
    pub(crate) cache_index: u32,
    /// A word the layer that owns the pool chose for its chunks, or 0: a typed pool stores
    /// its own address here, which is how a handle finds its pool.
    pub(crate) owner: u64,
    pub(crate) checksum: u64,
}

impl ChunkHeader {
    /// A header with its magic and checksum set.
    pub(crate) fn new(
        pool_uid: u64,
        node: u32,
        shape: BlockShape,
        chunk_id: u32,
        owner: usize,
        cache_index: u32,
    ) -> Self {
        let mut h = Self {
            magic: CHUNK_MAGIC,
            pool_uid,
            node,
            block_size: shape.size,
            block_align: shape.align,
            stride: shape.stride,
            chunk_id,
            cache_index,
            owner: owner as u64,
            checksum: 0,
        };
        h.checksum = h.compute_checksum();
        h
    }

    /// The header of the chunk that holds `addr`.
    ///
    /// # Safety
    ///
    /// `addr` must lie in a chunk that a pool mapped (a block it handed out, for example),
    /// and the chunk must stay mapped for `'a`: chunks start with a header written before
    /// they were published and never written again, so the reference is to initialised,
    /// unchanging memory.
    #[inline(always)]
    pub(crate) unsafe fn of<'a>(addr: usize) -> &'a Self {
        let base = addr & !(CHUNK_SIZE - 1);
        // SAFETY: the caller says `base` is a chunk that stays mapped for `'a`; chunks are
        // `CHUNK_SIZE`-aligned (so 8-aligned) and begin with a header that is never written
        // again once the chunk is published.
        unsafe { &*(base as *const Self) }
    }

    /// FNV-1a over every field but the checksum.
    pub(crate) fn compute_checksum(&self) -> u64 {
        let words = [
            self.magic,
            self.pool_uid,
            u64::from(self.node),
            u64::from(self.block_size),
            u64::from(self.block_align),
            u64::from(self.stride),
            u64::from(self.chunk_id),
            u64::from(self.cache_index),
            self.owner,
        ];
        words
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            })
    }

    /// Whether the header is intact.
    pub(crate) fn is_valid(&self) -> bool {
        self.magic == CHUNK_MAGIC && self.checksum == self.compute_checksum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_checksum_catches_any_field_change() {
        // The shape of `[u64; 8]` blocks without a guard.
        let shape = BlockShape {
            size: 64,
            align: 8,
            stride: 64,
        };
        let h = ChunkHeader::new(9, 1, shape, 0, 0, 64);
        assert!(h.is_valid());
        let mut bad = h;
        bad.node = 2;
        assert!(!bad.is_valid());
        let mut bad = h;
        bad.owner = 8;
        assert!(!bad.is_valid());
        let mut bad = h;
        bad.magic ^= 1;
        assert!(!bad.is_valid());
    }
}
