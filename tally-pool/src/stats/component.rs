//! User components: memory that an application tracks by hand (an order book's vectors, a
//! cache's maps) so it shows up in the report beside the pools.

use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use super::registry::{self, ComponentId, Kind, Registration};
use super::source::{ComponentSnapshot, Source};

/// Bytes a user tracks by hand, reported as a component of kind `user`.
///
/// [`add`](Self::add) and [`sub`](Self::sub) are each one relaxed atomic instruction: no
/// lock, no allocation, fine on a hot path. A `sub` that would take the count below zero
/// leaves it at zero and counts an accounting error, which the report shows. Clones share
/// the count; the component leaves the registry when the last clone drops.
///
/// Track memory that tally-pool does not already count: bytes held in a tally pool are
/// in that pool's component, and would be counted twice.
///
/// ```
/// use tally_pool::stats::{self, Component};
///
/// let book = Component::register("order-book");
/// book.add(64 * 1024);
/// book.sub(16 * 1024);
/// assert_eq!(book.live_bytes(), 48 * 1024);
///
/// let report = stats::report();
/// let row = report.components.iter().find(|c| c.id == book.id()).unwrap();
/// assert_eq!(row.memory.live_bytes, 48 * 1024);
/// assert_eq!(row.accounting_errors, Some(0));
/// ```
#[derive(Clone)]
pub struct Component {
    counts: Arc<UserCounts>,
    /// Shared by the clones: the last one to drop leaves the registry.
    registration: Arc<Registration>,
}

/// The counters behind a [`Component`].
struct UserCounts {
    name: Arc<str>,
    /// Bytes added minus bytes subtracted. Signed so that `sub` is one `fetch_sub`; a
    /// negative value only lives between an over-large `sub` and its repair in
    /// [`UserCounts::repair`], and readers clamp it to zero.
    live: AtomicI64,
    /// `sub` calls that would have gone below zero.
    errors: AtomicU64,
}

impl UserCounts {
    fn live_bytes(&self) -> u64 {
        u64::try_from(self.live.load(Ordering::Relaxed)).unwrap_or(0)
    }

    /// The cold half of an `add` that went past `i64::MAX` (and wrapped): the count
    /// stays at the most it can hold.
    #[cold]
    #[inline(never)]
    fn saturate(&self) {
        self.live.store(i64::MAX, Ordering::Relaxed);
    }

    /// The cold half of an over-large `sub`: back to zero (unless an `add` already brought
    /// the count back above it), and one more accounting error.
    #[cold]
    #[inline(never)]
    fn repair(&self) {
        self.live.fetch_max(0, Ordering::Relaxed);
        self.errors.fetch_add(1, Ordering::Relaxed);
    }
}

impl Source for UserCounts {
    fn snapshot(&self) -> ComponentSnapshot {
        ComponentSnapshot {
            live_bytes: self.live_bytes(),
            accounting_errors: self.errors.load(Ordering::Relaxed),
            ..ComponentSnapshot::default()
        }
    }
}

/// Bytes as the signed count's unit, saturating (no process holds 2^63 bytes).
fn signed(bytes: usize) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}

impl Component {
    /// A new user component, listed in the registry under `name` (any text; names need
    /// not be unique) until the last clone drops.
    ///
    /// ```
    /// use tally_pool::stats::Component;
    /// let cache = Component::register(String::from("quote-cache"));
    /// assert_eq!(cache.name(), "quote-cache");
    /// assert_eq!(cache.live_bytes(), 0);
    /// ```
    pub fn register(name: impl Into<Arc<str>>) -> Self {
        let name: Arc<str> = name.into();
        let counts = Arc::new(UserCounts {
            name: Arc::clone(&name),
            live: AtomicI64::new(0),
            errors: AtomicU64::new(0),
        });
        let weak: Weak<dyn Source> = Arc::downgrade(&counts) as _;
        let registration = Arc::new(registry::register(name, Kind::User, weak));
        Self {
            counts,
            registration,
        }
    }

    /// Counts `bytes` more in use. One relaxed atomic add; going past `i64::MAX` stays
    /// there (a cold, out-of-line path).
    ///
    /// ```
    /// use tally_pool::stats::Component;
    /// let c = Component::register("doc-add");
    /// c.add(10);
    /// c.clone().add(5); // clones share the count
    /// assert_eq!(c.live_bytes(), 15);
    /// ```
    #[inline]
    pub fn add(&self, bytes: usize) {
        let bytes = signed(bytes);
        let before = self.counts.live.fetch_add(bytes, Ordering::Relaxed);
        if before.checked_add(bytes).is_none() {
            self.counts.saturate();
        }
    }

    /// Counts `bytes` fewer in use. One relaxed atomic subtract; going below zero leaves
    /// zero and counts an accounting error (a cold, out-of-line path).
    ///
    /// ```
    /// use tally_pool::stats::Component;
    /// let c = Component::register("doc-sub");
    /// c.add(10);
    /// c.sub(25);
    /// assert_eq!(c.live_bytes(), 0);
    /// assert_eq!(c.accounting_errors(), 1);
    /// ```
    #[inline]
    pub fn sub(&self, bytes: usize) {
        let bytes = signed(bytes);
        let before = self.counts.live.fetch_sub(bytes, Ordering::Relaxed);
        if before < bytes {
            self.counts.repair();
        }
    }

    /// The bytes counted now (never below zero).
    ///
    /// ```
    /// use tally_pool::stats::Component;
    /// let c = Component::register("doc-live");
    /// c.add(3);
    /// assert_eq!(c.live_bytes(), 3);
    /// ```
    pub fn live_bytes(&self) -> u64 {
        self.counts.live_bytes()
    }

    /// How many `sub` calls would have gone below zero.
    ///
    /// ```
    /// use tally_pool::stats::Component;
    /// let c = Component::register("doc-errors");
    /// c.sub(1);
    /// assert_eq!(c.accounting_errors(), 1);
    /// ```
    pub fn accounting_errors(&self) -> u64 {
        self.counts.errors.load(Ordering::Relaxed)
    }

    /// The component's registry id, as in the report.
    ///
    /// ```
    /// use tally_pool::stats::Component;
    /// let c = Component::register("doc-component-id");
    /// assert_eq!(c.id(), c.clone().id());
    /// ```
    pub fn id(&self) -> ComponentId {
        self.registration.id()
    }

    /// The name given at registration.
    ///
    /// ```
    /// use tally_pool::stats::Component;
    /// assert_eq!(Component::register("risk").name(), "risk");
    /// ```
    pub fn name(&self) -> &str {
        &self.counts.name
    }
}

impl Source for Component {
    fn snapshot(&self) -> ComponentSnapshot {
        self.counts.snapshot()
    }
}

impl fmt::Debug for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Component")
            .field("id", &self.id())
            .field("name", &self.name())
            .field("live_bytes", &self.live_bytes())
            .field("accounting_errors", &self.accounting_errors())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::registry::members;

    fn listed(id: ComponentId) -> bool {
        members().iter().any(|m| m.id == id)
    }

    #[test]
    fn add_and_sub() {
        let c = Component::register("user-add-sub");
        c.add(100);
        c.add(50);
        c.sub(30);
        assert_eq!(c.live_bytes(), 120);
        assert_eq!(c.accounting_errors(), 0);
        let snapshot = c.snapshot();
        assert_eq!(snapshot.live_bytes, 120);
        assert_eq!(snapshot.mapped_bytes(), 120);
        assert_eq!(snapshot.accounting_errors, 0);
    }

    #[test]
    fn sub_below_zero_saturates_and_counts() {
        let c = Component::register("user-saturate");
        c.add(10);
        c.sub(11);
        assert_eq!(c.live_bytes(), 0);
        assert_eq!(c.accounting_errors(), 1);
        c.sub(usize::MAX);
        assert_eq!(c.live_bytes(), 0);
        assert_eq!(c.accounting_errors(), 2);
        // After saturating, counting starts again from zero.
        c.add(7);
        assert_eq!(c.live_bytes(), 7);
        assert_eq!(c.snapshot().accounting_errors, 2);
    }

    #[test]
    fn huge_values_saturate() {
        let c = Component::register("user-huge");
        c.add(usize::MAX);
        assert_eq!(c.live_bytes(), i64::MAX as u64);
        c.sub(usize::MAX);
        assert_eq!(c.live_bytes(), 0);
        assert_eq!(c.accounting_errors(), 0);
        // Past the largest count, adds stay there rather than wrap.
        c.add(usize::MAX);
        c.add(1);
        assert_eq!(c.live_bytes(), i64::MAX as u64);
        c.sub(1);
        assert_eq!(c.live_bytes(), i64::MAX as u64 - 1);
        assert_eq!(c.accounting_errors(), 0);
    }

    #[test]
    fn clones_share_and_the_last_unregisters() {
        let c = Component::register("user-clones");
        let id = c.id();
        let d = c.clone();
        d.add(4);
        assert_eq!(c.live_bytes(), 4);
        drop(c);
        assert!(listed(id));
        drop(d);
        assert!(!listed(id));
    }

    #[test]
    fn concurrent_churn_never_goes_negative() {
        let c = Component::register("user-churn");
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        c.add(64);
                        c.sub(64);
                    }
                })
            })
            .collect();
        for _ in 0..1000 {
            assert!(c.snapshot().live_bytes <= 128);
        }
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(c.live_bytes(), 0);
        assert_eq!(c.accounting_errors(), 0);
    }

    #[test]
    fn names_of_any_content() {
        let long = "x".repeat(10_000);
        let c = Component::register(format!("{long}\n\"\\\u{0}é"));
        assert!(c.name().ends_with("\n\"\\\u{0}é"));
        assert!(format!("{c:?}").contains("user") || format!("{c:?}").contains("Component"));
    }
}
