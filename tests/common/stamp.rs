//! Tags written into every word of a block, so that a block handed out twice, or
//! overlapping another, shows when its words are read back.

use core::ptr::NonNull;

/// Word `i` of anything stamped with `tag`: `tag` itself first, then words that differ
/// per tag and per word.
pub(crate) fn pattern(tag: u64, i: usize) -> u64 {
    tag ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// Writes `tag`'s pattern into the first `words` words of `block`, which the caller holds:
/// a live block, 8-aligned and at least `words` words long.
pub(crate) fn stamp(block: NonNull<u8>, words: usize, tag: u64) {
    let first = block.as_ptr().cast::<u64>();
    for i in 0..words {
        // SAFETY: the caller holds `block` live, 8-aligned and `words` words long, so word
        // `i < words` is in bounds, aligned, and no one else's.
        unsafe { first.wrapping_add(i).write(pattern(tag, i)) };
    }
}

/// The first of the first `words` words of `block` that does not hold `tag`'s pattern:
/// its index and what it holds. `block` is as for [`stamp`].
pub(crate) fn damage(block: NonNull<u8>, words: usize, tag: u64) -> Option<(usize, u64)> {
    let first = block.as_ptr().cast::<u64>();
    (0..words).find_map(|i| {
        // SAFETY: as in `stamp`: a live block of at least `words` aligned words that the
        // caller holds.
        let seen = unsafe { first.wrapping_add(i).read() };
        (seen != pattern(tag, i)).then_some((i, seen))
    })
}

/// Panics if a word of the first `words` of `block` lost `tag`'s pattern while the caller
/// held the block; `what` says where. `block` is as for [`stamp`].
#[track_caller]
pub(crate) fn check(block: NonNull<u8>, words: usize, tag: u64, what: &str) {
    if let Some((i, seen)) = damage(block, words, tag) {
        panic!(
            "{what}: word {i} of block {:#x} holds {seen:#x}, not {:#x} (tag {tag:#x}): it \
             changed while the block was live, so the block was handed out twice or \
             overlaps another",
            block.as_ptr() as usize,
            pattern(tag, i)
        );
    }
}
