//! Size classes for serving arbitrary layouts from fixed-size block pools.
//!
//! Classes are multiples of 8 bytes up to 128, then eight classes per doubling up to
//! 32 KiB (144, 160, …, 256, 288, …). Rounding a request up to its class therefore wastes
//! under 12.5 % of the block for every request above 64 bytes, and at most 7 bytes below.

use core::alloc::Layout;

/// The largest size a class serves.
pub const MAX_CLASS_SIZE: usize = 32 * 1024;

/// Classes of 8-byte spacing: 8, 16, …, 128.
const LINEAR: usize = 16;
/// Classes per doubling above 128.
const PER_DOUBLING: usize = 8;
/// Doublings from 128 to 32 KiB.
const DOUBLINGS: usize = 8;

/// How many size classes there are.
pub const CLASS_COUNT: usize = LINEAR + PER_DOUBLING * DOUBLINGS;

/// A block size that layouts up to [`MAX_CLASS_SIZE`] are rounded up to.
///
/// ```
/// use core::alloc::Layout;
/// use tally_pool::block::SizeClass;
///
/// let class = SizeClass::for_layout(Layout::from_size_align(100, 8).unwrap()).unwrap();
/// assert_eq!(class.size(), 104);
/// assert!(class.layout().align() >= 8);
/// assert!(SizeClass::for_layout(Layout::from_size_align(40_000, 8).unwrap()).is_none());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SizeClass(u8);

impl SizeClass {
    /// The class of index `index` (`0..CLASS_COUNT`), smallest first.
    #[inline]
    pub const fn from_index(index: usize) -> Option<Self> {
        if index < CLASS_COUNT {
            Some(Self(index as u8))
        } else {
            None
        }
    }

    /// This class's index.
    #[inline]
    pub const fn index(self) -> usize {
        self.0 as usize
    }

    /// The block size of this class.
    #[inline]
    pub const fn size(self) -> usize {
        let i = self.index();
        if i < LINEAR {
            return 8 * (i + 1);
        }
        let j = i - LINEAR;
        let (doubling, step) = (j / PER_DOUBLING, j % PER_DOUBLING + 1);
        let base = 128usize << doubling;
        base + step * (base / PER_DOUBLING)
    }

    /// The alignment every block of this class has: the largest power of two dividing the
    /// size, at most 4096.
    #[inline]
    pub fn align(self) -> usize {
        (1usize << self.size().trailing_zeros()).min(4096)
    }

    /// The layout of this class's blocks.
    #[inline]
    pub fn layout(self) -> Layout {
        // The size is a non-zero multiple of the alignment, which is a power of two.
        Layout::from_size_align(self.size(), self.align()).unwrap_or(Layout::new::<u64>())
    }

    /// The smallest class whose blocks can hold `layout`, or `None` above
    /// [`MAX_CLASS_SIZE`] (or for an alignment no class has).
    #[inline]
    pub fn for_layout(layout: Layout) -> Option<Self> {
        let size = layout.size().max(1);
        if size > MAX_CLASS_SIZE {
            return None;
        }
        let first = if size <= 128 {
            (size - 1) / 8
        } else {
            // Doubling `d` covers (128 << d, 128 << (d + 1)].
            let d = (usize::BITS - 1 - ((size - 1) >> 7).leading_zeros()) as usize;
            let base = 128usize << d;
            // The step, `base / PER_DOUBLING`, is `1 << (d + 4)`: a shift, not a division
            // (this runs on every allocation and free of the global allocator).
            let shift = d + 4;
            LINEAR + d * PER_DOUBLING + ((size - base + (1 << shift) - 1) >> shift) - 1
        };
        // The common case, the first candidate fits (its size always does): no search.
        let candidate = Self::from_index(first)?;
        if candidate.align() >= layout.align() {
            return Some(candidate);
        }
        (first..CLASS_COUNT)
            .filter_map(Self::from_index)
            .find(|c| c.size() >= layout.size() && c.align() >= layout.align())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_grow_strictly_and_end_at_32k() {
        let sizes: Vec<usize> = (0..CLASS_COUNT)
            .map(|i| SizeClass::from_index(i).unwrap().size())
            .collect();
        assert!(sizes.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(sizes.first(), Some(&8));
        assert_eq!(sizes.last(), Some(&MAX_CLASS_SIZE));
        assert!(SizeClass::from_index(CLASS_COUNT).is_none());
    }

    #[test]
    fn every_size_gets_the_smallest_fitting_class_with_bounded_waste() {
        for size in 1..=MAX_CLASS_SIZE {
            let layout = Layout::from_size_align(size, 1).unwrap();
            let class = SizeClass::for_layout(layout).unwrap();
            assert!(class.size() >= size);
            if let Some(prev) = class.index().checked_sub(1).and_then(SizeClass::from_index) {
                assert!(
                    prev.size() < size,
                    "size {size}: class {} is not the smallest",
                    class.size()
                );
            }
            let waste = class.size() - size;
            if size > 64 {
                assert!(
                    waste * 8 < class.size(),
                    "size {size} wastes {waste} of {}",
                    class.size()
                );
            } else {
                assert!(waste <= 7);
            }
        }
    }

    #[test]
    fn alignment_is_honoured() {
        for align in [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096] {
            for size in [1, 7, 8, 24, 100, 1000, 4096, 5000, 30_000] {
                let layout = Layout::from_size_align(size, align).unwrap();
                let class = SizeClass::for_layout(layout).unwrap();
                assert!(
                    class.size() >= size && class.align() >= align,
                    "{layout:?} -> {class:?}"
                );
            }
        }
        assert!(SizeClass::for_layout(Layout::from_size_align(8, 8192).unwrap()).is_none());
        assert!(
            SizeClass::for_layout(Layout::from_size_align(MAX_CLASS_SIZE + 1, 8).unwrap())
                .is_none()
        );
    }
}
