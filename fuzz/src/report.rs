//! `report`: arbitrary components through `stats::report()`, its JSON, its table and its
//! Prometheus series.
//!
//! Operations: user components (`stats::Component`) with arbitrary names, added to and
//! subtracted from; sources of this target's own (`stats::Source`, registered with
//! `stats::register` under any kind) whose snapshots are arbitrary, non-finite floats,
//! huge counters and odd strings included; drops of both; reports; samples.
//!
//! Every report must assemble without a panic, list each live component once with its
//! name and kind, with the memory classes its snapshot or count gives (a component's
//! count saturating at `i64::MAX` and at zero, with an accounting error for each
//! subtraction below zero), with totals that are the saturating sums of the rows; its
//! JSON must parse with serde_json and read back with `MemoryReport::from_json` to the
//! same components; its `Display` table must render; and a sample must publish series
//! that are valid Prometheus text, with each user component's live bytes.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use metrics_exporter_prometheus::PrometheusBuilder;
use tally_pool::stats::{
    self, Component, ComponentSnapshot, Counters, Kind, MemoryReport, NodeSnapshot, Registration,
    Site, Source,
};

/// Type names and guard strings a snapshot may carry (`&'static str` in the snapshot).
const WORDS: [&str; 6] = ["", "Order", "a\"b\\c\nd", "zé\u{0}\u{7f}", "{}[],:", "full"];

/// A site: which call site, live values, age (seconds, nanoseconds).
type ArbSite = (u8, u64, Option<(u64, u32)>);

/// A Prometheus sample: name, labels, value.
type Sample = (String, Vec<(String, String)>, f64);

/// An arbitrary snapshot.
#[derive(Arbitrary, Debug, Clone)]
pub struct Snap {
    type_name: Option<u8>,
    object_size: Option<u64>,
    live_objects: u64,
    classes: [u64; 6],
    counters: [u64; 7],
    capacity: Option<u64>,
    max_capacity: Option<u64>,
    last_corruption: Option<String>,
    guard: Option<u8>,
    locality: Option<f64>,
    nodes: Vec<(u32, [u64; 5])>,
    sites: Option<Vec<ArbSite>>,
    accounting_errors: u64,
}

fn word(i: u8) -> &'static str {
    WORDS[usize::from(i) % WORDS.len()]
}

/// Call sites for snapshots' sites.
fn location(i: u8) -> &'static std::panic::Location<'static> {
    #[track_caller]
    fn here() -> &'static std::panic::Location<'static> {
        std::panic::Location::caller()
    }
    match i % 3 {
        0 => here(),
        1 => here(),
        _ => std::panic::Location::caller(),
    }
}

impl Snap {
    fn snapshot(&self) -> ComponentSnapshot {
        let mut s = ComponentSnapshot::default();
        s.type_name = self.type_name.map(word);
        s.object_size = self.object_size;
        s.live_objects = self.live_objects;
        let [live, cached, free, fresh, metadata, released] = self.classes;
        s.live_bytes = live;
        s.cached_bytes = cached;
        s.free_bytes = free;
        s.fresh_bytes = fresh;
        s.metadata_bytes = metadata;
        s.released_bytes = released;
        let [acquires, releases, cross, exhausted, corruptions, growths, exchanges] = self.counters;
        s.counters = Counters {
            capacity: self.capacity,
            max_capacity: self.max_capacity,
            acquires,
            releases,
            cross_thread_releases: cross,
            exhausted,
            corruptions,
            growths,
            depot_exchanges: exchanges,
        };
        s.last_corruption = self.last_corruption.clone();
        s.guard = self.guard.map(word);
        s.locality = self.locality;
        s.nodes = self
            .nodes
            .iter()
            .take(8)
            .map(|&(node, [live, mapped, local, remote, cross])| {
                let mut n = NodeSnapshot::new(node);
                n.live_bytes = live;
                n.mapped_bytes = mapped;
                n.local_acquires = local;
                n.remote_acquires = remote;
                n.cross_node_releases = cross;
                n
            })
            .collect();
        s.sites = self.sites.as_ref().map(|sites| {
            sites
                .iter()
                .take(16)
                .map(|&(at, live, age)| {
                    let age = age.map(|(secs, nanos)| Duration::new(secs, nanos % 1_000_000_000));
                    Site::new(location(at), live, age)
                })
                .collect()
        });
        s.accounting_errors = self.accounting_errors;
        s
    }
}

/// A source whose snapshot the run sets.
struct Fixed(Mutex<Snap>);

impl Source for Fixed {
    fn snapshot(&self) -> ComponentSnapshot {
        match self.0.lock() {
            Ok(s) => s.snapshot(),
            Err(p) => p.into_inner().snapshot(),
        }
    }
}

const KINDS: [Kind; 5] = [
    Kind::Typed,
    Kind::Block,
    Kind::Allocator,
    Kind::Arena,
    Kind::User,
];

/// One step of a run.
#[derive(Arbitrary, Debug)]
pub enum Op {
    Register { name: String },
    Add { c: u8, bytes: usize },
    Sub { c: u8, bytes: usize },
    DropComponent { c: u8 },
    Source { name: String, kind: u8, snap: Snap },
    SetSnapshot { s: u8, snap: Snap },
    DropSource { s: u8 },
    Report,
    Sample,
}

/// A user component and the count the model expects.
struct User {
    name: String,
    component: Component,
    live: u64,
    errors: u64,
}

/// A source of the run.
struct Own {
    name: String,
    kind: Kind,
    source: Arc<Fixed>,
    registration: Registration,
}

#[derive(Default)]
struct Model {
    users: Vec<User>,
    sources: Vec<Own>,
}

fn pick(n: usize, i: u8) -> Option<usize> {
    (n > 0).then(|| usize::from(i) % n)
}

const MAX: u64 = i64::MAX as u64;

impl Model {
    fn step(&mut self, op: Op) {
        match op {
            Op::Register { name } => {
                if self.users.len() < 16 {
                    let component = Component::register(name.as_str());
                    self.users.push(User {
                        name,
                        component,
                        live: 0,
                        errors: 0,
                    });
                }
            }
            Op::Add { c, bytes } => {
                if let Some(i) = pick(self.users.len(), c) {
                    let u = &mut self.users[i];
                    u.component.add(bytes);
                    u.live = u.live.saturating_add((bytes as u64).min(MAX)).min(MAX);
                    self.check_user(i);
                }
            }
            Op::Sub { c, bytes } => {
                if let Some(i) = pick(self.users.len(), c) {
                    let u = &mut self.users[i];
                    u.component.sub(bytes);
                    let b = (bytes as u64).min(MAX);
                    if b > u.live {
                        u.live = 0;
                        u.errors += 1;
                    } else {
                        u.live -= b;
                    }
                    self.check_user(i);
                }
            }
            Op::DropComponent { c } => {
                if let Some(i) = pick(self.users.len(), c) {
                    self.users.swap_remove(i);
                }
            }
            Op::Source { name, kind, snap } => {
                if self.sources.len() < 16 {
                    let kind = KINDS[usize::from(kind) % KINDS.len()];
                    let source = Arc::new(Fixed(Mutex::new(snap)));
                    let weak: Weak<dyn Source> = Arc::downgrade(&source) as Weak<dyn Source>;
                    let registration = stats::register(name.as_str(), kind, weak);
                    self.sources.push(Own {
                        name,
                        kind,
                        source,
                        registration,
                    });
                }
            }
            Op::SetSnapshot { s, snap } => {
                if let Some(i) = pick(self.sources.len(), s) {
                    match self.sources[i].source.0.lock() {
                        Ok(mut g) => *g = snap,
                        Err(p) => *p.into_inner() = snap,
                    }
                }
            }
            Op::DropSource { s } => {
                if let Some(i) = pick(self.sources.len(), s) {
                    self.sources.swap_remove(i);
                }
            }
            Op::Report => self.check_report(),
            Op::Sample => self.check_sample(),
        }
    }

    fn check_user(&self, i: usize) {
        let u = &self.users[i];
        assert_eq!(
            u.component.live_bytes(),
            u.live,
            "component {:?}: live bytes",
            u.name
        );
        assert_eq!(
            u.component.accounting_errors(),
            u.errors,
            "component {:?}: accounting errors",
            u.name
        );
    }

    fn check_report(&self) {
        let report = stats::report();
        let mut totals = [0u64; 7];
        for row in &report.components {
            let m = &row.memory;
            let classes = [
                m.live_bytes,
                m.cached_bytes,
                m.free_bytes,
                m.fresh_bytes,
                m.metadata_bytes,
            ];
            let sum = classes.iter().fold(0u64, |a, &b| a.saturating_add(b));
            assert_eq!(
                m.mapped_bytes, sum,
                "{:?}: mapped is the sum of the classes",
                row.name
            );
            for (t, v) in totals
                .iter_mut()
                .zip(classes.iter().chain([&m.mapped_bytes, &m.released_bytes]))
            {
                *t = t.saturating_add(*v);
            }
            if let Some(l) = row.locality {
                assert!((0.0..=1.0).contains(&l), "{:?}: locality {l}", row.name);
            }
        }
        let t = &report.totals;
        assert_eq!(
            [
                t.live_bytes,
                t.cached_bytes,
                t.free_bytes,
                t.fresh_bytes,
                t.metadata_bytes,
                t.mapped_bytes,
                t.released_bytes
            ],
            totals,
            "totals are the sums of the rows"
        );
        for u in &self.users {
            let rows: Vec<_> = report
                .components
                .iter()
                .filter(|r| r.id == u.component.id())
                .collect();
            assert_eq!(rows.len(), 1, "component {:?} listed once", u.name);
            let r = rows[0];
            assert_eq!((r.name.as_str(), r.kind), (u.name.as_str(), Kind::User));
            assert_eq!(r.memory.live_bytes, u.live, "{:?}: live bytes", u.name);
            assert_eq!(r.accounting_errors, Some(u.errors), "{:?}", u.name);
        }
        for s in &self.sources {
            let rows: Vec<_> = report
                .components
                .iter()
                .filter(|r| r.id == s.registration.id())
                .collect();
            assert_eq!(rows.len(), 1, "source {:?} listed once", s.name);
            let r = rows[0];
            let snap = s.source.snapshot();
            assert_eq!((r.name.as_str(), r.kind), (s.name.as_str(), s.kind));
            assert_eq!(
                [
                    r.memory.live_bytes,
                    r.memory.cached_bytes,
                    r.memory.free_bytes,
                    r.memory.fresh_bytes,
                    r.memory.metadata_bytes,
                    r.memory.released_bytes,
                    r.live_objects
                ],
                [
                    snap.live_bytes,
                    snap.cached_bytes,
                    snap.free_bytes,
                    snap.fresh_bytes,
                    snap.metadata_bytes,
                    snap.released_bytes,
                    snap.live_objects
                ],
                "{:?}: the row is the snapshot",
                s.name
            );
            assert_eq!(r.nodes, snap.nodes, "{:?}: nodes", s.name);
        }

        let json = report.to_json();
        if let Err(e) = serde_json::from_str::<serde_json::Value>(&json) {
            panic!("to_json is not JSON ({e}): {json}");
        }
        let back = match MemoryReport::from_json(&json) {
            Ok(back) => back,
            Err(e) => panic!("from_json refused to_json's output ({e}): {json}"),
        };
        assert_eq!(back.components.len(), report.components.len());
        for (a, b) in back.components.iter().zip(&report.components) {
            assert_eq!(
                (a.id, &a.name, a.kind, &a.memory, &a.counters, &a.nodes),
                (b.id, &b.name, b.kind, &b.memory, &b.counters, &b.nodes),
                "a component survives the JSON round trip"
            );
        }
        assert_eq!(back.totals, report.totals);
        assert_eq!(back.health.score, report.health.score);
        let table = report.to_string();
        assert!(!table.is_empty(), "the table renders");
    }

    fn check_sample(&self) {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, stats::sample);
        let text = handle.render();
        let samples = parse_prometheus(&text);
        for u in &self.users {
            let id = u.component.id().get().to_string();
            let live = samples.iter().find(|(name, labels, _)| {
                name == "tally_pool_live_bytes" && labels.iter().any(|(k, v)| k == "id" && *v == id)
            });
            match live {
                Some((_, labels, value)) => {
                    assert_eq!(*value, u.live as f64, "{:?}: published live bytes", u.name);
                    let name = exported(&u.name);
                    assert!(
                        labels.iter().any(|(k, v)| k == "component" && *v == name),
                        "{:?}: the component label reads back as the name as the exporter \
                         renders it ({name:?}): {labels:?}",
                        u.name
                    );
                }
                None => panic!("{:?} (id {id}) has no live-bytes series:\n{text}", u.name),
            }
        }
    }
}

/// `name` as a Prometheus scrape of metrics-exporter-prometheus reads back. The library
/// passes the name to `metrics` as it is; the exporter escapes it, but takes two backslashes
/// in a row for one backslash escaped already, so they read back as one.
fn exported(name: &str) -> String {
    let escaped = metrics_exporter_prometheus::formatting::sanitize_label_value(name);
    let mut out = String::new();
    let mut chars = escaped.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// The samples of a Prometheus text exposition: name, labels (unescaped) and value;
/// panics, naming the line, on anything that is not valid.
fn parse_prometheus(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name_end = line
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(line.len());
        let name = &line[..name_end];
        assert!(
            !name.is_empty() && !name.starts_with(|c: char| c.is_ascii_digit()),
            "bad metric name in {line:?}"
        );
        let mut rest = &line[name_end..];
        let mut labels = Vec::new();
        if let Some(r) = rest.strip_prefix('{') {
            let mut chars = r.char_indices().peekable();
            loop {
                // A label name, `=`, a quoted value, then `,` or `}`.
                let start = match chars.peek() {
                    Some(&(i, '}')) => {
                        rest = &r[i + 1..];
                        break;
                    }
                    Some(&(i, _)) => i,
                    None => panic!("unterminated labels in {line:?}"),
                };
                let eq = r[start..]
                    .find('=')
                    .unwrap_or_else(|| panic!("a label without '=' in {line:?}"));
                let key = &r[start..start + eq];
                assert!(
                    !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                    "bad label name {key:?} in {line:?}"
                );
                while chars.peek().is_some_and(|&(i, _)| i <= start + eq) {
                    chars.next();
                }
                assert_eq!(chars.next().map(|(_, c)| c), Some('"'), "in {line:?}");
                let mut value = String::new();
                loop {
                    match chars.next() {
                        Some((_, '\\')) => match chars.next() {
                            Some((_, '\\')) => value.push('\\'),
                            Some((_, '"')) => value.push('"'),
                            Some((_, 'n')) => value.push('\n'),
                            other => panic!("bad escape {other:?} in {line:?}"),
                        },
                        Some((_, '"')) => break,
                        Some((_, '\n')) => panic!("a raw newline in {line:?}"),
                        Some((_, c)) => value.push(c),
                        None => panic!("unterminated label value in {line:?}"),
                    }
                }
                labels.push((key.to_owned(), value));
                match chars.next() {
                    Some((_, ',')) => {}
                    Some((i, '}')) => {
                        rest = &r[i + 1..];
                        break;
                    }
                    other => panic!("{other:?} after a label value in {line:?}"),
                }
            }
        }
        let mut fields = rest.split(' ').filter(|f| !f.is_empty());
        let value = match fields.next() {
            Some("+Inf") => f64::INFINITY,
            Some("-Inf") => f64::NEG_INFINITY,
            Some("NaN") => f64::NAN,
            Some(v) => v
                .parse()
                .unwrap_or_else(|e| panic!("bad value {v:?} in {line:?}: {e}")),
            None => panic!("no value in {line:?}"),
        };
        if let Some(ts) = fields.next() {
            assert!(ts.parse::<i64>().is_ok(), "bad timestamp in {line:?}");
        }
        assert!(fields.next().is_none(), "trailing fields in {line:?}");
        out.push((name.to_owned(), labels, value));
    }
    out
}

/// Runs the operations `data` describes and checks every report against the model.
pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let mut model = Model::default();
    let mut steps = 0;
    while !u.is_empty() && steps < 64 {
        let Ok(op) = Op::arbitrary(&mut u) else { break };
        model.step(op);
        steps += 1;
    }
    model.check_report();
    model.check_sample();
    for i in 0..model.users.len() {
        model.check_user(i);
    }
}
