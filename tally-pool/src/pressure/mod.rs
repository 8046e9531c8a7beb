//! Memory pressure: how close the process is to the tightest memory limit that applies to
//! it, as a [`PressureLevel`].

pub use crate::sys::budget::PressureLevel;

/// The current pressure level: one relaxed load, cheap enough for hot code.
///
/// ```
/// use tally_pool::pressure::{self, PressureLevel};
/// let level: PressureLevel = pressure::level();
/// assert!(level <= PressureLevel::Critical);
/// ```
#[inline]
pub fn level() -> PressureLevel {
    crate::sys::budget::level()
}
