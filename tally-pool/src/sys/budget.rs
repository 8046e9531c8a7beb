//! The few atomics that memory pressure shares with the slow paths below it: the
//! process-wide count of bytes mapped, the current [`PressureLevel`] and the byte thresholds
//! of the own budget.
//!
//! [`map`](super::map), [`map_aligned`](super::map_aligned) and the drop of a
//! [`Region`](super::Region) keep the count exact ([`on_map`], [`on_unmap`]); a mapping that
//! crosses a threshold raises the level before `map` returns, so the acquire that crossed
//! it already sees the new level. Lowering a level is the pressure monitor's job (it applies
//! hysteresis and a minimum dwell), as is setting the thresholds.
//!
//! Nothing here allocates, locks or calls the OS: the check inside `map` is two relaxed
//! loads and a compare when no threshold is crossed. These are plain `std` atomics even
//! under loom: they are counters read by the monitor, not part of any modelled protocol.

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

/// How close the process is to the tightest memory limit that applies to it.
///
/// Levels are ordered, `Normal` lowest. The pressure monitor sets the level from the
/// utilisation of every source it reads (the own budget, the cgroup, the rlimits, the
/// system); a mapping that crosses a budget threshold raises it at once.
///
/// ```
/// use tally_pool::pressure::PressureLevel;
/// assert!(PressureLevel::Normal < PressureLevel::Moderate);
/// assert!(PressureLevel::High < PressureLevel::Critical);
/// assert_eq!(PressureLevel::High.as_str(), "high");
/// assert_eq!(PressureLevel::default(), PressureLevel::Normal);
/// ```
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum PressureLevel {
    /// Below the first threshold (60 % by default): nothing to do.
    #[default]
    Normal = 0,
    /// From the first threshold (60 %): thread caches idle for a while are flushed.
    Moderate = 1,
    /// From the second threshold (80 %): idle pools give back free chunks beyond their
    /// reserve.
    High = 2,
    /// From the third threshold (90 %): every pool gives back all it can beyond its
    /// reserve; pools configured to refuse stop growing.
    Critical = 3,
}

impl PressureLevel {
    /// Every level, lowest first.
    ///
    /// ```
    /// use tally_pool::pressure::PressureLevel;
    /// assert_eq!(PressureLevel::ALL.len(), 4);
    /// assert!(PressureLevel::ALL.windows(2).all(|w| w[0] < w[1]));
    /// ```
    pub const ALL: [PressureLevel; 4] = [
        PressureLevel::Normal,
        PressureLevel::Moderate,
        PressureLevel::High,
        PressureLevel::Critical,
    ];

    /// The lowercase name used in reports and events.
    ///
    /// ```
    /// use tally_pool::pressure::PressureLevel;
    /// assert_eq!(PressureLevel::Moderate.as_str(), "moderate");
    /// ```
    pub const fn as_str(self) -> &'static str {
        match self {
            PressureLevel::Normal => "normal",
            PressureLevel::Moderate => "moderate",
            PressureLevel::High => "high",
            PressureLevel::Critical => "critical",
        }
    }

    /// The level stored as `value`; values above 3 read as `Critical`.
    ///
    /// ```
    /// use tally_pool::pressure::PressureLevel;
    /// assert_eq!(PressureLevel::from_u8(2), PressureLevel::High);
    /// assert_eq!(PressureLevel::from_u8(200), PressureLevel::Critical);
    /// ```
    pub const fn from_u8(value: u8) -> Self {
        match value {
            0 => PressureLevel::Normal,
            1 => PressureLevel::Moderate,
            2 => PressureLevel::High,
            _ => PressureLevel::Critical,
        }
    }

    /// The next level up, or `Critical` itself.
    ///
    /// ```
    /// use tally_pool::pressure::PressureLevel;
    /// assert_eq!(PressureLevel::Normal.up(), PressureLevel::Moderate);
    /// assert_eq!(PressureLevel::Critical.up(), PressureLevel::Critical);
    /// ```
    pub const fn up(self) -> Self {
        Self::from_u8(self as u8 + 1)
    }
}

impl std::fmt::Display for PressureLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Bytes currently mapped through [`super::map`] and [`super::map_aligned`].
static MAPPED: AtomicUsize = AtomicUsize::new(0);

/// The current level, a [`PressureLevel`] as `u8`.
static LEVEL: AtomicU8 = AtomicU8::new(PressureLevel::Normal as u8);

/// Mapped bytes at which the own budget enters Moderate, High and Critical; `usize::MAX`
/// while no budget is set. Ordered: `THRESHOLDS[0] <= THRESHOLDS[1] <= THRESHOLDS[2]` once
/// [`set_thresholds`] has run (it sorts them).
static THRESHOLDS: [AtomicUsize; 3] = [
    AtomicUsize::new(usize::MAX),
    AtomicUsize::new(usize::MAX),
    AtomicUsize::new(usize::MAX),
];

/// Bytes mapped by the crate now: every live [`Region`](super::Region).
pub(crate) fn mapped() -> usize {
    MAPPED.load(Ordering::Relaxed)
}

/// The current pressure level: one relaxed load.
#[inline]
pub(crate) fn level() -> PressureLevel {
    PressureLevel::from_u8(LEVEL.load(Ordering::Relaxed))
}

/// Sets the current level (the monitor's decision, up or down).
pub(crate) fn set_level(level: PressureLevel) {
    LEVEL.store(level as u8, Ordering::Relaxed);
}

/// Replaces the level `current` by `new`; fails with the level found when another thread
/// (a mapping that crossed the budget) changed it meanwhile.
pub(crate) fn replace_level(
    current: PressureLevel,
    new: PressureLevel,
) -> Result<(), PressureLevel> {
    LEVEL
        .compare_exchange(
            current as u8,
            new as u8,
            Ordering::Relaxed,
            Ordering::Relaxed,
        )
        .map(|_| ())
        .map_err(PressureLevel::from_u8)
}

/// Raises the level to at least `level`; returns the level before.
pub(crate) fn raise_level(level: PressureLevel) -> PressureLevel {
    PressureLevel::from_u8(LEVEL.fetch_max(level as u8, Ordering::Relaxed))
}

/// Sets the mapped-byte thresholds of the own budget for Moderate, High and Critical
/// (sorted, so that a higher level never has a lower threshold).
pub(crate) fn set_thresholds(moderate: usize, high: usize, critical: usize) {
    let mut t = [moderate, high, critical];
    t.sort_unstable();
    for (slot, value) in THRESHOLDS.iter().zip(t) {
        slot.store(value, Ordering::Relaxed);
    }
}

/// Removes the budget: no mapping raises the level any more.
pub(crate) fn clear_thresholds() {
    for slot in &THRESHOLDS {
        slot.store(usize::MAX, Ordering::Relaxed);
    }
}

/// The level the own budget alone gives `bytes` mapped (no hysteresis).
pub(crate) fn level_for(bytes: usize) -> PressureLevel {
    level_in(
        bytes,
        [
            THRESHOLDS[0].load(Ordering::Relaxed),
            THRESHOLDS[1].load(Ordering::Relaxed),
            THRESHOLDS[2].load(Ordering::Relaxed),
        ],
    )
}

/// The level `bytes` reaches against the sorted `thresholds` of Moderate, High, Critical.
fn level_in(bytes: usize, thresholds: [usize; 3]) -> PressureLevel {
    let [moderate, high, critical] = thresholds;
    if bytes >= critical {
        PressureLevel::Critical
    } else if bytes >= high {
        PressureLevel::High
    } else if bytes >= moderate {
        PressureLevel::Moderate
    } else {
        PressureLevel::Normal
    }
}

/// Counts `len` bytes just mapped; raises the level if the count crossed a threshold.
#[inline]
pub(crate) fn on_map(len: usize) {
    let now = MAPPED.fetch_add(len, Ordering::Relaxed).saturating_add(len);
    if now >= THRESHOLDS[0].load(Ordering::Relaxed) {
        raise_for(now);
    }
}

/// The crossing path of [`on_map`], out of line.
#[cold]
#[inline(never)]
fn raise_for(bytes: usize) {
    raise_level(level_for(bytes));
}

/// Counts `len` bytes just unmapped.
#[inline]
pub(crate) fn on_unmap(len: usize) {
    MAPPED.fetch_sub(len, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_round_trip_and_order() {
        for level in PressureLevel::ALL {
            assert_eq!(PressureLevel::from_u8(level as u8), level);
        }
        assert_eq!(PressureLevel::High.to_string(), "high");
        assert_eq!(PressureLevel::Moderate.up(), PressureLevel::High);
    }

    #[test]
    fn level_in_follows_thresholds() {
        // Thresholds are process-wide and other tests map memory: this reads none of them.
        let t = [100, 200, 300];
        assert_eq!(level_in(99, t), PressureLevel::Normal);
        assert_eq!(level_in(100, t), PressureLevel::Moderate);
        assert_eq!(level_in(250, t), PressureLevel::High);
        assert_eq!(level_in(300, t), PressureLevel::Critical);
        assert_eq!(
            level_in(usize::MAX - 1, [usize::MAX; 3]),
            PressureLevel::Normal
        );
    }
}
