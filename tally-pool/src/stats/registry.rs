//! The process-wide registry of components: every pool, arena, the allocator and each user
//! component joins it when created, and a report asks each member for a snapshot.
//!
//! Joining and leaving take one short lock; nothing on an acquire or release path does.
//! Members are held weakly ([`register`]) or for ever ([`register_static`]); a member
//! whose source has been dropped is pruned the next time the registry is read. The lock is
//! never held while a source's `snapshot` runs, nor while the last strong reference to a
//! source is dropped (its drop may leave the registry, which takes the lock).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError, Weak};

use serde::{Deserialize, Serialize};

use super::source::{ComponentSnapshot, Source};

/// What kind of component a registry member is.
///
/// ```
/// use tally_pool::stats::Kind;
/// assert_eq!(Kind::Typed.to_string(), "typed");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Kind {
    /// A `Pool<T>`.
    Typed,
    /// A `BlockPool` used directly.
    Block,
    /// The global allocator, `TallyAlloc`.
    Allocator,
    /// A scratch arena.
    Arena,
    /// Memory a user tracks by hand with a [`Component`](super::Component).
    User,
}

impl Kind {
    /// The lowercase name used in reports.
    ///
    /// ```
    /// use tally_pool::stats::Kind;
    /// assert_eq!(Kind::Allocator.as_str(), "allocator");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Typed => "typed",
            Kind::Block => "block",
            Kind::Allocator => "allocator",
            Kind::Arena => "arena",
            Kind::User => "user",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A registry member's id: unique for the life of the process, never reused. Names need
/// not be unique; ids are.
///
/// ```
/// use tally_pool::stats::Component;
/// let a = Component::register("same-name");
/// let b = Component::register("same-name");
/// assert_ne!(a.id(), b.id());
/// assert!(a.id().get() > 0);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ComponentId(u64);

impl ComponentId {
    /// An id from a number, for tests that build reports by hand.
    #[cfg(test)]
    pub(crate) fn from_raw(id: u64) -> Self {
        Self(id)
    }

    /// The id as a number, as it appears in reports.
    ///
    /// ```
    /// use tally_pool::stats::Component;
    /// let c = Component::register("doc-id");
    /// assert_eq!(c.id().get().to_string(), c.id().to_string());
    /// ```
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ComponentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// Membership in the registry: the member leaves when this guard drops (or, earlier, once
/// its source has been dropped).
///
/// ```
/// use std::sync::{Arc, Weak};
/// use tally_pool::stats::{self, Component, Kind, Source};
///
/// let inner = Arc::new(Component::register("inner")); // any Source will do
/// let weak: Weak<dyn Source> = Arc::downgrade(&inner) as _;
/// let registration = stats::register("wrapper", Kind::Arena, weak);
/// assert!(stats::report().components.iter().any(|c| c.id == registration.id()));
/// let id = registration.id();
/// drop(registration);
/// assert!(!stats::report().components.iter().any(|c| c.id == id));
/// ```
#[derive(Debug)]
#[must_use = "dropping a Registration removes the component from the registry at once"]
pub struct Registration {
    id: ComponentId,
}

impl Registration {
    /// The member's id.
    ///
    /// ```
    /// use std::sync::{Arc, Weak};
    /// use tally_pool::stats::{self, Component, Kind, Source};
    /// let inner = Arc::new(Component::register("doc-registration-id"));
    /// let weak: Weak<dyn Source> = Arc::downgrade(&inner) as _;
    /// let registration = stats::register("wrapper", Kind::Block, weak);
    /// assert!(registration.id().get() > 0);
    /// ```
    pub fn id(&self) -> ComponentId {
        self.id
    }

    /// Keeps the member until its source is dropped, without a guard; returns its id.
    ///
    /// ```
    /// use std::sync::{Arc, Weak};
    /// use tally_pool::stats::{self, Component, Kind, Source};
    /// let inner = Arc::new(Component::register("doc-registration-leak"));
    /// let weak: Weak<dyn Source> = Arc::downgrade(&inner) as _;
    /// let id = stats::register("kept", Kind::Block, weak).leak();
    /// assert!(stats::report().components.iter().any(|c| c.id == id));
    /// drop(inner); // the source is gone: pruned by the next read
    /// assert!(!stats::report().components.iter().any(|c| c.id == id));
    /// ```
    pub fn leak(self) -> ComponentId {
        let id = self.id;
        std::mem::forget(self);
        id
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let removed = {
            let mut entries = lock(&REGISTRY);
            entries
                .iter()
                .position(|entry| entry.id == self.id)
                .map(|at| entries.swap_remove(at))
        };
        // The entry (a weak reference) drops here, outside the lock.
        drop(removed);
    }
}

/// Adds a component that the registry holds weakly: it is listed while `source` can be
/// upgraded and until the returned guard drops.
///
/// ```
/// use std::sync::{Arc, Weak};
/// use tally_pool::stats::{self, Component, Kind, Source};
/// let inner = Arc::new(Component::register("doc-register"));
/// let weak: Weak<dyn Source> = Arc::downgrade(&inner) as _;
/// let registration = stats::register("any name \"at all\"\n", Kind::Typed, weak);
/// let report = stats::report();
/// let me = report.components.iter().find(|c| c.id == registration.id()).unwrap();
/// assert_eq!(me.name, "any name \"at all\"\n");
/// ```
pub fn register(name: impl Into<Arc<str>>, kind: Kind, source: Weak<dyn Source>) -> Registration {
    let id = insert(name.into(), kind, SourceRef::Weak(source), false);
    Registration { id }
}

/// Adds a component that lives for the rest of the process (a leaked typed pool); it is
/// never removed.
///
/// ```
/// use tally_pool::stats::{self, Component, Kind};
/// let leaked: &'static Component = Box::leak(Box::new(Component::register("doc-static-inner")));
/// let id = stats::register_static("doc-static", Kind::Typed, leaked);
/// assert!(stats::report().components.iter().any(|c| c.id == id));
/// ```
pub fn register_static(
    name: impl Into<Arc<str>>,
    kind: Kind,
    source: &'static dyn Source,
) -> ComponentId {
    insert(name.into(), kind, SourceRef::Static(source), false)
}

/// [`register`] for a pool of this crate, whose growth ahead of demand does something
/// only while one of the crate's pools is busy ([`crate::block::any_pool_busy`]): growth
/// passes skip it when none is (see [`try_sources`]).
pub(crate) fn register_pool(
    name: impl Into<Arc<str>>,
    kind: Kind,
    source: Weak<dyn Source>,
) -> Registration {
    let id = insert(name.into(), kind, SourceRef::Weak(source), true);
    Registration { id }
}

/// [`register_static`] for a typed pool of this crate; as [`register_pool`].
pub(crate) fn register_static_pool(
    name: impl Into<Arc<str>>,
    source: &'static dyn Source,
) -> ComponentId {
    insert(name.into(), Kind::Typed, SourceRef::Static(source), true)
}

/// [`register`], unless the registry is locked (by another thread, or by this one: a
/// global allocator that uses the crate's scratch arenas is called while the registry
/// allocates): `None` then, at once, and also if the registry cannot grow.
pub(crate) fn try_register(
    name: impl Into<Arc<str>>,
    kind: Kind,
    source: Weak<dyn Source>,
) -> Option<Registration> {
    let name = name.into();
    let mut entries = match REGISTRY.try_lock() {
        Ok(entries) => entries,
        Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
        Err(TryLockError::WouldBlock) => return None,
    };
    entries.try_reserve(1).ok()?;
    let entry = Entry::new(name, kind, SourceRef::Weak(source), false);
    let id = entry.id;
    entries.push(entry);
    Some(Registration { id })
}

/// The registry's members. A plain `Vec`: registrations are rare and a report reads all.
static REGISTRY: Mutex<Vec<Entry>> = Mutex::new(Vec::new());

/// The next id to hand out; ids start at 1.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// How the registry holds a member's source.
enum SourceRef {
    Weak(Weak<dyn Source>),
    Static(&'static dyn Source),
}

/// One member.
struct Entry {
    id: ComponentId,
    name: Arc<str>,
    kind: Kind,
    source: SourceRef,
    /// `exhausted` as of the previous report, for "refused since the last report".
    last_exhausted: u64,
    /// The most live objects any snapshot the statistics took of this member showed.
    peak_live: u64,
    /// A pool of this crate (see [`register_pool`]).
    pool: bool,
}

impl Entry {
    /// A new member, with the next id and nothing seen yet.
    fn new(name: Arc<str>, kind: Kind, source: SourceRef, pool: bool) -> Self {
        let id = ComponentId(NEXT_ID.fetch_add(1, Ordering::Relaxed));
        Entry {
            id,
            name,
            kind,
            source,
            last_exhausted: 0,
            peak_live: 0,
            pool,
        }
    }
}

fn insert(name: Arc<str>, kind: Kind, source: SourceRef, pool: bool) -> ComponentId {
    let entry = Entry::new(name, kind, source, pool);
    let id = entry.id;
    lock(&REGISTRY).push(entry);
    id
}

/// Locks `mutex`, ignoring poisoning: the statistics' critical sections leave their data
/// consistent before anything in them can panic.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// A source kept alive for the time of one report or sample.
pub(crate) enum Held {
    Strong(Arc<dyn Source>),
    Static(&'static dyn Source),
}

impl Held {
    pub(crate) fn source(&self) -> &dyn Source {
        match self {
            Held::Strong(arc) => arc.as_ref(),
            Held::Static(source) => *source,
        }
    }
}

/// A live member, as read by [`members`].
pub(crate) struct Member {
    pub(crate) id: ComponentId,
    pub(crate) name: Arc<str>,
    pub(crate) kind: Kind,
    pub(crate) source: Held,
}

/// Drops a caught panic's payload. A payload whose drop panics gives another payload, which
/// is dropped in turn, up to four deep; one that goes on past that is forgotten (leaked)
/// rather than allowed to unwind.
pub(crate) fn drop_payload(payload: Box<dyn std::any::Any + Send>) {
    use std::panic::{catch_unwind, AssertUnwindSafe};
    let mut next = payload;
    for _ in 0..4 {
        match catch_unwind(AssertUnwindSafe(move || drop(next))) {
            Ok(()) => return,
            Err(again) => next = again,
        }
    }
    core::mem::forget(next);
}

/// Ends a round over `members`: keeps what `keep` takes of each, then drops their
/// sources one at a time, each in its own catch, and resumes the first panic, if any. A
/// source may be its component's last handle, whose drop runs the component's `Drop`: a
/// second panicking drop while the first unwinds (as dropping them all in one `Vec`
/// would) would abort the process. The caller holds no statistics lock (see [`members`]).
pub(crate) fn release<R>(
    members: Vec<Member>,
    mut keep: impl FnMut(ComponentId, Arc<str>, Kind) -> R,
) -> Vec<R> {
    use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
    let mut sources = Vec::with_capacity(members.len());
    let kept = members
        .into_iter()
        .map(|member| {
            sources.push(member.source);
            keep(member.id, member.name, member.kind)
        })
        .collect();
    let mut first = None;
    for held in sources {
        if let Err(payload) = catch_unwind(AssertUnwindSafe(move || drop(held))) {
            if first.is_none() {
                first = Some(payload);
            } else {
                drop_payload(payload);
            }
        }
    }
    if let Some(payload) = first {
        resume_unwind(payload);
    }
    kept
}

/// Every live member, in registration order; prunes members whose source is gone.
///
/// The caller must drop the result with no statistics lock held: dropping the last
/// strong reference to a source may unregister it.
pub(crate) fn members() -> Vec<Member> {
    let mut members = Vec::new();
    fill(
        &mut members,
        |m, n| {
            m.reserve_exact(n);
            true
        },
        |_| true,
        Member::new,
    );
    members
}

/// [`members`], or `None` if the allocator refuses the vector's memory: the pressure
/// monitor and the sampler, which read this when memory may be short, then skip a round
/// where an infallible allocation would abort the process.
pub(crate) fn try_members() -> Option<Vec<Member>> {
    let mut members = Vec::new();
    fill(
        &mut members,
        |m, n| m.try_reserve_exact(n).is_ok(),
        |_| true,
        Member::new,
    )
    .then_some(members)
}

/// [`try_members`] without names and kinds, and without the crate's own pools if
/// `skip_pools`: the sources alone, for the pressure monitor's growth passes, which run
/// many times a second and need nothing else. Cloning a name writes its reference count,
/// and reaching a pool's idle time reads several of its lines, all otherwise cold.
pub(crate) fn try_sources(skip_pools: bool) -> Option<Vec<Held>> {
    let mut sources = Vec::new();
    let reserve = |s: &mut Vec<Held>, n| s.try_reserve_exact(n).is_ok();
    let keep = |entry: &Entry| !(skip_pools && entry.pool);
    fill(&mut sources, reserve, keep, |_, held| held).then_some(sources)
}

impl Member {
    fn new(entry: &Entry, source: Held) -> Self {
        Member {
            id: entry.id,
            name: Arc::clone(&entry.name),
            kind: entry.kind,
            source,
        }
    }
}

/// Prunes the registry and fills `out` with what `make` builds of each live member that
/// `keep` keeps, after `reserve` makes room for all members; false, with nothing added, if
/// `reserve` could not.
fn fill<T>(
    out: &mut Vec<T>,
    reserve: impl FnOnce(&mut Vec<T>, usize) -> bool,
    keep: impl Fn(&Entry) -> bool,
    make: impl Fn(&Entry, Held) -> T,
) -> bool {
    let mut entries = lock(&REGISTRY);
    entries.retain(|entry| match &entry.source {
        SourceRef::Weak(weak) => weak.strong_count() > 0,
        SourceRef::Static(_) => true,
    });
    if !reserve(out, entries.len()) {
        return false;
    }
    for entry in entries.iter().filter(|entry| keep(entry)) {
        let source = match &entry.source {
            SourceRef::Weak(weak) => match weak.upgrade() {
                Some(arc) => Held::Strong(arc),
                None => continue,
            },
            SourceRef::Static(source) => Held::Static(*source),
        };
        out.push(make(entry, source));
    }
    true
}

/// Sorts the members by id, in place, for [`entry_mut`]. Registrations append in about id
/// order and a removal moves the last member into the gap, so the list is sorted or
/// nearly: the sort costs about one pass, and a lookup of every member of a report costs
/// `n log n`, not `n²` (with 20,000 members, the difference is seconds under the lock that
/// registering and dropping pools wait for).
fn by_id(entries: &mut [Entry]) {
    entries.sort_unstable_by_key(|entry| entry.id);
}

/// The member `id` of `entries`, which [`by_id`] sorted.
fn entry_mut(entries: &mut [Entry], id: ComponentId) -> Option<&mut Entry> {
    let at = entries.binary_search_by_key(&id, |entry| entry.id).ok()?;
    entries.get_mut(at)
}

/// For each `(id, exhausted)`, the refusals since the previous call for that id (all of
/// them the first time), and remembers `exhausted` for the next. Unknown ids give their
/// count unchanged.
///
/// With `advance` false the baseline stays where it is (the metrics export reads it
/// without taking it from the next [`report`](super::report)).
pub(crate) fn exhausted_since_last(current: &[(ComponentId, u64)], advance: bool) -> Vec<u64> {
    let mut entries = lock(&REGISTRY);
    by_id(&mut entries);
    current
        .iter()
        .map(|&(id, exhausted)| match entry_mut(&mut entries, id) {
            Some(entry) => {
                let since = exhausted.saturating_sub(entry.last_exhausted);
                if advance {
                    entry.last_exhausted = exhausted;
                }
                since
            }
            None => exhausted,
        })
        .collect()
}

/// Fills in each snapshot's `peak_live_objects`: the highest of its own figure, its
/// `live_objects` and every earlier figure seen for that id (by a report or a sample),
/// which the registry remembers for the next call. `snapshots` pairs with `ids`; an id
/// no longer registered keeps the snapshot's own figures.
pub(crate) fn fill_peaks(ids: &[ComponentId], snapshots: &mut [ComponentSnapshot]) {
    let mut entries = lock(&REGISTRY);
    by_id(&mut entries);
    for (id, snapshot) in ids.iter().zip(snapshots.iter_mut()) {
        let mut peak = snapshot.peak_live_objects.max(snapshot.live_objects);
        if let Some(entry) = entry_mut(&mut entries, *id) {
            peak = peak.max(entry.peak_live);
            entry.peak_live = peak;
        }
        snapshot.peak_live_objects = peak;
    }
}

#[cfg(test)]
#[path = "registry_tests.rs"]
mod tests;
