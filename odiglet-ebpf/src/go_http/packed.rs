//! Packed span records: a record's strings appended back to back into its string area, so the
//! record can be submitted up to its last byte instead of at its largest size.

use core::ffi::c_void;

use aya_ebpf::helpers::generated::bpf_probe_read_user;
use odiglet_common::go::{GO_COUNTER_READ_FAILED, OFFSET_NONE};
use odiglet_ebpf::read_user_at;

use super::count;

/// Appends strings to a record: string `index`'s length goes to `lens[index]`, its bytes
/// after the previous string's. Strings must be appended in index order.
pub struct StringWriter<'a, const K: usize, const N: usize> {
    lens: &'a mut [u16; K],
    area: &'a mut [u8; N],
    end: usize,
    truncated: bool,
}

impl<'a, const K: usize, const N: usize> StringWriter<'a, K, N> {
    /// An empty string area.
    #[inline(always)]
    pub fn new(lens: &'a mut [u16; K], area: &'a mut [u8; N]) -> Self {
        *lens = [0; K];
        Self {
            lens,
            area,
            end: 0,
            truncated: false,
        }
    }

    /// Continues after the first `written` strings, which an earlier program appended (a
    /// return probe adding to its entry's record); the others are cleared.
    #[inline(always)]
    pub fn resume(lens: &'a mut [u16; K], area: &'a mut [u8; N], written: usize) -> Self {
        let mut end = 0;
        for (index, len) in lens.iter_mut().enumerate() {
            if index < written {
                end += usize::from(*len);
            } else {
                *len = 0;
            }
        }
        Self {
            lens,
            area,
            end,
            truncated: false,
        }
    }

    /// Appends the `len` bytes at `ptr` (a Go string or slice) as string `index`, cut to `cap`;
    /// nothing for `None`.
    ///
    /// # Safety
    /// None beyond the helper's: the kernel checks the source address.
    #[inline(always)]
    pub unsafe fn push(&mut self, index: usize, cap: usize, value: Option<(u64, u64)>) {
        let Some((ptr, len)) = value else {
            return;
        };
        let at = self.end;
        // Also what lets the verifier bound the destination: `at + cap <= N`.
        if index >= K || cap > N || at > N - cap {
            return;
        }
        let cut = len > cap as u64;
        let n = if cut { cap } else { len as usize };
        if n > 0 {
            // SAFETY: `at + n <= N` (checked above), inside the area; the kernel checks the
            // source and zeroes the destination when the copy fails.
            let copied = unsafe {
                bpf_probe_read_user(
                    self.area.as_mut_ptr().add(at).cast(),
                    n as u32,
                    ptr as *const c_void,
                )
            };
            if copied != 0 {
                count(GO_COUNTER_READ_FAILED);
                return;
            }
        }
        self.lens[index] = n as u16;
        self.end = at + n;
        self.truncated |= cut;
    }

    /// Appends the Go string whose header is at `base + offset`; nothing when the field does
    /// not exist or `base` is nil.
    ///
    /// # Safety
    /// As [`Self::push`].
    #[inline(always)]
    pub unsafe fn push_field(&mut self, index: usize, cap: usize, base: u64, offset: u32) {
        if base == 0 || offset == OFFSET_NONE {
            return;
        }
        // SAFETY: a user-memory read checked by the kernel; one call for both header words.
        match unsafe { read_user_at::<[u64; 2]>(base, offset) } {
            // SAFETY: forwarded contract.
            Ok([ptr, len]) => unsafe { self.push(index, cap, Some((ptr, len))) },
            Err(_) => count(GO_COUNTER_READ_FAILED),
        }
    }

    /// The bytes of the area in use, and whether a string was cut.
    #[inline(always)]
    pub fn finish(self) -> (usize, bool) {
        (self.end, self.truncated)
    }
}
