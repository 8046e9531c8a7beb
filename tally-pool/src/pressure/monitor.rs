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
use super::levels::{Levels, Rules};
use super::readers::Readers;
use super::reclaim::{self, Reclamation};
use super::source::{Skip, Slot, SourceKind, SourceStatus};
use crate::sys::budget::{self, PressureLevel};
use crate::sys::limits;

/// A change of level, as the transition hooks see it.
///
/// ```
/// use tally_pool::pressure::{PressureLevel, Transition};
/// fn log(t: &Transition) {
///     eprintln!("{} -> {} at {:.0} % ({})", t.from, t.to, t.utilisation * 100.0, t.source);
/// }
/// # let _ = log;
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct Transition {
    /// The level before.
    pub from: PressureLevel,
    /// The level now.
    pub to: PressureLevel,
    /// The highest utilisation of any source at the change (0 when none applies).
    pub utilisation: f64,
    /// The source that decided: the one with the highest utilisation, or the one whose
    /// signal escalated, or the budget when a mapping raised the level.
    pub source: SourceKind,
    /// When the monitor saw the change.
    pub at: Instant,
}

/// A transition hook.
type Hook = Arc<dyn Fn(&Transition) + Send + Sync>;

/// Whether a monitor runs in this process.
static RUNNING: AtomicBool = AtomicBool::new(false);

/// The running monitor's shared state, for the report.
static CURRENT: Mutex<Option<Weak<Shared>>> = Mutex::new(None);

/// Every this many ticks the slow sources are read: `/proc/meminfo` (the kernel builds it
/// for each read, some 25 µs) while the system's utilisation is [`FAR_BELOW`] or more
/// below the Moderate threshold, and PSI, whose `avg10` is a ten-second average anyway.
const SLOW_EVERY: u64 = 10;

/// How far below the Moderate threshold the system source may be read less often.
const FAR_BELOW: f64 = 0.10;

/// How often housekeeping (`Urgency::Low`) runs at Normal: a round asks every component,
/// which costs some 100 µs a pool, so it stays rare where nothing presses.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(10);

/// Tick durations kept for [`PressureMonitor::recent_ticks`].
const TICK_RING: usize = 256;

/// The shortest wait between growth polls, between ticks while pools grow (see [`run`]):
/// at 25 million 64-byte acquires a second, 2,500 blocks, within what a growing pool keeps
/// ahead.
const GROW_POLL: Duration = Duration::from_micros(100);

/// What the monitor thread and its handle share.
struct Shared {
    config: PressureConfig,
    stop: AtomicBool,
    /// The transition hooks, replaced whole when one is added, so that a transition takes
    /// them with a reference count alone: it allocates nothing, however short memory is.
    hooks: Mutex<Arc<[Hook]>>,
    published: Mutex<Published>,
    hook_panics: AtomicU64,
    /// `reclaim::source_panics()` when the monitor started.
    source_panics_before: u64,
    /// Set by a drop of the monitor's handle on the monitor thread itself (from a hook, or
    /// a component's method, that held the last handle): that drop cannot join, so the
    /// thread forgets the monitor ([`finish`]) as it exits.
    finish_on_exit: AtomicBool,
    ticks: AtomicU64,
    busy_nanos: AtomicU64,
    /// The monitor thread's kernel id, 0 until it runs.
    tid: AtomicI32,
    /// The last [`TICK_RING`] tick durations in nanoseconds, at `ticks % TICK_RING`.
    recent: [AtomicU64; TICK_RING],
}

/// What the monitor publishes after each tick.
#[derive(Debug, Clone, Copy)]
struct Published {
    slots: [Slot; 6],
    level: PressureLevel,
    utilisation: Option<f64>,
    source: SourceKind,
    since: Instant,
    last_reclamation: Option<Reclamation>,
}

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

/// Locks `mutex`, ignoring poisoning: the monitor's critical sections only copy plain
/// data, and hooks run outside them.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
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

/// The state the monitor thread keeps between ticks.
#[derive(Debug)]
struct Ticker {
    readers: Readers,
    rules: Rules,
    levels: Levels,
    slots: [Slot; 6],
    budget: Option<u64>,
    psi_threshold: f64,
    idle_after: Duration,
    reclaim_every: Duration,
    grow_ahead: bool,
    /// When reclamation was last asked.
    last_reclaim: Option<Instant>,
    /// Whether a due round was skipped (the allocator refused its list of members): the
    /// next tick asks again, whatever the period says.
    skipped: bool,
    /// Ticks read so far, for the sources read only every [`SLOW_EVERY`] ticks.
    reads: u64,
}

impl Ticker {
    fn new(config: &PressureConfig, now: Instant) -> Self {
        Self {
            readers: Readers::new(&config.root),
            rules: Rules::from(config),
            levels: Levels::new(now),
            slots: SourceKind::ALL.map(Slot::new),
            budget: config.budget,
            psi_threshold: config.psi_threshold,
            idle_after: config.idle_after,
            reclaim_every: config.reclaim_every,
            grow_ahead: config.grow_ahead,
            last_reclaim: None,
            skipped: false,
            reads: 0,
        }
    }

    /// Reads the sources into `slots`.
    fn read(&mut self) {
        let [budget_slot, v2, v1, rlimit, system, psi] = &mut self.slots;
        match self.budget {
            Some(bytes) => budget_slot.read(budget::mapped() as u64, bytes),
            None => budget_slot.skip(Skip::NotConfigured),
        }
        self.readers.read_cgroup(v2, v1);
        self.readers.read_rlimit(rlimit);
        let slow_due = self.reads % SLOW_EVERY == 0;
        self.reads = self.reads.wrapping_add(1);
        if v2.utilisation().is_some()
            || v1.utilisation().is_some()
            || rlimit.utilisation().is_some()
        {
            system.skip(Skip::LimitApplies);
        } else if slow_due
            || system
                .utilisation()
                .is_none_or(|u| u >= self.rules.thresholds[0] - FAR_BELOW)
        {
            self.readers.read_system(system);
        }
        if slow_due {
            self.readers.read_psi(psi, self.psi_threshold);
        }
    }

    /// One tick: read, decide, publish, run hooks, reclaim, grow ahead.
    /// Growth ahead of demand alone, between ticks; returns the bytes made ready. Its time
    /// counts in [`PressureMonitor::busy_time`], not as a tick.
    fn grow(&mut self, shared: &Shared) -> u64 {
        if !self.grow_ahead {
            return 0;
        }
        let started = Instant::now();
        let made = reclaim::grow_ahead(reclaim::sources().unwrap_or_default());
        let spent = started.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64;
        shared.busy_nanos.fetch_add(spent, Ordering::Relaxed);
        made
    }

    /// One tick; returns the bytes growth ahead of demand made ready.
    fn tick(&mut self, shared: &Shared) -> u64 {
        let started = Instant::now();
        // The pools' idleness clock moves every tick, whatever the tick then does: their
        // slow paths record it, and reclaim and growth ahead judge idleness by it.
        crate::block::advance_clock();
        self.read();
        let (utilisation, mut decider) = self
            .slots
            .iter()
            .filter_map(|s| Some((s.utilisation()?, s.kind)))
            .fold(
                (None, SourceKind::Budget),
                |(best, kind), (u, k)| match best {
                    Some(b) if b >= u => (Some(b), kind),
                    _ => (Some(u), k),
                },
            );
        let escalating = self.slots.iter().find(|s| s.escalate).map(|s| s.kind);
        let now = Instant::now();
        let mut transitions: [Option<Transition>; 2] = [None, None];
        // A mapping that crossed the budget raised the level since the last tick.
        let before = self.levels.level();
        let raised = budget::level();
        if raised > before {
            self.levels.force(raised, now);
            transitions[0] = Some(Transition {
                from: before,
                to: raised,
                utilisation: utilisation.unwrap_or(0.0),
                source: SourceKind::Budget,
                at: now,
            });
        }
        let from = self.levels.level();
        if let Some(to) = self.levels.step(
            &self.rules,
            now,
            utilisation.unwrap_or(0.0),
            escalating.is_some(),
        ) {
            if let Some(kind) = escalating.filter(|_| self.levels.escalated()) {
                decider = kind;
            }
            if budget::replace_level(from, to).is_err() {
                // A mapping raised it meanwhile: the next tick adopts the higher level.
                budget::raise_level(to);
            }
            transitions[1] = Some(Transition {
                from,
                to,
                utilisation: utilisation.unwrap_or(0.0),
                source: decider,
                at: now,
            });
        }
        let level = self.levels.level();
        {
            let mut p = lock(&shared.published);
            p.slots = self.slots;
            p.level = level;
            p.utilisation = utilisation;
            p.source = if transitions[0].is_some() && transitions[1].is_none() {
                SourceKind::Budget
            } else {
                decider
            };
            p.since = self.levels.since();
        }
        for transition in transitions.iter().flatten() {
            announce(shared, transition);
        }
        let made =
            self.reclaim_and_grow(shared, level, now, transitions.iter().any(Option::is_some));
        let spent = started.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64;
        let tick = shared.ticks.load(Ordering::Relaxed);
        if let Some(slot) = shared.recent.get((tick % TICK_RING as u64) as usize) {
            slot.store(spent, Ordering::Relaxed);
        }
        shared.busy_nanos.fetch_add(spent, Ordering::Relaxed);
        shared.ticks.fetch_add(1, Ordering::Relaxed);
        made
    }

    /// Asks for memory when the level calls for it, and lets pools grow ahead; returns the
    /// bytes growth ahead made ready.
    fn reclaim_and_grow(
        &mut self,
        shared: &Shared,
        level: PressureLevel,
        now: Instant,
        changed: bool,
    ) -> u64 {
        let period = if level == PressureLevel::Normal {
            HOUSEKEEPING_EVERY.max(self.idle_after)
        } else {
            self.reclaim_every
        };
        let due = self.skipped
            || (changed && level > PressureLevel::Normal)
            || self
                .last_reclaim
                .is_none_or(|last| now.saturating_duration_since(last) >= period);
        if !due {
            // Most ticks: growth ahead alone, which needs no names.
            if !self.grow_ahead {
                return 0;
            }
            return reclaim::grow_ahead(reclaim::sources().unwrap_or_default());
        }
        // A refused list skips the round, which stays due.
        let Some(members) = reclaim::members() else {
            self.skipped = true;
            return 0;
        };
        self.skipped = false;
        self.last_reclaim = Some(now);
        let round = reclaim::reclaim(&members, level, self.idle_after);
        if level > PressureLevel::Normal || round.reclaimed_bytes > 0 {
            lock(&shared.published).last_reclamation = Some(round);
        }
        // Each member drops as it has grown (or on return), with no lock held.
        if !self.grow_ahead {
            return 0;
        }
        reclaim::grow_ahead(members.into_iter().map(|m| m.source))
    }
}

/// Tells the hooks, `tracing` and `metrics` about `transition`.
fn announce(shared: &Shared, transition: &Transition) {
    #[cfg(feature = "tracing")]
    tracing::info!(
        target: "tally_pool::pressure",
        from = transition.from.as_str(),
        to = transition.to.as_str(),
        utilisation = transition.utilisation,
        source = transition.source.as_str(),
        "memory pressure level changed"
    );
    #[cfg(feature = "metrics")]
    metrics::gauge!("tally_pool_pressure_level").set(f64::from(transition.to as u8));
    let hooks = Arc::clone(&lock(&shared.hooks));
    for hook in hooks.iter() {
        reclaim::caught(&shared.hook_panics, (), || hook(transition));
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
