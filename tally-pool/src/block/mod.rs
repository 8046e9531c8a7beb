//! The untyped, lock-free block allocator.
//!
//! A [`BlockPool`] hands out blocks of one [`Layout`] on one NUMA node. It is the layer
//! under the typed pools, and usable on its own. The global allocator
//! ([`TallyAlloc`](crate::alloc::TallyAlloc)) shares its size classes and the `sys`
//! layer, not its pools (see Limits).
//!
//! ```
//! use core::alloc::Layout;
//! use tally_pool::block::{BlockPool, BlockPoolConfig, GuardLevel};
//!
//! # fn main() -> Result<(), tally_pool::PoolError> {
//! let pool = BlockPool::new(
//!     BlockPoolConfig::new(Layout::new::<[u64; 8]>())
//!         .name("quotes")
//!         .capacity(10_000)
//!         .max_capacity(100_000)
//!         .guard(GuardLevel::Canary),
//! )?;
//! let block = pool.allocate()?;
//! // SAFETY: the block is 64 bytes, 8-aligned, and ours until freed.
//! unsafe { block.as_ptr().cast::<[u64; 8]>().write([7; 8]) };
//! // SAFETY: allocated above and freed once; `block` is not used afterwards.
//! unsafe { pool.free(block) }?;
//! assert_eq!(pool.stats().live_blocks, 0);
//! # Ok(())
//! # }
//! ```
//!
//! # How it works
//!
//! - **Chunks** of 1 MiB, aligned to their size, come from the `sys` module. Each starts
//!   with a header (magic, pool id, node, block layout, checksum); blocks follow. A global
//!   registry maps every chunk to its pool, so `free` vouches for a pointer without
//!   reading the memory it points to.
//! - **The hot path** is a per-thread cache of free block pointers per pool: `allocate`
//!   pops, `free` pushes. No atomic read-modify-write, no lock, no syscall. The cached-block
//!   count and the thread's allocation count share one word, from which the frees follow,
//!   so statistics cost the hot path nothing beyond that word.
//! - **The depot** takes and gives whole magazines of 32 blocks when a cache runs full or
//!   empty: a lock-free stack, ABA-safe through generations (see `depot`).
//! - **Growth**: `capacity` blocks are mapped and pre-faulted up front; when the depot is
//!   empty, a thread carves a range of fresh blocks from the current chunk under the
//!   growth lock (up to 2,048 blocks, 128 KiB and a 64th of `max_capacity`, but never
//!   fewer than one batch of the cache) and then takes them a batch at a time without
//!   the lock. A flush gives an unused range back to its chunk. A new chunk is mapped when the current one runs
//!   out, up to `max_capacity` blocks ([`PoolError::Exhausted`]). An OS refusal is
//!   [`PoolError::OutOfMemory`]. A pool configured [`OnCritical::Refuse`] maps no chunk
//!   while memory pressure is `Critical` ([`PoolError::Pressure`]). While the pressure
//!   monitor runs, it maps and faults in the chunks a growing pool is about to carve,
//!   outside the growth lock and as far ahead as demand needs (`Source::grow_ahead`), so
//!   that an acquire neither maps nor faults memory.
//! - **Any thread may free**, including one that never allocated from the pool; a thread
//!   that exits hands its cached blocks back to the depot.
//! - **Reclaim** gives chunks whose blocks are all free back to the OS. Under memory
//!   pressure (`Source::reclaim_idle`, by urgency) it keeps the pool's reserve
//!   ([`BlockPoolConfig::reserve`], by default `capacity`) and reaches only idle pools and
//!   caches below `Critical`; idleness is recorded on slow paths only.
//!
//! # Guards
//!
//! | level | cost | detects |
//! |---|---|---|
//! | [`GuardLevel::Off`] | none | foreign and interior pointers |
//! | [`GuardLevel::Canary`] | 8 bytes a block, one CAS a free | + frees of blocks that are free (a double free before the block is reused), never carved, or in a reclaimed chunk; writes past a block's end |
//! | [`GuardLevel::Full`] | + a fill on free and a scan on reuse | + writes to freed blocks |
//!
//! - **Every level**: [`BlockPool::free`] refuses a pointer outside every chunk of the
//!   pool (a foreign pointer: from the heap, the stack, another pool, a dropped pool) and a
//!   pointer into a chunk of the pool that is not the start of a block (an interior
//!   pointer, or the chunk's header). It reads only the chunk registry, never the memory
//!   the pointer points to.
//! - **`Canary` and `Full`** put a check word after each block's usable bytes, holding a
//!   mark derived from the block's address that says "allocated" or "free". `free` flips
//!   it from allocated to free in one compare-and-swap, and refuses the block when the
//!   word does not hold the allocated mark: the block is free right now (a double free
//!   before the block is handed out again), it was never carved, it lies in a reclaimed
//!   chunk, or a write past the end of the block overwrote the word. `allocate` hands a
//!   block out only if its word holds the free mark, so a write past the end of a free
//!   block is caught on its reuse.
//! - **`Full`** adds a poison fill: `free` fills the block, and `allocate` checks the fill
//!   before it hands the block out again, so a write into a freed block is caught on the
//!   block's reuse.
//!
//! No level detects a *stale* free: a free of a block that was handed out again since the
//! caller freed it. The stale pointer has the same address as the new owner's, and the
//! block's check word says "allocated", as it should for its new owner: the free succeeds,
//! the block goes back into circulation while its new owner uses it, and the next
//! `allocate` hands it out a second time (under `Full`, the stale free also poisons the new
//! owner's bytes). This is why [`BlockPool::free`] is an `unsafe fn`: its `# Safety`
//! contract rules stale frees out. Under `Off`, `free` checks nothing beyond the pointer:
//! a double free, or a free of a never-carved block or of a block of a reclaimed chunk, is
//! accepted and puts the block into circulation twice, so the contract rules these out
//! too.
//!
//! Detected corruption is returned as [`PoolError::Corruption`] and counted in
//! [`BlockPoolStats::corruption_events`]; the pool stays usable. A refused `free` leaves
//! the block as it was: a block that was free stays in circulation once, and a block whose
//! check word was overwritten can never be freed, so it stays out of circulation. A block
//! that `allocate` finds damaged is withdrawn: it is never handed out again.
//!
//! With feature `tracing`, each finding is also an `error` event (target
//! `tally_pool::block`, fields `pool`, `kind`, `address`), raised on the thread that found it
//! as the call returns, after the pool has let go of its locks and of the thread's cache: a
//! subscriber may use any pool, this one included.
//!
//! # Memory classes
//!
//! Every pool is a component of the [statistics](crate::stats) (a [`BlockPool`] of kind
//! `block`; a typed pool lists itself, with its node pools and token tables, as one
//! component of kind `typed`). Its report splits the bytes it holds into five classes that
//! add up to `mapped_bytes` exactly whenever no operation on the pool is in flight:
//!
//! | class | what |
//! |---|---|
//! | `live_bytes` | blocks handed out and not freed |
//! | `cached_bytes` | free blocks in thread caches, including each thread's fresh range (blocks carved for it and not handed out yet) |
//! | `free_bytes` | free blocks in the depot's magazines and on its overflow list (blocks a free could not put into a magazine because the OS refused the memory for one) |
//! | `fresh_bytes` | blocks of the pool's chunks not carved yet |
//! | `metadata_bytes` | everything else the pool holds: each chunk's header and tail, the part of every block slot beyond its usable size (alignment padding and, under a guard, the 8-byte check word), the header page a reclaimed chunk keeps, the depot's magazine segments, blocks a guard withdrew as damaged; for a typed pool also its token tables (generation words and chunk bases) |
//!
//! **A block counts its usable size**, [`BlockPool::block_size`] (the layout's size rounded
//! up to 8 bytes, the report's `object_size`), in its class, whichever class that is; the
//! rest of its stride is metadata. So `live_bytes` is exactly the live blocks times
//! `object_size`, and a chunk of `CHUNK_SIZE` bytes counts `blocks_per_chunk ×
//! object_size` bytes in the four block classes and the rest as metadata.
//!
//! A carved block is live, cached, free or withdrawn: live is what the counts of the
//! others leave (`carved − cached − depot − withdrawn`), so a block that no cache or depot
//! holds (handed out, or in a pool that keeps values in its free blocks, lost when the OS
//! refused a magazine) is live. A
//! reclaimed chunk gives `CHUNK_SIZE − 4096` bytes back to the OS (`released_bytes`, which
//! only grows) and keeps its header page, counted as metadata until the chunk is reused.
//! The process-wide chunk registry belongs to no pool and is in no component.
//!
//! The counts come from the slow paths: the chunk list (under the growth lock), a block
//! count the depot keeps as magazines come and go, each thread cache's count (the word the
//! fast paths keep anyway) and its fresh range (mirrored when a slow path ends). A report
//! taken while threads work reads them at slightly different instants; each class is then
//! clamped to what the carved blocks leave, so none is negative or above `mapped_bytes`,
//! and the five still add up.
//!
//! # Limits
//!
//! - Blocks are at most 256 KiB, aligned to at most 4096 bytes.
//! - Each thread may hold free blocks of a pool in its cache: up to 64, and at most a
//!   sixteenth of `max_capacity` (at least 2), plus what is left of the fresh range it
//!   carved last (see Growth). An allocation can therefore report [`PoolError::Exhausted`]
//!   while idle threads hold free blocks. The error asks every thread to return its cache
//!   and range on its next call, and threads return them when they exit. Memory pressure
//!   asks an idle thread's cache the same way: its blocks come back when that thread next
//!   calls the pool, or exits, never from under it.
//! - Dropping the last `BlockPool` handle unmaps all its memory: blocks still allocated
//!   must not be used afterwards.
//! - A pool's slow paths (a thread's first call, refills and spills, growth, reclaim,
//!   statistics) keep their bookkeeping in memory from the global allocator, so a
//!   `#[global_allocator]` that serves requests from a `BlockPool` calls that pool from
//!   inside itself. Such a call is sound and does not wait for a lock its own thread
//!   holds: it works without the thread's cache (whose table or blocks the outer call is
//!   using), and where it would have to grow under the growth lock its thread holds, it
//!   returns [`PoolError::Reentered`](crate::PoolError::Reentered), which the allocator
//!   must answer from elsewhere. A global allocator must not serve requests from typed
//!   pools, whose creation and site tracking wait for themselves. The crate's own global
//!   allocator, `TallyAlloc`, uses heaps of its own and never calls a pool.
//!
//! # Code map
//!
//! | file | what |
//! |---|---|
//! | `config`, `stats` | [`BlockPoolConfig`] and [`GuardLevel`]; every counter, and [`BlockPoolStats`] |
//! | `api` | [`BlockPool`] and its fast paths |
//! | `per_node` | [`PerNodeBlockPool`]: the one per-node router, which typed pools use too |
//! | `facade` | the contract with the typed layer: all it may use of this one |
//! | `shared` | the state a pool's handles and thread caches share; flush requests |
//! | `guard`, `refill`, `growth`, `reclaim` | the slow paths: checks; trading with the depot and fresh ranges; mapping and carving chunks; giving chunks back |
//! | `report` | a pool as a statistics component: its memory classes, counters and `reclaim` |
//! | `audit` | [`PlacementAudit`]: where the kernel says a sample of a pool's pages are |
//! | `cache/` | per-thread caches, the fast operations on them, the per-thread tables, a pool's roster of caches |
//! | `depot` | the lock-free stacks of magazines |
//! | `overflow` | free blocks a spill could not put into a magazine (the OS refused it memory), on a list through the blocks |
//! | `chunk/` | chunk geometry, header, registry, and a pool's list of chunks |
//! | `size_class` | [`SizeClass`]: layouts rounded up to block sizes |
//!
//! `chunk/` knows nothing of pools, and of `cache/` only the per-thread table does (it
//! makes a pool's caches and retires them at thread exit); the slow paths are `impl`
//! blocks on `shared`'s state; no two files import each other.
//!
//! [`Layout`]: core::alloc::Layout
//! [`PoolError::Exhausted`]: crate::PoolError::Exhausted
//! [`PoolError::OutOfMemory`]: crate::PoolError::OutOfMemory
//! [`PoolError::Corruption`]: crate::PoolError::Corruption
//! [`PoolError::Pressure`]: crate::PoolError::Pressure

mod ahead;
mod api;
mod audit;
mod cache;
mod chunk;
mod config;
mod depot;
mod events;
pub(crate) mod facade;
mod growth;
mod growth_lock;
mod guard;
mod overflow;
#[cfg(all(test, not(loom)))]
mod overflow_tests;
mod per_node;
mod reclaim;
mod refill;
mod report;
mod shared;
mod size_class;
mod stats;

#[cfg(all(test, loom))]
mod loom_tests;

pub use api::BlockPool;
pub use audit::{AuditError, PlacementAudit};
pub use chunk::CHUNK_SIZE;
pub use config::{BlockPoolConfig, GuardLevel, OnCritical};
pub use per_node::PerNodeBlockPool;
pub(crate) use shared::{advance_clock, any_pool_busy};
pub use size_class::{SizeClass, CLASS_COUNT, MAX_CLASS_SIZE};
pub use stats::{BlockPoolStats, HugePages};
