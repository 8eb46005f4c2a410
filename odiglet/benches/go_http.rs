//! Throughput of a hello-world Go HTTP server with and without odiglet's instrumentation
//! (server spans with the incoming traceparent looked up in the header map, ring buffer drained
//! by the real span reader), and the floor under it: an empty uprobe program attached at
//! exactly the same points, so the trap cost of the kernel is told apart from the cost of
//! odiglet's programs.
//! Needs root, Go (`cargo xtask setup`) and the eBPF objects (`cargo xtask build-ebpf`).
//! `cargo bench -p odiglet --bench go_http`.
//!
//! Arms alternate in rounds against the same server process, so the ratio is what to read.
#![expect(clippy::print_stdout, reason = "a benchmark reports on stdout")]

use std::{
    io::{BufReader, Write},
    net::{TcpListener, TcpStream},
    path::Path,
    time::{Duration, Instant},
};

mod common;
#[path = "common/floor.rs"]
mod floor;
#[path = "common/go.rs"]
mod go_arms;

use floor::{attach_floor, floor_hits, floor_object};
use go_arms::{Instrumented, median};
use odiglet::instrument::{ALL_LIBRARIES, resolve_targets};

const ROUNDS: usize = 5;
const ROUND_TIME: Duration = Duration::from_secs(3);

/// Keep-alive GETs for `duration` on one connection; returns requests per second.
fn drive(port: u16, duration: Duration) -> f64 {
    let (done, elapsed) = drive_bounded(port, duration, u64::MAX);
    done as f64 / elapsed.as_secs_f64()
}

/// Keep-alive GETs until `duration` passes or `max_requests` are done; returns both.
fn drive_bounded(port: u16, duration: Duration, max_requests: u64) -> (u64, Duration) {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let mut writer = stream.try_clone().expect("clone");
    let mut reader = BufReader::new(stream);
    let request = format!("GET /hello HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    let start = Instant::now();
    let mut done = 0u64;
    while start.elapsed() < duration && done < max_requests {
        writer.write_all(request.as_bytes()).expect("send");
        go_arms::read_response(&mut reader);
        done += 1;
    }
    (done, start.elapsed())
}

fn main() {
    let Some((root, go)) = common::privileged_go("go_http") else {
        return;
    };
    let floor = floor_object(&root);
    if !floor.exists() {
        println!(
            "SKIPPED: {} missing: run `cargo xtask build-ebpf`",
            floor.display()
        );
        return;
    }
    let binary = common::build_go_server(&go, &root.join("target/bench-go-http"));
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let server = go_arms::start_target(&binary, &[port.to_string()], port);
    let runtime = go_arms::runtime();
    let pid = server.0.id();
    let targets = resolve_targets(Path::new("/proc"), pid, ALL_LIBRARIES)
        .expect("targets")
        .targets;
    drive(port, Duration::from_millis(500)); // warm up

    // Uprobe hits per request, counted once by the counting floor program.
    let counting = attach_floor(&floor, "floor_count", pid, &targets);
    let (counted, _) = drive_bounded(port, Duration::from_secs(10), 2000);
    let hits_per_request = floor_hits(&counting) as f64 / counted as f64;
    drop(counting);

    let (mut base, mut empty, mut disabled, mut traced) = (vec![], vec![], vec![], vec![]);
    let mut spans = 0u64;
    for _ in 0..ROUNDS {
        base.push(drive(port, ROUND_TIME));

        let floor_probes = attach_floor(&floor, "floor_empty", pid, &targets);
        empty.push(drive(port, ROUND_TIME));
        drop(floor_probes);

        let mut instrumented = Instrumented::attach(&runtime, pid, |_| {});
        // The real programs with every library switched off: map lookup and early return.
        instrumented
            .probes
            .set_libraries(pid, 0)
            .expect("disable libraries");
        disabled.push(drive(port, ROUND_TIME));
        instrumented
            .probes
            .set_libraries(pid, ALL_LIBRARIES)
            .expect("enable libraries");
        traced.push(drive(port, ROUND_TIME));
        spans += instrumented.finish(&runtime);
    }
    let traced_requests: f64 = traced
        .iter()
        .map(|rps| rps * ROUND_TIME.as_secs_f64())
        .sum();
    let (base, empty, disabled, traced) = (
        median(base),
        median(empty),
        median(disabled),
        median(traced),
    );
    // Added latency per request, spread over the uprobe hits of a request.
    let per_hit_ns = |rps: f64| (1e9 / rps - 1e9 / base) / hits_per_request;
    println!(
        "hello-world Go 1.25 server, one keep-alive client, {ROUNDS} rounds x {ROUND_TIME:?} per arm"
    );
    println!("  uprobe hits per request: {hits_per_request:.2}");
    println!("  arm                               req/s   ratio   ns per hit");
    println!("  baseline (not instrumented)  {base:>10.0}   1.000");
    for (arm, rps) in [
        ("empty uprobe (floor)       ", empty),
        ("Go probes, libraries off   ", disabled),
        ("Go probes, spans read      ", traced),
    ] {
        println!(
            "  {arm}  {rps:>10.0}   {:.3}   {:>8.0}",
            rps / base,
            per_hit_ns(rps)
        );
    }
    println!(
        "  instrumented vs floor: ratio {:.3}; spans read: {spans} for about {traced_requests:.0} requests",
        traced / empty
    );
}
