//! The calling thread's arenas: the idle ones it keeps between calls, the lending of one to
//! a [`scratch`](super::scratch) call and its return, the retain limit and trim requests.
//!
//! Only the owning thread ever touches its [`Local`]: another thread asks for a trim by
//! bumping [`TRIM_EPOCH`], which the owner compares with the epoch it last saw whenever it
//! lends or takes back an arena.

use std::cell::{Cell, OnceCell, RefCell};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bumpalo::Bump;

use super::source::ArenaCounters;
use super::{retain_limit, MAX_IDLE_ARENAS};
use crate::stats::{self, Kind, Registration};

/// Trim requests so far. [`request_trim`] bumps it; each thread frees its idle arenas when
/// it sees a value other than the one it saw last.
static TRIM_EPOCH: AtomicU64 = AtomicU64::new(0);

std::thread_local! {
    static LOCAL: Local = const { Local::new() };
}

/// One thread's scratch arenas.
///
/// Invariants: only the owning thread reaches it (a thread-local, never shared); `idle` is
/// sorted by footprint, smallest first, and holds at most [`MAX_IDLE_ARENAS`] arenas, each
/// reset (no live allocation); `retained` is the sum of their footprints. No user code runs
/// while `idle` is borrowed, only the global allocator freeing arenas: a call that finds it
/// borrowed all the same (from a global allocator that uses scratch arenas) lends a new
/// arena, or frees the one it takes back: never a panic.
struct Local {
    idle: RefCell<Vec<Idle>>,
    retained: Cell<usize>,
    /// The [`TRIM_EPOCH`] this thread has honoured.
    seen_epoch: Cell<u64>,
    /// The thread's statistics, made by its first call.
    counters: OnceCell<Arc<ArenaCounters>>,
    /// Their membership in the registry (left when the thread exits): joined by the first
    /// call that finds the registry free (see [`Local::counters`]).
    registration: OnceCell<Registration>,
}

/// An arena kept between calls, and its footprint.
struct Idle {
    bump: Bump,
    footprint: usize,
}

/// The chunk bytes an arena holds from the global allocator, its chunk footers included.
fn footprint(bump: &Bump) -> usize {
    bump.allocated_bytes_including_metadata()
}

impl Local {
    const fn new() -> Self {
        Self {
            idle: RefCell::new(Vec::new()),
            retained: Cell::new(0),
            seen_epoch: Cell::new(0),
            counters: OnceCell::new(),
            registration: OnceCell::new(),
        }
    }

    /// The thread's counters, made on the first call and registered with the statistics
    /// by the first call that finds the registry free.
    ///
    /// A call can find the registry locked by its own thread: a global allocator that uses
    /// scratch arenas is called while the registry allocates. Waiting for the lock would
    /// then wait for ever, so registering only tries it, and a later call tries again; the
    /// counters count from the first call all the same.
    fn counters(&self) -> Option<&ArenaCounters> {
        if self.counters.get().is_none() {
            // Set, not `get_or_init`, which panics on re-entry: a call made while this one
            // allocated would have set it first, and this one's counters are dropped.
            let _ = self.counters.set(Arc::new(ArenaCounters::default()));
        }
        let counters = self.counters.get()?;
        if self.registration.get().is_none() {
            self.register(counters);
        }
        Some(counters)
    }

    /// Joins the registry with `counters`, unless it is locked.
    #[cold]
    fn register(&self, counters: &Arc<ArenaCounters>) {
        let weak: std::sync::Weak<dyn stats::Source> = Arc::downgrade(counters) as _;
        if let Some(registration) = stats::try_register(component_name(), Kind::Arena, weak) {
            // A call made while this one registered may have joined first: this
            // registration then leaves again as it drops.
            let _ = self.registration.set(registration);
        }
    }

    /// Frees the idle arenas if a trim was requested since the last look; says whether one
    /// was.
    fn honour_trim(&self) -> bool {
        let epoch = TRIM_EPOCH.load(Ordering::Acquire);
        if epoch == self.seen_epoch.get() {
            return false;
        }
        self.seen_epoch.set(epoch);
        self.free_idle();
        true
    }

    /// Frees every idle arena.
    fn free_idle(&self) {
        let freed = match self.idle.try_borrow_mut() {
            Ok(mut idle) => {
                idle.clear();
                self.retained.replace(0)
            }
            Err(_) => 0,
        };
        if freed > 0 {
            if let Some(counters) = self.counters.get() {
                counters.idle_freed(freed);
            }
        }
    }

    /// Lends the largest idle arena, or a new empty one.
    fn lend(&self) -> Lent {
        let counters = self.counters();
        self.honour_trim();
        let popped = match self.idle.try_borrow_mut() {
            Ok(mut idle) => idle.pop(),
            Err(_) => None,
        };
        let (bump, lent_footprint) = match popped {
            Some(Idle { bump, footprint }) => (bump, footprint),
            None => (Bump::new(), 0),
        };
        let retained = self.retained.get().saturating_sub(lent_footprint);
        self.retained.set(retained);
        if let Some(counters) = counters {
            counters.lent(lent_footprint, retained);
        }
        Lent {
            bump,
            lent_footprint,
            lent_epoch: self.seen_epoch.get(),
            owned: true,
        }
    }

    /// Takes an arena back from a call: resets it, then keeps it if no trim was requested
    /// since it was lent (at `lent_epoch`) and the idle arenas stay within the retain limit
    /// (freeing the smallest first), else frees it.
    fn take_back(&self, mut bump: Bump, lent_footprint: usize, lent_epoch: u64) {
        bump.reset();
        // A limit the closure set must not outlive it.
        bump.set_allocation_limit(None);
        let returned = footprint(&bump);
        // A trim the closure itself requested has already been honoured for the idle
        // arenas, not for this one.
        self.honour_trim();
        let trimmed = self.seen_epoch.get() != lent_epoch;
        let limit = retain_limit();
        let mut freed = 0_usize;
        if trimmed || returned > limit {
            freed = returned;
            drop(bump);
        } else if let Ok(mut idle) = self.idle.try_borrow_mut() {
            let at = idle.partition_point(|kept| kept.footprint <= returned);
            idle.insert(
                at,
                Idle {
                    bump,
                    footprint: returned,
                },
            );
            let mut retained = self.retained.get().saturating_add(returned);
            while (retained > limit || idle.len() > MAX_IDLE_ARENAS) && !idle.is_empty() {
                let smallest = idle.remove(0);
                retained = retained.saturating_sub(smallest.footprint);
                freed = freed.saturating_add(smallest.footprint);
            }
            self.retained.set(retained);
        } else {
            freed = returned;
            drop(bump);
        }
        if let Some(counters) = self.counters.get() {
            counters.taken_back(lent_footprint, returned, self.retained.get(), freed);
        }
    }
}

/// The name of the calling thread's component: its kernel thread id where there is one.
fn component_name() -> String {
    #[cfg(not(miri))]
    {
        format!("scratch (thread {})", crate::sys::limits::thread_id())
    }
    #[cfg(miri)]
    {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        format!("scratch (arena {})", NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// An arena lent to one [`scratch`](super::scratch) call. Dropping it (when the closure
/// returns or unwinds) hands the arena back to its thread, or frees a temporary one.
pub(super) struct Lent {
    bump: Bump,
    /// The arena's footprint when it was lent.
    lent_footprint: usize,
    /// The trim epoch its thread had honoured when it was lent.
    lent_epoch: u64,
    /// `false` for a temporary arena, made when the thread's storage was unavailable.
    owned: bool,
}

impl Lent {
    /// The calling thread's arena, or a temporary one while the thread is torn down.
    pub(super) fn take() -> Self {
        match LOCAL.try_with(Local::lend) {
            Ok(lent) => lent,
            Err(_) => Self {
                bump: Bump::new(),
                lent_footprint: 0,
                lent_epoch: 0,
                owned: false,
            },
        }
    }

    pub(super) fn bump(&self) -> &Bump {
        &self.bump
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        if !self.owned {
            return; // a temporary arena: freed with `self.bump`
        }
        let bump = std::mem::take(&mut self.bump);
        // The storage outlives every call that took an arena from it; if it is gone all the
        // same, the arena is freed here.
        let _ = LOCAL.try_with(|local| local.take_back(bump, self.lent_footprint, self.lent_epoch));
    }
}

/// Asks every thread to free its idle arenas, and frees the calling thread's now.
pub(super) fn request_trim() {
    TRIM_EPOCH.fetch_add(1, Ordering::Release);
    let _ = LOCAL.try_with(Local::honour_trim);
}

/// What the calling thread's idle arenas keep (0 while its storage is torn down).
pub(super) fn retained_bytes() -> usize {
    LOCAL.try_with(|local| local.retained.get()).unwrap_or(0)
}

/// Trim requests made so far in the process, for tests that must tell a trim of their own
/// from one another test made.
#[cfg(test)]
pub(super) fn trim_epoch() -> u64 {
    TRIM_EPOCH.load(Ordering::Acquire)
}

/// The calling thread's statistics component, once a call has registered it.
#[cfg(test)]
pub(super) fn component_id() -> Option<stats::ComponentId> {
    LOCAL
        .try_with(|local| local.registration.get().map(Registration::id))
        .ok()
        .flatten()
}
