//! A typed pool as a statistics component: one component of kind `typed` for the whole
//! pool, its node pools and token tables included, with a row per node.
//!
//! The memory classes are the block layer's (see the `block` module docs, "Memory
//! classes"), summed over the node pools; each node's token table is metadata of that
//! node. A typed pool lists itself once, when it is created ([`Pool::list`]); its node
//! pools are not listed on their own.

use std::time::Duration;

use super::pool::Pool;
use crate::block::facade::HugePages;
use crate::stats::registry::register_static_pool;
use crate::stats::{ComponentSnapshot, Counters, NodeSnapshot, Source, Urgency};

impl<T: 'static> Pool<T> {
    /// Lists the pool in the statistics registry, for the rest of the process (pools are
    /// leaked). Creation's slow path, one short lock.
    pub(super) fn list(&'static self) {
        let _ = register_static_pool(self.name.as_str(), self);
    }
}

impl<T: 'static> Source for Pool<T> {
    fn snapshot(&self) -> ComponentSnapshot {
        let mut total = ComponentSnapshot {
            type_name: Some(core::any::type_name::<T>()),
            object_size: None,
            counters: Counters {
                max_capacity: Some(0),
                ..Counters::default()
            },
            ..ComponentSnapshot::default()
        };
        let Ok(inner) = &self.inner else {
            total.counters.max_capacity = None;
            return total;
        };
        let crossings = inner.nodes.crossings();
        let nodes = inner.nodes.pools().iter().zip(inner.tokens.iter());
        for ((pool, table), (remote, cross)) in nodes.zip(crossings) {
            let mut node = pool.component_snapshot();
            node.metadata_bytes = node.metadata_bytes.saturating_add(table.bytes() as u64);
            total.nodes.push(NodeSnapshot {
                node: pool.node(),
                live_bytes: node.live_bytes,
                mapped_bytes: node.mapped_bytes(),
                local_acquires: node.counters.acquires.saturating_sub(remote),
                remote_acquires: remote,
                cross_node_releases: cross,
            });
            add(&mut total, node);
        }
        // Refusals the router handed to the caller, not a node's refusal that another
        // node made up for.
        total.counters.exhausted = inner.nodes.refusals();
        let (local, remote) = total.nodes.iter().fold((0u64, 0u64), |(l, r), n| {
            (
                l.saturating_add(n.local_acquires),
                r.saturating_add(n.remote_acquires),
            )
        });
        let all = local.saturating_add(remote);
        total.locality = Some(if all == 0 {
            1.0
        } else {
            local as f64 / all as f64
        });
        if let Some(twin) = self.twin_of() {
            // The twin holds this pool's sampled values: its memory and counts are this
            // pool's, its capacities are not.
            let twin = twin.snapshot();
            for from in &twin.nodes {
                if let Some(into) = total.nodes.iter_mut().find(|n| n.node == from.node) {
                    into.live_bytes = into.live_bytes.saturating_add(from.live_bytes);
                    into.mapped_bytes = into.mapped_bytes.saturating_add(from.mapped_bytes);
                }
            }
            let capacities = (total.counters.capacity, total.counters.max_capacity);
            add(&mut total, twin);
            (total.counters.capacity, total.counters.max_capacity) = capacities;
        }
        total.sites = self.site_snapshot();
        total
    }

    /// Each node pool's [`Source::reclaim`], after the calling thread's cached values
    /// went back; a recycling pool gives nothing back (see [`Pool::reclaim`]).
    fn reclaim(&self, urgency: Urgency) -> usize {
        self.each_node(true, |source| source.reclaim(urgency))
    }

    /// Each node pool's [`Source::reclaim_idle`], never beyond its reserve (`reserve`
    /// values per node); a recycling pool gives nothing back.
    fn reclaim_idle(&self, urgency: Urgency, idle_after: Duration) -> usize {
        self.each_node(true, |source| source.reclaim_idle(urgency, idle_after))
    }

    fn reclaimable(&self, urgency: Urgency, idle_after: Duration) -> usize {
        self.each_node(true, |source| source.reclaimable(urgency, idle_after))
    }

    /// Each node pool's [`Source::grow_ahead`]: a growing node keeps chunks mapped and
    /// faulted in ahead of its acquires.
    fn grow_ahead(&self) -> usize {
        self.each_node(false, |source| source.grow_ahead())
    }
}

impl<T: 'static> Pool<T> {
    /// The sum of `f` over the node pools: none for a pool whose creation failed, nor, when
    /// `gives_back`, for a recycling pool, which keeps values in its free blocks.
    fn each_node(&self, gives_back: bool, f: impl Fn(&dyn Source) -> usize) -> usize {
        match &self.inner {
            Ok(i) if !(gives_back && i.recycle.is_some()) => i
                .nodes
                .pools()
                .iter()
                .map(|p| f(p.source()))
                .fold(0, usize::saturating_add),
            _ => 0,
        }
    }
}

/// Adds a node pool's snapshot to the pool's: sums of the classes and counters, the
/// block size and guard of the node pools (all alike), the last corruption seen.
fn add(total: &mut ComponentSnapshot, node: ComponentSnapshot) {
    total.object_size = total.object_size.or(node.object_size);
    total.live_objects = total.live_objects.saturating_add(node.live_objects);
    total.live_bytes = total.live_bytes.saturating_add(node.live_bytes);
    total.cached_bytes = total.cached_bytes.saturating_add(node.cached_bytes);
    total.free_bytes = total.free_bytes.saturating_add(node.free_bytes);
    total.fresh_bytes = total.fresh_bytes.saturating_add(node.fresh_bytes);
    total.metadata_bytes = total.metadata_bytes.saturating_add(node.metadata_bytes);
    total.released_bytes = total.released_bytes.saturating_add(node.released_bytes);
    // No cap on one node is no cap on the pool.
    total.counters.add(&node.counters);
    if node.last_corruption.is_some() {
        total.last_corruption = node.last_corruption;
    }
    total.guard = total.guard.or(node.guard);
    // Combined as `stats()` combines the node pools' states, then shown.
    total.huge_pages = match (total.huge_pages, node.huge_pages) {
        (Some(a), Some(b)) => Some(HugePages::combine_report_texts(a, b)),
        (a, b) => a.or(b),
    };
    total.locked_bytes = total.locked_bytes.saturating_add(node.locked_bytes);
}
