//! `odiglet opamp-server`: run only the OpAMP server for native agents. Standalone (no cluster
//! access, or `--standalone`): identity from attributes and pod-resources, config from
//! `--config`, no InstrumentationInstance writes. With cluster credentials it also writes
//! InstrumentationInstances.

use std::{
    collections::HashSet,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context;
use clap::Args;
use tracing::info;

use super::{CliError, output};
use crate::{
    device_plugin::{
        pod_resources::PodResourcesClient,
        resources::{DEFAULT_RESOURCES, RESOURCE_NAMESPACE},
    },
    opamp::{
        DEFAULT_LISTEN, DEFAULT_UNIX_SOCKET, InstanceQueue, Limits, OpampConfig, OpampServer,
        health::QUEUE_CAPACITY,
        identity::{BoxFuture, DeviceOwner, DeviceOwnerLookup},
        k8s_writer::KubeInstanceWriter,
    },
};

#[derive(Debug, Args)]
pub struct OpampServerArgs {
    /// OpAMP over HTTP on TCP.
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// OpAMP over HTTP on a Unix socket (mode 0666, recreated at start, removed at exit).
    #[arg(long, value_name = "PATH", default_value = DEFAULT_UNIX_SOCKET)]
    unix_socket: PathBuf,
    /// Do not serve on a Unix socket.
    #[arg(long, conflicts_with = "unix_socket")]
    no_unix_socket: bool,
    /// Kubelet directory holding pod-resources/kubelet.sock (device-id identity).
    #[arg(long, value_name = "DIR", default_value = "/var/lib/kubelet")]
    kubelet_dir: PathBuf,
    /// Local status API (`GET /v1/agents`).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:4321")]
    status_listen: SocketAddr,
    /// Refuse requests without `X-Odigos-DeviceId` (401), as the 2024 server did.
    #[arg(long)]
    require_device_id: bool,
    /// Seconds without a message after which an agent is dropped.
    #[arg(long, value_name = "SECS", default_value_t = 75.0)]
    heartbeat_timeout: f64,
    /// Standalone config file (JSON; reloaded when it changes).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Node name reported to agents as `k8s.node.name`.
    #[arg(long, env = "NODE_NAME", default_value = "")]
    node_name: String,
    /// Never write InstrumentationInstances, even when cluster credentials are found.
    #[arg(long)]
    standalone: bool,
    /// Largest request body after decompression (413 beyond).
    #[arg(long, default_value_t = 4 << 20)]
    max_body_bytes: usize,
    /// Requests handled at once (503 + Retry-After beyond).
    #[arg(long, default_value_t = 1024)]
    max_in_flight: usize,
}

impl OpampServerArgs {
    fn config(self) -> Result<OpampConfig, CliError> {
        if !(self.heartbeat_timeout.is_finite() && self.heartbeat_timeout > 0.0) {
            return Err(CliError::Usage(anyhow::anyhow!(
                "--heartbeat-timeout must be a positive number of seconds, got {}",
                self.heartbeat_timeout
            )));
        }
        let stale_after = Duration::from_secs_f64(self.heartbeat_timeout);
        Ok(OpampConfig {
            listen: Some(self.listen),
            unix_socket: (!self.no_unix_socket).then_some(self.unix_socket),
            status_listen: Some(self.status_listen),
            limits: Limits {
                max_body_bytes: self.max_body_bytes,
                max_in_flight: self.max_in_flight,
                require_device_id: self.require_device_id,
            },
            stale_after,
            // Sweep often enough that removal lands within ~1/3 of the timeout after it.
            sweep_every: (stale_after / 3).min(Duration::from_secs(30)),
            config_file: self.config,
            reload_every: Duration::from_secs(1),
            node_name: self.node_name,
            ..OpampConfig::default()
        })
    }
}

pub fn execute(args: OpampServerArgs) -> Result<(), CliError> {
    let kubelet_dir = args.kubelet_dir.clone();
    let standalone = args.standalone;
    let config = args.config()?;
    super::runtime()?
        .block_on(serve(config, kubelet_dir, standalone))
        .map_err(CliError::Runtime)
}

/// Cluster mode when credentials are found (in-cluster or kubeconfig), else standalone.
async fn instance_queue(standalone: bool) -> InstanceQueue {
    if standalone {
        info!("standalone mode: no InstrumentationInstance writes");
        return InstanceQueue::disabled();
    }
    match kube::Client::try_default().await {
        Ok(client) => {
            info!("cluster mode: writing InstrumentationInstances");
            let writer = std::sync::Arc::new(KubeInstanceWriter::new(client));
            InstanceQueue::start(writer, QUEUE_CAPACITY)
        }
        Err(error) => {
            info!(%error, "no cluster access; standalone mode: no InstrumentationInstance writes");
            InstanceQueue::disabled()
        }
    }
}

async fn serve(config: OpampConfig, kubelet_dir: PathBuf, standalone: bool) -> anyhow::Result<()> {
    let mut interrupted = super::Interrupted::register()?;
    let lookup = PodResourcesLookup::new(&kubelet_dir);
    info!(socket = %kubelet_dir.display(), "device ids resolve through kubelet's pod-resources API");
    let queue = instance_queue(standalone).await;
    let server = OpampServer::start(config, Box::new(lookup), queue)
        .await
        .context("cannot start the OpAMP server")?;
    let ready = serde_json::json!({
        "opamp": server.tcp_addr.map(|a| a.to_string()),
        "unix_socket": server.unix_socket.as_ref().map(|p| p.display().to_string()),
        "status": server.status_addr.map(|a| a.to_string()),
    });
    output::line(&ready.to_string()).context("cannot write to stdout")?;
    interrupted.wait().await;
    server.shutdown().await;
    Ok(())
}

/// `X-Odigos-DeviceId` → pod and container, through kubelet's pod-resources API: the devices
/// the device plugin handed out. The OpAMP server caches answers and bounds each call.
pub(super) struct PodResourcesLookup {
    client: PodResourcesClient,
    /// Only Odigos' instrumentation devices are looked at.
    resources: HashSet<String>,
}

impl PodResourcesLookup {
    pub(super) fn new(kubelet_dir: &Path) -> Self {
        let resources = DEFAULT_RESOURCES
            .iter()
            .map(|(name, _)| format!("{RESOURCE_NAMESPACE}/{name}"))
            .collect();
        Self {
            client: PodResourcesClient::new(kubelet_dir),
            resources,
        }
    }
}

impl DeviceOwnerLookup for PodResourcesLookup {
    fn owner<'a>(
        &'a self,
        device_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<DeviceOwner>, String>> {
        Box::pin(async move {
            let owners = self
                .client
                .device_owners(&self.resources)
                .await
                .map_err(|error| format!("{:#}", anyhow::Error::new(error)))?;
            Ok(owners.get(device_id).map(|owner| DeviceOwner {
                namespace: owner.namespace.clone(),
                pod: owner.pod.clone(),
                container: owner.container.clone(),
            }))
        })
    }
}
