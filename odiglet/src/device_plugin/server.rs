//! The `DevicePlugin` gRPC service kubelet calls on our socket, the agent-directory health
//! monitor that feeds ListAndWatch, and serving both plus `grpc.health.v1` on a Unix socket.

use std::{path::PathBuf, pin::Pin, sync::Arc, time::Duration};

use device_plugin_proto::deviceplugin::{
    HEALTHY, UNHEALTHY,
    v1beta1::{
        AllocateRequest, AllocateResponse, ContainerPreferredAllocationResponse, Device,
        DevicePluginOptions, Empty, ListAndWatchResponse, PreStartContainerRequest,
        PreStartContainerResponse, PreferredAllocationRequest, PreferredAllocationResponse,
        device_plugin_server::{DevicePlugin, DevicePluginServer},
    },
};
use futures::Stream;
use tokio::{net::UnixListener, sync::watch, task::JoinHandle};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status};
use tracing::{debug, info, warn};

use super::resources::Resource;

/// Our options; `Register` carries the same values for kubelets older than 1.25.
pub const OPTIONS: DevicePluginOptions = DevicePluginOptions {
    // Allocate is pure and the agents are on the host already: nothing to do per start.
    pre_start_required: false,
    // Our devices are interchangeable, so kubelet's own choice is as good as any.
    get_preferred_allocation_available: false,
};

/// How the streams of a server generation end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopMode {
    Running,
    /// Re-registering: end the streams so kubelet sees EOF before the new `Register`.
    Restart,
    /// Shutting down: send an empty device list first, so capacity drops to 0 at once.
    Shutdown,
}

/// The service of one server generation.
#[derive(Clone)]
pub struct DevicePluginService {
    resource: Arc<Resource>,
    health: watch::Receiver<bool>,
    stop: watch::Receiver<StopMode>,
    streams: Arc<watch::Sender<StreamCount>>,
}

impl DevicePluginService {
    /// `health` says whether the devices are usable; `stop` ends the streams; `streams` counts
    /// open ListAndWatch streams (the supervisor watches it to notice kubelet leaving).
    pub fn new(
        resource: Arc<Resource>,
        health: watch::Receiver<bool>,
        stop: watch::Receiver<StopMode>,
        streams: Arc<watch::Sender<StreamCount>>,
    ) -> Self {
        Self {
            resource,
            health,
            stop,
            streams,
        }
    }

    fn device_list(&self, healthy: bool) -> ListAndWatchResponse {
        let health = if healthy { HEALTHY } else { UNHEALTHY };
        let devices = self
            .resource
            .ids
            .iter()
            .map(|id| Device {
                id: id.clone(),
                health: health.to_owned(),
                topology: None,
            })
            .collect();
        ListAndWatchResponse { devices }
    }
}

/// ListAndWatch streams of one server generation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamCount {
    /// Streams open now.
    pub open: usize,
    /// Streams ever opened: with `open`, tells "kubelet left" from "kubelet not here yet".
    pub opened: u64,
}

/// Counts a ListAndWatch stream while it lives; tonic drops it when kubelet goes away.
struct StreamGuard(Arc<watch::Sender<StreamCount>>);

impl StreamGuard {
    fn new(streams: Arc<watch::Sender<StreamCount>>) -> Self {
        streams.send_modify(|count| {
            count.open += 1;
            count.opened += 1;
        });
        Self(streams)
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0
            .send_modify(|count| count.open = count.open.saturating_sub(1));
    }
}

struct WatchState {
    service: DevicePluginService,
    last: Option<bool>,
    health_closed: bool,
    done: bool,
    _guard: StreamGuard,
}

type ListAndWatchStream = Pin<Box<dyn Stream<Item = Result<ListAndWatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl DevicePlugin for DevicePluginService {
    async fn get_device_plugin_options(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<DevicePluginOptions>, Status> {
        // Kubelet calls this inside our Register call: it must never wait on registration.
        Ok(Response::new(OPTIONS))
    }

    type ListAndWatchStream = ListAndWatchStream;

    async fn list_and_watch(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<Self::ListAndWatchStream>, Status> {
        debug!(resource = %self.resource.name, "kubelet opened ListAndWatch");
        let state = WatchState {
            service: self.clone(),
            last: None,
            health_closed: false,
            done: false,
            _guard: StreamGuard::new(self.streams.clone()),
        };
        let stream = futures::stream::unfold(state, |mut state| async move {
            if state.done {
                return None;
            }
            let service = &mut state.service;
            loop {
                let mode = *service.stop.borrow_and_update();
                match mode {
                    StopMode::Running => {}
                    StopMode::Restart => return None,
                    StopMode::Shutdown => {
                        state.done = true;
                        return Some((Ok(ListAndWatchResponse::default()), state));
                    }
                }
                let healthy = *service.health.borrow_and_update();
                // The full list at once, then only real changes: kubelet rewrites its
                // checkpoint on every message.
                if state.last != Some(healthy) {
                    state.last = Some(healthy);
                    let list = service.device_list(healthy);
                    return Some((Ok(list), state));
                }
                // The health monitor stops first on shutdown: its end must not end the stream
                // before the empty list goes out.
                tokio::select! {
                    changed = service.health.changed(), if !state.health_closed => {
                        state.health_closed = changed.is_err();
                    }
                    changed = service.stop.changed() => if changed.is_err() { return None },
                }
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_preferred_allocation(
        &self,
        request: Request<PreferredAllocationRequest>,
    ) -> Result<Response<PreferredAllocationResponse>, Status> {
        // Any devices do: the ones that must be included, then the first available.
        let container_responses = request
            .into_inner()
            .container_requests
            .into_iter()
            .map(|request| {
                let size = usize::try_from(request.allocation_size).unwrap_or(0);
                let mut chosen: Vec<String> = request
                    .must_include_device_i_ds
                    .into_iter()
                    .take(size)
                    .collect();
                for id in request.available_device_i_ds {
                    if chosen.len() >= size {
                        break;
                    }
                    if !chosen.contains(&id) {
                        chosen.push(id);
                    }
                }
                ContainerPreferredAllocationResponse {
                    device_i_ds: chosen,
                }
            })
            .collect();
        Ok(Response::new(PreferredAllocationResponse {
            container_responses,
        }))
    }

    async fn allocate(
        &self,
        request: Request<AllocateRequest>,
    ) -> Result<Response<AllocateResponse>, Status> {
        let requests = request.into_inner().container_requests;
        if requests.is_empty() {
            return Err(Status::invalid_argument(
                "AllocateRequest has no container requests",
            ));
        }
        // Exactly one response per container request, in order.
        let container_responses = requests
            .iter()
            .map(|request| self.resource.allocate(&request.devices_ids))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| {
                warn!(resource = %self.resource.name, %error, "refused Allocate");
                Status::invalid_argument(error.to_string())
            })?;
        debug!(resource = %self.resource.name, containers = requests.len(), "allocated");
        Ok(Response::new(AllocateResponse {
            container_responses,
        }))
    }

    async fn pre_start_container(
        &self,
        _: Request<PreStartContainerRequest>,
    ) -> Result<Response<PreStartContainerResponse>, Status> {
        // Nothing to prepare: the agent directories are on the host before any pod starts.
        Ok(Response::new(PreStartContainerResponse {}))
    }
}

/// Serves the device plugin and `grpc.health.v1` (Odigos' probes use it) on `listener` until
/// `stop` resolves.
pub fn spawn_server(
    listener: UnixListener,
    service: DevicePluginService,
    stop: impl Future<Output = ()> + Send + 'static,
) -> JoinHandle<Result<(), tonic::transport::Error>> {
    tokio::spawn(async move {
        let (reporter, health) = tonic_health::server::health_reporter();
        reporter
            .set_serving::<DevicePluginServer<DevicePluginService>>()
            .await;
        tonic::transport::Server::builder()
            .add_service(health)
            .add_service(DevicePluginServer::new(service))
            .serve_with_incoming_shutdown(UnixListenerStream::new(listener), stop)
            .await
    })
}

/// True when the agent directory exists and can be listed. Off the runtime threads: a hung
/// mount must not stall the gRPC server.
pub async fn agent_dir_ready(dir: &std::path::Path) -> bool {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || std::fs::read_dir(dir).is_ok())
        .await
        .unwrap_or(false)
}

/// Keeps `health` in step with the agent directory, both ways, until `shutdown` is set.
/// A resource without a directory (Go) is always healthy.
pub async fn monitor_health(
    resource: String,
    dir: Option<PathBuf>,
    interval: Duration,
    health: watch::Sender<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let healthy = match &dir {
            Some(dir) => agent_dir_ready(dir).await,
            None => true,
        };
        health.send_if_modified(|current| {
            if *current == healthy {
                return false;
            }
            *current = healthy;
            match &dir {
                Some(dir) if !healthy => {
                    warn!(%resource, dir = %dir.display(), "agent directory missing or unreadable: devices unhealthy");
                }
                _ => info!(%resource, healthy, "device health changed"),
            }
            true
        });
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use futures::StreamExt;

    use super::*;
    use crate::device_plugin::resources::{Language, ResourceConfig};

    fn service() -> (
        DevicePluginService,
        watch::Sender<bool>,
        watch::Sender<StopMode>,
    ) {
        let config = ResourceConfig {
            name: "example.com/dev".into(),
            language: Language::Java,
        };
        let resource =
            Resource::new(&config, 3, Path::new("/a"), "10.0.0.1".parse().unwrap()).unwrap();
        let (health_tx, health) = watch::channel(true);
        let (stop_tx, stop) = watch::channel(StopMode::Running);
        let streams = Arc::new(watch::channel(StreamCount::default()).0);
        (
            DevicePluginService::new(Arc::new(resource), health, stop, streams),
            health_tx,
            stop_tx,
        )
    }

    #[tokio::test]
    async fn list_and_watch_sends_changes_only_and_empty_on_shutdown() {
        let (service, health, stop) = service();
        let mut stream = service
            .list_and_watch(Request::new(Empty {}))
            .await
            .unwrap()
            .into_inner();
        let first = stream.next().await.unwrap().unwrap();
        assert_eq!(first.devices.len(), 3);
        assert!(first.devices.iter().all(|d| d.health == HEALTHY));
        assert_eq!(
            *service.streams.borrow(),
            StreamCount { open: 1, opened: 1 }
        );
        // A no-op update sends nothing; a real change sends the full list.
        health.send_replace(true);
        health.send_replace(false);
        let second = stream.next().await.unwrap().unwrap();
        assert!(second.devices.iter().all(|d| d.health == UNHEALTHY));
        stop.send_replace(StopMode::Shutdown);
        assert!(stream.next().await.unwrap().unwrap().devices.is_empty());
        assert!(stream.next().await.is_none());
        drop(stream);
        assert_eq!(
            *service.streams.borrow(),
            StreamCount { open: 0, opened: 1 }
        );
    }

    #[tokio::test]
    async fn restart_ends_streams_without_a_message() {
        let (service, _health, stop) = service();
        let mut stream = service
            .list_and_watch(Request::new(Empty {}))
            .await
            .unwrap()
            .into_inner();
        stream.next().await.unwrap().unwrap();
        stop.send_replace(StopMode::Restart);
        assert!(stream.next().await.is_none());
    }

    #[tokio::test]
    async fn preferred_allocation_keeps_must_include() {
        let (service, ..) = service();
        let request = PreferredAllocationRequest {
            container_requests: vec![
                device_plugin_proto::deviceplugin::v1beta1::ContainerPreferredAllocationRequest {
                    available_device_i_ds: vec!["a".into(), "b".into(), "c".into()],
                    must_include_device_i_ds: vec!["c".into()],
                    allocation_size: 2,
                },
            ],
        };
        let response = service
            .get_preferred_allocation(Request::new(request))
            .await
            .unwrap();
        assert_eq!(
            response.into_inner().container_responses[0].device_i_ds,
            ["c", "a"]
        );
    }

    #[tokio::test]
    async fn allocate_answers_each_container_and_names_unknown_ids() {
        let (service, ..) = service();
        let ids = service.resource.ids.clone();
        let request = |lists: Vec<Vec<String>>| {
            Request::new(AllocateRequest {
                container_requests: lists
                    .into_iter()
                    .map(|devices_ids| {
                        device_plugin_proto::deviceplugin::v1beta1::ContainerAllocateRequest {
                            devices_ids,
                        }
                    })
                    .collect(),
            })
        };
        let response = service
            .allocate(request(vec![
                vec![ids[0].clone()],
                vec![ids[1].clone(), ids[2].clone()],
            ]))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(response.container_responses.len(), 2);
        let error = service
            .allocate(request(vec![vec!["bogus-7".into()]]))
            .await
            .unwrap_err();
        assert_eq!(error.code(), tonic::Code::InvalidArgument);
        assert!(error.message().contains("bogus-7"), "{}", error.message());
        let error = service.allocate(request(vec![])).await.unwrap_err();
        assert_eq!(error.code(), tonic::Code::InvalidArgument);
    }
}
