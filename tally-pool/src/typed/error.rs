//! [`AcquireError`]: the error of an acquire that was handed a value, which it gives back.

use core::fmt;

use crate::error::PoolError;

/// The error of an acquire that was handed a value: the value comes back with the error.
pub struct AcquireError<T> {
    /// Why the acquire failed.
    pub error: PoolError,
    /// The value that was to be pooled.
    pub value: T,
}

impl<T> fmt::Debug for AcquireError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AcquireError")
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl<T> fmt::Display for AcquireError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

impl<T> std::error::Error for AcquireError<T> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl<T> From<AcquireError<T>> for PoolError {
    fn from(e: AcquireError<T>) -> Self {
        e.error
    }
}
