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
//! Allocators keep memory, so each (workload, contender) cell runs in a process of its own:
//! the bench starts itself with `TALLY_ALLOC_BENCH_CELL=<workload>/<contender>`, whose global
//! allocator is that contender from the first block on (the parent's: the system allocator),
//! runs the workload once and prints its time and peak RSS (`VmHWM`). The 7 runs are the outer
//! loop, each starting every cell once, in reverse order every other run. The table gives the
//! medians: time and its ratio to TallyAlloc's (above 1: TallyAlloc is faster), peak RSS and
//! its ratio to jemalloc's; then the issue's targets, met or missed. `TALLY_BENCH_QUICK=1` or
//! `--test` (`cargo test --benches`): tiny sizes, one run. `TALLY_BENCH_ONLY=tally,jemalloc`
//! and `TALLY_BENCH_WORKLOADS=larson,json` choose cells; `TALLY_ALLOC_BENCH_CELL=larson/tally
//! <bench binary> --bench` runs one alone (for a profiler).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::env;
use std::ffi::CStr;
use std::hint::black_box;
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
use std::thread::scope;
use std::time::Instant;

use mimalloc::MiMalloc;
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

/// xorshift64*: the same sizes and orders for every contender.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn size(&mut self, min: u64, max: u64) -> usize {
        (min + self.next() % (max - min + 1)) as usize
    }
}

/// A block of `size` bytes from the global allocator, its first byte written; an address,
/// so that it can go to another thread.
fn block(size: usize) -> usize {
    // SAFETY: `size` is not zero (every caller's minimum is 8).
    let p = unsafe { GLOBAL.alloc(Layout::from_size_align(size, 8).unwrap()) };
    assert!(!p.is_null(), "out of memory");
    // SAFETY: the first byte of the block, ours.
    unsafe { p.write(1) };
    p as usize
}

/// Frees a block of [`block`]`(size)`.
fn free(p: usize, size: usize) {
    // SAFETY: every caller passes a live block of `block(size)` and forgets it.
    unsafe { GLOBAL.dealloc(p as *mut u8, Layout::from_size_align(size, 8).unwrap()) }
}

/// ns since `start` over `per`: the operations, or `MS` for the time in ms.
fn since(start: Instant, per: usize) -> f64 {
    start.elapsed().as_nanos() as f64 / per as f64
}
const MS: usize = 1_000_000;

fn glibc_simple(rounds: usize) -> f64 {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut live = Vec::with_capacity(1000);
    let start = Instant::now();
    for _ in 0..rounds {
        for _ in 0..1000 {
            let size = rng.size(8, 512);
            live.push((block(size), size));
        }
        while !live.is_empty() {
            let (p, size) = live.swap_remove((rng.next() % live.len() as u64) as usize);
            free(p, size);
        }
    }
    since(start, rounds * 1000)
}

/// xmalloc-test's sizes.
const XMALLOC_SIZES: [usize; 17] = [
    8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048,
];
/// Blocks in one of xmalloc-test's batches.
const BATCH: usize = 4096;

fn xmalloc(blocks: usize) -> f64 {
    // At most 100 batches in flight, as in xmalloc-test.
    let (batches, freed) = std::sync::mpsc::sync_channel::<Vec<(usize, usize)>>(100);
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    let start = Instant::now();
    scope(|s| {
        s.spawn(move || {
            for batch in freed {
                for (p, size) in batch {
                    free(p, size);
                }
            }
        });
        for _ in 0..blocks.div_ceil(BATCH) {
            let mut batch = Vec::with_capacity(BATCH);
            for _ in 0..BATCH {
                let size = XMALLOC_SIZES[rng.next() as usize % XMALLOC_SIZES.len()];
                batch.push((block(size), size));
            }
            batches.send(batch).unwrap();
        }
        drop(batches);
    });
    since(start, blocks.div_ceil(BATCH) * BATCH)
}

fn cache_scratch(writes: usize) -> f64 {
    const SIZE: usize = 8;
    let given: Vec<usize> = (0..2).map(|_| block(SIZE)).collect();
    let start = Instant::now();
    scope(|s| {
        for p in given {
            s.spawn(move || {
                free(p, SIZE);
                for _ in 0..1000 {
                    let a = block(SIZE) as *mut u8;
                    for (j, k) in (0..writes).flat_map(|j| (0..SIZE).map(move |k| (j, k))) {
                        // SAFETY: byte `k` of the `SIZE`-byte block, ours.
                        unsafe { a.wrapping_add(k).write_volatile((j + k) as u8) };
                    }
                    free(a as usize, SIZE);
                }
            });
        }
    });
    since(start, MS)
}

/// A larson thread's state: its slots (block, size) and its random numbers.
struct Slots(Vec<(usize, usize)>, Rng);

impl Slots {
    const OPS: usize = 10_000;

    fn churn(&mut self) {
        for _ in 0..Self::OPS {
            let i = (self.1.next() % self.0.len() as u64) as usize;
            free(self.0[i].0, self.0[i].1);
            let size = self.1.size(16, 1000);
            self.0[i] = (block(size), size);
        }
    }
}

fn larson(rounds: usize) -> f64 {
    let heaps = (0..2).map(|t| {
        let mut rng = Rng(0x4141 + t);
        let sizes: Vec<usize> = (0..5000).map(|_| rng.size(16, 1000)).collect();
        Slots(sizes.into_iter().map(|s| (block(s), s)).collect(), rng)
    });
    let mut heaps: Vec<Slots> = heaps.collect();
    let start = Instant::now();
    // Each of two chains hands its slots to a fresh thread a round.
    scope(|s| {
        for heap in &mut heaps {
            s.spawn(move || {
                for _ in 0..rounds {
                    scope(|fresh| fresh.spawn(|| heap.churn()).join().unwrap());
                }
            });
        }
    });
    let time = since(start, 2 * rounds * Slots::OPS);
    for (p, size) in heaps.into_iter().flat_map(|h| h.0) {
        free(p, size);
    }
    time
}

/// A JSON array of about `bytes` bytes of orders, the same for every contender.
fn document(bytes: usize) -> String {
    let (mut rng, mut doc) = (Rng(0x5EED), String::from("["));
    while doc.len() < bytes {
        let [id, who, cents, zip] = [(); 4].map(|()| rng.next() % 100_000);
        let status = ["new", "paid", "shipped"][(id % 3) as usize];
        doc += &format!(r#"{{"id":{id},"customer":"c-{who:05}","status":"{status}","#);
        doc += &format!(r#""total":{cents}.25,"zip":"{zip:05}","items":["#);
        for i in 0..1 + zip % 6 {
            let (sku, n) = (rng.next() as u32, rng.next() % 7);
            doc += &format!(r#"{{"sku":"S{sku:08X}","qty":{i},"tags":["t{n}",{n}.5]}},"#);
        }
        doc.pop();
        doc.push_str("]},");
    }
    doc.pop();
    doc + "]"
}

fn json(bytes: usize) -> f64 {
    let doc = document(bytes);
    let start = Instant::now();
    let value: serde_json::Value = serde_json::from_str(&doc).unwrap();
    let out = serde_json::to_string(&value).unwrap();
    drop(black_box((value, out)));
    since(start, MS)
}

fn btreemap(entries: usize) -> f64 {
    let mut rng = Rng(0xB7EE);
    let start = Instant::now();
    let mut map = BTreeMap::new();
    for _ in 0..entries {
        let key = rng.next();
        map.insert(key, format!("order-{key:016x}"));
    }
    drop(black_box(map));
    since(start, MS)
}

/// Name, workload, the unit of its result, and its size in the full and the quick mode.
type Workload = (&'static str, fn(usize) -> f64, &'static str, [usize; 2]);
const WORKLOADS: [Workload; 6] = [
    ("glibc-simple", glibc_simple, "ns", [10_000, 10]),
    ("xmalloc-test", xmalloc, "ns", [1_000_000, 20_000]),
    ("cache-scratch", cache_scratch, "ms", [20_000, 20]),
    ("larson", larson, "ns", [500, 2]),
    ("json", json, "ms", [10 << 20, 200 << 10]),
    ("btreemap", btreemap, "ms", [1_000_000, 20_000]),
];

/// The child: one run of the cell's workload; prints `cell <time> <VmHWM in KiB>`.
fn child(cell: &str, quick: bool) {
    let name = cell.split('/').next();
    let (_, run, _, sizes) = WORKLOADS.iter().find(|w| Some(w.0) == name).unwrap();
    let time = run(sizes[usize::from(quick)]);
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let hwm = status.lines().find_map(|l| l.strip_prefix("VmHWM:"));
    let hwm = hwm.unwrap();
    println!("cell {time} {}", hwm.trim().trim_end_matches(" kB"));
}

/// Runs the cell's child: its time and its peak RSS in MiB.
fn measure(workload: &str, contender: &str) -> (f64, f64) {
    let mut child = std::process::Command::new(env::current_exe().unwrap());
    let cell = format!("{workload}/{contender}");
    child.args(env::args().skip(1)).env(CELL, cell);
    let out = child.output().unwrap();
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
