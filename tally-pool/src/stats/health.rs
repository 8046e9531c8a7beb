//! The health rules: pure functions from one component's snapshot (plus what the registry
//! and the sampled history add) to findings, and the score. The rule table users read is
//! in the [module docs](super); [`RULES`] is the same table as data.

use std::time::Duration;

use super::registry::{ComponentId, Kind};
use super::report::{format_bytes, Finding, HealthSection, LeakReport, Severity};
use super::source::ComponentSnapshot;

/// `near-cap`: live values at or above this percentage of `max_capacity`.
pub(crate) const NEAR_CAP_PERCENT: u64 = 90;
/// `fragmented`: idle bytes (free + cached + fresh) above this share of mapped bytes…
pub(crate) const FRAGMENTED_PERCENT: u64 = 50;
/// … and above this many bytes…
pub(crate) const FRAGMENTED_MIN_BYTES: u64 = 16 << 20;
/// … for at least this long, when a sampler keeps history (without one, a single
/// snapshot decides).
pub(crate) const FRAGMENTED_MIN_DURATION: Duration = Duration::from_secs(60);
/// `remote-heavy`: locality below this…
pub(crate) const REMOTE_MAX_LOCALITY: f64 = 0.9;
/// … over at least this many acquires (also the floor of `cache-misses`).
pub(crate) const MIN_ACQUIRES: u64 = 10_000;
/// `cache-misses`: more than one depot exchange per this many acquires. A thread cache
/// trades whole magazines (32 blocks), so a producer/consumer pair makes about one
/// exchange per 16 acquires; one per 4 means caches keep running dry or overflowing.
pub(crate) const ACQUIRES_PER_EXCHANGE: u64 = 4;
/// A corruption caps the score at this.
pub(crate) const CORRUPTION_MAX_SCORE: u8 = 20;
/// `exhausted` and `near-cap` suggest `max_capacity` = peak × (1 + this / 100).
pub(crate) const CAP_HEADROOM_PERCENT: u64 = 50;

/// What the rules see of one component.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RuleInput<'a> {
    pub(crate) id: ComponentId,
    pub(crate) name: &'a str,
    pub(crate) kind: Kind,
    pub(crate) snapshot: &'a ComponentSnapshot,
    /// Acquires refused at the cap since the previous report.
    pub(crate) exhausted_since_last: u64,
    /// The component's leak suspicion, if any.
    pub(crate) leak: Option<&'a LeakReport>,
    /// How long the `fragmented` condition has held in the sampled history (zero if it
    /// does not hold at the last sample); `None` without history.
    pub(crate) fragmented_for: Option<Duration>,
}

/// One rule: its code, severity and penalty, and the check that returns the message and
/// the recommendation when it fires.
pub(crate) struct Rule {
    pub(crate) code: &'static str,
    pub(crate) severity: Severity,
    pub(crate) penalty: u8,
    check: fn(&RuleInput<'_>) -> Option<(String, String)>,
}

/// The rules, in the order of the table in the module docs.
pub(crate) const RULES: [Rule; 7] = [
    Rule {
        code: "corruption",
        severity: Severity::Critical,
        penalty: 50,
        check: corruption,
    },
    Rule {
        code: "exhausted",
        severity: Severity::Critical,
        penalty: 30,
        check: exhausted,
    },
    Rule {
        code: "near-cap",
        severity: Severity::Warning,
        penalty: 10,
        check: near_cap,
    },
    Rule {
        code: "leak-suspect",
        severity: Severity::Warning,
        penalty: 20,
        check: leak_suspect,
    },
    Rule {
        code: "fragmented",
        severity: Severity::Info,
        penalty: 5,
        check: fragmented,
    },
    Rule {
        code: "remote-heavy",
        severity: Severity::Info,
        penalty: 5,
        check: remote_heavy,
    },
    Rule {
        code: "cache-misses",
        severity: Severity::Info,
        penalty: 5,
        check: cache_misses,
    },
];

/// Runs every rule over every component: the findings (most severe first, then in
/// component order) and the score (100 minus the penalties, at least 0; at most
/// [`CORRUPTION_MAX_SCORE`] after any corruption).
pub(crate) fn evaluate(inputs: &[RuleInput<'_>]) -> HealthSection {
    let mut findings = Vec::new();
    let mut penalty: u32 = 0;
    let mut corrupted = false;
    for input in inputs {
        for rule in &RULES {
            if let Some((message, recommendation)) = (rule.check)(input) {
                penalty = penalty.saturating_add(u32::from(rule.penalty));
                corrupted |= rule.code == "corruption";
                findings.push(Finding {
                    code: rule.code.to_owned(),
                    severity: rule.severity,
                    component: Some(input.name.to_owned()),
                    component_id: Some(input.id),
                    message,
                    recommendation,
                });
            }
        }
    }
    findings.sort_by_key(|finding| std::cmp::Reverse(finding.severity));
    let mut score = u8::try_from(100u32.saturating_sub(penalty)).unwrap_or(0);
    if corrupted {
        score = score.min(CORRUPTION_MAX_SCORE);
    }
    HealthSection { score, findings }
}

/// The `fragmented` condition on one snapshot (without its duration).
pub(crate) fn is_fragmented(s: &ComponentSnapshot) -> bool {
    let idle = s.idle_bytes();
    idle > FRAGMENTED_MIN_BYTES
        && u128::from(idle) * 100 > u128::from(s.mapped_bytes()) * u128::from(FRAGMENTED_PERCENT)
}

fn corruption(i: &RuleInput<'_>) -> Option<(String, String)> {
    let s = i.snapshot;
    if s.counters.corruptions == 0 {
        return None;
    }
    let seen = match &s.last_corruption {
        Some(place) => format!(", last seen at {place}"),
        None => String::new(),
    };
    let message = format!(
        "{} corruption event(s) in `{}`{seen}",
        s.counters.corruptions, i.name
    );
    let recommendation = match s.guard {
        Some("full") => format!(
            "the full guard caught it: something writes into `{}`'s blocks after release or \
             past a value; review unsafe code and raw-handle use around it",
            i.name
        ),
        Some("canary") => format!(
            "switch `{}` to `GuardLevel::Full` to also catch writes after release and find \
             the writer",
            i.name
        ),
        _ => format!(
            "run `{}` with `GuardLevel::Canary` (overruns, caught at release) or \
             `GuardLevel::Full` (also use after release) to find the writer",
            i.name
        ),
    };
    Some((message, recommendation))
}

/// `max_capacity` with headroom over the peak.
fn suggested_cap(peak: u64) -> u64 {
    peak.saturating_add(peak.saturating_mul(CAP_HEADROOM_PERCENT) / 100)
}

fn cap_advice(i: &RuleInput<'_>, cap: u64) -> String {
    let s = i.snapshot;
    let peak = s.peak_live_objects.max(s.live_objects).max(cap);
    format!(
        "raise `max_capacity` of `{}` from {cap} to at least {} (peak {peak} live values + \
         {CAP_HEADROOM_PERCENT} %), or release values sooner",
        i.name,
        suggested_cap(peak)
    )
}

fn exhausted(i: &RuleInput<'_>) -> Option<(String, String)> {
    if i.exhausted_since_last == 0 {
        return None;
    }
    let cap = i
        .snapshot
        .counters
        .max_capacity
        .unwrap_or(i.snapshot.live_objects);
    let message = format!(
        "`{}` refused {} acquire(s) at its cap of {cap} values since the last report",
        i.name, i.exhausted_since_last
    );
    Some((message, cap_advice(i, cap)))
}

fn near_cap(i: &RuleInput<'_>) -> Option<(String, String)> {
    let cap = i.snapshot.counters.max_capacity.filter(|&cap| cap > 0)?;
    let live = i.snapshot.live_objects;
    // `exhausted` already says it, louder.
    if i.exhausted_since_last > 0
        || u128::from(live) * 100 < u128::from(cap) * u128::from(NEAR_CAP_PERCENT)
    {
        return None;
    }
    let message = format!(
        "`{}` holds {live} live values, {} % of its cap of {cap}",
        i.name,
        u128::from(live) * 100 / u128::from(cap)
    );
    Some((message, cap_advice(i, cap)))
}

fn leak_suspect(i: &RuleInput<'_>) -> Option<(String, String)> {
    let leak = i.leak?;
    let message = format!(
        "live bytes of `{}` grew {}/min over the last {:.0} s ({} live values)",
        i.name,
        format_bytes(leak.growth_bytes_per_min.max(0.0) as u64),
        leak.window_secs,
        leak.live_objects
    );
    let recommendation = match &i.snapshot.sites {
        Some(_) if !leak.sites.is_empty() => {
            let sites: Vec<String> = leak
                .sites
                .iter()
                .take(3)
                .map(|site| match site.oldest_age_secs {
                    Some(age) => {
                        format!("{} ({} live, oldest {age:.0} s)", site.location, site.live)
                    }
                    None => format!("{} ({} live)", site.location, site.live),
                })
                .collect();
            format!(
                "look where these values are acquired and never released: {}",
                sites.join(", ")
            )
        }
        Some(_) => format!(
            "check the release paths of `{}`: no tracked site holds the growth",
            i.name
        ),
        None if i.kind == Kind::User => {
            format!(
                "check that every `add` to `{}` has a matching `sub`",
                i.name
            )
        }
        None => format!(
            "turn on `track_sites` for `{}` (`pool.track_sites(1024)`, or \
             `#[pooled(track_sites = 1024)]`) to see where the growing values are acquired",
            i.name
        ),
    };
    Some((message, recommendation))
}

fn fragmented(i: &RuleInput<'_>) -> Option<(String, String)> {
    let s = i.snapshot;
    if !is_fragmented(s)
        || i.fragmented_for
            .is_some_and(|d| d < FRAGMENTED_MIN_DURATION)
    {
        return None;
    }
    let message = format!(
        "{} of the {} mapped by `{}` hold no value (free, cached or not yet carved)",
        format_bytes(s.idle_bytes()),
        format_bytes(s.mapped_bytes()),
        i.name
    );
    let lower = s.live_objects.saturating_add(s.live_objects / 4);
    let recommendation = format!(
        "call `reclaim()` on `{}` (or let the pressure monitor do it), and lower its \
         `capacity` towards {lower} values (live + 25 %)",
        i.name
    );
    Some((message, recommendation))
}

fn remote_heavy(i: &RuleInput<'_>) -> Option<(String, String)> {
    let s = i.snapshot;
    // A source's figure, clamped as the report's row clamps it.
    let locality = s.locality.filter(|l| l.is_finite())?.clamp(0.0, 1.0);
    if s.counters.acquires < MIN_ACQUIRES || locality >= REMOTE_MAX_LOCALITY {
        return None;
    }
    let message = format!(
        "only {:.1} % of {} acquires from `{}` were served by the caller's node",
        locality * 100.0,
        s.counters.acquires,
        i.name
    );
    let recommendation = format!(
        "keep the threads that use `{}` on the nodes that serve them: place workers with \
         `numa::Placement`, or pin threads with `numa::pin_current_thread`",
        i.name
    );
    Some((message, recommendation))
}

fn cache_misses(i: &RuleInput<'_>) -> Option<(String, String)> {
    let s = i.snapshot;
    if s.counters.acquires < MIN_ACQUIRES
        || u128::from(s.counters.depot_exchanges) * u128::from(ACQUIRES_PER_EXCHANGE)
            <= u128::from(s.counters.acquires)
    {
        return None;
    }
    let message = format!(
        "`{}` traded {} magazines with its depots over {} acquires (more than one per {})",
        i.name, s.counters.depot_exchanges, s.counters.acquires, ACQUIRES_PER_EXCHANGE
    );
    let recommendation = format!(
        "raise `capacity` of `{}` so depots keep full magazines, or acquire and release in \
         larger batches per thread",
        i.name
    );
    Some((message, recommendation))
}

#[cfg(test)]
#[path = "health_tests.rs"]
mod tests;
