//! The Kubernetes glue of `odiglet run`: watches this node's Pods and the
//! InstrumentationConfigs, and turns them into what the other components need.
//!
//! ```text
//! API server ─watch─▶ watch (reflector stores) ─notify─▶ controller ─┬─ManagerRequest─▶ manager
//!                                                                     ├─ServedConfig──▶ OpAMP ConfigStore
//!                                                                     └─DetectionJob──▶ detection ─status─▶ API server
//! ```
//! Pure rules live in their own modules and are unit-tested: `workload` (owner → workload,
//! config names), `targets` (desired eBPF targets and the changes between two states),
//! `served` (OpAMP config), `runtime_details` (write-once-then-merge), `log_level` (Odigos'
//! `effective-config` log levels, followed live).

pub mod client;
pub mod controller;
pub mod crd;
pub mod detection;
pub mod log_level;
pub mod runtime_details;
pub mod served;
pub mod targets;
pub mod watch;
pub mod workload;

use std::sync::Arc;

use kube::Client;
use tokio::{
    sync::{Notify, mpsc, watch as signal},
    task::JoinSet,
};
use tracing::info;

pub use self::{
    client::{ClientError, client},
    crd::InstrumentationConfig,
    detection::{DetectionWorker, StatusWriter},
    watch::Stores,
};
use crate::{
    manager::ManagerRequest,
    opamp::{ConfigStore, ServedConfig},
};

/// What the glue is connected to.
pub struct GlueConfig {
    /// `spec.nodeName` of the pods to watch (`NODE_NAME`).
    pub node_name: String,
    /// Where eBPF instrumentation requests go.
    pub requests: mpsc::Sender<ManagerRequest>,
    /// The OpAMP server's config store, and the config not derived from the cluster.
    pub opamp: Option<(Arc<ConfigStore>, ServedConfig)>,
    /// Runtime detection and its status writes; `None` turns detection off.
    pub detection: Option<DetectionWorker>,
    /// Odigos' namespace, whose `effective-config` sets the log level live; `None`: not followed.
    pub log_levels_from: Option<String>,
}

/// The running glue.
pub struct Glue {
    pub stores: Stores,
    /// True once both watches listed and the first reconciliation ran.
    pub synced: signal::Receiver<bool>,
    stop: signal::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Glue {
    /// Starts the watches, the controller and the detection worker.
    pub fn start(client: &Client, config: GlueConfig) -> Self {
        let changed = Arc::new(Notify::new());
        let mut tasks = JoinSet::new();
        let stores = watch::start(client, &config.node_name, changed.clone(), &mut tasks);
        let detection = config.detection.map(|worker| {
            let (queue, task) = worker.start(detection::QUEUE_CAPACITY);
            tasks.spawn(async move {
                let _ = task.await;
            });
            queue
        });
        let (synced_tx, synced) = signal::channel(false);
        let (stop, stopped) = signal::channel(false);
        let outputs = controller::Outputs {
            requests: config.requests,
            opamp: config.opamp,
            detection,
            synced: synced_tx,
        };
        tasks.spawn(controller::run(stores.clone(), changed, outputs, stopped));
        if let Some(namespace) = config.log_levels_from {
            tasks.spawn(log_level::follow(client.clone(), namespace));
        }
        info!(node = %config.node_name, "watching this node's pods and InstrumentationConfigs");
        Self {
            stores,
            synced,
            stop,
            tasks,
        }
    }

    /// Resolves once the watches have synced; false if the glue stopped first.
    pub async fn wait_synced(&self) -> bool {
        let mut synced = self.synced.clone();
        synced.wait_for(|s| *s).await.is_ok()
    }

    /// Stops the controller, the watches and the detection worker (an in-flight status write
    /// is abandoned; the next start-up scan redoes it).
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        info!("Kubernetes glue stopped");
    }
}
