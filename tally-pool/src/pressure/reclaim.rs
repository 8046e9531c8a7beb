//! The reclamation policy: which request each level makes of the registered components,
//! and growth ahead of demand. Runs on the monitor thread only.
//!
//! | level | request ([`Urgency`]) | who gives back |
//! |---|---|---|
//! | Normal | `Low`, once per `idle_after` | pools idle for `idle_after`: chunks already wholly free beyond their reserve |
//! | Moderate | `Moderate` | also thread caches idle for `idle_after` are flushed |
//! | High | `High` | every pool idle for `idle_after` gives back free chunks beyond its reserve; arenas trimmed |
//! | Critical | `Critical` | every pool, idle or not, gives back all free chunks beyond its reserve |

use std::time::{Duration, Instant};

use crate::stats::registry::{self, Member};
use crate::stats::Urgency;
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
    let mut reclaimable = 0u64;
    let mut reclaimed = 0u64;
    for member in members {
        let source = member.source.source();
        reclaimable = reclaimable.saturating_add(source.reclaimable(urgency, idle_after) as u64);
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
    use super::*;

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
