//! Shared by the Go instrumentation benchmarks: the target process guard, the instrumented
//! arm (real probes, real span reader into a counting sink), HTTP/1.1 responses read off a
//! keep-alive connection, and medians.

use std::{
    io::BufRead,
    net::TcpStream,
    path::Path,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use odiglet::{
    instrument::{ALL_LIBRARIES, GoProbes, resolve_targets},
    pipeline::{ProcessSpan, ResourceRegistry, SpanReader, SpanSink},
    ring,
};
use tokio::{runtime::Runtime, sync::oneshot, task::JoinHandle};

/// A target process, killed on drop.
pub struct Target(pub Child);

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `binary` with `args` and waits until it listens on `port`.
pub fn start_target(binary: &Path, args: &[String], port: u16) -> Target {
    let target = Target(
        Command::new(binary)
            .args(args)
            .stdout(Stdio::null())
            .spawn()
            .expect("target"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "target did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    target
}

/// Reads one response (headers, then a `Content-Length` body); returns its status line.
pub fn read_response(reader: &mut impl BufRead) -> String {
    let mut status = String::new();
    reader.read_line(&mut status).expect("status line");
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("read header");
        if line == "\r\n" {
            break;
        }
        if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = value.trim().parse().expect("content length");
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).expect("read body");
    status
}

/// Counts spans instead of exporting them: the bench measures the target, not the network.
#[derive(Default)]
struct CountingSink(AtomicU64);

/// Shares one counting sink between the reader task and the bench.
struct SinkRef(Arc<CountingSink>);

impl SpanSink for SinkRef {
    fn offer(&self, _span: ProcessSpan) {
        self.0.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// The instrumented arm: probes attached to one process, spans drained by the real reader.
pub struct Instrumented {
    pub probes: GoProbes,
    pid: u32,
    sink: Arc<CountingSink>,
    stop: oneshot::Sender<()>,
    reader: JoinHandle<()>,
}

impl Instrumented {
    /// Loads the probes (`prepare` may enable more, e.g. propagation) and attaches to `pid`.
    pub fn attach(runtime: &Runtime, pid: u32, prepare: impl FnOnce(&mut GoProbes)) -> Self {
        let sink = Arc::new(CountingSink::default());
        let (stop, stopped) = oneshot::channel::<()>();
        let (probes, reader) = runtime.block_on(async {
            let mut probes = GoProbes::load(1 << 24).expect("Go probes load");
            prepare(&mut probes);
            let ring = ring::register(probes.take_spans().expect("ring")).expect("register");
            let targets = resolve_targets(Path::new("/proc"), pid, ALL_LIBRARIES).expect("targets");
            probes.attach(pid, &targets.targets).expect("attach");
            let reader = SpanReader::new(ring, ResourceRegistry::new(), SinkRef(sink.clone()))
                .spawn(async move {
                    let _ = stopped.await;
                });
            (probes, reader)
        });
        Self {
            probes,
            pid,
            sink,
            stop,
            reader,
        }
    }

    /// Detaches and returns the spans read; panics if the ring buffer lost any.
    pub fn finish(mut self, runtime: &Runtime) -> u64 {
        self.probes.detach(self.pid);
        let _ = self.stop.send(());
        runtime.block_on(self.reader).expect("reader");
        assert_eq!(
            self.probes.counters().ringbuf_full,
            0,
            "the bench must not lose spans"
        );
        self.sink.0.load(Ordering::Relaxed)
    }
}

/// A one-worker runtime for the span reader.
pub fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime")
}

pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
