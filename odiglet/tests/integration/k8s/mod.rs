//! The Kubernetes glue with the real `kube` client and kube-runtime watchers against the
//! API-server stand-in: watches → manager requests and OpAMP config, runtime details written
//! once then merged, and `odiglet run` as a child process.

mod detection;
mod end_to_end;
mod run;
mod watches;

use std::time::Duration;

use odiglet::manager::ManagerRequest;
use serde_json::{Value, json};
use tokio::sync::mpsc;

pub const NODE: &str = "node-1";
pub const WAIT: Duration = Duration::from_secs(10);

/// A pod of ReplicaSet `rs` on `node`; containers are (name, container id, ready).
pub fn pod(name: &str, node: &str, rs: &str, containers: &[(&str, Option<&str>, bool)]) -> Value {
    let statuses: Vec<Value> = containers
        .iter()
        .filter_map(|(container, id, ready)| {
            id.map(|id| {
                json!({"name": container, "ready": ready, "restartCount": 0, "image": "img",
                    "imageID": "", "containerID": id})
            })
        })
        .collect();
    json!({
        "metadata": {"name": name, "namespace": "shop", "uid": format!("uid-{name}"),
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs,
                "uid": "rs-uid", "controller": true}]},
        "spec": {"nodeName": node, "containers": containers.iter()
            .map(|(c, _, _)| json!({"name": c, "image": "img", "env": [{"name": "BIG", "value": "x"}]}))
            .collect::<Vec<_>>()},
        "status": {"phase": "Running", "qosClass": "BestEffort", "containerStatuses": statuses}
    })
}

/// An InstrumentationConfig in namespace `shop`.
pub fn config(name: &str, containers: Value) -> Value {
    json!({
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {"agentInjectionEnabled": true, "serviceName": "", "containers": containers}
    })
}

pub fn go_container(name: &str) -> Value {
    json!({"containerName": name, "agentEnabled": true, "otelDistroName": "golang-community",
        "traces": {}})
}

/// The next manager request, or a panic naming what was expected.
pub async fn next_request(rx: &mut mpsc::Receiver<ManagerRequest>, what: &str) -> ManagerRequest {
    match tokio::time::timeout(WAIT, rx.recv()).await {
        Ok(Some(request)) => request,
        Ok(None) => panic!("request channel closed while waiting for {what}"),
        Err(_) => panic!("no manager request within {WAIT:?}: expected {what}"),
    }
}

/// Asserts no request arrives for a while (changes only, nothing repeated).
pub async fn no_request(rx: &mut mpsc::Receiver<ManagerRequest>, after: &str) {
    if let Ok(Some(request)) = tokio::time::timeout(Duration::from_millis(400), rx.recv()).await {
        panic!("unexpected request after {after}: {request:?}");
    }
}

/// Polls `probe` until it returns `Some`, or panics.
pub async fn eventually<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {WAIT:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
