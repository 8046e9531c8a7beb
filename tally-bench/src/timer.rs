//! Clocks: the W6 timer (an invariant TSC, else `Instant`), and how much CPU other
//! processes take while a sample runs.

use std::hint::spin_loop;
use std::sync::atomic::{compiler_fence, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Whether [`now`] reads the TSC (an invariant one), else `Instant` (inline, as [`now`] is).
#[inline]
pub fn use_tsc() -> bool {
    static TSC: OnceLock<bool> = OnceLock::new();
    *TSC.get_or_init(|| {
        let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let flags = info.lines().find(|line| line.starts_with("flags"));
        let has = |f: &str| flags.is_some_and(|flags| flags.split_whitespace().any(|w| w == f));
        cfg!(target_arch = "x86_64") && has("constant_tsc") && has("nonstop_tsc")
    })
}

/// A timestamp: TSC ticks (`lfence; rdtsc; lfence`, so that the timed call neither starts
/// before the first read nor is still running at the second), or `Instant` nanoseconds.
#[inline(always)]
pub fn now() -> u64 {
    compiler_fence(Ordering::SeqCst);
    // The time base of `Instant`-based ticks.
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let t = if use_tsc() {
        tsc()
    } else {
        let elapsed = EPOCH.get_or_init(Instant::now).elapsed();
        u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX)
    };
    compiler_fence(Ordering::SeqCst);
    t
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn tsc() -> u64 {
    use core::arch::x86_64::{_mm_lfence, _rdtsc};
    // SAFETY: `lfence` is SSE2, which every x86_64 processor has; it only orders.
    unsafe { _mm_lfence() };
    // SAFETY: `rdtsc` exists on every x86_64 processor and only reads the time-stamp counter.
    let t = unsafe { _rdtsc() };
    // SAFETY: as for the first `lfence`.
    unsafe { _mm_lfence() };
    t
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn tsc() -> u64 {
    0
}

/// Nanoseconds per tick of [`now`], measured against `Instant` over `window`.
pub fn calibrate(window: Duration) -> f64 {
    if !use_tsc() {
        return 1.0;
    }
    let (t0, c0) = (Instant::now(), now());
    while t0.elapsed() < window {
        spin_loop();
    }
    let (c1, t1) = (now(), Instant::now());
    let ticks = c1.wrapping_sub(c0).max(1);
    t1.duration_since(t0).as_secs_f64() * 1e9 / ticks as f64
}

/// The timer's own cost, in ticks: 100,000 pairs of back-to-back readings, sorted, and the
/// counter's step (the smallest gap between two distinct costs).
pub fn overhead() -> (Vec<u64>, u64) {
    let pair = |_| {
        let start = now();
        now().wrapping_sub(start)
    };
    let mut empty: Vec<u64> = (0..100_000).map(pair).collect();
    empty.sort_unstable();
    let steps = empty
        .windows(2)
        .filter_map(|pair| Some(pair.last()? - pair.first()?));
    let resolution = steps.filter(|&step| step > 0).min().unwrap_or(1);
    (empty, resolution)
}

/// Clock ticks per second of `/proc/stat` and `/proc/self/stat` (`USER_HZ`, 100 on Linux).
const USER_HZ: f64 = 100.0;

/// Busy ticks of the whole machine and ticks used by this process (all its threads).
pub fn cpu_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields = stat.lines().next()?.split_whitespace().skip(1);
    let cpu: Vec<u64> = fields.map(|f| f.parse().unwrap_or(0)).collect();
    // user nice system idle iowait irq softirq steal: all but idle and iowait are busy.
    let busy = [0, 1, 2, 5, 6, 7]
        .map(|k| cpu.get(k).copied().unwrap_or(0))
        .iter()
        .sum();
    let own = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name: state is field 3, utime 14 and stime 15.
    let fields: Vec<&str> = own.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((busy, utime + stime))
}

/// CPUs' worth of time that other processes used between `before` and `after`.
pub fn foreign_cpus(before: Option<(u64, u64)>, after: Option<(u64, u64)>, wall: Duration) -> f64 {
    match (before, after) {
        (Some((busy0, own0)), Some((busy1, own1))) => {
            let other = busy1.saturating_sub(busy0) as f64 - own1.saturating_sub(own0) as f64;
            (other / USER_HZ / wall.as_secs_f64().max(1e-3)).max(0.0)
        }
        _ => f64::NAN,
    }
}

/// The 1-, 5- and 15-minute load averages, where the OS reports them.
pub fn load_average() -> Option<String> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let fields: Vec<&str> = text.split_whitespace().take(3).collect();
    (fields.len() == 3).then(|| fields.join(" "))
}
