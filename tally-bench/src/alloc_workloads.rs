//! The workloads of `benches/alloc.rs`, which describes them: mimalloc-bench's, whose blocks
//! come straight from the global allocator `A` (`GlobalAlloc::alloc`, not `Box`), and two
//! real programs. Each returns its time: ns an operation, or ms.

// The bench's own code, moved here whole: `Layout` and channel results unwrapped, slots
// indexed, as `benches/alloc.rs` allows.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::alloc::{GlobalAlloc, Layout};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::thread::scope;
use std::time::Instant;

/// xorshift64*: the same sizes and orders for every contender.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn size(&mut self, min: u64, max: u64) -> usize {
        (min + self.next() % (max - min + 1)) as usize
    }
}

/// A block of `size` bytes from `a`, its first byte written; an address, so that it can go
/// to another thread.
fn block<A: GlobalAlloc>(a: &A, size: usize) -> usize {
    // SAFETY: `size` is not zero (every caller's minimum is 8).
    let p = unsafe { a.alloc(Layout::from_size_align(size, 8).unwrap()) };
    assert!(!p.is_null(), "out of memory");
    // SAFETY: the first byte of the block, ours.
    unsafe { p.write(1) };
    p as usize
}

/// Frees a block of [`block`]`(a, size)`.
fn free<A: GlobalAlloc>(a: &A, p: usize, size: usize) {
    // SAFETY: every caller passes a live block of `block(a, size)` and forgets it.
    unsafe { a.dealloc(p as *mut u8, Layout::from_size_align(size, 8).unwrap()) }
}

/// ns since `start` over `per`: the operations, or `MS` for the time in ms.
fn since(start: Instant, per: usize) -> f64 {
    start.elapsed().as_nanos() as f64 / per as f64
}
const MS: usize = 1_000_000;

/// glibc-simple: `rounds` rounds of 1,000 blocks freed in random order.
pub fn glibc_simple<A: GlobalAlloc>(a: &A, rounds: usize) -> f64 {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut live = Vec::with_capacity(1000);
    let start = Instant::now();
    for _ in 0..rounds {
        for _ in 0..1000 {
            let size = rng.size(8, 512);
            live.push((block(a, size), size));
        }
        while !live.is_empty() {
            let (p, size) = live.swap_remove((rng.next() % live.len() as u64) as usize);
            free(a, p, size);
        }
    }
    since(start, rounds * 1000)
}

/// xmalloc-test's sizes.
const XMALLOC_SIZES: [usize; 17] = [
    8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048,
];
/// Blocks in one of xmalloc-test's batches.
const BATCH: usize = 4096;

/// xmalloc-test: `blocks` blocks (rounded up to whole batches), freed by another thread.
pub fn xmalloc<A: GlobalAlloc + Sync>(a: &A, blocks: usize) -> f64 {
    // At most 100 batches in flight, as in xmalloc-test.
    let (batches, freed) = std::sync::mpsc::sync_channel::<Vec<(usize, usize)>>(100);
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    let start = Instant::now();
    scope(|s| {
        s.spawn(move || {
            for batch in freed {
                for (p, size) in batch {
                    free(a, p, size);
                }
            }
        });
        for _ in 0..blocks.div_ceil(BATCH) {
            let mut batch = Vec::with_capacity(BATCH);
            for _ in 0..BATCH {
                let size = XMALLOC_SIZES[rng.next() as usize % XMALLOC_SIZES.len()];
                batch.push((block(a, size), size));
            }
            batches.send(batch).unwrap();
        }
        drop(batches);
    });
    since(start, blocks.div_ceil(BATCH) * BATCH)
}

/// cache-scratch: two threads each write a block of their own `writes` times, 1,000 times.
pub fn cache_scratch<A: GlobalAlloc + Sync>(a: &A, writes: usize) -> f64 {
    const SIZE: usize = 8;
    let given: Vec<usize> = (0..2).map(|_| block(a, SIZE)).collect();
    let start = Instant::now();
    scope(|s| {
        for p in given {
            s.spawn(move || {
                free(a, p, SIZE);
                for _ in 0..1000 {
                    let b = block(a, SIZE) as *mut u8;
                    for (j, k) in (0..writes).flat_map(|j| (0..SIZE).map(move |k| (j, k))) {
                        // SAFETY: byte `k` of the `SIZE`-byte block, ours.
                        unsafe { b.wrapping_add(k).write_volatile((j + k) as u8) };
                    }
                    free(a, b as usize, SIZE);
                }
            });
        }
    });
    since(start, MS)
}

/// A larson thread's state: its slots (block, size) and its random numbers.
struct Slots(Vec<(usize, usize)>, Rng);

impl Slots {
    const OPS: usize = 10_000;

    fn churn<A: GlobalAlloc>(&mut self, a: &A) {
        for _ in 0..Self::OPS {
            let i = (self.1.next() % self.0.len() as u64) as usize;
            free(a, self.0[i].0, self.0[i].1);
            let size = self.1.size(16, 1000);
            self.0[i] = (block(a, size), size);
        }
    }
}

/// larson: `rounds` rounds of two threads' churn, each round on a fresh thread.
pub fn larson<A: GlobalAlloc + Sync>(a: &A, rounds: usize) -> f64 {
    let heaps = (0..2).map(|t| {
        let mut rng = Rng(0x4141 + t);
        let sizes: Vec<usize> = (0..5000).map(|_| rng.size(16, 1000)).collect();
        Slots(sizes.into_iter().map(|s| (block(a, s), s)).collect(), rng)
    });
    let mut heaps: Vec<Slots> = heaps.collect();
    let start = Instant::now();
    // Each of two chains hands its slots to a fresh thread a round.
    scope(|s| {
        for heap in &mut heaps {
            s.spawn(move || {
                for _ in 0..rounds {
                    scope(|fresh| fresh.spawn(|| heap.churn(a)).join().unwrap());
                }
            });
        }
    });
    let time = since(start, 2 * rounds * Slots::OPS);
    for (p, size) in heaps.into_iter().flat_map(|h| h.0) {
        free(a, p, size);
    }
    time
}

/// A JSON array of about `bytes` bytes of orders, the same for every contender.
fn document(bytes: usize) -> String {
    let (mut rng, mut doc) = (Rng(0x5EED), String::from("["));
    while doc.len() < bytes {
        let [id, who, cents, zip] = [(); 4].map(|()| rng.next() % 100_000);
        let status = ["new", "paid", "shipped"][(id % 3) as usize];
        doc += &format!(r#"{{"id":{id},"customer":"c-{who:05}","status":"{status}","#);
        doc += &format!(r#""total":{cents}.25,"zip":"{zip:05}","items":["#);
        for i in 0..1 + zip % 6 {
            let (sku, n) = (rng.next() as u32, rng.next() % 7);
            doc += &format!(r#"{{"sku":"S{sku:08X}","qty":{i},"tags":["t{n}",{n}.5]}},"#);
        }
        doc.pop();
        doc.push_str("]},");
    }
    doc.pop();
    doc + "]"
}

/// json: a document of about `bytes` bytes parsed into a `Value` and written out again.
pub fn json(bytes: usize) -> f64 {
    let doc = document(bytes);
    let start = Instant::now();
    let value: serde_json::Value = serde_json::from_str(&doc).unwrap();
    let out = serde_json::to_string(&value).unwrap();
    drop(black_box((value, out)));
    since(start, MS)
}

/// btreemap: `entries` inserts into a `BTreeMap<u64, String>`, then its drop.
pub fn btreemap(entries: usize) -> f64 {
    let mut rng = Rng(0xB7EE);
    let start = Instant::now();
    let mut map = BTreeMap::new();
    for _ in 0..entries {
        let key = rng.next();
        map.insert(key, format!("order-{key:016x}"));
    }
    drop(black_box(map));
    since(start, MS)
}
