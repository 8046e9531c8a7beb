#!/usr/bin/env python3
"""Turns the results of the benches into BENCHMARKS.md and docs/peers.svg.

    cargo bench --bench peers        # writes target/peers.json (about 20 minutes)
    cargo bench --bench typed        # optional: target/typed.json, read beside peers.json
    cargo bench --bench block        # optional: target/block.json, likewise
    python3 benches/report.py        # writes BENCHMARKS.md and docs/peers.svg

Options: --input (default $TALLY_PEERS_JSON, else peers.json in $CARGO_TARGET_DIR or target/),
--output (BENCHMARKS.md), --svg (docs/peers.svg), --lock (Cargo.lock). Standard library
only. It computes nothing: every figure and verdict comes from the JSON, as
the `tally-bench` crate computed them.
"""

import argparse
import datetime
import html
import json
import math
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The crates whose versions the report names, in this order.
VERSIONED = ("tally-pool sharded-slab lockfree-object-pool object-pool opool slab nexus-pool nexus-slab "
             "mimalloc libmimalloc-sys tikv-jemallocator tikv-jemalloc-sys criterion crossbeam-queue").split()
TALLY = "tally-pool"
KIND_COLOURS = {"tally": "#d6336c", "floor": "#adb5bd", "allocator": "#4c6ef5",
                "thread-safe pool": "#f08c00", "single-thread pool": "#37b24d"}
VERDICT = {True: "**MET**", False: "**MISSED**", None: "no target"}


def fmt_ns(x):
    if x is None or math.isnan(x):
        return "–"
    if x >= 1_000:
        return f"{x / 1e6:.1f} ms" if x >= 1e6 else f"{x / 1e3:.0f} µs" if x >= 1e4 else f"{x / 1e3:.1f} µs"
    return f"{x:.0f}" if x >= 100 else f"{x:.1f}"


def fmt_ratio(x):
    return "–" if x is None or math.isnan(x) or math.isinf(x) else f"{x:.2f}×"


def md_table(header, rows, align=None):
    lines = [header, align or ["---"] * len(header)] + rows
    return "\n".join("| " + " | ".join(str(c) for c in row) + " |" for row in lines)


def verdict_table(verdicts, first="target"):
    return md_table([first, "measured", ""], [[v["target"], v["measured"], VERDICT[v["ok"]]] for v in verdicts])


def bold_tally(label):
    return f"**{label}**" if label == TALLY else label


def na_row(label, found, blanks):
    """The row of a peer without figures: n/a, `blanks` empty cells, then why."""
    return [bold_tally(label), "n/a"] + [""] * blanks + [found.get("na", "") if found else "not run"]


class Results:
    """peers.json, looked up by workload and peer."""

    def __init__(self, data):
        self.data, self.params = data, data.get("parameters", {})
        self.peers = {p["label"]: p for p in data["peers"]}
        self.order = list(self.peers)
        self.workloads = {w["id"]: w for w in data["workloads"]}
        self.plain = {w["id"]: w for w in data.get("plain") or []}

    def kind(self, label):
        return self.peers.get(label, {}).get("kind", "")

    def cell(self, wid, label, table=None):
        rows = (table or self.workloads).get(wid, {}).get("results", [])
        return next((r for r in rows if r["peer"] == label), None)

    def median(self, wid, label):
        c = self.cell(wid, label)
        return None if c is None or "na" in c else c.get("median")

    def by_median(self, wid):
        return sorted(self.order, key=lambda p: (self.median(wid, p) is None, self.median(wid, p) or 0))

    def memory(self, label):
        return next((r for r in self.data.get("memory", []) if r.get("peer") == label), None)

    def latency(self, label, mode):
        summaries = self.data.get("latency_summary", [])
        return next((s for s in summaries if s["peer"] == label and s["mode"] == mode), None)

    def verdicts(self, table, inlining):
        return [v for v in self.data.get("targets", []) if v["table"] == table and v["inlining"] == inlining]


def svg_chart(res):
    """W1 and W3: a bar per peer at its median, a whisker over its min–max."""
    panels = [w for w in ("W1", "W3") if w in res.workloads]
    row_h, top, label_w, panel_w, gap = 22, 70, 200, 430, 40
    bottom = top + len(res.order) * row_h
    width, height = 40 + len(panels) * (label_w + panel_w + gap) - gap, bottom + 70

    def text(x, y, body, attrs=""):
        return f'<text x="{x}" y="{y}"{attrs}>{html.escape(body)}</text>'

    def line(x1, y1, x2, y2, colour="#212529"):
        return f'<line x1="{x1:.1f}" y1="{y1}" x2="{x2:.1f}" y2="{y2}" stroke="{colour}"/>'

    title = "tally-pool and its peers: median ns per object, bars; min–max over rounds, whiskers"
    if res.data.get("mode") != "full":
        title += f" ({res.data.get('mode')} mode, indicative only)"
    started = datetime.datetime.fromtimestamp(res.data["started_unix"], datetime.timezone.utc)
    m = res.data.get("machine", {})
    sub = f"{started:%Y-%m-%d} · {m.get('nproc', '?')} CPUs ({m.get('cpu') or '?'}) · lower is better · from benches/peers.rs"
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} '
           f'{height}" font-family="Helvetica, Arial, sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
           text(20, 24, title, ' font-size="15" font-weight="bold"'), text(20, 42, sub, ' fill="#555"')]
    for k, wid in enumerate(panels):
        x0 = 20 + k * (label_w + panel_w + gap)
        bar_x, present = x0 + label_w, [res.median(wid, p) for p in res.order if res.median(wid, p) is not None]
        if not present:
            continue
        raw = max(present) * 1.12 / 5
        mag = 10 ** math.floor(math.log10(raw))
        step = next(s * mag for s in (1, 2, 2.5, 5, 10) if raw <= s * mag)
        axis_max = math.ceil(max(present) * 1.12 / step) * step
        scale = (panel_w - 60) / axis_max
        heading = f"{wid} {res.workloads[wid]['name']}"
        out += [text(x0, top - 12, heading, ' font-size="13" font-weight="bold"'),
                text(x0 + 8 * len(heading) + 8, top - 12, f"({res.workloads[wid]['unit']})", ' fill="#555"')]
        for tick in range(int(round(axis_max / step)) + 1):
            tx = bar_x + tick * step * scale
            out += [line(tx, top, tx, bottom, "#e9ecef"),
                    text(f"{tx:.1f}", bottom + 14, f"{tick * step:g}", ' text-anchor="middle" fill="#555"')]
        for r, label in enumerate(res.by_median(wid)):
            y, c = top + r * row_h, res.cell(wid, label)
            weight = f' font-weight="{"bold" if label == TALLY else "normal"}"'
            out.append(text(bar_x - 6, y + 15, label, ' text-anchor="end"' + weight))
            if c is None or "na" in c:
                out.append(text(bar_x + 4, y + 15, "n/a", ' fill="#868e96"'))
                continue
            bw, ym, off_axis = max(1.0, c["median"] * scale), y + row_h / 2, c["max"] > axis_max
            x_lo, x_hi = (bar_x + min(v, axis_max) * scale for v in (c["min"], c["max"]))
            colour = KIND_COLOURS.get(res.kind(label), "#868e96")
            out += [f'<rect x="{bar_x}" y="{y + 4}" width="{bw:.1f}" height="{row_h - 8}" fill="{colour}"/>',
                    line(x_lo, ym, x_hi, ym), line(x_lo, ym - 4, x_lo, ym + 4),
                    # A whisker that runs off the axis ends in an arrow head.
                    f'<path d="M{x_hi - 5:.1f},{ym - 4} L{x_hi:.1f},{ym} L{x_hi - 5:.1f},{ym + 4}" fill="none" '
                    f'stroke="#212529"/>' if off_axis else line(x_hi, ym - 4, x_hi, ym + 4)]
            text_x = bar_x + bw + 6 if off_axis else max(bar_x + bw + 6, x_hi + 6)
            attrs = weight + ' paint-order="stroke" stroke="#ffffff" stroke-width="3"'
            out.append(text(f"{text_x:.1f}", y + 15, fmt_ns(c["median"]), attrs))
    lx = 20
    for kind, colour in KIND_COLOURS.items():
        out += [f'<rect x="{lx}" y="{bottom + 30}" width="12" height="12" fill="{colour}"/>',
                text(lx + 16, bottom + 40, kind)]
        lx += 40 + 7 * len(kind)
    out.append(text(lx + 10, bottom + 40, "whiskers past the axis end in an arrow", ' fill="#555"'))
    return "\n".join(out + ["</svg>"]) + "\n"


def workload_section(res, wid):
    w, rounds = res.workloads[wid], res.params.get("rounds", "?")
    quiet = w.get("selection") == "quiet"
    which = (f"the rounds whose sample ran while others used under {res.params.get('quiet_cpus'):g} CPU "
             f"(*quiet*; how many of the {rounds} in brackets)" if quiet else f"all {rounds} rounds")
    rows = []
    for label in res.by_median(wid):
        c, plain = res.cell(wid, label), res.cell(wid, label, res.plain)
        if c is None or "na" in c:
            rows.append([bold_tally(label), res.kind(label), "n/a", "", "", "", c["na"] if c else "not run", ""])
            continue
        rows.append([
            bold_tally(label), res.kind(label),
            f"**{fmt_ns(c['median'])}**" + (f" ({c['samples_used']})" if quiet else ""),
            f"{fmt_ns(c['min'])}–{fmt_ns(c['max'])}",
            fmt_ratio(c.get("vs_tally")) if label != TALLY else "1.00×",
            f"{fmt_ns(c.get('all_median'))} ({fmt_ns(c.get('all_min'))}–{fmt_ns(c.get('all_max'))})",
            fmt_ns(c.get("criterion_median")),
            f"{fmt_ns(plain.get('median'))} ({fmt_ratio(plain.get('vs_forced'))})" if plain else "–",
        ])
    header = ["peer", "kind", "median", "min–max", "÷ tally-pool", "all rounds: median (min–max)",
              "criterion median", "plain `#[inline]`: median (÷ forced)"]
    bits = [f"tally-pool ÷ best {what} ({w[key][0]}): **{fmt_ratio(w[key][1])}**"
            for key, what in (("best_pool", "thread-safe pool"), ("best_any", "of all")) if w.get(key)]
    return "\n".join([
        f"## {wid} {w['name']} — {w['unit']}", "",
        f"Median and min–max over {which}. *÷ tally-pool*: the paired ratio of this peer's time to "
        f"tally-pool's (above 1: tally-pool is faster).", "",
        md_table(header, rows, ["---"] * 2 + ["---:"] * 6), "",
    ] + (["; ".join(bits) + ". Below 1 means tally-pool is faster.", ""] if bits else []))


def plain_section(res):
    """The targets with plain `#[inline]` adapters (each peer's figures are in the W1–W4 tables)."""
    return "" if not res.plain else "\n".join([
        "## W1–W4 with plain `#[inline]` adapters", "",
        "The last column of the W1–W4 tables calls each peer through a plain `#[inline]` adapter, which "
        "the compiler inlines or not on its own, as it would a user's wrapper; *÷ forced* is its paired "
        "ratio to the forced adapter's time. The targets, with plain adapters:", "",
        verdict_table(res.verdicts("targets", "plain") + res.verdicts("design", "plain")), "",
    ])


def memory_section(res):
    mem = res.data.get("memory", [])
    if not mem:
        return ""
    n = next((r["objects"] for r in mem if "objects" in r), 0)
    ratios = {p: (res.memory(p) or {}).get("ratios") for p in res.order}
    rows = []
    for label in sorted(res.order, key=lambda p: (ratios[p] is None, (ratios[p] or (0, 0))[0])):
        r, ratio = res.memory(label), ratios[label]
        rows.append(na_row(label, r, 4) if r is None or not ratio else [
            bold_tally(label), r["setup"], f"{r['handle_bytes']}{'†' if r['handle_bytes'] >= 64 else ''}",
            f"{(r['resident_after'] - r['resident_before']) / 1e6:.1f} MB", f"{r['handle_array_bytes'] / 1e6:.1f} MB",
            f"**{ratio[0]:.3f}×**", f"{ratio[1]:.3f}×"])
    header = ["peer", "setup", "handle bytes", "growth", "handle array", "growth ÷ payload",
              "(growth − handle array) ÷ payload"]
    return "\n".join([
        f"## W5 memory — {n:,} live objects, resident bytes over payload bytes", "",
        "*Growth*: resident bytes from before the peer is built to after the last acquire, in a fresh "
        "process; the *handle array* is the `Vec` of what the user holds (†: guards that carry the `Order`).",
        "",
        md_table(header, rows, ["---", "---"] + ["---:"] * 5), "",
    ])


def latency_section(res):
    lat = [r for r in res.data.get("latency", []) if "n" in r]
    if not lat:
        return ""
    timer, runs = res.data.get("timer", {}), res.params.get("latency_runs", 1)
    runs_sentence = f"; figures are medians over {runs} processes, p99.9 with their range" if runs > 1 else ""
    lines = [
        f"## W6 tail latency — {lat[0]['n']:,} single acquires, ns", "",
        f"Each acquire-and-write timed alone with `{lat[0]['timer']}` (`lfence; rdtsc; lfence`, calibrated "
        f"against `Instant`), all objects kept live, a fresh process per peer and mode{runs_sentence}. "
        f"**The times include the timer**: two back-to-back readings take {fmt_ns(timer.get('overhead_p50'))} "
        f"ns (p50), in steps of about {fmt_ns(timer.get('resolution'))} ns.", "",
        "*With growth*: from the peer's smallest start; *pre-allocated*: after an untimed "
        "acquire-all/release-all pass.", "",
    ]
    for mode, title in (("growing", "With growth"), ("pre-allocated", "Pre-allocated")):
        entries = sorted(((label, res.latency(label, mode)) for label in res.order),
                         key=lambda e: (e[1] is None or "na" in e[1], (e[1] or {}).get("p999", 0)))
        rows = [na_row(label, r, 5) if r is None or "na" in r else [
            bold_tally(label), fmt_ns(r["p50"]), fmt_ns(r["p99"]),
            f"**{fmt_ns(r['p999'])}**" + (f" ({fmt_ns(r['p999_min'])}–{fmt_ns(r['p999_max'])})" if r["runs"] > 1 else ""),
            fmt_ns(r["p9999"]), fmt_ns(r["max"]), fmt_ns(r["mean"]), ""] for label, r in entries]
        header = ["peer", "p50", "p99", "p99.9", "p99.99", "max", "mean", "note"]
        lines += [f"### {title}", "", md_table(header, rows, ["---"] + ["---:"] * 6 + ["---"]), ""]
    return "\n".join(lines)


def suite_section(suite, title, command):
    """A ratio table of `benches/block.rs` or `benches/typed.rs`, from its JSON, if it ran."""
    if suite is None:
        return ""
    mode = "" if suite.get("mode") == "full" else f" **{suite.get('mode', '?').upper()} MODE**, indicative only."
    lines = [f"## {title}: `{command}`", "",
             f"Median ns per object of {suite['samples']} samples per contender, interleaved (W4: per pair of "
             f"operations), commit `{suite['machine'].get('git') or '?'}`, load average before and after "
             f"{' / '.join(str(x) for x in suite.get('load_average', []))}. Ratios are of medians.{mode}", ""]
    columns, subject = suite["columns"], suite["subject"]
    versus = [c for c in ("floor", "jemalloc") if c in columns]
    for table in suite["tables"]:
        rows = [[w["id"]] + [fmt_ns(w["medians"].get(c)) for c in columns]
                + [fmt_ratio(w["ratios"].get(c)) for c in versus] for w in table["workloads"]]
        lines += [f"### {table['inlining'].capitalize()} adapters: all targets "
                  f"{'met' if table['all_met'] else 'not met'}", "",
                  md_table(["workload"] + columns + [f"{subject} ÷ {c}" for c in versus], rows,
                           ["---"] + ["---:"] * (len(columns) + len(versus))), "",
                  verdict_table([v for w in table["workloads"] for v in w["verdicts"]]), ""]
    return "\n".join(lines)


def report(res, versions, shown, suites):
    d, m, p = res.data, res.data.get("machine", {}), res.params
    started = datetime.datetime.fromtimestamp(d["started_unix"], datetime.timezone.utc)
    minutes = (d["finished_unix"] - d["started_unix"]) / 60
    out = [
        "# Benchmarks: tally-pool against the pools and allocators users would pick instead", "",
        "<!-- Generated by benches/report.py from the results of benches/peers.rs (and typed.rs, block.rs); "
        "edit those, not this file. -->", "",
        "To regenerate every number, table and the chart on this page:", "",
        "```sh",
        "cargo bench --bench peers     # ~20 min; writes target/peers.json",
        "cargo bench --bench typed     # ~5 min; writes target/typed.json",
        "cargo bench --bench block     # ~5 min; writes target/block.json",
        "python3 benches/report.py     # writes BENCHMARKS.md and docs/peers.svg",
        "```", "",
        "`TALLY_BENCH_QUICK=1 cargo bench --bench peers` (or `-- --quick`) is the CI smoke run "
        "(a few minutes; its tables are marked as indicative).", "",
    ]
    if d.get("mode") != "full":
        out += [f"> **{d.get('mode', '?').upper()} MODE**: short samples; these numbers are indicative only. "
                "Run the full bench before quoting them.", ""]
    load = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in d.get("load_average", []) if v)
    out += ["## This run", "", md_table(["", ""], [
        ["date", f"{started:%Y-%m-%d %H:%M} UTC ({minutes:.0f} minutes, {d.get('mode')} mode)"],
        ["machine", f"{m.get('nproc', '?')} CPUs (nproc), {m.get('cpu') or '?'}, Linux "
                    f"{m.get('kernel') or '?'}, transparent huge pages `{m.get('transparent_hugepage') or '?'}`"],
        ["load average (1, 5, 15 min)", load or "?"],
        ["toolchain", m.get("rustc") or "?"],
        ["commit", f"`{m.get('git') or '?'}`"],
        ["results", f"`{shown}`; criterion's own report in `target/criterion/`"],
    ]), ""]
    out += [
        "The machine is shared: when another process holds one of the two CPUs, W3 slows down about "
        "tenfold for every peer and W4 measures no contention. Each sample records how much CPU other "
        "processes used while it ran, and the tables use the quiet samples where there are enough.", "",
        "## Targets", "",
        "A ratio is tally-pool's time over the other's, taken round by round and the median over the "
        "rounds (a paired ratio, which other load moves much less than either median). A target missed "
        "is reported as missed. The verdicts are the bench's own (`tally_bench::targets`).", "",
        verdict_table(res.verdicts("targets", "forced")), "",
        "DESIGN.md's ratio table, from the same run:", "",
        verdict_table(res.verdicts("design", "forced"), "ratio"), "",
        "The same targets with plain `#[inline]` adapters are [below](#w1w4-with-plain-inline-adapters).", "",
        "![W1 churn and W3 pipeline, median ns per object for each peer](docs/peers.svg)", "",
        "## How it is measured", "",
        f"{p.get('rounds')} rounds, each one sample of every workload for every peer (about "
        f"{p.get('sample_ms', 0):g} ms of work after {p.get('warm_up_ms', 0):g} ms of warm-up), in an order "
        f"rotated each round; W2 holds {p.get('burst', 0):,} live, W3's queue {p.get('queue_capacity', 0):,}; "
        f"{p.get('workload_capacity', 0):,} values pre-allocated where a peer can. The method, the "
        "workloads and what each peer's figures mean: [docs/performance.md](docs/performance.md#how-the-"
        "peers-are-measured).", "",
        "## Peers", "",
    ]
    rows = []
    for label, peer in res.peers.items():
        krate, hb = peer.get("crate") or "", peer.get("handle_bytes")
        version = f"{krate} {', '.join(versions.get(krate, []))}".strip() if krate else "std"
        rows.append([bold_tally(label), peer["kind"], version, peer["api"], "" if hb is None else hb])
    out += [md_table(["peer", "kind", "crate", "called as", "handle bytes"], rows), ""]
    out += [workload_section(res, wid) for wid in ("W1", "W2", "W3", "W4") if wid in res.workloads]
    out += [plain_section(res), memory_section(res), latency_section(res),
            suite_section(suites["typed"], "The typed layer alone", "cargo bench --bench typed"),
            suite_section(suites["block"], "The untyped block pool alone", "cargo bench --bench block"),
            "## Versions", ""]
    rows = [[name, ", ".join(versions.get(name, ["?"]))] for name in VERSIONED] + [["rustc", m.get("rustc") or "?"]]
    out += [md_table(["crate", "version (Cargo.lock)"], rows), ""]
    if d.get("seconds_after"):
        out += ["Run time: " + ", ".join(f"{k} done after {v / 60:.1f} min" for k, v in d["seconds_after"]) + ".", ""]
    return "\n".join(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    target = Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target")
    parser.add_argument("--input", type=Path, default=os.environ.get("TALLY_PEERS_JSON") or target / "peers.json")
    parser.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md")
    parser.add_argument("--svg", type=Path, default=ROOT / "docs" / "peers.svg")
    parser.add_argument("--lock", type=Path, default=ROOT / "Cargo.lock")
    args = parser.parse_args()
    try:
        data = json.loads(Path(args.input).read_text())
    except (OSError, ValueError) as err:
        sys.exit(f"report.py: cannot read {args.input}: {err}; run `cargo bench --bench peers` first")
    if data.get("schema") != 2:
        sys.exit(f"report.py: {args.input} is from an older benches/peers.rs; run it again")
    suites = {}
    for name in ("typed", "block"):
        path = Path(args.input).parent / f"{name}.json"
        suites[name] = json.loads(path.read_text()) if path.is_file() else None
    versions = {}
    lock = args.lock.read_text() if args.lock.is_file() else ""
    for name, version in re.findall(r'name = "([^"]+)"\nversion = "([^"]+)"', lock):
        versions.setdefault(name, set()).add(version)
    versions = {k: sorted(v) for k, v in versions.items()}
    try:
        shown = Path(args.input).resolve().relative_to(ROOT)
    except ValueError:
        shown = args.input
    res = Results(data)
    args.output.write_text(report(res, versions, shown, suites))
    args.svg.parent.mkdir(parents=True, exist_ok=True)
    args.svg.write_text(svg_chart(res))
    print(f"wrote {args.output} and {args.svg}")


if __name__ == "__main__":
    main()
