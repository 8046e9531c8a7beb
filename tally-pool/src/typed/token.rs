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
/// a token that was already redeemed or never issued, and one issued by another pool as
/// far as a 12-bit check can tell (see [`Pool::redeem`](crate::Pool::redeem)). While a
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
///
/// Invariant in `T`, as its pool is:
///
/// ```compile_fail,E0308
/// use tally_pool::RawHandle;
///
/// fn narrow(r: RawHandle<for<'a> fn(&'a str)>) -> RawHandle<fn(&'static str)> {
///     r
/// }
/// ```
#[repr(transparent)]
pub struct RawHandle<T> {
    bits: u64,
    /// Invariant in `T`, as `Pool<T>` and `Handle<T>` are: a token redeems into a handle
    /// of the pool's own `T`.
    _marker: PhantomData<fn(T) -> T>,
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
        // Millions of chunks make this tens of MiB: a refusal is an error, not an abort.
        let mut chunk_bases = Vec::new();
        chunk_bases
            .try_reserve_exact(max_chunks)
            .map_err(|_| PoolError::OutOfMemory {
                pool: pool.error_name(),
                bytes: max_chunks.saturating_mul(core::mem::size_of::<AtomicUsize>()),
                errno: libc::ENOMEM,
            })?;
        chunk_bases.extend((0..max_chunks).map(|_| AtomicUsize::new(0)));
        #[cfg(not(loom))]
        let gens = sys::map(words * core::mem::size_of::<AtomicU32>()).map_err(|e| {
            PoolError::OutOfMemory {
                pool: pool.error_name(),
                bytes: words * core::mem::size_of::<AtomicU32>(),
                errno: e.errno,
            }
        })?;
        #[cfg(loom)]
        let gens = (0..words).map(|_| std::sync::OnceLock::new()).collect();
        Ok(Self {
            blocks_per_chunk,
            gens,
            chunk_bases: chunk_bases.into_boxed_slice(),
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
#[path = "token_tests.rs"]
mod tests;
