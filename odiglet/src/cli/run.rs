//! `odiglet run`: the node agent. One tokio runtime, one kube client and one shutdown path for
//! the device plugin, the OpAMP server (with InstrumentationInstance writes and its config fed
//! from InstrumentationConfigs), the Kubernetes watches with runtime detection, and the
//! instrumentation manager's request channel.
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
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::{CliError, opamp_server::PodResourcesLookup, output};
use crate::{
    device_plugin::{DevicePluginConfig, DevicePlugins},
    inspect::{
        Inspector,
        cgroup::{CgroupConfig, DEFAULT_CGROUP_ROOT},
    },
    k8s::{self, DetectionWorker, Glue, GlueConfig, StatusWriter},
    manager::ManagerRequest,
    opamp::{
        DEFAULT_LISTEN, DEFAULT_UNIX_SOCKET, InstanceQueue, OpampConfig, OpampServer, ServedConfig,
        health::QUEUE_CAPACITY, k8s_writer::KubeInstanceWriter,
    },
};

/// Odigos' health-probe port (`k8sconsts.OdigletHealthProbeBindPort`).
pub const DEFAULT_HEALTH_PORT: u16 = 55683;
/// Pending requests to the instrumentation manager.
const MANAGER_QUEUE: usize = 256;
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
    /// Where processes are (`/hostproc` when the pod has no host PID namespace).
    #[arg(
        long,
        env = "ODIGOS_PROC_DIR",
        value_name = "DIR",
        default_value = "/proc"
    )]
    proc_dir: PathBuf,
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
    device_plugin: Option<DevicePluginConfig>,
    opamp: OpampConfig,
    health_addr: SocketAddr,
    detection: Option<(Inspector, CgroupConfig)>,
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
        let detection = (!self.no_runtime_detection).then(|| {
            (
                Inspector::new(&self.proc_dir),
                CgroupConfig {
                    cgroup_root: self.cgroup_root,
                    proc_root: self.proc_dir.clone(),
                },
            )
        });
        Ok(RunConfig {
            kubeconfig: self.kubeconfig,
            node_name,
            device_plugin,
            opamp,
            health_addr: SocketAddr::new(
                self.health_probe_bind_address,
                self.health_probe_bind_port,
            ),
            detection,
            kubelet_dir: self.kubelet_dir,
        })
    }
}

pub fn execute(args: RunArgs) -> Result<(), CliError> {
    let config = args.config()?;
    super::runtime()?.block_on(run(config))
}

/// Until the instrumentation manager is wired in: log what it would be asked.
async fn log_requests(mut requests: mpsc::Receiver<ManagerRequest>) {
    while let Some(request) = requests.recv().await {
        match request {
            ManagerRequest::Apply(target) => info!(
                namespace = %target.key.namespace, pod = %target.key.pod,
                container = %target.key.container, container_id = ?target.container_id,
                distro = %target.distro, traces = target.traces.enabled,
                "instrumentation wanted"
            ),
            ManagerRequest::Remove(key) => info!(
                namespace = %key.namespace, pod = %key.pod, container = %key.container,
                "instrumentation no longer wanted"
            ),
        }
    }
}

async fn run(config: RunConfig) -> Result<(), CliError> {
    let client = k8s::client(config.kubeconfig.as_deref())
        .await
        .map_err(|e| CliError::Usage(e.into()))?;

    let plugins = match config.device_plugin {
        Some(dp) => Some(DevicePlugins::start(dp).map_err(|e| CliError::Usage(e.into()))?),
        None => None,
    };
    let writer = Arc::new(KubeInstanceWriter::new(client.clone()));
    let queue = InstanceQueue::start(writer, QUEUE_CAPACITY);
    let lookup = PodResourcesLookup::new(&config.kubelet_dir);
    let opamp = match OpampServer::start(config.opamp, Box::new(lookup), queue).await {
        Ok(server) => server,
        Err(error) => {
            if let Some(plugins) = plugins {
                plugins.shutdown().await;
            }
            return Err(CliError::Runtime(
                anyhow::Error::new(error).context("cannot start the OpAMP server"),
            ));
        }
    };

    let (requests, received) = mpsc::channel(MANAGER_QUEUE);
    let manager = tokio::spawn(log_requests(received));
    let detection = config
        .detection
        .map(|(inspector, cgroups)| DetectionWorker {
            inspector,
            cgroups,
            writer: StatusWriter::new(client.clone()),
        });
    let glue = Glue::start(
        &client,
        GlueConfig {
            node_name: config.node_name,
            requests,
            opamp: Some((opamp.config.clone(), ServedConfig::default())),
            detection,
        },
    );

    let outcome = tokio::select! {
        synced = glue.wait_synced() => {
            if synced {
                let ready = serde_json::json!({
                    "ready": true,
                    "opamp": opamp.tcp_addr.map(|a| a.to_string()),
                    "unix_socket": opamp.unix_socket.as_ref().map(|p| p.display().to_string()),
                    "opamp_status": opamp.status_addr.map(|a| a.to_string()),
                    "health": config.health_addr.to_string(),
                });
                if let Err(error) = output::line(&ready.to_string()) {
                    warn!(%error, "cannot write the ready line to stdout");
                }
            }
            super::interrupted().await
        }
        interrupted = super::interrupted() => interrupted,
    };
    info!("shutting down");
    let stop_all = async {
        glue.shutdown().await;
        manager.abort();
        let _ = manager.await;
        tokio::join!(opamp.shutdown(), async {
            if let Some(plugins) = plugins {
                plugins.shutdown().await;
            }
        });
    };
    if tokio::time::timeout(SHUTDOWN_BUDGET, stop_all)
        .await
        .is_err()
    {
        warn!(budget = ?SHUTDOWN_BUDGET, "shutdown took too long; exiting anyway");
    }
    outcome
        .context("cannot wait for signals")
        .map_err(CliError::Runtime)
}
