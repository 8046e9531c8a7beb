//! Scratch arenas: a per-thread [`bumpalo`] arena for data that lives for one pass (the
//! vectors and strings an order batch needs while it is processed), reset in one step when
//! the pass ends.
//!
//! [`scratch`] lends the calling thread's [`Bump`] to a closure. Everything allocated in it
//! is freed at once when the closure returns (no destructor runs for values allocated with
//! [`Bump::alloc`]; bumpalo's collections drop their elements as usual), and the arena keeps
//! its memory for the next call, up to the [retain limit](set_retain_limit). After the first
//! few batches have grown the arena to fit, a batch costs no call to any allocator.
//!
//! ```
//! use std::fmt::Write;
//! use tally_pool::arena;
//! use tally_pool::arena::bumpalo::collections::{String, Vec};
//!
//! let fills = [(100_i64, 10_000_i64), (-50, 10_002), (25, 9_999)];
//! let (shares, line_len) = arena::scratch(|bump| {
//!     // The batch's temporary data: freed together when the closure returns.
//!     let mut sizes = Vec::new_in(bump);
//!     sizes.extend(fills.iter().map(|(qty, _)| qty.abs()));
//!     let mut line = String::new_in(bump);
//!     for (qty, price) in &fills {
//!         write!(line, "{qty}@{price} ").unwrap();
//!     }
//!     // Only owned values leave: the borrow checker refuses anything that borrows `bump`.
//!     (sizes.iter().sum::<i64>(), line.len())
//! });
//! assert_eq!(shares, 175);
//! assert_eq!(line_len, "100@10000 -50@10002 25@9999 ".len());
//! ```
//!
//! # Scratch arena, pool or global allocator
//!
//! | use | for | because |
//! |---|---|---|
//! | [`scratch`] | values that die together at the end of one pass on one thread: a batch's temporary vectors, formatted strings, parse trees | one pointer bump per allocation, nothing freed one by one, no allocator call once the arena fits the batch |
//! | a [`Pool`](crate::Pool) | objects of one type with lives of their own: orders, quotes, handed between threads, released one at a time | node-local blocks freed individually on any thread, counted per type, with tokens and guards |
//! | the global allocator (`Box`, `Vec`, `String`) | values of unpredictable size and life that outlive a pass, and code you do not control | no lifetime to thread through; frees one value at a time |
//!
//! A scratch arena is the wrong tool for anything that must outlive the closure (it cannot:
//! see below), for data shared with other threads ([`Bump`] is not `Sync`), and for one large
//! buffer reused across passes (keep the buffer itself).
//!
//! # Lifetimes
//!
//! The arena is borrowed for the closure only: a value that borrows it cannot be returned,
//! stored in a longer-lived place or sent to another thread, so the reset at the end never
//! leaves a dangling reference. This does not compile:
//!
//! ```compile_fail
//! let escaped: &mut u64 = tally_pool::arena::scratch(|bump| bump.alloc(7_u64));
//! ```
//!
//! A nested [`scratch`] gets an arena of its own, never the outer one: the outer call's
//! values stay valid while the inner call runs and after it returns.
//!
//! # Retention and trimming
//!
//! When a closure returns, its arena is reset: bumpalo keeps its last (largest) chunk and
//! frees the others. The thread keeps the arena for its next call as long as the chunk bytes
//! of all its idle arenas (bumpalo's chunk footers included) stay within the process-wide
//! [retain limit](set_retain_limit) ([`DEFAULT_RETAIN_LIMIT`], 1 MiB, unless set), and at
//! most [`MAX_IDLE_ARENAS`] arenas (the outermost call and nested levels). An arena beyond
//! the limit is freed; the smallest idle arenas go first. [`retained_bytes`] tells what the
//! calling thread keeps.
//!
//! [`trim`] asks every thread to free what it keeps. A thread frees its idle arenas when it
//! calls `trim` itself and otherwise at its next [`scratch`] call, before lending an arena; an
//! arena lent at the time of the request is freed when its closure returns. No thread ever
//! touches another thread's arena. The pressure monitor calls [`trim`] in each of its
//! reclamation rounds at High or Critical. An idle thread that never calls [`scratch`] again keeps its arenas
//! until it exits.
//!
//! # Statistics
//!
//! Each thread that has called [`scratch`] appears in [`stats::report`](crate::stats::report)
//! as a component of kind [`Kind::Arena`](crate::stats::Kind::Arena), named
//! `scratch (thread <tid>)` (the kernel thread id), until the thread exits:
//!
//! | field | meaning |
//! |---|---|
//! | `live_bytes` | chunk bytes of the arenas lent to the closures running now, as of the start of each call |
//! | `free_bytes` | chunk bytes kept by the thread's idle arenas (what [`trim`] frees) |
//! | `released_bytes` | chunk bytes freed so far by the retain limit and by trims |
//! | `live_objects` | [`scratch`] calls running now (nesting depth) |
//! | `acquires`, `releases` | [`scratch`] calls begun and ended |
//! | `growths` | calls whose arena ended with more chunk bytes than it was lent with |
//!
//! Arena memory comes from the global allocator, so it is not among the bytes the library
//! maps itself ([`pressure::mapped_bytes`](crate::pressure::mapped_bytes)), which the
//! pressure monitor's own budget counts.
//!
//! # Thread exit
//!
//! A thread's arenas are freed, and its component leaves the registry, when the thread
//! exits. A [`scratch`] call made while the thread's storage is being torn down (from a
//! thread-local destructor) gets a temporary arena, freed when the closure returns.

mod local;
mod source;

pub use bumpalo;
pub use bumpalo::Bump;

use std::sync::atomic::{AtomicUsize, Ordering};

/// The retain limit until [`set_retain_limit`] changes it: 1 MiB of chunk bytes per thread.
///
/// ```
/// assert_eq!(tally_pool::arena::DEFAULT_RETAIN_LIMIT, 1 << 20);
/// ```
pub const DEFAULT_RETAIN_LIMIT: usize = 1 << 20;

/// The most idle arenas a thread keeps between calls: one for the outermost [`scratch`]
/// and three for nested levels. Deeper nesting works; its arenas are freed on return.
///
/// ```
/// assert_eq!(tally_pool::arena::MAX_IDLE_ARENAS, 4);
/// ```
pub const MAX_IDLE_ARENAS: usize = 4;

/// The process-wide retain limit, in chunk bytes per thread.
static RETAIN_LIMIT: AtomicUsize = AtomicUsize::new(DEFAULT_RETAIN_LIMIT);

/// Lends the calling thread's scratch arena to `f` and resets it when `f` returns (or
/// unwinds), keeping its memory for the next call up to the [retain limit](set_retain_limit).
///
/// A nested call gets another arena. The closure's result cannot borrow the arena: return
/// owned values (copy what you need out of the arena). Values allocated with
/// [`Bump::alloc`] are not dropped; use bumpalo's collections, or values without a `Drop`.
/// While the thread is being torn down, `f` gets a temporary arena instead.
///
/// ```
/// use tally_pool::arena::{self, bumpalo::collections::Vec};
///
/// let total = arena::scratch(|bump| {
///     let mut prices = Vec::with_capacity_in(64, bump);
///     prices.extend((0..64_i64).map(|i| 10_000 + i));
///     // A nested call has an arena of its own: `prices` stays valid.
///     let spread = arena::scratch(|inner| {
///         let sorted = inner.alloc_slice_copy(&prices);
///         sorted.sort_unstable();
///         sorted.last().copied().unwrap_or(0) - sorted.first().copied().unwrap_or(0)
///     });
///     prices.iter().sum::<i64>() + spread
/// });
/// assert_eq!(total, 64 * 10_000 + (0..64).sum::<i64>() + 63);
/// ```
pub fn scratch<R, F>(f: F) -> R
where
    F: FnOnce(&Bump) -> R,
{
    let lent = local::Lent::take();
    f(lent.bump())
}

/// Sets the retain limit: the most chunk bytes a thread's idle arenas keep between
/// [`scratch`] calls, for every thread from its next return on. `0` keeps nothing: every
/// call then starts from an empty arena.
///
/// ```
/// use tally_pool::arena;
///
/// let before = arena::retain_limit();
/// arena::set_retain_limit(256 << 10);
/// assert_eq!(arena::retain_limit(), 256 << 10);
/// arena::set_retain_limit(before);
/// ```
pub fn set_retain_limit(bytes: usize) {
    RETAIN_LIMIT.store(bytes, Ordering::Relaxed);
}

/// The retain limit in chunk bytes per thread ([`DEFAULT_RETAIN_LIMIT`] unless
/// [`set_retain_limit`] changed it).
///
/// ```
/// assert!(tally_pool::arena::retain_limit() > 0);
/// ```
pub fn retain_limit() -> usize {
    RETAIN_LIMIT.load(Ordering::Relaxed)
}

/// Asks every thread to free the memory its idle scratch arenas keep. The calling thread
/// frees its own now; every other thread at its next [`scratch`] call, and an arena in use
/// when its closure returns. Never touches another thread's arena. The pressure monitor
/// calls it at High and Critical.
///
/// ```
/// use tally_pool::arena;
///
/// arena::scratch(|bump| {
///     bump.alloc_slice_fill_copy(4096, 0_u8);
/// });
/// arena::trim();
/// assert_eq!(arena::retained_bytes(), 0);
/// ```
pub fn trim() {
    local::request_trim();
}

/// The chunk bytes the calling thread's idle scratch arenas keep for its next [`scratch`]
/// call (bumpalo's chunk footers included); at most the [retain limit](retain_limit) as of
/// the last return. The arenas of calls running now are not counted.
///
/// ```
/// use tally_pool::arena;
///
/// arena::scratch(|bump| {
///     bump.alloc_slice_fill_copy(1000, 0_u64);
/// });
/// let kept = arena::retained_bytes();
/// assert!(kept >= 8000 && kept <= arena::retain_limit());
/// ```
pub fn retained_bytes() -> usize {
    local::retained_bytes()
}

#[cfg(test)]
mod tests;
