//! What the monitor thread, its handle and the ticks share: the published state, the
//! transition hooks, and the [`Transition`] they are called with.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::config::PressureConfig;
use super::reclaim::Reclamation;
use super::source::{Slot, SourceKind};
use crate::sys::budget::PressureLevel;

/// A change of level, as the transition hooks see it.
///
/// ```
/// use tally_pool::pressure::{PressureLevel, Transition};
/// fn log(t: &Transition) {
///     eprintln!("{} -> {} at {:.0} % ({})", t.from, t.to, t.utilisation * 100.0, t.source);
/// }
/// # let _ = log;
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct Transition {
    /// The level before.
    pub from: PressureLevel,
    /// The level now.
    pub to: PressureLevel,
    /// The highest utilisation of any source at the change (0 when none applies).
    pub utilisation: f64,
    /// The source that decided: the one with the highest utilisation, or the one whose
    /// signal escalated, or the budget when a mapping raised the level.
    pub source: SourceKind,
    /// When the monitor saw the change.
    pub at: Instant,
}

/// A transition hook.
pub(super) type Hook = Arc<dyn Fn(&Transition) + Send + Sync>;

/// Tick durations kept for
/// [`PressureMonitor::recent_ticks`](super::PressureMonitor::recent_ticks).
pub(super) const TICK_RING: usize = 256;

/// What the monitor thread and its handle share.
pub(super) struct Shared {
    pub(super) config: PressureConfig,
    pub(super) stop: AtomicBool,
    /// The transition hooks, replaced whole when one is added, so that a transition takes
    /// them with a reference count alone: it allocates nothing, however short memory is.
    pub(super) hooks: Mutex<Arc<[Hook]>>,
    pub(super) published: Mutex<Published>,
    pub(super) hook_panics: AtomicU64,
    /// `reclaim::source_panics()` when the monitor started.
    pub(super) source_panics_before: u64,
    /// Set by a drop of the monitor's handle on the monitor thread itself (from a hook, or
    /// a component's method, that held the last handle): that drop cannot join, so the
    /// thread forgets the monitor (`monitor::finish`) as it exits.
    pub(super) finish_on_exit: AtomicBool,
    pub(super) ticks: AtomicU64,
    pub(super) busy_nanos: AtomicU64,
    /// The monitor thread's kernel id, 0 until it runs.
    pub(super) tid: AtomicI32,
    /// The last [`TICK_RING`] tick durations in nanoseconds, at `ticks % TICK_RING`.
    pub(super) recent: [AtomicU64; TICK_RING],
}

/// What the monitor publishes after each tick.
#[derive(Debug, Clone, Copy)]
pub(super) struct Published {
    pub(super) slots: [Slot; 6],
    pub(super) level: PressureLevel,
    pub(super) utilisation: Option<f64>,
    pub(super) source: SourceKind,
    pub(super) since: Instant,
    pub(super) last_reclamation: Option<Reclamation>,
}

/// Locks `mutex`, ignoring poisoning: the monitor's critical sections only copy plain
/// data, and hooks run outside them.
pub(super) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}
