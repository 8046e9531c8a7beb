//! [`Pool::audit_placement`]: where the kernel says a sample of a typed pool's pages are.

use super::pool::Pool;
use crate::block::facade::{audit_routers, AuditError, PlacementAudit};

impl<T: 'static> Pool<T> {
    /// Asks the kernel where a sample of at most `max_pages` of this pool's touched pages
    /// really are (`move_pages(2)` with no target node, which only reports), spread over
    /// the chunks of all its nodes, and counts those on the node their chunk was bound to.
    ///
    /// The locality counters ([`Pool::locality`], [`Pool::node_stats`]) say which node's
    /// pool served each acquire; this says whether the memory behind them is where the
    /// pool asked the kernel to put it. Pages not yet faulted in are counted apart, never as
    /// misplaced. A pool on a synthetic topology never really binds its chunks, so its
    /// pages are wherever this machine put them.
    ///
    /// It takes the growth lock of each node pool briefly to list its chunks, and makes one
    /// system call; acquires and releases on the fast path never wait for it.
    ///
    /// ```
    /// use tally_pool::{Pool, PoolConfig};
    ///
    /// let pool = Pool::<u64>::new(PoolConfig::new("sampled").capacity(10_000))?;
    /// match pool.audit_placement(32) {
    ///     Ok(audit) => {
    ///         assert!(audit.sampled <= 32);
    ///         assert!(audit.share() > 0.99, "{audit:?}");
    ///     }
    ///     Err(e) => assert!(e.is_unavailable(), "{e}"),
    /// }
    /// # Ok::<(), tally_pool::PoolError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`AuditError::Pool`] with the error that prevented the pool's creation;
    /// [`AuditError::NotPermitted`] or [`AuditError::Unsupported`] where the OS cannot
    /// answer (see [`AuditError::is_unavailable`]); [`AuditError::Os`] for another refusal.
    pub fn audit_placement(&self, max_pages: usize) -> Result<PlacementAudit, AuditError> {
        let inner = self.inner().map_err(AuditError::Pool)?;
        match self.twin_of().and_then(|twin| twin.inner().ok()) {
            Some(twin) => audit_routers(&[&inner.nodes, &twin.nodes], max_pages),
            None => audit_routers(&[&inner.nodes], max_pages),
        }
    }
}

#[cfg(all(test, target_os = "linux", not(miri), not(loom)))]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use crate::numa::Topology;
    use crate::{AuditError, Pool, PoolConfig, PoolError};

    /// The audit, or `None` (after a note) where this OS cannot answer; under `CI` that is
    /// a failure.
    fn audit_or_skip<T: 'static>(
        pool: &Pool<T>,
        max_pages: usize,
    ) -> Option<crate::PlacementAudit> {
        match pool.audit_placement(max_pages) {
            Ok(audit) => Some(audit),
            Err(e) if e.is_unavailable() && std::env::var_os("CI").is_none() => {
                eprintln!("skipped: {e}");
                None
            }
            Err(e) => panic!("audit failed: {e}"),
        }
    }

    #[test]
    fn held_values_are_on_the_pools_node() {
        let pool = Pool::<[u64; 8]>::new(PoolConfig::new("audit-held").capacity(20_000)).unwrap();
        let held: Vec<_> = (0..5_000).map(|_| pool.acquire().unwrap()).collect();
        let Some(audit) = audit_or_skip(pool, 64) else {
            return;
        };
        assert_eq!(audit.sampled, 64);
        assert_eq!(audit.not_faulted + audit.unknown, 0, "{audit:?}");
        if Topology::system().node_count() == 1 {
            let node = Topology::system().node_at(0).map_or(0, |n| n.id());
            assert_eq!(audit.per_node, vec![(node, 64)]);
            assert_eq!(audit.on_intended_node, 64);
            assert_eq!(audit.share(), 1.0);
        }
        drop(held);
    }

    #[test]
    fn a_pool_that_faults_on_use_reports_its_untouched_pages_apart() {
        let pool = Pool::<[[u64; 32]; 16]>::new(
            PoolConfig::new("audit-lazy").capacity(64).prefault(false),
        )
        .unwrap();
        // Each value is written when acquired, so its pages fault in; the rest of the
        // blocks carved with them (a fresh range of the thread's cache) stay untouched.
        let held: Vec<_> = (0..16).map(|_| pool.acquire().unwrap()).collect();
        let Some(audit) = audit_or_skip(pool, usize::MAX) else {
            return;
        };
        assert!(audit.faulted() >= 16, "{audit:?}");
        assert!(audit.not_faulted > 0, "{audit:?}");
        assert_eq!(audit.misplaced(), 0);
        assert_eq!(
            audit.sampled,
            audit.faulted() + audit.not_faulted + audit.unknown
        );
        drop(held);
    }

    #[test]
    fn a_pool_that_failed_to_be_made_says_why() {
        // A static pool whose creation failed: the pool exists and holds the error.
        // Kept in a static, as a derived type keeps its pool, so that the pool a failed
        // creation leaks stays reachable (LeakSanitizer).
        static FAILED: std::sync::OnceLock<&'static Pool<u64>> = std::sync::OnceLock::new();
        let config = PoolConfig::new("audit-failed").capacity(10).max_capacity(5);
        let pool = *FAILED.get_or_init(|| Pool::<u64>::create_static(config, None));
        let failed = pool.inner().err().unwrap();
        assert!(
            matches!(failed, PoolError::InvalidConfig { .. }),
            "{failed}"
        );
        let e = pool.audit_placement(16).unwrap_err();
        assert_eq!(e, AuditError::Pool(failed));
        assert!(!e.is_unavailable());
        assert!(e.to_string().contains(&failed.to_string()), "{e}");
    }
}
