//! OpAMP test support: an in-process server on its own runtime (ephemeral port, temp Unix
//! socket, second-scale timeouts, fake pod-resources and a recording InstrumentationInstance
//! sink), the real peers installed by `cargo xtask setup`, and a raw HTTP/1.1 client.

use std::{
    collections::HashMap,
    io::{BufRead, BufReader, Read, Write},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex, mpsc},
    time::{Duration, Instant},
};

use odiglet::opamp::{
    DeviceOwner, DeviceOwnerLookup, InstanceQueue, InstanceSink, InstanceTask, Limits, OpampConfig,
    OpampServer, identity::BoxFuture, session::AgentStatus,
};

/// A pod-resources stand-in: device id → owner.
pub struct FakeDevices(pub HashMap<String, DeviceOwner>);

impl DeviceOwnerLookup for FakeDevices {
    fn owner<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<DeviceOwner>, String>> {
        let found = self.0.get(id).cloned();
        Box::pin(async move { Ok(found) })
    }
}

/// Records every InstrumentationInstance task.
#[derive(Clone, Default)]
pub struct Recorder(pub Arc<Mutex<Vec<InstanceTask>>>);

impl InstanceSink for Recorder {
    fn apply(&self, task: InstanceTask) -> BoxFuture<'_, Result<(), String>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(task);
        Box::pin(async { Ok(()) })
    }
}

impl Recorder {
    pub fn tasks(&self) -> Vec<InstanceTask> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// A server on its own runtime, so tests stay synchronous and can block on peers.
pub struct TestServer {
    pub rt: tokio::runtime::Runtime,
    pub server: Option<OpampServer>,
    pub config: OpampConfig,
    pub recorder: Recorder,
    pub dir: tempfile::TempDir,
    devices: HashMap<String, DeviceOwner>,
}

impl TestServer {
    pub fn start(limits: Limits, devices: &[(&str, (&str, &str, &str))]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = OpampConfig {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            unix_socket: Some(dir.path().join("exchange.sock")),
            status_listen: None,
            limits,
            stale_after: Duration::from_millis(1500),
            sweep_every: Duration::from_millis(200),
            config_file: Some(dir.path().join("opamp.json")),
            reload_every: Duration::from_millis(100),
            node_name: "node-1".into(),
            device_lookup_timeout: Duration::from_millis(500),
        };
        std::fs::write(dir.path().join("opamp.json"), "{}").expect("config file");
        let devices = devices
            .iter()
            .map(|(id, (ns, pod, c))| {
                let owner = DeviceOwner {
                    namespace: (*ns).into(),
                    pod: (*pod).into(),
                    container: (*c).into(),
                };
                ((*id).to_owned(), owner)
            })
            .collect();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let mut this = Self {
            rt,
            server: None,
            config,
            recorder: Recorder::default(),
            dir,
            devices,
        };
        this.restart();
        this
    }

    /// Starts (again) on the same port and socket; all agent state is lost, as in a real restart.
    pub fn restart(&mut self) {
        if let Some(server) = self.server.take() {
            self.rt.block_on(server.shutdown());
        }
        let devices = Box::new(FakeDevices(self.devices.clone()));
        let sink: Arc<dyn InstanceSink> = Arc::new(self.recorder.clone());
        let config = self.config.clone();
        let server = self.rt.block_on(async move {
            let queue = InstanceQueue::start(sink, 64);
            OpampServer::start(config, devices, queue).await
        });
        let server = server.expect("server starts");
        self.config.listen = server.tcp_addr;
        self.server = Some(server);
    }

    pub fn server(&self) -> &OpampServer {
        self.server.as_ref().expect("running")
    }

    pub fn addr(&self) -> SocketAddr {
        self.server().tcp_addr.expect("tcp listener")
    }

    pub fn socket(&self) -> PathBuf {
        self.server().unix_socket.clone().expect("unix socket")
    }

    pub fn agents(&self) -> Vec<AgentStatus> {
        self.server().sessions.status()
    }

    pub fn agent(&self, pod: &str) -> Option<AgentStatus> {
        self.agents().into_iter().find(|a| a.pod == pod)
    }

    pub fn configs_sent(&self) -> u64 {
        self.server()
            .sessions
            .counters
            .configs_sent
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Writes the standalone config file (picked up by the watcher within ~100 ms).
    pub fn write_config(&self, json: &serde_json::Value) {
        let path = self.dir.path().join("opamp.json");
        let tmp = self.dir.path().join("opamp.json.tmp");
        std::fs::write(&tmp, json.to_string()).expect("write config");
        std::fs::rename(tmp, path).expect("replace config");
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            self.rt.block_on(server.shutdown());
        }
    }
}

/// Polls `check` until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn tools_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tools")
}

/// The peer's install directory, if `cargo xtask setup` installed it. Missing: fails under
/// `CI=true`, otherwise prints a loud skip.
pub fn peer(name: &str, test: &str) -> Option<PathBuf> {
    let dir = tools_dir().join(name);
    let marker = if name.contains("node") {
        dir.join("node_modules/@elastic/opamp-client-node/package.json")
    } else {
        dir.join("bin/python")
    };
    if marker.exists() {
        return Some(dir);
    }
    let message = format!("{test}: OpAMP peer {name} is missing: run `cargo xtask setup`");
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{message}");
    #[expect(clippy::print_stderr, reason = "the skip must be loud in test output")]
    {
        eprintln!("SKIPPED: {message}");
    }
    None
}

pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/integration/opamp_peers")
        .join(name)
}

/// A peer process; its stdout lines (JSON) arrive on a channel. Killed on drop.
pub struct PeerProcess {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    pub seen: Vec<serde_json::Value>,
}

impl PeerProcess {
    pub fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Sends one command line on stdin.
    pub fn send(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().expect("piped stdin");
        writeln!(stdin, "{line}").expect("write to peer");
        stdin.flush().expect("flush peer stdin");
    }

    /// Waits for the next JSON line whose "event" is `event`; earlier lines stay in `seen`.
    pub fn expect_event(&mut self, event: &str, timeout: Duration) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).unwrap_or_else(|_| {
                panic!(
                    "no {event:?} event from the peer within {timeout:?}; saw {:?}",
                    self.seen
                )
            });
            let Ok(value) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            self.seen.push(value.clone());
            if value["event"] == event {
                return value;
            }
        }
    }

    /// Waits for the next JSON line that has the key `key`.
    pub fn expect_event_key(&mut self, key: &str, timeout: Duration) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).unwrap_or_else(|_| {
                panic!(
                    "no line with {key:?} from the peer within {timeout:?}; saw {:?}",
                    self.seen
                )
            });
            let Ok(value) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            self.seen.push(value.clone());
            if value.get(key).is_some() {
                return value;
            }
        }
    }

    /// Lines received so far without waiting.
    pub fn drain(&mut self) -> &[serde_json::Value] {
        while let Ok(line) = self.lines.try_recv() {
            if let Ok(value) = serde_json::from_str(&line) {
                self.seen.push(value);
            }
        }
        &self.seen
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        wait_for("peer exit", timeout, || {
            self.child.try_wait().ok().flatten()
        })
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A raw HTTP response.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Where a raw request goes.
pub enum Target<'a> {
    Tcp(SocketAddr),
    Unix(&'a Path),
}

/// Sends `head` (request line + headers, without the blank line) and `body` over a fresh
/// connection with `Connection: close`, and reads the whole response.
pub fn raw(target: Target<'_>, head: &str, body: &[u8]) -> RawResponse {
    let mut request = format!(
        "{head}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    let mut response = Vec::new();
    match target {
        Target::Tcp(addr) => {
            let mut s = std::net::TcpStream::connect(addr).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            s.write_all(&request).expect("send");
            s.read_to_end(&mut response).expect("read");
        }
        Target::Unix(path) => {
            let mut s = std::os::unix::net::UnixStream::connect(path).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            s.write_all(&request).expect("send");
            s.read_to_end(&mut response).expect("read");
        }
    }
    parse_response(&response)
}

fn parse_response(bytes: &[u8]) -> RawResponse {
    let split = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header end");
    let head = String::from_utf8_lossy(&bytes[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    RawResponse {
        status,
        headers,
        body: bytes[split + 4..].to_vec(),
    }
}

/// Holds a server's only request slot with a request stalled mid-body; returns the stalled
/// connection and the first 503 a `probe` got while it was held. A stalled request can lose the
/// race for the slot to a probe (and be answered 503 itself, holding nothing): then it is
/// replaced by a fresh one, until the deadline.
pub fn hold_only_slot(
    addr: SocketAddr,
    head: &str,
    mut probe: impl FnMut() -> RawResponse,
) -> (std::net::TcpStream, RawResponse) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut stalled = std::net::TcpStream::connect(addr).expect("connect");
        write!(stalled, "{head}\r\nContent-Length: 10\r\n\r\n").expect("send head");
        let attempt = Instant::now() + Duration::from_secs(2);
        while Instant::now() < attempt {
            let response = probe();
            if response.status == 503 {
                return (stalled, response);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            Instant::now() < deadline,
            "could not hold the only request slot within 30s"
        );
    }
}
