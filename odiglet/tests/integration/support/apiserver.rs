//! A small Kubernetes API-server stand-in over real HTTP, enough for the real `kube::Client`:
//! Pods (GET), InstrumentationInstances (GET, LIST with labelSelector, POST, PUT /status with
//! resourceVersion conflicts, DELETE). Objects live in memory; every request is logged, and a
//! conflict can be injected on the next status update.

use std::{
    collections::BTreeMap,
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{
    Request, Response, StatusCode, body::Incoming, server::conn::http1, service::service_fn,
};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

const II: &str = "/apis/odigos.io/v1alpha1/namespaces/";

#[derive(Default)]
pub struct State {
    /// (namespace, name) → object.
    pub pods: BTreeMap<(String, String), Value>,
    pub instances: BTreeMap<(String, String), Value>,
    pub log: Vec<String>,
    pub conflicts_to_inject: usize,
    version: u64,
}

#[derive(Clone)]
pub struct ApiServer {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<State>>,
}

fn reply(code: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = code;
    r.headers_mut()
        .insert("content-type", "application/json".parse().expect("header"));
    r
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response<Full<Bytes>> {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16()});
    reply(code, &body)
}

impl ApiServer {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(State::default()));
        let server = Self {
            addr,
            state: state.clone(),
        };
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = state.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(state.clone(), req));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        server
    }

    pub fn add_pod(&self, namespace: &str, name: &str, uid: &str) {
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "uid": uid, "resourceVersion": "1"}});
        self.lock()
            .pods
            .insert((namespace.into(), name.into()), pod);
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn instance(&self, namespace: &str, name: &str) -> Option<Value> {
        self.lock()
            .instances
            .get(&(namespace.into(), name.into()))
            .cloned()
    }
}

async fn handle(
    state: Arc<Mutex<State>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
    st.log.push(format!("{method} {path}"));
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    // /api/v1/namespaces/{ns}/pods/{name}
    if let ["api", "v1", "namespaces", ns, "pods", name] = parts.as_slice() {
        return Ok(match st.pods.get(&((*ns).into(), (*name).into())) {
            Some(pod) => reply(StatusCode::OK, pod),
            None => status(StatusCode::NOT_FOUND, "NotFound", "pod not found"),
        });
    }
    if !path.starts_with(II) {
        return Ok(status(
            StatusCode::NOT_FOUND,
            "NotFound",
            "no such resource",
        ));
    }
    let key = |ns: &str, name: &str| (ns.to_owned(), name.to_owned());
    let response = match (method.as_str(), &parts[4..]) {
        ("GET", [ns, "instrumentationinstances"]) => {
            let selector = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("labelSelector="))
                .map(|s| s.replace("%3D", "="));
            let items: Vec<Value> = st
                .instances
                .iter()
                .filter(|((n, _), _)| n == ns)
                .map(|(_, v)| v.clone())
                .filter(|v| match &selector {
                    Some(sel) => sel.split(',').all(|pair| {
                        let (k, want) = pair.split_once('=').unwrap_or((pair, ""));
                        v["metadata"]["labels"][k] == want
                    }),
                    None => true,
                })
                .collect();
            reply(
                StatusCode::OK,
                &json!({"apiVersion": "odigos.io/v1alpha1", "kind": "InstrumentationInstanceList",
                "metadata": {"resourceVersion": st.version.to_string()}, "items": items}),
            )
        }
        ("GET", [ns, "instrumentationinstances", name]) => match st.instances.get(&key(ns, name)) {
            Some(v) => reply(StatusCode::OK, v),
            None => status(StatusCode::NOT_FOUND, "NotFound", "not found"),
        },
        ("POST", [ns, "instrumentationinstances"]) => {
            let mut obj: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let name = obj["metadata"]["name"].as_str().unwrap_or("").to_owned();
            if st.instances.contains_key(&key(ns, &name)) {
                status(StatusCode::CONFLICT, "AlreadyExists", "already exists")
            } else {
                st.version += 1;
                obj["metadata"]["resourceVersion"] = json!(st.version.to_string());
                obj["metadata"]["uid"] = json!(format!("uid-{}", st.version));
                // Status is ignored on create, as with a status subresource.
                if let Some(map) = obj.as_object_mut() {
                    map.remove("status");
                }
                st.instances.insert(key(ns, &name), obj.clone());
                reply(StatusCode::CREATED, &obj)
            }
        }
        ("PUT", [ns, "instrumentationinstances", name, "status"]) => {
            let incoming: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let inject = st.conflicts_to_inject > 0;
            if inject {
                st.conflicts_to_inject -= 1;
                st.version += 1;
            }
            let version = st.version;
            match st.instances.get_mut(&key(ns, name)) {
                None => status(StatusCode::NOT_FOUND, "NotFound", "not found"),
                Some(current) => {
                    if inject {
                        // Someone else wrote meanwhile.
                        current["metadata"]["resourceVersion"] = json!(version.to_string());
                    }
                    if incoming["metadata"]["resourceVersion"]
                        != current["metadata"]["resourceVersion"]
                    {
                        status(
                            StatusCode::CONFLICT,
                            "Conflict",
                            "the object has been modified",
                        )
                    } else {
                        current["status"] = incoming["status"].clone();
                        current["metadata"]["resourceVersion"] = json!((version + 1).to_string());
                        let out = current.clone();
                        st.version += 1;
                        reply(StatusCode::OK, &out)
                    }
                }
            }
        }
        ("DELETE", [ns, "instrumentationinstances", name]) => {
            match st.instances.remove(&key(ns, name)) {
                Some(v) => reply(StatusCode::OK, &v),
                None => status(StatusCode::NOT_FOUND, "NotFound", "not found"),
            }
        }
        _ => status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "unsupported",
        ),
    };
    Ok(response)
}
