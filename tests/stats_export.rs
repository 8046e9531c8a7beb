//! The statistics exports, with features `metrics` and `tracing`
//! (`cargo test --features metrics,tracing --test stats_export`):
//!
//! - the sampler's snapshots reach a real Prometheus endpoint
//!   (`metrics-exporter-prometheus` on a loopback port), scraped over HTTP: the series of
//!   a pool this test created are there with its name as a label, escaped, and its
//!   figures;
//! - a component whose live bytes grow over the leak window raises a `warn` event when it
//!   becomes a leak suspect, and an `info` event when its growth has stopped long enough;
//! - each corruption event a pool detects raises one `error` event, with the pool's name
//!   and the kind of corruption as fields, wherever it is counted (a refused double free,
//!   a refused hand-out of a block written after its release).
#![cfg(all(feature = "metrics", feature = "tracing"))]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use core::alloc::Layout;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::PrometheusBuilder;
use tally_pool::block::{BlockPool, BlockPoolConfig, GuardLevel};
use tally_pool::stats::{self, Component, LeakConfig};
use tally_pool::{CorruptionKind, Pool, PoolConfig, PoolError};
use tracing_core::span::{Attributes, Id, Record};
use tracing_core::{Event, Level, Metadata, Subscriber};

/// A free loopback port: bound, read, released (the exporter binds it right after).
fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// `GET /metrics` over a plain TCP connection; the response body.
fn scrape(addr: SocketAddr) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(
        response.starts_with("HTTP/1.1 200"),
        "scrape answered: {}",
        response.lines().next().unwrap_or("")
    );
    response
}

#[test]
fn the_sampler_publishes_every_pool_to_a_prometheus_endpoint() {
    let addr = free_port();
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
        .unwrap();
    let pool = Pool::<[u64; 8]>::new(PoolConfig::new("export \"quotes\"").capacity(64)).unwrap();
    let held: Vec<_> = (0..10u64)
        .map(|i| pool.acquire_with([i; 8]).unwrap())
        .collect();
    let user = Component::register("export-book");
    user.add(4096);
    stats::sample();

    // The listener starts on the exporter's own thread: retry briefly.
    let deadline = Instant::now() + Duration::from_secs(10);
    let body = loop {
        match TcpStream::connect(addr) {
            Ok(_) => break scrape(addr),
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("no exporter at {addr}: {e}"),
        }
    };
    let series = |name: &str, component: &str| -> Option<f64> {
        body.lines()
            .filter(|l| l.starts_with(name) && l.contains(&format!("component=\"{component}\"")))
            .find_map(|l| l.rsplit(' ').next()?.parse().ok())
    };
    let escaped = stats::prometheus_label("export \"quotes\"");
    assert_eq!(
        series("tally_pool_live_objects{", &escaped),
        Some(10.0),
        "{body}"
    );
    assert_eq!(series("tally_pool_acquires_total{", &escaped), Some(10.0));
    assert!(series("tally_pool_mapped_bytes{", &escaped).is_some_and(|b| b > 0.0));
    assert_eq!(
        series("tally_pool_live_bytes{", "export-book"),
        Some(4096.0)
    );
    assert!(body
        .lines()
        .any(|l| l.starts_with("tally_pool_health_score ")));
    drop(held);
}

/// Events seen by [`Events`]: level and message.
type Seen = Arc<Mutex<Vec<(Level, String)>>>;

/// A subscriber that keeps the level and message of every event.
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
        let mut text = Text(format!("target={} ", event.metadata().target()));
        event.record(&mut text);
        self.0
            .lock()
            .unwrap()
            .push((*event.metadata().level(), text.0));
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[test]
fn a_leak_suspect_raises_a_warning_and_its_end_an_info_event() {
    let seen: Seen = Arc::default();
    let _default = tracing_core::dispatcher::set_default(&tracing_core::Dispatch::new(Events(
        Arc::clone(&seen),
    )));
    let window = Duration::from_secs(1);
    stats::configure_leaks(
        LeakConfig::default()
            .window(window)
            .min_growth_bytes(1 << 20),
    );
    let leaky = Component::register("export-leaky");
    let events_for = |level: Level| {
        seen.lock()
            .unwrap()
            .iter()
            .filter(|(l, text)| *l == level && text.contains("export-leaky"))
            .count()
    };
    // Sampled 40 times over 2 windows, then on until an event of `level` came (a minute
    // at most): a sample judges one component in eight, and a loaded machine may take
    // fewer samples a window than asked.
    let sample_until = |level: Level, step: &dyn Fn()| {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut samples = 0;
        while samples < 40 || events_for(level) == 0 && Instant::now() < deadline {
            step();
            stats::sample();
            samples += 1;
            thread::sleep(window / 20);
        }
    };
    // Steady growth of 1 MiB per step.
    sample_until(Level::WARN, &|| leaky.add(1 << 20));
    assert_eq!(events_for(Level::WARN), 1, "{:?}", seen.lock().unwrap());
    // Flat: no longer a suspect.
    sample_until(Level::INFO, &|| ());
    assert_eq!(events_for(Level::INFO), 1, "{:?}", seen.lock().unwrap());
    stats::configure_leaks(LeakConfig::default());
}

#[test]
fn each_corruption_raises_one_error_event_with_pool_and_kind() {
    let seen: Seen = Arc::default();
    let _default = tracing_core::dispatcher::set_default(&tracing_core::Dispatch::new(Events(
        Arc::clone(&seen),
    )));
    let errors = || -> Vec<String> {
        seen.lock()
            .unwrap()
            .iter()
            .filter(|(level, text)| *level == Level::ERROR && text.contains("export-guarded"))
            .map(|(_, text)| text.clone())
            .collect()
    };
    let pool = BlockPool::new(
        BlockPoolConfig::new(Layout::new::<[u64; 8]>())
            .name("export-guarded")
            .guard(GuardLevel::Full),
    )
    .unwrap();
    assert!(errors().is_empty());

    // A double free, refused.
    let b = pool.allocate().unwrap();
    // SAFETY: allocated just above, freed once.
    unsafe { pool.free(b) }.unwrap();
    // SAFETY: under a guard the contract allows freeing a free block, which is refused.
    let again = unsafe { pool.free(b) };
    assert!(matches!(
        again,
        Err(PoolError::Corruption {
            kind: CorruptionKind::DoubleFree,
            ..
        })
    ));
    let events = errors();
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(
        events[0].starts_with("target=tally_pool::block "),
        "{events:?}"
    );
    assert!(events[0].contains("pool=\"export-guarded\""), "{events:?}");
    assert!(events[0].contains("kind=DoubleFree "), "{events:?}");
    assert!(events[0].contains("double free"), "{events:?}");

    // A write into a free block, found when it is handed out again.
    let b = pool.allocate().unwrap();
    // SAFETY: allocated just above, freed once.
    unsafe { pool.free(b) }.unwrap();
    // SAFETY: a test of the guard: the block is free and still mapped; this write is the
    // use after free that `Full` is there to catch.
    unsafe { b.as_ptr().write_volatile(0x42) };
    let refused = pool.allocate();
    assert!(
        matches!(
            refused,
            Err(PoolError::Corruption {
                kind: CorruptionKind::UseAfterFree,
                ..
            })
        ),
        "{refused:?}"
    );
    let events = errors();
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(events[1].contains("kind=UseAfterFree "), "{events:?}");
    assert_eq!(pool.stats().corruption_events, 2);
}
