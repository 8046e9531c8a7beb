//! With feature `tracing` (`cargo test --features tracing --test stats_tracing`): each
//! corruption event a pool detects raises one `error` event, with the pool's name and the
//! kind of corruption as fields, wherever it is counted (a refused double free, a refused
//! hand-out of a block written after its release).
#![cfg(feature = "tracing")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use core::alloc::Layout;
use std::sync::{Arc, Mutex};

use tally_pool::block::{BlockPool, BlockPoolConfig, GuardLevel};
use tally_pool::{CorruptionKind, PoolError};
use tracing_core::span::{Attributes, Id, Record};
use tracing_core::{Event, Level, Metadata, Subscriber};

/// Events seen by [`Events`]: level, target and fields.
type Seen = Arc<Mutex<Vec<(Level, String, String)>>>;

/// A subscriber that keeps the level, target and fields of every event.
struct Events(Seen);

impl Subscriber for Events {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        struct Text(String);
        impl tracing_core::field::Visit for Text {
            fn record_debug(&mut self, field: &tracing_core::Field, value: &dyn std::fmt::Debug) {
                self.0.push_str(&format!("{}={:?} ", field.name(), value));
            }
            fn record_str(&mut self, field: &tracing_core::Field, value: &str) {
                self.0.push_str(&format!("{}={} ", field.name(), value));
            }
        }
        let mut text = Text(String::new());
        event.record(&mut text);
        let meta = event.metadata();
        self.0
            .lock()
            .unwrap()
            .push((*meta.level(), meta.target().to_owned(), text.0));
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

fn errors_for(seen: &Seen, pool: &str) -> Vec<String> {
    seen.lock()
        .unwrap()
        .iter()
        .filter(|(level, _, text)| {
            *level == Level::ERROR && text.contains(&format!("pool={pool} "))
        })
        .map(|(_, target, text)| format!("{target}: {text}"))
        .collect()
}

#[test]
fn each_corruption_raises_one_error_event_with_pool_and_kind() {
    let seen: Seen = Arc::default();
    let _default = tracing_core::dispatcher::set_default(&tracing_core::Dispatch::new(Events(
        Arc::clone(&seen),
    )));
    let name = "tracing \"guarded\"";
    let pool = BlockPool::new(
        BlockPoolConfig::new(Layout::new::<[u64; 8]>())
            .name(name)
            .guard(GuardLevel::Full),
    )
    .unwrap();
    assert!(errors_for(&seen, name).is_empty());

    // A double free, refused.
    let b = pool.allocate().unwrap();
    // SAFETY: allocated just above, freed once.
    unsafe { pool.free(b) }.unwrap();
    // SAFETY: under a guard the contract allows freeing a free block, which is refused.
    let again = unsafe { pool.free(b) };
    assert!(matches!(
        again,
        Err(PoolError::Corruption {
            kind: CorruptionKind::DoubleFree,
            ..
        })
    ));
    let events = errors_for(&seen, name);
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(events[0].starts_with("tally_pool::block: "), "{events:?}");
    assert!(events[0].contains("kind=DoubleFree "), "{events:?}");
    assert!(events[0].contains("double free"), "{events:?}");

    // A write into a free block, found when it is handed out again.
    let b = pool.allocate().unwrap();
    // SAFETY: allocated just above, freed once.
    unsafe { pool.free(b) }.unwrap();
    // SAFETY: a test of the guard: the block is free and still mapped; this write is
    // the use after free that `Full` is there to catch.
    unsafe { b.as_ptr().write_volatile(0x42) };
    let refused = pool.allocate();
    assert!(
        matches!(
            refused,
            Err(PoolError::Corruption {
                kind: CorruptionKind::UseAfterFree,
                ..
            })
        ),
        "{refused:?}"
    );
    let events = errors_for(&seen, name);
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(events[1].contains("kind=UseAfterFree "), "{events:?}");
    assert_eq!(pool.stats().corruption_events, 2);
}
