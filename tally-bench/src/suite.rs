//! The ratio tables of the block and typed benches, and criterion's groups for every bench.
//!
//! After criterion's groups, each workload is sampled [`RATIO_SAMPLES`] times per
//! contender, interleaved across contenders (round-robin, so that drift and other load hit
//! all alike), under both inlinings in the same rounds; the median ns per object of each is
//! published, and the targets are judged on ratios of those medians.
//!
//! `TALLY_BENCH_QUICK=1` (or `--test`, `cargo test --benches`): a quick run;
//! `TALLY_BENCH_WORKLOADS=W1,W3` limits the ratio pass; a criterion filter that matches nothing
//! (`-- none`) skips criterion's groups; `TALLY_BENCH_BASELINE=benches/baseline` compares the
//! ratios with a baseline ([`crate::baseline`]).

use std::time::Duration;

use criterion::{SamplingMode, Throughput};
use serde_json::{json, Value};

use crate::baseline;
use crate::contender::{Pair, Runs, INLININGS};
use crate::results::{machine, write};
use crate::stats::{self, Cell, Grid};
use crate::targets::{judge, Figures, Rule, Target};
use crate::timer::load_average;
use crate::workload::{Mode, Workload};

/// Samples per workload and contender in the ratio pass.
pub const RATIO_SAMPLES: usize = 11;

/// What a ratio bench runs and prints.
#[derive(Debug)]
pub struct Suite {
    /// `block` or `typed`: its results go to `<target>/<name>.json`.
    pub name: &'static str,
    /// Prefix of criterion's group names, apart from other benches' groups.
    pub group_prefix: &'static str,
    /// The table's heading, up to "median of …".
    pub title: &'static str,
    /// The contender the targets are about.
    pub subject: &'static str,
    /// The table's columns, in order.
    pub columns: &'static [&'static str],
    /// The targets.
    pub targets: &'static [Target],
    /// Printed after the tables.
    pub note: &'static str,
}

/// Criterion's groups `<prefix>W1 churn` and so on: the contenders of `grids` (`pairs`, in
/// the same order, or why one could not be built: its cells say so) under both inlinings
/// (`label`, `label (plain)`). Each cell gets the median ns per object over criterion's
/// samples.
/// `flat_burst`: the same iteration count for every W2 sample, not criterion's linear ramp
/// (one W2 iteration takes a slow peer a second).
pub fn criterion_groups(
    mode: Mode,
    short: [Duration; 2],
    prefix: &str,
    pairs: &[Result<&Pair, &'static str>],
    grids: &mut [Grid; 2],
    flat_burst: bool,
) {
    let (mut criterion, samples) = mode.criterion(short);
    for w in Workload::ALL {
        let mut group = criterion.benchmark_group(format!("{prefix}{}", w.title()));
        if w == Workload::Burst {
            group.throughput(Throughput::Elements(w.objects_per_iteration()));
            if flat_burst {
                group.sampling_mode(SamplingMode::Flat);
            }
        }
        for (inlining, grid) in grids.iter_mut().enumerate() {
            let row = grid.cells.get_mut(w as usize).into_iter().flatten();
            for ((label, pair), cell) in grid.labels.iter().zip(pairs).zip(row) {
                let id = match inlining {
                    0 => (*label).to_owned(),
                    _ => format!("{label} (plain)"),
                };
                let mut records: Vec<(u64, Duration)> = Vec::new();
                cell.na = pair.err();
                if let Some(runs) = pair.ok().and_then(|p| p.both().get(inlining).copied()) {
                    let _ = runs.session(w, &mut |run| {
                        group.bench_function(&id, |b| {
                            b.iter_custom(|iters| {
                                let elapsed = run(iters);
                                records.push((iters, elapsed));
                                elapsed
                            })
                        });
                    });
                }
                // Criterion calls the routine during warm-up, then once per sample.
                let per_object: Vec<f64> = (records.iter().rev().take(samples))
                    .map(|&(n, d)| {
                        d.as_secs_f64() * 1e9 / (n.max(1) * w.objects_per_iteration()) as f64
                    })
                    .collect();
                cell.criterion_median =
                    (per_object.len() == samples).then(|| stats::median(&per_object));
            }
        }
        group.finish();
    }
    criterion.final_summary();
}

/// Calls `f` with each built contender of `pairs` under each inlining and its cell of `w`,
/// from contender `first` on (the order each round of a pass visits them in).
pub fn each_cell(
    grids: &mut [Grid; 2],
    pairs: &[Result<&Pair, &'static str>],
    w: Workload,
    first: usize,
    mut f: impl FnMut(&dyn Runs, &mut Cell),
) {
    for (inlining, grid) in grids.iter_mut().enumerate() {
        let Some(row) = grid.cells.get_mut(w as usize) else {
            continue;
        };
        for j in 0..pairs.len() {
            let p = (j + first) % pairs.len();
            let runs = pairs
                .get(p)
                .and_then(|p| p.ok()?.both().get(inlining).copied());
            if let (Some(runs), Some(cell)) = (runs, row.get_mut(p)) {
                f(runs, cell);
            }
        }
    }
}

/// Runs `suite` on `entries` (label and contender, in the order each round visits them).
pub fn run(suite: &Suite, entries: &[(&'static str, Pair)]) {
    let (mode, baseline) = (Mode::detect(), baseline::load(suite.name));
    let labels: Vec<&'static str> = entries.iter().map(|(label, _)| *label).collect();
    let pairs: Vec<Result<&Pair, &str>> = entries.iter().map(|(_, pair)| Ok(pair)).collect();
    let mut grids = [0, 1].map(|_| Grid::new(labels.clone(), Workload::ALL.len(), false));
    let short = [Duration::from_millis(100), Duration::from_millis(300)];
    criterion_groups(mode, short, suite.group_prefix, &pairs, &mut grids, false);
    if Mode::listing() {
        return;
    }

    let load_before = load_average();
    let selected: Vec<Workload> = Workload::ALL.into_iter().filter(|w| w.selected()).collect();
    for &w in &selected {
        let full = match w {
            Workload::Churn | Workload::Contended => 1_000_000,
            Workload::Burst => 10,
            Workload::Pipeline => 200_000,
        };
        let iterations = (full / if mode == Mode::Full { 1 } else { 10 }).max(1);
        for _ in 0..RATIO_SAMPLES {
            each_cell(&mut grids, &pairs, w, 0, |runs, cell| {
                let _ = runs.session(w, &mut |run| {
                    // Warm the caches (and a new helper thread) before the timed run.
                    run((iterations / 4).max(1));
                    let objects = iterations * w.objects_per_iteration();
                    let ns = run(iterations).as_secs_f64() * 1e9 / objects as f64;
                    cell.samples.push(ns, objects, f64::NAN);
                });
            });
        }
    }

    let mut json_tables = Vec::new();
    for (grid, inlining) in grids.iter().zip(INLININGS) {
        let figures = Figures {
            subject: suite.subject,
            grid,
            kinds: Vec::new(),
            memory: None,
            tail: None,
        };
        println!(
            "\n{} median of {RATIO_SAMPLES} samples, ns per object (W4: per pair of operations, \
             one on each thread), {inlining} adapters{}",
            suite.title,
            mode.caveat(),
        );
        let (mut all_met, mut json_rows) = (true, Vec::new());
        for &w in &selected {
            let mut line = format!("{}:", w.title());
            for (i, label) in suite.columns.iter().enumerate() {
                let (sep, unit) = if i == 0 { (" ", " ns/op") } else { (" | ", "") };
                let ns = grid.median(w, label).unwrap_or(f64::NAN);
                line.push_str(&format!("{sep}{label} {ns:.1}{unit}"));
            }
            let (mut row_ok, mut own_lines, mut verdicts) = (None, Vec::new(), Vec::new());
            for target in suite.targets.iter().filter(|t| t.1 == w) {
                let v = judge(target, &figures, inlining);
                if let Rule::PerNode(..) = target.2 {
                    let met = if v.ok == Some(true) { "MET" } else { "MISSED" };
                    own_lines.push(format!("{} -> {met}", v.short));
                } else {
                    let prefix = if verdicts.is_empty() { "ratio " } else { "" };
                    line.push_str(&format!(" | {prefix}{}", v.short));
                    row_ok = v.ok.map(|ok| ok & row_ok.unwrap_or(true)).or(row_ok);
                }
                all_met &= v.ok.unwrap_or(true);
                verdicts.push(v);
            }
            line.push_str(match row_ok {
                Some(true) => " -> MET",
                Some(false) => " -> MISSED",
                None => " -> no target",
            });
            println!("{line}");
            own_lines.iter().for_each(|own| println!("{own}"));
            let of = |f: &dyn Fn(&str) -> Option<Value>| -> serde_json::Map<_, _> {
                let values = labels.iter().filter_map(|l| Some(((*l).to_owned(), f(l)?)));
                values.collect()
            };
            let s = suite.subject;
            json_rows.push(json!({
                "id": w.id(), "medians": of(&|l| Some(json!(grid.median(w, l)?))),
                "ratios": of(&|l| Some(json!(grid.ratio(w, s, l)?))), "verdicts": verdicts,
                "rounds": of(&|l| Some(json!(grid.round_ratios(w, s, l).filter(|_| l != s)?))),
            }));
        }
        println!(
            "All targets ({inlining}): {}.",
            if all_met { "MET" } else { "MISSED" }
        );
        json_tables
            .push(json!({ "inlining": inlining, "all_met": all_met, "workloads": json_rows }));
    }
    println!("{}", suite.note);
    let load_after = load_average();
    if let Some(load) = &load_after {
        let before = load_before.as_deref().unwrap_or("?");
        println!(
            "Load average before/after the ratio pass: {before} / {load}. Other work on this \
             machine skews W3/W4 most."
        );
    }
    let results = json!({
        "suite": suite.name, "mode": mode.name(), "samples": RATIO_SAMPLES,
        "machine": machine(), "load_average": [load_before, load_after],
        "subject": suite.subject, "columns": suite.columns, "tables": json_tables,
    });
    if let Some((path, base)) = baseline {
        baseline::report(&path, &base, &results);
    }
    if mode != Mode::Test {
        let env = format!("TALLY_{}_JSON", suite.name.to_uppercase());
        write(&env, &format!("{}.json", suite.name), &results);
    }
}
