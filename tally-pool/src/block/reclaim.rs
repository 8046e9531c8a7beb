//! Reclaim: giving chunks whose blocks are all free back to the OS.
//!
//! A reclaim first asks every thread to flush its cache (the epoch), then, under the growth
//! lock, takes every magazine out of the depot: nobody can carve meanwhile, so a chunk whose
//! carved blocks are all in those magazines has no block anywhere else. Such a chunk keeps
//! its address range, its registration and its header page, and is reused before a new one
//! is mapped; the rest of its pages go back to the OS.

use std::collections::HashMap;
use std::sync::atomic::Ordering as StdOrdering;

use super::chunk::CHUNK_SIZE;
use super::depot::MAGAZINE_SIZE;
use super::shared::PoolShared;
use crate::sync::lock;
use crate::sys::PAGE;

impl PoolShared {
    /// Gives every chunk whose carved blocks are all in the depot back to the OS, keeping
    /// its header page, and returns the bytes released. See `BlockPool::reclaim`.
    pub(super) fn reclaim(&self) -> usize {
        self.bump_epoch();
        let mut growth = lock(&self.growth);
        // Take every magazine out of the depot: while the lock is held nobody can carve,
        // so every block of a chunk is either in these magazines or held elsewhere.
        let mut mags = Vec::new();
        while let Some(m) = self.depot.pop_full() {
            mags.push(m);
        }
        let index: HashMap<usize, usize> = growth
            .chunks
            .iter()
            .enumerate()
            .map(|(i, c)| (c.base(), i))
            .collect();
        let mut free_in = vec![0usize; growth.chunks.len()];
        let mut popped = 0usize;
        for &m in &mags {
            // SAFETY: popped above, so owned by this thread.
            unsafe {
                self.depot.with_blocks(m, |b| {
                    popped += b.count;
                    for &p in b.ptrs.iter().take(b.count) {
                        let base = p as usize & !(CHUNK_SIZE - 1);
                        if let Some(n) = index.get(&base).and_then(|&i| free_in.get_mut(i)) {
                            *n += 1;
                        }
                    }
                })
            };
        }
        let mut freed = 0usize;
        let mut gone: Vec<bool> = vec![false; growth.chunks.len()];
        let mut released = 0usize;
        for ((chunk, &free), gone) in growth.chunks.iter_mut().zip(&free_in).zip(gone.iter_mut()) {
            if !chunk.reclaimed && free == chunk.carved {
                // Keep the page that holds the header; give back the rest.
                chunk.region.discard_from(PAGE);
                chunk.faulted = chunk.faulted.min(PAGE);
                released += chunk.carved;
                chunk.carved = 0;
                chunk.reclaimed = true;
                *gone = true;
                freed += CHUNK_SIZE - PAGE;
                self.counters
                    .active_chunks
                    .fetch_sub(1, StdOrdering::Relaxed);
            }
        }
        growth.carved_total -= released;
        // Put back the blocks of chunks that stay, packed into as few magazines as needed.
        let mut keep = Vec::new();
        for &m in &mags {
            // SAFETY: owned by this thread since the pop above.
            unsafe {
                self.depot.with_blocks(m, |b| {
                    for &p in b.ptrs.iter().take(b.count) {
                        let base = p as usize & !(CHUNK_SIZE - 1);
                        let dropped = index.get(&base).and_then(|&i| gone.get(i)).copied();
                        if dropped != Some(true) {
                            keep.push(p);
                        }
                    }
                    b.count = 0;
                })
            };
        }
        // The blocks of reclaimed chunks leave the depot; the rest go back in below.
        self.depot.count_out(popped - keep.len());
        let mut rest = keep.as_slice();
        for &m in &mags {
            let n = rest.len().min(MAGAZINE_SIZE);
            let (now, later) = rest.split_at(n);
            // SAFETY: still owned by this thread.
            unsafe {
                self.depot.with_blocks(m, |b| {
                    if let Some(dst) = b.ptrs.get_mut(..n) {
                        dst.copy_from_slice(now);
                        b.count = n;
                    }
                })
            };
            rest = later;
            if n > 0 {
                self.depot.push_full(m);
            } else {
                self.depot.push_empty(m);
            }
        }
        drop(growth);
        self.counters
            .reclaimed_bytes
            .fetch_add(freed as u64, StdOrdering::Relaxed);
        freed
    }
}
