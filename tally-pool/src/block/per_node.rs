//! `PerNodeBlockPool`: one block pool per NUMA node, and the routing between them.
//!
//! This is the one per-node router of the crate: `PerNodeBlockPool` serves users of the
//! block layer, and every typed pool keeps one (through the `facade`) for its nodes. It
//! picks the calling thread's node, falls back to the nearest node with room, counts
//! what crossed nodes, and tells which node a block belongs to.

use core::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use super::api::BlockPool;
use super::chunk::header::ChunkHeader;
use super::chunk::registry;
use super::config::BlockPoolConfig;
use super::stats::BlockPoolStats;
use crate::error::{CorruptionKind, PoolError, PoolName};
use crate::numa::{self, Topology};

/// Nodes that get a pool; threads of further nodes use the nearest of these. A typed
/// pool's raw handles name a node in 3 bits, which this bounds.
pub(crate) const MAX_NODES: usize = 8;

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
    /// Invariant: non-empty, at most [`MAX_NODES`] long; `pools[i]` serves the topology's
    /// node index `i`, or, for a router made with one pool for every node, every node.
    pools: Box<[BlockPool]>,
    /// Per pool: allocations it served for a thread of another node whose pool was full.
    remote: Box<[AtomicU64]>,
    /// Per pool: frees of its blocks by threads of another node, for callers that count
    /// them ([`Self::count_free_from`]).
    cross_node_frees: Box<[AtomicU64]>,
    /// Allocations refused because every node pool was at its cap (with several node
    /// pools; with one, that pool's own count is the router's, see [`Self::refusals`]).
    exhausted: AtomicU64,
    topology: Topology,
}

/// One node's counts, as [`PerNodeBlockPool::node_counts`] reports them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NodeCounts {
    /// The node's id.
    pub(crate) node: u32,
    /// The node pool's counters.
    pub(crate) blocks: BlockPoolStats,
    /// Allocations it served for a thread of another node whose pool was full.
    pub(crate) remote_allocations: u64,
    /// Frees of its blocks by threads of another node, where counted.
    pub(crate) cross_node_frees: u64,
}

impl PerNodeBlockPool {
    /// A pool per node of `topology` (at most eight), each made from `config` with its
    /// `node` and `topology` set. `capacity` and `max_capacity` apply to each node. Each
    /// node pool joins the statistics registry as a component of kind `block`, as
    /// [`BlockPool::new`] does.
    ///
    /// # Errors
    ///
    /// As [`BlockPool::new`].
    pub fn new(config: BlockPoolConfig, topology: &Topology) -> Result<Self, PoolError> {
        let ids: Vec<u32> = topology
            .nodes()
            .iter()
            .take(MAX_NODES)
            .map(|n| n.id())
            .collect();
        let router = Self::with_nodes(config, topology, &ids)?;
        for pool in router.pools.iter() {
            pool.shared.list();
        }
        Ok(router)
    }

    /// A pool for each of the nodes `ids` of `topology` (the first [`MAX_NODES`]), made
    /// from `config` with its `node` and `topology` set; with one id, that node's pool
    /// serves every thread. With none, one pool made from `config` with only its topology
    /// set. The node pools are not listed in the statistics registry: the caller lists
    /// what it builds on them.
    pub(crate) fn with_nodes(
        config: BlockPoolConfig,
        topology: &Topology,
        ids: &[u32],
    ) -> Result<Self, PoolError> {
        let mut pools = Vec::new();
        for &id in ids.iter().take(MAX_NODES) {
            pools.push(BlockPool::new_unlisted(
                config.clone().node(id).topology(topology.clone()),
            )?);
        }
        if pools.is_empty() {
            pools.push(BlockPool::new_unlisted(config.topology(topology.clone()))?);
        }
        let counters = || pools.iter().map(|_| AtomicU64::new(0)).collect();
        Ok(Self {
            remote: counters(),
            cross_node_frees: counters(),
            exhausted: AtomicU64::new(0),
            pools: pools.into_boxed_slice(),
            topology: topology.clone(),
        })
    }

    /// The index of the pool that serves the calling thread: its node's, else the
    /// nearest node's that has a pool.
    #[inline]
    pub(crate) fn thread_index(&self) -> usize {
        if self.pools.len() == 1 {
            return 0;
        }
        let index = numa::current_node_index(&self.topology);
        if index < self.pools.len() {
            return index;
        }
        // A node beyond the ones with pools: the nearest one that has a pool.
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
    /// [`PoolError::Exhausted`] when every node is at its cap;
    /// [`PoolError::Pressure`] when the thread's node refuses to grow under critical
    /// pressure and no other node has a free block; otherwise as [`BlockPool::allocate`].
    pub fn allocate(&self) -> Result<NonNull<u8>, PoolError> {
        let home = self.thread_index();
        let Some(pool) = self.pools.get(home) else {
            return Err(self.exhausted());
        };
        // A node that refuses to grow under pressure lets the others serve what they hold;
        // if none can, the caller hears of the pressure rather than of the cap.
        let mut refused = None;
        match pool.allocate() {
            Err(PoolError::Exhausted { .. }) if self.pools.len() > 1 => {}
            Err(e @ PoolError::Pressure { .. }) if self.pools.len() > 1 => refused = Some(e),
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
        match refused {
            Some(e) => Err(e),
            None => Err(self.exhausted()),
        }
    }

    /// The error for an allocation every node pool refused, counted.
    fn exhausted(&self) -> PoolError {
        self.exhausted.fetch_add(1, Ordering::Relaxed);
        PoolError::Exhausted {
            pool: self
                .pools
                .first()
                .map_or_else(PoolName::default, BlockPool::error_name),
            max_capacity: self
                .pools
                .iter()
                .map(|p| p.shared.max_capacity)
                .fold(0, usize::saturating_add),
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
        match self.index_of_pointer(addr).and_then(|i| self.pools.get(i)) {
            // SAFETY: the caller's contract is `BlockPool::free`'s for every node pool, so
            // for `pool`, the one whose chunk holds `block`.
            Some(pool) => unsafe { pool.free(block) },
            // Let the first pool report (and count) the foreign pointer.
            None => match self.pools.first() {
                // SAFETY: as above, for `pool` too; no node pool owns the chunk of `block`,
                // so `pool` refuses it as foreign without reading it.
                Some(pool) => unsafe { pool.free(block) },
                None => Err(PoolError::Corruption {
                    pool: PoolName::default(),
                    kind: CorruptionKind::ForeignPointer,
                    address: addr,
                }),
            },
        }
    }

    /// The index of the node pool whose chunk holds `addr`, if any: any address, from the
    /// chunk registry alone.
    fn index_of_pointer(&self, addr: usize) -> Option<usize> {
        let owner = registry::owner(addr)?;
        self.pools.iter().position(|p| p.shared.slot == owner)
    }

    /// The index of the node pool a block belongs to, from its chunk header.
    ///
    /// # Safety
    ///
    /// `block` is a block that one of the node pools handed out and that is not freed.
    #[inline]
    pub(crate) unsafe fn index_of_block(&self, block: NonNull<u8>) -> Option<usize> {
        if self.pools.len() == 1 {
            return Some(0);
        }
        // SAFETY: `block` lies in a chunk of one of the node pools (caller), which `&self`
        // keeps alive, so the chunk stays mapped while the header is read.
        let node = unsafe { ChunkHeader::of(block.as_ptr() as usize) }.node;
        self.pools.iter().position(|p| p.node() == node)
    }

    /// Counts a free of a block of node pool `home` if the calling thread is served by
    /// another node's pool (for [`NodeCounts::cross_node_frees`]).
    pub(crate) fn count_free_from(&self, home: usize) {
        if self.pools.len() > 1 && self.thread_index() != home {
            if let Some(count) = self.cross_node_frees.get(home) {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The node pool at `index` (see [`Self::thread_index`], [`Self::index_of_block`]).
    pub(crate) fn pool(&self, index: usize) -> Option<&BlockPool> {
        self.pools.get(index)
    }

    /// The node pools, by index.
    pub(crate) fn pools(&self) -> &[BlockPool] {
        &self.pools
    }

    /// The topology whose nodes the pools serve.
    pub(crate) fn topology(&self) -> &Topology {
        &self.topology
    }

    /// The id of the node whose pool `block` belongs to, if any.
    pub fn node_of(&self, block: NonNull<u8>) -> Option<u32> {
        self.index_of_pointer(block.as_ptr() as usize)
            .and_then(|i| self.pools.get(i))
            .map(BlockPool::node)
    }

    /// Allocations this router refused at the cap: with one node pool, that pool's
    /// refusals (the router hands its errors on); with several, the allocations that every
    /// node pool refused (one node's refusal followed by another node's block is no
    /// refusal).
    pub(crate) fn refusals(&self) -> u64 {
        match &*self.pools {
            [only] => only.shared.counters.exhausted.load(Ordering::Relaxed),
            _ => self.exhausted.load(Ordering::Relaxed),
        }
    }

    /// Per node pool, by index: the allocations it served for threads of another node
    /// whose pool was full, and the frees of its blocks by threads of another node.
    pub(crate) fn crossings(&self) -> Vec<(u64, u64)> {
        self.remote
            .iter()
            .zip(self.cross_node_frees.iter())
            .map(|(r, c)| (r.load(Ordering::Relaxed), c.load(Ordering::Relaxed)))
            .collect()
    }

    /// Every node pool's counts, by index.
    pub(crate) fn node_counts(&self) -> Vec<NodeCounts> {
        self.pools
            .iter()
            .zip(self.remote.iter().zip(self.cross_node_frees.iter()))
            .map(|(p, (r, c))| NodeCounts {
                node: p.node(),
                blocks: p.stats(),
                remote_allocations: r.load(Ordering::Relaxed),
                cross_node_frees: c.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// Per node: its id, its pool's counters, and how many of its allocations served
    /// threads of another node (fallback).
    pub fn node_stats(&self) -> Vec<(u32, BlockPoolStats, u64)> {
        self.node_counts()
            .into_iter()
            .map(|n| (n.node, n.blocks, n.remote_allocations))
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
