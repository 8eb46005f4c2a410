//! The instrumentation manager of `odiglet run`: turns "this container should be instrumented
//! with this config" into attached eBPF probes on its processes (now and as they start), keeps
//! them in step with config changes, detaches on removal or exit, and reports each process as
//! an `InstrumentationInstance`.
//!
//! The Kubernetes glue (`k8s`) decides *what* is wanted and sends [`ManagerRequest`]s; this
//! module owns *how*: it is the only composer of process, inspect, instrument, pipeline and
//! export in the daemon.
//!
//! ```text
//! ManagerRequest ─┐                        ┌─ examine (blocking pool): Go? facts, targets
//! ProcessEvent ───┼─▶ one task: desired ───┤
//! rescan tick ────┘   containers, tracked  └─ Engine: GoProbes attach/set_libraries/detach,
//!                     processes              resources, span reader, exporter
//!                          └─▶ InstanceQueue (InstrumentationInstance) + ManagerHandle (status)
//! ```
//! One task owns all state, so requests, events and finished examinations apply in order.
//! Binary analysis (ELF, DWARF) runs on tokio's blocking pool and is cached per executable
//! file, so twenty replicas of one binary cost one analysis.

mod desired;
mod engine;
mod libraries;
mod metrics;
mod procinfo;
mod report;
mod retry;

use std::{
    cmp::Reverse,
    collections::{BTreeMap, BinaryHeap, HashMap, VecDeque},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, PoisonError, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use serde::Serialize;
use tokio::{
    sync::{mpsc, oneshot},
    task::{JoinHandle, JoinSet},
    time::Instant,
};
use tracing::{Instrument, debug, info, info_span, warn};

pub use self::{
    desired::{ContainerKey, ContainerTarget, ManagerRequest, TracesConfig},
    engine::{Engine, EngineError, EngineTotals},
    procinfo::parse_resource_attributes,
    report::InstanceReason,
    retry::RetryPolicy,
};
use self::{
    procinfo::ProcessFacts,
    report::{InstanceReport, delete},
};
use crate::{
    export::{ExportCounters, ExportTarget, ExporterConfig},
    inspect::{
        InspectError, Language,
        cgroup::{self, CgroupConfig, ContainerRef, PidSource, QosClass},
    },
    instrument::{
        ALL_LIBRARIES, ClosingLinks, GoCounters, GoProbes, ReleasedLinks, ResolvedTargets,
        UprobeLinks, resolve_targets,
    },
    opamp::InstanceQueue,
    pipeline::{K8sAttributes, ReaderCounters, ResourceAttributes},
    process::{ProcessError, ProcessEvent, ProcessEventKind, ProcessWatcher, WatcherConfig},
};

/// Odigos' request channel size for the instrumentation manager.
pub const REQUEST_CAPACITY: usize = 200;
/// Default span ring: about 2 800 server spans of a typical request (records are cut after
/// their strings: ~180 B with the ring's header), 28 ms of a 100 000 spans/s burst while the
/// reader sleeps between its wake-ups; 712 of the largest (736 B). The kernel maps a ring's
/// data twice, so it costs twice this resident (1 MiB).
pub const DEFAULT_SPAN_RING_BYTES: u32 = 512 << 10;
/// Executables whose analysis is kept; beyond it the cache starts over.
const ANALYSIS_CACHE_MAX: usize = 64;
/// Examinations running at once on the blocking pool: binary analysis is CPU-bound and the
/// node's workloads come first; an exec storm queues instead of spawning threads.
const EXAMINATIONS_IN_FLIGHT: usize = 2;
/// Examinations waiting; beyond this new ones are dropped (rescans find those processes).
const EXAMINATIONS_QUEUED: usize = 16_384;

#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("cannot start the process-lifecycle probe")]
    Lifecycle(#[source] ProcessError),
}

/// Settings of the manager.
#[derive(Clone, Debug)]
pub struct ManagerConfig {
    /// Root of the proc filesystem (`ODIGOS_PROC_DIR`); the lifecycle probe uses it too.
    pub proc_root: PathBuf,
    /// Root of the cgroup hierarchies (`ODIGOS_CGROUP_ROOT`), where container PIDs are found.
    pub cgroup_root: PathBuf,
    /// `k8s.node.name` of the spans.
    pub node_name: Option<String>,
    pub export: ExportTarget,
    pub exporter: ExporterConfig,
    /// The lifecycle probe: exec events of wanted containers, exits of tracked processes.
    pub watcher: WatcherConfig,
    /// Span ring-buffer size in bytes (a power of two, at least a page).
    pub ring_buffer_bytes: u32,
    /// How the Go uprobes attach (`None`: the best the kernel has).
    pub uprobe_links: Option<UprobeLinks>,
    /// Inject `traceparent` into outgoing HTTP/1 requests (socket programs on the cgroup root).
    pub propagation: bool,
    /// How often wanted containers are re-listed and tracked processes checked for liveness: the
    /// safety net under lost or filtered lifecycle events.
    pub rescan_every: Duration,
    /// When failed instrumentations that may succeed later are tried again.
    pub retry: RetryPolicy,
}

impl ManagerConfig {
    /// Defaults for a node: `/proc`, `/sys/fs/cgroup`, a [`DEFAULT_SPAN_RING_BYTES`] span ring,
    /// propagation on.
    pub fn new(export: ExportTarget) -> Self {
        Self {
            proc_root: PathBuf::from("/proc"),
            cgroup_root: PathBuf::from(cgroup::DEFAULT_CGROUP_ROOT),
            node_name: None,
            export,
            exporter: ExporterConfig::default(),
            watcher: WatcherConfig::standalone(),
            ring_buffer_bytes: DEFAULT_SPAN_RING_BYTES,
            uprobe_links: None,
            propagation: true,
            rescan_every: Duration::from_secs(30),
            retry: RetryPolicy::default(),
        }
    }
}

/// One instrumented (or failed) process, as `GET /v1/instrumentations` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProcessStatus {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    /// The InstrumentationInstance name, `<pod>-<pid>`.
    pub instance: String,
    pub pid: u32,
    pub vpid: Option<u32>,
    pub distro: String,
    pub service_name: String,
    pub executable: String,
    /// Libraries this binary supports, and those switched on by the config.
    pub available_libraries: Vec<&'static str>,
    pub enabled_libraries: Vec<&'static str>,
    pub state: InstanceReason,
    pub error: Option<String>,
}

/// Totals of the manager's work, for metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ManagerStats {
    /// Processes with probes loaded, by distro.
    pub instrumented: BTreeMap<String, u64>,
    /// Instrumentations that failed (any of the three failure reasons), by distro.
    pub failed: BTreeMap<String, u64>,
    pub attached_total: u64,
    pub detached_total: u64,
    /// Processes of wanted containers that were not Go.
    pub skipped_not_go_total: u64,
    pub probes: GoCounters,
    pub export: crate::export::ExportCountersSnapshot,
    pub reader: crate::pipeline::ReaderCountersSnapshot,
}

/// State shared between the manager task and its handles.
struct Shared {
    processes: RwLock<BTreeMap<u32, ProcessStatus>>,
    failed: Mutex<BTreeMap<String, u64>>,
    attached: AtomicU64,
    detached: AtomicU64,
    not_go: AtomicU64,
    probes: Arc<Mutex<GoProbes>>,
    export: Arc<ExportCounters>,
    reader: Arc<ReaderCounters>,
}

/// A cheap, cloneable view of the manager: status snapshot, totals, metrics.
#[derive(Clone)]
pub struct ManagerHandle {
    shared: Arc<Shared>,
}

impl ManagerHandle {
    /// Every tracked process, by PID.
    pub fn snapshot(&self) -> Vec<ProcessStatus> {
        self.shared
            .processes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    pub fn stats(&self) -> ManagerStats {
        let mut instrumented = BTreeMap::new();
        for status in self
            .shared
            .processes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .filter(|s| s.state == InstanceReason::LoadedSuccessfully)
        {
            *instrumented.entry(status.distro.clone()).or_insert(0) += 1;
        }
        ManagerStats {
            instrumented,
            failed: self
                .shared
                .failed
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            attached_total: self.shared.attached.load(Ordering::Relaxed),
            detached_total: self.shared.detached.load(Ordering::Relaxed),
            skipped_not_go_total: self.shared.not_go.load(Ordering::Relaxed),
            probes: self.probes().counters(),
            export: self.shared.export.snapshot(),
            reader: self.shared.reader.snapshot(),
        }
    }

    /// Whether `pid` has probes attached, and its entries left in the in-flight maps.
    pub fn probe_state(&self, pid: u32) -> (bool, usize) {
        let mut probes = self.probes();
        let attached = probes.attached().any(|p| p == pid);
        (attached, probes.in_flight(pid))
    }

    fn probes(&self) -> std::sync::MutexGuard<'_, GoProbes> {
        self.shared
            .probes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// The running manager.
pub struct InstrumentationManager {
    requests: mpsc::Sender<ManagerRequest>,
    handle: ManagerHandle,
    stop: oneshot::Sender<()>,
    task: JoinHandle<ManagerStopped>,
}

/// What a stopped manager leaves: its totals, and its uprobe links, being closed in the
/// background (a kernel grace period each) while the rest of the shutdown goes on.
#[derive(Debug)]
pub struct ManagerStopped {
    pub totals: EngineTotals,
    pub closing: ClosingLinks,
}

impl InstrumentationManager {
    /// Loads the Go probes, starts the lifecycle probe, the span reader and the exporter, and
    /// the manager task. Must be called inside a tokio runtime. Instances are reported
    /// through `instances` (`InstanceQueue::disabled()` outside a cluster).
    pub fn start(config: ManagerConfig, instances: InstanceQueue) -> Result<Self, ManagerError> {
        let engine = Engine::start(
            config.ring_buffer_bytes,
            config.uprobe_links,
            &config.export,
            config.exporter.clone(),
        )?;
        let watcher = ProcessWatcher::start(WatcherConfig {
            proc_root: config.proc_root.clone(),
            ..config.watcher.clone()
        })
        .map_err(ManagerError::Lifecycle)?;
        if config.propagation
            && let Err(error) = engine.enable_propagation(Path::new("/proc/self/mountinfo"))
        {
            warn!(error = %format!("{:#}", anyhow::Error::new(error)), "outgoing traceparent injection is off");
        }
        let shared = Arc::new(Shared {
            processes: RwLock::default(),
            failed: Mutex::default(),
            attached: AtomicU64::new(0),
            detached: AtomicU64::new(0),
            not_go: AtomicU64::new(0),
            probes: engine.shared_probes(),
            export: engine.export_counters(),
            reader: engine.reader_counters(),
        });
        let (requests, requests_rx) = mpsc::channel(REQUEST_CAPACITY);
        let (stop, stopped) = oneshot::channel();
        let manager = Manager {
            cgroups: CgroupConfig {
                cgroup_root: config.cgroup_root,
                proc_root: config.proc_root.clone(),
            },
            proc_root: config.proc_root,
            node_name: config.node_name,
            engine,
            watcher,
            instances,
            shared: Arc::clone(&shared),
            desired: HashMap::new(),
            by_container_id: HashMap::new(),
            tracked: HashMap::new(),
            ignored: HashMap::new(),
            pending: HashMap::new(),
            next_ticket: 0,
            queued: VecDeque::new(),
            examinations: JoinSet::new(),
            analyses: Arc::new(Mutex::new(HashMap::new())),
            retry: config.retry,
            retries: BinaryHeap::new(),
        };
        let rescan_every = config.rescan_every.max(Duration::from_millis(100));
        let task = tokio::spawn(
            manager
                .run(requests_rx, stopped, rescan_every)
                .instrument(info_span!("instrumentation_manager")),
        );
        info!("instrumentation manager started");
        Ok(Self {
            requests,
            handle: ManagerHandle { shared },
            stop,
            task,
        })
    }

    /// Where the Kubernetes glue sends its requests (bounded: a full channel means retry later).
    pub fn requests(&self) -> mpsc::Sender<ManagerRequest> {
        self.requests.clone()
    }

    pub fn handle(&self) -> ManagerHandle {
        self.handle.clone()
    }

    /// Detaches every process, deletes their instances, flushes spans and returns the totals
    /// with the links left to close.
    pub async fn shutdown(self) -> ManagerStopped {
        let _ = self.stop.send(());
        match self.task.await {
            Ok(stopped) => stopped,
            Err(error) => {
                warn!(%error, "instrumentation manager task failed");
                ManagerStopped {
                    totals: EngineTotals::default(),
                    closing: ReleasedLinks::default().close_in_background(),
                }
            }
        }
    }
}

/// A process the manager instrumented or tried to.
struct Tracked {
    key: ContainerKey,
    facts: ProcessFacts,
    /// Libraries the binary supports (attached), and those switched on.
    available: u32,
    enabled: u32,
    skipped: Vec<String>,
    attached: bool,
    reason: InstanceReason,
    error: Option<String>,
    /// Failed attempts so far, and when the next one is due (if it will be retried).
    failed_attempts: u32,
    retry_at: Option<Instant>,
}

/// The result of examining one process on the blocking pool.
struct Examined {
    pid: u32,
    ticket: u64,
    key: ContainerKey,
    outcome: Outcome,
}

enum Outcome {
    /// Exited or unreadable meanwhile.
    Gone,
    NotGo {
        start_time: u64,
    },
    Unresolved {
        facts: ProcessFacts,
        error: String,
        /// Whether the failure may go away by itself (see `retry`).
        transient: bool,
    },
    Resolved {
        facts: ProcessFacts,
        resolved: Box<ResolvedTargets>,
    },
}

type AnalysisCache = Arc<Mutex<HashMap<(u64, u64, i64), ResolvedTargets>>>;

struct Manager {
    proc_root: PathBuf,
    cgroups: CgroupConfig,
    node_name: Option<String>,
    engine: Engine,
    watcher: ProcessWatcher,
    instances: InstanceQueue,
    shared: Arc<Shared>,
    desired: HashMap<ContainerKey, ContainerTarget>,
    by_container_id: HashMap<String, ContainerKey>,
    tracked: HashMap<u32, Tracked>,
    /// Processes of wanted containers that are not Go, with their start time.
    ignored: HashMap<u32, u64>,
    /// Processes being examined, with the ticket of the examination that counts.
    pending: HashMap<u32, u64>,
    next_ticket: u64,
    /// Examinations waiting for a slot: (pid, ticket, container).
    queued: VecDeque<(u32, u64, ContainerKey)>,
    examinations: JoinSet<Examined>,
    analyses: AnalysisCache,
    retry: RetryPolicy,
    /// Due retries (lazily invalidated: the tracked entry's `retry_at` must still match).
    retries: BinaryHeap<Reverse<(Instant, u32)>>,
}

impl Manager {
    async fn run(
        mut self,
        mut requests: mpsc::Receiver<ManagerRequest>,
        mut stop: oneshot::Receiver<()>,
        rescan_every: Duration,
    ) -> ManagerStopped {
        let mut rescan = tokio::time::interval(rescan_every);
        rescan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut watching = true;
        loop {
            let next_retry = self.retries.peek().map(|Reverse((at, _))| *at);
            tokio::select! {
                _ = &mut stop => break,
                request = requests.recv() => match request {
                    Some(request) => self.on_request(request),
                    None => break,
                },
                event = self.watcher.next(), if watching => match event {
                    Some(event) => self.on_event(event),
                    None => {
                        warn!("the process-lifecycle probe stopped; relying on rescans");
                        watching = false;
                    }
                },
                Some(done) = self.examinations.join_next(), if !self.examinations.is_empty() => {
                    match done {
                        Ok(examined) => self.on_examined(examined),
                        Err(error) => warn!(%error, "a process examination failed"),
                    }
                    self.start_examinations();
                }
                _ = rescan.tick() => self.rescan(),
                () = tokio::time::sleep_until(next_retry.unwrap_or_else(Instant::now)),
                    if next_retry.is_some() => self.retry_due(),
            }
            self.close_released_links();
        }
        self.examinations.abort_all();
        let pids: Vec<u32> = self.tracked.keys().copied().collect();
        for pid in pids {
            self.untrack(pid, "shutdown");
        }
        drop(self.watcher);
        // The probes are inert now; closing their links overlaps the flush.
        let closing = self.engine.probes().take_released().close_in_background();
        ManagerStopped {
            totals: self.engine.shutdown().await,
            closing,
        }
    }

    /// Closes the links detaches released, on the blocking pool: each takes a grace period.
    fn close_released_links(&self) {
        let released = self.engine.probes().take_released();
        if !released.is_empty() {
            debug!(links = released.len(), "closing released uprobe links");
            tokio::task::spawn_blocking(move || released.close());
        }
    }

    fn on_request(&mut self, request: ManagerRequest) {
        match request {
            ManagerRequest::Apply(target) => self.apply(target),
            ManagerRequest::Remove(key) => self.remove(&key),
        }
    }

    fn apply(&mut self, target: ContainerTarget) {
        let key = target.key.clone();
        let previous = self.desired.insert(key.clone(), target.clone());
        match &previous {
            Some(previous) if previous.container_id != target.container_id => {
                // A restarted container: the old one's processes are gone or going.
                if let Some(id) = &previous.container_id {
                    self.by_container_id.remove(id);
                }
                self.untrack_container(&key, "container replaced");
            }
            Some(previous) if *previous != target => self.reconfigure(&key),
            _ => {}
        }
        if let Some(id) = &target.container_id {
            self.by_container_id.insert(id.clone(), key.clone());
        }
        debug!(?key, container_id = ?target.container_id, "container wanted");
        self.scan_container(&key);
    }

    fn remove(&mut self, key: &ContainerKey) {
        if let Some(target) = self.desired.remove(key)
            && let Some(id) = &target.container_id
        {
            self.by_container_id.remove(id);
        }
        self.untrack_container(key, "instrumentation removed");
    }

    /// Applies a changed target to its running processes: resources re-registered, libraries
    /// switched through the probes' map (no re-attach).
    fn reconfigure(&mut self, key: &ContainerKey) {
        let Some(target) = self.desired.get(key).cloned() else {
            return;
        };
        let wanted = libraries::wanted(&target.traces);
        let pids: Vec<u32> = self
            .tracked
            .iter()
            .filter(|(_, t)| t.key == *key && t.attached)
            .map(|(pid, _)| *pid)
            .collect();
        for pid in pids {
            let Some(tracked) = self.tracked.get_mut(&pid) else {
                continue;
            };
            let enabled = tracked.available & wanted;
            if enabled != tracked.enabled {
                match self.engine.probes().set_libraries(pid, enabled) {
                    Ok(()) => {
                        info!(pid, libraries = ?libraries::names(enabled), "libraries switched");
                        tracked.enabled = enabled;
                    }
                    Err(error) => {
                        let error = format!("{:#}", anyhow::Error::new(error));
                        warn!(pid, %error, "cannot switch libraries");
                        tracked.reason = InstanceReason::FailedToRun;
                        tracked.error = Some(error);
                        count_failure(&self.shared, &target.distro);
                    }
                }
            }
            let attributes = resource_attributes(&target, &tracked.facts, &self.node_name);
            self.engine.resources().register(pid, attributes);
            self.report(pid);
        }
    }

    fn on_event(&mut self, event: ProcessEvent) {
        let pid = event.pid;
        match event.kind {
            ProcessEventKind::Exit => {
                self.pending.remove(&pid);
                self.ignored.remove(&pid);
                if self.tracked.contains_key(&pid) {
                    self.untrack(pid, "process exited");
                }
            }
            ProcessEventKind::Exec | ProcessEventKind::Existing => {
                let Some(key) = event
                    .container_id
                    .as_deref()
                    .and_then(|id| self.by_container_id.get(id))
                    .cloned()
                else {
                    // A tracked process that exec'd something outside any wanted container.
                    if event.kind == ProcessEventKind::Exec && self.tracked.contains_key(&pid) {
                        self.untrack(pid, "process exec'd");
                    }
                    return;
                };
                if event.kind == ProcessEventKind::Existing && self.tracked.contains_key(&pid) {
                    return;
                }
                // A new image: whatever was attached or decided for the old one is void.
                if self.tracked.contains_key(&pid) {
                    self.untrack(pid, "process exec'd");
                }
                self.ignored.remove(&pid);
                self.examine(pid, key);
            }
            ProcessEventKind::Fork => {}
        }
    }

    /// Re-lists every wanted container and drops tracked processes that are gone (or whose
    /// PID now belongs to another process).
    fn rescan(&mut self) {
        let gone: Vec<u32> = self
            .tracked
            .iter()
            .filter(|(pid, t)| {
                procinfo::start_time(&self.proc_root, **pid) != Some(t.facts.start_time)
            })
            .map(|(pid, _)| *pid)
            .collect();
        for pid in gone {
            self.untrack(pid, "process gone");
        }
        let proc_root = &self.proc_root;
        self.ignored
            .retain(|pid, started| procinfo::start_time(proc_root, *pid) == Some(*started));
        let keys: Vec<ContainerKey> = self.desired.keys().cloned().collect();
        for key in keys {
            self.scan_container(&key);
        }
    }

    /// Examines the container's processes not seen yet.
    fn scan_container(&mut self, key: &ContainerKey) {
        let Some(target) = self.desired.get(key) else {
            return;
        };
        let pids = container_pids(&self.cgroups, target);
        for pid in pids {
            if !(self.tracked.contains_key(&pid)
                || self.pending.contains_key(&pid)
                || self.ignored.contains_key(&pid))
            {
                self.examine(pid, key.clone());
            }
        }
    }

    /// Queues an examination of `pid`; a later examination supersedes it.
    fn examine(&mut self, pid: u32, key: ContainerKey) {
        if self.queued.len() >= EXAMINATIONS_QUEUED {
            debug!(pid, "examination queue full; the next rescan will find it");
            return;
        }
        self.next_ticket += 1;
        self.pending.insert(pid, self.next_ticket);
        self.queued.push_back((pid, self.next_ticket, key));
        self.start_examinations();
    }

    /// Starts queued examinations that still count, up to the in-flight limit.
    fn start_examinations(&mut self) {
        while self.examinations.len() < EXAMINATIONS_IN_FLIGHT {
            let Some((pid, ticket, key)) = self.queued.pop_front() else {
                return;
            };
            if self.pending.get(&pid) != Some(&ticket) {
                continue;
            }
            let proc_root = self.proc_root.clone();
            let analyses = Arc::clone(&self.analyses);
            self.examinations.spawn_blocking(move || Examined {
                pid,
                ticket,
                key,
                outcome: examine(&proc_root, pid, &analyses),
            });
        }
    }

    fn on_examined(&mut self, examined: Examined) {
        let Examined {
            pid,
            ticket,
            key,
            outcome,
        } = examined;
        if self.pending.get(&pid) != Some(&ticket) {
            return;
        }
        self.pending.remove(&pid);
        let Some(target) = self.desired.get(&key).cloned() else {
            return;
        };
        match outcome {
            Outcome::Gone => {}
            Outcome::NotGo { start_time } => {
                debug!(pid, ?key, "not a Go process; not instrumented");
                self.shared.not_go.fetch_add(1, Ordering::Relaxed);
                self.ignored.insert(pid, start_time);
            }
            Outcome::Unresolved {
                facts,
                error,
                transient,
            } => {
                warn!(pid, ?key, %error, "cannot instrument process");
                let failed_attempts = self.record_failed_attempt(pid, &target);
                let (error, retry_at) = self.plan_retry(pid, error, failed_attempts, transient);
                self.tracked.insert(
                    pid,
                    Tracked {
                        key,
                        facts,
                        available: 0,
                        enabled: 0,
                        skipped: Vec::new(),
                        attached: false,
                        reason: InstanceReason::FailedToInitialize,
                        error: Some(error),
                        failed_attempts,
                        retry_at,
                    },
                );
                self.report(pid);
            }
            Outcome::Resolved { facts, resolved } => self.attach(&target, facts, *resolved),
        }
    }

    fn attach(&mut self, target: &ContainerTarget, facts: ProcessFacts, resolved: ResolvedTargets) {
        let pid = facts.pid;
        let available = resolved.targets.offsets.enabled_libraries;
        let enabled = available & libraries::wanted(&target.traces);
        let mut targets = resolved.targets;
        // Every supported library is attached; the enabled bits gate them in the kernel, so a
        // config change is one map update.
        targets.offsets.enabled_libraries = enabled;
        let attached = self.engine.probes().attach(pid, &targets);
        let mut failed_attempts = 0;
        let mut retry_at = None;
        let (reason, error) = match attached {
            Ok(()) => {
                self.engine
                    .resources()
                    .register(pid, resource_attributes(target, &facts, &self.node_name));
                // Its exit must be reported even if the lifecycle filter did not select it.
                if let Err(error) = self.watcher.track(pid) {
                    debug!(pid, %error, "cannot track the process; rescans will notice its exit");
                }
                self.shared.attached.fetch_add(1, Ordering::Relaxed);
                info!(
                    pid,
                    key = ?target.key,
                    go = %resolved.go_version,
                    offsets = ?resolved.offsets_source,
                    libraries = ?libraries::names(enabled),
                    "instrumented"
                );
                for skipped in &resolved.skipped {
                    warn!(pid, key = ?target.key, %skipped, "instrumented in part");
                }
                (InstanceReason::LoadedSuccessfully, None)
            }
            Err(error) => {
                let error = format!("{:#}", anyhow::Error::new(error));
                warn!(pid, key = ?target.key, %error, "cannot attach the Go probes");
                failed_attempts = self.record_failed_attempt(pid, target);
                let (error, at) = self.plan_retry(pid, error, failed_attempts, true);
                retry_at = at;
                (InstanceReason::FailedToLoad, Some(error))
            }
        };
        self.tracked.insert(
            pid,
            Tracked {
                key: target.key.clone(),
                facts,
                available,
                enabled,
                skipped: resolved.skipped,
                attached: reason == InstanceReason::LoadedSuccessfully,
                reason,
                error,
                failed_attempts,
                retry_at,
            },
        );
        self.report(pid);
    }

    /// Failed attempts for `pid` including the one that just failed; a process's failure is
    /// counted in the metrics once, not once per attempt.
    fn record_failed_attempt(&self, pid: u32, target: &ContainerTarget) -> u32 {
        let before = self.tracked.get(&pid).map_or(0, |t| t.failed_attempts);
        if before == 0 {
            count_failure(&self.shared, &target.distro);
        }
        before + 1
    }

    /// Schedules the next attempt if the failure may pass and attempts remain; returns the
    /// instance message (the error, and what happens next) and when the retry is due.
    fn plan_retry(
        &mut self,
        pid: u32,
        error: String,
        failed_attempts: u32,
        transient: bool,
    ) -> (String, Option<Instant>) {
        let message = match self.retry.describe(failed_attempts, transient) {
            Some(next) => format!("{error} ({next})"),
            None => error,
        };
        let retry_at = transient
            .then(|| self.retry.delay_after(failed_attempts))
            .flatten()
            .map(|delay| Instant::now() + delay);
        if let Some(at) = retry_at {
            self.retries.push(Reverse((at, pid)));
        }
        (message, retry_at)
    }

    /// Examines again the failed processes whose retry is due.
    fn retry_due(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((at, pid))) = self.retries.peek().copied() {
            if at > now {
                break;
            }
            self.retries.pop();
            let Some(tracked) = self.tracked.get_mut(&pid) else {
                continue;
            };
            if tracked.attached || tracked.retry_at != Some(at) {
                continue;
            }
            tracked.retry_at = None;
            let key = tracked.key.clone();
            info!(
                pid,
                ?key,
                attempt = tracked.failed_attempts + 1,
                "retrying instrumentation"
            );
            self.examine(pid, key);
        }
    }

    fn untrack_container(&mut self, key: &ContainerKey, why: &str) {
        let pids: Vec<u32> = self
            .tracked
            .iter()
            .filter(|(_, t)| t.key == *key)
            .map(|(pid, _)| *pid)
            .collect();
        for pid in pids {
            self.untrack(pid, why);
        }
    }

    /// Detaches `pid` (if attached), forgets its resource, deletes its instance.
    fn untrack(&mut self, pid: u32, why: &str) {
        let Some(tracked) = self.tracked.remove(&pid) else {
            return;
        };
        if tracked.attached {
            self.engine.probes().detach(pid);
            self.engine.resources().unregister(pid);
            self.shared.detached.fetch_add(1, Ordering::Relaxed);
            info!(pid, key = ?tracked.key, why, "detached");
        }
        self.instances.push(delete(&tracked.key, pid));
        self.shared
            .processes
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&pid);
    }

    /// Publishes `pid`'s state: the InstrumentationInstance and the status snapshot.
    fn report(&self, pid: u32) {
        let (Some(tracked), Some(target)) = (
            self.tracked.get(&pid),
            self.tracked
                .get(&pid)
                .and_then(|t| self.desired.get(&t.key)),
        ) else {
            return;
        };
        self.instances.push(
            InstanceReport {
                key: &tracked.key,
                pid,
                reason: tracked.reason,
                error: tracked.error.as_deref(),
                available: tracked.available,
                enabled: tracked.enabled,
                skipped: &tracked.skipped,
            }
            .upsert(),
        );
        let status = ProcessStatus {
            namespace: tracked.key.namespace.clone(),
            pod: tracked.key.pod.clone(),
            container: tracked.key.container.clone(),
            instance: crate::opamp::InstanceTask::object_name(&tracked.key.pod, i64::from(pid)),
            pid,
            vpid: tracked.facts.vpid,
            distro: target.distro.clone(),
            service_name: target.service_name.clone(),
            executable: tracked.facts.executable_path.clone(),
            available_libraries: libraries::names(tracked.available),
            enabled_libraries: libraries::names(tracked.enabled),
            state: tracked.reason,
            error: tracked.error.clone(),
        };
        self.shared
            .processes
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(pid, status);
    }
}

fn count_failure(shared: &Shared, distro: &str) {
    *shared
        .failed
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(distro.to_owned())
        .or_insert(0) += 1;
}

/// Decides what `pid` is and, for Go, what to attach (cached per executable file).
fn examine(proc_root: &Path, pid: u32, analyses: &AnalysisCache) -> Outcome {
    let facts = match procinfo::read(proc_root, pid) {
        Ok(facts) => facts,
        Err(InspectError::NoSuchProcess { .. } | InspectError::NoExecutable { .. }) => {
            return Outcome::Gone;
        }
        // Short-lived processes often exit between two reads: only a live one is worth a
        // warning.
        Err(error) if procinfo::exited(proc_root, pid) => {
            debug!(pid, %error, "process exited while being read");
            return Outcome::Gone;
        }
        Err(error) => {
            warn!(pid, %error, "cannot read process");
            return Outcome::Gone;
        }
    };
    if facts.language != Language::Go {
        return Outcome::NotGo {
            start_time: facts.start_time,
        };
    }
    let exe = proc_root.join(format!("{pid}/exe"));
    let cached = facts.executable_id.and_then(|id| {
        analyses
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .cloned()
    });
    let resolved = match cached {
        Some(mut resolved) => {
            resolved.targets.exe = exe;
            resolved
        }
        None => match resolve_targets(proc_root, pid, ALL_LIBRARIES) {
            Ok(resolved) => {
                if let Some(id) = facts.executable_id {
                    let mut cache = analyses.lock().unwrap_or_else(PoisonError::into_inner);
                    if cache.len() >= ANALYSIS_CACHE_MAX {
                        cache.clear();
                    }
                    cache.insert(id, resolved.clone());
                }
                resolved
            }
            Err(error) => {
                return Outcome::Unresolved {
                    facts,
                    transient: retry::is_transient(&error),
                    error: format!("{:#}", anyhow::Error::new(error)),
                };
            }
        },
    };
    Outcome::Resolved {
        facts,
        resolved: Box::new(resolved),
    }
}

/// The container's PIDs from its cgroup (or mountinfo); none until its id is known. With no
/// QoS class given, each class's cgroup is tried.
fn container_pids(config: &CgroupConfig, target: &ContainerTarget) -> Vec<u32> {
    let Some(container_id) = &target.container_id else {
        return Vec::new();
    };
    let classes: &[QosClass] = match target.qos_class.as_deref() {
        Some("Guaranteed") => &[QosClass::Guaranteed],
        Some("Burstable") => &[QosClass::Burstable],
        Some("BestEffort") => &[QosClass::BestEffort],
        _ => &[
            QosClass::Burstable,
            QosClass::BestEffort,
            QosClass::Guaranteed,
        ],
    };
    let mut found = Vec::new();
    for qos in classes {
        let container = ContainerRef {
            pod_uid: target.pod_uid.clone(),
            qos: *qos,
            container_id: container_id.clone(),
            container_name: target.key.container.clone(),
        };
        match cgroup::container_pids(config, &container) {
            Ok((pids, PidSource::Cgroup(_))) => return pids,
            Ok((pids, PidSource::Mountinfo)) => found = pids,
            Err(error) => {
                warn!(key = ?target.key, %error, "cannot list the container's processes");
                return Vec::new();
            }
        }
    }
    found
}

/// The resource of a process's spans (odigos.md §5.6); the process's own
/// `OTEL_RESOURCE_ATTRIBUTES` fill in, never override.
fn resource_attributes(
    target: &ContainerTarget,
    facts: &ProcessFacts,
    node_name: &Option<String>,
) -> ResourceAttributes {
    ResourceAttributes {
        service_name: Some(target.service_name.clone()),
        executable_path: Some(facts.executable_path.clone()),
        command: facts.command.clone(),
        vpid: facts.vpid,
        k8s: Some(K8sAttributes {
            namespace: Some(target.key.namespace.clone()),
            pod_name: Some(target.key.pod.clone()),
            container_name: Some(target.key.container.clone()),
            node_name: node_name.clone(),
            workload: target.workload.clone(),
        }),
        extra: facts.resource_attributes.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::{ProcessResource, Workload, WorkloadKind};

    #[test]
    fn resource_has_the_odigos_attributes_and_process_attributes_never_override() {
        let target = ContainerTarget {
            key: ContainerKey {
                namespace: "shop".into(),
                pod: "cart-7d9f-x2".into(),
                container: "app".into(),
            },
            pod_uid: "uid".into(),
            container_id: Some("abc".into()),
            qos_class: None,
            workload: Some(Workload {
                kind: WorkloadKind::Deployment,
                name: "cart".into(),
            }),
            service_name: "cart-svc".into(),
            distro: "golang-community".into(),
            traces: TracesConfig::default(),
        };
        let facts = ProcessFacts {
            pid: 4242,
            vpid: Some(7),
            start_time: 1,
            language: Language::Go,
            executable_path: "/app/cart".into(),
            executable_id: None,
            command: Some("/app/cart".into()),
            resource_attributes: vec![
                ("service.name".into(), "from-env".into()),
                ("deployment.environment".into(), "prod".into()),
            ],
        };
        let attributes = resource_attributes(&target, &facts, &Some("node-1".into()));
        let resource = ProcessResource::new(4242, &attributes);
        let get = |key: &str| {
            resource
                .attributes()
                .iter()
                .find(|kv| kv.key == key)
                .map(|kv| format!("{:?}", kv.value))
        };
        for (key, value) in [
            ("service.name", "cart-svc"),
            ("k8s.namespace.name", "shop"),
            ("k8s.pod.name", "cart-7d9f-x2"),
            ("k8s.container.name", "app"),
            ("k8s.deployment.name", "cart"),
            ("odigos.workload.kind", "Deployment"),
            ("odigos.workload.name", "cart"),
            ("process.executable.path", "/app/cart"),
            ("process.command", "/app/cart"),
            ("deployment.environment", "prod"),
            ("k8s.node.name", "node-1"),
        ] {
            let found = get(key).unwrap_or_else(|| panic!("{key} missing"));
            assert!(found.contains(value), "{key}: {found}");
        }
        assert!(get("process.pid").is_some_and(|v| v.contains("4242")));
        assert!(get("process.vpid").is_some_and(|v| v.contains('7')));
        let names = resource
            .attributes()
            .iter()
            .filter(|kv| kv.key == "service.name")
            .count();
        assert_eq!(names, 1, "the process's service.name does not override");
    }

    #[test]
    fn no_container_id_means_no_pids() {
        let target = ContainerTarget {
            key: ContainerKey {
                namespace: "n".into(),
                pod: "p".into(),
                container: "c".into(),
            },
            pod_uid: "uid".into(),
            container_id: None,
            qos_class: Some("Burstable".into()),
            workload: None,
            service_name: "s".into(),
            distro: "golang-community".into(),
            traces: TracesConfig::default(),
        };
        assert!(container_pids(&CgroupConfig::default(), &target).is_empty());
    }
}
