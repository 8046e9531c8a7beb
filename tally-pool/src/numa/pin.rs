//! Placing threads: [`pin_current_thread`] to a node's CPUs and [`thread_affinity`] to
//! read where the calling thread may run.

use super::current::{refresh_current_node, set_thread_node};
use super::error::PinError;
use super::records::Pinning;
use super::topology::{Topology, TopologySource};
use crate::sys;

/// Restricts the calling thread to the CPUs of node `node` (an id of `topology`), so it
/// runs, and by the kernel's default policy allocates, on that node.
///
/// What happens depends on [`Topology::source`]:
///
/// - this machine: `sched_setaffinity(2)` to the node's cpuset (`Sysfs`) or hwloc's
///   thread binding (`Hwloc`); the thread's cached node is refreshed at once, so the
///   next [`current_node`](super::current_node) reports `node`.
/// - `SingleNode`: accepted and nothing done (the CPU numbers are only a guess).
/// - synthetic: checked, recorded as a [`Pinning`] (see [`Topology::pinnings`]), and the
///   thread's node is forced to `node` with [`set_thread_node`], so that code running on
///   this thread sees itself on `node` of any topology that has it.
///
/// ```
/// use tally_pool::numa::{current_node, pin_current_thread, Topology};
///
/// let topology = Topology::synthetic(4, 2)?;
/// std::thread::spawn(move || {
///     pin_current_thread(&topology, 3).unwrap();
///     assert_eq!(current_node(&topology), 3);
///     assert_eq!(topology.pinnings()[0].node, 3);
/// })
/// .join()
/// .unwrap();
/// # Ok::<(), tally_pool::numa::TopologyError>(())
/// ```
///
/// # Errors
///
/// [`PinError::UnknownNode`] and [`PinError::NoCpus`] (a memory-only node) on any
/// topology; on this machine [`PinError::NotPermitted`] or [`PinError::Unsupported`]
/// when the OS or a sandbox forbids it (see [`PinError::is_unavailable`]), and
/// [`PinError::Os`] otherwise, for example when a cgroup allows none of the node's CPUs.
pub fn pin_current_thread(topology: &Topology, node: u32) -> Result<(), PinError> {
    let Some(target) = topology.node(node) else {
        return Err(PinError::UnknownNode {
            node,
            nodes: topology.node_count(),
        });
    };
    if target.cpus().is_empty() {
        return Err(PinError::NoCpus { node });
    }
    match topology.source() {
        TopologySource::Sysfs => {
            sys::set_thread_affinity(target.cpus()).map_err(PinError::from_sys)?;
            refresh_current_node();
            Ok(())
        }
        #[cfg(feature = "hwloc")]
        TopologySource::Hwloc => {
            match topology.hwloc_topology() {
                Some(hwloc) => super::hwloc::pin_thread(hwloc, target.cpus(), node)?,
                None => sys::set_thread_affinity(target.cpus()).map_err(PinError::from_sys)?,
            }
            refresh_current_node();
            Ok(())
        }
        #[cfg(not(feature = "hwloc"))]
        TopologySource::Hwloc => {
            sys::set_thread_affinity(target.cpus()).map_err(PinError::from_sys)?;
            refresh_current_node();
            Ok(())
        }
        TopologySource::SingleNode => Ok(()),
        _ => {
            let thread = std::thread::current();
            topology.records().pinnings.push(Pinning {
                node,
                thread: thread.id(),
                thread_name: thread.name().map(str::to_owned),
            });
            set_thread_node(Some(node));
            Ok(())
        }
    }
}

/// The CPUs the calling thread may run on, sorted (`sched_getaffinity`).
///
/// ```
/// let cpus = tally_pool::numa::thread_affinity();
/// # #[cfg(target_os = "linux")]
/// assert!(!cpus.unwrap().is_empty());
/// ```
///
/// # Errors
///
/// [`PinError::Unsupported`] where the OS cannot tell (not Linux), [`PinError::Os`] if it
/// refuses.
pub fn thread_affinity() -> Result<Vec<usize>, PinError> {
    sys::thread_affinity().map_err(PinError::from_sys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::numa::skip::skip;

    /// On a one-node machine pinning to node 0 allows every CPU, which would pass even if
    /// nothing happened; so first narrow the thread to one CPU, then check that pinning
    /// to the node widens it to exactly the node's CPUs.
    #[test]
    fn pinning_to_a_node_sets_the_threads_affinity_to_its_cpus() {
        std::thread::spawn(|| {
            let topology = match Topology::sysfs() {
                Ok(topology) => topology,
                Err(e) => return skip(format_args!("no sysfs node tree here: {e}")),
            };
            let node = &topology.nodes()[0];
            let Some(&last) = node.cpus().last() else {
                return skip(format_args!("node {} has no CPUs", node.id()));
            };
            match sys::set_thread_affinity(&[last]) {
                Ok(()) => {}
                Err(e) if matches!(e.errno, libc::EPERM | libc::ENOSYS) => {
                    return skip(format_args!("sched_setaffinity unavailable: {e:?}"));
                }
                Err(e) => panic!("{e:?}"),
            }
            assert_eq!(thread_affinity().unwrap(), vec![last]);
            assert_eq!(sys::current_cpu(), Some(last));

            pin_current_thread(&topology, node.id()).unwrap();
            let allowed = thread_affinity().unwrap();
            let mut expected: Vec<usize> = node.cpus().to_vec();
            // A cgroup may allow fewer CPUs than the node has.
            expected.retain(|c| allowed.contains(c));
            assert_eq!(allowed, expected);
            assert!(allowed.contains(&last));
            assert_eq!(super::super::current_node(&topology), node.id());
        })
        .join()
        .unwrap();
    }

    #[cfg(feature = "hwloc")]
    #[test]
    fn pinning_through_hwloc_sets_the_threads_affinity_too() {
        std::thread::spawn(|| {
            let topology = Topology::from_hwloc().unwrap();
            let node = &topology.nodes()[0];
            let last = *node.cpus().last().unwrap();
            if let Err(e) = sys::set_thread_affinity(&[last]) {
                return skip(format_args!("sched_setaffinity unavailable: {e:?}"));
            }
            pin_current_thread(&topology, node.id()).unwrap();
            let allowed = thread_affinity().unwrap();
            assert!(allowed.len() > 1 || node.cpus().len() == 1, "{allowed:?}");
            assert!(allowed.iter().all(|c| node.cpus().contains(c)));
        })
        .join()
        .unwrap();
    }
}
