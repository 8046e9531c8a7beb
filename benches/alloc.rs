//! `TallyAlloc` against the system allocator, mimalloc and jemalloc on two of
//! mimalloc-bench's workloads, each contender called through `GlobalAlloc` in one run:
//!
//! - **glibc-simple**: one thread allocates 1,000 blocks of random sizes (8 to 512 bytes),
//!   frees them in random order, 200 rounds.
//! - **xmalloc-test**: a producer thread allocates blocks of random sizes (8 to 256 bytes)
//!   and hands them through a queue to a consumer thread that frees them, 400,000 blocks.
//!
//! Prints the median time per allocation+free over the runs and each contender's ratio to
//! TallyAlloc (below 1: faster than TallyAlloc). `TALLY_BENCH_QUICK=1` or `--test`: one
//! short run; `TALLY_BENCH_ONLY=tally` runs one contender and `TALLY_BENCH_WORKLOADS=glibc-simple`
//! the named workloads (for a profiler). The bench's own bookkeeping uses the system allocator, the default.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use core::alloc::{GlobalAlloc, Layout};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_queue::ArrayQueue;
use tally_bench::stats::median;
use tally_pool::alloc::TallyAlloc;

/// A contender: its name and the allocator.
type Contender = (&'static str, &'static (dyn GlobalAlloc + Sync));

static TALLY: TallyAlloc = TallyAlloc::new();
static MIMALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;
static JEMALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
static SYSTEM: std::alloc::System = std::alloc::System;

const CONTENDERS: [Contender; 4] = [
    ("tally", &TALLY),
    ("mimalloc", &MIMALLOC),
    ("jemalloc", &JEMALLOC),
    ("system", &SYSTEM),
];

/// xorshift64*: the same sizes and orders for every contender.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn size(&mut self, max: u64) -> usize {
        (8 + self.next() % (max - 7)) as usize
    }
}

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 8).unwrap()
}

/// glibc-simple: ns per allocation+free.
fn glibc_simple(a: &'static (dyn GlobalAlloc + Sync), rounds: usize) -> f64 {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut live: Vec<(*mut u8, usize)> = Vec::with_capacity(1000);
    let start = Instant::now();
    for _ in 0..rounds {
        for _ in 0..1000 {
            let size = rng.size(512);
            // SAFETY: non-zero size.
            let p = unsafe { a.alloc(layout(size)) };
            assert!(!p.is_null());
            // SAFETY: one byte of the block, ours.
            unsafe { p.write(1) };
            live.push((p, size));
        }
        while !live.is_empty() {
            let i = (rng.next() % live.len() as u64) as usize;
            let (p, size) = live.swap_remove(i);
            // SAFETY: allocated above with this layout, freed once.
            unsafe { a.dealloc(p, layout(size)) };
        }
    }
    start.elapsed().as_nanos() as f64 / (rounds * 1000) as f64
}

/// xmalloc-test: ns per block handed from the producer to the consumer.
fn xmalloc(a: &'static (dyn GlobalAlloc + Sync), blocks: usize) -> f64 {
    let queue = Arc::new(ArrayQueue::<(usize, usize)>::new(4096));
    let start = Instant::now();
    let consumer = {
        let queue = Arc::clone(&queue);
        std::thread::spawn(move || {
            let mut freed = 0;
            while freed < blocks {
                match queue.pop() {
                    Some((p, size)) => {
                        // SAFETY: allocated by the producer with this layout, freed once.
                        unsafe { a.dealloc(p as *mut u8, layout(size)) };
                        freed += 1;
                    }
                    None => std::hint::spin_loop(),
                }
            }
        })
    };
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    for _ in 0..blocks {
        let size = rng.size(256);
        // SAFETY: non-zero size.
        let p = unsafe { a.alloc(layout(size)) };
        assert!(!p.is_null());
        // SAFETY: one byte of the block, ours.
        unsafe { p.write(2) };
        let mut item = (p as usize, size);
        while let Err(back) = queue.push(item) {
            item = back;
            std::hint::spin_loop();
        }
    }
    consumer.join().unwrap();
    start.elapsed().as_nanos() as f64 / blocks as f64
}

fn main() {
    let quick =
        std::env::var_os("TALLY_BENCH_QUICK").is_some() || std::env::args().any(|a| a == "--test");
    let (runs, rounds, blocks) = if quick {
        (1, 10, 20_000)
    } else {
        (7, 200, 400_000)
    };
    type Workload = fn(&'static (dyn GlobalAlloc + Sync), usize) -> f64;
    let workloads: [(&str, Workload, usize); 2] = [
        ("glibc-simple", glibc_simple, rounds),
        ("xmalloc-test", xmalloc, blocks),
    ];
    let only = std::env::var("TALLY_BENCH_ONLY").ok();
    let runs_it = |label: &str| only.as_deref().is_none_or(|o| o == label);
    println!("TallyAlloc vs allocators: median ns per allocation+free over {runs} runs");
    let chosen = std::env::var("TALLY_BENCH_WORKLOADS").ok();
    for (name, run, n) in workloads {
        if chosen
            .as_deref()
            .is_some_and(|c| !c.split(',').any(|w| w == name))
        {
            continue;
        }
        let mut times = vec![Vec::new(); CONTENDERS.len()];
        // Interleaved: every run measures every contender once, in turn.
        for _ in 0..runs {
            for (i, (label, a)) in CONTENDERS.iter().enumerate() {
                if runs_it(label) {
                    times[i].push(run(*a, n));
                }
            }
        }
        let medians: Vec<f64> = times.iter().map(|t| median(t)).collect();
        let tally = medians[0];
        print!("{name:<13}");
        for ((label, _), m) in CONTENDERS.iter().zip(&medians) {
            print!("  {label} {m:7.1} ns ({:.2}x)", m / tally);
        }
        println!();
    }
    println!("(ratios are contender / tally: above 1 means TallyAlloc is faster)");
}
