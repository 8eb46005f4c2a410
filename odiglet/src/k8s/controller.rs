//! The glue's control loop: woken by the watches, it reads both stores and
//!
//! - sends the manager the [`ManagerRequest`]s that bring it to the desired targets (changes
//!   only; the channel is bounded, so a slow manager slows the loop, never memory);
//! - rebuilds the OpAMP served config (cluster mode);
//! - queues runtime detection (odigos.md §4.1): once for every ready pod after the first
//!   complete list (the start-up scan), for a pod whose containers all became ready (or were
//!   replaced by restarted, ready ones), and for a newly created InstrumentationConfig
//!   without runtime details.
//!
//! `synced` turns true once the first pass over complete lists is done (readiness).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    sync::Arc,
};

use k8s_openapi::api::core::v1::Pod;
use tokio::sync::{Notify, mpsc, watch};
use tracing::{debug, info};

use super::{
    detection::{DetectionJob, DetectionQueue, PodSnapshot},
    served::served_config,
    targets::{self, config_of, container_id},
    watch::Stores,
};
use crate::{
    manager::{ContainerKey, ContainerTarget, ManagerRequest},
    opamp::{ConfigStore, ServedConfig},
};

/// Where the loop's results go.
pub struct Outputs {
    pub requests: mpsc::Sender<ManagerRequest>,
    /// The OpAMP server's config and the part not derived from the cluster.
    pub opamp: Option<(Arc<ConfigStore>, ServedConfig)>,
    pub detection: Option<DetectionQueue>,
    pub synced: watch::Sender<bool>,
}

/// Every container reports ready (and the pod has started them all).
pub fn all_ready(pod: &Pod) -> bool {
    let expected = pod.spec.as_ref().map_or(0, |s| s.containers.len());
    let statuses = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_deref())
        .unwrap_or_default();
    expected > 0 && statuses.len() >= expected && statuses.iter().all(|s| s.ready)
}

fn pod_key(pod: &Pod) -> Option<(String, String)> {
    Some((pod.metadata.namespace.clone()?, pod.metadata.name.clone()?))
}

/// A ready pod's uid and container ids.
type ReadyPod = (String, Vec<Option<String>>);

/// What the loop remembers between passes.
#[derive(Default)]
struct Memory {
    targets: BTreeMap<ContainerKey, ContainerTarget>,
    /// Pods seen all-ready last pass, by (namespace, name) → what makes them "the same
    /// ready pod": uid and container ids (a restarted container, even one whose not-ready
    /// moment fell between two passes, counts as becoming ready again).
    ready: HashMap<(String, String), ReadyPod>,
    /// InstrumentationConfigs seen, by (namespace, name).
    configs: HashSet<(String, String)>,
}

/// Runs until `stop` fires or the manager's channel closes.
pub async fn run(
    stores: Stores,
    changed: Arc<Notify>,
    outputs: Outputs,
    mut stop: watch::Receiver<bool>,
) {
    tokio::select! {
        ready = stores.wait_until_ready() => if !ready { return },
        _ = stop.wait_for(|s| *s) => return,
    }
    let mut memory = Memory::default();
    let mut first = true;
    loop {
        if !pass(&stores, &outputs, &mut memory, first).await {
            info!("the instrumentation manager is gone; stopping the Kubernetes glue");
            return;
        }
        if first {
            first = false;
            info!(
                pods = stores.pods.len(),
                configs = stores.configs.len(),
                "Kubernetes watches synced"
            );
            let _ = outputs.synced.send(true);
        }
        tokio::select! {
            () = changed.notified() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// One reconciliation over the current stores; false when the manager's channel closed.
async fn pass(stores: &Stores, outputs: &Outputs, memory: &mut Memory, first: bool) -> bool {
    let pods = stores.pods.state();
    let configs = stores.configs.state();
    let index = targets::index(configs.iter().map(AsRef::as_ref));
    let pods = || pods.iter().map(AsRef::as_ref);

    let next = targets::desired(pods(), &index);
    for request in targets::changes(&memory.targets, &next) {
        debug!(?request, "manager request");
        if outputs.requests.send(request).await.is_err() {
            return false;
        }
    }
    memory.targets = next;

    if let Some((store, base)) = &outputs.opamp
        && store.set(served_config(base, pods(), &index))
    {
        debug!("OpAMP config changed; agents get it on their next poll");
    }

    // Runtime detection: which workloads to inspect, with which of their ready pods.
    let mut wanted: BTreeSet<(String, String)> = BTreeSet::new();
    let mut ready_now = HashMap::new();
    for pod in pods() {
        let (Some(key), true) = (pod_key(pod), all_ready(pod)) else {
            continue;
        };
        let containers = pod.spec.iter().flat_map(|s| &s.containers);
        let identity = (
            pod.metadata.uid.clone().unwrap_or_default(),
            containers.map(|c| container_id(pod, &c.name)).collect(),
        );
        let newly_ready = memory.ready.get(&key) != Some(&identity);
        ready_now.insert(key, identity);
        if let Some((workload, _)) = config_of(pod, &index)
            && (first || newly_ready)
        {
            wanted.insert((workload.namespace.clone(), workload.config_name()));
        }
    }
    memory.ready = ready_now;
    let mut seen = HashSet::new();
    for config in &configs {
        let (Some(namespace), Some(name)) = (&config.metadata.namespace, &config.metadata.name)
        else {
            continue;
        };
        let key = (namespace.clone(), name.clone());
        if !first && !memory.configs.contains(&key) && config.runtime_details().is_empty() {
            wanted.insert(key.clone());
        }
        seen.insert(key);
    }
    memory.configs = seen;

    if let Some(queue) = &outputs.detection {
        for (namespace, config) in wanted {
            let ready_pods = pods()
                .filter(|pod| all_ready(pod) && pod.metadata.deletion_timestamp.is_none())
                .filter(|pod| {
                    config_of(pod, &index)
                        .is_some_and(|(w, _)| w.namespace == namespace && w.config_name() == config)
                })
                .filter_map(PodSnapshot::of)
                .collect();
            queue.push(DetectionJob {
                namespace,
                config,
                pods: ready_pods,
            });
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn readiness_needs_every_container() {
        let pod = |statuses: serde_json::Value| -> Pod {
            serde_json::from_value(json!({
                "metadata": {"name": "p"},
                "spec": {"containers": [{"name": "a"}, {"name": "b"}]},
                "status": {"containerStatuses": statuses}
            }))
            .expect("pod")
        };
        let status = |name: &str, ready: bool| json!({"name": name, "ready": ready, "restartCount": 0, "image": "", "imageID": ""});
        assert!(all_ready(&pod(json!([
            status("a", true),
            status("b", true)
        ]))));
        assert!(!all_ready(&pod(json!([
            status("a", true),
            status("b", false)
        ]))));
        assert!(!all_ready(&pod(json!([status("a", true)]))));
        assert!(!all_ready(&pod(json!([]))));
    }
}
