//! For test binaries that install a global allocator of their own wrapped around the
//! crate's (`mod wrapped;`, instead of `mod common;`, which installs `TallyAlloc` itself):
//! the allocator they pass calls on to. `TallyAlloc`, but the system allocator where
//! `tests/common/global.rs` uses it too (fault injection, and the sanitizer and valgrind
//! steps' `--cfg tally_system_allocator`).

#[cfg(not(any(tally_fault_injection, tally_system_allocator)))]
pub(crate) type Inner = tally_pool::alloc::TallyAlloc;
#[cfg(any(tally_fault_injection, tally_system_allocator))]
pub(crate) type Inner = std::alloc::System;

#[cfg(not(any(tally_fault_injection, tally_system_allocator)))]
pub(crate) const INNER: Inner = tally_pool::alloc::TallyAlloc::new();
#[cfg(any(tally_fault_injection, tally_system_allocator))]
pub(crate) const INNER: Inner = std::alloc::System;
