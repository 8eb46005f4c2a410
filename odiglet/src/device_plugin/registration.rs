//! Registration lifecycle of one resource: serve on a fresh socket, `Register` with kubelet,
//! and start over on a new socket whenever kubelet restarts, forever, until shutdown.
//!
//! A kubelet restart deletes every socket in the directory (ours included), re-creates
//! `kubelet.sock`, and ends our ListAndWatch stream. Any of those triggers a new generation:
//! our socket vanishing (inotify, with a poll backstop), `kubelet.sock` being a new file (an
//! inotify create alone is only a hint: bottlerocket#4250), or the stream closing. The old
//! server and its streams are stopped before the next `Register`, so kubelet never sees an old
//! connection drop after a new registration (kubernetes#121994).

use std::{
    ffi::OsString,
    io,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use device_plugin_proto::deviceplugin::{
    KUBELET_SOCKET_NAME, VERSION,
    v1beta1::{RegisterRequest, registration_client::RegistrationClient},
};
use tokio::{
    net::UnixListener,
    sync::{broadcast, oneshot, watch},
    task::JoinHandle,
};
use tracing::{debug, info, warn};

use super::{
    Timings, connect_unix,
    resources::{Resource, stable_hash},
    server::{DevicePluginService, OPTIONS, StopMode, StreamCount, spawn_server},
};

/// Registration state of one resource, for observers (ops readiness, tests).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PluginStatus {
    /// Kubelet accepted our latest `Register` and we have not seen it go away since.
    pub registered: bool,
    /// Successful registrations since start.
    pub registrations: u64,
    /// Socket file name of the current generation.
    pub endpoint: Option<String>,
    /// The latest registration failure, if the latest attempt failed.
    pub last_error: Option<String>,
}

/// Socket file name for one generation. The instance (process start) and generation make
/// every server's name new, so kubelet never confuses it with an earlier one.
pub(super) fn socket_name(resource: &str, instance: u64, generation: u64) -> String {
    format!("{}{instance:x}-{generation}.sock", socket_prefix(resource))
}

fn socket_prefix(resource: &str) -> String {
    let short = resource.rsplit('/').next().unwrap_or(resource);
    let short: String = short.chars().take(20).collect();
    format!("odiglet-{short}-{:08x}-", stable_hash(resource))
}

/// Identifies this process's sockets: milliseconds since the epoch at start-up.
pub(super) fn instance_id() -> u64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)
}

/// Removes sockets an earlier odiglet left behind for our resources (after a crash).
pub(super) fn remove_stale_sockets(dir: &Path, resources: &[Arc<Resource>]) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let prefixes: Vec<String> = resources.iter().map(|r| socket_prefix(&r.name)).collect();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".sock") && prefixes.iter().any(|p| name.starts_with(p.as_str())) {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => info!(socket = %name, "removed a stale socket"),
                Err(error) => warn!(socket = %name, %error, "cannot remove a stale socket"),
            }
        }
    }
}

/// (device, inode) of a file: tells a re-created file from the one we saw before.
fn file_id(path: &Path) -> Option<(u64, u64)> {
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

/// Forwards inotify events on the device-plugins directory as file names. Events are only
/// hints: receivers re-check the files themselves.
pub(super) struct DirWatcher;

impl DirWatcher {
    pub(super) fn start(
        dir: &Path,
    ) -> (
        Option<notify::RecommendedWatcher>,
        broadcast::Sender<OsString>,
    ) {
        use notify::Watcher;
        let (events, _) = broadcast::channel(256);
        let sender = events.clone();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if let Ok(event) = event {
                for name in event.paths.iter().filter_map(|path| path.file_name()) {
                    // No receivers is fine: nobody is waiting right now.
                    let _ = sender.send(name.to_os_string());
                }
            }
        })
        .and_then(|mut watcher| {
            watcher
                .watch(dir, notify::RecursiveMode::NonRecursive)
                .map(|()| watcher)
        });
        match watcher {
            Ok(watcher) => (Some(watcher), events),
            Err(error) => {
                warn!(dir = %dir.display(), %error, "inotify unavailable; relying on polling");
                (None, events)
            }
        }
    }
}

/// Resolves on an event about one of `names`, or when events were lost.
async fn relevant_event(events: &mut broadcast::Receiver<OsString>, names: &[&str]) {
    loop {
        match events.recv().await {
            Ok(name) if names.iter().any(|n| name == **n) => return,
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(_)) => return,
            Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum RegisterError {
    #[error("cannot connect to {path:?}")]
    Connect {
        path: PathBuf,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("kubelet refused the registration: {}", .0.message())]
    Rejected(tonic::Status),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// One error and its causes on one line.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

async fn register_once(
    kubelet_socket: &Path,
    resource: &str,
    endpoint: &str,
    timeout: Duration,
) -> Result<(), RegisterError> {
    let attempt = async {
        let channel =
            connect_unix(kubelet_socket)
                .await
                .map_err(|source| RegisterError::Connect {
                    path: kubelet_socket.into(),
                    source,
                })?;
        let request = RegisterRequest {
            version: VERSION.to_owned(),
            endpoint: endpoint.to_owned(),
            resource_name: resource.to_owned(),
            options: Some(OPTIONS),
        };
        RegistrationClient::new(channel)
            .register(request)
            .await
            .map_err(RegisterError::Rejected)?;
        Ok(())
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| RegisterError::Timeout(timeout))?
}

/// Doubling delays between `initial` and `max`.
struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            next: initial,
        }
    }

    fn next(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// One server generation: our socket, its server task and its streams.
struct Served {
    path: PathBuf,
    name: String,
    id: (u64, u64),
    stop: watch::Sender<StopMode>,
    streams: watch::Receiver<StreamCount>,
    close: Option<oneshot::Sender<()>>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Served {
    fn intact(&self) -> bool {
        file_id(&self.path) == Some(self.id)
    }

    /// Ends the streams (after an empty list on shutdown), stops the server, removes the socket.
    async fn stop(mut self, mode: StopMode, drain: Duration) {
        self.stop.send_replace(mode);
        if tokio::time::timeout(drain, self.streams.wait_for(|count| count.open == 0))
            .await
            .is_err()
        {
            warn!(socket = %self.name, "ListAndWatch streams did not end in time");
        }
        if let Some(close) = self.close.take() {
            let _ = close.send(());
        }
        match tokio::time::timeout(drain, &mut self.server).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => warn!(error = %chain(&error), "device plugin server failed"),
            Ok(Err(error)) => warn!(%error, "device plugin server task failed"),
            Err(_) => {
                warn!(socket = %self.name, "server did not stop in time; aborting it");
                self.server.abort();
            }
        }
        // Only our own file: kubelet may have replaced the directory's contents.
        if self.intact()
            && let Err(error) = std::fs::remove_file(&self.path)
        {
            warn!(socket = %self.name, %error, "cannot remove our socket");
        }
        debug!(socket = %self.name, ?mode, "server generation stopped");
    }
}

/// Why a generation ended (or registration finished).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Registered,
    SocketGone,
    KubeletRestarted,
    StreamClosed,
    Shutdown,
}

/// Keeps one resource registered with kubelet.
pub(super) struct Supervisor {
    pub(super) resource: Arc<Resource>,
    pub(super) dir: PathBuf,
    pub(super) health: watch::Receiver<bool>,
    pub(super) events: broadcast::Receiver<OsString>,
    pub(super) shutdown: watch::Receiver<bool>,
    pub(super) timings: Timings,
    pub(super) status: watch::Sender<PluginStatus>,
    pub(super) instance: u64,
}

impl Supervisor {
    /// Runs until shutdown; never gives up on kubelet.
    pub(super) async fn run(mut self) {
        let kubelet_socket = self.dir.join(KUBELET_SOCKET_NAME);
        let mut backoff = Backoff::new(self.timings.backoff_initial, self.timings.backoff_max);
        let mut generation = 0;
        while !*self.shutdown.borrow() {
            generation += 1;
            let name = socket_name(&self.resource.name, self.instance, generation);
            let served = match self.serve(name) {
                Ok(served) => served,
                Err(error) => {
                    warn!(%error, dir = %self.dir.display(), "cannot serve on a new socket");
                    let delay = backoff.next();
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        _ = self.shutdown.wait_for(|stop| *stop) => {}
                    }
                    continue;
                }
            };
            let mut outcome = self.register(&served, &kubelet_socket, &mut backoff).await;
            if outcome.0 == Outcome::Registered {
                backoff.reset();
                info!(endpoint = %served.name, "registered with kubelet");
                self.status.send_modify(|status| {
                    status.registered = true;
                    status.registrations += 1;
                    status.endpoint = Some(served.name.clone());
                    status.last_error = None;
                });
                outcome.0 = self.watch(&served, &kubelet_socket, outcome.1).await;
                self.status.send_modify(|status| status.registered = false);
            }
            let mode = if outcome.0 == Outcome::Shutdown {
                StopMode::Shutdown
            } else {
                StopMode::Restart
            };
            served.stop(mode, self.timings.drain_timeout).await;
            if outcome.0 != Outcome::Shutdown {
                info!(reason = ?outcome.0, "re-registering on a new socket");
            }
        }
    }

    /// Binds a fresh socket and serves on it.
    fn serve(&self, name: String) -> io::Result<Served> {
        let path = self.dir.join(&name);
        match std::fs::remove_file(&path) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
            _ => {}
        }
        let listener = UnixListener::bind(&path)?;
        let id = file_id(&path).ok_or_else(|| io::Error::other("socket vanished after bind"))?;
        let (stop, stop_rx) = watch::channel(StopMode::Running);
        let streams = Arc::new(watch::channel(StreamCount::default()).0);
        let streams_rx = streams.subscribe();
        let service =
            DevicePluginService::new(self.resource.clone(), self.health.clone(), stop_rx, streams);
        let (close, closed) = oneshot::channel();
        let server = spawn_server(listener, service, async {
            let _ = closed.await;
        });
        debug!(socket = %name, "serving");
        Ok(Served {
            path,
            name,
            id,
            stop,
            streams: streams_rx,
            close: Some(close),
            server,
        })
    }

    /// Registers, retrying with capped backoff while our socket stays in place. Returns the
    /// outcome and the identity of the `kubelet.sock` we registered with.
    async fn register(
        &mut self,
        served: &Served,
        kubelet_socket: &Path,
        backoff: &mut Backoff,
    ) -> (Outcome, Option<(u64, u64)>) {
        let mut failures = 0u64;
        loop {
            if *self.shutdown.borrow() {
                return (Outcome::Shutdown, None);
            }
            if !served.intact() {
                return (Outcome::SocketGone, None);
            }
            let kubelet_id = file_id(kubelet_socket);
            let attempt = register_once(
                kubelet_socket,
                &self.resource.name,
                &served.name,
                self.timings.register_timeout,
            );
            let result = tokio::select! {
                result = attempt => result,
                _ = self.shutdown.wait_for(|stop| *stop) => return (Outcome::Shutdown, None),
            };
            let error = match result {
                Ok(()) => return (Outcome::Registered, kubelet_id),
                Err(error) => chain(&error),
            };
            failures += 1;
            // Kubelet may be down for minutes: say so at first, then only now and then.
            if failures == 1 || failures.is_multiple_of(50) {
                warn!(%error, failures, "registration failed; retrying");
            } else {
                debug!(%error, failures, "registration failed; retrying");
            }
            self.status
                .send_modify(|status| status.last_error = Some(error));
            let delay = backoff.next();
            let names = [KUBELET_SOCKET_NAME, served.name.as_str()];
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                _ = self.shutdown.wait_for(|stop| *stop) => return (Outcome::Shutdown, None),
                // A new kubelet.sock (or our socket going) is worth acting on at once.
                () = relevant_event(&mut self.events, &names) => backoff.reset(),
            }
        }
    }

    /// Waits until kubelet restarts or goes away, or shutdown.
    async fn watch(
        &mut self,
        served: &Served,
        kubelet_socket: &Path,
        kubelet_id: Option<(u64, u64)>,
    ) -> Outcome {
        let mut streams = served.streams.clone();
        // Kubelet opens ListAndWatch right after Register; once it has, no open stream means
        // kubelet dropped us (possibly before this loop started).
        let stream_closed = async move {
            let _ = streams
                .wait_for(|count| count.opened > 0 && count.open == 0)
                .await;
        };
        tokio::pin!(stream_closed);
        let mut poll = tokio::time::interval(self.timings.poll_interval);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let names = [KUBELET_SOCKET_NAME, served.name.as_str()];
        loop {
            tokio::select! {
                _ = self.shutdown.wait_for(|stop| *stop) => return Outcome::Shutdown,
                () = &mut stream_closed => return Outcome::StreamClosed,
                _ = poll.tick() => {}
                () = relevant_event(&mut self.events, &names) => {}
            }
            if !served.intact() {
                return Outcome::SocketGone;
            }
            let current = file_id(kubelet_socket);
            if current.is_some() && current != kubelet_id {
                return Outcome::KubeletRestarted;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_names_fit_and_are_fresh_per_generation() {
        let name = "instrumentation.odigos.io/musl-dotnet-native-community";
        let longest = socket_name(name, 0xffff_ffff_ffff, u64::from(u32::MAX));
        assert!(longest.len() <= 70, "{longest}");
        assert_ne!(socket_name(name, 1, 1), socket_name(name, 1, 2));
        assert_ne!(socket_name(name, 1, 1), socket_name(name, 2, 1));
        assert!(socket_name(name, 1, 1).starts_with(&socket_prefix(name)));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets() {
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_millis(300));
        let delays: Vec<u128> = (0..5).map(|_| backoff.next().as_millis()).collect();
        assert_eq!(delays, [50, 100, 200, 300, 300]);
        backoff.reset();
        assert_eq!(backoff.next(), Duration::from_millis(50));
    }
}
