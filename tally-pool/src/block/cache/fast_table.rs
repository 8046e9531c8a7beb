//! The fast table: per thread, the address of its cache of each of the first
//! [`FAST_SLOTS`] pool slots, so that the hot paths find a cache in one thread-local load.
//!
//! The table is a thread-local with no destructor, so the hot path reaches it without the
//! registration check a destructor needs. What keeps its caches alive is the thread's cache
//! table (`table`), which is the only writer of the entries.

use core::cell::Cell;

use super::thread_cache::ThreadCache;
use crate::block::chunk::header::ChunkHeader;
use crate::sync::thread_local;

/// Pool slots whose caches the hot path finds in one load. Pools in higher slots take the
/// slow path on every call.
pub(crate) const FAST_SLOTS: usize = 64;

/// The index into the fast table for a pool in `slot`: the slot itself, or the entry that
/// stays null. Always at most [`FAST_SLOTS`].
pub(crate) fn fast_index(slot: u32) -> usize {
    (slot as usize).min(FAST_SLOTS)
}

/// Addresses of the caches of the first pool slots, plus one entry that stays null for
/// every other slot.
///
/// Invariant (kept by `table::CacheTable`, the only writer): for every slot below
/// [`FAST_SLOTS`], the entry is null or the address of the cache that the thread's cache
/// table holds for that slot, so it stays valid as long as the table's entry does; the
/// entry at `FAST_SLOTS` is always null.
type FastTable = [Cell<*const ThreadCache>; FAST_SLOTS + 1];

#[cfg(not(loom))]
thread_local! {
    static FAST: FastTable = const { [const { Cell::new(core::ptr::null()) }; FAST_SLOTS + 1] };
}
#[cfg(loom)]
thread_local! {
    static FAST: FastTable = [const { Cell::new(core::ptr::null()) }; FAST_SLOTS + 1];
}

/// The calling thread's fast-table entry at `index`, at most [`FAST_SLOTS`] (the caller
/// passes an index a `PoolShared` invariant bounds so): a cache, or null.
#[inline(always)]
fn entry(index: usize) -> *const ThreadCache {
    FAST.with(|fast| {
        // SAFETY: `index <= FAST_SLOTS` (caller) and the table has `FAST_SLOTS + 1` entries.
        unsafe { fast.get_unchecked(index) }.get()
    })
}

#[inline(always)]
fn cache_at<'a>(p: *const ThreadCache) -> Option<&'a ThreadCache> {
    // Entries change only in `table::install`, when the cache table drops (nulling them
    // first) and, in the loom models, in `table::retire_current`: none runs while a fast
    // path of this thread uses the borrow, which ends with the caller's pop or push.
    // SAFETY: table invariant: a non-null entry is the cache the thread's cache table keeps
    // alive (closed, if its pool was dropped), and stays so for the borrow (see above).
    (!p.is_null()).then(|| unsafe { &*p })
}

/// The calling thread's cache at `index` of its fast table, as the fast paths see it:
/// `None` if the thread has none yet, or for the always-null entry. It may be a closed
/// cache of a dropped pool that had the same slot; closed, it serves no fast operation, and
/// the slow path replaces it.
///
/// `index` is at most [`FAST_SLOTS`] (a pool's `fast_index` or `unguarded_index`).
/// `anchor` (the pool) anchors the borrow, which must end before the thread's next slow
/// path (see `cache_at`).
#[inline(always)]
pub(crate) fn lookup<P>(anchor: &P, index: usize) -> Option<&ThreadCache> {
    let _ = anchor;
    cache_at(entry(index))
}

/// Points the calling thread's entry for `slot` (below [`FAST_SLOTS`], or nothing happens)
/// at `cache`. Does nothing while the thread exits.
///
/// # Safety
///
/// `cache` is null, or the cache the calling thread's cache table holds for `slot` and
/// keeps alive until it changes this entry again (the table invariant).
pub(crate) unsafe fn set_entry(slot: usize, cache: *const ThreadCache) {
    let _ = FAST.try_with(|table| {
        if let Some(f) = table.get(slot).filter(|_| slot < FAST_SLOTS) {
            f.set(cache);
        }
    });
}

/// Nulls every entry of the calling thread's fast table: its cache table is going away.
pub(crate) fn clear() {
    let _ = FAST.try_with(|fast| fast.iter().for_each(|f| f.set(core::ptr::null())));
}

/// Nulls the calling thread's entry at `index`: its cache table is letting that cache go.
#[cfg(all(test, loom))]
pub(crate) fn clear_entry(index: usize) {
    let _ = FAST.try_with(|fast| {
        if let Some(f) = fast.get(index) {
            f.set(core::ptr::null());
        }
    });
}

/// Pushes `ptr` onto the calling thread's cache of the pool that owns its chunk, found
/// through the cache index in the chunk's header: two loads (header, fast table), where a
/// layer above that kept the pool's address would need more, each waiting for the one
/// before. False when the pool's owner does not allow frees through the header (see
/// `BlockPool::set_chunk_owner`), the pool is guarded, or the cache cannot take it: the
/// caller frees the usual way.
///
/// # Safety
///
/// `ptr` is a block that a live pool handed out and that the caller owns and gives back
/// now; the pool stays alive until this returns.
#[inline(always)]
pub(crate) unsafe fn push_via_header(ptr: *mut u8) -> bool {
    // SAFETY: `ptr` lies in a chunk of a live pool (caller), which stays mapped while the
    // pool lives, until this returns.
    let index = unsafe { ChunkHeader::of(ptr as usize) }.cache_index as usize;
    let cache = FAST.with(|fast| fast.get(index).map_or(core::ptr::null(), Cell::get));
    if cache.is_null() {
        return false;
    }
    // A header's index below `FAST_SLOTS` is the slot of the chunk's pool, which is alive
    // (caller) and so keeps that slot; at `FAST_SLOTS` or above the entry is null (table
    // invariant) or missing. This thread's entry for the slot is null (handled above), its
    // cache of that pool, or a closed cache of a dropped pool that had the slot before,
    // which refuses the push.
    // SAFETY: so `cache` is a cache this thread's table keeps alive (table invariant).
    let cache = unsafe { &*cache };
    // SAFETY: this thread owns `cache`, whose blocks nothing else borrows now; if it is
    // open, it is the cache of `ptr`'s pool, and `ptr` a block the caller owns and gives
    // back (a closed cache refuses every push).
    unsafe { cache.push(ptr) }
}
