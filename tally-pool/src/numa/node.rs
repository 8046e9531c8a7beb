//! [`Node`]: one NUMA node (its OS id, CPUs and memory), and the limits every topology
//! source holds node ids and CPU numbers to.

/// Node ids must be below this: memory binding passes a node mask of this many bits.
pub const MAX_NODE_ID: u32 = 1024;

/// CPU numbers must be below this (Linux's largest `NR_CPUS` is 8192).
pub const MAX_CPU: usize = 1 << 16;

/// One NUMA node: its OS id, its CPUs and its memory.
///
/// ```
/// use tally_pool::numa::Node;
///
/// let node = Node::new(1, [7, 4, 5, 6, 4], 2 << 30);
/// assert_eq!(node.id(), 1);
/// assert_eq!(node.cpus(), &[4, 5, 6, 7]); // sorted, duplicates dropped
/// assert_eq!(node.memory_bytes(), 2 << 30);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The OS's node number (`nodeN` in sysfs, `os_index` in hwloc).
    id: u32,
    /// Invariant: sorted ascending, no duplicates.
    cpus: Vec<usize>,
    /// Total memory of the node in bytes; 0 when unknown.
    memory_bytes: u64,
}

impl Node {
    /// A node with id `id` (the OS's number), the CPUs `cpus` (any order, duplicates
    /// ignored) and `memory_bytes` of memory (0 for unknown).
    pub fn new(id: u32, cpus: impl IntoIterator<Item = usize>, memory_bytes: u64) -> Self {
        let mut cpus: Vec<usize> = cpus.into_iter().collect();
        cpus.sort_unstable();
        cpus.dedup();
        Self {
            id,
            cpus,
            memory_bytes,
        }
    }

    /// The OS's node number: what `numactl --membind` and `mbind(2)` call this node.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The node's CPUs, sorted ascending. Empty for a memory-only node.
    pub fn cpus(&self) -> &[usize] {
        &self.cpus
    }

    /// The node's total memory in bytes, or 0 when the source did not say.
    pub fn memory_bytes(&self) -> u64 {
        self.memory_bytes
    }
}
