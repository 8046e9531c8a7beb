//! The memory report: what [`report`](super::report) returns, serialised with serde into
//! the JSON schema documented in the [module docs](super), and printed as a table by
//! `Display` (`table.rs`).

use serde::{Deserialize, Serialize};

use super::error::StatsError;
use super::registry::{ComponentId, Kind};
use super::source::{ComponentSnapshot, Counters, NodeSnapshot, Site};

/// The version of the JSON schema, the report's `schema` field.
pub const SCHEMA: u32 = 1;

/// Everything the statistics know at one instant: the process, the totals, every live
/// component, the leak suspects, the health score and (later) memory pressure.
///
/// ```
/// use tally_pool::stats::{self, Component, MemoryReport};
///
/// let book = Component::register("doc-report-book");
/// book.add(1 << 20);
/// let report: MemoryReport = stats::report();
/// assert_eq!(report.schema, stats::SCHEMA);
/// assert!(report.totals.live_bytes >= 1 << 20);
/// assert!(report.to_string().contains("doc-report-book"));
///
/// let json = report.to_json();
/// let back = MemoryReport::from_json(&json)?;
/// assert_eq!(back, report);
/// # Ok::<(), tally_pool::stats::StatsError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct MemoryReport {
    /// The schema version, [`SCHEMA`].
    pub schema: u32,
    /// When the report was made, RFC 3339 in UTC to the second (`2026-12-04T17:05:09Z`).
    pub generated_at: String,
    /// The process as the OS sees it.
    pub process: ProcessSection,
    /// The memory classes summed over all components.
    pub totals: MemoryClasses,
    /// Every live component, in registration order.
    pub components: Vec<ComponentReport>,
    /// Components whose live bytes keep growing (needs a sampler: see
    /// [`start_sampler`](super::start_sampler)).
    pub leaks: Vec<LeakReport>,
    /// The health score and what to do about each finding.
    pub health: HealthSection,
    /// Memory pressure, once a pressure monitor runs; `None` until then.
    pub pressure: Option<PressureSection>,
}

/// Reads an `f64` that [`MemoryReport::to_json`] may have written as `null` (JSON has no
/// NaN or infinity): NaN, so that every report it writes reads back.
fn f64_or_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

impl MemoryReport {
    /// The report as JSON (compact), in the schema of the [module docs](super).
    ///
    /// ```
    /// let json = tally_pool::stats::report().to_json();
    /// let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    /// assert_eq!(value["schema"], 1);
    /// ```
    pub fn to_json(&self) -> String {
        // Serialising plain structs with string keys cannot fail; non-finite floats
        // become `null`. Should it ever fail, the caller still gets valid JSON.
        serde_json::to_string(self).unwrap_or_else(|error| {
            serde_json::json!({ "schema": SCHEMA, "error": error.to_string() }).to_string()
        })
    }

    /// Reads a report back from its JSON.
    ///
    /// # Errors
    ///
    /// [`StatsError::Json`] when `json` is not a report of this schema.
    ///
    /// ```
    /// use tally_pool::stats::MemoryReport;
    /// assert!(MemoryReport::from_json("{}").is_err());
    /// ```
    pub fn from_json(json: &str) -> Result<Self, StatsError> {
        serde_json::from_str(json).map_err(StatsError::Json)
    }
}

/// The process: its id, resident memory and the tightest cgroup memory limit.
///
/// ```
/// let process = tally_pool::stats::report().process;
/// assert_eq!(process.pid, std::process::id());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ProcessSection {
    /// The process id.
    pub pid: u32,
    /// Resident bytes (`/proc/self/statm` resident pages × page size); `None` if unreadable.
    pub rss_bytes: Option<u64>,
    /// The tightest cgroup memory limit on this process (v2 `memory.max`, v1
    /// `memory.limit_in_bytes`, over its cgroup and their ancestors); `None` when there is
    /// none or it cannot be read.
    pub limit_bytes: Option<u64>,
}

/// Bytes by class. `mapped_bytes` is the sum of the five classes before it;
/// `released_bytes` counts bytes given back to the OS so far (not part of `mapped`).
///
/// ```
/// let totals = tally_pool::stats::report().totals;
/// assert_eq!(
///     totals.mapped_bytes,
///     totals.live_bytes + totals.cached_bytes + totals.free_bytes
///         + totals.fresh_bytes + totals.metadata_bytes,
/// );
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct MemoryClasses {
    /// Bytes of values in use.
    pub live_bytes: u64,
    /// Bytes free in thread caches.
    pub cached_bytes: u64,
    /// Bytes free in depots and carved chunks.
    pub free_bytes: u64,
    /// Bytes mapped and not yet carved.
    pub fresh_bytes: u64,
    /// Bytes of headers, registries, generation tables, canaries and padding.
    pub metadata_bytes: u64,
    /// The sum of the five classes above.
    pub mapped_bytes: u64,
    /// Bytes given back to the OS so far.
    pub released_bytes: u64,
}

impl MemoryClasses {
    /// The classes of one snapshot.
    pub(crate) fn of(snapshot: &ComponentSnapshot) -> Self {
        Self {
            live_bytes: snapshot.live_bytes,
            cached_bytes: snapshot.cached_bytes,
            free_bytes: snapshot.free_bytes,
            fresh_bytes: snapshot.fresh_bytes,
            metadata_bytes: snapshot.metadata_bytes,
            mapped_bytes: snapshot.mapped_bytes(),
            released_bytes: snapshot.released_bytes,
        }
    }

    /// Adds `other`, class by class, saturating.
    pub(crate) fn add(&mut self, other: &Self) {
        self.live_bytes = self.live_bytes.saturating_add(other.live_bytes);
        self.cached_bytes = self.cached_bytes.saturating_add(other.cached_bytes);
        self.free_bytes = self.free_bytes.saturating_add(other.free_bytes);
        self.fresh_bytes = self.fresh_bytes.saturating_add(other.fresh_bytes);
        self.metadata_bytes = self.metadata_bytes.saturating_add(other.metadata_bytes);
        self.mapped_bytes = self.mapped_bytes.saturating_add(other.mapped_bytes);
        self.released_bytes = self.released_bytes.saturating_add(other.released_bytes);
    }
}

/// One component of the report. In JSON the [`memory`](Self::memory) classes and the
/// [`counters`](Self::counters) appear as fields of the component itself (`live_bytes`,
/// …, `released_bytes`, `capacity`, …, `depot_exchanges`).
///
/// ```
/// use tally_pool::stats::{self, Component, Kind};
/// let c = Component::register("doc-component-report");
/// c.add(512);
/// let report = stats::report();
/// let row = report.components.iter().find(|r| r.id == c.id()).unwrap();
/// assert_eq!((row.kind, row.memory.live_bytes, row.memory.mapped_bytes), (Kind::User, 512, 512));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ComponentReport {
    /// The registry id (unique; names need not be).
    pub id: ComponentId,
    /// The name given at registration.
    pub name: String,
    /// What kind of component this is.
    pub kind: Kind,
    /// The value type of a typed pool.
    pub type_name: Option<String>,
    /// Bytes of one value, where the component has one size.
    pub object_size: Option<u64>,
    /// Values in use.
    pub live_objects: u64,
    /// Bytes by class.
    #[serde(flatten)]
    pub memory: MemoryClasses,
    /// Capacity and running counts.
    #[serde(flatten)]
    pub counters: Counters,
    /// The guard level of a pool: `"off"`, `"canary"` or `"full"`; `None` for other
    /// components.
    #[serde(default)]
    pub guard: Option<String>,
    /// Transparent huge pages of a pool: `"off"`, `"requested"`, `"active"` or
    /// `"unavailable: <reason>"`; `None` for other components.
    #[serde(default)]
    pub huge_pages: Option<String>,
    /// Bytes a pool keeps locked in memory (`lock`).
    #[serde(default)]
    pub locked_bytes: u64,
    /// The share of acquires served node-locally, in `0..=1`.
    pub locality: Option<f64>,
    /// Per-node figures.
    pub nodes: Vec<NodeReport>,
    /// `sub` calls that would have gone below zero (user components only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accounting_errors: Option<u64>,
}

impl ComponentReport {
    /// The row of one component.
    pub(crate) fn new(id: ComponentId, name: &str, kind: Kind, s: &ComponentSnapshot) -> Self {
        Self {
            id,
            name: name.to_owned(),
            kind,
            type_name: s.type_name.map(str::to_owned),
            object_size: s.object_size,
            live_objects: s.live_objects,
            memory: MemoryClasses::of(s),
            counters: s.counters,
            guard: s.guard.map(str::to_owned),
            huge_pages: s.huge_pages.map(str::to_owned),
            locked_bytes: s.locked_bytes,
            locality: s
                .locality
                .filter(|l| l.is_finite())
                .map(|l| l.clamp(0.0, 1.0)),
            nodes: s.nodes.clone(),
            accounting_errors: (kind == Kind::User).then_some(s.accounting_errors),
        }
    }
}

/// One NUMA node of a component: the node's figures as its pool reported them
/// ([`NodeSnapshot`], the same fields in JSON).
///
/// ```
/// let report = tally_pool::stats::report();
/// for node in report.components.iter().flat_map(|c| &c.nodes) {
///     assert!(node.live_bytes <= node.mapped_bytes || node.mapped_bytes == 0);
/// }
/// ```
pub type NodeReport = NodeSnapshot;

/// A leak suspect: see [`LeakConfig`](super::LeakConfig) for the rule.
///
/// ```
/// for leak in tally_pool::stats::report().leaks {
///     println!("{} grows {:.0} B/min", leak.component, leak.growth_bytes_per_min);
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LeakReport {
    /// The component's name.
    pub component: String,
    /// The component's id.
    pub component_id: ComponentId,
    /// The robust growth rate of live bytes.
    #[serde(deserialize_with = "f64_or_null")]
    pub growth_bytes_per_min: f64,
    /// Values in use now.
    pub live_objects: u64,
    /// The window judged, in seconds.
    #[serde(deserialize_with = "f64_or_null")]
    pub window_secs: f64,
    /// The age of the oldest live value, when the component tracks sites.
    pub oldest_age_secs: Option<f64>,
    /// Where live values were acquired, most live first (empty unless sites are tracked).
    pub sites: Vec<SiteReport>,
}

/// Where live values were acquired.
///
/// ```
/// let report = tally_pool::stats::report();
/// for site in report.leaks.iter().flat_map(|l| &l.sites) {
///     assert!(site.location.contains(':'));
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SiteReport {
    /// `file:line:col` of the acquiring call.
    pub location: String,
    /// Values acquired there and still live.
    pub live: u64,
    /// The age of the oldest of them, in seconds, if known.
    pub oldest_age_secs: Option<f64>,
}

impl SiteReport {
    pub(crate) fn of(site: &Site) -> Self {
        Self {
            location: site.location.to_string(),
            live: site.live,
            oldest_age_secs: site.oldest_age.map(|age| age.as_secs_f64()),
        }
    }
}

/// The health score and its findings. The rules are in the [module docs](super).
///
/// ```
/// let health = tally_pool::stats::report().health;
/// assert!(health.score <= 100);
/// if health.findings.is_empty() { assert_eq!(health.score, 100); }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct HealthSection {
    /// 0 (on fire) to 100 (nothing found).
    pub score: u8,
    /// What the rules found, most severe first.
    pub findings: Vec<Finding>,
}

/// One finding of the health rules.
///
/// ```
/// for finding in tally_pool::stats::report().health.findings {
///     println!("[{}] {}: {} -> {}", finding.severity, finding.code, finding.message,
///              finding.recommendation);
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Finding {
    /// The rule's code (`corruption`, `exhausted`, `near-cap`, `leak-suspect`,
    /// `fragmented`, `remote-heavy`, `cache-misses`).
    pub code: String,
    /// How bad it is.
    pub severity: Severity,
    /// The component's name, or `None` for a process-wide finding.
    pub component: Option<String>,
    /// The component's id, or `None` for a process-wide finding.
    pub component_id: Option<ComponentId>,
    /// What was seen.
    pub message: String,
    /// What to do about it.
    pub recommendation: String,
}

/// How bad a finding is.
///
/// ```
/// use tally_pool::stats::Severity;
/// assert!(Severity::Info < Severity::Critical);
/// assert_eq!(Severity::Warning.to_string(), "warning");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Severity {
    /// Worth knowing; no action needed now.
    Info,
    /// Will hurt if it goes on.
    Warning,
    /// Hurting now.
    Critical,
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        })
    }
}

/// Memory pressure as the running [`PressureMonitor`](crate::pressure::PressureMonitor)
/// sees it; the report has none while no monitor runs.
///
/// ```
/// use tally_pool::pressure::{PressureConfig, PressureMonitor};
/// let monitor = PressureMonitor::start(PressureConfig::default().budget(1 << 40))?;
/// let pressure = tally_pool::stats::report().pressure.expect("a monitor runs");
/// assert_eq!(pressure.level, "normal");
/// drop(monitor);
/// assert!(tally_pool::stats::report().pressure.is_none());
/// # Ok::<(), tally_pool::pressure::PressureError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PressureSection {
    /// The current level, lowercase: `"normal"`, `"moderate"`, `"high"` or `"critical"`.
    pub level: String,
    /// The highest utilisation of any source (used over its limit), if any source has a
    /// limit.
    pub utilisation: Option<f64>,
    /// The source that set the level (`"budget"`, `"cgroup-v2"`, `"cgroup-v1"`,
    /// `"rlimit"`, `"system"`, `"psi"`).
    pub source: String,
    /// Seconds the level has held.
    #[serde(deserialize_with = "f64_or_null")]
    pub since_secs: f64,
    /// The last round of reclamation the monitor asked for, if any.
    #[serde(default)]
    pub last_reclamation: Option<ReclamationSection>,
}

/// One round of reclamation, as the report shows it.
///
/// ```
/// use tally_pool::stats::ReclamationSection;
/// let r = ReclamationSection::default();
/// assert_eq!(r.reclaimed_bytes, 0);
/// ```
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ReclamationSection {
    /// The level that asked, lowercase.
    pub level: String,
    /// What the components said they could give back, before the round.
    pub reclaimable_bytes: u64,
    /// What they gave back to the OS.
    pub reclaimed_bytes: u64,
    /// How long the round took, in seconds.
    #[serde(deserialize_with = "f64_or_null")]
    pub duration_secs: f64,
    /// Seconds since the round ended.
    #[serde(deserialize_with = "f64_or_null")]
    pub ago_secs: f64,
}

/// `bytes` for people: `512 B`, `1.5 KiB`, `12.0 MiB`, …
pub(crate) fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = "KiB";
    for next in UNITS.iter().skip(1) {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = next;
    }
    format!("{value:.1} {unit}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_non_finite_figure_written_as_null_reads_back_as_nan() {
        #[derive(Serialize, Deserialize)]
        struct Probe {
            #[serde(deserialize_with = "f64_or_null")]
            x: f64,
        }
        let json = serde_json::to_string(&Probe { x: f64::INFINITY }).unwrap();
        assert_eq!(json, r#"{"x":null}"#);
        let back: Probe = serde_json::from_str(&json).unwrap();
        assert!(back.x.is_nan());
        let back: Probe = serde_json::from_str(r#"{"x":1.5}"#).unwrap();
        assert_eq!(back.x, 1.5);
    }

    #[test]
    fn bytes_for_people() {
        assert_eq!(format_bytes(0), "0 B");
        assert_eq!(format_bytes(1023), "1023 B");
        assert_eq!(format_bytes(1536), "1.5 KiB");
        assert_eq!(format_bytes(16 << 20), "16.0 MiB");
        assert_eq!(format_bytes(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn classes_add_saturating() {
        let mut a = MemoryClasses {
            live_bytes: u64::MAX,
            mapped_bytes: 1,
            ..MemoryClasses::default()
        };
        a.add(&MemoryClasses {
            live_bytes: 1,
            mapped_bytes: 2,
            ..MemoryClasses::default()
        });
        assert_eq!((a.live_bytes, a.mapped_bytes), (u64::MAX, 3));
    }

    #[test]
    fn locality_is_sanitised_and_user_fields_only_for_users() {
        let mut s = ComponentSnapshot {
            locality: Some(f64::NAN),
            accounting_errors: 3,
            ..ComponentSnapshot::default()
        };
        let id = ComponentId::from_raw(1);
        assert_eq!(
            ComponentReport::new(id, "a", Kind::Typed, &s).locality,
            None
        );
        assert_eq!(
            ComponentReport::new(id, "a", Kind::Typed, &s).accounting_errors,
            None
        );
        assert_eq!(
            ComponentReport::new(id, "a", Kind::User, &s).accounting_errors,
            Some(3)
        );
        s.locality = Some(1.5);
        assert_eq!(
            ComponentReport::new(id, "a", Kind::Typed, &s).locality,
            Some(1.0)
        );
    }

    #[test]
    fn severity_serialises_lowercase() {
        assert_eq!(
            serde_json::to_string(&Severity::Critical).unwrap(),
            "\"critical\""
        );
        assert_eq!(
            serde_json::from_str::<Severity>("\"info\"").unwrap(),
            Severity::Info
        );
    }
}
