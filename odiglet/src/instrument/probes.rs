//! The Go probe object: loading, per-process attach and detach, runtime library switches.
//!
//! Uprobes are attached per process through uprobe-multi links where the kernel has them
//! (one per program, covering an entry or all RETs), else one perf event per probe point.
//! A process is instrumented while its offsets are in `GO_PROCESSES`: detaching removes them
//! first, which makes its probes inert at once, and hands its links to the owner to close
//! ([`ReleasedLinks`]). Closing a link takes the kernel a grace period (a perf-event link
//! ~14 ms idle and ~100 ms under load, serialized; see `uprobe_multi`), so it stays off the
//! hot path, and at shutdown overlaps the rest.

use std::{
    collections::HashMap,
    fs::File,
    num::NonZeroU32,
    os::fd::AsFd,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf,
    maps::{HashMap as BpfHashMap, MapData, MapError, PerCpuArray, RingBuf, SockHash},
    programs::{
        CgroupAttachMode, ProgramError, SkMsg, SockOps, UProbe,
        sk_msg::SkMsgLinkId,
        sock_ops::SockOpsLinkId,
        uprobe::{UProbeAttachLocation, UProbeLink, UProbeLinkId, UProbeScope},
    },
};
use odiglet_common::go::{
    ClientCall, DbSpan, GO_COUNTER_DOUBLE_ENTRY, GO_COUNTER_INJECT_FAILED,
    GO_COUNTER_INJECT_SKIPPED, GO_COUNTER_INJECTED, GO_COUNTER_MISSING_ENTRY,
    GO_COUNTER_READ_FAILED, GO_COUNTER_RINGBUF_FULL, GO_COUNTER_TRACEPARENT_UNSEARCHED, GoOffsets,
    GoroutineKey, GrpcClientSpan, GrpcServerSpan, ServerCall, SpanContext,
};
use tokio::sync::oneshot;
use tracing::{debug, warn};

use super::uprobe_multi::{self, MultiLink};
use crate::ebpf_objects;

const SERVER_ENTRY: &str = "odiglet_go_http_server_entry";
const SERVER_RETURN: &str = "odiglet_go_http_server_return";
const CLIENT_ENTRY: &str = "odiglet_go_http_client_entry";
const CLIENT_RETURN: &str = "odiglet_go_http_client_return";
const CONNECTION_ENTRY: &str = "odiglet_go_http_conn_entry";
const SQL_QUERY_ENTRY: &str = "odiglet_go_sql_query_entry";
const SQL_QUERY_RETURN: &str = "odiglet_go_sql_query_return";
const SQL_EXEC_ENTRY: &str = "odiglet_go_sql_exec_entry";
const SQL_EXEC_RETURN: &str = "odiglet_go_sql_exec_return";
const SQL_STMT_QUERY_ENTRY: &str = "odiglet_go_sql_stmt_query_entry";
const SQL_STMT_EXEC_ENTRY: &str = "odiglet_go_sql_stmt_exec_entry";
const GRPC_SERVER_ENTRY: &str = "odiglet_go_grpc_server_entry";
const GRPC_SERVER_RETURN: &str = "odiglet_go_grpc_server_return";
const GRPC_STATUS_ENTRY: &str = "odiglet_go_grpc_status_entry";
const GRPC_HEADERS_ENTRY: &str = "odiglet_go_grpc_headers_entry";
const GRPC_CLIENT_ENTRY: &str = "odiglet_go_grpc_client_entry";
const GRPC_CLIENT_RETURN: &str = "odiglet_go_grpc_client_return";
const GRPC_STREAM_ENTRY: &str = "odiglet_go_grpc_stream_entry";
const UPROBES: [&str; 18] = [
    SERVER_ENTRY,
    SERVER_RETURN,
    CLIENT_ENTRY,
    CLIENT_RETURN,
    CONNECTION_ENTRY,
    SQL_QUERY_ENTRY,
    SQL_QUERY_RETURN,
    SQL_EXEC_ENTRY,
    SQL_EXEC_RETURN,
    SQL_STMT_QUERY_ENTRY,
    SQL_STMT_EXEC_ENTRY,
    GRPC_SERVER_ENTRY,
    GRPC_SERVER_RETURN,
    GRPC_STATUS_ENTRY,
    GRPC_HEADERS_ENTRY,
    GRPC_CLIENT_ENTRY,
    GRPC_CLIENT_RETURN,
    GRPC_STREAM_ENTRY,
];
const SOCK_OPS: &str = "odiglet_sock_ops";
const SK_MSG: &str = "odiglet_sk_msg_inject";

#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error(transparent)]
    MissingObject(#[from] ebpf_objects::MissingObject),
    #[error("cannot load the Go eBPF object (odiglet needs root or CAP_BPF+CAP_PERFMON)")]
    Load(#[source] Box<aya::EbpfError>),
    #[error("the Go eBPF object lacks `{0}`")]
    MissingPart(&'static str),
    #[error("cannot load program `{program}`")]
    LoadProgram {
        program: &'static str,
        // Boxed: aya's errors are large and this enum travels in every Result here.
        #[source]
        source: Box<ProgramError>,
    },
    #[error("pid {pid}: cannot attach `{program}` at file offset {offset:#x} of {}", exe.display())]
    Attach {
        pid: u32,
        program: &'static str,
        offset: u64,
        exe: PathBuf,
        #[source]
        source: Box<ProgramError>,
    },
    #[error("pid {pid}: cannot update map `{map}`")]
    Map {
        pid: u32,
        map: &'static str,
        #[source]
        source: MapError,
    },
    #[error("cannot attach socket programs to cgroup {}", path.display())]
    Cgroup {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("pid {pid}: cannot attach `{program}` at {count} offsets of {}", exe.display())]
    AttachMulti {
        pid: u32,
        program: &'static str,
        count: usize,
        exe: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("pid {0} is not a valid process id")]
    BadPid(u32),
    #[error("the span ring buffer was already taken")]
    SpansTaken,
}

/// Where one function's probes go, as file offsets into the executable.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FunctionOffsets {
    pub entry: u64,
    pub returns: Vec<u64>,
}

/// What to attach to one process.
#[derive(Clone, Debug)]
pub struct ProcessTargets {
    /// The executable to attach to; `/proc/<pid>/exe` works across mount namespaces.
    pub exe: PathBuf,
    pub offsets: GoOffsets,
    pub http_server: Option<FunctionOffsets>,
    pub http_client: Option<FunctionOffsets>,
    /// `(*persistConn).roundTrip`: only its entry is used (outgoing propagation).
    pub connection: Option<FunctionOffsets>,
    /// `database/sql.(*DB).queryDC` and `execDC`.
    pub sql_query: Option<FunctionOffsets>,
    pub sql_exec: Option<FunctionOffsets>,
    /// `database/sql.(*Stmt).QueryContext` and `ExecContext` (prepared statements; their
    /// results are those of `queryDC` and `execDC`, so the same return probes serve).
    pub sql_stmt_query: Option<FunctionOffsets>,
    pub sql_stmt_exec: Option<FunctionOffsets>,
    /// gRPC server: `handleStream`, plus the entries of `WriteStatus` and `operateHeaders`.
    pub grpc_server: Option<FunctionOffsets>,
    pub grpc_status: Option<FunctionOffsets>,
    pub grpc_headers: Option<FunctionOffsets>,
    /// gRPC client: `Invoke`, plus the entry of `(*http2Client).NewStream` (propagation).
    pub grpc_client: Option<FunctionOffsets>,
    pub grpc_stream: Option<FunctionOffsets>,
}

/// Counts from the probes (summed over CPUs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GoCounters {
    pub ringbuf_full: u64,
    pub double_entry: u64,
    pub missing_entry: u64,
    pub read_failed: u64,
    pub injected: u64,
    pub inject_skipped: u64,
    pub inject_failed: u64,
    /// Requests whose header map exceeded the search bounds without a `traceparent` found.
    pub traceparent_unsearched: u64,
}

/// How the uprobes are attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UprobeLinks {
    /// `BPF_TRACE_UPROBE_MULTI` links (Linux 6.6+): one per program and process.
    Multi,
    /// One perf event per probe point and process (older kernels).
    PerfEvent,
}

/// The loaded Go probe object and its attachments.
pub struct GoProbes {
    ebpf: Ebpf,
    links: UprobeLinks,
    processes: BpfHashMap<MapData, u32, GoOffsets>,
    counters: PerCpuArray<MapData, u64>,
    attached: HashMap<u32, AttachedProcess>,
    /// Links of detached processes, until the owner takes them to close.
    released: ReleasedLinks,
    /// Set once outgoing propagation is attached; dropping the links detaches.
    propagation: Option<(SkMsgLinkId, SockOpsLinkId)>,
}

/// What one attached process holds.
struct AttachedProcess {
    multi: Vec<MultiLink>,
    perf: Vec<(&'static str, UProbeLinkId)>,
    /// Libraries whose probes are attached: what `set_libraries` can turn on.
    libraries: u32,
}

impl AttachedProcess {
    fn links(&self) -> usize {
        self.multi.len() + self.perf.len()
    }
}

/// Threads closing uprobe-multi links at once (each waits for a grace period).
const MAX_CLOSING_THREADS: usize = 16;

/// Uprobe links of detached processes (inert: their processes are out of `GO_PROCESSES`).
/// Dropping them, or [`ReleasedLinks::close`], removes them from the kernel, a grace period
/// each: do it off any hot path.
#[derive(Debug, Default)]
#[must_use = "dropping the links closes them, slowly; close them where that is acceptable"]
pub struct ReleasedLinks {
    multi: Vec<MultiLink>,
    perf: Vec<UProbeLink>,
}

impl ReleasedLinks {
    pub fn len(&self) -> usize {
        self.multi.len() + self.perf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Closes every link (blocking: a grace period each). A uprobe-multi link holds no global
    /// lock while it waits, so those are closed from several threads and their waits overlap;
    /// perf events are serialized by the kernel's event mutex whatever we do.
    pub fn close(self) {
        let Self { multi, perf } = self;
        let threads = multi.len().min(MAX_CLOSING_THREADS);
        let mut shares: Vec<Vec<MultiLink>> = (0..threads).map(|_| Vec::new()).collect();
        for (i, link) in multi.into_iter().enumerate() {
            shares[i % threads].push(link);
        }
        std::thread::scope(|scope| {
            for share in shares {
                let spawned = std::thread::Builder::new()
                    .name("close-uprobes".into())
                    .spawn_scoped(scope, move || drop(share));
                if let Err(error) = spawned {
                    // The share was dropped with the closure: closed on this thread.
                    debug!(%error, "closing uprobe links on the calling thread");
                }
            }
            drop(perf);
        });
    }

    /// Closes the links on a thread of their own, which the process does not wait for at exit
    /// (the kernel closes what is left then); a blocking-pool task would hold up the runtime's
    /// shutdown.
    pub fn close_in_background(self) -> ClosingLinks {
        let count = self.len();
        if count == 0 {
            return ClosingLinks { count, done: None };
        }
        let (closed, done) = oneshot::channel();
        let spawned = std::thread::Builder::new()
            .name("close-uprobes".into())
            .spawn(move || {
                self.close();
                let _ = closed.send(());
            });
        if let Err(error) = spawned {
            // The closure (and the links) were dropped: closed on this thread.
            warn!(%error, "cannot start a thread to close uprobe links");
            return ClosingLinks { count, done: None };
        }
        ClosingLinks {
            count,
            done: Some(done),
        }
    }
}

/// Links being closed by [`ReleasedLinks::close_in_background`].
#[derive(Debug)]
pub struct ClosingLinks {
    count: usize,
    done: Option<oneshot::Receiver<()>>,
}

impl ClosingLinks {
    pub fn count(&self) -> usize {
        self.count
    }

    /// Waits until every link is closed.
    pub async fn finished(self) {
        if let Some(done) = self.done {
            let _ = done.await;
        }
    }
}

impl GoProbes {
    /// Loads the object and every program, for uprobe-multi links where the kernel has them;
    /// nothing is attached yet.
    pub fn load(ring_buffer_bytes: u32) -> Result<Self, AttachError> {
        Self::load_for(ring_buffer_bytes, None)
    }

    /// As [`GoProbes::load`], for the given kind of links (`None`: the best the kernel has).
    pub fn load_for(
        ring_buffer_bytes: u32,
        links: Option<UprobeLinks>,
    ) -> Result<Self, AttachError> {
        let object = ebpf_objects::go_http()?;
        let mut ebpf = ebpf_objects::loader()
            .map_max_entries("GO_SPANS", ring_buffer_bytes)
            .load(object)
            .map_err(|e| AttachError::Load(Box::new(e)))?;
        let load = |ebpf: &mut Ebpf, program, links| -> Result<(), ProgramError> {
            let probe: &mut UProbe = ebpf
                .program_mut(program)
                .ok_or(ProgramError::UnexpectedProgramType)?
                .try_into()?;
            ebpf_objects::load_retrying(|| match links {
                UprobeLinks::Multi => probe.load_multi(),
                UprobeLinks::PerfEvent => probe.load(),
            })
        };
        // A kernel without uprobe-multi refuses the first load for it; a failed load leaves
        // the program loadable again.
        let links =
            links.unwrap_or_else(|| match load(&mut ebpf, UPROBES[0], UprobeLinks::Multi) {
                Ok(()) => UprobeLinks::Multi,
                Err(error) => {
                    debug!(%error, "no uprobe-multi links; one perf event per probe point");
                    UprobeLinks::PerfEvent
                }
            });
        for program in UPROBES {
            let loaded = ebpf
                .program(program)
                .and_then(|p| <&UProbe>::try_from(p).ok())
                .is_some_and(|p| p.fd().is_ok());
            if loaded {
                continue;
            }
            load(&mut ebpf, program, links).map_err(|source| AttachError::LoadProgram {
                program,
                source: Box::new(source),
            })?;
        }
        let processes = BpfHashMap::try_from(
            ebpf.take_map("GO_PROCESSES")
                .ok_or(AttachError::MissingPart("GO_PROCESSES"))?,
        )
        .map_err(|source| AttachError::Map {
            pid: 0,
            map: "GO_PROCESSES",
            source,
        })?;
        let counters = PerCpuArray::try_from(
            ebpf.take_map("GO_COUNTERS")
                .ok_or(AttachError::MissingPart("GO_COUNTERS"))?,
        )
        .map_err(|source| AttachError::Map {
            pid: 0,
            map: "GO_COUNTERS",
            source,
        })?;
        Ok(Self {
            ebpf,
            links,
            processes,
            counters,
            attached: HashMap::new(),
            released: ReleasedLinks::default(),
            propagation: None,
        })
    }

    /// The span ring buffer, for the pipeline. Can be taken once.
    pub fn take_spans(&mut self) -> Result<RingBuf<MapData>, AttachError> {
        let map = self
            .ebpf
            .take_map("GO_SPANS")
            .ok_or(AttachError::SpansTaken)?;
        RingBuf::try_from(map).map_err(|source| AttachError::Map {
            pid: 0,
            map: "GO_SPANS",
            source,
        })
    }

    /// Attaches to `pid`. Offsets are published before the probes attach, so the first hit
    /// already finds them; on any failure everything attached so far is undone. A process
    /// attached before is detached first (its links released).
    pub fn attach(&mut self, pid: u32, targets: &ProcessTargets) -> Result<(), AttachError> {
        // Uprobes scoped to the process: the kernel installs them in its memory only, so other
        // processes running the same file never trap.
        let scope = UProbeScope::OneProcess(NonZeroU32::new(pid).ok_or(AttachError::BadPid(pid))?);
        self.detach(pid);
        self.processes
            .insert(pid, targets.offsets, 0)
            .map_err(|source| AttachError::Map {
                pid,
                map: "GO_PROCESSES",
                source,
            })?;
        let mut plan: Vec<(&'static str, u64)> = Vec::new();
        for (function, entry, ret) in [
            (
                &targets.http_server,
                Some(SERVER_ENTRY),
                Some(SERVER_RETURN),
            ),
            (
                &targets.http_client,
                Some(CLIENT_ENTRY),
                Some(CLIENT_RETURN),
            ),
            (&targets.connection, Some(CONNECTION_ENTRY), None),
            (
                &targets.sql_query,
                Some(SQL_QUERY_ENTRY),
                Some(SQL_QUERY_RETURN),
            ),
            (
                &targets.sql_exec,
                Some(SQL_EXEC_ENTRY),
                Some(SQL_EXEC_RETURN),
            ),
            (
                &targets.sql_stmt_query,
                Some(SQL_STMT_QUERY_ENTRY),
                Some(SQL_QUERY_RETURN),
            ),
            (
                &targets.sql_stmt_exec,
                Some(SQL_STMT_EXEC_ENTRY),
                Some(SQL_EXEC_RETURN),
            ),
            (
                &targets.grpc_server,
                Some(GRPC_SERVER_ENTRY),
                Some(GRPC_SERVER_RETURN),
            ),
            (&targets.grpc_status, Some(GRPC_STATUS_ENTRY), None),
            (&targets.grpc_headers, Some(GRPC_HEADERS_ENTRY), None),
            (
                &targets.grpc_client,
                Some(GRPC_CLIENT_ENTRY),
                Some(GRPC_CLIENT_RETURN),
            ),
            (&targets.grpc_stream, Some(GRPC_STREAM_ENTRY), None),
        ] {
            let Some(function) = function else { continue };
            if let Some(entry) = entry {
                plan.push((entry, function.entry));
            }
            if let Some(ret) = ret {
                plan.extend(function.returns.iter().map(|offset| (ret, *offset)));
            }
        }
        let mut process = AttachedProcess {
            multi: Vec::new(),
            perf: Vec::new(),
            libraries: targets.offsets.enabled_libraries,
        };
        let attached = match self.links {
            UprobeLinks::Multi => self.attach_multi(pid, &targets.exe, &plan, &mut process),
            UprobeLinks::PerfEvent => {
                self.attach_perf(pid, &targets.exe, scope, &plan, &mut process)
            }
        };
        self.attached.insert(pid, process);
        if let Err(error) = attached {
            self.detach(pid);
            return Err(error);
        }
        debug!(pid, probes = plan.len(), links = ?self.links, "attached Go probes");
        Ok(())
    }

    /// One link per program, at all of its offsets in the plan.
    fn attach_multi(
        &mut self,
        pid: u32,
        exe: &Path,
        plan: &[(&'static str, u64)],
        process: &mut AttachedProcess,
    ) -> Result<(), AttachError> {
        let mut by_program: Vec<(&'static str, Vec<u64>)> = Vec::new();
        for &(program, offset) in plan {
            match by_program.iter_mut().find(|(p, _)| *p == program) {
                Some((_, offsets)) => offsets.push(offset),
                None => by_program.push((program, vec![offset])),
            }
        }
        for (program, offsets) in by_program {
            let probe: &UProbe = self
                .ebpf
                .program(program)
                .ok_or(AttachError::MissingPart(program))?
                .try_into()
                .map_err(|source| AttachError::LoadProgram {
                    program,
                    source: Box::new(source),
                })?;
            let fd = probe.fd().map_err(|source| AttachError::LoadProgram {
                program,
                source: Box::new(source),
            })?;
            let link = uprobe_multi::attach(fd.as_fd(), exe, &offsets, pid).map_err(|source| {
                AttachError::AttachMulti {
                    pid,
                    program,
                    count: offsets.len(),
                    exe: exe.to_owned(),
                    source,
                }
            })?;
            process.multi.push(link);
        }
        Ok(())
    }

    /// One perf event per probe point.
    fn attach_perf(
        &mut self,
        pid: u32,
        exe: &Path,
        scope: UProbeScope,
        plan: &[(&'static str, u64)],
        process: &mut AttachedProcess,
    ) -> Result<(), AttachError> {
        for &(program, offset) in plan {
            let link =
                attach_uprobe(&mut self.ebpf, program, offset, exe, scope).map_err(|source| {
                    AttachError::Attach {
                        pid,
                        program,
                        offset,
                        exe: exe.to_owned(),
                        source: Box::new(source),
                    }
                })?;
            process.perf.push((program, link));
        }
        Ok(())
    }

    /// How this instance attaches its uprobes.
    pub fn link_kind(&self) -> UprobeLinks {
        self.links
    }

    /// Turns on outgoing `traceparent` injection for client sockets that attached processes
    /// connect from now on in `cgroup` (a cgroup v2 directory; its descendants are covered
    /// too). Sockets of processes this instance does not instrument are left alone (a socket
    /// runs one sockmap's `sk_msg` only: another odiglet, or a CNI, may own them). Idempotent.
    pub fn enable_propagation(&mut self, cgroup: &Path) -> Result<(), AttachError> {
        if self.propagation.is_some() {
            return Ok(());
        }
        let failed = |program: &'static str| {
            move |source: ProgramError| AttachError::LoadProgram {
                program,
                source: Box::new(source),
            }
        };
        let sockets: SockHash<_, u32> = SockHash::try_from(
            self.ebpf
                .map("SOCKETS")
                .ok_or(AttachError::MissingPart("SOCKETS"))?,
        )
        .map_err(|source| AttachError::Map {
            pid: 0,
            map: "SOCKETS",
            source,
        })?;
        let sockets_fd = sockets.fd().try_clone().map_err(|e| AttachError::Cgroup {
            path: cgroup.to_owned(),
            source: e,
        })?;
        let sk_msg: &mut SkMsg = self
            .ebpf
            .program_mut(SK_MSG)
            .ok_or(AttachError::MissingPart(SK_MSG))?
            .try_into()
            .map_err(failed(SK_MSG))?;
        ebpf_objects::load_retrying(|| sk_msg.load()).map_err(failed(SK_MSG))?;
        let msg_link = sk_msg.attach(&sockets_fd).map_err(failed(SK_MSG))?;
        let cgroup_dir = File::open(cgroup).map_err(|source| AttachError::Cgroup {
            path: cgroup.to_owned(),
            source,
        })?;
        let sock_ops: &mut SockOps = self
            .ebpf
            .program_mut(SOCK_OPS)
            .ok_or(AttachError::MissingPart(SOCK_OPS))?
            .try_into()
            .map_err(failed(SOCK_OPS))?;
        ebpf_objects::load_retrying(|| sock_ops.load()).map_err(failed(SOCK_OPS))?;
        // A link-based attachment, so it coexists with other programs (a CNI's) on the cgroup.
        let ops_link = sock_ops
            .attach(cgroup_dir, CgroupAttachMode::default())
            .map_err(failed(SOCK_OPS))?;
        self.propagation = Some((msg_link, ops_link));
        Ok(())
    }

    /// Switches libraries (`GO_LIBRARY_*` bits, see `library_bits`) on or off for an attached
    /// process without re-attaching: takes effect at the next call. Only libraries attached
    /// (those `resolve_targets` enabled) can be turned on.
    pub fn set_libraries(&mut self, pid: u32, enabled_libraries: u32) -> Result<(), AttachError> {
        let attachable = self.attached.get(&pid).map_or(0, |p| p.libraries);
        let enabled_libraries = enabled_libraries & attachable;
        let mut offsets = self
            .processes
            .get(&pid, 0)
            .map_err(|source| AttachError::Map {
                pid,
                map: "GO_PROCESSES",
                source,
            })?;
        offsets.enabled_libraries = enabled_libraries;
        self.processes
            .insert(pid, offsets, 0)
            .map_err(|source| AttachError::Map {
                pid,
                map: "GO_PROCESSES",
                source,
            })
    }

    /// Detaches from `pid` and forgets its state in every map: its probes do nothing for it
    /// from now on. Its links are released, to be closed through [`GoProbes::take_released`].
    /// Idempotent; safe after the process exited.
    pub fn detach(&mut self, pid: u32) {
        let _ = self.processes.remove(&pid);
        if let Some(process) = self.attached.remove(&pid) {
            self.released.multi.extend(process.multi);
            for (program, link) in process.perf {
                let owned = self
                    .ebpf
                    .program_mut(program)
                    .ok_or(ProgramError::UnexpectedProgramType)
                    .and_then(<&mut UProbe>::try_from)
                    .and_then(|probe| probe.take_link(link));
                match owned {
                    Ok(link) => self.released.perf.push(link),
                    Err(error) => warn!(pid, program, %error, "cannot release a uprobe link"),
                }
            }
        }
        self.forget_calls(pid);
    }

    /// The links released by detaches since the last call, for the owner to close.
    pub fn take_released(&mut self) -> ReleasedLinks {
        std::mem::take(&mut self.released)
    }

    /// Uprobe links attached to running processes.
    pub fn uprobe_links(&self) -> usize {
        self.attached.values().map(AttachedProcess::links).sum()
    }

    /// Removes in-flight state of `pid` (calls that will never return now).
    fn forget_calls(&mut self, pid: u32) {
        per_process_state(&mut self.ebpf, pid, true);
    }

    /// Processes with probes attached.
    pub fn attached(&self) -> impl Iterator<Item = u32> + '_ {
        self.attached.keys().copied()
    }

    /// Entries left in the in-flight maps for `pid` (0 after a clean detach).
    pub fn in_flight(&mut self, pid: u32) -> usize {
        per_process_state(&mut self.ebpf, pid, false)
    }

    pub fn counters(&self) -> GoCounters {
        let sum = |index| self.counters.get(&index, 0).map_or(0, |v| v.iter().sum());
        GoCounters {
            ringbuf_full: sum(GO_COUNTER_RINGBUF_FULL),
            double_entry: sum(GO_COUNTER_DOUBLE_ENTRY),
            missing_entry: sum(GO_COUNTER_MISSING_ENTRY),
            read_failed: sum(GO_COUNTER_READ_FAILED),
            injected: sum(GO_COUNTER_INJECTED),
            inject_skipped: sum(GO_COUNTER_INJECT_SKIPPED),
            inject_failed: sum(GO_COUNTER_INJECT_FAILED),
            traceparent_unsearched: sum(GO_COUNTER_TRACEPARENT_UNSEARCHED),
        }
    }
}

fn attach_uprobe(
    ebpf: &mut Ebpf,
    program: &'static str,
    offset: u64,
    exe: &Path,
    scope: UProbeScope,
) -> Result<UProbeLinkId, ProgramError> {
    let probe: &mut UProbe = ebpf
        .program_mut(program)
        .ok_or(ProgramError::UnexpectedProgramType)?
        .try_into()?;
    probe.attach(UProbeAttachLocation::AbsoluteOffset(offset), exe, scope)
}

/// Counts, and with `remove` deletes, the entries of `pid` in every map of calls in flight
/// (keyed by goroutine, or by stream for incoming gRPC metadata).
fn per_process_state(ebpf: &mut Ebpf, pid: u32, remove: bool) -> usize {
    fn one<V: aya::Pod>(ebpf: &mut Ebpf, name: &'static str, pid: u32, remove: bool) -> usize {
        let Some(map) = ebpf.map_mut(name) else {
            return 0;
        };
        let Ok(mut map) = BpfHashMap::<_, GoroutineKey, V>::try_from(map) else {
            warn!(map = name, "unexpected map type");
            return 0;
        };
        let keys: Vec<GoroutineKey> = map
            .keys()
            .filter_map(Result::ok)
            .filter(|key| key.pid == pid)
            .collect();
        if remove {
            for key in &keys {
                let _ = map.remove(key);
            }
        }
        keys.len()
    }
    one::<ServerCall>(ebpf, "SERVER_CALLS", pid, remove)
        + one::<ClientCall>(ebpf, "CLIENT_CALLS", pid, remove)
        + one::<SpanContext>(ebpf, "ACTIVE_SPANS", pid, remove)
        + one::<DbSpan>(ebpf, "DB_CALLS", pid, remove)
        + one::<GrpcServerSpan>(ebpf, "GRPC_SERVER_CALLS", pid, remove)
        + one::<GrpcClientSpan>(ebpf, "GRPC_CLIENT_CALLS", pid, remove)
        + one::<SpanContext>(ebpf, "GRPC_INCOMING", pid, remove)
}
