#!/usr/bin/env python3
"""Turns the results of `cargo bench --bench peers` into BENCHMARKS.md and docs/peers.svg.

    cargo bench --bench peers        # writes target/peers.json (about 17 minutes)
    python3 benches/report.py        # writes BENCHMARKS.md and docs/peers.svg

Options: --input PATH (default: $TALLY_PEERS_JSON, else $CARGO_TARGET_DIR/peers.json, else
target/peers.json), --output PATH (default BENCHMARKS.md), --svg PATH (default
docs/peers.svg), --lock PATH (default Cargo.lock). Paths are relative to the repository
root. Standard library only. Prints the lines the README quotes.
"""

import argparse
import datetime
import html
import json
import math
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# The crates whose versions the report names, in this order.
VERSIONED = [
    "tally-pool",
    "sharded-slab",
    "lockfree-object-pool",
    "object-pool",
    "opool",
    "slab",
    "nexus-pool",
    "nexus-slab",
    "mimalloc",
    "libmimalloc-sys",
    "tikv-jemallocator",
    "tikv-jemalloc-sys",
    "criterion",
    "crossbeam-queue",
]

TALLY = "tally-pool"
POOL = "thread-safe pool"
W6_TARGET_NS = 100.0
# The W6 figures a child reports, each published as its median over the child runs.
LATENCY_KEYS = ("mean", "p50", "p99", "p999", "p9999", "max", "timer_overhead_p50", "timer_resolution")
W5_TARGET = 1.02

KIND_COLOURS = {
    "tally": "#d6336c",
    "floor": "#adb5bd",
    "allocator": "#4c6ef5",
    "thread-safe pool": "#f08c00",
    "single-thread pool": "#37b24d",
}


def default_input():
    if os.environ.get("TALLY_PEERS_JSON"):
        return Path(os.environ["TALLY_PEERS_JSON"])
    if os.environ.get("CARGO_TARGET_DIR"):
        return Path(os.environ["CARGO_TARGET_DIR"]) / "peers.json"
    return ROOT / "target" / "peers.json"


def lock_versions(path):
    """name -> sorted list of versions in Cargo.lock."""
    versions = {}
    name = None
    try:
        text = path.read_text()
    except OSError:
        return versions
    for line in text.splitlines():
        line = line.strip()
        if line == "[[package]]":
            name = None
        elif line.startswith("name = "):
            name = line.split("=", 1)[1].strip().strip('"')
        elif line.startswith("version = ") and name is not None:
            version = line.split("=", 1)[1].strip().strip('"')
            versions.setdefault(name, set()).add(version)
    return {k: sorted(v) for k, v in versions.items()}


def fmt_ns(x):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if x >= 1_000_000:
        return f"{x / 1e6:.1f} ms"
    if x >= 10_000:
        return f"{x / 1e3:.0f} µs"
    if x >= 1_000:
        return f"{x / 1e3:.1f} µs"
    if x >= 100:
        return f"{x:.0f}"
    return f"{x:.1f}"


def with_unit(x):
    """`x` ns as text with its unit."""
    text = fmt_ns(x)
    return text if text.endswith("s") or text == "–" else f"{text} ns"


def fmt_ratio(x):
    if x is None or math.isnan(x) or math.isinf(x):
        return "–"
    return f"{x:.2f}×"


def verdict(ok):
    return "**MET**" if ok else "**MISSED**"


class Results:
    def __init__(self, data):
        self.data = data
        self.peers = {p["label"]: p for p in data["peers"]}
        self.order = [p["label"] for p in data["peers"]]
        self.workloads = {w["id"]: w for w in data["workloads"]}

    def kind(self, label):
        return self.peers.get(label, {}).get("kind", "")

    def cell(self, wid, label):
        for r in self.workloads[wid]["results"]:
            if r["peer"] == label:
                return r
        return None

    def median(self, wid, label):
        c = self.cell(wid, label)
        if c is None or "na" in c:
            return None
        return c.get("median")

    def best(self, wid, predicate):
        """(label, median) of the fastest peer (not tally-pool) matching predicate."""
        best = None
        for label in self.order:
            if label == TALLY or not predicate(label):
                continue
            m = self.median(wid, label)
            if m is not None and (best is None or m < best[1]):
                best = (label, m)
        return best

    def paired(self, wid, a, b):
        """Median over the rounds of a's sample ÷ b's sample from the same round (only the
        rounds where both were quiet, when the workload's table uses quiet samples)."""
        ca, cb = self.cell(wid, a), self.cell(wid, b)
        if not ca or not cb or "na" in ca or "na" in cb:
            return None
        quiet = self.workloads[wid].get("selection") == "quiet"
        limit = self.data.get("parameters", {}).get("quiet_cpus", 0.5)
        sa, sb = ca.get("samples", []), cb.get("samples", [])
        fa = ca.get("foreign_cpus") or [0.0] * len(sa)
        fb = cb.get("foreign_cpus") or [0.0] * len(sb)
        rounds = [(x, y, p, q) for x, y, p, q in zip(sa, sb, fa, fb) if y]
        chosen = [x / y for x, y, p, q in rounds if not quiet or (p < limit and q < limit)]
        if not chosen:
            chosen = [x / y for x, y, _, _ in rounds]
        return statistics.median(chosen) if chosen else None

    def rival(self, wid, predicate):
        """(label, tally-pool ÷ label, paired) for the matching peer that tally-pool fares
        worst against: the largest ratio."""
        worst = None
        for label in self.order:
            if label == TALLY or not predicate(label):
                continue
            r = self.paired(wid, TALLY, label)
            if r is not None and (worst is None or r > worst[1]):
                worst = (label, r)
        return worst

    def memory(self, label):
        for r in self.data.get("memory", []):
            if r.get("peer") == label:
                return r
        return None

    def latency(self, label, mode):
        """The W6 result of `label` in `mode`: each percentile's median over the fresh
        processes that ran it, with `runs` and the p99.9's range (`p999_min`, `p999_max`);
        or the reason it has none."""
        runs = []
        for r in self.data.get("latency", []):
            if r.get("peer") != label:
                continue
            if "na" in r and "mode" not in r:
                return r
            if r.get("mode") == mode:
                runs.append(r)
        if not runs:
            return None
        failed = next((r for r in runs if "na" in r), None)
        if failed is not None:
            return failed
        agg = dict(runs[0])
        for key in LATENCY_KEYS:
            values = [r[key] for r in runs if key in r]
            if values:
                agg[key] = statistics.median(values)
        agg["runs"] = len(runs)
        agg["p999_min"] = min(r["p999"] for r in runs)
        agg["p999_max"] = max(r["p999"] for r in runs)
        return agg


def runs_note(lat):
    """How a W6 p99.9 was obtained, when more than one process ran it."""
    if lat.get("runs", 1) < 2:
        return ""
    return (
        f", median of {lat['runs']} processes "
        f"({lat['p999_min']:.1f}–{lat['p999_max']:.1f})"
    )


def memory_ratios(r):
    """(growth, growth less the handle array) over the payload, or None."""
    if r is None or "na" in r:
        return None
    growth = r["resident_after"] - r["resident_before"]
    payload = r["payload_bytes"]
    return growth / payload, (growth - r["handle_array_bytes"]) / payload


def targets(res):
    """Rows of (target, measured, ok) for the issue's targets and DESIGN.md's ratios."""
    rows = []
    tally = {w: res.median(w, TALLY) for w in ("W1", "W2", "W3", "W4")}
    for w in ("W1", "W2", "W3", "W4"):
        name = f"{w} {res.workloads[w]['name']}"
        rival = res.rival(w, lambda label: res.kind(label) == POOL)
        if tally[w] is None or rival is None:
            rows.append((f"{name}: tally-pool first among thread-safe pools", "no data", False))
            continue
        rows.append(
            (
                f"{name}: tally-pool first among thread-safe pools",
                f"closest: {rival[0]}, ratio **{fmt_ratio(rival[1])}** "
                f"(medians {with_unit(tally[w])} vs {with_unit(res.median(w, rival[0]))})",
                rival[1] < 1,
            )
        )
    for w in ("W1", "W3"):
        name = f"{w} {res.workloads[w]['name']}"
        mi, je = res.paired(w, TALLY, "mimalloc"), res.paired(w, TALLY, "jemalloc")
        if tally[w] is None or mi is None or je is None:
            rows.append((f"{name}: ahead of mimalloc and jemalloc", "no data", False))
            continue
        rows.append(
            (
                f"{name}: ahead of mimalloc and jemalloc",
                f"ratio to mimalloc **{fmt_ratio(mi)}**, to jemalloc **{fmt_ratio(je)}** "
                f"(medians {with_unit(tally[w])} vs {with_unit(res.median(w, 'mimalloc'))} "
                f"and {with_unit(res.median(w, 'jemalloc'))})",
                mi < 1 and je < 1,
            )
        )
    ratios = memory_ratios(res.memory(TALLY))
    if ratios is None:
        rows.append(("W5 memory: at most 1.02× payload plus the handles", "no data", False))
    else:
        rows.append(
            (
                "W5 memory: at most 1.02× payload plus the handles",
                f"{ratios[1]:.3f}× payload plus the handles ({ratios[0]:.3f}× with them)",
                ratios[1] <= W5_TARGET,
            )
        )
    lat = res.latency(TALLY, "growing")
    if lat is None or "na" in lat:
        rows.append(("W6: p99.9 of one acquire while the pool grows under 100 ns", "no data", False))
    else:
        rows.append(
            (
                "W6: p99.9 of one acquire while the pool grows under 100 ns",
                f"{lat['p999']:.1f} ns{runs_note(lat)} (p99 {lat['p99']:.1f} ns, p50 "
                f"{lat['p50']:.1f} ns; each includes the timer's own "
                f"{lat.get('timer_overhead_p50', float('nan')):.1f} ns)",
                lat["p999"] < W6_TARGET_NS,
            )
        )
    return rows


def design_ratios(res):
    """DESIGN.md's ratio table, from the same run."""
    rows = []
    spec = [
        ("W1", "floor", 1.25, True),
        ("W1", "jemalloc", 1.0, False),
        ("W2", "floor", 1.5, True),
        ("W3", "jemalloc", 1.0, False),
        ("W4", "jemalloc", 1.0, False),
    ]
    for w, other, bound, inclusive in spec:
        t, o = res.median(w, TALLY), res.median(w, other)
        op = "≤" if inclusive else "<"
        label = f"{w} {res.workloads[w]['name']}: tally-pool / {other} {op} {bound:g}"
        ratio = res.paired(w, TALLY, other)
        if t is None or o is None or ratio is None:
            rows.append((label, "no data", False))
            continue
        ok = ratio <= bound if inclusive else ratio < bound
        rows.append((label, f"{ratio:.2f} (medians {with_unit(t)} / {with_unit(o)})", ok))
    return rows


def headline(res):
    """Short ratio phrases for the README."""
    out = []
    for w in ("W1", "W2", "W3", "W4"):
        t = res.median(w, TALLY)
        pool = res.rival(w, lambda label: res.kind(label) == POOL)
        alloc = res.rival(w, lambda label: res.kind(label) == "allocator")
        if t is None or pool is None:
            continue
        name = res.workloads[w]["name"]
        phrase = f"{w} {name}: {with_unit(t)}; {fmt_ratio(pool[1])} the time of the best thread-safe pool ({pool[0]})"
        if alloc is not None:
            phrase += f", {fmt_ratio(alloc[1])} that of the best allocator ({alloc[0]})"
        out.append(phrase)
    ratios = memory_ratios(res.memory(TALLY))
    if ratios is not None:
        out.append(f"W5 memory: {ratios[1]:.3f}× the payload plus 8-byte handles")
    lat = res.latency(TALLY, "growing")
    if lat is not None and "na" not in lat:
        out.append(
            f"W6 one acquire while the pool grows: p99 {lat['p99']:.1f} ns, p99.9 {lat['p999']:.1f} ns"
            f"{runs_note(lat)} (the timer's own "
            f"{lat.get('timer_overhead_p50', float('nan')):.0f} ns included)"
        )
    return out


# ---------------------------------------------------------------------------------------
# SVG
# ---------------------------------------------------------------------------------------


def nice_step(span, ticks=5):
    raw = span / ticks
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def svg_chart(res):
    panels = [w for w in ("W1", "W3") if w in res.workloads]
    rows = len(res.order)
    row_h, top, left_label = 22, 70, 200
    panel_w, gap = 430, 40
    width = 20 + len(panels) * (left_label + panel_w) + (len(panels) - 1) * gap + 20
    height = top + rows * row_h + 70
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="Helvetica, Arial, sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
    ]
    mode = res.data.get("mode", "")
    title = "tally-pool and its peers: median ns per object, bars; min–max over rounds, whiskers"
    if mode != "full":
        title += f" ({mode} mode, indicative only)"
    out.append(f'<text x="20" y="24" font-size="15" font-weight="bold">{html.escape(title)}</text>')
    started = datetime.datetime.fromtimestamp(res.data["started_unix"], datetime.timezone.utc)
    machine = res.data.get("machine", {})
    sub = (
        f"{started:%Y-%m-%d} · {machine.get('nproc', '?')} CPUs ({machine.get('cpu') or '?'}) · "
        f"lower is better · from benches/peers.rs"
    )
    out.append(f'<text x="20" y="42" fill="#555">{html.escape(sub)}</text>')
    for k, wid in enumerate(panels):
        w = res.workloads[wid]
        x0 = 20 + k * (left_label + panel_w + gap)
        bar_x = x0 + left_label
        medians = [res.median(wid, p) for p in res.order]
        present = [m for m in medians if m is not None]
        if not present:
            continue
        axis_max = max(present) * 1.12
        step = nice_step(axis_max)
        axis_max = math.ceil(axis_max / step) * step
        scale = (panel_w - 60) / axis_max
        heading = f"{wid} {w['name']}"
        out.append(
            f'<text x="{x0}" y="{top - 12}" font-size="13" font-weight="bold">'
            f"{html.escape(heading)}</text>"
        )
        out.append(
            f'<text x="{x0 + 8 * len(heading) + 8}" y="{top - 12}" fill="#555">'
            f'({html.escape(w["unit"])})</text>'
        )
        tick = 0.0
        while tick <= axis_max + 1e-9:
            tx = bar_x + tick * scale
            out.append(
                f'<line x1="{tx:.1f}" y1="{top}" x2="{tx:.1f}" y2="{top + rows * row_h}" '
                f'stroke="#e9ecef"/>'
            )
            out.append(
                f'<text x="{tx:.1f}" y="{top + rows * row_h + 14}" text-anchor="middle" '
                f'fill="#555">{tick:g}</text>'
            )
            tick += step
        ranked = sorted(
            range(rows),
            key=lambda i: (medians[i] is None, medians[i] if medians[i] is not None else 0),
        )
        for r, i in enumerate(ranked):
            label = res.order[i]
            y = top + r * row_h
            kind = res.kind(label)
            colour = KIND_COLOURS.get(kind, "#868e96")
            weight = "bold" if label == TALLY else "normal"
            out.append(
                f'<text x="{bar_x - 6}" y="{y + 15}" text-anchor="end" font-weight="{weight}">'
                f"{html.escape(label)}</text>"
            )
            c = res.cell(wid, label)
            if c is None or "na" in c:
                out.append(f'<text x="{bar_x + 4}" y="{y + 15}" fill="#868e96">n/a</text>')
                continue
            m, lo, hi = c["median"], c["min"], c["max"]
            bw = max(1.0, m * scale)
            out.append(
                f'<rect x="{bar_x}" y="{y + 4}" width="{bw:.1f}" height="{row_h - 8}" '
                f'fill="{colour}"/>'
            )
            x_lo = bar_x + min(lo, axis_max) * scale
            x_hi = bar_x + min(hi, axis_max) * scale
            ym = y + row_h / 2
            out.append(
                f'<line x1="{x_lo:.1f}" y1="{ym}" x2="{x_hi:.1f}" y2="{ym}" stroke="#212529" '
                f'stroke-width="1"/>'
            )
            out.append(
                f'<line x1="{x_lo:.1f}" y1="{ym - 4}" x2="{x_lo:.1f}" y2="{ym + 4}" stroke="#212529"/>'
            )
            if hi > axis_max:
                out.append(
                    f'<path d="M{x_hi - 5:.1f},{ym - 4} L{x_hi:.1f},{ym} L{x_hi - 5:.1f},{ym + 4}" '
                    f'fill="none" stroke="#212529"/>'
                )
            else:
                out.append(
                    f'<line x1="{x_hi:.1f}" y1="{ym - 4}" x2="{x_hi:.1f}" y2="{ym + 4}" '
                    f'stroke="#212529"/>'
                )
            text_x = min(bar_x + bw, x_hi if hi <= axis_max else bar_x + bw) + 6
            text_x = max(text_x, bar_x + bw + 6)
            if hi <= axis_max:
                text_x = max(text_x, x_hi + 6)
            out.append(
                f'<text x="{text_x:.1f}" y="{y + 15}" font-weight="{weight}" paint-order="stroke" '
                f'stroke="#ffffff" stroke-width="3">{fmt_ns(m)}</text>'
            )
    ly = top + rows * row_h + 40
    lx = 20
    for kind, colour in KIND_COLOURS.items():
        out.append(f'<rect x="{lx}" y="{ly - 10}" width="12" height="12" fill="{colour}"/>')
        out.append(f'<text x="{lx + 16}" y="{ly}">{html.escape(kind)}</text>')
        lx += 40 + 7 * len(kind)
    out.append(
        f'<text x="{lx + 10}" y="{ly}" fill="#555">whiskers past the axis end in an arrow</text>'
    )
    out.append("</svg>")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------------------


def md_table(header, rows, align=None):
    align = align or ["---"] * len(header)
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    for row in rows:
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    return "\n".join(lines)


def workload_section(res, wid):
    w = res.workloads[wid]
    tally = res.median(wid, TALLY)
    lines = [f"## {wid} {w['name']} — {w['unit']}", ""]
    rounds = res.data.get("parameters", {}).get("rounds", "?")
    if w.get("selection") == "quiet":
        lines.append(
            f"Median and min–max over the rounds whose sample ran while other processes used "
            f"under {res.data['parameters'].get('quiet_cpus', 0.5):g} CPU (*quiet*; how many of "
            f"the {rounds} in brackets); the last columns use every round. *÷ tally-pool* is "
            f"the paired ratio: the median over rounds of this peer's time over tally-pool's "
            f"in the same round (above 1: tally-pool is faster)."
        )
    else:
        lines.append(
            f"Median and min–max over all {rounds} rounds (too few samples ran while the "
            f"machine was quiet to keep only those). *÷ tally-pool* is the paired ratio: the "
            f"median over rounds of this peer's time over tally-pool's in the same round "
            f"(above 1: tally-pool is faster)."
        )
    lines.append("")
    if wid == "W3":
        lines.append(
            "W3 has two regimes on this machine, and they hit every peer alike: producer and "
            "consumer either run in lock-step, each object a cache-line transfer between the "
            "cores (hundreds of ns for every peer, the slow rounds below), or in batches (tens "
            "of ns). Which one a sample falls in depends on timing and on other load, not on "
            "the peer, hence the wide min–max; the paired ratios compare peers within the same "
            "round and are the steadier measure."
        )
        lines.append("")
    rows = []
    ranked = sorted(
        res.order,
        key=lambda p: (res.median(wid, p) is None, res.median(wid, p) or 0),
    )
    for label in ranked:
        c = res.cell(wid, label)
        name = f"**{label}**" if label == TALLY else label
        kind = res.kind(label)
        if c is None or "na" in c:
            reason = c["na"] if c else "not run"
            rows.append([name, kind, "n/a", "", "", "", reason])
            continue
        vs = fmt_ratio(res.paired(wid, label, TALLY))
        used = f" ({c['samples_used']})" if w.get("selection") == "quiet" else ""
        rows.append(
            [
                name,
                kind,
                f"**{fmt_ns(c['median'])}**{used}",
                f"{fmt_ns(c['min'])}–{fmt_ns(c['max'])}",
                vs if label != TALLY else "1.00×",
                f"{fmt_ns(c.get('all_median'))} ({fmt_ns(c.get('all_min'))}–{fmt_ns(c.get('all_max'))})",
                fmt_ns(c.get("criterion_median")),
            ]
        )
    lines.append(
        md_table(
            [
                "peer",
                "kind",
                "median",
                "min–max",
                "÷ tally-pool",
                "all rounds: median (min–max)",
                "criterion median",
            ],
            rows,
            ["---", "---", "---:", "---:", "---:", "---:", "---:"],
        )
    )
    lines.append("")
    best_pool = res.rival(wid, lambda p: res.kind(p) == POOL)
    best_any = res.rival(wid, lambda p: True)
    bits = []
    if best_pool is not None:
        bits.append(f"tally-pool ÷ best thread-safe pool ({best_pool[0]}): **{fmt_ratio(best_pool[1])}**")
    if best_any is not None:
        bits.append(f"tally-pool ÷ best of all ({best_any[0]}): **{fmt_ratio(best_any[1])}**")
    if bits:
        lines.append("; ".join(bits) + ". Below 1 means tally-pool is faster.")
        lines.append("")
    return "\n".join(lines)


def memory_section(res):
    mem = res.data.get("memory", [])
    if not mem:
        return ""
    n = next((r["objects"] for r in mem if "objects" in r), 0)
    lines = [
        f"## W5 memory — {n:,} live objects, resident bytes over payload bytes",
        "",
        "Each peer in a fresh process: `/proc/self/statm` before the peer is built and after "
        "the last acquire, with every object live. *Growth* is the difference; the *handle "
        "array* is the `Vec` of what the user holds (a handle, guard, key or pointer per "
        "object), whose pages are part of the growth. Guards marked † carry the `Order` "
        "itself, so for them the payload lives in the handle array and the second ratio "
        "says little.",
        "",
    ]
    rows = []
    order = sorted(
        res.order,
        key=lambda p: (memory_ratios(res.memory(p)) is None, (memory_ratios(res.memory(p)) or (0, 0))[0]),
    )
    for label in order:
        r = res.memory(label)
        name = f"**{label}**" if label == TALLY else label
        if r is None or "na" in r:
            rows.append([name, "n/a", "", "", "", "", r["na"] if r else "not run"])
            continue
        growth = r["resident_after"] - r["resident_before"]
        total, less = memory_ratios(r)
        inline = "†" if r["handle_bytes"] >= 64 else ""
        rows.append(
            [
                name,
                r["setup"],
                f"{r['handle_bytes']}{inline}",
                f"{growth / 1e6:.1f} MB",
                f"{r['handle_array_bytes'] / 1e6:.1f} MB",
                f"**{total:.3f}×**",
                f"{less:.3f}×",
            ]
        )
    lines.append(
        md_table(
            [
                "peer",
                "setup",
                "handle bytes",
                "growth",
                "handle array",
                "growth ÷ payload",
                "(growth − handle array) ÷ payload",
            ],
            rows,
            ["---", "---", "---:", "---:", "---:", "---:", "---:"],
        )
    )
    lines.append("")
    return "\n".join(lines)


def runs_sentence(res):
    """How many processes ran each W6 peer and mode, and what the tables show of them."""
    runs = res.data.get("parameters", {}).get("latency_runs", 1)
    if runs < 2:
        return ""
    return (
        f". Each peer and mode ran in {runs} such processes, in rounds that visit every peer "
        f"in turn; every figure below is the median over them, and the p99.9 column adds "
        f"their range"
    )


def latency_section(res):
    lat = res.data.get("latency", [])
    if not lat:
        return ""
    sample = next((r for r in lat if "n" in r), None)
    if sample is None:
        return ""
    overhead = sorted(r["timer_overhead_p50"] for r in lat if "timer_overhead_p50" in r)
    resolution = sorted(r.get("timer_resolution", 0) for r in lat if "timer_resolution" in r)
    mid = overhead[len(overhead) // 2] if overhead else float("nan")
    res_ns = resolution[len(resolution) // 2] if resolution else float("nan")
    lines = [
        f"## W6 tail latency — {sample['n']:,} single acquires, ns",
        "",
        f"Each call is one acquire-and-write of an `Order`, timed alone with "
        f"`{sample['timer']}` (`lfence; rdtsc; lfence` on each side, converted with a "
        f"calibration against `Instant`), all objects kept live, in a fresh process per peer "
        f"and mode{runs_sentence(res)}. **The times include the timer itself**: two back-to-back readings take "
        f"{fmt_ns(mid)} ns (p50), so a call that took no time at all would read about that, "
        f"and readings here come in steps of about {fmt_ns(res_ns)} ns.",
        "",
        "*With growth*: the peer starts from its smallest configuration (tally-pool "
        "`capacity = 1024`; slab and `Vec`-backed pools empty; nexus-slab `unbounded::Slab` "
        "with its default chunks of 256) and grows to hold every object. *Pre-allocated*: the "
        "peer's own pre-allocation for all of them where it has one, then one untimed "
        "acquire-all/release-all pass.",
        "",
    ]
    for mode, title in (("growing", "With growth"), ("pre-allocated", "Pre-allocated")):
        rows = []
        entries = []
        for label in res.order:
            r = res.latency(label, mode)
            entries.append((label, r))
        entries.sort(key=lambda e: (e[1] is None or "na" in e[1], (e[1] or {}).get("p999", 0)))
        for label, r in entries:
            name = f"**{label}**" if label == TALLY else label
            if r is None or "na" in r:
                rows.append([name, "n/a", "", "", "", "", "", r["na"] if r else "not run"])
                continue
            rows.append(
                [
                    name,
                    fmt_ns(r["p50"]),
                    fmt_ns(r["p99"]),
                    f"**{fmt_ns(r['p999'])}**"
                    + (
                        f" ({fmt_ns(r['p999_min'])}–{fmt_ns(r['p999_max'])})"
                        if r.get("runs", 1) > 1
                        else ""
                    ),
                    fmt_ns(r["p9999"]),
                    fmt_ns(r["max"]),
                    fmt_ns(r["mean"]),
                    "",
                ]
            )
        lines.append(f"### {title}")
        lines.append("")
        lines.append(
            md_table(
                ["peer", "p50", "p99", "p99.9", "p99.99", "max", "mean", "note"],
                rows,
                ["---", "---:", "---:", "---:", "---:", "---:", "---:", "---"],
            )
        )
        lines.append("")
    return "\n".join(lines)


def report(res, versions, input_path):
    d = res.data
    m = d.get("machine", {})
    load = d.get("load_average", {})
    started = datetime.datetime.fromtimestamp(d["started_unix"], datetime.timezone.utc)
    minutes = (d["finished_unix"] - d["started_unix"]) / 60
    params = d.get("parameters", {})
    out = []
    out.append("# Benchmarks: tally-pool against the pools and allocators users would pick instead")
    out.append("")
    out.append(
        "<!-- Generated by benches/report.py from the results of benches/peers.rs; edit those, "
        "not this file. -->"
    )
    out.append("")
    out.append("To regenerate every number, table and the chart on this page:")
    out.append("")
    out.append("```sh")
    out.append("cargo bench --bench peers     # ~17 min; writes target/peers.json")
    out.append("python3 benches/report.py     # writes BENCHMARKS.md and docs/peers.svg")
    out.append("```")
    out.append("")
    out.append(
        "`TALLY_BENCH_QUICK=1 cargo bench --bench peers` (or `-- --quick`) is the CI smoke run "
        "(under 2 minutes; its tables are marked as indicative)."
    )
    out.append("")
    if d.get("mode") != "full":
        out.append(
            f"> **{d.get('mode', '?').upper()} MODE**: short samples; these numbers are "
            "indicative only. Run the full bench before quoting them."
        )
        out.append("")
    load_text = ", ".join(
        f"{k.replace('_', ' ')} {v}" for k, v in load.items() if v is not None
    )
    out.append("## This run")
    out.append("")
    out.append(
        md_table(
            ["", ""],
            [
                ["date", f"{started:%Y-%m-%d %H:%M} UTC ({minutes:.0f} minutes, {d.get('mode')} mode)"],
                [
                    "machine",
                    f"{m.get('nproc', '?')} CPUs (nproc), {m.get('cpu') or '?'}, Linux "
                    f"{m.get('kernel') or '?'}, transparent huge pages `{m.get('transparent_hugepage') or '?'}`",
                ],
                ["load average (1, 5, 15 min)", load_text or "?"],
                ["toolchain", m.get("rustc") or "?"],
                ["commit", f"`{m.get('git') or '?'}`"],
                ["results", f"`{input_path}`; criterion's own report in `target/criterion/`"],
            ],
        )
    )
    out.append("")
    out.append(
        "The machine is shared with other builds: the load average above says how much. "
        "Other work hurts the two-thread workloads (W3, W4) most: when another process holds "
        "one of the two CPUs, both threads share the other, W3 slows down about tenfold for "
        "every peer and W4 measures no contention at all. Each sample therefore records how "
        "much CPU other processes used while it ran, and the tables use the quiet samples "
        "(see each table; the all-rounds numbers are shown beside them)."
    )
    out.append("")
    out.append("## Targets")
    out.append("")
    out.append(
        "Ratios from this one run. A ratio is tally-pool's time over the other's, taken round "
        "by round (each round samples both within seconds of each other) and the median over "
        "the rounds: a paired ratio, which other load on the machine moves much less than it "
        "moves either median. A target missed is reported as missed; no workload is changed "
        "to meet one."
    )
    out.append("")
    rows = [[t, meas, verdict(ok)] for t, meas, ok in targets(res)]
    out.append(md_table(["target", "measured", ""], rows))
    out.append("")
    out.append("DESIGN.md's ratio table, from the same run:")
    out.append("")
    rows = [[t, meas, verdict(ok)] for t, meas, ok in design_ratios(res)]
    out.append(md_table(["ratio", "measured", ""], rows))
    out.append("")
    out.append("![W1 churn and W3 pipeline, median ns per object for each peer](docs/peers.svg)")
    out.append("")
    out.append("## How it is measured")
    out.append("")
    out.append(
        f"- **Object**: a 64-byte `Order` (eight 8-byte fields). Every workload writes all "
        f"eight words after the acquire and reads them back (volatile loads, checked) before "
        f"the release."
    )
    out.append(
        f"- **W1 churn**: one thread, acquire → write → read → release. **W2 burst**: "
        f"{params.get('burst', 100000):,} live, then all released in order (time per object). "
        f"**W3 pipeline**: this thread acquires, a second thread releases; the handles (or "
        f"keys, or pointers) travel through a `crossbeam_queue::ArrayQueue` of "
        f"{params.get('queue_capacity', 1024):,}. **W4 contended**: two threads churn on one "
        f"shared pool; time per pair of operations (one on each thread)."
    )
    out.append(
        f"- **Numbers** (W1–W4): an interleaved pass of {params.get('rounds', '?')} rounds; "
        f"each round takes one sample of every workload for every peer, in an order rotated "
        f"each round, so drift and other load hit all peers alike. A sample warms up for "
        f"{params.get('warm_up_ms', 0):g} ms (fresh helper thread included), then times about "
        f"{params.get('sample_ms', 0):g} ms of work. Median and min–max over the rounds. "
        f"Criterion also measures each cell first ({params.get('criterion_samples', '?')} "
        f"samples); its median is shown as a cross-check."
    )
    out.append(
        f"- **Set-up**: peers that can pre-allocate get {params.get('workload_capacity', 131072):,} "
        f"values for W1–W4 (tally-pool: `#[pooled(capacity = 131_072)]`). Allocators are called "
        f"through `GlobalAlloc::alloc`/`dealloc` with `Order`'s layout (the process's global "
        f"allocator stays the system one, which `Box` uses)."
    )
    out.append(
        "- **The floor** is a thread-local intrusive free list, not a pool: no synchronisation "
        "at all. In W3 the releasing thread hands its free list over every 4,096 objects; in "
        "W4 each thread has its own. It bounds what a per-object pool could cost, and its "
        "W3/W4 cells are not like-for-like."
    )
    out.append(
        "- **Guards that carry the value** (object-pool, opool, lockfree-object-pool's "
        "`SpinLockObjectPool`, nexus-pool's `sync` and `local`) move the 64-byte `Order` out "
        "of the pool into the guard and back: their handles are 72–80 bytes, and in W3 that is "
        "what crosses the queue."
    )
    out.append(
        "- **n/a** means the peer's API cannot express the workload (the reason is in the cell), "
        "never that it was left out."
    )
    out.append("")
    out.append("## Peers")
    out.append("")
    rows = []
    for label in res.order:
        p = res.peers[label]
        krate = p.get("crate") or ""
        version = ", ".join(versions.get(krate, [])) if krate else ""
        rows.append(
            [
                f"**{label}**" if label == TALLY else label,
                p["kind"],
                f"{krate} {version}".strip() or "std",
                p["api"],
                p.get("handle_bytes") if p.get("handle_bytes") is not None else "",
            ]
        )
    out.append(md_table(["peer", "kind", "crate", "called as", "handle bytes"], rows))
    out.append("")
    for wid in ("W1", "W2", "W3", "W4"):
        if wid in res.workloads:
            out.append(workload_section(res, wid))
    out.append(memory_section(res))
    out.append(latency_section(res))
    out.append("## Versions")
    out.append("")
    rows = [[name, ", ".join(versions.get(name, ["?"]))] for name in VERSIONED]
    rows.append(["rustc", m.get("rustc") or "?"])
    out.append(md_table(["crate", "version (Cargo.lock)"], rows))
    out.append("")
    phases = d.get("seconds_after", {})
    if phases:
        out.append(
            "Run time: "
            + ", ".join(f"{k} done after {v / 60:.1f} min" for k, v in phases.items())
            + "."
        )
        out.append("")
    return "\n".join(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, default=None)
    parser.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md")
    parser.add_argument("--svg", type=Path, default=ROOT / "docs" / "peers.svg")
    parser.add_argument("--lock", type=Path, default=ROOT / "Cargo.lock")
    args = parser.parse_args()
    input_path = args.input or default_input()
    try:
        data = json.loads(input_path.read_text())
    except (OSError, ValueError) as err:
        sys.exit(f"report.py: cannot read {input_path}: {err}; run `cargo bench --bench peers` first")
    res = Results(data)
    versions = lock_versions(args.lock)
    try:
        shown = input_path.resolve().relative_to(ROOT)
    except ValueError:
        shown = input_path
    args.output.write_text(report(res, versions, shown))
    args.svg.parent.mkdir(parents=True, exist_ok=True)
    args.svg.write_text(svg_chart(res))
    print(f"wrote {args.output} and {args.svg}")
    print()
    print("README lines:")
    print()
    print("Benchmarks against sharded-slab, lockfree-object-pool, object-pool, opool, nexus-pool, "
          "nexus-slab, slab, mimalloc, jemalloc and the system allocator: "
          "[BENCHMARKS.md](BENCHMARKS.md) (2-core machine, 64-byte objects, one run).")
    print()
    for line in headline(res):
        print(f"- {line}")
    print()
    print("![W1 churn and W3 pipeline per peer](docs/peers.svg)")


if __name__ == "__main__":
    main()
