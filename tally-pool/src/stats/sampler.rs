//! Sampling: [`sample`] records every component's live bytes into the history that leak
//! detection judges; [`start_sampler`] runs it on one background thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use super::error::StatsError;
use super::history;
use super::registry::{self, ComponentId};
use super::source::ComponentSnapshot;

/// Whether a sampler thread runs (at most one per process).
static RUNNING: AtomicBool = AtomicBool::new(false);

/// Takes one sample of every live component now: live bytes and objects go into the
/// history (a bounded ring per component; components that disappeared are forgotten), and
/// the leak and fragmentation conclusions are brought up to date. [`start_sampler`] calls
/// it on a thread; call it by hand to drive sampling yourself.
///
/// ```
/// use tally_pool::stats::{self, Component};
/// let c = Component::register("doc-sample");
/// c.add(1024);
/// stats::sample();
/// assert!(stats::report().leaks.iter().all(|l| l.component_id != c.id())); // too early to tell
/// ```
pub fn sample() {
    // The time is taken before the members are read, so a sample that saw a component
    // that has since gone is older than, and ignored after, one that did not see it.
    let at = history::now();
    // A refused list skips the sample: an empty one would read as every component gone.
    let Some(members) = registry::try_members() else {
        return;
    };
    let ids: Vec<ComponentId> = members.iter().map(|member| member.id).collect();
    let mut taken: Vec<ComponentSnapshot> = members
        .iter()
        .map(|member| member.source.source().snapshot())
        .collect();
    // Each sample also moves the peaks the health rules read.
    registry::fill_peaks(&ids, &mut taken);
    let snapshots: Vec<(ComponentId, ComponentSnapshot)> = ids.into_iter().zip(taken).collect();
    // The sources drop here, one by one, before the history lock: a drop may unregister.
    let names: Vec<(ComponentId, std::sync::Arc<str>)> =
        registry::release(members, |id, name, _| (id, name));
    let observed: Vec<(ComponentId, &ComponentSnapshot)> =
        snapshots.iter().map(|(id, s)| (*id, s)).collect();
    let changed = history::record(at, &observed);
    #[cfg(feature = "tracing")]
    for (id, suspect) in &changed {
        if let Some((_, name)) = names.iter().find(|(n, _)| n == id) {
            super::export::leak_verdict_changed(name, id.get(), *suspect);
        }
    }
    #[cfg(not(feature = "tracing"))]
    let _ = (changed, names);
    #[cfg(feature = "metrics")]
    super::export::publish(&super::assemble::compose(false));
}

/// Starts the background sampler: one thread, named `tally-stats`, that calls [`sample`]
/// every `interval` until the returned guard drops.
///
/// # Errors
///
/// - [`StatsError::SamplerRunning`] while another sampler runs (its guard not dropped);
/// - [`StatsError::ZeroInterval`] for a zero `interval`;
/// - [`StatsError::Spawn`] when the OS refuses the thread.
///
/// ```
/// use std::time::Duration;
/// use tally_pool::stats;
///
/// let sampler = stats::start_sampler(Duration::from_millis(100))?;
/// assert!(stats::start_sampler(Duration::from_secs(1)).is_err()); // one at a time
/// drop(sampler); // stops and joins the thread
/// # Ok::<(), tally_pool::stats::StatsError>(())
/// ```
pub fn start_sampler(interval: Duration) -> Result<SamplerGuard, StatsError> {
    if interval.is_zero() {
        return Err(StatsError::ZeroInterval);
    }
    if RUNNING.swap(true, Ordering::AcqRel) {
        return Err(StatsError::SamplerRunning);
    }
    let (stop, stopped) = mpsc::channel::<()>();
    let alive = Arc::new(());
    let watch = Arc::downgrade(&alive);
    let release = Arc::new(AtomicBool::new(false));
    let release_on_exit = Arc::clone(&release);
    let spawned = std::thread::Builder::new()
        .name("tally-stats".into())
        .spawn(move || {
            let _alive = alive;
            let _release = ReleaseOnExit(release_on_exit);
            loop {
                sample();
                match stopped.recv_timeout(interval) {
                    Err(RecvTimeoutError::Timeout) => continue,
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
                }
            }
        });
    match spawned {
        Ok(thread) => Ok(SamplerGuard {
            stop: Some(stop),
            thread: Some(thread),
            alive: watch,
            release,
        }),
        Err(error) => {
            RUNNING.store(false, Ordering::Release);
            Err(StatsError::Spawn(error))
        }
    }
}

/// Whether a sampler started by [`start_sampler`] is running.
///
/// ```
/// use std::time::Duration;
/// use tally_pool::stats;
/// let guard = stats::start_sampler(Duration::from_secs(1));
/// assert!(stats::sampler_running()); // ours, or another one that refused ours
/// drop(guard);
/// ```
pub fn sampler_running() -> bool {
    RUNNING.load(Ordering::Acquire)
}

/// Keeps the background sampler running; dropping it stops the thread and joins it. The
/// drop holds no lock while it waits, and the thread finishes the sample it may be taking.
///
/// ```
/// use std::time::Duration;
/// let guard = tally_pool::stats::start_sampler(Duration::from_secs(1))?;
/// drop(guard);
/// assert!(!tally_pool::stats::sampler_running());
/// # Ok::<(), tally_pool::stats::StatsError>(())
/// ```
#[derive(Debug)]
#[must_use = "dropping the guard stops the sampler at once"]
pub struct SamplerGuard {
    /// Closed (dropped) to wake and stop the thread.
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
    /// Upgradable while the thread's closure has not returned.
    alive: Weak<()>,
    /// Set by a drop of the guard on the sampler thread itself (from a source's
    /// `snapshot`), which cannot join: the thread then lets a new sampler start as it
    /// exits ([`ReleaseOnExit`]).
    release: Arc<AtomicBool>,
}

/// Held by the sampler thread: as it exits, even by a panic, clears `RUNNING` if its guard
/// was dropped on the thread itself.
struct ReleaseOnExit(Arc<AtomicBool>);

impl Drop for ReleaseOnExit {
    fn drop(&mut self) {
        if self.0.load(Ordering::Acquire) {
            RUNNING.store(false, Ordering::Release);
        }
    }
}

impl SamplerGuard {
    /// Whether the sampler thread is still running: `false` once it has stopped early
    /// (a source's `snapshot` panicked on it).
    ///
    /// ```
    /// use std::time::Duration;
    /// let guard = tally_pool::stats::start_sampler(Duration::from_secs(1))?;
    /// assert!(guard.is_running());
    /// # Ok::<(), tally_pool::stats::StatsError>(())
    /// ```
    pub fn is_running(&self) -> bool {
        self.alive.strong_count() > 0
    }
}

impl Drop for SamplerGuard {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            if thread.thread().id() == std::thread::current().id() {
                // Dropped by a source's `snapshot` on the sampler thread: the thread stops
                // after this sample (the channel closes below) and lets a new sampler
                // start as it exits, after its last sample.
                self.release.store(true, Ordering::Release);
                drop(self.stop.take());
                return;
            }
            drop(self.stop.take());
            // A panic in a source's `snapshot` ended the thread early; nothing to add.
            let _ = thread.join();
        }
        RUNNING.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Component;

    #[test]
    fn one_sampler_at_a_time_and_drop_joins() {
        // The only test that starts the process-wide sampler.
        assert!(matches!(
            start_sampler(Duration::ZERO),
            Err(StatsError::ZeroInterval)
        ));
        let guard = start_sampler(Duration::from_millis(1)).unwrap();
        assert!(sampler_running());
        assert!(matches!(
            start_sampler(Duration::from_millis(1)),
            Err(StatsError::SamplerRunning)
        ));
        std::thread::sleep(Duration::from_millis(20));
        let alive = guard.alive.clone();
        assert!(guard.is_running());
        drop(guard);
        // The thread's closure has returned: the drop joined it.
        assert!(alive.upgrade().is_none());
        assert!(!sampler_running());
        // A new sampler can start at once, and a long interval does not delay its stop.
        let again = start_sampler(Duration::from_secs(3600)).unwrap();
        let alive = again.alive.clone();
        drop(again);
        assert!(alive.upgrade().is_none());

        // A guard dropped on the sampler thread itself, by a component's `snapshot` that
        // held it: that drop cannot join, and the thread lets a new sampler start as it
        // exits.
        static HELD: std::sync::Mutex<Option<SamplerGuard>> = std::sync::Mutex::new(None);
        struct DropsTheSampler;
        impl crate::stats::Source for DropsTheSampler {
            fn snapshot(&self) -> ComponentSnapshot {
                let guard = HELD.lock().unwrap_or_else(|p| p.into_inner()).take();
                drop(guard);
                ComponentSnapshot::default()
            }
        }
        let source: Arc<dyn crate::stats::Source> = Arc::new(DropsTheSampler);
        let listed = registry::register(
            "drops-the-sampler",
            crate::stats::Kind::User,
            Arc::downgrade(&source),
        );
        let guard = start_sampler(Duration::from_millis(1)).unwrap();
        let alive = guard.alive.clone();
        *HELD.lock().unwrap() = Some(guard);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while alive.upgrade().is_some() || sampler_running() {
            assert!(
                std::time::Instant::now() < deadline,
                "the sampler never stopped"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(listed);
        drop(start_sampler(Duration::from_millis(1)).unwrap());
    }

    #[test]
    fn sample_by_hand_records_live_components() {
        let c = Component::register("sampler-by-hand");
        c.add(4096);
        sample();
        let concluded = history::conclusions(&[c.id()]);
        assert!(matches!(concluded.as_slice(), [Some(conclusion)] if conclusion.leak.is_none()));
        let id = c.id();
        drop(c);
        sample();
        assert_eq!(history::conclusions(&[id]), vec![None]);
    }
}
