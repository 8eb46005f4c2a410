//! The OpAMP server for native agents (Odigos' Python, Node, … SDK agents): registers each
//! agent process with its pod and container, serves its remote configuration, tracks its
//! liveness and health, and records it as an InstrumentationInstance (cluster mode).
//!
//! ```text
//! TCP :4320 ─┐                     ┌─ identity (attributes | device id → DeviceOwnerLookup)
//! UDS ───────┼─ http (limits) ─▶ session ─ remote_config (ConfigStore, hash)
//! status ────┘  GET /v1/agents      └─ health ─▶ InstanceQueue ─▶ InstanceSink (k8s)
//! ```

pub mod health;
pub mod http;
pub mod identity;
pub mod k8s_writer;
pub mod remote_config;
pub mod session;
pub mod wire;

use std::{
    net::SocketAddr,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use tokio::{
    net::{TcpListener, UnixListener},
    sync::watch,
    task::JoinSet,
};
use tracing::{info, warn};

pub use self::{
    health::{InstanceQueue, InstanceSink, InstanceTask},
    http::Limits,
    identity::{DeviceOwner, DeviceOwnerLookup, NoDeviceLookup},
    remote_config::{ConfigStore, ServedConfig},
};
use self::{http::Routes, identity::DeviceOwnerCache, session::Sessions};

/// Odigos' default OpAMP port.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:4320";
pub const DEFAULT_UNIX_SOCKET: &str = "/var/odigos/exchange/exchange.sock";

#[derive(Debug, thiserror::Error)]
pub enum OpampError {
    #[error("cannot listen on {addr}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot prepare the Unix socket {path}")]
    Socket {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Config(#[from] remote_config::ConfigError),
}

/// Everything the server needs; plain data.
#[derive(Clone, Debug)]
pub struct OpampConfig {
    pub listen: Option<SocketAddr>,
    pub unix_socket: Option<PathBuf>,
    pub status_listen: Option<SocketAddr>,
    pub limits: Limits,
    /// Silence after which an agent is dropped (Odigos: 2.5 × 30 s heartbeat).
    pub stale_after: Duration,
    /// How often stale agents are swept.
    pub sweep_every: Duration,
    /// Standalone mode: the config file, polled every `reload_every`.
    pub config_file: Option<PathBuf>,
    pub reload_every: Duration,
    pub node_name: String,
    /// Bound on a pod-resources lookup made while answering an agent.
    pub device_lookup_timeout: Duration,
}

impl Default for OpampConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN.parse().ok(),
            unix_socket: Some(PathBuf::from(DEFAULT_UNIX_SOCKET)),
            status_listen: None,
            limits: Limits::default(),
            stale_after: Duration::from_secs(75),
            sweep_every: Duration::from_secs(30),
            config_file: None,
            reload_every: Duration::from_secs(2),
            node_name: String::new(),
            device_lookup_timeout: Duration::from_millis(500),
        }
    }
}

/// A running server. Dropping it without [`OpampServer::shutdown`] leaves tasks running.
pub struct OpampServer {
    pub tcp_addr: Option<SocketAddr>,
    pub status_addr: Option<SocketAddr>,
    pub unix_socket: Option<PathBuf>,
    pub sessions: Arc<Sessions>,
    pub config: Arc<ConfigStore>,
    stop: watch::Sender<bool>,
    /// Listeners (end on `stop`).
    tasks: JoinSet<()>,
    /// Sweeper and config-file watcher (aborted on shutdown).
    background: JoinSet<()>,
}

impl OpampServer {
    /// Binds every listener (so errors surface here) and starts serving.
    pub async fn start(
        config: OpampConfig,
        devices: Box<dyn DeviceOwnerLookup>,
        queue: InstanceQueue,
    ) -> Result<Self, OpampError> {
        let served = match &config.config_file {
            Some(path) => ServedConfig::load(path)?,
            None => ServedConfig::default(),
        };
        let store = Arc::new(ConfigStore::new(served));
        let cache = DeviceOwnerCache::new(devices, config.device_lookup_timeout);
        let sessions = Arc::new(Sessions::new(
            store.clone(),
            cache,
            queue,
            config.node_name.clone(),
            config.stale_after,
        ));
        let handler = http::Handler::new(sessions.clone(), config.limits.clone());
        let (stop, stopped) = watch::channel(false);
        let mut tasks = JoinSet::new();

        let mut tcp_addr = None;
        if let Some(addr) = config.listen {
            let listener = bind_tcp(addr).await?;
            tcp_addr = listener.local_addr().ok();
            info!(addr = ?tcp_addr, "OpAMP listening on TCP");
            tasks.spawn(accept_tcp(
                listener,
                handler.clone(),
                Routes::OpAmp,
                stopped.clone(),
            ));
        }
        let mut status_addr = None;
        if let Some(addr) = config.status_listen {
            let listener = bind_tcp(addr).await?;
            status_addr = listener.local_addr().ok();
            info!(addr = ?status_addr, "OpAMP status API listening");
            tasks.spawn(accept_tcp(
                listener,
                handler.clone(),
                Routes::Status,
                stopped.clone(),
            ));
        }
        if let Some(path) = &config.unix_socket {
            let listener = bind_unix(path)?;
            info!(path = %path.display(), "OpAMP listening on Unix socket");
            tasks.spawn(accept_unix(listener, handler.clone(), stopped.clone()));
        }
        let mut background = JoinSet::new();
        background.spawn(sessions.clone().sweep_forever(config.sweep_every));
        if let Some(path) = config.config_file.clone() {
            background.spawn(store.clone().watch_file(path, config.reload_every));
        }
        Ok(Self {
            tcp_addr,
            status_addr,
            unix_socket: config.unix_socket,
            sessions,
            config: store,
            stop,
            tasks,
            background,
        })
    }

    /// Stops accepting, closes connections after their current request, removes the socket.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        self.background.abort_all();
        let drain = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(2), drain)
            .await
            .is_err()
        {
            warn!("OpAMP connections did not close in 2 s; aborting them");
            self.tasks.abort_all();
        }
        if let Some(path) = &self.unix_socket {
            let _ = std::fs::remove_file(path);
        }
        info!("OpAMP server stopped");
    }
}

async fn bind_tcp(addr: SocketAddr) -> Result<TcpListener, OpampError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| OpampError::Listen {
            addr: addr.to_string(),
            source,
        })
}

/// Removes a stale socket, binds, and opens it to every agent container (mode 0666).
fn bind_unix(path: &Path) -> Result<UnixListener, OpampError> {
    let err = |source| OpampError::Socket {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).map_err(err)?;
    Ok(listener)
}

async fn accept_tcp(
    listener: TcpListener,
    handler: Arc<http::Handler>,
    routes: Routes,
    mut stop: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    conns.spawn(http::serve_connection(stream, handler.clone(), routes, stop.clone()));
                }
                Err(error) => accept_error(error).await,
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            () = http::stopped(&mut stop) => break,
        }
    }
    drop(listener);
    while conns.join_next().await.is_some() {}
}

async fn accept_unix(
    listener: UnixListener,
    handler: Arc<http::Handler>,
    mut stop: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    conns.spawn(http::serve_connection(stream, handler.clone(), Routes::OpAmp, stop.clone()));
                }
                Err(error) => accept_error(error).await,
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            () = http::stopped(&mut stop) => break,
        }
    }
    drop(listener);
    while conns.join_next().await.is_some() {}
}

/// Out of file descriptors and similar: log and back off instead of spinning.
async fn accept_error(error: std::io::Error) {
    warn!(%error, "accept failed");
    tokio::time::sleep(Duration::from_millis(50)).await;
}
