//! [`Ticker`]: what the monitor thread keeps between ticks, and what one tick does: read
//! the sources, decide the level, publish it, run the transition hooks, ask components for
//! memory and let pools grow ahead of demand.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::config::PressureConfig;
use super::levels::{Levels, Rules};
use super::readers::Readers;
use super::reclaim;
use super::source::{Skip, Slot, SourceKind};
use super::state::{lock, Shared, Transition, TICK_RING};
use crate::sys::budget::{self, PressureLevel};

/// Every this many ticks the slow sources are read: `/proc/meminfo` (the kernel builds it
/// for each read, some 25 µs) while the system's utilisation is [`FAR_BELOW`] or more
/// below the Moderate threshold, and PSI, whose `avg10` is a ten-second average anyway.
const SLOW_EVERY: u64 = 10;

/// How far below the Moderate threshold the system source may be read less often.
const FAR_BELOW: f64 = 0.10;

/// How often housekeeping (`Urgency::Low`) runs at Normal: a round asks every component,
/// which costs some 100 µs a pool, so it stays rare where nothing presses.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(10);

/// The state the monitor thread keeps between ticks.
#[derive(Debug)]
pub(super) struct Ticker {
    readers: Readers,
    rules: Rules,
    levels: Levels,
    slots: [Slot; 6],
    budget: Option<u64>,
    psi_threshold: f64,
    idle_after: Duration,
    reclaim_every: Duration,
    pub(super) grow_ahead: bool,
    /// When reclamation was last asked.
    last_reclaim: Option<Instant>,
    /// Whether a due round was skipped (the allocator refused its list of members): the
    /// next tick asks again, whatever the period says.
    skipped: bool,
    /// Ticks read so far, for the sources read only every [`SLOW_EVERY`] ticks.
    reads: u64,
}

impl Ticker {
    pub(super) fn new(config: &PressureConfig, now: Instant) -> Self {
        Self {
            readers: Readers::new(&config.root),
            rules: Rules::from(config),
            levels: Levels::new(now),
            slots: SourceKind::ALL.map(Slot::new),
            budget: config.budget,
            psi_threshold: config.psi_threshold,
            idle_after: config.idle_after,
            reclaim_every: config.reclaim_every,
            grow_ahead: config.grow_ahead,
            last_reclaim: None,
            skipped: false,
            reads: 0,
        }
    }

    /// Reads the sources into `slots`.
    fn read(&mut self) {
        let [budget_slot, v2, v1, rlimit, system, psi] = &mut self.slots;
        match self.budget {
            Some(bytes) => budget_slot.read(budget::mapped() as u64, bytes),
            None => budget_slot.skip(Skip::NotConfigured),
        }
        self.readers.read_cgroup(v2, v1);
        self.readers.read_rlimit(rlimit);
        let slow_due = self.reads % SLOW_EVERY == 0;
        self.reads = self.reads.wrapping_add(1);
        if v2.utilisation().is_some()
            || v1.utilisation().is_some()
            || rlimit.utilisation().is_some()
        {
            system.skip(Skip::LimitApplies);
        } else if slow_due
            || system
                .utilisation()
                .is_none_or(|u| u >= self.rules.thresholds[0] - FAR_BELOW)
        {
            self.readers.read_system(system);
        }
        if slow_due {
            self.readers.read_psi(psi, self.psi_threshold);
        }
    }

    /// One tick: read, decide, publish, run hooks, reclaim, grow ahead.
    /// Growth ahead of demand alone, between ticks; returns the bytes made ready. Its time
    /// counts in [`PressureMonitor::busy_time`], not as a tick.
    pub(super) fn grow(&mut self, shared: &Shared) -> u64 {
        if !self.grow_ahead {
            return 0;
        }
        let started = Instant::now();
        let made = reclaim::grow_ahead(reclaim::sources().unwrap_or_default());
        let spent = started.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64;
        shared.busy_nanos.fetch_add(spent, Ordering::Relaxed);
        made
    }

    /// One tick; returns the bytes growth ahead of demand made ready.
    pub(super) fn tick(&mut self, shared: &Shared) -> u64 {
        let started = Instant::now();
        // The pools' idleness clock moves every tick, whatever the tick then does: their
        // slow paths record it, and reclaim and growth ahead judge idleness by it.
        crate::block::advance_clock();
        self.read();
        let (utilisation, mut decider) = self
            .slots
            .iter()
            .filter_map(|s| Some((s.utilisation()?, s.kind)))
            .fold(
                (None, SourceKind::Budget),
                |(best, kind), (u, k)| match best {
                    Some(b) if b >= u => (Some(b), kind),
                    _ => (Some(u), k),
                },
            );
        let escalating = self.slots.iter().find(|s| s.escalate).map(|s| s.kind);
        let now = Instant::now();
        let mut transitions: [Option<Transition>; 2] = [None, None];
        // A mapping that crossed the budget raised the level since the last tick.
        let before = self.levels.level();
        let raised = budget::level();
        if raised > before {
            self.levels.force(raised, now);
            transitions[0] = Some(Transition {
                from: before,
                to: raised,
                utilisation: utilisation.unwrap_or(0.0),
                source: SourceKind::Budget,
                at: now,
            });
        }
        let from = self.levels.level();
        if let Some(to) = self.levels.step(
            &self.rules,
            now,
            utilisation.unwrap_or(0.0),
            escalating.is_some(),
        ) {
            if let Some(kind) = escalating.filter(|_| self.levels.escalated()) {
                decider = kind;
            }
            if budget::replace_level(from, to).is_err() {
                // A mapping raised it meanwhile: the next tick adopts the higher level.
                budget::raise_level(to);
            }
            transitions[1] = Some(Transition {
                from,
                to,
                utilisation: utilisation.unwrap_or(0.0),
                source: decider,
                at: now,
            });
        }
        let level = self.levels.level();
        {
            let mut p = lock(&shared.published);
            p.slots = self.slots;
            p.level = level;
            p.utilisation = utilisation;
            p.source = if transitions[0].is_some() && transitions[1].is_none() {
                SourceKind::Budget
            } else {
                decider
            };
            p.since = self.levels.since();
        }
        for transition in transitions.iter().flatten() {
            announce(shared, transition);
        }
        let made =
            self.reclaim_and_grow(shared, level, now, transitions.iter().any(Option::is_some));
        let spent = started.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64;
        let tick = shared.ticks.load(Ordering::Relaxed);
        if let Some(slot) = shared.recent.get((tick % TICK_RING as u64) as usize) {
            slot.store(spent, Ordering::Relaxed);
        }
        shared.busy_nanos.fetch_add(spent, Ordering::Relaxed);
        shared.ticks.fetch_add(1, Ordering::Relaxed);
        made
    }

    /// Asks for memory when the level calls for it, and lets pools grow ahead; returns the
    /// bytes growth ahead made ready.
    fn reclaim_and_grow(
        &mut self,
        shared: &Shared,
        level: PressureLevel,
        now: Instant,
        changed: bool,
    ) -> u64 {
        let period = if level == PressureLevel::Normal {
            HOUSEKEEPING_EVERY.max(self.idle_after)
        } else {
            self.reclaim_every
        };
        let due = self.skipped
            || (changed && level > PressureLevel::Normal)
            || self
                .last_reclaim
                .is_none_or(|last| now.saturating_duration_since(last) >= period);
        if !due {
            // Most ticks: growth ahead alone, which needs no names.
            if !self.grow_ahead {
                return 0;
            }
            return reclaim::grow_ahead(reclaim::sources().unwrap_or_default());
        }
        // A refused list skips the round, which stays due.
        let Some(members) = reclaim::members() else {
            self.skipped = true;
            return 0;
        };
        self.skipped = false;
        self.last_reclaim = Some(now);
        let round = reclaim::reclaim(&members, level, self.idle_after);
        if level > PressureLevel::Normal || round.reclaimed_bytes > 0 {
            lock(&shared.published).last_reclamation = Some(round);
        }
        // Each member drops as it has grown (or here), with no lock held, inside its own
        // catch: its drop may be a component's last, and a second panicking drop within
        // one drop of the vector would abort the process.
        if !self.grow_ahead {
            for member in members {
                reclaim::source_call((), move || drop(member));
            }
            return 0;
        }
        reclaim::grow_ahead(members.into_iter().map(|m| m.source))
    }
}

/// Tells the hooks, `tracing` and `metrics` about `transition`.
fn announce(shared: &Shared, transition: &Transition) {
    #[cfg(feature = "tracing")]
    tracing::info!(
        target: "tally_pool::pressure",
        from = transition.from.as_str(),
        to = transition.to.as_str(),
        utilisation = transition.utilisation,
        source = transition.source.as_str(),
        "memory pressure level changed"
    );
    #[cfg(feature = "metrics")]
    metrics::gauge!("tally_pool_pressure_level").set(f64::from(transition.to as u8));
    let hooks = Arc::clone(&lock(&shared.hooks));
    for hook in hooks.iter() {
        reclaim::caught(&shared.hook_panics, (), || hook(transition));
    }
}
