//! Go structs copied in one read. A probe needs several fields of the same struct (a request's
//! method, URL, proto, header map, host and remote address); a `bpf_probe_read_user` per
//! field costs a helper call each, which is most of a probe's time, where copying the struct's
//! first bytes once and then loading words from that copy costs one.

use aya_ebpf::{macros::map, maps::PerCpuArray};
use odiglet_common::go::{GO_COUNTER_READ_FAILED, OFFSET_NONE};
use odiglet_ebpf::read_user_at;

use super::count;

/// Words of a slot.
pub const SNAPSHOT_WORDS: usize = 32;
const SNAPSHOT_BYTES: u32 = (SNAPSHOT_WORDS * 8) as u32;

/// `SNAPSHOTS` slots: one per struct a probe holds at once.
pub const SLOT_REQUEST: u32 = 0;
pub const SLOT_URL: u32 = 1;
pub const SLOT_MAP: u32 = 2;

/// Bytes copied of a `net/http.Request` (its fields up to `Pattern`, Go 1.23+, end at 248),
/// of a `net/url.URL` (up to `RawPath`: 88) and of a map header (`runtime.hmap` and
/// `internal/runtime/maps.Map` are 48 bytes). Fields past them are read one by one.
pub const REQUEST_BYTES: u32 = 256;
pub const URL_BYTES: u32 = 128;
pub const MAP_BYTES: u32 = 48;

#[map]
static SNAPSHOTS: PerCpuArray<[u64; SNAPSHOT_WORDS]> = PerCpuArray::with_max_entries(3, 0);

/// The first `LEN` bytes of the struct at `base`. A field past them or not 8-byte aligned is
/// read from user memory instead.
///
/// `LEN` is a constant on purpose, and a failed copy (the struct's end past a mapping's end)
/// reads as zeros (nil pointers, empty strings: the helper zeroes what it could not copy)
/// rather than falling back to reads field by field: each way of computing a length or of
/// reading a field is one more verifier state at the header-map walk, which is then verified
/// once per state.
pub struct Snapshot<const LEN: u32> {
    base: u64,
    words: &'static [u64; SNAPSHOT_WORDS],
}

impl<const LEN: u32> Snapshot<LEN> {
    /// Copies the struct at `base` into `slot`; `None` for a nil pointer.
    #[inline(always)]
    pub fn take(slot: u32, base: u64) -> Option<Self> {
        const { assert!(LEN > 0 && LEN <= SNAPSHOT_BYTES && LEN.is_multiple_of(8)) };
        if base == 0 {
            return None;
        }
        let buf = SNAPSHOTS.get_ptr_mut(slot)?;
        // SAFETY: copies `LEN <= SNAPSHOT_BYTES` bytes into the slot; the kernel checks the
        // source address and zeroes the destination when the copy fails.
        let copied = unsafe {
            aya_ebpf::helpers::generated::bpf_probe_read_user(
                buf.cast(),
                LEN,
                base as *const core::ffi::c_void,
            )
        };
        if copied != 0 {
            count(GO_COUNTER_READ_FAILED);
        }
        Some(Self {
            base,
            // SAFETY: per-CPU scratch, used only during this run.
            words: unsafe { &*buf },
        })
    }

    /// The 8-byte word at `offset`; `None` when the field does not exist or its read failed
    /// (counted).
    #[inline(always)]
    pub fn word(&self, offset: u32) -> Option<u64> {
        if offset == OFFSET_NONE {
            return None;
        }
        if offset.is_multiple_of(8) && offset < LEN {
            return self.words.get(verifier_index(offset / 8)).copied();
        }
        // SAFETY: a user-memory read checked by the kernel.
        match unsafe { read_user_at::<u64>(self.base, offset) } {
            Ok(word) => Some(word),
            Err(_) => {
                count(GO_COUNTER_READ_FAILED);
                None
            }
        }
    }

    /// The byte at `offset`, as [`Self::word`].
    #[inline(always)]
    pub fn byte(&self, offset: u32) -> Option<u8> {
        if offset == OFFSET_NONE {
            return None;
        }
        if offset < LEN {
            let word = self.words.get(verifier_index(offset / 8))?;
            return Some((word >> (8 * (offset % 8))) as u8);
        }
        // SAFETY: a user-memory read checked by the kernel.
        match unsafe { read_user_at::<u8>(self.base, offset) } {
            Ok(byte) => Some(byte),
            Err(_) => {
                count(GO_COUNTER_READ_FAILED);
                None
            }
        }
    }

    /// The Go string header (`ptr`, `len`) at `offset`.
    #[inline(always)]
    pub fn string(&self, offset: u32) -> Option<(u64, u64)> {
        if offset == OFFSET_NONE {
            return None;
        }
        Some((self.word(offset)?, self.word(offset.checked_add(8)?)?))
    }
}

/// `index`, hidden from LLVM so that the bounds check on it stays a comparison of the register
/// used to index: merged with the alignment test, both become one mask test from which the
/// verifier learns no bound.
#[inline(always)]
fn verifier_index(index: u32) -> usize {
    // SAFETY: a read of a local.
    unsafe { core::ptr::read_volatile(&index) as usize }
}
