//! NODE SET-UP (`odiglet init`): marks this node as running odiglet and lifts the start-up taint,
//! as Odigos' init phase does (odigos.md §6 "core Node"). The label lets Odigos schedule
//! instrumented pods only where odiglet runs; the `odigos.io/needs-init:NoSchedule` taint
//! (set by Karpenter node pools) keeps pods off a new node until odiglet is ready on it.
//!
//! One JSON merge patch carries both changes with the node's `resourceVersion` as a
//! precondition, so a concurrent writer (another controller adding a taint) is never
//! overwritten: a conflict re-reads and retries. The node is read as raw JSON, not as a typed
//! object, so the taints written back are exactly the server's minus the one removed.

use kube::{
    Api, Client,
    api::{DynamicObject, Patch, PatchParams},
    core::ApiResource,
};
use serde::Serialize;
use serde_json::{Value, json};
use tracing::{debug, info};

/// The label Odigos' open-source odiglet puts on its nodes.
pub const INSTALLED_LABEL: &str = "odigos.io/odiglet-oss-installed";
/// Karpenter's start-up taint for nodes that need Odigos' init.
pub const NEEDS_INIT_TAINT: &str = "odigos.io/needs-init";
/// Conflicting writes tolerated before giving up (client-go's default backoff has 6 steps).
const ATTEMPTS: usize = 6;

#[derive(Debug, thiserror::Error)]
pub enum NodeSetupError {
    #[error("cannot read node {node}")]
    Get {
        node: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot update node {node}")]
    Patch {
        node: String,
        #[source]
        source: kube::Error,
    },
    #[error("node {node} kept changing: {ATTEMPTS} conflicting updates")]
    Conflicts { node: String },
}

/// What the set-up did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeSetupOutcome {
    /// The label was added and/or the taint removed.
    Updated { labelled: bool, untainted: bool },
    /// Already labelled and not tainted: nothing written.
    Unchanged,
    /// GKE Autopilot forbids changing nodes (Odigos skips it too).
    SkippedAutopilot,
}

/// GKE Autopilot nodes are named `gk3-...`; `GKE_AUTOPILOT=true` says so explicitly.
pub fn is_gke_autopilot(node_name: &str, autopilot_flag: bool) -> bool {
    autopilot_flag || node_name.starts_with("gk3-")
}

/// Labels `node_name` and removes the start-up taint, unless on GKE Autopilot.
pub async fn set_up_node(
    client: Client,
    node_name: &str,
    autopilot_flag: bool,
) -> Result<NodeSetupOutcome, NodeSetupError> {
    if is_gke_autopilot(node_name, autopilot_flag) {
        info!(node = node_name, "GKE Autopilot: node left as it is");
        return Ok(NodeSetupOutcome::SkippedAutopilot);
    }
    let resource = ApiResource::erase::<k8s_openapi::api::core::v1::Node>(&());
    let nodes: Api<DynamicObject> = Api::all_with(client, &resource);
    for attempt in 1..=ATTEMPTS {
        let node = nodes
            .get(node_name)
            .await
            .map_err(|source| NodeSetupError::Get {
                node: node_name.to_owned(),
                source,
            })?;
        let Some((patch, outcome)) = patch_for(&node) else {
            debug!(node = node_name, "already labelled, no start-up taint");
            return Ok(NodeSetupOutcome::Unchanged);
        };
        match nodes
            .patch(node_name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                info!(node = node_name, ?outcome, "node set up for odiglet");
                return Ok(outcome);
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {
                debug!(
                    node = node_name,
                    attempt, "node changed meanwhile; re-reading"
                );
            }
            Err(source) => {
                return Err(NodeSetupError::Patch {
                    node: node_name.to_owned(),
                    source,
                });
            }
        }
    }
    Err(NodeSetupError::Conflicts {
        node: node_name.to_owned(),
    })
}

/// The merge patch that labels the node and drops the taint, with the node's resourceVersion
/// as precondition; `None` when there is nothing to change.
fn patch_for(node: &DynamicObject) -> Option<(Value, NodeSetupOutcome)> {
    let labelled = node
        .metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(INSTALLED_LABEL))
        .is_some_and(|value| value == "true");
    let taints = node.data["spec"]["taints"].as_array();
    let kept: Vec<Value> = taints
        .into_iter()
        .flatten()
        .filter(|taint| !(taint["key"] == NEEDS_INIT_TAINT && taint["effect"] == "NoSchedule"))
        .cloned()
        .collect();
    let untainted = taints.is_some_and(|all| all.len() != kept.len());
    if labelled && !untainted {
        return None;
    }
    let mut patch = json!({"metadata": {"resourceVersion": node.metadata.resource_version}});
    if !labelled {
        patch["metadata"]["labels"] = json!({ INSTALLED_LABEL: "true" });
    }
    if untainted {
        patch["spec"] = json!({ "taints": kept });
    }
    Some((
        patch,
        NodeSetupOutcome::Updated {
            labelled: !labelled,
            untainted,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(labels: Value, taints: Value) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "n", "resourceVersion": "7", "labels": labels},
            "spec": {"taints": taints},
        }))
        .unwrap()
    }

    #[test]
    fn label_and_taint_in_one_patch_with_a_precondition() {
        let taints = json!([
            {"key": NEEDS_INIT_TAINT, "effect": "NoSchedule"},
            {"key": NEEDS_INIT_TAINT, "effect": "NoExecute"},
            {"key": "other", "value": "x", "effect": "NoSchedule", "timeAdded": "2026-12-02T00:00:00Z"},
        ]);
        let (patch, outcome) = patch_for(&node(json!({"a": "b"}), taints)).unwrap();
        assert_eq!(
            outcome,
            NodeSetupOutcome::Updated {
                labelled: true,
                untainted: true
            }
        );
        assert_eq!(
            patch,
            json!({
                "metadata": {"resourceVersion": "7", "labels": {INSTALLED_LABEL: "true"}},
                "spec": {"taints": [
                    {"key": NEEDS_INIT_TAINT, "effect": "NoExecute"},
                    {"key": "other", "value": "x", "effect": "NoSchedule", "timeAdded": "2026-12-02T00:00:00Z"},
                ]},
            })
        );
    }

    #[test]
    fn nothing_to_do() {
        let done = node(
            json!({INSTALLED_LABEL: "true"}),
            json!([{"key": "other", "effect": "NoSchedule"}]),
        );
        assert!(patch_for(&done).is_none());
        let (patch, outcome) = patch_for(&node(
            json!({INSTALLED_LABEL: "true"}),
            json!([{"key": NEEDS_INIT_TAINT, "effect": "NoSchedule"}]),
        ))
        .unwrap();
        assert_eq!(
            outcome,
            NodeSetupOutcome::Updated {
                labelled: false,
                untainted: true
            }
        );
        assert_eq!(patch["spec"]["taints"], json!([]));
        assert!(patch["metadata"].get("labels").is_none());
    }

    #[test]
    fn autopilot() {
        assert!(is_gke_autopilot("gk3-cluster-pool-1-abc", false));
        assert!(is_gke_autopilot("ip-10-0-0-1", true));
        assert!(!is_gke_autopilot("ip-10-0-0-1", false));
    }
}
