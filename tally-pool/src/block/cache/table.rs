//! The per-thread cache table: every cache a thread holds, by pool slot, and the cells
//! bound to them.
//!
//! The table owns the thread's caches and keeps its fast table (`fast_table`) and every
//! bound [`CacheCell`] pointing only at caches it holds. Its destructor flushes every cache
//! back to its pool when the thread exits, so no block is stranded.

use core::cell::{Cell, UnsafeCell as StdUnsafeCell};
use core::ptr::NonNull;
use std::sync::{Arc, Weak};
use std::thread::LocalKey;

use super::fast_table;
use super::thread_cache::{CachedBlocks, ThreadCache};
use crate::block::config::GuardLevel;
use crate::block::shared::PoolShared;
use crate::sync::thread_local;

/// A thread's cache of one pool, and the pool it returns its blocks to at thread exit.
#[derive(Debug, Clone)]
struct Entry {
    cache: Arc<ThreadCache>,
    pool: Weak<PoolShared>,
}

/// The caches of one thread, by pool slot.
///
/// Invariants: for every slot below [`fast_table::FAST_SLOTS`], the thread's fast-table
/// entry for the slot is null or the address of the cache that `caches[slot]` holds, so it
/// stays valid as long as that entry does. Every `(slot, cell)` in `bound` names a
/// [`CacheCell`] of this thread whose pointer is unbound or the address of the cache
/// `caches[slot]` holds. (The cells are native thread-locals, as on every target this crate
/// builds for, so their storage lasts until the thread ends, past this table's destructor.)
/// `busy` is true exactly while a reference into `caches` or `bound` is live.
#[derive(Debug)]
pub(crate) struct CacheTable {
    caches: StdUnsafeCell<Vec<Option<Entry>>>,
    bound: StdUnsafeCell<Vec<(usize, *const CacheCell)>>,
    busy: Cell<bool>,
}

/// Marks a table busy while it lives (see [`CacheTable`]).
struct Busy<'t>(&'t Cell<bool>);

impl<'t> Busy<'t> {
    /// `None` if the table is busy already: the caller is inside `with_cache` or `bind`
    /// further up this thread's stack (reached from there only through a global allocator
    /// built on the pools), and must not touch the table.
    fn enter(table: &'t CacheTable) -> Option<Self> {
        if table.busy.replace(true) {
            return None;
        }
        Some(Busy(&table.busy))
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

#[cfg(not(loom))]
thread_local! {
    static CACHES: CacheTable = const { CacheTable::new() };
}
#[cfg(loom)]
thread_local! {
    static CACHES: CacheTable = CacheTable::new();
}

impl CacheTable {
    const fn new() -> Self {
        Self {
            caches: StdUnsafeCell::new(Vec::new()),
            bound: StdUnsafeCell::new(Vec::new()),
            busy: Cell::new(false),
        }
    }

    /// Unbinds every cell bound to `slot`, or to any slot if `None`.
    fn unbind(&self, slot: Option<usize>) {
        // SAFETY: only this thread touches its table, and nothing else borrows `bound` now.
        let bound = unsafe { &mut *self.bound.get() };
        bound.retain(|&(s, cell)| {
            if slot.is_some_and(|slot| slot != s) {
                return true;
            }
            // SAFETY: table invariant: `cell` is a `CacheCell` of this thread, which lives
            // until the thread ends.
            unsafe { (*cell).unbind() };
            false
        });
    }
}

impl Drop for CacheTable {
    fn drop(&mut self) {
        fast_table::clear();
        self.unbind(None);
        for entry in self.caches.get_mut().drain(..).flatten() {
            if let Some(pool) = entry.pool.upgrade() {
                pool.retire_cache(&entry.cache);
            }
        }
    }
}

/// Does for `pool` what thread exit does: returns this thread's cached blocks to the
/// depot and folds its counters into the pool. The loom models call it at the end of a
/// thread body, because loom runs thread-local destructors outside its model of the
/// thread.
#[cfg(all(test, loom))]
pub(crate) fn retire_current(pool: &Arc<PoolShared>) {
    let _ = CACHES.try_with(|table| {
        // SAFETY: the table belongs to this thread and no other reference to it is live.
        let caches = unsafe { &mut *table.caches.get() };
        fast_table::clear_entry(pool.fast_index);
        table.unbind(Some(pool.slot as usize));
        let entry = caches.get_mut(pool.slot as usize).and_then(Option::take);
        if let Some(entry) = entry.filter(|e| e.cache.pool_uid == pool.uid) {
            pool.retire_cache(&entry.cache);
        }
    });
}

/// The cache an unbound [`CacheCell`] points at (see [`ThreadCache::unbound`]): a pop
/// through an unbound cell then misses on the cache's own checks, with no test of the cell
/// of its own, which the hot path of every derived type's `acquire` would pay for.
#[cfg(not(loom))]
static UNBOUND: ThreadCache = ThreadCache::unbound();

/// What an unbound [`CacheCell`] holds: the address of [`UNBOUND`]; null under loom, whose
/// atomics cannot make a `static` (the pop then tests for it).
const fn unbound() -> *const ThreadCache {
    #[cfg(not(loom))]
    {
        &raw const UNBOUND
    }
    #[cfg(loom)]
    {
        core::ptr::null()
    }
}

/// A cell, kept by a layer above in a `thread_local!`, that the calling thread's cache
/// table binds to its cache of one pool (`bind`), so that finding the cache is one
/// thread-local load. The typed layer keeps one per derived type, inside the type's
/// `TypeCache<T>` (the derive names it `__private::TypeCache`).
///
/// Invariant: [`unbound()`], or the address of the calling thread's cache of the pool it
/// was bound to, held by the thread's cache table, which unbinds the cell before it lets
/// the cache go.
#[derive(Debug)]
pub(crate) struct CacheCell(Cell<*const ThreadCache>);

impl CacheCell {
    /// An unbound cell: the first slow path on each thread binds it.
    #[must_use]
    pub(crate) const fn new() -> Self {
        Self(Cell::new(unbound()))
    }

    /// Whether the cell is bound to a cache of the calling thread.
    pub(crate) fn is_bound(&self) -> bool {
        !core::ptr::eq(self.0.get(), unbound())
    }

    /// Unbinds the cell: its pops miss until a slow path binds it again.
    fn unbind(&self) {
        self.0.set(unbound());
    }

    /// Pops a block off the calling thread's cache that the cell in `key` (a cell, or a
    /// layer's wrapper of one) is bound to.
    #[inline(always)]
    pub(crate) fn pop<C: AsRef<CacheCell> + 'static>(key: &'static LocalKey<C>) -> CellPop {
        // A closure this small keeps `with` inlined, so the access is one TLS load.
        let p = key.with(|cell| cell.as_ref().0.get());
        #[cfg(loom)]
        if p.is_null() {
            return CellPop::Unbound;
        }
        // SAFETY: type invariant: `p` is `UNBOUND`, a `static`, or this thread's cache, kept
        // alive by its table until the table unbinds this cell, which happens only at thread
        // exit or in a slow path of this thread; the borrow ends with this pop.
        let cache = unsafe { &*p };
        // SAFETY: the cache is this thread's (see above), and nothing else of this thread
        // borrows its blocks now; or it is `UNBOUND`, closed for good, whose pop misses
        // before it touches the blocks or writes anything (`ThreadCache::unbound`).
        match unsafe { cache.pop() } {
            Some(block) => CellPop::Block(block),
            None if core::ptr::eq(p, unbound()) => CellPop::Unbound,
            None => CellPop::Miss,
        }
    }
}

impl Default for CacheCell {
    fn default() -> Self {
        Self::new()
    }
}

impl AsRef<CacheCell> for CacheCell {
    fn as_ref(&self) -> &CacheCell {
        self
    }
}

/// What [`CacheCell::pop`] found.
#[derive(Debug, Clone, Copy)]
pub(crate) enum CellPop {
    /// A block, counted as allocated.
    Block(NonNull<u8>),
    /// The cell is bound, but the cache is empty or closed: the pool's slow path refills
    /// it, and the cell needs no binding.
    Miss,
    /// The cell is not bound on this thread (yet, or the pool is guarded).
    Unbound,
}

/// Binds `cell`, a [`CacheCell`] of the calling thread, to the thread's cache of `pool`
/// (creating it), if the pool is unguarded and has fast paths at all. Does nothing while
/// the thread exits.
pub(crate) fn bind(pool: &Arc<PoolShared>, cell: &CacheCell) {
    if !pool.fast_paths() || pool.guard != GuardLevel::Off {
        return;
    }
    let _ = CACHES.try_with(|table| {
        // Called from inside the table's own use: the cell stays unbound for now.
        let Some(_busy) = Busy::enter(table) else {
            return;
        };
        // SAFETY: the table belongs to this thread, and no other reference into it is live
        // (the table was not busy).
        let caches = unsafe { &mut *table.caches.get() };
        let cache = match caches.get(pool.slot as usize) {
            Some(Some(e)) if e.cache.pool_uid == pool.uid => &e.cache,
            _ => match install(table, caches, pool) {
                Some(c) => c,
                None => return,
            },
        };
        let ptr = Arc::as_ptr(cache);
        // SAFETY: as above, this thread alone touches `bound`.
        let bound = unsafe { &mut *table.bound.get() };
        let cell_ptr: *const CacheCell = cell;
        if !bound.iter().any(|&(_, c)| c == cell_ptr) {
            // A refusal leaves the cell unbound: its calls take the slow path.
            if bound.try_reserve(1).is_err() {
                return;
            }
            bound.push((pool.slot as usize, cell_ptr));
        }
        cell.0.set(ptr);
    });
}

/// Runs `f` with the calling thread's cache for `pool` and mutable access to its blocks,
/// creating the cache on first use. Returns `None` while the thread's table is being torn
/// down at thread exit, and when the call comes from inside `with_cache`, `bind` or a
/// section of the cache on this thread (only a global allocator built on the pools makes
/// such a call); the caller then works on the depot directly.
#[inline]
pub(crate) fn with_cache<R>(
    pool: &Arc<PoolShared>,
    f: impl FnOnce(&ThreadCache, &mut CachedBlocks) -> R,
) -> Option<R> {
    CACHES
        .try_with(|table| {
            let slot = pool.slot as usize;
            let _busy = Busy::enter(table)?;
            // SAFETY: the table belongs to this thread, no reference into it outlives this
            // closure, and none was live (the table was not busy): this is the only one.
            let caches = unsafe { &mut *table.caches.get() };
            let cache = match caches.get(slot) {
                Some(Some(e)) if e.cache.pool_uid == pool.uid => &e.cache,
                _ => install(table, caches, pool)?,
            };
            // SAFETY: the table holds the cache for this thread, which owns it; no fast
            // operation's borrow is live (a fast operation of a call from inside `f` misses
            // without one, and `in_section` refuses to nest).
            unsafe { cache.in_section(f) }
        })
        .ok()
        .flatten()
}

#[cold]
fn install<'t>(
    table: &CacheTable,
    caches: &'t mut Vec<Option<Entry>>,
    pool: &Arc<PoolShared>,
) -> Option<&'t Arc<ThreadCache>> {
    let slot = pool.slot as usize;
    // The table's, the cache's and the roster's memory are asked for fallibly, before
    // anything changes: a refusal leaves the thread without a cache of this pool (its calls
    // take the uncached path), not an aborted process.
    if caches.len() <= slot {
        caches.try_reserve(slot + 1 - caches.len()).ok()?;
        caches.resize(slot + 1, None);
    }
    if !crate::sys::arc_room::<ThreadCache>() {
        return None;
    }
    let cache = Arc::new(ThreadCache::new(
        pool.uid,
        pool.cache_limit,
        pool.stamp(),
        pool.geometry.stride_magic(),
    ));
    if !pool.caches.adopt(&cache) {
        return None;
    }
    let entry = caches.get_mut(slot)?;
    // A cache left by a dropped pool that had this slot: its blocks belonged to memory that
    // is gone, so they are forgotten, not flushed. Nothing may point to it once it goes.
    table.unbind(Some(slot));
    let fast = if pool.fast_paths() {
        Arc::as_ptr(&cache)
    } else {
        core::ptr::null()
    };
    // SAFETY: `fast` is null or the cache that `caches[slot]` holds from the next line on,
    // until this table changes the entry again.
    unsafe { fast_table::set_entry(slot, fast) };
    *entry = Some(Entry {
        cache,
        pool: Arc::downgrade(pool),
    });
    entry.as_ref().map(|e| &e.cache)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use core::alloc::Layout;

    use super::*;
    use crate::block::config::BlockPoolConfig;

    #[test]
    fn a_call_from_inside_the_tables_use_leaves_the_table_alone() {
        let config = BlockPoolConfig::new(Layout::new::<u64>()).guard(GuardLevel::Off);
        let p = PoolShared::new(config).unwrap();
        // A bound cell is a thread-local, as the table's invariant asks: the table unbinds
        // it when the thread exits.
        std::thread_local! {
            static CELL: CacheCell = const { CacheCell::new() };
        }
        CELL.with(|cell| {
            let nested = with_cache(&p, |_, _| {
                bind(&p, cell);
                with_cache(&p, |_, _| ())
            });
            // The outer call ran; the inner ones found the table busy.
            assert_eq!(nested, Some(None));
            assert!(!cell.is_bound());
            // Once the table is free again, both work (`bind` binds a pool in the fast
            // table, which a test binary full of pools may have filled).
            bind(&p, cell);
            assert_eq!(cell.is_bound(), p.fast_paths());
        });
        assert_eq!(with_cache(&p, |_, _| 7), Some(7));
    }

    /// An unbound cell's pop misses on the shared closed cache's own checks, from any
    /// number of threads, and leaves it closed and empty; once bound, the cell pops from
    /// the thread's cache; unbound again, it misses as before.
    #[test]
    fn an_unbound_cell_misses_on_the_shared_closed_cache() {
        std::thread_local! {
            static CELL: CacheCell = const { CacheCell::new() };
        }
        let config = BlockPoolConfig::new(Layout::new::<u64>()).guard(GuardLevel::Off);
        let p = PoolShared::new(config).unwrap();
        let unbound_pops = || {
            (0..1000)
                .filter(|_| matches!(CacheCell::pop(&CELL), CellPop::Unbound))
                .count()
        };
        let threads: Vec<_> = (0..4).map(|_| std::thread::spawn(unbound_pops)).collect();
        for t in threads {
            assert_eq!(t.join().unwrap(), 1000);
        }
        assert_eq!(unbound_pops(), 1000);
        let shared = &UNBOUND;
        assert!(shared.is_closed());
        let counts = shared.counts();
        assert_eq!((counts.allocations, counts.frees, counts.cached), (0, 0, 0));
        CELL.with(|cell| {
            assert!(!cell.is_bound());
            bind(&p, cell);
            if !p.fast_paths() {
                return; // a test binary full of pools may have filled the fast table
            }
            assert!(cell.is_bound());
            // Bound to the thread's own cache: the first pop finds it empty, not unbound.
            assert!(matches!(CacheCell::pop(&CELL), CellPop::Miss));
            let block = p.allocate_uncached().unwrap();
            // SAFETY: cell invariant: a bound cell holds this thread's cache, which its table
            // keeps alive for this closure.
            let cache = unsafe { &*cell.0.get() };
            // SAFETY: this thread's cache of `p`, whose blocks nothing else borrows now;
            // `block` is a block of `p` this test owns and gives to it.
            assert!(unsafe { cache.push(block.as_ptr()) });
            match CacheCell::pop(&CELL) {
                CellPop::Block(b) => assert_eq!(b, block),
                other => panic!("a bound cell must pop the block pushed: {other:?}"),
            }
            // SAFETY: as above; the cache flushes it to `p` when the thread exits.
            assert!(unsafe { cache.push(block.as_ptr()) });
            cell.unbind();
            assert!(!cell.is_bound());
            assert!(matches!(CacheCell::pop(&CELL), CellPop::Unbound));
        });
    }
}
