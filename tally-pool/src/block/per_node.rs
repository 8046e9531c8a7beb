//! `PerNodeBlockPool`: one untyped block pool per NUMA node.

use core::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{registry, BlockPool, BlockPoolConfig, BlockPoolStats};
use crate::error::{CorruptionKind, PoolError};
use crate::numa::{self, Topology};

/// Nodes that get a pool; threads of further nodes use the nearest of these.
const MAX_NODES: usize = 8;

/// Blocks of one layout, from a pool per NUMA node of a topology.
///
/// `allocate` serves the calling thread's node and falls back to the nearest node with
/// room (counted as remote); `free`, from any thread, returns a block to the pool of the
/// node it came from. Each node's chunks are bound to that node before first touch.
///
/// ```
/// use core::alloc::Layout;
/// use tally_pool::block::{BlockPoolConfig, PerNodeBlockPool};
/// use tally_pool::numa::{with_node_override, Topology};
///
/// let topology = Topology::synthetic(2, 1)?;
/// let pool = PerNodeBlockPool::new(BlockPoolConfig::new(Layout::new::<[u64; 4]>()), &topology)?;
/// let block = with_node_override(1, || pool.allocate())?;
/// assert_eq!(pool.node_of(block), Some(1));
/// // SAFETY: allocated above, freed once. From node 0's thread: back to node 1's pool.
/// unsafe { pool.free(block) }?;
/// assert_eq!(pool.node_stats()[1].1.frees, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct PerNodeBlockPool {
    /// Invariant: non-empty; `pools[i]` serves the topology's node index `i`.
    pools: Box<[BlockPool]>,
    remote: Box<[AtomicU64]>,
    topology: Topology,
}

impl PerNodeBlockPool {
    /// A pool per node of `topology` (at most eight), each made from `config` with its
    /// `node` and `topology` set. `capacity` and `max_capacity` apply to each node.
    ///
    /// # Errors
    ///
    /// As [`BlockPool::new`].
    pub fn new(config: BlockPoolConfig, topology: &Topology) -> Result<Self, PoolError> {
        let mut pools = Vec::new();
        for node in topology.nodes().iter().take(MAX_NODES) {
            pools.push(BlockPool::new(
                config.clone().node(node.id()).topology(topology.clone()),
            )?);
        }
        if pools.is_empty() {
            pools.push(BlockPool::new(config.topology(topology.clone()))?);
        }
        let remote = pools.iter().map(|_| AtomicU64::new(0)).collect();
        Ok(Self {
            pools: pools.into_boxed_slice(),
            remote,
            topology: topology.clone(),
        })
    }

    fn home(&self) -> usize {
        let index = numa::current_node_index(&self.topology);
        if index < self.pools.len() {
            return index;
        }
        self.topology
            .nearest_indices(index)
            .iter()
            .copied()
            .find(|&i| i < self.pools.len())
            .unwrap_or(0)
    }

    /// A block from the calling thread's node, or from the nearest node with room.
    ///
    /// # Errors
    ///
    /// [`PoolError::Exhausted`] when every node is at its cap; otherwise as
    /// [`BlockPool::allocate`].
    pub fn allocate(&self) -> Result<NonNull<u8>, PoolError> {
        let home = self.home();
        let Some(pool) = self.pools.get(home) else {
            return Err(self.exhausted());
        };
        match pool.allocate() {
            Err(PoolError::Exhausted { .. }) if self.pools.len() > 1 => {}
            other => return other,
        }
        for &i in self.topology.nearest_indices(home).iter().skip(1) {
            if let (Some(pool), Some(remote)) = (self.pools.get(i), self.remote.get(i)) {
                if let Ok(block) = pool.allocate() {
                    remote.fetch_add(1, Ordering::Relaxed);
                    return Ok(block);
                }
            }
        }
        Err(self.exhausted())
    }

    fn exhausted(&self) -> PoolError {
        PoolError::Exhausted {
            pool: self
                .pools
                .first()
                .map_or_else(String::new, |p| p.name().to_string()),
            max_capacity: self.pools.iter().map(|p| p.stats().max_capacity).sum(),
        }
    }

    /// Returns a block to the pool of the node it came from, from any thread.
    ///
    /// The chunk registry tells which node's pool, if any, holds the pointer; that pool's
    /// [`BlockPool::free`] checks it as for any pool, at the configured guard level.
    ///
    /// # Safety
    ///
    /// As for [`BlockPool::free`], with "this pool" meaning any of the node pools. `block`
    /// must be a block you own (returned by [`Self::allocate`] on this pool, and no `free`
    /// of it has returned `Ok` since); or not the start of a block of any node pool
    /// (refused as foreign or interior, at every guard level); or, under
    /// [`GuardLevel::Canary`] and [`GuardLevel::Full`] only, a block of a node pool that
    /// nobody holds (free, never carved, or in a reclaimed chunk), while no other thread
    /// allocates from this pool until this call returns (refused). Anything else is
    /// undefined behaviour: above all a stale pointer, whose block may have been handed out
    /// again since you freed it, which no guard detects, and under [`GuardLevel::Off`] any
    /// block of a node pool that you do not own.
    ///
    /// [`GuardLevel::Off`]: super::GuardLevel::Off
    /// [`GuardLevel::Canary`]: super::GuardLevel::Canary
    /// [`GuardLevel::Full`]: super::GuardLevel::Full
    ///
    /// # Errors
    ///
    /// As [`BlockPool::free`]; a pointer that none of the node pools owns is a
    /// [`CorruptionKind::ForeignPointer`].
    pub unsafe fn free(&self, block: NonNull<u8>) -> Result<(), PoolError> {
        let addr = block.as_ptr() as usize;
        let owner = registry::owner(addr);
        match self.pools.iter().find(|p| Some(p.shared().slot) == owner) {
            // SAFETY: the caller's contract is `BlockPool::free`'s for every node pool, so
            // for `pool`, the one whose chunk holds `block`.
            Some(pool) => unsafe { pool.free(block) },
            // Let the first pool report (and count) the foreign pointer.
            None => match self.pools.first() {
                // SAFETY: as above, for `pool` too; no node pool owns the chunk of `block`,
                // so `pool` refuses it as foreign without reading it.
                Some(pool) => unsafe { pool.free(block) },
                None => Err(PoolError::Corruption {
                    pool: String::new(),
                    kind: CorruptionKind::ForeignPointer,
                    address: addr,
                }),
            },
        }
    }

    /// The id of the node whose pool `block` belongs to, if any.
    pub fn node_of(&self, block: NonNull<u8>) -> Option<u32> {
        let owner = registry::owner(block.as_ptr() as usize)?;
        self.pools
            .iter()
            .find(|p| p.shared().slot == owner)
            .map(BlockPool::node)
    }

    /// Per node: its id, its pool's counters, and how many of its allocations served
    /// threads of another node (fallback).
    pub fn node_stats(&self) -> Vec<(u32, BlockPoolStats, u64)> {
        self.pools
            .iter()
            .zip(self.remote.iter())
            .map(|(p, r)| (p.node(), p.stats(), r.load(Ordering::Relaxed)))
            .collect()
    }

    /// The counters of all nodes, summed.
    pub fn stats(&self) -> BlockPoolStats {
        let mut total = BlockPoolStats::default();
        for pool in self.pools.iter() {
            total.add(&pool.stats());
        }
        total
    }

    /// The fraction of allocations served by the calling thread's own node.
    pub fn locality(&self) -> f64 {
        let (all, remote) = self
            .node_stats()
            .iter()
            .fold((0, 0), |(a, r), (_, s, rem)| (a + s.allocations, r + rem));
        if all == 0 {
            1.0
        } else {
            (all - remote.min(all)) as f64 / all as f64
        }
    }

    /// Reclaims free chunks of every node; see [`BlockPool::reclaim`].
    pub fn reclaim(&self) -> usize {
        self.pools.iter().map(BlockPool::reclaim).sum()
    }
}
