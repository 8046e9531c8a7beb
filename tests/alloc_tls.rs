//! `TallyAlloc`'s thread caches and thread lifetimes: a cache takes no room from a small
//! thread stack, and a cache first used from a `pthread_key_create` destructor is flushed
//! at thread exit all the same. In a binary of their own, so that the 4096-byte class is
//! used by nothing else.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use core::alloc::{GlobalAlloc, Layout};

use tally_pool::alloc::TallyAlloc;

#[global_allocator]
static GLOBAL: TallyAlloc = TallyAlloc::new();

/// Uses 80 KiB of the thread's stack.
#[inline(never)]
fn use_stack() -> u8 {
    let mut buf = [0u8; 80 * 1024];
    std::hint::black_box(&mut buf);
    buf[100]
}

#[test]
#[cfg_attr(
    tally_sanitized,
    ignore = "the sanitizers' runtimes take static TLS and stack of their own"
)]
fn a_thread_with_a_128_kib_stack_can_use_80_kib_of_it() {
    let t = std::thread::Builder::new()
        .stack_size(128 * 1024)
        .spawn(use_stack)
        .unwrap();
    assert_eq!(t.join().unwrap(), 0);
}

/// A layout of the 4096-byte class, which nothing else in this binary uses.
const SIZE: usize = 4000;

extern "C" fn key_dtor(_: *mut libc::c_void) {
    let l = Layout::from_size_align(SIZE, 8).unwrap();
    // SAFETY: a layout of non-zero size.
    let p = unsafe { GLOBAL.alloc(l) };
    assert!(!p.is_null());
    // SAFETY: allocated just above with `l`, freed once.
    unsafe { GLOBAL.dealloc(p, l) };
}

extern "C" fn body(key: *mut libc::c_void) -> *mut libc::c_void {
    // SAFETY: `key` is the key created by the test; any non-null value runs its
    // destructor at thread exit.
    unsafe {
        libc::pthread_setspecific(
            key as usize as libc::pthread_key_t,
            std::ptr::dangling::<libc::c_void>(),
        )
    };
    core::ptr::null_mut()
}

#[test]
#[cfg_attr(miri, ignore = "200 raw threads take too long under miri")]
fn blocks_taken_in_a_pthread_key_destructor_are_not_stranded() {
    let mut key: libc::pthread_key_t = 0;
    // SAFETY: `key` is a valid place for the key, `key_dtor` may run on any thread.
    let rc = unsafe { libc::pthread_key_create(&mut key, Some(key_dtor)) };
    assert_eq!(rc, 0);
    for _ in 0..200 {
        // SAFETY: an all-zero `pthread_t` is a valid place for the thread's id.
        let mut t: libc::pthread_t = unsafe { core::mem::zeroed() };
        // SAFETY: default attributes; `body` takes the key as its argument, by value.
        let rc = unsafe {
            libc::pthread_create(
                &mut t,
                core::ptr::null(),
                body,
                key as usize as *mut libc::c_void,
            )
        };
        assert_eq!(rc, 0);
        // SAFETY: a thread created above, joined once.
        assert_eq!(unsafe { libc::pthread_join(t, core::ptr::null_mut()) }, 0);
    }
    let s = GLOBAL.stats();
    let mapped: u64 = s
        .classes
        .iter()
        .filter(|c| c.block_size == 4096)
        .map(|c| c.mapped_bytes)
        .sum();
    assert!(
        mapped <= 1 << 20,
        "blocks stranded in dead threads' caches: {mapped} bytes mapped"
    );
}
