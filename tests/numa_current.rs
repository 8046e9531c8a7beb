//! Which node the calling thread is on, and pinning threads to nodes.
//!
//! - `current_node` on this machine is a node of the system topology, stable across
//!   many calls (past the refresh interval), and always a valid index on any topology;
//! - the thread-local override lets one-node machines simulate threads on nodes 1..3 of
//!   a synthetic topology: it is per thread, nests, is restored after a panic, and is
//!   ignored by topologies that lack the node;
//! - pinning on a synthetic topology is recorded (node, thread, name) and makes the
//!   thread report that node; bad requests are refused;
//! - pinning on this machine to node 0 really changes the thread's affinity to the
//!   node's CPUs (skipped, with a note, only for EPERM/ENOSYS).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Barrier};

use tally_pool::numa::{
    current_cpu, current_node, current_node_index, pin_current_thread, refresh_current_node,
    set_thread_node, thread_affinity, thread_node_override, with_node_override, Node, PinError,
    Topology, REFRESH_INTERVAL,
};

use common::skip::skip;

#[test]
fn this_thread_is_on_a_node_of_this_machine() {
    let t = Topology::system();
    let first = current_node(t);
    assert!(t.node(first).is_some());
    // Past several refreshes, always a node of the topology.
    for _ in 0..3 * REFRESH_INTERVAL {
        let node = current_node(t);
        assert!(t.node(node).is_some());
        assert!(current_node_index(t) < t.node_count());
    }
    if let Some(cpu) = current_cpu() {
        if Topology::system_fallback_reason().is_none() {
            assert!(t.node_of_cpu(cpu).is_some(), "cpu {cpu}");
        } else {
            skip(format_args!(
                "one-node fallback: {:?}",
                Topology::system_fallback_reason()
            ));
        }
    }
}

#[test]
fn the_index_is_valid_on_any_topology() {
    // More nodes than this machine has CPUs, fewer CPUs than it has, ids with gaps.
    let shapes = [
        Topology::synthetic(4, 1).unwrap(),
        Topology::synthetic(1, 1).unwrap(),
        Topology::from_nodes(vec![Node::new(3, [100], 0), Node::new(7, [200], 0)], None).unwrap(),
    ];
    for t in &shapes {
        for _ in 0..2 * REFRESH_INTERVAL {
            let index = current_node_index(t);
            assert!(index < t.node_count());
            assert_eq!(current_node(t), t.nodes()[index].id());
        }
    }
    // A CPU no node lists counts as the first node.
    refresh_current_node();
    assert_eq!(current_node(&shapes[2]), 3);
}

#[test]
fn an_override_simulates_threads_on_other_nodes() {
    let t = Arc::new(Topology::synthetic(4, 2).unwrap());
    let barrier = Arc::new(Barrier::new(4));
    let threads: Vec<_> = (0..4u32)
        .map(|node| {
            let (t, barrier) = (Arc::clone(&t), Arc::clone(&barrier));
            std::thread::spawn(move || {
                set_thread_node(Some(node));
                // All four threads hold their override at the same time.
                barrier.wait();
                let seen: Vec<u32> = (0..2 * REFRESH_INTERVAL)
                    .map(|_| current_node(&t))
                    .collect();
                barrier.wait();
                assert!(seen.iter().all(|&n| n == node), "thread for node {node}");
                assert_eq!(current_node_index(&t), node as usize);
                node
            })
        })
        .collect();
    let mut done: Vec<u32> = threads.into_iter().map(|h| h.join().unwrap()).collect();
    done.sort_unstable();
    assert_eq!(done, vec![0, 1, 2, 3]);
    // This thread has no override.
    assert_eq!(thread_node_override(), None);
}

#[test]
fn overrides_nest_and_are_restored() {
    let t = Topology::synthetic(4, 1).unwrap();
    assert_eq!(thread_node_override(), None);
    let outer = with_node_override(1, || {
        assert_eq!(current_node(&t), 1);
        let inner = with_node_override(3, || current_node(&t));
        assert_eq!(current_node(&t), 1, "inner override restored");
        inner
    });
    assert_eq!(outer, 3);
    assert_eq!(thread_node_override(), None);

    assert_eq!(set_thread_node(Some(2)), None);
    assert_eq!(set_thread_node(Some(0)), Some(2));
    assert_eq!(set_thread_node(None), Some(0));
    assert_eq!(thread_node_override(), None);
}

#[test]
fn an_override_is_restored_after_a_panic() {
    let t = Topology::synthetic(2, 1).unwrap();
    let caught = std::panic::catch_unwind(|| with_node_override(1, || panic!("boom")));
    assert!(caught.is_err());
    assert_eq!(thread_node_override(), None);
    assert!(t.node(current_node(&t)).is_some());
}

#[test]
fn an_override_for_a_node_a_topology_lacks_is_ignored_by_it() {
    let four = Topology::synthetic(4, 1).unwrap();
    let one = Topology::single_node();
    with_node_override(3, || {
        assert_eq!(current_node(&four), 3);
        assert_eq!(current_node(&one), 0);
        let system = Topology::system();
        let node = current_node(system);
        assert!(system.node(node).is_some());
        if system.node(3).is_some() {
            assert_eq!(node, 3);
        }
    });
}

#[test]
fn pinning_on_a_synthetic_topology_is_recorded_and_moves_the_thread() {
    let t = Arc::new(Topology::synthetic(4, 2).unwrap());
    let before = thread_affinity().ok();
    let threads: Vec<_> = (0..4u32)
        .map(|node| {
            let t = Arc::clone(&t);
            std::thread::Builder::new()
                .name(format!("worker-{node}"))
                .spawn(move || {
                    pin_current_thread(&t, node).unwrap();
                    assert_eq!(current_node(&t), node);
                    assert_eq!(thread_node_override(), Some(node));
                    (std::thread::current().id(), thread_affinity().ok())
                })
                .unwrap()
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|h| h.join().unwrap()).collect();
    let pinnings = t.pinnings();
    assert_eq!(pinnings.len(), 4);
    let by_name: BTreeMap<_, _> = pinnings
        .iter()
        .map(|p| (p.thread_name.clone().unwrap(), (p.node, p.thread)))
        .collect();
    for (node, (thread, affinity)) in (0..4u32).zip(results) {
        assert_eq!(by_name[&format!("worker-{node}")], (node, thread));
        // Nothing real happened to the thread's affinity.
        assert_eq!(affinity, before);
    }
}

#[test]
fn bad_pin_requests_are_refused() {
    let t =
        Topology::from_nodes(vec![Node::new(0, [0], 0), Node::new(1, [], 1 << 30)], None).unwrap();
    assert_eq!(
        pin_current_thread(&t, 5),
        Err(PinError::UnknownNode { node: 5, nodes: 2 })
    );
    assert_eq!(pin_current_thread(&t, 1), Err(PinError::NoCpus { node: 1 }));
    assert!(t.pinnings().is_empty());
    assert_eq!(thread_node_override(), None);
    assert_eq!(
        pin_current_thread(Topology::system(), 4000),
        Err(PinError::UnknownNode {
            node: 4000,
            nodes: Topology::system().node_count()
        })
    );
}

#[test]
fn pinning_this_thread_to_node_zero_of_this_machine_works() {
    std::thread::spawn(|| {
        let t = Topology::system();
        let node = &t.nodes()[0];
        match pin_current_thread(t, node.id()) {
            Ok(()) => {}
            Err(e) if e.is_unavailable() => {
                return skip(format_args!("thread pinning unavailable here: {e}"));
            }
            Err(e) => panic!("pinning to node {}: {e}", node.id()),
        }
        assert!(t.pinnings().is_empty(), "real pinnings are not recorded");
        assert_eq!(current_node(t), node.id());
        if Topology::system_fallback_reason().is_none() {
            let allowed = thread_affinity().unwrap();
            assert!(!allowed.is_empty());
            assert!(
                allowed.iter().all(|cpu| node.cpus().contains(cpu)),
                "affinity {allowed:?} outside node {} cpus {:?}",
                node.id(),
                node.cpus()
            );
            let cpu = current_cpu().unwrap();
            assert!(node.cpus().contains(&cpu), "running on cpu {cpu}");
        } else {
            skip(format_args!(
                "one-node fallback: {:?}",
                Topology::system_fallback_reason()
            ));
        }
    })
    .join()
    .unwrap();
}
