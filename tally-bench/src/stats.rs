//! Medians, quantiles and paired ratios over interleaved rounds, and the grid of samples a
//! pass collects.

use crate::workload::Workload;

/// `values`, sorted.
pub fn sorted(values: &[f64]) -> Vec<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v
}

/// The median (the mean of the middle two for an even count); NaN when empty.
pub fn median(values: &[f64]) -> f64 {
    let v = sorted(values);
    let len = v.len();
    match (v.get(len / 2), len % 2) {
        (Some(&hi), 0) => v.get(len / 2 - 1).map_or(hi, |&lo| (lo + hi) / 2.0),
        (Some(&mid), _) => mid,
        (None, _) => f64::NAN,
    }
}

/// The value at quantile `q` of sorted `values`.
pub fn quantile(sorted: &[u64], q: f64) -> u64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1));
    sorted.get(rank - 1).copied().unwrap_or(0)
}

/// The 99th percentile of `values`, each cut to a whole number (nanoseconds, as measured).
pub fn p99(values: &[f64]) -> f64 {
    let mut sorted: Vec<u64> = values.iter().map(|&x| x as u64).collect();
    sorted.sort_unstable();
    quantile(&sorted, 0.99) as f64
}

/// The medians of `rounds` runs of `a` and of `b`, alternating which runs first so that
/// neither always does, and `b`'s median over `a`'s.
pub fn alternate(
    rounds: usize,
    mut a: impl FnMut() -> f64,
    mut b: impl FnMut() -> f64,
) -> [f64; 3] {
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        if round % 2 == 0 {
            xs.push(a());
            ys.push(b());
        } else {
            ys.push(b());
            xs.push(a());
        }
    }
    let (x, y) = (median(&xs), median(&ys));
    [x, y, y / x]
}

/// A sample is quiet when other processes used less than this many CPUs during it.
pub const QUIET_CPUS: f64 = 0.5;

/// Quiet samples a cell needs before its workload's table is drawn from quiet samples only.
pub const QUIET_SAMPLES: usize = 3;

/// One contender's samples of one workload, one per round.
#[derive(Debug, Default, Clone)]
pub struct Samples {
    /// Nanoseconds per object.
    pub ns: Vec<f64>,
    /// Objects timed.
    pub objects: Vec<u64>,
    /// CPUs' worth of time other processes used during the sample (NaN: not measured).
    pub foreign: Vec<f64>,
}

impl Samples {
    /// Records one sample.
    pub fn push(&mut self, ns: f64, objects: u64, foreign: f64) {
        self.ns.push(ns);
        self.objects.push(objects);
        self.foreign.push(foreign);
    }

    /// How many samples were quiet.
    pub fn quiet_count(&self) -> usize {
        self.foreign.iter().filter(|&&f| f < QUIET_CPUS).count()
    }

    /// The samples published, sorted: the quiet ones if `quiet`, else all.
    pub fn chosen(&self, quiet: bool) -> Vec<f64> {
        let rounds = self.ns.iter().zip(&self.foreign);
        sorted(
            &(rounds.filter(|&(_, &f)| !quiet || f < QUIET_CPUS))
                .map(|(&ns, _)| ns)
                .collect::<Vec<_>>(),
        )
    }
}

/// `a`'s sample over `b`'s, round by round, with whether both were quiet.
fn rounds(a: &Samples, b: &Samples) -> Vec<(f64, bool)> {
    let rounds = (a.ns.iter().zip(&a.foreign)).zip(b.ns.iter().zip(&b.foreign));
    (rounds.filter(|&(_, (&y, _))| y != 0.0))
        .map(|((&x, &p), (&y, &q))| (x / y, p < QUIET_CPUS && q < QUIET_CPUS))
        .collect()
}

/// The paired ratio of `a` to `b`: the median over rounds of `a`'s sample over `b`'s sample
/// from the same round, which other load moves much less than it moves either median. With
/// `quiet`, only the rounds where both were quiet (all rounds if there are none).
pub fn paired(a: &Samples, b: &Samples, quiet: bool) -> Option<f64> {
    let rounds = rounds(a, b);
    let calm = rounds.iter().filter(|&&(_, calm)| calm || !quiet);
    let mut chosen: Vec<f64> = calm.map(|r| r.0).collect();
    if chosen.is_empty() {
        chosen = rounds.iter().map(|r| r.0).collect();
    }
    (!chosen.is_empty()).then(|| median(&chosen))
}

/// `ns` as the report prints it: `3.4`, `118`, `12.5 µs`.
pub fn with_unit(ns: f64) -> String {
    match ns {
        x if x.is_nan() => "–".to_owned(),
        x if x >= 1e6 => format!("{:.1} ms", x / 1e6),
        x if x >= 1e4 => format!("{:.0} µs", x / 1e3),
        x if x >= 1e3 => format!("{:.1} µs", x / 1e3),
        x if x >= 100.0 => format!("{x:.0} ns"),
        x => format!("{x:.1} ns"),
    }
}

/// One contender's samples of one workload under one inlining, or why it has none.
#[derive(Debug, Default, Clone)]
pub struct Cell {
    /// The samples, one per round.
    pub samples: Samples,
    /// Why the contender cannot run the workload.
    pub na: Option<&'static str>,
    /// The median ns per object over criterion's samples.
    pub criterion_median: Option<f64>,
}

/// A pass under one inlining: `cells[w][c]` for workload `w` (in `Workload::ALL`'s order)
/// and the contender labelled `labels[c]`.
#[derive(Debug, Clone)]
pub struct Grid {
    /// The contenders' labels.
    pub labels: Vec<&'static str>,
    /// The cells, by workload and contender.
    pub cells: Vec<Vec<Cell>>,
    /// Whether [`Grid::ratio`] is a paired ratio, else a ratio of medians.
    pub paired: bool,
}

impl Grid {
    /// An empty grid of `workloads` rows for `labels`.
    pub fn new(labels: Vec<&'static str>, workloads: usize, paired: bool) -> Self {
        let cells = vec![vec![Cell::default(); labels.len()]; workloads];
        Self {
            labels,
            cells,
            paired,
        }
    }

    /// The cell of `label` in workload `w`.
    pub fn cell(&self, w: Workload, label: &str) -> Option<&Cell> {
        let c = self.labels.iter().position(|l| *l == label)?;
        self.cells.get(w as usize)?.get(c)
    }

    /// The samples of `label` in `w`, if it ran.
    fn ran(&self, w: Workload, label: &str) -> Option<&Samples> {
        Some(&self.cell(w, label).filter(|c| c.na.is_none())?.samples)
    }

    /// Whether workload `w`'s figures use quiet samples only: when every contender that ran
    /// it has at least [`QUIET_SAMPLES`] of them.
    pub fn quiet(&self, w: Workload) -> bool {
        let mut present = self.cells.get(w as usize).into_iter().flatten();
        present.all(|c| c.na.is_some() || c.samples.quiet_count() >= QUIET_SAMPLES)
    }

    /// The median of `label` in `w` (over its quiet samples, if [`Grid::quiet`]).
    pub fn median(&self, w: Workload, label: &str) -> Option<f64> {
        let samples = self.ran(w, label)?.chosen(self.quiet(w));
        Some(median(&samples)).filter(|m| !m.is_nan())
    }

    /// `a`'s sample over `b`'s in `w`, round by round (all rounds).
    pub fn round_ratios(&self, w: Workload, a: &str, b: &str) -> Option<Vec<f64>> {
        let (a, b) = (&self.cell(w, a)?.samples, &self.cell(w, b)?.samples);
        Some(rounds(a, b).into_iter().map(|r| r.0).collect())
    }

    /// `a`'s time over `b`'s in `w`: a paired ratio, or a ratio of medians.
    pub fn ratio(&self, w: Workload, a: &str, b: &str) -> Option<f64> {
        if !self.paired {
            return Some(self.median(w, a)? / self.median(w, b)?);
        }
        paired(
            &self.cell(w, a)?.samples,
            &self.cell(w, b)?.samples,
            self.quiet(w),
        )
    }
}
