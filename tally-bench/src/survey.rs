//! The peers comparison: W1–W4 under criterion and then in an interleaved pass, W5 and W6
//! in fresh processes, the targets judged, and everything written as JSON for
//! `benches/report.py`.
//!
//! The interleaved pass's rounds visit every workload and, under each inlining, every peer (in
//! an order rotated each round), one sample each (see `sample`), recording how much CPU
//! other processes used meanwhile; a workload's table uses only the quiet samples if every
//! peer has at least [`QUIET_SAMPLES`] of them.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::contender::{Pair, Runs, INLININGS};
use crate::fatal;
use crate::order::ORDER_BYTES;
use crate::process::resident_bytes;
use crate::results::{latency_summary, machine, memory_ratios, unix_now, write};
use crate::stats::{median, paired, quantile, sorted, Cell, Grid, QUIET_CPUS, QUIET_SAMPLES};
use crate::suite::{criterion_groups, each_cell};
use crate::targets::{judge, kind, rival, Figures, Rule, Verdict, DESIGN, ISSUE};
use crate::timer::{self, load_average};
use crate::workload::{Mode, Workload, BURST, QUEUE_CAPACITY};

/// Values pre-allocated by peers that can pre-allocate, for W1–W4 (at least [`BURST`]).
pub const WORKLOAD_CAPACITY: usize = 131_072;

/// The environment variable that makes the bench binary a W5/W6 child.
const CHILD_ENV: &str = "TALLY_PEERS_CHILD";
/// The subject of the targets.
const TALLY: &str = "tally-pool";

/// What peers that can pre-allocate pre-allocate for W6 pre-allocated, and at most W5/W6's n.
pub const MILLION: usize = 1_000_000;

/// A peer's setups for W5 and W6, with what it pre-allocates: with growth (from its
/// smallest start), and pre-allocated (W5 uses the first the peer can be built with).
const SETUPS: [(&str, usize); 2] = [("growing", 0), ("pre-allocated", MILLION)];

/// A peer: what the report says of it, and how to build it.
#[derive(Debug)]
pub struct Peer {
    /// Its label; `tally-pool` is the subject of the targets.
    pub label: &'static str,
    /// What it is.
    pub kind: &'static str,
    /// The crate whose version the report names ("" for std).
    pub krate: &'static str,
    /// The API used.
    pub api: &'static str,
    /// Builds it to pre-allocate this many values where it can ([`WORKLOAD_CAPACITY`] for
    /// W1–W4; 0, its smallest start, and [`MILLION`] for W5/W6), or says why it cannot.
    pub build: fn(usize) -> Result<Pair, &'static str>,
}

/// The mode's rounds; the warm-up and length of a sample; W5's and W6's n (lockfree-object-pool's
/// `LinearObjectPool` takes a minute and more for a million); W6's processes per peer and setup
/// (one process's p99.9 moves by tens of ns; the published percentiles are their medians).
fn plan(mode: Mode) -> (usize, [Duration; 2], usize, usize) {
    let ms = Duration::from_millis;
    match mode {
        Mode::Full => (15, [ms(50), ms(100)], MILLION, 3),
        Mode::Quick => (5, [ms(15), ms(25)], 200_000, 1),
        Mode::Test => (1, [Duration::ZERO; 2], 10_000, 1),
    }
}

/// Runs the comparison of `peers`, or, in a child process, the W5/W6 task it was given.
pub fn run(peers: &[Peer]) {
    if let Ok(task) = std::env::var(CHILD_ENV) {
        return child(peers, &task);
    }
    let mode = Mode::detect();
    let (rounds, [warm_up, length], n, latency_runs) = plan(mode);
    let (started, clock) = (unix_now(), Instant::now());
    let (mut phases, mut loads) = (Vec::new(), vec![json!(["start", load_average()])]);
    let mut phase = |name: &'static str| {
        let seconds = clock.elapsed().as_secs_f64();
        eprintln!("peers: {name} done after {seconds:.0} s");
        phases.push(json!([name, seconds]));
        let key = match name {
            "latency" => "end".to_owned(),
            _ => format!("after_{name}"),
        };
        loads.push(json!([key, load_average()]));
    };
    let built: Vec<Result<Pair, &str>> =
        peers.iter().map(|p| (p.build)(WORKLOAD_CAPACITY)).collect();
    let pairs: Vec<Result<&Pair, &str>> =
        built.iter().map(|b| b.as_ref().map_err(|e| *e)).collect();
    let labels: Vec<&'static str> = peers.iter().map(|p| p.label).collect();
    let mut grids = [0, 1].map(|_| Grid::new(labels.clone(), Workload::ALL.len(), true));
    let short = [Duration::from_millis(50), Duration::from_millis(200)];
    criterion_groups(mode, short, "peers ", &pairs, &mut grids, true);
    if Mode::listing() {
        return;
    }
    phase("criterion");

    for round in 0..rounds {
        for w in Workload::ALL {
            each_cell(&mut grids, &pairs, w, round, |runs, cell| {
                sample(runs, w, mode, [warm_up, length], cell)
            });
        }
        eprintln!("interleaved pass: round {} of {rounds} done", round + 1);
    }
    phase("interleaved");
    for (grid, inlining) in grids.iter().zip(INLININGS) {
        let mode = mode.name();
        println!("\nInterleaved pass ({mode} mode, {rounds} rounds, {inlining} adapters): median");
        for w in Workload::ALL {
            let cells = labels.iter().map(|label| match grid.median(w, label) {
                _ if grid.cell(w, label).is_none_or(|c| c.na.is_some()) => format!("{label} n/a"),
                median => format!("{label} {:.1}", median.unwrap_or(f64::NAN)),
            });
            let which = if grid.quiet(w) { "quiet" } else { "all" };
            let cells = cells.collect::<Vec<_>>().join(" | ");
            println!("{} ({}, {which} samples): {cells}", w.title(), w.unit());
        }
    }

    println!("\nW5 memory: {n} live objects, one fresh process per peer");
    let mut memory: Vec<Value> = (peers.iter().enumerate())
        .map(|(k, peer)| spawn_child(peer, &format!("memory {k} {n}")))
        .collect();
    memory
        .iter_mut()
        .for_each(|m| m["ratios"] = json!(memory_ratios(m)));
    phase("memory");
    println!(
        "\nW6 latency: {n} single acquires, {latency_runs} fresh process(es) per peer and mode, \
         in rounds that visit every peer in turn"
    );
    let mut latency = Vec::new();
    for _ in 0..latency_runs {
        for (setup, _) in SETUPS {
            for (k, peer) in peers.iter().enumerate() {
                latency.push(spawn_child(peer, &format!("latency {k} {setup} {n}")));
            }
        }
    }
    phase("latency");

    let summaries: Vec<Value> = (SETUPS.iter())
        .flat_map(|(setup, _)| (labels.iter()).filter_map(|l| latency_summary(&latency, l, setup)))
        .collect();
    let tally_memory = (peers.iter().zip(&memory)).find(|(p, _)| p.label == TALLY);
    let tail = summaries
        .iter()
        .find(|s| s["peer"] == TALLY && s["mode"] == "growing");
    let (mut verdicts, mut workloads) = (Vec::<Verdict>::new(), Vec::new());
    for (grid, inlining) in grids.iter().zip(INLININGS) {
        let figures = Figures {
            subject: TALLY,
            grid,
            kinds: peers.iter().map(|p| (p.label, p.kind)).collect(),
            memory: tally_memory.and_then(|(_, m)| memory_ratios(m)),
            tail: tail.filter(|t| t.get("na").is_none()).cloned(),
        };
        for target in ISSUE.iter().chain(DESIGN) {
            if inlining == INLININGS[0] || !matches!(target.2, Rule::Memory(_) | Rule::Tail(_)) {
                let v = judge(target, &figures, inlining);
                let met = if v.ok == Some(true) { "MET" } else { "MISSED" };
                println!("{} ({inlining}): {} -> {met}", v.target, v.measured);
                verdicts.push(v);
            }
        }
        workloads.push(workloads_json(&figures, &grids[0]));
    }
    let overhead = |key: &str| {
        let values: Vec<f64> = latency.iter().filter_map(|l| l[key].as_f64()).collect();
        sorted(&values).get(values.len() / 2).copied()
    };
    let results = json!({
        "schema": 2, "mode": mode.name(), "started_unix": started, "finished_unix": unix_now(),
        "machine": machine(), "seconds_after": phases, "load_average": loads,
        "parameters": {
            "order_bytes": ORDER_BYTES, "burst": BURST, "queue_capacity": QUEUE_CAPACITY,
            "workload_capacity": WORKLOAD_CAPACITY, "rounds": rounds,
            "quiet_cpus": QUIET_CPUS, "quiet_samples": QUIET_SAMPLES,
            "sample_ms": length.as_secs_f64() * 1e3, "warm_up_ms": warm_up.as_secs_f64() * 1e3,
            "criterion_samples": if mode == Mode::Full { 20 } else { 10 },
            "memory_objects": n, "latency_acquires": n, "latency_runs": latency_runs,
            "tally_growing_capacity": 1024,
        },
        "timer": {
            "overhead_p50": overhead("timer_overhead_p50"),
            "resolution": overhead("timer_resolution"),
        },
        "peers": peers.iter().zip(&pairs).map(|(p, pair)| json!({
            "label": p.label, "kind": p.kind, "crate": p.krate, "api": p.api,
            "handle_bytes": pair.ok().map(|pair| pair.forced().handle_bytes()),
        })).collect::<Vec<_>>(),
        "workloads": workloads.first(), "plain": workloads.get(1),
        "memory": memory, "latency": latency, "latency_summary": summaries, "targets": verdicts,
    });
    if mode == Mode::Test {
        return println!("test mode: results not written");
    }
    write("TALLY_PEERS_JSON", "peers.json", &results);
    println!("`python3 benches/report.py` turns it into BENCHMARKS.md");
}

/// Takes one sample of `w` on `runs` into `cell`: a warm-up (thread caches, the new helper
/// thread, where the scheduler puts it) that doubles its runs for `warm_up`, then a run
/// sized from the last warm-up run to last about `length`.
fn sample(
    runs: &dyn Runs,
    w: Workload,
    mode: Mode,
    [warm_up, length]: [Duration; 2],
    cell: &mut Cell,
) {
    let result = runs.session(w, &mut |run| {
        let start = Instant::now();
        let mut n = match (w, mode) {
            (Workload::Burst, _) => 1,
            (_, Mode::Test) => 1000,
            _ => 10_000,
        };
        let mut last = run(n);
        while start.elapsed() < warm_up {
            n = n.saturating_mul(2);
            last = run(n);
        }
        let per_iteration = last.as_secs_f64().max(1e-9) / n as f64;
        let iterations = ((length.as_secs_f64() / per_iteration) as u64)
            .clamp(1, 1 << 30)
            .max(if mode == Mode::Test { n } else { 1 });
        let before = timer::cpu_ticks();
        let elapsed = run(iterations);
        let foreign = timer::foreign_cpus(before, timer::cpu_ticks(), elapsed);
        let objects = iterations * w.objects_per_iteration();
        let ns = elapsed.as_secs_f64() * 1e9 / objects as f64;
        cell.samples.push(ns, objects, foreign);
    });
    if let Err(why) = result {
        cell.na = Some(why);
    }
}

/// Each workload's table under one inlining (`f.grid`), as the report reads it; `forced` is
/// the forced inlining's grid, for the plain cells' ratio to it.
fn workloads_json(f: &Figures<'_>, forced: &Grid) -> Vec<Value> {
    let g = f.grid;
    let table =
        |w: Workload| {
            let quiet = g.quiet(w);
            let cells = g.labels.iter().map(|&label| {
            let cell = g.cell(w, label).filter(|c| c.na.is_none());
            let Some(Cell { samples, criterion_median, .. }) = cell else {
                let na = g.cell(w, label).and_then(|c| c.na);
                return json!({ "peer": label, "na": na });
            };
            let (v, all) = (samples.chosen(quiet), sorted(&samples.ns));
            let mut objects = samples.objects.clone();
            objects.sort_unstable();
            let vs_forced = forced.cell(w, label).filter(|c| c.na.is_none());
            json!({
                "peer": label, "median": median(&v), "min": v.first(), "max": v.last(),
                "samples_used": v.len(), "all_median": median(&all), "all_min": all.first(),
                "all_max": all.last(), "objects_per_sample_median": objects.get(objects.len() / 2),
                "criterion_median": criterion_median, "vs_tally": g.ratio(w, label, TALLY),
                "vs_forced": vs_forced.and_then(|c| paired(samples, &c.samples, quiet)),
                "samples": samples.ns, "foreign_cpus": samples.foreign,
            })
        });
            json!({
                "id": w.id(), "name": w.name(), "unit": w.unit(),
                "selection": if quiet { "quiet" } else { "all" },
                "results": cells.collect::<Vec<_>>(),
                "best_pool": rival(f, w, |k| k == kind::POOL),
                "best_allocator": rival(f, w, |k| k == kind::ALLOCATOR),
                "best_any": rival(f, w, |_| true),
            })
        };
    Workload::ALL.into_iter().map(table).collect()
}

/// Runs one W5 or W6 measurement in this (fresh) process and prints it as one JSON line:
/// `memory <peer> <n>` or `latency <peer> <growing|pre-allocated> <n>`.
fn child(peers: &[Peer], task: &str) {
    let words: Vec<&str> = task.split_whitespace().collect();
    let arg = |k: usize| words.get(k).copied().unwrap_or("");
    let n: usize = words.last().and_then(|w| w.parse().ok()).unwrap_or(MILLION);
    let Some(peer) = arg(1).parse().ok().and_then(|k: usize| peers.get(k)) else {
        fatal!("bad {CHILD_ENV} task {task:?}")
    };
    let line = match arg(0) {
        "memory" => match resident_bytes() {
            None => json!({ "peer": peer.label, "na": "no /proc/self/statm on this system" }),
            Some(before) => {
                let built = SETUPS
                    .iter()
                    .filter_map(|&(name, capacity)| Some(((peer.build)(capacity).ok()?, name)));
                let Some((pair, setup)) = built.into_iter().next() else {
                    fatal!("{}: cannot be built", peer.label)
                };
                let after = pair.forced().memory(n).unwrap_or(0);
                let handle_bytes = pair.forced().handle_bytes();
                json!({
                    "peer": peer.label, "setup": setup, "objects": n,
                    "payload_bytes": n * ORDER_BYTES, "handle_bytes": handle_bytes,
                    "handle_array_bytes": n * handle_bytes,
                    "resident_before": before, "resident_after": after,
                })
            }
        },
        "latency" => {
            let Some(&(setup, capacity)) = SETUPS.iter().find(|(name, _)| *name == arg(2)) else {
                fatal!("bad {CHILD_ENV} task {task:?}")
            };
            let ns_per_tick = timer::calibrate(Duration::from_millis(50));
            match (peer.build)(capacity) {
                Err(why) => json!({ "peer": peer.label, "mode": setup, "na": why }),
                Ok(pair) => {
                    let (empty, resolution) = timer::overhead();
                    let mut ticks = pair.forced().latency(n, capacity > 0);
                    ticks.sort_unstable();
                    let ns = |t: u64| t as f64 * ns_per_tick;
                    let q = |q: f64| ns(quantile(&ticks, q));
                    let mean = ticks.iter().map(|&t| t as f64).sum::<f64>() / n.max(1) as f64;
                    json!({
                        "peer": peer.label, "mode": setup, "n": n,
                        "timer": if timer::use_tsc() { "rdtsc" } else { "Instant" },
                        "ns_per_tick": ns_per_tick,
                        "timer_overhead_p50": ns(quantile(&empty, 0.5)),
                        "timer_resolution": ns(resolution), "mean": mean * ns_per_tick,
                        "p50": q(0.5), "p99": q(0.99), "p999": q(0.999), "p9999": q(0.9999),
                        "max": ns(ticks.last().copied().unwrap_or(0)),
                    })
                }
            }
        }
        _ => fatal!("bad {CHILD_ENV} task {task:?}"),
    };
    println!("{line}");
}

/// Runs `task` in a fresh copy of this binary and returns the JSON line it prints.
fn spawn_child(peer: &Peer, task: &str) -> Value {
    let failed = |why: String| {
        eprintln!("{}: {why}", peer.label);
        json!({ "peer": peer.label, "na": why })
    };
    let exe = std::env::current_exe();
    let mut command = |exe| {
        Command::new(exe)
            .env(CHILD_ENV, task)
            .stdin(Stdio::null())
            .output()
    };
    let output = match exe.and_then(&mut command) {
        Ok(output) => output,
        Err(err) => return failed(format!("cannot start a child: {err}")),
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().rev().find(|line| line.starts_with('{'));
    match line.map(serde_json::from_str::<Value>) {
        Some(Ok(value)) if output.status.success() => {
            println!("  {value}");
            value
        }
        _ => {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let last = stderr.lines().last().unwrap_or("").trim().to_owned();
            failed(format!("child failed ({}): {last}", output.status))
        }
    }
}
