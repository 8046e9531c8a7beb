//! Threads of a test telling each other they are done, and a watchdog that fails a test
//! whose threads stop making progress instead of letting it hang.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// Counts a worker out of a count of running workers when dropped: when it returns and
/// when it panics, so that a thread waiting for the workers stops either way.
#[derive(Debug)]
pub(crate) struct WorkerDone<'a>(pub(crate) &'a AtomicUsize);

impl Drop for WorkerDone<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Sets the flag when dropped, panicking or not.
#[derive(Debug)]
pub(crate) struct SetOnDrop<'a>(pub(crate) &'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A step function, called in a loop on a thread of its own, and the thread's name.
pub(crate) type Step = (String, Box<dyn Fn() + Send>);

/// Runs each step in a loop on a thread of its own for `run_for`, then stops and joins
/// them. Fails the test if any thread completes no step for `stall` (the pool is
/// deadlocked), without joining the stuck threads: the test's panic still ends the test,
/// and the binary exits once every test is done, stuck threads or not.
pub(crate) fn run_steps(run_for: Duration, stall: Duration, steps: Vec<Step>) {
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = steps
        .into_iter()
        .map(|(name, step)| {
            let stop = Arc::clone(&stop);
            let done = Arc::new(AtomicU64::new(0));
            let mine = Arc::clone(&done);
            let handle = thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    step();
                    mine.fetch_add(1, Ordering::Relaxed);
                }
            });
            (name, done, handle)
        })
        .collect();
    watch(&workers, &stop, run_for, stall);
    for (_, _, handle) in workers {
        handle.join().unwrap();
    }
}

/// Lets the workers run for `run_for`, then tells them to stop; returns once each has
/// completed a step since (so each is out of the pool and about to see `stop`). Panics if
/// any of them completes none for `stall`.
fn watch(
    workers: &[(String, Arc<AtomicU64>, thread::JoinHandle<()>)],
    stop: &AtomicBool,
    run_for: Duration,
    stall: Duration,
) {
    let start = Instant::now();
    let mut last: Vec<(u64, Instant)> = workers
        .iter()
        .map(|(_, steps, _)| (steps.load(Ordering::Relaxed), start))
        .collect();
    let mut stop_seen: Option<Vec<u64>> = None;
    loop {
        thread::sleep(Duration::from_millis(50));
        let now = Instant::now();
        for ((name, steps, handle), (seen_before, since)) in workers.iter().zip(&mut last) {
            let seen = steps.load(Ordering::Relaxed);
            if seen != *seen_before || handle.is_finished() {
                *seen_before = seen;
                *since = now;
            } else if now - *since > stall {
                panic!(
                    "{name} made no progress in the {stall:?} from {:?} into the run on \
                     ({seen} steps done): the pool is deadlocked",
                    *since - start
                );
            }
        }
        match &stop_seen {
            None if now - start >= run_for => {
                stop.store(true, Ordering::Relaxed);
                stop_seen = Some(last.iter().map(|&(s, _)| s).collect());
            }
            Some(at_stop) => {
                let all_moved = workers.iter().zip(at_stop).all(|((_, steps, h), &s)| {
                    h.is_finished() || steps.load(Ordering::Relaxed) > s
                });
                if all_moved {
                    return;
                }
            }
            None => {}
        }
    }
}
