//! What `#[derive(Pooled)]` gives a type at run time: its options honoured, its handles
//! and raw handles working.
//!
//! A derived type's pool is a global `static`, and the tests of this file run in
//! parallel: each test has types of its own.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::mem::size_of;

use tally_pool::{Handle, PoolError, Pooled, RawHandle, Recycle};

use common::errors::expect_exhausted;

#[test]
fn acquire_gives_the_default_value() {
    #[derive(Pooled, Debug, PartialEq)]
    struct Quote {
        bid: i64,
        ask: i64,
    }
    impl Default for Quote {
        fn default() -> Self {
            Self { bid: 99, ask: 101 }
        }
    }

    let mut q = Quote::acquire().unwrap();
    assert_eq!(*q, Quote { bid: 99, ask: 101 });
    q.bid = 100;
    assert_eq!(q.bid, 100);
    assert_eq!(Quote::pool().stats().live_blocks, 1);
    drop(q);
    assert_eq!(Quote::pool().stats().live_blocks, 0);
}

#[test]
fn acquire_with_moves_the_value_in() {
    #[derive(Pooled, Debug, PartialEq)]
    struct Fill {
        id: u64,
        venue: String,
    }

    let f = Fill::acquire_with(Fill {
        id: 7,
        venue: "XLON".into(),
    })
    .unwrap();
    assert_eq!(
        *f,
        Fill {
            id: 7,
            venue: "XLON".into()
        }
    );
}

#[test]
fn name_defaults_to_the_type_name() {
    #[derive(Pooled, Default, Debug)]
    #[pooled(max_capacity = 1)]
    struct LoneTicket {
        _n: u8,
    }

    assert_eq!(LoneTicket::pool().name(), "LoneTicket");
    let _held = LoneTicket::acquire().unwrap();
    let refused = LoneTicket::acquire();
    expect_exhausted(&refused, 1, "a second LoneTicket");
    let err = refused.unwrap_err();
    assert!(err.to_string().contains("`LoneTicket`"), "{err}");
}

#[test]
fn name_option_names_the_pool() {
    #[derive(Pooled, Default, Debug)]
    #[pooled(name = "order-book", max_capacity = 1)]
    struct Book {
        _depth: u32,
    }

    assert_eq!(Book::pool().name(), "order-book");
    let _held = Book::acquire().unwrap();
    let err = Book::acquire().unwrap_err();
    assert!(err.to_string().contains("`order-book`"), "{err}");
}

#[test]
fn max_capacity_caps_live_values() {
    #[derive(Pooled, Default, Debug)]
    #[pooled(capacity = 2, max_capacity = 4)]
    struct Slot {
        n: u32,
    }

    assert_eq!(Slot::pool().stats().max_capacity, 4);
    let mut live: Vec<Handle<Slot>> = (0..4).map(|_| Slot::acquire().unwrap()).collect();
    expect_exhausted(&Slot::acquire(), 4, "a fifth Slot");
    // The value comes back with the error.
    let err = Slot::acquire_with(Slot { n: 5 }).unwrap_err();
    assert!(matches!(err.error, PoolError::Exhausted { .. }));
    assert_eq!(err.value.n, 5);

    live.pop();
    live.push(Slot::acquire().unwrap());
    assert_eq!(Slot::pool().stats().live_blocks, 4);
    drop(live);
    assert_eq!(Slot::pool().stats().live_blocks, 0);
}

#[test]
fn capacity_is_mapped_up_front() {
    #[derive(Pooled, Default, Debug)]
    #[pooled(capacity = 3, max_capacity = 8)]
    struct Eager {
        _n: u64,
    }
    #[derive(Pooled, Default, Debug)]
    #[pooled(capacity = 0, max_capacity = 8)]
    struct Lazy {
        _n: u64,
    }

    assert!(Eager::pool().stats().chunks >= 1);
    assert_eq!(Lazy::pool().stats().chunks, 0);
    let _v = Lazy::acquire().unwrap();
    assert!(Lazy::pool().stats().chunks >= 1);
}

#[test]
fn guard_canary_builds_and_works() {
    #[derive(Pooled, Default, Debug)]
    #[pooled(guard = "canary", capacity = 4, max_capacity = 64)]
    struct Guarded {
        bytes: [u8; 24],
    }

    for round in 0..3u8 {
        let mut all: Vec<_> = (0..16).map(|_| Guarded::acquire().unwrap()).collect();
        for g in &mut all {
            g.bytes = [round; 24];
        }
        drop(all);
    }
    let stats = Guarded::pool().stats();
    assert_eq!(stats.live_blocks, 0);
    assert_eq!(stats.corruption_events, 0);
}

#[test]
fn recycle_keeps_the_values_allocation() {
    #[derive(Pooled, Default, Debug)]
    #[pooled(recycle, capacity = 1, max_capacity = 1)]
    struct Batch {
        fills: Vec<u64>,
        recycled: u32,
    }
    impl Recycle for Batch {
        fn recycle(&mut self) {
            self.fills.clear();
            self.recycled += 1;
        }
    }

    let mut b = Batch::acquire().unwrap();
    b.fills.extend(0..1000);
    let before = b.fills.as_ptr();
    drop(b);
    // With one block, the next acquire gets the same, recycled value.
    let b = Batch::acquire().unwrap();
    assert!(b.fills.is_empty());
    assert!(b.fills.capacity() >= 1000);
    assert_eq!(b.fills.as_ptr(), before);
    assert_eq!(b.recycled, 1);
}

#[test]
fn handles_dropped_on_another_thread_return_to_the_pool() {
    #[derive(Pooled, Default, Debug)]
    #[pooled(capacity = 64, max_capacity = 1024)]
    struct Tick {
        seq: u64,
    }

    let handles: Vec<Handle<Tick>> = (0..100)
        .map(|i| Tick::acquire_with(Tick { seq: i }).unwrap())
        .collect();
    assert_eq!(Tick::pool().stats().live_blocks, 100);
    let sum = std::thread::spawn(move || {
        let sum: u64 = handles.iter().map(|h| h.seq).sum();
        drop(handles);
        sum
    })
    .join()
    .unwrap();
    assert_eq!(sum, (0..100).sum::<u64>());
    assert_eq!(Tick::pool().stats().live_blocks, 0);
    // The blocks are usable again from here.
    let again: Vec<_> = (0..100).map(|_| Tick::acquire().unwrap()).collect();
    assert!(again.iter().all(|t| t.seq == 0));
}

#[test]
fn raw_handle_round_trips_through_a_u64() {
    #[derive(Pooled, Default, Debug)]
    struct Order {
        qty: u32,
    }

    let mut o = Order::acquire().unwrap();
    o.qty = 100;
    let raw: RawHandle<Order> = Handle::into_raw(o);
    assert_eq!(Order::pool().leaked_raw(), 1);
    assert_eq!(
        Order::pool().stats().live_blocks,
        1,
        "a lent value stays live"
    );

    let bits: u64 = raw.into();
    let back = Order::redeem(RawHandle::from(bits)).unwrap();
    assert_eq!(back.qty, 100);
    assert_eq!(Order::pool().leaked_raw(), 0);

    // A token redeems once.
    let err = Order::redeem(raw).unwrap_err();
    assert!(matches!(err, PoolError::StaleHandle { .. }), "{err:?}");
    drop(back);
    assert!(matches!(
        Order::redeem(raw),
        Err(PoolError::StaleHandle { .. })
    ));
    assert_eq!(Order::pool().stats().live_blocks, 0);
}

#[test]
fn forged_raw_handles_are_refused() {
    #[derive(Pooled, Default, Debug)]
    struct Lender {
        qty: u32,
    }
    #[derive(Pooled, Default, Debug)]
    struct NeverLent {
        _qty: u32,
    }

    let raw = Handle::into_raw(Lender::acquire_with(Lender { qty: 3 }).unwrap());
    let bits = raw.to_bits();
    let refused = |e: &PoolError| {
        matches!(
            e,
            PoolError::WrongPool { .. } | PoolError::InvalidHandle { .. }
        )
    };

    // Damaged tokens: each single flipped bit either fails the checks or names a block
    // that is not out under that generation.
    for bit in 0..64 {
        let err = Lender::redeem(RawHandle::from(bits ^ (1 << bit))).unwrap_err();
        assert!(
            refused(&err) || matches!(err, PoolError::StaleHandle { .. }),
            "bit {bit}: {err:?}"
        );
    }
    // The top bits are the checksum: changing them alone is always caught.
    let err = Lender::redeem(RawHandle::from(bits ^ (1 << 63))).unwrap_err();
    assert!(refused(&err), "{err:?}");

    // Made-up numbers and another pool's token, in a pool that never lent anything.
    for forged in [0, u64::MAX, 0x1234_5678_9abc_def0, bits] {
        let err = NeverLent::redeem(RawHandle::from(forged)).unwrap_err();
        assert!(refused(&err), "{forged:#x}: {err:?}");
    }

    // The real token still redeems after all that.
    assert_eq!(Lender::redeem(raw).unwrap().qty, 3);
}

#[test]
fn handles_are_one_pointer() {
    #[derive(Pooled, Default, Debug)]
    struct Order {
        _id: u64,
        _price: i64,
        _qty: u32,
    }

    assert_eq!(size_of::<Handle<Order>>(), 8);
    assert_eq!(size_of::<Option<Handle<Order>>>(), 8);
    assert_eq!(size_of::<RawHandle<Order>>(), 8);
}

#[test]
fn enums_and_tuple_structs_derive_too() {
    #[derive(Pooled, Default, Debug, PartialEq)]
    enum Side {
        #[default]
        Bid,
        Ask,
    }
    #[derive(Pooled, Default, Debug)]
    struct Pair(u32, u32);

    assert_eq!(*Side::acquire().unwrap(), Side::Bid);
    assert_eq!(*Side::acquire_with(Side::Ask).unwrap(), Side::Ask);
    let p = Pair::acquire_with(Pair(1, 2)).unwrap();
    assert_eq!((p.0, p.1), (1, 2));
}
