//! `TallyAlloc` keeps freed large mappings (up to 1 MiB, 16 MiB a node) for the next
//! allocation of as many pages: reused without a system call, zeroed for
//! `alloc_zeroed`, shared between threads of a node, counted as mapped and retained,
//! and unmapped by `trim`. One test, its steps in order: a parallel test could take the
//! mappings this one expects back, or trim them.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use core::alloc::{GlobalAlloc, Layout};

use tally_pool::alloc::TallyAlloc;

#[global_allocator]
static GLOBAL: TallyAlloc = TallyAlloc::new();

const PAGE: usize = 4096;

/// A layout of `pages` pages less a few bytes: reuse goes by page count, and no other
/// allocation of this program asks for as many pages.
fn layout(pages: usize) -> Layout {
    Layout::from_size_align(pages * PAGE - 24, 8).unwrap()
}

fn alloc(l: Layout) -> *mut u8 {
    // SAFETY: every layout here has a non-zero size.
    let p = unsafe { GLOBAL.alloc(l) };
    assert!(!p.is_null());
    p
}

fn free(p: *mut u8, l: Layout) {
    // SAFETY: allocated by this allocator with `l` and not used again.
    unsafe { GLOBAL.dealloc(p, l) };
}

/// Pins the calling thread to `node` (by default the node it runs on), so that every free
/// and allocation here uses that node's kept mappings; returns the node.
fn pin(node: Option<u32>) -> u32 {
    let topology = tally_pool::numa::Topology::system();
    let node = node.unwrap_or_else(|| tally_pool::numa::current_node(topology));
    if topology.node_count() > 1 {
        tally_pool::numa::pin_current_thread(topology, node).unwrap();
    }
    node
}

#[test]
fn freed_large_mappings_come_back_until_trimmed() {
    let node = pin(None);
    // Start from nothing kept.
    GLOBAL.trim();
    let before = GLOBAL.stats().large;
    assert_eq!(before.retained_bytes, 0);

    // Freed and allocated again with as many pages: the same mapping, kept in between.
    let l = layout(37);
    let p = alloc(l);
    // SAFETY: `l.size()` bytes of ours.
    unsafe { p.write_bytes(0xAB, l.size()) };
    free(p, l);
    let kept = GLOBAL.stats().large;
    assert_eq!(kept.retained_bytes, 37 * PAGE as u64);
    assert_eq!(kept.live_bytes, before.live_bytes);
    assert_eq!(kept.mapped_bytes, before.mapped_bytes + 37 * PAGE as u64);
    let q = alloc(l);
    assert_eq!(q, p, "the kept mapping is reused");
    let s = GLOBAL.stats().large;
    assert_eq!(s.reused, before.reused + 1);
    assert_eq!(s.retained_bytes, 0);
    assert_eq!(s.live_bytes, before.live_bytes + l.size() as u64);

    // alloc_zeroed takes a kept mapping of up to 64 KiB and zeroes it; a longer one it
    // maps afresh (zero pages), leaving the kept one.
    free(q, l);
    let small = layout(13);
    let s = alloc(small);
    // SAFETY: `small.size()` bytes of ours.
    unsafe { s.write_bytes(0xCD, small.size()) };
    free(s, small);
    for (l, reused) in [(small, true), (l, false)] {
        let kept = if reused { s } else { p };
        // SAFETY: non-zero size.
        let z = unsafe { GLOBAL.alloc_zeroed(l) };
        assert_eq!(z == kept, reused, "{l:?}");
        // SAFETY: `l.size()` bytes of ours.
        let bytes = unsafe { core::slice::from_raw_parts(z, l.size()) };
        assert!(bytes.iter().all(|&b| b == 0), "{l:?} reads as zero");
        free(z, l);
    }

    // Another length does not take it; a thread of the same node that frees one gives it
    // to this thread.
    let other = layout(38);
    let o = alloc(other);
    assert_ne!(o, p);
    let handed = std::thread::spawn(move || {
        pin(Some(node));
        let l = layout(39);
        let t = alloc(l);
        free(t, l);
        t as usize
    })
    .join()
    .unwrap();
    assert_eq!(alloc(layout(39)) as usize, handed);
    free(handed as *mut u8, layout(39));
    free(o, other);

    // A reused mapping grows and shrinks in place or moves (mremap), keeping its bytes,
    // and the counters see one allocation and one free per call.
    let before = GLOBAL.stats().large;
    let small = layout(17);
    let r = alloc(small);
    free(r, small);
    let r = alloc(small);
    // SAFETY: `small.size()` bytes of ours.
    unsafe { r.write_bytes(0x3C, small.size()) };
    let grown = Layout::from_size_align(53 * PAGE, 8).unwrap();
    // SAFETY: `r` is live with `small`; the new size is non-zero.
    let g = unsafe { GLOBAL.realloc(r, small, grown.size()) };
    assert!(!g.is_null());
    // SAFETY: the first `small.size()` bytes were kept, and are ours.
    let kept_bytes = unsafe { core::slice::from_raw_parts(g, small.size()) };
    assert!(kept_bytes.iter().all(|&b| b == 0x3C));
    free(g, grown);
    let s = GLOBAL.stats().large;
    assert_eq!(s.allocations - before.allocations, 2);
    assert_eq!(s.frees - before.frees, 2);
    assert_eq!(s.reused - before.reused, 1);
    assert_eq!(s.live_bytes, before.live_bytes);

    // Over 1 MiB, or aligned above a page: unmapped at once.
    let big = Layout::from_size_align((256 + 1) * PAGE, 8).unwrap();
    let aligned = Layout::from_size_align(40 * PAGE, 2 * PAGE).unwrap();
    let kept_now = GLOBAL.stats().large.retained_bytes;
    free(alloc(big), big);
    free(alloc(aligned), aligned);
    assert_eq!(GLOBAL.stats().large.retained_bytes, kept_now);

    // Trim unmaps everything kept, and the mapped bytes drop with it.
    let s = GLOBAL.stats().large;
    assert!(s.retained_bytes >= (13 + 37 + 38 + 39 + 53) as u64 * PAGE as u64);
    let trimmed = GLOBAL.trim();
    assert_eq!(trimmed as u64, s.retained_bytes);
    let after = GLOBAL.stats().large;
    assert_eq!(after.retained_bytes, 0);
    assert_eq!(after.mapped_bytes, s.mapped_bytes - trimmed as u64);
    let again = alloc(l);
    free(again, l);

    // A pressure monitor unmaps what is kept at its first round, at Normal.
    assert!(GLOBAL.stats().large.retained_bytes > 0);
    let monitor = tally_pool::pressure::PressureMonitor::start(
        tally_pool::pressure::PressureConfig::default().budget(1 << 40),
    )
    .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let round = loop {
        if let Some(round) = monitor.last_reclamation() {
            break round;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no round reclaimed anything"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    assert!(round.reclaimed_bytes >= l.size() as u64, "{round:?}");
    assert_eq!(GLOBAL.stats().large.retained_bytes, 0);
}
