//! The two watches odiglet keeps (odigos.md §6, §9 item 8): this node's Pods (field selector
//! `spec.nodeName=<node>`) and every InstrumentationConfig, each a kube-rs watcher with backoff
//! feeding a reflector store. `managedFields` are dropped before objects are stored (they are
//! often the largest part of an object and odiglet never reads them). Every event wakes the
//! controller through one [`Notify`]; it then reads the stores, so bursts coalesce.

use std::{fmt::Debug, sync::Arc};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client, Resource, ResourceExt,
    runtime::{
        WatchStreamExt,
        reflector::{self, Store},
        watcher,
    },
};
use serde::de::DeserializeOwned;
use tokio::{sync::Notify, task::JoinSet};
use tracing::warn;

use super::crd::InstrumentationConfig;

/// The reflector stores, readable at any time; empty until their first list.
#[derive(Clone)]
pub struct Stores {
    pub pods: Store<Pod>,
    pub configs: Store<InstrumentationConfig>,
}

impl Stores {
    /// Resolves when both stores hold their first complete list.
    pub async fn wait_until_ready(&self) -> bool {
        self.pods.wait_until_ready().await.is_ok() && self.configs.wait_until_ready().await.is_ok()
    }
}

/// Pods keep what the glue reads: metadata (owners, labels, mirror annotation), containers'
/// names, and the status; the rest of the spec (env, volumes, probes) can be large.
fn slim_pod(pod: &mut Pod) {
    pod.managed_fields_mut().clear();
    if let Some(spec) = pod.spec.as_mut() {
        spec.volumes = None;
        spec.init_containers = None;
        spec.affinity = None;
        spec.tolerations = None;
        for container in &mut spec.containers {
            container.env = None;
            container.env_from = None;
            container.volume_mounts = None;
            container.command = None;
            container.args = None;
            container.liveness_probe = None;
            container.readiness_probe = None;
            container.startup_probe = None;
        }
    }
}

/// Starts both watches on `tasks`; `changed` is notified after each applied event.
pub fn start(
    client: &Client,
    node_name: &str,
    changed: Arc<Notify>,
    tasks: &mut JoinSet<()>,
) -> Stores {
    let pods_api: Api<Pod> = Api::all(client.clone());
    let pods_config = watcher::Config::default().fields(&format!("spec.nodeName={node_name}"));
    let (pods, pods_writer) = reflector::store();
    tasks.spawn(run(
        pods_api,
        pods_config,
        pods_writer,
        slim_pod,
        changed.clone(),
    ));

    let configs_api: Api<InstrumentationConfig> = Api::all(client.clone());
    let (configs, configs_writer) = reflector::store();
    tasks.spawn(run(
        configs_api,
        watcher::Config::default(),
        configs_writer,
        |ic: &mut InstrumentationConfig| ic.managed_fields_mut().clear(),
        changed,
    ));
    Stores { pods, configs }
}

async fn run<K>(
    api: Api<K>,
    config: watcher::Config,
    writer: reflector::store::Writer<K>,
    slim: fn(&mut K),
    changed: Arc<Notify>,
) where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let kind = K::kind(&()).into_owned();
    let events = watcher(api, config)
        .default_backoff()
        .modify(slim)
        .reflect(writer);
    futures::pin_mut!(events);
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::InitApply(_) | watcher::Event::Init) => {}
            Ok(_) => changed.notify_one(),
            // The backoff re-lists; keep going.
            Err(error) => warn!(%kind, error = %error, "watch failed; retrying"),
        }
    }
}
