//! Huge pages and locked memory (`PoolConfig::huge_pages`, `PoolConfig::lock`): what the
//! OS was asked for and what it did, read back from `/proc/self/smaps` (the `hg` and `lo`
//! flags of the mapping that holds a value, its `AnonHugePages`), what the pool's
//! statistics say, and a refused lock.
//!
//! The refusals run in children: the test binary re-executes itself (selected by an
//! environment variable) with the locked-memory limit lowered, and without
//! `CAP_IPC_LOCK`, which would let it lock past the limit. There, creating a locking pool
//! and growing one must fail with `PoolError::LockRefused` naming `ulimit -l`, never
//! panic, and leave nothing mapped; so must the reuse of a reclaimed chunk, which stays
//! reclaimed. Run with `--nocapture` to see the children's transcripts.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::process::Command;

use core::alloc::Layout;

mod common;
use common::skip::skip;
use common::smaps::vm_flags;

use tally_pool::block::{BlockPool, BlockPoolConfig, HugePages, CHUNK_SIZE};
use tally_pool::{Pool, PoolConfig, PoolError};

/// Set in the child's environment.
const CHILD: &str = "TALLY_LOCK_REFUSED_CHILD";

/// The refusal test's name, for the child's filter.
const NAME: &str = "a_refused_lock_is_an_error_naming_the_limit_and_leaves_nothing_mapped";

/// Set in the environment of the child that reuses a reclaimed chunk.
const REUSE_CHILD: &str = "TALLY_LOCK_REFUSED_ON_REUSE_CHILD";

/// That test's name, for the child's filter.
const REUSE_NAME: &str = "a_reclaimed_chunk_whose_lock_is_refused_on_reuse_stays_reclaimed";

/// The huge pages (`AnonHugePages`, in KiB) of the mappings of this process that overlap
/// the 2 MiB range aligned to 2 MiB that holds `addr`.
fn huge_kib_around(addr: usize) -> u64 {
    const HUGE: usize = 2 << 20;
    let (from, to) = (addr & !(HUGE - 1), (addr & !(HUGE - 1)) + HUGE);
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let mut inside = false;
    let mut kib = 0;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((lo, hi)) = first.split_once('-') {
            if let (Ok(lo), Ok(hi)) = (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
            {
                inside = lo < to && from < hi;
                continue;
            }
        }
        if inside {
            if let Some(rest) = line.strip_prefix("AnonHugePages:") {
                kib += rest
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .unwrap();
            }
        }
    }
    kib
}

/// The system's transparent-huge-page mode, the word in brackets.
fn thp_mode() -> Option<String> {
    let text = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").ok()?;
    let word = text.split_whitespace().find(|w| w.starts_with('['))?;
    Some(word.trim_matches(|c| c == '[' || c == ']').to_owned())
}

#[test]
fn a_huge_page_pool_advises_its_chunks_or_says_why_not() {
    let pool: &'static Pool<[u64; 8]> = Pool::new(
        PoolConfig::new("huge-pages-advised")
            .per_node(false)
            .capacity(20_000)
            .huge_pages(true),
    )
    .unwrap();
    let value = pool.acquire().unwrap();
    let addr = &*value as *const [u64; 8] as usize;
    let stats = pool.stats();
    println!("mode {:?}, stats {:?}", thp_mode(), stats.huge_pages);
    match thp_mode().as_deref() {
        Some("never") => assert!(matches!(stats.huge_pages, HugePages::Unavailable(_))),
        Some(_) => {
            assert_eq!(stats.huge_pages, HugePages::Active);
            assert!(vm_flags(addr).iter().any(|f| f == "hg"), "advised");
            // And taken: the pair's pages were faulted in after the advice.
            assert!(huge_kib_around(addr) > 0, "no huge page holds {addr:#x}");
        }
        None => assert!(stats.huge_pages.requested()),
    }
    // The statistics report says the same.
    let report = tally_pool::stats::report();
    let row = report
        .components
        .iter()
        .find(|c| c.name == "huge-pages-advised")
        .unwrap();
    let text = row.huge_pages.as_deref().unwrap();
    match stats.huge_pages {
        HugePages::Active => assert_eq!(text, "active"),
        _ => assert!(text.starts_with("unavailable: "), "{text}"),
    }
    assert_eq!(row.locked_bytes, 0);
    // Chunks come in pairs of one 2 MiB-aligned mapping.
    assert_eq!(stats.chunks % 2, 0);
    assert_eq!(stats.bytes_mapped, stats.chunks * CHUNK_SIZE);
    assert_eq!(stats.locked_bytes, 0);
    drop(value);

    let plain: &'static Pool<[u64; 8]> =
        Pool::new(PoolConfig::new("huge-pages-not-asked").per_node(false)).unwrap();
    let value = plain.acquire().unwrap();
    assert_eq!(plain.stats().huge_pages, HugePages::Off);
    assert!(!vm_flags(&*value as *const [u64; 8] as usize)
        .iter()
        .any(|f| f == "hg"));
}

#[test]
#[cfg_attr(
    tally_sanitized,
    ignore = "the sanitizers' runtimes turn mlock into a no-op that succeeds"
)]
fn a_locked_pool_locks_every_chunk_it_maps() {
    let made = Pool::<[u64; 8]>::new(
        PoolConfig::new("locked")
            .per_node(false)
            .capacity(100)
            .max_capacity(40_000)
            .lock(true),
    );
    let pool = match made {
        Ok(pool) => pool,
        Err(e) => {
            // A limit below one chunk (some containers): the refusal names it.
            assert!(matches!(e, PoolError::LockRefused { .. }), "{e}");
            assert!(e.to_string().contains("ulimit -l"), "{e}");
            skip(format_args!("the OS refuses to lock one chunk: {e}"));
            return;
        }
    };
    let held: Vec<_> = (0..30_000).map(|_| pool.acquire()).collect();
    let stats = pool.stats();
    assert!(stats.chunks >= 2, "grew: {stats:?}");
    assert_eq!(stats.locked_bytes, stats.chunks * CHUNK_SIZE);
    let report = tally_pool::stats::report();
    let row = report
        .components
        .iter()
        .find(|c| c.name == "locked")
        .unwrap();
    assert_eq!(row.locked_bytes, stats.locked_bytes as u64);
    assert_eq!(row.huge_pages.as_deref(), Some("off"));
    for value in held.iter().step_by(5_000) {
        match value {
            Ok(v) => assert!(vm_flags(&**v as *const [u64; 8] as usize)
                .iter()
                .any(|f| f == "lo")),
            // Growth past the locked-memory limit is refused, never a panic.
            Err(e) => assert!(matches!(e, PoolError::LockRefused { .. }), "{e}"),
        }
    }
}

#[test]
#[cfg_attr(
    tally_sanitized,
    ignore = "the sanitizers' runtimes turn mlock into a no-op that succeeds"
)]
fn a_locked_huge_page_pool_gets_huge_pages() {
    let made = Pool::<[u64; 8]>::new(
        PoolConfig::new("huge-pages-locked")
            .per_node(false)
            .capacity(20_000)
            .huge_pages(true)
            .lock(true),
    );
    let pool = match made {
        Ok(pool) => pool,
        Err(e) => {
            assert!(matches!(e, PoolError::LockRefused { .. }), "{e}");
            skip(format_args!("the OS refuses to lock one pair: {e}"));
            return;
        }
    };
    let value = pool.acquire().unwrap();
    let addr = &*value as *const [u64; 8] as usize;
    let stats = pool.stats();
    let huge = huge_kib_around(addr);
    println!(
        "mode {:?}, stats {:?}, AnonHugePages {huge} kB",
        thp_mode(),
        stats.huge_pages
    );
    // Both chunks of the pair locked, counted whole.
    assert_eq!(stats.chunks, 2);
    assert_eq!(stats.locked_bytes, 2 * CHUNK_SIZE);
    let flags = vm_flags(addr);
    assert!(flags.iter().any(|f| f == "lo"), "{flags:?}");
    match thp_mode().as_deref() {
        Some("always" | "madvise") => {
            assert_eq!(stats.huge_pages, HugePages::Active);
            // Locking faults the pair in: in a huge page, as the stats say.
            assert!(huge > 0, "a locked pair got no huge page");
        }
        mode => println!("skipped: transparent huge pages are {mode:?}, not on"),
    }
}

/// Lowers the locked-memory limit to zero and gives up `CAP_IPC_LOCK`, so that every
/// `mlock` of this process fails.
fn forbid_locking() {
    forbid_locking_beyond(0, 0);
}

/// Lowers the locked-memory limit to `soft` bytes (hard limit `hard`) and gives up
/// `CAP_IPC_LOCK`, so that every `mlock` beyond it fails.
#[allow(clippy::disallowed_methods)] // `syscall` for capget and capset, not for memory
fn forbid_locking_beyond(soft: u64, hard: u64) {
    set_memlock_limit(soft, hard);
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    const CAP_IPC_LOCK: u32 = 14;
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: `capget` writes two `Data` (version 3) through a pointer to a live array of
    // two, and may write `header.version`.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    assert_eq!(rc, 0);
    data[0].effective &= !(1 << CAP_IPC_LOCK);
    data[0].permitted &= !(1 << CAP_IPC_LOCK);
    // SAFETY: `capset` reads the header and two `Data`; dropping a capability of this
    // process needs no privilege.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) };
    assert_eq!(rc, 0);
}

/// Sets the locked-memory limit: `soft` bytes, `hard` at most.
fn set_memlock_limit(soft: u64, hard: u64) {
    let limit = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: `setrlimit` reads one `rlimit` through a pointer to a live local; lowering
    // the hard limit, or moving the soft one below it, needs no privilege.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) }, 0);
}

/// The current locked-memory limit: soft and hard.
fn memlock_limit() -> (u64, u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `getrlimit` writes one `rlimit` through a pointer to a live local.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) };
    assert_eq!(rc, 0);
    (limit.rlim_cur, limit.rlim_max)
}

/// Runs the test `name` alone in a child of this binary with `env` set; it must pass and
/// print `child: ok`.
fn run_child(name: &str, env: &str) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(env, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}\n{stderr}");
    assert!(out.status.success(), "the child failed: {:?}", out.status);
    assert!(stdout.contains("child: ok"), "the child did not finish");
}

/// The child: locking is refused at creation and at growth.
fn child() {
    forbid_locking();
    println!("child: locking forbidden");
    let before = common::global::pool_mapped_bytes();
    let err = Pool::<[u64; 8]>::new(PoolConfig::new("lock-refused").per_node(false).lock(true))
        .expect_err("a refused lock is an error");
    println!("child: creation: {err}");
    assert!(
        matches!(&err, PoolError::LockRefused { bytes, limit, .. } if *bytes == CHUNK_SIZE && *limit == Some(0)),
        "{err:?}"
    );
    assert!(err.to_string().contains("ulimit -l"), "{err}");
    assert_eq!(
        common::global::pool_mapped_bytes(),
        before,
        "nothing left mapped"
    );
    // A block pool that fails to lock its first chunk is dropped whole: nothing stays
    // mapped.
    let before = common::global::pool_mapped_bytes();
    let config = BlockPoolConfig::new(Layout::new::<u64>())
        .capacity(1)
        .lock(true);
    let err = BlockPool::new(config).expect_err("refused");
    println!("child: block pool: {err}");
    assert!(matches!(err, PoolError::LockRefused { .. }), "{err:?}");
    assert_eq!(
        common::global::pool_mapped_bytes(),
        before,
        "nothing left mapped"
    );
    // A pool that maps nothing up front: its first acquire grows, and is refused.
    let pool = Pool::<[u64; 8]>::new(
        PoolConfig::new("lock-refused-growth")
            .per_node(false)
            .capacity(0)
            .lock(true),
    )
    .unwrap();
    let mapped = common::global::pool_mapped_bytes();
    let err = pool.acquire().expect_err("growth is refused");
    println!("child: growth: {err}");
    assert!(matches!(err, PoolError::LockRefused { .. }), "{err:?}");
    assert_eq!(pool.stats().chunks, 0);
    assert_eq!(pool.stats().locked_bytes, 0);
    assert_eq!(
        common::global::pool_mapped_bytes(),
        mapped,
        "the refused chunk is unmapped"
    );
    println!("child: ok");
}

#[test]
#[cfg_attr(
    tally_sanitized,
    ignore = "the sanitizers' runtimes turn mlock into a no-op that succeeds"
)]
fn a_refused_lock_is_an_error_naming_the_limit_and_leaves_nothing_mapped() {
    if std::env::var_os(CHILD).is_some() {
        child();
        return;
    }
    run_child(NAME, CHILD);
}

/// The reuse child: one chunk locked and one reclaimed, with a limit that holds only the
/// first. Reusing the second is refused, and it stays reclaimed, unlocked and unmapped
/// but for its header page; once the limit allows it, reuse locks it.
fn reuse_child() {
    let (soft, hard) = memlock_limit();
    if soft != libc::RLIM_INFINITY && soft < 2 * CHUNK_SIZE as u64 {
        println!("child: skipped: a locked-memory limit of {soft} bytes holds no two chunks");
        println!("child: ok");
        return;
    }
    let pool = BlockPool::new(
        BlockPoolConfig::new(Layout::new::<[u64; 8]>())
            .capacity(0)
            .prefault(false)
            .lock(true),
    )
    .unwrap();
    let mut held = Vec::new();
    while pool.stats().chunks < 2 {
        held.push(pool.allocate().unwrap());
    }
    let bound = held.len();
    // The first block stays live, and with it the first chunk; the second goes back.
    let (live, rest) = held.split_first().unwrap();
    for &b in rest {
        // SAFETY: allocated above, freed once.
        unsafe { pool.free(b) }.unwrap();
    }
    assert!(pool.reclaim() > 0);
    let stats = pool.stats();
    assert_eq!(
        (stats.chunks, stats.locked_bytes),
        (1, CHUNK_SIZE),
        "{stats:?}"
    );
    // One chunk is locked: the limit holds it and no more.
    forbid_locking_beyond(CHUNK_SIZE as u64, hard);
    println!("child: locking limited to one chunk");
    let mapped = common::global::pool_mapped_bytes();
    let mut more = Vec::new();
    let err = loop {
        match pool.allocate() {
            Ok(b) => more.push(b),
            Err(e) => break e,
        }
        assert!(
            more.len() <= bound,
            "the reclaimed chunk was reused unlocked"
        );
    };
    println!("child: reuse: {err}");
    assert!(
        matches!(&err, PoolError::LockRefused { bytes, .. } if *bytes == CHUNK_SIZE),
        "{err:?}"
    );
    let stats = pool.stats();
    assert_eq!(
        (stats.chunks, stats.locked_bytes),
        (1, CHUNK_SIZE),
        "{stats:?}"
    );
    assert_eq!(
        common::global::pool_mapped_bytes(),
        mapped,
        "the refused chunk counts as given back"
    );
    // The limit raised again: reuse locks it.
    set_memlock_limit(hard, hard);
    more.push(pool.allocate().unwrap());
    let stats = pool.stats();
    assert_eq!(
        (stats.chunks, stats.locked_bytes),
        (2, 2 * CHUNK_SIZE),
        "{stats:?}"
    );
    for b in more.into_iter().chain([*live]) {
        // SAFETY: allocated above, freed once.
        unsafe { pool.free(b) }.unwrap();
    }
    println!("child: ok");
}

#[test]
#[cfg_attr(
    tally_sanitized,
    ignore = "the sanitizers' runtimes turn mlock into a no-op that succeeds"
)]
fn a_reclaimed_chunk_whose_lock_is_refused_on_reuse_stays_reclaimed() {
    if std::env::var_os(REUSE_CHILD).is_some() {
        reuse_child();
        return;
    }
    run_child(REUSE_NAME, REUSE_CHILD);
}
