//! Go structs copied in one read. A probe needs several fields of the same struct (a request's
//! method, URL, proto, header map, host and remote address); a `bpf_probe_read_user` per
//! field costs a helper call each, which is most of a probe's time, where copying the struct's
//! first bytes once and then loading words from that copy costs one.

use aya_ebpf::{macros::map, maps::PerCpuArray};
use odiglet_common::go::{GO_COUNTER_READ_FAILED, OFFSET_NONE};
use odiglet_ebpf::read_user_at;

use super::count;

/// Words copied at most.
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

/// The first bytes of the struct at `base`. A field past the copy, not 8-byte aligned, or in a
/// struct whose copy failed (its end past a mapping's) is read from user memory instead.
pub struct Snapshot {
    base: u64,
    words: Option<&'static [u64; SNAPSHOT_WORDS]>,
    /// Words copied.
    len: usize,
}

impl Snapshot {
    /// Copies the first `LEN` bytes of the struct at `base`. A constant length on purpose: a
    /// length computed from the offsets gives the verifier one state per way of computing it,
    /// and the header-map walk after it is then verified once per state.
    #[inline(always)]
    pub fn take<const LEN: u32>(slot: u32, base: u64) -> Self {
        const { assert!(LEN > 0 && LEN <= SNAPSHOT_BYTES && LEN % 8 == 0) };
        let mut snapshot = Self {
            base,
            words: None,
            len: 0,
        };
        if base == 0 {
            return snapshot;
        }
        let Some(buf) = SNAPSHOTS.get_ptr_mut(slot) else {
            return snapshot;
        };
        // SAFETY: copies `LEN <= SNAPSHOT_BYTES` bytes into the slot; the kernel checks the
        // source address.
        let copied = unsafe {
            aya_ebpf::helpers::generated::bpf_probe_read_user(
                buf.cast(),
                LEN,
                base as *const core::ffi::c_void,
            )
        };
        if copied == 0 {
            // SAFETY: per-CPU scratch, used only during this run.
            snapshot.words = Some(unsafe { &*buf });
            snapshot.len = (LEN / 8) as usize;
        }
        snapshot
    }

    /// The 8-byte word at `offset`; `None` when the field does not exist, the pointer is nil
    /// or the read failed (counted).
    #[inline(always)]
    pub fn word(&self, offset: u32) -> Option<u64> {
        if self.base == 0 || offset == OFFSET_NONE {
            return None;
        }
        let index = (offset / 8) as usize;
        if let Some(words) = self.words
            && offset % 8 == 0
            && index < self.len
        {
            return words.get(index).copied();
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
        if self.base == 0 || offset == OFFSET_NONE {
            return None;
        }
        let index = (offset / 8) as usize;
        if let Some(words) = self.words
            && index < self.len
        {
            return words
                .get(index)
                .map(|word| (word >> (8 * (offset % 8))) as u8);
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
