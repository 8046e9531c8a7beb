//! The hwloc backend (feature `hwloc`): topologies discovered by hwloc, or built from
//! hwloc's synthetic descriptions, turned into the same [`Topology`] value the sysfs
//! backend builds, and thread binding through hwloc.
//!
//! Memory binding stays with `mbind(2)` on both backends: hwlocality's area binding
//! takes a Rust reference to the memory, which a safe `bind(ptr, len, node)` cannot
//! soundly make for an arbitrary address, and on Linux hwloc binds an area with the same
//! `mbind(MPOL_BIND)` call.

use hwlocality::cpu::binding::{CpuBindingError, CpuBindingFlags};
use hwlocality::cpu::cpuset::CpuSet;
use hwlocality::errors::{HybridError, RawHwlocError};
use hwlocality::object::attributes::ObjectAttributes;
use hwlocality::object::types::ObjectType;
use hwlocality::object::TopologyObject;

use super::error::{PinError, TopologyError};
use super::node::{Node, MAX_CPU};
use super::topology::{Topology, TopologySource};

impl Topology {
    /// This machine as hwloc sees it, uncached; binding and pinning on it act on the
    /// machine (threads are pinned through hwloc). [`Topology::system`] uses this first
    /// when the feature `hwloc` is on.
    ///
    /// Node ids are hwloc's OS indexes (the kernel's node numbers), CPUs its PU OS
    /// indexes, memory its `local_memory` (which, unlike sysfs `MemTotal`, leaves out
    /// memory reserved for huge pages), and distances its NUMA latency matrix (10 local
    /// and 20 remote when hwloc has none).
    ///
    /// ```
    /// use tally_pool::numa::Topology;
    ///
    /// let topology = Topology::from_hwloc()?;
    /// assert!(topology.node_count() >= 1);
    /// # Ok::<(), tally_pool::numa::TopologyError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`TopologyError::Hwloc`] when hwloc cannot load the topology, and the shape errors
    /// of [`Topology::from_nodes`] if what it reports is inconsistent.
    pub fn from_hwloc() -> Result<Topology, TopologyError> {
        let hwloc = hwlocality::Topology::new().map_err(|e| TopologyError::Hwloc(e.to_string()))?;
        let (nodes, distances) = describe(&hwloc)?;
        let source = if hwloc.is_this_system() {
            TopologySource::Hwloc
        } else {
            TopologySource::HwlocSynthetic
        };
        Ok(Topology::build(nodes, distances, source)?.with_hwloc(hwloc))
    }

    /// A machine built by hwloc from a synthetic description, such as
    /// `"pack:2 numa:1 core:4 pu:1"` (two packages of one node and four one-PU cores
    /// each). It is not this machine: binding and pinning on it are recorded.
    ///
    /// ```
    /// use tally_pool::numa::Topology;
    ///
    /// let t = Topology::hwloc_synthetic("pack:2 numa:1 core:4 pu:1")?;
    /// assert_eq!(t.node_count(), 2);
    /// assert_eq!(t.nodes()[1].cpus(), &[4, 5, 6, 7]);
    /// # Ok::<(), tally_pool::numa::TopologyError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`TopologyError::Hwloc`] when hwloc rejects the description.
    pub fn hwloc_synthetic(description: &str) -> Result<Topology, TopologyError> {
        let hwloc = hwlocality::Topology::builder()
            .from_synthetic(description)
            .map_err(|e| {
                TopologyError::Hwloc(format!("synthetic description {description:?}: {e}"))
            })?
            .build()
            .map_err(|e| TopologyError::Hwloc(e.to_string()))?;
        let (nodes, distances) = describe(&hwloc)?;
        Topology::build(nodes, distances, TopologySource::HwlocSynthetic)
    }
}

/// Nodes, and distances in their order (`None`: hwloc has no matrix covering them all).
type Description = (Vec<Node>, Option<Vec<Vec<u32>>>);

/// The NUMA nodes and distances of an hwloc topology.
fn describe(hwloc: &hwlocality::Topology) -> Result<Description, TopologyError> {
    let mut nodes = Vec::new();
    for object in hwloc.objects_with_type(ObjectType::NUMANode) {
        let id = object
            .os_index()
            .and_then(|i| u32::try_from(i).ok())
            .ok_or_else(|| TopologyError::Hwloc("a NUMA node has no OS index".into()))?;
        let cpus: Vec<usize> = match object.cpuset() {
            Some(set) => set
                .iter_set()
                .map(usize::from)
                .take_while(|&cpu| cpu < MAX_CPU)
                .collect(),
            None => Vec::new(),
        };
        let memory = match object.attributes() {
            Some(ObjectAttributes::NUMANode(numa)) => numa.local_memory().map_or(0, u64::from),
            _ => 0,
        };
        nodes.push(Node::new(id, cpus, memory));
    }
    if nodes.is_empty() {
        return Err(TopologyError::NoNodes);
    }
    let distances = latency_matrix(hwloc, &nodes);
    Ok((nodes, distances))
}

/// hwloc's first distance matrix that covers every node in `nodes`, rows and columns in
/// their order.
fn latency_matrix(hwloc: &hwlocality::Topology, nodes: &[Node]) -> Option<Vec<Vec<u32>>> {
    let matrices = hwloc.distances(None).ok()?;
    matrices.iter().find_map(|matrix| {
        let objects: Vec<Option<&TopologyObject>> = matrix.objects().collect();
        let position = |id: u32| {
            objects.iter().position(|o| {
                o.is_some_and(|o| {
                    o.object_type() == ObjectType::NUMANode && o.os_index() == Some(id as usize)
                })
            })
        };
        let positions: Vec<usize> = nodes
            .iter()
            .map(|n| position(n.id()))
            .collect::<Option<_>>()?;
        let k = objects.len();
        let values = matrix.distances();
        positions
            .iter()
            .map(|&i| {
                positions
                    .iter()
                    .map(|&j| values.get(i * k + j).and_then(|&d| u32::try_from(d).ok()))
                    .collect::<Option<Vec<u32>>>()
            })
            .collect::<Option<Vec<_>>>()
    })
}

/// Binds the calling thread to `cpus` through hwloc.
pub(super) fn pin_thread(
    hwloc: &hwlocality::Topology,
    cpus: &[usize],
    node: u32,
) -> Result<(), PinError> {
    let set: CpuSet = cpus
        .iter()
        .filter_map(|&cpu| hwlocality::bitmap::BitmapIndex::try_from(cpu).ok())
        .collect();
    hwloc
        .bind_cpu(&set, CpuBindingFlags::THREAD)
        .map_err(|e| pin_error(e, node))
}

/// hwloc's refusal as a [`PinError`]: EPERM and ENOSYS (which hwloc reports as a bad
/// object) say that this machine or sandbox cannot pin threads, as they do without hwloc.
fn pin_error(e: HybridError<CpuBindingError>, node: u32) -> PinError {
    const CALL: &str = "hwloc_set_cpubind";
    match e {
        HybridError::Hwloc(RawHwlocError {
            errno: Some(errno), ..
        }) if errno.0 == libc::EPERM => PinError::NotPermitted { call: CALL },
        HybridError::Rust(CpuBindingError::BadObject(_)) => PinError::Unsupported { call: CALL },
        e => PinError::Hwloc {
            node,
            message: e.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::numa::skip::skip;

    #[test]
    fn hwloc_and_sysfs_describe_this_machine_alike() {
        let sysfs = match Topology::sysfs() {
            Ok(sysfs) => sysfs,
            Err(e) => return skip(format_args!("no sysfs node tree here: {e}")),
        };
        let hwloc = Topology::from_hwloc().unwrap();
        assert_eq!(hwloc.source(), TopologySource::Hwloc);
        let ids = |t: &Topology| t.nodes().iter().map(Node::id).collect::<Vec<_>>();
        let cpus = |t: &Topology| {
            t.nodes()
                .iter()
                .map(|n| n.cpus().to_vec())
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&hwloc), ids(&sysfs));
        assert_eq!(cpus(&hwloc), cpus(&sysfs));
        assert_eq!(hwloc.distance_matrix(), sysfs.distance_matrix());
        for (h, s) in hwloc.nodes().iter().zip(sysfs.nodes()) {
            // hwloc leaves huge-page reservations out of `local_memory`; sysfs counts them.
            assert!(h.memory_bytes() <= s.memory_bytes(), "{h:?} vs {s:?}");
            assert!(h.memory_bytes() >= s.memory_bytes() / 2, "{h:?} vs {s:?}");
        }
    }

    #[test]
    fn synthetic_descriptions_give_the_same_topology_as_ours() {
        let hwloc = Topology::hwloc_synthetic("pack:2 numa:1 core:4 pu:1").unwrap();
        let ours = Topology::synthetic(2, 4).unwrap();
        assert_eq!(hwloc.source(), TopologySource::HwlocSynthetic);
        let ids = |t: &Topology| t.nodes().iter().map(Node::id).collect::<Vec<_>>();
        let cpus = |t: &Topology| {
            t.nodes()
                .iter()
                .map(|n| n.cpus().to_vec())
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&hwloc), ids(&ours));
        assert_eq!(cpus(&hwloc), cpus(&ours));
        assert_eq!(hwloc.distance_matrix(), ours.distance_matrix());
    }

    #[test]
    fn a_bad_description_is_an_error() {
        assert!(matches!(
            Topology::hwloc_synthetic("pack:x"),
            Err(TopologyError::Hwloc(_))
        ));
    }
}
