//! The only module that maps, advises and unmaps memory.
//!
//! `clippy.toml` forbids the raw memory calls everywhere else, so every region the crate
//! owns is created and destroyed here, and every `unsafe` call into the OS has its proof in
//! one place.

#![allow(clippy::disallowed_methods)] // This is the module the lint confines raw memory calls to.

use core::ptr::NonNull;

/// The size of an OS page assumed for prefaulting and advice. Linux on x86_64 and aarch64
/// maps at least this granularity; a larger real page only makes the advice coarser.
pub(crate) const PAGE: usize = 4096;

/// A region the OS mapped for us, readable and writable, zero-filled when first touched.
///
/// Invariant: `ptr..ptr + len` is one mapping created by [`map`] or [`map_aligned`] that
/// nothing else unmaps; `len` is a multiple of [`PAGE`].
#[derive(Debug)]
pub(crate) struct Region {
    ptr: NonNull<u8>,
    len: usize,
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

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn round_to_page(len: usize) -> Option<usize> {
    len.checked_add(PAGE - 1).map(|l| l & !(PAGE - 1))
}

impl Region {
    /// Start of the region.
    pub(crate) fn ptr(&self) -> NonNull<u8> {
        self.ptr
    }

    /// Length in bytes.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Tells the OS that the bytes from `offset` to the end are no longer needed: their
    /// pages are given back and read as zero when next touched. The mapping stays valid.
    pub(crate) fn discard_from(&self, offset: usize) {
        let Some(offset) = round_to_page(offset) else {
            return;
        };
        if offset >= self.len {
            return;
        }
        // SAFETY: `offset < len`, so the range lies inside this mapping (Region invariant);
        // MADV_DONTNEED on private anonymous memory only replaces pages with zero pages.
        let rc = unsafe {
            libc::madvise(
                self.ptr.as_ptr().wrapping_add(offset).cast(),
                self.len - offset,
                libc::MADV_DONTNEED,
            )
        };
        // A refusal leaves the memory resident, which is only a missed saving.
        let _ = rc;
    }

    /// Touches every page of the first `len` bytes so that later accesses take no fault.
    pub(crate) fn prefault(&self, len: usize) {
        let len = len.min(self.len);
        let mut offset = 0;
        while offset < len {
            let p = self.ptr.as_ptr().wrapping_add(offset);
            // SAFETY: `offset < len <= self.len`, so the byte is inside the mapping, which
            // is readable.
            let byte = unsafe { p.read_volatile() };
            // SAFETY: the same byte, which is writable; writing back what it held keeps it.
            unsafe { p.write_volatile(byte) };
            offset += PAGE;
        }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: the Region invariant says this is one whole mapping that we own and that
        // nothing else unmaps; after this no pointer into it is used (owners drop the
        // Region last).
        let rc = unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
        let _ = rc;
    }
}

/// Maps `len` bytes (rounded up to a page) of private anonymous memory.
pub(crate) fn map(len: usize) -> Result<Region, MapFailed> {
    let len = round_to_page(len.max(1)).ok_or(MapFailed {
        errno: libc::ENOMEM,
    })?;
    // SAFETY: an anonymous private mapping at an address of the kernel's choice aliases no
    // existing memory.
    let p = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(MapFailed { errno: errno() });
    }
    NonNull::new(p.cast::<u8>())
        .map(|ptr| Region { ptr, len })
        .ok_or(MapFailed {
            errno: libc::ENOMEM,
        })
}

/// Maps `len` bytes aligned to `align` (a power of two, at least a page): maps
/// `len + align`, then unmaps the unaligned head and the tail.
pub(crate) fn map_aligned(len: usize, align: usize) -> Result<Region, MapFailed> {
    debug_assert!(align.is_power_of_two() && align >= PAGE);
    let len = round_to_page(len.max(1)).ok_or(MapFailed {
        errno: libc::ENOMEM,
    })?;
    let over = len.checked_add(align).ok_or(MapFailed {
        errno: libc::ENOMEM,
    })?;
    let raw = map(over)?;
    let start = raw.ptr.as_ptr() as usize;
    let aligned = (start + align - 1) & !(align - 1);
    let head = aligned - start;
    let tail = raw.len - head - len;
    let base = raw.ptr.as_ptr();
    core::mem::forget(raw);
    if head > 0 {
        // SAFETY: `base..base + head` is the first part of the mapping made just above,
        // which nothing else knows about.
        unsafe { libc::munmap(base.cast(), head) };
    }
    if tail > 0 {
        // SAFETY: the tail `aligned + len..base + over` is the last part of the same
        // mapping; `head + len + tail == over`.
        unsafe { libc::munmap(base.wrapping_add(head + len).cast(), tail) };
    }
    let ptr = NonNull::new(base.wrapping_add(head)).ok_or(MapFailed {
        errno: libc::ENOMEM,
    })?;
    Ok(Region { ptr, len })
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
        // SAFETY: the region is mapped read-write and `len` bytes long.
        let s = unsafe { core::slice::from_raw_parts_mut(r.ptr().as_ptr(), r.len()) };
        assert!(s.iter().all(|&b| b == 0));
        s[123] = 7;
        r.prefault(r.len());
        assert_eq!(s[123], 7);
        r.discard_from(PAGE);
        assert_eq!(s[PAGE + 1], 0);
        assert_eq!(s[123], 7, "the first page is kept");
    }

    #[test]
    fn map_rounds_to_pages() {
        let r = map(10).unwrap();
        assert_eq!(r.len(), PAGE);
    }
}
