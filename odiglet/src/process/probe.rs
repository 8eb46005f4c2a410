//! Loads the lifecycle eBPF object, attaches its tracepoints and reads its ring buffer.

use std::{
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use aya::{
    Ebpf,
    maps::{HashMap as BpfHashMap, MapData, MapError, PerCpuArray, RingBuf},
    programs::{ProgramError, RawTracePoint},
};
use odiglet_common::{
    LifecycleRecord, decode_record,
    lifecycle::{
        COUNTER_ENV_FILTERED, COUNTER_IGNORED, COUNTER_READ_FAILED, COUNTER_RINGBUF_FULL,
        COUNTER_TRACK_FAILED, ExecRecord, LifecycleConfig,
    },
};
use tokio::{sync::mpsc, task::JoinHandle};
use tracing::{Instrument, debug, info_span, warn};

use super::{
    ProcessEvent, ProcessEventKind, WatcherConfig, container::ContainerResolver, kernel_offsets,
    scan,
};
use crate::{
    ebpf_objects,
    ring::{self, AsyncRingBuf},
    time::BootClock,
};

const PROGRAMS: [(&str, &str); 3] = [
    ("odiglet_process_exec", "sched_process_exec"),
    ("odiglet_process_fork", "sched_process_fork"),
    ("odiglet_process_exit", "sched_process_exit"),
];

/// How often the reader checks the kernel's drop counters and warns when they grew.
const COUNTER_CHECK_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error(transparent)]
    MissingObject(#[from] ebpf_objects::MissingObject),
    #[error("cannot resolve kernel structure offsets")]
    KernelOffsets(#[from] kernel_offsets::KernelOffsetsError),
    #[error("cannot load the lifecycle eBPF object (odiglet needs root or CAP_BPF+CAP_PERFMON)")]
    Load(#[source] aya::EbpfError),
    #[error("the lifecycle eBPF object lacks `{0}`")]
    MissingPart(&'static str),
    #[error("cannot load or attach `{program}` to tracepoint `{tracepoint}`")]
    Attach {
        program: &'static str,
        tracepoint: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("cannot use lifecycle map `{map}`")]
    Map {
        map: &'static str,
        #[source]
        source: MapError,
    },
    #[error("cannot register the ring buffer with the async runtime")]
    Poll(#[source] std::io::Error),
}

/// Counts of what the probe and its reader could not deliver or chose to drop.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LifecycleCounters {
    /// Records lost because the ring buffer was full.
    pub ringbuf_full: u64,
    /// Kernel reads that failed (events were sent with what could be read, or skipped).
    pub read_failed: u64,
    /// Processes the tracking map could not hold (their exit may go unreported).
    pub track_failed: u64,
    /// Execs dropped by the environment filter.
    pub env_filtered: u64,
    /// Execs dropped by the ignore list.
    pub ignored: u64,
    /// Records user space could not decode.
    pub decode_errors: u64,
}

impl LifecycleCounters {
    /// Events that should have been delivered and were not.
    pub fn lost(&self) -> u64 {
        self.ringbuf_full + self.track_failed + self.decode_errors
    }
}

struct CounterSource {
    kernel: Mutex<PerCpuArray<MapData, u64>>,
    decode_errors: AtomicU64,
}

impl CounterSource {
    fn read(&self) -> LifecycleCounters {
        let kernel = self
            .kernel
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let sum = |index| {
            kernel
                .get(&index, 0)
                .map_or(0, |per_cpu| per_cpu.iter().sum())
        };
        LifecycleCounters {
            ringbuf_full: sum(COUNTER_RINGBUF_FULL),
            read_failed: sum(COUNTER_READ_FAILED),
            track_failed: sum(COUNTER_TRACK_FAILED),
            env_filtered: sum(COUNTER_ENV_FILTERED),
            ignored: sum(COUNTER_IGNORED),
            decode_errors: self.decode_errors.load(Ordering::Relaxed),
        }
    }
}

/// A running lifecycle probe and the stream of its events. Dropping it detaches the probe.
pub struct ProcessWatcher {
    events: mpsc::Receiver<ProcessEvent>,
    counters: Arc<CounterSource>,
    /// Processes whose forks and exit the probe reports.
    tracked: Arc<Mutex<BpfHashMap<MapData, u32, u8>>>,
    reader: JoinHandle<()>,
}

impl ProcessWatcher {
    /// Loads and attaches the probe, scans running processes, and starts the reader task.
    /// Must be called inside a tokio runtime.
    pub fn start(config: WatcherConfig) -> Result<Self, ProcessError> {
        let object = ebpf_objects::lifecycle()?;
        let offsets = kernel_offsets::resolve(&config.btf_path)?;
        let (env_filter, env_filter_mask, env_filter_len) = config.filter.kernel_env_filter();
        let probe_config = LifecycleConfig {
            env_filter,
            env_filter_mask,
            offsets,
            env_filter_len,
            reserved: 0,
        };
        let mut ebpf = ebpf_objects::loader()
            .override_global("LIFECYCLE_CONFIG", &probe_config, true)
            .map_max_entries("LIFECYCLE_EVENTS", config.ring_buffer_bytes)
            .load(object)
            .map_err(ProcessError::Load)?;

        {
            let map = ebpf
                .map_mut("IGNORED_EXES")
                .ok_or(ProcessError::MissingPart("IGNORED_EXES"))?;
            let mut ignored: BpfHashMap<_, [u8; 64], u8> =
                BpfHashMap::try_from(map).map_err(|source| ProcessError::Map {
                    map: "IGNORED_EXES",
                    source,
                })?;
            for key in config.filter.ignored_exe_keys() {
                ignored
                    .insert(key, 1, 0)
                    .map_err(|source| ProcessError::Map {
                        map: "IGNORED_EXES",
                        source,
                    })?;
            }
        }

        for (program, tracepoint) in PROGRAMS {
            let attach = |ebpf: &mut Ebpf| -> Result<(), ProgramError> {
                let prog: &mut RawTracePoint = ebpf
                    .program_mut(program)
                    .ok_or(ProgramError::UnexpectedProgramType)?
                    .try_into()?;
                ebpf_objects::load_retrying(|| prog.load())?;
                prog.attach(tracepoint)?;
                Ok(())
            };
            attach(&mut ebpf).map_err(|source| ProcessError::Attach {
                program,
                tracepoint,
                source,
            })?;
        }

        let take = |ebpf: &mut Ebpf, name: &'static str| {
            ebpf.take_map(name).ok_or(ProcessError::MissingPart(name))
        };
        let ring = RingBuf::try_from(take(&mut ebpf, "LIFECYCLE_EVENTS")?).map_err(|source| {
            ProcessError::Map {
                map: "LIFECYCLE_EVENTS",
                source,
            }
        })?;
        let mut tracked: BpfHashMap<MapData, u32, u8> =
            BpfHashMap::try_from(take(&mut ebpf, "TRACKED_PROCESSES")?).map_err(|source| {
                ProcessError::Map {
                    map: "TRACKED_PROCESSES",
                    source,
                }
            })?;
        let kernel_counters = PerCpuArray::try_from(take(&mut ebpf, "LIFECYCLE_COUNTERS")?)
            .map_err(|source| ProcessError::Map {
                map: "LIFECYCLE_COUNTERS",
                source,
            })?;
        let ring = ring::register(ring).map_err(ProcessError::Poll)?;

        // The probe is attached before the scan, so a process is either seen exec'ing or
        // found here (a process starting in between may be reported both ways).
        let mut containers = ContainerResolver::new(&config.proc_root);
        let clock = BootClock::now();
        let existing = if config.scan_existing {
            scan::existing_processes(
                &config.proc_root,
                &config.filter,
                &mut containers,
                clock.unix_now_nanos(),
            )
        } else {
            Vec::new()
        };
        for event in &existing {
            // Tracked processes get their forks and exit reported.
            if let Err(error) = tracked.insert(event.pid, 1, 0) {
                warn!(pid = event.pid, %error, "cannot track running process; its exit may be missed");
            }
        }

        let counters = Arc::new(CounterSource {
            kernel: Mutex::new(kernel_counters),
            decode_errors: AtomicU64::new(0),
        });
        let (tx, events) = mpsc::channel(config.channel_capacity.max(1));
        let reader = Reader {
            _ebpf: ebpf,
            ring,
            tx,
            containers,
            proc_root: config.proc_root,
            counters: Arc::clone(&counters),
        };
        let reader = tokio::spawn(
            reader
                .run(existing)
                .instrument(info_span!("process_lifecycle")),
        );
        Ok(Self {
            events,
            counters,
            tracked: Arc::new(Mutex::new(tracked)),
            reader,
        })
    }

    /// The next event; `None` once the reader stopped.
    pub async fn next(&mut self) -> Option<ProcessEvent> {
        self.events.recv().await
    }

    /// Current drop and filter counts.
    pub fn counters(&self) -> LifecycleCounters {
        self.counters.read()
    }

    /// Reports `pid`'s exit (and forks) from now on, though the filter did not select it: for
    /// processes instrumented because the cluster asked, not because they exec'd.
    pub fn track(&self, pid: u32) -> Result<(), ProcessError> {
        self.tracked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(pid, 1, 0)
            .map_err(|source| ProcessError::Map {
                map: "TRACKED_PROCESSES",
                source,
            })
    }
}

impl Drop for ProcessWatcher {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// The reader task: owns the eBPF object (dropping it detaches the programs).
struct Reader {
    /// Kept so the programs stay attached while the reader runs.
    _ebpf: Ebpf,
    ring: AsyncRingBuf,
    tx: mpsc::Sender<ProcessEvent>,
    containers: ContainerResolver,
    proc_root: std::path::PathBuf,
    counters: Arc<CounterSource>,
}

impl Reader {
    async fn run(mut self, existing: Vec<ProcessEvent>) {
        for event in existing {
            if self.tx.send(event).await.is_err() {
                return;
            }
        }
        let mut batch: Vec<LifecycleRecord> = Vec::new();
        let mut check = tokio::time::interval(COUNTER_CHECK_INTERVAL);
        let mut reported = LifecycleCounters::default();
        loop {
            tokio::select! {
                ready = ring::wait_ready(&mut self.ring) => {
                    if let Err(error) = ready {
                        warn!(%error, "lifecycle ring buffer poll failed; stopping");
                        return;
                    }
                    let ring = self.ring.get_mut();
                    while let Some(item) = ring.next() {
                        match decode_record(&item) {
                            Ok(record) => batch.push(record),
                            Err(error) => {
                                self.counters.decode_errors.fetch_add(1, Ordering::Relaxed);
                                debug!(%error, "undecodable lifecycle record");
                            }
                        }
                    }
                }
                _ = check.tick() => {
                    let now = self.counters.read();
                    if now.lost() > reported.lost() {
                        warn!(
                            ringbuf_full = now.ringbuf_full,
                            track_failed = now.track_failed,
                            decode_errors = now.decode_errors,
                            "process events were lost"
                        );
                    }
                    reported = now;
                    continue;
                }
                _ = self.tx.closed() => return,
            }
            let clock = BootClock::now();
            for record in batch.drain(..) {
                let event = to_event(record, &clock, &mut self.containers, &self.proc_root);
                if self.tx.send(event).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Turns a kernel record into an event: wall-clock time, text fields, container id.
pub(crate) fn to_event(
    record: LifecycleRecord,
    clock: &BootClock,
    containers: &mut ContainerResolver,
    proc_root: &Path,
) -> ProcessEvent {
    let (kind, header, exec) = match &record {
        LifecycleRecord::Exec(exec) => (ProcessEventKind::Exec, &exec.header, Some(exec)),
        LifecycleRecord::Fork(header) => (ProcessEventKind::Fork, header, None),
        LifecycleRecord::Exit(header) => (ProcessEventKind::Exit, header, None),
    };
    ProcessEvent {
        kind,
        pid: header.pid,
        vpid: header.vpid,
        ppid: header.ppid,
        comm: nul_terminated(&header.comm),
        exe: exec.map(|exec| exe_path(exec, proc_root)),
        cmdline: exec.map(cmdline),
        cgroup_id: header.cgroup_id,
        container_id: containers.container_id(header.pid, header.cgroup_id),
        ts_unix_nano: clock.boot_to_unix_nanos(header.boot_ns),
    }
}

fn nul_terminated(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// The path as exec'd; a relative one is made absolute against the process's working
/// directory while it is still there to read.
fn exe_path(exec: &ExecRecord, proc_root: &Path) -> String {
    let len = usize::from(exec.exe_len).min(exec.exe.len());
    let exe = String::from_utf8_lossy(&exec.exe[..len]).into_owned();
    if exe.starts_with('/') {
        return exe;
    }
    match std::fs::read_link(proc_root.join(format!("{}/cwd", exec.header.pid))) {
        Ok(cwd) => cwd.join(&exe).to_string_lossy().into_owned(),
        Err(_) => exe,
    }
}

fn cmdline(exec: &ExecRecord) -> Vec<String> {
    let len = usize::from(exec.args_len).min(exec.args.len());
    let args = &exec.args[..len];
    let args = args.strip_suffix(&[0]).unwrap_or(args);
    if args.is_empty() {
        return Vec::new();
    }
    args.split(|b| *b == 0)
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use odiglet_common::lifecycle::{ARGS_LEN, EXE_LEN, PROCESS_EXEC, PROCESS_EXIT, ProcessHeader};

    use super::*;

    fn header_for_tests(kind: u32, pid: u32) -> ProcessHeader {
        ProcessHeader {
            kind,
            pid,
            ppid: 1,
            vpid: 1,
            cgroup_id: 0,
            boot_ns: 0,
            comm: [0; 16],
        }
    }

    fn exec_record(exe: &[u8], args: &[u8]) -> ExecRecord {
        let mut record = ExecRecord {
            header: header_for_tests(PROCESS_EXEC, 4242),
            flags: 0,
            exe_len: exe.len() as u16,
            args_len: args.len() as u16,
            exe: [0; EXE_LEN],
            args: [0; ARGS_LEN],
        };
        record.exe[..exe.len()].copy_from_slice(exe);
        record.args[..args.len()].copy_from_slice(args);
        record.header.comm[..4].copy_from_slice(b"echo");
        record
    }

    #[test]
    fn exec_record_becomes_event() {
        let mut containers = ContainerResolver::new(Path::new("/nonexistent"));
        let clock = BootClock::fixed(1_000, 5_000);
        let mut record = exec_record(b"/bin/echo", b"/bin/echo\0hello world\0\0x\0");
        record.header.boot_ns = 8_000;
        let event = to_event(
            LifecycleRecord::Exec(record),
            &clock,
            &mut containers,
            Path::new("/nonexistent"),
        );
        assert_eq!(event.kind, ProcessEventKind::Exec);
        assert_eq!(event.pid, 4242);
        assert_eq!(event.comm, "echo");
        assert_eq!(event.exe.as_deref(), Some("/bin/echo"));
        assert_eq!(
            event.cmdline,
            Some(vec![
                "/bin/echo".into(),
                "hello world".into(),
                "".into(),
                "x".into()
            ])
        );
        assert_eq!(event.ts_unix_nano, 4_000);
        assert_eq!(event.container_id, None);
    }

    #[test]
    fn lengths_beyond_buffers_are_clamped() {
        let mut record = exec_record(b"/bin/x", b"a\0");
        record.exe_len = u16::MAX;
        record.args_len = u16::MAX;
        let event = to_event(
            LifecycleRecord::Exec(record),
            &BootClock::fixed(0, 0),
            &mut ContainerResolver::new(Path::new("/nonexistent")),
            Path::new("/nonexistent"),
        );
        assert!(event.exe.unwrap().starts_with("/bin/x"));
        assert_eq!(event.cmdline.unwrap().len(), ARGS_LEN - 1);
    }

    #[test]
    fn exit_event_has_no_exe() {
        let event = to_event(
            LifecycleRecord::Exit(header_for_tests(PROCESS_EXIT, 7)),
            &BootClock::fixed(0, 0),
            &mut ContainerResolver::new(Path::new("/nonexistent")),
            Path::new("/nonexistent"),
        );
        assert_eq!(
            (event.kind, event.exe, event.cmdline),
            (ProcessEventKind::Exit, None, None)
        );
    }

    #[test]
    fn json_line_has_the_cli_contract_fields() {
        let event = to_event(
            LifecycleRecord::Exit(header_for_tests(PROCESS_EXIT, 7)),
            &BootClock::fixed(0, 0),
            &mut ContainerResolver::new(Path::new("/nonexistent")),
            Path::new("/nonexistent"),
        );
        let json: serde_json::Value = serde_json::to_value(&event).unwrap();
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        for key in [
            "event",
            "pid",
            "vpid",
            "ppid",
            "comm",
            "exe",
            "cmdline",
            "cgroup_id",
            "container_id",
            "ts_unix_nano",
        ] {
            assert!(keys.contains(&key), "missing {key} in {json}");
        }
        assert_eq!(json["event"], "exit");
        assert!(json["exe"].is_null());
    }
}
