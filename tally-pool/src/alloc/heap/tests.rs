use super::*;

/// `n` blocks of `h`, taken until there are `n` (a take may give fewer).
fn take_n(h: Heap, class: SizeClass, node: usize, n: usize) -> Vec<*mut u8> {
    let mut out = vec![ptr::null_mut(); n];
    let mut got = 0;
    while got < n {
        let k = h.take(class, node, &mut out[got..]);
        assert!(k > 0, "the OS refused a chunk");
        got += k;
    }
    out
}

#[test]
fn first_block_is_aligned_and_leaves_room_for_the_header() {
    for i in 0..CLASS_COUNT {
        let class = SizeClass::from_index(i).unwrap();
        for paired in [false, true] {
            let first = first_block(class, paired);
            // The first page holds headers only: `home_of` reads another class's place.
            assert!(first >= 4096);
            assert!(first >= header_offset(i) + core::mem::size_of::<ChunkHeader>());
            assert_eq!(first % class.align(), 0);
            assert!((CHUNK - first) / class.size() >= 1);
        }
    }
}

#[test]
fn blocks_beyond_the_stack_s_room_overflow_and_come_back() {
    let (node, index) = (MAX_NODES - 2, 5);
    let class = SizeClass::from_index(index).unwrap();
    let h = heap(node, index).unwrap();
    let blocks = take_n(h, class, node, STACK + 10);
    assert!(
        blocks.iter().all(|&b| is_fresh(b)),
        "carved blocks are marked fresh"
    );
    let mut sorted: Vec<_> = blocks.iter().map(|&b| untagged(b)).collect();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), STACK + 10, "no block handed out twice");
    let free_before = h.counts.free.load(Ordering::Relaxed);
    // SAFETY: the blocks are this heap's, free and ours, given back once.
    unsafe { h.give(&blocks) };
    assert_eq!(
        h.counts.free.load(Ordering::Relaxed),
        free_before + STACK + 10
    );
    let again = take_n(h, class, node, STACK + 10);
    assert_eq!(
        again.iter().filter(|&&b| is_fresh(b)).count(),
        STACK,
        "a stacked block stays fresh, a linked one does not"
    );
    let mut back: Vec<_> = again.iter().map(|&b| untagged(b)).collect();
    back.sort();
    assert_eq!(back, sorted, "the same blocks, stacked and overflowed");
    // SAFETY: as above.
    unsafe { h.give(&again) };
}

#[test]
fn the_free_count_never_runs_below_zero() {
    // A node index no other test uses; two threads trade the same blocks while a third
    // watches the count, which must never wrap.
    let (node, index) = (MAX_NODES - 3, 2);
    let class = SizeClass::from_index(index).unwrap();
    let h = heap(node, index).unwrap();
    let rounds = if cfg!(miri) { 50 } else { 20_000 };
    let stop = AtomicBool::new(false);
    let worst = std::thread::scope(|s| {
        let watcher = s.spawn(|| {
            let mut worst = 0;
            while !stop.load(Ordering::Relaxed) {
                worst = worst.max(h.counts.free.load(Ordering::Relaxed));
            }
            worst
        });
        let traders: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    let mut out = [ptr::null_mut(); 4];
                    for _ in 0..rounds {
                        let n = h.take(class, node, &mut out);
                        // SAFETY: the blocks are this heap's, free and ours.
                        unsafe { h.give(&out[..n]) };
                    }
                })
            })
            .collect();
        for t in traders {
            t.join().unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        watcher.join().unwrap()
    });
    let carved = h.counts.carved.load(Ordering::Relaxed);
    assert!(
        worst <= carved,
        "free count {worst} above the {carved} carved"
    );
}

#[cfg(all(target_os = "linux", not(miri)))]
#[test]
fn chunks_prefer_their_node_rather_than_bind_to_it() {
    let (node, index) = (0, 9);
    let class = SizeClass::from_index(index).unwrap();
    let h = heap(node, index).unwrap();
    let blocks = take_n(h, class, node, 1);
    let block = NonNull::new(untagged(blocks[0])).unwrap();
    let policy = sys::policy_of(block);
    let unbound = h.counts.unbound_chunks.load(Ordering::Relaxed);
    // SAFETY: the block is this heap's, free and ours.
    unsafe { h.give(&blocks) };
    if unbound > 0 {
        eprintln!("mbind refused here: no policy to check");
        return;
    }
    assert_eq!(policy.unwrap(), sys::PREFERRED);
}

#[test]
fn take_and_give_round_trip_and_count() {
    // A node index no other test uses.
    let (node, index) = (MAX_NODES - 1, 3);
    let class = SizeClass::from_index(index).unwrap();
    let h = heap(node, index).unwrap();
    let blocks = take_n(h, class, node, 5);
    let first = NonNull::new(untagged(blocks[0])).unwrap();
    assert_eq!(
        // SAFETY: the block is this heap's, free and ours.
        unsafe { home_of(first, index) },
        Some(node)
    );
    assert_eq!(
        // SAFETY: as above; another class's header place in the same chunk is zero.
        unsafe { home_of(first, index + 1) },
        None,
        "a free with another class's layout is refused"
    );
    let free_before = h.counts.free.load(Ordering::Relaxed);
    // SAFETY: as above; not used afterwards.
    unsafe { h.give(&blocks) };
    assert_eq!(h.counts.free.load(Ordering::Relaxed), free_before + 5);
    let again = take_n(h, class, node, 3);
    assert_eq!(
        again[..],
        blocks[2..],
        "the stack hands back the last given first"
    );
    // SAFETY: as above.
    unsafe { h.give(&again) };
    assert!(h.counts.chunks.load(Ordering::Relaxed) >= 1);
}

/// The chunk of each block in `blocks`, in the order the chunks first appear.
fn chunks_of(blocks: &[*mut u8]) -> Vec<usize> {
    let mut chunks: Vec<usize> = Vec::new();
    for &b in blocks {
        let chunk = untagged(b) as usize & !(CHUNK - 1);
        if !chunks.contains(&chunk) {
            chunks.push(chunk);
        }
    }
    chunks
}

/// Whether the mapping holding `addr` is advised `MADV_HUGEPAGE` (`hg` in its `VmFlags`).
#[cfg(all(target_os = "linux", not(miri)))]
fn advised_huge(addr: usize) -> bool {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let mut inside = false;
    for line in smaps.lines() {
        let range = line.split(' ').next().and_then(|r| r.split_once('-'));
        let bounds = range.and_then(|(a, b)| {
            Some((
                usize::from_str_radix(a, 16).ok()?,
                usize::from_str_radix(b, 16).ok()?,
            ))
        });
        if let Some((start, end)) = bounds {
            inside = (start..end).contains(&addr);
        } else if inside {
            if let Some(flags) = line.strip_prefix("VmFlags:") {
                return flags.split_whitespace().any(|f| f == "hg");
            }
        }
    }
    false
}

/// Turns the pairs off for as long as it lives, and back on when dropped, even by a
/// failing assertion.
struct PairsOff;

impl PairsOff {
    fn new() -> Self {
        set_huge_pages(false);
        Self
    }
}

impl Drop for PairsOff {
    fn drop(&mut self) {
        set_huge_pages(true);
    }
}

/// Blocks the heap can still carve, under its lock: the rest of its chunk and its spare.
fn uncarved(h: Heap, class: SizeClass) -> usize {
    h.with(|s, _| {
        let spare = (CHUNK - first_block(class, true)) / class.size();
        s.left / class.size() + if s.spare.is_null() { 0 } else { spare }
    })
}

/// Takes blocks of `h` one at a time into `blocks` until they span `chunks` chunks; fails
/// rather than loops for ever if a chunk never comes.
fn take_until_chunks(
    h: Heap,
    class: SizeClass,
    node: usize,
    blocks: &mut Vec<*mut u8>,
    chunks: usize,
) {
    for _ in 0..8 * CHUNK / class.size() {
        if chunks_of(blocks).len() >= chunks {
            return;
        }
        blocks.extend(take_n(h, class, node, 1));
    }
    panic!("no chunk {chunks} after {} blocks", blocks.len());
}

#[test]
fn a_class_in_heavy_use_maps_chunk_pairs_for_huge_pages() {
    // A node index no other test uses, and the largest class: few blocks a chunk.
    let (node, index) = (MAX_NODES - 4, CLASS_COUNT - 1);
    let class = SizeClass::from_index(index).unwrap();
    let h = heap(node, index).unwrap();
    let counts = &h.counts;
    let per_chunk = |paired| (CHUNK - first_block(class, paired)) / class.size();
    let fresh = || counts.blocks.load(Ordering::Relaxed) - counts.carved.load(Ordering::Relaxed);
    let mut blocks = Vec::new();
    // Every block of the first two chunks, then the first of the pair.
    take_until_chunks(h, class, node, &mut blocks, PAIRS_AFTER + 1);
    assert_eq!(counts.chunks.load(Ordering::Relaxed), PAIRS_AFTER + 2);
    assert_eq!(
        blocks.len(),
        PAIRS_AFTER * per_chunk(false) + 1,
        "chunks carved whole"
    );
    assert_eq!(
        fresh(),
        uncarved(h, class),
        "fresh blocks: the pair's, spare included"
    );
    assert_eq!(fresh(), 2 * per_chunk(true) - 1);

    // The pair's first half carved whole: no room, but a spare. A chunk another thread
    // mapped meanwhile goes back unused, or that spare would be lost.
    blocks.extend(take_n(h, class, node, per_chunk(true) - 1));
    let (room, spare) = h.with(|s, _| (s.left >= class.size(), !s.spare.is_null()));
    assert!(!room && spare);
    let racer = map_chunk(node, true).unwrap();
    let returned = h.with(|s, _| h.install_or_return(s, racer, class, node));
    assert!(returned.is_some(), "a second spare would be lost");
    drop(returned);

    // Every block of the pair's first half, then the second half's first.
    take_until_chunks(h, class, node, &mut blocks, PAIRS_AFTER + 2);
    let chunks = chunks_of(&blocks);
    assert_eq!(
        counts.chunks.load(Ordering::Relaxed),
        PAIRS_AFTER + 2,
        "the spare, not a map"
    );
    let (first, second) = (chunks[PAIRS_AFTER], chunks[PAIRS_AFTER + 1]);
    assert_eq!(first % (2 * CHUNK), 0, "a pair is 2 MiB-aligned");
    assert_eq!(second, first + CHUNK, "the spare is the pair's second half");
    assert_eq!(fresh(), uncarved(h, class));
    assert_eq!(fresh(), per_chunk(true) - 1);
    for &b in &blocks {
        let b = NonNull::new(untagged(b)).unwrap();
        // SAFETY: a block this heap handed out, ours.
        let home = unsafe { home_of(b, index) };
        assert_eq!(home, Some(node), "headers of both halves");
    }
    let advised = counts.paired_chunks.load(Ordering::Relaxed);
    #[cfg(miri)]
    assert_eq!(advised, 0, "no advice under miri: not counted");
    #[cfg(all(target_os = "linux", not(miri)))]
    if std::path::Path::new("/sys/kernel/mm/transparent_hugepage").exists() {
        assert_eq!(advised, 2);
        assert!(advised_huge(first) && advised_huge(second));
    }
    let stats = super::super::stats::collect();
    let mine = stats
        .classes
        .iter()
        .find(|c| c.node as usize == node && c.block_size == class.size());
    let mine = mine.unwrap();
    assert_eq!(mine.fresh_blocks, fresh() as u64);
    assert_eq!(mine.huge_page_chunks, advised as u64);
    assert_eq!(mine.mapped_bytes, ((PAIRS_AFTER + 2) * CHUNK) as u64);

    // Turned off, the next chunk is mapped alone.
    {
        let _off = PairsOff::new();
        take_until_chunks(h, class, node, &mut blocks, PAIRS_AFTER + 3);
    }
    assert_eq!(counts.chunks.load(Ordering::Relaxed), PAIRS_AFTER + 3);
    assert_eq!(counts.paired_chunks.load(Ordering::Relaxed), advised);
    assert_eq!(fresh(), uncarved(h, class));
    assert_eq!(
        fresh(),
        per_chunk(false) - 1,
        "every chunk before the last carved whole"
    );
    // SAFETY: the blocks are this heap's, free and ours, given back once.
    unsafe { h.give(&blocks) };
}
