//! Memory: mapping, advice, prefaulting and unmapping, the LeakSanitizer roots of every
//! mapping, and the miri backend that stands in for `mmap`.
//!
//! Every region the crate owns is created and destroyed here (see [`Region`]).

use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};

#[cfg(not(miri))]
use super::fault::count_unmap_refusal;
use super::fault::refused;

/// The size of an OS page assumed for prefaulting and advice. Linux on x86_64 and aarch64
/// maps at least this granularity; a larger real page only makes the advice coarser.
pub(crate) const PAGE: usize = 4096;

/// `madvise` advice that faults pages in as if written (Linux 5.14).
const MADV_POPULATE_WRITE: libc::c_int = 23;

/// How [`Region::populate`] faults pages in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Populate {
    /// `MADV_POPULATE_WRITE`, or nothing where the kernel lacks it.
    AdviceOnly,
    /// `MADV_POPULATE_WRITE`, or touching each page where the kernel lacks it.
    AdviceThenTouch,
    /// Touching each page (tests of the fallback).
    #[cfg_attr(not(test), allow(dead_code))]
    TouchOnly,
}

/// A region the OS mapped for us, readable and writable, zero-filled when first touched.
///
/// Invariant: `ptr..ptr + len` is one mapping created by [`map`] or [`map_aligned`] that
/// nothing else unmaps; `len` is a multiple of [`PAGE`]. In a LeakSanitizer build it is
/// registered as a root region from creation until drop (see [`lsan`]). Under miri, which
/// maps no memory with more than the plain flags, it is instead one zeroed allocation of
/// the system allocator with layout `layout`, of size `len` (see `miri_backend`).
///
/// The process-wide count of bytes mapped ([`budget`](super::budget)) holds `len` minus
/// `released` for each region: the bytes [`Self::discard_from`] gave back leave the count
/// until [`Self::reuse`] takes them again, so that memory pressure sees reclamation.
#[derive(Debug)]
pub(crate) struct Region {
    ptr: NonNull<u8>,
    len: usize,
    /// Bytes at the end of the region given back to the OS and not taken again (at most
    /// `len`).
    released: AtomicUsize,
    #[cfg(miri)]
    layout: core::alloc::Layout,
}

// SAFETY: a `Region` is an owned range of anonymous memory; moving the owner to another
// thread moves nothing thread-bound.
unsafe impl Send for Region {}
// SAFETY: `Region` exposes only its address and length through `&self`.
unsafe impl Sync for Region {}

/// The OS refused a mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MapFailed {
    /// `errno` of the failed call.
    pub(crate) errno: i32,
}

/// `errno` of the last failed call on this thread.
#[cfg(not(miri))]
pub(super) fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn round_to_page(len: usize) -> Option<usize> {
    len.checked_add(PAGE - 1).map(|l| l & !(PAGE - 1))
}

impl Region {
    /// The owner of the fresh mapping `ptr..ptr + len`, which nothing else knows of.
    #[cfg(not(miri))]
    fn adopt(ptr: NonNull<u8>, len: usize) -> Self {
        lsan::register(ptr, len);
        super::budget::on_map(len);
        Self {
            ptr,
            len,
            released: AtomicUsize::new(0),
        }
    }

    /// Start of the region.
    pub(crate) fn ptr(&self) -> NonNull<u8> {
        self.ptr
    }

    /// Length in bytes (a multiple of [`PAGE`]): what the statistics count as mapped.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Tells the OS that the bytes from `offset` to the end are no longer needed: their
    /// pages are given back and read as zero when next touched. The mapping stays valid; the
    /// bytes given back leave the process-wide mapped count until [`Self::reuse`].
    ///
    /// Returns whether the bytes from `offset` (rounded up to a page) are given back now,
    /// which they are when there are none. `false` when the OS refused: the bytes stay
    /// resident and counted, and their values are unspecified (the caller gave them up).
    pub(crate) fn discard_from(&self, offset: usize) -> bool {
        let Some(offset) = round_to_page(offset) else {
            return true;
        };
        if offset >= self.len {
            return true;
        }
        #[cfg(miri)]
        {
            let start = self.ptr.as_ptr().wrapping_add(offset);
            // What MADV_DONTNEED leaves behind: the bytes read as zero.
            // SAFETY: `offset < len`, so the range lies inside this allocation (Region
            // invariant), which is writable; the caller no longer uses its bytes.
            unsafe { start.write_bytes(0, self.len - offset) };
        }
        #[cfg(not(miri))]
        {
            let rc = if refused!(Madvise) {
                -1
            } else {
                // SAFETY: `offset < len`, so the range lies inside this mapping (Region
                // invariant); MADV_DONTNEED on private anonymous memory only replaces pages
                // with zero pages.
                unsafe {
                    libc::madvise(
                        self.ptr.as_ptr().wrapping_add(offset).cast(),
                        self.len - offset,
                        libc::MADV_DONTNEED,
                    )
                }
            };
            // A refusal leaves the memory resident and counted: nothing was given back.
            if rc != 0 {
                return false;
            }
        }
        let released = self.len - offset;
        let before = self.released.fetch_max(released, Ordering::Relaxed);
        super::budget::on_unmap(released.saturating_sub(before));
        true
    }

    /// Counts the bytes that [`Self::discard_from`] gave back as in use again, before the
    /// caller touches them: the owner reuses the region. A budget crossed by them raises the
    /// pressure level, as a new mapping would.
    pub(crate) fn reuse(&self) {
        let released = self.released.swap(0, Ordering::Relaxed);
        if released != 0 {
            super::budget::on_map(released);
        }
    }

    /// Gives up ownership without unmapping: the mapping stays, still counted as mapped
    /// and (under LeakSanitizer) registered, and the caller owns `ptr..ptr + len` from now
    /// on, to keep for the life of the process or to hand back to [`Self::from_raw`].
    pub(crate) fn into_raw(self) -> (NonNull<u8>, usize) {
        let this = core::mem::ManuallyDrop::new(self);
        (this.ptr, this.len)
    }

    /// The owner of a mapping that [`Self::into_raw`] gave up.
    ///
    /// # Safety
    ///
    /// `ptr` and `len` are what `into_raw` returned for a region made by [`map`] (then
    /// `align` is [`PAGE`]) or by [`map_aligned`] with `align`; this is the only call that
    /// takes that mapping back, and the caller uses no pointer into it once the region
    /// drops.
    pub(crate) unsafe fn from_raw(ptr: NonNull<u8>, len: usize, align: usize) -> Self {
        let _ = align;
        Self {
            ptr,
            len,
            released: AtomicUsize::new(0),
            #[cfg(miri)]
            layout: core::alloc::Layout::from_size_align(len, align.max(PAGE))
                .unwrap_or(core::alloc::Layout::new::<u8>()),
        }
    }

    /// Grows or shrinks the region to `new_len` bytes (rounded up to a page), moving it if
    /// it must (`mremap` with `MREMAP_MAYMOVE`): the first `min(len, new_len)` bytes keep
    /// their values, new bytes read as zero, and the pages keep their NUMA policy. On
    /// failure the region comes back unchanged with the refusal. Fault injection refuses
    /// it as a `mmap`.
    #[cfg(not(miri))]
    pub(crate) fn remap(self, new_len: usize) -> Result<Region, (Region, MapFailed)> {
        let Some(new_len) = round_to_page(new_len.max(1)) else {
            let failed = MapFailed {
                errno: libc::ENOMEM,
            };
            return Err((self, failed));
        };
        if new_len == self.len {
            return Ok(self);
        }
        let p = if refused!(Mmap) {
            libc::MAP_FAILED
        } else {
            // SAFETY: `ptr..ptr + len` is one whole mapping that we own (Region invariant);
            // on success the kernel moves it to the returned address and the old range is
            // no longer ours, which `self` being consumed below reflects.
            unsafe {
                libc::mremap(
                    self.ptr.as_ptr().cast(),
                    self.len,
                    new_len,
                    libc::MREMAP_MAYMOVE,
                )
            }
        };
        let Some(ptr) = NonNull::new(p.cast::<u8>()).filter(|_| p != libc::MAP_FAILED) else {
            let failed = MapFailed { errno: errno() };
            return Err((self, failed));
        };
        let (old, old_len, counted) = (self.ptr, self.len, self.counted());
        core::mem::forget(self);
        lsan::unregister(old, old_len);
        super::budget::on_unmap(counted);
        Ok(Region::adopt(ptr, new_len))
    }

    /// [`Self::remap`] under miri: a new allocation, the bytes copied, the old one freed.
    #[cfg(miri)]
    pub(crate) fn remap(self, new_len: usize) -> Result<Region, (Region, MapFailed)> {
        let new = match map_aligned(new_len, self.layout.align()) {
            Ok(new) => new,
            Err(failed) => return Err((self, failed)),
        };
        let keep = self.len.min(new.len);
        // SAFETY: both allocations are live, distinct and at least `keep` bytes long.
        unsafe { core::ptr::copy_nonoverlapping(self.ptr.as_ptr(), new.ptr.as_ptr(), keep) };
        Ok(new)
    }

    /// The bytes this region counts in the process-wide mapped total now.
    fn counted(&self) -> usize {
        self.len - self.released.load(Ordering::Relaxed).min(self.len)
    }

    /// Faults in every page of the first `len` bytes, page 0 included, so that later
    /// accesses take no fault: [`Self::prefault_range`] from 0, with its contract.
    pub(crate) fn prefault(&self, len: usize) {
        self.prefault_range(0, len);
    }

    /// Faults in the pages from `from` rounded *up* to a page to `to` rounded up to a page
    /// (both clamped to the region), so that later accesses to them take no fault. Does
    /// nothing when that range is empty, and nothing under miri.
    ///
    /// The page that holds an unaligned `from` is left alone. Callers fault a region in
    /// step by step, each step from where the last one ended: the call that ended at `from`
    /// faulted that page in already (it rounded its `to` up), and bytes before `from` on it
    /// may be in use by other threads by now.
    ///
    /// On kernels without `MADV_POPULATE_WRITE` (before Linux 5.14) this reads and writes
    /// back the first byte of each page it faults in, which keeps every byte's value but is
    /// a plain read and write: no other thread may access any byte of those pages (from
    /// `from` rounded up to `to` rounded up) during the call, for example because nothing
    /// in them has been handed out yet.
    pub(crate) fn prefault_range(&self, from: usize, to: usize) {
        self.populate(from, to, Populate::AdviceThenTouch);
    }

    /// Faults in the pages of `from..to` (rounded as [`Self::prefault_range`] rounds them)
    /// where the kernel can do so without touching a byte (`MADV_POPULATE_WRITE`, Linux
    /// 5.14); elsewhere it does nothing and the pages fault in on first use. It neither
    /// reads nor writes memory, so other threads may be using those pages meanwhile.
    /// Whether the pages were faulted in.
    pub(crate) fn populate_if_supported(&self, from: usize, to: usize) -> bool {
        self.populate(from, to, Populate::AdviceOnly)
    }

    /// [`Self::prefault_range`] (`how` says whether to try `MADV_POPULATE_WRITE`, and
    /// whether to fall back to touching the pages). Whether the pages are faulted in now:
    /// false only where `how` forbids touching them and the kernel refused the advice.
    fn populate(&self, from: usize, to: usize, how: Populate) -> bool {
        let Some(from) = round_to_page(from) else {
            return true;
        };
        let Some(to) = round_to_page(to.min(self.len)) else {
            return true;
        };
        // `len` is a multiple of a page (Region invariant), so `to <= len`.
        let to = to.min(self.len);
        // Under miri every byte of the allocation is there already.
        if from >= to || cfg!(miri) {
            return true;
        }
        if how != Populate::TouchOnly {
            let start = self.ptr.as_ptr().wrapping_add(from);
            // One call that faults every page in (Linux 5.14+), much cheaper than a fault
            // per page; older kernels refuse it and the loop below does the same work.
            let rc = if refused!(Madvise) {
                -1
            } else {
                // SAFETY: `from < to <= len`, both page-aligned, so `start..start + (to -
                // from)` lies inside this mapping (Region invariant); MADV_POPULATE_WRITE
                // only allocates pages as a write would, and changes no byte.
                unsafe { libc::madvise(start.cast(), to - from, MADV_POPULATE_WRITE) }
            };
            if rc == 0 || how == Populate::AdviceOnly {
                return rc == 0;
            }
        }
        let mut offset = from;
        while offset < to {
            let p = self.ptr.as_ptr().wrapping_add(offset);
            // SAFETY: `offset < to <= self.len`, so the byte is inside the mapping, which
            // is readable; no other thread accesses its page now (the caller's contract).
            let byte = unsafe { p.read_volatile() };
            // SAFETY: the same byte, which is writable; writing back what it held keeps it,
            // and no other thread can have changed it since the read (as above).
            unsafe { p.write_volatile(byte) };
            offset += PAGE;
        }
        true
    }
}

/// Unmapping: if the OS refuses (it documents EINVAL and ENOMEM; neither can happen for a
/// whole mapping we own, but fault injection makes it happen), the mapping is leaked: it
/// stays mapped, nothing uses or unmaps it again, and nothing else can be mapped at its
/// addresses, so no memory gets two owners. Its pages are then given back with
/// `MADV_DONTNEED` where the OS allows (which leaves only address space behind, and takes
/// the bytes out of the mapped count as a discard does); bytes that could not be given back
/// stay in the mapped count, since they are still mapped. The refusal is counted
/// (`fault::unmap_refusals`).
#[cfg(not(miri))]
impl Drop for Region {
    fn drop(&mut self) {
        lsan::unregister(self.ptr, self.len);
        let rc = if refused!(Munmap) {
            -1
        } else {
            // SAFETY: the Region invariant says this is one whole mapping that we own and
            // that nothing else unmaps; after this no pointer into it is used (owners drop
            // the Region last).
            unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) }
        };
        if rc == 0 {
            super::budget::on_unmap(self.counted());
        } else {
            count_unmap_refusal(self.len);
            // Whether or not this gives the pages back, the count stays exact (see above).
            let _ = self.discard_from(0);
        }
    }
}

/// Maps `len` bytes (rounded up to a page) of private anonymous memory.
#[cfg(not(miri))]
pub(crate) fn map(len: usize) -> Result<Region, MapFailed> {
    let len = round_to_page(len.max(1)).ok_or(MapFailed {
        errno: libc::ENOMEM,
    })?;
    map_pages(len).map(|ptr| Region::adopt(ptr, len))
}

/// Maps `len` bytes, a multiple of [`PAGE`], of private anonymous memory, owned by the
/// caller.
#[cfg(not(miri))]
fn map_pages(len: usize) -> Result<NonNull<u8>, MapFailed> {
    let p = if refused!(Mmap) {
        libc::MAP_FAILED
    } else {
        // SAFETY: an anonymous private mapping at an address of the kernel's choice aliases
        // no existing memory.
        unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        }
    };
    if p == libc::MAP_FAILED {
        return Err(MapFailed { errno: errno() });
    }
    NonNull::new(p.cast::<u8>()).ok_or(MapFailed {
        errno: libc::ENOMEM,
    })
}

/// Maps `len` bytes aligned to `align` (a power of two, at least a page): maps
/// `len + align`, then unmaps the unaligned head and the tail.
#[cfg(not(miri))]
pub(crate) fn map_aligned(len: usize, align: usize) -> Result<Region, MapFailed> {
    debug_assert!(align.is_power_of_two() && align >= PAGE);
    let len = round_to_page(len.max(1)).ok_or(MapFailed {
        errno: libc::ENOMEM,
    })?;
    let over = len.checked_add(align).ok_or(MapFailed {
        errno: libc::ENOMEM,
    })?;
    // `len` and `align` are multiples of a page, so `over` is one too.
    let base = map_pages(over)?.as_ptr();
    let start = base as usize;
    let aligned = (start + align - 1) & !(align - 1);
    let head = aligned - start;
    let tail = over - head - len;
    // An end the OS refuses to unmap is leaked address space (never touched, so it holds
    // no memory and was never in the mapped count): counted, and left alone.
    if head > 0 {
        let rc = if refused!(Munmap) {
            -1
        } else {
            // SAFETY: `base..base + head` is the first part of the mapping made just above,
            // which nothing else knows about.
            unsafe { libc::munmap(base.cast(), head) }
        };
        if rc != 0 {
            count_unmap_refusal(head);
        }
    }
    if tail > 0 {
        let rc = if refused!(Munmap) {
            -1
        } else {
            // SAFETY: the tail `aligned + len..base + over` is the last part of the same
            // mapping; `head + len + tail == over`.
            unsafe { libc::munmap(base.wrapping_add(head + len).cast(), tail) }
        };
        if rc != 0 {
            count_unmap_refusal(tail);
        }
    }
    let ptr = NonNull::new(base.wrapping_add(head)).ok_or(MapFailed {
        errno: libc::ENOMEM,
    })?;
    Ok(Region::adopt(ptr, len))
}

#[cfg(miri)]
pub(crate) use miri_backend::{map, map_aligned};

/// Regions under miri, which supports `mmap` with no flag beyond `MAP_PRIVATE |
/// MAP_ANONYMOUS` and no `madvise`: zeroed allocations of the system allocator (not the
/// global one, which may be this crate's), so that miri checks every access to pool memory
/// against an allocation of exactly the region's bounds.
#[cfg(miri)]
mod miri_backend {
    use core::alloc::{GlobalAlloc, Layout};
    use core::ptr::NonNull;
    use std::alloc::System;

    use super::{round_to_page, MapFailed, Region, PAGE};

    fn layout(len: usize, align: usize) -> Result<Layout, MapFailed> {
        let len = round_to_page(len.max(1)).ok_or(MapFailed {
            errno: libc::ENOMEM,
        })?;
        Layout::from_size_align(len, align.max(PAGE)).map_err(|_| MapFailed {
            errno: libc::EINVAL,
        })
    }

    fn allocate(layout: Layout) -> Result<Region, MapFailed> {
        // SAFETY: `layout` has a non-zero size (at least a page).
        let ptr = unsafe { System.alloc_zeroed(layout) };
        let ptr = NonNull::new(ptr).ok_or(MapFailed {
            errno: libc::ENOMEM,
        })?;
        super::super::budget::on_map(layout.size());
        Ok(Region {
            ptr,
            len: layout.size(),
            released: core::sync::atomic::AtomicUsize::new(0),
            layout,
        })
    }

    /// [`super::map`] under miri.
    pub(crate) fn map(len: usize) -> Result<Region, MapFailed> {
        allocate(layout(len, PAGE)?)
    }

    /// [`super::map_aligned`] under miri.
    pub(crate) fn map_aligned(len: usize, align: usize) -> Result<Region, MapFailed> {
        allocate(layout(len, align)?)
    }

    impl Drop for Region {
        fn drop(&mut self) {
            // SAFETY: Region invariant under miri: `ptr` came from `System.alloc_zeroed`
            // with `layout`, and nothing else frees it.
            unsafe { System.dealloc(self.ptr.as_ptr(), self.layout) };
            super::super::budget::on_unmap(self.counted());
        }
    }
}

/// LeakSanitizer's view of the crate's memory.
///
/// LeakSanitizer looks for pointers to heap blocks in globals, stacks, thread-locals and
/// the heap itself, not in anonymous mappings. A value that lives in a pool block and owns
/// heap memory (a `Vec` in a `Recycle` type kept for reuse, or in a handle parked in
/// another pool) would be reported as leaked. Builds with `--cfg tally_lsan` (used with
/// `-Zsanitizer=address` or `-Zsanitizer=leak`, whose runtime provides these functions)
/// register every region as a root; other builds do nothing.
#[cfg(not(miri))]
mod lsan {
    use core::ptr::NonNull;

    #[cfg(tally_lsan)]
    extern "C" {
        fn __lsan_register_root_region(p: *const core::ffi::c_void, size: usize);
        fn __lsan_unregister_root_region(p: *const core::ffi::c_void, size: usize);
    }

    /// Makes LeakSanitizer scan `ptr..ptr + len`, a mapping the caller now owns.
    pub(super) fn register(ptr: NonNull<u8>, len: usize) {
        // SAFETY: the sanitizer runtime only records the range, which is mapped and
        // readable for as long as it stays registered (until `unregister`).
        #[cfg(tally_lsan)]
        unsafe {
            __lsan_register_root_region(ptr.as_ptr().cast(), len);
        }
        let _ = (ptr, len);
    }

    /// Undoes [`register`] for the same range, before it is unmapped.
    pub(super) fn unregister(ptr: NonNull<u8>, len: usize) {
        // SAFETY: `ptr..ptr + len` was registered when its `Region` was made (Region
        // invariant); the runtime only forgets it.
        #[cfg(tally_lsan)]
        unsafe {
            __lsan_unregister_root_region(ptr.as_ptr().cast(), len);
        }
        let _ = (ptr, len);
    }
}

/// Which pages of `r` are resident, by `mincore` (for tests of what is faulted in when).
#[cfg(all(test, target_os = "linux"))]
pub(crate) fn resident_pages(r: &Region) -> Vec<bool> {
    let mut v = vec![0u8; r.len().div_ceil(PAGE)];
    // SAFETY: `r` is one live mapping of `len` bytes, page-aligned, and `v` has a byte per
    // page of it.
    let rc = unsafe { libc::mincore(r.ptr().as_ptr().cast(), r.len(), v.as_mut_ptr()) };
    assert_eq!(rc, 0, "mincore failed");
    v.iter().map(|b| b & 1 == 1).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_map_is_aligned_writable_and_zeroed() {
        let align = 1 << 20;
        let r = map_aligned(align, align).unwrap();
        assert_eq!(r.ptr().as_ptr() as usize % align, 0);
        assert_eq!(r.len(), align);
        let base = r.ptr().as_ptr();
        {
            // SAFETY: the region is mapped read-write and `len` bytes long; the slice ends
            // before the region is changed through anything else.
            let s = unsafe { core::slice::from_raw_parts_mut(base, r.len()) };
            // Under miri, every 61st byte: a full scan of a mebibyte takes it minutes.
            let step = if cfg!(miri) { 61 } else { 1 };
            assert!(s.iter().step_by(step).all(|&b| b == 0));
            s[123] = 7;
            s[PAGE + 1] = 9;
        }
        let byte = |i: usize| {
            assert!(i < r.len());
            // SAFETY: a byte of the region, which stays mapped read-write.
            unsafe { base.wrapping_add(i).read() }
        };
        r.prefault(r.len());
        assert_eq!(byte(123), 7);
        assert!(r.discard_from(PAGE));
        assert_eq!(byte(PAGE + 1), 0, "discarded");
        assert_eq!(byte(123), 7, "the first page is kept");
    }

    /// The pages `first..=last`, of `n`.
    fn pages(n: usize, first: usize, last: usize) -> Vec<bool> {
        (0..n).map(|i| (first..=last).contains(&i)).collect()
    }

    /// What [`Region::populate`] faults in, through `MADV_POPULATE_WRITE` where `how` tries
    /// it and the kernel has it, else through the fallback loop.
    fn faults_in_exactly_the_pages_from_from_rounded_up(how: Populate) {
        let r = map_aligned(1 << 20, 1 << 20).unwrap();
        let n = r.len() / PAGE;
        assert_eq!(resident_pages(&r), vec![false; n], "fresh anonymous memory");
        // Bytes 5000..20000 lie on pages 1 to 4; page 1 also holds bytes before 5000, which
        // may be in use: it is left alone, and pages 2 to 4 are faulted in.
        r.populate(5000, 20_000, how);
        assert_eq!(resident_pages(&r), pages(n, 2, 4));
        // An aligned `from` is its own page, and a byte written before keeps its value.
        let base = r.ptr().as_ptr();
        // SAFETY: byte `6 * PAGE + 1` lies in the region, which is mapped read-write.
        unsafe { base.wrapping_add(6 * PAGE + 1).write(0xA5) };
        // SAFETY: byte `6 * PAGE` lies in the region, which is mapped read-write.
        unsafe { base.wrapping_add(6 * PAGE).write(0x5A) };
        r.populate(6 * PAGE, 7 * PAGE + 1, how);
        let mut want = pages(n, 2, 4);
        want.splice(6..=7, [true, true]);
        assert_eq!(resident_pages(&r), want);
        let byte = |i: usize| {
            assert!(i < r.len());
            // SAFETY: a byte of the region, which stays mapped read-write.
            unsafe { base.wrapping_add(i).read() }
        };
        assert_eq!((byte(6 * PAGE), byte(6 * PAGE + 1)), (0x5A, 0xA5));
        // Clamped to the region; a range with no page from `from` rounded up does nothing.
        r.populate(r.len() - PAGE - 10, usize::MAX, how);
        r.populate(r.len() - 10, usize::MAX, how);
        r.populate(9000, 9000, how);
        r.populate(8 * PAGE + 1, 9 * PAGE, how);
        want.splice(n - 2..n, [false, true]);
        assert_eq!(resident_pages(&r), want);
        // From 0, page 0 is faulted in.
        let r = map_aligned(1 << 20, 1 << 20).unwrap();
        r.populate(0, 1, how);
        assert_eq!(resident_pages(&r), pages(n, 0, 0));
    }

    #[test]
    #[cfg_attr(miri, ignore = "miri has no mincore and faults nothing in")]
    fn prefault_range_faults_in_exactly_the_pages_from_from_rounded_up() {
        faults_in_exactly_the_pages_from_from_rounded_up(Populate::AdviceThenTouch);
        let r = map(3 * PAGE).unwrap();
        r.prefault(PAGE + 1);
        assert_eq!(resident_pages(&r), vec![true, true, false]);
    }

    #[test]
    #[cfg_attr(miri, ignore = "miri has no mincore and faults nothing in")]
    fn the_fallback_without_madvise_faults_in_the_same_pages_and_keeps_bytes() {
        faults_in_exactly_the_pages_from_from_rounded_up(Populate::TouchOnly);
    }

    #[test]
    #[cfg_attr(miri, ignore = "miri has no mincore and faults nothing in")]
    fn populate_if_supported_faults_in_by_advice_or_not_at_all() {
        let r = map_aligned(1 << 20, 1 << 20).unwrap();
        let n = r.len() / PAGE;
        let faulted = r.populate_if_supported(5000, 20_000);
        let got = resident_pages(&r);
        // With `MADV_POPULATE_WRITE`, the pages `prefault_range` faults in; without, none
        // (no page is touched, which is the point). The answer says which.
        let expected: Vec<bool> = pages(n, 2, 4).into_iter().map(|p| p && faulted).collect();
        assert_eq!(got, expected, "faulted in: {faulted}");
    }

    #[test]
    fn discarded_bytes_leave_the_mapped_count_until_reused() {
        let r = map(4 * PAGE).unwrap();
        assert_eq!(r.counted(), 4 * PAGE);
        assert!(r.discard_from(PAGE));
        assert_eq!(r.counted(), PAGE);
        assert!(r.discard_from(2 * PAGE)); // a smaller range again counts nothing twice
        assert_eq!(r.counted(), PAGE);
        r.reuse();
        assert_eq!(r.counted(), 4 * PAGE);
        r.reuse(); // nothing released: nothing counted twice
        assert_eq!(r.counted(), 4 * PAGE);
    }

    #[test]
    fn map_rounds_to_pages() {
        let r = map(10).unwrap();
        assert_eq!(r.len(), PAGE);
    }
}
