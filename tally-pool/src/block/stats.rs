//! Every counter of a block pool, and the snapshot it reports: [`BlockPoolStats`].
//!
//! - Per thread, per pool: [`ThreadCounters`], kept by the thread's cache (the fast paths
//!   keep theirs in the cache's `tally` word; see `cache::thread_cache`), read as
//!   [`ThreadCounts`].
//! - Per pool: [`CacheTotals`], the counts of threads that have exited and of operations
//!   done without a cache, and [`PoolCounters`], the events of the slow paths (corruption,
//!   growth, reclaim, binding, refusals at the cap).
//!
//! A snapshot sums the totals and every live cache's counts (`cache::roster` reads them
//! together) and adds the pool counters ([`BlockPoolStats::from_parts`]).

use std::sync::atomic::{
    AtomicU64 as StdAtomicU64, AtomicU8, AtomicUsize, Ordering as StdOrdering,
};
use std::sync::Mutex;

use super::chunk::CHUNK_SIZE;
use crate::error::CorruptionKind;
use crate::sync::{AtomicU64, Ordering};

/// The reason of [`THP_NEVER`], as a literal for `concat!`.
macro_rules! thp_never {
    () => {
        "transparent huge pages are disabled (/sys/kernel/mm/transparent_hugepage/enabled is never)"
    };
}
/// The reason of [`ADVICE_REFUSED`], as a literal for `concat!`.
macro_rules! advice_refused {
    () => {
        "the OS refused madvise(MADV_HUGEPAGE) (a kernel without transparent huge pages)"
    };
}
/// Why a huge-page pool uses normal pages, as [`HugePages::Unavailable`] says.
pub(crate) const THP_NEVER: &str = thp_never!();
/// See [`THP_NEVER`].
pub(crate) const ADVICE_REFUSED: &str = advice_refused!();
/// The reason of [`ONE_CHUNK`], as a literal for `concat!`.
macro_rules! one_chunk {
    () => {
        "the pool's cap fits in one chunk, and a huge page needs two"
    };
}
/// See [`THP_NEVER`].
pub(crate) const ONE_CHUNK: &str = one_chunk!();

/// A point-in-time view of a pool's counters.
///
/// Counters are kept per thread and summed when read. Each thread's counts are read as
/// they were at one instant, but different threads' at different instants, so a snapshot
/// taken while other threads work is consistent per thread, not across threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct BlockPoolStats {
    /// Blocks allocated and not yet freed.
    pub live_blocks: u64,
    /// Blocks the mapped chunks can hold, at most `max_capacity`.
    pub capacity: usize,
    /// The cap.
    pub max_capacity: usize,
    /// Chunks mapped and in use (not reclaimed).
    pub chunks: usize,
    /// Bytes of those chunks.
    pub bytes_mapped: usize,
    /// Successful allocations.
    pub allocations: u64,
    /// Successful frees.
    pub frees: u64,
    /// Frees a thread made beyond its own allocations: a lower bound on the frees of blocks
    /// that another thread allocated. A snapshot per thread, not a running count: it falls
    /// back when such a thread later allocates.
    pub cross_thread_frees: u64,
    /// Magazines traded between thread caches and the depot.
    pub depot_exchanges: u64,
    /// Chunks mapped or reused after creation because the pool ran low.
    pub expansions: u64,
    /// Bytes given back to the OS by [`BlockPool::reclaim`](super::BlockPool::reclaim).
    pub reclaimed_bytes: u64,
    /// Corruption detected (each also returned as an error).
    pub corruption_events: u64,
    /// Chunks the OS refused to bind to the pool's node (they are used unbound).
    pub bind_failures: u64,
    /// Of `expansions`, the chunks mapped or reused by growth ahead of demand
    /// ([`Source::grow_ahead`](crate::stats::Source::grow_ahead)) rather than by an
    /// allocating thread.
    pub expansions_ahead: u64,
    /// Blocks of the chunks growth ahead of demand mapped (and, in a pre-faulting pool,
    /// faulted in).
    pub blocks_grown_ahead: u64,
    /// Allocations refused with [`PoolError::Pressure`](crate::PoolError::Pressure).
    pub pressure_refusals: u64,
    /// Whether the pool asked for transparent huge pages, and whether it got them.
    pub huge_pages: HugePages,
    /// Bytes of chunks locked in memory (a pool configured with
    /// [`lock`](super::BlockPoolConfig::lock)): every active chunk, whole, but one the OS
    /// refused to give back in a reclaim and then refused to lock again, which stays in use
    /// unlocked.
    pub locked_bytes: usize,
}

/// Whether a pool's chunks are backed by transparent huge pages
/// ([`BlockPoolConfig::huge_pages`](super::BlockPoolConfig::huge_pages)).
///
/// A huge-page pool maps its 1 MiB chunks two at a time, as one 2 MiB range aligned to
/// 2 MiB, and advises the range `MADV_HUGEPAGE`: one huge page then holds both chunks, and
/// a random access among a million live blocks misses the TLB far less often. What the OS
/// does with the advice:
///
/// - with `/sys/kernel/mm/transparent_hugepage/enabled` at `always` or `madvise`, it
///   backs the range with a huge page when one is free (else with normal pages, which
///   `khugepaged` may collapse later): [`Active`](Self::Active);
/// - at `never`, or when it refuses the advice (a kernel without transparent huge pages),
///   the pool works with normal pages: [`Unavailable`](Self::Unavailable), with the reason.
///
/// Pairs stay within the chunks `max_capacity` needs: when it needs an odd number, the
/// last chunk is mapped alone, in normal pages, and a pool whose cap fits in one chunk
/// gets no huge page at all (`Unavailable`). The pages of a pair count as mapped from the
/// start, both chunks' blocks as fresh.
///
/// Reclaim gives a chunk back with `MADV_DONTNEED` of all but its header page, which
/// splits the huge page that held it into normal pages; only the second chunk of each pair
/// is given back, since the first cannot be without the second. A huge-page pool so gives
/// back at most half of its paired chunks, by
/// [`BlockPool::reclaim`](super::BlockPool::reclaim) or under memory pressure, and counts
/// no more than that in what it could give back
/// ([`Source::reclaimable`](crate::stats::Source::reclaimable)). `MAP_HUGETLB` (reserved
/// huge pages) is not used: it needs pages the administrator set aside, fails where none
/// are, and cannot give back part of a page, so it would change every path that maps,
/// prefaults or reclaims a chunk for a gain transparent huge pages already give.
///
/// ```
/// use tally_pool::block::HugePages;
/// assert_eq!(HugePages::default(), HugePages::Off);
/// assert!(HugePages::Unavailable("transparent huge pages are disabled").requested());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum HugePages {
    /// Not asked for.
    #[default]
    Off,
    /// Asked for; no chunk mapped yet.
    Requested,
    /// The chunk pairs mapped so far were advised, and the system allows huge pages.
    Active,
    /// Asked for, but the pool uses normal pages, for the reason given.
    Unavailable(&'static str),
}

impl HugePages {
    /// Whether huge pages were asked for.
    pub fn requested(self) -> bool {
        self != HugePages::Off
    }

    /// The state as a short word for reports: `"off"`, `"requested"`, `"active"` or
    /// `"unavailable"`.
    ///
    /// ```
    /// use tally_pool::block::HugePages;
    /// assert_eq!(HugePages::Active.name(), "active");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            HugePages::Off => "off",
            HugePages::Requested => "requested",
            HugePages::Active => "active",
            HugePages::Unavailable(_) => "unavailable",
        }
    }

    /// The state as the statistics report shows it: [`Self::name`], with the reason for
    /// `"unavailable: <reason>"`.
    pub(crate) fn report_text(self) -> &'static str {
        match self {
            HugePages::Unavailable(THP_NEVER) => concat!("unavailable: ", thp_never!()),
            HugePages::Unavailable(ADVICE_REFUSED) => concat!("unavailable: ", advice_refused!()),
            HugePages::Unavailable(ONE_CHUNK) => concat!("unavailable: ", one_chunk!()),
            other => other.name(),
        }
    }

    /// The state of a pool made of parts whose report rows say `a` and `b`
    /// ([`Self::report_text`]), as its own row says it: unavailable if either is, else
    /// active if either is (see [`Self::combine`]). A text of no state leaves `a`.
    pub(crate) fn combine_report_texts(a: &'static str, b: &'static str) -> &'static str {
        const ALL: [HugePages; 6] = [
            HugePages::Off,
            HugePages::Requested,
            HugePages::Active,
            HugePages::Unavailable(THP_NEVER),
            HugePages::Unavailable(ADVICE_REFUSED),
            HugePages::Unavailable(ONE_CHUNK),
        ];
        let parse = |text: &str| ALL.into_iter().find(|s| s.report_text() == text);
        match (parse(a), parse(b)) {
            (Some(a), Some(b)) => a.combine(b).report_text(),
            _ => a,
        }
    }

    /// The state of a pool made of parts in states `self` and `other`: unavailable if
    /// either is, else active if either is.
    fn combine(self, other: Self) -> Self {
        match (self, other) {
            (HugePages::Unavailable(r), _) | (_, HugePages::Unavailable(r)) => {
                HugePages::Unavailable(r)
            }
            (HugePages::Active, _) | (_, HugePages::Active) => HugePages::Active,
            (HugePages::Requested, _) | (_, HugePages::Requested) => HugePages::Requested,
            (HugePages::Off, HugePages::Off) => HugePages::Off,
        }
    }
}

/// [`HugePages`] as [`PoolCounters::huge_pages`] holds it.
const HUGE_OFF: u8 = 0;
const HUGE_REQUESTED: u8 = 1;
const HUGE_ACTIVE: u8 = 2;
const HUGE_NEVER: u8 = 3;
const HUGE_REFUSED: u8 = 4;
const HUGE_ONE_CHUNK: u8 = 5;

impl PoolCounters {
    /// Records that the pool asks for huge pages.
    pub(crate) fn request_huge_pages(&self) {
        self.huge_pages.store(HUGE_REQUESTED, StdOrdering::Relaxed);
    }

    /// Records what became of the huge-page advice of a pair just mapped: `Ok` or the
    /// reason it has no effect. Once unavailable, the pool says so for good.
    pub(crate) fn record_huge_pages(&self, outcome: Result<(), &'static str>) {
        let code = match outcome {
            Ok(()) => HUGE_ACTIVE,
            Err(reason) if reason == THP_NEVER => HUGE_NEVER,
            Err(reason) if reason == ONE_CHUNK => HUGE_ONE_CHUNK,
            Err(_) => HUGE_REFUSED,
        };
        self.huge_pages.fetch_max(code, StdOrdering::Relaxed);
    }

    pub(crate) fn huge_pages(&self) -> HugePages {
        match self.huge_pages.load(StdOrdering::Relaxed) {
            HUGE_OFF => HugePages::Off,
            HUGE_REQUESTED => HugePages::Requested,
            HUGE_ACTIVE => HugePages::Active,
            HUGE_NEVER => HugePages::Unavailable(THP_NEVER),
            HUGE_REFUSED => HugePages::Unavailable(ADVICE_REFUSED),
            _ => HugePages::Unavailable(ONE_CHUNK),
        }
    }
}

impl BlockPoolStats {
    /// Adds `other` to `self`, field by field (for pools made of several block pools),
    /// saturating rather than overflowing.
    ///
    /// ```
    /// use tally_pool::block::BlockPoolStats;
    /// let mut total = BlockPoolStats::default();
    /// total.allocations = u64::MAX;
    /// let mut one = BlockPoolStats::default();
    /// one.allocations = 1;
    /// total.add(&one);
    /// assert_eq!(total.allocations, u64::MAX);
    /// ```
    pub fn add(&mut self, other: &Self) {
        self.live_blocks = self.live_blocks.saturating_add(other.live_blocks);
        self.capacity = self.capacity.saturating_add(other.capacity);
        self.max_capacity = self.max_capacity.saturating_add(other.max_capacity);
        self.chunks = self.chunks.saturating_add(other.chunks);
        self.bytes_mapped = self.bytes_mapped.saturating_add(other.bytes_mapped);
        self.allocations = self.allocations.saturating_add(other.allocations);
        self.frees = self.frees.saturating_add(other.frees);
        self.cross_thread_frees = self
            .cross_thread_frees
            .saturating_add(other.cross_thread_frees);
        self.depot_exchanges = self.depot_exchanges.saturating_add(other.depot_exchanges);
        self.expansions = self.expansions.saturating_add(other.expansions);
        self.reclaimed_bytes = self.reclaimed_bytes.saturating_add(other.reclaimed_bytes);
        self.corruption_events = self
            .corruption_events
            .saturating_add(other.corruption_events);
        self.bind_failures = self.bind_failures.saturating_add(other.bind_failures);
        self.expansions_ahead = self.expansions_ahead.saturating_add(other.expansions_ahead);
        self.blocks_grown_ahead = self
            .blocks_grown_ahead
            .saturating_add(other.blocks_grown_ahead);
        self.pressure_refusals = self
            .pressure_refusals
            .saturating_add(other.pressure_refusals);
        self.huge_pages = self.huge_pages.combine(other.huge_pages);
        self.locked_bytes = self.locked_bytes.saturating_add(other.locked_bytes);
    }
}

impl BlockPoolStats {
    /// The snapshot of a pool whose threads counted `threads` (summed with the totals of
    /// exited threads), whose slow paths counted `counters`, with `blocks_per_chunk` blocks
    /// in each chunk and a cap of `max_capacity`.
    pub(crate) fn from_parts(
        threads: CountSum,
        counters: &PoolCounters,
        blocks_per_chunk: usize,
        max_capacity: usize,
    ) -> Self {
        let chunks = counters.active_chunks.load(StdOrdering::Relaxed);
        Self {
            live_blocks: threads.allocations.saturating_sub(threads.frees),
            capacity: (chunks * blocks_per_chunk).min(max_capacity),
            max_capacity,
            chunks,
            bytes_mapped: chunks * CHUNK_SIZE,
            allocations: threads.allocations,
            frees: threads.frees,
            cross_thread_frees: threads.cross_thread_frees,
            depot_exchanges: threads.depot_exchanges,
            expansions: counters.expansions.load(StdOrdering::Relaxed),
            reclaimed_bytes: counters.reclaimed_bytes.load(StdOrdering::Relaxed),
            corruption_events: counters.corruption_events.load(StdOrdering::Relaxed),
            bind_failures: counters.bind_failures.load(StdOrdering::Relaxed),
            expansions_ahead: counters.expansions_ahead.load(StdOrdering::Relaxed),
            blocks_grown_ahead: counters.blocks_grown_ahead.load(StdOrdering::Relaxed),
            pressure_refusals: counters.pressure_refusals.load(StdOrdering::Relaxed),
            huge_pages: counters.huge_pages(),
            locked_bytes: counters.locked_bytes.load(StdOrdering::Relaxed),
        }
    }
}

/// A per-thread statistics counter: written only by its thread (a load and a store, no
/// read-modify-write), read by any thread.
#[derive(Debug, Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    /// A counter at 0, in a `const` (outside loom, whose atomics have no `const` constructor).
    #[cfg(not(loom))]
    const fn zero() -> Self {
        Self(AtomicU64::new(0))
    }

    #[inline]
    pub(crate) fn bump(&self) {
        self.add(1);
    }

    #[inline]
    pub(crate) fn add(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    #[inline]
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The counters of one thread for one pool that the fast paths do not keep (see
/// `ThreadCache::tally`): what slow paths counted, and what the fast paths had counted
/// when the last slow path began.
#[derive(Debug, Default)]
pub(crate) struct ThreadCounters {
    pub(crate) allocations: Counter,
    pub(crate) frees: Counter,
    pub(crate) depot_exchanges: Counter,
    /// Blocks a guarded fast path popped, counted as allocations by the pop, then refused
    /// because their guard was broken.
    pub(crate) refused: Counter,
}

impl ThreadCounters {
    /// Counters at 0, in a `const` (see [`Counter::zero`]).
    #[cfg(not(loom))]
    pub(crate) const fn zero() -> Self {
        Self {
            allocations: Counter::zero(),
            frees: Counter::zero(),
            depot_exchanges: Counter::zero(),
            refused: Counter::zero(),
        }
    }
}

/// What one thread's counters for one pool said at one instant.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ThreadCounts {
    pub(crate) allocations: u64,
    pub(crate) frees: u64,
    pub(crate) depot_exchanges: u64,
    /// Free blocks in the cache.
    pub(crate) cached: u64,
    /// Blocks left in the thread's fresh range: carved, never handed out.
    pub(crate) fresh: u64,
}

impl ThreadCounts {
    /// Frees this thread made beyond its own allocations: blocks that other threads
    /// allocated, at the least. Frees of such blocks are not counted one by one.
    pub(crate) fn cross_thread_frees(&self) -> u64 {
        self.frees.saturating_sub(self.allocations)
    }
}

/// Counts summed over threads.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CountSum {
    pub(crate) allocations: u64,
    pub(crate) frees: u64,
    pub(crate) cross_thread_frees: u64,
    pub(crate) depot_exchanges: u64,
    /// Blocks held by live threads' caches: cached, plus left in their fresh ranges.
    /// Retired caches hold none (their blocks went back at thread exit).
    pub(crate) held: u64,
}

impl CountSum {
    /// Adds one thread's counts.
    pub(crate) fn add(&mut self, c: ThreadCounts) {
        self.allocations += c.allocations;
        self.frees += c.frees;
        self.cross_thread_frees += c.cross_thread_frees();
        self.depot_exchanges += c.depot_exchanges;
        self.held = self.held.saturating_add(c.cached).saturating_add(c.fresh);
    }
}

/// Totals of caches whose threads have exited, plus operations done without a cache.
#[derive(Debug, Default)]
pub(crate) struct CacheTotals {
    pub(crate) allocations: StdAtomicU64,
    pub(crate) frees: StdAtomicU64,
    pub(crate) cross_thread_frees: StdAtomicU64,
    pub(crate) depot_exchanges: StdAtomicU64,
}

impl CacheTotals {
    /// Adds the counts of a thread whose cache retires.
    pub(crate) fn fold(&self, c: ThreadCounts) {
        self.allocations
            .fetch_add(c.allocations, StdOrdering::Relaxed);
        self.frees.fetch_add(c.frees, StdOrdering::Relaxed);
        self.cross_thread_frees
            .fetch_add(c.cross_thread_frees(), StdOrdering::Relaxed);
        self.depot_exchanges
            .fetch_add(c.depot_exchanges, StdOrdering::Relaxed);
    }

    /// The totals as they are now.
    pub(crate) fn load(&self) -> CountSum {
        CountSum {
            allocations: self.allocations.load(StdOrdering::Relaxed),
            frees: self.frees.load(StdOrdering::Relaxed),
            cross_thread_frees: self.cross_thread_frees.load(StdOrdering::Relaxed),
            depot_exchanges: self.depot_exchanges.load(StdOrdering::Relaxed),
            held: 0,
        }
    }
}

/// What a pool's slow paths count, shared by all its threads.
#[derive(Debug, Default)]
pub(crate) struct PoolCounters {
    /// Corruption detected by a guard or a pointer check (each also returned as an error).
    pub(crate) corruption_events: StdAtomicU64,
    /// Chunks mapped, or reclaimed ones reused, after creation because the pool ran low.
    pub(crate) expansions: StdAtomicU64,
    /// Bytes given back to the OS by reclaim.
    pub(crate) reclaimed_bytes: StdAtomicU64,
    /// Chunks mapped and not reclaimed.
    pub(crate) active_chunks: AtomicUsize,
    /// Chunks the OS refused to bind to the pool's node.
    pub(crate) bind_failures: StdAtomicU64,
    /// Allocations refused at the cap (`PoolError::Exhausted`).
    pub(crate) exhausted: StdAtomicU64,
    /// Blocks a guard found damaged when about to hand them out: withdrawn for good,
    /// carved but in no cache, depot or user's hands.
    pub(crate) withdrawn: StdAtomicU64,
    /// Of `expansions`, those made by growth ahead of demand.
    pub(crate) expansions_ahead: StdAtomicU64,
    /// Blocks carved by growth ahead of demand.
    pub(crate) blocks_grown_ahead: StdAtomicU64,
    /// Allocations refused under critical pressure (`PoolError::Pressure`).
    pub(crate) pressure_refusals: StdAtomicU64,
    /// [`HugePages`], encoded: 0 off, 1 requested, 2 active, 3, 4 and 5 unavailable (the
    /// system's mode is `never`, the advice was refused, the cap fits in one chunk). Only
    /// ever raised.
    pub(crate) huge_pages: AtomicU8,
    /// Bytes of chunks locked in memory.
    pub(crate) locked_bytes: AtomicUsize,
    /// The kind and address of the last corruption detected, for the report.
    pub(crate) last_corruption: Mutex<Option<(CorruptionKind, usize)>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_row_of_a_pool_of_parts_says_what_its_stats_say() {
        let active = HugePages::Active.report_text();
        let never = HugePages::Unavailable(THP_NEVER).report_text();
        let requested = HugePages::Requested.report_text();
        // Unavailable wins whichever part comes first, as in `combine`.
        assert_eq!(HugePages::combine_report_texts(active, never), never);
        assert_eq!(HugePages::combine_report_texts(never, active), never);
        assert_eq!(HugePages::combine_report_texts(requested, active), active);
        assert_eq!(HugePages::combine_report_texts("off", "off"), "off");
    }
}
