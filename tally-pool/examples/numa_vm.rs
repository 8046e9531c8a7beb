//! NUMA placement as the kernel sees it: the program `.ci/numa-vm` boots as `/init` of a
//! two-node VM (one CPU per node).
//!
//! One thread pinned to each node acquires objects of a derived type; the kernel
//! (`get_mempolicy` on the first and last byte of every object) must place at least 99 % of
//! them on the acquiring thread's node. Then node 0 releases the other nodes' objects, and
//! every node acquires again: still its own memory. The pool's locality counters and its
//! placement audit (`move_pages`) must agree with the kernel. `TallyAlloc`'s kept large
//! mappings go home too: a buffer the last node wrote and node 0 freed comes back to the
//! last node, its pages still there, and node 0's next buffer is on node 0. One line ends in `RESULT ok`
//! or `RESULT fail <why>`. As process 1 it mounts `/proc` and `/sys` first and powers the
//! machine off at the end; elsewhere it checks the machine it runs on.
//!
//! ```sh
//! bash .ci/numa-vm                                  # in the VM
//! cargo run --release -p tally-pool --example numa_vm           # on this machine
//! ```

use core::ptr::NonNull;
use std::process::ExitCode;
use std::thread;

use core::alloc::{GlobalAlloc, Layout};

use tally_pool::alloc::TallyAlloc;
use tally_pool::numa::{pin_current_thread, Topology};
use tally_pool::{Handle, Pooled};

/// The objects: 256 bytes. The pool reserves room for few, so most are carved, faulted in
/// and mapped by the pinned threads as the pool grows.
#[derive(Pooled, Default)]
#[pooled(capacity = 256, name = "numa-vm")]
struct Tick {
    seq: u64,
    _pad: [u64; 31],
}

/// Objects each node acquires in each round.
const PER_NODE: usize = 3000;

/// The least share of objects on their node that passes.
const MIN_SHARE: f64 = 0.99;

/// On a thread pinned to `node`: releases `drop_first` (objects of other nodes), acquires
/// `PER_NODE` objects and returns them with how many the kernel has wholly on `node`.
fn acquire_on(
    node: u32,
    drop_first: Vec<Handle<Tick>>,
) -> Result<(Vec<Handle<Tick>>, usize), String> {
    thread::spawn(move || {
        let topology = Topology::system();
        pin_current_thread(topology, node).map_err(|e| format!("pin to node {node}: {e}"))?;
        drop(drop_first);
        let mut held = Vec::with_capacity(PER_NODE);
        let mut home = 0;
        for seq in 0..PER_NODE {
            let mut tick = Tick::acquire().map_err(|e| e.to_string())?;
            tick.seq = seq as u64;
            if kernel_node(&tick)? == Some(node) {
                home += 1;
            }
            held.push(tick);
        }
        Ok((held, home))
    })
    .join()
    .map_err(|_| format!("the thread on node {node} panicked"))?
}

/// A 64 KiB buffer: a large layout for `TallyAlloc`, which keeps it for reuse when freed.
const BUFFER: Layout = match Layout::from_size_align(64 << 10, 8) {
    Ok(layout) => layout,
    Err(_) => panic!("a valid layout"),
};

/// On a thread pinned to `node`: runs `f` and returns what it returns.
fn on_node<R: Send + 'static>(
    node: u32,
    f: impl FnOnce() -> Result<R, String> + Send + 'static,
) -> Result<R, String> {
    thread::spawn(move || {
        pin_current_thread(Topology::system(), node)
            .map_err(|e| format!("pin to node {node}: {e}"))?;
        f()
    })
    .join()
    .map_err(|_| format!("the thread on node {node} panicked"))?
}

/// On `node`: a buffer from `TallyAlloc`, every byte written, and the node of its first and
/// last byte if they agree.
fn buffer_on(node: u32) -> Result<(usize, Option<u32>), String> {
    on_node(node, || {
        // SAFETY: a non-zero size.
        let p = unsafe { TallyAlloc::new().alloc(BUFFER) };
        let p = NonNull::new(p).ok_or("TallyAlloc: null")?;
        // SAFETY: `BUFFER.size()` bytes of ours.
        unsafe { p.as_ptr().write_bytes(0x5A, BUFFER.size()) };
        let last = NonNull::new(p.as_ptr().wrapping_add(BUFFER.size() - 1)).unwrap_or(p);
        let of = |q| {
            Topology::system()
                .node_of_memory(q)
                .map_err(|e| e.to_string())
        };
        let (a, b) = (of(p)?, of(last)?);
        Ok((p.as_ptr() as usize, (a == b).then_some(a)))
    })
}

/// On `node`: frees a buffer of [`buffer_on`].
fn free_on(node: u32, buffer: usize) -> Result<(), String> {
    on_node(node, move || {
        // SAFETY: a buffer `TallyAlloc` handed out with `BUFFER`, not used again.
        unsafe { TallyAlloc::new().dealloc(buffer as *mut u8, BUFFER) };
        Ok(())
    })
}

/// `TallyAlloc`'s kept large mappings: the last node's buffer, freed by node 0, is reused
/// by the last node and still on it; node 0's next buffer is on node 0.
fn kept_mappings(nodes: &[u32]) -> Result<(String, Vec<String>), String> {
    let (first, last) = match (nodes.first(), nodes.last()) {
        (Some(&f), Some(&l)) => (f, l),
        _ => return Err("no node".into()),
    };
    let mut fails = Vec::new();
    let (theirs, placed) = buffer_on(last)?;
    free_on(first, theirs)?;
    let (again, placed_again) = buffer_on(last)?;
    let (mine, placed_mine) = buffer_on(first)?;
    let figures = format!(
        " large: n{last}={placed:?} reused_on_n{last}={} then={placed_again:?} n{first}={placed_mine:?}",
        again == theirs
    );
    if placed != Some(last) || placed_again != Some(last) || placed_mine != Some(first) {
        fails.push(format!("large buffers off their node:{figures}"));
    }
    if again != theirs {
        fails.push("the last node's kept buffer was not reused there".into());
    }
    free_on(last, again)?;
    free_on(first, mine)?;
    Ok((figures, fails))
}

/// The node of `tick`'s first and last byte, if they agree, by `get_mempolicy`.
fn kernel_node(tick: &Tick) -> Result<Option<u32>, String> {
    let first = NonNull::from(tick).cast::<u8>();
    let last = NonNull::new(first.as_ptr().wrapping_add(size_of::<Tick>() - 1)).unwrap_or(first);
    let topology = Topology::system();
    let of = |p| topology.node_of_memory(p).map_err(|e| e.to_string());
    let (a, b) = (of(first)?, of(last)?);
    Ok((a == b).then_some(a))
}

/// Runs the checks; returns the figures of the result line and the checks that failed.
fn check() -> Result<(String, Vec<String>), String> {
    let topology = Topology::system();
    let nodes: Vec<u32> = topology.nodes().iter().map(|n| n.id()).collect();
    let mut fails = Vec::new();
    // Round 1: every node acquires.
    let mut first = Vec::new();
    for &node in &nodes {
        first.push((node, acquire_on(node, Vec::new())?));
    }
    // Round 2: the first node releases everyone else's objects, then every node acquires.
    let mut foreign = Vec::new();
    let mut kept = Vec::new();
    for (i, (_, (held, _))) in first.iter_mut().enumerate() {
        if i == 0 {
            kept.append(held);
        } else {
            foreign.append(held);
        }
    }
    let mut second = Vec::new();
    for (i, &node) in nodes.iter().enumerate() {
        let release = if i == 0 {
            std::mem::take(&mut foreign)
        } else {
            Vec::new()
        };
        second.push((node, acquire_on(node, release)?));
    }
    let mut figures = format!("nodes={}", nodes.len());
    let mut home_total = 0;
    let mut home_by_node = Vec::new();
    for (round, results) in [("first", &first), ("after_cross_release", &second)] {
        figures += &format!(" {round}=[");
        for (node, (_, home)) in results {
            figures += &format!(" n{node}:{home}/{PER_NODE}");
            if (*home as f64) < MIN_SHARE * PER_NODE as f64 {
                fails.push(format!(
                    "{round}: node {node} has {home}/{PER_NODE} at home"
                ));
            }
            home_total += home;
        }
        figures += " ]";
    }
    for &node in &nodes {
        let on: usize = first
            .iter()
            .chain(&second)
            .filter(|r| r.0 == node)
            .map(|r| r.1 .1)
            .sum();
        home_by_node.push(on);
    }
    let objects = 2 * PER_NODE * nodes.len();
    let kernel_share = home_total as f64 / objects as f64;
    figures += &format!(" kernel_share={kernel_share:.4}");

    // The counters: each node served its own threads, and got its objects back from node 0.
    let pool = Tick::pool();
    let stats = pool.node_stats();
    let local: Vec<u64> = stats.iter().map(|n| n.local_acquires).collect();
    let remote: Vec<u64> = stats.iter().map(|n| n.remote_acquires).collect();
    let crossed: Vec<u64> = stats.iter().map(|n| n.cross_node_releases).collect();
    let locality = pool.locality();
    figures += &format!(
        " counters: local={local:?} remote={remote:?} cross_releases={crossed:?} locality={locality:.4}"
    );
    for (n, (&counted, &seen)) in local.iter().zip(&home_by_node).enumerate() {
        if (counted as f64 - seen as f64).abs() > 0.01 * objects as f64 {
            fails.push(format!(
                "node index {n}: counters say {counted} local, kernel {seen}"
            ));
        }
    }
    if (locality - kernel_share).abs() > 1.0 - MIN_SHARE {
        fails.push(format!(
            "locality {locality:.4} but kernel share {kernel_share:.4}"
        ));
    }
    let released_home = crossed.iter().skip(1).sum::<u64>();
    if released_home != (PER_NODE * (nodes.len() - 1)) as u64 {
        fails.push(format!("{released_home} cross-node releases counted"));
    }

    // The audit: the pool's own view of the same pages.
    match pool.audit_placement(4096) {
        Ok(audit) => {
            figures += &format!(
                " audit: sampled={} on_node={} share={:.4} per_node={:?} not_faulted={} unknown={}",
                audit.sampled,
                audit.on_intended_node,
                audit.share(),
                audit.per_node,
                audit.not_faulted,
                audit.unknown
            );
            if audit.share() < MIN_SHARE || audit.faulted() == 0 {
                fails.push(format!("audit share {:.4}", audit.share()));
            }
            if let Some(&node) = nodes.iter().find(|&&n| audit.pages_on(n) == 0) {
                fails.push(format!("audit found no page on node {node}"));
            }
        }
        Err(e) => fails.push(format!("audit: {e}")),
    }
    drop((kept, second));
    let (large, large_fails) = kept_mappings(&nodes)?;
    figures += &large;
    fails.extend(large_fails);
    Ok((figures, fails))
}

/// Mounts `/proc` and `/sys`, which the topology is read from (process 1 only).
fn mount_kernel_filesystems() {
    for (fs, target) in [(c"proc", c"/proc"), (c"sysfs", c"/sys")] {
        // SAFETY: every pointer is a NUL-terminated string that outlives the call, and a
        // null `data` is allowed for these file systems.
        let rc = unsafe {
            libc::mount(
                fs.as_ptr(),
                target.as_ptr(),
                fs.as_ptr(),
                0,
                core::ptr::null(),
            )
        };
        if rc != 0 {
            eprintln!(
                "numa-vm: mount {target:?}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

/// Writes the file systems back and turns the machine off (process 1 only).
fn power_off() {
    // SAFETY: `sync(2)` takes no arguments.
    unsafe { libc::sync() };
    // SAFETY: `reboot(2)` with `RB_POWER_OFF` stops the machine; nothing of ours runs after.
    unsafe { libc::reboot(libc::RB_POWER_OFF) };
}

fn main() -> ExitCode {
    let init = std::process::id() == 1;
    if init {
        mount_kernel_filesystems();
    }
    let (line, ok) = match check() {
        Ok((figures, fails)) if fails.is_empty() => (format!("{figures} RESULT ok"), true),
        Ok((figures, fails)) => (format!("{figures} RESULT fail {}", fails.join("; ")), false),
        Err(e) => (format!("RESULT fail {e}"), false),
    };
    println!("numa-vm: {line}");
    if init {
        power_off();
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
