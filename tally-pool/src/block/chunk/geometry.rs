//! Where blocks sit in a chunk.
//!
//! A chunk is [`CHUNK_SIZE`] bytes aligned to its size, so `addr & !(CHUNK_SIZE - 1)` is
//! the chunk of any block address. It starts with a [`ChunkHeader`]; blocks follow at
//! `first_offset`, `stride` bytes apart. With a guard, each block is followed by an 8-byte
//! check word (the canary) inside its stride.

use core::alloc::Layout;

use super::header::{BlockShape, ChunkHeader};
use super::registry::CHUNK_SIZE;
use crate::block::config::GuardLevel;

/// The byte that fills free blocks under [`GuardLevel::Full`].
pub(crate) const POISON: u8 = 0xDB;

/// Largest block a pool serves.
pub(crate) const MAX_BLOCK_SIZE: usize = 256 * 1024;
/// Largest block alignment a pool serves.
pub(crate) const MAX_BLOCK_ALIGN: usize = 4096;

/// The cache line size assumed for layout: 64 bytes (x86_64, most aarch64).
const CACHE_LINE: usize = 64;

/// Shift used by the division by `stride` (see [`Geometry::index_of`]).
const DIV_SHIFT: u32 = 40;

/// How the blocks of one pool are laid out in each chunk.
///
/// Invariants: `stride` is a multiple of `align` and at least `canary_offset + 8` when
/// guarded; `first_offset + blocks_per_chunk * stride <= CHUNK_SIZE`;
/// `first_offset >= size_of::<ChunkHeader>()` and is a multiple of `align` and of 64;
/// `span == blocks_per_chunk * stride`; `div_magic == ceil(2^40 / stride)`;
/// `stride_magic == ceil(2^64 / stride)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Geometry {
    /// Bytes the user may use.
    pub(crate) size: usize,
    pub(crate) align: usize,
    /// Distance between two blocks.
    pub(crate) stride: usize,
    /// Offset of the canary word in a block, when the pool is guarded.
    pub(crate) canary_offset: Option<usize>,
    /// Offset of the first block from the chunk's start.
    pub(crate) first_offset: usize,
    pub(crate) blocks_per_chunk: usize,
    /// `blocks_per_chunk * stride`: bytes from the first block's start to the last one's
    /// end.
    span: usize,
    div_magic: u64,
    stride_magic: u64,
}

impl Geometry {
    /// Lays out blocks of `layout` under `guard`, or says why it cannot.
    pub(crate) fn new(layout: Layout, guard: GuardLevel) -> Result<Self, &'static str> {
        if layout.size() > MAX_BLOCK_SIZE {
            return Err("blocks are at most 256 KiB; allocate larger objects elsewhere");
        }
        if layout.align() > MAX_BLOCK_ALIGN {
            return Err("block alignment is at most 4096");
        }
        let align = layout.align().max(8);
        // Blocks are whole 8-byte words, so the canary sits right after the usable bytes and
        // no padding between them goes unchecked.
        let size = round_up(layout.size().max(8), 8);
        let canary_offset = match guard {
            GuardLevel::Off => None,
            GuardLevel::Canary | GuardLevel::Full => Some(round_up(size, 8)),
        };
        let end = canary_offset.map_or(size, |c| c + 8);
        let stride = round_up(end, align);
        // The header gets a cache line of its own: every handle release reads it, so a
        // block sharing its line would make writers of that block and releasers on other
        // threads take the line from each other.
        let first_offset = round_up(core::mem::size_of::<ChunkHeader>(), align.max(CACHE_LINE));
        let blocks_per_chunk = (CHUNK_SIZE - first_offset) / stride;
        if blocks_per_chunk == 0 {
            return Err("the block does not fit in a chunk");
        }
        let div_magic = (1u64 << DIV_SHIFT).div_ceil(stride as u64);
        // ceil(2^64 / stride) for every stride >= 2, powers of two included.
        let stride_magic = u64::MAX / stride as u64 + 1;
        Ok(Self {
            size,
            align,
            stride,
            canary_offset,
            first_offset,
            blocks_per_chunk,
            span: blocks_per_chunk * stride,
            div_magic,
            stride_magic,
        })
    }

    /// Whether `addr` is the start of a block (of a chunk laid out by this geometry).
    /// An address before the first block wraps its offset and fails the span check.
    #[inline(always)]
    pub(crate) fn is_block_start(&self, addr: usize) -> bool {
        let offset = (addr & (CHUNK_SIZE - 1)).wrapping_sub(self.first_offset);
        offset < self.span && is_stride_multiple(offset, self.stride_magic)
    }

    /// Bytes from the first block's start to the last one's end.
    pub(crate) fn span(&self) -> usize {
        self.span
    }

    /// `ceil(2^64 / stride)`, for [`is_stride_multiple`].
    pub(crate) fn stride_magic(&self) -> u64 {
        self.stride_magic
    }

    /// The block index of `addr` within its chunk, if `addr` is the start of a block.
    ///
    /// Branch-free on the stride: with `m = ceil(2^40 / stride)`, `offset < 2^20` and
    /// `stride < 2^19`, the product is below 2^60 and its error below
    /// `2^-40 * offset * stride < 1 / stride`, so the quotient is exact, powers of two
    /// included. An address before the first block wraps `offset` and fails the span check.
    #[inline(always)]
    pub(crate) fn index_of(&self, addr: usize) -> Option<usize> {
        let offset = (addr & (CHUNK_SIZE - 1)).wrapping_sub(self.first_offset);
        let index = ((offset as u64).wrapping_mul(self.div_magic) >> DIV_SHIFT) as usize;
        (offset < self.span && index.wrapping_mul(self.stride) == offset).then_some(index)
    }

    /// The block layout a chunk header records.
    pub(crate) fn block_shape(&self) -> BlockShape {
        // Blocks are at most `MAX_BLOCK_SIZE` bytes and strides at most twice that plus a
        // word, all below 2^32.
        BlockShape {
            size: self.size as u32,
            align: self.align as u32,
            stride: self.stride as u32,
        }
    }

    /// The address of block `index` in the chunk at `base`.
    pub(crate) fn block_addr(&self, base: usize, index: usize) -> usize {
        base + self.first_offset + index * self.stride
    }
}

/// Whether `offset`, below `2^32`, is a multiple of the stride whose
/// [`Geometry::stride_magic`] is `magic`: one multiplication and one comparison.
///
/// This is the divisibility test of Lemire, Kaser and Kurz ("Faster remainder by direct
/// computation", 2019): for `n < 2^32`, `d < 2^32` and `c = ceil(2^64 / d)`, `d` divides
/// `n` if and only if `n * c mod 2^64 < c`. Offsets within a chunk are below `2^20` and
/// strides below `2^19`.
#[inline(always)]
pub(crate) fn is_stride_multiple(offset: usize, magic: u64) -> bool {
    (offset as u64).wrapping_mul(magic) < magic
}

fn round_up(n: usize, to: usize) -> usize {
    (n + to - 1) & !(to - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_of_accepts_block_starts_only() {
        for (size, align, guard) in [
            (64, 8, GuardLevel::Off),
            (64, 8, GuardLevel::Canary),
            (24, 8, GuardLevel::Full),
            (100, 4, GuardLevel::Off),
            (4000, 64, GuardLevel::Canary),
            (MAX_BLOCK_SIZE, 4096, GuardLevel::Full),
        ] {
            let g = Geometry::new(Layout::from_size_align(size, align).unwrap(), guard).unwrap();
            assert_eq!(g.stride % g.align, 0);
            assert!(g.first_offset + g.blocks_per_chunk * g.stride <= CHUNK_SIZE);
            let base = 7 * CHUNK_SIZE;
            for i in 0..g.blocks_per_chunk {
                let a = g.block_addr(base, i);
                assert_eq!(g.index_of(a), Some(i));
                assert_eq!(g.index_of(a + 1), None);
                assert_eq!(g.index_of(a + g.stride - 1), None);
                assert!(g.is_block_start(a));
                assert!(!g.is_block_start(a + 1));
                assert!(!g.is_block_start(a + 8));
                assert!(!g.is_block_start(a + g.stride - 1));
            }
            assert_eq!(g.index_of(base), None);
            assert_eq!(g.index_of(g.block_addr(base, g.blocks_per_chunk)), None);
            assert!(!g.is_block_start(base));
            assert!(!g.is_block_start(base + g.first_offset - 8));
            assert!(!g.is_block_start(g.block_addr(base, g.blocks_per_chunk)));
            assert!(!g.is_block_start(base + CHUNK_SIZE - 8));
        }
    }

    #[test]
    fn stride_multiple_test_agrees_with_the_remainder() {
        // Every stride a geometry can have (a multiple of 8 below 2^19), at offsets around
        // its multiples and at pseudo-random offsets below 2^20.
        // Under miri, every 1021st stride (a prime step), so that it ends in minutes.
        let step = if cfg!(miri) { 8 * 1021 } else { 8 };
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        for stride in (8..1usize << 19).step_by(step) {
            let magic = u64::MAX / stride as u64 + 1;
            let mut offsets = vec![0, 1, stride - 1, stride, stride + 1, (1 << 20) - 1];
            for k in [2, 3, 7, (1 << 20) / stride] {
                offsets.extend([k * stride - 8, k * stride, k * stride + 8]);
            }
            for _ in 0..16 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                offsets.push((seed >> 44) as usize);
            }
            for offset in offsets {
                assert_eq!(
                    is_stride_multiple(offset, magic),
                    offset % stride == 0,
                    "stride {stride}, offset {offset}"
                );
            }
        }
    }

    #[test]
    fn refuses_layouts_it_cannot_hold() {
        assert!(Geometry::new(
            Layout::from_size_align(MAX_BLOCK_SIZE + 1, 8).unwrap(),
            GuardLevel::Off
        )
        .is_err());
        assert!(
            Geometry::new(Layout::from_size_align(64, 8192).unwrap(), GuardLevel::Off).is_err()
        );
    }
}
