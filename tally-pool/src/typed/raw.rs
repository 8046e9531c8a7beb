//! `RawHandle<T>`: a checked `u64` token for a pooled value, for queues and FFI.
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

use core::fmt;
use core::hash::{Hash, Hasher};
use core::marker::PhantomData;

pub(crate) const BLOCK_BITS: u32 = 25;
pub(crate) const GEN_BITS: u32 = 24;
const NODE_BITS: u32 = 3;
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
/// block's word ([`Token::sealed_in`]).
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
