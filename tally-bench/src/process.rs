//! This process as `/proc` shows it (its memory, the pressure monitor's CPU), and this bench
//! run again in a fresh process.

use std::process::Command;
use std::time::{Duration, Instant};

use tally_pool::pressure::{PressureMonitor, Reclamation};

use crate::order::OrDie;

/// The number after `key` (such as `VmHWM:`) in a `/proc` file of `key: value` lines (such
/// as `/proc/self/status`, whose sizes are in KiB).
pub fn proc_field(path: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let value = text.lines().find_map(|l| l.strip_prefix(key))?;
    value.split_whitespace().next()?.parse().ok()
}

/// Resident bytes of this process, from `/proc/self/statm` (pages of 4096 bytes).
pub fn resident_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = text.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// CPU seconds thread `tid` of this process has run (`schedstat`, in nanoseconds).
fn thread_cpu(tid: i32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).ok()?;
    Some(stat.split_whitespace().next()?.parse::<f64>().ok()? / 1e9)
}

/// The monitor's ticks and CPU over `run`: the durations of the ticks it ran meanwhile in
/// ns, its CPU by `/proc` and by its own clock, in % of a core; and a reclamation round
/// that ran meanwhile, whose time both CPU figures include.
pub fn watch(monitor: &PressureMonitor, run: Duration) -> Watched {
    let last = monitor.last_reclamation();
    let tid = monitor.thread_id().ok_or("no thread id").or_die("monitor");
    let (cpu0, busy0, wall0) = (thread_cpu(tid), monitor.busy_time(), Instant::now());
    let before = monitor.ticks();
    std::thread::sleep(run);
    let (cpu1, busy1, wall) = (thread_cpu(tid), monitor.busy_time(), wall0.elapsed());
    let during = usize::try_from(monitor.ticks() - before).unwrap_or(usize::MAX);
    let ticks = (monitor.recent_ticks().iter().rev().take(during))
        .map(|d| d.as_nanos() as f64)
        .collect();
    let busy = (busy1 - busy0).as_secs_f64() / wall.as_secs_f64() * 100.0;
    let cpu = (cpu1.unwrap_or(f64::NAN) - cpu0.unwrap_or(f64::NAN)) / wall.as_secs_f64() * 1e2;
    let round = monitor.last_reclamation().filter(|r| Some(*r) != last);
    (ticks, cpu, busy, round)
}

/// What [`watch`] saw: tick durations in ns, CPU by `/proc` and by the monitor's clock in %
/// of a core, and the reclamation round that ran meanwhile.
pub type Watched = (Vec<f64>, f64, f64, Option<Reclamation>);

/// This bench binary again, with the same arguments and `var` set to `value`: for what
/// needs a process of its own (a global allocator, memory that allocators keep).
pub fn rerun(var: &str, value: &str) -> Command {
    let mut child = Command::new(std::env::current_exe().or_die("the bench's own path"));
    child.args(std::env::args().skip(1)).env(var, value);
    child
}
