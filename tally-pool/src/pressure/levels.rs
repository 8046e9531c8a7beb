//! From utilisation to a level: thresholds, hysteresis, a minimum dwell and the adaptive
//! rule (see the module docs of [`pressure`](super) for the formula). Pure: time comes in
//! as an argument, so tests drive it with synthetic clocks.

use std::time::{Duration, Instant};

use super::config::PressureConfig;
use crate::sys::budget::PressureLevel;

/// The rules of [`Levels::step`], taken from a [`PressureConfig`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Rules {
    /// Utilisation entering Moderate, High, Critical.
    pub(crate) thresholds: [f64; 3],
    /// How far below its threshold a level is left.
    pub(crate) hysteresis: f64,
    /// The least time a level holds before it is lowered.
    pub(crate) min_dwell: Duration,
    /// How far ahead the adaptive rule looks; zero turns it off.
    pub(crate) horizon: Duration,
}

impl From<&PressureConfig> for Rules {
    fn from(config: &PressureConfig) -> Self {
        Self {
            thresholds: config.thresholds,
            hysteresis: config.hysteresis,
            min_dwell: config.min_dwell,
            horizon: config.horizon,
        }
    }
}

impl Rules {
    /// The smoothing time constant of the growth rate: a quarter of the horizon, so the
    /// rate follows a change of trend well within the time it predicts over (and at least
    /// 10 ms, so that a zero horizon still gives a defined rate).
    fn tau(&self) -> f64 {
        (self.horizon.as_secs_f64() / 4.0).max(0.010)
    }
}

/// The highest level whose threshold, lowered by `shift`, `u` reaches.
fn level_of(u: f64, thresholds: [f64; 3], shift: f64) -> PressureLevel {
    let [moderate, high, critical] = thresholds;
    if u >= critical - shift {
        PressureLevel::Critical
    } else if u >= high - shift {
        PressureLevel::High
    } else if u >= moderate - shift {
        PressureLevel::Moderate
    } else {
        PressureLevel::Normal
    }
}

/// The level state of the monitor.
///
/// Invariant: `since` is when `level` was entered; `rate` is the smoothed growth rate of
/// the utilisation per second, defined once two samples have been seen (`last` holds the
/// previous one).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Levels {
    level: PressureLevel,
    since: Instant,
    rate: f64,
    last: Option<(Instant, f64)>,
    /// Whether the last step's level came from an escalation signal rather than the
    /// utilisation.
    escalated: bool,
}

impl Levels {
    /// Normal, entered at `now`.
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            level: PressureLevel::Normal,
            since: now,
            rate: 0.0,
            last: None,
            escalated: false,
        }
    }

    /// The current level.
    pub(crate) fn level(&self) -> PressureLevel {
        self.level
    }

    /// When the current level was entered.
    pub(crate) fn since(&self) -> Instant {
        self.since
    }

    /// The smoothed growth rate of the utilisation, per second.
    #[cfg(test)]
    fn rate(&self) -> f64 {
        self.rate
    }

    /// Whether the last step's level came from an escalation signal.
    pub(crate) fn escalated(&self) -> bool {
        self.escalated
    }

    /// Takes `level` as the current level from `now` (a level raised outside the monitor,
    /// by a mapping that crossed the budget).
    pub(crate) fn force(&mut self, level: PressureLevel, now: Instant) {
        if level != self.level {
            self.level = level;
            self.since = now;
        }
    }

    /// One tick: the utilisation `u` read at `now`, and whether a signal asks for one
    /// level more. Returns the new level when it changed.
    pub(crate) fn step(
        &mut self,
        rules: &Rules,
        now: Instant,
        u: f64,
        escalate: bool,
    ) -> Option<PressureLevel> {
        let u = if u.is_finite() { u.max(0.0) } else { 0.0 };
        if let Some((then, before)) = self.last {
            let dt = now.saturating_duration_since(then).as_secs_f64();
            if dt > 0.0 {
                let growth = (u - before) / dt;
                let alpha = 1.0 - (-dt / rules.tau()).exp();
                self.rate += alpha * (growth - self.rate);
            }
        }
        self.last = Some((now, u));
        let predicted = u + self.rate.max(0.0) * rules.horizon.as_secs_f64();
        let early = if rules.horizon.is_zero() {
            PressureLevel::Normal
        } else {
            level_of(predicted, rules.thresholds, 0.0)
        };
        let enter = level_of(u, rules.thresholds, 0.0).max(early);
        let hold = level_of(u, rules.thresholds, rules.hysteresis).max(early);
        let dwelt = now.saturating_duration_since(self.since) >= rules.min_dwell;
        let decide = |enter: PressureLevel, hold: PressureLevel| {
            if enter > self.level {
                enter
            } else if hold < self.level && dwelt {
                hold
            } else {
                self.level
            }
        };
        let plain = decide(enter, hold);
        let next = if escalate {
            decide(enter.up(), hold.up())
        } else {
            plain
        };
        self.escalated = next != plain;
        if next == self.level {
            return None;
        }
        self.level = next;
        self.since = now;
        Some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        Rules::from(&PressureConfig::default())
    }

    /// Feeds `samples` one `tick` apart from `start`; returns the level after each.
    fn run(
        levels: &mut Levels,
        rules: &Rules,
        start: Instant,
        tick: Duration,
        samples: &[f64],
    ) -> Vec<PressureLevel> {
        samples
            .iter()
            .enumerate()
            .map(|(i, &u)| {
                levels.step(rules, start + tick * i as u32, u, false);
                levels.level()
            })
            .collect()
    }

    #[test]
    fn thresholds_enter_levels_at_once() {
        let t0 = Instant::now();
        let mut l = Levels::new(t0);
        let r = Rules {
            horizon: Duration::ZERO,
            ..rules()
        };
        assert_eq!(l.step(&r, t0, 0.59, false), None);
        assert_eq!(l.step(&r, t0, 0.60, false), Some(PressureLevel::Moderate));
        assert_eq!(l.step(&r, t0, 0.95, false), Some(PressureLevel::Critical));
        assert_eq!(l.level(), PressureLevel::Critical);
    }

    #[test]
    fn hysteresis_and_dwell_keep_a_level_from_flapping() {
        let t0 = Instant::now();
        let r = Rules {
            horizon: Duration::ZERO,
            ..rules()
        };
        let mut l = Levels::new(t0);
        // Oscillating around 80 %, 10 ms apart, for 2 s: High once, never left.
        let samples: Vec<f64> = (0..200)
            .map(|i| if i % 2 == 0 { 0.805 } else { 0.78 })
            .collect();
        let seen = run(&mut l, &r, t0, Duration::from_millis(10), &samples);
        assert!(
            seen.iter().all(|&level| level == PressureLevel::High),
            "{seen:?}"
        );
        // Dropping below the hysteresis band leaves High only after the dwell.
        let t1 = t0 + Duration::from_secs(2);
        let mut l = Levels::new(t0);
        l.step(&r, t1, 0.85, false);
        assert_eq!(
            l.step(&r, t1 + Duration::from_millis(100), 0.70, false),
            None
        );
        assert_eq!(
            l.step(&r, t1 + Duration::from_millis(300), 0.70, false),
            Some(PressureLevel::Moderate)
        );
        // Within the band (75..80 %) nothing changes however long it lasts.
        let mut l = Levels::new(t0);
        l.step(&r, t0, 0.81, false);
        assert_eq!(l.step(&r, t0 + Duration::from_secs(60), 0.76, false), None);
    }

    #[test]
    fn without_hysteresis_or_dwell_the_same_input_flaps() {
        // The control for the test above: the rules, not the input, prevent flapping.
        let t0 = Instant::now();
        let r = Rules {
            horizon: Duration::ZERO,
            hysteresis: 0.0,
            min_dwell: Duration::ZERO,
            ..rules()
        };
        let mut l = Levels::new(t0);
        let samples: Vec<f64> = (0..20)
            .map(|i| if i % 2 == 0 { 0.805 } else { 0.78 })
            .collect();
        let seen = run(&mut l, &r, t0, Duration::from_millis(10), &samples);
        assert!(seen.contains(&PressureLevel::Moderate) && seen.contains(&PressureLevel::High));
    }

    #[test]
    fn a_steady_climb_enters_high_before_80_percent() {
        let t0 = Instant::now();
        let r = rules();
        let mut l = Levels::new(t0);
        // 50 % to 85 % at 10 points a second, sampled every 10 ms.
        let samples: Vec<f64> = (0..350).map(|i| 0.50 + 0.001 * f64::from(i)).collect();
        let seen = run(&mut l, &r, t0, Duration::from_millis(10), &samples);
        let first_high = seen
            .iter()
            .position(|&level| level >= PressureLevel::High)
            .unwrap();
        assert!(
            samples[first_high] < 0.80,
            "High entered at {}",
            samples[first_high]
        );
        // Rate 0.1/s over a 1 s horizon: entered near 70 %, not at the first sample.
        assert!(
            samples[first_high] > 0.65,
            "High entered at {}",
            samples[first_high]
        );
    }

    #[test]
    fn a_flat_79_percent_never_enters_high() {
        let t0 = Instant::now();
        let r = rules();
        let mut l = Levels::new(t0);
        let seen = run(&mut l, &r, t0, Duration::from_millis(10), &[0.79; 1000]);
        assert!(
            seen.iter().all(|&level| level == PressureLevel::Moderate),
            "{:?}",
            l
        );
        assert!(l.rate().abs() < 1e-9);
    }

    #[test]
    fn escalation_raises_one_step() {
        let t0 = Instant::now();
        let r = Rules {
            horizon: Duration::ZERO,
            ..rules()
        };
        let mut l = Levels::new(t0);
        assert_eq!(l.step(&r, t0, 0.10, true), Some(PressureLevel::Moderate));
        assert!(l.escalated());
        assert_eq!(l.step(&r, t0, 0.85, true), Some(PressureLevel::Critical));
        assert_eq!(l.step(&r, t0, 0.95, true), None, "Critical is the top");
    }

    #[test]
    fn forced_levels_start_their_dwell() {
        let t0 = Instant::now();
        let r = Rules {
            horizon: Duration::ZERO,
            ..rules()
        };
        let mut l = Levels::new(t0);
        let t1 = t0 + Duration::from_secs(5);
        l.force(PressureLevel::High, t1);
        assert_eq!(l.since(), t1);
        assert_eq!(l.step(&r, t1 + Duration::from_millis(10), 0.0, false), None);
        assert_eq!(
            l.step(&r, t1 + Duration::from_millis(300), 0.0, false),
            Some(PressureLevel::Normal)
        );
    }
}
