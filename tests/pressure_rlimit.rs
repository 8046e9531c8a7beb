//! A real kernel limit: the test binary re-executes itself as a child (selected by an
//! environment variable) that lowers its own `RLIMIT_AS`, starts the pressure monitor and
//! fills a pool. The child must see High, then Critical, from the rlimit source before
//! the limit, and at the limit `acquire` must return `PoolError::OutOfMemory`: no abort,
//! no panic. The parent checks what the child printed and how it exited, and prints the
//! transcript (run with `--nocapture` to see it).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tally_pool::pressure::{self, PressureConfig, PressureLevel, PressureMonitor, SourceKind};
use tally_pool::{Handle, Pool, PoolConfig, PoolError};

/// Set in the child's environment.
const CHILD: &str = "TALLY_PRESSURE_RLIMIT_CHILD";

/// This test's name, for the child's filter.
const NAME: &str = "an_address_space_limit_is_high_then_critical_then_out_of_memory";

/// A 1 KiB value.
type Value = [[u64; 32]; 4];

const MIB: u64 = 1 << 20;

/// `VmSize` of this process in bytes.
fn vm_size() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmSize:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// Lowers the soft `RLIMIT_AS` of this process to `bytes`.
fn limit_address_space(bytes: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `getrlimit` writes one `rlimit` through a pointer to a live local.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut limit) }, 0);
    limit.rlim_cur = bytes;
    // SAFETY: `setrlimit` reads one `rlimit` through a pointer to a live local; lowering
    // the soft limit below the hard one needs no privilege.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &limit) }, 0);
}

/// The child: fill a pool under a low address-space limit with the monitor running.
fn child() {
    println!("child: started");
    let pool: &'static Pool<Value> = Pool::new(
        PoolConfig::new("rlimit-child")
            .capacity(64)
            .max_capacity(1 << 24)
            .prefault(false),
    )
    .unwrap();
    let transitions: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::with_capacity(64)));
    let config = PressureConfig::default()
        .interval(Duration::from_millis(2))
        .horizon(Duration::ZERO);
    let monitor = PressureMonitor::start(config).unwrap();
    let log = Arc::clone(&transitions);
    monitor.on_transition(move |t| {
        if let Ok(mut log) = log.lock() {
            if log.len() < log.capacity() {
                log.push(format!(
                    "{} -> {} from {} at {:.1} %",
                    t.from,
                    t.to,
                    t.source,
                    t.utilisation * 100.0
                ));
            }
        }
    });
    std::thread::sleep(Duration::from_millis(20));
    // Everything the fill needs is allocated before the limit: the handles' vector has
    // room for more than the limit leaves.
    let estimate = vm_size();
    let mut held: Vec<Handle<Value>> =
        Vec::with_capacity(((4 * estimate + 128 * MIB) / 1024) as usize);
    let before = vm_size();
    let limit = 2 * before + 64 * MIB;
    limit_address_space(limit);
    println!(
        "child: VmSize {} MiB, RLIMIT_AS {} MiB ({:.0} % used)",
        before / MIB,
        limit / MIB,
        before as f64 / limit as f64 * 100.0
    );
    let mut last = pressure::level();
    let error = loop {
        match pool.acquire() {
            Ok(handle) => held.push(handle),
            Err(e) => break e,
        }
        if held.len() & 1023 == 0 {
            // A mebibyte at a time, each seen by a whole tick of the monitor (the one under
            // way may have read the usage before it) however the threads are scheduled.
            let (ticks, deadline) = (monitor.ticks(), Instant::now() + Duration::from_secs(10));
            while monitor.ticks() < ticks + 2 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_micros(500));
            }
            let now = pressure::level();
            if now != last {
                let (u, source) = monitor.utilisation();
                println!(
                    "child: level {now} from {source} at {:.1} % ({} MiB of values)",
                    u.unwrap_or(0.0) * 100.0,
                    held.len() / 1024
                );
                last = now;
            }
        }
    };
    let oom = matches!(error, PoolError::OutOfMemory { .. });
    println!("child: acquire at the limit returned {error}");
    println!("child: out of memory: {oom}");
    println!("child: {} values held", held.len());
    // Free the values (and the vector's mapping) before anything below allocates: at the
    // limit, a size class with no free block left would need a chunk the OS refuses.
    drop(held);
    for line in transitions.lock().unwrap().iter() {
        println!("child: transition {line}");
    }
    let rlimit = monitor
        .sources()
        .into_iter()
        .find(|s| s.kind == SourceKind::Rlimit)
        .unwrap();
    println!(
        "child: rlimit source {:?} of {:?}",
        rlimit.used, rlimit.limit
    );
    // Stop the monitor, then leave normally.
    drop(monitor);
    assert!(oom, "{error:?}");
    assert!(pressure::level() == PressureLevel::Normal);
    println!("child: done");
}

#[test]
#[cfg_attr(miri, ignore = "spawns a process")]
fn an_address_space_limit_is_high_then_critical_then_out_of_memory() {
    if std::env::var_os(CHILD).is_some() {
        child();
        return;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([NAME, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!(
        "--- child stdout ---\n{stdout}--- child stderr ---\n{stderr}--- child {} ---",
        out.status
    );
    assert!(out.status.success(), "the child failed: {}", out.status);
    let lines: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("child: "))
        .collect();
    let at = |needle: &str| {
        lines
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?}"))
    };
    let high = at("-> high from rlimit");
    let critical = at("-> critical from rlimit");
    assert!(high < critical, "High before Critical");
    assert!(lines.contains(&"child: out of memory: true"));
    assert!(lines.contains(&"child: done"));
    assert!(!stderr.contains("panicked"), "{stderr}");
}
