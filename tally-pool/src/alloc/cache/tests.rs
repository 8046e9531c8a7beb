//! Tests of the thread caches.

use super::*;

#[test]
fn a_cross_node_free_without_a_cache_counts_as_remote() {
    // A heap no thread of this machine allocates from, as in the test below.
    let (node, index) = (heap::MAX_NODES - 4, 11);
    let class = SizeClass::from_index(index).unwrap();
    let home = heap::heap(node, index).unwrap();
    let mut one = [ptr::null_mut(); 1];
    assert_eq!(home.take(class, node, &mut one), 1);
    let block = NonNull::new(heap::untagged(one[0])).unwrap();
    let remote = home.counts.remote_frees.load(Ordering::Relaxed);
    // SAFETY: a block of `node`'s heap of this class, ours, freed once, as a thread
    // whose cache is gone would.
    unsafe { free_uncached(block, index, false) };
    assert_eq!(home.counts.remote_frees.load(Ordering::Relaxed), remote + 1);
}

#[test]
fn a_call_within_a_call_is_refused_and_the_outer_one_goes_on() {
    // As a signal handler that allocates would: the outer call holds the state.
    let cache = ThreadCache::new();
    let outer = enter(&cache, |state| {
        state.refills = 7;
        let inner = enter(&cache, |state| state.refills = 9);
        state.refills += 1;
        inner
    });
    assert_eq!(outer, Some(None), "the inner call found the cache busy");
    assert_eq!(enter(&cache, |state| state.refills), Some(8));
}

#[test]
fn a_block_of_another_node_goes_home() {
    // A heap no thread of this machine allocates from: its blocks are "remote" to
    // every thread here.
    let (node, index) = (heap::MAX_NODES - 3, 7);
    let class = SizeClass::from_index(index).unwrap();
    let home = heap::heap(node, index).unwrap();
    // This thread's cache learns its node (the real one, below `node`).
    let mine = NonNull::new(heap::untagged(allocate(index))).unwrap();
    let mut one = [ptr::null_mut(); 1];
    assert_eq!(home.take(class, node, &mut one), 1);
    let block = NonNull::new(heap::untagged(one[0])).unwrap();
    let counts = &home.counts;
    let (frees, remote, in_heap) = (
        counts.frees.load(Ordering::Relaxed),
        counts.remote_frees.load(Ordering::Relaxed),
        counts.free.load(Ordering::Relaxed),
    );
    // SAFETY: a block of `node`'s heap of this class, ours, freed once.
    unsafe { free(block, index) };
    assert_eq!(counts.frees.load(Ordering::Relaxed), frees + 1);
    assert_eq!(counts.remote_frees.load(Ordering::Relaxed), remote + 1);
    assert_eq!(
        counts.free.load(Ordering::Relaxed),
        in_heap + 1,
        "back in its heap"
    );
    // SAFETY: allocated above on this thread, freed once.
    unsafe { free(mine, index) };
    assert_eq!(reentries(), 0);
}
