//! Throughput of a hello-world Go HTTP server with and without odiglet's instrumentation
//! (server spans, incoming-context probe, ring buffer drained by the real span reader).
//! Needs root and Go (`cargo xtask setup`). `cargo bench -p odiglet --bench go_http`.
//!
//! Arms alternate in rounds against the same server process, so the ratio is what to read.
#![expect(clippy::print_stdout, reason = "a benchmark reports on stdout")]

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

mod common;

use odiglet::{
    instrument::{ALL_LIBRARIES, GoProbes, resolve_targets},
    pipeline::{ProcessSpan, ResourceRegistry, SpanReader, SpanSink},
    ring,
};

const ROUNDS: usize = 5;
const ROUND_TIME: Duration = Duration::from_secs(3);
/// Counts spans instead of exporting them: the bench measures the target, not the network.
struct CountingSink(std::sync::atomic::AtomicU64);

impl SpanSink for CountingSink {
    fn offer(&self, _span: ProcessSpan) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Keep-alive GETs for `duration` on one connection; returns requests per second.
fn drive(port: u16, duration: Duration) -> f64 {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let mut writer = stream.try_clone().expect("clone");
    let mut reader = BufReader::new(stream);
    let request = format!("GET /hello HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    let start = Instant::now();
    let mut done = 0u64;
    while start.elapsed() < duration {
        writer.write_all(request.as_bytes()).expect("send");
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
        done += 1;
    }
    done as f64 / start.elapsed().as_secs_f64()
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        println!("SKIPPED (needs root/BPF): go_http benchmark");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let go = root.join("target/tools/go-1.25.5/bin/go");
    if !go.exists() {
        println!("SKIPPED: {} missing: run `cargo xtask setup`", go.display());
        return;
    }
    let binary = common::build_go_server(&go, &root.join("target/bench-go-http"));
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let server = Server(
        Command::new(&binary)
            .arg(port.to_string())
            .stdout(Stdio::null())
            .spawn()
            .expect("server"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let pid = server.0.id();
    drive(port, Duration::from_millis(500)); // warm up

    let (mut base, mut traced, mut spans) = (Vec::new(), Vec::new(), 0u64);
    for _ in 0..ROUNDS {
        base.push(drive(port, ROUND_TIME));
        let sink = std::sync::Arc::new(CountingSink(Default::default()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (mut probes, reader) = runtime.block_on(async {
            let mut probes = GoProbes::load(1 << 24).expect("Go probes load");
            let ring = ring::register(probes.take_spans().expect("ring")).expect("register");
            let targets = resolve_targets(Path::new("/proc"), pid, ALL_LIBRARIES).expect("targets");
            probes.attach(pid, &targets.targets).expect("attach");
            let reader = SpanReader::new(ring, ResourceRegistry::new(), SinkRef(sink.clone()))
                .spawn(async move {
                    let _ = stopped.await;
                });
            (probes, reader)
        });
        traced.push(drive(port, ROUND_TIME));
        probes.detach(pid);
        let _ = stop.send(());
        runtime.block_on(reader).expect("reader");
        spans += sink.0.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(
            probes.counters().ringbuf_full,
            0,
            "the bench must not lose spans"
        );
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let traced_requests: f64 = traced
        .iter()
        .map(|rps| rps * ROUND_TIME.as_secs_f64())
        .sum();
    let (base, traced) = (median(base), median(traced));
    println!(
        "hello-world Go 1.25 server, one keep-alive client, {ROUNDS} rounds x {ROUND_TIME:?} per arm"
    );
    println!("  baseline (not instrumented)   {base:>10.0} req/s   ratio 1.000");
    println!(
        "  instrumented (spans read)     {traced:>10.0} req/s   ratio {:.3}",
        traced / base
    );
    println!("  spans read: {spans} for about {traced_requests:.0} instrumented requests");
}

/// Shares one counting sink between the reader task and the bench.
struct SinkRef(std::sync::Arc<CountingSink>);

impl SpanSink for SinkRef {
    fn offer(&self, span: ProcessSpan) {
        self.0.offer(span);
    }
}
