//! Leak suspects: a component whose live bytes keep growing over a window of samples.
//!
//! The detector is a pure function over one component's history ([`detect`]), so tests
//! feed it synthetic histories with explicit timestamps; the history itself lives in
//! `history.rs`.

use std::time::Duration;

/// Settings of the leak detector, given to [`configure_leaks`](super::configure_leaks).
///
/// A component is a **leak suspect** when all of these hold over its sampled history:
///
/// 1. **Warm-up:** the history covers at least [`window`](Self::window) (default 5
///    minutes) and the window holds at least [`min_samples`](Self::min_samples) samples
///    (default 10).
/// 2. **Robust growth:** the Theil–Sen slope of live bytes over the samples in the window
///    (the median of the slopes between every pair of samples; at most 16 evenly spaced
///    samples are used) is positive. A single burst early or late in the window moves
///    few pairwise slopes and leaves the median flat; steady growth moves them all.
/// 3. **Large enough:** the growth over the window (slope × time covered) exceeds both
///    [`min_growth_ratio`](Self::min_growth_ratio) × the live bytes at the window's start
///    (default 10 %) and [`min_growth_bytes`](Self::min_growth_bytes) (default 1 MiB).
///    Once a component is a suspect, only the byte floor applies: a steady leak adds to
///    the live bytes the ratio is taken of, and would otherwise hide itself after about
///    ten windows.
/// 4. **Still growing:** the Theil–Sen slope over the most recent half of the window is
///    positive too, so a component stops being a suspect within half a window of its
///    growth stopping.
///
/// Each sample judges one component in eight (staggered), so a verdict follows its
/// history within eight samples.
///
/// ```
/// use std::time::Duration;
/// use tally_pool::stats::{self, LeakConfig};
///
/// let config = LeakConfig::default()
///     .window(Duration::from_secs(60))
///     .min_growth_ratio(0.25)
///     .min_growth_bytes(4 << 20)
///     .min_samples(20);
/// assert_eq!(config.get_window(), Duration::from_secs(60));
/// stats::configure_leaks(config);
/// # stats::configure_leaks(LeakConfig::default());
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LeakConfig {
    window: Duration,
    min_growth_ratio: f64,
    min_growth_bytes: u64,
    min_samples: usize,
}

/// The shortest window: one second.
const MIN_WINDOW: Duration = Duration::from_secs(1);

/// The fewest samples a window may ask for: a slope needs a few pairs.
const MIN_SAMPLES: usize = 3;

/// Samples closer together than `window / SPACING_DIVISOR` replace the newest one in the
/// history instead of adding to its ring, so that a full ring (`HISTORY_CAPACITY`, 512)
/// spans at least the window at any sampling rate: 512 samples spaced `window / 480` cover
/// 1.06 windows.
pub(super) const SPACING_DIVISOR: u32 = 480;

/// The most samples a window may ask for: the history keeps samples at least
/// `window / SPACING_DIVISOR` apart, so a window never holds more.
const MAX_SAMPLES: usize = SPACING_DIVISOR as usize;

/// At most this many samples of a window go into a Theil–Sen estimate (120 pairs), so that
/// a sample judges a hundred components in well under 200 µs.
const MAX_POINTS: usize = 16;

impl Default for LeakConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl LeakConfig {
    /// The defaults, as a constant for the process-wide setting.
    pub(crate) const DEFAULT: Self = Self {
        window: Duration::from_secs(300),
        min_growth_ratio: 0.10,
        min_growth_bytes: 1 << 20,
        min_samples: 10,
    };
}

impl LeakConfig {
    /// The span of history judged (default 5 minutes; at least one second).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tally_pool::stats::LeakConfig;
    /// let c = LeakConfig::default().window(Duration::from_millis(10));
    /// assert_eq!(c.get_window(), Duration::from_secs(1)); // raised to the minimum
    /// ```
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window.max(MIN_WINDOW);
        self
    }

    /// Growth must exceed this share of the live bytes at the window's start (default
    /// `0.10`; negative or NaN counts as `0`).
    ///
    /// ```
    /// use tally_pool::stats::LeakConfig;
    /// assert_eq!(LeakConfig::default().min_growth_ratio(f64::NAN).get_min_growth_ratio(), 0.0);
    /// ```
    pub fn min_growth_ratio(mut self, ratio: f64) -> Self {
        self.min_growth_ratio = if ratio > 0.0 { ratio } else { 0.0 };
        self
    }

    /// Growth must exceed this many bytes (default 1 MiB).
    ///
    /// ```
    /// use tally_pool::stats::LeakConfig;
    /// assert_eq!(LeakConfig::default().min_growth_bytes(0).get_min_growth_bytes(), 0);
    /// ```
    pub fn min_growth_bytes(mut self, bytes: u64) -> Self {
        self.min_growth_bytes = bytes;
        self
    }

    /// The window must hold at least this many samples (default 10, at least 3, at most
    /// 480: the history keeps samples at least a 480th of the window apart, so a window
    /// never holds more, and a higher figure would turn the detector off).
    ///
    /// ```
    /// use tally_pool::stats::LeakConfig;
    /// assert_eq!(LeakConfig::default().min_samples(1).get_min_samples(), 3);
    /// assert_eq!(LeakConfig::default().min_samples(600).get_min_samples(), 480);
    /// ```
    pub fn min_samples(mut self, samples: usize) -> Self {
        self.min_samples = samples.clamp(MIN_SAMPLES, MAX_SAMPLES);
        self
    }

    /// The window.
    ///
    /// ```
    /// use tally_pool::stats::LeakConfig;
    /// assert_eq!(LeakConfig::default().get_window().as_secs(), 300);
    /// ```
    pub fn get_window(&self) -> Duration {
        self.window
    }

    /// The growth ratio.
    ///
    /// ```
    /// use tally_pool::stats::LeakConfig;
    /// assert_eq!(LeakConfig::default().get_min_growth_ratio(), 0.10);
    /// ```
    pub fn get_min_growth_ratio(&self) -> f64 {
        self.min_growth_ratio
    }

    /// The byte floor.
    ///
    /// ```
    /// use tally_pool::stats::LeakConfig;
    /// assert_eq!(LeakConfig::default().get_min_growth_bytes(), 1 << 20);
    /// ```
    pub fn get_min_growth_bytes(&self) -> u64 {
        self.min_growth_bytes
    }

    /// The sample floor.
    ///
    /// ```
    /// use tally_pool::stats::LeakConfig;
    /// assert_eq!(LeakConfig::default().get_min_samples(), 10);
    /// ```
    pub fn get_min_samples(&self) -> usize {
        self.min_samples
    }
}

/// One sample of a component: when (since an arbitrary origin), and its live bytes and
/// objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sample {
    pub(crate) at: Duration,
    pub(crate) live_bytes: u64,
    pub(crate) live_objects: u64,
}

/// Why a component is a suspect.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct LeakVerdict {
    /// The robust slope, in bytes per minute.
    pub(crate) growth_bytes_per_min: f64,
    /// The configured window.
    pub(crate) window: Duration,
}

/// Whether `history` (sorted by time, oldest first) makes its component a leak suspect
/// under `config`, by the rule documented on [`LeakConfig`]; `suspect` says whether it is
/// one already (then the ratio floor no longer applies).
pub(crate) fn detect(
    history: &[Sample],
    config: &LeakConfig,
    suspect: bool,
) -> Option<LeakVerdict> {
    let first = history.first()?;
    let last = history.last()?;
    let span = last.at.checked_sub(first.at)?;
    if span < config.window {
        return None; // warm-up
    }
    let in_window = tail_since(history, last.at.saturating_sub(config.window));
    if in_window.len() < config.min_samples {
        return None;
    }
    let slope = theil_sen(in_window)?;
    if slope <= 0.0 {
        return None;
    }
    let window_start = in_window.first()?;
    let covered = last.at.saturating_sub(window_start.at).as_secs_f64();
    let growth = slope * covered;
    let ratio_floor = if suspect {
        0.0
    } else {
        config.min_growth_ratio * window_start.live_bytes as f64
    };
    // Growth must exceed both floors; the cast of the byte floor to f64 is exact enough.
    if growth <= ratio_floor || growth <= config.min_growth_bytes as f64 {
        return None;
    }
    let recent = tail_since(history, last.at.saturating_sub(config.window / 2));
    if theil_sen(recent).is_none_or(|recent_slope| recent_slope <= 0.0) {
        return None;
    }
    Some(LeakVerdict {
        growth_bytes_per_min: slope * 60.0,
        window: config.window,
    })
}

/// The samples at or after `since` (the history is sorted).
fn tail_since(history: &[Sample], since: Duration) -> &[Sample] {
    let start = history.partition_point(|s| s.at < since);
    history.get(start..).unwrap_or(&[])
}

/// The Theil–Sen slope of live bytes over time, in bytes per second: the median of the
/// slopes of every pair of samples with distinct times, over at most [`MAX_POINTS`]
/// evenly spaced samples. `None` with fewer than two distinct times.
fn theil_sen(samples: &[Sample]) -> Option<f64> {
    let points = spread(samples, MAX_POINTS);
    let mut slopes = Vec::with_capacity(points.len() * points.len().saturating_sub(1) / 2);
    for (i, a) in points.iter().enumerate() {
        for b in points.iter().skip(i + 1) {
            let dt = b.at.saturating_sub(a.at).as_secs_f64();
            if dt > 0.0 {
                slopes.push((b.live_bytes as f64 - a.live_bytes as f64) / dt);
            }
        }
    }
    median(&mut slopes)
}

/// At most `max` samples, evenly spaced over `samples`, first and last included.
fn spread(samples: &[Sample], max: usize) -> Vec<Sample> {
    if samples.len() <= max || max < 2 {
        return samples.to_vec();
    }
    let last = samples.len() - 1;
    (0..max)
        .filter_map(|k| samples.get(k * last / (max - 1)).copied())
        .collect()
}

/// The median (the mean of the middle two for an even count); `None` when empty.
///
/// Selects rather than sorts (linear time): a sample judges every component.
fn median(values: &mut [f64]) -> Option<f64> {
    let (len, mid) = (values.len(), values.len() / 2);
    if len == 0 {
        return None;
    }
    let (below, &mut upper, _) = values.select_nth_unstable_by(mid, f64::total_cmp);
    if len % 2 == 1 {
        return Some(upper);
    }
    // The lower middle is the largest of the values below the upper one.
    let lower = below.iter().copied().max_by(f64::total_cmp)?;
    Some((lower + upper) / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    /// One sample a second for `secs` seconds, live bytes from `f(second)`.
    fn history(secs: u64, f: impl Fn(u64) -> u64) -> Vec<Sample> {
        (0..=secs)
            .map(|t| Sample {
                at: Duration::from_secs(1000 + t),
                live_bytes: f(t),
                live_objects: f(t) / 64,
            })
            .collect()
    }

    fn config() -> LeakConfig {
        LeakConfig::default().window(Duration::from_secs(60))
    }

    #[test]
    fn steady_growth_is_a_suspect() {
        // 10 MiB, growing 100 KiB a second: 6 MiB a minute.
        let h = history(120, |t| 10 * MIB + t * 100 * 1024);
        let verdict = detect(&h, &config(), false).unwrap();
        assert!((verdict.growth_bytes_per_min - 6000.0 * 1024.0).abs() < 1.0);
        assert_eq!(verdict.window, Duration::from_secs(60));
    }

    #[test]
    fn noisy_growth_is_still_a_suspect() {
        // An outlier every 7 s does not move the median.
        let h = history(120, |t| {
            let base = 10 * MIB + t * 100 * 1024;
            if t % 7 == 0 {
                base + 50 * MIB
            } else {
                base
            }
        });
        assert!(detect(&h, &config(), false).is_some());
    }

    #[test]
    fn warm_up_needs_the_window_covered() {
        let h = history(59, |t| t * 10 * MIB);
        assert!(detect(&h, &config(), false).is_none());
        let h = history(60, |t| t * 10 * MIB);
        assert!(detect(&h, &config(), false).is_some());
    }

    #[test]
    fn warm_up_needs_enough_samples() {
        // Five samples over two minutes: too few for the default ten.
        let h: Vec<Sample> = (0..5)
            .map(|k| Sample {
                at: Duration::from_secs(k * 30),
                live_bytes: k * 10 * MIB,
                live_objects: 0,
            })
            .collect();
        assert!(detect(&h, &config(), false).is_none());
        assert!(detect(&h, &config().min_samples(3), false).is_some());
    }

    #[test]
    fn one_burst_then_flat_is_not() {
        // 10 MiB, then +40 MiB at once, then flat for the rest of the window.
        let h = history(120, |t| if t < 70 { 10 * MIB } else { 50 * MIB });
        assert!(detect(&h, &config(), false).is_none());
    }

    #[test]
    fn a_burst_mid_window_is_not_either() {
        // Pairs across a burst in the middle are half of all pairs, but the recent half
        // of the window is flat.
        let h = history(120, |t| if t < 90 { 10 * MIB } else { 50 * MIB });
        assert!(detect(&h, &config(), false).is_none());
    }

    #[test]
    fn growth_below_the_byte_floor_is_not() {
        // 1 KiB a second from zero: 60 KiB over the window, above any ratio, below 1 MiB.
        let h = history(120, |t| t * 1024);
        assert!(detect(&h, &config(), false).is_none());
        // Just above the floor: 1 MiB + 60 KiB over the window.
        let h = history(120, |t| t * (MIB / 60 + 1024));
        assert!(detect(&h, &config(), false).is_some());
    }

    #[test]
    fn growth_below_the_ratio_is_not() {
        // 1 GiB live, +60 MiB over the window: above 1 MiB, below 10 % (about 104 MiB).
        let h = history(120, |t| 1024 * MIB + t * MIB);
        assert!(detect(&h, &config(), false).is_none());
        // +120 MiB over the window is above 10 % of the window's start.
        let h = history(120, |t| 1024 * MIB + t * 2 * MIB);
        assert!(detect(&h, &config(), false).is_some());
    }

    #[test]
    fn a_steady_leak_stays_a_suspect_however_much_it_has_accumulated() {
        // 1 MiB a second for twenty minutes on a 1 MiB base: over the last minute the
        // growth (60 MiB) is below 10 % of the 1,141 MiB at the window's start.
        let h = history(1200, |t| MIB + t * MIB);
        assert!(
            detect(&h, &config(), false).is_none(),
            "a newcomer to the rule"
        );
        assert!(detect(&h, &config(), true).is_some(), "a suspect stays one");
        // It still stops being one when the growth stops.
        let stopped = history(1200, |t| MIB + t.min(1140) * MIB);
        assert!(detect(&stopped, &config(), true).is_none());
    }

    #[test]
    fn growth_that_stops_is_no_longer_a_suspect() {
        let growing = |t: u64| 10 * MIB + t.min(120) * 200 * 1024;
        assert!(detect(&history(120, growing), &config(), false).is_some());
        // Flat since t = 120; within half a window it is cleared.
        assert!(detect(&history(135, growing), &config(), false).is_some());
        assert!(detect(&history(151, growing), &config(), false).is_none());
        assert!(detect(&history(300, growing), &config(), false).is_none());
    }

    #[test]
    fn shrinking_and_flat_are_not() {
        assert!(detect(&history(120, |_| 10 * MIB), &config(), false).is_none());
        assert!(detect(&history(120, |t| 500 * MIB - t * MIB), &config(), false).is_none());
        assert!(detect(&[], &config(), false).is_none());
    }

    #[test]
    fn identical_timestamps_give_no_slope() {
        let h = vec![
            Sample {
                at: Duration::ZERO,
                live_bytes: 0,
                live_objects: 0,
            };
            20
        ];
        assert_eq!(theil_sen(&h), None);
        assert!(detect(&h, &config().window(Duration::from_secs(1)), false).is_none());
    }

    #[test]
    fn long_windows_are_subsampled() {
        let h = history(10_000, |t| t * MIB);
        let picked = spread(&h, MAX_POINTS);
        assert_eq!(picked.len(), MAX_POINTS);
        assert_eq!(picked.first(), h.first());
        assert_eq!(picked.last(), h.last());
        assert!((theil_sen(&h).unwrap() - MIB as f64).abs() < 1e-6);
    }

    #[test]
    fn median_of_even_and_odd() {
        assert_eq!(median(&mut []), None);
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&mut [7.0]), Some(7.0));
        assert_eq!(median(&mut [5.0, 5.0, 1.0, 9.0, 5.0, 2.0]), Some(5.0));
        assert_eq!(median(&mut [-1.0, 10.0]), Some(4.5));
    }

    #[test]
    fn config_clamps() {
        let c = LeakConfig::default()
            .window(Duration::ZERO)
            .min_growth_ratio(-1.0)
            .min_samples(0);
        assert_eq!(c.get_window(), MIN_WINDOW);
        assert_eq!(c.get_min_growth_ratio(), 0.0);
        assert_eq!(c.get_min_samples(), MIN_SAMPLES);
    }
}
