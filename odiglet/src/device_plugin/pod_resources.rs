//! Kubelet pod-resources client: which pod and container hold each of our device IDs, read
//! with `List` over `<kubelet dir>/pod-resources/kubelet.sock`.
//!
//! Kubelet lists active pods only, without plain init containers and without pod UIDs, and
//! records an allocation only after `Allocate` returns: callers should allow a short grace
//! period for IDs they see in use but not listed yet.

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    time::Duration,
};

use device_plugin_proto::podresources::{
    SOCKET_RELATIVE_PATH,
    v1::{ListPodResourcesRequest, pod_resources_lister_client::PodResourcesListerClient},
};
use tracing::debug;

use super::connect_unix;

/// The pod and container a device was allocated to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceOwner {
    pub resource: String,
    pub namespace: String,
    pub pod: String,
    pub container: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PodResourcesError {
    #[error("cannot connect to the pod-resources socket {path:?}")]
    Connect {
        path: PathBuf,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("pod-resources List failed: {}", .0.message())]
    List(tonic::Status),
    #[error("pod-resources List did not answer within {0:?}")]
    Timeout(Duration),
}

/// Reads device ownership from kubelet. Connects per call: kubelet re-creates the socket when
/// it restarts, so a long-lived connection would go stale.
#[derive(Clone, Debug)]
pub struct PodResourcesClient {
    socket: PathBuf,
    /// Deadline of one call, connection included.
    pub timeout: Duration,
    /// Largest response accepted (tonic's default is 4 MiB; big nodes exceed it).
    pub max_message_bytes: usize,
    /// Attempts when kubelet's rate limit answers `ResourceExhausted`.
    pub attempts: u32,
    /// First delay after a rate-limited call; doubles each time.
    pub backoff: Duration,
}

impl PodResourcesClient {
    /// A client for the pod-resources socket under a kubelet root directory.
    pub fn new(kubelet_dir: &Path) -> Self {
        Self::with_socket(kubelet_dir.join(SOCKET_RELATIVE_PATH))
    }

    pub fn with_socket(socket: PathBuf) -> Self {
        Self {
            socket,
            timeout: Duration::from_secs(10),
            max_message_bytes: 16 << 20,
            attempts: 5,
            backoff: Duration::from_millis(100),
        }
    }

    /// Device ID → owner, for the devices of `resources`.
    pub async fn device_owners(
        &self,
        resources: &HashSet<String>,
    ) -> Result<HashMap<String, DeviceOwner>, PodResourcesError> {
        let mut delay = self.backoff;
        let mut attempt = 1;
        let response = loop {
            match self.list().await {
                Err(PodResourcesError::List(status))
                    if status.code() == tonic::Code::ResourceExhausted
                        && attempt < self.attempts =>
                {
                    debug!(attempt, ?delay, "pod-resources rate limit hit; backing off");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                    attempt += 1;
                }
                result => break result?,
            }
        };
        let mut owners = HashMap::new();
        for pod in response.pod_resources {
            for container in &pod.containers {
                for devices in &container.devices {
                    if !resources.contains(&devices.resource_name) {
                        continue;
                    }
                    for id in &devices.device_ids {
                        let owner = DeviceOwner {
                            resource: devices.resource_name.clone(),
                            namespace: pod.namespace.clone(),
                            pod: pod.name.clone(),
                            container: container.name.clone(),
                        };
                        owners.insert(id.clone(), owner);
                    }
                }
            }
        }
        Ok(owners)
    }

    async fn list(
        &self,
    ) -> Result<device_plugin_proto::podresources::v1::ListPodResourcesResponse, PodResourcesError>
    {
        let call = async {
            let channel =
                connect_unix(&self.socket)
                    .await
                    .map_err(|source| PodResourcesError::Connect {
                        path: self.socket.clone(),
                        source,
                    })?;
            let mut client = PodResourcesListerClient::new(channel)
                .max_decoding_message_size(self.max_message_bytes);
            let response = client
                .list(ListPodResourcesRequest {})
                .await
                .map_err(PodResourcesError::List)?;
            Ok(response.into_inner())
        };
        tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| PodResourcesError::Timeout(self.timeout))?
    }
}
