//! Per-node pools on synthetic topologies (several nodes on a one-node machine) and on
//! this machine's real topology: node-local acquires, fallback to the nearest node, values
//! going home when released on another node, recorded bindings, raw handles per node.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::HashSet;
use std::ptr::NonNull;

use tally_pool::block::CHUNK_SIZE;
use tally_pool::numa::{with_node_override, Topology};
use tally_pool::{Handle, Pool, PoolConfig, PoolError};

use common::skip::skip;

fn pool(name: &str, topology: &Topology, cap: usize) -> &'static Pool<[u64; 8]> {
    Pool::new(
        PoolConfig::new(name)
            .capacity(0)
            .max_capacity(cap)
            .topology(topology.clone()),
    )
    .unwrap()
}

fn chunk_of<T>(h: &Handle<T>) -> usize {
    &**h as *const T as usize & !(CHUNK_SIZE - 1)
}

#[test]
fn each_thread_acquires_from_its_own_node() {
    let topology = Topology::synthetic(4, 2).unwrap();
    let pool = pool("local", &topology, 1000);
    let mut held = Vec::new();
    for node in 0..4u32 {
        for _ in 0..=node {
            held.push(with_node_override(node, || {
                pool.acquire_with([u64::from(node); 8]).unwrap()
            }));
        }
    }
    let stats = pool.node_stats();
    assert_eq!(stats.len(), 4);
    for (i, n) in stats.iter().enumerate() {
        assert_eq!(n.node, i as u32);
        assert_eq!(n.local_acquires, i as u64 + 1, "{n:?}");
        assert_eq!(n.remote_acquires, 0);
        assert_eq!(n.blocks.live_blocks, i as u64 + 1);
    }
    assert_eq!(pool.locality(), 1.0);
    // Every node's values sit in chunks bound to that node, before first touch.
    let bindings = topology.bindings();
    for h in &held {
        let node = h[0] as u32;
        let chunk = chunk_of(h);
        assert!(
            bindings
                .iter()
                .any(|b| b.node == node && b.addr == chunk && b.len == CHUNK_SIZE),
            "chunk {chunk:#x} of node {node} was not bound: {bindings:?}"
        );
        assert_eq!(
            topology.node_of_memory(NonNull::from(&**h).cast()).unwrap(),
            node
        );
    }
}

#[test]
fn a_full_node_falls_back_to_the_nearest_node_and_counts_it_remote() {
    // Node 0 is nearer to 1 than to 2 or 3.
    let topology = Topology::synthetic_with_distances(
        1,
        vec![
            vec![10, 12, 30, 30],
            vec![12, 10, 30, 30],
            vec![30, 30, 10, 12],
            vec![30, 30, 12, 10],
        ],
    )
    .unwrap();
    let pool = pool("fallback", &topology, 3);
    let held: Vec<_> = (0..6)
        .map(|i| with_node_override(0, || pool.acquire_with([i; 8]).unwrap()))
        .collect();
    let stats = pool.node_stats();
    assert_eq!(stats[0].local_acquires, 3);
    assert_eq!(
        stats[1].remote_acquires, 3,
        "the nearest node serves the overflow: {stats:?}"
    );
    assert_eq!(stats[2].remote_acquires + stats[3].remote_acquires, 0);
    assert!((pool.locality() - 0.5).abs() < 1e-9);
    // Node 0 and node 1 full: the far nodes serve next.
    let more: Vec<_> = (0..6)
        .map(|i| with_node_override(0, || pool.acquire_with([i; 8]).unwrap()))
        .collect();
    let stats = pool.node_stats();
    assert_eq!(stats[2].remote_acquires + stats[3].remote_acquires, 6);
    // Everything full: exhausted, with the value handed back.
    let err = with_node_override(0, || pool.acquire_with([9; 8])).unwrap_err();
    assert!(
        matches!(
            err.error,
            PoolError::Exhausted {
                max_capacity: 12,
                ..
            }
        ),
        "{}",
        err.error
    );
    assert_eq!(err.value, [9; 8]);
    drop((held, more));
    assert_eq!(pool.stats().live_blocks, 0);
}

#[test]
fn a_value_released_on_another_node_goes_home() {
    let topology = Topology::synthetic(2, 1).unwrap();
    let pool = pool("home", &topology, 100);
    let on_1: Vec<_> = (0..10)
        .map(|i| with_node_override(1, || pool.acquire_with([i; 8]).unwrap()))
        .collect();
    let chunks: HashSet<usize> = on_1.iter().map(chunk_of).collect();
    // Released by a thread of node 0.
    std::thread::spawn(move || with_node_override(0, || drop(on_1)))
        .join()
        .unwrap();
    let stats = pool.node_stats();
    assert_eq!(stats[1].cross_node_releases, 10);
    assert_eq!(
        stats[1].blocks.frees, 10,
        "the blocks were returned to node 1's pool"
    );
    assert_eq!(stats[0].blocks.allocations + stats[0].blocks.frees, 0);
    // Node 1 gets the same memory back; node 0 never does.
    let again: Vec<_> = (0..10)
        .map(|i| with_node_override(1, || pool.acquire_with([i; 8]).unwrap()))
        .collect();
    assert!(again.iter().all(|h| chunks.contains(&chunk_of(h))));
    let on_0 = with_node_override(0, || pool.acquire_with([0; 8]).unwrap());
    assert!(!chunks.contains(&chunk_of(&on_0)));
}

#[test]
fn raw_handles_redeem_on_any_node() {
    let topology = Topology::synthetic(4, 1).unwrap();
    let pool = pool("raw", &topology, 100);
    let raws: Vec<_> = (0..4u32)
        .map(|n| {
            with_node_override(n, || {
                Handle::into_raw(pool.acquire_with([u64::from(n); 8]).unwrap())
            })
        })
        .collect();
    assert_eq!(pool.leaked_raw(), 4);
    for (n, raw) in raws.iter().enumerate() {
        let h = with_node_override(((n + 1) % 4) as u32, || pool.redeem(*raw).unwrap());
        assert_eq!(h[0], n as u64);
        assert!(matches!(
            pool.redeem(*raw),
            Err(PoolError::StaleHandle { .. })
        ));
    }
    assert_eq!(pool.leaked_raw(), 0);
    assert_eq!(pool.stats().live_blocks, 0);
}

#[test]
fn per_node_false_gives_one_shared_pool() {
    let topology = Topology::synthetic(4, 1).unwrap();
    let pool: &'static Pool<u64> = Pool::new(
        PoolConfig::new("shared")
            .capacity(0)
            .per_node(false)
            .topology(topology),
    )
    .unwrap();
    let held: Vec<_> = (0..4u32)
        .map(|n| with_node_override(n, || pool.acquire_with(1).unwrap()))
        .collect();
    assert_eq!(pool.node_stats().len(), 1);
    assert_eq!(pool.node_stats()[0].local_acquires, 4);
    drop(held);
}

#[test]
fn on_this_machine_chunk_pages_report_their_node() {
    let topology = Topology::system();
    let pool: &'static Pool<[u64; 8]> = Pool::new(PoolConfig::new("real").capacity(0)).unwrap();
    let h = pool.acquire_with([7; 8]).unwrap();
    let node = pool
        .node_stats()
        .into_iter()
        .find(|n| n.blocks.live_blocks == 1)
        .unwrap();
    if pool.stats().bind_failures > 0 {
        return skip("this machine refused mbind; the binding itself is not verified here");
    }
    match topology.node_of_memory(NonNull::from(&*h).cast()) {
        Ok(found) => assert_eq!(found, node.node, "the chunk's pages are on its node"),
        Err(e) if e.is_unavailable() => skip(format_args!("get_mempolicy unavailable here: {e}")),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn untyped_per_node_pools_serve_the_thread_node_fall_back_and_take_blocks_home() {
    use tally_pool::block::{BlockPoolConfig, PerNodeBlockPool};
    let topology = Topology::synthetic(2, 1).unwrap();
    let pool = PerNodeBlockPool::new(
        BlockPoolConfig::new(std::alloc::Layout::new::<[u64; 8]>()).max_capacity(4),
        &topology,
    )
    .unwrap();
    let blocks: Vec<_> = (0..8)
        .map(|_| with_node_override(1, || pool.allocate().unwrap()))
        .collect();
    let nodes: Vec<_> = blocks.iter().map(|&b| pool.node_of(b).unwrap()).collect();
    assert_eq!(nodes.iter().filter(|&&n| n == 1).count(), 4);
    assert_eq!(
        nodes.iter().filter(|&&n| n == 0).count(),
        4,
        "node 0 took the overflow"
    );
    let stats = pool.node_stats();
    assert_eq!(
        (stats[0].2, stats[1].2),
        (4, 0),
        "the overflow counts as remote on node 0"
    );
    assert!((pool.locality() - 0.5).abs() < 1e-9);
    assert!(matches!(
        with_node_override(1, || pool.allocate()),
        Err(PoolError::Exhausted {
            max_capacity: 8,
            ..
        })
    ));
    // Freed by a thread of node 0: every block goes back to the pool of its own node.
    with_node_override(0, || {
        for &b in &blocks {
            // SAFETY: each block was allocated above and is freed once.
            unsafe { pool.free(b) }.unwrap();
        }
    });
    let stats = pool.node_stats();
    assert_eq!((stats[0].1.frees, stats[1].1.frees), (4, 4));
    assert_eq!(pool.stats().live_blocks, 0);
    // A pointer neither node owns is refused.
    let mut local = [0u64; 8];
    // SAFETY: a stack pointer, in no chunk of any node pool: the contract allows it, and
    // the pool refuses it without reading it.
    let refused = unsafe { pool.free(NonNull::from(&mut local).cast()) };
    assert!(refused.is_err());
    // Each node's chunks were bound to that node.
    assert!(topology.bindings().iter().any(|b| b.node == 1));
    assert!(topology.bindings().iter().any(|b| b.node == 0));
}
