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

/// Pool slots whose caches the hot path finds in one load: the table costs every thread
/// 8 bytes a slot (2 KiB) of thread-local storage. Slots are reused lowest first, so these
/// serve the first 256 live block pools (a typed pool has one per node, and its sampling
/// twin another); pools in higher slots take the slow path on every call.
pub(crate) const FAST_SLOTS: usize = 256;

/// The index into the fast table for a pool in `slot`: the slot itself, or the entry that
/// stays null. Always at most [`FAST_SLOTS`].
pub(crate) fn fast_index(slot: u32) -> usize {
    (slot as usize).min(FAST_SLOTS)
}

/// What [`FastTable::recent_index`] holds while no entry is remembered: no header's cache
/// index equals it, since a chunk's header holds at most [`FAST_SLOTS`] (`install_chunks`
/// clamps it), on every target.
const NO_RECENT: usize = usize::MAX;
const _: () = assert!(FAST_SLOTS < NO_RECENT);

/// Addresses of the caches of the first pool slots, plus one entry that stays null for
/// every other slot; and a copy of the last non-null entry that a free through a chunk
/// header used.
///
/// Invariants (kept by `table::CacheTable`, the only writer of the entries, through
/// [`set_entry`], [`clear`] and `clear_entry`, which keep the copy in step):
/// - for every slot below [`FAST_SLOTS`], the entry is null or the address of the cache
///   that the thread's cache table holds for that slot, so it stays valid as long as the
///   table's entry does; the entry at `FAST_SLOTS` is always null;
/// - `recent_index` is [`NO_RECENT`], or a slot below [`FAST_SLOTS`] whose entry is not
///   null and equal to `recent`.
struct FastTable {
    entries: [Cell<*const ThreadCache>; FAST_SLOTS + 1],
    recent_index: Cell<usize>,
    recent: Cell<*const ThreadCache>,
}

impl FastTable {
    const fn new() -> Self {
        Self {
            entries: [const { Cell::new(core::ptr::null()) }; FAST_SLOTS + 1],
            recent_index: Cell::new(NO_RECENT),
            recent: Cell::new(core::ptr::null()),
        }
    }

    /// The remembered entry if it is the one at `index`: then a cache, never null.
    ///
    /// A free that hits the copy takes the cache's address from this thread-local, not
    /// from a load whose address waits for the header's index: the index only feeds a
    /// compare, which the branch predictor settles ahead, so the push does not wait for
    /// the header to arrive. A miss costs the caller only its branch to the slow path,
    /// which looks the entry up ([`Self::remember`]).
    #[inline(always)]
    fn recent(&self, index: usize) -> Option<*const ThreadCache> {
        (self.recent_index.get() == index).then(|| self.recent.get())
    }

    /// The entry at `index` (null beyond the table), remembered as the copy if it is not
    /// null.
    fn remember(&self, index: usize) -> *const ThreadCache {
        let cache = self.entries.get(index).map_or(core::ptr::null(), Cell::get);
        // The entry at `FAST_SLOTS` is always null, so a non-null one is below it.
        if !cache.is_null() {
            self.recent_index.set(index);
            self.recent.set(cache);
        }
        cache
    }

    /// Sets the entry at `index` (at most `FAST_SLOTS`) and keeps the copy in step.
    fn set(&self, index: usize, cache: *const ThreadCache) {
        if let Some(f) = self.entries.get(index) {
            f.set(cache);
            if self.recent_index.get() == index {
                if cache.is_null() {
                    self.recent_index.set(NO_RECENT);
                }
                self.recent.set(cache);
            }
        }
    }
}

#[cfg(not(loom))]
thread_local! {
    static FAST: FastTable = const { FastTable::new() };
}
#[cfg(loom)]
thread_local! {
    static FAST: FastTable = FastTable::new();
}

/// The calling thread's fast-table entry at `index`, at most [`FAST_SLOTS`] (the caller
/// passes an index a `PoolShared` invariant bounds so): a cache, or null.
#[inline(always)]
fn entry(index: usize) -> *const ThreadCache {
    FAST.with(|fast| {
        // SAFETY: `index <= FAST_SLOTS` (caller) and the table has `FAST_SLOTS + 1` entries.
        unsafe { fast.entries.get_unchecked(index) }.get()
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
        if slot < FAST_SLOTS {
            table.set(slot, cache);
        }
    });
}

/// Nulls every entry of the calling thread's fast table: its cache table is going away.
pub(crate) fn clear() {
    let _ = FAST.try_with(|fast| {
        fast.entries.iter().for_each(|f| f.set(core::ptr::null()));
        fast.recent_index.set(NO_RECENT);
        fast.recent.set(core::ptr::null());
    });
}

/// Nulls the calling thread's entry at `index`: its cache table is letting that cache go.
#[cfg(all(test, loom))]
pub(crate) fn clear_entry(index: usize) {
    let _ = FAST.try_with(|fast| fast.set(index, core::ptr::null()));
}

/// Pushes `ptr` onto the calling thread's cache of the pool that owns its chunk, if the
/// cache index in the chunk's header is the one the thread's last free through a header
/// used (see `FastTable::recent`): the inlined half of a free through the header, a compare
/// and a push. False otherwise, and when the cache cannot take the block: the caller goes
/// on with [`push_via_header_lookup`], out of line.
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
    // `try_with` never fails for this table (it has no destructor) and, unlike `with`, has
    // no panicking path where the compiler does not inline the access, so that a caller
    // that must not unwind (`typed::handle`) stays free of one.
    let Some(cache) = FAST.try_with(|fast| fast.recent(index)).ok().flatten() else {
        return false;
    };
    // The copy is the thread's non-null entry for `index` (table invariant), a slot below
    // `FAST_SLOTS`; as for `push_via_header_lookup`, it is this thread's cache of `ptr`'s
    // pool, or a closed cache of a dropped pool that had the slot before.
    // SAFETY: so `cache` is a cache this thread's table keeps alive (table invariant).
    let cache = unsafe { &*cache };
    // SAFETY: this thread owns `cache`, whose blocks nothing else borrows now; if it is
    // open, it is the cache of `ptr`'s pool, and `ptr` a block the caller owns and gives
    // back (a closed cache refuses every push).
    unsafe { cache.push(ptr) }
}

/// [`push_via_header`] for any cache index: looks the thread's entry for the header's
/// index up, remembers it for the next free through a header, and pushes `ptr` onto it.
/// False when the pool's owner does not allow frees through the header (see
/// `BlockPool::set_chunk_owner`), the pool is guarded, the thread has no cache of it yet,
/// or the cache cannot take it: the caller frees the usual way.
///
/// # Safety
///
/// As for [`push_via_header`].
#[inline(never)]
pub(crate) unsafe fn push_via_header_lookup(ptr: *mut u8) -> bool {
    // SAFETY: as in `push_via_header`.
    let index = unsafe { ChunkHeader::of(ptr as usize) }.cache_index as usize;
    let cache = FAST
        .try_with(|fast| fast.remember(index))
        .unwrap_or(core::ptr::null());
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

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// The copy a free through a header uses for `index`, null if it is not that entry's.
    fn recent(index: usize) -> *const ThreadCache {
        FAST.with(|fast| fast.recent(index).unwrap_or(core::ptr::null()))
    }

    /// What a miss does: looks the entry up and remembers it if it is not null.
    fn remember(index: usize) -> *const ThreadCache {
        FAST.with(|fast| fast.remember(index))
    }

    /// The copy that frees through a header use follows every change of its entry, so a
    /// free never reaches a cache the table has let go, and never holds a null entry.
    #[test]
    fn the_copy_of_the_last_entry_follows_the_table() {
        std::thread::spawn(|| {
            let a = core::ptr::NonNull::<ThreadCache>::dangling()
                .as_ptr()
                .cast_const();
            let b = a.wrapping_byte_add(64);
            assert!(recent(3).is_null(), "nothing is remembered at first");
            // SAFETY: the entries are only compared, never dereferenced, in this test.
            unsafe { set_entry(3, a) };
            assert!(recent(3).is_null(), "only a lookup remembers an entry");
            assert_eq!(remember(3), a);
            assert_eq!(recent(3), a);
            // SAFETY: as above.
            unsafe { set_entry(3, b) };
            assert_eq!(recent(3), b, "a changed entry must change its copy");
            assert!(remember(5).is_null());
            assert_eq!(recent(3), b, "a null entry is not remembered");
            assert!(recent(5).is_null());
            // SAFETY: as above.
            unsafe { set_entry(3, core::ptr::null()) };
            assert!(recent(3).is_null(), "a nulled entry must forget its copy");
            // SAFETY: as above.
            unsafe { set_entry(3, a) };
            assert_eq!(remember(3), a);
            clear();
            assert!(recent(3).is_null(), "a cleared table must clear the copy");
            assert!(remember(3).is_null());
            // SAFETY: as above.
            unsafe { set_entry(FAST_SLOTS, a) };
            assert!(remember(FAST_SLOTS).is_null(), "the last entry stays null");
            assert!(recent(FAST_SLOTS).is_null());
            assert!(remember(FAST_SLOTS + 7).is_null());
        })
        .join()
        .unwrap();
    }

    /// A service with many pooled types, each with a pool per node, has pools in slots
    /// far past 64: they take the fast paths too.
    #[test]
    fn pools_in_the_first_256_slots_take_the_fast_paths() {
        use core::alloc::Layout;

        use crate::block::config::BlockPoolConfig;
        use crate::block::shared::PoolShared;

        let config = || BlockPoolConfig::new(Layout::new::<u64>());
        let pools: Vec<_> = (0..100)
            .map(|_| PoolShared::new(config()).unwrap())
            .collect();
        // A hundred live pools hold a hundred slots, at least one of them 64 or above.
        let high = pools.iter().filter(|p| p.slot >= 64 && p.slot < 256);
        assert!(high.clone().count() > 0);
        assert!(high.clone().all(|p| p.fast_paths()));
        assert_eq!((fast_index(255), fast_index(256)), (255, FAST_SLOTS));
        assert_eq!(fast_index(u32::MAX), FAST_SLOTS);
    }
}
