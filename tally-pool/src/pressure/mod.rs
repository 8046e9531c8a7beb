//! Memory pressure: how close the process is to the tightest memory limit that applies to
//! it, a monitor thread that watches it, and reclamation that never runs on an acquiring
//! thread.
//!
//! ```
//! use std::time::Duration;
//! use tally_pool::pressure::{self, PressureConfig, PressureLevel, PressureMonitor};
//!
//! let config = PressureConfig::default()
//!     .budget(8 << 30)                     // bytes all pools, arenas and the allocator may map
//!     .interval(Duration::from_millis(10)); // how often OS sources are read
//! let monitor = PressureMonitor::start(config)?; // one thread
//! monitor.on_transition(|t| eprintln!("{:?} -> {:?} at {:.0} %", t.from, t.to, t.utilisation * 100.0));
//! let level: PressureLevel = pressure::level(); // one relaxed load: cheap enough for hot code
//! assert!(level <= PressureLevel::Critical);
//! drop(monitor); // stops and joins the thread
//! # Ok::<(), tally_pool::pressure::PressureError>(())
//! ```
//!
//! # Levels
//!
//! The utilisation is the highest `used / limit` of every source that applies, read each
//! [`interval`](PressureConfig::interval). Thresholds are configurable
//! ([`PressureConfig::thresholds`]); the defaults:
//!
//! | level | entered at | left below | what the monitor asks ([`stats::Urgency`](crate::stats::Urgency)) |
//! |---|---|---|---|
//! | [`Normal`](PressureLevel::Normal) | — | — | `Low`, once per 10 s (or `idle_after` if longer): idle pools give back chunks already wholly free beyond their reserve |
//! | [`Moderate`](PressureLevel::Moderate) | 60 % | 55 % | thread caches idle for `idle_after` (1 s) are flushed |
//! | [`High`](PressureLevel::High) | 80 % | 75 % | pools idle for `idle_after` give back free chunks beyond their reserve; arenas trimmed |
//! | [`Critical`](PressureLevel::Critical) | 90 % | 85 % | every pool gives back all free chunks beyond its reserve; pools configured to refuse stop growing |
//!
//! - **Raising is immediate**; a level is **left** only once the utilisation is
//!   [`hysteresis`](PressureConfig::hysteresis) (5 points) below its threshold *and* the
//!   level has held for [`min_dwell`](PressureConfig::min_dwell) (250 ms), so that levels
//!   do not flap. A lower level may be entered several steps down at once.
//! - **Own budget, synchronously**: a mapping that crosses a budget threshold raises the
//!   level inside the `map` call of the acquire that crossed it (two relaxed loads and a
//!   compare when nothing is crossed; no allocation, no lock, no syscall). The monitor
//!   reports it as a transition from the `budget` source on its next tick.
//! - **Escalation**: an increment of cgroup v2 `memory.events` `high` or `max`, or PSI
//!   `some avg10` above [`psi_threshold`](PressureConfig::psi_threshold), raises the level
//!   by one step whatever the ratio.
//!
//! # The adaptive rule
//!
//! A level is entered early when the smoothed growth rate of the utilisation would reach
//! its threshold within the [`horizon`](PressureConfig::horizon) *H* (1 s). At each tick
//! *k*, with utilisation *u*ₖ read Δtₖ after the previous one:
//!
//! ```text
//! gₖ = (uₖ − uₖ₋₁) / Δtₖ                  growth per second
//! α  = 1 − exp(−Δtₖ / τ),  τ = max(H / 4, 10 ms)
//! rₖ = rₖ₋₁ + α · (gₖ − rₖ₋₁)              smoothed growth rate (r₀ = 0)
//! ûₖ = uₖ + max(rₖ, 0) · H                 predicted utilisation
//! enter level L when  max(uₖ, ûₖ) ≥ threshold(L)
//! ```
//!
//! A steady climb of 10 points a second thus enters High near 70 %, while a flat 79 %
//! (rate 0) never does. The prediction also holds a level (it counts as `uₖ` in the
//! hysteresis test). `horizon(Duration::ZERO)` turns the rule off.
//!
//! # Sources
//!
//! Every reader takes the root directory of [`PressureConfig::root`] (`/` by default), so
//! tests run on fixture trees. A missing, unreadable or malformed file skips its source for
//! that tick and says why in [`PressureMonitor::sources`]; it never panics and never stops
//! the monitor.
//!
//! | source | used | limit | notes |
//! |---|---|---|---|
//! | `budget` | bytes mapped by the crate (exact, kept by every map and unmap) | [`PressureConfig::budget`] | also checked synchronously inside `map` |
//! | `cgroup-v2` | `memory.current` − `inactive_file` of `memory.stat` (the kubelet's working set) | the lower of `memory.high`, `memory.max` | the nearest ancestor in `/proc/self/cgroup` that sets one; `memory.events` `high`/`max` increments escalate |
//! | `cgroup-v1` | `memory.usage_in_bytes` − `total_inactive_file` | `memory.limit_in_bytes` | the nearest ancestor with a limit (values ≥ 2⁶⁰ mean none) |
//! | `rlimit` | `VmSize` / `VmData` of `/proc/self/status` | `RLIMIT_AS` / `RLIMIT_DATA` (`getrlimit`; `proc/self/limits` under another root) | the closer of the two |
//! | `system` | `MemTotal − MemAvailable` | `MemTotal` | only where no cgroup or rlimit limit applies |
//! | `psi` | — | — | `some avg10` of `/proc/pressure/memory`: escalation only |
//!
//! The budget, cgroup and rlimit sources are read every tick. Two are read every tenth
//! tick only, to keep a tick in the tens of microseconds: `system` while its utilisation is
//! more than 10 points below the Moderate threshold (the kernel builds `/proc/meminfo`
//! anew for each read, some 25 µs), and `psi`, whose `avg10` is a ten-second average.
//!
//! # Reclamation and growth
//!
//! All of it runs on the monitor thread, never on an acquiring one: on entering a level
//! and then every [`reclaim_every`](PressureConfig::reclaim_every) (100 ms) while it
//! holds, the monitor asks each registered component through
//! [`Source::reclaim_idle`](crate::stats::Source::reclaim_idle) at the level's urgency, and
//! records what they said they could give back and what they gave
//! ([`PressureMonitor::last_reclamation`], the report's `pressure` section). Each tick it
//! also calls [`Source::grow_ahead`](crate::stats::Source::grow_ahead), and again every
//! 100 µs between ticks while it makes memory ready, so busy pools have their next chunks
//! mapped and faulted in before an acquire needs them. While no pool of the crate has taken
//! a slow path for a second (every one of them idle), a pass leaves the crate's pools out
//! and asks only the components a user listed: a tick with many idle pools then reads none
//! of them.
//!
//! With feature `tracing` each transition is an `info` event (target
//! `tally_pool::pressure`); with feature `metrics` the level is the gauge
//! `tally_pool_pressure_level` (0 Normal to 3 Critical).

mod config;
mod levels;
mod monitor;
mod readers;
mod reclaim;
mod source;
mod state;
mod ticker;

pub use crate::sys::budget::PressureLevel;
pub use config::{PressureConfig, PressureError};
pub use monitor::PressureMonitor;
pub use reclaim::Reclamation;
pub use source::{SourceKind, SourceStatus};
pub use state::Transition;

pub(crate) use monitor::current;

/// The current pressure level: one relaxed load, cheap enough for hot code. Normal while
/// no monitor runs.
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

/// Bytes the crate has mapped now, as the budget counts them: every pool, arena, token
/// table and the allocator.
///
/// ```
/// let _bytes: u64 = tally_pool::pressure::mapped_bytes();
/// ```
pub fn mapped_bytes() -> u64 {
    crate::sys::budget::mapped() as u64
}
