//! Components whose drop panics, dropped for the last time by the library: the pressure
//! monitor's housekeeping round (growth ahead off) and a statistics sample each hold the
//! last handles of two such components and drop them. Each drop is caught on its own, so
//! the second panic never happens while the first unwinds, which would abort the process.
//!
//! Each case runs in a child process (this test binary re-executed, selected by an
//! environment variable), so that an abort fails the parent's test instead of killing the
//! test runner.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::process::Command;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tally_pool::pressure::{PressureConfig, PressureMonitor};
use tally_pool::stats::{self, ComponentSnapshot, Kind, Source, Urgency};

/// Set in the child's environment: which case it runs.
const CHILD: &str = "TALLY_PANICKING_DROPS_CHILD";

/// The application's handles of the components, which a callback of the library clears,
/// so that the handles the library holds at that moment are the last.
static APP: Mutex<Vec<Arc<dyn Source>>> = Mutex::new(Vec::new());

fn clear_app() {
    APP.lock().unwrap_or_else(PoisonError::into_inner).clear();
}

/// A component whose drop panics; its callbacks let go of the application's handles.
struct PanicsOnDrop;

impl Source for PanicsOnDrop {
    fn snapshot(&self) -> ComponentSnapshot {
        clear_app();
        ComponentSnapshot::default()
    }

    fn reclaim_idle(&self, _: Urgency, _: Duration) -> usize {
        clear_app();
        0
    }
}

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        panic!("a component whose drop panics");
    }
}

/// Registers two such components, keeping the application's handles in [`APP`].
fn register_two() -> (stats::Registration, stats::Registration) {
    let a: Arc<dyn Source> = Arc::new(PanicsOnDrop);
    let b: Arc<dyn Source> = Arc::new(PanicsOnDrop);
    let ra = stats::register("panicking-drop-a", Kind::User, Arc::downgrade(&a));
    let rb = stats::register("panicking-drop-b", Kind::User, Arc::downgrade(&b));
    APP.lock().unwrap().extend([a, b]);
    (ra, rb)
}

/// Runs case `case` in a child and returns what it printed; fails if it did not exit
/// normally.
fn run_child(test: &str, case: &str) -> String {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD, case)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && stdout.contains("child done"),
        "the child died: {:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn the_monitor_catches_each_last_drop_of_a_round_without_growth_ahead() {
    const NAME: &str = "the_monitor_catches_each_last_drop_of_a_round_without_growth_ahead";
    match std::env::var(CHILD).as_deref() {
        Ok("monitor") => {
            let registrations = register_two();
            // The first tick, inside `start`, runs a housekeeping round: its members are
            // the last handles once `reclaim_idle` cleared the application's.
            let monitor =
                PressureMonitor::start(PressureConfig::default().grow_ahead(false)).unwrap();
            println!("source panics {}", monitor.source_panics());
            drop((monitor, registrations));
            println!("child done");
        }
        Ok(_) => {}
        Err(_) => {
            let printed = run_child(NAME, "monitor");
            assert!(printed.contains("source panics 2"), "{printed}");
        }
    }
}

#[test]
fn a_sample_drops_each_last_handle_on_its_own() {
    const NAME: &str = "a_sample_drops_each_last_handle_on_its_own";
    match std::env::var(CHILD).as_deref() {
        Ok("sample") => {
            let _registrations = register_two();
            // `snapshot` clears the application's handles: the sample's are the last. The
            // first panic goes on to the caller once both drops ran.
            let sampled = std::panic::catch_unwind(stats::sample);
            println!("sample panicked {}", sampled.is_err());
            println!("child done");
        }
        Ok(_) => {}
        Err(_) => {
            let printed = run_child(NAME, "sample");
            assert!(printed.contains("sample panicked true"), "{printed}");
        }
    }
}
