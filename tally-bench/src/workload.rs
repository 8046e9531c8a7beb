//! The workloads, the helper thread of the two-thread ones, and how long a run takes
//! ([`Mode`]). Every object is written after it is acquired (all eight words) and read back
//! (volatile loads, checked) before it is released.
//!
//! - **W1 churn**: one thread, acquire → write → read → release.
//! - **W2 burst**: acquire [`BURST`] live, then release them all in the same order.
//! - **W3 pipeline**: this thread acquires and writes, a second thread reads and releases;
//!   the objects travel through a `crossbeam_queue::ArrayQueue` of [`QUEUE_CAPACITY`].
//! - **W4 contended**: two threads churn on one shared contender; the time reported is per
//!   pair of operations (one on each thread).
//! - **W5 memory** ([`memory`]) and **W6 tail latency** ([`latency`]), each in a fresh
//!   process (see [`crate::survey`]).

use std::hint::{black_box, spin_loop};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;

use crate::contender::{Contender, Inlining, Remote, With};
use crate::order::Stamp;
use crate::process::resident_bytes;
use crate::timer;

/// Objects live at once in W2.
pub const BURST: usize = 100_000;

/// Capacity of the W3 queue.
pub const QUEUE_CAPACITY: usize = 1024;

/// What a workload session hands its runner to: `run(n)` does `n` iterations of the
/// workload and returns their time.
pub type Body<'a> = &'a mut dyn FnMut(&mut dyn FnMut(u64) -> Duration);

/// The timed workloads: W1 to W4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Workload {
    Churn,
    Burst,
    Pipeline,
    Contended,
}

impl Workload {
    /// W1–W4.
    pub const ALL: [Self; 4] = [Self::Churn, Self::Burst, Self::Pipeline, Self::Contended];

    fn names(self) -> (&'static str, &'static str) {
        match self {
            Self::Churn => ("W1", "churn"),
            Self::Burst => ("W2", "burst"),
            Self::Pipeline => ("W3", "pipeline"),
            Self::Contended => ("W4", "contended"),
        }
    }

    /// `W1` to `W4`.
    pub fn id(self) -> &'static str {
        self.names().0
    }

    /// `churn`, `burst`, `pipeline`, `contended`.
    pub fn name(self) -> &'static str {
        self.names().1
    }

    /// `W1 churn` and so on.
    pub fn title(self) -> String {
        format!("{} {}", self.id(), self.name())
    }

    /// What one figure of the workload measures.
    pub fn unit(self) -> &'static str {
        match self {
            Self::Contended => "ns per pair of operations (one on each thread)",
            _ => "ns per object",
        }
    }

    /// Objects (W4: pairs of operations) one iteration stands for.
    pub fn objects_per_iteration(self) -> u64 {
        if self == Self::Burst {
            BURST as u64
        } else {
            1
        }
    }

    /// Whether `TALLY_BENCH_WORKLOADS` (prefixes such as `W1,W3`; all when unset) keeps it.
    pub fn selected(self) -> bool {
        let list = std::env::var("TALLY_BENCH_WORKLOADS").unwrap_or_default();
        let mut prefixes = (list.split(',').map(str::trim).filter(|w| !w.is_empty())).peekable();
        prefixes.peek().is_none() || prefixes.any(|w| self.title().starts_with(w))
    }
}

/// How long and how much.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The published numbers.
    Full,
    /// `TALLY_BENCH_QUICK=1` or `--quick`: short samples, indicative only.
    Quick,
    /// `--test`, or a run without `--bench` (`cargo test --benches`): one tiny pass.
    Test,
}

impl Mode {
    /// The mode the command line and the environment ask for.
    pub fn detect() -> Self {
        let has = |flag: &str| std::env::args().any(|a| a == flag);
        if has("--test") || !has("--bench") {
            Self::Test
        } else if has("--quick") || std::env::var("TALLY_BENCH_QUICK").is_ok_and(|v| v == "1") {
            Self::Quick
        } else {
            Self::Full
        }
    }

    /// [`Mode::detect`], or `None` for criterion's `--list`: the bench then measures nothing.
    pub fn start() -> Option<Self> {
        (!Self::listing()).then(Self::detect)
    }

    /// `full`, `quick` or `test`.
    pub fn name(self) -> String {
        format!("{self:?}").to_lowercase()
    }

    /// The value for this mode, of `[full, quick, test]`.
    pub fn pick<T>(self, [full, quick, test]: [T; 3]) -> T {
        match self {
            Self::Full => full,
            Self::Quick => quick,
            Self::Test => test,
        }
    }

    /// What a table's heading adds outside the full mode.
    pub fn caveat(self) -> &'static str {
        let quick = "; QUICK MODE, indicative only";
        self.pick(["", quick, quick])
    }

    /// Whether criterion's `--list` was asked for: the benches then measure nothing more.
    pub fn listing() -> bool {
        std::env::args().any(|a| a == "--list")
    }

    /// Criterion, with `short` (warm-up and measurement, 10 samples) outside the full mode,
    /// and its sample count.
    pub fn criterion(self, short: [Duration; 2]) -> (criterion::Criterion, usize) {
        let ([warm_up, measurement], samples) = match self {
            Self::Full => ([Duration::from_secs(1), Duration::from_secs(2)], 20),
            Self::Quick | Self::Test => (short, 10),
        };
        let criterion = (criterion::Criterion::default())
            .warm_up_time(warm_up)
            .measurement_time(measurement)
            .sample_size(samples)
            .nresamples(if self == Self::Full { 20_000 } else { 1_000 })
            .configure_from_args();
        (criterion, samples)
    }
}

/// W1 (and each W4 thread): `n` times acquire, write, read, release.
#[inline(always)]
fn churn<C: Contender, I: Inlining, S: Stamp>(c: &With<C, I, S>, n: u64) {
    for i in 0..n {
        let item = c.acquire(i);
        c.release(item, i);
    }
}

/// Hands `body` a runner that times `run(n)`.
fn timed(body: Body<'_>, mut run: impl FnMut(u64)) {
    body(&mut |n| {
        let start = Instant::now();
        run(n);
        start.elapsed()
    });
}

/// Runs W1 under `body`.
pub fn churn_session<C: Contender, I: Inlining, S: Stamp>(c: &With<C, I, S>, body: Body<'_>) {
    timed(body, |n| churn(c, n));
}

/// Runs W2 under `body`: acquires [`BURST`] objects, then releases them all, in the same
/// order.
pub fn burst_session<C: Contender, I: Inlining, S: Stamp>(c: &With<C, I, S>, body: Body<'_>) {
    let mut live = Vec::with_capacity(BURST);
    timed(body, |n| {
        for _ in 0..n {
            for i in 0..BURST as u64 {
                live.push(c.acquire(i));
            }
            for (i, item) in (0u64..).zip(live.drain(..)) {
                c.release(item, i);
            }
        }
    });
}

/// Runs W3 under `body`: this thread acquires `n` objects, pushing each onto the queue; the
/// helper pops them, reads and releases each.
pub fn pipeline_session<C: Remote, I: Inlining, S: Stamp>(c: &With<C, I, S>, body: Body<'_>)
where
    C::Item: Send,
{
    let (queue, releaser) = (&ArrayQueue::<C::Item>::new(QUEUE_CAPACITY), c.0.releaser());
    let produce = |n| {
        for i in 0..n {
            let (mut item, mut spins) = (c.acquire(i), 0u32);
            while let Err(back) = queue.push(item) {
                item = back;
                backoff(&mut spins);
            }
        }
    };
    let consume = |n| {
        for i in 0..n {
            let mut spins = 0u32;
            let item = loop {
                match queue.pop() {
                    Some(item) => break item,
                    None => backoff(&mut spins),
                }
            };
            With::<C, I, S>::release_remote(releaser, item, i);
        }
    };
    with_helper(|| C::remote_exit(releaser), consume, body, produce);
}

/// Runs W4 under `body`.
pub fn contended_session<C: Contender + Sync, I: Inlining, S: Stamp>(
    c: &With<C, I, S>,
    body: Body<'_>,
) {
    with_helper(|| c.0.thread_exit(), |n| churn(c, n), body, |n| churn(c, n));
}

/// Times, under `body`, `main(n)` on this thread while a helper thread runs `work(n)`;
/// the helper calls `on_exit` before it exits.
fn with_helper(
    on_exit: impl FnOnce() + Send,
    work: impl Fn(u64) + Sync,
    body: Body<'_>,
    main: impl Fn(u64),
) {
    /// Stops the helper when the body returns or unwinds.
    struct StopOnDrop<'a>(&'a AtomicU64);
    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(STOP, Ordering::Release);
        }
    }
    const STOP: u64 = u64::MAX;
    // 0: idle; `STOP`: exit; otherwise the size of the job to run.
    let job = AtomicU64::new(0);
    thread::scope(|scope| {
        scope.spawn(|| {
            let mut spins = 0u32;
            loop {
                match job.load(Ordering::Acquire) {
                    0 => backoff(&mut spins),
                    STOP => break,
                    n => {
                        work(n);
                        spins = 0;
                        // Not a plain store: a stop requested meanwhile must not be lost.
                        let _ = job.compare_exchange(n, 0, Ordering::Release, Ordering::Relaxed);
                    }
                }
            }
            on_exit();
        });
        let _stop = StopOnDrop(&job);
        timed(body, |n| {
            job.store(n, Ordering::Release);
            main(n);
            let mut spins = 0u32;
            while job.load(Ordering::Acquire) != 0 {
                backoff(&mut spins);
            }
        });
    })
}

/// Acquires objects `0..n`, into a vector of capacity `n`.
fn acquire_all<C: Contender, I: Inlining, S: Stamp>(c: &With<C, I, S>, n: usize) -> Vec<C::Item> {
    (0..n as u64).map(|i| c.acquire(i)).collect()
}

/// W5: acquires `n` objects and reads the resident size with all of them live.
pub fn memory<C: Contender, I: Inlining, S: Stamp>(c: &With<C, I, S>, n: usize) -> Option<u64> {
    let items = acquire_all(c, n);
    let resident = resident_bytes();
    black_box(&items);
    // The child exits next: releasing a million objects is not part of the measurement.
    core::mem::forget(items);
    resident
}

/// W6: `n` acquires timed one by one, in ticks of [`timer::now`], with all objects kept
/// live; first one untimed acquire-all/release-all pass if `warm`.
pub fn latency<C: Contender, I: Inlining, S: Stamp>(
    c: &With<C, I, S>,
    n: usize,
    warm: bool,
) -> Vec<u64> {
    let mut items = if warm {
        acquire_all(c, n)
    } else {
        Vec::with_capacity(n)
    };
    // Touched now, so that recording a time never faults a page in.
    let mut ticks = vec![1u64; n];
    for (i, item) in (0u64..).zip(items.drain(..)) {
        c.release(item, i);
    }
    for (i, slot) in (0u64..).zip(ticks.iter_mut()) {
        let start = timer::now();
        let item = c.acquire(i);
        let end = timer::now();
        *slot = end.wrapping_sub(start);
        items.push(item);
    }
    black_box(&items);
    core::mem::forget(items);
    ticks
}

/// Waits for the other thread: spins, then yields, then sleeps. On one CPU, a waiter that
/// only spins or yields (weak under EEVDF) burns whole time slices; one that sleeps lets its
/// partner run. Threads on separate CPUs never wait long enough to sleep.
#[inline]
fn backoff(spins: &mut u32) {
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
