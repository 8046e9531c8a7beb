//! Unit tests of token packing, the generation table and its loom model (`super` is
//! `typed::token`).

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
            let sealed_in: Vec<u32> = (0..EPOCHS).filter(|&e| sealed(3, t, e).is_some()).collect();
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
