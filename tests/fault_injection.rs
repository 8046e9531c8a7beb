//! The pools when the OS says no: `mmap`, `mbind`, `madvise` and `munmap` refused through
//! `tally_pool::fault` (built only with `RUSTFLAGS="--cfg tally_fault_injection"`; without
//! it this file is empty).
//!
//! Every public operation that reaches the OS returns its documented error (never a panic
//! or an abort), nothing leaks (block counts, the pools' mapped bytes and the process-wide
//! mapped count are exact afterwards), and the pool works again once the OS stops
//! refusing. A stress run refuses 1 % of the calls on four threads and checks that
//! allocations − frees = live at the end, with every block freed once.
//!
//! A free (or a handle's drop) while the OS refuses the depot a new magazine segment puts
//! its block onto the pool's overflow list (`block/overflow.rs`): it comes back, and the
//! pool hands it out again without growing. Only an unguarded recycling pool, whose free
//! blocks hold values and so can carry no link, still withdraws such a block.
//!
//! The process-wide mapped count (`pressure::mapped_bytes`) is compared before and after,
//! so the tests of this file take turns (`serial`). The chunk registry maps a leaf the
//! first time a chunk lands in a new 64 GiB stretch of addresses and keeps it: each test
//! makes and drops a pool before it takes its baseline.
#![cfg(tally_fault_injection)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use core::alloc::Layout;
use core::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tally_pool::block::{BlockPool, BlockPoolConfig, GuardLevel, PerNodeBlockPool, CHUNK_SIZE};
use tally_pool::fault::{self, Call, When};
use tally_pool::numa::{with_node_override, Topology, TopologySource};
use tally_pool::pressure;
use tally_pool::stats::{Source, Urgency};
use tally_pool::{Handle, Pool, PoolConfig, PoolError, Recycle};

mod common;
use common::skip::skip;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn mapped() -> u64 {
    pressure::mapped_bytes()
}

/// Maps and drops a pool of a few chunks, so that the registry leaves the test's pools
/// need are most likely in place before a baseline is taken.
fn settle() {
    let pool = BlockPool::new(config("settle").capacity(3 * per_chunk())).unwrap();
    drop(pool);
}

type Block = [u8; 256];

/// 256-byte blocks, no guard, nothing mapped or faulted in ahead.
fn config(name: &str) -> BlockPoolConfig {
    BlockPoolConfig::new(Layout::new::<Block>())
        .name(name)
        .capacity(0)
        .max_capacity(1 << 20)
        .guard(GuardLevel::Off)
        .prefault(false)
}

/// Blocks in one chunk of a [`config`] pool.
fn per_chunk() -> usize {
    let pool = BlockPool::new(config("per-chunk").capacity(1)).unwrap();
    let s = pool.stats();
    assert_eq!(s.chunks, 1);
    s.capacity
}

fn is_oom<T>(r: &Result<T, PoolError>) -> bool {
    matches!(r, Err(PoolError::OutOfMemory { .. }))
}

/// Frees every block of `held`; the frees the pool refuses stay in `held`.
fn free_all(pool: &BlockPool, held: &mut Vec<NonNull<u8>>) -> usize {
    let mut refused = Vec::new();
    for b in held.drain(..) {
        // SAFETY: each block was allocated from `pool` and is freed until a free succeeds
        // (a refused free leaves it ours, `BlockPool::free`'s errors).
        match unsafe { pool.free(b) } {
            Ok(()) => {}
            Err(e) => {
                assert!(matches!(e, PoolError::OutOfMemory { .. }), "{e:?}");
                refused.push(b);
            }
        }
    }
    let n = refused.len();
    *held = refused;
    n
}

/// `live_blocks` is what the test holds, and allocations − frees = live.
fn assert_counts(pool: &BlockPool, held: usize) {
    let s = pool.stats();
    assert_eq!(s.live_blocks, held as u64, "{s:?}");
    assert_eq!(s.allocations - s.frees, s.live_blocks, "{s:?}");
}

#[test]
fn block_pool_new_refused_at_each_mmap_maps_nothing_and_then_works() {
    let _serial = serial();
    settle();
    let base = mapped();
    let three_chunks = 3 * per_chunk();
    let mut failures = 0;
    for n in 1.. {
        let rule = fault::refuse(Call::Mmap, When::Nth(n));
        let made = BlockPool::new(config("new").capacity(three_chunks));
        let calls = rule.calls();
        drop(rule);
        match made {
            Err(e) => {
                assert!(matches!(e, PoolError::OutOfMemory { .. }), "{e:?}");
                failures += 1;
                assert_eq!(mapped(), base, "a refused creation leaves nothing mapped");
            }
            Ok(pool) => {
                assert!(
                    calls < n,
                    "the {n}-th mmap was refused, yet the pool was made"
                );
                assert_eq!(pool.stats().chunks, 3);
                drop(pool);
                assert_eq!(mapped(), base);
                break;
            }
        }
    }
    assert!(failures >= 3, "every chunk's mmap was refused once");
    let pool = BlockPool::new(config("new-after").capacity(3 * per_chunk())).unwrap();
    let b = pool.allocate().unwrap();
    // SAFETY: allocated above, freed once.
    unsafe { pool.free(b) }.unwrap();
}

#[test]
fn allocate_past_the_chunks_is_out_of_memory_while_refused_and_grows_after() {
    let _serial = serial();
    settle();
    let base = mapped();
    let pool = BlockPool::new(config("grow")).unwrap();
    let mut held = vec![pool.allocate().unwrap()];
    let one_chunk = pool.stats();
    assert_eq!(one_chunk.chunks, 1);
    let bpc = one_chunk.capacity;
    {
        let rule = fault::refuse(Call::Mmap, When::Always);
        // The rest of the first chunk, then refusals.
        let mut refusals = 0;
        for _ in 1..bpc + 100 {
            let r = pool.allocate();
            if is_oom(&r) {
                refusals += 1;
            } else {
                held.push(r.unwrap());
            }
        }
        assert_eq!(
            held.len(),
            bpc,
            "the mapped chunk is used to its last block"
        );
        assert_eq!(refusals, 100);
        assert!(rule.refused() > 0);
        let s = pool.stats();
        assert_eq!((s.chunks, s.bytes_mapped), (1, CHUNK_SIZE), "{s:?}");
        assert_counts(&pool, held.len());
    }
    // The OS says yes again: the pool grows.
    for _ in 0..100 {
        held.push(pool.allocate().unwrap());
    }
    assert_eq!(pool.stats().chunks, 2);
    assert_counts(&pool, held.len());
    assert_eq!(free_all(&pool, &mut held), 0);
    assert_counts(&pool, 0);
    drop(pool);
    assert_eq!(mapped(), base);
}

/// Frees 20,000 blocks of a pool of `guard` while the OS refuses every `mmap` (so the depot
/// gets no new magazine segment), then allocates them again still refused: every free
/// succeeds, nothing is lost, and the pool hands the same blocks out again without
/// growing. Then all back, reclaimed, unmapped.
fn frees_while_the_depot_cannot_map(name: &str, guard: GuardLevel) {
    settle();
    let base = mapped();
    let pool = BlockPool::new(config(name).guard(guard)).unwrap();
    // Enough blocks that their magazines need several new depot segments.
    let mut held: Vec<_> = (0..20_000).map(|_| pool.allocate().unwrap()).collect();
    let carved: Vec<usize> = held.iter().map(|b| b.as_ptr() as usize).collect();
    let chunks = pool.stats().chunks;
    {
        let rule = fault::refuse(Call::Mmap, When::Always);
        assert_eq!(
            free_all(&pool, &mut held),
            0,
            "{guard:?}: a free was refused"
        );
        assert!(rule.refused() > 0, "no free needed a new depot segment");
        assert_counts(&pool, 0);
        let s = pool.stats();
        assert_eq!(s.frees, 20_000, "{s:?}");
        // Counted free (the overflow list's blocks with the depot's), none live.
        let freed = Source::snapshot(&pool);
        assert_eq!(freed.live_bytes, 0, "{freed:?}");
        assert!(freed.free_bytes >= 19_000 * 256, "{freed:?}");
        // Still refused: the blocks come back from the overflow list and the depot, each
        // once, and nothing new is carved.
        held = (0..20_000).map(|_| pool.allocate().unwrap()).collect();
        assert_counts(&pool, held.len());
        let again: std::collections::HashSet<usize> =
            held.iter().map(|b| b.as_ptr() as usize).collect();
        assert_eq!(again.len(), 20_000, "each block once");
        assert_eq!(pool.stats().chunks, chunks, "no growth was needed");
        let reused = Source::snapshot(&pool);
        assert_eq!(reused.fresh_bytes, freed.fresh_bytes, "{reused:?}");
        let first: std::collections::HashSet<usize> = carved.iter().copied().collect();
        assert!(again.intersection(&first).count() >= 19_900);
        assert_eq!(free_all(&pool, &mut held), 0);
    }
    let s = pool.stats();
    assert_eq!(s.corruption_events, 0, "{guard:?}: {s:?}");
    assert_counts(&pool, 0);
    assert!(pool.reclaim() > 0);
    assert_eq!(pool.stats().chunks, 0);
    let b = pool.allocate().unwrap();
    // SAFETY: allocated above, freed once.
    unsafe { pool.free(b) }.unwrap();
    drop(pool);
    assert_eq!(mapped(), base);
}

#[test]
fn frees_the_depot_cannot_take_all_come_back() {
    let _serial = serial();
    frees_while_the_depot_cannot_map("free", GuardLevel::Off);
}

#[test]
fn guarded_frees_the_depot_cannot_take_all_come_back() {
    let _serial = serial();
    frees_while_the_depot_cannot_map("free-canary", GuardLevel::Canary);
    frees_while_the_depot_cannot_map("free-full", GuardLevel::Full);
}

#[test]
fn a_second_free_of_a_block_the_depot_could_not_take_is_refused() {
    let _serial = serial();
    let pool = BlockPool::new(config("free-twice").guard(GuardLevel::Canary)).unwrap();
    let mut held: Vec<_> = (0..20_000).map(|_| pool.allocate().unwrap()).collect();
    let rule = fault::refuse(Call::Mmap, When::Always);
    let last = *held.last().unwrap();
    assert_eq!(free_all(&pool, &mut held), 0);
    assert!(rule.refused() > 0);
    // SAFETY: a block of this guarded pool that nobody holds (on the overflow list or in
    // the depot), while no other thread allocates from it: refused, per `BlockPool::free`'s
    // contract.
    let again = unsafe { pool.free(last) };
    assert!(
        matches!(again, Err(PoolError::Corruption { .. })),
        "{again:?}"
    );
    drop(rule);
    assert_counts(&pool, 0);
    // Every block is handed out once more, and nothing more.
    let all: Vec<_> = (0..20_000).map(|_| pool.allocate().unwrap()).collect();
    let distinct: std::collections::HashSet<usize> =
        all.iter().map(|b| b.as_ptr() as usize).collect();
    assert_eq!(distinct.len(), 20_000);
    assert_eq!(pool.stats().corruption_events, 1);
}

/// A pool of four full chunks whose blocks are all free again.
fn four_free_chunks(name: &str) -> BlockPool {
    let pool = BlockPool::new(config(name)).unwrap();
    let n = 4 * per_chunk();
    let mut held: Vec<_> = (0..n).map(|_| pool.allocate().unwrap()).collect();
    assert_eq!(free_all(&pool, &mut held), 0);
    assert_eq!(pool.stats().chunks, 4);
    pool
}

#[test]
fn a_reclaim_whose_madvise_is_refused_reports_nothing_released() {
    let _serial = serial();
    settle();
    let pool = four_free_chunks("reclaim");
    let before = pool.stats();
    let base = mapped();
    {
        let rule = fault::refuse(Call::Madvise, When::Always);
        assert_eq!(pool.reclaim(), 0, "nothing was given back");
        assert_eq!(rule.refused(), 4);
    }
    let s = pool.stats();
    assert_eq!(
        (s.chunks, s.bytes_mapped, s.reclaimed_bytes),
        (before.chunks, before.bytes_mapped, before.reclaimed_bytes),
        "{s:?}"
    );
    assert_eq!(mapped(), base);
    // One refusal of four: three chunks go back, and exactly their bytes leave the count.
    let released = {
        let _rule = fault::refuse(Call::Madvise, When::Nth(2));
        pool.reclaim()
    };
    assert_eq!(released, 3 * (CHUNK_SIZE - 4096));
    assert_eq!(pool.stats().chunks, 1);
    assert_eq!(pool.stats().reclaimed_bytes, released as u64);
    assert_eq!(mapped(), base - released as u64);
    // The rest goes back once the OS agrees, and the pool serves from reused chunks.
    let last = pool.reclaim();
    assert_eq!(last, CHUNK_SIZE - 4096);
    assert_eq!(mapped(), base - 4 * (CHUNK_SIZE as u64 - 4096));
    let mut held: Vec<_> = (0..8000).map(|_| pool.allocate().unwrap()).collect();
    assert_counts(&pool, held.len());
    assert_eq!(free_all(&pool, &mut held), 0);
    assert_counts(&pool, 0);
}

#[test]
fn a_dropped_pool_whose_munmap_is_refused_is_leaked_and_counted() {
    let _serial = serial();
    settle();
    let base = mapped();
    let (ranges, bytes) = fault::unmap_refusals();
    let pool = four_free_chunks("unmap");
    let pool_bytes = mapped() - base;
    {
        let rule = fault::refuse(Call::Munmap, When::Always);
        drop(pool);
        assert!(rule.refused() >= 4, "four chunks, and the depot's segments");
    }
    let (ranges_after, bytes_after) = fault::unmap_refusals();
    assert!(ranges_after >= ranges + 4);
    assert_eq!(
        bytes_after - bytes,
        pool_bytes as usize,
        "every byte counted"
    );
    // The pages went back by MADV_DONTNEED: only address space stays behind.
    assert_eq!(mapped(), base);

    // With madvise refused too, the bytes stay mapped, and stay counted.
    let pool = four_free_chunks("unmap-resident");
    let with_pool = mapped();
    {
        let _unmap = fault::refuse(Call::Munmap, When::Always);
        let _advise = fault::refuse(Call::Madvise, When::Always);
        drop(pool);
    }
    assert_eq!(mapped(), with_pool);

    // A new pool works beside the leaked ranges.
    let pool = four_free_chunks("unmap-after");
    assert_counts(&pool, 0);
}

#[test]
fn refused_madvise_when_prefaulting_falls_back_without_error() {
    let _serial = serial();
    let pool = BlockPool::new(config("prefault").prefault(true).capacity(per_chunk())).unwrap();
    let rule = fault::refuse(Call::Madvise, When::Always);
    let mut held: Vec<_> = (0..10_000).map(|_| pool.allocate().unwrap()).collect();
    assert!(
        rule.refused() > 0,
        "prefaulting asked for MADV_POPULATE_WRITE"
    );
    assert_eq!(free_all(&pool, &mut held), 0);
    assert_counts(&pool, 0);
}

#[derive(Default)]
struct Order {
    id: u64,
    _pad: [u64; 31],
}

#[test]
fn typed_pool_new_refused_at_each_mmap_is_out_of_memory() {
    let _serial = serial();
    settle();
    let mut failures = 0;
    for n in 1.. {
        let before = mapped();
        let rule = fault::refuse(Call::Mmap, When::Nth(n));
        let made = Pool::<Order>::new(PoolConfig::new("typed-new").capacity(10_000));
        let calls = rule.calls();
        drop(rule);
        match made {
            Err(e) => {
                assert!(matches!(e, PoolError::OutOfMemory { .. }), "{e:?}");
                assert_eq!(mapped(), before, "a refused creation leaves nothing mapped");
                failures += 1;
            }
            Ok(pool) => {
                assert!(calls < n);
                assert_eq!(pool.stats().live_blocks, 0);
                break;
            }
        }
    }
    assert!(
        failures >= 3,
        "the token table and each chunk, refused once"
    );
}

#[test]
fn typed_acquire_warm_and_reclaim_under_refusal() {
    let _serial = serial();
    let pool = Pool::<Order>::new(PoolConfig::new("typed-ops").capacity(0)).unwrap();
    {
        let _rule = fault::refuse(Call::Mmap, When::Always);
        assert!(is_oom(&pool.acquire()));
        let e = pool.acquire_with(Order {
            id: 7,
            ..Order::default()
        });
        let e = e.err().expect("refused");
        assert!(matches!(e.error, PoolError::OutOfMemory { .. }));
        assert_eq!(e.value.id, 7, "the value comes back");
        assert!(is_oom(&pool.warm()));
    }
    let s = pool.stats();
    assert_eq!((s.live_blocks, s.chunks), (0, 0), "{s:?}");
    // The OS says yes again.
    assert!(pool.warm().unwrap() > 0);
    let held: Vec<Handle<Order>> = (0..10_000).map(|_| pool.acquire().unwrap()).collect();
    assert_eq!(pool.stats().live_blocks, 10_000);
    drop(held);
    assert_eq!(pool.stats().live_blocks, 0);
    let chunks = pool.stats().chunks;
    assert!(chunks >= 2);
    {
        let _rule = fault::refuse(Call::Madvise, When::Always);
        assert_eq!(pool.reclaim(), 0);
        assert_eq!(Source::reclaim(pool, Urgency::Critical), 0);
        assert_eq!(
            Source::reclaim_idle(pool, Urgency::Critical, Duration::ZERO),
            0
        );
    }
    assert_eq!(pool.stats().chunks, chunks, "nothing was reported released");
    assert!(Source::reclaim(pool, Urgency::Critical) > 0);
    assert_eq!(pool.stats().chunks, 0);
    let h = pool.acquire().unwrap();
    assert_eq!(pool.stats().live_blocks, 1);
    drop(h);
    // Growth ahead of demand (the pressure monitor's, on a busy pool) while the OS refuses
    // chunks and depot segments: nothing is handed out or lost.
    let held: Vec<Handle<Order>> = (0..5000).map(|_| pool.acquire().unwrap()).collect();
    drop(held);
    {
        let _rule = fault::refuse(Call::Mmap, When::Always);
        let _ = Source::grow_ahead(pool);
    }
    let s = pool.stats();
    assert_eq!(s.live_blocks, 0, "{s:?}");
    assert_eq!(s.allocations - s.frees, 0, "{s:?}");
}

#[test]
fn a_chunk_mapped_while_munmap_is_refused_works_and_its_trimmed_ends_are_counted() {
    let _serial = serial();
    settle();
    let base = mapped();
    let (ranges, _) = fault::unmap_refusals();
    let pool = BlockPool::new(config("trim")).unwrap();
    let b = {
        let rule = fault::refuse(Call::Munmap, When::Always);
        let b = pool.allocate().unwrap();
        assert!(
            rule.refused() > 0,
            "mapping an aligned chunk trims its ends"
        );
        b
    };
    // The head and the tail of the over-sized mapping stay behind, counted, never used.
    assert!(fault::unmap_refusals().0 > ranges);
    assert_eq!(pool.stats().chunks, 1);
    // SAFETY: allocated above, freed once.
    unsafe { pool.free(b) }.unwrap();
    assert_counts(&pool, 0);
    drop(pool);
    // The ends were never counted as mapped (never touched): the count is back.
    assert_eq!(mapped(), base);
}

/// 20,000 handles dropped while the depot cannot map a segment for their magazines.
fn drop_handles_while_mmap_is_refused(name: &str) -> &'static Pool<Order> {
    let pool = Pool::<Order>::new(PoolConfig::new(name).capacity(0)).unwrap();
    let held: Vec<Handle<Order>> = (0..20_000).map(|_| pool.acquire().unwrap()).collect();
    {
        let _rule = fault::refuse(Call::Mmap, When::Always);
        drop(held);
    }
    pool
}

/// Values of `Kept` dropped so far.
static KEPT_DROPS: AtomicUsize = AtomicUsize::new(0);

#[derive(Default)]
struct Kept {
    fills: Vec<u64>,
}

impl Drop for Kept {
    fn drop(&mut self) {
        KEPT_DROPS.fetch_add(1, Ordering::Relaxed);
    }
}

impl Recycle for Kept {
    fn recycle(&mut self) {
        self.fills.clear();
    }
}

#[test]
fn recycled_handles_dropped_while_the_depot_cannot_map_keep_the_counts_consistent() {
    let _serial = serial();
    // An unguarded recycling pool keeps values in its free blocks, so they can carry no
    // overflow link: a block whose release the depot could not take is withdrawn
    // (`ReturnBlock`), its value dropped; it stays counted as live and is never handed out
    // again. No panic, no abort, no value leaked, and no value handed out damaged.
    let pool = Pool::<Kept>::new_recycling(PoolConfig::new("typed-drop-kept").capacity(0)).unwrap();
    let held: Vec<Handle<Kept>> = (0..20_000)
        .map(|i| {
            let mut h = pool.acquire().unwrap();
            h.fills.push(i);
            h
        })
        .collect();
    let drops = KEPT_DROPS.load(Ordering::Relaxed);
    {
        let _rule = fault::refuse(Call::Mmap, When::Always);
        drop(held);
    }
    let s = pool.stats();
    assert_eq!(s.allocations, 20_000, "{s:?}");
    assert_eq!(s.allocations - s.frees, s.live_blocks, "{s:?}");
    assert!(s.live_blocks > 0, "no release needed a new depot segment");
    // The values of the withdrawn blocks were dropped; the others wait, recycled.
    assert_eq!(
        (KEPT_DROPS.load(Ordering::Relaxed) - drops) as u64,
        s.live_blocks,
        "{s:?}"
    );
    // The pool serves again once the OS says yes, from blocks that were given back, each
    // with its recycled value intact (empty, its capacity kept).
    let again: Vec<Handle<Kept>> = (0..1000).map(|_| pool.acquire().unwrap()).collect();
    assert!(again.iter().all(|h| h.fills.is_empty()));
    assert_eq!(pool.stats().live_blocks, s.live_blocks + 1000);
    drop(again);
    assert_eq!(pool.stats().live_blocks, s.live_blocks);
}

#[test]
fn typed_handles_dropped_while_mmap_is_refused_all_come_back() {
    let _serial = serial();
    let pool = drop_handles_while_mmap_is_refused("typed-drop-all");
    let s = pool.stats();
    assert_eq!(s.allocations, 20_000, "{s:?}");
    assert_eq!(s.live_blocks, 0, "{s:?}");
    assert_eq!(s.allocations - s.frees, 0, "{s:?}");
    // The pool hands them all out again, while the OS still refuses (no growth needed),
    // each block once.
    let _rule = fault::refuse(Call::Mmap, When::Always);
    let again: Vec<Handle<Order>> = (0..20_000).map(|_| pool.acquire().unwrap()).collect();
    let distinct: std::collections::HashSet<usize> = again
        .iter()
        .map(|h| &**h as *const Order as usize)
        .collect();
    assert_eq!(distinct.len(), 20_000);
    assert_eq!(pool.stats().chunks, s.chunks, "no growth was needed");
    drop(again);
    let s = pool.stats();
    assert_eq!((s.live_blocks, s.allocations - s.frees), (0, 0), "{s:?}");
}

#[test]
fn guarded_typed_handles_dropped_while_mmap_is_refused_all_come_back() {
    let _serial = serial();
    for guard in [GuardLevel::Canary, GuardLevel::Full] {
        let pool = Pool::<Order>::new(
            PoolConfig::new("typed-drop-guarded")
                .capacity(0)
                .guard(guard),
        )
        .unwrap();
        let held: Vec<Handle<Order>> = (0..20_000).map(|_| pool.acquire().unwrap()).collect();
        {
            let _rule = fault::refuse(Call::Mmap, When::Always);
            drop(held);
            let again: Vec<Handle<Order>> = (0..20_000).map(|_| pool.acquire().unwrap()).collect();
            drop(again);
        }
        let s = pool.stats();
        assert_eq!(
            (s.live_blocks, s.allocations - s.frees),
            (0, 0),
            "{guard:?}: {s:?}"
        );
        assert_eq!(s.corruption_events, 0, "{guard:?}: {s:?}");
    }
}

#[test]
fn per_node_pools_on_a_synthetic_topology_refuse_each_node_alone() {
    let _serial = serial();
    let topology = Topology::synthetic(4, 1).unwrap();
    let pool = PerNodeBlockPool::new(config("per-node"), &topology).unwrap();
    let mut held = Vec::new();
    for node in 0..4u32 {
        with_node_override(node, || {
            let _rule = fault::refuse(Call::Mmap, When::Always);
            assert!(is_oom(&pool.allocate()), "node {node}");
        });
    }
    assert_eq!(pool.stats().live_blocks, 0);
    assert_eq!(pool.stats().chunks, 0);
    for node in 0..4u32 {
        with_node_override(node, || held.push(pool.allocate().unwrap()));
        assert_eq!(pool.node_of(*held.last().unwrap()), Some(node));
    }
    // The bindings are recorded only for the chunks that were mapped.
    assert_eq!(topology.bindings().len(), 4);
    for b in held {
        // SAFETY: allocated above, freed once.
        unsafe { pool.free(b) }.unwrap();
    }
    assert_eq!(pool.stats().live_blocks, 0);
}

#[test]
fn a_refused_mbind_is_counted_and_the_chunk_used_unbound() {
    let _serial = serial();
    let topology = Topology::system();
    if !matches!(
        topology.source(),
        TopologySource::Sysfs | TopologySource::Hwloc
    ) {
        // Synthetic and single-node topologies make no mbind call (tested above).
        skip(format_args!(
            "no real NUMA topology here: {:?}",
            topology.source()
        ));
        return;
    }
    let two_chunks = 2 * per_chunk();
    let rule = fault::refuse(Call::Mbind, When::Always).with_errno(libc::EIO);
    let refused = PerNodeBlockPool::new(config("mbind-refused").capacity(two_chunks), topology);
    let refused = refused.unwrap();
    let n = rule.refused();
    drop(rule);
    assert!(n >= 2, "each chunk is bound");
    assert_eq!(refused.stats().bind_failures, n, "each refusal is counted");
    let b = refused.allocate().unwrap();
    // SAFETY: allocated above, freed once.
    unsafe { refused.free(b) }.unwrap();
}

/// Frees `b` to `pool`, retrying while the OS refuses the depot its memory (the block
/// stays the caller's then). Returns the refusals.
fn free_retrying(pool: &BlockPool, b: NonNull<u8>) -> u64 {
    let mut refused = 0;
    loop {
        // SAFETY: `b` was allocated from `pool` by the caller, and a refused free leaves it
        // the caller's (unguarded pool), so it is freed once.
        match unsafe { pool.free(b) } {
            Ok(()) => return refused,
            Err(e) => {
                assert!(matches!(e, PoolError::OutOfMemory { .. }), "{e:?}");
                refused += 1;
            }
        }
    }
}

/// What a worker of the stress run did.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    allocations: u64,
    frees: u64,
    refused_calls: u64,
}

/// One worker of the stress run: `ops` operations with 1 % of this thread's `mmap`,
/// `mbind`, `madvise` and `munmap` calls refused. On the shared `pool` (which prefaults,
/// so its growth asks for `MADV_POPULATE_WRITE`): allocations, frees in bursts, reclaims;
/// every 500 operations, a private pool made, used, checked and dropped (its mappings,
/// depot segments and unmappings). Every block is freed once; the rules end before the
/// thread does, so its cache is flushed at exit with the OS saying yes.
fn churn(pool: &BlockPool, seed: u64, ops: usize) -> Tally {
    let chance = |k: u64| When::Chance {
        per_million: 10_000,
        seed: seed * 16 + k,
    };
    let rules = [
        fault::refuse(Call::Mmap, chance(1)),
        fault::refuse(Call::Mbind, chance(2)),
        fault::refuse(Call::Madvise, chance(3)),
        fault::refuse(Call::Munmap, chance(4)),
    ];
    let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut held: Vec<NonNull<u8>> = Vec::new();
    let mut t = Tally::default();
    for op in 0..ops {
        let r = next();
        if op % 500 == 499 {
            private_pool(seed, (r % 3000) as usize);
        } else if r % 64 == 0 {
            pool.reclaim();
        } else if held.len() < 6000 && (r % 3 != 0 || held.is_empty()) {
            match pool.allocate() {
                Ok(b) => {
                    t.allocations += 1;
                    held.push(b);
                }
                Err(e) => assert!(matches!(e, PoolError::OutOfMemory { .. }), "{e:?}"),
            }
        } else {
            let burst = (r >> 8) as usize % 300 + 1;
            for _ in 0..burst.min(held.len()) {
                let i = (next() as usize) % held.len();
                free_retrying(pool, held.swap_remove(i));
                t.frees += 1;
            }
        }
    }
    for b in held {
        free_retrying(pool, b);
        t.frees += 1;
    }
    t.refused_calls = rules.iter().map(fault::Injection::refused).sum();
    drop(rules);
    t
}

/// A pool of this thread's: `n` blocks allocated (while the OS lets it grow) and freed,
/// the counts checked, then dropped.
fn private_pool(seed: u64, n: usize) {
    let Ok(pool) = BlockPool::new(config(&format!("private-{seed}"))) else {
        panic!("a pool that maps nothing at creation failed");
    };
    let mut held = Vec::new();
    for _ in 0..n {
        match pool.allocate() {
            Ok(b) => held.push(b),
            Err(e) => assert!(matches!(e, PoolError::OutOfMemory { .. }), "{e:?}"),
        }
    }
    assert_counts(&pool, held.len());
    for b in held {
        free_retrying(&pool, b);
    }
    assert_counts(&pool, 0);
}

#[test]
fn one_percent_refused_on_four_threads_keeps_the_block_count_exact() {
    let _serial = serial();
    let ops = 100_000;
    let pool = BlockPool::new(config("stress").prefault(true)).unwrap();
    let tallies: Vec<Tally> = std::thread::scope(|s| {
        let workers: Vec<_> = (1..=4u64)
            .map(|seed| {
                let pool = &pool;
                s.spawn(move || churn(pool, seed, ops))
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let allocations: u64 = tallies.iter().map(|t| t.allocations).sum();
    let frees: u64 = tallies.iter().map(|t| t.frees).sum();
    let refused: u64 = tallies.iter().map(|t| t.refused_calls).sum();
    eprintln!("{allocations} allocations, {frees} frees, {refused} calls refused: {tallies:?}");
    assert!(refused >= 8, "only {refused} calls were refused");
    assert_eq!(allocations, frees, "every block freed once");
    let s = pool.stats();
    assert_eq!((s.allocations, s.frees), (allocations, frees), "{s:?}");
    assert_eq!(s.live_blocks, 0, "{s:?}");
    // The workers' caches went back at their exit: every chunk can go back.
    pool.reclaim();
    let s = pool.stats();
    assert_eq!(s.chunks, 0, "{s:?}");
}
