//! Throughput of a hello-world Go HTTP server with and without odiglet's instrumentation
//! (server spans, incoming-context probe, ring buffer drained by the real span reader).
//! Needs root and Go (`cargo xtask setup`). `cargo bench -p odiglet --bench go_http`.
//!
//! Arms alternate in rounds against the same server process, so the ratio is what to read.
#![expect(clippy::print_stdout, reason = "a benchmark reports on stdout")]

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

#[path = "common/go.rs"]
mod common;

use common::{Instrumented, Target, median};

const ROUNDS: usize = 5;
const ROUND_TIME: Duration = Duration::from_secs(3);
const SERVER: &str = "package main\n\nimport (\n\t\"io\"\n\t\"net/http\"\n\t\"os\"\n)\n\n\
    func main() {\n\thttp.HandleFunc(\"/hello\", func(w http.ResponseWriter, r *http.Request) \
    { io.WriteString(w, \"hello\") })\n\thttp.ListenAndServe(\"127.0.0.1:\"+os.Args[1], nil)\n}\n";

fn build_server(go: &Path, dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).expect("bench dir");
    std::fs::write(dir.join("main.go"), SERVER).expect("write main.go");
    std::fs::write(dir.join("go.mod"), "module example.com/hello\n\ngo 1.19\n").expect("go.mod");
    let out = dir.join("hello");
    let status = Command::new(go)
        .current_dir(dir)
        .args(["build", "-o"])
        .arg(&out)
        .arg(".")
        .env("GOPROXY", "off")
        .env("GOFLAGS", "-mod=mod")
        .env("GOTOOLCHAIN", "local")
        .status()
        .expect("go build runs");
    assert!(status.success(), "go build failed");
    out
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
    let binary = build_server(&go, &root.join("target/bench-go-http"));
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let server = Target(
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
    let runtime = common::runtime();
    let pid = server.0.id();
    drive(port, Duration::from_millis(500)); // warm up

    let (mut base, mut traced, mut spans) = (Vec::new(), Vec::new(), 0u64);
    for _ in 0..ROUNDS {
        base.push(drive(port, ROUND_TIME));
        let instrumented = Instrumented::attach(&runtime, pid, |_| {});
        traced.push(drive(port, ROUND_TIME));
        spans += instrumented.finish(&runtime);
    }
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
