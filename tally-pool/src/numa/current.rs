//! The calling thread's node: [`current_node`], cached per thread and refreshed every
//! [`REFRESH_INTERVAL`] calls, with a per-thread override for tests and simulations.
//!
//! The cache holds the thread's *CPU*, not its node, so one cache serves every
//! [`Topology`]: a lookup is one thread-local access plus one table load. A thread the
//! scheduler migrates is noticed at the next refresh; one pinned with
//! [`pin_current_thread`](super::pin_current_thread) is noticed at once.

use core::cell::Cell;

use super::topology::Topology;
use crate::sys;

/// Calls of [`current_node`] (or [`current_node_index`]) between two reads of the CPU
/// with `sched_getcpu`. A migrated thread keeps using its old node for at most this many
/// calls.
pub const REFRESH_INTERVAL: u32 = 1024;

/// "No override" and "CPU unknown" in the thread-local cells.
const NONE: u32 = u32::MAX;

/// One thread's view of where it runs.
struct ThreadNode {
    /// The CPU read at the last refresh, or [`NONE`] when the OS could not tell.
    cpu: Cell<u32>,
    /// Calls left before the next refresh; 0 forces one.
    countdown: Cell<u32>,
    /// A node id forced by [`set_thread_node`], or [`NONE`].
    forced: Cell<u32>,
}

impl ThreadNode {
    const fn new() -> Self {
        Self {
            cpu: Cell::new(NONE),
            countdown: Cell::new(0),
            forced: Cell::new(NONE),
        }
    }

    /// The index of this thread's node in `topology`.
    #[inline]
    fn index_in(&self, topology: &Topology) -> usize {
        let forced = self.forced.get();
        if forced != NONE {
            if let Some(index) = topology.index_of(forced) {
                return index;
            }
        }
        let left = self.countdown.get();
        let cpu = if left == 0 {
            self.refresh()
        } else {
            self.countdown.set(left - 1);
            self.cpu.get()
        };
        topology.index_of_cpu(cpu as usize).unwrap_or(0)
    }

    #[cold]
    fn refresh(&self) -> u32 {
        let cpu = read_cpu();
        self.cpu.set(cpu);
        self.countdown.set(REFRESH_INTERVAL - 1);
        cpu
    }
}

fn read_cpu() -> u32 {
    sys::current_cpu()
        .and_then(|c| u32::try_from(c).ok())
        .unwrap_or(NONE)
}

// Thread-local, not shared: under loom each model thread gets its own, as it would on
// real threads.
#[cfg(not(loom))]
std::thread_local! {
    static THREAD: ThreadNode = const { ThreadNode::new() };
}
#[cfg(loom)]
loom::thread_local! {
    static THREAD: ThreadNode = ThreadNode::new();
}

/// The id of the node the calling thread runs on, as `topology` numbers nodes.
///
/// Cheap enough for every acquire: the CPU is cached per thread and re-read with
/// `sched_getcpu` every [`REFRESH_INTERVAL`] calls, so a migrated thread moves to its
/// new node's pool soon after. A node forced with [`set_thread_node`] or
/// [`with_node_override`] wins when `topology` has that node. A CPU no node of
/// `topology` lists (an unknown CPU, or a synthetic topology with fewer CPUs than this
/// machine) counts as the first node.
///
/// ```
/// use tally_pool::numa::{current_node, with_node_override, Topology};
///
/// let topology = Topology::synthetic(4, 1)?;
/// assert!(topology.node(current_node(&topology)).is_some());
/// with_node_override(3, || assert_eq!(current_node(&topology), 3));
/// # Ok::<(), tally_pool::numa::TopologyError>(())
/// ```
#[inline]
pub fn current_node(topology: &Topology) -> u32 {
    let index = current_node_index(topology);
    topology.node_at(index).map_or(0, |n| n.id())
}

/// As [`current_node`], but the node's index (its position in [`Topology::nodes`]), for
/// indexing per-node arrays. Always below `topology.node_count()`.
#[inline]
pub fn current_node_index(topology: &Topology) -> usize {
    match THREAD.try_with(|t| t.index_in(topology)) {
        Ok(index) => index,
        // The thread-local is gone (a destructor running at thread exit): read directly.
        Err(_) => topology.index_of_cpu(read_cpu() as usize).unwrap_or(0),
    }
}

/// The CPU the calling thread runs on right now (`sched_getcpu`, uncached), or `None`
/// where the OS cannot tell.
pub fn current_cpu() -> Option<usize> {
    sys::current_cpu()
}

/// Makes the next [`current_node`] on this thread re-read the CPU, for example after the
/// thread changed its own affinity by other means than
/// [`pin_current_thread`](super::pin_current_thread).
pub fn refresh_current_node() {
    // Ignored at thread exit, when there is no cache left to refresh.
    let _ = THREAD.try_with(|t| t.countdown.set(0));
}

/// Forces (`Some(node)`) or stops forcing (`None`) the node [`current_node`] reports on
/// the calling thread, and returns the previous setting. Meant for tests and simulations:
/// on a one-node machine it lets threads act as if they ran on node 1..n of a synthetic
/// topology. A forced id that a topology does not have is ignored by that topology.
///
/// [`pin_current_thread`](super::pin_current_thread) on a synthetic topology sets this.
///
/// ```
/// use tally_pool::numa::{current_node, set_thread_node, Topology};
///
/// let topology = Topology::synthetic(2, 1)?;
/// let previous = set_thread_node(Some(1));
/// assert_eq!(current_node(&topology), 1);
/// set_thread_node(previous);
/// # Ok::<(), tally_pool::numa::TopologyError>(())
/// ```
pub fn set_thread_node(node: Option<u32>) -> Option<u32> {
    let value = node.filter(|&n| n != NONE).unwrap_or(NONE);
    THREAD
        .try_with(|t| t.forced.replace(value))
        .ok()
        .filter(|&n| n != NONE)
}

/// The node forced on the calling thread by [`set_thread_node`], if any.
pub fn thread_node_override() -> Option<u32> {
    THREAD
        .try_with(|t| t.forced.get())
        .ok()
        .filter(|&n| n != NONE)
}

/// Runs `f` with the calling thread's node forced to `node` (see [`set_thread_node`]),
/// then restores the previous setting, also when `f` panics.
///
/// ```
/// use tally_pool::numa::{current_node, with_node_override, Topology};
///
/// let topology = Topology::synthetic(4, 1)?;
/// let seen = with_node_override(2, || current_node(&topology));
/// assert_eq!(seen, 2);
/// # Ok::<(), tally_pool::numa::TopologyError>(())
/// ```
pub fn with_node_override<R>(node: u32, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<u32>);
    impl Drop for Restore {
        fn drop(&mut self) {
            set_thread_node(self.0);
        }
    }
    let _restore = Restore(set_thread_node(Some(node)));
    f()
}
