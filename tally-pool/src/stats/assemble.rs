//! [`report`]: the report of every live component, assembled from their snapshots, the
//! sampler's conclusions and the health rules.

use std::time::SystemTime;

use super::health::{self, RuleInput};
use super::history;
use super::leaks;
use super::process;
use super::registry::{self, ComponentId, Kind};
use super::report::{ComponentReport, LeakReport, MemoryClasses, MemoryReport, SiteReport, SCHEMA};
use super::source::{ComponentSnapshot, Site};

/// Sites listed per leak suspect, at most.
const MAX_SITES: usize = 10;

/// The memory report of every live component, now.
///
/// Asks each component for a snapshot (with no statistics lock held), adds the process's
/// figures, the sampler's leak suspects and the health findings. Refusals at the cap
/// are counted since the previous call, so calling it also moves that baseline.
///
/// ```
/// use tally_pool::stats::{self, Component};
/// let c = Component::register("doc-report-fn");
/// c.add(100);
/// let report = stats::report();
/// assert!(report.components.iter().any(|row| row.id == c.id() && row.memory.live_bytes == 100));
/// ```
pub fn report() -> MemoryReport {
    compose(true)
}

/// [`report`]; `advance` says whether the "since the last report" baseline moves.
pub(crate) fn compose(advance: bool) -> MemoryReport {
    let members = registry::members();
    let mut snapshots: Vec<ComponentSnapshot> = members
        .iter()
        .map(|member| member.source.source().snapshot())
        .collect();
    // The sources drop here, one by one, with no lock held.
    let rows: Vec<(ComponentId, std::sync::Arc<str>, Kind)> =
        registry::release(members, |id, name, kind| (id, name, kind));
    let ids: Vec<ComponentId> = rows.iter().map(|(id, _, _)| *id).collect();
    registry::fill_peaks(&ids, &mut snapshots);
    let exhausted: Vec<(ComponentId, u64)> = ids
        .iter()
        .zip(&snapshots)
        .map(|(&id, s)| (id, s.counters.exhausted))
        .collect();
    let exhausted_since = registry::exhausted_since_last(&exhausted, advance);
    let conclusions = history::conclusions(&ids);

    let mut totals = MemoryClasses::default();
    let mut components = Vec::with_capacity(rows.len());
    let mut leaks = Vec::new();
    for ((id, name, kind), snapshot) in rows.iter().zip(&snapshots) {
        let row = ComponentReport::new(*id, name, *kind, snapshot);
        totals.add(&row.memory);
        components.push(row);
    }
    for (((id, name, _), snapshot), conclusion) in rows.iter().zip(&snapshots).zip(&conclusions) {
        if let Some(verdict) = conclusion.as_ref().and_then(|c| c.leak) {
            leaks.push(leak_report(*id, name, snapshot, verdict));
        }
    }
    let inputs: Vec<RuleInput<'_>> = rows
        .iter()
        .zip(&snapshots)
        .zip(exhausted_since.iter().zip(&conclusions))
        .map(
            |(((id, name, kind), snapshot), (&since, conclusion))| RuleInput {
                id: *id,
                name,
                kind: *kind,
                snapshot,
                exhausted_since_last: since,
                leak: leaks.iter().find(|leak| leak.component_id == *id),
                fragmented_for: conclusion.map(|c| c.fragmented_for),
            },
        )
        .collect();
    let health = health::evaluate(&inputs);

    MemoryReport {
        schema: SCHEMA,
        generated_at: process::rfc3339(SystemTime::now()),
        process: process::read(),
        totals,
        components,
        leaks,
        health,
        pressure: pressure_section(),
    }
}

/// The leak entry of a suspect component.
fn leak_report(
    id: ComponentId,
    name: &str,
    snapshot: &ComponentSnapshot,
    verdict: leaks::LeakVerdict,
) -> LeakReport {
    let mut sites: Vec<&Site> = snapshot.sites.iter().flatten().collect();
    sites.sort_by_key(|site| std::cmp::Reverse(site.live));
    LeakReport {
        component: name.to_owned(),
        component_id: id,
        growth_bytes_per_min: verdict.growth_bytes_per_min,
        live_objects: snapshot.live_objects,
        window_secs: verdict.window.as_secs_f64(),
        oldest_age_secs: snapshot.oldest_age().map(|age| age.as_secs_f64()),
        sites: sites
            .into_iter()
            .take(MAX_SITES)
            .map(SiteReport::of)
            .collect(),
    }
}

/// `text` as a Prometheus label value: backslash, double quote and newline escaped
/// (`\\`, `\"`, `\n`), everything else as is.
///
/// ```
/// use tally_pool::stats::prometheus_label;
/// assert_eq!(prometheus_label("a\"b\\c\nd"), r#"a\"b\\c\nd"#);
/// assert_eq!(prometheus_label("order-book"), "order-book");
/// ```
pub fn prometheus_label(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// The running pressure monitor's view, if one runs.
fn pressure_section() -> Option<super::report::PressureSection> {
    use super::report::{PressureSection, ReclamationSection};

    let view = crate::pressure::current()?;
    let now = std::time::Instant::now();
    Some(PressureSection {
        level: view.level.as_str().to_owned(),
        utilisation: view.utilisation,
        source: view.source.as_str().to_owned(),
        since_secs: now.saturating_duration_since(view.since).as_secs_f64(),
        last_reclamation: view.last_reclamation.map(|r| ReclamationSection {
            level: r.level.as_str().to_owned(),
            reclaimable_bytes: r.reclaimable_bytes,
            reclaimed_bytes: r.reclaimed_bytes,
            duration_secs: r.duration.as_secs_f64(),
            ago_secs: now.saturating_duration_since(r.at).as_secs_f64(),
        }),
    })
}
