//! The reclamation policy: which request each level makes of the registered components,
//! and growth ahead of demand. Runs on the monitor thread only.
//!
//! | level | request ([`Urgency`]) | who gives back |
//! |---|---|---|
//! | Normal | `Low`, once per 10 s (or `idle_after` if longer) | pools idle for `idle_after`: chunks already wholly free beyond their reserve |
//! | Moderate | `Moderate` | also thread caches idle for `idle_after` are flushed; `TallyAlloc` unmaps the large mappings it keeps |
//! | High | `High` | every pool idle for `idle_after` gives back free chunks beyond its reserve; arenas trimmed |
//! | Critical | `Critical` | every pool, idle or not, gives back all free chunks beyond its reserve |

use std::time::{Duration, Instant};

use crate::stats::registry::{self, Member};
use crate::stats::{Kind, Urgency};
use crate::sys::budget::PressureLevel;

/// What one round of reclamation asked and got.
///
/// ```no_run
/// use tally_pool::pressure::{PressureConfig, PressureMonitor};
/// let monitor = PressureMonitor::start(PressureConfig::default().budget(1 << 30))?;
/// if let Some(r) = monitor.last_reclamation() {
///     println!("{} of {} bytes back in {:?}", r.reclaimed_bytes, r.reclaimable_bytes, r.duration);
/// }
/// # Ok::<(), tally_pool::pressure::PressureError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct Reclamation {
    /// The level that asked.
    pub level: PressureLevel,
    /// What the components said they could give back at that urgency, before asking.
    pub reclaimable_bytes: u64,
    /// What they gave back to the OS.
    pub reclaimed_bytes: u64,
    /// How long the round took, on the monitor thread.
    pub duration: Duration,
    /// When it ended.
    pub at: Instant,
}

/// The request each level makes.
pub(crate) fn urgency_for(level: PressureLevel) -> Urgency {
    match level {
        PressureLevel::Normal => Urgency::Low,
        PressureLevel::Moderate => Urgency::Moderate,
        PressureLevel::High => Urgency::High,
        PressureLevel::Critical => Urgency::Critical,
    }
}

/// Asks every member of `members` for memory at `level`'s urgency; the caller holds no
/// lock (the components take their own).
pub(crate) fn reclaim(
    members: &[Member],
    level: PressureLevel,
    idle_after: Duration,
) -> Reclamation {
    let start = Instant::now();
    let urgency = urgency_for(level);
    if level >= PressureLevel::High {
        // Each thread frees its idle scratch arenas itself, at its next call.
        crate::arena::trim();
    }
    let mut reclaimable = 0u64;
    let mut reclaimed = 0u64;
    for member in members {
        let source = member.source.source();
        reclaimable = reclaimable.saturating_add(source.reclaimable(urgency, idle_after) as u64);
        // A pool that could give nothing back even at Critical (which counts its cached
        // blocks too, idle or not) is not asked: asking would flush its caches and walk
        // its depot for nothing, some 100 µs a pool. Other components may reclaim without
        // estimating, so they are always asked.
        let pool = matches!(member.kind, Kind::Typed | Kind::Block);
        if pool && source.reclaimable(Urgency::Critical, idle_after) == 0 {
            continue;
        }
        reclaimed = reclaimed.saturating_add(source.reclaim_idle(urgency, idle_after) as u64);
    }
    let at = Instant::now();
    Reclamation {
        level,
        reclaimable_bytes: reclaimable,
        reclaimed_bytes: reclaimed,
        duration: at.saturating_duration_since(start),
        at,
    }
}

/// Lets every member grow ahead of demand; returns the bytes made ready.
pub(crate) fn grow_ahead(members: &[Member]) -> u64 {
    members.iter().fold(0u64, |sum, member| {
        sum.saturating_add(member.source.source().grow_ahead() as u64)
    })
}

/// The live members of the registry (dropped by the caller with no lock held).
pub(crate) fn members() -> Vec<Member> {
    registry::members()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;
    use crate::stats::registry::Held;
    use crate::stats::{ComponentId, ComponentSnapshot, Source};

    /// Gives back `gives` bytes when asked, estimating `estimate`; counts the requests.
    struct Counted {
        estimate: usize,
        gives: usize,
        asked: AtomicUsize,
    }

    impl Source for Counted {
        fn snapshot(&self) -> ComponentSnapshot {
            ComponentSnapshot::default()
        }
        fn reclaim(&self, _: Urgency) -> usize {
            self.asked.fetch_add(1, Ordering::Relaxed);
            self.gives
        }
        fn reclaimable(&self, _: Urgency, _: Duration) -> usize {
            self.estimate
        }
    }

    fn member(kind: Kind, estimate: usize, gives: usize) -> (Arc<Counted>, Member) {
        let source = Arc::new(Counted {
            estimate,
            gives,
            asked: AtomicUsize::new(0),
        });
        let held: Arc<dyn Source> = Arc::clone(&source) as _;
        let member = Member {
            id: ComponentId::from_raw(1),
            name: Arc::from("test"),
            kind,
            source: Held::Strong(held),
        };
        (source, member)
    }

    #[test]
    fn pools_with_nothing_to_give_are_skipped_other_components_are_asked() {
        let (empty_pool, a) = member(Kind::Typed, 0, 0);
        let (full_pool, b) = member(Kind::Block, 4096, 4096);
        let (user, c) = member(Kind::User, 0, 100);
        let round = reclaim(&[a, b, c], PressureLevel::High, Duration::ZERO);
        assert_eq!(empty_pool.asked.load(Ordering::Relaxed), 0);
        assert_eq!(full_pool.asked.load(Ordering::Relaxed), 1);
        assert_eq!(
            user.asked.load(Ordering::Relaxed),
            1,
            "no estimate, still asked"
        );
        assert_eq!(round.reclaimable_bytes, 4096);
        assert_eq!(round.reclaimed_bytes, 4196);
        assert_eq!(round.level, PressureLevel::High);
    }

    #[test]
    fn each_level_asks_its_own_urgency() {
        let asked: Vec<Urgency> = PressureLevel::ALL.iter().map(|&l| urgency_for(l)).collect();
        assert_eq!(
            asked,
            [
                Urgency::Low,
                Urgency::Moderate,
                Urgency::High,
                Urgency::Critical
            ]
        );
    }
}
