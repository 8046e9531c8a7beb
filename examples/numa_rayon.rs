//! A rayon pool whose workers are placed on NUMA nodes by `tally_pool::numa::Placement`:
//! each worker is pinned to its node's CPUs when it starts and then warms its node's part
//! of a per-node `Pool<Tick>`. Then a parallel job acquires and releases ticks on every
//! worker and reports which node each piece of work ran on and how local the pool stayed.
//!
//! ```text
//! cargo run --release --example numa_rayon --features rayon
//! cargo run --release --example numa_rayon --features rayon -- --synthetic 4x2 --pack
//! ```
//!
//! Without `--synthetic` it uses this machine's topology and really pins the workers;
//! with `--synthetic NxC` it imagines N nodes of C CPUs, and pinning is only recorded
//! (the workers then report the node they were assigned).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use rayon::prelude::*;
use tally_pool::numa::{current_node, current_node_index, thread_affinity, Placement, Topology};
use tally_pool::{Pool, PoolConfig};

/// What the workers pool.
#[derive(Debug, Default, Clone, Copy)]
struct Tick {
    seq: u64,
    price: i64,
}

struct Options {
    synthetic: Option<(usize, usize)>,
    pack: bool,
    workers: usize,
}

fn parse() -> Result<Options, String> {
    let mut options = Options {
        synthetic: None,
        pack: false,
        workers: 0,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--synthetic" => {
                let shape = args.next().ok_or("--synthetic needs NxC, e.g. 4x2")?;
                let (n, c) = shape
                    .split_once('x')
                    .ok_or("--synthetic takes NxC, e.g. 4x2")?;
                let n = n.parse().map_err(|_| format!("bad node count {n:?}"))?;
                let c = c.parse().map_err(|_| format!("bad CPU count {c:?}"))?;
                options.synthetic = Some((n, c));
            }
            "--pack" => options.pack = true,
            "--spread" => options.pack = false,
            "--workers" => {
                let w = args.next().ok_or("--workers needs a number")?;
                options.workers = w.parse().map_err(|_| format!("bad worker count {w:?}"))?;
            }
            other => {
                let usage = "[--synthetic NxC] [--pack|--spread] [--workers N]";
                return Err(format!("unknown argument {other:?}; use {usage}"));
            }
        }
    }
    Ok(options)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let options = parse()?;
    let topology = match options.synthetic {
        Some((nodes, cpus)) => Topology::synthetic(nodes, cpus)?,
        None => Topology::system().clone(),
    };
    if let Some(reason) = Topology::system_fallback_reason() {
        println!("note: this machine's topology fell back to one node: {reason}");
    }
    println!("topology ({:?}):", topology.source());
    for node in topology.nodes() {
        println!(
            "  node {}: cpus {:?}, {} MiB",
            node.id(),
            node.cpus(),
            node.memory_bytes() >> 20
        );
    }

    let placement = if options.pack {
        Placement::pack(&topology)
    } else {
        Placement::spread(&topology)
    };
    let workers = if options.workers == 0 {
        topology.cpu_count().max(1)
    } else {
        options.workers
    };
    let warmed: Arc<Vec<AtomicUsize>> = Arc::new(
        (0..topology.node_count())
            .map(|_| AtomicUsize::new(0))
            .collect(),
    );
    let ticks = Pool::<Tick>::new(
        PoolConfig::new("ticks")
            .capacity(256)
            .topology(topology.clone()),
    )?;
    let reports = Arc::new(Mutex::new(Vec::new()));
    let (warmed_in_hook, reports_in_hook) = (Arc::clone(&warmed), Arc::clone(&reports));
    let real = topology.source().is_this_machine();
    let pool = placement
        .rayon_builder(workers, move |start| {
            // Warm this node's part of the pool: the worker's first acquires then find
            // blocks of its own node in its cache.
            if let (Some(count), Ok(n)) = (warmed_in_hook.get(start.node_index), ticks.warm()) {
                count.fetch_add(n, Ordering::Relaxed);
            }
            let how = match (&start.pinned, real) {
                (Ok(()), true) => match thread_affinity() {
                    Ok(cpus) => format!("pinned to cpus {cpus:?}"),
                    Err(e) => format!("pinned ({e})"),
                },
                (Ok(()), false) => "pinning recorded".to_owned(),
                (Err(e), _) => format!("not pinned: {e}"),
            };
            let line = format!("worker {:>2} -> node {} ({how})", start.worker, start.node);
            reports_in_hook
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((start.worker, line));
        })
        .build()?;

    // A broadcast runs on every worker, so every start hook has run when it returns.
    let seen: Vec<u32> = pool.broadcast(|_| current_node(&topology));
    let mut reports = std::mem::take(&mut *reports.lock().unwrap_or_else(PoisonError::into_inner));
    reports.sort();
    for (_, line) in &reports {
        println!("{line}");
    }
    println!("each worker's current_node: {seen:?}");

    // Work that runs long enough for every worker to take part.
    let per_node: Vec<AtomicUsize> = (0..topology.node_count())
        .map(|_| AtomicUsize::new(0))
        .collect();
    let items = 20_000u64;
    let checksum: u64 = pool.install(|| {
        (0..items)
            .into_par_iter()
            .map(|i| {
                if let Some(count) = per_node.get(current_node_index(&topology)) {
                    count.fetch_add(1, Ordering::Relaxed);
                }
                if let Ok(mut tick) = ticks.acquire_with(Tick { seq: i, price: 0 }) {
                    tick.price = tick.seq as i64;
                }
                (0..2_000u64).fold(i, |acc, x| acc.wrapping_mul(31).wrapping_add(x))
            })
            .reduce(|| 0, u64::wrapping_add)
    });

    println!(
        "{workers} workers, {:?} placement (checksum {checksum:x}):",
        placement.strategy()
    );
    for (i, node) in topology.nodes().iter().enumerate() {
        let warm = warmed.get(i).map_or(0, |c| c.load(Ordering::Relaxed));
        let work = per_node.get(i).map_or(0, |c| c.load(Ordering::Relaxed));
        println!(
            "  node {}: {warm} blocks warmed into worker caches, ran {work} of {items} items",
            node.id()
        );
    }
    for n in ticks.node_stats() {
        println!(
            "  ticks on node {}: {} local acquires, {} remote, {} released from another node",
            n.node, n.local_acquires, n.remote_acquires, n.cross_node_releases
        );
    }
    println!("  tick pool locality: {:.3}", ticks.locality());
    if !real {
        println!(
            "(synthetic: {} pinnings recorded)",
            topology.pinnings().len()
        );
    }
    Ok(())
}
