//! A kubelet stand-in built from the same protos, behaving as kubelet's device manager does:
//! `Register` checks the version and name, dials the plugin back and calls
//! `GetDevicePluginOptions` inside the call, then consumes ListAndWatch (each message replaces
//! the device set). An admission driver allocates per (container, resource) and merges the
//! responses first-wins; allocations live in a checkpoint that survives restarts. Restarts
//! delete every socket in the directory, as kubelet's start-up clean-up does. A pod-resources
//! server answers `List` from the checkpoint.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed step should panic with its backtrace"
)]

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use device_plugin_proto::{
    deviceplugin::{
        HEALTHY, SUPPORTED_VERSIONS,
        v1beta1::{
            AllocateRequest, ContainerAllocateRequest, ContainerAllocateResponse, Empty,
            RegisterRequest,
            device_plugin_client::DevicePluginClient,
            registration_server::{Registration, RegistrationServer},
        },
    },
    podresources::v1::pod_resources_lister_server::PodResourcesListerServer,
};
use odiglet::device_plugin::{connect_unix, resources::validate_resource_name};
use tokio::{net::UnixListener, sync::watch, task::JoinHandle};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status, transport::Channel};

mod pod_resources;
use pod_resources::PodResources;

/// Kubelet's dial-back timeout inside `Register`.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// (namespace/pod, container, resource).
pub type AllocationKey = (String, String, String);

/// The device manager's view of one resource.
#[derive(Debug)]
pub struct ResourceView {
    pub endpoint: String,
    /// Serial of the registration that created this endpoint.
    pub serial: u64,
    pub healthy: HashSet<String>,
    pub unhealthy: HashSet<String>,
    /// Stream ended (or kubelet restarted): RPCs to it are refused.
    pub stopped: bool,
    pub messages: u64,
    pub last_message_len: Option<usize>,
    client: DevicePluginClient<Channel>,
}

#[derive(Debug)]
pub struct RegistrationRecord {
    pub resource: String,
    pub endpoint: String,
    pub at: Instant,
}

/// Everything the stand-in knows; tests read it through [`Kubelet::state`].
#[derive(Debug, Default)]
pub struct State {
    pub resources: HashMap<String, ResourceView>,
    pub registrations: Vec<RegistrationRecord>,
    /// Survives restarts, as kubelet's checkpoint file does.
    pub checkpoint: BTreeMap<AllocationKey, (Vec<String>, ContainerAllocateResponse)>,
    /// When each `kubelet.sock` started listening.
    pub started_at: Vec<Instant>,
    pub allocate_calls: u64,
    /// Open ListAndWatch streams per resource, and the most ever open at once.
    pub open_streams: HashMap<String, usize>,
    pub max_open_streams: usize,
    /// A stream of a replaced endpoint ended and, as kubelet does (kubernetes#121994), stopped
    /// the newer endpoint.
    pub stale_disconnects: u64,
    /// Registrations to refuse before accepting again.
    pub fail_registrations: u32,
    pub dial_delay: Duration,
    /// Pod-resources `List` calls to refuse with `ResourceExhausted`.
    pub rate_limited_lists: u32,
    serial: u64,
}

struct Shared {
    state: Mutex<State>,
    changed: watch::Sender<u64>,
    dir: PathBuf,
    consumers: Mutex<Vec<JoinHandle<()>>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn bump(&self) {
        self.changed.send_modify(|version| *version += 1);
    }
}

/// The stand-in kubelet process; `restart` and `crash` model the real one's life.
pub struct Kubelet {
    shared: Arc<Shared>,
    servers: Vec<JoinHandle<()>>,
}

impl Kubelet {
    /// Starts serving `kubelet.sock` in `device_plugins_dir` and pod-resources under
    /// `kubelet_dir`.
    pub fn start(kubelet_dir: &Path) -> Self {
        let dir = kubelet_dir.join("device-plugins");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::create_dir_all(kubelet_dir.join("pod-resources")).unwrap();
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: watch::channel(0).0,
            dir,
            consumers: Mutex::new(Vec::new()),
        });
        let mut kubelet = Self {
            shared,
            servers: Vec::new(),
        };
        kubelet.boot(kubelet_dir);
        kubelet
    }

    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        self.shared.lock()
    }

    /// Kubelet start-up: delete every socket in the directory, mark known resources stopped
    /// with no devices (what the checkpoint restores), then listen on a new `kubelet.sock`.
    fn boot(&mut self, kubelet_dir: &Path) {
        for entry in std::fs::read_dir(&self.shared.dir).unwrap().flatten() {
            use std::os::unix::fs::FileTypeExt;
            // A plugin may remove or replace its own socket meanwhile: gone is as good as removed.
            let is_socket = entry.file_type().is_ok_and(|t| t.is_socket());
            if is_socket && let Err(error) = std::fs::remove_file(entry.path()) {
                assert_eq!(error.kind(), std::io::ErrorKind::NotFound, "{error}");
            }
        }
        {
            let mut state = self.shared.lock();
            for view in state.resources.values_mut() {
                view.stopped = true;
                view.healthy.clear();
                view.unhealthy.clear();
            }
            state.open_streams.clear();
        }
        let pod_resources = kubelet_dir.join("pod-resources/kubelet.sock");
        let _ = std::fs::remove_file(&pod_resources);
        let listener = UnixListener::bind(&pod_resources).unwrap();
        let service = PodResourcesListerServer::new(PodResources(self.shared.clone()));
        self.servers.push(tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(UnixListenerStream::new(listener))
                .await;
        }));
        let listener = UnixListener::bind(self.shared.dir.join("kubelet.sock")).unwrap();
        self.shared.lock().started_at.push(Instant::now());
        let service = RegistrationServer::new(RegistrationService(self.shared.clone()));
        self.servers.push(tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(UnixListenerStream::new(listener))
                .await;
        }));
        self.shared.bump();
    }

    /// The process dies: servers and streams vanish, files stay behind.
    pub fn crash(&mut self) {
        for server in self.servers.drain(..) {
            server.abort();
        }
        for consumer in self.shared.consumers.lock().unwrap().drain(..) {
            consumer.abort();
        }
        self.shared.bump();
    }

    /// Kubelet restarts (or the node rebooted): crash, then boot with the checkpoint kept.
    pub fn restart(&mut self) {
        self.crash();
        let kubelet_dir = self.shared.dir.parent().unwrap().to_path_buf();
        self.boot(&kubelet_dir);
    }

    /// Waits until `condition` holds, panicking with `what` after `timeout`.
    pub async fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        condition: impl Fn(&State) -> bool,
    ) {
        let mut changed = self.shared.changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if condition(&self.shared.lock()) {
                return;
            }
            if tokio::time::timeout_at(deadline, changed.changed())
                .await
                .is_err()
            {
                let state = self.shared.lock();
                panic!(
                    "timed out after {timeout:?} waiting for {what}; state: {:#?}",
                    Summary(&state)
                );
            }
        }
    }

    /// Admits a pod as kubelet does: for each (container, resource, count), reuse the
    /// checkpointed allocation or pick healthy free IDs and call Allocate with one container
    /// request. Returns each container's merged options (first wins), or the admission error.
    pub async fn admit(
        &self,
        pod: &str,
        containers: &[(&str, &str, usize)],
    ) -> Result<HashMap<String, Merged>, String> {
        let mut merged: HashMap<String, Merged> = HashMap::new();
        for (container, resource, count) in containers {
            let key = (
                pod.to_owned(),
                (*container).to_owned(),
                (*resource).to_owned(),
            );
            let response = match self.cached(&key, resource)? {
                Some(response) => response,
                None => self.allocate_new(&key, *count).await?,
            };
            merged
                .entry((*container).to_owned())
                .or_default()
                .merge(&response);
        }
        Ok(merged)
    }

    fn cached(
        &self,
        key: &AllocationKey,
        resource: &str,
    ) -> Result<Option<ContainerAllocateResponse>, String> {
        let state = self.shared.lock();
        let Some((ids, response)) = state.checkpoint.get(key) else {
            return Ok(None);
        };
        // A checkpointed container needs the resource registered with its devices healthy.
        let view = state.resources.get(resource).filter(|view| !view.stopped);
        let Some(view) = view else {
            return Err(format!(
                "UnexpectedAdmissionError: cannot allocate unregistered device {resource}"
            ));
        };
        if !ids.iter().all(|id| view.healthy.contains(id)) {
            return Err(format!(
                "UnexpectedAdmissionError: previously allocated devices are no longer healthy; cannot allocate unhealthy devices {resource}"
            ));
        }
        Ok(Some(response.clone()))
    }

    async fn allocate_new(
        &self,
        key: &AllocationKey,
        count: usize,
    ) -> Result<ContainerAllocateResponse, String> {
        let resource = &key.2;
        let (ids, mut client) = {
            let state = self.shared.lock();
            let Some(view) = state.resources.get(resource).filter(|view| !view.stopped) else {
                return Err(format!(
                    "UnexpectedAdmissionError: cannot allocate unregistered device {resource}"
                ));
            };
            let used: HashSet<&String> = state
                .checkpoint
                .iter()
                .filter(|(k, _)| &k.2 == resource)
                .flat_map(|(_, (ids, _))| ids)
                .collect();
            let mut free: Vec<&String> = view
                .healthy
                .iter()
                .filter(|id| !used.contains(id))
                .collect();
            free.sort();
            if free.len() < count {
                return Err(format!(
                    "requested {count} of {resource}, available {}",
                    free.len()
                ));
            }
            (
                free[..count]
                    .iter()
                    .map(|id| (*id).clone())
                    .collect::<Vec<_>>(),
                view.client.clone(),
            )
        };
        let response = Self::allocate_ids(&mut client, ids.clone()).await?;
        let mut state = self.shared.lock();
        state.allocate_calls += 1;
        state
            .checkpoint
            .insert(key.clone(), (ids, response.clone()));
        drop(state);
        self.shared.bump();
        Ok(response)
    }

    /// One Allocate call with one container request, checked as kubelet checks it.
    pub async fn allocate_ids(
        client: &mut DevicePluginClient<Channel>,
        ids: Vec<String>,
    ) -> Result<ContainerAllocateResponse, String> {
        let request = AllocateRequest {
            container_requests: vec![ContainerAllocateRequest { devices_ids: ids }],
        };
        let response = client.allocate(request).await.map_err(|status| {
            format!(
                "UnexpectedAdmissionError: {:?}: {}",
                status.code(),
                status.message()
            )
        })?;
        response
            .into_inner()
            .container_responses
            .into_iter()
            .next()
            .ok_or_else(|| "no containers return in allocation response".to_owned())
    }

    /// A client of a resource's current endpoint, as kubelet holds it.
    pub fn client(&self, resource: &str) -> DevicePluginClient<Channel> {
        self.shared.lock().resources[resource].client.clone()
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.crash();
    }
}

/// Options for one container after merging every resource's response, first wins.
#[derive(Debug, Default)]
pub struct Merged {
    pub envs: HashMap<String, String>,
    pub mounts: HashMap<String, (String, bool)>,
    pub conflicts: Vec<String>,
}

impl Merged {
    fn merge(&mut self, response: &ContainerAllocateResponse) {
        for (key, value) in &response.envs {
            match self.envs.get(key) {
                Some(existing) if existing != value => self.conflicts.push(format!("env {key}")),
                Some(_) => {}
                None => {
                    self.envs.insert(key.clone(), value.clone());
                }
            }
        }
        for mount in &response.mounts {
            let value = (mount.host_path.clone(), mount.read_only);
            match self.mounts.get(&mount.container_path) {
                Some(existing) if *existing != value => {
                    self.conflicts
                        .push(format!("mount {}", mount.container_path));
                }
                Some(_) => {}
                None => {
                    self.mounts.insert(mount.container_path.clone(), value);
                }
            }
        }
    }
}

struct Summary<'a>(&'a State);

impl std::fmt::Debug for Summary<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let resources: BTreeMap<&String, (String, u64, usize, usize, bool)> = self
            .0
            .resources
            .iter()
            .map(|(name, v)| {
                (
                    name,
                    (
                        v.endpoint.clone(),
                        v.messages,
                        v.healthy.len(),
                        v.unhealthy.len(),
                        v.stopped,
                    ),
                )
            })
            .collect();
        f.debug_struct("State")
            .field(
                "resources (endpoint, messages, healthy, unhealthy, stopped)",
                &resources,
            )
            .field("registrations", &self.0.registrations.len())
            .field("open_streams", &self.0.open_streams)
            .finish()
    }
}

// === Registration ===

struct RegistrationService(Arc<Shared>);

#[tonic::async_trait]
impl Registration for RegistrationService {
    async fn register(&self, request: Request<RegisterRequest>) -> Result<Response<Empty>, Status> {
        let request = request.into_inner();
        if !SUPPORTED_VERSIONS.contains(&request.version.as_str()) {
            return Err(Status::unknown(format!(
                "requested API version {:?} is not supported by kubelet. Supported versions are {SUPPORTED_VERSIONS:?}",
                request.version
            )));
        }
        if validate_resource_name(&request.resource_name).is_err() {
            return Err(Status::unknown(format!(
                "the ResourceName {:?} is invalid",
                request.resource_name
            )));
        }
        let delay = {
            let mut state = self.0.lock();
            if state.fail_registrations > 0 {
                state.fail_registrations -= 1;
                return Err(Status::unknown("registration refused by the test"));
            }
            state.dial_delay
        };
        tokio::time::sleep(delay).await;
        // Dial back and ask for the options, inside the Register call.
        let socket = self.0.dir.join(&request.endpoint);
        let channel = tokio::time::timeout(DIAL_TIMEOUT, connect_unix(&socket))
            .await
            .map_err(|_| Status::unknown("dial timeout"))?
            .map_err(|e| Status::unknown(format!("failed to dial device plugin: {e}")))?;
        let mut client = DevicePluginClient::new(channel);
        client.get_device_plugin_options(Empty {}).await?;
        let serial = {
            let mut state = self.0.lock();
            state.serial += 1;
            let serial = state.serial;
            let view = ResourceView {
                endpoint: request.endpoint.clone(),
                serial,
                healthy: HashSet::new(),
                unhealthy: HashSet::new(),
                stopped: false,
                messages: 0,
                last_message_len: None,
                client: client.clone(),
            };
            // A new registration replaces the endpoint of the resource.
            state.resources.insert(request.resource_name.clone(), view);
            state.registrations.push(RegistrationRecord {
                resource: request.resource_name.clone(),
                endpoint: request.endpoint,
                at: Instant::now(),
            });
            serial
        };
        let consumer = tokio::spawn(consume(
            self.0.clone(),
            request.resource_name,
            serial,
            client,
        ));
        self.0.consumers.lock().unwrap().push(consumer);
        self.0.bump();
        Ok(Response::new(Empty {}))
    }
}

/// Kubelet's `runClient`: ListAndWatch without a deadline; each message replaces the set.
async fn consume(
    shared: Arc<Shared>,
    resource: String,
    serial: u64,
    mut client: DevicePluginClient<Channel>,
) {
    let stream = client.list_and_watch(Empty {}).await;
    {
        let mut state = shared.lock();
        let open = state.open_streams.entry(resource.clone()).or_default();
        *open += 1;
        let open = *open;
        state.max_open_streams = state.max_open_streams.max(open);
    }
    shared.bump();
    if let Ok(stream) = stream {
        let mut stream = stream.into_inner();
        while let Ok(Some(message)) = stream.message().await {
            let mut state = shared.lock();
            if let Some(view) = state
                .resources
                .get_mut(&resource)
                .filter(|v| v.serial == serial)
            {
                view.healthy.clear();
                view.unhealthy.clear();
                for device in &message.devices {
                    if device.health == HEALTHY {
                        view.healthy.insert(device.id.clone());
                    } else {
                        view.unhealthy.insert(device.id.clone());
                    }
                }
                view.messages += 1;
                view.last_message_len = Some(message.devices.len());
            }
            drop(state);
            shared.bump();
        }
    }
    // The stream ended: kubelet disconnects the resource's *current* endpoint, even when this
    // stream belonged to a replaced one (kubernetes#121994).
    let mut state = shared.lock();
    if let Some(open) = state.open_streams.get_mut(&resource) {
        *open = open.saturating_sub(1);
    }
    let current = state
        .resources
        .get(&resource)
        .map(|view| (view.serial, view.stopped));
    if let Some((current, stopped)) = current {
        if current != serial && !stopped {
            state.stale_disconnects += 1;
        }
        if let Some(view) = state.resources.get_mut(&resource) {
            view.stopped = true;
            let healthy: Vec<String> = view.healthy.drain().collect();
            view.unhealthy.extend(healthy);
        }
    }
    drop(state);
    shared.bump();
}
