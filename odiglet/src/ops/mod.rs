//! The operations server on the health port (Odigos' `--health-probe-bind-port`, 55683):
//!
//! | route | answer |
//! |---|---|
//! | `GET /healthz` | 200 while the process serves |
//! | `GET /readyz` | 200 when every [`Readiness`] condition holds, else 503; the body lists them |
//! | `GET /metrics` | Prometheus (OpenMetrics) text: manager, export, probes, OpAMP, eBPF usage |
//! | `GET /v1/agents` | the OpAMP sessions (as the OpAMP status API) |
//! | `GET /v1/instrumentations` | the manager's processes |
//!
//! Components register their metrics into one `prometheus_client` registry and their status
//! through [`StatusSource`]; the server only reads.

mod bpf_usage;
mod readiness;

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    header::{self, HeaderValue},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::{collector::Collector, encoding::DescriptorEncoder, registry::Registry};
use tokio::{net::TcpListener, sync::watch, task::JoinSet};
use tracing::{debug, info, warn};

pub use self::{
    bpf_usage::{BpfUsage, MapUsage},
    readiness::{EBPF_LOADED, OPAMP_LISTENER, Readiness, ReadinessCondition, WATCHES_SYNCED},
};
use crate::{
    manager::ManagerHandle,
    metrics::{family, gauge},
    opamp::{http::stopped, session::Sessions},
};

/// Odigos' health port on every address.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:55683";
pub const HEALTHZ_PATH: &str = "/healthz";
pub const READYZ_PATH: &str = "/readyz";
pub const METRICS_PATH: &str = "/metrics";
pub const AGENTS_PATH: &str = "/v1/agents";
pub const INSTRUMENTATIONS_PATH: &str = "/v1/instrumentations";
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Connections served at once; probes and scrapes are few.
const MAX_CONNECTIONS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error("cannot listen on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A component's status as JSON, for the `/v1/*` routes.
pub trait StatusSource: Send + Sync + 'static {
    fn status_json(&self) -> serde_json::Result<Vec<u8>>;
}

impl StatusSource for Sessions {
    fn status_json(&self) -> serde_json::Result<Vec<u8>> {
        serde_json::to_vec(&self.status())
    }
}

impl StatusSource for ManagerHandle {
    fn status_json(&self) -> serde_json::Result<Vec<u8>> {
        serde_json::to_vec(&self.snapshot())
    }
}

/// What the server reads from.
pub struct OpsState {
    readiness: Readiness,
    registry: Registry,
    agents: Option<Arc<dyn StatusSource>>,
    instrumentations: Option<Arc<dyn StatusSource>>,
}

impl OpsState {
    /// The readiness registry plus this process's eBPF usage metrics.
    pub fn new(readiness: Readiness) -> Self {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(BpfCollector));
        Self {
            readiness,
            registry,
            agents: None,
            instrumentations: None,
        }
    }

    /// Serves `/v1/agents` from the OpAMP sessions and counts connected agents.
    pub fn with_opamp(mut self, sessions: Arc<Sessions>) -> Self {
        self.registry
            .register_collector(Box::new(OpampCollector(Arc::clone(&sessions))));
        self.agents = Some(sessions);
        self
    }

    /// Serves `/v1/instrumentations` from the manager and exports its metrics.
    pub fn with_manager(mut self, manager: ManagerHandle) -> Self {
        manager.register_metrics(&mut self.registry);
        self.instrumentations = Some(Arc::new(manager));
        self
    }

    /// For metrics of other components.
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }
}

/// A running server.
pub struct OpsServer {
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl OpsServer {
    /// Binds `listen` (errors surface here) and serves until [`OpsServer::shutdown`].
    pub async fn start(listen: SocketAddr, state: OpsState) -> Result<Self, OpsError> {
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| OpsError::Listen {
                addr: listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| OpsError::Listen {
            addr: listen,
            source,
        })?;
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(accept(listener, Arc::new(state), stopped));
        info!(%addr, "health, metrics and status listening");
        Ok(Self { addr, stop, task })
    }

    /// Stops accepting and closes connections after their current request.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let mut task = self.task;
        if tokio::time::timeout(Duration::from_secs(2), &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }
}

async fn accept(listener: TcpListener, state: Arc<OpsState>, mut stop: watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) if connections.len() < MAX_CONNECTIONS => {
                    connections.spawn(serve(stream, Arc::clone(&state), stop.clone()));
                }
                Ok((stream, peer)) => {
                    debug!(%peer, "too many connections; closing");
                    drop(stream);
                }
                Err(error) => {
                    warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = stopped(&mut stop) => break,
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

async fn serve(
    stream: tokio::net::TcpStream,
    state: Arc<OpsState>,
    mut stop: watch::Receiver<bool>,
) {
    let service = service_fn(move |request| {
        let state = Arc::clone(&state);
        async move { Ok::<_, Infallible>(route(&state, &request)) }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = stopped(&mut stop) => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result
        && !error.is_incomplete_message()
    {
        debug!(%error, "ops connection ended with an error");
    }
}

type Reply = Response<Full<Bytes>>;

fn reply(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Reply {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn text(status: StatusCode, body: String) -> Reply {
    reply(status, "text/plain; charset=utf-8", body.into_bytes())
}

fn route<B>(state: &OpsState, request: &Request<B>) -> Reply {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n".to_owned());
    }
    match request.uri().path() {
        HEALTHZ_PATH => text(StatusCode::OK, "ok\n".to_owned()),
        READYZ_PATH => readyz(&state.readiness),
        METRICS_PATH => {
            let mut body = String::new();
            match prometheus_client::encoding::text::encode(&mut body, &state.registry) {
                Ok(()) => reply(StatusCode::OK, OPENMETRICS, body.into_bytes()),
                Err(error) => text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("cannot encode metrics: {error}\n"),
                ),
            }
        }
        AGENTS_PATH => status(state.agents.as_deref()),
        INSTRUMENTATIONS_PATH => status(state.instrumentations.as_deref()),
        _ => text(StatusCode::NOT_FOUND, "not found\n".to_owned()),
    }
}

/// controller-runtime's verbose format: one `[+]name ok` / `[-]name not ready` line each.
fn readyz(readiness: &Readiness) -> Reply {
    let mut body = String::new();
    let mut ready = true;
    for (name, holds) in readiness.check() {
        ready &= holds;
        let (mark, word) = if holds {
            ('+', "ok")
        } else {
            ('-', "not ready")
        };
        body.push_str(&format!("[{mark}]{name} {word}\n"));
    }
    if ready {
        body.push_str("readyz check passed\n");
        text(StatusCode::OK, body)
    } else {
        body.push_str("readyz check failed\n");
        text(StatusCode::SERVICE_UNAVAILABLE, body)
    }
}

fn status(source: Option<&dyn StatusSource>) -> Reply {
    let Some(source) = source else {
        return text(
            StatusCode::NOT_FOUND,
            "not served by this process\n".to_owned(),
        );
    };
    match source.status_json() {
        Ok(json) => reply(StatusCode::OK, "application/json", json),
        Err(error) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{error}\n")),
    }
}

/// This process's eBPF maps and programs.
#[derive(Debug)]
struct BpfCollector;

impl Collector for BpfCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        let usage = bpf_usage::read(std::path::Path::new("/proc/self"), bpf_usage::map_name);
        family(
            &mut encoder,
            "bpf_map_memory_usage",
            "Kernel memory charged to each eBPF map of odiglet, in bytes",
            usage
                .maps
                .iter()
                .map(|map| {
                    (
                        vec![
                            ("map_name", map.name.clone()),
                            ("map_id", map.id.to_string()),
                            ("map_type", map.map_type.to_string()),
                        ],
                        gauge(map.memlock),
                    )
                })
                .collect(),
        )?;
        let single = |value| vec![(Vec::new(), gauge(value))];
        family(
            &mut encoder,
            "bpf_maps_total_memory_usage",
            "Kernel memory charged to all eBPF maps of odiglet, in bytes",
            single(usage.total_map_memory()),
        )?;
        family(
            &mut encoder,
            "bpf_maps_count",
            "eBPF maps odiglet holds",
            single(usage.maps.len() as u64),
        )?;
        family(
            &mut encoder,
            "bpf_programs_count",
            "eBPF programs odiglet holds",
            single(usage.programs as u64),
        )
    }
}

/// Native agents connected to the OpAMP server.
struct OpampCollector(Arc<Sessions>);

impl std::fmt::Debug for OpampCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OpampCollector")
    }
}

impl Collector for OpampCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        family(
            &mut encoder,
            "odiglet_opamp_agents_connected",
            "Native agents with a live OpAMP session",
            vec![(Vec::new(), gauge(self.0.len() as u64))],
        )
    }
}
