//! The cost of asking which NUMA node the calling thread is on.
//!
//! `tally_pool::numa::current_node` runs on every acquire of a per-node pool, so it must
//! cost about as much as a thread-local read. It caches the thread's CPU and re-reads it
//! with `sched_getcpu` every `REFRESH_INTERVAL` calls. Contenders:
//!
//! - **cached, system**: `current_node(Topology::system())`, the production call.
//! - **cached index, 4 nodes**: `current_node_index` on a synthetic 4-node topology.
//! - **forced node**: the same with a thread override set (what tests use).
//! - **sched_getcpu**: `current_cpu()`, the uncached read the cache saves.
//!
//! Then its own measurement: the median of 11 samples of 1,000,000 calls (100,000 with
//! `TALLY_BENCH_QUICK=1`, `--test` or `cargo test --benches`), in ns per call.

use std::hint::black_box;
use std::time::{Duration, Instant};

use tally_bench::stats::median;
use tally_bench::{Mode, OrDie};
use tally_pool::numa::{
    current_cpu, current_node, current_node_index, set_thread_node, Topology, REFRESH_INTERVAL,
};

/// Median ns per call of `f`, over 11 runs of `calls` calls.
fn ns_per_call(calls: u32, mut f: impl FnMut() -> usize) -> f64 {
    let sample = |_| {
        let start = Instant::now();
        let sum = (0..calls).fold(0usize, |sum, _| sum.wrapping_add(f()));
        black_box(sum);
        start.elapsed().as_secs_f64() * 1e9 / f64::from(calls)
    };
    median(&(0..11).map(sample).collect::<Vec<_>>())
}

fn main() {
    let mode = Mode::detect();
    let system = Topology::system();
    let four = Topology::synthetic(4, 2).or_die("Topology::synthetic");
    let short = [Duration::from_millis(100), Duration::from_millis(300)];
    let (mut criterion, _) = mode.criterion(short);
    let mut group = criterion.benchmark_group("current_node");
    group.bench_function("cached, system", |b| {
        b.iter(|| current_node(black_box(system)))
    });
    group.bench_function("cached index, 4 nodes", |b| {
        b.iter(|| current_node_index(black_box(&four)))
    });
    group.bench_function("forced node", |b| {
        let previous = set_thread_node(Some(2));
        b.iter(|| current_node_index(black_box(&four)));
        set_thread_node(previous);
    });
    group.bench_function("sched_getcpu", |b| b.iter(current_cpu));
    group.finish();
    criterion.final_summary();
    if Mode::listing() {
        return;
    }

    let calls = mode.pick([1_000_000, 100_000, 100_000]);
    let cached = ns_per_call(calls, || current_node(system) as usize);
    let index = ns_per_call(calls, || current_node_index(&four));
    let previous = set_thread_node(Some(2));
    let forced = ns_per_call(calls, || current_node_index(&four));
    set_thread_node(previous);
    let uncached = ns_per_call(calls, || current_cpu().unwrap_or(0));
    let source = format!("{:?}", system.source()).to_lowercase();
    let nodes = system.node_count();
    let refresh = format!("refresh every {REFRESH_INTERVAL} calls");
    println!(
        "\ncurrent_node cost ({nodes} node(s) here, {source}; {refresh}{})",
        mode.caveat()
    );
    for (what, ns) in [
        ("current_node(system), cached", cached),
        ("current_node_index, 4 nodes", index),
        ("current_node_index, forced node", forced),
        ("sched_getcpu (uncached)", uncached),
    ] {
        println!("  {what:<34} {ns:>8.2} ns/call");
    }
}
