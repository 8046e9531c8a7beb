//! The texts a [`PoolError`](crate::PoolError) carries: a pool's name and a configuration
//! error's reason, each a `Copy` reference to text kept for the life of the process.
//!
//! An error that owned a `String` would cost a heap allocation where it is made (an
//! exhausted pool reporting itself would allocate) and drop glue wherever one may be
//! dropped: in a caller that matches on `acquire`'s result, that glue sits on the unwinding
//! path of every call and makes the caller too large for the compiler to inline on its own.
//! A pool interns its name once, when it is built, and copies it into every error it returns.
//!
//! Interning keeps each distinct text once, for the life of the process. At most
//! `INTERNED_BYTES` bytes of distinct text are kept (each text also costs its set entry and
//! its allocation's header); past that, a new text is replaced by `NOT_KEPT`. Only a process
//! that builds pools under a stream of ever new names or invalid configurations, or that
//! interns texts of its own through `PoolName::new`, gets there; a pool's `name()` and its
//! statistics keep its own name whatever its errors carry.

use core::borrow::Borrow;
use core::fmt;
use core::ops::Deref;
use std::collections::BTreeSet;
use std::sync::{Mutex, PoisonError};

/// The most bytes of distinct texts interned; see the module docs.
pub(crate) const INTERNED_BYTES: usize = 1 << 20;

/// What a text becomes once [`INTERNED_BYTES`] of distinct texts are kept.
pub(crate) const NOT_KEPT: &str = "(text not kept: too many distinct pool names and reasons)";

/// Texts kept once each, and their total length.
struct Interner {
    set: BTreeSet<&'static str>,
    bytes: usize,
}

impl Interner {
    const fn new() -> Self {
        Self {
            set: BTreeSet::new(),
            bytes: 0,
        }
    }

    /// The kept copy of `text`: the one kept already, a new one if at most `cap` bytes of
    /// text are then kept, else [`NOT_KEPT`].
    fn intern(&mut self, text: &str, cap: usize) -> &'static str {
        if text.is_empty() {
            return "";
        }
        if let Some(kept) = self.set.get(text) {
            return kept;
        }
        if self.bytes + text.len() > cap {
            return NOT_KEPT;
        }
        let kept: &'static str = Box::leak(Box::<str>::from(text));
        self.set.insert(kept);
        self.bytes += kept.len();
        kept
    }
}

/// The process's interned texts.
static INTERNED: Mutex<Interner> = Mutex::new(Interner::new());

/// The interned copy of `text` (see [`Interner::intern`]), with [`INTERNED_BYTES`] as the cap.
fn intern(text: &str) -> &'static str {
    // Under the lock run only the set's own code and the global allocator (for the copy and
    // the set's nodes); a panic there leaves the set as it was, so a poisoned lock still
    // guards a consistent set.
    let mut interner = INTERNED.lock().unwrap_or_else(PoisonError::into_inner);
    interner.intern(text, INTERNED_BYTES)
}

macro_rules! interned_text {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        ///
        /// It reads as a `str` (`Deref`, [`as_str`](Self::as_str), `Display`), compares with
        /// `str`, `&str` and `String` either way round, and is built from any of them with
        /// `into()`; its `Debug` is the `str`'s.
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(&'static str);

        impl $name {
            /// Interns `text`: each distinct text is kept once, for the life of the process.
            /// At most 1 MiB of distinct text is kept; past that, a new text reads
            /// `(text not kept: too many distinct pool names and reasons)`, in errors only:
            /// a pool's `name()` and statistics keep its own name.
            pub fn new(text: &str) -> Self {
                Self(intern(text))
            }

            /// The text.
            pub const fn as_str(&self) -> &'static str {
                self.0
            }
        }

        impl Deref for $name {
            type Target = str;

            fn deref(&self) -> &str {
                self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                self.0
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(self.0, f)
            }
        }

        impl From<&str> for $name {
            fn from(text: &str) -> Self {
                Self::new(text)
            }
        }

        impl From<&String> for $name {
            fn from(text: &String) -> Self {
                Self::new(text)
            }
        }

        impl From<String> for $name {
            fn from(text: String) -> Self {
                Self::new(&text)
            }
        }

        impl From<$name> for String {
            fn from(text: $name) -> Self {
                text.0.to_owned()
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                self.0 == other.as_str()
            }
        }

        impl PartialEq<$name> for str {
            fn eq(&self, other: &$name) -> bool {
                self == other.0
            }
        }

        impl PartialEq<$name> for &str {
            fn eq(&self, other: &$name) -> bool {
                *self == other.0
            }
        }

        impl PartialEq<$name> for String {
            fn eq(&self, other: &$name) -> bool {
                self.as_str() == other.0
            }
        }
    };
}

interned_text!(
    /// A pool's name, as a [`PoolError`](crate::PoolError) carries it: interned when the
    /// pool is built, so that an error costs no allocation and needs no drop.
    ///
    /// ```
    /// use tally_pool::block::{BlockPool, BlockPoolConfig};
    /// use tally_pool::PoolError;
    ///
    /// let config = BlockPoolConfig::new(std::alloc::Layout::new::<u64>())
    ///     .name("quotes")
    ///     .capacity(1)
    ///     .max_capacity(1);
    /// let pool = BlockPool::new(config)?;
    /// let block = pool.allocate()?;
    /// match pool.allocate() {
    ///     Err(PoolError::Exhausted { pool: name, .. }) => assert_eq!(name, "quotes"),
    ///     other => panic!("expected an exhausted pool, got {other:?}"),
    /// }
    /// // SAFETY: `block` came from `pool` and is freed once.
    /// unsafe { pool.free(block)? };
    /// # Ok::<(), PoolError>(())
    /// ```
    PoolName
);

interned_text!(
    /// Why a configuration cannot make a pool, as
    /// [`PoolError::InvalidConfig`](crate::PoolError::InvalidConfig) carries it: interned
    /// text, so that the error is `Copy`.
    ConfigReason
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_texts_are_interned_once() {
        let a = PoolName::new("text-interned-once");
        let b = PoolName::from(String::from("text-interned-once"));
        assert!(
            core::ptr::eq(a.as_str(), b.as_str()),
            "one copy for equal texts"
        );
        assert_eq!(a, "text-interned-once");
        assert_eq!("text-interned-once", a);
        assert_eq!(String::from("text-interned-once"), a);
        assert_eq!(a.len(), "text-interned-once".len());
        assert_eq!(
            format!("{a}|{a:?}"),
            "text-interned-once|\"text-interned-once\""
        );
        assert_eq!(PoolName::new(""), PoolName::default());
    }

    /// The test's own interner: in a static, so that the texts it keeps stay reachable, as
    /// the process's do (leak checkers would report them otherwise).
    static CAPPED: Mutex<Interner> = Mutex::new(Interner::new());

    #[test]
    fn an_interner_keeps_texts_up_to_its_cap() {
        let mut interner = CAPPED.lock().unwrap();
        let abcd = interner.intern("abcd", 10);
        assert_eq!(interner.intern("efgh", 10), "efgh");
        assert_eq!(
            interner.intern("ijkl", 10),
            NOT_KEPT,
            "12 bytes would pass the cap"
        );
        assert!(
            core::ptr::eq(interner.intern("abcd", 10), abcd),
            "a kept text stays kept"
        );
        assert_eq!(
            interner.intern("ij", 10),
            "ij",
            "a text that fits is kept after a refusal"
        );
        assert_eq!(interner.intern("k", 10), NOT_KEPT);
        assert_eq!(interner.bytes, 10);
    }

    #[test]
    fn texts_past_the_limit_are_not_kept() {
        let long = "x".repeat(INTERNED_BYTES + 1);
        assert_eq!(ConfigReason::new(&long), NOT_KEPT);
        // A text that fits is still kept after a refusal.
        assert_eq!(
            ConfigReason::new("kept after a refusal"),
            "kept after a refusal"
        );
    }
}
