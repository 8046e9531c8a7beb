//! `RawHandle<T>`: a checked `u64` token for a pooled value, for queues and FFI; how a
//! token is packed, and the generation table that lends and redeems values by token.
//!
//! # Token layout (bit 63 first)
//!
//! | bits | field |
//! |---|---|
//! | 6 | checksum over the pool's id, the block's epoch and every field below |
//! | 6 | pool tag: a hash of the pool's id |
//! | 3 | NUMA node |
//! | 24 | generation of the block |
//! | 25 | block number in the pool: `chunk id * blocks per chunk + index` |
//!
//! Each block of a typed pool has a generation word in a side table that is only paged in
//! for blocks that were ever turned into tokens. Bit 0 of the word says "out as a token";
//! the rest is the generation, bumped by every redeem. A token redeems only while its
//! block's word says "out" with the token's generation, and the redeem flips the word
//! with one compare-and-swap, so two redeems of one token cannot both succeed.
//!
//! The word's top bits count how often the generation has wrapped around: its epoch,
//! modulo 64. The token does not carry the epoch; its checksum is XORed with it instead, so
//! tokens of one block and generation but different epochs differ in their checksum. A
//! token made 2^24 lends ago, whose generation bits equal a current token's, is refused
//! as stale: a block's tokens repeat only after 2^30 lends of it (about a minute of
//! nothing but lending and redeeming that one block), and then a token that old would
//! redeem in place of the current one, which is still one owner at a time.
//!
//! Each node pool of a typed pool has a [`TokenTable`]: the generation words of its blocks,
//! and the base of every chunk that lent a value, so that redeeming reads only memory the
//! table vouches for.

use core::fmt;
use core::hash::{Hash, Hasher};
use core::marker::PhantomData;
use core::ptr::NonNull;

use crate::block::facade::{self, BlockPool, CHUNK_SIZE, MAX_NODES};
use crate::error::PoolError;
use crate::sync::{AtomicU32, AtomicUsize, Ordering};
#[cfg(not(loom))]
use crate::sys::{self, Region};

pub(crate) const BLOCK_BITS: u32 = 25;
pub(crate) const GEN_BITS: u32 = 24;
const NODE_BITS: u32 = 3;
const _: () = assert!(MAX_NODES <= 1 << NODE_BITS, "a token names every node pool");
const TAG_BITS: u32 = 6;
const CHECK_BITS: u32 = 6;

const GEN_SHIFT: u32 = BLOCK_BITS;
const NODE_SHIFT: u32 = GEN_SHIFT + GEN_BITS;
const TAG_SHIFT: u32 = NODE_SHIFT + NODE_BITS;
const CHECK_SHIFT: u32 = TAG_SHIFT + TAG_BITS;

/// Most blocks a typed pool can number in its tokens.
pub(crate) const MAX_BLOCKS: usize = 1 << BLOCK_BITS;
pub(crate) const GEN_MASK: u32 = (1 << GEN_BITS) - 1;

fn mask(bits: u32) -> u64 {
    (1u64 << bits) - 1
}

/// The fields of a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fields {
    pub(crate) block: u32,
    pub(crate) generation: u32,
    pub(crate) node: u32,
}

fn mix(mut x: u64) -> u64 {
    // splitmix64's finaliser.
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The 6-bit tag of a pool id.
pub(crate) fn pool_tag(pool_uid: u64) -> u64 {
    mix(pool_uid ^ 0x7a11) & mask(TAG_BITS)
}

/// The checksum of the token bits `low` (all but the checksum) of the pool `pool_uid`,
/// made while its block was in `epoch`: every epoch below [`EPOCHS`] gives another one.
fn checksum(pool_uid: u64, low: u64, epoch: u32) -> u64 {
    (mix(low ^ mix(pool_uid)) ^ u64::from(epoch)) & mask(CHECK_BITS)
}

/// Epochs a generation word counts (modulo this); see [`checksum`].
pub(crate) const EPOCHS: u32 = 1 << CHECK_BITS;

/// Packs `fields` for the pool with id `pool_uid`, whose block is in `epoch`.
pub(crate) fn pack(pool_uid: u64, fields: Fields, epoch: u32) -> u64 {
    let low = u64::from(fields.block) & mask(BLOCK_BITS)
        | (u64::from(fields.generation) & mask(GEN_BITS)) << GEN_SHIFT
        | (u64::from(fields.node) & mask(NODE_BITS)) << NODE_SHIFT
        | pool_tag(pool_uid) << TAG_SHIFT;
    low | checksum(pool_uid, low, epoch) << CHECK_SHIFT
}

/// A token of the right pool, unpacked; its checksum is checked against the epoch of its
/// block's word ([`Token::epoch`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Token {
    pub(crate) fields: Fields,
    /// Every bit but the checksum.
    low: u64,
    check: u64,
}

impl Token {
    /// The one epoch below [`EPOCHS`] in which the pool `pool_uid` would have made this
    /// token (whether it did is for the block's generation word to say).
    pub(crate) fn epoch(&self, pool_uid: u64) -> u32 {
        (self.check ^ checksum(pool_uid, self.low, 0)) as u32
    }
}

/// Unpacks a token for the pool with id `pool_uid`; `None` if its tag names another pool.
pub(crate) fn unpack(pool_uid: u64, token: u64) -> Option<Token> {
    let low = token & mask(CHECK_SHIFT);
    if (token >> TAG_SHIFT) & mask(TAG_BITS) != pool_tag(pool_uid) {
        return None;
    }
    Some(Token {
        fields: Fields {
            block: (low & mask(BLOCK_BITS)) as u32,
            generation: ((low >> GEN_SHIFT) & mask(GEN_BITS)) as u32,
            node: ((low >> NODE_SHIFT) & mask(NODE_BITS)) as u32,
        },
        low,
        check: token >> CHECK_SHIFT,
    })
}

/// A pooled value lent out as a `u64` token: `Copy`, 8 bytes, checked when redeemed.
///
/// Made by [`Handle::into_raw`](crate::Handle::into_raw); turned back into a handle by
/// [`Pool::redeem`](crate::Pool::redeem) (or `T::redeem` for a derived type), which refuses
/// a token that was already redeemed, never issued, or issued by another pool. While a
/// value is out as a token, the pool counts it live and in
/// [`Pool::leaked_raw`](crate::Pool::leaked_raw). A token that is never redeemed leaks its
/// value, as `Box::into_raw` does.
///
/// ```
/// use tally_pool::{Handle, Pool, PoolConfig, RawHandle};
///
/// let pool = Pool::<u64>::new(PoolConfig::new("ids")).unwrap();
/// let raw: RawHandle<u64> = Handle::into_raw(pool.acquire_with(42).unwrap());
/// let bits: u64 = raw.into();                      // through a queue or FFI
/// let back = pool.redeem(RawHandle::from(bits)).unwrap();
/// assert_eq!(*back, 42);
/// assert!(pool.redeem(raw).is_err(), "a token redeems once");
/// ```
#[repr(transparent)]
pub struct RawHandle<T> {
    bits: u64,
    _marker: PhantomData<fn() -> T>,
}

impl<T> RawHandle<T> {
    pub(crate) fn from_bits(bits: u64) -> Self {
        Self {
            bits,
            _marker: PhantomData,
        }
    }

    /// The token as a `u64`.
    pub fn to_bits(self) -> u64 {
        self.bits
    }
}

impl<T> From<u64> for RawHandle<T> {
    fn from(bits: u64) -> Self {
        Self::from_bits(bits)
    }
}

impl<T> From<RawHandle<T>> for u64 {
    fn from(raw: RawHandle<T>) -> u64 {
        raw.bits
    }
}

impl<T> Clone for RawHandle<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for RawHandle<T> {}

impl<T> PartialEq for RawHandle<T> {
    fn eq(&self, other: &Self) -> bool {
        self.bits == other.bits
    }
}

impl<T> Eq for RawHandle<T> {}

impl<T> Hash for RawHandle<T> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.bits.hash(state);
    }
}

impl<T> fmt::Debug for RawHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "RawHandle<{}>({:#018x})",
            core::any::type_name::<T>(),
            self.bits
        )
    }
}

/// Where a generation word keeps its epoch: bit 0 says "out as a token", bits 1 to 24
/// hold the generation, and the six bits from here count the generation's wrap-arounds
/// modulo [`EPOCHS`].
const EPOCH_SHIFT: u32 = GEN_BITS + 1;
/// The generation word's top bit, set once its epoch has wrapped, so that tokens of every
/// epoch may have been issued.
const LAPPED: u32 = 1 << 31;

/// The epoch of a generation word.
fn epoch_of(word: u32) -> u32 {
    (word >> EPOCH_SHIFT) % EPOCHS
}

/// Why a token does not redeem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// It was issued, and redeemed since.
    Stale,
    /// This pool never issued it.
    NeverIssued,
}

/// The generation words of one node pool's blocks, and the base of each of its chunks that
/// lent a value: what a token of that node is checked against.
///
/// Invariants: `gens` holds `chunk_bases.len() * blocks_per_chunk` `AtomicU32`s,
/// zero-filled when mapped, for as long as `self` lives; `chunk_bases[i]` is 0 or the base
/// of the chunk with id `i` of the node pool; `blocks_per_chunk` is the node pool's.
/// Under loom, whose atomics cannot live in mapped memory, `gens` holds as many cells, each
/// made a zero word on first use.
pub(crate) struct TokenTable {
    blocks_per_chunk: usize,
    #[cfg(not(loom))]
    gens: Region,
    #[cfg(loom)]
    gens: Box<[std::sync::OnceLock<AtomicU32>]>,
    chunk_bases: Box<[AtomicUsize]>,
}

impl fmt::Debug for TokenTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenTable")
            .field("chunks", &self.chunk_bases.len())
            .finish_non_exhaustive()
    }
}

impl TokenTable {
    /// A table for every block `pool` can have, capped at `max_capacity` (whole chunks).
    ///
    /// # Errors
    ///
    /// [`PoolError::OutOfMemory`] if the OS refuses the table's memory.
    pub(crate) fn new(pool: &BlockPool, max_capacity: usize) -> Result<Self, PoolError> {
        let blocks_per_chunk = pool.blocks_per_chunk();
        let max_chunks = max_capacity.div_ceil(blocks_per_chunk);
        let words = max_chunks * blocks_per_chunk;
        #[cfg(not(loom))]
        let gens = sys::map(words * core::mem::size_of::<AtomicU32>()).map_err(|e| {
            PoolError::OutOfMemory {
                pool: pool.name().to_string(),
                bytes: words * core::mem::size_of::<AtomicU32>(),
                errno: e.errno,
            }
        })?;
        #[cfg(loom)]
        let gens = (0..words).map(|_| std::sync::OnceLock::new()).collect();
        Ok(Self {
            blocks_per_chunk,
            gens,
            chunk_bases: (0..max_chunks).map(|_| AtomicUsize::new(0)).collect(),
        })
    }

    /// Bytes the table holds: its generation words (mapped) and its chunk bases.
    pub(crate) fn bytes(&self) -> usize {
        #[cfg(not(loom))]
        let gens = self.gens.len();
        #[cfg(loom)]
        let gens = core::mem::size_of_val(&*self.gens);
        gens + core::mem::size_of_val::<[AtomicUsize]>(&self.chunk_bases)
    }

    #[cfg(loom)]
    fn gen_word(&self, block: usize) -> Option<&AtomicU32> {
        let len = self.chunk_bases.len() * self.blocks_per_chunk;
        self.gens
            .get(block)
            .filter(|_| block < len)
            .map(|cell| cell.get_or_init(|| AtomicU32::new(0)))
    }

    #[cfg(not(loom))]
    fn gen_word(&self, block: usize) -> Option<&AtomicU32> {
        let len = self.chunk_bases.len() * self.blocks_per_chunk;
        (block < len).then(|| {
            // SAFETY: `gens` holds `len` zero-initialised AtomicU32s (type invariant) for
            // as long as `self` lives, and `block < len`.
            unsafe {
                &*self
                    .gens
                    .ptr()
                    .as_ptr()
                    .cast::<AtomicU32>()
                    .wrapping_add(block)
            }
        })
    }

    /// Lends the value at `ptr` out: marks its block's word "out" and returns the token
    /// (the value stays where it is). `None` only if the block is beyond the table, which
    /// a pool's checked cap rules out.
    ///
    /// # Safety
    ///
    /// `ptr` is a live value of `pool`, this table's node pool, the one at index `node` of
    /// the typed pool with id `uid`, and no handle owns it any more.
    pub(crate) unsafe fn lend(
        &self,
        uid: u64,
        node: usize,
        pool: &BlockPool,
        ptr: NonNull<u8>,
    ) -> Option<u64> {
        let addr = ptr.as_ptr() as usize;
        let base = addr & !(CHUNK_SIZE - 1);
        // SAFETY: `ptr` is a live block of `pool` (caller), which the caller's borrow keeps
        // alive.
        let chunk = unsafe { facade::chunk_id(ptr) } as usize;
        let index = pool.block_index(addr).unwrap_or(usize::MAX);
        let block = chunk
            .saturating_mul(self.blocks_per_chunk)
            .saturating_add(index);
        // Cannot be missing: chunk ids stay below `max_chunks` (see `PoolConfig::checked`).
        let (bases, word) = (self.chunk_bases.get(chunk)?, self.gen_word(block)?);
        bases.store(base, Ordering::Release);
        // The block is live and ours, so no redeem can change its word meanwhile (one
        // needs the word to say "out").
        let now = word.load(Ordering::Relaxed);
        word.store(now | 1, Ordering::Release);
        let fields = Fields {
            block: block as u32,
            generation: (now >> 1) & GEN_MASK,
            node: node as u32,
        };
        Some(pack(uid, fields, epoch_of(now)))
    }

    /// Takes back the value `token` (a token of the typed pool with id `uid`, naming this
    /// table's node pool `pool`) was lent under, and returns its address: at most once per
    /// lend, by one compare-and-swap on its block's word.
    ///
    /// Only memory the table vouches for is read: the token's chunk must be one this node
    /// pool mapped and lent a value from.
    pub(crate) fn redeem(
        &self,
        uid: u64,
        token: &Token,
        pool: &BlockPool,
    ) -> Result<usize, Refusal> {
        let f = token.fields;
        let block = f.block as usize;
        let (chunk, index) = (block / self.blocks_per_chunk, block % self.blocks_per_chunk);
        let base = self
            .chunk_bases
            .get(chunk)
            .map_or(0, |b| b.load(Ordering::Acquire));
        if base == 0 {
            return Err(Refusal::NeverIssued);
        }
        let word = self.gen_word(block).ok_or(Refusal::NeverIssued)?;
        let mut now = word.load(Ordering::Acquire);
        loop {
            let (epoch, lapped) = (epoch_of(now), now & LAPPED);
            if now != (lapped | epoch << EPOCH_SHIFT | f.generation << 1 | 1)
                || token.epoch(uid) != epoch
            {
                return Err(refusal(now, token, uid));
            }
            let next = (f.generation + 1) & GEN_MASK;
            let new = match (next, epoch + 1) {
                (0, EPOCHS) => LAPPED,
                (0, epoch) => lapped | epoch << EPOCH_SHIFT,
                (next, _) => lapped | epoch << EPOCH_SHIFT | next << 1,
            };
            match word.compare_exchange(now, new, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break,
                Err(seen) => now = seen,
            }
        }
        Ok(pool.block_at(base, index))
    }
}

/// Why a token is refused by a generation word `word` that is not "out at the token's
/// generation and epoch".
#[cold]
fn refusal(word: u32, token: &Token, uid: u64) -> Refusal {
    let (generation, epoch) = ((word >> 1) & GEN_MASK, epoch_of(word));
    // A redeem always moves the block past the token's generation, so a token that was
    // redeemed is behind the block; one at or ahead of it was never issued. Every token of
    // an earlier epoch was issued (each epoch runs through every generation), and so was
    // every token of a later one once the epoch has lapped.
    let token_epoch = token.epoch(uid);
    let stale = match token_epoch.cmp(&epoch) {
        core::cmp::Ordering::Equal => token.fields.generation < generation,
        core::cmp::Ordering::Less => true,
        core::cmp::Ordering::Greater => word & LAPPED != 0,
    };
    if stale {
        Refusal::Stale
    } else {
        Refusal::NeverIssued
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealed(uid: u64, token: u64, epoch: u32) -> Option<Fields> {
        unpack(uid, token)
            .filter(|t| t.epoch(uid) == epoch)
            .map(|t| t.fields)
    }

    #[test]
    fn pack_unpack_round_trips() {
        let f = Fields {
            block: MAX_BLOCKS as u32 - 1,
            generation: GEN_MASK,
            node: 5,
        };
        assert_eq!(sealed(77, pack(77, f, 3), 3), Some(f));
        let f = Fields {
            block: 0,
            generation: 0,
            node: 0,
        };
        assert_eq!(sealed(77, pack(77, f, 0), 0), Some(f));
    }

    #[test]
    fn flipped_bits_are_caught() {
        let t = pack(
            9,
            Fields {
                block: 1234,
                generation: 56,
                node: 1,
            },
            0,
        );
        let caught = (0..64)
            .filter(|bit| sealed(9, t ^ (1 << bit), 0).is_none())
            .count();
        // A single flipped bit changes either the tag, the checksum, or a field the
        // checksum covers; the 6-bit checksum misses a given change with odds 1/64.
        assert!(caught >= 60, "only {caught} of 64 single-bit flips caught");
    }

    #[test]
    fn a_token_is_sealed_in_its_epoch_only() {
        for block in [0, 17, MAX_BLOCKS as u32 - 1] {
            let f = Fields {
                block,
                generation: 5,
                node: 1,
            };
            for epoch in 0..EPOCHS {
                let t = pack(3, f, epoch);
                let sealed_in: Vec<u32> =
                    (0..EPOCHS).filter(|&e| sealed(3, t, e).is_some()).collect();
                assert_eq!(sealed_in, [epoch]);
            }
        }
    }

    #[test]
    fn tags_and_checksums_spread_over_all_their_values() {
        // 4096 inputs over 64 values: 64 each on average. A tag or checksum that ignores
        // part of its input, or a mixer that loses bits, crowds some values out.
        let spread = |values: &mut dyn Iterator<Item = u64>| {
            let mut counts = [0u32; 64];
            for v in values {
                counts[v as usize] += 1;
            }
            let (min, max) = (counts.iter().min(), counts.iter().max());
            assert!(min >= Some(&32) && max <= Some(&96), "{counts:?}");
        };
        spread(&mut (1..=4096u64).map(pool_tag));
        spread(&mut (0..4096u64).map(|low| checksum(7, low << 8, 0)));
        spread(&mut (1..=4096u64).map(|uid| checksum(uid, 12345, 0)));
    }

    #[test]
    fn a_raw_handle_is_its_bits() {
        use std::collections::hash_map::DefaultHasher;

        let bits = 0x0123_4567_89ab_cdef_u64;
        let raw = RawHandle::<u8>::from(bits);
        let copy = raw;
        assert_eq!(raw.to_bits(), bits);
        assert_eq!(u64::from(raw), bits);
        assert!(raw == copy);
        assert!(raw != RawHandle::from(bits ^ 1));
        let hash = |r: RawHandle<u8>| {
            let mut h = DefaultHasher::new();
            r.hash(&mut h);
            h.finish()
        };
        let mut plain = DefaultHasher::new();
        bits.hash(&mut plain);
        assert_eq!(hash(raw), plain.finish());
        assert_eq!(format!("{raw:?}"), "RawHandle<u8>(0x0123456789abcdef)");
    }

    #[test]
    fn another_pools_token_is_told_apart() {
        let f = Fields {
            block: 3,
            generation: 4,
            node: 0,
        };
        let t = pack(1, f, 0);
        assert_eq!(sealed(1, t, 0), Some(f));
        // Pools with another tag refuse it by the tag; pools with the same tag by the
        // checksum, which covers the whole pool id.
        let same_tag: Vec<u64> = (2..100_000u64)
            .filter(|&uid| pool_tag(uid) == pool_tag(1))
            .collect();
        assert!(same_tag.len() > 100, "same-tag pool ids to try");
        assert!((2..200u64)
            .filter(|&uid| pool_tag(uid) != pool_tag(1))
            .all(|uid| unpack(uid, t).is_none()));
        let accepted = same_tag
            .iter()
            .filter(|&&uid| sealed(uid, t, 0).is_some())
            .count();
        // Odds of 1/64 per pool: far fewer than all of them.
        assert!(
            accepted * 16 < same_tag.len(),
            "{accepted} of {} same-tag pools accept another pool's token",
            same_tag.len()
        );
    }
}

#[cfg(all(test, not(loom)))]
mod generation_tests {
    use core::alloc::Layout;
    use std::collections::HashSet;

    use super::*;
    use crate::block::facade::BlockPoolConfig;

    /// One block of a one-node pool, and the table it is lent and redeemed through.
    struct Lender {
        pool: BlockPool,
        table: TokenTable,
        block: NonNull<u8>,
    }

    impl Lender {
        fn new(name: &str) -> Self {
            let pool =
                BlockPool::new(BlockPoolConfig::new(Layout::new::<u64>()).name(name)).unwrap();
            let table = TokenTable::new(&pool, pool.blocks_per_chunk()).unwrap();
            let block = pool.allocate().unwrap();
            Self { pool, table, block }
        }

        fn uid(&self) -> u64 {
            self.pool.uid()
        }

        fn lend(&self) -> u64 {
            // SAFETY: `block` is allocated from `pool` and stays so; the tests redeem each
            // lend before lending again, as a pool does.
            unsafe { self.table.lend(self.uid(), 0, &self.pool, self.block) }.unwrap()
        }

        fn redeem(&self, bits: u64) -> Result<usize, Refusal> {
            let token = unpack(self.uid(), bits).unwrap();
            self.table.redeem(self.uid(), &token, &self.pool)
        }

        /// The generation word of the block a token names.
        fn word_of(&self, bits: u64) -> &AtomicU32 {
            let token = unpack(self.uid(), bits).unwrap();
            self.table.gen_word(token.fields.block as usize).unwrap()
        }

        fn addr(&self) -> usize {
            self.block.as_ptr() as usize
        }
    }

    fn stale(r: Result<usize, Refusal>) -> bool {
        r == Err(Refusal::Stale)
    }

    #[test]
    fn the_last_generation_of_an_epoch_moves_to_the_next_epoch() {
        let l = Lender::new("gen-epoch");
        let first = l.lend();
        let word = l.word_of(first);
        assert_eq!(l.redeem(first), Ok(l.addr()));
        // As if the block had been lent until the last generation of epoch 5.
        word.store(5 << EPOCH_SHIFT | GEN_MASK << 1, Ordering::Relaxed);
        let last = l.lend();
        assert_eq!(l.redeem(last), Ok(l.addr()));
        assert_eq!(word.load(Ordering::Relaxed), 6 << EPOCH_SHIFT);
        let now = l.lend();
        // `first` has the generation bits of `now`, but was made in epoch 0.
        assert_ne!(first, now);
        assert!(stale(l.redeem(first)) && stale(l.redeem(last)));
        assert_eq!(l.redeem(now), Ok(l.addr()));
    }

    #[test]
    fn the_top_generation_of_the_first_epoch_belongs_to_it() {
        // Generations use all 24 bits below the epoch: the last one of epoch 0 is still
        // epoch 0, and its redeem starts epoch 1 at generation 0.
        let l = Lender::new("gen-top");
        let first = l.lend();
        let word = l.word_of(first);
        assert_eq!(l.redeem(first), Ok(l.addr()));
        word.store(GEN_MASK << 1, Ordering::Relaxed);
        assert_eq!(epoch_of(word.load(Ordering::Relaxed)), 0);
        let top = l.lend();
        assert_eq!(unpack(l.uid(), top).unwrap().epoch(l.uid()), 0);
        assert_eq!(l.redeem(top), Ok(l.addr()));
        assert_eq!(word.load(Ordering::Relaxed), 1 << EPOCH_SHIFT);
        assert_eq!(epoch_of(word.load(Ordering::Relaxed)), 1);
        let next = l.lend();
        let fields = unpack(l.uid(), next).unwrap().fields;
        assert_eq!((fields.generation, fields.block), (0, 0));
        assert_eq!(l.redeem(next), Ok(l.addr()));
        // Within epoch 1 a redeem keeps the epoch and moves the generation on.
        assert_eq!(word.load(Ordering::Relaxed), 1 << EPOCH_SHIFT | 1 << 1);
    }

    #[test]
    fn refusals_tell_stale_tokens_from_never_issued_ones() {
        let l = Lender::new("gen-refusals");
        let mut issued = Vec::new();
        for _ in 0..5 {
            let t = l.lend();
            assert_eq!(l.redeem(t), Ok(l.addr()));
            issued.push(t);
        }
        // The block is at generation 5, not out. Forged tokens of the same block and
        // epoch: generations below 5 were issued (stale), 5 and above were not.
        let f = unpack(l.uid(), issued[0]).unwrap().fields;
        let forged = |generation| pack(l.uid(), Fields { generation, ..f }, 0);
        for generation in 0..5 {
            assert_eq!(forged(generation), issued[generation as usize]);
            assert_eq!(l.redeem(forged(generation)), Err(Refusal::Stale));
        }
        for generation in [5, 6, 1000, GEN_MASK] {
            let refused = l.redeem(forged(generation));
            assert_eq!(
                refused,
                Err(Refusal::NeverIssued),
                "generation {generation}"
            );
        }
    }

    /// A pool of 4 KiB blocks (a few hundred a chunk) with a table for two chunks.
    fn two_chunk_table() -> (BlockPool, TokenTable) {
        let layout = Layout::new::<[u64; 512]>();
        let pool = BlockPool::new(BlockPoolConfig::new(layout).name("gen-two-chunks")).unwrap();
        let table = TokenTable::new(&pool, 2 * pool.blocks_per_chunk()).unwrap();
        (pool, table)
    }

    #[test]
    fn tokens_of_blocks_in_two_chunks_redeem_to_their_own_blocks() {
        let (pool, table) = two_chunk_table();
        let uid = pool.uid();
        let per_chunk = pool.blocks_per_chunk();
        let blocks: Vec<_> = (0..per_chunk + 3)
            .map(|_| pool.allocate().unwrap())
            .collect();
        // SAFETY: each block is a live block of `pool`, node pool 0 of `table`, lent once.
        let tokens: Vec<u64> = blocks
            .iter()
            .map(|&b| unsafe { table.lend(uid, 0, &pool, b) }.unwrap())
            .collect();
        let numbers: HashSet<u32> = tokens
            .iter()
            .map(|&t| unpack(uid, t).unwrap().fields.block)
            .collect();
        assert_eq!(numbers.len(), blocks.len(), "one block number each");
        for (&t, &b) in tokens.iter().zip(&blocks).rev() {
            let token = unpack(uid, t).unwrap();
            assert_eq!(table.redeem(uid, &token, &pool), Ok(b.as_ptr() as usize));
        }
    }

    #[test]
    fn the_table_has_a_word_for_each_block_of_its_chunks_and_counts_its_bytes() {
        let (pool, table) = two_chunk_table();
        let words = 2 * pool.blocks_per_chunk();
        assert!(table.gen_word(0).is_some());
        assert!(table.gen_word(words - 1).is_some());
        assert!(table.gen_word(words).is_none());
        // The words are mapped, so whole pages; the chunk bases are a word each.
        let mapped = (words * core::mem::size_of::<AtomicU32>()).div_ceil(crate::sys::PAGE);
        let bases = 2 * core::mem::size_of::<usize>();
        assert_eq!(table.bytes(), mapped * crate::sys::PAGE + bases);
        assert_eq!(
            format!("{table:?}"),
            "TokenTable { chunks: 2, .. }",
            "the table shows its size, not its words"
        );
    }

    #[test]
    fn a_lapped_epoch_keeps_telling_old_tokens_stale() {
        let l = Lender::new("gen-lap");
        let first = l.lend();
        let word = l.word_of(first);
        assert_eq!(l.redeem(first), Ok(l.addr()));
        // The last generation of the last epoch: the next redeem laps the epoch.
        word.store(
            (EPOCHS - 1) << EPOCH_SHIFT | GEN_MASK << 1,
            Ordering::Relaxed,
        );
        let last = l.lend();
        assert_eq!(l.redeem(last), Ok(l.addr()));
        assert_eq!(word.load(Ordering::Relaxed), LAPPED);
        let again = l.lend();
        assert_eq!(l.redeem(again), Ok(l.addr()));
        let now = l.lend();
        // Epoch 63 is ahead of epoch 0 but was lived through: stale, not never issued.
        assert!(stale(l.redeem(last)));
        // `first` is generation 0 of epoch 0, long redeemed: stale too.
        assert!(stale(l.redeem(first)));
        assert_eq!(l.redeem(now), Ok(l.addr()));
    }

    #[test]
    fn a_token_of_another_pool_with_the_same_tag_is_refused() {
        // Pool ids come from a process-wide counter; the 6-bit tag of about one pool in 64
        // equals `a`'s. Each pool below lends its first block, so its token has the very
        // fields of `a`'s (chunk 0, block 0, generation 0, node 0) and the same tag: only
        // the checksum, which covers the whole pool id, tells them apart.
        let a = Lender::new("same-tag-a");
        let a_token = a.lend();
        let wanted = if cfg!(miri) { 1 } else { 3 };
        let (mut same_tag, mut told_apart) = (0, 0);
        for _ in 0..4096 {
            let b = Lender::new("same-tag-b");
            if pool_tag(b.uid()) != pool_tag(a.uid()) {
                continue;
            }
            same_tag += 1;
            let b_token = b.lend();
            let (a_fields, b_fields) = (
                unpack(b.uid(), a_token).map(|t| t.fields),
                unpack(b.uid(), b_token).map(|t| t.fields),
            );
            assert!(a_fields.is_some(), "the tag does not refuse it");
            assert_eq!(a_fields, b_fields);
            // One pool in 64 of those issues the very same bits: no checksum of 6 bits can
            // tell those apart.
            if b_token != a_token {
                told_apart += 1;
                assert_eq!(b.redeem(a_token), Err(Refusal::NeverIssued));
                assert_eq!(
                    b.redeem(b_token),
                    Ok(b.addr()),
                    "b's own token still redeems"
                );
            }
            if told_apart == wanted {
                break;
            }
        }
        assert!(
            told_apart == wanted,
            "of {same_tag} pools with a's tag, {told_apart} issued a token other than a's"
        );
        assert_eq!(a.redeem(a_token), Ok(a.addr()));
    }

    #[test]
    fn before_a_lap_a_later_epoch_was_never_issued() {
        let l = Lender::new("gen-ahead");
        let raw = l.lend();
        // The same fields sealed in epoch 1, which the block has not reached.
        let f = unpack(l.uid(), raw).unwrap().fields;
        let ahead = pack(l.uid(), f, 1);
        assert_eq!(l.redeem(ahead), Err(Refusal::NeverIssued));
        assert_eq!(l.redeem(raw), Ok(l.addr()));
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use core::alloc::Layout;

    use loom::sync::Arc;
    use loom::thread;

    use super::*;
    use crate::block::facade::BlockPoolConfig;

    /// Two threads redeem one token at once: the generation word's compare-and-swap lets
    /// exactly one of them have the block; the other is told the token is stale.
    #[test]
    fn racing_redeems_of_one_token_let_exactly_one_win() {
        loom::model(|| {
            let pool = BlockPool::new(
                BlockPoolConfig::new(Layout::new::<u64>())
                    .max_capacity(4)
                    .prefault(false),
            )
            .unwrap();
            let table = Arc::new(TokenTable::new(&pool, 4).unwrap());
            let block = pool.allocate().unwrap();
            let uid = pool.uid();
            // SAFETY: `block` is a live block of `pool`, the node pool 0 of `table`, and
            // nothing else owns it.
            let bits = unsafe { table.lend(uid, 0, &pool, block) }.unwrap();
            let token = unpack(uid, bits).unwrap();
            let (remote_pool, remote_table) = (pool.clone(), table.clone());
            let t = thread::spawn(move || remote_table.redeem(uid, &token, &remote_pool));
            let mine = table.redeem(uid, &token, &pool);
            let theirs = t.join().unwrap();
            let at = block.as_ptr() as usize;
            let won = [mine, theirs].iter().filter(|&&r| r == Ok(at)).count();
            let stale = [mine, theirs]
                .iter()
                .filter(|&&r| r == Err(Refusal::Stale))
                .count();
            assert_eq!((won, stale), (1, 1), "{mine:?}, {theirs:?}");
            // Lent again, the block redeems once more, under its next generation.
            // SAFETY: as above: the one redeem that won gave the block back to this thread.
            let again = unsafe { table.lend(uid, 0, &pool, block) }.unwrap();
            assert_ne!(again, bits);
            assert_eq!(
                table.redeem(uid, &unpack(uid, again).unwrap(), &pool),
                Ok(at)
            );
            // SAFETY: allocated above, freed once.
            unsafe { pool.free(block) }.unwrap();
        });
    }
}
