//! Device plugin benchmark, over real Unix sockets with production timings: Allocate latency
//! (sequential, and 1000 concurrent calls as the load case) and the time from `kubelet.sock`
//! being re-created to the plugin being registered again. Run with
//! `cargo bench -p odiglet --bench device_plugin`; figures go into BENCHMARKS.md.
#![allow(
    clippy::unwrap_used,
    reason = "a benchmark: a failed step should panic"
)]
#![expect(clippy::print_stdout, reason = "a benchmark reports on stdout")]

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use device_plugin_proto::deviceplugin::v1beta1::{
    AllocateRequest, ContainerAllocateRequest, Empty, RegisterRequest,
    device_plugin_client::DevicePluginClient,
    registration_server::{Registration, RegistrationServer},
};
use odiglet::device_plugin::{
    DevicePluginConfig, DevicePlugins, Language, ResourceConfig, connect_unix,
};
use tokio::{net::UnixListener, sync::mpsc, task::JoinHandle};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status};

const JAVA: &str = "instrumentation.odigos.io/java-native-community";
const SEQUENTIAL_CALLS: usize = 5000;
const CONCURRENT_CALLS: usize = 1000;
const CONCURRENT_ROUNDS: usize = 10;
const RESTARTS: usize = 20;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

/// A minimal kubelet: dials back and reads the options inside `Register`, then consumes
/// ListAndWatch, and reports each completed registration.
struct Kubelet {
    registered: mpsc::UnboundedSender<Instant>,
    dir: PathBuf,
    consumers: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

#[tonic::async_trait]
impl Registration for Kubelet {
    async fn register(&self, request: Request<RegisterRequest>) -> Result<Response<Empty>, Status> {
        let request = request.into_inner();
        let channel = connect_unix(&self.dir.join(&request.endpoint))
            .await
            .map_err(|e| Status::unknown(e.to_string()))?;
        let mut client = DevicePluginClient::new(channel);
        client.get_device_plugin_options(Empty {}).await?;
        let consumer = tokio::spawn(async move {
            if let Ok(stream) = client.list_and_watch(Empty {}).await {
                let mut stream = stream.into_inner();
                while let Ok(Some(_)) = stream.message().await {}
            }
        });
        self.consumers.lock().unwrap().push(consumer);
        let _ = self.registered.send(Instant::now());
        Ok(Response::new(Empty {}))
    }
}

struct Running {
    server: JoinHandle<()>,
    consumers: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

fn start_kubelet(dir: &Path, registered: mpsc::UnboundedSender<Instant>) -> (Running, Instant) {
    let consumers = Arc::new(Mutex::new(Vec::new()));
    let kubelet = Kubelet {
        registered,
        dir: dir.to_path_buf(),
        consumers: consumers.clone(),
    };
    let listener = UnixListener::bind(dir.join("kubelet.sock")).unwrap();
    let created = Instant::now();
    let server = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(RegistrationServer::new(kubelet))
            .serve_with_incoming(UnixListenerStream::new(listener))
            .await;
    });
    (Running { server, consumers }, created)
}

/// Kubelet dies; the new one deletes every socket before listening again.
fn kill_kubelet(running: Running, dir: &Path) {
    running.server.abort();
    for consumer in running.consumers.lock().unwrap().drain(..) {
        consumer.abort();
    }
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        use std::os::unix::fs::FileTypeExt;
        if entry.file_type().unwrap().is_socket() {
            std::fs::remove_file(entry.path()).unwrap();
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{name}: n={} p50={:?} p90={:?} p99={:?} max={:?}",
        samples.len(),
        percentile(&samples, 0.50),
        percentile(&samples, 0.90),
        percentile(&samples, 0.99),
        samples[samples.len() - 1],
    );
}

async fn run() {
    let tmp = tempfile::tempdir().unwrap();
    let kubelet_dir = tmp.path().join("kubelet");
    let dir = kubelet_dir.join("device-plugins");
    let agents = tmp.path().join("odigos");
    std::fs::create_dir_all(agents.join("java")).unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    let (registered_tx, mut registered) = mpsc::unbounded_channel();
    let (mut kubelet, _) = start_kubelet(&dir, registered_tx.clone());

    let mut config = DevicePluginConfig::new(&kubelet_dir, agents, "10.0.0.1".parse().unwrap());
    config.resources = vec![ResourceConfig {
        name: JAVA.into(),
        language: Language::Java,
    }];
    let plugins = DevicePlugins::start(config).unwrap();
    let mut status = plugins.status(JAVA).unwrap();
    registered.recv().await.unwrap();
    status.wait_for(|s| s.registered).await.unwrap();
    let endpoint = status.borrow().endpoint.clone().unwrap();
    let mut client = DevicePluginClient::new(connect_unix(&dir.join(endpoint)).await.unwrap());
    let ids = odiglet::device_plugin::resources::device_ids(JAVA, 1024);
    let request = |i: usize| AllocateRequest {
        container_requests: vec![ContainerAllocateRequest {
            devices_ids: vec![ids[i % 1024].clone()],
        }],
    };

    // The plugin's own cost per container, without gRPC: building the response from the table.
    let resource = odiglet::device_plugin::Resource::new(
        &ResourceConfig {
            name: JAVA.into(),
            language: Language::Java,
        },
        1024,
        Path::new("/var/odigos"),
        "10.0.0.1".parse().unwrap(),
    )
    .unwrap();
    let mut pure = Vec::with_capacity(100_000);
    for i in 0..100_000 {
        let start = Instant::now();
        std::hint::black_box(
            resource
                .allocate(std::slice::from_ref(&ids[i % 1024]))
                .unwrap(),
        );
        pure.push(start.elapsed());
    }
    report("allocate response built in-process (no gRPC)", pure);

    for i in 0..500 {
        client.allocate(request(i)).await.unwrap();
    }
    let mut sequential = Vec::with_capacity(SEQUENTIAL_CALLS);
    for i in 0..SEQUENTIAL_CALLS {
        let start = Instant::now();
        client.allocate(request(i)).await.unwrap();
        sequential.push(start.elapsed());
    }
    report("allocate sequential (1 in flight)", sequential);

    let mut concurrent = Vec::with_capacity(CONCURRENT_CALLS * CONCURRENT_ROUNDS);
    let mut walls = Vec::new();
    for _ in 0..CONCURRENT_ROUNDS {
        let wall = Instant::now();
        let calls: Vec<_> = (0..CONCURRENT_CALLS)
            .map(|i| {
                let mut client = client.clone();
                let request = request(i);
                tokio::spawn(async move {
                    let start = Instant::now();
                    client.allocate(request).await.unwrap();
                    start.elapsed()
                })
            })
            .collect();
        for call in calls {
            concurrent.push(call.await.unwrap());
        }
        walls.push(wall.elapsed());
    }
    report(
        "allocate under load (1000 concurrent, per call)",
        concurrent,
    );
    report("allocate under load (1000 concurrent, whole batch)", walls);

    let mut reregistration = Vec::with_capacity(RESTARTS);
    for _ in 0..RESTARTS {
        kill_kubelet(kubelet, &dir);
        let (running, created) = start_kubelet(&dir, registered_tx.clone());
        kubelet = running;
        let at = tokio::time::timeout(Duration::from_secs(10), registered.recv())
            .await
            .expect("re-registered within 10 s")
            .unwrap();
        reregistration.push(at.duration_since(created));
    }
    report("kubelet.sock re-created -> re-registered", reregistration);
    plugins.shutdown().await;
}
