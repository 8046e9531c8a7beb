//! The pressure sources on fixture trees (`tests/fixtures/pressure/`): cgroup v2 with the
//! limit on an ancestor, cgroup v1 with none at the mount root, no cgroup limit (the system
//! source applies, PSI escalates), an address-space rlimit, every file malformed; and this
//! machine's real files. Each reading is checked against the numbers in the fixture; a
//! skipped source must say why, and nothing may panic.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::fs;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tally_pool::pressure::{
    PressureConfig, PressureLevel, PressureMonitor, SourceKind, SourceStatus,
};

use common::pressure::fixture_copy;

/// One monitor per process: the tests of this file take turns.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/pressure")
        .join(name)
}

/// The sources seen under `root` by a monitor's first tick (which `start` runs), and the
/// level it decided. A long interval keeps later ticks from changing anything.
fn read(root: PathBuf) -> (Vec<SourceStatus>, PressureLevel, SourceKind) {
    let config = PressureConfig::default()
        .root(root)
        .interval(Duration::from_secs(3600))
        .horizon(Duration::ZERO);
    let monitor = PressureMonitor::start(config).unwrap();
    let sources = monitor.sources();
    for s in &sources {
        println!("{s:?}");
    }
    let level = monitor.level();
    let (_, decider) = monitor.utilisation();
    (sources, level, decider)
}

fn status(sources: &[SourceStatus], kind: SourceKind) -> &SourceStatus {
    sources.iter().find(|s| s.kind == kind).unwrap()
}

const MIB: u64 = 1 << 20;

#[test]
fn cgroup_v2_reads_the_limiting_ancestor_minus_inactive_file() {
    let _serial = serial();
    let (sources, level, decider) = read(fixture("v2"));
    assert_eq!(sources.len(), SourceKind::ALL.len());
    let v2 = status(&sources, SourceKind::CgroupV2);
    // app.slice: memory.max 1 GiB, memory.current 900 MiB, inactive_file 100 MiB.
    assert_eq!(v2.skipped, None);
    assert_eq!(v2.limit, Some(1024 * MIB));
    assert_eq!(v2.used, Some(800 * MIB));
    assert!((v2.utilisation.unwrap() - 800.0 / 1024.0).abs() < 1e-9);
    assert_eq!(v2.signal, Some(0.0), "memory.events read, no increment yet");
    assert!(status(&sources, SourceKind::CgroupV1).skipped.is_some());
    assert!(
        status(&sources, SourceKind::System).skipped.is_some(),
        "a limit applies"
    );
    assert!(
        status(&sources, SourceKind::Rlimit).skipped.is_some(),
        "unlimited"
    );
    let psi = status(&sources, SourceKind::Psi);
    assert_eq!((psi.signal, psi.escalating), (Some(0.0), false));
    assert_eq!(level, PressureLevel::Moderate, "78 %");
    assert_eq!(decider, SourceKind::CgroupV2);
}

#[test]
fn cgroup_v1_reads_the_nearest_limit_minus_total_inactive_file() {
    let _serial = serial();
    let (sources, level, decider) = read(fixture("v1"));
    let v1 = status(&sources, SourceKind::CgroupV1);
    // docker/abc: limit 2 GiB, usage 1.5 GiB, total_inactive_file 512 MiB.
    assert_eq!(v1.skipped, None);
    assert_eq!(v1.limit, Some(2048 * MIB));
    assert_eq!(v1.used, Some(1024 * MIB));
    assert!((v1.utilisation.unwrap() - 0.5).abs() < 1e-9);
    assert!(status(&sources, SourceKind::CgroupV2).skipped.is_some());
    // No PSI file in this tree: skipped, and said so.
    let psi = status(&sources, SourceKind::Psi);
    assert_eq!(psi.signal, None);
    assert!(
        psi.skipped.as_deref().unwrap().contains("not present"),
        "{psi:?}"
    );
    assert_eq!(level, PressureLevel::Normal);
    assert_eq!(decider, SourceKind::CgroupV1);
}

#[test]
fn without_a_limit_the_system_source_applies_and_psi_escalates() {
    let _serial = serial();
    let (sources, level, decider) = read(fixture("none"));
    let v2 = status(&sources, SourceKind::CgroupV2);
    assert!(
        v2.skipped.as_deref().unwrap().contains("no limit"),
        "{v2:?}"
    );
    let system = status(&sources, SourceKind::System);
    // MemTotal 16 GiB, MemAvailable 4 GiB: 75 %, Moderate by the ratio.
    assert_eq!(system.skipped, None);
    assert!((system.utilisation.unwrap() - 0.75).abs() < 1e-9);
    let psi = status(&sources, SourceKind::Psi);
    assert_eq!((psi.signal, psi.escalating), (Some(30.0), true));
    assert_eq!(level, PressureLevel::High, "one step above Moderate");
    assert_eq!(decider, SourceKind::Psi);
}

#[test]
fn the_address_space_rlimit_is_compared_with_vmsize() {
    let _serial = serial();
    let (sources, level, decider) = read(fixture("rlimit"));
    let rlimit = status(&sources, SourceKind::Rlimit);
    // RLIMIT_AS 1 GiB against VmSize 900 MiB (RLIMIT_DATA 2 GiB against 128 MiB is lower).
    assert_eq!(rlimit.skipped, None);
    assert_eq!(rlimit.limit, Some(1024 * MIB));
    assert_eq!(rlimit.used, Some(900 * MIB));
    assert!(status(&sources, SourceKind::CgroupV1).skipped.is_some());
    assert!(status(&sources, SourceKind::CgroupV2).skipped.is_some());
    assert_eq!(level, PressureLevel::High, "88 %");
    assert_eq!(decider, SourceKind::Rlimit);
}

#[test]
fn malformed_files_are_skipped_and_reported() {
    let _serial = serial();
    let (sources, level, _) = read(fixture("malformed"));
    let why = |kind| status(&sources, kind).skipped.clone().unwrap_or_default();
    assert_eq!(why(SourceKind::CgroupV2), "memory.max: malformed");
    assert_eq!(why(SourceKind::Rlimit), "limits: malformed");
    assert_eq!(why(SourceKind::System), "meminfo: malformed");
    assert_eq!(why(SourceKind::Psi), "pressure/memory: malformed");
    assert_eq!(why(SourceKind::Budget), "not configured");
    assert!(sources.iter().all(|s| s.utilisation.is_none()));
    assert_eq!(level, PressureLevel::Normal);
}

#[test]
fn a_missing_root_skips_every_source() {
    let _serial = serial();
    let (sources, level, _) = read(fixture("no-such-tree"));
    assert!(sources.iter().all(|s| s.skipped.is_some()), "{sources:?}");
    assert_eq!(level, PressureLevel::Normal);
}

#[test]
fn this_machines_files_read_or_say_why_not() {
    let _serial = serial();
    let (sources, _, _) = read(PathBuf::from("/"));
    println!("this machine:");
    for s in &sources {
        match &s.skipped {
            Some(why) => println!("  {:<10} skipped: {why}", s.kind.as_str()),
            None => println!(
                "  {:<10} used {:?} of {:?} ({:?}), signal {:?}",
                s.kind.as_str(),
                s.used,
                s.limit,
                s.utilisation,
                s.signal
            ),
        }
        // Exactly one of a reading and a reason.
        let has_reading = s.utilisation.is_some() || s.signal.is_some();
        assert_ne!(has_reading, s.skipped.is_some(), "{s:?}");
        if let (Some(used), Some(limit)) = (s.used, s.limit) {
            assert!(limit > 0 && used <= limit.saturating_mul(4), "{s:?}");
        }
    }
    // Linux always has /proc/meminfo; unless a limit applies the system source reads it.
    let system = status(&sources, SourceKind::System);
    let limited = [
        SourceKind::CgroupV1,
        SourceKind::CgroupV2,
        SourceKind::Rlimit,
    ]
    .iter()
    .any(|&k| status(&sources, k).utilisation.is_some());
    assert_eq!(system.utilisation.is_some(), !limited, "{system:?}");
}

#[test]
fn a_zero_cgroup_limit_leaves_no_room() {
    let _serial = serial();
    let root = fixture_copy("v2", "zero-limit");
    fs::write(root.join("sys/fs/cgroup/app.slice/memory.max"), "0\n").unwrap();
    fs::write(root.join("sys/fs/cgroup/app.slice/memory.high"), "max\n").unwrap();
    let (sources, level, decider) = read(root.clone());
    let v2 = status(&sources, SourceKind::CgroupV2);
    assert_eq!((v2.skipped.as_deref(), v2.limit), (None, Some(0)), "{v2:?}");
    assert_eq!(v2.utilisation, Some(1.0));
    assert_eq!(
        (level, decider),
        (PressureLevel::Critical, SourceKind::CgroupV2)
    );
    let _ = fs::remove_dir_all(root);
}

#[test]
fn fifos_devices_and_huge_files_skip_their_source_without_blocking() {
    let _serial = serial();
    // A FIFO where `/proc/self/cgroup` should be (opened for reading, it would block until
    // a writer came), `/dev/zero` as `meminfo` (endless), and a `memory.stat` of 100 KiB.
    let root = fixture_copy("v1", "special-files");
    fs::remove_file(root.join("proc/self/cgroup")).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(root.join("proc/self/cgroup"))
        .status()
        .unwrap();
    assert!(made.success());
    fs::remove_file(root.join("proc/meminfo")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", root.join("proc/meminfo")).unwrap();
    let (sources, level, _) = {
        let root = root.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(read(root)));
        rx.recv_timeout(Duration::from_secs(30))
            .expect("the monitor's first tick blocked on a special file")
    };
    let why = |kind| status(&sources, kind).skipped.clone().unwrap_or_default();
    assert_eq!(why(SourceKind::CgroupV1), "not present on this system");
    assert_eq!(why(SourceKind::CgroupV2), "not present on this system");
    assert_eq!(why(SourceKind::System), "meminfo: unreadable");
    assert_eq!(level, PressureLevel::Normal);
    // The cgroup found again, but its `memory.stat` too long to be one.
    fs::remove_file(root.join("proc/self/cgroup")).unwrap();
    fs::copy(
        fixture("v1").join("proc/self/cgroup"),
        root.join("proc/self/cgroup"),
    )
    .unwrap();
    let stat = root.join("sys/fs/cgroup/memory/docker/abc/memory.stat");
    let mut long = fs::read_to_string(&stat).unwrap();
    while long.len() < 100 * 1024 {
        long.push_str("padding 0\n");
    }
    fs::write(&stat, long).unwrap();
    let (sources, _, _) = read(root.clone());
    let why = |kind| status(&sources, kind).skipped.clone().unwrap_or_default();
    assert_eq!(why(SourceKind::CgroupV1), "memory.stat: malformed");
    let _ = fs::remove_dir_all(root);
}

#[test]
fn a_cgroup_path_that_climbs_out_of_the_mount_reads_nothing_outside_the_root() {
    let _serial = serial();
    // `/proc/self/cgroup` names a path that climbs from the mount (`sys/fs/cgroup` for v2,
    // `sys/fs/cgroup/memory` for v1) to a directory beside the root, whose limit is 1,000
    // bytes. The reader must stay under the mount (a cgroup namespace shows paths outside
    // it: the mount is then the process's own cgroup), never read there.
    let v2 = ["memory.max", "memory.current", "memory.stat"];
    let v1 = [
        "memory.limit_in_bytes",
        "memory.usage_in_bytes",
        "memory.stat",
    ];
    for (tree, line, files, stat, kind) in [
        (
            "v2",
            "0::/../../../..",
            v2,
            "inactive_file",
            SourceKind::CgroupV2,
        ),
        (
            "v1",
            "4:memory:/../../../../..",
            v1,
            "total_inactive_file",
            SourceKind::CgroupV1,
        ),
    ] {
        let root = fixture_copy(tree, "climbs-out");
        let name = format!("tally-pressure-{}-outside", std::process::id());
        let outside = root.with_file_name(&name);
        fs::create_dir_all(&outside).unwrap();
        for (file, text) in files.iter().zip(["1000", "999", &format!("{stat} 0")]) {
            fs::write(outside.join(file), format!("{text}\n")).unwrap();
        }
        fs::write(root.join("proc/self/cgroup"), format!("{line}/{name}\n")).unwrap();
        let (sources, _, _) = read(root.clone());
        let cgroup = status(&sources, kind);
        let _ = (fs::remove_dir_all(root), fs::remove_dir_all(outside));
        assert_ne!(
            cgroup.limit,
            Some(1000),
            "{tree}: read outside the root: {cgroup:?}"
        );
    }
}
