//! The process-lifecycle probe: raw tracepoints on `sched_process_exec`, `sched_process_fork`
//! and `sched_process_exit` write `odiglet_common::lifecycle` records into a ring buffer.
//!
//! Filtering happens here, before a record costs ring-buffer space: execs of ignored
//! executables (`/pause`, shells) and, when configured, of processes whose environment lacks a
//! variable are dropped; forks and exits are reported only for processes we track (ones whose
//! exec passed, their children, and the ones user space registers at start-up).
#![no_std]
#![no_main]

use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_boot_ns,
        bpf_probe_read_kernel_str_bytes,
        generated::{bpf_get_current_cgroup_id, bpf_probe_read_user, bpf_probe_read_user_str},
    },
    macros::{map, raw_tracepoint},
    maps::{HashMap, PerCpuArray, RingBuf},
    programs::RawTracePointContext,
};
use odiglet_common::lifecycle::{
    ARGS_LEN, COUNTER_ENV_FILTERED, COUNTER_IGNORED, COUNTER_READ_FAILED, COUNTER_RINGBUF_FULL,
    COUNTER_TRACK_FAILED, COUNTERS_LEN, ENV_FILTER_WORDS, EXE_LEN, EXEC_ARGS_OFFSET, ExecRecord,
    FLAG_ARGS_TRUNCATED, FLAG_ARGS_UNREADABLE, FLAG_EXE_TRUNCATED, IGNORED_EXE_LEN,
    IGNORED_EXES_MAX, KernelOffsets, LifecycleConfig, PROCESS_EXEC, PROCESS_EXIT, PROCESS_FORK,
    ProcessHeader, TRACKED_MAX,
};
use odiglet_ebpf::{parent_tgid, read_kernel_at, task_tgid, task_vpid};

/// Patched by user space at load time (`EbpfLoader::set_global`).
#[unsafe(no_mangle)]
static LIFECYCLE_CONFIG: LifecycleConfig = LifecycleConfig::zeroed();

/// User space sizes it at load time (`EbpfLoader::set_max_entries`).
#[map]
static LIFECYCLE_EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

#[map]
static LIFECYCLE_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTERS_LEN, 0);

/// Thread-group ids whose forks and exit we report. A plain hash map, not an LRU: when full,
/// inserts fail and are counted, where an LRU would evict silently and lose those exits.
/// Entries leave with their process's exit, so the map only fills with live processes.
#[map]
static TRACKED_PROCESSES: HashMap<u32, u8> = HashMap::with_max_entries(TRACKED_MAX, 0);

/// Executable paths, NUL-padded to `IGNORED_EXE_LEN`, whose execs are never reported.
#[map]
static IGNORED_EXES: HashMap<[u8; IGNORED_EXE_LEN], u8> =
    HashMap::with_max_entries(IGNORED_EXES_MAX, 0);

/// Bytes of one environment string read per step of the scan; longer strings take more steps.
const ENV_CHUNK: usize = 256;
/// Steps of the environment scan: bounds the verifier's work and the time spent per exec.
const ENV_SCAN_STEPS: u32 = 1536;

/// Per-CPU scratch space: the BPF stack is 512 bytes, too small for these buffers.
#[repr(C, align(8))]
struct Scratch {
    env_chunk: [u64; ENV_CHUNK / 8],
    exe_key: [u8; IGNORED_EXE_LEN],
    /// Built here and submitted up to its last argument byte, so an exec costs the ring its
    /// arguments' length, not the whole `args` buffer.
    record: ExecRecord,
}

#[map]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn odiglet_process_exec(ctx: RawTracePointContext) -> i32 {
    // SAFETY: the arguments of this tracepoint are (task_struct *, pid_t, linux_binprm *).
    match unsafe { try_exec(&ctx) } {
        Ok(()) => 0,
        Err(_) => {
            count(COUNTER_READ_FAILED);
            0
        }
    }
}

#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn odiglet_process_fork(ctx: RawTracePointContext) -> i32 {
    // SAFETY: the arguments of this tracepoint are (task_struct *parent, task_struct *child).
    match unsafe { try_fork(&ctx) } {
        Ok(()) => 0,
        Err(_) => {
            count(COUNTER_READ_FAILED);
            0
        }
    }
}

#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn odiglet_process_exit(ctx: RawTracePointContext) -> i32 {
    // SAFETY: the first argument of this tracepoint is the exiting task_struct *.
    match unsafe { try_exit(&ctx) } {
        Ok(()) => 0,
        Err(_) => {
            count(COUNTER_READ_FAILED);
            0
        }
    }
}

fn config_offsets() -> KernelOffsets {
    // SAFETY: a plain read of our own global; volatile so the compiler does not fold the
    // zeroed initializer that user space patches at load time.
    unsafe { core::ptr::read_volatile(&raw const LIFECYCLE_CONFIG.offsets) }
}

fn count(index: u32) {
    if let Some(counter) = LIFECYCLE_COUNTERS.get_ptr_mut(index) {
        // SAFETY: a per-CPU slot, so no other writer runs concurrently on it.
        unsafe { *counter += 1 };
    }
}

fn current_tgid() -> u32 {
    (bpf_get_current_pid_tgid() >> 32) as u32
}

unsafe fn try_exec(ctx: &RawTracePointContext) -> Result<(), i32> {
    let off = config_offsets();
    if off.task_tgid == 0 {
        return Err(-1); // not configured: user space always patches the offsets
    }
    let task: u64 = ctx.arg(0);
    let bprm: u64 = ctx.arg(2);
    let tgid = current_tgid();
    let scratch = SCRATCH.get_ptr_mut(0).ok_or(-1)?;
    // SAFETY: per-CPU scratch, used only for the duration of this program run.
    let scratch = unsafe { &mut *scratch };

    // SAFETY: `bprm` is this tracepoint's linux_binprm *; `interp` is a kernel char *.
    let interp: u64 = unsafe { read_kernel_at(bprm, off.bprm_interp)? };
    scratch.exe_key = [0; IGNORED_EXE_LEN];
    // SAFETY: kernel string read into our buffer; truncation is fine for a map key.
    let _ = unsafe { bpf_probe_read_kernel_str_bytes(interp as *const u8, &mut scratch.exe_key) };
    // An ignored or filtered exec leaves tracking as it was: a tracked process that execs a
    // shell still has its exit reported, so a consumer that saw it never misses its end.
    // SAFETY: a read-only lookup whose value we do not keep.
    if unsafe { IGNORED_EXES.get(scratch.exe_key) }.is_some() {
        count(COUNTER_IGNORED);
        return Ok(());
    }

    // SAFETY: `task` is this tracepoint's task_struct * (current, with its new mm).
    let mm: u64 = unsafe { read_kernel_at(task, off.task_mm)? };
    // SAFETY: as above, reading the env bounds of the freshly exec'd mm.
    if !unsafe { passes_env_filter(mm, &off, &mut scratch.env_chunk)? } {
        count(COUNTER_ENV_FILTERED);
        return Ok(());
    }

    if TRACKED_PROCESSES.insert(tgid, 1, 0).is_err() {
        count(COUNTER_TRACK_FAILED);
    }

    let record: *mut ExecRecord = &raw mut scratch.record;
    // SAFETY: `record` is this CPU's scratch record; every field submitted is written first,
    // and reads failing leave documented zero values.
    unsafe {
        let header = &mut (*record).header;
        header.kind = PROCESS_EXEC;
        header.pid = tgid;
        header.ppid = parent_tgid(task, &off).unwrap_or(0);
        header.vpid = task_vpid(task, &off).unwrap_or(0);
        header.cgroup_id = bpf_get_current_cgroup_id();
        header.boot_ns = bpf_ktime_get_boot_ns();
        header.comm = bpf_get_current_comm().unwrap_or([0; 16]);
        let mut flags = 0;
        let exe_len = match bpf_probe_read_kernel_str_bytes(interp as *const u8, &mut (*record).exe)
        {
            Ok(exe) => exe.len(),
            Err(_) => 0,
        };
        if exe_len >= EXE_LEN - 1 {
            flags |= FLAG_EXE_TRUNCATED;
        }
        (*record).exe_len = exe_len as u16;

        let arg_start: u64 = read_kernel_at(mm, off.mm_arg_start).unwrap_or(0);
        let arg_end: u64 = read_kernel_at(mm, off.mm_arg_end).unwrap_or(0);
        let mut args_len = arg_end.saturating_sub(arg_start);
        if args_len > ARGS_LEN as u64 {
            args_len = ARGS_LEN as u64;
            flags |= FLAG_ARGS_TRUNCATED;
        }
        let read = bpf_probe_read_user(
            (&raw mut (*record).args).cast(),
            args_len as u32,
            arg_start as *const _,
        );
        if read != 0 {
            args_len = 0;
            flags |= FLAG_ARGS_UNREADABLE;
        }
        (*record).args_len = args_len as u16;
        (*record).flags = flags;
    }
    let args_len = usize::from(scratch.record.args_len).min(ARGS_LEN);
    // SAFETY: the first bytes of the scratch record, which has at least that many.
    let bytes = unsafe {
        core::slice::from_raw_parts(
            (&raw const scratch.record).cast::<u8>(),
            EXEC_ARGS_OFFSET + args_len,
        )
    };
    if LIFECYCLE_EVENTS.output::<[u8]>(bytes, 0).is_err() {
        count(COUNTER_RINGBUF_FULL);
    }
    Ok(())
}

/// True when no filter is configured or the environment of `mm` holds the configured
/// `NAME=` prefix. Strings longer than a chunk are skipped in several steps.
unsafe fn passes_env_filter(
    mm: u64,
    off: &KernelOffsets,
    chunk: &mut [u64; ENV_CHUNK / 8],
) -> Result<bool, i32> {
    // SAFETY: a plain read of our own read-only global (see `config_offsets`).
    let filter_len =
        unsafe { core::ptr::read_volatile(&raw const LIFECYCLE_CONFIG.env_filter_len) };
    if filter_len == 0 {
        return Ok(true);
    }
    // SAFETY: `mm` is the task's mm_struct *.
    let (mut pos, end): (u64, u64) = unsafe {
        (
            read_kernel_at(mm, off.mm_env_start)?,
            read_kernel_at(mm, off.mm_env_end)?,
        )
    };
    let mut continuation = false;
    for _ in 0..ENV_SCAN_STEPS {
        if pos >= end {
            break;
        }
        // SAFETY: user-memory string read into our buffer, bounded by its length.
        let n = unsafe {
            bpf_probe_read_user_str(chunk.as_mut_ptr().cast(), ENV_CHUNK as u32, pos as *const _)
        };
        if n <= 0 {
            break;
        }
        let n = n as u64; // bytes copied, NUL included
        if !continuation && n > u64::from(filter_len) && starts_with_filter(chunk) {
            return Ok(true);
        }
        if n >= ENV_CHUNK as u64 {
            // Possibly cut short: continue inside the same string.
            pos += ENV_CHUNK as u64 - 1;
            continuation = true;
        } else {
            pos += n;
            continuation = false;
        }
    }
    Ok(false)
}

/// Masked comparison of the chunk's first `ENV_FILTER_LEN` bytes with the filter, a word at a
/// time: no byte loop for the verifier to walk.
#[inline(always)]
fn starts_with_filter(chunk: &[u64; ENV_CHUNK / 8]) -> bool {
    let mut i = 0;
    while i < ENV_FILTER_WORDS {
        // SAFETY: plain reads of our own read-only global; `i` is within both arrays.
        let (want, mask) = unsafe {
            (
                core::ptr::read_volatile(&raw const LIFECYCLE_CONFIG.env_filter[i]),
                core::ptr::read_volatile(&raw const LIFECYCLE_CONFIG.env_filter_mask[i]),
            )
        };
        if chunk[i] & mask != want {
            return false;
        }
        i += 1;
    }
    true
}

unsafe fn try_fork(ctx: &RawTracePointContext) -> Result<(), i32> {
    let off = config_offsets();
    if off.task_tgid == 0 {
        return Err(-1);
    }
    let child: u64 = ctx.arg(1);
    // SAFETY: `child` is this tracepoint's new task_struct *.
    let (child_tgid, child_pid) = unsafe {
        (
            task_tgid(child, &off)?,
            read_kernel_at::<u32>(child, off.task_pid)?,
        )
    };
    if child_tgid != child_pid {
        return Ok(()); // a new thread, not a new process
    }
    let parent = current_tgid();
    // SAFETY: a read-only lookup whose value we do not keep.
    if unsafe { TRACKED_PROCESSES.get(parent) }.is_none() {
        return Ok(());
    }
    if TRACKED_PROCESSES.insert(child_tgid, 1, 0).is_err() {
        count(COUNTER_TRACK_FAILED);
    }
    // SAFETY: `child` is this tracepoint's new task_struct *.
    let vpid = unsafe { task_vpid(child, &off) }.unwrap_or(0);
    // The child runs in its parent's cgroup (current's) until something moves it.
    emit_header(PROCESS_FORK, child_tgid, parent, vpid);
    Ok(())
}

unsafe fn try_exit(ctx: &RawTracePointContext) -> Result<(), i32> {
    let off = config_offsets();
    if off.task_tgid == 0 {
        return Err(-1);
    }
    let task: u64 = ctx.arg(0);
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if pid_tgid as u32 != tgid {
        return Ok(()); // a thread other than the main one
    }
    // SAFETY: a read-only lookup whose value we do not keep.
    if unsafe { TRACKED_PROCESSES.get(tgid) }.is_none() {
        return Ok(());
    }
    let _ = TRACKED_PROCESSES.remove(tgid);
    // SAFETY: `task` is the exiting task_struct * (current).
    let (ppid, vpid) = unsafe {
        (
            parent_tgid(task, &off).unwrap_or(0),
            task_vpid(task, &off).unwrap_or(0),
        )
    };
    emit_header(PROCESS_EXIT, tgid, ppid, vpid);
    Ok(())
}

/// Sends a header-only record; cgroup and comm are the current task's.
fn emit_header(kind: u32, pid: u32, ppid: u32, vpid: u32) {
    // SAFETY: helpers without arguments, callable from any tracing program.
    let (cgroup_id, boot_ns) = unsafe { (bpf_get_current_cgroup_id(), bpf_ktime_get_boot_ns()) };
    let header = ProcessHeader {
        kind,
        pid,
        ppid,
        vpid,
        cgroup_id,
        boot_ns,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    };
    if LIFECYCLE_EVENTS
        .output::<ProcessHeader>(&header, 0)
        .is_err()
    {
        count(COUNTER_RINGBUF_FULL);
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    // SAFETY: the verifier rejects any reachable panic path, so this is never executed.
    unsafe { core::hint::unreachable_unchecked() }
}
