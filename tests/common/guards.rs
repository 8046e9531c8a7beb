//! Guard levels, for tests that run under each.

use proptest::prelude::*;
use tally_pool::GuardLevel;

/// Every guard level.
pub(crate) const GUARDS: [GuardLevel; 3] = [GuardLevel::Off, GuardLevel::Canary, GuardLevel::Full];

/// The guard levels that keep a canary after each block and track which blocks are free.
pub(crate) const GUARDED: [GuardLevel; 2] = [GuardLevel::Canary, GuardLevel::Full];

/// Any guard level, for property tests (shrinking towards `Off`).
pub(crate) fn any_guard() -> impl Strategy<Value = GuardLevel> {
    prop_oneof![
        Just(GuardLevel::Off),
        Just(GuardLevel::Canary),
        Just(GuardLevel::Full)
    ]
}
