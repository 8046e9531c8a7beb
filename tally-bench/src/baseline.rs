//! Regression detection: a ratio bench's results kept as a baseline, and a later run compared
//! with it ratio by ratio.
//!
//! A baseline is the JSON a ratio bench writes (`TALLY_TYPED_JSON=benches/baseline/typed.json`
//! saves one); `TALLY_BENCH_BASELINE=<dir>` compares the run with `<dir>/<suite>.json`. Each
//! ratio of the subject to a column, per inlining and workload, carries its per-round values:
//! round `k`'s sample of the subject over the column's sample of the same round.
//!
//! The rule: the noise of a run is the interquartile range of a ratio's per-round values (of
//! 11 rounds, the 3rd to the 9th smallest). A ratio has *moved* when the two runs' ranges do
//! not overlap and the medians differ by more than [`MIN_CHANGE`]: *slower* when this run's
//! lower quartile is above the baseline's upper one, *faster* when its upper quartile is below
//! the baseline's lower one; otherwise it is *within noise*. (The rounds see the noise within
//! a process; a new process, with its own memory layout, shifts a ratio by a few percent more,
//! which only the floor covers.) Load on a shared machine widens the ranges rather than raising alarms, and
//! a round or two hit by a preemption (which the min–max would let hide any change) does not
//! move a quartile. A ratio that only one run has is *missing* from the other. The comparison
//! is informational: it prints its verdicts and never fails the run.

use std::path::PathBuf;

use serde_json::Value;

use crate::fatal;
use crate::stats::{median, sorted};

/// How a ratio of this run compares with the baseline's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moved {
    /// Above the baseline's noise: the subject lost ground.
    Slower,
    /// Below the baseline's noise: the subject gained.
    Faster,
    /// The ranges overlap.
    Within,
    /// Only one of the runs has it.
    Missing,
}

/// One ratio, `<inlining> <workload> <subject>/<column>`: the verdict, and the per-round
/// values of the baseline and of this run (empty where a run does not have it).
pub type Row = (String, Moved, Vec<f64>, Vec<f64>);

/// The per-round ratios of a ratio bench's results, by key.
fn ratios(results: &Value) -> Vec<(String, Vec<f64>)> {
    let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).unwrap_or("?").to_owned();
    let each = |v: &Value, key: &str| v.get(key).and_then(Value::as_array).cloned();
    let subject = text(results, "subject");
    let mut out = Vec::new();
    for table in each(results, "tables").unwrap_or_default() {
        for w in each(&table, "workloads").unwrap_or_default() {
            let (inlining, id) = (text(&table, "inlining"), text(&w, "id"));
            let rounds = w.get("rounds").and_then(Value::as_object);
            for (column, values) in rounds.into_iter().flatten() {
                let values = (values.as_array().into_iter().flatten()).filter_map(Value::as_f64);
                let key = format!("{inlining} {id} {subject}/{column}");
                out.push((key, values.collect()));
            }
        }
    }
    out
}

/// A run's noise: the lower and upper quartile of the per-round values.
fn range(values: &[f64]) -> Option<(f64, f64)> {
    let (v, quarter) = (sorted(values), values.len().saturating_sub(1) / 4);
    Some((*v.get(quarter)?, *v.get(v.len() - 1 - quarter)?))
}

/// The smallest change of a median, as a fraction of the baseline's, that counts as a move.
pub const MIN_CHANGE: f64 = 0.05;

/// The rule of the module docs on one ratio's per-round values.
pub fn moved(base: &[f64], now: &[f64]) -> Moved {
    let change = (median(now) / median(base) - 1.0).abs();
    match (range(base), range(now)) {
        (Some(_), Some(_)) if change.is_nan() || change <= MIN_CHANGE => Moved::Within,
        (Some((_, base_hi)), Some((now_lo, _))) if now_lo > base_hi => Moved::Slower,
        (Some((base_lo, _)), Some((_, now_hi))) if now_hi < base_lo => Moved::Faster,
        (Some(_), Some(_)) => Moved::Within,
        _ => Moved::Missing,
    }
}

/// Compares the results `now` with `base`: `now`'s ratios in its order, then those only the
/// baseline has.
pub fn compare(base: &Value, now: &Value) -> Vec<Row> {
    let (base, now) = (ratios(base), ratios(now));
    let find = |list: &[(String, Vec<f64>)], key: &String| {
        (list.iter().find(|(k, _)| k == key)).map_or(Vec::new(), |(_, values)| values.clone())
    };
    let gone = base
        .iter()
        .filter(|(key, _)| !now.iter().any(|(k, _)| k == key));
    let pairs = (now.iter()).map(|(key, values)| (key, find(&base, key), values.clone()));
    let pairs = pairs.chain(gone.map(|(key, values)| (key, values.clone(), Vec::new())));
    pairs
        .map(|(key, b, n)| (key.clone(), moved(&b, &n), b, n))
        .collect()
}

/// The baseline of suite `name` under `$TALLY_BENCH_BASELINE`, if that is set; stops the run
/// if the file cannot be read, before anything is measured.
pub fn load(name: &str) -> Option<(PathBuf, Value)> {
    let path =
        PathBuf::from(std::env::var_os("TALLY_BENCH_BASELINE")?).join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).map_err(|e| e.to_string());
    match text.and_then(|text| serde_json::from_str(&text).map_err(|e| e.to_string())) {
        Ok(value) => Some((path, value)),
        Err(err) => fatal!("baseline {}: {err}", path.display()),
    }
}

/// Compares the results `now` with the baseline `base` read from `path` and prints the
/// verdicts, one ratio a line.
pub fn report(path: &std::path::Path, base: &Value, now: &Value) {
    let text = |v: &Value, at: &str| {
        v.pointer(at).map_or("?".into(), |v| {
            v.as_str().map_or(v.to_string(), str::to_owned)
        })
    };
    let (date, git) = (text(base, "/machine/date"), text(base, "/machine/git"));
    let (cpus, load) = (text(base, "/machine/nproc"), text(base, "/load_average/0"));
    println!(
        "\nAgainst the baseline {} ({} mode, {date}, commit {git}, {cpus} CPUs, load average \
         {load}); this run: {} mode",
        path.display(),
        text(base, "/mode"),
        text(now, "/mode"),
    );
    let cell = |v: &[f64]| {
        range(v).map_or("–".to_owned(), |(lo, hi)| {
            format!("{:.3} ({lo:.3}–{hi:.3})", median(v))
        })
    };
    println!(
        "{:<32} {:<24} {:<24} verdict",
        "ratio", "baseline: median (IQR)", "now"
    );
    let rows = compare(base, now);
    for (key, moved, base, now) in &rows {
        let (base, now) = (cell(base), cell(now));
        println!("{key:<32} {base:<24} {now:<24} {moved:?}");
    }
    let count = |moved: Moved| rows.iter().filter(|r| r.1 == moved).count();
    println!(
        "Regression check (informational, never fails the run): {} slower, {} faster, {} \
         within noise, {} missing. A ratio moved when the interquartile ranges of its per-round \
         values in the two runs do not overlap and its median moved by over {:.0} %.",
        count(Moved::Slower),
        count(Moved::Faster),
        count(Moved::Within),
        count(Moved::Missing),
        MIN_CHANGE * 100.0,
    );
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::{compare, moved, Moved};

    /// Results with one table (`forced`) whose W1 row has these per-round ratios.
    fn results(rounds: Value) -> Value {
        json!({ "subject": "typed", "mode": "quick", "tables": [
            { "inlining": "forced", "workloads": [{ "id": "W1", "rounds": rounds }] },
        ]})
    }

    #[test]
    fn a_ratio_beyond_both_ranges_is_flagged() {
        assert_eq!(moved(&[1.0, 1.1, 1.2], &[1.3, 1.4, 1.25]), Moved::Slower);
        assert_eq!(moved(&[1.0, 1.1, 1.2], &[0.8, 0.9, 0.95]), Moved::Faster);
    }

    #[test]
    fn outlying_rounds_do_not_hide_a_move() {
        let base = [1.0, 1.01, 1.02, 1.0, 1.01, 1.02, 1.0, 1.01, 1.02, 1.01, 9.0];
        let now = base.map(|r| if r < 2.0 { r * 1.1 } else { 0.2 });
        assert_eq!(moved(&base, &now), Moved::Slower);
    }

    #[test]
    fn a_ratio_within_noise_is_not_flagged() {
        // The rounds do not overlap, but the medians differ by 2 %.
        assert_eq!(
            moved(&[1.0, 1.001, 1.002], &[1.02, 1.021, 1.022]),
            Moved::Within
        );
        // The medians differ by 20 %, but the rounds overlap.
        assert_eq!(moved(&[1.0, 1.1, 1.3], &[1.2, 1.3, 1.35]), Moved::Within);
        assert_eq!(moved(&[1.0, 1.1, 1.2], &[1.0, 1.1, 1.2]), Moved::Within);
    }

    #[test]
    fn compare_keys_ratios_and_reports_missing_entries() {
        let base = results(json!({ "floor": [1.0, 1.1], "jemalloc": [0.5, 0.6] }));
        let now = results(json!({ "floor": [1.5, 1.6], "system": [0.3, 0.4] }));
        let rows = compare(&base, &now);
        let verdicts: Vec<(&str, Moved)> = rows.iter().map(|r| (&*r.0, r.1)).collect();
        assert_eq!(
            verdicts,
            [
                ("forced W1 typed/floor", Moved::Slower),
                ("forced W1 typed/system", Moved::Missing),
                ("forced W1 typed/jemalloc", Moved::Missing),
            ]
        );
        assert_eq!(rows.first().map(|r| r.2.clone()), Some(vec![1.0, 1.1]));
        assert_eq!(rows.last().map(|r| r.3.is_empty()), Some(true));
    }

    #[test]
    fn a_run_compared_with_itself_has_no_change() {
        let run = results(json!({ "floor": [1.0, 1.2, 1.1], "jemalloc": [0.5, 0.7] }));
        assert!(compare(&run, &run).iter().all(|r| r.1 == Moved::Within));
    }
}
