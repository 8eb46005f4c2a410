//! Throughput of Go `database/sql` queries and gRPC unary calls with and without odiglet's
//! instrumentation, as ratios measured in one run. Targets are the integration tests' own
//! (`tests/integration/go_targets/`): queries through a no-op driver (Go 1.25, so the probe
//! cost is not hidden behind a database: the worst case), queries through lib/pq to a real
//! PostgreSQL over its Unix socket (the tests' server, a real round trip per query), and
//! grpc-go 1.33 health checks over loopback, client and server in one process (Debian Go 1.19,
//! GOPATH mode). Each target loops in-process on an HTTP request (`/load?n=`, `/load-sql?n=`),
//! so the rate is the target's own. Outgoing `traceparent`
//! injection is not in the gRPC figure: the socket programs only see connections made after
//! they attach, and the target's connection is made at its start.
//! Needs root, Go and the Debian Go sources (`cargo xtask setup`).
//! `cargo bench -p odiglet --bench go_libraries`.
#![expect(clippy::print_stdout, reason = "a benchmark reports on stdout")]

#[path = "common/go.rs"]
#[expect(
    dead_code,
    reason = "the keep-alive response reader serves the other Go benches"
)]
mod common;

use std::{
    io::Read,
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use common::{Instrumented, median};

// The integration tests' PostgreSQL server and the support code it uses (at the crate root,
// as `super::` in those files expects).
#[allow(dead_code, reason = "the benchmark uses a part of the tests' support")]
#[path = "../tests/integration/support/guards.rs"]
mod guards;
#[allow(dead_code, reason = "the benchmark uses a part of the tests' support")]
#[path = "../tests/integration/support/postgres.rs"]
mod postgres;
#[allow(dead_code, reason = "the benchmark uses a part of the tests' support")]
#[path = "../tests/integration/support/runtimes.rs"]
mod runtimes;

const ROUNDS: usize = 5;
/// About how long one arm of one round runs.
const ROUND_TIME: Duration = Duration::from_secs(2);
const SQL_SERVICE: &str = include_str!("../tests/integration/go_targets/sql_service.go");
const GRPC_SERVICE: &str = include_str!("../tests/integration/go_targets/grpc_service.go");
const GOPATH: &str = "/usr/share/gocode";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port()
}

fn build(go: &Path, dir: &Path, main: &str, gopath: bool) -> PathBuf {
    std::fs::create_dir_all(dir).expect("bench dir");
    std::fs::write(dir.join("main.go"), main).expect("write main.go");
    let out = dir.join("target");
    let mut cmd = Command::new(go);
    cmd.current_dir(dir).args(["build", "-o"]).arg(&out);
    if gopath {
        cmd.arg("main.go")
            .env("GOPATH", GOPATH)
            .env("GO111MODULE", "off")
            .env("GOFLAGS", "");
    } else {
        std::fs::write(dir.join("go.mod"), "module example.com/bench\n\ngo 1.19\n")
            .expect("go.mod");
        cmd.arg(".")
            .env("GOPROXY", "off")
            .env("GOFLAGS", "-mod=mod")
            .env("GOTOOLCHAIN", "local");
    }
    let status = cmd.env("CGO_ENABLED", "0").status().expect("go build runs");
    assert!(status.success(), "go build failed");
    out
}

/// Runs `n` operations in the target (`GET <path>?n=`); returns operations per second.
fn load(port: u16, path: &str, n: u64) -> f64 {
    let started = Instant::now();
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    std::io::Write::write_all(
        &mut stream,
        format!("GET {path}?n={n} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    n as f64 / started.elapsed().as_secs_f64()
}

/// Alternating rounds of `n` operations per arm; prints the medians and their ratio.
fn compare(what: &str, unit: &str, port: u16, path: &str, pid: u32) {
    let runtime = common::runtime();
    // Sized so one arm lasts about ROUND_TIME uninstrumented.
    let n = (load(port, path, 2_000) * ROUND_TIME.as_secs_f64()) as u64;
    let (mut base, mut traced, mut spans) = (Vec::new(), Vec::new(), 0);
    for _ in 0..ROUNDS {
        base.push(load(port, path, n));
        let instrumented = Instrumented::attach(&runtime, pid, |_| {});
        traced.push(load(port, path, n));
        spans += instrumented.finish(&runtime);
    }
    let (base, traced) = (median(base), median(traced));
    println!("{what}: {ROUNDS} rounds x {n} {unit} per arm");
    println!("  baseline (not instrumented)   {base:>10.0} {unit}/s   ratio 1.000");
    println!(
        "  instrumented (spans read)     {traced:>10.0} {unit}/s   ratio {:.3}",
        traced / base
    );
    println!(
        "  spans read: {spans} for {} instrumented {unit}",
        n * ROUNDS as u64
    );
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        println!("SKIPPED (needs root/BPF): go_libraries benchmark");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let go125 = root.join("target/tools/go-1.25.5/bin/go");
    let go119 = PathBuf::from("/usr/lib/go-1.19/bin/go");
    let grpc = Path::new(GOPATH).join("src/google.golang.org/grpc");
    for needed in [&go125, &go119, &grpc] {
        if !needed.exists() {
            println!(
                "SKIPPED: {} missing: run `cargo xtask setup`",
                needed.display()
            );
            return;
        }
    }

    let sql = build(
        &go125,
        &root.join("target/bench-go-sql"),
        SQL_SERVICE,
        false,
    );
    let port = free_port();
    let target = common::start_target(&sql, &[port.to_string()], port);
    compare(
        "database/sql, no-op driver, Go 1.25",
        "queries",
        port,
        "/load",
        target.0.id(),
    );
    drop(target);

    let grpc = build(
        &go119,
        &root.join("target/bench-go-grpc"),
        GRPC_SERVICE,
        true,
    );
    let Some(postgres) = postgres::Postgres::start("go_libraries benchmark") else {
        return;
    };
    let (grpc_port, http_port) = (free_port(), free_port());
    let args = [grpc_port.to_string(), http_port.to_string(), postgres.dsn()];
    let target = common::start_target(&grpc, &args, http_port);
    compare(
        "database/sql, lib/pq to PostgreSQL (Unix socket), Go 1.19",
        "queries",
        http_port,
        "/load-sql",
        target.0.id(),
    );
    compare(
        "gRPC unary calls (client + server spans), grpc-go 1.33, Go 1.19",
        "calls",
        http_port,
        "/load",
        target.0.id(),
    );
}
