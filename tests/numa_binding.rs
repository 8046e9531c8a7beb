//! Placing memory with `Topology::bind` and reading it back with `node_of_memory`.
//!
//! - on synthetic 2- and 4-node topologies binding is checked like on a real machine
//!   and recorded: tests can assert which range would have been bound to which node, and
//!   `node_of_memory` answers from the record (latest binding wins);
//! - bad requests (unknown node, empty or misaligned range) are refused on every kind of
//!   topology, before any system call;
//! - on this machine, `node_of_memory` of a written heap page is a node of the system
//!   topology (`get_mempolicy`); an EPERM/ENOSYS sandbox is reported, not hidden.
//!
//! The real `mbind` of a freshly mapped chunk, checked page by page and in
//! `/proc/self/numa_maps`, is a unit test of the crate (`numa::memory::tests`), since
//! only the crate can map memory.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::ptr::NonNull;
use std::sync::Arc;

use tally_pool::numa::{BindError, Binding, Topology};

use common::skip::skip;

const PAGE: usize = 4096;
const CHUNK: usize = 1 << 20;

fn addr(a: usize) -> NonNull<u8> {
    NonNull::new(a as *mut u8).unwrap()
}

#[test]
fn bindings_on_a_synthetic_topology_are_recorded_in_order() {
    let t = Topology::synthetic(4, 2).unwrap();
    assert!(t.bindings().is_empty());
    // Four chunks, one per node, as per-node pools would map them.
    for node in 0..4u32 {
        let base = 0x7000_0000_0000 + node as usize * CHUNK;
        t.bind(addr(base), CHUNK, node).unwrap();
    }
    let expected: Vec<Binding> = (0..4u32)
        .map(|node| Binding {
            node,
            addr: 0x7000_0000_0000 + node as usize * CHUNK,
            len: CHUNK,
        })
        .collect();
    assert_eq!(t.bindings(), expected);
    // Every page of each chunk reports its node; the byte after the last chunk none.
    for node in 0..4u32 {
        let base = 0x7000_0000_0000 + node as usize * CHUNK;
        for offset in [0, 1, PAGE, CHUNK - 1] {
            assert_eq!(t.node_of_memory(addr(base + offset)), Ok(node));
        }
    }
    let after = 0x7000_0000_0000 + 4 * CHUNK;
    assert_eq!(
        t.node_of_memory(addr(after)),
        Err(BindError::NotBound { addr: after })
    );
    // Rebinding a range: the latest binding wins.
    t.bind(addr(0x7000_0000_0000), PAGE, 3).unwrap();
    assert_eq!(t.node_of_memory(addr(0x7000_0000_0000)), Ok(3));
    assert_eq!(t.node_of_memory(addr(0x7000_0000_0000 + PAGE)), Ok(0));
    assert_eq!(t.bindings().len(), 5);
    t.clear_records();
    assert!(t.bindings().is_empty());
}

#[test]
fn bindings_from_many_threads_are_all_recorded() {
    let t = Arc::new(Topology::synthetic(2, 1).unwrap());
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let t = Arc::clone(&t);
            std::thread::spawn(move || {
                for j in 0..100 {
                    let a = (i * 1000 + j + 1) * PAGE;
                    t.bind(addr(a), PAGE, (j % 2) as u32).unwrap();
                }
            })
        })
        .collect();
    for th in threads {
        th.join().unwrap();
    }
    let b = t.bindings();
    assert_eq!(b.len(), 400);
    assert_eq!(b.iter().filter(|b| b.node == 1).count(), 200);
}

#[test]
fn bad_requests_are_refused_on_every_kind_of_topology() {
    let synthetic = Topology::synthetic(2, 1).unwrap();
    let kinds = [
        synthetic.clone(),
        Topology::single_node(),
        Topology::system().clone(),
    ];
    for t in &kinds {
        let nodes = t.node_count();
        assert_eq!(
            t.bind(addr(PAGE), PAGE, 999),
            Err(BindError::UnknownNode { node: 999, nodes }),
            "{t:?}"
        );
        assert_eq!(t.bind(addr(PAGE), 0, 0), Err(BindError::EmptyRange));
        assert_eq!(
            t.bind(addr(PAGE + 8), PAGE, 0),
            Err(BindError::Misaligned {
                addr: PAGE + 8,
                page: PAGE
            })
        );
    }
    assert!(synthetic.bindings().is_empty(), "refusals are not recorded");
    let message = kinds[0].bind(addr(PAGE), PAGE, 7).unwrap_err().to_string();
    assert!(message.contains("no NUMA node 7"), "{message}");
}

#[test]
fn the_single_node_fallback_accepts_node_zero_without_a_system_call() {
    let t = Topology::single_node();
    // Not even mapped: nothing is asked of the OS.
    assert_eq!(t.bind(addr(0x4000_0000), CHUNK, 0), Ok(()));
    assert_eq!(t.node_of_memory(addr(0x4000_0000)), Ok(0));
    assert!(t.bindings().is_empty());
}

#[test]
fn this_machine_reports_the_node_of_a_written_heap_page() {
    let t = Topology::system();
    let mut buffer = vec![0u8; 2 * PAGE];
    buffer.iter_mut().for_each(|b| *b = 1);
    let p = NonNull::new(buffer.as_mut_ptr()).unwrap();
    match t.node_of_memory(p) {
        Ok(node) => assert!(t.node(node).is_some(), "node {node} not in {t:?}"),
        Err(e) if e.is_unavailable() => skip(format_args!("get_mempolicy unavailable: {e}")),
        Err(e) => panic!("get_mempolicy failed: {e}"),
    }
}

#[test]
fn error_messages_say_what_to_do() {
    let e = BindError::Misaligned {
        addr: 0x1008,
        page: 4096,
    };
    assert_eq!(
        e.to_string(),
        "address 0x1008 is not page-aligned (4096 bytes); bind whole pages, for example a freshly mapped chunk"
    );
    assert!(BindError::NotPermitted { call: "mbind" }.is_unavailable());
    assert!(!BindError::Os {
        call: "mbind",
        errno: 22
    }
    .is_unavailable());
    assert!(BindError::Os {
        call: "mbind",
        errno: 22
    }
    .to_string()
    .starts_with("mbind failed: Invalid argument"));
}
