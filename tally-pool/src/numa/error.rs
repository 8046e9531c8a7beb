//! The errors of the `numa` module, one enum per concern: describing a machine
//! ([`TopologyError`]), placing memory ([`BindError`]) and placing threads ([`PinError`]).

use std::path::PathBuf;

/// A topology could not be read or described.
///
/// [`Topology::system`](super::Topology::system) never returns this: it falls back to one
/// node and keeps the reason in
/// [`Topology::system_fallback_reason`](super::Topology::system_fallback_reason).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TopologyError {
    /// A file of the sysfs node tree could not be read.
    #[error("could not read `{}`: {source}; is /sys mounted and is this Linux?", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A sysfs file did not have the expected format.
    #[error("could not parse `{}` as {expected}: {text:?}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the file should hold, for example "a cpulist like `0-3,8-11`".
        expected: &'static str,
        /// The offending text (at most the first 200 characters).
        text: String,
    },
    /// The description has no node at all.
    #[error("a topology needs at least one NUMA node")]
    NoNodes,
    /// Two nodes have the same id.
    #[error("node {node} is described twice; node ids must be unique")]
    DuplicateNode {
        /// The repeated id.
        node: u32,
    },
    /// A node id is beyond what the memory-binding masks of this crate hold.
    #[error("node id {node} is too large; node ids must be below {limit}")]
    NodeIdTooLarge {
        /// The id.
        node: u32,
        /// The exclusive upper bound.
        limit: u32,
    },
    /// A CPU is listed in two nodes.
    #[error("CPU {cpu} is listed in node {first} and in node {second}; a CPU belongs to one node")]
    CpuInTwoNodes {
        /// The CPU.
        cpu: usize,
        /// The first node listing it.
        first: u32,
        /// The second node listing it.
        second: u32,
    },
    /// A CPU number is implausibly large.
    #[error("CPU {cpu} is too large; CPU numbers must be below {limit}")]
    CpuTooLarge {
        /// The CPU.
        cpu: usize,
        /// The exclusive upper bound.
        limit: usize,
    },
    /// The distance matrix does not have one row and one column per node.
    #[error(
        "the distance matrix must be {nodes}x{nodes} (one row and column per node), \
         but row {row} has {len} entries"
    )]
    DistanceShape {
        /// Number of nodes.
        nodes: usize,
        /// The first wrong row (`nodes` when the number of rows is wrong).
        row: usize,
        /// Its length (the number of rows when the number of rows is wrong).
        len: usize,
    },
    /// A distance is zero, or a node is nearer to another node than to itself.
    #[error(
        "distance from node {from} to node {to} is {distance}, but distances must be \
         positive and no smaller than a node's distance to itself ({local})"
    )]
    BadDistance {
        /// Row node.
        from: u32,
        /// Column node.
        to: u32,
        /// The offending value.
        distance: u32,
        /// The row's own (diagonal) distance.
        local: u32,
    },
    /// `Topology::synthetic` was asked for an impossible shape.
    #[error("a synthetic topology of {nodes} nodes with {cpus_per_node} CPUs each is not possible: {reason}")]
    Synthetic {
        /// Requested nodes.
        nodes: usize,
        /// Requested CPUs per node.
        cpus_per_node: usize,
        /// Why not.
        reason: &'static str,
    },
    /// hwloc failed to build or describe the topology.
    #[cfg(feature = "hwloc")]
    #[error("hwloc: {0}")]
    Hwloc(String),
}

/// Memory could not be bound to a node, or its node could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BindError {
    /// The topology has no node with this id.
    #[error("no NUMA node {node} in this topology (it has {nodes} nodes); use an id from `Topology::nodes()`")]
    UnknownNode {
        /// The requested node.
        node: u32,
        /// How many nodes the topology has.
        nodes: usize,
    },
    /// The range does not start on a page boundary.
    #[error("address {addr:#x} is not page-aligned ({page} bytes); bind whole pages, for example a freshly mapped chunk")]
    Misaligned {
        /// The start of the range.
        addr: usize,
        /// The page size the check used.
        page: usize,
    },
    /// The range is empty.
    #[error("cannot bind an empty range")]
    EmptyRange,
    /// The OS does not allow this process to set memory policies (EPERM), as in some
    /// containers and sandboxes.
    #[error("{call} is not permitted here (EPERM); memory stays where the kernel puts it")]
    NotPermitted {
        /// The refused call.
        call: &'static str,
    },
    /// The OS has no NUMA memory policy support (ENOSYS: not Linux, a kernel built without
    /// NUMA, or a sandbox that filters the call).
    #[error("{call} is not available here (ENOSYS); memory stays where the kernel puts it")]
    Unsupported {
        /// The unavailable call.
        call: &'static str,
    },
    /// The OS refused the call for another reason.
    #[error("{call} failed: {}", std::io::Error::from_raw_os_error(*errno))]
    Os {
        /// The failed call.
        call: &'static str,
        /// Its `errno`.
        errno: i32,
    },
    /// On a synthetic topology, no recorded binding covers this address.
    #[error("address {addr:#x} was never bound on this synthetic topology, so it has no node")]
    NotBound {
        /// The address asked about.
        addr: usize,
    },
}

impl BindError {
    /// True when the error means "this machine or sandbox cannot place memory at all"
    /// (EPERM or ENOSYS) rather than a mistake in the request.
    ///
    /// ```
    /// use tally_pool::numa::BindError;
    /// assert!(BindError::Unsupported { call: "mbind" }.is_unavailable());
    /// assert!(!BindError::EmptyRange.is_unavailable());
    /// ```
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::NotPermitted { .. } | Self::Unsupported { .. })
    }

    pub(crate) fn from_sys(failed: crate::sys::SysFailed) -> Self {
        match failed.errno {
            libc::EPERM => Self::NotPermitted { call: failed.call },
            libc::ENOSYS => Self::Unsupported { call: failed.call },
            errno => Self::Os {
                call: failed.call,
                errno,
            },
        }
    }
}

/// A thread could not be pinned to a node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PinError {
    /// The topology has no node with this id.
    #[error("no NUMA node {node} in this topology (it has {nodes} nodes); use an id from `Topology::nodes()`")]
    UnknownNode {
        /// The requested node.
        node: u32,
        /// How many nodes the topology has.
        nodes: usize,
    },
    /// The node has no CPU (a memory-only node), so no thread can run there.
    #[error("node {node} has no CPUs (memory only); pin threads to a node with CPUs")]
    NoCpus {
        /// The node.
        node: u32,
    },
    /// The OS does not allow this thread's affinity to change (EPERM).
    #[error("{call} is not permitted here (EPERM); the thread stays where the scheduler puts it")]
    NotPermitted {
        /// The refused call.
        call: &'static str,
    },
    /// The OS cannot pin threads (ENOSYS: not Linux, or a sandbox that filters the call).
    #[error("{call} is not available here (ENOSYS); the thread stays where the scheduler puts it")]
    Unsupported {
        /// The unavailable call.
        call: &'static str,
    },
    /// The OS refused the call for another reason (EINVAL: none of the node's CPUs is
    /// allowed to this process, for example in a cpuset cgroup).
    #[error("{call} failed: {}; are the node's CPUs allowed to this process (cgroup cpuset, taskset)?", std::io::Error::from_raw_os_error(*errno))]
    Os {
        /// The failed call.
        call: &'static str,
        /// Its `errno`.
        errno: i32,
    },
    /// hwloc refused to bind the thread.
    #[cfg(feature = "hwloc")]
    #[error("hwloc could not bind the thread to node {node}: {message}")]
    Hwloc {
        /// The node.
        node: u32,
        /// hwloc's message.
        message: String,
    },
}

impl PinError {
    /// True when the error means "this machine or sandbox cannot pin threads at all"
    /// (EPERM or ENOSYS) rather than a mistake in the request.
    ///
    /// ```
    /// use tally_pool::numa::PinError;
    /// assert!(PinError::NotPermitted { call: "sched_setaffinity" }.is_unavailable());
    /// assert!(!PinError::NoCpus { node: 1 }.is_unavailable());
    /// ```
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::NotPermitted { .. } | Self::Unsupported { .. })
    }

    pub(crate) fn from_sys(failed: crate::sys::SysFailed) -> Self {
        match failed.errno {
            libc::EPERM => Self::NotPermitted { call: failed.call },
            libc::ENOSYS => Self::Unsupported { call: failed.call },
            errno => Self::Os {
                call: failed.call,
                errno,
            },
        }
    }
}
