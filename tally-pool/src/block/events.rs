//! Corruption events (feature `tracing`), held back until the thread holds nothing of a pool.
//!
//! A guard finds damage deep inside an allocation or a free: in a thread-cache section (a
//! refill hands out a damaged block), on the overflow list, under the growth lock
//! (`verify`). A `tracing` subscriber runs the user's code for each event, and that code may
//! use a pool. Called from where the damage is found, it would re-enter the section on the
//! same thread (a second mutable borrow of the cache's blocks) or wait for a lock its own
//! thread holds. So `PoolShared::corruption` only queues the event here, on the thread that
//! found it, and each entry point that can find damage calls `emit` once it has left every
//! section and released every lock: the slow paths of `allocate` and `free`, `verify`,
//! `reclaim`, and the registry's calls into a pool.
//!
//! The queue holds `QUEUED` events; further ones before the next emission are counted and
//! reported as one event with their number. A subscriber that itself finds damage (by using a
//! damaged pool) queues new events, which the emission in progress reports after the ones it
//! holds, up to `EMITTED` in all; any left wait for the thread's next emission. Damage found
//! while a thread exits (as it returns its caches) is not traced; the pool's
//! `corruption_events` count and its last finding record it all the same.

#[cfg(all(test, feature = "tracing"))]
use queue::QUEUED;
#[cfg(feature = "tracing")]
pub(super) use queue::{defer, emit};

/// Without feature `tracing` nothing is queued, and nothing is emitted.
#[cfg(not(feature = "tracing"))]
#[inline(always)]
pub(super) fn emit() {}

/// `error`, after emitting the queued events: for an entry point's error path.
#[cold]
#[inline(never)]
pub(super) fn emitted<E>(error: E) -> E {
    emit();
    error
}

#[cfg(feature = "tracing")]
mod queue {
    use core::cell::Cell;

    use crate::error::{CorruptionKind, PoolName};

    /// How many events the queue holds between two emissions.
    pub(super) const QUEUED: usize = 8;

    /// The most events one emission reports (its subscriber may cause more).
    const EMITTED: usize = 4 * QUEUED;

    /// One finding, as its event reports it.
    #[derive(Clone, Copy)]
    struct Event {
        pool: PoolName,
        kind: CorruptionKind,
        address: usize,
    }

    /// The calling thread's queued events: those in `events[head..len]`, oldest first.
    struct Queue {
        events: [Cell<Option<Event>>; QUEUED],
        head: Cell<usize>,
        len: Cell<usize>,
        /// Events that found the queue full.
        dropped: Cell<u64>,
        /// Whether an emission runs on this thread (a subscriber's own findings wait for it).
        emitting: Cell<bool>,
    }

    std::thread_local! {
        static QUEUE: Queue = const {
            Queue {
                events: [const { Cell::new(None) }; QUEUED],
                head: Cell::new(0),
                len: Cell::new(0),
                dropped: Cell::new(0),
                emitting: Cell::new(false),
            }
        };
    }

    /// Queues the event for damage of `kind` at `address` in the pool named `pool`.
    pub(in crate::block) fn defer(pool: PoolName, kind: CorruptionKind, address: usize) {
        let _ = QUEUE.try_with(|q| {
            let n = q.len.get();
            match q.events.get(n) {
                Some(slot) => {
                    slot.set(Some(Event {
                        pool,
                        kind,
                        address,
                    }));
                    q.len.set(n + 1);
                }
                None => q.dropped.set(q.dropped.get().saturating_add(1)),
            }
        });
    }

    /// Emits the calling thread's queued events, oldest first. Call it only where the
    /// thread is in no cache section and holds no lock of a pool.
    ///
    /// Each event leaves the queue before its subscriber runs: one that panics loses only
    /// its own event, and the rest wait for the next emission.
    #[cold]
    #[inline(never)]
    pub(in crate::block) fn emit() {
        let _ = QUEUE.try_with(|q| {
            if q.emitting.replace(true) {
                return;
            }
            let _done = Emitting(&q.emitting);
            for _ in 0..EMITTED {
                let head = q.head.get();
                if let Some(event) = q.events.get(head).filter(|_| head < q.len.get()) {
                    q.head.set(head + 1);
                    if let Some(event) = event.take() {
                        report(event);
                    }
                    continue;
                }
                q.head.set(0);
                q.len.set(0);
                let dropped = q.dropped.replace(0);
                if dropped == 0 {
                    break;
                }
                tracing::error!(
                    target: "tally_pool::block",
                    dropped,
                    "{dropped} more memory corruption events were found before these could \
                     be reported; each pool's statistics count them"
                );
            }
        });
    }

    fn report(event: Event) {
        tracing::error!(
            target: "tally_pool::block",
            pool = &*event.pool,
            kind = ?event.kind,
            address = event.address,
            "memory corruption in pool `{}` at {:#x}: {}",
            event.pool,
            event.address,
            event.kind
        );
    }

    /// Marks the end of an emission, even one a panicking subscriber cuts short.
    struct Emitting<'q>(&'q Cell<bool>);

    impl Drop for Emitting<'_> {
        fn drop(&mut self) {
            self.0.set(false);
        }
    }
}

#[cfg(all(test, feature = "tracing", not(loom)))]
mod tests {
    use core::alloc::Layout;
    use std::panic::{catch_unwind, AssertUnwindSafe};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{mpsc, Arc};
    use std::time::Duration;

    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Metadata, Subscriber};

    use super::super::api::BlockPool;
    use super::super::cache::with_cache;
    use super::super::chunk::header::ChunkHeader;
    use super::super::config::{BlockPoolConfig, GuardLevel};
    use crate::error::{CorruptionKind, PoolError};
    use crate::sync::lock;

    /// What the subscriber does with an event of the block layer.
    #[derive(Clone, Copy, PartialEq)]
    enum Then {
        /// Allocates a block of the pool and frees it.
        UseThePool,
        /// Verifies the pool, once.
        Verify,
        /// Panics, once.
        Panic,
    }

    /// A subscriber that counts the block layer's events and then uses the pool.
    struct UsesPool {
        pool: Arc<BlockPool>,
        then: Then,
        events: Arc<AtomicUsize>,
        /// How many of its own calls into the pool succeeded.
        calls_ok: Arc<AtomicUsize>,
        done_once: AtomicBool,
    }

    impl Subscriber for UsesPool {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &Attributes<'_>) -> Id {
            Id::from_u64(1)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
        fn event(&self, event: &Event<'_>) {
            if event.metadata().target() != "tally_pool::block" {
                return;
            }
            self.events.fetch_add(1, Ordering::SeqCst);
            match self.then {
                Then::UseThePool => {
                    if let Ok(block) = self.pool.allocate() {
                        // SAFETY: allocated just above and freed once.
                        if unsafe { self.pool.free(block) }.is_ok() {
                            self.calls_ok.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
                Then::Verify if !self.done_once.swap(true, Ordering::SeqCst) => {
                    if self.pool.verify().is_err() {
                        self.calls_ok.fetch_add(1, Ordering::SeqCst);
                    }
                }
                Then::Panic if !self.done_once.swap(true, Ordering::SeqCst) => {
                    panic!("a subscriber that panics");
                }
                Then::Verify | Then::Panic => {}
            }
        }
    }

    struct Setup {
        pool: Arc<BlockPool>,
        events: Arc<AtomicUsize>,
        calls_ok: Arc<AtomicUsize>,
        subscriber: UsesPool,
    }

    fn setup(then: Then) -> Setup {
        let pool = Arc::new(
            BlockPool::new(
                BlockPoolConfig::new(Layout::new::<[u64; 4]>())
                    .name("events-unit")
                    .guard(GuardLevel::Full)
                    .prefault(false),
            )
            .unwrap(),
        );
        let (events, calls_ok) = (Arc::default(), Arc::default());
        let subscriber = UsesPool {
            pool: Arc::clone(&pool),
            then,
            events: Arc::clone(&events),
            calls_ok: Arc::clone(&calls_ok),
            done_once: AtomicBool::new(false),
        };
        Setup {
            pool,
            events,
            calls_ok,
            subscriber,
        }
    }

    #[test]
    fn a_subscriber_that_uses_the_pool_runs_after_the_refill_section() {
        let Setup {
            pool,
            events,
            calls_ok,
            subscriber,
        } = setup(Then::UseThePool);
        tracing::subscriber::with_default(subscriber, || {
            let a = pool.allocate().unwrap();
            // SAFETY: allocated just above and freed once.
            unsafe { pool.free(a) }.unwrap();
            // Into the depot: the next allocation refills, inside a section.
            let flushed = with_cache(&pool.shared, |cache, blocks| {
                pool.shared.flush(cache, blocks)
            });
            assert!(matches!(flushed, Some(Ok(()))));
            // SAFETY: a use after free on purpose: the block stays mapped while the pool
            // lives, and no one holds it.
            unsafe { a.as_ptr().write(0) };
            let mut held = Vec::new();
            let refused = loop {
                match pool.allocate() {
                    Ok(block) => held.push(block),
                    Err(e) => break e,
                }
                assert!(held.len() < 4096, "the damaged block was never handed out");
            };
            assert!(
                matches!(
                    refused,
                    PoolError::Corruption {
                        kind: CorruptionKind::UseAfterFree,
                        ..
                    }
                ),
                "{refused}"
            );
            // The event came after the section: the subscriber's own allocation worked.
            assert_eq!(events.load(Ordering::SeqCst), 1);
            assert_eq!(calls_ok.load(Ordering::SeqCst), 1);
            for block in held {
                // SAFETY: each was allocated above and is freed once.
                unsafe { pool.free(block) }.unwrap();
            }
        });
        assert_eq!(pool.stats().live_blocks, 0);
    }

    #[test]
    fn verify_reports_after_letting_go_of_the_growth_lock() {
        let Setup {
            pool,
            events,
            calls_ok,
            subscriber,
        } = setup(Then::Verify);
        // A subscriber that verifies the pool again would wait forever for the growth lock
        // if the event were raised under it: run it on a thread of its own (this one keeps
        // no cache of the pool, whose return at exit would wait for that lock too), where a
        // hang is seen as one.
        let (done, finished) = mpsc::channel();
        let checked = Arc::clone(&pool);
        std::thread::spawn(move || {
            let block = checked.allocate().unwrap();
            let header = lock(&checked.shared.growth).chunks[0]
                .ptr()
                .cast::<ChunkHeader>();
            let flip_magic = || {
                // SAFETY: the chunk's header page stays mapped while the pool lives, and
                // only `verify` reads it meanwhile. This damages its magic as a stray write
                // would, and the second call puts it back.
                unsafe { (*header).magic ^= 1 };
            };
            tracing::subscriber::with_default(subscriber, || {
                flip_magic();
                let found = checked.verify();
                flip_magic();
                let _ = done.send(found);
            });
            // SAFETY: allocated above and freed once.
            unsafe { checked.free(block) }.unwrap();
        });
        let Ok(found) = finished.recv_timeout(Duration::from_secs(60)) else {
            // Its thread holds the growth lock for good, which dropping the pool would wait for.
            std::mem::forget(pool);
            panic!("verify, with a subscriber that verifies again, did not return");
        };
        assert!(matches!(
            found,
            Err(PoolError::Corruption {
                kind: CorruptionKind::ForeignPointer,
                ..
            })
        ));
        // The subscriber's own verify found it too, and its event was emitted in turn.
        assert_eq!(calls_ok.load(Ordering::SeqCst), 1);
        assert_eq!(events.load(Ordering::SeqCst), 2);
        assert!(pool.verify().is_ok());
    }

    #[test]
    fn a_full_queue_counts_the_rest_and_a_panicking_subscriber_leaves_it_working() {
        let Setup {
            pool,
            events,
            subscriber,
            ..
        } = setup(Then::Panic);
        tracing::subscriber::with_default(subscriber, || {
            let name = pool.error_name();
            for i in 0..super::QUEUED + 3 {
                super::defer(name, CorruptionKind::DoubleFree, i);
            }
            // The first event's subscriber panics, and the panic reaches the caller.
            assert!(catch_unwind(AssertUnwindSafe(super::emit)).is_err());
            assert_eq!(events.load(Ordering::SeqCst), 1);
            // The other queued events are still there, and the count of those that found
            // the queue full comes as one event after them.
            super::emit();
            assert_eq!(events.load(Ordering::SeqCst), super::QUEUED + 1);
            super::defer(name, CorruptionKind::DoubleFree, 1);
            super::emit();
            assert_eq!(events.load(Ordering::SeqCst), super::QUEUED + 2);
        });
    }
}
