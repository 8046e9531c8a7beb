//! What the criterion benchmarks share: the helper thread of the two-thread workloads,
//! the waiting policy, quick-mode detection, medians and the load average. Each benchmark
//! includes it with `#[path = "common/mod.rs"] mod common;`.

#![allow(dead_code)] // Each benchmark uses a different part of it.

use std::hint::spin_loop;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

/// Whether to run short: `TALLY_BENCH_QUICK=1`, criterion's `--test`, or a run without
/// `--bench` (`cargo test --benches`).
pub(crate) fn quick_mode() -> bool {
    let args: Vec<String> = std::env::args().collect();
    let has = |flag: &str| args.iter().any(|a| a == flag);
    let env_quick = std::env::var("TALLY_BENCH_QUICK").is_ok_and(|v| v == "1");
    env_quick || has("--test") || !has("--bench")
}

/// Whether the ratio pass measures the workload named `name` (such as "W3 pipeline"):
/// all of them, unless `TALLY_BENCH_WORKLOADS` lists prefixes (`W1,W3`) to keep.
pub(crate) fn workload_selected(name: &str) -> bool {
    match std::env::var("TALLY_BENCH_WORKLOADS") {
        Ok(list) if !list.trim().is_empty() => list
            .split(',')
            .map(str::trim)
            .any(|w| !w.is_empty() && name.starts_with(w)),
        _ => true,
    }
}

/// Criterion's warm-up time, measurement time and sample count for the mode.
pub(crate) fn criterion_timing(quick: bool) -> (Duration, Duration, usize) {
    if quick {
        (Duration::from_millis(100), Duration::from_millis(300), 10)
    } else {
        (Duration::from_secs(1), Duration::from_secs(2), 20)
    }
}

/// A second thread that runs jobs of `n` operations on request.
pub(crate) struct Helper {
    /// 0: idle; [`Helper::STOP`]: exit; otherwise the size of the job to run.
    job: AtomicU64,
}

impl Helper {
    const STOP: u64 = u64::MAX;

    /// Starts a job of `n` (> 0) operations.
    pub(crate) fn start(&self, n: u64) {
        self.job.store(n, Ordering::Release);
    }

    /// Waits for the job to finish.
    pub(crate) fn wait(&self) {
        let mut spins = 0u32;
        while self.job.load(Ordering::Acquire) != 0 {
            backoff(&mut spins);
        }
    }

    /// The helper thread's loop.
    fn serve(&self, work: &impl Fn(u64)) {
        let mut spins = 0u32;
        loop {
            match self.job.load(Ordering::Acquire) {
                0 => backoff(&mut spins),
                Self::STOP => return,
                n => {
                    work(n);
                    spins = 0;
                    // Not a plain store: a stop requested meanwhile must not be lost.
                    let _ = self
                        .job
                        .compare_exchange(n, 0, Ordering::Release, Ordering::Relaxed);
                }
            }
        }
    }
}

/// Stops the helper when the body returns or unwinds.
struct StopOnDrop<'a>(&'a Helper);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.job.store(Helper::STOP, Ordering::Release);
    }
}

/// Runs `body` with a helper thread that runs `work(n)` for each job, and calls
/// `on_exit` on the helper before it exits.
pub(crate) fn with_helper<R>(
    on_exit: impl FnOnce() + Send,
    work: impl Fn(u64) + Sync,
    body: impl FnOnce(&Helper) -> R,
) -> R {
    let helper = Helper {
        job: AtomicU64::new(0),
    };
    thread::scope(|scope| {
        scope.spawn(|| {
            helper.serve(&work);
            on_exit();
        });
        let _stop = StopOnDrop(&helper);
        body(&helper)
    })
}

/// Waits for the other thread: spins, then yields, then sleeps.
///
/// The sleep matters on a 2-core machine: if the scheduler puts both threads on one CPU, a
/// waiter that only spins or yields (yield is weak under EEVDF) burns whole time slices
/// and the pipeline crawls at one batch per slice. A waiter that sleeps lets its partner
/// run, and is usually woken on the idle CPU. Threads on separate CPUs never wait long
/// enough to reach the sleep (draining a full queue takes tens of microseconds).
#[inline]
pub(crate) fn backoff(spins: &mut u32) {
    const SPIN: u32 = 64;
    const YIELD: u32 = SPIN + 1024;
    if *spins < SPIN {
        spin_loop();
    } else if *spins < YIELD {
        thread::yield_now();
    } else {
        thread::sleep(Duration::from_micros(20));
    }
    *spins = spins.saturating_add(1);
}

pub(crate) fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples.get(samples.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The 1-, 5- and 15-minute load averages, where the OS reports them.
pub(crate) fn load_average() -> Option<String> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let fields: Vec<&str> = text.split_whitespace().take(3).collect();
    (fields.len() == 3).then(|| fields.join(" "))
}
