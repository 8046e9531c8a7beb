//! Pools in the statistics: every `BlockPool`, `Pool::<T>::new` pool and derived pool joins
//! the registry when it is created (a block pool leaves it when dropped; a typed pool is one
//! component, its node pools are not listed), and its memory classes partition what it
//! has mapped exactly whenever no operation on it is in flight: after allocating, freeing,
//! growing, reclaiming, and after a thread that cached blocks exits, at every guard level
//! and for a typed pool on two synthetic nodes. Refusals at the cap and refused double
//! frees are counted; reports taken while threads churn stay within bounds; the JSON row
//! has every field of the schema.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use core::alloc::Layout;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::block::{block, free_owned};
use tally_pool::block::{BlockPool, BlockPoolConfig, GuardLevel, PerNodeBlockPool};
use tally_pool::numa::{with_node_override, Topology};
use tally_pool::stats::{self, ComponentReport, Kind, Source, Urgency};
use tally_pool::{CorruptionKind, Handle, Pool, PoolConfig, PoolError, Pooled};

/// The blocks and values of these tests: 64 bytes, so 64 bytes a value in every class.
type Value = [u64; 8];
const VALUE_BYTES: u64 = 64;

/// Every component of the report named `name`.
fn rows(name: &str) -> Vec<ComponentReport> {
    stats::report()
        .components
        .into_iter()
        .filter(|c| c.name == name)
        .collect()
}

/// Panics unless the component named `name` leaves the registry within seconds: a
/// report running on another test's thread holds the components it reads until it is
/// done, so the last handle's drop may end there, a moment later.
#[track_caller]
fn assert_gone(name: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !rows(name).is_empty() {
        assert!(Instant::now() < deadline, "{name} is still listed");
        thread::sleep(Duration::from_millis(1));
    }
}

/// The one component named `name`.
#[track_caller]
fn row(name: &str) -> ComponentReport {
    let mut found = rows(name);
    assert_eq!(found.len(), 1, "one component named {name:?}: {found:#?}");
    found.pop().unwrap()
}

/// Panics unless `c`'s five classes add up to its mapped bytes, without overflow, and its
/// nodes (if any) to its live and mapped bytes; `what` says when the report was taken.
#[track_caller]
fn assert_partition(c: &ComponentReport, what: &str) {
    let m = &c.memory;
    let sum = [
        m.live_bytes,
        m.cached_bytes,
        m.free_bytes,
        m.fresh_bytes,
        m.metadata_bytes,
    ]
    .iter()
    .try_fold(0u64, |total, &class| total.checked_add(class))
    .unwrap_or_else(|| panic!("{what}: the classes overflow: {m:?}"));
    assert_eq!(m.mapped_bytes, sum, "{what}: mapped is the sum: {m:?}");
    assert!(m.mapped_bytes > 0, "{what}: a pool maps memory");
    assert_eq!(
        m.live_bytes,
        c.live_objects * c.object_size.unwrap(),
        "{what}: live bytes are live values times the value's bytes: {c:?}"
    );
    if !c.nodes.is_empty() {
        let mapped: u64 = c.nodes.iter().map(|n| n.mapped_bytes).sum();
        let live: u64 = c.nodes.iter().map(|n| n.live_bytes).sum();
        assert_eq!(
            (live, mapped),
            (m.live_bytes, m.mapped_bytes),
            "{what}: nodes"
        );
    }
}

/// A pool under test: what the scenario does to it, and the component it shows as.
trait Subject: Sync {
    /// What the test holds for one value.
    type Held: Send;
    fn name(&self) -> &str;
    fn take(&self, n: usize) -> Vec<Self::Held>;
    fn give(&self, held: Vec<Self::Held>);
    fn reclaim(&self) -> usize;
    /// Checks of the row against what the pool says of itself.
    fn check(&self, c: &ComponentReport, what: &str);
}

struct BlockSubject {
    pool: BlockPool,
}

impl Subject for BlockSubject {
    type Held = usize;

    fn name(&self) -> &str {
        self.pool.name()
    }

    fn take(&self, n: usize) -> Vec<usize> {
        (0..n)
            .map(|_| self.pool.allocate().unwrap().as_ptr() as usize)
            .collect()
    }

    fn give(&self, held: Vec<usize>) {
        for addr in held {
            free_owned(&self.pool, block(addr)).unwrap();
        }
    }

    fn reclaim(&self) -> usize {
        self.pool.reclaim()
    }

    #[track_caller]
    fn check(&self, c: &ComponentReport, what: &str) {
        let s = self.pool.stats();
        let m = &c.memory;
        assert_eq!(c.kind, Kind::Block);
        assert_eq!(c.object_size, Some(self.pool.block_size() as u64));
        assert_eq!(c.guard.as_deref(), Some(guard_name(self.pool.guard())));
        assert_eq!(c.counters.capacity, Some(s.capacity as u64), "{what}");
        assert_eq!(c.live_objects, s.live_blocks, "{what}: {s:?}");
        assert_eq!(
            (c.counters.acquires, c.counters.releases),
            (s.allocations, s.frees),
            "{what}"
        );
        assert_eq!(c.memory.released_bytes, s.reclaimed_bytes, "{what}");
        // The block classes cover the blocks of the chunks in use, each with its usable
        // size; the rest of those chunks, and what else the pool maps, is metadata.
        let blocks = m.live_bytes + m.cached_bytes + m.free_bytes + m.fresh_bytes;
        assert_eq!(blocks, s.capacity as u64 * VALUE_BYTES, "{what}: {m:?}");
        assert!(
            m.mapped_bytes >= s.bytes_mapped as u64,
            "{what}: {m:?} {s:?}"
        );
    }
}

fn guard_name(guard: GuardLevel) -> &'static str {
    match guard {
        GuardLevel::Off => "off",
        GuardLevel::Canary => "canary",
        _ => "full",
    }
}

/// A typed pool on two synthetic nodes; values are taken on nodes 0 and 1 in turn.
struct TypedSubject {
    pool: &'static Pool<Value>,
}

impl Subject for TypedSubject {
    type Held = Handle<Value>;

    fn name(&self) -> &str {
        self.pool.name()
    }

    fn take(&self, n: usize) -> Vec<Handle<Value>> {
        (0..n)
            .map(|i| {
                with_node_override(i as u32 % 2, || self.pool.acquire_with([i as u64; 8])).unwrap()
            })
            .collect()
    }

    /// Drops the values on node 0: node 1's go home across nodes.
    fn give(&self, held: Vec<Handle<Value>>) {
        with_node_override(0, || drop(held));
    }

    fn reclaim(&self) -> usize {
        Source::reclaim(self.pool, Urgency::High)
    }

    #[track_caller]
    fn check(&self, c: &ComponentReport, what: &str) {
        let s = self.pool.stats();
        assert_eq!(c.kind, Kind::Typed);
        assert_eq!(
            c.type_name.as_deref(),
            Some(core::any::type_name::<Value>())
        );
        assert_eq!(c.object_size, Some(VALUE_BYTES));
        assert_eq!(c.live_objects, s.live_blocks, "{what}: {s:?}");
        assert_eq!(c.nodes.len(), 2, "{what}: a row per node");
        let nodes = self.pool.node_stats();
        for (n, stats) in c.nodes.iter().zip(&nodes) {
            assert_eq!(n.node, stats.node);
            assert_eq!(
                n.live_bytes,
                stats.blocks.live_blocks * VALUE_BYTES,
                "{what}"
            );
            assert!(n.mapped_bytes >= stats.bytes as u64, "{what}: {n:?}");
        }
        // The snapshot the registry reads is the one the pool gives directly.
        assert_eq!(Source::snapshot(self.pool).live_bytes, c.memory.live_bytes);
    }
}

/// The checks every report of `subject` gets, with `live` values held; the row.
#[track_caller]
fn checked<S: Subject>(subject: &S, live: u64, what: &str) -> ComponentReport {
    let c = row(subject.name());
    assert_partition(&c, what);
    subject.check(&c, what);
    assert_eq!(c.live_objects, live, "{what}: live values");
    assert_eq!(
        c.memory.live_bytes,
        live * VALUE_BYTES,
        "{what}: live bytes"
    );
    c
}

/// Allocates, frees, grows, reclaims and lets a caching thread exit, checking after each
/// step that the classes partition the mapped bytes.
fn scenario<S: Subject>(subject: &S) {
    let first = checked(subject, 0, "created");

    let held = subject.take(1000);
    checked(subject, 1000, "1000 values held");
    subject.give(held);
    let freed = checked(subject, 0, "all freed");
    assert!(freed.memory.cached_bytes > 0, "this thread caches some");

    let initial = first.counters.capacity.unwrap();
    let mut held = Vec::new();
    while row(subject.name()).counters.capacity.unwrap() <= initial {
        held.extend(subject.take(4096));
    }
    let grown = checked(subject, held.len() as u64, "grown past the initial chunk");
    assert!(grown.counters.growths > first.counters.growths, "{grown:?}");
    assert!(grown.memory.mapped_bytes > first.memory.mapped_bytes);
    subject.give(held);
    let before = checked(subject, 0, "all freed after growth");

    let released = subject.reclaim();
    assert!(released > 0, "whole chunks are free");
    let after = checked(subject, 0, "reclaimed");
    assert_eq!(
        after.memory.released_bytes - before.memory.released_bytes,
        released as u64
    );
    assert!(after.memory.mapped_bytes < before.memory.mapped_bytes);
    assert_eq!(after.memory.cached_bytes, 0, "reclaim flushed this thread");

    let (during, kept) = thread::scope(|s| {
        let (kept_tx, kept_rx) = mpsc::channel();
        let (exit_tx, exit_rx) = mpsc::channel::<()>();
        let worker = s.spawn(move || {
            let mut held = subject.take(300);
            let kept = held.split_off(200);
            subject.give(held);
            kept_tx.send(kept).unwrap();
            exit_rx.recv().unwrap();
        });
        let kept = kept_rx.recv().unwrap();
        // The worker waits, holding a cache: nothing is in flight.
        let during = checked(subject, 100, "a worker holds a cache");
        exit_tx.send(()).unwrap();
        worker.join().unwrap();
        (during, kept)
    });
    let exited = checked(subject, 100, "the worker exited");
    assert!(
        exited.memory.cached_bytes < during.memory.cached_bytes,
        "the worker's cache went back: {:?} then {:?}",
        during.memory,
        exited.memory
    );
    subject.give(kept);
    checked(subject, 0, "the worker's values freed here");
}

fn block_config(name: &str) -> BlockPoolConfig {
    BlockPoolConfig::new(Layout::new::<Value>()).name(name)
}

fn two_nodes() -> Topology {
    Topology::synthetic(2, 1).unwrap()
}

fn two_node_pool(name: &str, guard: GuardLevel, max_capacity: usize) -> &'static Pool<Value> {
    Pool::new(
        PoolConfig::new(name)
            .capacity(64)
            .max_capacity(max_capacity)
            .guard(guard)
            .topology(two_nodes()),
    )
    .unwrap()
}

#[test]
fn a_block_pool_is_listed_while_a_handle_lives() {
    let pool = BlockPool::new(block_config("sp-listed").capacity(10)).unwrap();
    let c = row("sp-listed");
    assert_eq!(c.kind, Kind::Block);
    assert_eq!(c.type_name, None);
    assert_eq!(c.guard.as_deref(), Some("canary"));
    assert_eq!(c.object_size, Some(VALUE_BYTES));
    assert_eq!(c.counters.max_capacity, None, "no cap");
    assert!(c.nodes.is_empty());
    let other = pool.clone();
    drop(pool);
    assert_eq!(rows("sp-listed").len(), 1, "a clone keeps the pool");
    drop(other);
    assert_gone("sp-listed");
}

#[derive(Pooled, Default)]
#[pooled(name = "sp-derived", capacity = 16)]
struct Derived {
    id: u64,
}

#[derive(Default)]
struct Plain {
    _price: i64,
}

#[test]
fn typed_pools_are_one_component_each_without_their_node_pools() {
    let held = Derived::acquire().unwrap();
    assert_eq!(held.id, 0);
    let c = row("sp-derived");
    assert_eq!(c.kind, Kind::Typed);
    assert_eq!(
        c.type_name.as_deref(),
        Some(core::any::type_name::<Derived>())
    );
    assert_eq!(c.live_objects, 1);

    let plain = Pool::<Plain>::new(PoolConfig::new("sp-plain").capacity(8)).unwrap();
    let value = plain.acquire().unwrap();
    let c = row("sp-plain");
    assert_eq!(c.kind, Kind::Typed);
    assert_eq!(
        c.type_name.as_deref(),
        Some(core::any::type_name::<Plain>())
    );
    assert_eq!((c.live_objects, c.memory.live_bytes), (1, 8));
    drop(value);

    let two = two_node_pool("sp-two-listed", GuardLevel::Off, 1 << 16);
    let c = row("sp-two-listed");
    assert_eq!((c.kind, c.nodes.len()), (Kind::Typed, 2));
    assert_eq!(c.locality, Some(1.0));
    assert!(two.stats().capacity > 0);

    // A router built by hand lists its node pools, each a block pool.
    let router =
        PerNodeBlockPool::new(block_config("sp-router").capacity(1), &two_nodes()).unwrap();
    let listed = rows("sp-router");
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|c| c.kind == Kind::Block));
    drop(router);
    assert_gone("sp-router");
}

#[test]
fn block_classes_partition_what_is_mapped_at_every_guard_level() {
    for guard in [GuardLevel::Off, GuardLevel::Canary, GuardLevel::Full] {
        let name = format!("sp-classes-{}", guard_name(guard));
        let pool = BlockPool::new(block_config(&name).capacity(100).guard(guard)).unwrap();
        scenario(&BlockSubject { pool });
        assert_gone(&name);
    }
}

#[test]
fn typed_classes_partition_what_is_mapped_on_two_nodes() {
    for guard in [GuardLevel::Off, GuardLevel::Full] {
        let name = format!("sp-typed-{}", guard_name(guard));
        let pool = two_node_pool(&name, guard, 1 << 20);
        scenario(&TypedSubject { pool });
        let c = row(&name);
        assert!(c.nodes.iter().all(|n| n.local_acquires > 0), "{c:?}");
        assert_eq!(c.nodes[0].cross_node_releases, 0, "{c:?}");
        assert!(c.nodes[1].cross_node_releases > 0, "{c:?}");
    }
}

#[test]
fn refusals_at_the_cap_are_counted() {
    let pool = BlockPool::new(block_config("sp-exhausted").max_capacity(64)).unwrap();
    let mut held = Vec::new();
    let refusals = loop {
        match pool.allocate() {
            Ok(b) => held.push(b),
            Err(PoolError::Exhausted { .. }) => break 1,
            Err(e) => panic!("{e}"),
        }
    };
    let refusals = refusals + (0..2).filter(|_| pool.allocate().is_err()).count() as u64;
    let c = row("sp-exhausted");
    assert_eq!((c.counters.exhausted, refusals), (3, 3));
    assert_eq!((c.live_objects, c.counters.max_capacity), (64, Some(64)));
    assert_partition(&c, "at the cap");
    for b in held {
        free_owned(&pool, b).unwrap();
    }

    // One node pool: its refusals are the pool's.
    let one = Pool::<u64>::new(
        PoolConfig::new("sp-typed-exhausted")
            .capacity(0)
            .max_capacity(8)
            .per_node(false),
    )
    .unwrap();
    let values: Vec<_> = (0..8).map(|i| one.acquire_with(i).unwrap()).collect();
    assert!(one.acquire_with(9).is_err() && one.acquire_with(10).is_err());
    assert_eq!(row("sp-typed-exhausted").counters.exhausted, 2);
    drop(values);

    // Two nodes: a node at its cap that another node makes up for is no refusal.
    let two = two_node_pool("sp-two-exhausted", GuardLevel::Off, 64);
    let values: Vec<_> = (0..128)
        .map(|i| with_node_override(0, || two.acquire_with([i; 8])).unwrap())
        .collect();
    assert_eq!(row("sp-two-exhausted").counters.exhausted, 0);
    assert!(with_node_override(0, || two.acquire_with([0; 8])).is_err());
    let c = row("sp-two-exhausted");
    assert_eq!((c.counters.exhausted, c.live_objects), (1, 128));
    assert_eq!(c.nodes[1].remote_acquires, 64);
    assert!(c.locality.unwrap() < 1.0);
    assert_partition(&c, "two nodes at their caps");
    drop(values);
}

#[test]
fn a_refused_double_free_is_a_counted_corruption() {
    let pool = BlockPool::new(block_config("sp-corrupt").guard(GuardLevel::Canary)).unwrap();
    let b = pool.allocate().unwrap();
    free_owned(&pool, b).unwrap();
    // SAFETY: the block is free and nothing was allocated since: under `Canary` the
    // contract allows this double free, which the pool refuses.
    let again = unsafe { pool.free(b) };
    assert!(matches!(
        again,
        Err(PoolError::Corruption {
            kind: CorruptionKind::DoubleFree,
            ..
        })
    ));
    let c = row("sp-corrupt");
    assert_eq!(
        (c.counters.corruptions, c.guard.as_deref()),
        (1, Some("canary"))
    );
    assert_partition(&c, "after a refused double free");
    assert_eq!(c.live_objects, 0);
    let report = stats::report();
    let finding = report
        .health
        .findings
        .iter()
        .find(|f| f.code == "corruption" && f.component.as_deref() == Some("sp-corrupt"))
        .unwrap();
    assert!(finding.message.contains("double free"), "{finding:?}");
}

/// Reports `name` until `deadline`, at least once however late it starts, checking that no
/// class is above the mapped bytes or wrapped below zero.
fn watch_bounds(name: &str, deadline: Instant) {
    loop {
        let c = row(name);
        let m = &c.memory;
        for class in [
            m.live_bytes,
            m.cached_bytes,
            m.free_bytes,
            m.fresh_bytes,
            m.metadata_bytes,
        ] {
            assert!(class <= m.mapped_bytes, "a class above mapped: {m:?}");
        }
        assert!(m.mapped_bytes < 1 << 40, "a wrapped count: {m:?}");
        assert!(c.live_objects < 1 << 30, "a wrapped count: {c:?}");
        assert_partition(&c, "during churn");
        for n in &c.nodes {
            assert!(n.live_bytes <= n.mapped_bytes, "{n:?}");
        }
        if Instant::now() >= deadline {
            return;
        }
    }
}

/// Runs `churn` on two threads while reports of `name` are checked.
fn churn_while_watching(name: &str, churn: &(dyn Fn() + Sync)) {
    let stop = AtomicBool::new(false);
    thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    churn();
                }
            });
        }
        let stopper = StopOnDrop(&stop);
        watch_bounds(name, Instant::now() + Duration::from_millis(300));
        drop(stopper);
    });
}

/// Stops the churning threads when dropped, also when a check panics.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[test]
fn reports_during_churn_stay_within_bounds() {
    let pool = BlockPool::new(
        block_config("sp-churn")
            .capacity(100)
            .guard(GuardLevel::Off),
    )
    .unwrap();
    let subject = BlockSubject { pool };
    churn_while_watching("sp-churn", &|| {
        let held = subject.take(100);
        subject.give(held);
    });
    checked(&subject, 0, "after churn");

    let typed = TypedSubject {
        pool: two_node_pool("sp-typed-churn", GuardLevel::Canary, 1 << 20),
    };
    churn_while_watching("sp-typed-churn", &|| {
        let held = typed.take(100);
        typed.give(held);
    });
    checked(&typed, 0, "after churn");
}

/// The keys of the JSON objects at nesting `depth` of `json` (1: the top object's keys,
/// 3: the keys of objects in an array in it), in order, repeated as often as they occur.
fn keys_at_depth(json: &str, depth: usize) -> Vec<String> {
    let mut keys = Vec::new();
    let (mut level, mut string, mut escaped) = (0usize, None::<String>, false);
    let mut last_string = None;
    for ch in json.chars() {
        if let Some(text) = string.as_mut() {
            match (escaped, ch) {
                (false, '\\') => escaped = true,
                (false, '"') => last_string = string.take(),
                _ => {
                    escaped = false;
                    text.push(ch);
                }
            }
            continue;
        }
        match ch {
            '"' => string = Some(String::new()),
            '{' | '[' => level += 1,
            '}' | ']' => level -= 1,
            ':' if level == depth => keys.extend(last_string.take()),
            _ => {}
        }
        if ch != ':' && !ch.is_whitespace() && ch != '"' {
            last_string = None;
        }
    }
    keys
}

/// The JSON text of the component named `name` in a report's JSON.
fn component_json<'a>(json: &'a str, name: &str) -> &'a str {
    let at = json.find(&format!("\"name\":\"{name}\"")).unwrap();
    let start = json[..at].rfind("{\"id\":").unwrap();
    let mut level = 0usize;
    let (mut string, mut escaped) = (false, false);
    for (i, ch) in json[start..].char_indices() {
        match (string, escaped, ch) {
            (true, false, '\\') => escaped = true,
            (true, false, '"') => string = false,
            (true, _, _) => escaped = false,
            (false, _, '"') => string = true,
            (false, _, '{' | '[') => level += 1,
            (false, _, '}' | ']') => {
                level -= 1;
                if level == 0 {
                    return &json[start..=start + i];
                }
            }
            _ => {}
        }
    }
    panic!("unterminated component {name}");
}

#[test]
fn the_json_row_has_every_field_of_the_schema() {
    let pool = two_node_pool("sp-json", GuardLevel::Canary, 1 << 16);
    let held = TypedSubject { pool }.take(10);
    let report = stats::report();
    let json = report.to_json();
    let row = component_json(&json, "sp-json");
    let keys = keys_at_depth(row, 1);
    for field in [
        "id",
        "name",
        "kind",
        "type_name",
        "object_size",
        "live_objects",
        "live_bytes",
        "cached_bytes",
        "free_bytes",
        "fresh_bytes",
        "metadata_bytes",
        "mapped_bytes",
        "released_bytes",
        "capacity",
        "max_capacity",
        "acquires",
        "releases",
        "cross_thread_releases",
        "exhausted",
        "corruptions",
        "guard",
        "huge_pages",
        "locked_bytes",
        "growths",
        "depot_exchanges",
        "locality",
        "nodes",
    ] {
        assert_eq!(
            keys.iter().filter(|k| *k == field).count(),
            1,
            "the row has `{field}` once: {row}"
        );
    }
    assert!(!keys.iter().any(|k| k == "accounting_errors"), "{row}");
    assert_eq!(keys.len(), 27, "the row has no other field: {row}");
    let node_keys = keys_at_depth(row, 3);
    for field in [
        "node",
        "live_bytes",
        "mapped_bytes",
        "local_acquires",
        "remote_acquires",
        "cross_node_releases",
    ] {
        assert_eq!(
            node_keys.iter().filter(|k| *k == field).count(),
            2,
            "each of the two nodes has `{field}`: {row}"
        );
    }
    for expected in [
        "\"kind\":\"typed\"",
        "\"guard\":\"canary\"",
        "\"live_objects\":10,",
        "\"live_bytes\":640,",
    ] {
        assert!(row.contains(expected), "{expected} in {row}");
    }
    let back = stats::MemoryReport::from_json(&json).unwrap();
    assert_eq!(back, report);
    drop(held);
}
