//! What a `tally_pool::numa::Topology` says about a machine.
//!
//! - synthetic 2- and 4-node machines: nodes, CPUs, memory, distances, nearest-node
//!   order, the node of a CPU, ids with gaps and memory-only nodes;
//! - supplied distance matrices (two sockets of two nodes) and every invalid description
//!   refused with its own error;
//! - sysfs trees written to a temporary directory (fixtures of a one-node laptop, a
//!   two-socket server with `0-3,8-11`-style cpulists and a four-node machine with SLIT
//!   distances, and broken trees);
//! - this machine: `Topology::system()` agrees with the sysfs tree and never panics;
//! - with the feature `hwloc`, hwloc's synthetic descriptions pass the same checks.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use tally_pool::numa::{
    parse_cpulist, Node, Topology, TopologyError, TopologySource, LOCAL_DISTANCE, REMOTE_DISTANCE,
};

use common::skip::skip;

/// Node ids in order.
fn ids(t: &Topology) -> Vec<u32> {
    t.nodes().iter().map(Node::id).collect()
}

/// The checks every two-node, four-CPUs-per-node topology passes, whatever built it.
fn check_two_by_four(t: &Topology) {
    assert_eq!(t.node_count(), 2);
    assert_eq!(ids(t), vec![0, 1]);
    assert_eq!(t.nodes()[0].cpus(), &[0, 1, 2, 3]);
    assert_eq!(t.nodes()[1].cpus(), &[4, 5, 6, 7]);
    assert_eq!(t.cpu_count(), 8);
    for cpu in 0..4 {
        assert_eq!(t.node_of_cpu(cpu), Some(0));
        assert_eq!(t.index_of_cpu(cpu), Some(0));
    }
    for cpu in 4..8 {
        assert_eq!(t.node_of_cpu(cpu), Some(1));
    }
    assert_eq!(t.node_of_cpu(8), None);
    assert_eq!(t.node_of_cpu(usize::MAX), None);
    assert_eq!(t.distance(0, 0), Some(LOCAL_DISTANCE));
    assert_eq!(t.distance(1, 1), Some(LOCAL_DISTANCE));
    assert!(t.distance(0, 1).unwrap() > LOCAL_DISTANCE);
    assert_eq!(t.distance(0, 1), t.distance(1, 0));
    assert_eq!(t.distance(0, 2), None);
    assert_eq!(t.nearest_nodes(0), vec![0, 1]);
    assert_eq!(t.nearest_nodes(1), vec![1, 0]);
    assert_eq!(t.nearest_nodes(2), Vec::<u32>::new());
    assert_eq!(t.nearest_indices(1), &[1, 0]);
    assert!(!t.source().is_this_machine());
}

#[test]
fn a_synthetic_two_node_machine() {
    let t = Topology::synthetic(2, 4).unwrap();
    check_two_by_four(&t);
    assert_eq!(t.source(), TopologySource::Synthetic);
    assert_eq!(t.distance(0, 1), Some(REMOTE_DISTANCE));
    assert!(t.nodes().iter().all(|n| n.memory_bytes() == 1 << 30));
    assert_eq!(t.distance_matrix(), vec![vec![10, 20], vec![20, 10]]);
}

#[test]
fn a_synthetic_four_node_machine() {
    let t = Topology::synthetic(4, 2).unwrap();
    assert_eq!(ids(&t), vec![0, 1, 2, 3]);
    assert_eq!(t.cpu_count(), 8);
    for cpu in 0..8 {
        assert_eq!(t.node_of_cpu(cpu), Some(cpu as u32 / 2), "cpu {cpu}");
    }
    for from in 0..4u32 {
        for to in 0..4u32 {
            let expected = if from == to { 10 } else { 20 };
            assert_eq!(t.distance(from, to), Some(expected));
        }
        // Itself first, then the others (all at 20) by id.
        let mut expected = vec![from];
        expected.extend((0..4).filter(|&n| n != from));
        assert_eq!(t.nearest_nodes(from), expected);
    }
    assert_eq!(t.index_of(3), Some(3));
    assert_eq!(t.index_of(4), None);
    assert_eq!(t.node(2).unwrap().cpus(), &[4, 5]);
    assert!(t.node(9).is_none());
}

#[test]
fn supplied_distances_order_the_nearest_nodes() {
    // Two sockets, two nodes each: the sibling is at 12, the other socket at 32.
    let t = Topology::synthetic_with_distances(
        1,
        vec![
            vec![10, 12, 32, 32],
            vec![12, 10, 32, 32],
            vec![32, 32, 10, 12],
            vec![32, 32, 12, 10],
        ],
    )
    .unwrap();
    assert_eq!(t.nearest_nodes(0), vec![0, 1, 2, 3]);
    assert_eq!(t.nearest_nodes(1), vec![1, 0, 2, 3]);
    assert_eq!(t.nearest_nodes(2), vec![2, 3, 0, 1]);
    assert_eq!(t.nearest_nodes(3), vec![3, 2, 0, 1]);
    assert_eq!(t.distance(3, 0), Some(32));

    // Asymmetric and uneven: the order follows the row of the node asked about.
    let t = Topology::synthetic_with_distances(
        2,
        vec![vec![10, 40, 15], vec![25, 10, 30], vec![15, 40, 10]],
    )
    .unwrap();
    assert_eq!(t.nearest_nodes(0), vec![0, 2, 1]);
    assert_eq!(t.nearest_nodes(1), vec![1, 0, 2]);
    assert_eq!(t.nearest_nodes(2), vec![2, 0, 1]);
}

#[test]
fn ids_with_gaps_and_memory_only_nodes() {
    // Given out of order: node 4 is memory only (CXL-style), node 2 has the CPUs 4-5.
    let t = Topology::from_nodes(
        vec![
            Node::new(4, [], 64 << 30),
            Node::new(0, [0, 1, 2, 3], 16 << 30),
            Node::new(2, [5, 4], 16 << 30),
        ],
        Some(vec![
            vec![10, 30, 25], // from node 4 (order as given)
            vec![30, 10, 20], // from node 0
            vec![25, 20, 10], // from node 2
        ]),
    )
    .unwrap();
    assert_eq!(ids(&t), vec![0, 2, 4]);
    assert_eq!(t.index_of(0), Some(0));
    assert_eq!(t.index_of(1), None);
    assert_eq!(t.index_of(2), Some(1));
    assert_eq!(t.index_of(4), Some(2));
    assert_eq!(t.node(2).unwrap().cpus(), &[4, 5]);
    assert!(t.node(4).unwrap().cpus().is_empty());
    assert_eq!(t.node_of_cpu(5), Some(2));
    assert_eq!(t.cpu_count(), 6);
    // The matrix followed the nodes when they were sorted.
    assert_eq!(t.distance(4, 0), Some(30));
    assert_eq!(t.distance(0, 4), Some(30));
    assert_eq!(t.distance(2, 4), Some(25));
    assert_eq!(t.distance(0, 2), Some(20));
    assert_eq!(
        t.distance_matrix(),
        vec![vec![10, 20, 30], vec![20, 10, 25], vec![30, 25, 10]]
    );
    assert_eq!(t.nearest_nodes(4), vec![4, 2, 0]);
    assert_eq!(t.nearest_indices(2), &[2, 1, 0]);
}

#[test]
fn invalid_descriptions_are_refused_with_their_reason() {
    assert!(matches!(
        Topology::synthetic(0, 4),
        Err(TopologyError::Synthetic { nodes: 0, .. })
    ));
    assert!(matches!(
        Topology::synthetic(2000, 1),
        Err(TopologyError::Synthetic { .. })
    ));
    assert!(matches!(
        Topology::synthetic(2, usize::MAX),
        Err(TopologyError::Synthetic { .. })
    ));
    // Refused before the distance matrix is built, whose size would overflow.
    for nodes in [1 << 40, usize::MAX] {
        assert!(matches!(
            Topology::synthetic(nodes, 1),
            Err(TopologyError::Synthetic { .. })
        ));
    }
    assert!(matches!(
        Topology::from_nodes(vec![], None),
        Err(TopologyError::NoNodes)
    ));
    assert!(matches!(
        Topology::from_nodes(vec![Node::new(1, [0], 0), Node::new(1, [1], 0)], None),
        Err(TopologyError::DuplicateNode { node: 1 })
    ));
    assert!(matches!(
        Topology::from_nodes(vec![Node::new(5000, [0], 0)], None),
        Err(TopologyError::NodeIdTooLarge { node: 5000, .. })
    ));
    assert!(matches!(
        Topology::from_nodes(vec![Node::new(0, [0, 1], 0), Node::new(1, [1, 2], 0)], None),
        Err(TopologyError::CpuInTwoNodes {
            cpu: 1,
            first: 0,
            second: 1
        })
    ));
    assert!(matches!(
        Topology::from_nodes(vec![Node::new(0, [1 << 20], 0)], None),
        Err(TopologyError::CpuTooLarge { .. })
    ));
    let two = || vec![Node::new(0, [0], 0), Node::new(1, [1], 0)];
    assert!(matches!(
        Topology::from_nodes(two(), Some(vec![vec![10, 20]])),
        Err(TopologyError::DistanceShape { nodes: 2, .. })
    ));
    assert!(matches!(
        Topology::from_nodes(two(), Some(vec![vec![10, 20], vec![20]])),
        Err(TopologyError::DistanceShape { row: 1, len: 1, .. })
    ));
    assert!(matches!(
        Topology::from_nodes(two(), Some(vec![vec![10, 0], vec![20, 10]])),
        Err(TopologyError::BadDistance { from: 0, to: 1, .. })
    ));
    assert!(matches!(
        Topology::from_nodes(two(), Some(vec![vec![10, 20], vec![5, 10]])),
        Err(TopologyError::BadDistance { from: 1, to: 0, .. })
    ));
    // The messages say what to do.
    let e =
        Topology::from_nodes(vec![Node::new(0, [3], 0), Node::new(1, [3], 0)], None).unwrap_err();
    assert_eq!(
        e.to_string(),
        "CPU 3 is listed in node 0 and in node 1; a CPU belongs to one node"
    );
}

#[test]
fn single_node_holds_every_cpu() {
    let t = Topology::single_node();
    assert_eq!(t.source(), TopologySource::SingleNode);
    assert!(t.source().is_this_machine());
    assert_eq!(ids(&t), vec![0]);
    let cpus = std::thread::available_parallelism().unwrap().get();
    assert_eq!(t.nodes()[0].cpus(), (0..cpus).collect::<Vec<_>>());
    assert_eq!(t.nearest_nodes(0), vec![0]);
    assert_eq!(t.distance(0, 0), Some(10));
}

#[test]
fn cpulists_in_the_kernel_format() {
    assert_eq!(parse_cpulist("0-1\n"), Some(vec![0, 1]));
    assert_eq!(
        parse_cpulist("0-3,8-11"),
        Some(vec![0, 1, 2, 3, 8, 9, 10, 11])
    );
    assert_eq!(parse_cpulist("0,2,4,6"), Some(vec![0, 2, 4, 6]));
    assert_eq!(parse_cpulist("16-23,48-55\n").unwrap().len(), 16);
    assert_eq!(parse_cpulist("\n"), Some(vec![]));
    assert_eq!(parse_cpulist("1-1"), Some(vec![1]));
    for bad in ["0-", "-3", "3-1", "x", "0,,1", "0-3:1/2", "0 1", "999999"] {
        assert_eq!(parse_cpulist(bad), None, "{bad:?}");
    }
    // Overlaps and repeats name each CPU once, and cost no more than the CPUs they name:
    // 160 KB of text naming every CPU 20,000 times makes one list of 65,536.
    assert_eq!(
        parse_cpulist("4-7,0-5,6,2,9,9"),
        Some(vec![0, 1, 2, 3, 4, 5, 6, 7, 9])
    );
    let every = "0-65535,".repeat(20_000) + "0";
    assert_eq!(parse_cpulist(&every), Some((0..65_536).collect::<Vec<_>>()));
}

// --- sysfs trees ---------------------------------------------------------------------

/// A fresh directory under the system's temp dir, removed when dropped.
struct TempTree(PathBuf);

impl TempTree {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "tally-pool-numa-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    /// Writes `node<id>/{cpulist,distance,meminfo}`; `None` leaves a file out.
    fn node(&self, id: u32, cpulist: Option<&str>, distance: Option<&str>, meminfo: Option<&str>) {
        let dir = self.0.join(format!("node{id}"));
        fs::create_dir_all(&dir).unwrap();
        for (file, text) in [
            ("cpulist", cpulist),
            ("distance", distance),
            ("meminfo", meminfo),
        ] {
            if let Some(text) = text {
                fs::write(dir.join(file), text).unwrap();
            }
        }
    }

    /// Files that sit beside the node directories in the real tree.
    fn decoys(&self) {
        for file in ["online", "possible", "has_cpu", "has_memory", "uevent"] {
            fs::write(self.0.join(file), "0\n").unwrap();
        }
        fs::create_dir_all(self.0.join("power")).unwrap();
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempTree {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn meminfo(node: u32, kb: u64) -> String {
    format!(
        "Node {node} MemTotal:       {kb} kB\nNode {node} MemFree:        1000 kB\n\
         Node {node} MemUsed:        {} kB\nNode {node} HugePages_Total:     0\n",
        kb - 1000
    )
}

#[test]
fn a_one_node_sysfs_tree() {
    let tree = TempTree::new("laptop");
    tree.decoys();
    tree.node(0, Some("0-1\n"), Some("10\n"), Some(&meminfo(0, 9_529_548)));
    let t = Topology::from_sysfs(tree.path()).unwrap();
    assert_eq!(t.source(), TopologySource::SysfsSnapshot);
    assert!(!t.source().is_this_machine());
    assert_eq!(ids(&t), vec![0]);
    assert_eq!(t.nodes()[0].cpus(), &[0, 1]);
    assert_eq!(t.nodes()[0].memory_bytes(), 9_529_548 * 1024);
    assert_eq!(t.distance_matrix(), vec![vec![10]]);
}

#[test]
fn a_two_socket_sysfs_tree_with_interleaved_cpus() {
    let tree = TempTree::new("two-socket");
    tree.decoys();
    tree.node(
        0,
        Some("0-3,8-11\n"),
        Some("10 21\n"),
        Some(&meminfo(0, 4 << 20)),
    );
    tree.node(
        1,
        Some("4-7,12-15\n"),
        Some("21 10\n"),
        Some(&meminfo(1, 4 << 20)),
    );
    let t = Topology::from_sysfs(tree.path()).unwrap();
    assert_eq!(ids(&t), vec![0, 1]);
    assert_eq!(t.nodes()[0].cpus(), &[0, 1, 2, 3, 8, 9, 10, 11]);
    assert_eq!(t.nodes()[1].cpus(), &[4, 5, 6, 7, 12, 13, 14, 15]);
    assert_eq!(t.node_of_cpu(9), Some(0));
    assert_eq!(t.node_of_cpu(12), Some(1));
    assert_eq!(t.distance(0, 1), Some(21));
    assert_eq!(t.nodes()[1].memory_bytes(), 4 << 30);
}

#[test]
fn a_four_node_sysfs_tree_with_slit_distances() {
    let tree = TempTree::new("four-node");
    let rows = ["10 16 32 32", "16 10 32 32", "32 32 10 16", "32 32 16 10"];
    // Written out of order, and with node 10 rather than 3: directory order and id
    // gaps must not matter.
    for (id, row) in [(10u32, rows[3]), (0, rows[0]), (2, rows[2]), (1, rows[1])] {
        let first = match id {
            10 => 6,
            other => other as usize * 2,
        };
        let cpus = format!("{}-{}\n", first, first + 1);
        tree.node(
            id,
            Some(&cpus),
            Some(&format!("{row}\n")),
            Some(&meminfo(id, 1 << 20)),
        );
    }
    let t = Topology::from_sysfs(tree.path()).unwrap();
    assert_eq!(ids(&t), vec![0, 1, 2, 10]);
    assert_eq!(t.node_of_cpu(7), Some(10));
    assert_eq!(t.distance(0, 1), Some(16));
    assert_eq!(t.distance(10, 2), Some(16));
    assert_eq!(t.distance(10, 0), Some(32));
    assert_eq!(t.nearest_nodes(2), vec![2, 10, 0, 1]);
    assert_eq!(t.nearest_nodes(0), vec![0, 1, 2, 10]);
}

#[test]
fn a_memory_only_node_in_sysfs() {
    let tree = TempTree::new("cxl");
    tree.node(
        0,
        Some("0-1\n"),
        Some("10 20\n"),
        Some(&meminfo(0, 1 << 20)),
    );
    tree.node(1, Some("\n"), Some("20 10\n"), None);
    let t = Topology::from_sysfs(tree.path()).unwrap();
    assert!(t.node(1).unwrap().cpus().is_empty());
    assert_eq!(t.node(1).unwrap().memory_bytes(), 0, "no meminfo: unknown");
}

#[test]
fn broken_sysfs_trees_are_errors_not_panics() {
    let missing = Topology::from_sysfs("/nonexistent/tally-pool/node");
    assert!(
        matches!(missing, Err(TopologyError::Io { .. })),
        "{missing:?}"
    );

    let tree = TempTree::new("empty");
    tree.decoys();
    assert!(matches!(
        Topology::from_sysfs(tree.path()),
        Err(TopologyError::NoNodes)
    ));

    let tree = TempTree::new("bad-cpulist");
    tree.node(0, Some("0-x\n"), Some("10\n"), None);
    let e = Topology::from_sysfs(tree.path()).unwrap_err();
    assert!(matches!(e, TopologyError::Parse { .. }), "{e:?}");
    assert!(e.to_string().contains("cpulist"), "{e}");

    let tree = TempTree::new("no-distance");
    tree.node(0, Some("0\n"), None, None);
    assert!(matches!(
        Topology::from_sysfs(tree.path()),
        Err(TopologyError::Io { .. })
    ));

    let tree = TempTree::new("short-row");
    tree.node(0, Some("0\n"), Some("10\n"), None);
    tree.node(1, Some("1\n"), Some("20 10\n"), None);
    assert!(matches!(
        Topology::from_sysfs(tree.path()),
        Err(TopologyError::DistanceShape { .. })
    ));

    let tree = TempTree::new("bad-meminfo");
    tree.node(
        0,
        Some("0\n"),
        Some("10\n"),
        Some("Node 0 MemTotal: lots kB\n"),
    );
    assert!(matches!(
        Topology::from_sysfs(tree.path()),
        Err(TopologyError::Parse { .. })
    ));

    let tree = TempTree::new("shared-cpu");
    tree.node(0, Some("0-1\n"), Some("10 20\n"), None);
    tree.node(1, Some("1-2\n"), Some("20 10\n"), None);
    assert!(matches!(
        Topology::from_sysfs(tree.path()),
        Err(TopologyError::CpuInTwoNodes { cpu: 1, .. })
    ));
}

// --- this machine --------------------------------------------------------------------

#[test]
fn the_system_topology_is_this_machine_and_never_panics() {
    let t = Topology::system();
    assert!(t.node_count() >= 1);
    assert!(t.source().is_this_machine());
    assert!(std::ptr::eq(t, Topology::system()), "cached");
    match Topology::system_fallback_reason() {
        Some(reason) => {
            assert_eq!(t.source(), TopologySource::SingleNode);
            skip(format_args!("this machine fell back to one node: {reason}"));
        }
        None => {
            // Every CPU this thread may run on belongs to a node.
            if let Ok(cpus) = tally_pool::numa::thread_affinity() {
                for cpu in cpus {
                    assert!(t.node_of_cpu(cpu).is_some(), "cpu {cpu} has no node");
                }
            }
        }
    }
    for node in t.nodes() {
        assert_eq!(t.distance(node.id(), node.id()), Some(LOCAL_DISTANCE));
        assert_eq!(t.nearest_nodes(node.id())[0], node.id());
    }
}

#[cfg(target_os = "linux")]
#[test]
fn sysfs_reads_this_machine_like_the_kernel_lists_it() {
    let t = Topology::sysfs().unwrap();
    assert_eq!(t.source(), TopologySource::Sysfs);
    let online = fs::read_to_string("/sys/devices/system/node/online").unwrap();
    assert_eq!(
        ids(&t).iter().map(|&n| n as usize).collect::<Vec<_>>(),
        parse_cpulist(&online).unwrap()
    );
    let cpus: usize = t.nodes().iter().map(|n| n.cpus().len()).sum();
    assert!(cpus >= 1);
    assert!(t.nodes().iter().any(|n| n.memory_bytes() > 0));
    // Without the hwloc feature the cached system topology is this one.
    #[cfg(not(feature = "hwloc"))]
    assert_eq!(Topology::system().nodes(), t.nodes());
}

#[test]
fn clones_share_everything() {
    let t = Topology::synthetic(2, 1).unwrap();
    let c = t.clone();
    let p = std::ptr::NonNull::new(0x10_0000 as *mut u8).unwrap();
    c.bind(p, 4096, 1).unwrap();
    assert_eq!(t.bindings().len(), 1);
    assert!(format!("{t:?}").contains("Synthetic"));
}

// --- hwloc -------------------------------------------------------------------------

#[cfg(feature = "hwloc")]
#[test]
fn hwloc_synthetic_descriptions_pass_the_same_checks() {
    let t = Topology::hwloc_synthetic("pack:2 numa:1 core:4 pu:1").unwrap();
    assert_eq!(t.source(), TopologySource::HwlocSynthetic);
    check_two_by_four(&t);
    let ours = Topology::synthetic(2, 4).unwrap();
    check_two_by_four(&ours);
    assert_eq!(t.distance_matrix(), ours.distance_matrix());

    let four = Topology::hwloc_synthetic("pack:4 numa:1 core:2 pu:1").unwrap();
    assert_eq!(ids(&four), vec![0, 1, 2, 3]);
    for cpu in 0..8 {
        assert_eq!(four.node_of_cpu(cpu), Some(cpu as u32 / 2));
    }
}

#[cfg(all(feature = "hwloc", target_os = "linux"))]
#[test]
fn hwloc_and_sysfs_agree_on_this_machine() {
    let hwloc = Topology::from_hwloc().unwrap();
    let sysfs = Topology::sysfs().unwrap();
    assert_eq!(hwloc.source(), TopologySource::Hwloc);
    assert_eq!(Topology::system().source(), TopologySource::Hwloc);
    assert_eq!(ids(&hwloc), ids(&sysfs));
    for (h, s) in hwloc.nodes().iter().zip(sysfs.nodes()) {
        assert_eq!(h.cpus(), s.cpus());
        // hwloc leaves huge-page reservations out; sysfs MemTotal counts them.
        assert!(h.memory_bytes() <= s.memory_bytes());
    }
    assert_eq!(hwloc.distance_matrix(), sysfs.distance_matrix());
}
