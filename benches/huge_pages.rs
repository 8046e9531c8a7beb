//! W7, huge pages (`cargo bench --bench huge_pages`; `-- --quick` for short runs; `cargo
//! test --benches` runs one tiny pass): reads of random live values among 1,000,000 of 64
//! bytes, from a pool with `huge_pages` and one without, in the same run. The values form
//! one random cycle (each holds the address of the next), so every read waits for the one
//! before and pays its TLB and cache misses. Rounds alternate between the pools; prints
//! the medians per read, their ratio, the pools' huge-page state and `AnonHugePages` of
//! `/proc/self/smaps_rollup` before and after the huge-page pool was filled.

use std::hint::black_box;
use std::time::Instant;

use tally_bench::process::proc_field;
use tally_bench::stats::alternate;
use tally_bench::{Mode, OrDie};
use tally_pool::{Handle, Pool, PoolConfig};

type Value = [u64; 8];

/// `AnonHugePages` of this process, in KiB (0 if unreadable).
fn anon_huge_kib() -> u64 {
    proc_field("/proc/self/smaps_rollup", "AnonHugePages:").unwrap_or(0)
}

/// The next of a xorshift sequence.
fn next(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// `n` live values of a new pool (`huge` pages or not), linked into one random cycle
/// through their first word; returns them with the address of one.
fn fill(huge: bool, n: usize) -> (Vec<Handle<Value>>, u64) {
    let name = format!("w7-{}-pages", if huge { "huge" } else { "normal" });
    let config = PoolConfig::new(&name).per_node(false).capacity(n);
    let config = config.max_capacity(n.next_power_of_two()).huge_pages(huge);
    let pool: &'static Pool<Value> = Pool::new(config).or_die("pool");
    let mut values: Vec<Handle<Value>> = (0..n).map(|_| pool.acquire().or_die("acquire")).collect();
    // A random order of the values (Fisher-Yates), each linked to the next, the last to
    // the first.
    let mut seed = 0x9E37_79B9_7F4A_7C15u64 ^ n as u64;
    for i in (1..n).rev() {
        values.swap(i, (next(&mut seed) % (i as u64 + 1)) as usize);
    }
    let addrs: Vec<u64> = values.iter().map(|v| &**v as *const Value as u64).collect();
    for (v, &to) in values.iter_mut().zip(addrs.iter().cycle().skip(1)) {
        if let Some(word) = v.first_mut() {
            *word = to;
        }
    }
    let stats = pool.stats();
    println!("{name}: {:?}, {} chunks", stats.huge_pages, stats.chunks);
    let start = addrs.first().copied().unwrap_or(0);
    (values, start)
}

/// `steps` dependent reads along the cycle from `start`; nanoseconds per read.
fn chase(start: u64, steps: u64) -> f64 {
    let mut p = start as *const Value;
    let t = Instant::now();
    for _ in 0..steps {
        // SAFETY: every address in the cycle is a live value of `fill`, held by its
        // handle and not written while the chase runs.
        p = unsafe { (*p)[0] } as *const Value;
    }
    black_box(p);
    t.elapsed().as_nanos() as f64 / steps as f64
}

fn main() {
    let Some(mode) = Mode::start() else { return };
    let (rounds, n, steps) = mode.pick([
        (21, 1_000_000, 4_000_000),
        (7, 1_000_000, 1_000_000),
        (3, 10_000, 10_000),
    ]);
    let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
        .unwrap_or_else(|_| "unknown".into());
    println!(
        "W7 benches ({} mode), {n} live values of 64 bytes; transparent_hugepage/enabled: {}",
        mode.name(),
        thp.trim()
    );
    let (_normal, normal_start) = fill(false, n);
    let before = anon_huge_kib();
    let (_huge, huge_start) = fill(true, n);
    let after = anon_huge_kib();
    println!(
        "AnonHugePages (smaps_rollup): {before} KiB before the huge-page pool, {after} KiB after \
         ({} KiB for its {} MiB of values)",
        after.saturating_sub(before),
        (n * 64) >> 20
    );
    let _ = (chase(normal_start, steps / 4), chase(huge_start, steps / 4)); // warm-up
    let [normal, huge, ratio] = alternate(
        rounds,
        || chase(normal_start, steps),
        || chase(huge_start, steps),
    );
    println!(
        "W7 random read: {normal:.2} ns with normal pages, {huge:.2} ns with huge pages: \
         ratio huge/normal {ratio:.3}"
    );
}
