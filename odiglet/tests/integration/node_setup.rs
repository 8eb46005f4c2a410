//! `odiglet init`'s node set-up against the API-server stand-in (GET, merge PATCH with the
//! resourceVersion precondition the API server applies), through the real `kube` client and
//! through the CLI with a kubeconfig.
#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a failure panics with its backtrace"
)]

use std::process::Command;

use odiglet::node_setup::{INSTALLED_LABEL, NEEDS_INIT_TAINT, NodeSetupOutcome, set_up_node};
use serde_json::{Value, json};

use crate::support::apiserver::ApiServer;

/// The API-server stand-in holding one Node, on its own runtime.
struct NodeServer {
    api: ApiServer,
    rt: tokio::runtime::Runtime,
}

impl NodeServer {
    fn start(node: Value) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let api = rt.block_on(ApiServer::start());
        api.apply("nodes", node);
        Self { api, rt }
    }

    fn client(&self) -> kube::Client {
        let _in_runtime = self.rt.enter();
        self.api.client()
    }

    fn node(&self, name: &str) -> Value {
        self.api.get("nodes", "", name).unwrap()
    }

    fn patches(&self) -> usize {
        self.api.requests("PATCH").len()
    }
}

fn karpenter_node(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "resourceVersion": "10", "labels": {"kubernetes.io/os": "linux"},
            "futureField": {"kept": true}},
        "spec": {"providerID": "aws:///eu-west-1a/i-0abc", "taints": [
            {"key": NEEDS_INIT_TAINT, "effect": "NoSchedule"},
            {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"},
        ]},
        "status": {"nodeInfo": {"kernelVersion": "6.18.0"}},
    })
}

#[test]
fn labels_the_node_and_lifts_the_startup_taint_despite_a_concurrent_writer() {
    let server = NodeServer::start(karpenter_node("ip-10-0-0-1"));
    server.api.lock().object_conflicts_to_inject = 2;
    let outcome = server
        .rt
        .block_on(set_up_node(server.client(), "ip-10-0-0-1", false))
        .unwrap();
    assert_eq!(
        outcome,
        NodeSetupOutcome::Updated {
            labelled: true,
            untainted: true
        }
    );
    assert_eq!(server.patches(), 3, "two conflicts, then the write");
    let node = server.node("ip-10-0-0-1");
    assert_eq!(node["metadata"]["labels"][INSTALLED_LABEL], "true");
    assert_eq!(node["metadata"]["labels"]["kubernetes.io/os"], "linux");
    assert_eq!(
        node["spec"]["taints"],
        json!([{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}])
    );
    assert_eq!(
        node["metadata"]["futureField"]["kept"], true,
        "nothing else touched"
    );
    assert_eq!(node["spec"]["providerID"], "aws:///eu-west-1a/i-0abc");

    // Idempotent: a second init writes nothing.
    let again = server
        .rt
        .block_on(set_up_node(server.client(), "ip-10-0-0-1", false))
        .unwrap();
    assert_eq!(again, NodeSetupOutcome::Unchanged);
    assert_eq!(server.patches(), 3);
}

#[test]
fn autopilot_nodes_are_left_alone_and_errors_name_the_node() {
    let server = NodeServer::start(karpenter_node("gk3-autopilot-pool-1-abc"));
    let outcome = server
        .rt
        .block_on(set_up_node(
            server.client(),
            "gk3-autopilot-pool-1-abc",
            false,
        ))
        .unwrap();
    assert_eq!(outcome, NodeSetupOutcome::SkippedAutopilot);
    assert!(server.api.lock().log.is_empty());

    let error = server
        .rt
        .block_on(set_up_node(server.client(), "missing-node", false))
        .unwrap_err();
    assert!(error.to_string().contains("missing-node"), "{error}");

    server.api.lock().object_conflicts_to_inject = 100;
    server.api.apply("nodes", karpenter_node("busy"));
    let error = server
        .rt
        .block_on(set_up_node(server.client(), "busy", false))
        .unwrap_err();
    assert!(error.to_string().contains("conflicting"), "{error}");
}

#[test]
fn init_sets_up_the_node_named_by_node_name() {
    let server = NodeServer::start(karpenter_node("node-cli"));
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    server.api.write_kubeconfig(&kubeconfig);
    let source = dir.path().join("instrumentations");
    std::fs::create_dir_all(source.join("java")).unwrap();
    std::fs::write(source.join("java/agent.jar"), "jar").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_odiglet"))
        .arg("init")
        .arg("--source")
        .arg(&source)
        .arg("--target")
        .arg(dir.path().join("odigos"))
        .arg("--json")
        .env("NODE_NAME", "node-cli")
        .env("KUBECONFIG", &kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["agents"]["created"], 1);
    assert_eq!(
        report["node"],
        json!({"updated": {"labelled": true, "untainted": true}})
    );
    assert_eq!(
        server.node("node-cli")["metadata"]["labels"][INSTALLED_LABEL],
        "true"
    );
}
