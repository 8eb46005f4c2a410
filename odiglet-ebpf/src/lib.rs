//! Pure helpers shared by odiglet's eBPF programs: bounded kernel reads, PID-namespace
//! lookups and counters. No maps live here; each program object declares the maps it owns.
#![no_std]

use aya_ebpf::helpers::bpf_probe_read_kernel;
use odiglet_common::lifecycle::KernelOffsets;

/// Reads a `T` at `base + offset` in kernel memory.
///
/// # Safety
/// `base` must be a kernel pointer to a structure that has a `T` at `offset`: the read itself
/// is checked by the kernel and fails cleanly, but a wrong offset yields a wrong value.
#[inline(always)]
pub unsafe fn read_kernel_at<T>(base: u64, offset: u32) -> Result<T, i32> {
    // SAFETY: bpf_probe_read_kernel validates the address; see the function's contract.
    unsafe { bpf_probe_read_kernel((base + u64::from(offset)) as *const T) }
}

/// Host thread-group id of `task`.
///
/// # Safety
/// `task` must be a `struct task_struct *` and `off` the offsets of the running kernel.
#[inline(always)]
pub unsafe fn task_tgid(task: u64, off: &KernelOffsets) -> Result<u32, i32> {
    // SAFETY: forwarded contract.
    unsafe { read_kernel_at::<u32>(task, off.task_tgid) }
}

/// Host thread-group id of `task`'s real parent.
///
/// # Safety
/// As [`task_tgid`].
#[inline(always)]
pub unsafe fn parent_tgid(task: u64, off: &KernelOffsets) -> Result<u32, i32> {
    // SAFETY: forwarded contract; `real_parent` is a `struct task_struct *`.
    unsafe {
        let parent = read_kernel_at::<u64>(task, off.task_real_parent)?;
        task_tgid(parent, off)
    }
}

/// Deepest PID-namespace level the kernel supports (`MAX_PID_NS_LEVEL`).
const MAX_PID_NS_LEVEL: u32 = 32;

/// PID of `task` as seen in its innermost PID namespace: `thread_pid->numbers[level].nr`.
///
/// # Safety
/// As [`task_tgid`].
#[inline(always)]
pub unsafe fn task_vpid(task: u64, off: &KernelOffsets) -> Result<u32, i32> {
    // SAFETY: forwarded contract; `thread_pid` is a `struct pid *` whose `numbers` array has
    // `level + 1` entries, and `level` is bounded before it is used as an index.
    unsafe {
        let pid = read_kernel_at::<u64>(task, off.task_thread_pid)?;
        let level = read_kernel_at::<u32>(pid, off.pid_level)?;
        if level >= MAX_PID_NS_LEVEL {
            return Err(-1);
        }
        let entry = off.pid_numbers + level * off.upid_size + off.upid_nr;
        read_kernel_at::<u32>(pid, entry)
    }
}
