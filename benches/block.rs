//! Criterion benchmarks of `tally_pool::block::BlockPool` on 64-byte blocks against the
//! system allocator, mimalloc, jemalloc and a hand-written thread-local free list (the
//! "floor"), followed by a ratio table checked against the targets in `DESIGN.md`.
//!
//! Workloads (every contender runs every workload in one process):
//!
//! - **W1 churn**: one thread allocates a block, writes its 64 bytes, reads them back and
//!   frees it.
//! - **W2 burst**: one thread allocates 100,000 blocks (writing each), then frees them all.
//! - **W3 pipeline**: one thread allocates and writes, a second reads and frees; the blocks
//!   travel through a `crossbeam_queue::ArrayQueue` of capacity 1024.
//! - **W4 contended**: two threads churn (allocate, write, read, free) on one shared pool or
//!   allocator; the time reported is per pair of operations (one on each thread).
//!
//! Every contender is called the same way: a generic [`Contender`] with `alloc`/`free`,
//! monomorphised into each workload. The allocators are called through
//! `GlobalAlloc::alloc`/`dealloc` with the block's layout, not installed as the global
//! allocator.
//!
//! The floor is *not* a thread-safe pool: each thread has its own intrusive stack of
//! cache-line-aligned blocks carved from leaked slabs. In W3 the consumer pushes onto its
//! own stack and hands the whole stack to a global stash every 4096 frees, from which the
//! producer refills (a new slab when the stash is empty), so memory stays bounded; in W4
//! each thread uses its own stack. Its W3/W4 numbers are not like-for-like: no per-block
//! synchronisation at all. (In W3 it is not even a lower bound in practice: the producer
//! pops blocks whose links the consumer just wrote, a cross-core miss per block on a
//! dependent chain, which general-purpose allocators avoid by not writing into freed
//! blocks.)
//!
//! After criterion's groups, the benchmark takes its own measurements (11 samples per
//! workload and contender, interleaved across contenders, median ns per object) and
//! prints the ratio table. `TALLY_BENCH_QUICK=1`, `--test` or `cargo test --benches`
//! select a quick run with small sample counts; `TALLY_BENCH_WORKLOADS=W1,W3` limits the
//! ratio pass to those workloads, and a criterion filter that matches nothing (`-- none`)
//! skips criterion's groups.

#[path = "common/mod.rs"]
mod common;

use common::{backoff, load_average, median, with_helper};

use core::alloc::{GlobalAlloc, Layout};
use core::cell::Cell;
use core::fmt;
use core::ptr::{null_mut, NonNull};
use std::alloc::System;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput};
use crossbeam_queue::ArrayQueue;
use tally_pool::block::{BlockPool, BlockPoolConfig, GuardLevel};

/// The object every workload allocates.
type Payload = [u64; 8];

/// The layout every contender is asked for.
const LAYOUT: Layout = Layout::new::<Payload>();

/// Objects live at once in W2.
const BURST: usize = 100_000;

/// Capacity of the W3 queue.
const QUEUE_CAPACITY: usize = 1024;

/// Blocks pre-allocated in each tally pool.
const TALLY_CAPACITY: usize = 200_000;

/// Samples per workload and contender in the ratio pass.
const RATIO_SAMPLES: usize = 11;

/// Reports a failure that makes the numbers meaningless and stops the process.
///
/// Aborting rather than panicking: a panic on a helper thread would leave the other thread
/// waiting for it forever.
#[cold]
#[inline(never)]
fn fatal(args: fmt::Arguments<'_>) -> ! {
    eprintln!("benches/block.rs: {args}");
    std::process::abort()
}

// ---------------------------------------------------------------------------------------
// Contenders
// ---------------------------------------------------------------------------------------

/// Something that hands out and takes back 64-byte blocks.
trait Contender: Sync {
    /// The label used in criterion ids and in the ratio table.
    fn label(&self) -> &'static str;

    /// Hands out one block of [`LAYOUT`], uninitialised. Aborts on failure.
    fn alloc(&self) -> NonNull<Payload>;

    /// Takes back a block.
    ///
    /// # Safety
    ///
    /// `block` came from [`Contender::alloc`] on this contender and is not used again.
    unsafe fn free(&self, block: NonNull<Payload>);

    /// Takes back a block on a thread that frees blocks other threads allocated (the W3
    /// consumer). The same as [`Contender::free`] except for the floor.
    ///
    /// # Safety
    ///
    /// As for [`Contender::free`].
    unsafe fn free_remote(&self, block: NonNull<Payload>) {
        // SAFETY: the caller's obligations are those of `free`.
        unsafe { self.free(block) }
    }

    /// Called by a helper thread before it exits.
    fn thread_exit(&self) {}
}

/// A tally-pool `BlockPool`.
struct Tally {
    label: &'static str,
    pool: BlockPool,
}

impl Tally {
    fn new(label: &'static str, guard: GuardLevel) -> Self {
        let config = BlockPoolConfig::new(LAYOUT)
            .name(label)
            .capacity(TALLY_CAPACITY)
            .guard(guard)
            .prefault(true);
        match BlockPool::new(config) {
            Ok(pool) => Self { label, pool },
            Err(err) => fatal(format_args!("{label}: BlockPool::new failed: {err}")),
        }
    }
}

impl Contender for Tally {
    fn label(&self) -> &'static str {
        self.label
    }

    #[inline(always)]
    fn alloc(&self) -> NonNull<Payload> {
        match self.pool.allocate() {
            Ok(block) => block.cast(),
            Err(err) => fatal(format_args!("{}: allocate failed: {err}", self.label)),
        }
    }

    #[inline(always)]
    unsafe fn free(&self, block: NonNull<Payload>) {
        // SAFETY: the caller's contract: `block` came from `alloc`, that is from
        // `self.pool.allocate()`, and is not used again, so the pool's owner frees it once.
        let freed = unsafe { self.pool.free(block.cast()) };
        if let Err(err) = freed {
            fatal(format_args!("{}: free failed: {err}", self.label));
        }
    }
}

/// A general-purpose allocator called through `GlobalAlloc`.
struct Global<A> {
    label: &'static str,
    alloc: A,
}

impl<A: GlobalAlloc + Sync> Contender for Global<A> {
    fn label(&self) -> &'static str {
        self.label
    }

    #[inline(always)]
    fn alloc(&self) -> NonNull<Payload> {
        // SAFETY: `LAYOUT` has a non-zero size.
        let ptr = unsafe { self.alloc.alloc(LAYOUT) };
        match NonNull::new(ptr) {
            Some(block) => block.cast(),
            None => fatal(format_args!("{}: out of memory", self.label)),
        }
    }

    #[inline(always)]
    unsafe fn free(&self, block: NonNull<Payload>) {
        // SAFETY: the caller guarantees `block` came from `alloc` on this allocator with
        // `LAYOUT` and is not used again.
        unsafe { self.alloc.dealloc(block.as_ptr().cast(), LAYOUT) }
    }
}

/// The floor: a per-thread intrusive stack of free blocks, linked through their first word.
struct Floor;

/// A free block of the floor, as seen by the stack.
#[repr(C)]
struct FreeNode {
    next: *mut FreeNode,
}

/// A block of a floor slab: cache-line aligned, as the other contenders' 64-byte blocks
/// are (except glibc's), so that blocks do not straddle lines or share them across threads.
#[repr(C, align(64))]
struct FloorSlot(Payload);

/// Blocks per slab the floor carves, and frees between two hand-overs in W3.
const FLOOR_BATCH: usize = 4096;

thread_local! {
    /// Top of this thread's floor stack.
    static FLOOR_HEAD: Cell<*mut FreeNode> = const { Cell::new(null_mut()) };
    /// Remote frees since this thread last handed its stack to the stash.
    static FLOOR_REMOTE: Cell<usize> = const { Cell::new(0) };
}

/// A whole floor stack, handed between threads through [`FLOOR_STASH`].
struct FreeList(NonNull<FreeNode>);

// SAFETY: a `FreeList` is the only handle to the blocks it links; whoever holds it owns them.
unsafe impl Send for FreeList {}

/// Stacks handed over by threads that free more than they allocate (or exit).
static FLOOR_STASH: Mutex<Vec<FreeList>> = Mutex::new(Vec::new());

impl Floor {
    /// Pops the first block of `list` and makes the rest this thread's stack.
    fn adopt(list: NonNull<FreeNode>) -> NonNull<Payload> {
        // SAFETY: `list` is a free block this thread now owns; its first word is a link.
        let next = unsafe { (*list.as_ptr()).next };
        FLOOR_HEAD.set(next);
        list.cast()
    }

    /// Refills an empty stack: a stack from the stash, else a new slab (never returned).
    #[cold]
    #[inline(never)]
    fn refill() -> NonNull<Payload> {
        let stashed = FLOOR_STASH
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        if let Some(FreeList(list)) = stashed {
            return Self::adopt(list);
        }
        let slab = Box::leak(Box::<[FloorSlot]>::new_uninit_slice(FLOOR_BATCH));
        let Some((first, rest)) = slab.split_first_mut() else {
            fatal(format_args!("floor: empty slab"))
        };
        let mut next: *mut FreeNode = null_mut();
        for block in rest.iter_mut().rev() {
            let node = block.as_mut_ptr().cast::<FreeNode>();
            // SAFETY: `node` is a fresh, leaked, 64-aligned 64-byte block owned by no one else.
            unsafe { node.write(FreeNode { next }) };
            next = node;
        }
        FLOOR_HEAD.set(next);
        NonNull::from(first).cast()
    }

    /// Hands this thread's whole stack to the stash.
    fn spill() {
        FLOOR_REMOTE.set(0);
        if let Some(list) = NonNull::new(FLOOR_HEAD.replace(null_mut())) {
            FLOOR_STASH
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(FreeList(list));
        }
    }
}

impl Contender for Floor {
    fn label(&self) -> &'static str {
        "floor"
    }

    #[inline(always)]
    fn alloc(&self) -> NonNull<Payload> {
        match NonNull::new(FLOOR_HEAD.get()) {
            Some(head) => Self::adopt(head),
            None => Self::refill(),
        }
    }

    #[inline(always)]
    unsafe fn free(&self, block: NonNull<Payload>) {
        let node = block.cast::<FreeNode>().as_ptr();
        // SAFETY: the caller gives the block back; it is 64 bytes, 8-aligned and ours now.
        unsafe {
            node.write(FreeNode {
                next: FLOOR_HEAD.get(),
            })
        };
        FLOOR_HEAD.set(node);
    }

    #[inline(always)]
    unsafe fn free_remote(&self, block: NonNull<Payload>) {
        // SAFETY: the caller's obligations are those of `free`.
        unsafe { self.free(block) };
        let frees = FLOOR_REMOTE.get() + 1;
        if frees >= FLOOR_BATCH {
            Self::spill();
        } else {
            FLOOR_REMOTE.set(frees);
        }
    }

    fn thread_exit(&self) {
        Self::spill();
    }
}

/// Every contender, built once.
struct Contenders {
    floor: Floor,
    tally: Tally,
    canary: Tally,
    jemalloc: Global<tikv_jemallocator::Jemalloc>,
    mimalloc: Global<mimalloc::MiMalloc>,
    system: Global<System>,
}

/// Something done with each contender in turn.
trait Visit {
    fn visit<C: Contender>(&mut self, contender: &C);
}

impl Contenders {
    fn new() -> Self {
        Self {
            floor: Floor,
            tally: Tally::new("tally", GuardLevel::Off),
            canary: Tally::new("tally-canary", GuardLevel::Canary),
            jemalloc: Global {
                label: "jemalloc",
                alloc: tikv_jemallocator::Jemalloc,
            },
            mimalloc: Global {
                label: "mimalloc",
                alloc: mimalloc::MiMalloc,
            },
            system: Global {
                label: "system",
                alloc: System,
            },
        }
    }

    fn each(&self, visitor: &mut impl Visit) {
        visitor.visit(&self.floor);
        visitor.visit(&self.tally);
        visitor.visit(&self.canary);
        visitor.visit(&self.jemalloc);
        visitor.visit(&self.mimalloc);
        visitor.visit(&self.system);
    }
}

// ---------------------------------------------------------------------------------------
// A helper thread
// ---------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------
// Workloads
// ---------------------------------------------------------------------------------------

/// A block in flight between the W3 threads.
struct InFlight(NonNull<Payload>);

// SAFETY: the block is owned by whoever holds the `InFlight`; contenders free from any thread.
unsafe impl Send for InFlight {}

/// Writes `value` to all 8 words of `block`.
#[inline(always)]
fn fill(block: NonNull<Payload>, value: u64) -> NonNull<Payload> {
    // SAFETY: `block` is a live, 8-aligned, 64-byte block owned by the caller.
    unsafe { block.as_ptr().write([value; 8]) };
    block
}

/// Reads the 8 words of `block` back and checks they are all `value`. The contender's
/// label is read only to report a mismatch, so no contender pays for it on every object.
///
/// Volatile word-sized loads: they cannot be optimised away (so the write in [`fill`] must
/// reach memory too), and, unlike 16-byte loads over 8-byte stores or a `bcmp` call on the
/// array, they cost about the same as a plain read, so no contender is masked by a
/// store-forwarding stall.
#[inline(always)]
fn check<C: Contender>(block: NonNull<Payload>, value: u64, contender: &C) {
    let words = block.as_ptr().cast::<u64>();
    let mut diff = 0;
    for k in 0..8 {
        // SAFETY: word `k` of a live, 8-aligned, 64-byte block owned by the caller.
        diff |= unsafe { words.wrapping_add(k).read_volatile() } ^ value;
    }
    if diff != 0 {
        mismatch(block, value, contender.label());
    }
}

/// Reports a block whose contents changed under its owner.
#[cold]
#[inline(never)]
fn mismatch(block: NonNull<Payload>, value: u64, who: &str) -> ! {
    // SAFETY: as in `check`, whose caller owns the block.
    let words = unsafe { block.as_ptr().read() };
    fatal(format_args!(
        "{who}: block {block:p} holds {words:?}, expected {value} in every word \
         (handed out twice?)"
    ))
}

/// One thread churns `n` times: allocate, write, read, free.
#[inline(always)]
fn churn<C: Contender>(contender: &C, n: u64) {
    for i in 0..n {
        let block = fill(contender.alloc(), i);
        check(block, i, contender);
        // SAFETY: `block` came from `alloc` and is not used again.
        unsafe { contender.free(block) };
    }
}

/// Allocates [`BURST`] blocks (writing each) into `live`, then frees them all.
#[inline(always)]
fn burst<C: Contender>(contender: &C, live: &mut Vec<NonNull<Payload>>) {
    live.clear();
    for i in 0..BURST as u64 {
        live.push(fill(contender.alloc(), i));
    }
    for (i, &block) in (0u64..).zip(live.iter()) {
        check(block, i, contender);
        // SAFETY: each block came from `alloc` once and is freed once.
        unsafe { contender.free(block) };
    }
    live.clear();
}

/// W3 producer: allocates and writes `n` blocks, pushing each onto `queue`.
fn produce<C: Contender>(contender: &C, queue: &ArrayQueue<InFlight>, n: u64) {
    for i in 0..n {
        let mut item = InFlight(fill(contender.alloc(), i));
        let mut spins = 0u32;
        while let Err(back) = queue.push(item) {
            item = back;
            backoff(&mut spins);
        }
    }
}

/// W3 consumer: pops `n` blocks from `queue`, reads and frees each.
fn consume<C: Contender>(contender: &C, queue: &ArrayQueue<InFlight>, n: u64) {
    for i in 0..n {
        let mut spins = 0u32;
        let block = loop {
            match queue.pop() {
                Some(InFlight(block)) => break block,
                None => backoff(&mut spins),
            }
        };
        check(block, i, contender);
        // SAFETY: the producer allocated `block` and handed it over; it is not used again.
        unsafe { contender.free_remote(block) };
    }
}

/// The workloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Workload {
    Churn,
    Burst,
    Pipeline,
    Contended,
}

impl Workload {
    const ALL: [Self; 4] = [Self::Churn, Self::Burst, Self::Pipeline, Self::Contended];

    fn name(self) -> &'static str {
        match self {
            Self::Churn => "W1 churn",
            Self::Burst => "W2 burst",
            Self::Pipeline => "W3 pipeline",
            Self::Contended => "W4 contended",
        }
    }

    /// Objects (W4: pairs of operations) one iteration stands for.
    fn objects_per_iteration(self) -> u64 {
        match self {
            Self::Burst => BURST as u64,
            Self::Churn | Self::Pipeline | Self::Contended => 1,
        }
    }

    /// Iterations per sample in the ratio pass.
    fn ratio_iterations(self, quick: bool) -> u64 {
        let full = match self {
            Self::Churn | Self::Contended => 1_000_000,
            Self::Burst => 10,
            Self::Pipeline => 200_000,
        };
        if quick {
            (full / 10).max(1)
        } else {
            full
        }
    }

    /// Sets up what the workload needs for `contender` (scratch space, a helper thread),
    /// then calls `body` with a runner: `run(n)` does `n` iterations and returns their time.
    fn session<C: Contender, R>(
        self,
        contender: &C,
        body: impl FnOnce(&mut dyn FnMut(u64) -> Duration) -> R,
    ) -> R {
        match self {
            Self::Churn => body(&mut |n| {
                let start = Instant::now();
                churn(contender, n);
                start.elapsed()
            }),
            Self::Burst => {
                let mut live = Vec::with_capacity(BURST);
                body(&mut |n| {
                    let start = Instant::now();
                    for _ in 0..n {
                        burst(contender, &mut live);
                    }
                    start.elapsed()
                })
            }
            Self::Pipeline => {
                let queue = ArrayQueue::new(QUEUE_CAPACITY);
                with_helper(
                    || contender.thread_exit(),
                    |n| consume(contender, &queue, n),
                    |helper| {
                        body(&mut |n| {
                            let start = Instant::now();
                            helper.start(n);
                            produce(contender, &queue, n);
                            helper.wait();
                            start.elapsed()
                        })
                    },
                )
            }
            Self::Contended => with_helper(
                || contender.thread_exit(),
                |n| churn(contender, n),
                |helper| {
                    body(&mut |n| {
                        let start = Instant::now();
                        helper.start(n);
                        churn(contender, n);
                        helper.wait();
                        start.elapsed()
                    })
                },
            ),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Criterion
// ---------------------------------------------------------------------------------------

/// Benchmarks one workload for each contender in one criterion group.
struct CriterionVisit<'a, 'c> {
    group: &'a mut BenchmarkGroup<'c, WallTime>,
    workload: Workload,
}

impl Visit for CriterionVisit<'_, '_> {
    fn visit<C: Contender>(&mut self, contender: &C) {
        let group = &mut *self.group;
        self.workload.session(contender, |run| {
            group.bench_function(contender.label(), |b| b.iter_custom(&mut *run));
        });
    }
}

fn criterion_groups(criterion: &mut Criterion, contenders: &Contenders) {
    for workload in Workload::ALL {
        let mut group = criterion.benchmark_group(workload.name());
        if workload == Workload::Burst {
            group.throughput(Throughput::Elements(BURST as u64));
        }
        contenders.each(&mut CriterionVisit {
            group: &mut group,
            workload,
        });
        group.finish();
    }
}

// ---------------------------------------------------------------------------------------
// The ratio pass
// ---------------------------------------------------------------------------------------

/// Takes one sample of one workload for each contender.
struct SampleVisit {
    workload: Workload,
    iterations: u64,
    /// ns per object, per contender label.
    samples: Vec<(&'static str, Vec<f64>)>,
}

impl Visit for SampleVisit {
    fn visit<C: Contender>(&mut self, contender: &C) {
        let iterations = self.iterations;
        let elapsed = self.workload.session(contender, |run| {
            // Warm the thread caches (and a new helper thread) before the timed run.
            run((iterations / 4).max(1));
            run(iterations)
        });
        let objects = iterations * self.workload.objects_per_iteration();
        let ns = elapsed.as_secs_f64() * 1e9 / objects as f64;
        match self
            .samples
            .iter_mut()
            .find(|(label, _)| *label == contender.label())
        {
            Some((_, samples)) => samples.push(ns),
            None => self.samples.push((contender.label(), vec![ns])),
        }
    }
}

/// A ratio with its target.
struct Target {
    numerator: &'static str,
    denominator: &'static str,
    /// The ratio must be at most this (`inclusive`) or below it.
    bound: f64,
    inclusive: bool,
}

impl Target {
    fn targets(workload: Workload) -> &'static [Target] {
        const FLOOR_125: Target = Target {
            numerator: "tally",
            denominator: "floor",
            bound: 1.25,
            inclusive: true,
        };
        const FLOOR_150: Target = Target {
            numerator: "tally",
            denominator: "floor",
            bound: 1.5,
            inclusive: true,
        };
        const BELOW_JEMALLOC: Target = Target {
            numerator: "tally",
            denominator: "jemalloc",
            bound: 1.0,
            inclusive: false,
        };
        match workload {
            Workload::Churn => &[FLOOR_125, BELOW_JEMALLOC],
            Workload::Burst => &[FLOOR_150],
            Workload::Pipeline | Workload::Contended => &[BELOW_JEMALLOC],
        }
    }
}

fn ratio_table(contenders: &Contenders, quick: bool) {
    let load_before = load_average();
    // Round-robin over contenders so that drift (frequency, other load) hits all alike.
    let mut results = Vec::new();
    for workload in Workload::ALL {
        if !common::workload_selected(workload.name()) {
            continue;
        }
        let mut visit = SampleVisit {
            workload,
            iterations: workload.ratio_iterations(quick),
            samples: Vec::new(),
        };
        for _ in 0..RATIO_SAMPLES {
            contenders.each(&mut visit);
        }
        let medians: Vec<(&'static str, f64)> = visit
            .samples
            .iter_mut()
            .map(|(label, samples)| (*label, median(samples)))
            .collect();
        results.push((workload, medians));
    }

    println!();
    println!(
        "Ratio table: median of {RATIO_SAMPLES} samples, ns per object (W4: per pair of \
         operations, one on each thread){}",
        if quick {
            "; QUICK MODE, indicative only"
        } else {
            ""
        }
    );
    let order = [
        "tally",
        "floor",
        "jemalloc",
        "mimalloc",
        "system",
        "tally-canary",
    ];
    let mut all_met = true;
    for (workload, medians) in &results {
        let of = |label: &str| {
            medians
                .iter()
                .find(|(l, _)| *l == label)
                .map_or(f64::NAN, |&(_, ns)| ns)
        };
        let mut line = format!("{}:", workload.name());
        for (i, label) in order.iter().enumerate() {
            let unit = if i == 0 { " ns/op" } else { "" };
            let sep = if i == 0 { " " } else { " | " };
            line.push_str(&format!("{sep}{label} {:.1}{unit}", of(label)));
        }
        let mut met = true;
        for (i, target) in Target::targets(*workload).iter().enumerate() {
            let ratio = of(target.numerator) / of(target.denominator);
            let ok = if target.inclusive {
                ratio <= target.bound
            } else {
                ratio < target.bound
            };
            met &= ok;
            let prefix = if i == 0 { "ratio " } else { "" };
            let op = if target.inclusive { "<=" } else { "<" };
            line.push_str(&format!(
                " | {prefix}{}/{} {ratio:.2} (target {op} {})",
                target.numerator, target.denominator, target.bound
            ));
        }
        all_met &= met;
        line.push_str(if met { " -> MET" } else { " -> MISSED" });
        println!("{line}");
    }
    println!(
        "All targets: {}. (floor is a per-thread free list, not a thread-safe pool: its W3/W4 \
         numbers are not like-for-like; see the notes at the top of benches/block.rs.)",
        if all_met { "MET" } else { "MISSED" }
    );
    if let Some(load) = load_average() {
        println!(
            "Load average before/after the ratio pass: {load_before} / {load}. Other work on \
             this machine skews W3/W4 most.",
            load_before = load_before.as_deref().unwrap_or("?")
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let has = |flag: &str| args.iter().any(|a| a == flag);
    let quick = common::quick_mode();
    let (warm_up, measurement, samples) = common::criterion_timing(quick);

    let contenders = Contenders::new();
    let mut criterion = Criterion::default()
        .warm_up_time(warm_up)
        .measurement_time(measurement)
        .sample_size(samples)
        .nresamples(if quick { 1_000 } else { 20_000 })
        .configure_from_args();
    criterion_groups(&mut criterion, &contenders);
    criterion.final_summary();

    if !has("--list") {
        ratio_table(&contenders, quick);
    }
}
