//! The floor of a uprobe's cost, for benchmarks only (never embedded in odiglet): `floor_empty`
//! does nothing, so attaching it where the Go probes go measures the trap alone, and
//! `floor_count` counts hits so a benchmark can divide by hits per request.
#![no_std]
#![no_main]

use aya_ebpf::{macros::map, macros::uprobe, maps::PerCpuArray, programs::ProbeContext};

/// Hits of `floor_count`, one slot, per CPU.
#[map]
static FLOOR_HITS: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[uprobe]
pub fn floor_empty(_ctx: ProbeContext) -> u32 {
    0
}

#[uprobe]
pub fn floor_count(_ctx: ProbeContext) -> u32 {
    if let Some(hits) = FLOOR_HITS.get_ptr_mut(0) {
        // SAFETY: per-CPU slot; a uprobe program does not migrate while it runs.
        unsafe { *hits += 1 };
    }
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    // SAFETY: the verifier rejects any reachable panic path, so this is never executed.
    unsafe { core::hint::unreachable_unchecked() }
}
