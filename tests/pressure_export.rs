//! The pressure monitor's exports, with features `metrics` and `tracing`
//! (`cargo test --features metrics,tracing --test pressure_export`): each transition is an
//! `info` event of target `tally_pool::pressure`, and the level is the gauge
//! `tally_pool_pressure_level`, back to 0 when the monitor stops.
#![cfg(all(feature = "metrics", feature = "tracing"))]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusBuilder;
use tally_pool::pressure::{PressureConfig, PressureLevel, PressureMonitor};
use tracing_core::span::{Attributes, Id, Record};
use tracing_core::{Event, Level, Metadata, Subscriber};

/// Events seen by [`Events`]: target, level and fields.
type Seen = Arc<Mutex<Vec<(String, Level, String)>>>;

/// A subscriber that keeps the target, level and fields of every event.
struct Events(Seen);

impl Subscriber for Events {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        struct Text(String);
        impl tracing_core::field::Visit for Text {
            fn record_debug(&mut self, field: &tracing_core::Field, value: &dyn std::fmt::Debug) {
                self.0.push_str(&format!("{}={:?} ", field.name(), value));
            }
        }
        let mut text = Text(String::new());
        event.record(&mut text);
        let meta = event.metadata();
        self.0
            .lock()
            .unwrap()
            .push((meta.target().to_owned(), *meta.level(), text.0));
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[test]
fn a_transition_is_an_event_and_the_level_a_gauge() {
    let prometheus = PrometheusBuilder::new().install_recorder().unwrap();
    let seen: Seen = Arc::default();
    // Global: the monitor thread must see it too.
    tracing_core::dispatcher::set_global_default(tracing_core::Dispatch::new(Events(Arc::clone(
        &seen,
    ))))
    .unwrap();
    // The rlimit fixture: RLIMIT_AS at 88 %, so the first tick enters High.
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pressure/rlimit");
    let config = PressureConfig::default()
        .root(root)
        .interval(Duration::from_secs(3600))
        .horizon(Duration::ZERO);
    let monitor = PressureMonitor::start(config).unwrap();
    assert_eq!(monitor.level(), PressureLevel::High);
    let events: Vec<(String, Level, String)> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(target, _, _)| target == "tally_pool::pressure")
        .cloned()
        .collect();
    assert_eq!(events.len(), 1, "{events:?}");
    let (_, level, fields) = &events[0];
    assert_eq!(*level, Level::INFO);
    for field in ["from=\"normal\"", "to=\"high\"", "source=\"rlimit\""] {
        assert!(fields.contains(field), "{fields}");
    }
    let gauge = |text: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix("tally_pool_pressure_level "))
            .map(|v| v.trim().parse::<f64>().unwrap())
    };
    assert_eq!(gauge(&prometheus.render()), Some(2.0));
    drop(monitor);
    assert_eq!(gauge(&prometheus.render()), Some(0.0));
}
