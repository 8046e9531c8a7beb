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
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once, Weak};
use std::time::{Duration, Instant};

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

/// What the test's panicking hook panics with.
const HOOK_PANIC: &str = "a hook that panics";

/// Keeps the panicking hook's expected panics out of the output. Printing them is not what
/// the test checks, and it is slow: under `RUST_BACKTRACE` each is a backtrace, which the
/// sanitizer builds take seconds to symbolise, all the while holding the monitor's thread
/// between one hook and the next.
fn quiet_hook_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let expected = info.payload().downcast_ref::<&str>() == Some(&HOOK_PANIC);
            if !expected {
                default(info);
            }
        }));
    });
}

/// A writable copy of the fixture tree `name`, unique to `test`.
fn fixture_copy(name: &str, test: &str) -> PathBuf {
    let from = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/pressure")
        .join(name);
    let to = std::env::temp_dir().join(format!("tally-pressure-{}-{test}", std::process::id()));
    let _ = fs::remove_dir_all(&to);
    copy_tree(&from, &to);
    to
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Writes `text` to `path` whole, through a rename, so the monitor never reads half a file.
fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, text).unwrap();
    fs::rename(&tmp, path).unwrap();
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
    // The thread lives on: it ticks, and sees the way back down.
    let ticks = monitor.ticks();
    wait_for("more ticks", || monitor.ticks() > ticks + 2);
    set_v2_usage(&root, 0.10);
    wait_for("Normal", || monitor.level() == PressureLevel::Normal);
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
        .interval(Duration::from_secs(3600)); // the thread stays out of the way
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
