//! Scratch arenas against the global allocator: `cargo bench --bench arena` (`-- --quick`).
//! A batch (64 fills in a `Vec`, a `String` line per fill, a report `String` joining them) is
//! built through `arena::scratch` and through the global allocator, in alternating rounds;
//! printed: median ns per batch, median of the rounds' scratch/global ratios. The run starts
//! itself again with `TALLY_ARENA_BENCH_ALLOC=mimalloc` and `=tally` (`TallyAlloc`): one
//! global allocator a process.

use std::{alloc::GlobalAlloc, alloc::Layout, alloc::System, ffi::CStr, fmt::Write};

use mimalloc::MiMalloc;
use tally_bench::{fatal, process::rerun, stats::median, Mode, OrDie};
use tally_pool::alloc::TallyAlloc;
use tally_pool::arena::bumpalo::collections::Vec as BumpVec;
use tally_pool::arena::{self, bumpalo::collections::String as BumpString};

const VAR: &str = "TALLY_ARENA_BENCH_ALLOC";
const FILLS: u64 = 64;

/// The allocator `VAR` names at the process's first allocation (mimalloc, tally), else the
/// system allocator, for good: every block goes back to the allocator that made it.
fn chosen() -> (&'static dyn GlobalAlloc, &'static str) {
    static CHOICE: std::sync::OnceLock<u8> = std::sync::OnceLock::new();
    let choice = *CHOICE.get_or_init(|| {
        // SAFETY: `VAR`, NUL-terminated; `getenv` neither allocates nor keeps the pointer.
        let value = unsafe { libc::getenv(c"TALLY_ARENA_BENCH_ALLOC".as_ptr()) };
        if value.is_null() {
            return 0;
        }
        // SAFETY: a non-null `getenv` result is a NUL-terminated string.
        match unsafe { CStr::from_ptr(value) }.to_bytes() {
            b"mimalloc" => 1,
            b"tally" => 2,
            _ => 0,
        }
    });
    static TALLY: TallyAlloc = TallyAlloc::new();
    match choice {
        1 => (&MiMalloc, "mimalloc"),
        2 => (&TALLY, "tally"),
        _ => (&System, "system"),
    }
}

#[global_allocator]
static GLOBAL: Chosen = Chosen;
struct Chosen;

// SAFETY: each call goes to the one allocator chosen for the whole process, with the
// caller's arguments: that allocator's guarantees are this one's.
unsafe impl GlobalAlloc for Chosen {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        unsafe { chosen().0.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract; `ptr` came from the same allocator.
        unsafe { chosen().0.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, size: usize) -> *mut u8 {
        // SAFETY: the caller's contract; `ptr` came from the same allocator.
        unsafe { chosen().0.realloc(ptr, layout, size) }
    }
}

/// One batch: fills, a line per fill, the report joining them, in `$vec`s and `$string`s.
macro_rules! batch {
    ($b:expr, $vec:expr, $string:expr) => {{
        let mut fills = $vec;
        fills.extend((0..FILLS).map(|i| ($b * FILLS + i, 10_000 + i % 7, 100 * (1 + i % 5))));
        let mut lines = $vec;
        for (id, price, qty) in &fills {
            let mut line = $string;
            write!(line, "fill {id}: {qty}@{price}").or_die("write");
            lines.push(line);
        }
        let mut report = $string;
        for line in &lines {
            writeln!(report, "{line}").or_die("write");
        }
        std::hint::black_box(report.len());
    }};
}

/// ns per batch over `n` batches.
fn timed(n: u64, mut batch: impl FnMut(u64)) -> f64 {
    let start = std::time::Instant::now();
    (0..n).for_each(&mut batch);
    start.elapsed().as_nanos() as f64 / n as f64
}

fn main() {
    let Some(mode) = Mode::start() else { return };
    let (rounds, n) = mode.pick([(30, 20_000), (10, 5_000), (2, 100)]);
    let in_global = |b: u64| batch!(b, Vec::new(), String::new());
    let in_arena =
        |b: u64| arena::scratch(|bump| batch!(b, BumpVec::new_in(bump), BumpString::new_in(bump)));
    let runs: Vec<_> = (0..rounds)
        .map(|_| (timed(n, in_global), timed(n, in_arena)))
        .collect();
    let of = |f: fn(&(f64, f64)) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
    let (g, s, ratio) = (of(|r| r.0), of(|r| r.1), of(|r| r.1 / r.0));
    let name = chosen().1;
    println!(
        "{name:>8}: global {g:.0} ns/batch, scratch {s:.0} ns/batch, scratch/global \
         {ratio:.3} (medians of {rounds} rounds of {n} batches of {FILLS} fills)"
    );
    if name == "system" {
        for other in ["mimalloc", "tally"] {
            if !rerun(VAR, other).status().or_die("a child run").success() {
                fatal(format_args!("the {other} run failed"));
            }
        }
    }
}
