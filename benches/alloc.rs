//! `TallyAlloc` against mimalloc, jemalloc and the system allocator on mimalloc-bench's
//! workloads and two real programs, each as the process's global allocator:
//!
//! - **glibc-simple**: one thread allocates 1,000 blocks of random sizes (8 to 512 bytes),
//!   frees them in random order, 2,000 rounds (ns per allocation+free).
//! - **xmalloc-test**: a producer thread allocates 2,000,000 blocks of random sizes (8 to 256
//!   bytes) and hands them through a queue to a consumer thread that frees them (ns a block).
//! - **cache-scratch**: passive false sharing. The main thread allocates one 8-byte block for
//!   each of two threads; each frees its block, then 1,000 times allocates an 8-byte block,
//!   writes its bytes 2,000 times over and frees it. An allocator that hands a thread the
//!   block the other thread's neighbour came from makes the two share a cache line (ms).
//! - **larson**: a server. Two threads each own 5,000 slots of blocks of 16 to 1,000 bytes
//!   and 10,000 times free a random slot and allocate a new block into it; then each slot
//!   array goes to a fresh thread, which frees blocks it did not allocate, 200 rounds (ns an
//!   operation, wall time over both threads' operations).
//! - **json**: serde_json parses a generated 10 MB document of orders (strings, numbers,
//!   nested arrays and objects) into a `Value` and writes it out again (ms).
//! - **btreemap**: builds a 1,000,000-entry `BTreeMap<u64, String>` and drops it (ms).
//!
//! Every (workload, contender) cell runs in a process of its own, because allocators keep
//! memory: the bench starts itself again with `TALLY_ALLOC_BENCH_CELL=<workload>/<contender>`,
//! and that process's global allocator sends every call to the contender, chosen at its first
//! allocation (the parent, without the variable, uses the system allocator). The child runs
//! the workload once and prints its time and its peak RSS (`VmHWM`). The runs (5) are the
//! outer loop: each run starts every cell once, in reverse order on odd runs; the table gives
//! the medians over the runs, time with its ratio to TallyAlloc's (above 1: TallyAlloc is
//! faster) and peak RSS with its ratio to jemalloc's, then the issue's targets, met or missed.
//!
//! `TALLY_BENCH_QUICK=1` or `--test` (`cargo test --benches`): tiny sizes (a 200 KB document,
//! 20,000 entries), one run. `TALLY_BENCH_ONLY=tally` runs one contender and
//! `TALLY_BENCH_WORKLOADS=larson,json` the named workloads; for a profiler, run one cell
//! directly: `TALLY_ALLOC_BENCH_CELL=larson/tally <bench binary> --bench`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::ffi::CStr;
use std::fmt::Write as _;
use std::hint::black_box;
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_queue::ArrayQueue;
use mimalloc::MiMalloc;
use tally_bench::stats::median;
use tally_bench::Mode;
use tally_pool::alloc::TallyAlloc;
use tikv_jemallocator::Jemalloc;

const CELL: &str = "TALLY_ALLOC_BENCH_CELL";
const CONTENDERS: [&str; 4] = ["tally", "mimalloc", "jemalloc", "system"];
const TALLY_I: usize = 0;
const JEMALLOC_I: usize = 2;
const SYSTEM_I: usize = 3;

static TALLY: TallyAlloc = TallyAlloc::new();
/// The index in `CONTENDERS` of the process's allocator, `UNREAD` before its first allocation.
static SELECTED: AtomicU8 = AtomicU8::new(UNREAD);
const UNREAD: u8 = u8::MAX;

/// The contender named after the `/` of `CELL`, or the system allocator; read once, before
/// the first block, so every block goes back to the allocator that made it.
fn selected() -> u8 {
    let s = SELECTED.load(Relaxed);
    if s != UNREAD {
        return s;
    }
    // SAFETY: a NUL-terminated name; `getenv` neither allocates nor keeps the pointer.
    let value = unsafe { libc::getenv(c"TALLY_ALLOC_BENCH_CELL".as_ptr()) };
    let s = if value.is_null() {
        SYSTEM_I as u8
    } else {
        // SAFETY: a non-null `getenv` result is a NUL-terminated string.
        let cell = unsafe { CStr::from_ptr(value) }.to_bytes();
        let name = cell.rsplit(|&b| b == b'/').next().unwrap_or_default();
        let found = CONTENDERS.iter().position(|c| c.as_bytes() == name);
        found.unwrap_or(SYSTEM_I) as u8
    };
    SELECTED.store(s, Relaxed);
    s
}

/// Calls `$method` on the selected allocator with the caller's arguments.
macro_rules! dispatch {
    ($method:ident($($arg:expr),*)) => {
        match selected() {
            // SAFETY: the caller's contract, passed on; a pointer came from this allocator.
            0 => unsafe { TALLY.$method($($arg),*) },
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

    /// Uniform in `min..=max`.
    fn size(&mut self, min: u64, max: u64) -> usize {
        (min + self.next() % (max - min + 1)) as usize
    }
}

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 8).unwrap()
}

/// A block of `size` bytes from the global allocator, its first byte written.
fn block(size: usize) -> *mut u8 {
    // SAFETY: `size` is not zero (every caller's minimum is 8).
    let p = unsafe { GLOBAL.alloc(layout(size)) };
    assert!(!p.is_null(), "out of memory");
    // SAFETY: the first byte of the block, ours.
    unsafe { p.write(1) };
    p
}

/// Frees a block of [`block`]`(size)`.
fn free(p: *mut u8, size: usize) {
    // SAFETY: every caller passes a live block of `block(size)` and forgets it.
    unsafe { GLOBAL.dealloc(p, layout(size)) }
}

/// What a workload returns: wall time in ns and operations (1: time the whole run, in ms).
type Timed = (f64, u64);

fn since(start: Instant, ops: usize) -> Timed {
    (start.elapsed().as_nanos() as f64, ops as u64)
}

fn glibc_simple(rounds: usize) -> Timed {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut live: Vec<(*mut u8, usize)> = Vec::with_capacity(1000);
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

fn xmalloc(blocks: usize) -> Timed {
    let queue = Arc::new(ArrayQueue::<(usize, usize)>::new(4096));
    let start = Instant::now();
    let consumer = {
        let queue = Arc::clone(&queue);
        std::thread::spawn(move || {
            let mut freed = 0;
            while freed < blocks {
                match queue.pop() {
                    Some((p, size)) => {
                        free(p as *mut u8, size);
                        freed += 1;
                    }
                    None => std::hint::spin_loop(),
                }
            }
        })
    };
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    for _ in 0..blocks {
        let size = rng.size(8, 256);
        let mut item = (block(size) as usize, size);
        while let Err(back) = queue.push(item) {
            item = back;
            std::hint::spin_loop();
        }
    }
    consumer.join().unwrap();
    since(start, blocks)
}

fn cache_scratch(writes: usize) -> Timed {
    const SIZE: usize = 8;
    let given: Vec<usize> = (0..2).map(|_| block(SIZE) as usize).collect();
    let start = Instant::now();
    let threads: Vec<_> = (given.into_iter())
        .map(|p| {
            std::thread::spawn(move || {
                free(p as *mut u8, SIZE);
                for _ in 0..1000 {
                    let a = block(SIZE);
                    for j in 0..writes {
                        for k in 0..SIZE {
                            // SAFETY: byte `k` of the `SIZE`-byte block, ours.
                            unsafe { a.wrapping_add(k).write_volatile((j + k) as u8) };
                        }
                    }
                    free(a, SIZE);
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    since(start, 1)
}

/// A larson thread's state: its slots (block address, size) and its random numbers.
struct Slots(Vec<(usize, usize)>, Rng);

impl Slots {
    const OPS: usize = 10_000;

    fn churn(mut self) -> Self {
        for _ in 0..Self::OPS {
            let i = (self.1.next() % self.0.len() as u64) as usize;
            let (p, size) = self.0[i];
            free(p as *mut u8, size);
            let size = self.1.size(16, 1000);
            self.0[i] = (block(size) as usize, size);
        }
        self
    }
}

fn larson(rounds: usize) -> Timed {
    let heaps: Vec<Slots> = (0..2u64)
        .map(|t| {
            let mut rng = Rng(0x4141 + t);
            let slots = (0..5000).map(|_| rng.size(16, 1000));
            Slots(slots.map(|s| (block(s) as usize, s)).collect(), rng)
        })
        .collect();
    let start = Instant::now();
    let chains: Vec<_> = (heaps.into_iter())
        .map(|mut heap| {
            std::thread::spawn(move || {
                for _ in 0..rounds {
                    heap = std::thread::spawn(move || heap.churn()).join().unwrap();
                }
                heap
            })
        })
        .collect();
    let heaps: Vec<Slots> = chains.into_iter().map(|c| c.join().unwrap()).collect();
    let timed = since(start, 2 * rounds * Slots::OPS);
    for (p, size) in heaps.into_iter().flat_map(|h| h.0) {
        free(p as *mut u8, size);
    }
    timed
}

/// A JSON document of orders of about `bytes` bytes, the same for every contender.
fn document(bytes: usize) -> String {
    let mut rng = Rng(0x5EED);
    let mut doc = String::with_capacity(bytes + 1024);
    doc.push_str(r#"{"orders":["#);
    for id in 0.. {
        if doc.len() >= bytes {
            break;
        }
        let status = ["new", "paid", "shipped", "cancelled"][(rng.next() % 4) as usize];
        let (customer, cents) = (rng.next() % 1_000_000, rng.next() % 1_000_000);
        if id > 0 {
            doc.push(',');
        }
        write!(
            doc,
            r#"{{"id":{id},"customer":"customer-{customer:06}","status":"{status}","#
        )
        .unwrap();
        write!(
            doc,
            r#""total":{}.{:02},"items":["#,
            cents / 100,
            cents % 100
        )
        .unwrap();
        for i in 0..1 + rng.next() % 6 {
            let (sku, qty, price) = (rng.next() as u32, 1 + rng.next() % 20, rng.next() % 10_000);
            let sep = if i > 0 { "," } else { "" };
            write!(
                doc,
                r#"{sep}{{"sku":"SKU-{sku:08X}","qty":{qty},"price":{price}.5,"#
            )
            .unwrap();
            write!(
                doc,
                r#""tags":["t{}","t{}"],"dims":[{qty},{i},{}]}}"#,
                sku % 50,
                qty,
                sku % 7
            )
            .unwrap();
        }
        let zip = rng.next() % 100_000;
        write!(
            doc,
            r#"],"address":{{"city":"City {}","zip":"{zip:05}"}}}}"#,
            zip % 300
        )
        .unwrap();
    }
    doc.push_str("]}");
    doc
}

fn json(bytes: usize) -> Timed {
    let doc = document(bytes);
    let start = Instant::now();
    let value: serde_json::Value = serde_json::from_str(&doc).unwrap();
    let out = serde_json::to_string(&value).unwrap();
    drop(value);
    black_box(out.len());
    drop(out);
    since(start, 1)
}

fn btreemap(entries: usize) -> Timed {
    let mut rng = Rng(0xB7EE);
    let start = Instant::now();
    let mut map = BTreeMap::new();
    for _ in 0..entries {
        let key = rng.next();
        map.insert(key, format!("order-{key:016x}"));
    }
    black_box(map.len());
    drop(map);
    since(start, 1)
}

type Workload = (&'static str, fn(usize) -> Timed, [usize; 2]);

/// Name, workload and its size in the full and the quick mode.
const WORKLOADS: [Workload; 6] = [
    ("glibc-simple", glibc_simple, [2000, 10]),
    ("xmalloc-test", xmalloc, [2_000_000, 20_000]),
    ("cache-scratch", cache_scratch, [2000, 20]),
    ("larson", larson, [200, 2]),
    ("json", json, [10 << 20, 200 << 10]),
    ("btreemap", btreemap, [1_000_000, 20_000]),
];

/// The child: one run of the cell's workload; prints `cell <time> <ns|ms> <VmHWM KiB>`.
fn child(cell: &str, quick: bool) {
    let name = cell.split('/').next().unwrap_or_default();
    let (_, run, sizes) = WORKLOADS
        .iter()
        .find(|w| w.0 == name)
        .expect("a workload's name");
    let (ns, ops) = run(sizes[usize::from(quick)]);
    let (time, unit) = if ops == 1 {
        (ns / 1e6, "ms")
    } else {
        (ns / ops as f64, "ns")
    };
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .expect("VmHWM");
    let kib: u64 = hwm.trim().trim_end_matches("kB").trim().parse().unwrap();
    println!("cell {time} {unit} {kib}");
}

/// Starts the cell's child: its time, the time's unit and its peak RSS in MiB.
fn measure(workload: &str, contender: &str) -> (f64, &'static str, f64) {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(std::env::args().skip(1))
        .env(CELL, format!("{workload}/{contender}"))
        .stderr(std::process::Stdio::inherit())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{workload}/{contender}: {}",
        out.status
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("cell "))
        .expect("a result");
    let f: Vec<&str> = line.split(' ').collect();
    let unit = if f[1] == "ms" { "ms" } else { "ns" };
    (
        f[0].parse().unwrap(),
        unit,
        f[2].parse::<f64>().unwrap() / 1024.0,
    )
}

fn main() {
    let Some(mode) = Mode::start() else { return };
    if let Ok(cell) = std::env::var(CELL) {
        return child(&cell, mode != Mode::Full);
    }
    let runs = mode.pick([5, 1, 1]);
    let only = std::env::var("TALLY_BENCH_ONLY").ok();
    let chosen = std::env::var("TALLY_BENCH_WORKLOADS").ok();
    let picked = |w: &str| {
        chosen
            .as_deref()
            .is_none_or(|c| c.split(',').any(|n| n == w))
    };
    let mut cells = Vec::new();
    for (w, workload) in WORKLOADS.iter().enumerate().filter(|(_, w)| picked(w.0)) {
        for (c, name) in CONTENDERS.iter().enumerate() {
            if only.as_deref().is_none_or(|o| o == *name) {
                cells.push((w, workload.0, c, *name));
            }
        }
    }
    let mut samples = vec![[(); 4].map(|()| Vec::new()); WORKLOADS.len()];
    let mut units = ["ns"; WORKLOADS.len()];
    for run in 0..runs {
        for &(w, workload, c, contender) in &cells {
            let (time, unit, mib) = measure(workload, contender);
            samples[w][c].push((time, mib));
            units[w] = unit;
        }
        cells.reverse();
        eprintln!("alloc: run {} of {runs} done", run + 1);
    }
    // The medians of time and MiB by workload and contender, NaN where a cell did not run.
    let of =
        |s: &[(f64, f64)], f: fn(&(f64, f64)) -> f64| median(&s.iter().map(f).collect::<Vec<_>>());
    let med: Vec<[(f64, f64); 4]> = (samples.iter())
        .map(|row| row.each_ref().map(|s| (of(s, |s| s.0), of(s, |s| s.1))))
        .collect();
    println!(
        "alloc: median time (ratio to tally) and peak RSS (ratio to jemalloc) of {runs} runs, \
         one process a cell{}",
        mode.caveat()
    );
    print!("{:<13}", "");
    CONTENDERS.iter().for_each(|c| print!(" | {c:<30}"));
    println!();
    let shown = || (med.iter().enumerate()).filter(|(w, _)| picked(WORKLOADS[*w].0));
    for (w, row) in shown() {
        print!("{:<13}", WORKLOADS[w].0);
        for &(t, m) in row {
            let (tr, mr) = (t / row[TALLY_I].0, m / row[JEMALLOC_I].1);
            print!(
                " | {t:>8.1} {} {tr:>5.2}x {m:>6.1} MiB {mr:>5.2}x",
                units[w]
            );
        }
        println!();
    }
    println!("targets (tally):");
    let met = |ok: bool| if ok { "met" } else { "missed" };
    for (w, row) in shown() {
        let (name, t) = (WORKLOADS[w].0, row[TALLY_I].0);
        let ran = |c: usize| !row[c].0.is_nan();
        if w < 2 && ran(TALLY_I) && ran(1) && ran(JEMALLOC_I) {
            let (mi, je) = (row[1].0 / t, row[JEMALLOC_I].0 / t);
            let ok = mi > 1.0 && je > 1.0;
            println!(
                "  {name}: ahead of mimalloc and jemalloc (their time / tally's: {mi:.2}x, \
                 {je:.2}x): {}",
                met(ok)
            );
        }
        let best = (1..4)
            .filter(|&c| ran(c))
            .min_by(|&a, &b| row[a].0.total_cmp(&row[b].0));
        if let (true, true, Some(best)) = (w >= 2, ran(TALLY_I), best) {
            let ratio = t / row[best].0;
            let rival = CONTENDERS[best];
            println!(
                "  {name}: within 1.1x of the best ({rival}): {ratio:.2}x: {}",
                met(ratio <= 1.1)
            );
        }
        if name == "larson" && ran(TALLY_I) && ran(JEMALLOC_I) {
            let ratio = row[TALLY_I].1 / row[JEMALLOC_I].1;
            println!(
                "  larson: peak RSS at most 1.2x jemalloc's: {ratio:.2}x: {}",
                met(ratio <= 1.2)
            );
        }
    }
}
