//! Placement audit: where the kernel says a sample of a pool's touched pages are, against
//! the node each pool meant them for (`move_pages(2)` with no target nodes only reports).
//!
//! A pool's touched pages are, per chunk in use, the header's page and every page up to
//! the end of the carved blocks or of what was faulted in ahead, whichever is further. The
//! sample is spread evenly over all of them, chunk after chunk, so a large pool costs one
//! system call of at most `max_pages` addresses. The chunk list is read under the growth
//! lock and the kernel is asked after it is released: the hot path never waits for an
//! audit, and the kernel reads no byte of the pages.

use super::api::BlockPool;
use super::chunk::CHUNK_SIZE;
use super::per_node::PerNodeBlockPool;
use crate::error::PoolError;
use crate::sys;
use crate::sys::placement::{page_status, PageStatus};

/// Where a sample of a pool's pages really are, from
/// [`Pool::audit_placement`](crate::Pool::audit_placement),
/// [`PerNodeBlockPool::audit_placement`] or [`BlockPool::audit_placement`].
///
/// Pages the kernel holds no memory for yet (never written, or given back) are counted in
/// [`not_faulted`](Self::not_faulted), never as misplaced: they will be placed by the
/// pool's binding when first written.
///
/// ```
/// use tally_pool::{Pool, PoolConfig};
///
/// let pool = Pool::<[u64; 8]>::new(PoolConfig::new("audited").capacity(1024))?;
/// let held: Vec<_> = (0..100).map(|_| pool.acquire()).collect::<Result<_, _>>()?;
/// match pool.audit_placement(64) {
///     Ok(audit) => {
///         assert!(audit.sampled > 0 && audit.sampled <= 64);
///         println!("{:.1} % on the intended node", 100.0 * audit.share());
///         for (node, pages) in &audit.per_node {
///             println!("node {node}: {pages} pages");
///         }
///     }
///     // A kernel without NUMA support, or a sandbox that forbids the call.
///     Err(e) if e.is_unavailable() => println!("no audit here: {e}"),
///     Err(e) => return Err(e.into()),
/// }
/// drop(held);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PlacementAudit {
    /// Pages asked about: at most the `max_pages` asked for, and at most the pool's touched
    /// pages.
    pub sampled: usize,
    /// Sampled pages on the node their pool was meant for.
    pub on_intended_node: usize,
    /// Sampled pages with no memory behind them yet (never written, or given back).
    pub not_faulted: usize,
    /// Sampled pages whose node the kernel could not tell for another reason.
    pub unknown: usize,
    /// Faulted-in sampled pages per node id the kernel reported, by node id.
    pub per_node: Vec<(u32, usize)>,
}

impl PlacementAudit {
    /// Sampled pages that are in memory on some node.
    pub fn faulted(&self) -> usize {
        self.per_node.iter().map(|&(_, pages)| pages).sum()
    }

    /// Faulted-in sampled pages on another node than their pool's.
    pub fn misplaced(&self) -> usize {
        self.faulted().saturating_sub(self.on_intended_node)
    }

    /// The share of faulted-in sampled pages that are on their pool's node, from 0.0 to
    /// 1.0; 1.0 when no sampled page is faulted in (nothing is misplaced).
    pub fn share(&self) -> f64 {
        match self.faulted() {
            0 => 1.0,
            faulted => self.on_intended_node as f64 / faulted as f64,
        }
    }

    /// The faulted-in sampled pages the kernel reported on `node`.
    pub fn pages_on(&self, node: u32) -> usize {
        self.per_node
            .iter()
            .find(|&&(n, _)| n == node)
            .map_or(0, |&(_, pages)| pages)
    }

    /// Counts one page meant for `intended`.
    fn count(&mut self, intended: u32, status: PageStatus) {
        self.sampled += 1;
        match status {
            PageStatus::Node(node) => {
                if node == intended {
                    self.on_intended_node += 1;
                }
                match self.per_node.binary_search_by_key(&node, |&(n, _)| n) {
                    Ok(i) => {
                        if let Some(entry) = self.per_node.get_mut(i) {
                            entry.1 += 1;
                        }
                    }
                    Err(i) => self.per_node.insert(i, (node, 1)),
                }
            }
            PageStatus::NotFaulted => self.not_faulted += 1,
            PageStatus::Unknown(_) => self.unknown += 1,
        }
    }
}

/// The kernel could not say where a pool's pages are.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The OS does not allow this process to ask (EPERM), as in some containers (Docker's
    /// default seccomp profile refuses `move_pages`).
    #[error(
        "move_pages is not permitted here (EPERM), as under Docker's default seccomp \
         profile; grant CAP_SYS_NICE or allow move_pages to read the pages' nodes"
    )]
    NotPermitted,
    /// The OS has no NUMA support (ENOSYS: not Linux, a kernel built without NUMA, or a
    /// sandbox that filters the call).
    #[error(
        "move_pages is not available here (ENOSYS); run on a kernel built with NUMA \
         support, outside a sandbox that filters the call, to read the pages' nodes"
    )]
    Unsupported,
    /// The OS refused the call for another reason.
    #[error(
        "move_pages failed: {}; the pages' nodes could not be read this time, audit again",
        std::io::Error::from_raw_os_error(*errno)
    )]
    Os {
        /// Its `errno`.
        errno: i32,
    },
    /// The pool has no pages to audit: its creation failed with this error.
    #[error("the pool could not be created, so it has no pages to audit; fix this first: {0}")]
    Pool(PoolError),
}

impl AuditError {
    /// True when this OS or sandbox cannot answer at all (EPERM or ENOSYS), as opposed to a
    /// failure of this one call.
    ///
    /// ```
    /// use tally_pool::AuditError;
    /// assert!(AuditError::Unsupported.is_unavailable());
    /// assert!(!AuditError::Os { errno: 22 }.is_unavailable());
    /// ```
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::NotPermitted | Self::Unsupported)
    }

    fn from_sys(failed: sys::SysFailed) -> Self {
        match failed.errno {
            libc::EPERM => Self::NotPermitted,
            libc::ENOSYS => Self::Unsupported,
            errno => Self::Os { errno },
        }
    }
}

/// Pages `start..start + pages * PAGE` of one chunk, meant for `node`.
#[derive(Debug, Clone, Copy)]
struct Span {
    node: u32,
    start: usize,
    pages: usize,
}

impl BlockPool {
    /// Asks the kernel where a sample of at most `max_pages` of this pool's touched pages
    /// are, spread over its chunks, and counts those on the pool's node
    /// ([`BlockPool::node`]).
    ///
    /// Only a pool made with a topology of this machine binds its chunks to its node; on a
    /// synthetic topology, or without one, the pages are wherever the kernel put them.
    ///
    /// ```
    /// use core::alloc::Layout;
    /// use tally_pool::block::{BlockPool, BlockPoolConfig};
    ///
    /// let pool = BlockPool::new(BlockPoolConfig::new(Layout::new::<u64>()).capacity(4096))?;
    /// match pool.audit_placement(16) {
    ///     Ok(audit) => assert!(audit.sampled <= 16),
    ///     Err(e) => assert!(e.is_unavailable(), "{e}"),
    /// }
    /// # Ok::<(), tally_pool::PoolError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`AuditError::NotPermitted`] or [`AuditError::Unsupported`] where the OS cannot
    /// answer (see [`AuditError::is_unavailable`]), [`AuditError::Os`] for another refusal.
    pub fn audit_placement(&self, max_pages: usize) -> Result<PlacementAudit, AuditError> {
        let mut spans = Vec::new();
        self.touched_spans(&mut spans);
        audit_spans(&spans, max_pages)
    }

    /// Appends the touched pages of each chunk in use to `spans`.
    fn touched_spans(&self, spans: &mut Vec<Span>) {
        let pool = &*self.shared;
        let geometry = pool.geometry;
        let growth = pool.lock_growth();
        for chunk in growth.chunks.iter().filter(|c| !c.reclaimed) {
            let carved_end = geometry
                .first_offset
                .saturating_add(chunk.carved.saturating_mul(geometry.stride));
            // The header's page is written when the chunk is mapped.
            let end = carved_end.max(chunk.faulted).clamp(1, CHUNK_SIZE);
            spans.push(Span {
                node: pool.node,
                start: chunk.base(),
                pages: end.div_ceil(sys::PAGE),
            });
        }
    }
}

impl PerNodeBlockPool {
    /// [`BlockPool::audit_placement`] over every node pool: at most `max_pages` pages,
    /// spread over all their chunks, each counted against its own pool's node.
    ///
    /// ```
    /// use core::alloc::Layout;
    /// use tally_pool::block::{BlockPoolConfig, PerNodeBlockPool};
    /// use tally_pool::numa::Topology;
    ///
    /// let config = BlockPoolConfig::new(Layout::new::<[u64; 4]>()).capacity(1024);
    /// let pool = PerNodeBlockPool::new(config, Topology::system())?;
    /// if let Ok(audit) = pool.audit_placement(32) {
    ///     assert_eq!(audit.sampled, audit.faulted() + audit.not_faulted + audit.unknown);
    /// }
    /// # Ok::<(), tally_pool::PoolError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`BlockPool::audit_placement`].
    pub fn audit_placement(&self, max_pages: usize) -> Result<PlacementAudit, AuditError> {
        audit_routers(&[self], max_pages)
    }
}

/// [`PerNodeBlockPool::audit_placement`] over the node pools of all of `routers` together:
/// one sample of at most `max_pages` pages.
pub(crate) fn audit_routers(
    routers: &[&PerNodeBlockPool],
    max_pages: usize,
) -> Result<PlacementAudit, AuditError> {
    let mut spans = Vec::new();
    for pool in routers.iter().flat_map(|r| r.pools()) {
        pool.touched_spans(&mut spans);
    }
    audit_spans(&spans, max_pages)
}

/// Samples `min(max_pages, total)` of the pages of `spans` evenly (page `i * total / n` of
/// their concatenation) and asks the kernel where they are.
fn audit_spans(spans: &[Span], max_pages: usize) -> Result<PlacementAudit, AuditError> {
    let total: usize = spans.iter().map(|s| s.pages).sum();
    let n = total.min(max_pages);
    let mut addrs = Vec::with_capacity(n);
    let mut intended = Vec::with_capacity(n);
    let mut spans_left = spans.iter();
    let mut span = spans_left.next();
    // Pages of the spans before `span`.
    let mut before = 0usize;
    for i in 0..n {
        // `i < n <= total`, so the quotient is below `total` and fits.
        let wanted = (i as u128 * total as u128 / n as u128) as usize;
        while let Some(s) = span {
            if wanted < before + s.pages {
                addrs.push(s.start + (wanted - before) * sys::PAGE);
                intended.push(s.node);
                break;
            }
            before += s.pages;
            span = spans_left.next();
        }
    }
    let status = page_status(&addrs).map_err(AuditError::from_sys)?;
    let mut audit = PlacementAudit::default();
    for (&node, &page) in intended.iter().zip(status.iter()) {
        audit.count(node, page);
    }
    Ok(audit)
}

#[cfg(all(test, target_os = "linux", not(miri), not(loom)))]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]

    use core::alloc::Layout;

    use super::*;
    use crate::block::{BlockPoolConfig, GuardLevel};
    use crate::numa::Topology;

    /// The audit, or `None` (after a note) where this OS cannot answer; under `CI` that is
    /// a failure.
    fn audit_or_skip(result: Result<PlacementAudit, AuditError>) -> Option<PlacementAudit> {
        match result {
            Ok(audit) => Some(audit),
            Err(e) if e.is_unavailable() && std::env::var_os("CI").is_none() => {
                eprintln!("skipped: {e}");
                None
            }
            Err(e) => panic!("audit failed: {e}"),
        }
    }

    #[test]
    fn a_prefaulted_pool_is_all_on_its_node() {
        let system = Topology::system();
        let node = system.node_at(0).map_or(0, |n| n.id());
        let pool = BlockPool::new(
            BlockPoolConfig::new(Layout::new::<[u64; 8]>())
                .capacity(50_000)
                .node(node)
                .topology(system.clone()),
        )
        .unwrap();
        let Some(audit) = audit_or_skip(pool.audit_placement(100)) else {
            return;
        };
        assert_eq!(audit.sampled, 100);
        assert_eq!(audit.not_faulted, 0, "{audit:?}");
        assert_eq!(audit.unknown, 0);
        if system.node_count() == 1 {
            assert_eq!(audit.on_intended_node, 100);
            assert_eq!(audit.per_node, vec![(node, 100)]);
            assert_eq!(audit.share(), 1.0);
            assert_eq!(audit.misplaced(), 0);
        }
        assert_eq!(audit.faulted(), 100);
    }

    #[test]
    fn the_sample_is_bounded_by_the_touched_pages() {
        let pool = BlockPool::new(BlockPoolConfig::new(Layout::new::<u64>()).capacity(1)).unwrap();
        let all = audit_or_skip(pool.audit_placement(usize::MAX));
        let Some(all) = all else { return };
        // One chunk, prefaulted a little beyond its one block: a few pages, not 256.
        assert!(all.sampled >= 1 && all.sampled < 256, "{all:?}");
        assert_eq!(pool.audit_placement(0).unwrap(), PlacementAudit::default());
        assert_eq!(pool.audit_placement(0).unwrap().share(), 1.0);
    }

    #[test]
    fn untouched_blocks_count_as_not_faulted_not_misplaced() {
        let pool = BlockPool::new(
            BlockPoolConfig::new(Layout::new::<[u8; 4096]>())
                .capacity(0)
                .guard(GuardLevel::Off)
                .prefault(false),
        )
        .unwrap();
        // Carve blocks into this thread's cache; unguarded, nothing writes them.
        let blocks: Vec<_> = (0..8).map(|_| pool.allocate().unwrap()).collect();
        let Some(audit) = audit_or_skip(pool.audit_placement(usize::MAX)) else {
            return;
        };
        assert!(audit.not_faulted > 0, "{audit:?}");
        assert_eq!(audit.misplaced(), 0);
        assert_eq!(
            audit.sampled,
            audit.faulted() + audit.not_faulted + audit.unknown
        );
        for block in blocks {
            // SAFETY: allocated above, freed once.
            unsafe { pool.free(block) }.unwrap();
        }
    }

    #[test]
    fn a_foreign_page_is_counted_on_its_real_node() {
        // A span meant for a node this machine does not have: nothing is on it.
        let region = sys::map(sys::PAGE).unwrap();
        region.prefault_range(0, sys::PAGE);
        let spans = [Span {
            node: 1 << 20,
            start: region.ptr().as_ptr() as usize,
            pages: 1,
        }];
        let Some(audit) = audit_or_skip(audit_spans(&spans, 8)) else {
            return;
        };
        assert_eq!(audit.sampled, 1);
        assert_eq!(audit.on_intended_node, 0);
        assert_eq!(audit.misplaced(), 1);
        assert_eq!(audit.share(), 0.0);
    }

    #[test]
    fn samples_spread_over_every_span() {
        // Three untouched pages meant for node 0, then five written pages.
        let untouched = sys::map(3 * sys::PAGE).unwrap();
        let written = sys::map(5 * sys::PAGE).unwrap();
        written.prefault_range(0, 5 * sys::PAGE);
        let node = Topology::system().node_at(0).map_or(0, |n| n.id());
        let spans = [
            Span {
                node,
                start: untouched.ptr().as_ptr() as usize,
                pages: 3,
            },
            Span {
                node,
                start: written.ptr().as_ptr() as usize,
                pages: 5,
            },
        ];
        // Pages 0, 2, 4 and 6 of the eight: two of each span.
        let Some(audit) = audit_or_skip(audit_spans(&spans, 4)) else {
            return;
        };
        assert_eq!(audit.sampled, 4);
        assert_eq!(audit.not_faulted, 2, "{audit:?}");
        assert_eq!(audit.faulted(), 2);
        if Topology::system().node_count() == 1 {
            assert_eq!(audit.share(), 1.0);
        }
    }

    #[test]
    fn errors_say_what_the_os_said() {
        let e = AuditError::from_sys(sys::SysFailed {
            call: "move_pages",
            errno: libc::EPERM,
        });
        assert_eq!(e, AuditError::NotPermitted);
        assert!(e.is_unavailable());
        // Each message says what to do.
        assert!(
            e.to_string()
                .contains("grant CAP_SYS_NICE or allow move_pages"),
            "{e}"
        );
        assert!(AuditError::Unsupported
            .to_string()
            .contains("run on a kernel"));
        let e = AuditError::from_sys(sys::SysFailed {
            call: "move_pages",
            errno: libc::EINVAL,
        });
        assert_eq!(
            e,
            AuditError::Os {
                errno: libc::EINVAL
            }
        );
        assert!(!e.is_unavailable());
        assert!(e.to_string().contains("move_pages failed"));
        assert!(e.to_string().contains("audit again"), "{e}");
    }
}
