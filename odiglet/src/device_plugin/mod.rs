//! Kubelet device plugin: advertises Odigos' virtual instrumentation devices so the scheduler
//! only places instrumented pods on nodes running odiglet, and answers `Allocate` with the
//! agent's mount and environment.
//!
//! ```text
//! resources    config -> validated Resource (IDs, per-language Allocate table)
//! server       DevicePlugin gRPC service + grpc.health.v1 on our socket; agent-dir health
//! registration one supervisor per resource: serve on a fresh socket -> Register -> watch for
//!              kubelet restarts (inotify + poll + stream end) -> re-serve and re-register
//! pod_resources kubelet pod-resources client: device ID -> (namespace, pod, container)
//! ```
//! [`DevicePlugins::start`] runs everything; [`DevicePlugins::shutdown`] sends empty device
//! lists and removes our sockets.

pub mod pod_resources;
mod registration;
pub mod resources;
pub mod server;

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use hyper_util::rt::TokioIo;
use tokio::{net::UnixStream, sync::watch, task::JoinHandle};
use tonic::transport::{Channel, Endpoint, Uri};
use tracing::{Instrument, info, info_span, warn};

pub use registration::PluginStatus;
use registration::{DirWatcher, Supervisor};
pub use resources::{Language, Resource, ResourceConfig, ResourceError};

/// Longest Unix socket path (`sun_path` is 108 bytes with the terminating NUL).
const MAX_SOCKET_PATH: usize = 107;

/// How fast the plugin reacts; the defaults suit production, tests shorten them.
#[derive(Clone, Debug)]
pub struct Timings {
    /// Backstop poll of our socket and `kubelet.sock`, for when inotify misses something.
    pub poll_interval: Duration,
    /// How often agent directories are checked for health.
    pub health_interval: Duration,
    /// Deadline of one `Register` call: above kubelet's 10 s dial-back plus the options call.
    pub register_timeout: Duration,
    /// First and largest delay between failed registrations (retried forever).
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// How long streams and the old server get to finish when a generation stops.
    pub drain_timeout: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(1),
            health_interval: Duration::from_secs(2),
            register_timeout: Duration::from_secs(15),
            backoff_initial: Duration::from_millis(50),
            backoff_max: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(1),
        }
    }
}

/// Everything the device plugin needs; validated once by [`DevicePlugins::start`].
#[derive(Clone, Debug)]
pub struct DevicePluginConfig {
    /// Where kubelet's `kubelet.sock` is and our sockets go (`<kubelet dir>/device-plugins`).
    pub device_plugins_dir: PathBuf,
    /// Host directory holding the agents (`/var/odigos`).
    pub agents_dir: PathBuf,
    /// This node's IP, for the OpAMP and OTLP endpoints handed to agents.
    pub node_ip: IpAddr,
    pub resources: Vec<ResourceConfig>,
    pub device_count: u32,
    pub timings: Timings,
}

impl DevicePluginConfig {
    /// The default resources and device count for a kubelet root directory.
    pub fn new(kubelet_dir: &Path, agents_dir: PathBuf, node_ip: IpAddr) -> Self {
        Self {
            device_plugins_dir: kubelet_dir.join("device-plugins"),
            agents_dir,
            node_ip,
            resources: ResourceConfig::defaults(),
            device_count: resources::DEFAULT_DEVICE_COUNT,
            timings: Timings::default(),
        }
    }
}

/// Why the device plugin could not start.
#[derive(Debug, thiserror::Error)]
pub enum DevicePluginError {
    #[error(transparent)]
    Resource(#[from] ResourceError),
    #[error("socket path {path:?} would exceed {MAX_SOCKET_PATH} bytes: use a shorter directory")]
    SocketPathTooLong { path: PathBuf },
    #[error("cannot create the device-plugins directory {path:?}")]
    Directory {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The running device plugins, one per resource.
pub struct DevicePlugins {
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    statuses: Vec<(String, watch::Receiver<PluginStatus>)>,
    // Kept alive for its inotify thread; `None` when inotify is unavailable (polling only).
    _watcher: Option<notify::RecommendedWatcher>,
}

impl DevicePlugins {
    /// Validates the configuration and starts serving and registering every resource. Must be
    /// called inside a tokio runtime.
    pub fn start(config: DevicePluginConfig) -> Result<Self, DevicePluginError> {
        let resources = resources::build_resources(
            &config.resources,
            config.device_count,
            &config.agents_dir,
            config.node_ip,
        )?;
        let dir = config.device_plugins_dir.clone();
        for resource in &resources {
            let longest = dir.join(registration::socket_name(
                &resource.name,
                0xffff_ffff_ffff,
                u64::from(u32::MAX),
            ));
            if longest.as_os_str().len() > MAX_SOCKET_PATH {
                return Err(DevicePluginError::SocketPathTooLong { path: longest });
            }
        }
        std::fs::create_dir_all(&dir).map_err(|source| DevicePluginError::Directory {
            path: dir.clone(),
            source,
        })?;
        registration::remove_stale_sockets(&dir, &resources);

        let (shutdown, _) = watch::channel(false);
        let (watcher, events) = DirWatcher::start(&dir);
        let instance = registration::instance_id();
        let mut tasks = Vec::new();
        let mut statuses = Vec::new();
        for resource in resources {
            // Known before the first ListAndWatch, so a rebooted node sees its checkpointed
            // devices Healthy in the very first message.
            let healthy = resource
                .agent_host_dir
                .as_deref()
                .is_none_or(|d| std::fs::read_dir(d).is_ok());
            if !healthy {
                warn!(resource = %resource.name, "agent directory missing or unreadable: devices unhealthy");
            }
            let (health_tx, health) = watch::channel(healthy);
            let span = info_span!("device_plugin", resource = %resource.name);
            tasks.push(tokio::spawn(
                server::monitor_health(
                    resource.name.clone(),
                    resource.agent_host_dir.clone(),
                    config.timings.health_interval,
                    health_tx,
                    shutdown.subscribe(),
                )
                .instrument(span.clone()),
            ));
            let (status_tx, status) = watch::channel(PluginStatus::default());
            statuses.push((resource.name.clone(), status));
            let supervisor = Supervisor {
                resource,
                dir: dir.clone(),
                health,
                events: events.subscribe(),
                shutdown: shutdown.subscribe(),
                timings: config.timings.clone(),
                status: status_tx,
                instance,
            };
            tasks.push(tokio::spawn(supervisor.run().instrument(span)));
        }
        info!(dir = %dir.display(), resources = statuses.len(), "device plugins started");
        Ok(Self {
            shutdown,
            tasks,
            statuses,
            _watcher: watcher,
        })
    }

    /// Registration state per resource name.
    pub fn statuses(&self) -> Vec<(String, PluginStatus)> {
        self.statuses
            .iter()
            .map(|(name, status)| (name.clone(), status.borrow().clone()))
            .collect()
    }

    /// Watches the registration state of one resource.
    pub fn status(&self, resource: &str) -> Option<watch::Receiver<PluginStatus>> {
        self.statuses
            .iter()
            .find(|(name, _)| name == resource)
            .map(|(_, status)| status.clone())
    }

    /// Sends every kubelet stream an empty device list, stops the servers and removes our
    /// sockets. Bounded by the drain timeouts.
    pub async fn shutdown(self) {
        self.shutdown.send_replace(true);
        for task in self.tasks {
            if let Err(error) = task.await {
                warn!(%error, "a device plugin task failed");
            }
        }
        info!("device plugins stopped");
    }
}

/// A gRPC channel over a Unix socket. The URI is a placeholder: kubelet's servers ignore the
/// authority, and the connector dials `path` every time the channel (re)connects.
pub async fn connect_unix(path: &Path) -> Result<Channel, tonic::transport::Error> {
    let path = Arc::new(path.to_path_buf());
    Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = Arc::clone(&path);
            async move { UnixStream::connect(path.as_path()).await.map(TokioIo::new) }
        }))
        .await
}
