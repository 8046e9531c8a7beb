//! [`AllocStats`]: what the allocator holds, per size class and node, and its component in
//! the statistics registry.

use std::sync::atomic::Ordering;
use std::sync::Once;

use super::heap::{self, CHUNK};
use super::large::{self, LARGE};
use super::{cache, TallyAlloc};
use crate::block::SizeClass;
use crate::stats::{self, ComponentSnapshot, Counters, Kind, NodeSnapshot, Source};

/// The figures of one size class on one node.
///
/// Counts reach these figures when a thread's cache trades with its node's heap, when the
/// thread exits, and when it calls [`TallyAlloc::stats`]; until then a running thread's
/// latest allocations and frees from its cache are not in them.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ClassStats {
    /// The node (a heap index: nodes from 16 on share the heap of `node % 16`).
    pub node: u32,
    /// The block size of the class.
    pub block_size: usize,
    /// Blocks handed out and not freed.
    pub live_blocks: u64,
    /// `live_blocks × block_size`.
    pub live_bytes: u64,
    /// Free blocks in thread caches.
    pub cached_blocks: u64,
    /// Free blocks in the node's shared heap.
    pub free_blocks: u64,
    /// Bytes of the class's chunks on this node.
    pub mapped_bytes: u64,
    /// Blocks handed out so far.
    pub allocations: u64,
    /// Blocks freed so far.
    pub frees: u64,
    /// Frees by a thread of another node, which sent the block home.
    pub remote_frees: u64,
    /// Chunks the OS refused to bind to the node (their pages go where the OS puts them).
    pub unbound_chunks: u64,
    /// Blocks of the class's chunks never handed out yet. Their pages have not been
    /// touched, unless a huge page backs their chunk (then they are resident anyway). Read
    /// without the heap's lock: while another thread carves, a snapshot may be a batch low.
    pub fresh_blocks: u64,
    /// Chunks mapped in 2 MiB-aligned pairs that the OS accepted to back with transparent
    /// huge pages (`madvise(MADV_HUGEPAGE)`), which a class's heap maps from its third
    /// chunk on (see [`TallyAlloc::set_huge_pages`](super::TallyAlloc::set_huge_pages)).
    /// Whether the kernel found huge pages for them is its own affair: `AnonHugePages` in
    /// `/proc/self/smaps` says.
    pub huge_page_chunks: u64,
}

impl ClassStats {
    /// The share of frees made by threads of the block's own node, in `0..=1`; `None`
    /// before the first free.
    ///
    /// ```
    /// use tally_pool::alloc::TallyAlloc;
    /// for class in TallyAlloc::new().stats().classes {
    ///     assert!(class.locality().is_none_or(|l| (0.0..=1.0).contains(&l)));
    /// }
    /// ```
    pub fn locality(&self) -> Option<f64> {
        locality(self.frees, self.remote_frees)
    }
}

/// The figures of the layouts no class serves, each in a mapping of its own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LargeStats {
    /// Bytes asked for, of the mappings alive now.
    pub live_bytes: u64,
    /// Bytes mapped for them (whole pages).
    pub mapped_bytes: u64,
    /// Large allocations so far: new mappings and kept ones reused.
    pub allocations: u64,
    /// Large frees so far: mappings unmapped or kept for reuse.
    pub frees: u64,
    /// Mappings the OS refused to bind to the calling thread's node.
    pub unbound: u64,
    /// Bytes of freed mappings kept for reuse (part of `mapped_bytes`): see
    /// [`TallyAlloc::trim`].
    pub retained_bytes: u64,
    /// Allocations (of `allocations`) served by a kept mapping, with no `mmap`.
    pub reused: u64,
}

/// A snapshot of what [`TallyAlloc`] holds.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct AllocStats {
    /// Every size class and node that has mapped memory, by node, then class.
    pub classes: Vec<ClassStats>,
    /// The large mappings.
    pub large: LargeStats,
    /// Calls that re-entered the allocator from within it and so bypassed the thread's
    /// cache. Its paths allocate nothing, so this stays 0.
    pub reentries: u64,
    /// Allocations of a size class made without a thread cache: from thread-local
    /// destructors that ran after the allocator's (and re-entries, if any).
    pub uncached_allocations: u64,
    /// Frees of a size-class block with a layout of another class (or of a pointer this
    /// allocator did not hand out from a chunk): dropped rather than put on the wrong
    /// class's list, so that block is never reused. Large frees trust the layout.
    pub mismatched_frees: u64,
}

impl AllocStats {
    /// Bytes handed out and not freed: blocks and large mappings.
    ///
    /// ```
    /// use tally_pool::alloc::TallyAlloc;
    /// let s = TallyAlloc::new().stats();
    /// assert!(s.live_bytes() <= s.mapped_bytes());
    /// ```
    pub fn live_bytes(&self) -> u64 {
        sat_sum(self.classes.iter().map(|c| c.live_bytes)).saturating_add(self.large.live_bytes)
    }

    /// Bytes mapped: chunks and large mappings.
    pub fn mapped_bytes(&self) -> u64 {
        sat_sum(self.classes.iter().map(|c| c.mapped_bytes)).saturating_add(self.large.mapped_bytes)
    }

    /// The share of frees of blocks made by threads of the block's node, in `0..=1`;
    /// `None` before the first free.
    pub fn locality(&self) -> Option<f64> {
        let frees = sat_sum(self.classes.iter().map(|c| c.frees));
        let remote = sat_sum(self.classes.iter().map(|c| c.remote_frees));
        locality(frees, remote)
    }
}

/// The sum of `parts`, stopping at `u64::MAX`: counts read without a lock never panic or
/// wrap a snapshot.
fn sat_sum(parts: impl Iterator<Item = u64>) -> u64 {
    parts.fold(0, u64::saturating_add)
}

fn locality(frees: u64, remote: u64) -> Option<f64> {
    (frees > 0).then(|| frees.saturating_sub(remote) as f64 / frees as f64)
}

/// Reads every heap's and the large mappings' counts, after publishing the calling
/// thread's own.
pub(super) fn collect() -> AllocStats {
    cache::publish_mine();
    let mut classes = Vec::new();
    for (node, index, heap) in heap::all() {
        let c = &heap.counts;
        let chunks = c.chunks.load(Ordering::Relaxed);
        let Some(class) = SizeClass::from_index(index).filter(|_| chunks > 0) else {
            continue;
        };
        let allocations = c.allocations.load(Ordering::Relaxed);
        let frees = c.frees.load(Ordering::Relaxed);
        let live = allocations.saturating_sub(frees);
        let size = class.size();
        classes.push(ClassStats {
            node: node as u32,
            block_size: size,
            live_blocks: live,
            live_bytes: live.saturating_mul(size as u64),
            // A sum of signed deltas: negative only while counts are in flight.
            cached_blocks: (c.cached.load(Ordering::Relaxed) as i64).max(0) as u64,
            free_blocks: c.free.load(Ordering::Relaxed) as u64,
            mapped_bytes: (chunks as u64).saturating_mul(CHUNK as u64),
            allocations,
            frees,
            remote_frees: c.remote_frees.load(Ordering::Relaxed),
            unbound_chunks: c.unbound_chunks.load(Ordering::Relaxed) as u64,
            fresh_blocks: c
                .blocks
                .load(Ordering::Relaxed)
                .saturating_sub(c.carved.load(Ordering::Relaxed)) as u64,
            huge_page_chunks: c.paired_chunks.load(Ordering::Relaxed) as u64,
        });
    }
    let l = &LARGE;
    let mapped = l.mapped.load(Ordering::Relaxed) as u64;
    AllocStats {
        classes,
        large: LargeStats {
            live_bytes: l.live.load(Ordering::Relaxed) as u64,
            mapped_bytes: mapped,
            allocations: l.allocations.load(Ordering::Relaxed),
            frees: l.frees.load(Ordering::Relaxed),
            unbound: l.unbound.load(Ordering::Relaxed),
            // Clamped to the `mapped` read above, so that `mapped_bytes - retained_bytes`
            // never underflows when a mapping is made and kept between the two reads.
            retained_bytes: (large::retained_bytes() as u64).min(mapped),
            reused: l.reused.load(Ordering::Relaxed),
        },
        reentries: cache::reentries(),
        uncached_allocations: cache::uncached_allocations(),
        mismatched_frees: cache::mismatched_frees(),
    }
}

/// The allocator as one component of the statistics (kind `allocator`).
#[derive(Debug)]
struct AllocatorSource;

impl Source for AllocatorSource {
    // No `reclaim`: the pressure monitor trims the kept large mappings itself, whether or
    // not the allocator is registered (see `pressure::reclaim`).
    fn snapshot(&self) -> ComponentSnapshot {
        let s = collect();
        let size = |c: &ClassStats| c.block_size as u64;
        let live = s.live_bytes();
        let cached = sat_sum(
            s.classes
                .iter()
                .map(|c| c.cached_blocks.saturating_mul(size(c))),
        );
        let free = sat_sum(
            s.classes
                .iter()
                .map(|c| c.free_blocks.saturating_mul(size(c))),
        )
        .saturating_add(s.large.retained_bytes);
        let fresh = sat_sum(
            s.classes
                .iter()
                .map(|c| c.fresh_blocks.saturating_mul(size(c))),
        );
        let mapped = s.mapped_bytes();
        // Clamped so that the five classes add up to what is mapped.
        let (live, cached, free, fresh) = clamp_parts(mapped, [live, cached, free, fresh]);
        let mut nodes: Vec<NodeSnapshot> = Vec::new();
        for c in &s.classes {
            if nodes.last().is_none_or(|n| n.node != c.node) {
                nodes.push(NodeSnapshot::new(c.node));
            }
            if let Some(n) = nodes.last_mut() {
                n.live_bytes = n.live_bytes.saturating_add(c.live_bytes);
                n.mapped_bytes = n.mapped_bytes.saturating_add(c.mapped_bytes);
                n.local_acquires = n.local_acquires.saturating_add(c.allocations);
                n.cross_node_releases = n.cross_node_releases.saturating_add(c.remote_frees);
            }
        }
        ComponentSnapshot {
            live_objects: sat_sum(s.classes.iter().map(|c| c.live_blocks))
                .saturating_add(s.large.allocations.saturating_sub(s.large.frees)),
            live_bytes: live,
            cached_bytes: cached,
            free_bytes: free,
            fresh_bytes: fresh,
            metadata_bytes: mapped
                .saturating_sub(live)
                .saturating_sub(cached)
                .saturating_sub(free)
                .saturating_sub(fresh),
            counters: Counters {
                acquires: sat_sum(s.classes.iter().map(|c| c.allocations))
                    .saturating_add(s.large.allocations),
                releases: sat_sum(s.classes.iter().map(|c| c.frees)).saturating_add(s.large.frees),
                ..Counters::default()
            },
            locality: s.locality(),
            nodes,
            ..ComponentSnapshot::default()
        }
    }
}

/// `parts` cut down in order so that their sum is at most `total`.
fn clamp_parts(total: u64, parts: [u64; 4]) -> (u64, u64, u64, u64) {
    let mut left = total;
    let mut take = |p: u64| {
        let p = p.min(left);
        left -= p;
        p
    };
    let [a, b, c, d] = parts;
    (take(a), take(b), take(c), take(d))
}

static SOURCE: AllocatorSource = AllocatorSource;

/// Lists the allocator in the statistics registry, once (outside every allocation path:
/// registering allocates).
pub(super) fn register() {
    static DONE: Once = Once::new();
    DONE.call_once(|| {
        let _ = stats::register_static("TallyAlloc", Kind::Allocator, &SOURCE);
    });
}

impl TallyAlloc {
    /// What the allocator holds now, per size class and node, and its large mappings.
    /// The first call also lists the allocator in the [statistics](crate::stats) as a
    /// component of kind `allocator`.
    ///
    /// ```
    /// use tally_pool::alloc::TallyAlloc;
    /// let s = TallyAlloc::new().stats();
    /// assert_eq!(s.reentries, 0);
    /// assert!(tally_pool::stats::report()
    ///     .components
    ///     .iter()
    ///     .any(|c| c.kind == tally_pool::stats::Kind::Allocator));
    /// ```
    pub fn stats(&self) -> AllocStats {
        register();
        collect()
    }
}
