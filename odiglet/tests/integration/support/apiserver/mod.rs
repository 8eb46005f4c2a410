//! A Kubernetes API-server stand-in over real HTTP, serving the REST and watch protocol of
//! the resources odiglet uses (Pods, ConfigMaps, Nodes, InstrumentationConfigs,
//! InstrumentationInstances), so the real `kube` client and kube-runtime watchers run against it:
//!
//! - GET one object; LIST (cluster-wide or per namespace) with `labelSelector`,
//!   `fieldSelector` and the current `resourceVersion`;
//! - WATCH (`watch=true`) from a `resourceVersion`: the missed changes, then live ones, as
//!   newline-delimited `{"type":"ADDED|MODIFIED|DELETED","object":..}`, `BOOKMARK`s when
//!   `allowWatchBookmarks` is set, `ERROR` 410 for a version older than the kept history, and
//!   the stream ends after `timeoutSeconds`; objects that stop (start) matching a selector
//!   arrive as DELETED (ADDED), as from a real server;
//! - POST, PUT, DELETE; PUT and JSON merge PATCH of `/status` (status only), optimistic
//!   concurrency on `metadata.resourceVersion` (409), and injectable conflicts.
//!
//! Every request is logged as `METHOD path[?query]`; `unavailable` answers 503 to everything. Tests change objects with
//! [`ApiServer::apply`] / [`ApiServer::remove`], which watches see like any client write.

mod store;

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::{
    Request, Response, StatusCode,
    body::{Frame, Incoming},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc, watch};

pub use self::store::{Change, EventType};
use self::store::{Objects, Query, Selector, WriteError, api_version_kind, merge_patch};

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// How often an idle watch with bookmarks gets one.
const BOOKMARK_EVERY: Duration = Duration::from_millis(500);

pub struct State {
    pub objects: Objects,
    /// `METHOD path[?query]` of every request.
    pub log: Vec<String>,
    /// The next N status writes conflict, as if another writer got there first.
    pub conflicts_to_inject: usize,
    /// The same for the next N writes of objects themselves (not their status).
    pub object_conflicts_to_inject: usize,
    /// Every request gets 503, as from an API server that is down or overloaded.
    pub unavailable: bool,
    changes: broadcast::Sender<Change>,
    /// Bumped to end every open watch, as an API server restart does.
    disconnects: watch::Sender<u64>,
}

#[derive(Clone)]
pub struct ApiServer {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<State>>,
}

fn reply(code: StatusCode, body: &Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())).boxed_unsync());
    *r.status_mut() = code;
    r.headers_mut()
        .insert("content-type", "application/json".parse().expect("header"));
    r
}

fn status_body(code: StatusCode, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16()})
}

fn failure(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    reply(code, &status_body(code, reason, message))
}

fn write_error(error: WriteError) -> Response<Body> {
    match error {
        WriteError::NotFound => failure(StatusCode::NOT_FOUND, "NotFound", "not found"),
        WriteError::AlreadyExists => {
            failure(StatusCode::CONFLICT, "AlreadyExists", "already exists")
        }
        WriteError::Conflict => failure(
            StatusCode::CONFLICT,
            "Conflict",
            "the object has been modified; please apply your changes to the latest version",
        ),
        WriteError::Invalid(message) => {
            failure(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", &message)
        }
    }
}

/// Percent-decoding of a query value (`%3D`, `%2C`, `+`).
fn decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query_param(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| decode(v))
}

impl ApiServer {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (changes, _) = broadcast::channel(1024);
        let state = Arc::new(Mutex::new(State {
            objects: Objects::default(),
            log: Vec::new(),
            conflicts_to_inject: 0,
            object_conflicts_to_inject: 0,
            unavailable: false,
            changes,
            disconnects: watch::channel(0).0,
        }));
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

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A `kube` client for this server.
    pub fn client(&self) -> kube::Client {
        let config = kube::Config::new(self.url().parse().expect("uri"));
        kube::Client::try_from(config).expect("kube client")
    }

    /// Writes a kubeconfig file pointing at this server.
    pub fn write_kubeconfig(&self, path: &std::path::Path) {
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: stand-in\n  cluster:\n    server: {}\n\
             users:\n- name: test\n  user: {{}}\ncontexts:\n- name: test\n  context:\n    cluster: stand-in\n    user: test\n\
             current-context: test\n",
            self.url()
        );
        std::fs::write(path, text).expect("write kubeconfig");
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Creates or replaces an object (status included) as a client write would, visible to
    /// watches. Returns its new resource version.
    pub fn apply(&self, resource: &str, object: Value) -> u64 {
        let mut state = self.lock();
        let change = state.objects.store(resource, object).expect("valid object");
        let _ = state.changes.send(change.clone());
        change.version
    }

    /// Ends every open watch stream (clients resume from their last resource version).
    pub fn drop_watches(&self) {
        self.lock().disconnects.send_modify(|n| *n += 1);
    }

    /// Deletes an object, visible to watches.
    pub fn remove(&self, resource: &str, namespace: &str, name: &str) {
        let mut state = self.lock();
        let change = state
            .objects
            .delete(resource, namespace, name)
            .expect("object exists");
        let _ = state.changes.send(change);
    }

    pub fn get(&self, resource: &str, namespace: &str, name: &str) -> Option<Value> {
        self.lock().objects.get(resource, namespace, name).cloned()
    }

    /// (namespace, name) of every object of a resource.
    pub fn names(&self, resource: &str) -> Vec<(String, String)> {
        self.lock()
            .objects
            .by_resource
            .get(resource)
            .map(|objects| objects.keys().cloned().collect())
            .unwrap_or_default()
    }

    pub fn add_pod(&self, namespace: &str, name: &str, uid: &str) {
        self.apply(
            "pods",
            json!({"metadata": {"name": name, "namespace": namespace, "uid": uid}}),
        );
    }

    pub fn instance(&self, namespace: &str, name: &str) -> Option<Value> {
        self.get("instrumentationinstances", namespace, name)
    }

    /// Requests logged so far that start with `prefix`.
    pub fn requests(&self, prefix: &str) -> Vec<String> {
        self.lock()
            .log
            .iter()
            .filter(|l| l.starts_with(prefix))
            .cloned()
            .collect()
    }
}

/// What a request path names.
struct Route {
    resource: String,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

/// `/api/v1/...` or `/apis/<group>/<version>/...`.
fn route(path: &str) -> Option<Route> {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let rest = match parts.as_slice() {
        ["api", "v1", rest @ ..] => rest,
        ["apis", _, _, rest @ ..] => rest,
        _ => return None,
    };
    let (resource, namespace, name, subresource) = match rest {
        [resource] => (resource, None, None, None),
        ["namespaces", ns, resource] => (resource, Some(ns), None, None),
        ["namespaces", ns, resource, name] => (resource, Some(ns), Some(name), None),
        ["namespaces", ns, resource, name, sub] => (resource, Some(ns), Some(name), Some(sub)),
        // Cluster-scoped objects (Nodes).
        [resource, name] => (resource, None, Some(name), None),
        [resource, name, sub] => (resource, None, Some(name), Some(sub)),
        _ => return None,
    };
    let owned = |s: Option<&&str>| s.map(|s| (*s).to_owned());
    Some(Route {
        resource: (*resource).to_owned(),
        namespace: owned(namespace),
        name: owned(name),
        subresource: owned(subresource),
    })
}

async fn handle(
    state: Arc<Mutex<State>>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
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
    st.log.push(if query.is_empty() {
        format!("{method} {path}")
    } else {
        format!("{method} {path}?{query}")
    });
    if st.unavailable {
        return Ok(failure(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "the server is currently unable to handle the request",
        ));
    }
    let Some(Route {
        resource,
        namespace,
        name,
        subresource: sub,
    }) = route(&path)
    else {
        return Ok(failure(StatusCode::NOT_FOUND, "NotFound", "no such path"));
    };
    let Some((api_version, kind)) = api_version_kind(&resource) else {
        return Ok(failure(
            StatusCode::NOT_FOUND,
            "NotFound",
            "no such resource",
        ));
    };
    let incoming: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let ns = namespace.clone().unwrap_or_default();
    let response = match (method.as_str(), &name, sub.as_deref()) {
        ("GET", None, None) => {
            let q = Query {
                namespace: namespace.clone(),
                labels: Selector::parse(&query_param(&query, "labelSelector").unwrap_or_default()),
                fields: Selector::parse(&query_param(&query, "fieldSelector").unwrap_or_default()),
            };
            let watching = query_param(&query, "watch").is_some_and(|w| w == "true" || w == "1");
            if watching {
                return Ok(watch(&mut st, &resource, q, &query));
            }
            let items: Vec<Value> = st
                .objects
                .by_resource
                .get(&resource)
                .into_iter()
                .flat_map(|objects| objects.values())
                .filter(|o| q.matches(o))
                .cloned()
                .collect();
            reply(
                StatusCode::OK,
                &json!({"apiVersion": api_version, "kind": format!("{kind}List"),
                    "metadata": {"resourceVersion": st.objects.version.to_string()}, "items": items}),
            )
        }
        ("GET", Some(name), None | Some("status")) => match st.objects.get(&resource, &ns, name) {
            Some(object) => reply(StatusCode::OK, object),
            None => failure(StatusCode::NOT_FOUND, "NotFound", "not found"),
        },
        ("POST", None, None) => {
            let name = incoming["metadata"]["name"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            if st.objects.get(&resource, &ns, &name).is_some() {
                write_error(WriteError::AlreadyExists)
            } else {
                let mut object = incoming.clone();
                if namespace.is_some() {
                    object["metadata"]["namespace"] = json!(ns);
                }
                // Status is ignored on create, as with a status subresource.
                if let Some(map) = object.as_object_mut() {
                    map.remove("status");
                }
                commit(&mut st, &resource, object, StatusCode::CREATED)
            }
        }
        ("PUT", Some(name), sub) => {
            let name = name.clone();
            update(&mut st, &resource, &ns, &name, sub, |current| {
                let mut next = current.clone();
                match sub {
                    Some(_) => next["status"] = incoming["status"].clone(),
                    None => {
                        next["metadata"] = incoming["metadata"].clone();
                        next["spec"] = incoming["spec"].clone();
                    }
                }
                Ok((next, incoming.clone()))
            })
        }
        ("PATCH", Some(name), sub) => {
            let name = name.clone();
            update(&mut st, &resource, &ns, &name, sub, |current| {
                let mut next = current.clone();
                let mut patch = incoming.clone();
                if sub.is_some()
                    && let Some(map) = patch.as_object_mut()
                {
                    // A status patch changes only the status (and checks the version).
                    map.retain(|k, _| k == "status" || k == "metadata");
                    if let Some(meta) = map.get_mut("metadata").and_then(Value::as_object_mut) {
                        meta.retain(|k, _| k == "resourceVersion");
                    }
                }
                merge_patch(&mut next, &patch);
                Ok((next, incoming.clone()))
            })
        }
        ("DELETE", Some(name), None) => match st.objects.delete(&resource, &ns, name) {
            Ok(change) => {
                let _ = st.changes.send(change.clone());
                reply(StatusCode::OK, &change.after)
            }
            Err(error) => write_error(error),
        },
        _ => failure(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "unsupported",
        ),
    };
    Ok(response)
}

fn commit(st: &mut State, resource: &str, object: Value, code: StatusCode) -> Response<Body> {
    match st.objects.store(resource, object) {
        Ok(change) => {
            let _ = st.changes.send(change.clone());
            reply(code, &change.after)
        }
        Err(error) => write_error(error),
    }
}

/// Read, check the version (after an injected conflict, if any), write.
fn update(
    st: &mut State,
    resource: &str,
    namespace: &str,
    name: &str,
    sub: Option<&str>,
    next: impl FnOnce(&Value) -> Result<(Value, Value), WriteError>,
) -> Response<Body> {
    let Some(current) = st.objects.get(resource, namespace, name).cloned() else {
        return write_error(WriteError::NotFound);
    };
    let injected = if sub.is_some() {
        &mut st.conflicts_to_inject
    } else {
        &mut st.object_conflicts_to_inject
    };
    if *injected > 0 {
        *injected -= 1;
        // Someone else wrote meanwhile: the caller's version is now stale.
        let change = st.objects.store(resource, current).expect("stored before");
        let _ = st.changes.send(change);
        return write_error(WriteError::Conflict);
    }
    let (object, incoming) = match next(&current) {
        Ok(pair) => pair,
        Err(error) => return write_error(error),
    };
    if let Err(error) = Objects::check_version(&current, &incoming) {
        return write_error(error);
    }
    commit(st, resource, object, StatusCode::OK)
}

fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line = json!({"type": kind, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

/// What a watcher sees of a change: selector transitions turn into ADDED / DELETED.
fn visible(change: &Change, resource: &str, query: &Query) -> Option<Bytes> {
    if change.resource != resource {
        return None;
    }
    let was = change.before.as_ref().is_some_and(|b| query.matches(b));
    let is = change.kind != EventType::Deleted && query.matches(&change.after);
    let kind = match (change.kind, was, is) {
        (EventType::Deleted, true, _) => "DELETED",
        (_, false, true) => "ADDED",
        (_, true, true) => "MODIFIED",
        (_, true, false) => "DELETED",
        _ => return None,
    };
    Some(event_line(kind, &change.after))
}

fn watch(st: &mut State, resource: &str, query: Query, raw_query: &str) -> Response<Body> {
    let from: u64 = query_param(raw_query, "resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(st.objects.version);
    let bookmarks = query_param(raw_query, "allowWatchBookmarks").is_some_and(|b| b == "true");
    let timeout = query_param(raw_query, "timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .map_or(Duration::from_secs(290), Duration::from_secs);
    let (api_version, kind) = api_version_kind(resource).unwrap_or(("v1", "Unknown"));
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let mut backlog = Vec::new();
    let expired = from < st.objects.oldest_resumable();
    if expired {
        let gone = status_body(StatusCode::GONE, "Expired", "too old resource version");
        backlog.push(event_line("ERROR", &gone));
    } else {
        backlog.extend(
            st.objects
                .changes_since(from)
                .filter_map(|c| visible(c, resource, &query)),
        );
    }
    // Subscribed under the lock: nothing falls between the backlog and the live feed.
    let mut live = st.changes.subscribe();
    let mut disconnect = st.disconnects.subscribe();
    let mut last_version = st.objects.version;
    let resource = resource.to_owned();
    tokio::spawn(async move {
        for line in backlog {
            if tx.send(line).await.is_err() {
                return;
            }
        }
        if expired {
            return;
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut tick = tokio::time::interval(BOOKMARK_EVERY);
        loop {
            // Biased, ending first: a change made after `drop_watches` must not reach a
            // watch that was cut (a task scheduled late would otherwise pick either at random,
            // and the client would get without a relist what the cut was to make it re-list).
            let line = tokio::select! {
                biased;
                () = &mut deadline => return,
                () = tx.closed() => return,
                _ = disconnect.changed() => return,
                change = live.recv() => match change {
                    Ok(change) => {
                        last_version = last_version.max(change.version);
                        match visible(&change, &resource, &query) {
                            Some(line) => line,
                            None => continue,
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let gone = status_body(StatusCode::GONE, "Expired", "watch fell behind");
                        let _ = tx.send(event_line("ERROR", &gone)).await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = tick.tick(), if bookmarks => event_line("BOOKMARK", &json!({
                    "apiVersion": api_version, "kind": kind,
                    "metadata": {"resourceVersion": last_version.to_string()}})),
            };
            if tx.send(line).await.is_err() {
                return;
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|line| (Ok::<_, Infallible>(Frame::data(line)), rx))
    });
    let mut response = Response::new(BodyExt::boxed_unsync(StreamBody::new(stream.boxed())));
    response
        .headers_mut()
        .insert("content-type", "application/json".parse().expect("header"));
    response
}
