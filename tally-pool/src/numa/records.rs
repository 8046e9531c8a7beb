//! What a topology that is not this machine records instead of binding memory and
//! pinning threads: [`Binding`]s and [`Pinning`]s, read back through
//! [`Topology::bindings`](super::Topology::bindings) and
//! [`Topology::pinnings`](super::Topology::pinnings).

use std::thread::ThreadId;

/// A binding a synthetic topology recorded instead of performing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Binding {
    /// The node the range would have been bound to.
    pub node: u32,
    /// Start address of the range.
    pub addr: usize,
    /// Length of the range in bytes.
    pub len: usize,
}

impl Binding {
    /// True if `addr` lies in this range.
    pub fn contains(&self, addr: usize) -> bool {
        addr >= self.addr && addr - self.addr < self.len
    }
}

/// A thread pinning a synthetic topology recorded instead of performing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pinning {
    /// The node the thread would have been pinned to.
    pub node: u32,
    /// The pinned thread.
    pub thread: ThreadId,
    /// Its name, if it has one (rayon and tokio name their workers).
    pub thread_name: Option<String>,
}

/// What a topology that is not this machine was asked to do.
#[derive(Debug, Default)]
pub(super) struct Records {
    pub(super) bindings: Vec<Binding>,
    pub(super) pinnings: Vec<Pinning>,
}
