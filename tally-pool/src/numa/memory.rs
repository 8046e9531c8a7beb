//! Placing memory on nodes: [`Topology::bind`] (before first touch),
//! [`Topology::node_of_memory`], and the record a synthetic topology keeps instead.

use core::ptr::NonNull;

use super::error::BindError;
use super::records::{Binding, Pinning};
use super::topology::{Topology, TopologySource};
use crate::sys;

impl Topology {
    /// Binds the pages of `ptr..ptr + len` to node `node` (an id from
    /// [`Topology::nodes`]), so that they are allocated there when first touched.
    ///
    /// **Call it before the memory is first touched.** The policy applies to page faults
    /// that happen after the call; pages that already exist stay where they are (no
    /// migration is requested). Map, bind, then prefault or write.
    ///
    /// What happens depends on [`Topology::source`]:
    ///
    /// - this machine (`Sysfs`, `Hwloc`): `mbind(2)` with `MPOL_BIND` and a mask holding
    ///   only `node`. Changing the policy never changes the memory's contents or validity,
    ///   which is why this is a safe function; an unmapped range is refused by the OS.
    /// - `SingleNode`: nothing to choose; accepted without a system call.
    /// - synthetic (`Synthetic`, `SysfsSnapshot`, `HwlocSynthetic`): checked exactly as
    ///   on a real machine, then recorded as a [`Binding`] readable through
    ///   [`Topology::bindings`]; the memory is not touched and need not exist.
    ///
    /// ```
    /// use core::ptr::NonNull;
    /// use tally_pool::numa::{Binding, Topology};
    ///
    /// let topology = Topology::synthetic(2, 1)?;
    /// let chunk = NonNull::new(0x7f00_0000_0000 as *mut u8).unwrap();
    /// topology.bind(chunk, 1 << 20, 1)?;
    /// assert_eq!(
    ///     topology.bindings(),
    ///     [Binding { node: 1, addr: 0x7f00_0000_0000, len: 1 << 20 }]
    /// );
    /// assert_eq!(topology.node_of_memory(chunk)?, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`BindError::UnknownNode`], [`BindError::EmptyRange`] and
    /// [`BindError::Misaligned`] (not on a 4 KiB boundary) for a bad request on any
    /// topology. On this machine, [`BindError::NotPermitted`] or
    /// [`BindError::Unsupported`] when the OS or a sandbox forbids memory policies (see
    /// [`BindError::is_unavailable`]) and [`BindError::Os`] for any other refusal (for
    /// example EINVAL on a system whose pages are larger than 4 KiB and a range not
    /// aligned to them). Never panics.
    pub fn bind(&self, ptr: NonNull<u8>, len: usize, node: u32) -> Result<(), BindError> {
        if self.index_of(node).is_none() {
            return Err(BindError::UnknownNode {
                node,
                nodes: self.node_count(),
            });
        }
        if len == 0 {
            return Err(BindError::EmptyRange);
        }
        let addr = ptr.as_ptr() as usize;
        if addr % sys::PAGE != 0 {
            return Err(BindError::Misaligned {
                addr,
                page: sys::PAGE,
            });
        }
        match self.source() {
            TopologySource::Sysfs | TopologySource::Hwloc => {
                sys::bind_to_node(ptr, len, node).map_err(BindError::from_sys)
            }
            TopologySource::SingleNode => Ok(()),
            _ => {
                self.records().bindings.push(Binding { node, addr, len });
                Ok(())
            }
        }
    }

    /// The node that holds the page at `ptr`.
    ///
    /// On this machine it asks the OS (`get_mempolicy` with `MPOL_F_NODE | MPOL_F_ADDR`),
    /// which faults the page in if needed: a page that was never written reads as the
    /// shared zero page, whose node says nothing about a binding, so write first. On a
    /// single-node fallback it is that node. On a synthetic topology it is the node of the
    /// latest recorded binding that covers `ptr`.
    ///
    /// # Errors
    ///
    /// [`BindError::NotBound`] on a synthetic topology for an address no binding covers;
    /// on this machine [`BindError::NotPermitted`], [`BindError::Unsupported`] or
    /// [`BindError::Os`] (EFAULT for an unmapped address).
    pub fn node_of_memory(&self, ptr: NonNull<u8>) -> Result<u32, BindError> {
        match self.source() {
            TopologySource::Sysfs | TopologySource::Hwloc => {
                let page = ptr.as_ptr() as usize % sys::PAGE;
                let page_start = ptr.as_ptr().wrapping_sub(page);
                let page_start = NonNull::new(page_start).unwrap_or(ptr);
                sys::node_of_page(page_start).map_err(BindError::from_sys)
            }
            TopologySource::SingleNode => Ok(self.nodes().first().map_or(0, |n| n.id())),
            _ => {
                let addr = ptr.as_ptr() as usize;
                self.records()
                    .bindings
                    .iter()
                    .rev()
                    .find(|b| b.contains(addr))
                    .map(|b| b.node)
                    .ok_or(BindError::NotBound { addr })
            }
        }
    }

    /// The bindings this topology recorded, oldest first. Always empty for a topology
    /// of this machine, whose bindings are real (ask [`Topology::node_of_memory`]).
    pub fn bindings(&self) -> Vec<Binding> {
        self.records().bindings.clone()
    }

    /// The thread pinnings this topology recorded, oldest first. Always empty for a
    /// topology of this machine, whose pinnings are real (ask
    /// [`thread_affinity`](super::thread_affinity)).
    pub fn pinnings(&self) -> Vec<Pinning> {
        self.records().pinnings.clone()
    }

    /// Forgets the recorded bindings and pinnings (shared by all clones).
    pub fn clear_records(&self) {
        let mut records = self.records();
        records.bindings.clear();
        records.pinnings.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::numa::skip::skip;

    /// Maps a chunk, binds it to the first node of `topology`, prefaults it and checks that
    /// every page reports that node. Returns false (after a note, or a panic under
    /// `CI=true`) where the OS forbids memory policies.
    fn bind_and_check(topology: &Topology) -> bool {
        let len = 64 * sys::PAGE;
        let region = sys::map(len).unwrap();
        let node = topology.nodes()[0].id();
        match topology.bind(region.ptr(), len, node) {
            Ok(()) => {}
            Err(e) if e.is_unavailable() => {
                skip(format_args!("memory binding is unavailable here: {e}"));
                return false;
            }
            Err(e) => panic!("binding a fresh chunk to node {node} failed: {e}"),
        }
        // On a one-node machine every page is on node 0 anyway; the kernel's own view of
        // the range's policy shows that the binding really happened.
        if let Ok(maps) = std::fs::read_to_string("/proc/self/numa_maps") {
            let start = format!("{:x} ", region.ptr().as_ptr() as usize);
            let line = maps.lines().find(|l| l.starts_with(&start));
            let line = line.unwrap_or_else(|| panic!("no numa_maps line for {start}"));
            let policy = line.split_whitespace().nth(1);
            assert_eq!(policy, Some(format!("bind:{node}").as_str()), "{line}");
        }
        region.prefault(len);
        for page in 0..64 {
            let p = NonNull::new(region.ptr().as_ptr().wrapping_add(page * sys::PAGE)).unwrap();
            assert_eq!(topology.node_of_memory(p).unwrap(), node, "page {page}");
        }
        // An address inside a page answers for its page.
        let inside = NonNull::new(region.ptr().as_ptr().wrapping_add(123)).unwrap();
        assert_eq!(topology.node_of_memory(inside).unwrap(), node);
        assert!(
            topology.bindings().is_empty(),
            "real bindings are not recorded"
        );
        true
    }

    #[test]
    fn a_real_chunk_bound_to_a_node_has_its_pages_there() {
        match Topology::sysfs() {
            Ok(topology) => {
                bind_and_check(&topology);
            }
            Err(e) => skip(format_args!("no sysfs node tree here: {e}")),
        }
    }

    #[test]
    fn binding_is_refused_for_bad_requests_before_any_system_call() {
        let topology = Topology::single_node();
        let region = sys::map(sys::PAGE * 2).unwrap();
        let p = region.ptr();
        assert_eq!(
            topology.bind(p, sys::PAGE, 7),
            Err(BindError::UnknownNode { node: 7, nodes: 1 })
        );
        assert_eq!(topology.bind(p, 0, 0), Err(BindError::EmptyRange));
        let odd = NonNull::new(p.as_ptr().wrapping_add(8)).unwrap();
        assert!(matches!(
            topology.bind(odd, 8, 0),
            Err(BindError::Misaligned { .. })
        ));
        assert_eq!(topology.bind(p, sys::PAGE, 0), Ok(()));
        assert_eq!(topology.node_of_memory(p), Ok(0));
    }

    #[test]
    fn an_unmapped_range_is_an_error_not_a_crash() {
        let topology = match Topology::sysfs() {
            Ok(topology) => topology,
            Err(e) => return skip(format_args!("no sysfs node tree here: {e}")),
        };
        // Not a page this test maps and unmaps: another test's mapping could take it in
        // between. Nothing is mapped at 2^47: mmap hands out addresses below it unless asked
        // for more (and 4-level paging has no user addresses there at all).
        let addr = NonNull::new((1usize << 47) as *mut u8).unwrap();
        let node = topology.nodes()[0].id();
        match topology.bind(addr, sys::PAGE, node) {
            Err(e) if e.is_unavailable() => skip(e),
            Err(BindError::Os { call: "mbind", .. }) => {}
            other => panic!("binding an unmapped range: {other:?}"),
        }
    }

    #[cfg(feature = "hwloc")]
    #[test]
    fn hwloc_sees_the_pages_of_a_chunk_bound_on_its_topology_on_their_node() {
        use hwlocality::memory::binding::MemoryBindingFlags;
        use hwlocality::memory::nodeset::NodeSet;

        let topology = Topology::from_hwloc().unwrap();
        assert_eq!(topology.source(), TopologySource::Hwloc);
        let len = 16 * sys::PAGE;
        let region = sys::map(len).unwrap();
        let node = topology.nodes()[0].id();
        match topology.bind(region.ptr(), len, node) {
            Ok(()) => {}
            Err(e) if e.is_unavailable() => {
                return skip(format_args!("memory binding is unavailable here: {e}"));
            }
            Err(e) => panic!("{e}"),
        }
        region.prefault(len);
        // SAFETY: the region is mapped, `len` bytes long, and nothing else refers to it.
        let bytes = unsafe { core::slice::from_raw_parts(region.ptr().as_ptr(), len) };
        let hwloc = topology.hwloc_topology().unwrap();
        let location: NodeSet = hwloc
            .area_memory_location(bytes, MemoryBindingFlags::empty())
            .unwrap();
        let nodes: Vec<usize> = location.iter_set().map(usize::from).collect();
        assert_eq!(nodes, vec![node as usize]);
    }
}
