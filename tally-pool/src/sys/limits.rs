//! Resource limits and thread identity, for the pressure monitor: `getrlimit` for the
//! address-space and data limits, and the calling thread's kernel id (to find its
//! `/proc/self/task/<tid>` files).

/// A resource limit the pressure monitor reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rlimit {
    /// `RLIMIT_AS`: the size of the address space (compared with `VmSize`).
    AddressSpace,
    /// `RLIMIT_DATA`: the data segment and private writable mappings (compared with
    /// `VmData`).
    Data,
}

/// The soft limit of `which` in bytes; `None` when it is unlimited or cannot be read.
pub(crate) fn soft_limit(which: Rlimit) -> Option<u64> {
    let resource = match which {
        Rlimit::AddressSpace => libc::RLIMIT_AS,
        Rlimit::Data => libc::RLIMIT_DATA,
    };
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `getrlimit` only writes one `rlimit` through the pointer, which points at a
    // live local of that type.
    let rc = unsafe { libc::getrlimit(resource, &mut limit) };
    if rc != 0 || limit.rlim_cur == libc::RLIM_INFINITY {
        return None;
    }
    Some(limit.rlim_cur)
}

/// The kernel's id of the calling thread (`gettid`).
pub(crate) fn thread_id() -> i32 {
    // SAFETY: `gettid` takes no argument and cannot fail.
    unsafe { libc::gettid() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg_attr(miri, ignore = "miri does not implement getrlimit or gettid")]
    fn limits_and_thread_ids_are_read() {
        // Unlimited or a positive number of bytes; never a zero limit in a running test.
        for which in [Rlimit::AddressSpace, Rlimit::Data] {
            assert_ne!(soft_limit(which), Some(0));
        }
        let here = thread_id();
        assert!(here > 0);
        let there = std::thread::spawn(thread_id).join().unwrap();
        assert!(there > 0 && there != here);
    }
}
