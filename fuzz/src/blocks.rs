//! `blocks`: `BlockPool`s of several layouts and guard levels against a model.
//!
//! Operations: allocations and frees (here or on another thread), and every misuse that
//! `BlockPool::free`'s `# Safety` contract allows because the pool detects it: frees of
//! foreign pointers (heap, stack, another pool's blocks, addresses no pool maps), of
//! interior pointers and chunk headers at every guard level, and under `Canary` and
//! `Full` frees of blocks nobody holds (freed and not handed out since, never carved,
//! in a reclaimed chunk) and of blocks whose check word was overwritten; writes past a
//! block's end; under `Full`, writes into freed blocks. Stale frees (of a block handed out
//! again since) and, under `Off`, frees of blocks nobody holds are undefined behaviour by
//! the contract and never made. All runs on one thread at a time (helper threads are
//! joined before the next step), as the contract asks of frees of blocks nobody holds.
//!
//! The model knows every block it owns, every block it freed, every block it damaged. It
//! checks that no block ever has two owners (an allocation never returns a block the
//! model holds), that stamps written into owned blocks survive until their free, that
//! each misuse is refused with the kind the guard table promises and counted, that a
//! damaged block is never handed out again (its reuse is reported as corruption and the
//! block withdrawn), that `Exhausted` comes only at the cap, and that the live count
//! and the corruption count agree with the model.

use std::collections::{BTreeMap, BTreeSet};

use arbitrary::{Arbitrary, Unstructured};
use core::alloc::Layout;
use core::ptr::NonNull;
use tally_pool::block::{BlockPool, BlockPoolConfig, GuardLevel, CHUNK_SIZE};
use tally_pool::{CorruptionKind, PoolError};

/// Block layouts (size, align): tiny, odd, cache-line aligned, page aligned, huge.
const LAYOUTS: [(usize, usize); 6] = [
    (8, 8),
    (24, 8),
    (64, 64),
    (100, 4),
    (4000, 4096),
    (200_000, 8),
];

/// A pool of a run.
#[derive(Arbitrary, Debug)]
pub struct Spec {
    layout: u8,
    guard: u8,
    cap: u8,
}

/// One step of a run.
#[derive(Arbitrary, Debug)]
pub enum Op {
    Alloc {
        pool: u8,
    },
    AllocOnThread {
        pool: u8,
        n: u8,
    },
    Free {
        pool: u8,
        slot: u16,
    },
    FreeOnThread {
        pool: u8,
        slot: u16,
    },
    /// A free of a block freed and not handed out since (guarded pools only).
    DoubleFree {
        pool: u8,
        slot: u16,
    },
    /// A free of the block `k` strides from a known one: owned, free, never carved, or not a
    /// block start at all (the header, the chunk's tail).
    Neighbour {
        pool: u8,
        slot: u16,
        k: i8,
    },
    /// A free of a pointer inside a known block.
    Interior {
        pool: u8,
        slot: u16,
        offset: u16,
    },
    /// A free of a chunk's header.
    Header {
        pool: u8,
        slot: u16,
    },
    /// A free of a pointer that is no block of the pool.
    Foreign {
        pool: u8,
        kind: u8,
        other: u8,
        slot: u16,
        bits: u64,
    },
    /// A write past an owned block's usable size, over its check word (guarded only).
    Overrun {
        pool: u8,
        slot: u16,
        xor: u8,
    },
    /// A free of a block whose check word was overwritten.
    FreeOverrun {
        pool: u8,
        slot: u16,
    },
    /// A write into a freed block: its payload (`Full`) or its check word (guarded).
    WriteFree {
        pool: u8,
        slot: u16,
        offset: u16,
        xor: u8,
    },
    Reclaim {
        pool: u8,
    },
    Verify {
        pool: u8,
    },
    Stats {
        pool: u8,
    },
}

struct PoolModel {
    pool: BlockPool,
    guard: GuardLevel,
    size: usize,
    stride: usize,
    first_offset: usize,
    span: usize,
    max: usize,
    /// Blocks handed out and not freed.
    owned: Vec<usize>,
    /// Owned blocks whose check word the run overwrote: every free of them is refused.
    stuck: Vec<usize>,
    /// Blocks the run freed, not handed out since.
    free: BTreeSet<usize>,
    /// Freed blocks whose chunk has not been through a reclaim since: still mapped, so the
    /// run may write into them.
    writable: BTreeSet<usize>,
    /// Free blocks the run wrote into, and the kind their reuse must report.
    damaged: BTreeMap<usize, CorruptionKind>,
    /// Damaged blocks whose chunk may have been reclaimed (and its damage erased).
    uncertain: BTreeSet<usize>,
    /// Blocks the pool refused to hand out: never handed out again.
    withdrawn: BTreeSet<usize>,
    corruptions: u64,
}

fn round_up(n: usize, to: usize) -> usize {
    n.div_ceil(to) * to
}

fn pick<T: Copy>(v: impl IntoIterator<Item = T>, slot: u16) -> Option<T> {
    let v: Vec<T> = v.into_iter().collect();
    (!v.is_empty()).then(|| v[usize::from(slot) % v.len()])
}

fn block(addr: usize) -> NonNull<u8> {
    match NonNull::new(addr as *mut u8) {
        Some(p) => p,
        None => panic!("a null block address"),
    }
}

/// The stamp an owned block carries in its first and last words.
fn stamp_of(addr: usize) -> u64 {
    (addr as u64).rotate_left(17) ^ 0x5a5a_0f0f_3c3c_a5a5
}

impl PoolModel {
    fn new(spec: &Spec, i: usize) -> Self {
        let (size, align) = LAYOUTS[usize::from(spec.layout) % LAYOUTS.len()];
        let guard =
            [GuardLevel::Off, GuardLevel::Canary, GuardLevel::Full][usize::from(spec.guard) % 3];
        let max = if spec.cap.is_multiple_of(4) {
            usize::MAX
        } else {
            usize::from(spec.cap) % 48 + 1
        };
        let layout = match Layout::from_size_align(size, align) {
            Ok(l) => l,
            Err(e) => panic!("layout {size}/{align}: {e}"),
        };
        let config = BlockPoolConfig::new(layout)
            .name(format!("fuzz-blocks-{i}"))
            .guard(guard)
            .max_capacity(max)
            .prefault(false);
        let pool = match BlockPool::new(config) {
            Ok(p) => p,
            Err(e) => panic!("creating a fuzz pool: {e}"),
        };
        // The layout `Geometry` documents: the usable size in whole words, the check word
        // right after it under a guard, the stride a multiple of the alignment, and the
        // first block after a 64-byte header, on a line of its own.
        let bsize = round_up(size.max(8), 8);
        assert_eq!(pool.block_size(), bsize, "block size of {size}/{align}");
        let align = align.max(8);
        let end = if guard == GuardLevel::Off {
            bsize
        } else {
            bsize + 8
        };
        let stride = round_up(end, align);
        let first_offset = align.max(64);
        let span = (CHUNK_SIZE - first_offset) / stride * stride;
        Self {
            pool,
            guard,
            size: bsize,
            stride,
            first_offset,
            span,
            max,
            owned: Vec::new(),
            stuck: Vec::new(),
            free: BTreeSet::new(),
            writable: BTreeSet::new(),
            damaged: BTreeMap::new(),
            uncertain: BTreeSet::new(),
            withdrawn: BTreeSet::new(),
            corruptions: 0,
        }
    }

    fn guarded(&self) -> bool {
        self.guard != GuardLevel::Off
    }

    fn is_block_start(&self, addr: usize) -> bool {
        let offset = (addr & (CHUNK_SIZE - 1)).wrapping_sub(self.first_offset);
        offset < self.span && offset.is_multiple_of(self.stride)
    }

    /// Every address the model knows of this pool.
    fn known(&self) -> Vec<usize> {
        let mut v = self.owned.clone();
        v.extend(&self.stuck);
        v.extend(&self.free);
        v.extend(&self.withdrawn);
        v
    }

    fn name(&self) -> &str {
        self.pool.name()
    }

    fn stamp(&self, addr: usize) {
        let s = stamp_of(addr);
        // SAFETY: `addr` is a block the run owns, at least `size` (a multiple of 8, >= 8)
        // bytes, 8-aligned.
        unsafe {
            ((addr + self.size - 8) as *mut u64).write(!s);
            (addr as *mut u64).write(s);
        }
    }

    fn check_stamp(&self, addr: usize) {
        let s = stamp_of(addr);
        // SAFETY: as in `stamp`.
        let (first, last) = unsafe {
            (
                (addr as *const u64).read(),
                ((addr + self.size - 8) as *const u64).read(),
            )
        };
        // A one-word block holds the first stamp only.
        assert!(
            first == s && (self.size == 8 || last == !s),
            "{}: block {addr:#x} lost its stamp while the run owned it",
            self.name()
        );
    }

    /// What an allocation returned.
    fn allocated(
        &mut self,
        result: Result<usize, PoolError>,
        everyone: &BTreeSet<usize>,
        on_main: bool,
    ) {
        let name = self.name().to_owned();
        match result {
            Ok(addr) => {
                assert!(
                    !everyone.contains(&addr)
                        && !self.owned.contains(&addr)
                        && !self.stuck.contains(&addr),
                    "{name}: {addr:#x} handed out while the run owns it"
                );
                assert!(
                    !self.withdrawn.contains(&addr),
                    "{name}: {addr:#x} handed out after it was withdrawn"
                );
                assert!(
                    !self.damaged.contains_key(&addr),
                    "{name}: {addr:#x} handed out although the run wrote into it while free ({:?} expected)",
                    self.damaged.get(&addr)
                );
                assert!(
                    self.is_block_start(addr),
                    "{name}: {addr:#x} is not a block start of the documented geometry"
                );
                self.uncertain.remove(&addr);
                self.free.remove(&addr);
                self.writable.remove(&addr);
                self.stamp(addr);
                self.owned.push(addr);
            }
            Err(PoolError::Corruption { kind, address, .. }) => {
                self.corruptions += 1;
                let expected = self.damaged.remove(&address);
                let maybe = self.uncertain.remove(&address);
                assert!(
                    expected == Some(kind) || maybe,
                    "{name}: allocate reported {kind:?} at {address:#x}, expected {expected:?}"
                );
                self.free.remove(&address);
                self.writable.remove(&address);
                self.withdrawn.insert(address);
            }
            Err(PoolError::Exhausted { .. }) => {
                // On the run's own thread every free block is in its cache or the depot
                // (helper threads have exited and flushed theirs), so only the cap refuses.
                // A helper thread may be refused while the run's thread caches free blocks
                // (the documented limit), so it only needs those counted too.
                let mut held = self.owned.len() + self.stuck.len() + self.withdrawn.len();
                if !on_main {
                    held += self.free.len() + self.damaged.len() + self.uncertain.len();
                }
                assert!(
                    held >= self.max,
                    "{name}: Exhausted with {held} blocks held or withdrawn (cap {}, on main: {on_main})",
                    self.max
                );
            }
            Err(e) => panic!("{name}: allocate failed: {e}"),
        }
    }

    /// Frees a pointer the contract allows and checks the outcome: `Ok` for an owned
    /// block, else the refusal of one of `kinds`.
    fn free_expecting(&mut self, addr: usize, kinds: &[CorruptionKind]) {
        let owned = self.owned.iter().position(|&a| a == addr);
        if let Some(i) = owned {
            self.check_stamp(addr);
            self.owned.swap_remove(i);
        }
        // SAFETY: callers pass an owned block, a pointer that is no block start of this
        // pool, or (guarded pools only) a block of this pool that nobody holds; no other
        // thread allocates from the pool meanwhile.
        let result = unsafe { self.pool.free(block(addr)) };
        let name = self.name().to_owned();
        match (result, owned) {
            (Ok(()), Some(_)) => {
                self.free.insert(addr);
                self.writable.insert(addr);
            }
            (Ok(()), None) => panic!("{name}: free of {addr:#x} accepted, expected {kinds:?}"),
            (Err(e), Some(_)) => panic!("{name}: free of owned {addr:#x} refused: {e}"),
            (Err(PoolError::Corruption { kind, address, .. }), None) => {
                self.corruptions += 1;
                assert_eq!(address, addr, "{name}: the refusal names the pointer");
                assert!(
                    kinds.contains(&kind),
                    "{name}: free of {addr:#x} refused as {kind:?}, expected {kinds:?}"
                );
            }
            (Err(e), None) => panic!("{name}: free of {addr:#x}: {e}, expected {kinds:?}"),
        }
    }

    /// The kinds a free of the block start `addr`, which the run does not own, may be
    /// refused with; `None` if the contract forbids the free.
    fn refusal_of_block(&self, addr: usize) -> Option<Vec<CorruptionKind>> {
        use CorruptionKind::{CanaryOverwritten, DoubleFree};
        if self.stuck.contains(&addr) {
            return Some(vec![CanaryOverwritten]);
        }
        if !self.guarded() {
            return None;
        }
        if self.writable.contains(&addr) && !self.damaged.contains_key(&addr) {
            return Some(vec![DoubleFree]);
        }
        if self.damaged.get(&addr) == Some(&CanaryOverwritten) {
            return Some(vec![CanaryOverwritten]);
        }
        Some(vec![DoubleFree, CanaryOverwritten])
    }

    fn step(&mut self, op: &Op, others: &[usize], everyone: &BTreeSet<usize>) {
        use CorruptionKind::{CanaryOverwritten, ForeignPointer, InteriorPointer, UseAfterFree};
        match *op {
            Op::Alloc { .. } => {
                let r = self.pool.allocate().map(|p| p.as_ptr() as usize);
                self.allocated(r, everyone, true);
            }
            Op::AllocOnThread { n, .. } => {
                let pool = self.pool.clone();
                let results = std::thread::spawn(move || {
                    (0..n % 8 + 1)
                        .map(|_| pool.allocate().map(|p| p.as_ptr() as usize))
                        .collect::<Vec<_>>()
                })
                .join();
                match results {
                    Ok(results) => {
                        for r in results {
                            self.allocated(r, everyone, false);
                        }
                    }
                    Err(_) => panic!("{}: allocate panicked on another thread", self.name()),
                }
            }
            Op::Free { slot, .. } => {
                if let Some(addr) = pick(self.owned.iter().copied(), slot) {
                    self.free_expecting(addr, &[]);
                }
            }
            Op::FreeOnThread { slot, .. } => {
                if let Some(i) = pick(0..self.owned.len(), slot) {
                    let addr = self.owned.swap_remove(i);
                    self.check_stamp(addr);
                    let pool = self.pool.clone();
                    // SAFETY: the run owns `addr` and gives it up here.
                    let r = std::thread::spawn(move || unsafe { pool.free(block(addr)) }).join();
                    match r {
                        Ok(Ok(())) => {
                            self.free.insert(addr);
                            self.writable.insert(addr);
                        }
                        Ok(Err(e)) => panic!("{}: free of owned {addr:#x}: {e}", self.name()),
                        Err(_) => panic!("{}: free panicked on another thread", self.name()),
                    }
                }
            }
            Op::DoubleFree { slot, .. } => {
                if !self.guarded() {
                    return;
                }
                if let Some(addr) = pick(self.free.iter().copied(), slot) {
                    if let Some(kinds) = self.refusal_of_block(addr) {
                        self.free_expecting(addr, &kinds);
                    }
                }
            }
            Op::Neighbour { slot, k, .. } => {
                let Some(addr) = pick(self.known(), slot) else {
                    return;
                };
                let base = addr & !(CHUNK_SIZE - 1);
                let offset = (addr - base) as isize + isize::from(k) * self.stride as isize;
                if offset <= 0 || offset >= CHUNK_SIZE as isize {
                    return;
                }
                let target = base + offset as usize;
                if !self.is_block_start(target) {
                    self.free_expecting(target, &[InteriorPointer]);
                } else if self.owned.contains(&target) {
                    self.free_expecting(target, &[]);
                } else if let Some(kinds) = self.refusal_of_block(target) {
                    self.free_expecting(target, &kinds);
                }
            }
            Op::Interior { slot, offset, .. } => {
                if let Some(addr) = pick(self.known(), slot) {
                    let target = addr + 1 + usize::from(offset) % (self.stride - 1);
                    self.free_expecting(target, &[InteriorPointer]);
                }
            }
            Op::Header { slot, .. } => {
                if let Some(addr) = pick(self.known(), slot) {
                    let header = addr & !(CHUNK_SIZE - 1);
                    let at = usize::from(slot) * 8 % self.first_offset;
                    self.free_expecting(header + at, &[InteriorPointer]);
                }
            }
            Op::Foreign {
                kind, slot, bits, ..
            } => {
                let boxed = Box::new(0u64);
                let mut local = [0u64; 4];
                let target = match kind % 5 {
                    0 => core::ptr::from_ref::<u64>(&boxed) as usize,
                    1 => local.as_mut_ptr() as usize,
                    2 => match pick(others.iter().copied(), slot) {
                        Some(a) => a,
                        None => return,
                    },
                    // Non-canonical on x86-64 and far above any mapping elsewhere.
                    3 => ((bits | 1 << 62) & !7) as usize,
                    _ => (bits as usize % 65_536).max(8),
                };
                self.free_expecting(target, &[ForeignPointer]);
                drop(boxed);
            }
            Op::Overrun { slot, xor, .. } => {
                if !self.guarded() {
                    return;
                }
                if let Some(i) = pick(0..self.owned.len(), slot) {
                    let addr = self.owned.swap_remove(i);
                    self.check_stamp(addr);
                    let at = (addr + self.size) as *mut u8;
                    // SAFETY: the byte after the block's usable size, in its stride (the
                    // check word), in a mapped chunk; no other thread touches the pool.
                    unsafe { at.write(at.read() ^ xor.max(1)) };
                    self.stuck.push(addr);
                }
            }
            Op::FreeOverrun { slot, .. } => {
                if let Some(addr) = pick(self.stuck.iter().copied(), slot) {
                    self.free_expecting(addr, &[CanaryOverwritten]);
                }
            }
            Op::WriteFree {
                slot, offset, xor, ..
            } => {
                let candidates = self
                    .writable
                    .iter()
                    .copied()
                    .filter(|a| !self.damaged.contains_key(a));
                let Some(addr) = pick(candidates, slot) else {
                    return;
                };
                let (at, kind) = match self.guard {
                    GuardLevel::Off => return,
                    GuardLevel::Full if offset % 2 == 0 => {
                        (usize::from(offset / 2) % self.size, UseAfterFree)
                    }
                    _ => (self.size + usize::from(offset) % 8, CanaryOverwritten),
                };
                let p = (addr + at) as *mut u8;
                // SAFETY: a byte of a free block's payload or check word, in a chunk that
                // no reclaim has released since the block was freed; no other thread
                // touches the pool.
                unsafe { p.write(p.read() ^ xor.max(1)) };
                self.damaged.insert(addr, kind);
            }
            Op::Reclaim { .. } => {
                let _ = self.pool.reclaim();
                self.writable.clear();
                let damaged = core::mem::take(&mut self.damaged);
                self.uncertain.extend(damaged.into_keys());
            }
            Op::Verify { .. } => {
                if let Err(e) = self.pool.verify() {
                    panic!("{}: verify: {e}", self.name());
                }
            }
            Op::Stats { .. } => {
                let s = self.pool.stats();
                let live = (self.owned.len() + self.stuck.len()) as u64;
                assert_eq!(s.live_blocks, live, "{}: live blocks", self.name());
                assert_eq!(
                    s.corruption_events,
                    self.corruptions,
                    "{}: corruption events",
                    self.name()
                );
            }
        }
    }

    /// Frees every owned block; checks the counts.
    fn finish(mut self) {
        while let Some(&addr) = self.owned.last() {
            self.free_expecting(addr, &[]);
        }
        let s = self.pool.stats();
        assert_eq!(
            s.live_blocks,
            self.stuck.len() as u64,
            "{}: live blocks at the end",
            self.name()
        );
        assert_eq!(
            s.corruption_events,
            self.corruptions,
            "{}: corruption events at the end",
            self.name()
        );
    }
}

fn pool_of(op: &Op) -> u8 {
    match *op {
        Op::Alloc { pool }
        | Op::AllocOnThread { pool, .. }
        | Op::Free { pool, .. }
        | Op::FreeOnThread { pool, .. }
        | Op::DoubleFree { pool, .. }
        | Op::Neighbour { pool, .. }
        | Op::Interior { pool, .. }
        | Op::Header { pool, .. }
        | Op::Foreign { pool, .. }
        | Op::Overrun { pool, .. }
        | Op::FreeOverrun { pool, .. }
        | Op::WriteFree { pool, .. }
        | Op::Reclaim { pool }
        | Op::Verify { pool }
        | Op::Stats { pool } => pool,
    }
}

/// Runs the pools and operations `data` describes and checks them against the model.
pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(specs) = <[Spec; 3]>::arbitrary(&mut u) else {
        return;
    };
    let count = u.int_in_range(1..=3usize).unwrap_or(1);
    let trace = std::env::var_os("FUZZ_TRACE").is_some();
    if trace {
        eprintln!("pools: {:?}", &specs[..count]);
    }
    let mut pools: Vec<PoolModel> = specs
        .iter()
        .take(count)
        .enumerate()
        .map(|(i, s)| PoolModel::new(s, i))
        .collect();
    let mut steps = 0;
    while !u.is_empty() && steps < 400 {
        let Ok(op) = Op::arbitrary(&mut u) else { break };
        steps += 1;
        if trace {
            eprintln!("{op:?}");
        }
        let i = usize::from(pool_of(&op)) % pools.len();
        let other = match op {
            Op::Foreign { other, .. } => usize::from(other) % pools.len(),
            _ => i,
        };
        // Blocks of another pool of the run, owned or free: foreign to pool `i`.
        let others: Vec<usize> = if other == i {
            Vec::new()
        } else {
            let o = &pools[other];
            o.owned.iter().chain(&o.free).copied().collect()
        };
        // Blocks every other pool's model owns: no allocation may return one.
        let everyone: BTreeSet<usize> = pools
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != i)
            .flat_map(|(_, p)| p.owned.iter().chain(&p.stuck).copied())
            .collect();
        pools[i].step(&op, &others, &everyone);
    }
    for p in pools {
        p.finish();
    }
}
