//! [`Topology`]: the NUMA nodes of a machine (real or synthetic), their CPUs, memory and
//! distances, and the lookup tables the hot path uses.

use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use super::error::TopologyError;
use super::node::{Node, MAX_CPU, MAX_NODE_ID};
use super::records::Records;
use super::sysfs;

/// Marks "no node" in the dense lookup tables.
const NO_INDEX: u32 = u32::MAX;

/// Memory each node of [`Topology::synthetic`] claims to have: 1 GiB.
const SYNTHETIC_NODE_MEMORY: u64 = 1 << 30;

/// Distance of a node to itself in the ACPI SLIT convention sysfs uses.
pub const LOCAL_DISTANCE: u32 = 10;

/// Distance between two different nodes when nothing better is known.
pub const REMOTE_DISTANCE: u32 = 20;

/// Where a [`Topology`] came from, which decides what binding and pinning do.
///
/// | source | describes | `bind` / `pin_current_thread` |
/// |---|---|---|
/// | `Sysfs` | this machine | `mbind(MPOL_BIND)` / `sched_setaffinity` |
/// | `Hwloc` | this machine | `mbind(MPOL_BIND)` / hwloc's thread binding |
/// | `SingleNode` | this machine, NUMA unknown | checked no-ops |
/// | `Synthetic`, `SysfsSnapshot`, `HwlocSynthetic` | an imagined machine | checked and recorded, nothing else |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TopologySource {
    /// This machine, read from `/sys/devices/system/node`.
    Sysfs,
    /// This machine, read by hwloc (feature `hwloc`).
    Hwloc,
    /// This machine as one node holding every CPU: the fallback when the node tree cannot
    /// be read (not Linux, no `/sys`, an unexpected format).
    SingleNode,
    /// Built by [`Topology::synthetic`] and friends.
    Synthetic,
    /// Read by [`Topology::from_sysfs`] from a directory laid out like the sysfs node tree.
    SysfsSnapshot,
    /// Built by hwloc from a synthetic description (feature `hwloc`).
    HwlocSynthetic,
}

impl TopologySource {
    /// True when the topology describes the machine this process runs on, so binding and
    /// pinning act on it; false when they are only recorded.
    pub fn is_this_machine(self) -> bool {
        matches!(self, Self::Sysfs | Self::Hwloc | Self::SingleNode)
    }
}

/// The NUMA nodes of a machine: ids, CPUs, memory and the distances between them.
///
/// A `Topology` is cheap to clone (one reference count) and clones share everything,
/// including the record of bindings on a synthetic topology. Nodes are kept in ascending
/// id order; their position in that order is the node's *index*, dense from 0, which
/// per-node structures can use to index arrays. Ids may have gaps on real machines.
///
/// ```
/// use tally_pool::numa::Topology;
///
/// let topology = Topology::synthetic(4, 2)?;
/// assert_eq!(topology.node_count(), 4);
/// assert_eq!(topology.nodes()[1].cpus(), &[2, 3]);
/// assert_eq!(topology.node_of_cpu(5), Some(2));
/// assert_eq!(topology.distance(0, 0), Some(10));
/// assert_eq!(topology.distance(0, 3), Some(20));
/// assert_eq!(topology.nearest_nodes(2), vec![2, 0, 1, 3]);
/// # Ok::<(), tally_pool::numa::TopologyError>(())
/// ```
#[derive(Clone)]
pub struct Topology {
    inner: Arc<Inner>,
}

/// Everything a topology knows, built once by [`Topology::build`].
///
/// Invariants: `nodes` is non-empty, sorted by id, ids unique and below [`MAX_NODE_ID`],
/// every CPU below [`MAX_CPU`] and in at most one node; `distances` is
/// `nodes.len()²` entries, row-major by index, positive, each row's diagonal its minimum;
/// `nearest[i]` is a permutation of all indices starting with `i`; `cpu_node[cpu]` and
/// `id_index[id]` are the index of the owning node or [`NO_INDEX`].
pub(super) struct Inner {
    nodes: Vec<Node>,
    distances: Vec<u32>,
    nearest: Vec<Vec<usize>>,
    cpu_node: Vec<u32>,
    id_index: Vec<u32>,
    source: TopologySource,
    /// What binding and pinning recorded; only written when the source is not this
    /// machine. A std mutex even under loom: it is a test log, not allocator state, and
    /// nothing inside it can yield to the model.
    records: Mutex<Records>,
    /// The hwloc topology that pins threads when the source is [`TopologySource::Hwloc`].
    #[cfg(feature = "hwloc")]
    hwloc: Option<hwlocality::Topology>,
}

/// The system topology and, when it is the fallback, why.
static SYSTEM: OnceLock<(Topology, Option<TopologyError>)> = OnceLock::new();

impl Topology {
    /// The topology of this machine, read once and cached for the life of the process.
    ///
    /// With the feature `hwloc` it is read by hwloc; otherwise, or if hwloc fails, from
    /// `/sys/devices/system/node` (cpulists, distances, meminfo); if that fails too (not
    /// Linux, no `/sys`, an unexpected format) it is [`Topology::single_node`], and
    /// [`Topology::system_fallback_reason`] says why. It never panics.
    ///
    /// ```
    /// use tally_pool::numa::Topology;
    ///
    /// let topology = Topology::system();
    /// assert!(topology.node_count() >= 1);
    /// assert!(topology.source().is_this_machine());
    /// ```
    pub fn system() -> &'static Topology {
        &SYSTEM.get_or_init(Self::discover).0
    }

    /// Why [`Topology::system`] fell back to one node, or `None` if it did not.
    pub fn system_fallback_reason() -> Option<&'static TopologyError> {
        SYSTEM.get_or_init(Self::discover).1.as_ref()
    }

    fn discover() -> (Topology, Option<TopologyError>) {
        #[cfg(feature = "hwloc")]
        if let Ok(topology) = Self::from_hwloc() {
            return (topology, None);
        }
        match Self::sysfs() {
            Ok(topology) => (topology, None),
            Err(reason) => (Self::single_node(), Some(reason)),
        }
    }

    /// This machine read from `/sys/devices/system/node`, uncached; binding and pinning
    /// on it act on the machine. Prefer [`Topology::system`], which also falls back.
    ///
    /// # Errors
    ///
    /// [`TopologyError::Io`] when the tree cannot be read (not Linux, no `/sys`),
    /// [`TopologyError::Parse`] or a shape error when it has an unexpected format.
    pub fn sysfs() -> Result<Topology, TopologyError> {
        let (nodes, distances) = sysfs::read(Path::new(sysfs::NODE_ROOT))?;
        Self::build(nodes, Some(distances), TopologySource::Sysfs)
    }

    /// A topology read from a directory laid out like `/sys/devices/system/node`
    /// (`node<N>/cpulist`, `node<N>/distance`, optionally `node<N>/meminfo`), for example
    /// a snapshot of another machine. It is not this machine: binding and pinning on it
    /// are recorded, not performed.
    ///
    /// ```no_run
    /// use tally_pool::numa::Topology;
    ///
    /// let topology = Topology::from_sysfs("tests/fixtures/two-socket")?;
    /// # Ok::<(), tally_pool::numa::TopologyError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Topology::sysfs`].
    pub fn from_sysfs(root: impl AsRef<Path>) -> Result<Topology, TopologyError> {
        let (nodes, distances) = sysfs::read(root.as_ref())?;
        Self::build(nodes, Some(distances), TopologySource::SysfsSnapshot)
    }

    /// This machine as one node (id 0) holding CPUs `0..available_parallelism` and
    /// unknown memory: what [`Topology::system`] falls back to. Binding to node 0 and
    /// pinning to it are accepted and do nothing.
    ///
    /// ```
    /// use tally_pool::numa::Topology;
    ///
    /// let one = Topology::single_node();
    /// assert_eq!(one.node_count(), 1);
    /// assert_eq!(one.nodes()[0].id(), 0);
    /// ```
    pub fn single_node() -> Topology {
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        let node = Node::new(0, 0..cpus.min(MAX_CPU), 0);
        let inner = Inner::assemble(vec![node], vec![LOCAL_DISTANCE], TopologySource::SingleNode);
        Topology {
            inner: Arc::new(inner),
        }
    }

    /// A synthetic machine of `nodes` nodes with `cpus_per_node` CPUs each (node `i` has
    /// CPUs `i * cpus_per_node ..`), 1 GiB of memory each, distance 10 to itself and 20
    /// to every other node. Binding and pinning on it are recorded, not performed.
    ///
    /// ```
    /// use tally_pool::numa::{Topology, TopologySource};
    ///
    /// let t = Topology::synthetic(2, 4)?;
    /// assert_eq!(t.nodes()[1].cpus(), &[4, 5, 6, 7]);
    /// assert_eq!(t.source(), TopologySource::Synthetic);
    /// # Ok::<(), tally_pool::numa::TopologyError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`TopologyError::Synthetic`] when `nodes` is 0 or above [`MAX_NODE_ID`], or the
    /// CPUs would pass [`MAX_CPU`].
    pub fn synthetic(nodes: usize, cpus_per_node: usize) -> Result<Topology, TopologyError> {
        // Before the matrix, whose size it bounds.
        synthetic_shape(nodes, cpus_per_node)?;
        let distances = (0..nodes)
            .map(|from| {
                (0..nodes)
                    .map(|to| {
                        if from == to {
                            LOCAL_DISTANCE
                        } else {
                            REMOTE_DISTANCE
                        }
                    })
                    .collect()
            })
            .collect();
        Self::synthetic_with_distances(cpus_per_node, distances)
    }

    /// A synthetic machine with one node per row of `distances` (row `i`, column `j`: the
    /// distance from node `i` to node `j`, 10 meaning local as in sysfs), `cpus_per_node`
    /// CPUs and 1 GiB each.
    ///
    /// ```
    /// use tally_pool::numa::Topology;
    ///
    /// // Two sockets of two nodes each: the sibling node is nearer than the other socket.
    /// let t = Topology::synthetic_with_distances(2, vec![
    ///     vec![10, 12, 32, 32],
    ///     vec![12, 10, 32, 32],
    ///     vec![32, 32, 10, 12],
    ///     vec![32, 32, 12, 10],
    /// ])?;
    /// assert_eq!(t.nearest_nodes(2), vec![2, 3, 0, 1]);
    /// # Ok::<(), tally_pool::numa::TopologyError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Topology::synthetic`], and [`TopologyError::DistanceShape`] or
    /// [`TopologyError::BadDistance`] for a matrix that is not square or has a zero or a
    /// value below its row's diagonal.
    pub fn synthetic_with_distances(
        cpus_per_node: usize,
        distances: Vec<Vec<u32>>,
    ) -> Result<Topology, TopologyError> {
        let count = synthetic_shape(distances.len(), cpus_per_node)?;
        let list = (0..count)
            .zip((0..).step_by(cpus_per_node.max(1)))
            .map(|(id, first)| Node::new(id, first..first + cpus_per_node, SYNTHETIC_NODE_MEMORY))
            .collect();
        Self::build(list, Some(distances), TopologySource::Synthetic)
    }

    /// A synthetic machine with exactly these nodes (ids may have gaps; a node may have
    /// no CPUs) and, optionally, distances whose rows and columns follow the order of
    /// `nodes` as given (10 local and 20 remote when `None`).
    ///
    /// ```
    /// use tally_pool::numa::{Node, Topology};
    ///
    /// // Node 4 is memory only (CXL-style); ids have a gap.
    /// let t = Topology::from_nodes(
    ///     vec![Node::new(0, 0..4, 8 << 30), Node::new(4, [], 64 << 30)],
    ///     None,
    /// )?;
    /// assert_eq!(t.index_of(4), Some(1));
    /// assert!(t.nodes()[1].cpus().is_empty());
    /// # Ok::<(), tally_pool::numa::TopologyError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// Any [`TopologyError`] shape error: no node, a repeated id, an id too large, a CPU in
    /// two nodes or too large, a bad distance matrix.
    pub fn from_nodes(
        nodes: Vec<Node>,
        distances: Option<Vec<Vec<u32>>>,
    ) -> Result<Topology, TopologyError> {
        Self::build(nodes, distances, TopologySource::Synthetic)
    }

    /// Validates a description and builds the lookup tables. `distances` rows and columns
    /// follow the order of `nodes` as given.
    pub(super) fn build(
        nodes: Vec<Node>,
        distances: Option<Vec<Vec<u32>>>,
        source: TopologySource,
    ) -> Result<Topology, TopologyError> {
        let n = nodes.len();
        if n == 0 {
            return Err(TopologyError::NoNodes);
        }
        let rows = match distances {
            Some(rows) => rows,
            None => (0..n)
                .map(|i| {
                    (0..n)
                        .map(|j| {
                            if i == j {
                                LOCAL_DISTANCE
                            } else {
                                REMOTE_DISTANCE
                            }
                        })
                        .collect()
                })
                .collect(),
        };
        if rows.len() != n {
            return Err(TopologyError::DistanceShape {
                nodes: n,
                row: n,
                len: rows.len(),
            });
        }
        if let Some((row, r)) = rows.iter().enumerate().find(|(_, r)| r.len() != n) {
            return Err(TopologyError::DistanceShape {
                nodes: n,
                row,
                len: r.len(),
            });
        }
        // Sort nodes by id, permuting the matrix the same way.
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by_key(|&i| nodes.get(i).map_or(0, Node::id));
        let sorted: Vec<Node> = order
            .iter()
            .filter_map(|&i| nodes.get(i).cloned())
            .collect();
        let mut matrix = Vec::with_capacity(n * n);
        for &i in &order {
            for &j in &order {
                matrix.push(rows.get(i).and_then(|r| r.get(j)).copied().unwrap_or(0));
            }
        }
        validate(&sorted, &matrix)?;
        Ok(Topology {
            inner: Arc::new(Inner::assemble(sorted, matrix, source)),
        })
    }

    /// Attaches the hwloc topology that performs pinning for a `Hwloc` source.
    #[cfg(feature = "hwloc")]
    pub(super) fn with_hwloc(self, hwloc: hwlocality::Topology) -> Topology {
        match Arc::try_unwrap(self.inner) {
            Ok(mut inner) => {
                inner.hwloc = Some(hwloc);
                Topology {
                    inner: Arc::new(inner),
                }
            }
            Err(inner) => Topology { inner },
        }
    }

    /// The hwloc topology that pins threads, for a `Hwloc` source.
    #[cfg(feature = "hwloc")]
    pub(super) fn hwloc_topology(&self) -> Option<&hwlocality::Topology> {
        self.inner.hwloc.as_ref()
    }

    /// The record of bindings and pinnings. Poisoning is ignored: every critical section
    /// is one `push`, `clone` or `clear`, which leaves the vectors consistent.
    pub(super) fn records(&self) -> MutexGuard<'_, Records> {
        match self.inner.records.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Where this topology came from; see [`TopologySource`] for what that changes.
    pub fn source(&self) -> TopologySource {
        self.inner.source
    }

    /// The nodes in ascending id order; a node's position here is its index.
    pub fn nodes(&self) -> &[Node] {
        &self.inner.nodes
    }

    /// Number of nodes (at least 1).
    pub fn node_count(&self) -> usize {
        self.inner.nodes.len()
    }

    /// The node with OS id `id`.
    pub fn node(&self, id: u32) -> Option<&Node> {
        self.index_of(id).and_then(|i| self.node_at(i))
    }

    /// The node at index `index` (its position in [`Topology::nodes`]).
    pub fn node_at(&self, index: usize) -> Option<&Node> {
        self.inner.nodes.get(index)
    }

    /// The index of the node with OS id `id`, in constant time.
    ///
    /// ```
    /// use tally_pool::numa::{Node, Topology};
    ///
    /// let t = Topology::from_nodes(vec![Node::new(2, [0], 0), Node::new(0, [1], 0)], None)?;
    /// assert_eq!(t.index_of(0), Some(0));
    /// assert_eq!(t.index_of(2), Some(1));
    /// assert_eq!(t.index_of(1), None);
    /// # Ok::<(), tally_pool::numa::TopologyError>(())
    /// ```
    #[inline]
    pub fn index_of(&self, id: u32) -> Option<usize> {
        let index = *self.inner.id_index.get(id as usize)?;
        (index != NO_INDEX).then_some(index as usize)
    }

    /// The id of the node that holds CPU `cpu`, or `None` for a CPU no node lists.
    pub fn node_of_cpu(&self, cpu: usize) -> Option<u32> {
        self.index_of_cpu(cpu)
            .and_then(|i| self.node_at(i))
            .map(Node::id)
    }

    /// The index of the node that holds CPU `cpu`, in constant time.
    #[inline]
    pub fn index_of_cpu(&self, cpu: usize) -> Option<usize> {
        let index = *self.inner.cpu_node.get(cpu)?;
        (index != NO_INDEX).then_some(index as usize)
    }

    /// Number of CPUs over all nodes.
    pub fn cpu_count(&self) -> usize {
        self.inner.nodes.iter().map(|n| n.cpus().len()).sum()
    }

    /// The distance from node `from` to node `to` (ids), 10 meaning local; `None` if
    /// either is not a node of this topology.
    pub fn distance(&self, from: u32, to: u32) -> Option<u32> {
        let (i, j) = (self.index_of(from)?, self.index_of(to)?);
        self.inner.distances.get(i * self.node_count() + j).copied()
    }

    /// The distance matrix by index: row `i`, column `j` is the distance from
    /// `nodes()[i]` to `nodes()[j]`.
    pub fn distance_matrix(&self) -> Vec<Vec<u32>> {
        self.inner
            .distances
            .chunks(self.node_count())
            .map(<[u32]>::to_vec)
            .collect()
    }

    /// Every node's id ordered by distance from node `from`: `from` itself first, then
    /// the nearest other node, ties broken by id. Empty if `from` is not a node here.
    ///
    /// This is the order in which a full node's pool falls back to other nodes.
    pub fn nearest_nodes(&self, from: u32) -> Vec<u32> {
        self.index_of(from)
            .map(|i| {
                self.nearest_indices(i)
                    .iter()
                    .filter_map(|&j| self.node_at(j))
                    .map(Node::id)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// As [`Topology::nearest_nodes`] but by index and without allocating: the indices
    /// of all nodes ordered by distance from the node at `index` (itself first). Empty
    /// for an index out of range.
    pub fn nearest_indices(&self, index: usize) -> &[usize] {
        self.inner.nearest.get(index).map_or(&[], Vec::as_slice)
    }
}

impl Inner {
    /// Builds the lookup tables of a validated description (see the type's invariants).
    fn assemble(nodes: Vec<Node>, distances: Vec<u32>, source: TopologySource) -> Inner {
        let n = nodes.len();
        let at = |i: usize, j: usize| distances.get(i * n + j).copied().unwrap_or(u32::MAX);
        let nearest = (0..n)
            .map(|i| {
                let mut order: Vec<usize> = (0..n).collect();
                order.sort_by_key(|&j| (at(i, j), j != i, j));
                order
            })
            .collect();
        let max_cpu = nodes.iter().filter_map(|n| n.cpus().last()).max().copied();
        let mut cpu_node = vec![NO_INDEX; max_cpu.map_or(0, |c| c + 1)];
        let max_id = nodes.iter().map(|n| n.id()).max().unwrap_or(0) as usize;
        let mut id_index = vec![NO_INDEX; max_id + 1];
        for (index, node) in (0u32..).zip(&nodes) {
            if let Some(slot) = id_index.get_mut(node.id() as usize) {
                *slot = index;
            }
            for &cpu in node.cpus() {
                if let Some(slot) = cpu_node.get_mut(cpu) {
                    *slot = index;
                }
            }
        }
        Inner {
            nodes,
            distances,
            nearest,
            cpu_node,
            id_index,
            source,
            records: Mutex::new(Records::default()),
            #[cfg(feature = "hwloc")]
            hwloc: None,
        }
    }
}

/// Checks the invariants of [`Inner`] on nodes sorted by id and a row-major matrix.
fn validate(nodes: &[Node], matrix: &[u32]) -> Result<(), TopologyError> {
    let n = nodes.len();
    let mut owner: Vec<Option<u32>> = Vec::new();
    let mut previous: Option<u32> = None;
    for node in nodes {
        if previous == Some(node.id()) {
            return Err(TopologyError::DuplicateNode { node: node.id() });
        }
        previous = Some(node.id());
        if node.id() >= MAX_NODE_ID {
            return Err(TopologyError::NodeIdTooLarge {
                node: node.id(),
                limit: MAX_NODE_ID,
            });
        }
        if let Some(&cpu) = node.cpus().last() {
            if cpu >= MAX_CPU {
                return Err(TopologyError::CpuTooLarge {
                    cpu,
                    limit: MAX_CPU,
                });
            }
            if owner.len() <= cpu {
                owner.resize(cpu + 1, None);
            }
        }
        for &cpu in node.cpus() {
            if let Some(slot) = owner.get_mut(cpu) {
                if let Some(first) = *slot {
                    return Err(TopologyError::CpuInTwoNodes {
                        cpu,
                        first,
                        second: node.id(),
                    });
                }
                *slot = Some(node.id());
            }
        }
    }
    for (i, from) in nodes.iter().enumerate() {
        let row = matrix.get(i * n..(i + 1) * n).unwrap_or(&[]);
        let local = row.get(i).copied().unwrap_or(0);
        for (to, &distance) in nodes.iter().zip(row) {
            if distance == 0 || distance < local || local == 0 {
                return Err(TopologyError::BadDistance {
                    from: from.id(),
                    to: to.id(),
                    distance,
                    local,
                });
            }
        }
    }
    Ok(())
}

impl fmt::Debug for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Topology")
            .field("source", &self.inner.source)
            .field("nodes", &self.inner.nodes)
            .field("distances", &self.distance_matrix())
            .finish_non_exhaustive()
    }
}

/// The node count of a synthetic machine of `nodes` nodes with `cpus_per_node` CPUs each,
/// or why there can be no such machine.
fn synthetic_shape(nodes: usize, cpus_per_node: usize) -> Result<u32, TopologyError> {
    let invalid = |reason| TopologyError::Synthetic {
        nodes,
        cpus_per_node,
        reason,
    };
    if nodes == 0 {
        return Err(invalid("it needs at least one node"));
    }
    let count = u32::try_from(nodes)
        .ok()
        .filter(|&n| n <= MAX_NODE_ID)
        .ok_or_else(|| invalid("node ids must stay below 1024"))?;
    match nodes.checked_mul(cpus_per_node) {
        Some(total) if total <= MAX_CPU => Ok(count),
        _ => Err(invalid("CPU numbers must stay below 65536")),
    }
}
