//! Call sites of sampled acquires (`Pool::track_sites`, `#[pooled(track_sites = N)]`): a
//! leak names the line that acquires the values it keeps, in the pool's live sites and
//! in the report's `leaks[].sites` and `leak-suspect` finding; releases clear entries,
//! from any thread and after a token's round trip; one acquire in `n` is sampled; a pool
//! that tracks nothing reports no sites.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::panic::Location;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use tally_pool::stats::{self, LeakConfig, Site};
use tally_pool::{GuardLevel, Handle, Pool, PoolConfig, Pooled};

type Value = [u64; 8];

/// `file:line:` of this file at `line`, the prefix of a site's location.
fn at(line: u32) -> String {
    format!("{}:{line}:", file!())
}

fn location(site: &Site) -> String {
    site.location.to_string()
}

/// A pool whose values go straight between handles and thread caches.
fn direct(name: &str) -> &'static Pool<Value> {
    Pool::new(PoolConfig::new(name).capacity(0).per_node(false)).unwrap()
}

/// A pool that takes its slow paths on every acquire and release.
fn guarded(name: &str) -> &'static Pool<Value> {
    Pool::new(
        PoolConfig::new(name)
            .capacity(0)
            .per_node(false)
            .guard(GuardLevel::Canary),
    )
    .unwrap()
}

fn live(pool: &Pool<Value>) -> u64 {
    pool.live_sites().iter().map(|s| s.live).sum()
}

#[test]
fn a_leak_is_reported_at_the_line_that_acquires_it() {
    stats::configure_leaks(
        LeakConfig::default()
            .window(Duration::from_secs(1))
            .min_samples(3)
            .min_growth_bytes(0),
    );
    let pool = direct("sites-leak");
    pool.track_sites(1);
    let mut kept = Vec::new();
    let mut released = Vec::new();
    let leak_line = line!() + 17;
    let start = Instant::now();
    stats::sample();
    // Leak for at least a window and a half, then until a sample has judged the pool a
    // suspect. A sample judges one component in eight, so a slow build (a sanitizer's)
    // that takes few samples per window needs more windows.
    let suspect = |report: &stats::MemoryReport| {
        let id = report
            .components
            .iter()
            .find(|c| c.name == "sites-leak")
            .map(|c| c.id);
        report.leaks.iter().any(|l| Some(l.component_id) == id)
    };
    loop {
        for i in 0..500u64 {
            // The leak: kept for ever.
            kept.push(pool.acquire_with([i; 8]).unwrap());
            // Churn elsewhere: released at once.
            released.push(pool.acquire_with([i; 8]).unwrap());
            released.clear();
        }
        stats::sample();
        let elapsed = start.elapsed();
        if elapsed >= Duration::from_millis(1500) && suspect(&stats::report())
            || elapsed >= Duration::from_secs(60)
        {
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
    stats::sample();

    let sites = pool.live_sites();
    // The misses that sample fall on either call: a random acquire of the batch after
    // a miss is sampled, so the fixed period of this loop does not hide the leak.
    assert!(live(pool) >= 20, "{sites:?}");
    assert!(location(&sites[0]).starts_with(&at(leak_line)), "{sites:?}");
    assert!(sites
        .iter()
        .all(|s| location(s).starts_with(&at(leak_line))));
    assert!(sites[0].oldest_age.unwrap() >= Duration::from_secs(1));

    let report = stats::report();
    // No age in the report can exceed this: its values were acquired after `start`.
    let leaked_for = start.elapsed();
    let id = report
        .components
        .iter()
        .find(|c| c.name == "sites-leak")
        .unwrap()
        .id;
    let leak = report
        .leaks
        .iter()
        .find(|l| l.component_id == id)
        .unwrap_or_else(|| panic!("no leak suspect: {:#?}", report.leaks));
    assert!(
        leak.sites[0].location.starts_with(&at(leak_line)),
        "{leak:?}"
    );
    assert!(leak.sites[0].live > 0);
    assert!(leak.sites[0].oldest_age_secs.unwrap() >= 1.0);
    assert!(leak.oldest_age_secs.unwrap() >= leak.sites[0].oldest_age_secs.unwrap());
    let finding = report
        .health
        .findings
        .iter()
        .find(|f| f.code == "leak-suspect" && f.component_id == Some(id))
        .unwrap();
    assert!(
        finding.recommendation.contains(&at(leak_line)),
        "{finding:?}"
    );
    // In JSON: the site's fields by name, in the schema's order.
    let json = report.to_json();
    let site = format!("{{\"location\":\"{}", at(leak_line));
    let start = json.find(&site).unwrap_or_else(|| panic!("{json}"));
    let object = &json[start..start + json[start..].find('}').unwrap()];
    assert!(object.contains(",\"live\":"), "{object}");
    let age: f64 = object
        .split(",\"oldest_age_secs\":")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap_or_else(|| panic!("{object}"))
        .parse()
        .unwrap();
    assert!((1.0..=leaked_for.as_secs_f64()).contains(&age), "{object}");
    assert!(json.contains("\"oldest_age_secs\":"));
    assert!(stats::MemoryReport::from_json(&json).is_ok());

    drop(kept);
    assert!(pool.live_sites().is_empty());
    stats::configure_leaks(LeakConfig::default());
}

#[test]
fn releasing_clears_the_entries_of_both_kinds_of_pool() {
    for pool in [direct("sites-clear-direct"), guarded("sites-clear-guarded")] {
        pool.track_sites(1);
        let held: Vec<_> = (0..300u64)
            .map(|i| pool.acquire_with([i; 8]).unwrap())
            .collect();
        assert!(live(pool) > 0, "{}", pool.name());
        let row = stats::report()
            .components
            .into_iter()
            .find(|c| c.name == pool.name())
            .unwrap();
        // The twin that holds a direct pool's sampled values is part of the pool's row
        // and of its stats, not a component of its own.
        assert_eq!(row.live_objects, 300);
        assert_eq!(pool.stats().live_blocks, 300);
        let twin = format!("{}/sampled", pool.name());
        assert!(!stats::report().components.iter().any(|c| c.name == twin));
        drop(held);
        assert_eq!(live(pool), 0, "{}", pool.name());
    }
}

#[test]
fn one_acquire_in_n_is_sampled() {
    // A pool that sees every acquire samples exactly one in n.
    let pool = guarded("sites-one-in-ten");
    pool.track_sites(10);
    let held: Vec<_> = (0..1000u64)
        .map(|i| pool.acquire_with([i; 8]).unwrap())
        .collect();
    assert_eq!(live(pool), 100);
    drop(held);

    // A direct pool sees one acquire per refill and weighs it by the batch: a growing
    // population is sampled at about one in n.
    let pool = direct("sites-one-in-256");
    about_one_in_256_of_20000_sampled(pool);

    // Off: nothing more is sampled, and what was sampled is still released.
    pool.track_sites(0);
    let held: Vec<_> = (0..5000u64)
        .map(|i| pool.acquire_with([i; 8]).unwrap())
        .collect();
    assert_eq!(live(pool), 0);
    assert_eq!(pool.site_sampling(), 0);
    drop(held);
}

#[test]
fn a_pool_past_the_fast_table_is_sampled_one_in_n_too() {
    // A pool whose registry slot the thread caches' fast table (256 slots) does not cover
    // serves every acquire on its slow path, where each counts one, not a refill batch.
    let _fillers: Vec<_> = (0..300)
        .map(|i| direct(&format!("sites-filler-{i}")))
        .collect();
    about_one_in_256_of_20000_sampled(direct("sites-past-the-fast-table"));
}

/// Samples one acquire in 256 of `pool` while 20,000 values grow live: about 78 are
/// sampled (40 to 160 pass), and none stays so once they are released.
fn about_one_in_256_of_20000_sampled(pool: &'static Pool<Value>) {
    pool.track_sites(256);
    let held: Vec<_> = (0..20_000u64)
        .map(|i| pool.acquire_with([i; 8]).unwrap())
        .collect();
    let sampled = live(pool);
    assert!((40..=160).contains(&sampled), "{sampled} of 20000 sampled");
    drop(held);
    assert_eq!(live(pool), 0);
}

#[test]
fn a_pool_that_tracks_nothing_reports_no_sites() {
    let pool = direct("sites-none");
    let held: Vec<_> = (0..100u64)
        .map(|i| pool.acquire_with([i; 8]).unwrap())
        .collect();
    assert!(pool.live_sites().is_empty());
    assert_eq!(pool.site_sampling(), 0);
    assert!(!stats::report()
        .components
        .iter()
        .any(|c| c.name == "sites-none/sampled"));
    drop(held);
}

/// Acquires on this thread until an acquire is sampled; that value as a token, and the
/// line that acquired it. (A direct pool samples a random acquire of a refill batch.)
fn sampled_acquire(pool: &'static Pool<Value>) -> (tally_pool::RawHandle<Value>, u32) {
    let mut others = Vec::new();
    loop {
        let line = line!() + 1;
        let handle = pool.acquire_with([7; 8]).unwrap();
        if live(pool) == 1 {
            return (Handle::into_raw(handle), line);
        }
        others.push(handle);
        assert!(others.len() < 10_000, "nothing sampled");
    }
}

#[test]
fn every_sampled_value_lent_as_a_token_redeems() {
    // A direct pool lends its sampled values from a twin pool, whose 6-bit token tag
    // equals the pool's own for one twin in 64: such tokens reach the pool's own table
    // first. Over 400 pools, a collision is all but certain (the chance of none is 0.2 %).
    for i in 0..400 {
        let pool = Pool::<Value>::new(
            PoolConfig::new(format!("sites-twin-tag-{i}"))
                .capacity(0)
                .max_capacity(4096)
                .per_node(false)
                .prefault(false),
        )
        .unwrap();
        pool.track_sites(1);
        let (raw, _) = thread::scope(|s| s.spawn(|| sampled_acquire(pool)).join().unwrap());
        let redeemed = pool.redeem(raw);
        assert!(redeemed.is_ok(), "pool {i}: {:?}", redeemed.err());
        assert_eq!(pool.leaked_raw(), 0);
    }
}

#[test]
fn tokens_keep_their_entry_and_redeeming_moves_it() {
    for pool in [direct("sites-token-direct"), guarded("sites-token-guarded")] {
        pool.track_sites(1);
        let (raw, acquired_at) =
            thread::scope(|s| s.spawn(|| sampled_acquire(pool)).join().unwrap());
        let sites = pool.live_sites();
        assert_eq!(sites.len(), 1, "{}: {sites:?}", pool.name());
        assert!(location(&sites[0]).starts_with(&at(acquired_at)));
        assert_eq!(pool.leaked_raw(), 1);

        let redeemed_at = line!() + 1;
        let handle = pool.redeem(raw).unwrap();
        assert_eq!(handle[0], 7);
        let sites = pool.live_sites();
        assert_eq!(sites.len(), 1);
        assert!(
            location(&sites[0]).starts_with(&at(redeemed_at)),
            "{sites:?}"
        );
        assert!(core::ptr::eq(Handle::pool(&handle), pool));
        assert!(pool.redeem(raw).is_err());

        drop(handle);
        assert!(pool.live_sites().is_empty());
        assert_eq!(pool.leaked_raw(), 0);
    }
}

#[test]
fn releases_on_other_threads_clear_their_entries() {
    for pool in [
        direct("sites-threads-direct"),
        guarded("sites-threads-guarded"),
    ] {
        pool.track_sites(1);
        let held: Vec<_> = (0..2000u64)
            .map(|i| pool.acquire_with([i; 8]).unwrap())
            .collect();
        let sampled = live(pool);
        assert!(sampled > 0);
        let (senders, workers): (Vec<_>, Vec<_>) = (0..3)
            .map(|_| {
                let (tx, rx) = mpsc::channel::<Handle<Value>>();
                (tx, thread::spawn(move || rx.into_iter().for_each(drop)))
            })
            .unzip();
        for (i, handle) in held.into_iter().enumerate() {
            senders[i % 3].send(handle).unwrap();
        }
        drop(senders);
        for worker in workers {
            worker.join().unwrap();
        }
        assert_eq!(live(pool), 0, "{}", pool.name());
    }
}

#[derive(Pooled, Default)]
#[pooled(track_sites = 1, name = "sites-derived")]
struct Tracked {
    id: u64,
}

#[test]
fn the_derive_key_turns_tracking_on() {
    assert_eq!(Tracked::pool().site_sampling(), 1);
    thread::spawn(|| {
        let mut kept = Vec::new();
        let line = loop {
            let line = line!() + 1;
            kept.push(Tracked::acquire().unwrap());
            if !Tracked::pool().live_sites().is_empty() {
                break line;
            }
            assert!(kept.len() < 10_000, "nothing sampled");
        };
        let sites = Tracked::pool().live_sites();
        assert_eq!(sites.len(), 1);
        assert!(location(&sites[0]).starts_with(&at(line)), "{sites:?}");
        assert_eq!(kept[0].id, 0);
        drop(kept);
        assert!(Tracked::pool().live_sites().is_empty());
    })
    .join()
    .unwrap();
}

#[test]
fn a_site_is_the_callers_line() {
    // `Location` of a `#[track_caller]` call is the caller's own.
    let pool = guarded("sites-caller");
    pool.track_sites(1);
    let expected = Location::caller().file();
    let h = pool.acquire_with([1; 8]).unwrap();
    assert_eq!(pool.live_sites()[0].location.file(), expected);
    drop(h);
}
