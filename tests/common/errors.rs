//! Checks of the errors pools return.

use core::fmt::Debug;

use tally_pool::PoolError;

/// Panics unless `result` is `PoolError::Exhausted` at a cap of `cap`; `what` says which
/// call it was.
#[track_caller]
pub(crate) fn expect_exhausted<T: Debug>(result: &Result<T, PoolError>, cap: usize, what: &str) {
    match result {
        Err(PoolError::Exhausted { max_capacity, .. }) => {
            assert_eq!(*max_capacity, cap, "{what}: exhausted at another cap");
        }
        other => panic!("{what}: expected Exhausted at the cap of {cap}, got {other:?}"),
    }
}
