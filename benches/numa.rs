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
//! After criterion's groups it takes its own measurement (median of 11 samples of
//! 1,000,000 calls) and prints ns per call. `TALLY_BENCH_QUICK=1`, `--test` or
//! `cargo test --benches` select a quick run.

#[path = "common/mod.rs"]
mod common;

use std::hint::black_box;
use std::time::Instant;

use criterion::Criterion;
use tally_pool::numa::{
    current_cpu, current_node, current_node_index, set_thread_node, Topology, REFRESH_INTERVAL,
};

/// Samples in the printed summary.
const SAMPLES: usize = 11;

/// Median ns per call of `f`, over `SAMPLES` runs of `calls` calls.
fn ns_per_call(calls: u32, mut f: impl FnMut() -> usize) -> f64 {
    let mut samples: Vec<f64> = (0..SAMPLES)
        .map(|_| {
            let start = Instant::now();
            let mut sum = 0usize;
            for _ in 0..calls {
                sum = sum.wrapping_add(f());
            }
            black_box(sum);
            start.elapsed().as_secs_f64() * 1e9 / f64::from(calls)
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples.get(SAMPLES / 2).copied().unwrap_or(f64::NAN)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let has = |flag: &str| args.iter().any(|a| a == flag);
    let quick = common::quick_mode();
    let (warm_up, measurement, samples) = common::criterion_timing(quick);

    let system = Topology::system();
    let four = match Topology::synthetic(4, 2) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("benches/numa.rs: {e}");
            std::process::exit(1);
        }
    };

    let mut criterion = Criterion::default()
        .warm_up_time(warm_up)
        .measurement_time(measurement)
        .sample_size(samples)
        .configure_from_args();
    {
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
    }
    criterion.final_summary();

    if has("--list") {
        return;
    }
    let calls = if quick { 100_000 } else { 1_000_000 };
    let cached = ns_per_call(calls, || current_node(system) as usize);
    let index = ns_per_call(calls, || current_node_index(&four));
    let previous = set_thread_node(Some(2));
    let forced = ns_per_call(calls, || current_node_index(&four));
    set_thread_node(previous);
    let uncached = ns_per_call(calls, || current_cpu().unwrap_or(0));
    println!();
    println!(
        "current_node cost ({} node(s) here, {}; refresh every {REFRESH_INTERVAL} calls{})",
        system.node_count(),
        format!("{:?}", system.source()).to_lowercase(),
        if quick {
            "; QUICK MODE, indicative only"
        } else {
            ""
        },
    );
    println!(
        "  {:<34} {:>8.2} ns/call",
        "current_node(system), cached", cached
    );
    println!(
        "  {:<34} {:>8.2} ns/call",
        "current_node_index, 4 nodes", index
    );
    println!(
        "  {:<34} {:>8.2} ns/call",
        "current_node_index, forced node", forced
    );
    println!(
        "  {:<34} {:>8.2} ns/call",
        "sched_getcpu (uncached)", uncached
    );
}
