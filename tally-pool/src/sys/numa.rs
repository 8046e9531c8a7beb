//! NUMA memory policy and thread placement: the system calls behind `crate::numa`.
//!
//! These calls change *where* memory and threads live, never what memory holds: a policy
//! set with `mbind` only steers the page allocator at the next fault, and an affinity mask
//! only steers the scheduler. That is why they are safe functions even though they take
//! addresses: the kernel validates the range and no byte of it is read or written.

use core::ptr::NonNull;

#[cfg(all(target_os = "linux", not(miri)))]
use super::fault::refused;
#[cfg(all(target_os = "linux", not(miri)))]
use super::mem::errno;

/// `mbind` mode: allocate the range's pages from the mask's node while it has free pages,
/// from other nodes after.
///
/// From `<linux/mempolicy.h>` (`enum { MPOL_DEFAULT, MPOL_PREFERRED, MPOL_BIND, ... }`);
/// the `libc` crate does not define the NUMA policy constants.
#[cfg(all(target_os = "linux", not(miri)))]
const MPOL_PREFERRED: libc::c_ulong = 1;

/// `mbind` mode: allocate the range's pages only from the nodes in the mask.
#[cfg(all(target_os = "linux", not(miri)))]
const MPOL_BIND: libc::c_ulong = 2;

/// `get_mempolicy` flag: return a node id rather than a policy.
#[cfg(all(target_os = "linux", not(miri)))]
const MPOL_F_NODE: libc::c_ulong = 1 << 0;

/// `get_mempolicy` flag: look at the page at `addr` rather than the thread's policy.
#[cfg(all(target_os = "linux", not(miri)))]
const MPOL_F_ADDR: libc::c_ulong = 1 << 1;

/// Bits in one word of a kernel node or CPU mask.
#[cfg(all(target_os = "linux", not(miri)))]
const MASK_WORD_BITS: usize = libc::c_ulong::BITS as usize;

/// Words in a mask the kernel accepts for any node or CPU number below 1024, the size
/// glibc's `cpu_set_t` uses; larger numbers get larger masks.
#[cfg(all(target_os = "linux", not(miri)))]
const MIN_MASK_WORDS: usize = 1024 / MASK_WORD_BITS;

/// A NUMA or affinity call that the OS refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SysFailed {
    /// The call, for messages (`"mbind"`, `"sched_setaffinity"`, ...).
    pub(crate) call: &'static str,
    /// `errno` of the failed call.
    pub(crate) errno: i32,
}

/// A kernel bitmask (`unsigned long` words, bit `i` of word `i / bits`) with `bits` set.
#[cfg(all(target_os = "linux", not(miri)))]
fn mask_of(bits: impl IntoIterator<Item = usize>) -> Vec<libc::c_ulong> {
    let mut mask = vec![0; MIN_MASK_WORDS];
    for bit in bits {
        let word = bit / MASK_WORD_BITS;
        if word >= mask.len() {
            mask.resize(word + 1, 0);
        }
        if let Some(w) = mask.get_mut(word) {
            *w |= 1 << (bit % MASK_WORD_BITS);
        }
    }
    mask
}

/// A mask with only `node`'s bit, on the stack; `None` for a node of 1024 or more.
#[cfg(all(target_os = "linux", not(miri)))]
fn stack_mask(node: u32) -> Option<[libc::c_ulong; MIN_MASK_WORDS]> {
    let node = node as usize;
    let mut mask: [libc::c_ulong; MIN_MASK_WORDS] = [0; MIN_MASK_WORDS];
    *mask.get_mut(node / MASK_WORD_BITS)? = 1 << (node % MASK_WORD_BITS);
    Some(mask)
}

/// `mbind(addr, len, mode, mask)` with no flags.
#[cfg(all(target_os = "linux", not(miri)))]
fn mbind(
    addr: NonNull<u8>,
    len: usize,
    mode: libc::c_ulong,
    mask: &[libc::c_ulong],
) -> Result<(), SysFailed> {
    // The kernel reads `maxnode - 1` bits (a historical off-by-one every caller follows).
    let maxnode = mask.len() * MASK_WORD_BITS + 1;
    let rc = if refused!(Mbind) {
        -1
    } else {
        // `mbind(2)` reads `maxnode - 1` bits from `mask`, which holds that many, and
        // otherwise changes only the policy of the pages in the range: their contents and
        // validity are untouched, and an unmapped range is refused with EFAULT/ENOMEM.
        // SAFETY: as above; every argument is passed as a full word, as `syscall` expects.
        unsafe {
            libc::syscall(
                libc::SYS_mbind,
                addr.as_ptr() as libc::c_ulong,
                len as libc::c_ulong,
                mode,
                mask.as_ptr(),
                maxnode as libc::c_ulong,
                0 as libc::c_ulong,
            )
        }
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(SysFailed {
            call: "mbind",
            errno: errno(),
        })
    }
}

/// Sets the memory policy of `addr..addr + len` to "only from `node`" (`MPOL_BIND`): a
/// fault the node cannot serve fails (the OOM killer, not a null pointer), so this is for
/// pools that ask for it.
///
/// Pages already faulted in stay where they are (no `MPOL_MF_MOVE`): call this before the
/// range is first touched. `addr` must be page-aligned; the kernel rounds `len` up. For a
/// node of 1024 or more the mask is allocated.
#[cfg(all(target_os = "linux", not(miri)))]
pub(crate) fn bind_to_node(addr: NonNull<u8>, len: usize, node: u32) -> Result<(), SysFailed> {
    match stack_mask(node) {
        Some(mask) => mbind(addr, len, MPOL_BIND, &mask),
        None => mbind(addr, len, MPOL_BIND, &mask_of([node as usize])),
    }
}

/// Sets the memory policy of `addr..addr + len` to "from `node` while it has free pages"
/// (`MPOL_PREFERRED`): a full node spills to others rather than failing the fault. The
/// global allocator's policy.
///
/// As [`bind_to_node`] otherwise, but it never allocates: a node of 1024 or more is
/// refused (`EINVAL`).
#[cfg(all(target_os = "linux", not(miri)))]
pub(crate) fn prefer_node(addr: NonNull<u8>, len: usize, node: u32) -> Result<(), SysFailed> {
    let mask = stack_mask(node).ok_or(SysFailed {
        call: "mbind",
        errno: libc::EINVAL,
    })?;
    mbind(addr, len, MPOL_PREFERRED, &mask)
}

/// Not Linux (or under miri): there is no `mbind`.
#[cfg(not(all(target_os = "linux", not(miri))))]
pub(crate) fn prefer_node(_addr: NonNull<u8>, _len: usize, _node: u32) -> Result<(), SysFailed> {
    Err(SysFailed {
        call: "mbind",
        errno: libc::ENOSYS,
    })
}

/// The `mbind` mode of the page at `addr` (`get_mempolicy(MPOL_F_ADDR)`).
#[cfg(all(test, target_os = "linux", not(miri)))]
pub(crate) fn policy_of(addr: NonNull<u8>) -> Result<libc::c_ulong, SysFailed> {
    page_mempolicy(addr, MPOL_F_ADDR).map(|mode| mode as libc::c_ulong)
}

/// `MPOL_PREFERRED`, for tests.
#[cfg(all(test, target_os = "linux", not(miri)))]
pub(crate) const PREFERRED: libc::c_ulong = MPOL_PREFERRED;

/// Not Linux (or under miri): there is no `mbind`.
#[cfg(not(all(target_os = "linux", not(miri))))]
pub(crate) fn bind_to_node(_addr: NonNull<u8>, _len: usize, _node: u32) -> Result<(), SysFailed> {
    Err(SysFailed {
        call: "mbind",
        errno: libc::ENOSYS,
    })
}

/// The node that the `MPOL_PREFERRED` or `MPOL_BIND` policy of the page at `addr` names
/// (its lowest, for a bind to several), read with `get_mempolicy(MPOL_F_ADDR)` into a mask
/// on the stack: no allocation, and the page is not faulted in. `None` for another policy
/// (none was set, or the kernel refused it) or if the kernel refuses the call.
#[cfg(all(target_os = "linux", not(miri)))]
pub(crate) fn policy_node(addr: NonNull<u8>) -> Option<u32> {
    let mut mode: libc::c_int = -1;
    let mut mask: [libc::c_ulong; MIN_MASK_WORDS] = [0; MIN_MASK_WORDS];
    let (mode_out, mask_out): (*mut libc::c_int, *mut libc::c_ulong) =
        (&mut mode, mask.as_mut_ptr());
    // SAFETY: `get_mempolicy(2)` writes one `int` through `mode_out` (to `mode`) and
    // `maxnode` bits, here exactly `MIN_MASK_WORDS` words, through `mask_out` (to `mask`,
    // that long); it only reads the policy of the mapping at `addr` (EFAULT if unmapped).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_get_mempolicy,
            mode_out,
            mask_out,
            (MIN_MASK_WORDS * MASK_WORD_BITS) as libc::c_ulong,
            addr.as_ptr() as libc::c_ulong,
            MPOL_F_ADDR,
        )
    };
    // The mode, without the flags `mbind` may have set with it (`MPOL_F_STATIC_NODES` and
    // the like, from bit 13 up).
    let mode = libc::c_ulong::try_from(mode).ok()? & 0xff;
    if rc != 0 || (mode != MPOL_PREFERRED && mode != MPOL_BIND) {
        return None;
    }
    let (word, bits) = mask.iter().enumerate().find(|(_, w)| **w != 0)?;
    u32::try_from(word * MASK_WORD_BITS + bits.trailing_zeros() as usize).ok()
}

/// Not Linux (or under miri): there is no `get_mempolicy`.
#[cfg(not(all(target_os = "linux", not(miri))))]
pub(crate) fn policy_node(_addr: NonNull<u8>) -> Option<u32> {
    None
}

/// The node that holds the page at `addr`
/// (`get_mempolicy(MPOL_F_NODE | MPOL_F_ADDR)`).
///
/// The kernel faults the page in to answer: an untouched anonymous page is read-faulted
/// to the shared zero page, whose node says nothing about the policy. Write to the page
/// first.
#[cfg(all(target_os = "linux", not(miri)))]
pub(crate) fn node_of_page(addr: NonNull<u8>) -> Result<u32, SysFailed> {
    let node = page_mempolicy(addr, MPOL_F_NODE | MPOL_F_ADDR)?;
    u32::try_from(node).map_err(|_| SysFailed {
        call: "get_mempolicy",
        errno: libc::EINVAL,
    })
}

/// `get_mempolicy(2)` of the page at `addr` with `flags` (which include `MPOL_F_ADDR`): the
/// one `int` it reports (the page's node with `MPOL_F_NODE`, else its policy's mode).
#[cfg(all(target_os = "linux", not(miri)))]
fn page_mempolicy(addr: NonNull<u8>, flags: libc::c_ulong) -> Result<libc::c_int, SysFailed> {
    let mut value: libc::c_int = -1;
    let out: *mut libc::c_int = &mut value;
    // SAFETY: `get_mempolicy(2)` writes one `int` through `out`, which points to `value`;
    // with a null mask and `maxnode == 0` it writes nothing else, and it only reads the
    // page table entry for `addr` (an unmapped address is refused with EFAULT).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_get_mempolicy,
            out,
            core::ptr::null_mut::<libc::c_ulong>(),
            0 as libc::c_ulong,
            addr.as_ptr() as libc::c_ulong,
            flags,
        )
    };
    if rc != 0 {
        return Err(SysFailed {
            call: "get_mempolicy",
            errno: errno(),
        });
    }
    Ok(value)
}

/// Not Linux (or under miri): there is no `get_mempolicy`.
#[cfg(not(all(target_os = "linux", not(miri))))]
pub(crate) fn node_of_page(_addr: NonNull<u8>) -> Result<u32, SysFailed> {
    Err(SysFailed {
        call: "get_mempolicy",
        errno: libc::ENOSYS,
    })
}

/// The CPU the calling thread runs on right now (`sched_getcpu`, a vDSO call on Linux),
/// or `None` where the OS cannot tell.
#[cfg(all(target_os = "linux", not(miri)))]
pub(crate) fn current_cpu() -> Option<usize> {
    // SAFETY: `sched_getcpu(3)` takes no arguments and touches no memory of ours.
    let cpu = unsafe { libc::sched_getcpu() };
    usize::try_from(cpu).ok()
}

/// Not Linux (or under miri): the CPU is unknown.
#[cfg(not(all(target_os = "linux", not(miri))))]
pub(crate) fn current_cpu() -> Option<usize> {
    None
}

/// The NUMA node of the CPU the calling thread runs on right now (`getcpu(2)`), or `None`
/// where the OS cannot tell. Allocates nothing.
#[cfg(all(target_os = "linux", not(miri)))]
pub(crate) fn current_node() -> Option<u32> {
    let mut cpu: libc::c_uint = 0;
    let mut node: libc::c_uint = 0;
    let (cpu_out, node_out): (*mut libc::c_uint, *mut libc::c_uint) = (&mut cpu, &mut node);
    // SAFETY: `getcpu(2)` writes one `unsigned int` through each of the first two pointers,
    // which point at live locals of that type, and ignores the third (null) argument.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_getcpu,
            cpu_out,
            node_out,
            core::ptr::null_mut::<libc::c_void>(),
        )
    };
    (rc == 0).then_some(node)
}

/// Not Linux (or under miri): the node is unknown.
#[cfg(not(all(target_os = "linux", not(miri))))]
pub(crate) fn current_node() -> Option<u32> {
    None
}

/// Restricts the calling thread to `cpus` (`sched_setaffinity` on thread 0 = self).
#[cfg(all(target_os = "linux", not(miri)))]
pub(crate) fn set_thread_affinity(cpus: &[usize]) -> Result<(), SysFailed> {
    let mask = mask_of(cpus.iter().copied());
    let bytes = core::mem::size_of_val(mask.as_slice());
    // SAFETY: `sched_setaffinity(2)` reads `bytes` bytes from the mask, which is exactly
    // the size of `mask`; glibc forwards size and pointer to the kernel unchanged, so a
    // buffer shorter or longer than `cpu_set_t` is fine. Pid 0 is the calling thread.
    let rc = unsafe { libc::sched_setaffinity(0, bytes, mask.as_ptr().cast::<libc::cpu_set_t>()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(SysFailed {
            call: "sched_setaffinity",
            errno: errno(),
        })
    }
}

/// Not Linux (or under miri): threads cannot be pinned.
#[cfg(not(all(target_os = "linux", not(miri))))]
pub(crate) fn set_thread_affinity(_cpus: &[usize]) -> Result<(), SysFailed> {
    Err(SysFailed {
        call: "sched_setaffinity",
        errno: libc::ENOSYS,
    })
}

/// The CPUs the calling thread may run on (`sched_getaffinity`), sorted.
#[cfg(all(target_os = "linux", not(miri)))]
pub(crate) fn thread_affinity() -> Result<Vec<usize>, SysFailed> {
    let mut words = MIN_MASK_WORDS;
    loop {
        let mut mask: Vec<libc::c_ulong> = vec![0; words];
        let bytes = core::mem::size_of_val(mask.as_slice());
        // SAFETY: `sched_getaffinity(2)` writes at most `bytes` bytes into the mask, which
        // is exactly its size; pid 0 is the calling thread.
        let rc = unsafe {
            libc::sched_getaffinity(0, bytes, mask.as_mut_ptr().cast::<libc::cpu_set_t>())
        };
        if rc == 0 {
            let cpus = mask
                .iter()
                .enumerate()
                .flat_map(|(w, &bits)| {
                    (0..MASK_WORD_BITS)
                        .filter(move |b| bits & (1 << b) != 0)
                        .map(move |b| w * MASK_WORD_BITS + b)
                })
                .collect();
            return Ok(cpus);
        }
        let e = errno();
        // EINVAL: the kernel has more CPUs than the mask holds; try a larger one.
        if e != libc::EINVAL || words >= 1 << 16 {
            return Err(SysFailed {
                call: "sched_getaffinity",
                errno: e,
            });
        }
        words *= 2;
    }
}

/// Not Linux (or under miri): the affinity is unknown.
#[cfg(not(all(target_os = "linux", not(miri))))]
pub(crate) fn thread_affinity() -> Result<Vec<usize>, SysFailed> {
    Err(SysFailed {
        call: "sched_getaffinity",
        errno: libc::ENOSYS,
    })
}
