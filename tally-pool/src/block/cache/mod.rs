//! Per-thread magazine caches: the hot path.
//!
//! Each thread holds, per pool, a [`ThreadCache`]: an array of up to `CACHE_CAPACITY` free
//! block pointers. Allocate pops, free pushes; neither executes an atomic read-modify-write,
//! a lock or a syscall. When the array runs empty the thread takes one full magazine from
//! the depot; when it runs full it hands one magazine's worth back. Holding two magazines'
//! worth and trading one gives hysteresis, so a thread that alternates allocate and free at
//! the boundary does not trade on every call.
//!
//! | file | what |
//! |---|---|
//! | `thread_cache` | [`ThreadCache`]: its blocks, its counts, its sections, and the fast operations on it |
//! | `fast_table` | per thread, the caches of the first pool slots, found in one load |
//! | `table` | per thread, every cache it holds (by pool slot), and the [`CacheCell`]s bound to them |
//! | `roster` | per pool, every live cache, and the totals of those whose threads exited |
//!
//! Caches live in a thread-local table indexed by pool slot. A cache names its pool by a
//! unique id, so a cache left behind by a dropped pool whose slot was reused is recognised
//! and discarded. The table's destructor flushes every cache back to its pool's depot when
//! the thread exits, so no block is stranded.
//!
//! # The fast paths and the limit
//!
//! [`ThreadCache::pop`] and [`ThreadCache::push`] read nothing of the pool: a cache's
//! `limit` says how many blocks the fast paths may hold, and other threads *close* a cache
//! by storing 0 into it. A pop needs `0 < len <= limit` and a push `len < limit`, so a
//! closed cache serves neither, and its owner takes the slow path on its next call, where
//! it finds out why:
//!
//! - the pool asked every thread to flush (reclaim, or an allocation at the cap): the
//!   requester bumps the pool's epoch, then closes every cache; the owner reopens its
//!   cache, then (after a `SeqCst` fence that pairs with the requester's `SeqCst` epoch
//!   bump) compares the epoch with its own copy and flushes if it moved. Either the owner
//!   sees the new epoch or the requester's close lands after the reopen, so no request is
//!   lost;
//! - the pool was dropped: it closes every cache before its slot can be reused, so a
//!   thread whose fast table still points to the old cache misses, and the slow path
//!   replaces it.
//!
//! The fast paths know nothing of guards: for a guarded pool, `BlockPool` checks the guard
//! around them, and cells and frees through a chunk header serve unguarded pools only.
//!
//! # Finding the cache
//!
//! - `BlockPool` and the typed pools: the pool's fast index into a destructor-free
//!   thread-local table of cache pointers (`fast_table`), one entry per pool slot below
//!   `FAST_SLOTS` and one that stays null for the rest.
//! - A [`CacheCell`] a layer above keeps in its own `thread_local!` (one per
//!   `#[derive(Pooled)]` type), bound on the first slow path, so that finding the cache is
//!   one thread-local load. Unbound, it points at a shared cache that is closed for good,
//!   so a pop through it needs no test of its own (`table::UNBOUND`).
//! - A free through a block's chunk header (`fast_table::push_via_header`): the cache index
//!   the header carries, compared with the one the thread's last such free used, whose
//!   cache the fast table keeps a copy of; a miss looks the entry up out of line
//!   (`push_via_header_lookup`). For a layer above that would otherwise load the pool's
//!   address first.

mod fast_table;
mod roster;
mod table;
mod thread_cache;

pub(crate) use fast_table::{
    fast_index, lookup, push_via_header, push_via_header_lookup, FAST_SLOTS,
};
pub(crate) use roster::CacheRoster;
#[cfg(all(test, loom))]
pub(crate) use table::retire_current;
pub(crate) use table::CacheCell;
pub(crate) use table::{bind, with_cache, CellPop};
pub(crate) use thread_cache::{CachedBlocks, RememberedPush, ThreadCache, CACHE_CAPACITY};
