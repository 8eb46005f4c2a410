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

// === Go ===

/// Argument and result registers of Go's amd64 register ABI, in order (Go >= 1.17).
#[inline(always)]
pub fn go_register(regs: &aya_ebpf::bindings::pt_regs, n: usize) -> u64 {
    match n {
        0 => regs.rax,
        1 => regs.rbx,
        2 => regs.rcx,
        3 => regs.rdi,
        4 => regs.rsi,
        5 => regs.r8,
        6 => regs.r9,
        7 => regs.r10,
        8 => regs.r11,
        _ => 0,
    }
}

/// The current goroutine (`g`), which Go's amd64 ABI keeps in R14.
#[inline(always)]
pub fn goroutine(regs: &aya_ebpf::bindings::pt_regs) -> u64 {
    regs.r14
}

/// Reads a `T` at `base + offset` in the current process's memory.
///
/// # Safety
/// None beyond the helper's: the kernel checks the address; a wrong offset gives a wrong value.
#[inline(always)]
pub unsafe fn read_user_at<T>(base: u64, offset: u32) -> Result<T, i32> {
    // SAFETY: bpf_probe_read_user validates the address.
    unsafe { aya_ebpf::helpers::bpf_probe_read_user((base + u64::from(offset)) as *const T) }
}

/// Copies the Go string whose header (`{ptr, len}`) is at `header` into `dst`. Returns the bytes
/// copied and whether the string was longer than `dst`.
///
/// # Safety
/// As [`read_user_at`].
#[inline(always)]
pub unsafe fn read_go_string<const N: usize>(
    header: u64,
    dst: &mut [u8; N],
) -> Result<(u16, bool), i32> {
    // SAFETY: user-memory reads checked by the kernel. One read for the header's two words:
    // each helper call costs more than the bytes it copies.
    unsafe {
        let [ptr, len]: [u64; 2] = read_user_at(header, 0)?;
        read_go_bytes(ptr, len, dst)
    }
}

/// Copies `len` bytes at `ptr` (a Go string or slice already in registers) into `dst`, cut to
/// `N`. Returns the bytes copied and whether the value was longer than `dst`.
///
/// # Safety
/// As [`read_user_at`].
#[inline(always)]
pub unsafe fn read_go_bytes<const N: usize>(
    ptr: u64,
    len: u64,
    dst: &mut [u8; N],
) -> Result<(u16, bool), i32> {
    let truncated = len > N as u64;
    let n = if truncated { N as u64 } else { len };
    if n > 0 {
        // SAFETY: the copy is bounded by `N`; the kernel checks the source address.
        let copied = unsafe {
            aya_ebpf::helpers::generated::bpf_probe_read_user(
                dst.as_mut_ptr().cast(),
                n as u32,
                ptr as *const _,
            )
        };
        if copied != 0 {
            return Err(copied as i32);
        }
    }
    Ok((n as u16, truncated))
}

/// A random, non-zero 64-bit id.
#[inline(always)]
pub fn random_u64() -> u64 {
    // SAFETY: a helper without arguments.
    let (hi, lo) = unsafe {
        (
            aya_ebpf::helpers::generated::bpf_get_prandom_u32(),
            aya_ebpf::helpers::generated::bpf_get_prandom_u32(),
        )
    };
    (u64::from(hi) << 32 | u64::from(lo)) | 1
}
