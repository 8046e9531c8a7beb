//! What the monitor knows of each pressure source: [`SourceKind`], the last reading or the
//! reason it was skipped ([`SourceStatus`]), and the internal form the readers fill in.

use std::fmt;

/// A place the pressure monitor reads memory use and limits from.
///
/// ```
/// use tally_pool::pressure::SourceKind;
/// assert_eq!(SourceKind::CgroupV2.as_str(), "cgroup-v2");
/// assert_eq!(SourceKind::ALL.len(), 6);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum SourceKind {
    /// The own budget: bytes the crate has mapped over [`PressureConfig::budget`](super::PressureConfig::budget).
    Budget,
    /// The nearest cgroup v2 ancestor with `memory.high` or `memory.max`.
    CgroupV2,
    /// The cgroup v1 memory controller (`memory.limit_in_bytes`).
    CgroupV1,
    /// `RLIMIT_AS` against `VmSize`, and `RLIMIT_DATA` against `VmData`.
    Rlimit,
    /// The whole machine: `1 - MemAvailable / MemTotal`, read only where no other limit
    /// applies.
    System,
    /// Pressure stall information, `some avg10` of `/proc/pressure/memory`: an escalation
    /// signal, not a utilisation.
    Psi,
}

impl SourceKind {
    /// Every source, in the order [`PressureMonitor::sources`](super::PressureMonitor::sources)
    /// lists them.
    pub const ALL: [SourceKind; 6] = [
        SourceKind::Budget,
        SourceKind::CgroupV2,
        SourceKind::CgroupV1,
        SourceKind::Rlimit,
        SourceKind::System,
        SourceKind::Psi,
    ];

    /// The lowercase name used in reports and events.
    ///
    /// ```
    /// use tally_pool::pressure::SourceKind;
    /// assert_eq!(SourceKind::Rlimit.to_string(), "rlimit");
    /// ```
    pub const fn as_str(self) -> &'static str {
        match self {
            SourceKind::Budget => "budget",
            SourceKind::CgroupV2 => "cgroup-v2",
            SourceKind::CgroupV1 => "cgroup-v1",
            SourceKind::Rlimit => "rlimit",
            SourceKind::System => "system",
            SourceKind::Psi => "psi",
        }
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a source gave no reading on the last tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Skip {
    /// Not configured (no budget set).
    NotConfigured,
    /// The files that would describe it do not exist here.
    Absent,
    /// It exists but sets no limit.
    NoLimit,
    /// A limit of another source applies (the system source only).
    LimitApplies,
    /// `file` exists but could not be read.
    Unreadable(&'static str),
    /// `file` was read but did not hold what it should.
    Malformed(&'static str),
}

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Skip::NotConfigured => f.write_str("not configured"),
            Skip::Absent => f.write_str("not present on this system"),
            Skip::NoLimit => f.write_str("present, sets no limit"),
            Skip::LimitApplies => f.write_str("a cgroup or rlimit limit applies"),
            Skip::Unreadable(file) => write!(f, "{file}: unreadable"),
            Skip::Malformed(file) => write!(f, "{file}: malformed"),
        }
    }
}

/// One source's state after a tick: a reading, or why there is none. Holds no heap
/// memory, so the monitor updates it in place without allocating.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Slot {
    pub(crate) kind: SourceKind,
    /// Bytes in use and the limit they count against, for utilisation sources.
    pub(crate) used: Option<u64>,
    pub(crate) limit: Option<u64>,
    /// An escalation signal: PSI `some avg10`, or cgroup v2 `memory.events` `high` + `max`
    /// increments since the previous tick.
    pub(crate) signal: Option<f64>,
    /// Whether the signal asks for one level more this tick.
    pub(crate) escalate: bool,
    pub(crate) skipped: Option<Skip>,
}

impl Slot {
    pub(crate) const fn new(kind: SourceKind) -> Self {
        Self {
            kind,
            used: None,
            limit: None,
            signal: None,
            escalate: false,
            skipped: Some(Skip::Absent),
        }
    }

    /// Clears the previous reading and records `skip`.
    pub(crate) fn skip(&mut self, skip: Skip) {
        *self = Self::new(self.kind);
        self.skipped = Some(skip);
    }

    /// Records a reading of `used` bytes against `limit`.
    pub(crate) fn read(&mut self, used: u64, limit: u64) {
        self.used = Some(used);
        self.limit = Some(limit);
        self.skipped = None;
    }

    /// `used / limit`, when both are known. A limit of zero (a cgroup's `memory.max` of
    /// 0, an rlimit of 0) leaves no room at all: full, 1.0. (The budget cannot be zero,
    /// and the system source skips a zero `MemTotal` as malformed.)
    pub(crate) fn utilisation(&self) -> Option<f64> {
        match (self.used, self.limit) {
            (Some(_), Some(0)) => Some(1.0),
            (Some(used), Some(limit)) => Some(used as f64 / limit as f64),
            _ => None,
        }
    }
}

/// A source as the monitor saw it on its last tick: the reading, or why it was skipped.
///
/// ```no_run
/// use tally_pool::pressure::{PressureConfig, PressureMonitor};
/// let monitor = PressureMonitor::start(PressureConfig::default())?;
/// for s in monitor.sources() {
///     match &s.skipped {
///         Some(why) => println!("{}: skipped ({why})", s.kind),
///         None => println!("{}: {:?}", s.kind, s.utilisation),
///     }
/// }
/// # Ok::<(), tally_pool::pressure::PressureError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SourceStatus {
    /// Which source.
    pub kind: SourceKind,
    /// Bytes in use as this source counts them (for a cgroup, the working set: usage
    /// minus inactive file pages).
    pub used: Option<u64>,
    /// The limit `used` counts against.
    pub limit: Option<u64>,
    /// `used / limit`.
    pub utilisation: Option<f64>,
    /// An escalation signal: PSI `some avg10` in percent, or for cgroup v2 the `high` and
    /// `max` events since the previous tick.
    pub signal: Option<f64>,
    /// Whether the signal raised the level by one step on the last tick.
    pub escalating: bool,
    /// Why the source gave no reading (`None` when it was read).
    pub skipped: Option<String>,
}

impl From<&Slot> for SourceStatus {
    fn from(slot: &Slot) -> Self {
        Self {
            kind: slot.kind,
            used: slot.used,
            limit: slot.limit,
            utilisation: slot.utilisation(),
            signal: slot.signal,
            escalating: slot.escalate,
            skipped: slot.skipped.map(|skip| skip.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_have_distinct_names() {
        let names: std::collections::HashSet<&str> =
            SourceKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(names.len(), SourceKind::ALL.len());
    }

    #[test]
    fn slots_record_and_clear() {
        let mut slot = Slot::new(SourceKind::CgroupV1);
        slot.read(50, 200);
        assert_eq!(slot.utilisation(), Some(0.25));
        let status = SourceStatus::from(&slot);
        assert_eq!(status.skipped, None);
        slot.skip(Skip::Malformed("memory.stat"));
        assert_eq!(slot.utilisation(), None);
        let status = SourceStatus::from(&slot);
        assert_eq!(status.skipped.as_deref(), Some("memory.stat: malformed"));
        slot.read(1, 0);
        assert_eq!(
            slot.utilisation(),
            Some(1.0),
            "a zero limit leaves no room: full"
        );
        slot.read(0, 0);
        assert_eq!(slot.utilisation(), Some(1.0), "even with nothing used");
    }
}
