//! The pressure monitor at work: one monitor per process, hooks that panic are caught and
//! counted, a budget crossing raises the level inside the acquire that crossed it, a
//! cgroup fixture whose usage climbs is seen by the thread, `memory.events` increments
//! escalate, and the report carries the pressure section only while a monitor runs.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once, Weak};
use std::time::{Duration, Instant};

use common::pressure::{fixture_copy, write_atomically};

use tally_pool::pressure::{
    self, PressureConfig, PressureError, PressureLevel, PressureMonitor, SourceKind, Transition,
};
use tally_pool::stats::{self, ComponentSnapshot, Kind, Source};
use tally_pool::{Handle, Pool, PoolConfig};

/// A 4 KiB value with a `Default`.
type Page = [[u64; 32]; 16];

/// One monitor per process: the tests of this file take turns.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the tests' panicking hooks and components panic with.
const HOOK_PANIC: &str = "a hook that panics";

/// A panic payload whose drop panics too.
struct Bomb;

impl Drop for Bomb {
    fn drop(&mut self) {
        std::panic::panic_any(HOOK_PANIC);
    }
}

/// Keeps the panicking hook's expected panics out of the output. Printing them is not what
/// the test checks, and it is slow: under `RUST_BACKTRACE` each is a backtrace, which the
/// sanitizer builds take seconds to symbolise, all the while holding the monitor's thread
/// between one hook and the next.
fn quiet_hook_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let expected =
                payload.downcast_ref::<&str>() == Some(&HOOK_PANIC) || payload.is::<Bomb>();
            if !expected {
                default(info);
            }
        }));
    });
}

/// Waits up to 10 s for `done`.
#[track_caller]
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A monitor on the copied v2 tree `root`, fast ticks, no adaptive rule.
fn v2_monitor(root: &Path) -> PressureMonitor {
    let config = PressureConfig::default()
        .root(root)
        .interval(Duration::from_millis(2))
        .horizon(Duration::ZERO)
        .min_dwell(Duration::ZERO);
    PressureMonitor::start(config).unwrap()
}

/// `app.slice/memory.current` such that the working set is `share` of the 1 GiB limit
/// (inactive_file is 100 MiB in the fixture).
fn set_v2_usage(root: &Path, share: f64) {
    let current = (share * f64::from(1u32 << 30)) as u64 + (100 << 20);
    write_atomically(
        &root.join("sys/fs/cgroup/app.slice/memory.current"),
        &format!("{current}\n"),
    );
}

/// The thread on the v2 tree `root` lives on: it ticks, and follows usage back down to
/// Normal.
fn lives_on_and_comes_back_down(monitor: &PressureMonitor, root: &Path) {
    let ticks = monitor.ticks();
    wait_for("more ticks", || monitor.ticks() > ticks + 2);
    set_v2_usage(root, 0.10);
    wait_for("Normal", || monitor.level() == PressureLevel::Normal);
}

#[test]
fn a_second_start_while_one_runs_is_an_error() {
    let _serial = serial();
    let first = PressureMonitor::start(PressureConfig::default()).unwrap();
    let second = PressureMonitor::start(PressureConfig::default());
    assert!(
        matches!(second, Err(PressureError::AlreadyRunning)),
        "{second:?}"
    );
    assert!(first.ticks() >= 1);
    drop(first);
    // Stopped and joined: a new one may start.
    let third = PressureMonitor::start(PressureConfig::default()).unwrap();
    drop(third);
}

#[test]
fn every_tick_asks_a_users_source_to_grow_ahead_whatever_the_pools_do() {
    // Growth passes pass over the crate's pools while none is busy; a component a user
    // listed (here as a typed pool) is asked all the same.
    struct Counted(AtomicUsize);
    impl Source for Counted {
        fn snapshot(&self) -> ComponentSnapshot {
            ComponentSnapshot::default()
        }
        fn grow_ahead(&self) -> usize {
            self.0.fetch_add(1, Ordering::Relaxed);
            0
        }
    }
    let _serial = serial();
    let source = Arc::new(Counted(AtomicUsize::new(0)));
    let weak: Weak<dyn Source> = Arc::downgrade(&source) as _;
    let _listed = stats::register("user-grows", Kind::Typed, weak);
    let monitor = PressureMonitor::start(PressureConfig::default()).unwrap();
    // The other tests' pools (they run one at a time) are idle after a second.
    std::thread::sleep(Duration::from_millis(1200));
    let asked = source.0.load(Ordering::Relaxed);
    wait_for("ten more asks", || {
        source.0.load(Ordering::Relaxed) >= asked + 10
    });
    drop(monitor);
}

#[test]
fn a_panicking_hook_is_caught_counted_and_the_monitor_goes_on() {
    let _serial = serial();
    quiet_hook_panics();
    let root = fixture_copy("v2", "hook");
    set_v2_usage(&root, 0.30);
    let monitor = v2_monitor(&root);
    assert_eq!(monitor.level(), PressureLevel::Normal);
    let seen: Arc<Mutex<Vec<Transition>>> = Arc::default();
    monitor.on_transition(|_| std::panic::panic_any(HOOK_PANIC));
    let log = Arc::clone(&seen);
    monitor.on_transition(move |t| log.lock().unwrap().push(*t));
    set_v2_usage(&root, 0.95);
    wait_for("Critical", || monitor.level() == PressureLevel::Critical);
    wait_for("the second hook", || !seen.lock().unwrap().is_empty());
    assert!(monitor.hook_panics() >= 1);
    let first = seen.lock().unwrap()[0];
    assert_eq!(
        (first.from, first.to),
        (PressureLevel::Normal, PressureLevel::Critical)
    );
    assert_eq!(first.source, SourceKind::CgroupV2);
    assert!((first.utilisation - 0.95).abs() < 0.01, "{first:?}");
    lives_on_and_comes_back_down(&monitor, &root);
    // The hooks run just after the level is published: the panicking one again, caught.
    wait_for("a second caught panic", || monitor.hook_panics() >= 2);
    wait_for("the way down", || seen.lock().unwrap().len() >= 2);
    assert!(
        monitor.hook_panics() >= 2,
        "the hook ran again and was caught again"
    );
    drop(monitor);
    let _ = fs::remove_dir_all(root);
}

#[test]
fn memory_events_increments_escalate_one_step() {
    let _serial = serial();
    let root = fixture_copy("v2", "events");
    set_v2_usage(&root, 0.30);
    let monitor = v2_monitor(&root);
    assert_eq!(monitor.level(), PressureLevel::Normal);
    let seen: Arc<Mutex<Vec<Transition>>> = Arc::default();
    let log = Arc::clone(&seen);
    monitor.on_transition(move |t| log.lock().unwrap().push(*t));
    write_atomically(
        &root.join("sys/fs/cgroup/app.slice/memory.events"),
        "low 0\nhigh 3\nmax 0\noom 0\noom_kill 0\n",
    );
    // One step up for the tick that saw the increment, then (no new events) back to the
    // level of the ratio.
    wait_for("up and down", || seen.lock().unwrap().len() >= 2);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        (seen[0].from, seen[0].to),
        (PressureLevel::Normal, PressureLevel::Moderate)
    );
    assert_eq!(seen[0].source, SourceKind::CgroupV2);
    assert_eq!(
        (seen[1].from, seen[1].to),
        (PressureLevel::Moderate, PressureLevel::Normal)
    );
    drop(monitor);
    let _ = fs::remove_dir_all(root);
}

#[test]
fn a_budget_crossing_raises_the_level_inside_the_acquire() {
    let _serial = serial();
    let pool: &'static Pool<Page> = Pool::new(
        PoolConfig::new("pressure-budget")
            .capacity(16)
            .max_capacity(1 << 16),
    )
    .unwrap();
    let base = pressure::mapped_bytes();
    // Below 50 % now; 60 % is crossed some 32 MiB of growth from here.
    let budget = (base + (32 << 20)) * 10 / 6;
    let config = PressureConfig::default()
        .budget(budget)
        // The thread stays out of the way: no tick but the one inside `start`, and no
        // growth ahead of demand, whose mapping could fall between the two loads below.
        .interval(Duration::from_secs(3600))
        .grow_ahead(false);
    let monitor = PressureMonitor::start(config).unwrap();
    assert_eq!(pressure::level(), PressureLevel::Normal);
    let mut held: Vec<Handle<Page>> = Vec::with_capacity(1 << 16);
    let mut crossed = None;
    for _ in 0..(1 << 16) {
        held.push(pool.acquire().unwrap());
        let mapped = pressure::mapped_bytes();
        let level = pressure::level();
        if mapped * 10 >= budget * 6 {
            // No tick has run since start: the mapping itself raised it.
            assert!(
                level >= PressureLevel::Moderate,
                "{mapped} of {budget} but {level:?}"
            );
            crossed = Some(mapped);
            break;
        }
        assert_eq!(level, PressureLevel::Normal, "{mapped} of {budget}");
    }
    assert!(crossed.is_some(), "the budget was never crossed");
    assert_eq!(monitor.ticks(), 1, "only the tick inside start ran");
    drop(held);
    drop(monitor);
    assert_eq!(
        pressure::level(),
        PressureLevel::Normal,
        "reset when the monitor stops"
    );
}

#[test]
fn the_report_has_a_pressure_section_while_a_monitor_runs() {
    let _serial = serial();
    assert!(tally_pool::stats::report().pressure.is_none());
    let root = fixture_copy("v2", "report");
    let monitor = v2_monitor(&root);
    let report = tally_pool::stats::report();
    let section = report.pressure.clone().expect("a monitor runs");
    assert_eq!(section.level, "moderate");
    assert_eq!(section.source, "cgroup-v2");
    assert!((section.utilisation.unwrap() - 800.0 / 1024.0).abs() < 1e-9);
    assert!(section.since_secs >= 0.0);
    wait_for("a reclamation round", || {
        monitor.last_reclamation().is_some()
    });
    let report = tally_pool::stats::report();
    let r = report
        .pressure
        .as_ref()
        .unwrap()
        .last_reclamation
        .clone()
        .unwrap();
    assert_eq!(r.level, "moderate");
    assert!(r.duration_secs >= 0.0 && r.ago_secs >= 0.0);
    let table = report.to_string();
    assert!(
        table.contains("pressure moderate at 78 % from cgroup-v2"),
        "{table}"
    );
    assert!(table.contains("last reclamation at moderate"), "{table}");
    let json = report.to_json();
    assert!(json.contains("\"last_reclamation\""), "{json}");
    drop(monitor);
    assert!(tally_pool::stats::report().pressure.is_none());
    let _ = fs::remove_dir_all(root);
}

#[test]
fn levels_climb_through_each_threshold_as_usage_grows() {
    let _serial = serial();
    let root = fixture_copy("v2", "climb");
    set_v2_usage(&root, 0.10);
    let monitor = v2_monitor(&root);
    let seen: Arc<Mutex<Vec<PressureLevel>>> = Arc::default();
    let log = Arc::clone(&seen);
    monitor.on_transition(move |t| log.lock().unwrap().push(t.to));
    let count = Arc::new(AtomicUsize::new(0));
    for (share, level) in [
        (0.65, PressureLevel::Moderate),
        (0.85, PressureLevel::High),
        (0.92, PressureLevel::Critical),
    ] {
        set_v2_usage(&root, share);
        wait_for("the next level", || monitor.level() == level);
        count.fetch_add(1, Ordering::Relaxed);
    }
    wait_for("three transitions", || seen.lock().unwrap().len() >= 3);
    assert_eq!(
        *seen.lock().unwrap(),
        [
            PressureLevel::Moderate,
            PressureLevel::High,
            PressureLevel::Critical
        ]
    );
    assert_eq!(count.load(Ordering::Relaxed), 3);
    drop(monitor);
    let _ = fs::remove_dir_all(root);
}

#[test]
fn a_panic_payload_whose_drop_panics_is_caught_too() {
    let _serial = serial();
    quiet_hook_panics();
    let root = fixture_copy("v2", "bomb");
    set_v2_usage(&root, 0.30);
    let monitor = v2_monitor(&root);
    monitor.on_transition(|_| std::panic::panic_any(Bomb));
    set_v2_usage(&root, 0.95);
    wait_for("Critical", || monitor.level() == PressureLevel::Critical);
    wait_for("the caught panic", || monitor.hook_panics() >= 1);
    lives_on_and_comes_back_down(&monitor, &root);
    drop(monitor);
    let _ = fs::remove_dir_all(root);
}

#[test]
fn a_panicking_component_is_caught_counted_and_the_monitor_goes_on() {
    // A user's component whose every answer to the monitor panics: from the first tick,
    // which `start` runs, and on the thread after.
    struct Broken;
    impl Source for Broken {
        fn snapshot(&self) -> ComponentSnapshot {
            ComponentSnapshot::default()
        }
        fn grow_ahead(&self) -> usize {
            std::panic::panic_any(HOOK_PANIC)
        }
        fn reclaimable(&self, _: stats::Urgency, _: Duration) -> usize {
            std::panic::panic_any(HOOK_PANIC)
        }
        fn reclaim_idle(&self, _: stats::Urgency, _: Duration) -> usize {
            std::panic::panic_any(HOOK_PANIC)
        }
    }
    let _serial = serial();
    quiet_hook_panics();
    let root = fixture_copy("v2", "broken-source");
    set_v2_usage(&root, 0.30);
    let source = Arc::new(Broken);
    let weak: Weak<dyn Source> = Arc::downgrade(&source) as _;
    let listed = stats::register("user-broken", Kind::User, weak);
    let monitor = v2_monitor(&root);
    wait_for("a caught panic", || monitor.source_panics() >= 1);
    // Levels still follow the fixture both ways (Critical asks every component to give
    // memory back, the broken one included), and the thread keeps ticking.
    set_v2_usage(&root, 0.95);
    wait_for("Critical", || monitor.level() == PressureLevel::Critical);
    let panics = monitor.source_panics();
    lives_on_and_comes_back_down(&monitor, &root);
    assert!(
        monitor.source_panics() > panics,
        "asked again, caught again"
    );
    drop(monitor);
    drop(listed);
    // Nothing was left behind: a new monitor starts.
    drop(PressureMonitor::start(PressureConfig::default()).unwrap());
    let _ = fs::remove_dir_all(root);
}

#[test]
fn a_monitor_whose_last_handle_drops_in_its_own_hook_stops_and_lets_another_start() {
    let _serial = serial();
    let root = fixture_copy("v2", "self-drop");
    set_v2_usage(&root, 0.30);
    let monitor = Arc::new(v2_monitor(&root));
    let (tx, rx) = std::sync::mpsc::channel();
    let weak = Arc::downgrade(&monitor);
    monitor.on_transition(move |_| {
        // The hook holds a handle while the application drops its own: the last handle
        // then drops here, on the monitor thread, which cannot join itself.
        if let Some(held) = weak.upgrade() {
            let _ = tx.send(());
            std::thread::sleep(Duration::from_millis(100));
            drop(held);
        }
    });
    set_v2_usage(&root, 0.95);
    rx.recv_timeout(Duration::from_secs(10)).unwrap();
    drop(monitor);
    // The thread stops after that tick and forgets the monitor as it exits.
    wait_for("a new monitor to start", || {
        PressureMonitor::start(PressureConfig::default()).is_ok()
    });
    assert_eq!(pressure::level(), PressureLevel::Normal);
    assert!(stats::report().pressure.is_none());
    let _ = fs::remove_dir_all(root);
}

#[test]
fn a_hook_that_parks_does_not_make_the_drop_wait_for_the_next_tick() {
    // The drop wakes the thread with an unpark; a hook that parks on its own (here a
    // channel's timed receive) may take that wake-up. The thread must still see the stop
    // before it sleeps until the next tick, 6 s away.
    let _serial = serial();
    let root = fixture_copy("v2", "parking-hook");
    set_v2_usage(&root, 0.30);
    let config = PressureConfig::default()
        .root(&root)
        .interval(Duration::from_secs(6))
        .horizon(Duration::ZERO)
        .min_dwell(Duration::ZERO);
    let monitor = PressureMonitor::start(config).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    monitor.on_transition(move |_| {
        let _ = tx.send(());
        std::thread::sleep(Duration::from_millis(200));
        let (_keep, parked) = std::sync::mpsc::channel::<()>();
        let _ = parked.recv_timeout(Duration::from_millis(5));
    });
    set_v2_usage(&root, 0.95);
    rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let dropping = Instant::now();
    drop(monitor);
    let took = dropping.elapsed();
    // About the hook's 205 ms, and the rest of the tick; the next tick would be some
    // 5.8 s later.
    assert!(took < Duration::from_secs(3), "the drop took {took:?}");
    let _ = fs::remove_dir_all(root);
}
