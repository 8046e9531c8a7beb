//! Where pages really are: `move_pages(2)` with no target nodes, which only reports.
//!
//! Asking moves nothing and reads or writes no byte of the pages: the kernel looks up each
//! address in the calling process's page tables and writes one status word per page into a
//! buffer of ours. That is why this is a safe function for any addresses at all: an address
//! that is not mapped gets `-EFAULT` as its status, not a fault.

#[cfg(all(target_os = "linux", not(miri)))]
use super::mem::errno;
use super::numa::SysFailed;

/// The status of one page, as `move_pages(2)` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PageStatus {
    /// The page is in memory on this node.
    Node(u32),
    /// No page is there: never written (`ENOENT`), or only the shared zero page, or given
    /// back (`EFAULT` for a mapped address).
    NotFaulted,
    /// The kernel could not tell, with this `errno`.
    Unknown(i32),
}

impl PageStatus {
    /// Decodes one status word: a node id, or a negated `errno`.
    fn from_word(word: libc::c_int) -> Self {
        match u32::try_from(word) {
            Ok(node) => Self::Node(node),
            Err(_) => match word.checked_neg() {
                Some(libc::ENOENT | libc::EFAULT) => Self::NotFaulted,
                Some(e) => Self::Unknown(e),
                None => Self::Unknown(libc::EINVAL),
            },
        }
    }
}

/// The status of the page holding each address of `pages`, in order.
///
/// The addresses need not be page-aligned or mapped: the kernel rounds each down to its
/// page, and reports an unmapped one as [`PageStatus::NotFaulted`].
#[cfg(all(target_os = "linux", not(miri)))]
pub(crate) fn page_status(pages: &[usize]) -> Result<Vec<PageStatus>, SysFailed> {
    if pages.is_empty() {
        return Ok(Vec::new());
    }
    let addrs: Vec<*const libc::c_void> = pages.iter().map(|&a| a as *const libc::c_void).collect();
    let mut status: Vec<libc::c_int> = vec![libc::c_int::MIN; pages.len()];
    // `move_pages(2)` on pid 0 (this process) with a null `nodes` array moves nothing: it
    // reads `count` addresses from `addrs` and writes `count` status words into `status`,
    // both exactly `count` long, and never touches the pages themselves (an unmapped address
    // is reported in its status word). Flags 0: only this process's own pages.
    // SAFETY: as above; every argument is passed as a full word, as `syscall` expects.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_pages,
            0 as libc::c_long,
            addrs.len() as libc::c_ulong,
            addrs.as_ptr(),
            core::ptr::null::<libc::c_int>(),
            status.as_mut_ptr(),
            0 as libc::c_long,
        )
    };
    if rc != 0 {
        return Err(SysFailed {
            call: "move_pages",
            errno: errno(),
        });
    }
    Ok(status.into_iter().map(PageStatus::from_word).collect())
}

/// Not Linux (or under miri): there is no `move_pages`.
#[cfg(not(all(target_os = "linux", not(miri))))]
pub(crate) fn page_status(_pages: &[usize]) -> Result<Vec<PageStatus>, SysFailed> {
    Err(SysFailed {
        call: "move_pages",
        errno: libc::ENOSYS,
    })
}

#[cfg(all(test, target_os = "linux", not(miri), not(loom)))]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;

    #[test]
    fn status_words_decode() {
        assert_eq!(PageStatus::from_word(1), PageStatus::Node(1));
        assert_eq!(PageStatus::from_word(-libc::ENOENT), PageStatus::NotFaulted);
        assert_eq!(PageStatus::from_word(-libc::EFAULT), PageStatus::NotFaulted);
        assert_eq!(
            PageStatus::from_word(-libc::EACCES),
            PageStatus::Unknown(libc::EACCES)
        );
        assert_eq!(
            PageStatus::from_word(libc::c_int::MIN),
            PageStatus::Unknown(libc::EINVAL)
        );
    }

    #[test]
    fn a_written_page_has_a_node_and_an_untouched_one_none() {
        let region = crate::sys::map(2 * crate::sys::PAGE).unwrap();
        let base = region.ptr().as_ptr() as usize;
        region.prefault_range(0, crate::sys::PAGE);
        let status = page_status(&[base, base + crate::sys::PAGE]).unwrap();
        assert!(matches!(status[0], PageStatus::Node(_)), "{status:?}");
        assert_eq!(status[1], PageStatus::NotFaulted);
        assert_eq!(page_status(&[]).unwrap(), Vec::new());
    }
}
