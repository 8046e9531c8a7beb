//! NUMA: which nodes a machine has, which node the calling thread is on, and placing
//! memory and threads on nodes.
//!
//! | what | how |
//! |---|---|
//! | describe the machine | [`Topology::system`] (sysfs by default, hwloc with the feature `hwloc`, one node as a fallback) |
//! | describe an imagined machine | [`Topology::synthetic`], [`Topology::synthetic_with_distances`], [`Topology::from_nodes`], [`Topology::from_sysfs`], and with `hwloc` `Topology::hwloc_synthetic` |
//! | bind memory to a node, before first touch | [`Topology::bind`] (`mbind` with `MPOL_BIND`) |
//! | the node holding a page | [`Topology::node_of_memory`] (`get_mempolicy`) |
//! | the calling thread's node | [`current_node`] / [`current_node_index`], cached per thread |
//! | pretend to be on another node (tests) | [`with_node_override`], [`set_thread_node`] |
//! | pin the calling thread to a node | [`pin_current_thread`] |
//! | place a runtime's workers | [`Placement`], with hooks for rayon (`rayon`) and tokio (`tokio`) |
//!
//! On a synthetic topology, binding and pinning are checked exactly as on a real machine
//! and then recorded instead of performed ([`Topology::bindings`],
//! [`Topology::pinnings`]), so tests on a one-node machine can assert what would have
//! been placed where.
//!
//! ```
//! use tally_pool::numa::{current_node, pin_current_thread, Placement, Topology};
//!
//! // The real machine: at least one node, and this thread is on one of them.
//! let system = Topology::system();
//! assert!(system.node(current_node(system)).is_some());
//!
//! // An imagined four-node machine: workers spread over its nodes.
//! let four = Topology::synthetic(4, 2)?;
//! assert_eq!(Placement::spread(&four).assignments(6), vec![0, 1, 2, 3, 0, 1]);
//! std::thread::spawn(move || {
//!     pin_current_thread(&four, 2).unwrap(); // recorded, and this thread now "is" on 2
//!     assert_eq!(current_node(&four), 2);
//! })
//! .join()
//! .unwrap();
//! # Ok::<(), tally_pool::numa::TopologyError>(())
//! ```

mod current;
mod error;
#[cfg(feature = "hwloc")]
mod hwloc;
mod memory;
mod node;
mod pin;
mod placement;
mod records;
#[cfg(test)]
mod skip;
mod sysfs;
mod topology;

pub use current::{
    current_cpu, current_node, current_node_index, refresh_current_node, set_thread_node,
    thread_node_override, with_node_override, REFRESH_INTERVAL,
};
pub use error::{BindError, PinError, TopologyError};
pub use node::{Node, MAX_CPU, MAX_NODE_ID};
pub use pin::{pin_current_thread, thread_affinity};
pub use placement::{Placement, PlacementStrategy, WorkerStart};
pub use records::{Binding, Pinning};
pub use sysfs::parse_cpulist;
pub use topology::{Topology, TopologySource, LOCAL_DISTANCE, REMOTE_DISTANCE};
