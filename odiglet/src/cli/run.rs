//! `odiglet run`: the node agent. One tokio runtime, one kube client and one shutdown path for
//! the device plugin, the OpAMP server (its config fed from InstrumentationConfigs), the
//! Kubernetes watches with runtime detection, the eBPF instrumentation manager, one
//! InstrumentationInstance writer for both, and the health server (`/healthz`, `/readyz`:
//! OpAMP listening, watches synced, eBPF loaded; `/metrics`, `/v1/agents`,
//! `/v1/instrumentations`).
//!
//! Env contract as Odigos' odiglet (odigos.md §7): `NODE_NAME`, `NODE_IP` and `CURRENT_NS` are
//! required; `--health-probe-bind-port` is Odigos' flag; enterprise and unknown flags are
//! accepted with a warning, so the Helm chart's arguments work unchanged.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use anyhow::Context;
use clap::Args;
use tokio::{sync::mpsc, task::JoinHandle};
use tracing::{info, warn};

use super::{CliError, opamp_server::PodResourcesLookup, output};
use crate::{
    device_plugin::{DevicePluginConfig, DevicePlugins},
    export::{DEFAULT_OTLP_ENDPOINT, ExportTarget},
    inspect::{
        Inspector,
        cgroup::{CgroupConfig, DEFAULT_CGROUP_ROOT},
        cri::CriSocket,
    },
    k8s::{self, DetectionWorker, Glue, GlueConfig, StatusWriter},
    manager::{
        DEFAULT_SPAN_RING_BYTES, InstrumentationManager, ManagerConfig, ManagerRequest,
        REQUEST_CAPACITY,
    },
    opamp::{
        DEFAULT_LISTEN, DEFAULT_UNIX_SOCKET, InstanceQueue, OpampConfig, OpampServer, ServedConfig,
        health::QUEUE_CAPACITY, k8s_writer::KubeInstanceWriter,
    },
    ops::{EBPF_LOADED, OPAMP_LISTENER, OpsServer, OpsState, Readiness, WATCHES_SYNCED},
    process::DEFAULT_LIFECYCLE_RING_BYTES,
};

/// Odigos' health-probe port (`k8sconsts.OdigletHealthProbeBindPort`).
pub const DEFAULT_HEALTH_PORT: u16 = 55683;
/// Everything stops within this after SIGTERM (Odigos closes instrumentations within 10 s).
const SHUTDOWN_BUDGET: Duration = Duration::from_secs(9);

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Kubeconfig file; default: `KUBECONFIG`, `~/.kube/config`, then in-cluster.
    #[arg(long, value_name = "FILE", env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// This node's name (pods are watched with `spec.nodeName=<it>`).
    #[arg(long, env = "NODE_NAME", value_name = "NAME")]
    node_name: Option<String>,
    /// This node's IP, handed to agents for OpAMP and OTLP.
    #[arg(long, env = "NODE_IP", value_name = "IP")]
    node_ip: Option<String>,
    /// Odigos' namespace.
    #[arg(long, env = "CURRENT_NS", value_name = "NAMESPACE")]
    current_ns: Option<String>,
    /// Port of `/healthz`, `/readyz` and `/metrics`.
    #[arg(long, default_value_t = DEFAULT_HEALTH_PORT, value_name = "PORT")]
    health_probe_bind_port: u16,
    /// Address the health port binds to.
    #[arg(long, default_value = "0.0.0.0", value_name = "IP")]
    health_probe_bind_address: IpAddr,
    /// Kubelet's root directory (device-plugin sockets, pod-resources).
    #[arg(long, value_name = "DIR", default_value = "/var/lib/kubelet")]
    kubelet_dir: PathBuf,
    /// Host directory holding the instrumentation agents.
    #[arg(long, value_name = "DIR", default_value = "/var/odigos")]
    agents_dir: PathBuf,
    /// Do not run the device plugin (Odigos can run it as its own container).
    #[arg(long)]
    no_device_plugin: bool,
    /// OpAMP over HTTP on TCP.
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_LISTEN)]
    opamp_listen: SocketAddr,
    /// OpAMP over HTTP on a Unix socket.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_UNIX_SOCKET)]
    opamp_unix_socket: PathBuf,
    /// Local status API of the OpAMP server (`GET /v1/agents`).
    #[arg(long, value_name = "ADDR")]
    opamp_status_listen: Option<SocketAddr>,
    /// Seconds without a message after which an OpAMP agent is dropped.
    #[arg(long, value_name = "SECS", default_value_t = 75.0)]
    heartbeat_timeout: f64,
    /// Do not inspect runtimes or write runtime details.
    #[arg(long)]
    no_runtime_detection: bool,
    /// Do not load eBPF (no Go instrumentation): instrumentation requests are only logged.
    #[arg(long)]
    no_ebpf: bool,
    /// Where eBPF-instrumented processes' spans go (the node collector in Odigos' pod).
    #[arg(long, value_name = "URL", default_value = DEFAULT_OTLP_ENDPOINT)]
    otlp_endpoint: String,
    /// Do not inject `traceparent` into outgoing HTTP requests of instrumented processes.
    #[arg(long)]
    no_propagation: bool,
    /// Where processes are (`/hostproc` when the pod has no host PID namespace).
    #[arg(
        long,
        env = "ODIGOS_PROC_DIR",
        value_name = "DIR",
        default_value = "/proc"
    )]
    proc_dir: PathBuf,
    /// The container runtime's CRI socket, for images' environment (default: the first of
    /// containerd's, CRI-O's, cri-dockerd's and k3s' sockets that exists).
    #[arg(long, env = "CONTAINER_RUNTIME_SOCK", value_name = "PATH")]
    container_runtime_sock: Option<PathBuf>,
    /// Where the host's `/run` is mounted (the CRI sockets are probed under it).
    #[arg(
        long,
        env = "ODIGOS_HOST_RUN_DIR",
        value_name = "DIR",
        default_value = "/run"
    )]
    host_run_dir: PathBuf,
    /// Span ring-buffer size in bytes (a power of two, at least a page); resident twice over.
    #[arg(long, env = "ODIGLET_SPAN_RING_BYTES", value_name = "BYTES",
        default_value_t = DEFAULT_SPAN_RING_BYTES, value_parser = super::ring_bytes)]
    span_ring_bytes: u32,
    /// Lifecycle-event ring-buffer size in bytes (a power of two, at least a page).
    #[arg(long, env = "ODIGLET_LIFECYCLE_RING_BYTES", value_name = "BYTES",
        default_value_t = DEFAULT_LIFECYCLE_RING_BYTES, value_parser = super::ring_bytes)]
    lifecycle_ring_bytes: u32,
    /// Where the host's cgroups are mounted.
    #[arg(long, env = "ODIGOS_CGROUP_ROOT", value_name = "DIR", default_value = DEFAULT_CGROUP_ROOT)]
    cgroup_root: PathBuf,
    /// Odigos enterprise flag; accepted and ignored.
    #[arg(long, hide = true, value_name = "SUFFIX")]
    trace_id_suffix: Option<String>,
    /// Odigos enterprise flag (`--wasp-enabled[=BOOL]`); accepted and ignored.
    #[arg(long, hide = true, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    wasp_enabled: Option<String>,
    /// Other flags a newer chart may pass; accepted with a warning.
    #[arg(hide = true, trailing_var_arg = true, allow_hyphen_values = true)]
    unknown: Vec<String>,
}

/// The validated configuration.
struct RunConfig {
    kubeconfig: Option<PathBuf>,
    node_name: String,
    namespace: String,
    device_plugin: Option<DevicePluginConfig>,
    opamp: OpampConfig,
    health_addr: SocketAddr,
    detection: Option<(Inspector, CgroupConfig, CriSocket)>,
    manager: Option<ManagerConfig>,
    kubelet_dir: PathBuf,
}

fn required(value: Option<String>, name: &str) -> Result<String, CliError> {
    value.filter(|v| !v.trim().is_empty()).ok_or_else(|| {
        CliError::Usage(anyhow::anyhow!("{name} must be set (odiglet run needs it)"))
    })
}

impl RunArgs {
    fn config(self) -> Result<RunConfig, CliError> {
        let node_name = required(self.node_name, "NODE_NAME")?;
        let node_ip = required(self.node_ip, "NODE_IP")?;
        let node_ip: IpAddr = node_ip.parse().map_err(|_| {
            CliError::Usage(anyhow::anyhow!("NODE_IP is not an IP address: {node_ip:?}"))
        })?;
        let namespace = required(self.current_ns, "CURRENT_NS")?;
        if !(self.heartbeat_timeout.is_finite() && self.heartbeat_timeout > 0.0) {
            return Err(CliError::Usage(anyhow::anyhow!(
                "--heartbeat-timeout must be a positive number of seconds, got {}",
                self.heartbeat_timeout
            )));
        }
        if let Some(suffix) = &self.trace_id_suffix {
            warn!(%suffix, "--trace-id-suffix is an Odigos enterprise flag; ignored");
        }
        if let Some(value) = &self.wasp_enabled {
            warn!(%value, "--wasp-enabled is an Odigos enterprise flag; ignored");
        }
        if !self.unknown.is_empty() {
            warn!(arguments = ?self.unknown, "ignoring unknown arguments");
        }
        info!(node = %node_name, %node_ip, %namespace, "odiglet run");
        let stale_after = Duration::from_secs_f64(self.heartbeat_timeout);
        let opamp = OpampConfig {
            listen: Some(self.opamp_listen),
            unix_socket: Some(self.opamp_unix_socket),
            status_listen: self.opamp_status_listen,
            stale_after,
            sweep_every: (stale_after / 3).min(Duration::from_secs(30)),
            node_name: node_name.clone(),
            ..OpampConfig::default()
        };
        let device_plugin = (!self.no_device_plugin)
            .then(|| DevicePluginConfig::new(&self.kubelet_dir, self.agents_dir, node_ip));
        let manager = (!self.no_ebpf).then(|| {
            let mut manager = ManagerConfig::new(ExportTarget::OtlpGrpc {
                endpoint: self.otlp_endpoint.clone(),
            });
            manager.proc_root.clone_from(&self.proc_dir);
            manager.cgroup_root.clone_from(&self.cgroup_root);
            manager.node_name = Some(node_name.clone());
            manager.propagation = !self.no_propagation;
            manager.ring_buffer_bytes = self.span_ring_bytes;
            manager.watcher.ring_buffer_bytes = self.lifecycle_ring_bytes;
            manager
        });
        let detection = (!self.no_runtime_detection).then(|| {
            (
                Inspector::new(&self.proc_dir),
                CgroupConfig {
                    cgroup_root: self.cgroup_root,
                    proc_root: self.proc_dir.clone(),
                },
                CriSocket {
                    explicit: self.container_runtime_sock,
                    run_dir: self.host_run_dir,
                },
            )
        });
        Ok(RunConfig {
            kubeconfig: self.kubeconfig,
            node_name,
            namespace,
            device_plugin,
            opamp,
            health_addr: SocketAddr::new(
                self.health_probe_bind_address,
                self.health_probe_bind_port,
            ),
            detection,
            manager,
            kubelet_dir: self.kubelet_dir,
        })
    }
}

pub fn execute(args: RunArgs) -> Result<(), CliError> {
    let config = args.config()?;
    super::runtime()?.block_on(run(config))
}

/// Without eBPF (`--no-ebpf`): log what the manager would be asked.
async fn log_requests(mut requests: mpsc::Receiver<ManagerRequest>) {
    while let Some(request) = requests.recv().await {
        match request {
            ManagerRequest::Apply(target) => info!(
                namespace = %target.key.namespace, pod = %target.key.pod,
                container = %target.key.container, container_id = ?target.container_id,
                distro = %target.distro, traces = target.traces.enabled,
                "instrumentation wanted (eBPF is off)"
            ),
            ManagerRequest::Remove(key) => info!(
                namespace = %key.namespace, pod = %key.pod, container = %key.container,
                "instrumentation no longer wanted (eBPF is off)"
            ),
        }
    }
}

/// Where the manager's requests go: the real manager, or the logger of `--no-ebpf`.
enum Instrumentation {
    Manager(InstrumentationManager),
    Logged(JoinHandle<()>),
}

/// What has been started so far; stopped in reverse dependency order.
#[derive(Default)]
struct Components {
    plugins: Option<DevicePlugins>,
    opamp: Option<OpampServer>,
    instrumentation: Option<Instrumentation>,
    ops: Option<OpsServer>,
    glue: Option<Glue>,
}

impl Components {
    /// The glue first (no more requests), then the manager (detach, flush spans, delete
    /// instances), then the servers together; bounded by [`SHUTDOWN_BUDGET`].
    async fn shutdown(self) {
        let stop = async {
            if let Some(glue) = self.glue {
                glue.shutdown().await;
            }
            match self.instrumentation {
                Some(Instrumentation::Manager(manager)) => {
                    let totals = manager.shutdown().await;
                    info!(?totals, "instrumentation manager stopped");
                }
                Some(Instrumentation::Logged(task)) => task.abort(),
                None => {}
            }
            tokio::join!(
                async {
                    if let Some(opamp) = self.opamp {
                        opamp.shutdown().await;
                    }
                },
                async {
                    if let Some(plugins) = self.plugins {
                        plugins.shutdown().await;
                    }
                },
                async {
                    if let Some(ops) = self.ops {
                        ops.shutdown().await;
                    }
                },
            );
        };
        if tokio::time::timeout(SHUTDOWN_BUDGET, stop).await.is_err() {
            warn!(budget = ?SHUTDOWN_BUDGET, "shutdown took too long; exiting anyway");
        }
    }
}

/// One JSON line on stdout: the addresses, and whether the daemon is ready.
fn announce(ready: bool, opamp: &OpampServer, health: SocketAddr) {
    let line = serde_json::json!({
        "ready": ready,
        "opamp": opamp.tcp_addr.map(|a| a.to_string()),
        "unix_socket": opamp.unix_socket.as_ref().map(|p| p.display().to_string()),
        "opamp_status": opamp.status_addr.map(|a| a.to_string()),
        "health": health.to_string(),
    });
    if let Err(error) = output::line(&line.to_string()) {
        warn!(%error, "cannot write to stdout");
    }
}

async fn run(config: RunConfig) -> Result<(), CliError> {
    let mut started = Components::default();
    let outcome = start_and_serve(config, &mut started).await;
    info!("shutting down");
    std::mem::take(&mut started).shutdown().await;
    outcome
}

/// Starts every component into `started` (so a failure midway still stops what runs), then
/// serves until SIGTERM or SIGINT.
async fn start_and_serve(config: RunConfig, started: &mut Components) -> Result<(), CliError> {
    let client = k8s::client(config.kubeconfig.as_deref())
        .await
        .map_err(|e| CliError::Usage(e.into()))?;
    let readiness = Readiness::new();
    let opamp_listening = readiness.condition(OPAMP_LISTENER);
    let watches_synced = readiness.condition(WATCHES_SYNCED);

    if let Some(dp) = config.device_plugin {
        started.plugins = Some(DevicePlugins::start(dp).map_err(|e| CliError::Usage(e.into()))?);
    }
    // One InstrumentationInstance queue and worker for OpAMP agents and eBPF processes.
    let instances = InstanceQueue::start(
        Arc::new(KubeInstanceWriter::new(client.clone())),
        QUEUE_CAPACITY,
    );
    let lookup = PodResourcesLookup::new(&config.kubelet_dir);
    let opamp = OpampServer::start(config.opamp, Box::new(lookup), instances.clone())
        .await
        .context("cannot start the OpAMP server")
        .map_err(CliError::Runtime)?;
    opamp_listening.set(true);
    let mut ops_state = OpsState::new(readiness.clone()).with_opamp(opamp.sessions.clone());
    let opamp_config = opamp.config.clone();
    started.opamp = Some(opamp);

    let requests = match config.manager {
        Some(manager_config) => {
            let ebpf_loaded = readiness.condition(EBPF_LOADED);
            let manager = InstrumentationManager::start(manager_config, instances)
                .context("cannot start the instrumentation manager (--no-ebpf runs without it)")
                .map_err(CliError::Runtime)?;
            ebpf_loaded.set(true);
            ops_state = ops_state.with_manager(manager.handle());
            let requests = manager.requests();
            started.instrumentation = Some(Instrumentation::Manager(manager));
            requests
        }
        None => {
            let (requests, received) = mpsc::channel(REQUEST_CAPACITY);
            started.instrumentation = Some(Instrumentation::Logged(tokio::spawn(log_requests(
                received,
            ))));
            requests
        }
    };
    let ops = OpsServer::start(config.health_addr, ops_state)
        .await
        .context("cannot start the health server")
        .map_err(CliError::Runtime)?;
    let health = ops.addr;
    started.ops = Some(ops);

    let detection = config
        .detection
        .map(|(inspector, cgroups, cri)| DetectionWorker {
            inspector,
            cgroups,
            cri,
            writer: StatusWriter::new(client.clone()),
        });
    let glue = Glue::start(
        &client,
        GlueConfig {
            node_name: config.node_name,
            requests,
            opamp: Some((opamp_config, ServedConfig::default())),
            detection,
            log_levels_from: Some(config.namespace),
        },
    );
    let mut synced = glue.synced.clone();
    started.glue = Some(glue);
    if let Some(opamp) = &started.opamp {
        announce(false, opamp, health);
    }
    let interrupted = super::interrupted();
    tokio::pin!(interrupted);
    tokio::select! {
        result = synced.wait_for(|s| *s) => {
            if result.is_ok() {
                watches_synced.set(true);
                if let Some(opamp) = &started.opamp {
                    announce(true, opamp, health);
                }
            }
        }
        result = &mut interrupted => return result.context("cannot wait for signals").map_err(CliError::Runtime),
    }
    interrupted
        .await
        .context("cannot wait for signals")
        .map_err(CliError::Runtime)
}
