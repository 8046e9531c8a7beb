//! `TallyAlloc` against mimalloc, jemalloc and the system allocator as global allocator, on
//! mimalloc-bench's workloads and two real programs: `cargo bench --bench alloc`.
//!
//! - **glibc-simple**: one thread allocates 1,000 blocks of 8 to 512 bytes and frees them in
//!   random order, 10,000 rounds (ns an allocation+free).
//! - **xmalloc-test**: a producer allocates 1,003,520 blocks of xmalloc-test's 17 sizes
//!   (8 to 2,048 bytes) in batches of 4,096, each batch a vector from the same allocator,
//!   and hands them, at most 100 at a time, to a consumer that frees them (ns a block).
//! - **cache-scratch**: passive false sharing. The main thread allocates an 8-byte block for
//!   each of two threads; each frees it, then 1,000 times allocates an 8-byte block, writes it
//!   20,000 times over and frees it; handed back the freed blocks, they share a line (ms).
//! - **larson**: a server. Two threads each own 5,000 slots of 16 to 1,000-byte blocks and
//!   10,000 times free a random slot and fill it again; then the slots go to a fresh thread,
//!   which frees blocks it did not allocate; 500 rounds (ns an operation, over both threads).
//! - **json**: serde_json parses a generated 10 MB document of orders into a `Value` and
//!   writes it out again (ms). **btreemap**: 1,000,000 inserts into a `BTreeMap<u64, String>`,
//!   then its drop (ms).
//!
//! The workloads are `tally_bench::alloc_workloads`. Allocators keep memory, so each
//! (workload, contender) cell runs in a process of its own: the bench starts itself with
//! `TALLY_ALLOC_BENCH_CELL=<workload>/<contender>`, whose global allocator is that contender
//! from the first block on (the parent's: the system allocator), runs the workload once and
//! prints its time and peak RSS (`VmHWM`). The 7 runs are the outer loop, each starting every
//! cell once, in reverse order every other run. The table gives the medians: time and its
//! ratio to TallyAlloc's (above 1: TallyAlloc is faster), peak RSS and its ratio to
//! jemalloc's; then the targets, met or missed. `TALLY_BENCH_QUICK=1` or `--test`
//! (`cargo test --benches`): tiny sizes, one run. `TALLY_BENCH_ONLY=tally,jemalloc` and
//! `TALLY_BENCH_WORKLOADS=larson,json` choose cells; `TALLY_ALLOC_BENCH_CELL=larson/tally
//! <bench binary> --bench` runs one alone (for a profiler).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::env;
use std::ffi::CStr;
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};

use mimalloc::MiMalloc;
use tally_bench::alloc_workloads::{btreemap, cache_scratch, glibc_simple, json, larson, xmalloc};
use tally_bench::process::{proc_field, rerun};
use tally_bench::{fatal, stats::median, Mode};
use tally_pool::alloc::TallyAlloc;
use tikv_jemallocator::Jemalloc;

const CELL: &str = "TALLY_ALLOC_BENCH_CELL";
const CONTENDERS: [&str; 4] = ["tally", "mimalloc", "jemalloc", "system"];
const TALLY: usize = 0;
const JEMALLOC: usize = 2;

static TALLY_ALLOC: TallyAlloc = TallyAlloc::new();
/// The index in `CONTENDERS` of the process's allocator; `u8::MAX` before its first block.
static SELECTED: AtomicU8 = AtomicU8::new(u8::MAX);

/// The contender named after the `/` of `CELL`, else the system allocator; read once, before
/// the first block, so that every block goes back to the allocator that made it.
fn selected() -> u8 {
    let s = SELECTED.load(Relaxed);
    if s != u8::MAX {
        return s;
    }
    // SAFETY: a NUL-terminated name; `getenv` neither allocates nor keeps the pointer.
    let value = unsafe { libc::getenv(c"TALLY_ALLOC_BENCH_CELL".as_ptr()) };
    // SAFETY: a non-null `getenv` result is a NUL-terminated string.
    let cell = (!value.is_null()).then(|| unsafe { CStr::from_ptr(value) }.to_bytes());
    let name = cell.and_then(|c| c.rsplit(|&b| b == b'/').next());
    let s = CONTENDERS.iter().position(|c| Some(c.as_bytes()) == name);
    SELECTED.store(s.unwrap_or(3) as u8, Relaxed);
    s.unwrap_or(3) as u8
}

/// Calls `$method` on the selected allocator with the caller's arguments.
macro_rules! dispatch {
    ($method:ident($($arg:expr),*)) => {
        match selected() {
            // SAFETY: the caller's contract, passed on; a pointer came from this allocator.
            0 => unsafe { TALLY_ALLOC.$method($($arg),*) },
            // SAFETY: as above.
            1 => unsafe { MiMalloc.$method($($arg),*) },
            // SAFETY: as above.
            2 => unsafe { Jemalloc.$method($($arg),*) },
            // SAFETY: as above.
            _ => unsafe { System.$method($($arg),*) },
        }
    };
}

#[global_allocator]
static GLOBAL: Selected = Selected;
struct Selected;

// SAFETY: each call goes to the one allocator selected for the whole process, with the
// caller's arguments: that allocator's guarantees are this one's.
unsafe impl GlobalAlloc for Selected {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        dispatch!(alloc(layout))
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        dispatch!(alloc_zeroed(layout))
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        dispatch!(dealloc(ptr, layout))
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, size: usize) -> *mut u8 {
        dispatch!(realloc(ptr, layout, size))
    }
}

/// Name, workload (blocks straight from `GLOBAL`), the unit of its result, and its size in
/// the full and the quick mode.
type Workload = (&'static str, fn(usize) -> f64, &'static str, [usize; 2]);
const WORKLOADS: [Workload; 6] = [
    (
        "glibc-simple",
        |n| glibc_simple(&GLOBAL, n),
        "ns",
        [10_000, 10],
    ),
    (
        "xmalloc-test",
        |n| xmalloc(&GLOBAL, n),
        "ns",
        [1_000_000, 20_000],
    ),
    (
        "cache-scratch",
        |n| cache_scratch(&GLOBAL, n),
        "ms",
        [20_000, 20],
    ),
    ("larson", |n| larson(&GLOBAL, n), "ns", [500, 2]),
    ("json", json, "ms", [10 << 20, 200 << 10]),
    ("btreemap", btreemap, "ms", [1_000_000, 20_000]),
];

/// The child: one run of the cell's workload; prints `cell <time> <VmHWM in KiB>`.
fn child(cell: &str, quick: bool) {
    let name = cell.split('/').next();
    let (_, run, _, sizes) = WORKLOADS.iter().find(|w| Some(w.0) == name).unwrap();
    let time = run(sizes[usize::from(quick)]);
    let hwm = proc_field("/proc/self/status", "VmHWM:").unwrap();
    println!("cell {time} {hwm}");
}

/// Runs the cell's child: its time and its peak RSS in MiB.
fn measure(workload: &str, contender: &str) -> (f64, f64) {
    let out = rerun(CELL, &format!("{workload}/{contender}"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(line) = text.lines().find_map(|l| l.strip_prefix("cell ")) else {
        let err = String::from_utf8_lossy(&out.stderr);
        fatal!("{workload}/{contender}: {}: {err}", out.status)
    };
    let f: Vec<f64> = line.split(' ').map(|v| v.parse().unwrap()).collect();
    (f[0], f[1] / 1024.0)
}

/// The indices of the `names` the comma-separated list in `var` names; all if it is not set.
fn listed(var: &str, names: &[&str]) -> Vec<usize> {
    let list = env::var(var);
    let named = |n: &str| list.as_ref().map_or(true, |l| l.split(',').any(|x| x == n));
    (0..names.len()).filter(|&i| named(names[i])).collect()
}

/// The medians of a workload's (time, MiB) by contender, NaN where a cell did not run.
fn medians(cells: &[Vec<(f64, f64)>; 4]) -> [(f64, f64); 4] {
    let of =
        |s: &[(f64, f64)], f: fn(&(f64, f64)) -> f64| median(&s.iter().map(f).collect::<Vec<_>>());
    cells.each_ref().map(|s| (of(s, |s| s.0), of(s, |s| s.1)))
}

fn main() {
    let Some(mode) = Mode::start() else { return };
    if let Ok(cell) = env::var(CELL) {
        return child(&cell, mode != Mode::Full);
    }
    let runs = mode.pick([7, 1, 1]);
    let shown = listed("TALLY_BENCH_WORKLOADS", &WORKLOADS.map(|w| w.0));
    let ran = listed("TALLY_BENCH_ONLY", &CONTENDERS);
    let cells = shown.iter().flat_map(|&w| ran.iter().map(move |&c| (w, c)));
    let mut cells: Vec<(usize, usize)> = cells.collect();
    let mut samples = vec![[(); 4].map(|()| Vec::new()); WORKLOADS.len()];
    for run in 0..runs {
        for &(w, c) in &cells {
            samples[w][c].push(measure(WORKLOADS[w].0, CONTENDERS[c]));
        }
        cells.reverse();
        eprintln!("alloc: run {} of {runs} done", run + 1);
    }
    let med: Vec<[(f64, f64); 4]> = samples.iter().map(medians).collect();
    let head = format!("alloc: medians of {runs} runs: time (x tally's), peak RSS (x jemalloc's)");
    let columns: String = CONTENDERS.iter().map(|c| format!(" | {c:<36}")).collect();
    println!("{head}{}\n{:<13}{columns}", mode.caveat(), "");
    for &w in &shown {
        let (row, unit) = (&med[w], WORKLOADS[w].2);
        print!("{:<13}", WORKLOADS[w].0);
        for &(t, m) in row {
            let (tr, mr) = (t / row[TALLY].0, m / row[JEMALLOC].1);
            let cell = format!("{t:>8.1} {unit} {tr:>5.2}x {m:>6.1} MiB {mr:>5.2}x");
            print!(" | {:<36}", if t.is_nan() { "-" } else { &cell });
        }
        println!();
    }
    println!("targets (tally; ahead: their time over tally's):");
    let met = |ok: bool| if ok { "met" } else { "missed" };
    for &w in &shown {
        let (row, name) = (&med[w], WORKLOADS[w].0);
        let [t, mi, je, _] = row.map(|r| r.0);
        if w < 2 && !(t + mi + je).is_nan() {
            let (ok, mi, je) = (met(t < mi && t < je), mi / t, je / t);
            println!("  {name}: ahead of mimalloc ({mi:.2}x), jemalloc ({je:.2}x): {ok}");
        }
        // The fastest other contender that ran (NaN sorts last).
        let fastest = |&a: &usize, &b: &usize| row[a].0.total_cmp(&row[b].0);
        let best = (1..4).min_by(fastest).unwrap_or(1);
        let (r, rival) = (t / row[best].0, CONTENDERS[best]);
        if w >= 2 && !r.is_nan() {
            let ok = met(r <= 1.1);
            println!("  {name}: within 1.1x of the best ({rival}): {r:.2}x: {ok}");
        }
        let rss = row[TALLY].1 / row[JEMALLOC].1;
        if name == "larson" && !rss.is_nan() {
            let ok = met(rss <= 1.2);
            println!("  larson: peak RSS at most 1.2x jemalloc's: {rss:.2}x: {ok}");
        }
    }
}
