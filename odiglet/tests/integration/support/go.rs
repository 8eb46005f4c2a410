//! Harness for the Go instrumentation tests: the loaded Go probes with the spans read from
//! them so far, and small HTTP helpers to drive the Go targets.
#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a failure panics with its backtrace"
)]

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::Path,
    time::Duration,
};

use odiglet::{
    instrument::{ALL_LIBRARIES, GoProbes, UprobeLinks, resolve_targets},
    pipeline::record_bytes,
    ring::{self, AsyncRingBuf},
};
use odiglet_common::{
    GoSpanRecord, decode_go_span,
    go::{DbSpan, GrpcClientSpan, GrpcServerSpan, HttpClientSpan, HttpServerSpan},
};
use tokio::time::{Instant, timeout_at};

pub const SPAN_DEADLINE: Duration = Duration::from_secs(30);

/// One kind of the Go probes' span records, picked out of a mixed list by [`spans_of`].
pub trait SpanKind: Copy {
    fn of(record: &GoSpanRecord) -> Option<Self>;
}

macro_rules! span_kinds {
    ($($variant:ident => $span:ty),+ $(,)?) => {$(
        impl SpanKind for $span {
            fn of(record: &GoSpanRecord) -> Option<Self> {
                match record {
                    GoSpanRecord::$variant(span) => Some(*span),
                    _ => None,
                }
            }
        }
    )+};
}

span_kinds!(
    HttpServer => HttpServerSpan,
    HttpClient => HttpClientSpan,
    Db => DbSpan,
    GrpcServer => GrpcServerSpan,
    GrpcClient => GrpcClientSpan,
);

/// The spans of kind `T` in `spans`, in order.
pub fn spans_of<T: SpanKind>(spans: &[GoSpanRecord]) -> Vec<T> {
    spans.iter().filter_map(T::of).collect()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A GET on a fresh connection; returns the status code.
pub fn get(port: u16, path: &str, headers: &[(&str, &str)]) -> u16 {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut request =
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Turns on outgoing propagation for the whole cgroup v2 hierarchy.
pub fn enable_propagation(probes: &mut GoProbes) {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let cgroup2 = odiglet::process::cgroup2_mount_from_mountinfo(&mountinfo).unwrap();
    probes.enable_propagation(&cgroup2).unwrap();
}

/// The Go probes plus the spans read from them so far.
pub struct Traced {
    pub probes: GoProbes,
    ring: AsyncRingBuf,
    pub spans: Vec<GoSpanRecord>,
}

impl Traced {
    pub fn load(ring_bytes: u32) -> Self {
        Self::load_for(ring_bytes, None)
    }

    /// Loads for the given kind of uprobe links (`None`: the best the kernel has).
    pub fn load_for(ring_bytes: u32, links: Option<UprobeLinks>) -> Self {
        let mut probes = GoProbes::load_for(ring_bytes, links).expect("Go probes load");
        let ring = ring::register(probes.take_spans().unwrap()).unwrap();
        Self {
            probes,
            ring,
            spans: Vec::new(),
        }
    }

    /// Attaches every library; `expect_skipped` lists the libraries (by the name in the
    /// skip reason) that must be skipped, and no others may be.
    pub fn attach(&mut self, pid: u32, expect_skipped: &[&str]) {
        let resolved = resolve_targets(Path::new("/proc"), pid, ALL_LIBRARIES).expect("targets");
        let unexpected: Vec<_> = resolved
            .skipped
            .iter()
            .filter(|s| {
                !expect_skipped
                    .iter()
                    .any(|e| s.starts_with(&format!("{e}:")))
            })
            .collect();
        assert!(unexpected.is_empty(), "skipped: {:?}", resolved.skipped);
        assert_eq!(
            resolved.skipped.len(),
            expect_skipped.len(),
            "{:?}",
            resolved.skipped
        );
        self.probes.attach(pid, &resolved.targets).expect("attach");
    }

    /// Reads spans until `deadline`; true when at least one arrived. Drains on readiness
    /// and on the drain timer, as the pipeline's reader does (the probes skip most wakeups).
    pub async fn read_until(&mut self, deadline: Instant) -> bool {
        let before = self.spans.len();
        let mut timer = ring::drain_timer();
        while self.spans.len() == before {
            match timeout_at(
                deadline,
                ring::wait_ready_or_tick(&mut self.ring, &mut timer),
            )
            .await
            {
                Err(_) => return false,
                Ok(ready) => ready.unwrap(),
            }
            while let Some(item) = self.ring.get_mut().next() {
                let span = decode_go_span(&item).expect("spans decode");
                // The probes send a record up to its last string byte, no more, no less.
                assert_eq!(item.len(), record_bytes(&span).len(), "{span:?}");
                self.spans.push(span);
            }
        }
        true
    }

    /// Waits until `count(spans) >= n`.
    pub async fn wait_for(
        &mut self,
        what: &str,
        n: usize,
        count: impl Fn(&[GoSpanRecord]) -> usize,
    ) {
        let deadline = Instant::now() + SPAN_DEADLINE;
        while count(&self.spans) < n {
            if !self.read_until(deadline).await && Instant::now() >= deadline {
                panic!(
                    "{what}: {} of {n} after {SPAN_DEADLINE:?}",
                    count(&self.spans)
                );
            }
        }
    }

    /// Reads for a short while and returns how many spans arrived: for "nothing more comes".
    pub async fn settle(&mut self) -> usize {
        let before = self.spans.len();
        let quiet = Instant::now() + Duration::from_millis(500);
        while self.read_until(quiet).await {}
        self.spans.len() - before
    }
}

/// Starts `odiglet trace --pid <pid>` exporting to `endpoint` with `extra` arguments, and
/// returns once it attached (its log says so).
pub fn trace_command(pid: u32, endpoint: &str, extra: &[&str]) -> std::process::Child {
    let mut odiglet = std::process::Command::new(env!("CARGO_BIN_EXE_odiglet"))
        .args([
            "trace",
            "--pid",
            &pid.to_string(),
            "--otlp-endpoint",
            endpoint,
        ])
        .args(extra)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The reader thread keeps draining stderr after this returns, so odiglet never blocks.
    LogLines::new(&mut odiglet).wait_for("attached Go probes");
    odiglet
}

/// odiglet as a child process, killed if the test fails midway.
pub struct Odiglet(pub std::process::Child);

impl Drop for Odiglet {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// odiglet's log lines (stderr), read on a thread so the test can wait with deadlines.
pub struct LogLines(std::sync::mpsc::Receiver<String>);

impl LogLines {
    pub fn new(odiglet: &mut std::process::Child) -> Self {
        use std::io::BufRead;
        let stderr = std::io::BufReader::new(odiglet.stderr.take().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Self(rx)
    }

    /// Waits for a line that `wanted` accepts; returns it.
    pub fn wait_until(&self, what: &str, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + SPAN_DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = self
                .0
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("odiglet logged no {what}"));
            if wanted(&line) {
                return line;
            }
        }
    }

    pub fn wait_for(&self, text: &str) -> String {
        self.wait_until(text, |line| line.contains(text))
    }

    /// With `--log-format json`: waits for `message` logged with field `pid`.
    pub fn wait_for_pid(&self, message: &str, pid: u32) {
        self.wait_until(&format!("{message} (pid {pid})"), |line| {
            serde_json::from_str::<serde_json::Value>(line)
                .is_ok_and(|v| v["fields"]["message"] == message && v["fields"]["pid"] == pid)
        });
    }
}

/// Waits until `odiglet` exits by itself; returns its status.
pub async fn exit_status(odiglet: &mut std::process::Child) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + SPAN_DEADLINE;
    loop {
        if let Some(status) = odiglet.try_wait().unwrap() {
            return status;
        }
        assert!(std::time::Instant::now() < deadline, "odiglet kept running");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn text(bytes: &[u8], len: u16) -> &str {
    std::str::from_utf8(&bytes[..usize::from(len).min(bytes.len())]).unwrap()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
