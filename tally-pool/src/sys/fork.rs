//! `pthread_atfork`: handlers that run around `fork`, for state a child must find
//! consistent (the global allocator's locks).

/// Registers `prepare` to run in the parent just before `fork`, and `parent` and `child`
/// just after it in each process. Returns whether the OS took them. Allocates nothing
/// through the global allocator (glibc keeps its handler list with its own `malloc`).
#[cfg(all(unix, not(miri)))]
pub(crate) fn at_fork(
    prepare: unsafe extern "C" fn(),
    parent: unsafe extern "C" fn(),
    child: unsafe extern "C" fn(),
) -> bool {
    // SAFETY: `pthread_atfork(3)` only records the three function pointers, which are
    // `'static` functions the caller vouches for running in those states.
    let rc = unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
    rc == 0
}

/// Not Unix (or under miri, which cannot fork): nothing to register.
#[cfg(not(all(unix, not(miri))))]
pub(crate) fn at_fork(
    prepare: unsafe extern "C" fn(),
    parent: unsafe extern "C" fn(),
    child: unsafe extern "C" fn(),
) -> bool {
    let _ = (prepare, parent, child);
    false
}
