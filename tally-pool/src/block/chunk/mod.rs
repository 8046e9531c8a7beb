//! Chunks: the 1 MiB, size-aligned units in which pools map memory.
//!
//! - `geometry`: where a pool's blocks sit in each of its chunks, and the arithmetic that
//!   tells a block's start from any other address.
//! - `header`: the first bytes of every chunk, which say whose it is, checksummed.
//! - `registry`: which pool owns the chunk at an address, from the address alone.
//! - `list`: the chunks one pool mapped, and how many of their blocks are carved.

pub(crate) mod geometry;
pub(crate) mod header;
pub(crate) mod list;
pub(crate) mod registry;

pub use registry::CHUNK_SIZE;
