//! `odiglet init`'s node set-up against a Node stand-in over real HTTP (GET, merge PATCH with
//! the resourceVersion precondition the API server applies), through the real `kube` client
//! and through the CLI with a kubeconfig.
#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a failure panics with its backtrace"
)]

use std::{
    convert::Infallible,
    net::SocketAddr,
    process::Command,
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode, body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use odiglet::node_setup::{INSTALLED_LABEL, NEEDS_INIT_TAINT, NodeSetupOutcome, set_up_node};
use serde_json::{Value, json};

/// One Node, its writes, and conflicts to inject (another writer bumping the version).
#[derive(Default)]
struct NodeState {
    node: Value,
    requests: Vec<String>,
    conflicts_to_inject: usize,
}

/// RFC 7386 JSON merge patch.
fn merge(target: &mut Value, patch: &Value) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(target), Some(patch)) => {
            for (key, value) in patch {
                if value.is_null() {
                    target.remove(key);
                } else {
                    merge(target.entry(key.clone()).or_insert(Value::Null), value);
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

fn reply(code: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = code;
    response
        .headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    response
}

fn failure(code: StatusCode, reason: &str) -> Response<Full<Bytes>> {
    reply(
        code,
        &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason,
            "message": reason, "code": code.as_u16()}),
    )
}

async fn handle(
    state: Arc<Mutex<NodeState>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().to_string();
    let path = req.uri().path().to_owned();
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let mut st = state.lock().unwrap();
    st.requests.push(format!("{method} {path}"));
    let name = st.node["metadata"]["name"].as_str().unwrap().to_owned();
    if path != format!("/api/v1/nodes/{name}") {
        return Ok(failure(StatusCode::NOT_FOUND, "NotFound"));
    }
    Ok(match method.as_str() {
        "GET" => reply(StatusCode::OK, &st.node),
        "PATCH" if content_type == "application/merge-patch+json" => {
            let patch: Value = serde_json::from_slice(&body).unwrap();
            if st.conflicts_to_inject > 0 {
                st.conflicts_to_inject -= 1;
                bump(&mut st.node);
            }
            let precondition = &patch["metadata"]["resourceVersion"];
            if !precondition.is_null() && *precondition != st.node["metadata"]["resourceVersion"] {
                failure(StatusCode::CONFLICT, "Conflict")
            } else {
                merge(&mut st.node, &patch);
                bump(&mut st.node);
                reply(StatusCode::OK, &st.node)
            }
        }
        _ => failure(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed"),
    })
}

fn bump(node: &mut Value) {
    let version: u64 = node["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    node["metadata"]["resourceVersion"] = json!((version + 1).to_string());
}

struct NodeServer {
    addr: SocketAddr,
    state: Arc<Mutex<NodeState>>,
    rt: tokio::runtime::Runtime,
}

impl NodeServer {
    fn start(node: Value) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let state = Arc::new(Mutex::new(NodeState {
            node,
            ..NodeState::default()
        }));
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = state.clone();
        rt.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = shared.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| handle(state.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, state, rt }
    }

    fn client(&self) -> kube::Client {
        let config = kube::Config::new(format!("http://{}", self.addr).parse().unwrap());
        let _in_runtime = self.rt.enter();
        kube::Client::try_from(config).unwrap()
    }

    fn node(&self) -> Value {
        self.state.lock().unwrap().node.clone()
    }

    fn patches(&self) -> usize {
        let st = self.state.lock().unwrap();
        st.requests
            .iter()
            .filter(|r| r.starts_with("PATCH"))
            .count()
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
    server.state.lock().unwrap().conflicts_to_inject = 2;
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
    let node = server.node();
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
    assert!(server.state.lock().unwrap().requests.is_empty());

    let error = server
        .rt
        .block_on(set_up_node(server.client(), "missing-node", false))
        .unwrap_err();
    assert!(error.to_string().contains("missing-node"), "{error}");

    server.state.lock().unwrap().conflicts_to_inject = 100;
    server.state.lock().unwrap().node = karpenter_node("busy");
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
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: http://{}\n\
             contexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\n\
             users:\n- name: u\n  user: {{}}\n",
            server.addr
        ),
    )
    .unwrap();
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
    assert_eq!(server.node()["metadata"]["labels"][INSTALLED_LABEL], "true");
}
