//! Checks of the statistics block pools and typed pools report.

use core::fmt;

use tally_pool::block::BlockPoolStats;

/// Panics unless `stats` counts exactly `allocations` allocations, `frees` frees and `live`
/// live blocks, as many live blocks as allocations not freed, and no corruption; `what`
/// says when the statistics were taken.
#[track_caller]
pub(crate) fn assert_counts(
    stats: &BlockPoolStats,
    allocations: u64,
    frees: u64,
    live: u64,
    what: fmt::Arguments<'_>,
) {
    assert_eq!(
        stats.allocations, allocations,
        "{what}: allocations: {stats:?}"
    );
    assert_eq!(stats.frees, frees, "{what}: frees: {stats:?}");
    assert_eq!(stats.live_blocks, live, "{what}: live blocks: {stats:?}");
    assert_eq!(
        stats.allocations - stats.frees,
        stats.live_blocks,
        "{what}: live = allocations - frees: {stats:?}"
    );
    assert_eq!(stats.corruption_events, 0, "{what}: corruption: {stats:?}");
}
