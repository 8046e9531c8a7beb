//! What a component tells the statistics: the [`Source`] trait that pools, arenas, the
//! allocator and user components implement, and the [`ComponentSnapshot`] it returns.
//!
//! A snapshot splits the bytes a component has mapped into five additive classes, so that
//! `live + cached + free + fresh + metadata == mapped` holds for every component and for the
//! totals. The statistics never check that identity: each source is responsible for it,
//! and the report only adds the classes up.

use std::panic::Location;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A component the statistics can ask for a snapshot and, under memory pressure, for memory.
///
/// Pools, arenas and the allocator implement it and join the process-wide registry when
/// they are created ([`register`](super::register), [`register_static`](super::register_static));
/// a user tracks memory of their own with a [`Component`](super::Component) instead.
///
/// `snapshot` runs on the thread that builds a report or takes a sample, never with a
/// statistics lock held, so it may take the component's own locks. It should be cheap
/// (sum a few counters): a report asks every component once.
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use std::sync::Arc;
/// use tally_pool::stats::{self, ComponentSnapshot, Kind, Source, Urgency};
///
/// struct Scratch { used: AtomicU64, spare: AtomicU64 }
///
/// impl Source for Scratch {
///     fn snapshot(&self) -> ComponentSnapshot {
///         let mut s = ComponentSnapshot::default();
///         s.live_bytes = self.used.load(Ordering::Relaxed);
///         s.free_bytes = self.spare.load(Ordering::Relaxed);
///         s
///     }
///     fn reclaim(&self, _urgency: Urgency) -> usize {
///         self.spare.swap(0, Ordering::Relaxed) as usize // pretend we unmapped it
///     }
/// }
///
/// let scratch = Arc::new(Scratch { used: AtomicU64::new(4096), spare: AtomicU64::new(8192) });
/// let weak: std::sync::Weak<dyn Source> = Arc::downgrade(&scratch) as _;
/// let registration = stats::register("scratch", Kind::Arena, weak);
/// assert_eq!(scratch.snapshot().mapped_bytes(), 12_288);
/// assert_eq!(scratch.reclaim(Urgency::High), 8192);
/// drop(registration); // leaves the registry
/// ```
pub trait Source: Send + Sync {
    /// The component's memory classes and counters, read now.
    ///
    /// ```
    /// use tally_pool::stats::{Component, Source};
    /// let c = Component::register("doc-snapshot");
    /// c.add(100);
    /// assert_eq!(c.snapshot().live_bytes, 100);
    /// ```
    fn snapshot(&self) -> ComponentSnapshot;

    /// Gives memory back now, as much as `urgency` asks for, counting every pool and
    /// thread cache as idle (an idle time of zero: the caller wants it back now, so `High`
    /// reaches busy pools too); returns the bytes given back to the OS. The default gives
    /// back nothing, for components that cannot.
    ///
    /// Components that track idleness implement [`reclaim_idle`](Self::reclaim_idle) and
    /// make this call it with [`Duration::ZERO`]; the pressure monitor calls
    /// `reclaim_idle` with its own idle time ([`Urgency::IDLE_AFTER`] by default).
    ///
    /// ```
    /// use tally_pool::stats::{Component, Source, Urgency};
    /// let c = Component::register("doc-reclaim");
    /// assert_eq!(c.reclaim(Urgency::Critical), 0); // a user component has nothing to give
    /// ```
    fn reclaim(&self, urgency: Urgency) -> usize {
        let _ = urgency;
        0
    }

    /// [`reclaim`](Self::reclaim) with the idle time chosen by the caller: a pool or a
    /// thread cache that has not gone through a slow path (refill, flush, growth) for
    /// `idle_after` is idle. See [`Urgency`] for what each level asks. The pressure monitor
    /// calls this, on its own thread, never on an acquiring one.
    ///
    /// The default ignores `idle_after` and calls [`reclaim`](Self::reclaim).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tally_pool::stats::{Component, Source, Urgency};
    /// let c = Component::register("doc-reclaim-idle");
    /// assert_eq!(c.reclaim_idle(Urgency::High, Duration::from_millis(100)), 0);
    /// ```
    fn reclaim_idle(&self, urgency: Urgency, idle_after: Duration) -> usize {
        let _ = idle_after;
        self.reclaim(urgency)
    }

    /// The bytes [`reclaim_idle`](Self::reclaim_idle) could give back now at `urgency`, an
    /// estimate for reports: a pool counts the free bytes beyond its reserve that the
    /// urgency reaches, whether or not whole chunks are free. The default is 0, for
    /// components that cannot reclaim.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tally_pool::stats::{Component, Source, Urgency};
    /// let c = Component::register("doc-reclaimable");
    /// assert_eq!(c.reclaimable(Urgency::Critical, Duration::from_secs(1)), 0);
    /// ```
    fn reclaimable(&self, urgency: Urgency, idle_after: Duration) -> usize {
        let _ = (urgency, idle_after);
        0
    }

    /// Growth ahead of demand: where the memory ready for the component's next acquires
    /// has fallen short of what its recent demand needs, map and fault in more now, on the
    /// calling thread, so that acquires find it ready instead of mapping or faulting
    /// memory themselves. Returns the bytes made ready. Respects the component's caps,
    /// and does nothing at `High` pressure or above. The pressure monitor calls it each
    /// tick and, while it returns more than 0, every 100 µs between ticks; the default
    /// does nothing and returns 0.
    ///
    /// ```
    /// use tally_pool::stats::{Component, Source};
    /// let c = Component::register("doc-grow-ahead");
    /// assert_eq!(c.grow_ahead(), 0);
    /// ```
    fn grow_ahead(&self) -> usize {
        0
    }
}

/// How hard a component should try when asked to [`reclaim`](Source::reclaim) memory. The
/// pressure monitor picks it from the current pressure level (`Moderate` at Moderate, and
/// so on; `Low` is housekeeping at Normal).
///
/// Levels are ordered: a component that honours `High` also does everything `Moderate`
/// and `Low` ask. Nothing is ever given back from a pool's **reserve** (by default its
/// `capacity`): blocks it keeps mapped and faulted so a burst after a quiet period never
/// faults. "Idle" means no slow path (refill, flush, growth) for `idle_after`
/// ([`Source::reclaim_idle`]; [`Urgency::IDLE_AFTER`] for the monitor by default, zero for
/// [`Source::reclaim`]); the cache-hit paths never record time.
///
/// ```
/// use tally_pool::stats::Urgency;
/// assert!(Urgency::Low < Urgency::Critical);
/// assert_eq!(Urgency::default(), Urgency::Low);
/// assert_eq!(Urgency::IDLE_AFTER, std::time::Duration::from_secs(1));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[non_exhaustive]
pub enum Urgency {
    /// Housekeeping: a pool idle for longer than `idle_after` gives back chunks that are
    /// already wholly free beyond its reserve, without touching any thread cache.
    #[default]
    Low,
    /// Also flush every thread cache idle for longer than `idle_after` into its pool's
    /// shared free lists (where a later `High` or `Critical` can give its blocks back),
    /// including caches whose threads never call the pool again.
    Moderate,
    /// Also: every pool idle for longer than `idle_after` flushes its caches and gives back
    /// its free chunks beyond its reserve.
    High,
    /// Every pool, idle or not, gives back all free chunks beyond its reserve (busy
    /// threads flush their caches at their next slow path, idle ones are flushed for
    /// them); pools configured to refuse growth under Critical pressure refuse it.
    Critical,
}

impl Urgency {
    /// The default idle time of the pressure monitor's [`Source::reclaim_idle`] calls, and
    /// the window in which a pool that ran a slow path counts as growing for
    /// [`Source::grow_ahead`]: one second.
    pub const IDLE_AFTER: Duration = Duration::from_secs(1);
}

/// Per-node figures of a component, for pools that keep one pool per NUMA node.
///
/// ```
/// use tally_pool::stats::NodeSnapshot;
/// let mut n = NodeSnapshot::new(1);
/// n.local_acquires = 10;
/// assert_eq!(n.node, 1);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct NodeSnapshot {
    /// The node's id.
    pub node: u32,
    /// Bytes of values in use on this node.
    pub live_bytes: u64,
    /// Bytes this node's pool has mapped.
    pub mapped_bytes: u64,
    /// Acquires this node served for its own threads.
    pub local_acquires: u64,
    /// Acquires this node served for threads of another node.
    pub remote_acquires: u64,
    /// Values of this node released by threads of another node.
    pub cross_node_releases: u64,
}

impl NodeSnapshot {
    /// A node's figures, all zero.
    ///
    /// ```
    /// use tally_pool::stats::NodeSnapshot;
    /// assert_eq!(NodeSnapshot::new(3).mapped_bytes, 0);
    /// ```
    pub fn new(node: u32) -> Self {
        Self {
            node,
            ..Self::default()
        }
    }
}

/// Where live values were acquired, for pools that track sites (`track_sites`): the
/// [`Location`] of the acquiring call, how many of its values are live and the age of
/// the oldest.
///
/// ```
/// use std::panic::Location;
/// use std::time::Duration;
/// use tally_pool::stats::Site;
/// let site = Site::new(Location::caller(), 12, Some(Duration::from_secs(90)));
/// assert_eq!(site.live, 12);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Site {
    /// The acquiring call (`#[track_caller]`).
    pub location: &'static Location<'static>,
    /// Values acquired there and not yet released.
    pub live: u64,
    /// How long the oldest of them has been live, if known.
    pub oldest_age: Option<Duration>,
}

impl Site {
    /// A site.
    ///
    /// ```
    /// use std::panic::Location;
    /// use tally_pool::stats::Site;
    /// assert_eq!(Site::new(Location::caller(), 1, None).oldest_age, None);
    /// ```
    pub fn new(
        location: &'static Location<'static>,
        live: u64,
        oldest_age: Option<Duration>,
    ) -> Self {
        Self {
            location,
            live,
            oldest_age,
        }
    }
}

/// A component's capacity and running counts: part of its [`ComponentSnapshot`], and in
/// the report's JSON fields of the component itself (`capacity`, …, `depot_exchanges`).
/// Counts are totals since the component was created.
///
/// ```
/// use tally_pool::stats::{ComponentSnapshot, Counters};
/// let mut s = ComponentSnapshot::default();
/// s.counters.acquires = 10;
/// s.counters.releases = 4;
/// assert_eq!(s.counters, Counters { acquires: 10, releases: 4, ..Counters::default() });
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Counters {
    /// Values the mapped chunks can hold now.
    pub capacity: Option<u64>,
    /// The most values the component may ever hold (`None`: no cap).
    pub max_capacity: Option<u64>,
    /// Successful acquires.
    pub acquires: u64,
    /// Releases.
    pub releases: u64,
    /// Releases on another thread than the acquiring one (a lower bound is fine).
    pub cross_thread_releases: u64,
    /// Acquires refused because the component was at `max_capacity`.
    pub exhausted: u64,
    /// Corruption events detected.
    pub corruptions: u64,
    /// Times the component grew (chunks mapped after creation).
    pub growths: u64,
    /// Magazines traded between thread caches and depots: thread-cache misses.
    pub depot_exchanges: u64,
}

impl Counters {
    /// Adds the counters of another part of the same component (a node's pool to a
    /// pool's): capacities and counts add up, saturating; a part with no cap makes the
    /// whole uncapped (`max_capacity` `None`), a part with no capacity figure adds 0.
    ///
    /// ```
    /// use tally_pool::stats::Counters;
    /// let mut pool = Counters { max_capacity: Some(0), ..Counters::default() };
    /// pool.add(&Counters { max_capacity: Some(64), acquires: 3, ..Counters::default() });
    /// pool.add(&Counters { max_capacity: Some(64), acquires: 4, ..Counters::default() });
    /// assert_eq!((pool.max_capacity, pool.acquires, pool.capacity), (Some(128), 7, Some(0)));
    /// pool.add(&Counters::default()); // no cap
    /// assert_eq!(pool.max_capacity, None);
    /// ```
    pub fn add(&mut self, other: &Counters) {
        self.capacity = Some(
            self.capacity
                .unwrap_or(0)
                .saturating_add(other.capacity.unwrap_or(0)),
        );
        self.max_capacity = self
            .max_capacity
            .zip(other.max_capacity)
            .map(|(a, b)| a.saturating_add(b));
        self.acquires = self.acquires.saturating_add(other.acquires);
        self.releases = self.releases.saturating_add(other.releases);
        self.cross_thread_releases = self
            .cross_thread_releases
            .saturating_add(other.cross_thread_releases);
        self.exhausted = self.exhausted.saturating_add(other.exhausted);
        self.corruptions = self.corruptions.saturating_add(other.corruptions);
        self.growths = self.growths.saturating_add(other.growths);
        self.depot_exchanges = self.depot_exchanges.saturating_add(other.depot_exchanges);
    }
}

/// A component's memory and counters at one instant.
///
/// Memory is split into five additive classes; [`mapped_bytes`](Self::mapped_bytes) is
/// their sum. Counters are totals since the component was created. Fields that do not
/// apply stay at their defaults (`0`, `None`, empty). Read concurrently with other
/// threads, a snapshot is consistent per counter, not across counters: the report uses
/// saturating arithmetic everywhere, so it never shows a negative value.
///
/// Build one from [`Default`] and set the fields that apply:
///
/// ```
/// use tally_pool::stats::ComponentSnapshot;
/// let mut s = ComponentSnapshot::default();
/// s.live_bytes = 64;
/// s.cached_bytes = 32;
/// s.metadata_bytes = 32;
/// assert_eq!(s.mapped_bytes(), 128);
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct ComponentSnapshot {
    /// `std::any::type_name` of the values, for typed pools.
    pub type_name: Option<&'static str>,
    /// Bytes of one value (the block size), where the component has one size.
    pub object_size: Option<u64>,
    /// Values in use.
    pub live_objects: u64,
    /// The most values in use at once that the statistics have seen: the registry keeps,
    /// per component, the highest `live_objects` of every snapshot it took (each
    /// [`report`](super::report) and each [`sample`](super::sample)) and fills it in, or
    /// the component's own figure if that is higher. A peak that came and went between
    /// two snapshots is not seen, so it is a lower bound of the true peak. A source may
    /// leave it 0.
    pub peak_live_objects: u64,
    /// Bytes of the values in use.
    pub live_bytes: u64,
    /// Bytes free in thread caches (magazines).
    pub cached_bytes: u64,
    /// Bytes free in depots and in carved chunks.
    pub free_bytes: u64,
    /// Bytes mapped and not yet carved into blocks.
    pub fresh_bytes: u64,
    /// Bytes of bookkeeping: chunk headers, registries, generation tables, canaries and
    /// padding.
    pub metadata_bytes: u64,
    /// Bytes given back to the OS so far.
    pub released_bytes: u64,
    /// Capacity and running counts, as the report shows them.
    pub counters: Counters,
    /// Where the last corruption was seen (for example `chunk 3 header, node 0`).
    pub last_corruption: Option<String>,
    /// The guard level in force, as `GuardLevel`'s lowercase name: `"off"`, `"canary"`
    /// or `"full"`.
    pub guard: Option<&'static str>,
    /// Transparent huge pages, for pools: `"off"`, `"requested"` (no chunk yet),
    /// `"active"`, or `"unavailable: <reason>"` (the pool uses normal pages).
    pub huge_pages: Option<&'static str>,
    /// Bytes locked in memory (`mlock`), for pools configured to lock.
    pub locked_bytes: u64,
    /// The share of acquires served node-locally, in `0..=1`, for NUMA-aware pools.
    pub locality: Option<f64>,
    /// Per-node figures, for pools with one pool per node.
    pub nodes: Vec<NodeSnapshot>,
    /// Where the live values were acquired: `None` when the component does not track
    /// sites, `Some` (possibly empty) when it does.
    pub sites: Option<Vec<Site>>,
    /// Accounting errors: user components count each `sub` that would have gone below
    /// zero.
    pub accounting_errors: u64,
}

impl ComponentSnapshot {
    /// `live + cached + free + fresh + metadata`, saturating.
    ///
    /// ```
    /// use tally_pool::stats::ComponentSnapshot;
    /// let mut s = ComponentSnapshot::default();
    /// s.fresh_bytes = u64::MAX;
    /// s.live_bytes = 1;
    /// assert_eq!(s.mapped_bytes(), u64::MAX);
    /// ```
    pub fn mapped_bytes(&self) -> u64 {
        self.live_bytes
            .saturating_add(self.cached_bytes)
            .saturating_add(self.free_bytes)
            .saturating_add(self.fresh_bytes)
            .saturating_add(self.metadata_bytes)
    }

    /// Mapped bytes that hold no value: `cached + free + fresh`, saturating.
    ///
    /// ```
    /// use tally_pool::stats::ComponentSnapshot;
    /// let mut s = ComponentSnapshot::default();
    /// s.cached_bytes = 1;
    /// s.free_bytes = 2;
    /// s.fresh_bytes = 3;
    /// s.metadata_bytes = 100;
    /// assert_eq!(s.idle_bytes(), 6);
    /// ```
    pub fn idle_bytes(&self) -> u64 {
        self.cached_bytes
            .saturating_add(self.free_bytes)
            .saturating_add(self.fresh_bytes)
    }

    /// The age of the oldest live value over all tracked sites, if any site knows it.
    ///
    /// ```
    /// use std::panic::Location;
    /// use std::time::Duration;
    /// use tally_pool::stats::{ComponentSnapshot, Site};
    /// let mut s = ComponentSnapshot::default();
    /// assert_eq!(s.oldest_age(), None);
    /// s.sites = Some(vec![
    ///     Site::new(Location::caller(), 1, Some(Duration::from_secs(5))),
    ///     Site::new(Location::caller(), 1, Some(Duration::from_secs(9))),
    /// ]);
    /// assert_eq!(s.oldest_age(), Some(Duration::from_secs(9)));
    /// ```
    pub fn oldest_age(&self) -> Option<Duration> {
        self.sites
            .as_ref()?
            .iter()
            .filter_map(|site| site.oldest_age)
            .max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Gives back what it is asked for, to show the default `reclaim_idle` reaches it.
    struct Counting;
    impl Source for Counting {
        fn snapshot(&self) -> ComponentSnapshot {
            ComponentSnapshot::default()
        }
        fn reclaim(&self, urgency: Urgency) -> usize {
            urgency as usize + 1
        }
    }

    #[test]
    fn default_reclaim_idle_is_reclaim() {
        assert_eq!(Counting.reclaim_idle(Urgency::Low, Duration::ZERO), 1);
        assert_eq!(Counting.reclaim_idle(Urgency::Critical, Duration::MAX), 4);
    }

    struct Nothing;
    impl Source for Nothing {
        fn snapshot(&self) -> ComponentSnapshot {
            ComponentSnapshot::default()
        }
    }

    #[test]
    fn default_reclaim_gives_nothing() {
        assert_eq!(Nothing.reclaim(Urgency::Critical), 0);
        assert_eq!(Nothing.reclaim_idle(Urgency::High, Duration::ZERO), 0);
        assert_eq!(Nothing.reclaimable(Urgency::Critical, Duration::ZERO), 0);
        assert_eq!(Nothing.grow_ahead(), 0);
        assert_eq!(Nothing.snapshot().mapped_bytes(), 0);
    }

    #[test]
    fn classes_add_up_saturating() {
        let mut s = ComponentSnapshot {
            live_bytes: 1,
            cached_bytes: 2,
            free_bytes: 4,
            fresh_bytes: 8,
            metadata_bytes: 16,
            ..ComponentSnapshot::default()
        };
        assert_eq!(s.mapped_bytes(), 31);
        assert_eq!(s.idle_bytes(), 14);
        s.metadata_bytes = u64::MAX;
        assert_eq!(s.mapped_bytes(), u64::MAX);
    }

    #[test]
    fn oldest_age_needs_sites() {
        let s = ComponentSnapshot {
            sites: Some(vec![Site::new(Location::caller(), 3, None)]),
            ..ComponentSnapshot::default()
        };
        assert_eq!(s.oldest_age(), None);
    }

    #[test]
    fn urgency_is_ordered() {
        assert!(Urgency::Low < Urgency::Moderate);
        assert!(Urgency::Moderate < Urgency::High);
        assert!(Urgency::High < Urgency::Critical);
    }
}
