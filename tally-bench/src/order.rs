//! The object every workload acquires, and how it is written and read back.

use core::fmt;

/// An order-book entry of eight 8-byte words: the 64-byte payload of every workload.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Order(pub [u64; 8]);

/// Bytes of one [`Order`].
pub const ORDER_BYTES: usize = 64;
const _: () = assert!(size_of::<Order>() == ORDER_BYTES);

/// How iteration `i` stamps an order: word `k` holds `i + k * STEP`. The block and typed
/// benches write `i` to every word ([`Same`]), the peers bench `i + k` ([`Spread`]).
pub trait Stamp: Sized + 'static {
    /// The step between two words.
    const STEP: u64;
}

/// Every word holds `i`.
#[derive(Debug, Clone, Copy)]
pub struct Same;

/// Word `k` holds `i + k`.
#[derive(Debug, Clone, Copy)]
pub struct Spread;

impl Stamp for Same {
    const STEP: u64 = 0;
}

impl Stamp for Spread {
    const STEP: u64 = 1;
}

impl Order {
    /// The order written for iteration `i`.
    #[inline(always)]
    pub fn new<S: Stamp>(i: u64) -> Self {
        let w = |k: u64| i.wrapping_add(k * S::STEP);
        Self([w(0), w(1), w(2), w(3), w(4), w(5), w(6), w(7)])
    }

    /// Reads the order back with volatile word loads (so neither the write after acquire
    /// nor this read can be optimised away, and, unlike 16-byte loads over 8-byte stores or
    /// a `bcmp` call, they cost every contender about what a plain read does) and aborts
    /// unless it holds `Order::new::<S>(i)`. `who` names the contender on a mismatch.
    #[inline(always)]
    pub fn check<S: Stamp>(&self, i: u64, who: fn() -> &'static str) {
        let words = self.0.as_ptr();
        let mut diff = 0;
        for k in 0..8u64 {
            // SAFETY: word `k < 8` of the array, which `self` borrows for the whole read.
            diff |= unsafe { words.wrapping_add(k as usize).read_volatile() }
                ^ i.wrapping_add(k * S::STEP);
        }
        if diff != 0 {
            mismatch(self, i, who());
        }
    }
}

#[cold]
#[inline(never)]
fn mismatch(order: &Order, i: u64, who: &str) -> ! {
    crate::fatal!("{who}: object holds {order:?}, expected the stamp of {i} (handed out twice?)")
}

/// Reports a failure that makes the numbers meaningless and stops the process. Aborting
/// rather than panicking: a panic on a helper thread would leave the other thread waiting
/// for it forever.
#[cold]
#[inline(never)]
pub fn fatal(args: fmt::Arguments<'_>) -> ! {
    eprintln!("tally-bench: {args}");
    std::process::abort()
}

/// [`fatal`] with `format!`'s arguments.
#[macro_export]
macro_rules! fatal {
    ($($arg:tt)*) => {
        $crate::order::fatal(format_args!($($arg)*))
    };
}

/// Unwraps a result or stops the process with [`fatal`], naming what failed.
pub trait OrDie<T> {
    /// The value, or a report of `what` failed and why.
    fn or_die(self, what: &str) -> T;
}

impl<T, E: fmt::Debug> OrDie<T> for Result<T, E> {
    fn or_die(self, what: &str) -> T {
        self.unwrap_or_else(|e| fatal!("{what}: {e:?}"))
    }
}
