//! A container-runtime stand-in serving CRI `runtime.v1` `ContainerStatus` and `ImageStatus`
//! (from the same generated definitions odiglet's client uses) on a Unix socket, answering as
//! containerd does: the container's image id in `image_ref`, and for a verbose image status
//! the OCI image under `info["info"].imageSpec`.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use device_plugin_proto::cri::v1::{
    self as cri, image_service_server::ImageService, image_service_server::ImageServiceServer,
    runtime_service_server::RuntimeService, runtime_service_server::RuntimeServiceServer,
};
use serde_json::json;
use tokio::{net::UnixListener, task::JoinHandle};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status};

#[derive(Default)]
pub struct RuntimeState {
    /// Container id → image id.
    pub containers: HashMap<String, String>,
    /// Image id → its `Env` entries (`NAME=value`).
    pub images: HashMap<String, Vec<String>>,
    /// Every call: `ContainerStatus <id>` or `ImageStatus <image> verbose=<bool>`.
    pub calls: Vec<String>,
}

#[derive(Clone, Default)]
struct Shared(Arc<Mutex<RuntimeState>>);

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, RuntimeState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct ContainerRuntime {
    pub socket: PathBuf,
    shared: Shared,
    server: JoinHandle<()>,
}

impl ContainerRuntime {
    /// Serves on `<dir>/containerd.sock`. Must be called inside a tokio runtime.
    pub fn start(dir: &Path) -> Self {
        let socket = dir.join("containerd.sock");
        let listener = UnixListener::bind(&socket).expect("bind the CRI socket");
        let shared = Shared::default();
        let (runtime, images) = (shared.clone(), shared.clone());
        let server = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(RuntimeServiceServer::new(Runtime(runtime)))
                .add_service(ImageServiceServer::new(Images(images)))
                .serve_with_incoming(UnixListenerStream::new(listener))
                .await;
        });
        Self {
            socket,
            shared,
            server,
        }
    }

    /// Container `id` runs image `image`, whose config has `env`.
    pub fn add(&self, id: &str, image: &str, env: &[&str]) {
        let mut state = self.shared.lock();
        state.containers.insert(id.to_owned(), image.to_owned());
        state.images.insert(
            image.to_owned(),
            env.iter().map(|e| (*e).to_owned()).collect(),
        );
    }

    pub fn calls(&self) -> Vec<String> {
        self.shared.lock().calls.clone()
    }
}

impl Drop for ContainerRuntime {
    fn drop(&mut self) {
        self.server.abort();
    }
}

struct Runtime(Shared);

#[tonic::async_trait]
impl RuntimeService for Runtime {
    async fn container_status(
        &self,
        request: Request<cri::ContainerStatusRequest>,
    ) -> Result<Response<cri::ContainerStatusResponse>, Status> {
        let id = request.into_inner().container_id;
        let mut state = self.0.lock();
        state.calls.push(format!("ContainerStatus {id}"));
        let image = state.containers.get(&id).cloned().ok_or_else(|| {
            Status::not_found(format!(
                "container \"{id}\" in namespace \"k8s.io\": not found"
            ))
        })?;
        Ok(Response::new(cri::ContainerStatusResponse {
            status: Some(cri::ContainerStatus {
                id,
                state: cri::ContainerState::ContainerRunning.into(),
                image: Some(cri::ImageSpec {
                    image: "registry.example/app:1".to_owned(),
                    ..Default::default()
                }),
                image_ref: image,
                ..Default::default()
            }),
            info: HashMap::new(),
        }))
    }
}

struct Images(Shared);

#[tonic::async_trait]
impl ImageService for Images {
    async fn image_status(
        &self,
        request: Request<cri::ImageStatusRequest>,
    ) -> Result<Response<cri::ImageStatusResponse>, Status> {
        let request = request.into_inner();
        let image = request.image.map(|i| i.image).unwrap_or_default();
        let mut state = self.0.lock();
        state
            .calls
            .push(format!("ImageStatus {image} verbose={}", request.verbose));
        // An unknown image is an empty response, not an error, as the CRI specifies.
        let Some(env) = state.images.get(&image) else {
            return Ok(Response::new(cri::ImageStatusResponse::default()));
        };
        let mut info = HashMap::new();
        if request.verbose {
            let verbose = json!({"chainID": "sha256:chain", "imageSpec": {
                "architecture": "amd64", "os": "linux",
                "config": {"Env": env, "Cmd": ["python3"]}}});
            info.insert("info".to_owned(), verbose.to_string());
        }
        Ok(Response::new(cri::ImageStatusResponse {
            image: Some(cri::Image {
                id: image,
                size: 1,
                ..Default::default()
            }),
            info,
        }))
    }
}
