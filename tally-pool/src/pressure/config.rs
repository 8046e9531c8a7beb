//! [`PressureConfig`]: the budget, how often the OS is read, the thresholds and the rules
//! that keep levels from flapping; and [`PressureError`].

use std::path::{Path, PathBuf};
use std::time::Duration;

/// The longest interval between ticks: longer ones would be no monitor at all, and a
/// deadline that far ahead may not fit an `Instant`.
const MAX_INTERVAL: Duration = Duration::from_secs(24 * 60 * 60);

/// How the pressure monitor reads and judges memory use. Built from [`Default`] and
/// adjusted with its builder methods; checked by
/// [`PressureMonitor::start`](super::PressureMonitor::start).
///
/// | setting | default | what |
/// |---|---|---|
/// | [`budget`](Self::budget) | none | bytes all pools, arenas and the allocator may map |
/// | [`interval`](Self::interval) | 10 ms | how often the sources are read |
/// | [`root`](Self::root) | `/` | the directory OS files are read under |
/// | [`thresholds`](Self::thresholds) | 0.60, 0.80, 0.90 | utilisation entering Moderate, High, Critical |
/// | [`hysteresis`](Self::hysteresis) | 0.05 | a level is left 5 points below its threshold |
/// | [`min_dwell`](Self::min_dwell) | 250 ms | the least time a level holds before it is lowered |
/// | [`horizon`](Self::horizon) | 1 s | how far ahead the adaptive rule looks (zero: off) |
/// | [`psi_threshold`](Self::psi_threshold) | 10 % | PSI `some avg10` above which the level goes one step up |
/// | [`idle_after`](Self::idle_after) | 1 s | how long without a slow path makes a cache or pool idle |
/// | [`reclaim_every`](Self::reclaim_every) | 100 ms | how often reclamation is asked again while the level holds |
/// | [`grow_ahead`](Self::grow_ahead) | on | map and fault in growing pools' next chunks off the acquire path |
///
/// ```
/// use std::time::Duration;
/// use tally_pool::pressure::PressureConfig;
/// let config = PressureConfig::default()
///     .budget(8 << 30)
///     .interval(Duration::from_millis(10))
///     .thresholds(0.5, 0.75, 0.9);
/// assert_eq!(config.budget_bytes(), Some(8 << 30));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct PressureConfig {
    pub(crate) budget: Option<u64>,
    pub(crate) interval: Duration,
    pub(crate) root: PathBuf,
    pub(crate) thresholds: [f64; 3],
    pub(crate) hysteresis: f64,
    pub(crate) min_dwell: Duration,
    pub(crate) horizon: Duration,
    pub(crate) psi_threshold: f64,
    pub(crate) idle_after: Duration,
    pub(crate) reclaim_every: Duration,
    pub(crate) grow_ahead: bool,
}

impl Default for PressureConfig {
    fn default() -> Self {
        Self {
            budget: None,
            interval: Duration::from_millis(10),
            root: PathBuf::from("/"),
            thresholds: [0.60, 0.80, 0.90],
            hysteresis: 0.05,
            min_dwell: Duration::from_millis(250),
            horizon: Duration::from_secs(1),
            psi_threshold: 10.0,
            idle_after: Duration::from_secs(1),
            reclaim_every: Duration::from_millis(100),
            grow_ahead: true,
        }
    }
}

impl PressureConfig {
    /// Sets the own budget: the bytes every pool, arena and the allocator together may
    /// map. A mapping that crosses a threshold of it raises the level before it returns.
    ///
    /// ```
    /// use tally_pool::pressure::PressureConfig;
    /// assert_eq!(PressureConfig::default().budget(1 << 30).budget_bytes(), Some(1 << 30));
    /// ```
    #[must_use]
    pub fn budget(mut self, bytes: u64) -> Self {
        self.budget = Some(bytes);
        self
    }

    /// The own budget, if set.
    ///
    /// ```
    /// use tally_pool::pressure::PressureConfig;
    /// assert_eq!(PressureConfig::default().budget_bytes(), None);
    /// ```
    pub fn budget_bytes(&self) -> Option<u64> {
        self.budget
    }

    /// Sets how often the monitor reads its sources (default 10 ms; more than zero, at
    /// most a day).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tally_pool::pressure::PressureConfig;
    /// let c = PressureConfig::default().interval(Duration::from_millis(50));
    /// # let _ = c;
    /// ```
    #[must_use]
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Reads the OS files (`proc/self/cgroup`, `sys/fs/cgroup/…`, `proc/meminfo`,
    /// `proc/pressure/memory`, `proc/self/status`, `proc/self/limits`) under `dir` instead
    /// of `/`: for tests on fixture trees. Under any root but `/` the rlimits come from
    /// `dir/proc/self/limits` rather than from `getrlimit`.
    ///
    /// ```
    /// use tally_pool::pressure::PressureConfig;
    /// let c = PressureConfig::default().root("tests/fixtures/pressure/v2");
    /// # let _ = c;
    /// ```
    #[must_use]
    pub fn root(mut self, dir: impl AsRef<Path>) -> Self {
        self.root = dir.as_ref().to_path_buf();
        self
    }

    /// Sets the utilisations (shares of the limit, `0 < moderate < high < critical <= 1`)
    /// at which Moderate, High and Critical are entered. Defaults: 0.60, 0.80, 0.90.
    ///
    /// ```
    /// use tally_pool::pressure::PressureConfig;
    /// let c = PressureConfig::default().thresholds(0.7, 0.85, 0.95);
    /// # let _ = c;
    /// ```
    #[must_use]
    pub fn thresholds(mut self, moderate: f64, high: f64, critical: f64) -> Self {
        self.thresholds = [moderate, high, critical];
        self
    }

    /// Sets how far below its threshold the utilisation must fall before a level is left
    /// (a share: 0.05 is 5 points, the default).
    ///
    /// ```
    /// use tally_pool::pressure::PressureConfig;
    /// let c = PressureConfig::default().hysteresis(0.1);
    /// # let _ = c;
    /// ```
    #[must_use]
    pub fn hysteresis(mut self, share: f64) -> Self {
        self.hysteresis = share;
        self
    }

    /// Sets the least time a level holds before it may be lowered (default 250 ms).
    /// Raising never waits.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tally_pool::pressure::PressureConfig;
    /// let c = PressureConfig::default().min_dwell(Duration::from_secs(1));
    /// # let _ = c;
    /// ```
    #[must_use]
    pub fn min_dwell(mut self, dwell: Duration) -> Self {
        self.min_dwell = dwell;
        self
    }

    /// Sets the horizon of the adaptive rule (default 1 s): a level is entered early when
    /// the smoothed growth rate would reach its threshold within it. Zero turns the rule
    /// off.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tally_pool::pressure::PressureConfig;
    /// let c = PressureConfig::default().horizon(Duration::ZERO); // no early entry
    /// # let _ = c;
    /// ```
    #[must_use]
    pub fn horizon(mut self, horizon: Duration) -> Self {
        self.horizon = horizon;
        self
    }

    /// Sets the PSI `some avg10` (percent of time stalled on memory) above which the
    /// level goes one step up (default 10).
    ///
    /// ```
    /// use tally_pool::pressure::PressureConfig;
    /// let c = PressureConfig::default().psi_threshold(25.0);
    /// # let _ = c;
    /// ```
    #[must_use]
    pub fn psi_threshold(mut self, percent: f64) -> Self {
        self.psi_threshold = percent;
        self
    }

    /// Sets how long a thread cache or a pool must go without a slow path to count as
    /// idle when reclamation asks (default 1 s).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tally_pool::pressure::PressureConfig;
    /// let c = PressureConfig::default().idle_after(Duration::from_millis(200));
    /// # let _ = c;
    /// ```
    #[must_use]
    pub fn idle_after(mut self, idle_after: Duration) -> Self {
        self.idle_after = idle_after;
        self
    }

    /// Sets how often reclamation is asked again while a level above Normal holds
    /// (default 100 ms); it is always asked on entering a level.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tally_pool::pressure::PressureConfig;
    /// let c = PressureConfig::default().reclaim_every(Duration::from_secs(1));
    /// # let _ = c;
    /// ```
    #[must_use]
    pub fn reclaim_every(mut self, period: Duration) -> Self {
        self.reclaim_every = period;
        self
    }

    /// Turns growth ahead of demand on or off (default on): each tick, and every 100 µs
    /// between ticks while pools grow, every registered component short of ready memory
    /// maps and faults in its next chunks on the monitor thread
    /// ([`Source::grow_ahead`](crate::stats::Source::grow_ahead)).
    ///
    /// ```
    /// use tally_pool::pressure::PressureConfig;
    /// let c = PressureConfig::default().grow_ahead(false);
    /// # let _ = c;
    /// ```
    #[must_use]
    pub fn grow_ahead(mut self, on: bool) -> Self {
        self.grow_ahead = on;
        self
    }

    /// Checks the settings.
    pub(crate) fn validate(&self) -> Result<(), PressureError> {
        let [m, h, c] = self.thresholds;
        let share = |x: f64| x.is_finite() && x > 0.0 && x <= 1.0;
        if !(share(m) && share(h) && share(c) && m < h && h < c) {
            return Err(PressureError::InvalidConfig(format!(
                "thresholds must satisfy 0 < moderate < high < critical <= 1, got {m}, {h}, {c}"
            )));
        }
        if !(self.hysteresis.is_finite() && self.hysteresis >= 0.0 && self.hysteresis < m) {
            return Err(PressureError::InvalidConfig(format!(
                "hysteresis must be at least 0 and below the moderate threshold {m}, got {}",
                self.hysteresis
            )));
        }
        if self.interval.is_zero() || self.interval > MAX_INTERVAL {
            return Err(PressureError::InvalidConfig(format!(
                "interval must be more than zero and at most a day, got {:?}",
                self.interval
            )));
        }
        if self.budget == Some(0) {
            return Err(PressureError::InvalidConfig(
                "a budget of 0 bytes leaves nothing to map; leave it unset for none".to_owned(),
            ));
        }
        if !self.psi_threshold.is_finite() {
            return Err(PressureError::InvalidConfig(
                "psi_threshold must be a finite percentage".to_owned(),
            ));
        }
        Ok(())
    }
}

/// Why the pressure monitor did not start.
///
/// ```
/// use tally_pool::pressure::{PressureConfig, PressureError, PressureMonitor};
/// let bad = PressureConfig::default().thresholds(0.9, 0.8, 0.95);
/// assert!(matches!(PressureMonitor::start(bad), Err(PressureError::InvalidConfig(_))));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PressureError {
    /// A monitor is already running in this process; drop it before starting another.
    #[error("a pressure monitor is already running; drop it before starting another")]
    AlreadyRunning,
    /// A setting is out of range.
    #[error("invalid pressure configuration: {0}")]
    InvalidConfig(String),
    /// The OS refused to start the monitor thread.
    #[error("could not start the pressure monitor thread: {0}")]
    Spawn(#[source] std::io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_settings_are_refused() {
        assert!(PressureConfig::default().validate().is_ok());
        assert!(PressureConfig::default()
            .interval(MAX_INTERVAL)
            .validate()
            .is_ok());
        let bad = [
            PressureConfig::default().thresholds(0.8, 0.6, 0.9),
            PressureConfig::default().thresholds(0.0, 0.6, 0.9),
            PressureConfig::default().thresholds(0.6, 0.8, 1.5),
            PressureConfig::default().thresholds(f64::NAN, 0.8, 0.9),
            PressureConfig::default().hysteresis(0.7),
            PressureConfig::default().hysteresis(-0.1),
            PressureConfig::default().interval(Duration::ZERO),
            PressureConfig::default().interval(Duration::MAX),
            PressureConfig::default().interval(MAX_INTERVAL + Duration::from_nanos(1)),
            PressureConfig::default().budget(0),
            PressureConfig::default().psi_threshold(f64::INFINITY),
        ];
        for config in bad {
            assert!(
                matches!(config.validate(), Err(PressureError::InvalidConfig(_))),
                "{config:?}"
            );
        }
    }
}
