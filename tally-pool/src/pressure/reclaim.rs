//! The reclamation policy: which request each level makes of the registered components,
//! and growth ahead of demand. Runs on the monitor thread only.
//!
//! | level | request ([`Urgency`]) | who gives back |
//! |---|---|---|
//! | Normal | `Low`, once per 10 s (or `idle_after` if longer) | pools idle for `idle_after`: chunks already wholly free beyond their reserve |
//! | Moderate | `Moderate` | also thread caches idle for `idle_after` are flushed |
//! | High | `High` | every pool idle for `idle_after` gives back free chunks beyond its reserve; arenas trimmed |
//! | Critical | `Critical` | every pool, idle or not, gives back all free chunks beyond its reserve |
//!
//! At every level, housekeeping included, `TallyAlloc` unmaps the freed large mappings it
//! keeps for reuse: a mapping stays kept for at most one round (at Normal, 10 s or the
//! monitor's `idle_after` if longer).

use std::borrow::Borrow;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::stats::registry::{self, drop_payload, Held, Member};
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

/// Calls into registered components that panicked on the monitor thread, since the
/// process started (see [`caught`]).
static SOURCE_PANICS: AtomicU64 = AtomicU64::new(0);

/// [`SOURCE_PANICS`] now.
pub(crate) fn source_panics() -> u64 {
    SOURCE_PANICS.load(Ordering::Relaxed)
}

/// Runs `f`, a call into code the monitor does not own (a registered component's
/// [`Source`](crate::stats::Source) methods, the drop of its last handle, a transition
/// hook): a panic is caught and counted in `panics`, and `f` then counts as `fallback`. A
/// panic payload whose own drop panics is caught too (see [`drop_payload`]): nothing a
/// component or a hook does can unwind the monitor thread.
pub(crate) fn caught<R>(panics: &AtomicU64, fallback: R, f: impl FnOnce() -> R) -> R {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            panics.fetch_add(1, Ordering::Relaxed);
            drop_payload(payload);
            fallback
        }
    }
}

/// [`caught`], counted in [`SOURCE_PANICS`].
pub(crate) fn source_call<R>(fallback: R, f: impl FnOnce() -> R) -> R {
    caught(&SOURCE_PANICS, fallback, f)
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

/// Asks every member of `members` for memory at `level`'s urgency, and has the global
/// allocator unmap the large mappings it keeps; the caller holds no lock (the components
/// take their own).
pub(crate) fn reclaim(
    members: &[Member],
    level: PressureLevel,
    idle_after: Duration,
) -> Reclamation {
    let start = Instant::now();
    // Whether or not the allocator is installed or registered: its kept mappings were kept
    // for quick reuse, not to stay mapped.
    let kept = crate::alloc::retained_bytes() as u64;
    let trimmed = crate::alloc::TallyAlloc::new().trim() as u64;
    let (reclaimable, reclaimed) = ask(members, level, idle_after);
    let at = Instant::now();
    Reclamation {
        level,
        // What was kept is read before the trim: a mapping kept in between is trimmed too.
        reclaimable_bytes: reclaimable.saturating_add(kept.max(trimmed)),
        reclaimed_bytes: reclaimed.saturating_add(trimmed),
        duration: at.saturating_duration_since(start),
        at,
    }
}

/// The members' part of [`reclaim`]: what they said they could give back, and gave.
fn ask(members: &[Member], level: PressureLevel, idle_after: Duration) -> (u64, u64) {
    let urgency = urgency_for(level);
    if level >= PressureLevel::High {
        // Each thread frees its idle scratch arenas itself, at its next call.
        crate::arena::trim();
    }
    let mut reclaimable = 0u64;
    let mut reclaimed = 0u64;
    for member in members {
        let source = member.source.source();
        let can = source_call(0, || source.reclaimable(urgency, idle_after));
        reclaimable = reclaimable.saturating_add(can as u64);
        // A pool that could give nothing back even at Critical (which counts its cached
        // blocks too, idle or not) is not asked: asking would flush its caches and walk
        // its depot for nothing, some 100 µs a pool. Other components may reclaim without
        // estimating, so they are always asked.
        let pool = matches!(member.kind, Kind::Typed | Kind::Block);
        if pool && source_call(0, || source.reclaimable(Urgency::Critical, idle_after)) == 0 {
            continue;
        }
        let gave = source_call(0, || source.reclaim_idle(urgency, idle_after));
        reclaimed = reclaimed.saturating_add(gave as u64);
    }
    (reclaimable, reclaimed)
}

/// Lets each of `sources` grow ahead of demand, letting each go as soon as it has grown (a
/// pool whose last handle its user drops meanwhile is rarely dropped here, on the monitor
/// thread); returns the bytes made ready.
pub(crate) fn grow_ahead<S: Borrow<Held>>(sources: impl IntoIterator<Item = S>) -> u64 {
    sources.into_iter().fold(0u64, |sum, held| {
        // The handle drops inside the call: its drop may be a component's last.
        let made = source_call(0, move || {
            let made = held.borrow().source().grow_ahead();
            drop(held);
            made
        });
        sum.saturating_add(made as u64)
    })
}

/// The live members of the registry (dropped by the caller with no lock held), or `None`
/// if the allocator refused the vector: the round is skipped.
pub(crate) fn members() -> Option<Vec<Member>> {
    registry::try_members()
}

/// The sources of the live members alone, for growth ahead, as [`members`]: without the
/// crate's pools while none of them is busy, since each would only find itself idle. Also
/// advances the pools' idleness clock, once a pass.
pub(crate) fn sources() -> Option<Vec<Held>> {
    registry::try_sources(!crate::block::any_pool_busy(Urgency::IDLE_AFTER))
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
        let (reclaimable, reclaimed) = ask(&[a, b, c], PressureLevel::High, Duration::ZERO);
        assert_eq!(empty_pool.asked.load(Ordering::Relaxed), 0);
        assert_eq!(full_pool.asked.load(Ordering::Relaxed), 1);
        assert_eq!(
            user.asked.load(Ordering::Relaxed),
            1,
            "no estimate, still asked"
        );
        assert_eq!(reclaimable, 4096);
        assert_eq!(reclaimed, 4196);
    }

    #[test]
    fn every_round_unmaps_the_allocators_kept_mappings() {
        use core::alloc::{GlobalAlloc, Layout};
        // A page count no other test asks for, so that no other test takes the mapping.
        let len = 43 * crate::sys::PAGE;
        let layout = Layout::from_size_align(len, 8).unwrap();
        let a = crate::alloc::TallyAlloc::new();
        // SAFETY: a non-zero size.
        let p = unsafe { a.alloc(layout) };
        assert!(!p.is_null());
        // SAFETY: allocated just above with `layout`, not used again.
        unsafe { a.dealloc(p, layout) };
        assert!(crate::alloc::kept(len));
        // Housekeeping at Normal, with no member and the allocator not registered.
        let round = reclaim(&[], PressureLevel::Normal, Duration::ZERO);
        assert!(!crate::alloc::kept(len), "unmapped");
        assert!(round.reclaimed_bytes >= len as u64);
        assert!(round.reclaimable_bytes >= len as u64);
        assert_eq!(round.level, PressureLevel::Normal);
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
