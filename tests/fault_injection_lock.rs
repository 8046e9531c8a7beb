//! A locking pool when the OS refuses to give a chunk back: `madvise(MADV_DONTNEED)`
//! refused through `tally_pool::fault` (built only with
//! `RUSTFLAGS="--cfg tally_fault_injection"`; without it this file is empty).
//!
//! Reclaim unlocks a chunk before it discards its pages (the OS refuses to discard locked
//! pages). When the discard is refused the chunk stays in use, so it must be locked again
//! and counted in `locked_bytes` again: read back from the pool's statistics and from the
//! `lo` flag of its mapping in `/proc/self/smaps`.
#![cfg(tally_fault_injection)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use core::alloc::Layout;

use tally_pool::block::{BlockPool, BlockPoolConfig, CHUNK_SIZE};
use tally_pool::fault::{self, Call, When};
use tally_pool::PoolError;

mod common;
use common::skip::skip;
use common::smaps::vm_flags;

#[test]
fn a_chunk_the_os_refuses_to_give_back_stays_locked() {
    let made = BlockPool::new(
        BlockPoolConfig::new(Layout::new::<[u64; 8]>())
            .name("lock-discard-refused")
            .capacity(0)
            .prefault(false)
            .lock(true),
    );
    let pool = match made {
        Ok(pool) => pool,
        Err(e) => {
            assert!(matches!(e, PoolError::LockRefused { .. }), "{e}");
            skip(format_args!("the OS refuses to lock one chunk: {e}"));
            return;
        }
    };
    let block = pool.allocate().unwrap();
    let addr = block.as_ptr() as usize;
    // SAFETY: allocated above, freed once.
    unsafe { pool.free(block) }.unwrap();
    let stats = pool.stats();
    assert_eq!(
        (stats.chunks, stats.locked_bytes),
        (1, CHUNK_SIZE),
        "{stats:?}"
    );
    assert!(vm_flags(addr).iter().any(|f| f == "lo"));
    {
        let rule = fault::refuse(Call::Madvise, When::Always);
        assert_eq!(pool.reclaim(), 0, "nothing went back");
        assert!(rule.refused() > 0, "the discard was not tried");
    }
    // The chunk stays in use: locked, and counted so.
    let stats = pool.stats();
    assert_eq!(stats.chunks, 1, "{stats:?}");
    assert_eq!(stats.locked_bytes, CHUNK_SIZE, "{stats:?}");
    let flags = vm_flags(addr);
    assert!(flags.iter().any(|f| f == "lo"), "unlocked: {flags:?}");
    // The OS says yes again: the chunk goes back, unlocked, and reuse locks it again.
    assert!(pool.reclaim() > 0);
    let stats = pool.stats();
    assert_eq!((stats.chunks, stats.locked_bytes), (0, 0), "{stats:?}");
    let again = pool.allocate().unwrap();
    let stats = pool.stats();
    assert_eq!(
        (stats.chunks, stats.locked_bytes),
        (1, CHUNK_SIZE),
        "{stats:?}"
    );
    assert!(vm_flags(again.as_ptr() as usize).iter().any(|f| f == "lo"));
    // SAFETY: allocated above, freed once.
    unsafe { pool.free(again) }.unwrap();
}
