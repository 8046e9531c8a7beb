//! The report end to end: registry -> snapshots -> JSON, table, leaks and health.

use std::panic::Location;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde_json::Value;

use super::*;
use crate::stats::Counters;

const MIB: u64 = 1 << 20;

/// The memory classes, as JSON fields.
const CLASSES: [&str; 7] = [
    "live_bytes",
    "cached_bytes",
    "free_bytes",
    "fresh_bytes",
    "metadata_bytes",
    "mapped_bytes",
    "released_bytes",
];

/// Held by every test that calls `report()`: a report moves the process-wide baseline of
/// "refused since the last report", which `exhausted_counts_since_the_last_report` checks.
static REPORTS: Mutex<()> = Mutex::new(());

/// Takes [`REPORTS`]; the tests of other modules that call `report()` take it too.
pub(crate) fn serial() -> std::sync::MutexGuard<'static, ()> {
    registry::lock(&REPORTS)
}

/// A pool-like source whose snapshot the test sets.
struct Fake(Mutex<ComponentSnapshot>);

impl Source for Fake {
    fn snapshot(&self) -> ComponentSnapshot {
        registry::lock(&self.0).clone()
    }
}

fn typed_snapshot() -> ComponentSnapshot {
    let mut s = ComponentSnapshot {
        type_name: Some("app::Order"),
        object_size: Some(64),
        live_objects: 1000,
        live_bytes: 64_000,
        cached_bytes: 4096,
        free_bytes: 8192,
        fresh_bytes: 1 << 16,
        metadata_bytes: 512,
        released_bytes: 1 << 20,
        locality: Some(0.75),
        counters: Counters {
            capacity: Some(4096),
            max_capacity: Some(65_536),
            acquires: 5000,
            releases: 4000,
            cross_thread_releases: 10,
            growths: 2,
            depot_exchanges: 40,
            ..Counters::default()
        },
        ..ComponentSnapshot::default()
    };
    let mut node = NodeSnapshot::new(0);
    node.live_bytes = 64_000;
    node.mapped_bytes = 100_000;
    node.local_acquires = 3750;
    node.remote_acquires = 1250;
    node.cross_node_releases = 3;
    s.nodes = vec![node];
    s
}

fn register_fake(name: &str, kind: Kind, s: ComponentSnapshot) -> (Arc<Fake>, Registration) {
    let fake = Arc::new(Fake(Mutex::new(s)));
    let weak: Weak<dyn Source> = Arc::downgrade(&fake) as _;
    let registration = register(name, kind, weak);
    (fake, registration)
}

fn component(json: &Value, id: ComponentId) -> &Value {
    json["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id.get())
        .unwrap()
}

#[test]
fn json_has_the_documented_fields() {
    let _serial = serial();
    let (_fake, reg) = register_fake("json-orders", Kind::Typed, typed_snapshot());
    let user = Component::register("json-user");
    user.add(100);
    user.sub(200);
    let json: Value = serde_json::from_str(&report().to_json()).unwrap();

    assert_eq!(json["schema"], 1);
    assert!(json["generated_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(json["process"]["pid"], std::process::id());
    assert!(json["process"].get("rss_bytes").is_some());
    assert!(json["process"].get("limit_bytes").is_some());
    for class in CLASSES {
        assert!(json["totals"][class].is_u64(), "totals.{class}");
    }
    assert!(json["leaks"].is_array());
    assert!(json["health"]["score"].is_u64());
    assert!(json["health"]["findings"].is_array());
    assert!(json["pressure"].is_null());

    let c = component(&json, reg.id());
    let expected = [
        ("name", Value::from("json-orders")),
        ("kind", Value::from("typed")),
        ("type_name", Value::from("app::Order")),
        ("object_size", Value::from(64)),
        ("live_objects", Value::from(1000)),
        ("live_bytes", Value::from(64_000)),
        ("cached_bytes", Value::from(4096)),
        ("free_bytes", Value::from(8192)),
        ("fresh_bytes", Value::from(65_536)),
        ("metadata_bytes", Value::from(512)),
        (
            "mapped_bytes",
            Value::from(64_000 + 4096 + 8192 + 65_536 + 512),
        ),
        ("released_bytes", Value::from(1 << 20)),
        ("capacity", Value::from(4096)),
        ("max_capacity", Value::from(65_536)),
        ("acquires", Value::from(5000)),
        ("releases", Value::from(4000)),
        ("cross_thread_releases", Value::from(10)),
        ("exhausted", Value::from(0)),
        ("corruptions", Value::from(0)),
        ("growths", Value::from(2)),
        ("locality", Value::from(0.75)),
    ];
    for (field, value) in expected {
        assert_eq!(c[field], value, "{field}");
    }
    assert!(c.get("accounting_errors").is_none());
    let node = &c["nodes"][0];
    for (field, value) in [
        ("node", 0),
        ("live_bytes", 64_000),
        ("mapped_bytes", 100_000),
        ("local_acquires", 3750),
        ("remote_acquires", 1250),
        ("cross_node_releases", 3),
    ] {
        assert_eq!(node[field], value, "nodes[0].{field}");
    }

    let u = component(&json, user.id());
    assert_eq!(u["kind"], "user");
    assert!(u["type_name"].is_null());
    assert!(u["locality"].is_null());
    assert!(u["max_capacity"].is_null());
    assert_eq!(u["live_bytes"], 0);
    assert_eq!(u["accounting_errors"], 1);
}

/// The keys of a JSON object, sorted.
fn keys(value: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = value
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

fn sorted(mut fields: Vec<&str>) -> Vec<&str> {
    fields.sort_unstable();
    fields
}

#[test]
fn json_keys_are_exactly_the_documented_ones() {
    let _serial = serial();
    let mut s = typed_snapshot();
    s.counters.corruptions = 1; // a finding
    let (_fake, reg) = register_fake("json-exact", Kind::Typed, s);
    let user = Component::register("json-exact-user");
    let json: Value = serde_json::from_str(&report().to_json()).unwrap();
    assert_eq!(
        keys(&json),
        sorted(vec![
            "schema",
            "generated_at",
            "process",
            "totals",
            "components",
            "leaks",
            "health",
            "pressure"
        ])
    );
    assert_eq!(
        keys(&json["process"]),
        sorted(vec!["pid", "rss_bytes", "limit_bytes"])
    );
    assert_eq!(keys(&json["totals"]), sorted(CLASSES.to_vec()));
    // The rows' keys, exactly: `tests/stats_pools.rs` (a typed pool's row).
    let user_row = keys(component(&json, user.id()));
    assert!(user_row.contains(&"accounting_errors"));
    assert!(!keys(component(&json, reg.id())).contains(&"accounting_errors"));
    assert_eq!(
        keys(&component(&json, reg.id())["nodes"][0]),
        sorted(vec![
            "node",
            "live_bytes",
            "mapped_bytes",
            "local_acquires",
            "remote_acquires",
            "cross_node_releases"
        ])
    );
    assert_eq!(keys(&json["health"]), sorted(vec!["score", "findings"]));
    let finding = json["health"]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["component_id"] == reg.id().get())
        .unwrap();
    assert_eq!(
        keys(finding),
        sorted(vec![
            "code",
            "severity",
            "component",
            "component_id",
            "message",
            "recommendation"
        ])
    );
    let leak = LeakReport {
        component: "x".into(),
        component_id: reg.id(),
        growth_bytes_per_min: 1.0,
        live_objects: 1,
        window_secs: 1.0,
        oldest_age_secs: Some(2.0),
        sites: vec![SiteReport::of(&Site::new(
            Location::caller(),
            1,
            Some(Duration::from_secs(2)),
        ))],
    };
    let leak = serde_json::to_value(&leak).unwrap();
    assert_eq!(
        keys(&leak),
        sorted(vec![
            "component",
            "component_id",
            "growth_bytes_per_min",
            "live_objects",
            "window_secs",
            "oldest_age_secs",
            "sites"
        ])
    );
    assert_eq!(
        keys(&leak["sites"][0]),
        sorted(vec!["location", "live", "oldest_age_secs"])
    );
    let location = leak["sites"][0]["location"].as_str().unwrap();
    assert_eq!(location.split(':').count(), 3, "{location}");
    assert!(location.starts_with(file!()), "{location}");
}

#[test]
fn json_round_trips_through_serde() {
    let _serial = serial();
    let mut s = typed_snapshot();
    s.counters.corruptions = 1;
    s.sites = Some(vec![Site::new(
        Location::caller(),
        5,
        Some(Duration::from_secs(3)),
    )]);
    let (_fake, _reg) = register_fake("round \"trip\"\n\\", Kind::Block, s);
    let mut original = report();
    original.pressure = Some(PressureSection {
        level: "high".into(),
        utilisation: Some(0.93),
        source: "cgroup-v2".into(),
        since_secs: 1.5,
        last_reclamation: None,
    });
    original.leaks.push(LeakReport {
        component: "x".into(),
        component_id: ComponentId::from_raw(1),
        growth_bytes_per_min: 1.5,
        live_objects: 2,
        window_secs: 300.0,
        oldest_age_secs: None,
        sites: vec![SiteReport {
            location: "a.rs:1:2".into(),
            live: 3,
            oldest_age_secs: Some(4.0),
        }],
    });
    let back = MemoryReport::from_json(&original.to_json()).unwrap();
    assert_eq!(back, original);
    assert!(!back.health.findings.is_empty());
    assert!(MemoryReport::from_json("{\"schema\": 1}").is_err());
}

#[test]
fn totals_sum_the_components_and_mapped_sums_the_classes() {
    let _serial = serial();
    let (_a, _ra) = register_fake("totals-a", Kind::Typed, typed_snapshot());
    let (_b, _rb) = register_fake("totals-b", Kind::Arena, typed_snapshot());
    let r = report();
    // Other tests register components concurrently: check the identity on this report.
    let mut sum = MemoryClasses::default();
    for c in &r.components {
        let m = &c.memory;
        assert_eq!(
            m.mapped_bytes,
            m.live_bytes + m.cached_bytes + m.free_bytes + m.fresh_bytes + m.metadata_bytes
        );
        sum.add(m);
    }
    assert_eq!(sum, r.totals);
}

#[test]
fn saturating_components_do_not_overflow_the_totals() {
    let _serial = serial();
    let s = ComponentSnapshot {
        live_bytes: u64::MAX,
        fresh_bytes: u64::MAX,
        ..ComponentSnapshot::default()
    };
    let (_a, ra) = register_fake("huge-a", Kind::Block, s.clone());
    let (_b, _rb) = register_fake("huge-b", Kind::Block, s);
    let r = report();
    let row = r.components.iter().find(|c| c.id == ra.id()).unwrap();
    assert_eq!(row.memory.mapped_bytes, u64::MAX);
    assert_eq!(r.totals.mapped_bytes, u64::MAX);
}

#[test]
fn the_table_lists_every_component() {
    let _serial = serial();
    let (_fake, _reg) = register_fake("table-orders", Kind::Typed, typed_snapshot());
    let user = Component::register("table\nuser");
    user.add(3 << 20);
    let long = Component::register("y".repeat(500));
    let r = report();
    let table = r.to_string();
    for c in &r.components {
        assert!(
            table
                .lines()
                .any(|l| l.trim_start().starts_with(&format!("{} ", c.id))),
            "component {} missing:\n{table}",
            c.id
        );
    }
    assert!(table.contains("table-orders"));
    assert!(table.contains("table\\nuser"));
    assert!(table.contains("3.0 MiB"));
    assert!(!table.contains(&"y".repeat(30)));
    assert!(table.lines().any(|l| l.contains("total")));
    assert!(table.starts_with("tally-pool memory at "));
    drop(long);
}

#[test]
fn exhausted_counts_since_the_last_report() {
    let _serial = serial();
    let mut s = typed_snapshot();
    s.counters.exhausted = 4;
    s.live_objects = 65_536;
    s.peak_live_objects = 65_536;
    let (fake, reg) = register_fake("exhausted-pool", Kind::Typed, s);
    let fired = |r: &MemoryReport| {
        r.health
            .findings
            .iter()
            .any(|f| f.code == "exhausted" && f.component_id == Some(reg.id()))
    };
    let first = report();
    assert!(fired(&first));
    let finding = first
        .health
        .findings
        .iter()
        .find(|f| f.code == "exhausted")
        .unwrap();
    assert!(finding.recommendation.contains("to at least 98304"));
    assert!(!fired(&report()), "no new refusals since the last report");
    registry::lock(&fake.0).counters.exhausted = 5;
    assert!(fired(&report()));
}

#[test]
fn the_peak_is_the_most_live_values_any_report_or_sample_saw() {
    let _serial = serial();
    // Without a cap the `exhausted` advice names the peak it sizes from.
    let (fake, reg) = register_fake("peaky", Kind::Block, ComponentSnapshot::default());
    let advice = |live: u64, exhausted: u64| {
        {
            let mut s = registry::lock(&fake.0);
            s.live_objects = live;
            s.counters.exhausted = exhausted;
        }
        report()
            .health
            .findings
            .into_iter()
            .find(|f| f.code == "exhausted" && f.component_id == Some(reg.id()))
            .map(|f| f.recommendation)
            .unwrap_or_default()
    };
    assert!(advice(50, 1).contains("(peak 50 live values"));
    assert!(advice(10, 3).contains("(peak 50 live values"));
    // A sampler tick sees a higher count between two reports.
    registry::lock(&fake.0).live_objects = 80;
    sample();
    assert!(advice(10, 4).contains("(peak 80 live values"));
    // Just below: a count under the peak leaves it.
    assert!(advice(79, 5).contains("(peak 80 live values"));
    assert!(advice(81, 6).contains("(peak 81 live values"));
}

#[test]
fn growing_components_become_leak_suspects() {
    let _serial = serial();
    // The only test that changes the process-wide leak rule; the others do not depend
    // on it.
    configure_leaks(
        LeakConfig::default()
            .window(Duration::from_secs(1))
            .min_growth_bytes(0)
            .min_growth_ratio(0.0)
            .min_samples(3),
    );
    let s = ComponentSnapshot {
        sites: Some(vec![
            Site::new(Location::caller(), 7, Some(Duration::from_secs(2))),
            Site::new(Location::caller(), 9, None),
        ]),
        ..ComponentSnapshot::default()
    };
    let (fake, reg) = register_fake("leaky", Kind::Typed, s);
    let start = std::time::Instant::now();
    let mut step = 0u64;
    let judged = |r: &MemoryReport| r.leaks.iter().any(|l| l.component_id == reg.id());
    // A window of growth, then up to eight samples more: a component's verdict may lag
    // by that many (samples judge one component in eight).
    let mut extra = 0;
    while start.elapsed() < Duration::from_millis(1300) || (extra < 8 && !judged(&report())) {
        if start.elapsed() >= Duration::from_millis(1300) {
            extra += 1;
        }
        step += 1;
        {
            let mut s = registry::lock(&fake.0);
            s.live_bytes = step * MIB;
            s.live_objects = step * 100;
        }
        sample();
        std::thread::sleep(Duration::from_millis(50));
    }
    let r = report();
    let leak = r.leaks.iter().find(|l| l.component_id == reg.id()).unwrap();
    assert_eq!(leak.component, "leaky");
    assert!(leak.growth_bytes_per_min > 0.0);
    assert_eq!(leak.window_secs, 1.0);
    assert_eq!(leak.oldest_age_secs, Some(2.0));
    assert_eq!(leak.sites.len(), 2);
    assert_eq!(leak.sites[0].live, 9, "most live first");
    assert!(leak.sites[0].location.contains("report_tests.rs:"));
    assert!(r
        .health
        .findings
        .iter()
        .any(|f| f.code == "leak-suspect" && f.component_id == Some(reg.id())));
    configure_leaks(LeakConfig::default());
}

#[test]
fn names_of_any_content_are_escaped_in_json() {
    let _serial = serial();
    let name = format!("{}\"\\\n\u{0}\u{1F600}", "n".repeat(5000));
    let c = Component::register(name.clone());
    let json = report().to_json();
    let value: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(component(&value, c.id())["name"], name.as_str());
}

#[test]
fn prometheus_labels_escape_three_characters() {
    assert_eq!(prometheus_label(""), "");
    assert_eq!(prometheus_label("\\"), "\\\\");
    assert_eq!(prometheus_label("\""), "\\\"");
    assert_eq!(prometheus_label("\n"), "\\n");
    assert_eq!(prometheus_label("tab\there é"), "tab\there é");
}

#[test]
fn a_report_during_churn_is_consistent() {
    let _serial = serial();
    let c = Component::register("churn-report");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let worker = {
        let (c, stop) = (c.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                c.add(100);
                c.sub(100);
            }
        })
    };
    for _ in 0..50 {
        let r = report();
        let row = r.components.iter().find(|row| row.id == c.id()).unwrap();
        assert!(row.memory.live_bytes <= 100);
        assert_eq!(row.accounting_errors, Some(0));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    worker.join().unwrap();
}

#[test]
fn a_hundred_components_report_quickly() {
    let _serial = serial();
    // Prints the time (tests never assert timings); the target is under 1 ms.
    let fakes: Vec<_> = (0..100)
        .map(|i| register_fake(&format!("perf-{i}"), Kind::Typed, typed_snapshot()))
        .collect();
    let _ = report();
    let start = std::time::Instant::now();
    let rounds = 20u32;
    for _ in 0..rounds {
        let r = report();
        assert!(r.components.len() >= 100);
    }
    println!(
        "report() with 100+ components: {:?}",
        start.elapsed() / rounds
    );
    drop(fakes);
}
