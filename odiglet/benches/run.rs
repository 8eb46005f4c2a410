//! The real daemon's footprint: the release `odiglet run` binary as a child process against
//! the API-server and kubelet stand-ins, with 100 pods on its node: 20 run a Go net/http
//! server (Go 1.25.5) in a kubelet-style container cgroup, with an InstrumentationConfig
//! enabling `golang-community`; 40 run a non-Go process (`sleep`); 40 have no process.
//! Measured from `/proc/<pid>`: RSS (VmRSS, RssAnon, RssFile) and CPU over an idle window,
//! then RSS after 10 000 exec/exit cycles of `/bin/true` in one of the Go containers.
//!
//! Baseline, same run, same binary and flags: `odiglet run` on a node with no pods (eBPF
//! loaded, watches synced, nothing to instrument). It isolates what pods and instrumented
//! processes cost; the absolute figures are what the 20 MiB target is about.
//! Needs root and Go (`cargo xtask setup`). `cargo bench -p odiglet --bench run`.
#![expect(clippy::print_stdout, reason = "a benchmark reports on stdout")]
#![allow(
    clippy::unwrap_used,
    dead_code,
    reason = "the stand-ins are shared with the integration tests, which use more of them"
)]

#[path = "../tests/integration/support/apiserver/mod.rs"]
mod apiserver;
mod common;
#[path = "common/daemon.rs"]
mod daemon;
#[path = "../tests/integration/support/kubelet/mod.rs"]
mod kubelet;

use std::{
    fs,
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use odiglet::process::cgroup2_mount_from_mountinfo;
use serde_json::{Value, json};

use self::{
    apiserver::ApiServer,
    daemon::{
        Cgroups, Children, ContainerCgroup, Memory, exec_churn_script, free_port, memory, mib,
        wait_until,
    },
    kubelet::Kubelet,
};

const ODIGLET: &str = env!("CARGO_BIN_EXE_odiglet");
const NODE: &str = "bench-node";
const EMPTY_NODE: &str = "empty-node";
const PODS: usize = 100;
const GO_PODS: usize = 20;
const SLEEP_PODS: usize = 40;
const EXEC_CYCLES: usize = 10_000;
const IDLE: Duration = Duration::from_secs(30);
const WAIT: Duration = Duration::from_secs(120);

fn pod_uid(i: usize) -> String {
    format!("b3e1c0de-0000-4000-8000-{i:012}")
}

fn container_id(i: usize) -> String {
    format!("{i:064x}")
}

/// Pod `i` of Deployment `app-<i>` (ReplicaSet `app-<i>-5d8f9c`), one container `app`.
fn pod(i: usize) -> Value {
    json!({
        "metadata": {"name": format!("app-{i}-5d8f9c-x{i}"), "namespace": "bench", "uid": pod_uid(i),
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "name": format!("app-{i}-5d8f9c"), "uid": format!("rs-{i}"), "controller": true}]},
        "spec": {"nodeName": NODE, "containers": [{"name": "app", "image": "img"}]},
        "status": {"phase": "Running", "qosClass": "Burstable", "containerStatuses": [
            {"name": "app", "ready": true, "restartCount": 0, "image": "img", "imageID": "",
             "containerID": format!("containerd://{}", container_id(i))}]}
    })
}

fn instrumentation_config(i: usize) -> Value {
    json!({
        "metadata": {"name": format!("deployment-app-{i}"), "namespace": "bench"},
        "spec": {"agentInjectionEnabled": true, "serviceName": "", "containers": [
            {"containerName": "app", "agentEnabled": true, "otelDistroName": "golang-community",
             "traces": {}}]}
    })
}

/// One plain HTTP/1.1 GET; the body.
fn get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
}

/// `(LoadedSuccessfully, total)` of `/v1/instrumentations`.
fn instrumented(health: SocketAddr) -> (usize, usize) {
    let Some(listed) = get(health, "/v1/instrumentations")
        .and_then(|body| serde_json::from_str::<Vec<Value>>(&body).ok())
    else {
        return (0, 0);
    };
    let loaded = listed
        .iter()
        .filter(|p| p["state"] == "LoadedSuccessfully")
        .count();
    (loaded, listed.len())
}

/// utime + stime of `pid`.
fn cpu(pid: u32) -> Duration {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // Fields after the command (which may hold spaces) start at state (field 3).
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map_or(100, |hz| hz as u64);
    Duration::from_secs_f64(ticks as f64 / hz as f64)
}

/// `odiglet run` as a child: SIGTERM, then SIGKILL, on drop.
struct Daemon {
    child: Child,
    health: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Daemon {
    fn start(api: &ApiServer, kubelet_dir: &Path, node: &str, cgroup_root: &Path) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let kubeconfig = dir.path().join("kubeconfig");
        api.write_kubeconfig(&kubeconfig);
        let agents = dir.path().join("odigos");
        fs::create_dir_all(&agents).expect("agents dir");
        let mut child = Command::new(ODIGLET)
            .arg("run")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .env("NODE_NAME", node)
            .env("NODE_IP", "127.0.0.1")
            .env("CURRENT_NS", "odigos-system")
            .env("ODIGOS_LOG_LEVEL", "warn")
            .env_remove("KUBECONFIG")
            .args([
                "--health-probe-bind-port",
                "0",
                "--opamp-listen",
                "127.0.0.1:0",
            ])
            .arg("--kubelet-dir")
            .arg(kubelet_dir)
            .arg("--agents-dir")
            .arg(&agents)
            .arg("--opamp-unix-socket")
            .arg(dir.path().join("exchange.sock"))
            .arg("--cgroup-root")
            .arg(cgroup_root)
            // The socket programs would attach to the host cgroup root, shared with tests.
            .arg("--no-propagation")
            .args([
                "--otlp-endpoint",
                &format!("http://127.0.0.1:{}", free_port()),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn odiglet run");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut health = None;
        let deadline = Instant::now() + WAIT;
        loop {
            let line = lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("odiglet run announces itself ready");
            let Ok(announced) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            health = announced["health"]
                .as_str()
                .and_then(|a| a.parse().ok())
                .or(health);
            if announced["ready"] == true {
                break;
            }
        }
        Self {
            child,
            health: health.expect("health address announced"),
            _dir: dir,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn memory(&self) -> Memory {
        memory(&self.pid().to_string())
    }

    /// CPU share of one core over [`IDLE`], then the memory.
    fn idle(&self) -> (f64, Memory) {
        let (before, start) = (cpu(self.pid()), Instant::now());
        std::thread::sleep(IDLE);
        let share = (cpu(self.pid()) - before).as_secs_f64() / start.elapsed().as_secs_f64();
        (share, self.memory())
    }

    /// SIGTERM; the time to a clean exit (a stop is the daemon's job: it must not hang).
    fn stop(mut self) -> Duration {
        let pid = i32::try_from(self.pid()).expect("pid");
        kill(Pid::from_raw(pid), Signal::SIGTERM).expect("SIGTERM");
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            assert!(start.elapsed() < WAIT, "odiglet run did not stop");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "odiglet run: {status}");
        start.elapsed()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// VmHWM of `pid` in KiB: its peak RSS since start (the start-up peak, at idle).
fn peak_rss(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("process status")
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Resident KiB of `pid` by mapping kind, from `/proc/<pid>/smaps`: the binary's mappings by
/// permissions (code, read-only data, relocated data), the BPF maps (the rings), shared
/// libraries, the heap and the other anonymous mappings (thread arenas and stacks).
fn smaps(pid: u32) -> Vec<(String, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/smaps")).expect("smaps");
    let binary = fs::canonicalize(ODIGLET).expect("odiglet binary");
    let binary = binary.to_string_lossy();
    let mut kinds: Vec<(String, u64)> = Vec::new();
    let mut kind = String::new();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or_default();
        if first.contains('-') && !first.ends_with(':') {
            let perms = fields.next().unwrap_or_default();
            let path = fields.nth(3).unwrap_or_default();
            kind = if path == binary {
                format!("binary {perms}")
            } else if path.contains("bpf") {
                "BPF maps (rings)".to_owned()
            } else if path.contains(".so") {
                "shared libraries".to_owned()
            } else if path == "[heap]" {
                "[heap]".to_owned()
            } else if path.is_empty() {
                "other anonymous (arenas, stacks)".to_owned()
            } else {
                format!("other {path}")
            };
        } else if first == "Rss:" {
            let kib: u64 = fields.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            match kinds.iter_mut().find(|(k, _)| *k == kind) {
                Some((_, total)) => *total += kib,
                None => kinds.push((kind.clone(), kib)),
            }
        }
    }
    kinds
}

fn row(name: &str, m: Memory, baseline: Memory) {
    println!(
        "| {name} | {:.1} | {:.1} | {:.1} | {:.2} |",
        mib(m.rss),
        mib(m.anon),
        mib(m.file),
        m.rss as f64 / baseline.rss.max(1) as f64
    );
}

fn main() {
    let Some((root, go)) = common::privileged_go("run") else {
        return;
    };
    let binary = common::build_go_server(&go, &root.join("target/bench-run"));
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let mount = cgroup2_mount_from_mountinfo(&mountinfo).expect("a cgroup v2 hierarchy");
    let containers: Vec<ContainerCgroup> = (0..PODS)
        .map(|i| ContainerCgroup {
            pod_uid: pod_uid(i),
            container_id: container_id(i),
        })
        .collect();
    let cgroups = Cgroups::create(&mount, &containers);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let kubelet_dir = tempfile::tempdir().expect("tempdir");
    let _kubelet = runtime.block_on(async { Kubelet::start(kubelet_dir.path()) });
    let api = runtime.block_on(ApiServer::start());

    // Processes first, so the daemon finds them in their cgroups at start-up.
    let mut processes = Children(Vec::new());
    for i in 0..GO_PODS {
        let child = Command::new(&binary)
            .arg(free_port().to_string())
            .stdout(Stdio::null())
            .spawn()
            .expect("Go service");
        cgroups.enter(i, child.id());
        processes.0.push(child);
    }
    for i in GO_PODS..GO_PODS + SLEEP_PODS {
        let child = Command::new("/bin/sleep")
            .arg("3600")
            .spawn()
            .expect("sleep");
        cgroups.enter(i, child.id());
        processes.0.push(child);
    }
    for i in 0..PODS {
        api.apply("pods", pod(i));
    }
    for i in 0..GO_PODS {
        api.apply("instrumentationconfigs", instrumentation_config(i));
    }

    // Baseline: the same daemon on a node with no pods.
    let baseline = Daemon::start(&api, kubelet_dir.path(), EMPTY_NODE, cgroups.root());
    let (baseline_cpu, baseline_memory) = baseline.idle();
    let baseline_peak = peak_rss(baseline.pid());
    let baseline_stopped_in = baseline.stop();

    let start = Instant::now();
    let daemon = Daemon::start(&api, kubelet_dir.path(), NODE, cgroups.root());
    wait_until("20 processes instrumented", WAIT, || {
        instrumented(daemon.health).0 == GO_PODS
    });
    let to_instrument = start.elapsed();
    // Runtime detection of the ready pods and their status writes settle.
    std::thread::sleep(Duration::from_secs(5));
    let (idle_cpu, idle) = daemon.idle();
    let idle_smaps = smaps(daemon.pid());

    let churn_start = Instant::now();
    let status = Command::new("/bin/sh")
        .args(["-c", &exec_churn_script(&cgroups.scopes()[0], EXEC_CYCLES)])
        .status()
        .expect("churn");
    assert!(status.success());
    let churn_time = churn_start.elapsed();
    wait_until("churn settled", WAIT, || {
        instrumented(daemon.health) == (GO_PODS, GO_PODS)
    });
    std::thread::sleep(Duration::from_secs(10));
    let after = daemon.memory();
    let peak = peak_rss(daemon.pid());
    let metrics = get(daemon.health, "/metrics").unwrap_or_default();
    let stopped_in = daemon.stop();
    drop(processes);
    drop(cgroups);
    println!("SIGTERM to exit: {stopped_in:.1?} (baseline {baseline_stopped_in:.1?})");

    println!(
        "odiglet run: {PODS} pods, {GO_PODS} Go processes instrumented {to_instrument:.2?} after start"
    );
    println!("| state | VmRSS MiB | RssAnon MiB | RssFile MiB | ratio to baseline |");
    println!("|---|---:|---:|---:|---:|");
    row(
        "baseline: odiglet run, node with no pods",
        baseline_memory,
        baseline_memory,
    );
    row("idle, 100 pods, 20 instrumented", idle, baseline_memory);
    row("after 10 000 exec/exit cycles", after, baseline_memory);
    println!(
        "VmHWM (peak RSS): baseline {:.1} MiB, 100 pods {:.1} MiB",
        mib(baseline_peak),
        mib(peak)
    );
    println!("idle, 100 pods, resident by mapping (smaps):");
    for (kind, kib) in &idle_smaps {
        println!("  {kind}: {:.2} MiB", mib(*kib));
    }
    println!(
        "idle CPU over {IDLE:?}: {:.3}% of one core (baseline {:.3}%)",
        idle_cpu * 100.0,
        baseline_cpu * 100.0
    );
    println!(
        "churn: {EXEC_CYCLES} exec/exit in {churn_time:.1?}; RSS after/idle {:.3}, RssAnon after/idle {:.3}",
        after.rss as f64 / idle.rss.max(1) as f64,
        after.anon as f64 / idle.anon.max(1) as f64,
    );
    for line in metrics.lines().filter(|l| {
        l.starts_with("odiglet_bpf_ringbuf") || l.contains("dropped") || l.contains("lost")
    }) {
        println!("metric: {line}");
    }
    let target_mib = 20.0;
    println!(
        "idle RSS {:.1} MiB against the {target_mib} MiB target: {}",
        mib(idle.rss),
        if mib(idle.rss) <= target_mib {
            "met"
        } else {
            "missed"
        }
    );
}
