//! Drops counted per value, so that a value dropped twice, or never, shows.

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

/// How often each of `N` values, numbered by id, was dropped. Meant for a `static`, one a
/// value type: tests run in parallel, and each type's counts are its tests' alone.
#[derive(Debug)]
pub(crate) struct DropCounts<const N: usize> {
    drops: [AtomicU8; N],
    /// The id [`DropCounts::next_id`] gives next.
    next: AtomicUsize,
}

impl<const N: usize> DropCounts<N> {
    pub(crate) const fn new() -> Self {
        Self {
            drops: [const { AtomicU8::new(0) }; N],
            next: AtomicUsize::new(0),
        }
    }

    /// An id no value of this type had before.
    #[track_caller]
    pub(crate) fn next_id(&self) -> usize {
        let id = self.next.fetch_add(1, Ordering::SeqCst);
        assert!(id < N, "more than {N} values: raise the count of ids");
        id
    }

    /// Counts a drop of value `id`; to be called from its `Drop`.
    pub(crate) fn count(&self, id: usize) {
        self.drops[id].fetch_add(1, Ordering::SeqCst);
    }

    /// How often value `id` was dropped.
    pub(crate) fn dropped(&self, id: usize) -> u8 {
        self.drops[id].load(Ordering::SeqCst)
    }
}
