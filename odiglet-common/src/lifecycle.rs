//! The process-lifecycle probe: its ring-buffer records, load-time configuration and counters.

/// A process replaced its image (`sched_process_exec`).
pub const PROCESS_EXEC: u32 = 1;
/// A new process (not a thread) was created (`sched_process_fork`).
pub const PROCESS_FORK: u32 = 2;
/// A process's main thread exited (`sched_process_exit`).
pub const PROCESS_EXIT: u32 = 3;

/// Bytes of the executable path kept per exec record.
pub const EXE_LEN: usize = 256;
/// Bytes of the NUL-separated argument block kept per exec record.
pub const ARGS_LEN: usize = 1024;
/// Longest environment-variable filter, `NAME=` included.
pub const ENV_FILTER_LEN: usize = 32;
/// `ENV_FILTER_LEN` in `u64` words: the probe compares the filter a word at a time.
pub const ENV_FILTER_WORDS: usize = ENV_FILTER_LEN / 8;
/// Key length of the ignored-executables map; shorter paths are NUL-padded.
pub const IGNORED_EXE_LEN: usize = 64;
/// Most entries the ignored-executables map holds.
pub const IGNORED_EXES_MAX: u32 = 32;
/// Processes tracked at once (their exits are reported, their forks inherit the verdict).
pub const TRACKED_MAX: u32 = 65_536;

/// `ExecRecord::flags` bit: the executable path did not fit in `exe`.
pub const FLAG_EXE_TRUNCATED: u32 = 1 << 0;
/// `ExecRecord::flags` bit: the argument block did not fit in `args`.
pub const FLAG_ARGS_TRUNCATED: u32 = 1 << 1;
/// `ExecRecord::flags` bit: reading the arguments from user memory failed.
pub const FLAG_ARGS_UNREADABLE: u32 = 1 << 2;

/// Index in the `LIFECYCLE_COUNTERS` per-CPU array: records lost because the ring buffer was full.
pub const COUNTER_RINGBUF_FULL: u32 = 0;
/// Index: kernel reads that failed (the event was still sent with what could be read).
pub const COUNTER_READ_FAILED: u32 = 1;
/// Index: processes that could not be tracked because the tracking map rejected the insert.
pub const COUNTER_TRACK_FAILED: u32 = 2;
/// Index: execs dropped by the environment filter.
pub const COUNTER_ENV_FILTERED: u32 = 3;
/// Index: execs dropped by the ignore list.
pub const COUNTER_IGNORED: u32 = 4;
/// Number of counters.
pub const COUNTERS_LEN: u32 = 5;

/// Fields common to every record. Fork and exit records are just this header.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessHeader {
    /// One of `PROCESS_EXEC`, `PROCESS_FORK`, `PROCESS_EXIT`.
    pub kind: u32,
    /// Host PID of the process (its thread-group id).
    pub pid: u32,
    /// Host PID of the parent process (`real_parent`'s thread-group id).
    pub ppid: u32,
    /// PID of the process in its innermost PID namespace.
    pub vpid: u32,
    /// Cgroup v2 id of the process.
    pub cgroup_id: u64,
    /// `bpf_ktime_get_boot_ns()` at the event.
    pub boot_ns: u64,
    /// `task->comm`, NUL-padded.
    pub comm: [u8; 16],
}

/// An exec record: the header plus what the new image was started with.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecRecord {
    pub header: ProcessHeader,
    /// `FLAG_*` bits.
    pub flags: u32,
    /// Bytes used in `exe` (no NUL).
    pub exe_len: u16,
    /// Bytes used in `args` (NUL-separated, as in `/proc/<pid>/cmdline`).
    pub args_len: u16,
    /// The executable as exec'd (`bprm->interp`: the interpreter for `#!` scripts).
    pub exe: [u8; EXE_LEN],
    pub args: [u8; ARGS_LEN],
}

/// The bytes of an [`ExecRecord`] before its arguments: a record on the ring ends after its
/// `args_len` argument bytes.
pub const EXEC_ARGS_OFFSET: usize = core::mem::offset_of!(ExecRecord, args);

/// Offsets into kernel structures, resolved by user space from the running kernel's BTF and
/// handed to the probe at load time: Rust eBPF has no CO-RE relocations, so this is our CO-RE.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    pub task_tgid: u32,
    pub task_pid: u32,
    pub task_real_parent: u32,
    pub task_mm: u32,
    pub task_thread_pid: u32,
    pub mm_arg_start: u32,
    pub mm_arg_end: u32,
    pub mm_env_start: u32,
    pub mm_env_end: u32,
    pub pid_level: u32,
    pub pid_numbers: u32,
    pub upid_size: u32,
    pub upid_nr: u32,
    pub bprm_interp: u32,
}

/// Load-time configuration of the lifecycle probe (a read-only global patched by user space).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LifecycleConfig {
    /// `NAME=` of the variable a process must have to be reported, NUL-padded, as native-endian
    /// words (first, so the words are 8-byte aligned).
    pub env_filter: [u64; ENV_FILTER_WORDS],
    /// All-ones bytes where `env_filter` is significant, zero elsewhere.
    pub env_filter_mask: [u64; ENV_FILTER_WORDS],
    pub offsets: KernelOffsets,
    /// Length of the filter in use, `=` included; 0 turns the environment filter off.
    pub env_filter_len: u32,
    /// Explicit padding, so the type has no implicit padding bytes.
    pub reserved: u32,
}

impl LifecycleConfig {
    /// Everything off; offsets zero. The probe refuses to run until user space fills it in.
    pub const fn zeroed() -> Self {
        Self {
            env_filter: [0; ENV_FILTER_WORDS],
            env_filter_mask: [0; ENV_FILTER_WORDS],
            offsets: KernelOffsets {
                task_tgid: 0,
                task_pid: 0,
                task_real_parent: 0,
                task_mm: 0,
                task_thread_pid: 0,
                mm_arg_start: 0,
                mm_arg_end: 0,
                mm_env_start: 0,
                mm_env_end: 0,
                pid_level: 0,
                pid_numbers: 0,
                upid_size: 0,
                upid_nr: 0,
                bprm_interp: 0,
            },
            env_filter_len: 0,
            reserved: 0,
        }
    }
}

const _: () = assert!(core::mem::size_of::<ProcessHeader>() == 48);
const _: () = assert!(core::mem::size_of::<ExecRecord>() == 48 + 8 + EXE_LEN + ARGS_LEN);
const _: () = assert!(core::mem::size_of::<KernelOffsets>() == 14 * 4);
const _: () = assert!(core::mem::size_of::<LifecycleConfig>() == 2 * ENV_FILTER_LEN + 14 * 4 + 8);
const _: () = assert!(
    ENV_FILTER_LEN.is_multiple_of(8),
    "the filter is compared in u64 words"
);
const _: () = assert!(ARGS_LEN.is_power_of_two() && EXE_LEN.is_power_of_two());

#[cfg(feature = "user")]
mod pod {
    use super::{ExecRecord, KernelOffsets, LifecycleConfig, ProcessHeader};

    // SAFETY: all four are `#[repr(C)]`, made only of integers and integer arrays, have no
    // padding (their sizes are asserted above), and every bit pattern is a valid value.
    unsafe impl aya::Pod for ProcessHeader {}
    // SAFETY: as above.
    unsafe impl aya::Pod for ExecRecord {}
    // SAFETY: as above.
    unsafe impl aya::Pod for KernelOffsets {}
    // SAFETY: as above.
    unsafe impl aya::Pod for LifecycleConfig {}
}
