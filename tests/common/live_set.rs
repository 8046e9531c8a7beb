//! The set of a pool's blocks that are live, kept beside the pool by the test itself.

use std::collections::HashSet;
use std::sync::Mutex;

/// Addresses live in one pool: an address enters when its block is handed out and leaves
/// just before the block goes back, so a block handed out twice while live shows.
#[derive(Debug)]
pub(crate) struct LiveSet {
    name: &'static str,
    /// Whether only a fixed sixteenth of the addresses is tracked, to keep the lock cheap
    /// in tests that allocate millions of blocks.
    sampled: bool,
    set: Mutex<HashSet<usize>>,
}

impl LiveSet {
    /// Tracks every address.
    pub(crate) fn new(name: &'static str) -> Self {
        Self {
            name,
            sampled: false,
            set: Mutex::new(HashSet::new()),
        }
    }

    /// Tracks the addresses in a fixed sixteenth of the address space (a multiplicative
    /// hash picks them, so neighbouring blocks fall in and out of it).
    pub(crate) fn sampled(name: &'static str) -> Self {
        Self {
            sampled: true,
            ..Self::new(name)
        }
    }

    pub(crate) fn name(&self) -> &'static str {
        self.name
    }

    fn tracks(&self, addr: usize) -> bool {
        !self.sampled || (addr as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 60 == 0
    }

    /// Records a block just handed out; fails if it is already live.
    #[track_caller]
    pub(crate) fn enter(&self, addr: usize) {
        if self.tracks(addr) {
            assert!(
                self.set.lock().unwrap().insert(addr),
                "{}: block {addr:#x} handed out while live",
                self.name
            );
        }
    }

    /// Records a block about to go back to the pool; fails if it was not live.
    #[track_caller]
    pub(crate) fn leave(&self, addr: usize) {
        if self.tracks(addr) {
            assert!(
                self.set.lock().unwrap().remove(&addr),
                "{}: block {addr:#x} released but not live",
                self.name
            );
        }
    }

    /// Tracked addresses live now.
    pub(crate) fn len(&self) -> usize {
        self.set.lock().unwrap().len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
