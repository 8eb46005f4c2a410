//! SIGTERM to exit of `odiglet trace` instrumenting many Go servers, for each kind of uprobe
//! link: the kernel waits for a grace period per link closed, so detach cost is what differs.
//! Needs root, Go (`cargo xtask setup`) and the eBPF objects (`cargo xtask build-ebpf`).
//! `cargo bench -p odiglet --bench shutdown` (`SHUTDOWN_PROCESSES`, default 20).
//!
//! Arms alternate in rounds against the same server processes; the ratio is what to read.
#![expect(clippy::print_stdout, reason = "a benchmark reports on stdout")]

use std::{
    io::{BufRead, BufReader},
    net::TcpStream,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

mod common;
#[path = "common/daemon.rs"]
#[expect(dead_code, reason = "the footprint helpers are the other benches'")]
mod daemon;
#[path = "common/go.rs"]
#[expect(dead_code, reason = "only the median is used here")]
mod go_arms;

use daemon::{Children, free_port, wait_until};

const ROUNDS: usize = 5;
const ARMS: [&str; 2] = ["perf-event", "multi"];

fn main() {
    let Some((root, go)) = common::privileged_go("shutdown") else {
        return;
    };
    let processes: usize = std::env::var("SHUTDOWN_PROCESSES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20);
    let hello = common::build_go_server(&go, &root.join("target/bench-shutdown"));
    let mut servers = Children(Vec::new());
    let mut args = Vec::new();
    for _ in 0..processes {
        let port = free_port();
        let child = Command::new(&hello)
            .arg(port.to_string())
            .stdout(Stdio::null())
            .spawn()
            .expect("start the Go server");
        args.extend(["--pid".to_owned(), child.id().to_string()]);
        servers.0.push(child);
        wait_until("the Go server", Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
    }

    let mut seconds: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..ROUNDS {
        for (arm, links) in ARMS.iter().enumerate() {
            seconds[arm].push(sigterm_to_exit(&args, links, processes));
        }
    }
    println!(
        "load average: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    println!("{processes} Go processes instrumented, median of {ROUNDS} rounds:");
    let medians: Vec<f64> = seconds.into_iter().map(go_arms::median).collect();
    for (arm, median) in ARMS.iter().zip(&medians) {
        println!("  --uprobe-links {arm}: SIGTERM to exit {median:.3} s");
    }
    println!("  multi / perf-event: {:.3}", medians[1] / medians[0]);
}

/// Starts `odiglet trace` on the servers with `links`, waits until all are attached, and times
/// SIGTERM to exit.
fn sigterm_to_exit(pids: &[String], links: &str, processes: usize) -> f64 {
    let mut trace = Command::new(env!("CARGO_BIN_EXE_odiglet"))
        .arg("trace")
        .args(pids)
        .args([
            "--stdout",
            "json",
            "--no-propagation",
            "--uprobe-links",
            links,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start odiglet trace");
    let stderr = trace.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let mut attached = 0;
    for line in lines.by_ref() {
        let line = line.expect("odiglet's log");
        assert!(!line.contains("cannot attach"), "{line}");
        if line.contains("attached Go probes") {
            attached += 1;
            if attached == processes {
                break;
            }
        }
    }
    assert_eq!(attached, processes, "odiglet trace exited before attaching");
    // Its log must stay writable until it exits.
    let drain = std::thread::spawn(move || lines.for_each(drop));
    let pid = Pid::from_raw(i32::try_from(trace.id()).expect("pid"));
    let started = Instant::now();
    kill(pid, Signal::SIGTERM).expect("SIGTERM");
    let status = trace.wait().expect("odiglet trace exits");
    let elapsed = started.elapsed().as_secs_f64();
    let _ = drain.join();
    assert!(status.success(), "odiglet trace: {status}");
    elapsed
}
