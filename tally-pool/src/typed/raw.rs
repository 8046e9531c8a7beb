//! `RawHandle<T>`: a checked `u64` token for a pooled value, for queues and FFI.
//!
//! # Token layout (bit 63 first)
//!
//! | bits | field |
//! |---|---|
//! | 6 | checksum over the pool's id and every field below |
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

fn checksum(pool_uid: u64, low: u64) -> u64 {
    mix(low ^ mix(pool_uid)) & mask(CHECK_BITS)
}

/// Packs `fields` for the pool with id `pool_uid`.
pub(crate) fn pack(pool_uid: u64, fields: Fields) -> u64 {
    let low = u64::from(fields.block) & mask(BLOCK_BITS)
        | (u64::from(fields.generation) & mask(GEN_BITS)) << GEN_SHIFT
        | (u64::from(fields.node) & mask(NODE_BITS)) << NODE_SHIFT
        | pool_tag(pool_uid) << TAG_SHIFT;
    low | checksum(pool_uid, low) << CHECK_SHIFT
}

/// What is wrong with a token, before any memory is consulted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unpacked {
    Ok(Fields),
    WrongPool,
    Forged,
}

/// Unpacks a token for the pool with id `pool_uid`.
pub(crate) fn unpack(pool_uid: u64, token: u64) -> Unpacked {
    let low = token & mask(CHECK_SHIFT);
    if (token >> TAG_SHIFT) & mask(TAG_BITS) != pool_tag(pool_uid) {
        return Unpacked::WrongPool;
    }
    if token >> CHECK_SHIFT != checksum(pool_uid, low) {
        return Unpacked::Forged;
    }
    Unpacked::Ok(Fields {
        block: (low & mask(BLOCK_BITS)) as u32,
        generation: ((low >> GEN_SHIFT) & mask(GEN_BITS)) as u32,
        node: ((low >> NODE_SHIFT) & mask(NODE_BITS)) as u32,
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

    #[test]
    fn pack_unpack_round_trips() {
        let f = Fields {
            block: MAX_BLOCKS as u32 - 1,
            generation: GEN_MASK,
            node: 5,
        };
        let t = pack(77, f);
        assert_eq!(unpack(77, t), Unpacked::Ok(f));
        let f = Fields {
            block: 0,
            generation: 0,
            node: 0,
        };
        assert_eq!(unpack(77, pack(77, f)), Unpacked::Ok(f));
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
        );
        let mut caught = 0;
        for bit in 0..64 {
            if !matches!(unpack(9, t ^ (1 << bit)), Unpacked::Ok(_)) {
                caught += 1;
            }
        }
        // A single flipped bit changes either the tag, the checksum, or a field the
        // checksum covers; the 6-bit checksum misses a given change with odds 1/64.
        assert!(caught >= 60, "only {caught} of 64 single-bit flips caught");
    }

    #[test]
    fn another_pools_token_is_told_apart() {
        let t = pack(
            1,
            Fields {
                block: 3,
                generation: 4,
                node: 0,
            },
        );
        let wrong = (2..200u64)
            .filter(|&uid| pool_tag(uid) != pool_tag(1))
            .count();
        let flagged = (2..200u64)
            .filter(|&uid| unpack(uid, t) != unpack(1, t))
            .count();
        assert!(flagged >= wrong);
        assert!(matches!(unpack(1, t), Unpacked::Ok(_)));
    }
}
