//! The errors of tally-pool.

use core::alloc::Layout;

use crate::sys::budget::PressureLevel;

mod text;

pub use text::{ConfigReason, PoolName};

/// What kind of corruption a guard or a pointer check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CorruptionKind {
    /// The pointer lies in no chunk of this pool.
    ForeignPointer,
    /// The pointer lies in a chunk of this pool but not at the start of a block.
    InteriorPointer,
    /// The block was already free (the guard word says so): a double free before the block
    /// was handed out again.
    DoubleFree,
    /// The check word after the block was overwritten: something wrote past the block's end.
    /// A free of a block that was never carved, or that lies in the part of a reclaimed
    /// chunk given back to the OS, is reported so too: its check word holds neither mark.
    CanaryOverwritten,
    /// A free block's poison pattern was changed: something wrote to it after it was freed.
    UseAfterFree,
}

impl core::fmt::Display for CorruptionKind {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::ForeignPointer => "the pointer belongs to no chunk of this pool",
            Self::InteriorPointer => "the pointer does not point at the start of a block",
            Self::DoubleFree => "the block is already free (double free)",
            Self::CanaryOverwritten => {
                "the canary after the block was overwritten (a write past its end)"
            }
            Self::UseAfterFree => "a free block was written to (use after free)",
        })
    }
}

/// Every way a pool operation can fail.
///
/// Library code never panics on bad input, exhaustion or an OS refusal: it returns one of
/// these.
///
/// A `PoolError` is `Copy`: a pool's name ([`PoolName`]) and a configuration's reason
/// ([`ConfigReason`]) are interned texts. A pool interns its name when it is built, so an
/// acquire, allocate, free or redeem that fails allocates nothing to say so (only building a
/// pool from an invalid configuration interns its reason), and code that matches on a result
/// carries no drop of the error on its unwinding path (which would make a small `#[inline]`
/// wrapper around `acquire` too large for the compiler to inline).
///
/// Before `PoolError` was `Copy`, these fields were `String`s. Code that reads them as `str`,
/// compares them, formats them or builds them with `.into()` is unchanged; code that needs a
/// `String` writes `String::from(pool)` or `pool.to_string()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    /// The pool has `max_capacity` blocks in circulation and none is free in the depot or
    /// the calling thread's cache. Other threads' caches may still hold a few (see the
    /// block module's limits); they return them on their next call or when they exit.
    #[error(
        "pool `{pool}` is at its cap of {max_capacity} blocks; raise `max_capacity` or release blocks"
    )]
    Exhausted {
        /// The pool's name.
        pool: PoolName,
        /// The cap it reached.
        max_capacity: usize,
    },
    /// The pool would have mapped a new chunk while memory pressure is `Critical`, and it
    /// is configured to refuse rather than grow then (`OnCritical::Refuse`). Nothing was
    /// mapped; the pool grows again once the level falls below `Critical`.
    #[error("pool `{pool}` refuses to grow under {level} memory pressure; release values, or configure `on_critical` to grow")]
    Pressure {
        /// The pool's name.
        pool: PoolName,
        /// The pressure level when the pool refused.
        level: PressureLevel,
    },
    /// The operating system refused to map memory.
    #[error("pool `{pool}`: the OS refused to map {bytes} bytes (errno {errno}); free memory or lower the pool's capacity")]
    OutOfMemory {
        /// The pool's name.
        pool: PoolName,
        /// How many bytes were asked for.
        bytes: usize,
        /// The OS error number.
        errno: i32,
    },
    /// The operating system refused to lock a chunk of a pool configured with `lock` in
    /// memory (`mlock`): the locked-memory limit (`RLIMIT_MEMLOCK`, `ulimit -l`) is reached
    /// or the process may not lock memory. The refused chunk was unmapped.
    #[error("pool `{pool}`: the OS refused to lock {bytes} bytes in memory (errno {errno}); raise the locked-memory limit (`ulimit -l`, RLIMIT_MEMLOCK, now {}) or turn `lock` off", limit_text(*limit))]
    LockRefused {
        /// The pool's name.
        pool: PoolName,
        /// How many bytes were to be locked.
        bytes: usize,
        /// The OS error number.
        errno: i32,
        /// The soft `RLIMIT_MEMLOCK` in bytes when the OS refused; `None` if unlimited or
        /// unknown.
        limit: Option<u64>,
    },
    /// A free or a reuse found a broken invariant. The block concerned is not put back into
    /// circulation and the event is counted in the pool's statistics.
    #[error("pool `{pool}`: corruption at {address:#x}: {kind}")]
    Corruption {
        /// The pool's name.
        pool: PoolName,
        /// What was found.
        kind: CorruptionKind,
        /// The address concerned.
        address: usize,
    },
    /// The configuration cannot make a pool.
    #[error("invalid pool configuration for `{pool}`: {reason}")]
    InvalidConfig {
        /// The pool's name.
        pool: PoolName,
        /// What is wrong, and what to change.
        reason: ConfigReason,
    },
    /// The layout is larger or more aligned than a pool block can be.
    #[error("a pool cannot hold blocks of size {} and alignment {}: {reason}", layout.size(), layout.align())]
    UnsupportedLayout {
        /// The layout asked for.
        layout: Layout,
        /// Why it is refused.
        reason: &'static str,
    },
    /// The token was issued by this pool but has been redeemed since (or its value was
    /// redeemed and released, and the block reused).
    #[error("pool `{pool}`: the raw handle is stale: it was already redeemed")]
    StaleHandle {
        /// The pool's name.
        pool: PoolName,
    },
    /// The token was never issued by this pool: it is damaged or made up.
    #[error("pool `{pool}`: the raw handle was never issued by this pool (damaged or forged)")]
    InvalidHandle {
        /// The pool's name.
        pool: PoolName,
    },
    /// The token was issued by another pool.
    #[error("pool `{pool}`: the raw handle belongs to another pool; redeem it where it was made")]
    WrongPool {
        /// The pool's name.
        pool: PoolName,
    },
    /// The pool was called from inside its own growth on the same thread (possible only
    /// through a global allocator that serves requests from the pool, which the block
    /// module's limits forbid), had no free block at hand and could not grow without
    /// waiting for itself. Nothing changed; serve the request from another allocator.
    #[error("pool `{pool}` was called from inside its own growth on this thread (by a global allocator built on it) and has no free block at hand; serve this request from another allocator")]
    Reentered {
        /// The pool's name.
        pool: PoolName,
    },
    /// The process has as many pools alive as the chunk registry can tell apart.
    #[error(
        "too many pools are alive at once (at most {max}); drop pools that are no longer used"
    )]
    TooManyPools {
        /// The limit.
        max: usize,
    },
}

/// A locked-memory limit as [`PoolError::LockRefused`] shows it.
fn limit_text(limit: Option<u64>) -> String {
    match limit {
        Some(bytes) => format!("{bytes} bytes"),
        None => "unlimited or unknown".into(),
    }
}
