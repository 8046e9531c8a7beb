//! Page-level options of a region: transparent huge pages (`MADV_HUGEPAGE`) and locking in
//! memory (`mlock`, `munlock`), and what the system allows of them.
//!
//! Under miri, which has neither call, advice is refused (`ENOSYS`) and locking succeeds
//! without effect, so that pools keep the same paths.

use super::mem::{Region, PAGE};

/// The system's transparent-huge-page mode, from
/// `/sys/kernel/mm/transparent_hugepage/enabled` (the word in brackets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ThpMode {
    /// `always`: every large enough anonymous range may get huge pages.
    Always,
    /// `madvise`: only ranges advised `MADV_HUGEPAGE`.
    Madvise,
    /// `never`: no huge pages, advice or not.
    Never,
    /// The file is missing or unreadable (no THP support in the kernel, or no sysfs).
    Unknown,
}

/// Where the system says which transparent-huge-page mode is in force.
const THP_ENABLED: &str = "/sys/kernel/mm/transparent_hugepage/enabled";

/// The transparent-huge-page mode in force when it was first asked for: read once per
/// process, since growth asks under a pool's growth lock for every pair it maps.
pub(crate) fn thp_mode() -> ThpMode {
    static MODE: std::sync::OnceLock<ThpMode> = std::sync::OnceLock::new();
    *MODE.get_or_init(|| match std::fs::read_to_string(THP_ENABLED) {
        Ok(text) => parse_thp_mode(&text),
        Err(_) => ThpMode::Unknown,
    })
}

/// The bracketed word of the sysfs file's `text` (`always [madvise] never`).
fn parse_thp_mode(text: &str) -> ThpMode {
    let chosen = text
        .split_whitespace()
        .find(|w| w.starts_with('[') && w.ends_with(']'));
    match chosen {
        Some("[always]") => ThpMode::Always,
        Some("[madvise]") => ThpMode::Madvise,
        Some("[never]") => ThpMode::Never,
        _ => ThpMode::Unknown,
    }
}

/// The soft locked-memory limit (`RLIMIT_MEMLOCK`, what `ulimit -l` shows in KiB) in
/// bytes; `None` when it is unlimited or cannot be read.
pub(crate) fn memlock_limit() -> Option<u64> {
    #[cfg(miri)]
    {
        None
    }
    #[cfg(not(miri))]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `getrlimit` only writes one `rlimit` through the pointer, which points
        // at a live local of that type.
        let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) };
        (rc == 0 && limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
    }
}

/// The byte range `from..to` of a region of `len` bytes, widened to whole pages and
/// clamped to the region; `None` when it holds no page.
fn page_range(from: usize, to: usize, len: usize) -> Option<(usize, usize)> {
    let from = from & !(PAGE - 1);
    let to = to.min(len).checked_add(PAGE - 1)? & !(PAGE - 1);
    let to = to.min(len);
    (from < to).then_some((from, to))
}

impl Region {
    /// Advises the OS to back the whole region with transparent huge pages
    /// (`MADV_HUGEPAGE`). Only the 2 MiB-aligned 2 MiB ranges inside the region can get
    /// one; the rest stays in normal pages.
    ///
    /// # Errors
    ///
    /// The `errno` of a refusal: `EINVAL` from a kernel built without transparent huge
    /// pages, `ENOSYS` under miri. The memory then stays in normal pages.
    pub(crate) fn advise_huge_pages(&self) -> Result<(), i32> {
        #[cfg(miri)]
        {
            Err(libc::ENOSYS)
        }
        #[cfg(not(miri))]
        {
            // SAFETY: `ptr..ptr + len` is one live mapping (Region invariant); the advice
            // changes how the kernel backs the pages, never their contents.
            let rc = unsafe {
                libc::madvise(self.ptr().as_ptr().cast(), self.len(), libc::MADV_HUGEPAGE)
            };
            if rc == 0 {
                Ok(())
            } else {
                Err(super::mem::errno())
            }
        }
    }

    /// Locks the pages holding bytes `from..to` (widened to whole pages, clamped to the
    /// region) in memory: the OS faults them in now and never swaps them out, so that
    /// accesses to them take no fault until [`Self::unlock`]. Locking pages already
    /// locked does nothing more.
    ///
    /// # Errors
    ///
    /// The `errno` of a refusal (`ENOMEM` or `EAGAIN` beyond `RLIMIT_MEMLOCK`, `EPERM`
    /// without the right to lock); nothing is locked then.
    pub(crate) fn lock(&self, from: usize, to: usize) -> Result<(), i32> {
        let Some((from, to)) = page_range(from, to, self.len()) else {
            return Ok(());
        };
        #[cfg(miri)]
        {
            let _ = (from, to);
            Ok(())
        }
        #[cfg(not(miri))]
        {
            let start = self.ptr().as_ptr().wrapping_add(from);
            // SAFETY: `from < to <= len`, page-aligned, so the range lies inside this live
            // mapping (Region invariant); `mlock` faults the pages in as a read would and
            // changes no byte.
            let rc = unsafe { libc::mlock(start.cast(), to - from) };
            if rc == 0 {
                Ok(())
            } else {
                let errno = super::mem::errno();
                // A refusal may leave part of the range locked: unlock it all.
                self.unlock(from, to);
                Err(errno)
            }
        }
    }

    /// Unlocks the pages holding bytes `from..to` (widened to whole pages, clamped to the
    /// region), which [`Self::lock`] may have locked; they may be swapped out or given
    /// back again. Unlocking pages that are not locked does nothing.
    pub(crate) fn unlock(&self, from: usize, to: usize) {
        let Some((from, to)) = page_range(from, to, self.len()) else {
            return;
        };
        #[cfg(not(miri))]
        {
            let start = self.ptr().as_ptr().wrapping_add(from);
            // SAFETY: `from < to <= len`, page-aligned, so the range lies inside this live
            // mapping (Region invariant); `munlock` only clears the lock.
            let rc = unsafe { libc::munlock(start.cast(), to - from) };
            // It fails only for a range outside the mapping, which this is not.
            let _ = rc;
        }
        let _ = (from, to);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bracketed_word_is_the_mode() {
        assert_eq!(parse_thp_mode("always [madvise] never\n"), ThpMode::Madvise);
        assert_eq!(parse_thp_mode("[always] madvise never"), ThpMode::Always);
        assert_eq!(parse_thp_mode("always madvise [never]\n"), ThpMode::Never);
        assert_eq!(parse_thp_mode(""), ThpMode::Unknown);
        assert_eq!(parse_thp_mode("always madvise never"), ThpMode::Unknown);
    }

    #[test]
    fn page_ranges_are_widened_and_clamped() {
        assert_eq!(page_range(1, 2, 4 * PAGE), Some((0, PAGE)));
        assert_eq!(
            page_range(PAGE, 3 * PAGE + 1, 4 * PAGE),
            Some((PAGE, 4 * PAGE))
        );
        assert_eq!(page_range(0, usize::MAX, 4 * PAGE), Some((0, 4 * PAGE)));
        assert_eq!(page_range(4 * PAGE, 5 * PAGE, 4 * PAGE), None);
        assert_eq!(page_range(PAGE, PAGE, 4 * PAGE), None);
    }

    #[test]
    #[cfg_attr(miri, ignore = "miri has no mlock or mincore")]
    #[cfg_attr(
        tally_sanitized,
        ignore = "the sanitizers' runtimes turn mlock into a no-op that succeeds"
    )]
    fn locked_pages_are_resident_and_unlock_allows_discard() {
        let r = super::super::mem::map(4 * PAGE).unwrap();
        match r.lock(PAGE, 3 * PAGE) {
            Ok(()) => {
                let resident = super::super::mem::resident_pages(&r);
                assert_eq!(resident, vec![false, true, true, false]);
                r.unlock(0, r.len());
            }
            // A locked-memory limit of zero (some containers): refused, nothing locked.
            Err(errno) => assert!([libc::ENOMEM, libc::EPERM, libc::EAGAIN].contains(&errno)),
        }
        r.discard_from(PAGE);
        assert_eq!(super::super::mem::resident_pages(&r), vec![false; 4]);
    }
}
