//! The allocator's footprint: fixed glibc thresholds, and freed heap returned to the kernel.
//!
//! glibc's malloc adapts its mmap threshold: freeing an mmapped block raises the threshold to
//! that block's size and the trim threshold to twice it. After one large buffer freed at
//! start-up (aya's 5.5 MiB read of the kernel's BTF did that, before vendor/aya skipped it),
//! every buffer up to its size (a Go binary's inflated DWARF, API list bodies) came from the
//! arenas and no arena gave back its top below twice that: the idle daemon kept each arena's
//! high-water mark, about 4 MiB of `odiglet run` with 100 pods (BENCHMARKS.md). [`configure`]
//! pins both thresholds at glibc's defaults. Pages freed below live allocations still stay
//! resident until reused; [`release_free`] returns them once start-up is done with them
//! (`ebpf_objects::loader`). This module is the one place that talks to the allocator.

/// glibc's default thresholds, made fixed (setting them turns the adaptation off).
const MMAP_THRESHOLD: i32 = 128 * 1024;
const TRIM_THRESHOLD: i32 = 128 * 1024;

/// Pins the allocator's thresholds; first thing in `main`, before the allocations it shapes.
pub fn configure() {
    #[cfg(target_env = "gnu")]
    {
        #[expect(unsafe_code, reason = "glibc's mallopt is only reachable through FFI")]
        // SAFETY: `mallopt` takes plain integers and sets allocator parameters under the main
        // arena's lock; valid values (these are glibc's defaults) change no allocation made.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
            libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
        }
    }
}

/// Returns the allocator's free pages to the kernel (glibc only; a no-op elsewhere).
pub fn release_free() {
    #[cfg(target_env = "gnu")]
    {
        #[expect(
            unsafe_code,
            reason = "glibc's malloc_trim is only reachable through FFI"
        )]
        // SAFETY: `malloc_trim` takes no pointers and only releases pages of free chunks, under
        // the arenas' own locks; memory in use is untouched, so it is sound from any thread.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}
