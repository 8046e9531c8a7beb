//! `tally_pool::numa::Placement`: which node each worker of a runtime goes to, and the
//! start hooks that pin it there and warm the node.
//!
//! - spread and pack on synthetic 2- and 4-node machines, on uneven nodes, with
//!   memory-only nodes and distance-ordered packing;
//! - the index-taking hook (rayon's `start_handler` shape) and the counter hook (tokio's
//!   `on_thread_start` shape) pin every worker, record it on a synthetic topology, and run
//!   the warm-up with the worker's node after pinning;
//! - on this machine, a pinned worker's affinity is its node's CPUs;
//! - with the features `rayon` / `tokio`, real rayon pools and tokio runtimes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::sync::{Arc, Mutex};

use tally_pool::numa::{
    current_node, thread_affinity, Node, Placement, PlacementStrategy, Topology, WorkerStart,
};

use common::skip::skip;

#[test]
fn spread_and_pack_on_two_nodes() {
    let t = Topology::synthetic(2, 4).unwrap();
    let spread = Placement::spread(&t);
    assert_eq!(spread.strategy(), PlacementStrategy::Spread);
    assert_eq!(spread.assignments(8), vec![0, 1, 0, 1, 0, 1, 0, 1]);
    let pack = Placement::pack(&t);
    assert_eq!(pack.assignments(8), vec![0, 0, 0, 0, 1, 1, 1, 1]);
    // More workers than CPUs wrap around.
    assert_eq!(pack.assignments(10)[8..], [0, 0]);
    assert_eq!(spread.node_for(9), 1);
    assert_eq!(spread.node_index_for(9), 1);
}

#[test]
fn spread_and_pack_on_four_nodes() {
    let t = Topology::synthetic(4, 2).unwrap();
    assert_eq!(
        Placement::spread(&t).assignments(8),
        vec![0, 1, 2, 3, 0, 1, 2, 3]
    );
    assert_eq!(
        Placement::pack(&t).assignments(8),
        vec![0, 0, 1, 1, 2, 2, 3, 3]
    );
    // Three workers: spread touches three nodes, pack two.
    assert_eq!(Placement::spread(&t).assignments(3), vec![0, 1, 2]);
    assert_eq!(Placement::pack(&t).assignments(3), vec![0, 0, 1]);
}

#[test]
fn pack_fills_the_nearest_nodes_first() {
    // Node 0's sibling is node 2 (distance 12), not node 1.
    let t = Topology::synthetic_with_distances(
        2,
        vec![
            vec![10, 32, 12, 32],
            vec![32, 10, 32, 12],
            vec![12, 32, 10, 32],
            vec![32, 12, 32, 10],
        ],
    )
    .unwrap();
    assert_eq!(
        Placement::pack(&t).assignments(8),
        vec![0, 0, 2, 2, 1, 1, 3, 3]
    );
}

#[test]
fn uneven_and_memory_only_nodes() {
    let t = Topology::from_nodes(
        vec![
            Node::new(0, 0..4, 0),
            Node::new(1, [], 1 << 30), // memory only: never a worker's node
            Node::new(2, 4..5, 0),
        ],
        None,
    )
    .unwrap();
    // Spread: round-robin while both have free CPUs, then node 0 alone.
    assert_eq!(Placement::spread(&t).assignments(6), vec![0, 2, 0, 0, 0, 0]);
    assert_eq!(Placement::pack(&t).assignments(6), vec![0, 0, 0, 0, 2, 0]);
    assert!(!Placement::spread(&t).assignments(100).contains(&1));

    // No node has CPUs: everything goes to the first node, nothing panics.
    let none = Topology::from_nodes(vec![Node::new(0, [], 0)], None).unwrap();
    assert_eq!(Placement::spread(&none).assignments(3), vec![0, 0, 0]);
    let start = Placement::pack(&none).place_current_thread(0);
    assert!(start.pinned.is_err());
}

/// Runs workers `0..n` at once, each on a thread of its own that starts with `start`, and
/// waits for them.
fn run_workers(start: &(impl Fn(usize) + Clone + Send + 'static), n: usize) {
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let start = start.clone();
            std::thread::spawn(move || start(i))
        })
        .collect();
    for th in threads {
        th.join().unwrap();
    }
}

/// Collects what the warm-up hook saw, and checks it ran after pinning.
fn recording_hook(
    t: &Topology,
) -> (
    Arc<Mutex<Vec<WorkerStart>>>,
    impl Fn(&WorkerStart) + Send + Sync + 'static,
) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    let t = t.clone();
    let hook = move |start: &WorkerStart| {
        // The worker is already on its node when the warm-up runs.
        assert_eq!(current_node(&t), start.node);
        sink.lock().unwrap().push(start.clone());
    };
    (seen, hook)
}

#[test]
fn the_index_hook_pins_each_worker_then_warms_its_node() {
    let t = Topology::synthetic(4, 1).unwrap();
    let (seen, hook) = recording_hook(&t);
    run_workers(&Placement::spread(&t).start_handler(hook), 6);
    let mut seen = seen.lock().unwrap().clone();
    seen.sort_by_key(|s| s.worker);
    let nodes: Vec<u32> = seen.iter().map(|s| s.node).collect();
    assert_eq!(nodes, vec![0, 1, 2, 3, 0, 1]);
    assert!(seen.iter().all(|s| s.pinned.is_ok()));
    assert!(seen.iter().all(|s| s.node_index == s.node as usize));
    let mut pinned: Vec<u32> = t.pinnings().iter().map(|p| p.node).collect();
    pinned.sort_unstable();
    assert_eq!(pinned, vec![0, 0, 1, 1, 2, 3]);
}

#[test]
fn the_counter_hook_numbers_threads_in_start_order() {
    let t = Topology::synthetic(2, 2).unwrap();
    let (seen, hook) = recording_hook(&t);
    let start = Placement::pack(&t).thread_start_hook(hook);
    // Sequential starts, so the order is known.
    for _ in 0..5 {
        let start = start.clone();
        std::thread::spawn(start).join().unwrap();
    }
    let seen = seen.lock().unwrap();
    let got: Vec<(usize, u32)> = seen.iter().map(|s| (s.worker, s.node)).collect();
    assert_eq!(got, vec![(0, 0), (1, 0), (2, 1), (3, 1), (4, 0)]);
}

#[test]
fn workers_on_this_machine_are_really_pinned() {
    let t = Topology::system();
    let placement = Placement::spread(t);
    let results = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&results);
    let start = placement.start_handler(move |s| {
        sink.lock()
            .unwrap()
            .push((s.clone(), thread_affinity().ok()));
    });
    run_workers(&start, 2);
    for (s, affinity) in results.lock().unwrap().iter() {
        match &s.pinned {
            Ok(()) => {}
            Err(e) if e.is_unavailable() => {
                skip(format_args!("pinning unavailable here: {e}"));
                continue;
            }
            Err(e) => panic!("worker {}: {e}", s.worker),
        }
        if Topology::system_fallback_reason().is_none() {
            let cpus = t.node(s.node).unwrap().cpus();
            let affinity = affinity.as_ref().unwrap();
            assert!(affinity.iter().all(|c| cpus.contains(c)), "{affinity:?}");
        } else {
            skip(format_args!(
                "one-node fallback: {:?}",
                Topology::system_fallback_reason()
            ));
        }
    }
    assert!(t.pinnings().is_empty());
}

#[cfg(feature = "rayon")]
#[test]
fn a_rayon_pool_placed_on_a_synthetic_four_node_machine() {
    let t = Topology::synthetic(4, 2).unwrap();
    let (seen, hook) = recording_hook(&t);
    let pool = Placement::spread(&t)
        .rayon_builder(8, hook)
        .build()
        .unwrap();
    let nodes = pool.broadcast(|_| current_node(&t));
    assert_eq!(nodes, vec![0, 1, 2, 3, 0, 1, 2, 3]);
    assert_eq!(seen.lock().unwrap().len(), 8);
    assert_eq!(t.pinnings().len(), 8);
    // Work items see their worker's node.
    let per_item: Vec<u32> = pool.install(|| {
        use rayon::prelude::*;
        (0..1000)
            .into_par_iter()
            .map(|_| current_node(&t))
            .collect()
    });
    assert!(per_item.iter().all(|&n| n < 4));
}

#[cfg(feature = "rayon")]
#[test]
fn a_rayon_pool_placed_on_this_machine() {
    let t = Topology::system();
    let pool = Placement::pack(t).rayon_builder(2, |_| {}).build().unwrap();
    let nodes = pool.broadcast(|_| current_node(t));
    assert!(nodes.iter().all(|&n| t.node(n).is_some()));
}

#[cfg(feature = "tokio")]
#[test]
fn a_tokio_runtime_placed_on_a_synthetic_two_node_machine() {
    let t = Topology::synthetic(2, 1).unwrap();
    let (seen, hook) = recording_hook(&t);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(2);
    Placement::spread(&t).configure_tokio(&mut builder, hook);
    let runtime = builder.build().unwrap();
    let t2 = t.clone();
    let node = runtime.block_on(async move {
        tokio::spawn(async move { current_node(&t2) })
            .await
            .unwrap()
    });
    assert!(node < 2);
    drop(runtime);
    let seen = seen.lock().unwrap();
    // Both workers (and any blocking-pool thread) were placed, in start order.
    assert!(seen.len() >= 2, "{seen:?}");
    assert!(
        seen.iter().all(|s| s.node as usize == s.worker % 2),
        "{seen:?}"
    );
    assert!(seen.iter().any(|s| s.node == 1));
    assert_eq!(t.pinnings().len(), seen.len());
}
