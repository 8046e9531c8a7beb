//! Every target the ratio benches judge, and the one function that judges them: `DESIGN.md`'s
//! ratios ([`DESIGN`]) by the block bench (on medians) and the peers bench (on paired ratios),
//! [`TYPED`] by the typed bench, [`ISSUE`] by the peers bench. `benches/report.py` prints the
//! verdicts from the JSON and judges nothing itself.

use serde::Serialize;
use serde_json::Value;

use crate::stats::{with_unit, Grid};
use crate::workload::Workload::{self, Burst, Churn, Contended, Pipeline};

/// What a contender is, for groupings and targets, by the name the report uses.
#[allow(missing_docs)]
pub mod kind {
    pub const TALLY: &str = "tally";
    pub const FLOOR: &str = "floor";
    pub const ALLOCATOR: &str = "allocator";
    pub const POOL: &str = "thread-safe pool";
    pub const LOCAL: &str = "single-thread pool";
}

/// What a target asks of the subject (tally-pool, or the layer a bench measures).
#[derive(Debug, Clone, Copy)]
pub enum Rule {
    /// subject ÷ other at most the bound (`true`) or below it (`false`).
    Ratio(&'static str, f64, bool),
    /// subject ÷ other at most the bound, printed on a line of its own (the per-node pools
    /// against one shared pool).
    PerNode(&'static str, f64),
    /// subject − other in ns at most the bound (`None`: printed, no target).
    Over(&'static str, Option<f64>),
    /// Below 1: the largest paired ratio of the subject to a contender of this kind.
    FirstAmong(&'static str),
    /// Below 1: the paired ratio of the subject to each of these.
    AheadOf(&'static [&'static str]),
    /// W5: (growth − handle array) ÷ payload at most this.
    Memory(f64),
    /// W6: p99.9 of one acquire while the pool grows, in ns, below this.
    Tail(f64),
}

/// A target: a rule on a workload (W5 and W6 rules ignore it), in one of the report's
/// tables (`targets`, the issue's; `design`, DESIGN.md's; `typed`).
pub type Target = (&'static str, Workload, Rule);

/// DESIGN.md's ratio table.
pub const DESIGN: &[Target] = &[
    ("design", Churn, Rule::Ratio("floor", 1.25, true)),
    ("design", Churn, Rule::Ratio("jemalloc", 1.0, false)),
    ("design", Burst, Rule::Ratio("floor", 1.5, true)),
    ("design", Pipeline, Rule::Ratio("jemalloc", 1.0, false)),
    ("design", Contended, Rule::Ratio("jemalloc", 1.0, false)),
];

/// The typed layer's: near the floor, below jemalloc, at most 1 ns over the untyped pool,
/// and the per-node pools within 5 % of one shared pool.
pub const TYPED: &[Target] = &[
    ("typed", Churn, Rule::Ratio("floor", 1.3, true)),
    ("typed", Churn, Rule::Ratio("jemalloc", 1.0, false)),
    ("typed", Churn, Rule::Over("untyped", Some(1.0))),
    ("typed", Churn, Rule::PerNode("typed-shared", 1.05)),
    ("typed", Burst, Rule::Over("untyped", None)),
    ("typed", Pipeline, Rule::Ratio("jemalloc", 1.0, false)),
    ("typed", Pipeline, Rule::Over("untyped", None)),
    ("typed", Contended, Rule::Over("untyped", None)),
];

/// The issue's targets for tally-pool against its peers.
pub const ISSUE: &[Target] = &[
    ("targets", Churn, Rule::FirstAmong(kind::POOL)),
    ("targets", Burst, Rule::FirstAmong(kind::POOL)),
    ("targets", Pipeline, Rule::FirstAmong(kind::POOL)),
    ("targets", Contended, Rule::FirstAmong(kind::POOL)),
    ("targets", Churn, Rule::AheadOf(ALLOCATORS)),
    ("targets", Pipeline, Rule::AheadOf(ALLOCATORS)),
    ("targets", Churn, Rule::Memory(1.02)),
    ("targets", Churn, Rule::Tail(100.0)),
];

/// A verdict as the benches that judge their own targets print it.
pub fn verdict(met: bool) -> &'static str {
    if met {
        "target met"
    } else {
        "target NOT met"
    }
}

/// The allocators the issue asks tally-pool to be ahead of.
const ALLOCATORS: &[&str] = &["mimalloc", "jemalloc"];

/// What a rule reads: one bench's results under one inlining.
pub struct Figures<'a> {
    /// The label of the contender the targets are about.
    pub subject: &'static str,
    /// The medians and ratios of every contender.
    pub grid: &'a Grid,
    /// Every contender's label and kind.
    pub kinds: Vec<(&'static str, &'static str)>,
    /// The subject's W5 ratios: growth ÷ payload, (growth − handle array) ÷ payload.
    pub memory: Option<(f64, f64)>,
    /// The subject's W6 summary while its pool grows (see `results::latency_summary`).
    pub tail: Option<Value>,
}

/// The contender of a kind `pick` accepts (the subject aside) that the subject fares worst
/// against: the largest ratio, with that ratio.
pub fn rival(
    f: &Figures<'_>,
    w: Workload,
    pick: impl Fn(&str) -> bool,
) -> Option<(&'static str, f64)> {
    let candidates = f.kinds.iter().filter(|&&(l, k)| l != f.subject && pick(k));
    let ratios =
        candidates.filter_map(|&(label, _)| Some((label, f.grid.ratio(w, f.subject, label)?)));
    ratios.reduce(|worst, next| if next.1 > worst.1 { next } else { worst })
}

/// A judged target.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// The report's table.
    pub table: &'static str,
    /// `forced` or `plain`.
    pub inlining: &'static str,
    /// What is asked, as the report prints it (Markdown).
    pub target: String,
    /// What was measured (Markdown).
    pub measured: String,
    /// Whether it holds; `None` for figures printed without a target.
    pub ok: Option<bool>,
    /// The short form of the measurement the ratio tables print.
    #[serde(skip)]
    pub short: String,
}

/// Judges `target` on `f`.
pub fn judge(&(table, w, rule): &Target, f: &Figures<'_>, inlining: &'static str) -> Verdict {
    let (s, g, title) = (f.subject, f.grid, w.title());
    // What is asked; what was measured, whether it holds and the short form, if measured.
    let (target, measured): (String, Option<(String, Option<bool>, String)>) = match rule {
        Rule::Ratio(other, bound, _) | Rule::PerNode(other, bound) => {
            let inclusive = !matches!(rule, Rule::Ratio(_, _, false));
            let (op, sign) = if inclusive { ("<=", "≤") } else { ("<", "<") };
            let measured = (|| {
                let (a, b, r) = (g.median(w, s)?, g.median(w, other)?, g.ratio(w, s, other)?);
                let short = match rule {
                    Rule::PerNode(..) => format!(
                        "per-node vs shared: {s} {a:.2} ns | {other} {b:.2} ns | ratio {r:.3} \
                         (target {op} {bound})"
                    ),
                    _ => format!("{s}/{other} {r:.2} (target {op} {bound})"),
                };
                let ok = if inclusive { r <= bound } else { r < bound };
                let text = format!("{r:.2} (medians {} / {})", with_unit(a), with_unit(b));
                Some((text, Some(ok), short))
            })();
            (format!("{title}: {s} / {other} {sign} {bound}"), measured)
        }
        Rule::Over(other, bound) => {
            let measured = (|| {
                let diff = g.median(w, s)? - g.median(w, other)?;
                let target = bound.map_or("no target".into(), |b| format!("target <= {b} ns"));
                let short = format!("{s} - {other} {diff:+.2} ns ({target})");
                Some((format!("{diff:+.2} ns"), bound.map(|b| diff <= b), short))
            })();
            (format!("{title}: {s} − {other}"), measured)
        }
        Rule::FirstAmong(kind) => {
            let measured = (|| {
                let (label, r) = rival(f, w, |k| k == kind)?;
                let t = with_unit(g.median(w, s)?);
                let o = with_unit(g.median(w, label).unwrap_or(f64::NAN));
                let text = format!("closest: {label}, ratio **{r:.2}×** (medians {t} vs {o})");
                Some((text, Some(r < 1.0), String::new()))
            })();
            (format!("{title}: {s} first among {kind}s"), measured)
        }
        Rule::AheadOf(others) => {
            let measured = (|| {
                let t = with_unit(g.median(w, s)?);
                let (mut ratios, mut medians, mut ok) = (Vec::new(), Vec::new(), true);
                for o in others {
                    let r = g.ratio(w, s, o)?;
                    ok &= r < 1.0;
                    ratios.push(format!("to {o} **{r:.2}×**"));
                    medians.push(with_unit(g.median(w, o)?));
                }
                let (ratios, medians) = (ratios.join(", "), medians.join(" and "));
                let text = format!("ratio {ratios} (medians {t} vs {medians})");
                Some((text, Some(ok), String::new()))
            })();
            (
                format!("{title}: ahead of {}", others.join(" and ")),
                measured,
            )
        }
        Rule::Memory(bound) => {
            let measured = f.memory.map(|(total, less)| {
                let text = format!("{less:.3}× payload plus the handles ({total:.3}× with them)");
                (text, Some(less <= bound), String::new())
            });
            let target = format!("W5 memory: at most {bound}× payload plus the handles");
            (target, measured)
        }
        Rule::Tail(bound) => {
            let measured = f.tail.as_ref().and_then(|lat| {
                let get = |key: &str| lat.get(key).and_then(Value::as_f64);
                let (p999, runs) = (get("p999")?, get("runs").unwrap_or(1.0));
                let (lo, hi) = (get("p999_min")?, get("p999_max")?);
                let note = match runs >= 2.0 {
                    true => format!(", median of {runs} processes ({lo:.1}–{hi:.1})"),
                    false => String::new(),
                };
                let (p99, p50, timer) = (get("p99")?, get("p50")?, get("timer_overhead_p50")?);
                let text = format!(
                    "{p999:.1} ns{note} (p99 {p99:.1} ns, p50 {p50:.1} ns; each includes the \
                     timer's own {timer:.1} ns)"
                );
                Some((text, Some(p999 < bound), String::new()))
            });
            let what = "W6: p99.9 of one acquire while the pool grows under";
            (format!("{what} {bound} ns"), measured)
        }
    };
    let (measured, ok, short) =
        measured.unwrap_or_else(|| ("no data".into(), Some(false), "no data".into()));
    Verdict {
        table,
        inlining,
        target,
        measured,
        ok,
        short,
    }
}
