//! Guards: the canary after each block and the poison fill of free blocks (see the
//! `block` module docs, "Guards"), and the pointer checks every free makes.
//!
//! A canary holds a mark derived from the block's address and the pool's secret: "allocated"
//! or its complement, "free". A free flips it from allocated to free in one
//! compare-and-swap, so two racing frees of one block cannot both pass; a hand-out checks
//! that it says free (and, under `Full`, that the poison is intact) and flips it back.

use core::ptr::NonNull;

use super::cache::ThreadCache;
use super::chunk::geometry::POISON;
use super::chunk::registry;
use super::config::GuardLevel;
use super::shared::PoolShared;
use crate::error::{CorruptionKind, PoolError};
use crate::sync::{AtomicU64, Ordering};

/// Under loom, the canaries: loom cannot see an atomic that lives in mapped memory, so each
/// block's check word is a loom atomic in this table, keyed by the block's address, made on
/// first use with the value fresh memory holds (0). Each model execution starts afresh.
#[cfg(loom)]
mod loom_canaries {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use crate::sync::AtomicU64;

    loom::lazy_static! {
        static ref WORDS: Mutex<HashMap<usize, &'static AtomicU64>> = Mutex::new(HashMap::new());
    }

    /// The check word of the block whose canary lies at `addr`.
    pub(super) fn word(addr: usize) -> &'static AtomicU64 {
        let mut words = match WORDS.lock() {
            Ok(words) => words,
            Err(poisoned) => poisoned.into_inner(),
        };
        words
            .entry(addr)
            .or_insert_with(|| Box::leak(Box::new(AtomicU64::new(0))))
    }
}

#[cfg(all(test, feature = "tracing", not(loom)))]
impl super::api::BlockPool {
    /// The canary word of `block`, an allocated block of this pool, for tests of other
    /// layers that damage it as an overrun would; `None` without a guard.
    pub(crate) fn canary_of(&self, block: NonNull<u8>) -> Option<&AtomicU64> {
        self.shared.canary(block.as_ptr() as usize)
    }
}

impl PoolShared {
    /// The error for corruption of `kind` at `address`, counted, and (feature `tracing`)
    /// queued as an `error` event with the pool's name and the kind, which the entry point
    /// emits when it lets go of the pool (see `events`).
    pub(super) fn corruption(&self, kind: CorruptionKind, address: usize) -> PoolError {
        self.counters
            .corruption_events
            .fetch_add(1, Ordering::Relaxed);
        let mut last = match self.counters.last_corruption.lock() {
            Ok(last) => last,
            Err(poisoned) => poisoned.into_inner(),
        };
        *last = Some((kind, address));
        drop(last);
        // Reported once the thread has left the section and the locks it may be in (see
        // `events`).
        #[cfg(feature = "tracing")]
        super::events::defer(self.error_name, kind, address);
        PoolError::Corruption {
            pool: self.error_name,
            kind,
            address,
        }
    }

    pub(super) fn alloc_mark(&self, addr: usize) -> u64 {
        self.canary_secret ^ (addr as u64).rotate_left(29)
    }

    #[cfg(not(loom))]
    pub(super) fn canary(&self, addr: usize) -> Option<&AtomicU64> {
        let offset = self.geometry.canary_offset?;
        // Callers check first that `addr` starts a carved block of a live chunk of this pool.
        // SAFETY: so the canary word lies in the block's stride, 8-byte aligned (Geometry
        // invariant: block starts and `canary_offset` are multiples of 8), in a chunk that
        // stays mapped while the pool lives.
        Some(unsafe { &*((addr + offset) as *const AtomicU64) })
    }

    #[cfg(loom)]
    pub(super) fn canary(&self, addr: usize) -> Option<&AtomicU64> {
        let offset = self.geometry.canary_offset?;
        Some(loom_canaries::word(addr + offset))
    }

    /// The checks of a free under a guard: flips the canary from "allocated" to "free"
    /// atomically (so two racing frees of one block cannot both pass), then poisons.
    #[inline]
    pub(super) fn guard_free(&self, addr: usize) -> Result<(), PoolError> {
        let Some(canary) = self.canary(addr) else {
            return Ok(());
        };
        let mark = self.alloc_mark(addr);
        match canary.compare_exchange(mark, !mark, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => {}
            Err(seen) if seen == !mark => {
                return Err(self.corruption(CorruptionKind::DoubleFree, addr))
            }
            Err(_) => return Err(self.corruption(CorruptionKind::CanaryOverwritten, addr)),
        }
        if self.guard == GuardLevel::Full {
            // SAFETY: the CAS above made this thread the one that frees the block, whose
            // `size` payload bytes lie in a live chunk of this pool.
            unsafe { core::ptr::write_bytes(addr as *mut u8, POISON, self.geometry.size) };
        }
        Ok(())
    }

    /// Marks a fresh block as free for the guard.
    pub(super) fn guard_init(&self, addr: usize) {
        if let Some(canary) = self.canary(addr) {
            canary.store(!self.alloc_mark(addr), Ordering::Relaxed);
            if self.guard == GuardLevel::Full {
                // SAFETY: the block is being carved, or taken from the calling thread's
                // fresh range: no one else holds it; its payload lies in a live chunk of
                // this pool.
                unsafe { core::ptr::write_bytes(addr as *mut u8, POISON, self.geometry.size) };
            }
        }
    }

    /// Turns a free block into an allocated one, checking the guard.
    #[inline]
    pub(super) fn hand_out(&self, ptr: *mut u8) -> Result<NonNull<u8>, PoolError> {
        let addr = ptr as usize;
        match NonNull::new(ptr) {
            Some(block) if self.guard_accepts(addr) => Ok(block),
            _ => Err(self.guard_refusal(addr)),
        }
    }

    /// The guarded fast path's second half: checks the guard on a block popped (and
    /// counted) off the calling thread's cache, withdrawing it and taking the count back
    /// if the guard refuses it.
    ///
    /// # Safety
    ///
    /// `cache` is the calling thread's cache of this pool, and `block` the block a fast pop
    /// of this thread just took off it; the pop's borrow of the cache's blocks has ended.
    #[inline(always)]
    pub(super) unsafe fn hand_out_popped(
        &self,
        cache: &ThreadCache,
        block: NonNull<u8>,
    ) -> Result<NonNull<u8>, PoolError> {
        let addr = block.as_ptr() as usize;
        if self.guard_accepts(addr) {
            return Ok(block);
        }
        // SAFETY: the block came off `cache` by a fast pop of this thread (caller), so the
        // cache is this thread's, and the pop's borrow of its blocks has ended.
        unsafe { cache.refuse_popped() };
        Err(self.guard_refusal(addr))
    }

    /// Whether the guard lets the free block at `addr` be handed out; if so, marks it
    /// allocated. Always true without a guard. The caller holds the block alone.
    #[inline]
    pub(super) fn guard_accepts(&self, addr: usize) -> bool {
        let Some(canary) = self.canary(addr) else {
            return true;
        };
        let mark = self.alloc_mark(addr);
        if canary.load(Ordering::Acquire) != !mark || !self.poison_intact(addr) {
            return false;
        }
        canary.store(mark, Ordering::Release);
        true
    }

    /// Under `Full`, whether the free block's poison fill is untouched.
    fn poison_intact(&self, addr: usize) -> bool {
        if self.guard != GuardLevel::Full {
            return true;
        }
        // SAFETY: the block is free and held by the calling thread alone (it came out of
        // its cache); its payload lies in a live chunk of this pool.
        let payload = unsafe { core::slice::from_raw_parts(addr as *const u8, self.geometry.size) };
        payload.iter().all(|&b| b == POISON)
    }

    /// The error for a block `guard_accepts` refused (or a null pointer), counted. The block
    /// is withdrawn: nothing puts it back.
    #[cold]
    #[inline(never)]
    pub(super) fn guard_refusal(&self, addr: usize) -> PoolError {
        self.counters.withdrawn.fetch_add(1, Ordering::Relaxed);
        let kind = match self.canary(addr) {
            Some(canary) if canary.load(Ordering::Acquire) != !self.alloc_mark(addr) => {
                CorruptionKind::CanaryOverwritten
            }
            Some(_) => CorruptionKind::UseAfterFree,
            None => CorruptionKind::ForeignPointer,
        };
        self.corruption(kind, addr)
    }

    /// Vouches for `addr` as a block of this pool, reading only the registry.
    #[inline]
    pub(super) fn check_block(&self, addr: usize) -> Result<(), PoolError> {
        if registry::tag(addr) != self.registry_tag {
            return Err(self.corruption(CorruptionKind::ForeignPointer, addr));
        }
        if !self.geometry.is_block_start(addr) {
            return Err(self.corruption(CorruptionKind::InteriorPointer, addr));
        }
        if self.guard != GuardLevel::Off {
            self.guard_free(addr)?;
        }
        Ok(())
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use core::alloc::Layout;
    use core::ptr::NonNull;

    use super::super::api::BlockPool;
    use super::super::chunk::geometry::POISON;
    use super::super::config::{BlockPoolConfig, GuardLevel};
    use crate::error::{CorruptionKind, PoolError};
    use crate::sync::Ordering;

    type Payload = [u64; 4];

    fn pool(guard: GuardLevel) -> BlockPool {
        BlockPool::new(
            BlockPoolConfig::new(Layout::new::<Payload>())
                .name("guard-unit")
                .guard(guard)
                .prefault(false),
        )
        .unwrap()
    }

    fn kind<T>(result: Result<T, PoolError>) -> Option<CorruptionKind> {
        match result {
            Err(PoolError::Corruption { kind, .. }) => Some(kind),
            _ => None,
        }
    }

    /// Frees `block` and says how the pool took it.
    fn free(pool: &BlockPool, block: NonNull<u8>) -> Result<(), PoolError> {
        // SAFETY: the tests free blocks they own, blocks nobody holds while no other thread
        // allocates (under a guard only), and pointers that start no block of the pool.
        unsafe { pool.free(block) }
    }

    /// Sets the check word of `block` as a stray write would.
    fn scribble(pool: &BlockPool, block: NonNull<u8>, value: u64) {
        let canary = pool.shared.canary(block.as_ptr() as usize).unwrap();
        canary.store(value, Ordering::Relaxed);
    }

    fn canary(pool: &BlockPool, block: NonNull<u8>) -> u64 {
        let canary = pool.shared.canary(block.as_ptr() as usize).unwrap();
        canary.load(Ordering::Relaxed)
    }

    #[test]
    fn a_second_free_is_a_double_free_and_a_damaged_canary_an_overwrite() {
        for guard in [GuardLevel::Canary, GuardLevel::Full] {
            let pool = pool(guard);
            let (a, b) = (pool.allocate().unwrap(), pool.allocate().unwrap());
            free(&pool, a).unwrap();
            assert_eq!(kind(free(&pool, a)), Some(CorruptionKind::DoubleFree));
            scribble(&pool, b, 0x4141_4141_4141_4141);
            let refused = kind(free(&pool, b));
            assert_eq!(
                refused,
                Some(CorruptionKind::CanaryOverwritten),
                "{guard:?}"
            );
            assert_eq!(pool.stats().corruption_events, 2, "{guard:?}");
        }
    }

    #[test]
    fn a_canary_copied_from_another_block_is_refused() {
        // The mark depends on the block's address: a stray copy of a neighbour, canary and
        // all, does not pass for the block's own.
        let pool = pool(GuardLevel::Canary);
        let blocks: Vec<_> = (0..1025).map(|_| pool.allocate().unwrap()).collect();
        let first = blocks[0];
        for i in (0..11).map(|k| 1usize << k) {
            let other = blocks[i];
            let own = canary(&pool, other);
            scribble(&pool, other, canary(&pool, first));
            let refused = kind(free(&pool, other));
            assert_eq!(
                refused,
                Some(CorruptionKind::CanaryOverwritten),
                "block {i}"
            );
            scribble(&pool, other, own);
        }
        for b in blocks {
            free(&pool, b).unwrap();
        }
    }

    #[test]
    fn only_full_poisons_a_freed_block_and_hands_it_out_again() {
        for guard in [GuardLevel::Canary, GuardLevel::Full] {
            let pool = pool(guard);
            let a = pool.allocate().unwrap();
            // SAFETY: `a` is a live block of a pool of `Payload`s that this test holds.
            unsafe { a.cast::<Payload>().as_ptr().write([7; 4]) };
            free(&pool, a).unwrap();
            // SAFETY: the freed block stays mapped while the pool lives, and this thread,
            // the pool's only user, only reads it.
            let after = unsafe { a.cast::<Payload>().as_ptr().read() };
            let poisoned = u64::from_ne_bytes([POISON; 8]);
            let expected = if guard == GuardLevel::Full {
                [poisoned; 4]
            } else {
                [7; 4]
            };
            assert_eq!(after, expected, "{guard:?}");
            let again = pool.allocate().unwrap();
            assert_eq!(again, a, "{guard:?}: the freed block comes back first");
            free(&pool, again).unwrap();
        }
    }

    #[test]
    fn damage_to_a_free_block_is_told_apart_when_it_would_be_handed_out() {
        let pool = pool(GuardLevel::Full);
        let a = pool.allocate().unwrap();
        free(&pool, a).unwrap();
        // SAFETY: a use after free on purpose: the block stays mapped while the pool lives.
        unsafe { a.as_ptr().write(0) };
        assert_eq!(kind(pool.allocate()), Some(CorruptionKind::UseAfterFree));
        let b = pool.allocate().unwrap();
        free(&pool, b).unwrap();
        scribble(&pool, b, 1);
        assert_eq!(
            kind(pool.allocate()),
            Some(CorruptionKind::CanaryOverwritten)
        );
        let s = pool.stats();
        assert_eq!((s.corruption_events, s.live_blocks), (2, 0), "{s:?}");
    }

    #[test]
    fn foreign_and_interior_pointers_are_refused() {
        for guard in [GuardLevel::Off, GuardLevel::Canary, GuardLevel::Full] {
            let pool = pool(guard);
            let a = pool.allocate().unwrap();
            let mut local = 0u64;
            let foreign = NonNull::from(&mut local).cast::<u8>();
            let refused = kind(free(&pool, foreign));
            assert_eq!(refused, Some(CorruptionKind::ForeignPointer), "{guard:?}");
            let inside = NonNull::new(a.as_ptr().wrapping_add(8)).unwrap();
            let refused = kind(free(&pool, inside));
            assert_eq!(refused, Some(CorruptionKind::InteriorPointer), "{guard:?}");
            free(&pool, a).unwrap();
            assert_eq!(pool.stats().live_blocks, 0, "{guard:?}");
        }
    }
}
