//! Publishing what the sampler sees: gauges and counters through the `metrics` facade
//! (feature `metrics`) and leak-suspect events through `tracing` (feature `tracing`).
//!
//! Both read snapshots only, on the sampler's thread (or whoever calls
//! [`sample`](super::sample)): nothing is recorded on an acquire or release path.
//!
//! # Metrics
//!
//! Every series has the labels `component` (the name, which need not be unique), `id`
//! (the registry's id, which is) and `kind`; per-node series add `node`.
//!
//! Label values are the names as they are: escaping is the recorder's job. One to know of:
//! `metrics-exporter-prometheus` (0.18) takes a backslash before `"` or `\` in a value
//! for an escape already made, so such a name reads back from its text format with a
//! backslash fewer (`a\"b` as `a"b`). The `id` label still tells the series apart.
//!
//! | series | type | what |
//! |---|---|---|
//! | `tally_pool_live_bytes` | gauge | values in use |
//! | `tally_pool_cached_bytes` | gauge | free in thread caches |
//! | `tally_pool_free_bytes` | gauge | free in depots and chunks |
//! | `tally_pool_fresh_bytes` | gauge | mapped, not yet carved |
//! | `tally_pool_metadata_bytes` | gauge | headers, tables, canaries, padding |
//! | `tally_pool_mapped_bytes` | gauge | the sum of the five above |
//! | `tally_pool_released_bytes_total` | counter | given back to the OS so far |
//! | `tally_pool_live_objects` | gauge | values in use |
//! | `tally_pool_acquires_total`, `tally_pool_releases_total` | counter | |
//! | `tally_pool_exhausted_total`, `tally_pool_corruptions_total` | counter | refusals at the cap; corruption events |
//! | `tally_pool_node_live_bytes`, `tally_pool_node_mapped_bytes` | gauge | per NUMA node |
//! | `tally_pool_health_score` | gauge (no labels) | the report's score, 0–100 |
//! | `tally_pool_leak_suspects` | gauge (no labels) | components suspected of leaking |
//!
//! Counters are set to the component's running totals (`absolute`), so a component that
//! is recreated under the same name starts a new series through its new `id`.
//!
//! # Tracing
//!
//! | event | level | target | fields |
//! |---|---|---|---|
//! | a component became a leak suspect | `warn` | `tally_pool::stats` | `component`, `id` |
//! | it is no longer one | `info` | `tally_pool::stats` | `component`, `id` |
//! | a corruption event, when the pool counts it | `error` | `tally_pool::block` | `pool`, `kind` (`CorruptionKind`), `address` |
//!
//! The leak events come from [`sample`](super::sample); the corruption events from the
//! pool that detected the corruption, on the thread that did (a refused free or
//! hand-out, already a slow path).

#[cfg(feature = "metrics")]
use super::report::MemoryReport;

/// Publishes `report` through the `metrics` facade (whatever recorder the program
/// installed; none, and this does nothing).
#[cfg(feature = "metrics")]
pub(super) fn publish(report: &MemoryReport) {
    use metrics::{counter, gauge};

    for c in &report.components {
        let labels = [
            ("component", c.name.clone()),
            ("id", c.id.get().to_string()),
            ("kind", c.kind.as_str().to_owned()),
        ];
        let m = &c.memory;
        gauge!("tally_pool_live_bytes", &labels).set(m.live_bytes as f64);
        gauge!("tally_pool_cached_bytes", &labels).set(m.cached_bytes as f64);
        gauge!("tally_pool_free_bytes", &labels).set(m.free_bytes as f64);
        gauge!("tally_pool_fresh_bytes", &labels).set(m.fresh_bytes as f64);
        gauge!("tally_pool_metadata_bytes", &labels).set(m.metadata_bytes as f64);
        gauge!("tally_pool_mapped_bytes", &labels).set(m.mapped_bytes as f64);
        gauge!("tally_pool_live_objects", &labels).set(c.live_objects as f64);
        counter!("tally_pool_released_bytes_total", &labels).absolute(m.released_bytes);
        counter!("tally_pool_acquires_total", &labels).absolute(c.counters.acquires);
        counter!("tally_pool_releases_total", &labels).absolute(c.counters.releases);
        counter!("tally_pool_exhausted_total", &labels).absolute(c.counters.exhausted);
        counter!("tally_pool_corruptions_total", &labels).absolute(c.counters.corruptions);
        for n in &c.nodes {
            let labels = [
                ("component", c.name.clone()),
                ("id", c.id.get().to_string()),
                ("kind", c.kind.as_str().to_owned()),
                ("node", n.node.to_string()),
            ];
            gauge!("tally_pool_node_live_bytes", &labels).set(n.live_bytes as f64);
            gauge!("tally_pool_node_mapped_bytes", &labels).set(n.mapped_bytes as f64);
        }
    }
    gauge!("tally_pool_health_score").set(f64::from(report.health.score));
    gauge!("tally_pool_leak_suspects").set(report.leaks.len() as f64);
}

/// Says, as a `tracing` event, that the component `name` (`id`) became a leak suspect
/// (`warn`) or stopped being one (`info`).
#[cfg(feature = "tracing")]
pub(super) fn leak_verdict_changed(name: &str, id: u64, suspect: bool) {
    if suspect {
        tracing::warn!(
            target: "tally_pool::stats",
            component = name,
            id,
            "component is a leak suspect: its live bytes grow over the leak window"
        );
    } else {
        tracing::info!(
            target: "tally_pool::stats",
            component = name,
            id,
            "component is no longer a leak suspect"
        );
    }
}
