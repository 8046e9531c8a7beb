//! [`Placement`]: which node each worker thread of an existing runtime (rayon, tokio, or
//! plain threads) runs on, and the start hook that pins it there and warms that node.
//! There is no scheduler here: the runtime keeps scheduling, the hook only places.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::error::PinError;
use super::pin::pin_current_thread;
use super::topology::Topology;

/// How a [`Placement`] distributes workers over nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PlacementStrategy {
    /// Round-robin over the nodes that have CPUs, so consecutive workers land on
    /// different nodes: the most memory bandwidth and cache for few workers. A node
    /// whose CPUs are all taken is skipped until every node is full.
    Spread,
    /// Fill the first node's CPUs, then the nearest next node's, and so on: the fewest
    /// nodes and the shortest distances for few workers.
    Pack,
}

/// What a worker's start hook is told about its placement.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerStart {
    /// The worker's index (rayon's thread index, or the start order for tokio).
    pub worker: usize,
    /// The id of the worker's node.
    pub node: u32,
    /// The index of the worker's node in [`Topology::nodes`].
    pub node_index: usize,
    /// Whether pinning the thread worked. A failure (for example EPERM in a sandbox)
    /// leaves the thread unpinned but still calls the hook: warming the node's pools is
    /// still right for a thread that usually runs there.
    pub pinned: Result<(), PinError>,
}

/// Assigns worker threads to NUMA nodes, spreading or packing, and builds the start
/// hooks that pin each worker to its node's CPUs and then run a warm-up.
///
/// Worker `i` goes to `slots[i % slots.len()]`, where the slots hold one entry per CPU
/// in the strategy's order; so a pool of as many workers as CPUs puts exactly one worker
/// per CPU's worth of node, and larger pools wrap around.
///
/// ```
/// use tally_pool::numa::{Placement, Topology};
///
/// let topology = Topology::synthetic(2, 2)?;
/// let spread = Placement::spread(&topology);
/// assert_eq!(spread.assignments(5), vec![0, 1, 0, 1, 0]);
/// let pack = Placement::pack(&topology);
/// assert_eq!(pack.assignments(5), vec![0, 0, 1, 1, 0]);
/// # Ok::<(), tally_pool::numa::TopologyError>(())
/// ```
#[derive(Clone)]
pub struct Placement {
    topology: Topology,
    strategy: PlacementStrategy,
    /// Node index per slot; empty only when no node has a CPU.
    slots: Arc<[usize]>,
}

impl Placement {
    /// Round-robin workers over the nodes of `topology` (see
    /// [`PlacementStrategy::Spread`]).
    pub fn spread(topology: &Topology) -> Self {
        Self::new(topology, PlacementStrategy::Spread)
    }

    /// Fill nodes one after the other, nearest first (see [`PlacementStrategy::Pack`]).
    pub fn pack(topology: &Topology) -> Self {
        Self::new(topology, PlacementStrategy::Pack)
    }

    /// A placement with the given strategy.
    pub fn new(topology: &Topology, strategy: PlacementStrategy) -> Self {
        let cpus = |index: usize| topology.node_at(index).map_or(0, |n| n.cpus().len());
        let mut slots = Vec::with_capacity(topology.cpu_count());
        match strategy {
            PlacementStrategy::Spread => {
                let rounds = (0..topology.node_count()).map(cpus).max().unwrap_or(0);
                for round in 0..rounds {
                    slots.extend((0..topology.node_count()).filter(|&i| cpus(i) > round));
                }
            }
            PlacementStrategy::Pack => {
                let first = (0..topology.node_count()).find(|&i| cpus(i) > 0);
                if let Some(first) = first {
                    for &index in topology.nearest_indices(first) {
                        slots.extend(std::iter::repeat_n(index, cpus(index)));
                    }
                }
            }
        }
        Self {
            topology: topology.clone(),
            strategy,
            slots: slots.into(),
        }
    }

    /// The strategy.
    pub fn strategy(&self) -> PlacementStrategy {
        self.strategy
    }

    /// The topology workers are placed on.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// The index (in [`Topology::nodes`]) of the node of worker `worker`.
    pub fn node_index_for(&self, worker: usize) -> usize {
        if self.slots.is_empty() {
            return 0;
        }
        self.slots
            .get(worker % self.slots.len())
            .copied()
            .unwrap_or(0)
    }

    /// The id of the node of worker `worker`.
    pub fn node_for(&self, worker: usize) -> u32 {
        self.topology
            .node_at(self.node_index_for(worker))
            .map_or(0, |n| n.id())
    }

    /// The node ids of workers `0..workers`.
    pub fn assignments(&self, workers: usize) -> Vec<u32> {
        (0..workers).map(|w| self.node_for(w)).collect()
    }

    /// Pins the calling thread as worker `worker` and returns what happened; what the
    /// hooks below do before calling the warm-up.
    pub fn place_current_thread(&self, worker: usize) -> WorkerStart {
        let node_index = self.node_index_for(worker);
        let node = self.node_for(worker);
        WorkerStart {
            worker,
            node,
            node_index,
            pinned: pin_current_thread(&self.topology, node),
        }
    }

    /// A hook for runtimes that tell each thread its index, such as
    /// `rayon::ThreadPoolBuilder::start_handler`: it pins worker `i` to its node's CPUs,
    /// then calls `warm` (for example "warm this node's pools").
    ///
    /// ```
    /// use tally_pool::numa::{Placement, Topology};
    ///
    /// let topology = Topology::synthetic(2, 1)?;
    /// let start = Placement::spread(&topology).start_handler(|w| {
    ///     assert_eq!(w.node, (w.worker % 2) as u32);
    /// });
    /// let workers: Vec<_> = (0..4)
    ///     .map(|i| {
    ///         let start = start.clone();
    ///         std::thread::spawn(move || start(i))
    ///     })
    ///     .collect();
    /// for w in workers {
    ///     w.join().unwrap();
    /// }
    /// assert_eq!(topology.pinnings().len(), 4);
    /// # Ok::<(), tally_pool::numa::TopologyError>(())
    /// ```
    pub fn start_handler<F>(&self, warm: F) -> impl Fn(usize) + Clone + Send + Sync + 'static
    where
        F: Fn(&WorkerStart) + Send + Sync + 'static,
    {
        let placement = self.clone();
        let warm = Arc::new(warm);
        move |worker| {
            let start = placement.place_current_thread(worker);
            warm(&start);
        }
    }

    /// A hook for runtimes that start threads without an index, such as tokio's
    /// `runtime::Builder::on_thread_start`: each new thread takes the next worker index
    /// in start order, is pinned to that worker's node, then `warm` runs. Every thread the
    /// runtime starts counts, including tokio's blocking-pool threads.
    pub fn thread_start_hook<F>(&self, warm: F) -> impl Fn() + Clone + Send + Sync + 'static
    where
        F: Fn(&WorkerStart) + Send + Sync + 'static,
    {
        let next = Arc::new(AtomicUsize::new(0));
        let start = self.start_handler(warm);
        move || start(next.fetch_add(1, Ordering::Relaxed))
    }

    /// A rayon pool builder with `workers` threads (0: rayon's default), each pinned to
    /// its node by [`Placement::start_handler`] before `warm` runs on it.
    ///
    /// ```
    /// use tally_pool::numa::{current_node, Placement, Topology};
    ///
    /// let topology = Topology::synthetic(2, 1)?;
    /// let pool = Placement::spread(&topology)
    ///     .rayon_builder(2, |_| {})
    ///     .build()
    ///     .unwrap();
    /// let nodes: Vec<u32> = pool.broadcast(|_| current_node(&topology));
    /// assert_eq!(nodes, vec![0, 1]);
    /// # Ok::<(), tally_pool::numa::TopologyError>(())
    /// ```
    #[cfg(feature = "rayon")]
    pub fn rayon_builder<F>(&self, workers: usize, warm: F) -> rayon::ThreadPoolBuilder
    where
        F: Fn(&WorkerStart) + Send + Sync + 'static,
    {
        rayon::ThreadPoolBuilder::new()
            .num_threads(workers)
            .start_handler(self.start_handler(warm))
    }

    /// Sets `builder`'s `on_thread_start` to [`Placement::thread_start_hook`], so each
    /// thread the runtime starts is pinned to the next worker's node before `warm` runs.
    /// Replaces any `on_thread_start` set before.
    ///
    /// ```
    /// use tally_pool::numa::{Placement, Topology};
    ///
    /// let topology = Topology::synthetic(2, 1)?;
    /// let mut builder = tokio::runtime::Builder::new_current_thread();
    /// Placement::spread(&topology).configure_tokio(&mut builder, |_| {});
    /// let runtime = builder.build().unwrap();
    /// runtime.block_on(async {});
    /// # Ok::<(), tally_pool::numa::TopologyError>(())
    /// ```
    #[cfg(feature = "tokio")]
    pub fn configure_tokio<'b, F>(
        &self,
        builder: &'b mut tokio::runtime::Builder,
        warm: F,
    ) -> &'b mut tokio::runtime::Builder
    where
        F: Fn(&WorkerStart) + Send + Sync + 'static,
    {
        builder.on_thread_start(self.thread_start_hook(warm))
    }
}

impl fmt::Debug for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Placement")
            .field("strategy", &self.strategy)
            .field("slots", &self.slots)
            .field("nodes", &self.topology.node_count())
            .finish()
    }
}
