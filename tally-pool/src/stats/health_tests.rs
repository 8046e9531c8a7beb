//! Each health rule fires on one input and stays quiet on one just below its floor.

use super::*;
use crate::stats::Counters;

const MIB: u64 = 1 << 20;

fn input<'a>(snapshot: &'a ComponentSnapshot) -> RuleInput<'a> {
    RuleInput {
        id: ComponentId::from_raw(7),
        name: "orders",
        kind: Kind::Typed,
        snapshot,
        exhausted_since_last: 0,
        leak: None,
        fragmented_for: None,
    }
}

fn codes(health: &HealthSection) -> Vec<&str> {
    health.findings.iter().map(|f| f.code.as_str()).collect()
}

fn leak(sites: Vec<super::super::report::SiteReport>) -> LeakReport {
    LeakReport {
        component: "orders".into(),
        component_id: ComponentId::from_raw(7),
        growth_bytes_per_min: 2.0 * MIB as f64,
        live_objects: 1000,
        window_secs: 300.0,
        oldest_age_secs: None,
        sites,
    }
}

#[test]
fn nothing_fires_on_a_quiet_component() {
    let s = ComponentSnapshot::default();
    let health = evaluate(&[input(&s)]);
    assert_eq!(health.score, 100);
    assert!(health.findings.is_empty());
    assert_eq!(evaluate(&[]).score, 100);
}

#[test]
fn corruption_fires_and_caps_the_score() {
    let mut s = ComponentSnapshot {
        last_corruption: Some("chunk 3 header, node 0".into()),
        guard: Some("canary"),
        counters: Counters {
            corruptions: 1,
            ..Counters::default()
        },
        ..ComponentSnapshot::default()
    };
    let health = evaluate(&[input(&s)]);
    assert_eq!(codes(&health), ["corruption"]);
    assert!(health.score <= CORRUPTION_MAX_SCORE);
    let f = &health.findings[0];
    assert_eq!(f.severity, Severity::Critical);
    assert_eq!(f.component.as_deref(), Some("orders"));
    assert!(f.message.contains("chunk 3 header, node 0"));
    assert!(f.recommendation.contains("GuardLevel::Full"));
    s.guard = None;
    assert!(evaluate(&[input(&s)]).findings[0]
        .recommendation
        .contains("GuardLevel::Canary"));
    s.guard = Some("full");
    assert!(evaluate(&[input(&s)]).findings[0]
        .recommendation
        .contains("full guard caught it"));
}

#[test]
fn corruption_stays_quiet_at_zero() {
    let s = ComponentSnapshot {
        guard: Some("off"),
        counters: Counters {
            corruptions: 0,
            ..Counters::default()
        },
        ..ComponentSnapshot::default()
    };
    assert!(evaluate(&[input(&s)]).findings.is_empty());
}

#[test]
fn exhausted_fires_since_the_last_report_with_a_suggested_cap() {
    let s = ComponentSnapshot {
        live_objects: 1000,
        peak_live_objects: 1000,
        counters: Counters {
            max_capacity: Some(1000),
            exhausted: 12,
            ..Counters::default()
        },
        ..ComponentSnapshot::default()
    };
    let mut i = input(&s);
    i.exhausted_since_last = 3;
    let health = evaluate(&[i]);
    // `near-cap` is implied and not repeated.
    assert_eq!(codes(&health), ["exhausted"]);
    assert!(health.findings[0].message.contains("refused 3"));
    assert!(health.findings[0]
        .recommendation
        .contains("from 1000 to at least 1500"));
    assert_eq!(health.score, 70);
}

#[test]
fn exhausted_stays_quiet_without_new_refusals() {
    let mut s = ComponentSnapshot {
        live_objects: 10,
        counters: Counters {
            max_capacity: Some(1000),
            ..Counters::default()
        },
        ..ComponentSnapshot::default()
    };
    s.counters.exhausted = 12; // all before the last report
    assert!(evaluate(&[input(&s)]).findings.is_empty());
}

#[test]
fn near_cap_fires_at_ninety_percent() {
    let s = ComponentSnapshot {
        live_objects: 900,
        peak_live_objects: 950,
        counters: Counters {
            max_capacity: Some(1000),
            ..Counters::default()
        },
        ..ComponentSnapshot::default()
    };
    let health = evaluate(&[input(&s)]);
    assert_eq!(codes(&health), ["near-cap"]);
    assert_eq!(health.findings[0].severity, Severity::Warning);
    assert!(health.findings[0]
        .recommendation
        .contains("to at least 1500"));
    assert_eq!(health.score, 90);
}

#[test]
fn near_cap_stays_quiet_just_below() {
    let mut s = ComponentSnapshot {
        live_objects: 899,
        counters: Counters {
            max_capacity: Some(1000),
            ..Counters::default()
        },
        ..ComponentSnapshot::default()
    };
    assert!(evaluate(&[input(&s)]).findings.is_empty());
    s.counters.max_capacity = None; // no cap, nothing to be near
    s.live_objects = u64::MAX;
    assert!(evaluate(&[input(&s)]).findings.is_empty());
    s.counters.max_capacity = Some(0);
    assert!(evaluate(&[input(&s)]).findings.is_empty());
}

#[test]
fn leak_suspect_fires_with_sites_or_advice() {
    let s = ComponentSnapshot::default();
    let l = leak(Vec::new());
    let mut i = input(&s);
    i.leak = Some(&l);
    let health = evaluate(&[i]);
    assert_eq!(codes(&health), ["leak-suspect"]);
    assert!(health.findings[0].recommendation.contains("track_sites"));
    assert_eq!(health.score, 80);

    let tracked = ComponentSnapshot {
        sites: Some(Vec::new()),
        ..ComponentSnapshot::default()
    };
    let l = leak(vec![super::super::report::SiteReport {
        location: "src/book.rs:10:5".into(),
        live: 900,
        oldest_age_secs: Some(290.0),
    }]);
    let mut i = input(&tracked);
    i.leak = Some(&l);
    let f = &evaluate(&[i]).findings[0];
    assert!(f
        .recommendation
        .contains("src/book.rs:10:5 (900 live, oldest 290 s)"));

    let mut i = input(&s);
    i.kind = Kind::User;
    let l = leak(Vec::new());
    i.leak = Some(&l);
    assert!(evaluate(&[i]).findings[0]
        .recommendation
        .contains("matching `sub`"));
}

#[test]
fn leak_suspect_stays_quiet_without_a_suspicion() {
    let s = ComponentSnapshot {
        live_bytes: 500 * MIB,
        ..ComponentSnapshot::default()
    };
    assert!(evaluate(&[input(&s)]).findings.is_empty());
}

fn fragmented_snapshot(idle: u64, live: u64) -> ComponentSnapshot {
    ComponentSnapshot {
        free_bytes: idle / 2,
        cached_bytes: idle / 4,
        fresh_bytes: idle - idle / 2 - idle / 4,
        live_bytes: live,
        live_objects: 1000,
        ..ComponentSnapshot::default()
    }
}

#[test]
fn fragmented_fires_above_half_and_sixteen_mib_held_a_minute() {
    let s = fragmented_snapshot(32 * MIB, 16 * MIB);
    let health = evaluate(&[input(&s)]);
    assert_eq!(codes(&health), ["fragmented"]);
    assert!(health.findings[0].recommendation.contains("reclaim()"));
    assert!(health.findings[0].recommendation.contains("1250 values"));
    let mut i = input(&s);
    i.fragmented_for = Some(FRAGMENTED_MIN_DURATION);
    assert_eq!(codes(&evaluate(&[i])), ["fragmented"]);
}

#[test]
fn fragmented_stays_quiet_just_below_each_floor() {
    // At the byte floor, not above it.
    let s = fragmented_snapshot(16 * MIB, 0);
    assert!(evaluate(&[input(&s)]).findings.is_empty());
    // Exactly half idle, not more.
    let s = fragmented_snapshot(32 * MIB, 32 * MIB);
    assert!(evaluate(&[input(&s)]).findings.is_empty());
    // Held a little less than a minute in the sampled history.
    let s = fragmented_snapshot(32 * MIB, 0);
    let mut i = input(&s);
    i.fragmented_for = Some(FRAGMENTED_MIN_DURATION - Duration::from_millis(1));
    assert!(evaluate(&[i]).findings.is_empty());
    // Metadata is not idle memory.
    let s = ComponentSnapshot {
        metadata_bytes: 100 * MIB,
        ..ComponentSnapshot::default()
    };
    assert!(evaluate(&[input(&s)]).findings.is_empty());
}

#[test]
fn remote_heavy_fires_below_ninety_percent_over_ten_thousand() {
    let s = ComponentSnapshot {
        locality: Some(0.89),
        counters: Counters {
            acquires: MIN_ACQUIRES,
            ..Counters::default()
        },
        ..ComponentSnapshot::default()
    };
    let health = evaluate(&[input(&s)]);
    assert_eq!(codes(&health), ["remote-heavy"]);
    assert!(health.findings[0]
        .recommendation
        .contains("numa::Placement"));
}

#[test]
fn remote_heavy_reads_a_locality_out_of_range_as_the_report_row_does() {
    let mut s = ComponentSnapshot {
        locality: Some(-3.0),
        counters: Counters {
            acquires: 20_000,
            ..Counters::default()
        },
        ..ComponentSnapshot::default()
    };
    let health = evaluate(&[input(&s)]);
    assert_eq!(codes(&health), ["remote-heavy"]);
    assert!(
        health.findings[0]
            .message
            .starts_with("only 0.0 % of 20000"),
        "{}",
        health.findings[0].message
    );
    s.locality = Some(7.5);
    assert!(evaluate(&[input(&s)]).findings.is_empty());
}

#[test]
fn remote_heavy_stays_quiet_just_below_its_floors() {
    let mut s = ComponentSnapshot {
        locality: Some(0.1),
        counters: Counters {
            acquires: MIN_ACQUIRES - 1,
            ..Counters::default()
        },
        ..ComponentSnapshot::default()
    };
    assert!(evaluate(&[input(&s)]).findings.is_empty());
    s.counters.acquires = MIN_ACQUIRES;
    s.locality = Some(0.9);
    assert!(evaluate(&[input(&s)]).findings.is_empty());
    s.locality = None;
    assert!(evaluate(&[input(&s)]).findings.is_empty());
}

#[test]
fn cache_misses_fire_above_one_exchange_per_four_acquires() {
    let s = ComponentSnapshot {
        counters: Counters {
            acquires: 40_000,
            depot_exchanges: 10_001,
            ..Counters::default()
        },
        ..ComponentSnapshot::default()
    };
    let health = evaluate(&[input(&s)]);
    assert_eq!(codes(&health), ["cache-misses"]);
    assert!(health.findings[0].recommendation.contains("capacity"));
}

#[test]
fn cache_misses_stay_quiet_at_the_bound_and_below_the_floor() {
    let mut s = ComponentSnapshot {
        counters: Counters {
            acquires: 40_000,
            depot_exchanges: 10_000,
            ..Counters::default()
        },
        ..ComponentSnapshot::default()
    };
    assert!(evaluate(&[input(&s)]).findings.is_empty());
    s.counters.acquires = MIN_ACQUIRES - 1;
    s.counters.depot_exchanges = MIN_ACQUIRES;
    assert!(evaluate(&[input(&s)]).findings.is_empty());
}

#[test]
fn findings_are_sorted_and_the_score_saturates() {
    let bad = ComponentSnapshot {
        locality: Some(0.0),
        counters: Counters {
            acquires: 100_000,
            depot_exchanges: 100_000,
            corruptions: 2,
            ..Counters::default()
        },
        ..ComponentSnapshot::default()
    };
    let inputs: Vec<RuleInput<'_>> = (0..5).map(|_| input(&bad)).collect();
    let health = evaluate(&inputs);
    assert_eq!(health.score, 0);
    assert_eq!(health.findings.len(), 15);
    assert!(health
        .findings
        .windows(2)
        .all(|w| w[0].severity >= w[1].severity));
    assert_eq!(health.findings[0].code, "corruption");
}

#[test]
fn the_table_matches_the_docs() {
    let codes: Vec<&str> = RULES.iter().map(|r| r.code).collect();
    assert_eq!(
        codes,
        [
            "corruption",
            "exhausted",
            "near-cap",
            "leak-suspect",
            "fragmented",
            "remote-heavy",
            "cache-misses"
        ]
    );
    let docs = include_str!("mod.rs");
    for rule in &RULES {
        let row = format!("| `{}` | {} | {} |", rule.code, rule.severity, rule.penalty);
        assert!(docs.contains(&row), "the docs lack the row {row}");
    }
}
