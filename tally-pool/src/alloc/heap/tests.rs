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
        let first = first_block(class);
        assert!(first >= header_offset(i) + core::mem::size_of::<ChunkHeader>());
        assert_eq!(first % class.align(), 0);
        assert!((CHUNK - first) / class.size() >= 1);
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
