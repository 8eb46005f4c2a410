//! `odiglet run` as a child process against the API-server and kubelet stand-ins: the env
//! contract, readiness, the components it runs, and a clean SIGTERM.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc as std_mpsc,
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use odiglet::opamp::wire::{
    AgentDescription, AgentToServer, RemoteConfigStatus, any_value::Value as AnyValue,
};
use serde_json::{Value, json};

use super::*;
use crate::{
    opamp::{kv, post},
    ops::get,
    support::{apiserver::ApiServer, kubelet::Kubelet, opamp::Target, privileges::privileged},
};

const ODIGLET: &str = env!("CARGO_BIN_EXE_odiglet");
const WEB_POD: &str = "web-5d8f9c-aaaaa";

/// Kills the child if the test fails midway.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sockets(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".sock"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The first message of a Python agent in container `py` of [`WEB_POD`].
fn python_agent(uid: &[u8; 16], pid: i64) -> AgentToServer {
    AgentToServer {
        instance_uid: uid.to_vec(),
        agent_description: Some(AgentDescription {
            identifying_attributes: vec![
                kv("k8s.namespace.name", AnyValue::StringValue("shop".into())),
                kv("k8s.pod.name", AnyValue::StringValue(WEB_POD.into())),
                kv("k8s.container.name", AnyValue::StringValue("py".into())),
                kv("process.vpid", AnyValue::IntValue(pid)),
                kv(
                    "telemetry.sdk.language",
                    AnyValue::StringValue("python".into()),
                ),
            ],
            ..Default::default()
        }),
        remote_config_status: Some(RemoteConfigStatus::default()),
        ..Default::default()
    }
}

/// Starts `odiglet run` with stderr to `log`; its stdout lines arrive on the receiver.
fn spawn(mut cmd: Command, log: &Path) -> (Running, std_mpsc::Receiver<String>) {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).expect("log file"));
    let mut odiglet = Running(cmd.spawn().expect("spawn odiglet run"));
    let stdout = odiglet.0.stdout.take().expect("stdout");
    let (tx, lines) = std_mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (odiglet, lines)
}

/// The next announcement line (JSON), or a panic naming what was expected.
fn next_json_line(lines: &std_mpsc::Receiver<String>, what: &str) -> Value {
    let line = lines
        .recv_timeout(WAIT * 2)
        .unwrap_or_else(|_| panic!("no {what} line"));
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{what} line is not JSON ({e}): {line}"))
}

/// The address under `key` in an announcement line.
fn address(line: &Value, key: &str) -> std::net::SocketAddr {
    line[key]
        .as_str()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no {key} address in {line}"))
}

fn base_command(kubeconfig: &Path) -> Command {
    let mut cmd = Command::new(ODIGLET);
    cmd.arg("run")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .env("NODE_NAME", NODE)
        .env("NODE_IP", "127.0.0.1")
        .env("CURRENT_NS", "odigos-system")
        .env_remove("KUBECONFIG");
    cmd
}

#[test]
fn run_requires_the_node_env_and_exits_64_with_one_line() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let kubeconfig = tmp.path().join("kubeconfig");
    std::fs::write(&kubeconfig, "apiVersion: v1\nkind: Config\n").expect("write");
    for missing in ["NODE_NAME", "NODE_IP", "CURRENT_NS"] {
        let out = base_command(&kubeconfig)
            .env_remove(missing)
            .output()
            .expect("run odiglet");
        assert_eq!(out.status.code(), Some(64), "without {missing}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(missing), "{stderr}");
    }
    let out = base_command(&kubeconfig)
        .env("NODE_IP", "not-an-ip")
        .output()
        .expect("run odiglet");
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not-an-ip"));
}

/// The daemon against both stand-ins: unknown Odigos flags accepted; alive but not ready
/// while the API server is down, ready once the watches synced (and, as root, the eBPF
/// programs loaded); device plugin registered, OpAMP serving the container's InstrumentationConfig and
/// writing the agent's InstrumentationInstance; SIGTERM → exit 0 within 10 s, empty device
/// lists sent, every socket removed.
#[test]
fn run_against_the_stand_ins_reaches_ready_and_stops_cleanly() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let tmp = tempfile::tempdir().expect("tempdir");
    let kubelet_dir = tmp.path().join("kubelet");
    let agents = tmp.path().join("odigos");
    std::fs::create_dir_all(&agents).expect("agents dir");
    let exchange = tmp.path().join("exchange");
    let kubelet = rt.block_on(async { Kubelet::start(&kubelet_dir) });
    let api = rt.block_on(ApiServer::start());
    let kubeconfig = tmp.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig);
    api.apply(
        "instrumentationconfigs",
        config(
            "deployment-web",
            json!([go_container("app"), {"containerName": "py", "agentEnabled": true,
                "otelDistroName": "python-community", "traces": {}}]),
        ),
    );
    api.apply(
        "pods",
        pod(
            WEB_POD,
            NODE,
            "web-5d8f9c",
            &[
                ("app", Some("containerd://c1"), true),
                ("py", Some("containerd://p1"), true),
            ],
        ),
    );

    let ebpf = privileged("run_against_the_stand_ins_reaches_ready_and_stops_cleanly (eBPF part)");
    api.lock().unavailable = true;
    let log = tmp.path().join("odiglet.log");
    let mut cmd = base_command(&kubeconfig);
    cmd.args([
        "--health-probe-bind-port",
        "0",
        "--opamp-listen",
        "127.0.0.1:0",
    ])
    .arg("--kubelet-dir")
    .arg(&kubelet_dir)
    .arg("--agents-dir")
    .arg(&agents)
    .arg("--opamp-unix-socket")
    .arg(exchange.join("exchange.sock"))
    .arg("--cgroup-root")
    .arg(tmp.path().join("cgroup"))
    // The socket programs attach to the host cgroup root, which the go_http tests use.
    .arg("--no-propagation")
    .args(if ebpf { &[][..] } else { &["--no-ebpf"][..] })
    // What Odigos' chart may pass: an enterprise flag, a bare one, an unknown one.
    .args([
        "--trace-id-suffix",
        "ab",
        "--wasp-enabled",
        "--future-flag=1",
    ]);
    let (mut odiglet, lines) = spawn(cmd, &log);
    let next_line = |what: &str| next_json_line(&lines, what);
    // Started, but the API server is down: alive, not ready, and says why.
    let started = next_line("started");
    assert_eq!(started["ready"], false, "{started}");
    let (opamp, health) = (address(&started, "opamp"), address(&started, "health"));
    assert_eq!(get(health, "/healthz").status, 200);
    let not_ready = get(health, "/readyz");
    assert_eq!(not_ready.status, 503);
    let reasons = String::from_utf8_lossy(&not_ready.body).into_owned();
    assert!(
        reasons.contains("[-]kubernetes-watches-synced"),
        "{reasons}"
    );
    assert!(reasons.contains("[+]opamp-listener"), "{reasons}");
    if ebpf {
        assert!(reasons.contains("[+]ebpf-programs-loaded"), "{reasons}");
    }
    // The API server comes back: the watches sync and the daemon turns ready.
    api.lock().unavailable = false;
    let ready = next_line("ready");
    assert_eq!(ready["ready"], true, "{ready}");
    assert_eq!(get(health, "/readyz").status, 200);
    let instrumentations = get(health, "/v1/instrumentations");
    assert_eq!(instrumentations.status, 200);
    let listed: Value = serde_json::from_slice(&instrumentations.body).expect("JSON");
    assert!(listed.is_array(), "{listed}");
    assert_eq!(sockets(&exchange), ["exchange.sock"]);

    // The device plugin registered every default resource with the kubelet.
    rt.block_on(
        kubelet.wait_until("the generic resource registered", WAIT, |s| {
            s.resources
                .get("instrumentation.odigos.io/generic")
                .is_some_and(|v| !v.stopped && !v.healthy.is_empty())
        }),
    );

    // A native agent in `py` gets its container's config, and an InstrumentationInstance.
    let reply = post(Target::Tcp(opamp), &python_agent(b"run-agent-000001", 11));
    let files = reply
        .remote_config
        .expect("remote config")
        .config
        .expect("files")
        .config_map;
    let container: Value =
        serde_json::from_slice(&files["container_config"].body).expect("container_config");
    assert_eq!(container["otelDistroName"], "python-community");
    let sdk = String::from_utf8_lossy(&files["SDK"].body).into_owned();
    assert!(
        sdk.contains(r#""k8s.deployment.name","value":"web""#),
        "{sdk}"
    );
    let agents: Value = serde_json::from_slice(&get(health, "/v1/agents").body).expect("agents");
    assert_eq!(agents[0]["service_name"], "web", "{agents}");
    assert_eq!(agents[0]["container"], "py", "{agents}");
    let deadline = Instant::now() + WAIT;
    while api.instance("shop", &format!("{WEB_POD}-11")).is_none() {
        assert!(
            Instant::now() < deadline,
            "no InstrumentationInstance written"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // SIGTERM: clean exit within 10 s, nothing left behind.
    let pid = i32::try_from(odiglet.0.id()).expect("pid");
    kill(Pid::from_raw(pid), Signal::SIGTERM).expect("SIGTERM");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = odiglet.0.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "odiglet run did not stop within 10 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let log = std::fs::read_to_string(&log).expect("log");
    assert!(status.success(), "SIGTERM is a clean stop: {status}\n{log}");
    for expected in [
        "--trace-id-suffix is an Odigos enterprise flag",
        "--wasp-enabled is an Odigos enterprise flag",
        "ignoring unknown arguments",
    ] {
        assert!(log.contains(expected), "{expected:?} not logged:\n{log}");
    }
    assert!(log.contains("--future-flag=1"), "{log}");
    assert!(sockets(&exchange).is_empty(), "the OpAMP socket is removed");
    assert_eq!(
        sockets(kubelet.dir()),
        ["kubelet.sock"],
        "plugin sockets removed"
    );
    let state = kubelet.state();
    let generic = &state.resources["instrumentation.odigos.io/generic"];
    assert_eq!(
        generic.last_message_len,
        Some(0),
        "an empty device list at shutdown"
    );
}

/// Odigos' live log levels: `effective-config` in `CURRENT_NS` raises the level to debug,
/// lowers it to error (info lines stop), and its deletion restores `ODIGOS_LOG_LEVEL`; every
/// change is announced under the more verbose of the two levels.
#[test]
fn run_follows_the_effective_config_log_levels() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let tmp = tempfile::tempdir().expect("tempdir");
    let api = rt.block_on(ApiServer::start());
    let kubeconfig = tmp.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig);
    api.apply(
        "pods",
        pod(
            WEB_POD,
            NODE,
            "web-5d8f9c",
            &[("py", Some("containerd://p1"), true)],
        ),
    );
    let log = tmp.path().join("odiglet.log");
    let mut cmd = base_command(&kubeconfig);
    cmd.env("ODIGOS_LOG_LEVEL", "info")
        .args([
            "--health-probe-bind-port",
            "0",
            "--opamp-listen",
            "127.0.0.1:0",
        ])
        .arg("--opamp-unix-socket")
        .arg(tmp.path().join("opamp.sock"))
        .arg("--kubelet-dir")
        .arg(tmp.path().join("kubelet"))
        .args(["--no-ebpf", "--no-device-plugin", "--no-runtime-detection"]);
    let (_odiglet, lines) = spawn(cmd, &log);
    let started = next_json_line(&lines, "started");
    let opamp = address(&started, "opamp");
    assert_eq!(next_json_line(&lines, "ready")["ready"], true);

    let read_log = || std::fs::read_to_string(&log).expect("log");
    // What `action` made odiglet log.
    let logged_by = |action: &dyn Fn()| {
        let mark = read_log().len();
        action();
        move || read_log().get(mark..).unwrap_or_default().to_owned()
    };
    // Runs `action`, then waits until the log shows `needle`.
    let expect_line = |action: &dyn Fn(), needle: &str| {
        let since = logged_by(action);
        let deadline = Instant::now() + WAIT;
        while !since().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in the log:\n{}",
                read_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    // An unknown agent without a description is answered with a debug line.
    let unknown_agent = || {
        post(
            Target::Tcp(opamp),
            &AgentToServer {
                instance_uid: b"run-agent-unknwn".to_vec(),
                ..Default::default()
            },
        );
    };
    let effective_config = |yaml: &'static str| {
        let api = api.clone();
        move || {
            api.apply(
                "configmaps",
                json!({"metadata": {"name": "effective-config", "namespace": "odigos-system"},
                    "data": {"config.yaml": yaml}}),
            );
        }
    };
    let registered = |uid: &'static [u8; 16], pid| {
        move || {
            post(Target::Tcp(opamp), &python_agent(uid, pid));
        }
    };
    const DEBUG_LINE: &str = "unknown agent without description";

    let at_start = logged_by(&unknown_agent)();
    assert!(!at_start.contains("DEBUG"), "info is the start-up level");

    expect_line(
        &effective_config("componentLogLevels:\n  default: debug\n  ui: error\n"),
        "log level changed from=info to=debug",
    );
    expect_line(&unknown_agent, DEBUG_LINE);

    // A bad edit keeps the level in force and says why.
    expect_line(
        &effective_config("componentLogLevels:\n  odiglet: loud\n"),
        "unknown log level `loud`",
    );
    expect_line(&unknown_agent, DEBUG_LINE);

    expect_line(
        &effective_config("componentLogLevels:\n  default: error\n"),
        "log level changed from=debug to=error",
    );
    let quiet = logged_by(&|| {
        registered(b"run-agent-000002", 12)();
        unknown_agent();
    })();
    assert!(
        !quiet.contains("agent registered") && !quiet.contains("DEBUG"),
        "at error level, info and debug lines stop:\n{quiet}"
    );

    expect_line(
        &|| api.remove("configmaps", "odigos-system", "effective-config"),
        "log level changed from=error to=info",
    );
    let back = logged_by(&registered(b"run-agent-000003", 13))();
    assert!(back.contains("agent registered"), "{}", read_log());
}
