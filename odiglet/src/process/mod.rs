//! Process lifecycle: which processes start, fork and exit on this node.
//!
//! [`ProcessWatcher`] loads the lifecycle probe (`probe`), registers the processes that already
//! run (`scan`), and streams [`ProcessEvent`]s read asynchronously from the probe's ring buffer.
//! Filtering (`filter`) happens in the kernel, so uninteresting processes cost no ring-buffer
//! space; drops and failures are counted ([`LifecycleCounters`]), never silent.

mod container;
mod filter;
mod kernel_offsets;
mod probe;
mod scan;

use std::path::PathBuf;

use serde::Serialize;

pub use container::{
    ContainerResolver, cgroup_path_from_proc, cgroup2_mount_from_mountinfo,
    container_id_from_cgroup_path,
};
pub use filter::{CLUSTER_ENV_FILTER, DEFAULT_IGNORED_EXES, FilterError, ProcessFilter};
pub use kernel_offsets::{KernelOffsetsError, VMLINUX_BTF};
pub use probe::{LifecycleCounters, ProcessError, ProcessWatcher};

/// What happened to a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProcessEventKind {
    /// It replaced its image (`execve`).
    Exec,
    /// It was created by `fork`/`clone` (not a thread).
    Fork,
    /// Its main thread exited.
    Exit,
    /// It was already running when the watcher started.
    Existing,
}

/// One process event. Serializes to the `odiglet processes --json` line format.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProcessEvent {
    #[serde(rename = "event")]
    pub kind: ProcessEventKind,
    /// Host PID (thread-group id).
    pub pid: u32,
    /// PID in the process's innermost PID namespace (its PID inside the container).
    pub vpid: u32,
    /// Host PID of the parent.
    pub ppid: u32,
    pub comm: String,
    /// Executable path; `None` where unknown (fork and exit events).
    pub exe: Option<String>,
    /// Arguments; `None` where unknown (fork and exit events).
    pub cmdline: Option<Vec<String>>,
    /// Cgroup v2 id.
    pub cgroup_id: u64,
    /// Container id from the cgroup path, when the process runs in a container.
    pub container_id: Option<String>,
    pub ts_unix_nano: u64,
}

/// Default lifecycle ring: ~530 execs with their fork and exit records (an exec record is cut
/// after its arguments: ~380 B for a typical command line, 1.3 KiB at most), ~100 ms of a
/// 5 000 exec/s storm. The kernel maps a ring's data twice, so it costs twice this resident;
/// an overflow only delays a process until the next rescan.
pub const DEFAULT_LIFECYCLE_RING_BYTES: u32 = 256 << 10;

/// Settings of a [`ProcessWatcher`].
#[derive(Clone, Debug)]
pub struct WatcherConfig {
    /// Root of the proc filesystem to scan and enrich from (`ODIGOS_PROC_DIR`).
    pub proc_root: PathBuf,
    /// Kernel BTF used to resolve structure offsets.
    pub btf_path: PathBuf,
    pub filter: ProcessFilter,
    /// Ring-buffer size in bytes (a power of two, multiple of the page size).
    pub ring_buffer_bytes: u32,
    /// Report processes already running at start-up as `Existing` events.
    pub scan_existing: bool,
    /// Events buffered between the reader and the consumer; when full the reader waits and the
    /// ring buffer absorbs the burst (overflowing it is counted in the kernel).
    pub channel_capacity: usize,
}

impl WatcherConfig {
    /// Standalone defaults: no environment filter, Odigos' ignore list, a
    /// [`DEFAULT_LIFECYCLE_RING_BYTES`] ring buffer.
    pub fn standalone() -> Self {
        Self {
            proc_root: PathBuf::from("/proc"),
            btf_path: PathBuf::from(VMLINUX_BTF),
            filter: ProcessFilter::standalone(),
            ring_buffer_bytes: DEFAULT_LIFECYCLE_RING_BYTES,
            scan_existing: true,
            channel_capacity: 4096,
        }
    }
}
