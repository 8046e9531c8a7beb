//! [`PressureMonitor`]: the one thread that reads the sources, sets the level, runs the
//! transition hooks, asks components for memory and grows busy pools ahead of demand.
//!
//! The monitor never holds a lock while it calls a hook or a component: hooks are cloned
//! out of their list, components come from the registry as a list of held references. The
//! state it publishes (for [`PressureMonitor::sources`] and the report) sits behind a
//! mutex that only copies are made under.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::config::{PressureConfig, PressureError};
use super::reclaim::{self, Reclamation};
use super::source::{Slot, SourceKind, SourceStatus};
use super::state::{lock, Hook, Published, Shared, Transition, TICK_RING};
use super::ticker::Ticker;
use crate::sys::budget::{self, PressureLevel};
use crate::sys::limits;

/// Whether a monitor runs in this process.
static RUNNING: AtomicBool = AtomicBool::new(false);

/// The running monitor's shared state, for the report.
static CURRENT: Mutex<Option<Weak<Shared>>> = Mutex::new(None);

/// The shortest wait between growth polls, between ticks while pools grow (see [`run`]):
/// at 25 million 64-byte acquires a second, 2,500 blocks, within what a growing pool keeps
/// ahead.
const GROW_POLL: Duration = Duration::from_micros(100);

/// The memory-pressure monitor: one thread that reads every source each
/// [`interval`](PressureConfig::interval), sets [`pressure::level`](super::level), runs
/// the [`on_transition`](Self::on_transition) hooks and asks components for memory.
/// Dropping it stops and joins the thread and sets the level back to Normal.
///
/// At most one monitor runs in a process; [`start`](Self::start) fails with
/// [`PressureError::AlreadyRunning`] while one does.
///
/// ```
/// use std::time::Duration;
/// use tally_pool::pressure::{self, PressureConfig, PressureError, PressureMonitor};
///
/// let config = PressureConfig::default()
///     .budget(8 << 30)
///     .interval(Duration::from_millis(10));
/// let monitor = PressureMonitor::start(config)?;
/// monitor.on_transition(|t| eprintln!("{:?} -> {:?} at {:.0} %", t.from, t.to, t.utilisation * 100.0));
/// assert!(matches!(
///     PressureMonitor::start(PressureConfig::default()),
///     Err(PressureError::AlreadyRunning)
/// ));
/// let _level = pressure::level();
/// drop(monitor); // stops and joins the thread
/// # Ok::<(), PressureError>(())
/// ```
#[derive(Debug)]
pub struct PressureMonitor {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("config", &self.config)
            .field("ticks", &self.ticks)
            .finish_non_exhaustive()
    }
}

impl PressureMonitor {
    /// Checks `config`, sets the budget's thresholds, runs the first tick on the calling
    /// thread (every source read, the level set, its reclamation asked for) and starts the
    /// monitor thread.
    ///
    /// # Errors
    ///
    /// [`PressureError::AlreadyRunning`] while another monitor runs,
    /// [`PressureError::InvalidConfig`] for settings out of range,
    /// [`PressureError::Spawn`] when the OS refuses the thread.
    ///
    /// ```
    /// use tally_pool::pressure::{PressureConfig, PressureMonitor};
    /// let monitor = PressureMonitor::start(PressureConfig::default())?;
    /// assert!(monitor.ticks() >= 1);
    /// # Ok::<(), tally_pool::pressure::PressureError>(())
    /// ```
    pub fn start(config: PressureConfig) -> Result<Self, PressureError> {
        config.validate()?;
        if RUNNING
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err(PressureError::AlreadyRunning);
        }
        let now = Instant::now();
        let shared = Arc::new(Shared {
            config,
            stop: AtomicBool::new(false),
            hooks: Mutex::new(Arc::new([])),
            published: Mutex::new(Published {
                slots: SourceKind::ALL.map(Slot::new),
                level: PressureLevel::Normal,
                utilisation: None,
                source: SourceKind::Budget,
                since: now,
                last_reclamation: None,
            }),
            hook_panics: AtomicU64::new(0),
            source_panics_before: reclaim::source_panics(),
            finish_on_exit: AtomicBool::new(false),
            ticks: AtomicU64::new(0),
            busy_nanos: AtomicU64::new(0),
            tid: AtomicI32::new(0),
            recent: [const { AtomicU64::new(0) }; TICK_RING],
        });
        budget::set_level(PressureLevel::Normal);
        match shared.config.budget {
            Some(bytes) => {
                let at = |share: f64| (bytes as f64 * share) as usize;
                let [m, h, c] = shared.config.thresholds;
                budget::set_thresholds(at(m), at(h), at(c));
            }
            None => budget::clear_thresholds(),
        }
        let mut ticker = Ticker::new(&shared.config, now);
        // The first tick runs here, so the sources are known when `start` returns. What a
        // component does in it is caught (see `reclaim::caught`), as on the thread.
        reclaim::source_call(0, || ticker.tick(&shared));
        let for_thread = Arc::clone(&shared);
        let spawned = thread::Builder::new()
            .name("tally-pressure".to_owned())
            .spawn(move || run(&for_thread, ticker));
        let thread = match spawned {
            Ok(thread) => thread,
            Err(e) => {
                finish();
                return Err(PressureError::Spawn(e));
            }
        };
        *lock(&CURRENT) = Some(Arc::downgrade(&shared));
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// Adds a hook that runs on the monitor thread at every change of level. A hook that
    /// panics is caught and counted ([`hook_panics`](Self::hook_panics)); the monitor goes
    /// on. Hooks should be short: the next tick waits for them.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use std::sync::Arc;
    /// use tally_pool::pressure::{PressureConfig, PressureMonitor};
    /// let monitor = PressureMonitor::start(PressureConfig::default())?;
    /// let seen = Arc::new(AtomicUsize::new(0));
    /// let counter = Arc::clone(&seen);
    /// monitor.on_transition(move |_| {
    ///     counter.fetch_add(1, Ordering::Relaxed);
    /// });
    /// # Ok::<(), tally_pool::pressure::PressureError>(())
    /// ```
    pub fn on_transition<F>(&self, hook: F)
    where
        F: Fn(&Transition) + Send + Sync + 'static,
    {
        let hook: Hook = Arc::new(hook);
        let mut hooks = lock(&self.shared.hooks);
        *hooks = hooks.iter().cloned().chain([hook]).collect();
    }

    /// Every source, in [`SourceKind::ALL`] order, as of the last tick: its reading or why
    /// it was skipped.
    ///
    /// ```
    /// use tally_pool::pressure::{PressureConfig, PressureMonitor, SourceKind};
    /// let monitor = PressureMonitor::start(PressureConfig::default())?;
    /// let sources = monitor.sources();
    /// assert_eq!(sources[0].kind, SourceKind::Budget);
    /// assert!(sources[0].skipped.is_some()); // no budget configured
    /// # Ok::<(), tally_pool::pressure::PressureError>(())
    /// ```
    pub fn sources(&self) -> Vec<SourceStatus> {
        let slots = lock(&self.shared.published).slots;
        slots.iter().map(SourceStatus::from).collect()
    }

    /// The level as of the last tick (or raised since by a mapping, see
    /// [`pressure::level`](super::level)).
    ///
    /// ```
    /// use tally_pool::pressure::{PressureConfig, PressureLevel, PressureMonitor};
    /// let monitor = PressureMonitor::start(PressureConfig::default())?;
    /// assert!(monitor.level() <= PressureLevel::Critical);
    /// # Ok::<(), tally_pool::pressure::PressureError>(())
    /// ```
    pub fn level(&self) -> PressureLevel {
        lock(&self.shared.published).level.max(budget::level())
    }

    /// The highest utilisation of any source at the last tick, and that source.
    ///
    /// ```
    /// use tally_pool::pressure::{PressureConfig, PressureMonitor, SourceKind};
    /// let monitor = PressureMonitor::start(PressureConfig::default().budget(1 << 40))?;
    /// let (utilisation, _source) = monitor.utilisation();
    /// assert!(utilisation.unwrap_or(0.0) < 1.0);
    /// # Ok::<(), tally_pool::pressure::PressureError>(())
    /// ```
    pub fn utilisation(&self) -> (Option<f64>, SourceKind) {
        let p = lock(&self.shared.published);
        (p.utilisation, p.source)
    }

    /// The last round of reclamation, if any has run.
    ///
    /// ```
    /// use tally_pool::pressure::{PressureConfig, PressureMonitor};
    /// let monitor = PressureMonitor::start(PressureConfig::default())?;
    /// let _ = monitor.last_reclamation();
    /// # Ok::<(), tally_pool::pressure::PressureError>(())
    /// ```
    pub fn last_reclamation(&self) -> Option<Reclamation> {
        lock(&self.shared.published).last_reclamation
    }

    /// How many transition hooks have panicked.
    ///
    /// ```
    /// use tally_pool::pressure::{PressureConfig, PressureMonitor};
    /// let monitor = PressureMonitor::start(PressureConfig::default())?;
    /// assert_eq!(monitor.hook_panics(), 0);
    /// # Ok::<(), tally_pool::pressure::PressureError>(())
    /// ```
    pub fn hook_panics(&self) -> u64 {
        self.shared.hook_panics.load(Ordering::Relaxed)
    }

    /// How many calls into registered components (their
    /// [`Source`](crate::stats::Source) methods, or the drop of a component's last
    /// handle) have panicked on the monitor since it started. Each is caught; the
    /// component's answer then counts as 0 and the monitor goes on.
    ///
    /// ```
    /// use tally_pool::pressure::{PressureConfig, PressureMonitor};
    /// let monitor = PressureMonitor::start(PressureConfig::default())?;
    /// assert_eq!(monitor.source_panics(), 0);
    /// # Ok::<(), tally_pool::pressure::PressureError>(())
    /// ```
    pub fn source_panics(&self) -> u64 {
        reclaim::source_panics().saturating_sub(self.shared.source_panics_before)
    }

    /// How many ticks have run.
    ///
    /// ```
    /// use tally_pool::pressure::{PressureConfig, PressureMonitor};
    /// let monitor = PressureMonitor::start(PressureConfig::default())?;
    /// assert!(monitor.ticks() >= 1);
    /// # Ok::<(), tally_pool::pressure::PressureError>(())
    /// ```
    pub fn ticks(&self) -> u64 {
        self.shared.ticks.load(Ordering::Relaxed)
    }

    /// The wall time spent inside ticks and growth polls so far (an upper bound of the
    /// monitor's CPU time while it works; it sleeps in between).
    ///
    /// ```
    /// use tally_pool::pressure::{PressureConfig, PressureMonitor};
    /// let monitor = PressureMonitor::start(PressureConfig::default())?;
    /// assert!(monitor.busy_time() > std::time::Duration::ZERO);
    /// # Ok::<(), tally_pool::pressure::PressureError>(())
    /// ```
    pub fn busy_time(&self) -> Duration {
        Duration::from_nanos(self.shared.busy_nanos.load(Ordering::Relaxed))
    }

    /// The durations of the most recent ticks (up to 256), oldest first.
    ///
    /// ```
    /// use tally_pool::pressure::{PressureConfig, PressureMonitor};
    /// let monitor = PressureMonitor::start(PressureConfig::default())?;
    /// assert!(!monitor.recent_ticks().is_empty());
    /// # Ok::<(), tally_pool::pressure::PressureError>(())
    /// ```
    pub fn recent_ticks(&self) -> Vec<Duration> {
        let ticks = self.ticks();
        let kept = ticks.min(TICK_RING as u64);
        (ticks - kept..ticks)
            .filter_map(|i| self.shared.recent.get((i % TICK_RING as u64) as usize))
            .map(|slot| Duration::from_nanos(slot.load(Ordering::Relaxed)))
            .collect()
    }

    /// The monitor thread's kernel thread id (for `/proc/self/task/<tid>/stat`), once it
    /// runs.
    ///
    /// ```
    /// use tally_pool::pressure::{PressureConfig, PressureMonitor};
    /// let monitor = PressureMonitor::start(PressureConfig::default())?;
    /// std::thread::sleep(std::time::Duration::from_millis(50));
    /// assert!(monitor.thread_id().is_some());
    /// # Ok::<(), tally_pool::pressure::PressureError>(())
    /// ```
    pub fn thread_id(&self) -> Option<i32> {
        let tid = self.shared.tid.load(Ordering::Relaxed);
        (tid > 0).then_some(tid)
    }
}

impl Drop for PressureMonitor {
    fn drop(&mut self) {
        let Some(thread) = self.thread.take() else {
            finish();
            return;
        };
        if thread.thread().id() == thread::current().id() {
            // Dropped by a hook or a component on the monitor thread: it cannot join
            // itself. It stops at the end of this tick and forgets the monitor as it exits,
            // after its last act, so that no newer monitor sees this one's level.
            self.shared.finish_on_exit.store(true, Ordering::Release);
            self.shared.stop.store(true, Ordering::Release);
            return;
        }
        self.shared.stop.store(true, Ordering::Release);
        thread.thread().unpark();
        // Nothing on the monitor thread unwinds (hooks and components are caught); a join
        // error would only say the thread is gone, which is what we want.
        let _ = thread.join();
        finish();
    }
}

/// Forgets the running monitor: no budget, level Normal, a new `start` allowed.
fn finish() {
    *lock(&CURRENT) = None;
    budget::clear_thresholds();
    budget::set_level(PressureLevel::Normal);
    #[cfg(feature = "metrics")]
    metrics::gauge!("tally_pool_pressure_level").set(0.0);
    RUNNING.store(false, Ordering::Release);
}

/// The monitor thread. Between ticks, once growth ahead of demand has made memory ready,
/// it runs growth ahead alone: [`GROW_POLL`] later, and then, for as long as passes make
/// nothing, after twice the last wait, until the wait would reach the interval. A pool
/// that takes blocks faster than a tick's worth ahead is kept ahead, and an idle process
/// sleeps whole intervals.
fn run(shared: &Shared, ticker: Ticker) {
    shared.tid.store(limits::thread_id(), Ordering::Relaxed);
    run_until_stopped(shared, ticker);
    if shared.finish_on_exit.load(Ordering::Acquire) {
        finish();
    }
}

/// [`run`]'s loop.
fn run_until_stopped(shared: &Shared, mut ticker: Ticker) {
    let interval = shared.config.interval;
    // `start` ran the first tick: wait an interval before the next.
    let mut next = Instant::now() + interval;
    // The next growth poll, and the wait that led to it; the first tick (in `start`) may
    // have made memory ready, so a series of polls starts.
    let mut poll = ticker
        .grow_ahead
        .then(|| (Instant::now() + GROW_POLL, GROW_POLL));
    loop {
        let now = Instant::now();
        let wake = poll.map_or(next, |(at, _)| at.min(next));
        if let Some(wait) = wake.checked_duration_since(now).filter(|w| !w.is_zero()) {
            // A hook that parked (on a channel, a lock) may have taken the wake-up of the
            // drop: look before sleeping. A drop after this look wakes the park below.
            if shared.stop.load(Ordering::Acquire) {
                return;
            }
            thread::park_timeout(wait);
        }
        if shared.stop.load(Ordering::Acquire) {
            return;
        }
        let now = Instant::now();
        let (made, waited) = if now >= next {
            let made = reclaim::source_call(0, || ticker.tick(shared));
            next = Instant::now() + interval;
            (made, poll.map_or(GROW_POLL, |(_, waited)| waited))
        } else if let Some((_, waited)) = poll.filter(|&(at, _)| now >= at) {
            (reclaim::source_call(0, || ticker.grow(shared)), waited)
        } else {
            continue; // woken early (spuriously or by `unpark`)
        };
        let wait = if made > 0 {
            GROW_POLL
        } else {
            waited.saturating_mul(2)
        };
        poll = (made > 0 || poll.is_some())
            .then(|| (Instant::now() + wait, wait))
            .filter(|_| wait < interval);
    }
}

/// The running monitor's view, for the report.
#[derive(Debug, Clone, Copy)]
pub(crate) struct View {
    pub(crate) level: PressureLevel,
    pub(crate) utilisation: Option<f64>,
    /// The deciding source.
    pub(crate) source: SourceKind,
    /// When the level was entered.
    pub(crate) since: Instant,
    pub(crate) last_reclamation: Option<Reclamation>,
}

/// What the running monitor published last, if a monitor runs.
pub(crate) fn current() -> Option<View> {
    let shared = lock(&CURRENT).as_ref()?.upgrade()?;
    let p = *lock(&shared.published);
    Some(View {
        level: p.level.max(budget::level()),
        utilisation: p.utilisation,
        source: p.source,
        since: p.since,
        last_reclamation: p.last_reclamation,
    })
}
