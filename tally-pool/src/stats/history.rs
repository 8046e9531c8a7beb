//! The sampled history: for every component, a bounded ring of (time, live bytes, live
//! objects) samples, and what the sampler concluded from it at the last sample (leak
//! suspicion, how long the `fragmented` condition has held). A report reads the
//! conclusions and does no heavy work itself.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::health::is_fragmented;
use super::leaks::{detect, LeakConfig, LeakVerdict, Sample, SPACING_DIVISOR};
use super::registry::{lock, ComponentId};
use super::source::ComponentSnapshot;

/// Samples kept per component, at most.
pub(crate) const HISTORY_CAPACITY: usize = 512;

/// Each component's leak verdict is brought up to date on every this many samples,
/// staggered by component id, so that a sample judges about one component in this many
/// and costs the same every time; a verdict lags its history by fewer samples than this.
pub(crate) const JUDGE_EVERY: u64 = 8;

/// Sets the leak detector's rule for the whole process; it applies from the next sample.
///
/// ```
/// use std::time::Duration;
/// use tally_pool::stats::{self, LeakConfig};
/// stats::configure_leaks(LeakConfig::default().window(Duration::from_secs(300)));
/// assert_eq!(stats::leak_config().get_window(), Duration::from_secs(300));
/// ```
pub fn configure_leaks(config: LeakConfig) {
    lock(&HISTORY).config = config;
}

/// The leak detector's rule in force.
///
/// ```
/// use tally_pool::stats;
/// assert!(stats::leak_config().get_window().as_secs() >= 1);
/// ```
pub fn leak_config() -> LeakConfig {
    lock(&HISTORY).config
}

/// What the sampler concluded about one component at its last sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Conclusion {
    /// Set while the component is a leak suspect.
    pub(crate) leak: Option<LeakVerdict>,
    /// How long the `fragmented` condition has held (zero if it did not at the last
    /// sample).
    pub(crate) fragmented_for: Duration,
}

/// The time since the statistics' origin (the first call), on the monotonic clock.
pub(crate) fn now() -> Duration {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    ORIGIN.get_or_init(Instant::now).elapsed()
}

/// Records one sample of every live component at `at`; forgets components not listed.
/// A sample older than the newest recorded one is ignored.
///
/// Returns the components whose leak verdict changed with this sample: `true` for one
/// that became a suspect, `false` for one that stopped being one.
pub(crate) fn record(
    at: Duration,
    observed: &[(ComponentId, &ComponentSnapshot)],
) -> Vec<(ComponentId, bool)> {
    lock(&HISTORY).record(at, observed)
}

/// The conclusions for `ids`, in order; `None` for a component with no history.
pub(crate) fn conclusions(ids: &[ComponentId]) -> Vec<Option<Conclusion>> {
    let history = lock(&HISTORY);
    ids.iter()
        .map(|id| history.components.get(id).map(|c| c.conclusion))
        .collect()
}

/// The process-wide history.
static HISTORY: Mutex<History> = Mutex::new(History::new(LeakConfig::DEFAULT));

/// Samples and conclusions of every component, and the rule that judges them.
#[derive(Debug)]
struct History {
    config: LeakConfig,
    /// The time of the newest recorded sample; older ones are ignored.
    last_at: Option<Duration>,
    /// Samples recorded so far, which staggers the leak judgements (see [`JUDGE_EVERY`]).
    recorded: u64,
    components: BTreeMap<ComponentId, ComponentHistory>,
}

/// One component's ring and conclusion.
#[derive(Debug)]
struct ComponentHistory {
    /// Sorted by time; at most [`HISTORY_CAPACITY`] long.
    samples: VecDeque<Sample>,
    /// When the `fragmented` condition started holding without a break.
    fragmented_since: Option<Duration>,
    conclusion: Conclusion,
}

impl History {
    const fn new(config: LeakConfig) -> Self {
        Self {
            config,
            last_at: None,
            recorded: 0,
            components: BTreeMap::new(),
        }
    }

    fn record(
        &mut self,
        at: Duration,
        observed: &[(ComponentId, &ComponentSnapshot)],
    ) -> Vec<(ComponentId, bool)> {
        let mut changed = Vec::new();
        if self.last_at.is_some_and(|last| at < last) {
            return changed; // a concurrent sample overtook this one
        }
        self.last_at = Some(at);
        self.recorded = self.recorded.wrapping_add(1);
        let mut live: Vec<ComponentId> = observed.iter().map(|&(id, _)| id).collect();
        live.sort_unstable();
        self.components
            .retain(|id, _| live.binary_search(id).is_ok());
        let spacing = self.config.get_window() / SPACING_DIVISOR;
        for &(id, snapshot) in observed {
            let component = self
                .components
                .entry(id)
                .or_insert_with(|| ComponentHistory {
                    // Grown as samples come (see `ComponentHistory::push`).
                    samples: VecDeque::new(),
                    fragmented_since: None,
                    conclusion: Conclusion {
                        leak: None,
                        fragmented_for: Duration::ZERO,
                    },
                });
            let sample = Sample {
                at,
                live_bytes: snapshot.live_bytes,
                live_objects: snapshot.live_objects,
            };
            component.push(sample, spacing);
            component.fragmented_since = match component.fragmented_since {
                Some(since) if is_fragmented(snapshot) => Some(since.min(at)),
                None if is_fragmented(snapshot) => Some(at),
                _ => None,
            };
            let was_suspect = component.conclusion.leak.is_some();
            let judge = self.recorded.wrapping_add(id.get()) % JUDGE_EVERY == 0;
            component.conclusion = Conclusion {
                leak: if judge {
                    detect(
                        component.samples.make_contiguous(),
                        &self.config,
                        was_suspect,
                    )
                } else {
                    component.conclusion.leak
                },
                fragmented_for: component
                    .fragmented_since
                    .map_or(Duration::ZERO, |since| at.saturating_sub(since)),
            };
            let is_suspect = component.conclusion.leak.is_some();
            if is_suspect != was_suspect {
                changed.push((id, is_suspect));
            }
        }
        changed
    }
}

impl ComponentHistory {
    /// Adds `sample`, keeping the ring sorted, bounded and spaced (see
    /// [`SPACING_DIVISOR`]). A sample older than the newest is ignored, and so is one for
    /// which the allocator refuses the ring more room.
    ///
    /// The ring's buffer doubles as samples come, up to twice [`HISTORY_CAPACITY`]: a
    /// component sampled a few times costs a few samples, not a full ring, and at full size
    /// `make_contiguous` moves the samples once per `HISTORY_CAPACITY` samples, not on
    /// every one.
    fn push(&mut self, sample: Sample, spacing: Duration) {
        let mut newest = self.samples.iter().rev();
        match (newest.next(), newest.next()) {
            (Some(last), _) if sample.at < last.at => return,
            (Some(last), Some(before)) if last.at.saturating_sub(before.at) < spacing => {
                // The newest sample was provisional: replace it.
                self.samples.pop_back();
            }
            _ => {}
        }
        let len = self.samples.len();
        if len == self.samples.capacity() && len < 2 * HISTORY_CAPACITY {
            let more = len.max(8).min(2 * HISTORY_CAPACITY - len);
            if self.samples.try_reserve_exact(more).is_err() {
                return;
            }
        }
        if self.samples.len() >= HISTORY_CAPACITY {
            self.samples.pop_front();
        }
        self.samples.push_back(sample);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn snapshot(live: u64, free: u64) -> ComponentSnapshot {
        ComponentSnapshot {
            live_bytes: live,
            free_bytes: free,
            live_objects: live / 64,
            ..ComponentSnapshot::default()
        }
    }

    fn sample_at(secs: u64) -> Sample {
        Sample {
            at: Duration::from_secs(secs),
            live_bytes: 0,
            live_objects: 0,
        }
    }

    fn fresh(window: u64) -> History {
        History::new(LeakConfig::default().window(Duration::from_secs(window)))
    }

    #[test]
    fn the_ring_is_bounded_and_spans_the_window() {
        let mut h = fresh(60);
        let id = ComponentId::from_raw(1);
        let s = snapshot(MIB, 0);
        // Ten samples a second for ten minutes.
        for tenth in 0..6000u64 {
            h.record(Duration::from_millis(tenth * 100), &[(id, &s)]);
        }
        let c = &h.components[&id];
        assert!(c.samples.len() <= HISTORY_CAPACITY);
        let span = c.samples.back().unwrap().at - c.samples.front().unwrap().at;
        assert!(span >= Duration::from_secs(60), "{span:?}");
        assert!(c
            .samples
            .iter()
            .zip(c.samples.iter().skip(1))
            .all(|(a, b)| a.at <= b.at));
    }

    #[test]
    fn a_ring_grows_with_its_samples_to_twice_the_capacity_at_most() {
        let mut h = fresh(60);
        let id = ComponentId::from_raw(1);
        let s = snapshot(MIB, 0);
        h.record(Duration::ZERO, &[(id, &s)]);
        let first = h.components[&id].samples.capacity();
        assert!((1..=16).contains(&first), "{first}");
        for secs in 1..3 * HISTORY_CAPACITY as u64 {
            h.record(Duration::from_secs(secs), &[(id, &s)]);
        }
        let c = &h.components[&id];
        assert_eq!(c.samples.len(), HISTORY_CAPACITY);
        let full = c.samples.capacity();
        assert!(
            (HISTORY_CAPACITY + 1..=2 * HISTORY_CAPACITY + 8).contains(&full),
            "{full}"
        );
    }

    #[test]
    fn slow_sampling_keeps_every_sample() {
        let mut h = fresh(300);
        let id = ComponentId::from_raw(1);
        let s = snapshot(MIB, 0);
        for secs in 0..100u64 {
            h.record(Duration::from_secs(secs), &[(id, &s)]);
        }
        assert_eq!(h.components[&id].samples.len(), 100);
        // A sample from the past is ignored, even one that lists other components.
        h.record(Duration::from_secs(5), &[]);
        assert_eq!(h.components[&id].samples.len(), 100);
        let mut c = ComponentHistory {
            samples: VecDeque::new(),
            fragmented_since: None,
            conclusion: h.components[&id].conclusion,
        };
        c.push(sample_at(10), Duration::ZERO);
        c.push(sample_at(9), Duration::ZERO);
        assert_eq!(c.samples.len(), 1);
    }

    #[test]
    fn growth_makes_a_suspect_and_stopping_clears_it() {
        let mut h = fresh(60);
        let id = ComponentId::from_raw(2);
        for secs in 0..=120u64 {
            let s = snapshot(10 * MIB + secs * 200 * 1024, 0);
            h.record(Duration::from_secs(secs), &[(id, &s)]);
        }
        assert!(h.components[&id].conclusion.leak.is_some());
        let flat = snapshot(10 * MIB + 120 * 200 * 1024, 0);
        for secs in 121..=200u64 {
            h.record(Duration::from_secs(secs), &[(id, &flat)]);
        }
        assert!(h.components[&id].conclusion.leak.is_none());
    }

    #[test]
    fn the_most_samples_a_config_may_ask_for_still_finds_a_leak() {
        // A window sampled as densely as the history keeps: a 480th of it apart.
        let config = LeakConfig::default()
            .window(Duration::from_secs(48))
            .min_samples(usize::MAX);
        let mut h = History::new(config);
        let id = ComponentId::from_raw(3);
        for tenth in 0..=2 * 480u64 {
            let s = snapshot(10 * MIB + tenth * 20 * 1024, 0);
            h.record(Duration::from_millis(tenth * 100), &[(id, &s)]);
        }
        assert!(h.components[&id].conclusion.leak.is_some());
    }

    #[test]
    fn verdicts_are_staggered_and_follow_within_eight_samples() {
        let mut h = fresh(60);
        let ids: Vec<ComponentId> = (1..=16).map(ComponentId::from_raw).collect();
        let suspects = |h: &History| {
            ids.iter()
                .filter(|id| h.components[id].conclusion.leak.is_some())
                .count()
        };
        let mut first = None;
        for secs in 0..=200u64 {
            let s = snapshot(10 * MIB + secs * 200 * 1024, 0);
            let observed: Vec<_> = ids.iter().map(|&id| (id, &s)).collect();
            h.record(Duration::from_secs(secs), &observed);
            let n = suspects(&h);
            if n > 0 && first.is_none() {
                first = Some(secs);
                // One sample judges two of the sixteen.
                assert_eq!(n, 2);
            }
            if first.is_some_and(|f| secs >= f + JUDGE_EVERY - 1) {
                assert_eq!(n, ids.len(), "at {secs} s");
            }
        }
        assert!(first.is_some());
    }

    #[test]
    fn vanished_components_are_dropped() {
        let mut h = fresh(60);
        let (a, b) = (ComponentId::from_raw(1), ComponentId::from_raw(2));
        let s = snapshot(1, 0);
        h.record(Duration::from_secs(1), &[(a, &s), (b, &s)]);
        h.record(Duration::from_secs(2), &[(b, &s)]);
        assert!(!h.components.contains_key(&a));
        assert!(h.components.contains_key(&b));
        h.record(Duration::from_secs(3), &[]);
        assert!(h.components.is_empty());
    }

    #[test]
    fn fragmentation_is_timed() {
        let mut h = fresh(60);
        let id = ComponentId::from_raw(3);
        let idle = snapshot(MIB, 64 * MIB);
        let busy = snapshot(64 * MIB, MIB);
        h.record(Duration::from_secs(10), &[(id, &idle)]);
        h.record(Duration::from_secs(50), &[(id, &idle)]);
        assert_eq!(
            h.components[&id].conclusion.fragmented_for,
            Duration::from_secs(40)
        );
        h.record(Duration::from_secs(51), &[(id, &busy)]);
        assert_eq!(h.components[&id].conclusion.fragmented_for, Duration::ZERO);
        h.record(Duration::from_secs(52), &[(id, &idle)]);
        h.record(Duration::from_secs(112), &[(id, &idle)]);
        assert_eq!(
            h.components[&id].conclusion.fragmented_for,
            Duration::from_secs(60)
        );
    }

    #[test]
    fn conclusions_for_unknown_ids_are_none() {
        assert_eq!(conclusions(&[ComponentId::from_raw(u64::MAX)]), vec![None]);
    }

    #[test]
    fn the_clock_moves_forward() {
        let a = now();
        let b = now();
        assert!(b >= a);
    }
}
