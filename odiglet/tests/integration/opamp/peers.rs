//! The real clients: Odigos Python agents (current and 2024), the OpenTelemetry Python OpAMP
//! client, Elastic's Node client.

use super::*;

/// T1 + T3: the current Odigos Python agent over TCP and over the Unix socket: registered with
/// its pod, container, language and vpid; `container_config` in the first reply; `Healthy`
/// next; a config change delivered on the next poll exactly once; shutdown removes it.
#[test]
fn odigos_python_current_tcp_and_unix() {
    let Some(dir) = peer("odigos-python-1.0.90", "odigos_python_current_tcp_and_unix") else {
        return;
    };
    let server = TestServer::start(Limits::default(), &[]);
    for (transport, pod) in [
        ("tcp", "py-7d4b9c8f6-tcp01"),
        ("unix", "py-7d4b9c8f6-uds01"),
    ] {
        let mut cmd = python(&dir, "odigos_current.py");
        match transport {
            "tcp" => cmd.env("ODIGOS_OPAMP_SERVER_HOST", server.addr().to_string()),
            _ => cmd.env("ODIGOS_OPAMP_UNIX_SOCKET", server.socket()),
        };
        cmd.env("ODIGOS_POD_NAME", pod)
            .env("ODIGOS_WORKLOAD_NAMESPACE", "ns-py")
            .env("ODIGOS_CONTAINER_NAME", "app");
        let mut agent = PeerProcess::spawn(cmd);
        let registered = agent.expect_event("registered", SECS_20);
        assert_eq!(registered["error"], false, "{transport}: {registered}");
        assert_eq!(
            registered["container_config"]["containerName"], "app",
            "{transport}"
        );
        let status = wait_for("Healthy", SECS_5, || {
            server
                .agent(pod)
                .filter(|a| a.status.as_deref() == Some("Healthy"))
        });
        assert_eq!(
            (status.namespace.as_str(), status.container.as_str()),
            ("ns-py", "app")
        );
        assert_eq!(
            (status.language.as_str(), status.pid),
            ("python", i64::from(agent.child.id()))
        );
        assert_eq!(status.service_name, "py");
        assert_eq!(status.instance_uid, registered["uid"]);

        if transport == "tcp" {
            // T3: a config change reaches the agent on its next poll, once.
            let sent_before = server.configs_sent();
            server.write_config(&json!({"overrides": [{"namespace": "ns-py",
                "containerConfig": {"agentEnabled": true, "traces": {"headSampling": {"fractionToRecord": 0.5}}}}]}));
            // Served lazily: the agent's hash changes when it polls after the reload.
            wait_for("config reload", SECS_5, || {
                (server.server().config.get().0 > 1).then_some(())
            });
            agent.send("beat");
            let update = agent.expect_event("config", SECS_5);
            assert_eq!(
                update["container_config"]["traces"]["headSampling"]["fractionToRecord"],
                0.5
            );
            let new_hash = server.agent(pod).expect("still registered").config_hash;
            assert_ne!(new_hash, status.config_hash);
            agent.send("beat");
            wait_for("new hash echoed", SECS_5, || {
                (server.agent(pod)?.reported_config_hash == new_hash).then_some(())
            });
            let messages = || {
                server
                    .server()
                    .sessions
                    .counters
                    .messages
                    .load(std::sync::atomic::Ordering::SeqCst)
            };
            for _ in 0..2 {
                // One at a time: a notify while the worker is busy is lost.
                let seen = messages();
                agent.send("beat");
                wait_for("a heartbeat", SECS_5, || (messages() > seen).then_some(()));
            }
            assert_eq!(
                server.configs_sent() - sent_before,
                1,
                "the new config is sent exactly once"
            );
        }

        agent.send("stop");
        agent.expect_event("stopped", SECS_5);
        wait_for("agent removed on disconnect", SECS_5, || {
            server.agent(pod).is_none().then_some(())
        });
        // The shutdown path reports ProcessTerminated, unhealthy: the record is kept (upserted).
        // Tasks reach the sink through the queue's worker: wait for the disconnect's.
        let child_pid = i64::from(agent.child.id());
        wait_for(
            "unhealthy disconnect recorded",
            SECS_5,
            || match last_task_for(&server, pod) {
                Some(InstanceTask::Upsert {
                    health: Some(h),
                    pid,
                    ..
                }) if !h.healthy && h.status == "ProcessTerminated" && pid == child_pid => Some(()),
                _ => None,
            },
        );
    }
}

/// T2: the 2024 agent identifies itself only through `X-Odigos-DeviceId` and fails to start
/// unless `SDK.remoteResourceAttributes` arrives; its process resource must carry ours.
#[test]
fn odigos_python_legacy_device_id() {
    let Some(dir) = peer("odigos-python-1.0.12", "odigos_python_legacy_device_id") else {
        return;
    };
    let limits = Limits {
        require_device_id: true,
        ..Limits::default()
    };
    let pod = "legacy-7d4b9c8f6-ab12c";
    let server = TestServer::start(limits, &[("dev-py", ("ns-legacy", pod, "web"))]);
    let mut cmd = python(&dir, "odigos_legacy.py");
    cmd.env("ODIGOS_OPAMP_SERVER_HOST", server.addr().to_string())
        .env("ODIGOS_INSTRUMENTATION_DEVICE_ID", "dev-py")
        .env("OTEL_TRACES_EXPORTER", "otlp_proto_http")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
        .env("OTEL_METRICS_EXPORTER", "none")
        .env("OTEL_LOGS_EXPORTER", "none");
    let mut agent = PeerProcess::spawn(cmd);
    let resource = agent.expect_event_key("resource", SECS_20);
    let expected = [
        ("k8s.namespace.name", "ns-legacy"),
        ("k8s.pod.name", pod),
        ("k8s.container.name", "web"),
        ("k8s.deployment.name", "legacy"),
        ("k8s.node.name", "node-1"),
        ("service.name", "legacy"),
    ];
    for (key, value) in expected {
        assert_eq!(resource["resource"][key], value, "{key} in {resource}");
    }
    assert!(agent.wait_exit(SECS_20).success());
    // It registered through the device id (and disconnected at exit).
    let tasks = server.recorder.tasks();
    assert!(
        tasks.iter().any(|t| matches!(t, InstanceTask::Upsert { pod: p, container, .. } if p == pod && container == "web")),
        "{tasks:?}"
    );
}

/// T5: the official OpenTelemetry Python client: capabilities stored, JSON files decoded,
/// APPLIED status recorded, duplicate `agent_disconnect` harmless.
#[test]
fn otel_python_opamp_client() {
    let Some(dir) = peer("otel-opamp-python", "otel_python_opamp_client") else {
        return;
    };
    let server = TestServer::start(Limits::default(), &[]);
    let mut cmd = python(&dir, "otel_client.py");
    cmd.arg(format!("http://{}/v1/opamp", server.addr()))
        .arg("0.3")
        .arg("2");
    let mut agent = PeerProcess::spawn(cmd);
    let config = agent.expect_event("config", SECS_5);
    assert_eq!(
        config["files"],
        json!(["InstrumentationLibraries", "SDK", "container_config"])
    );
    let status = wait_for("APPLIED hash", SECS_5, || {
        server
            .agent("otel-pod")
            .filter(|a| !a.config_hash.is_empty() && a.reported_config_hash == a.config_hash)
    });
    assert_eq!(
        (
            status.capabilities,
            status.pid,
            status.service_name.as_str()
        ),
        (0x3007, 4242, "otel-demo")
    );
    agent.expect_event("stopped", SECS_5);
    assert!(agent.wait_exit(SECS_5).success());
    assert!(server.agent("otel-pod").is_none());
    wait_for("delete recorded", SECS_5, || {
        matches!(
            last_task_for(&server, "otel-pod"),
            Some(InstanceTask::Delete { .. })
        )
        .then_some(())
    });
}

/// T4 + T3 + T6: Elastic's strict Node client: exact Content-Type (no send failures), 16-byte
/// uid, APPLIED status; a config change delivered once; server restart → re-registration via
/// ReportFullState; kill -9 → removed after the stale timeout.
#[test]
fn elastic_node_client() {
    let Some(dir) = peer("elastic-opamp-node", "elastic_node_client") else {
        return;
    };
    let mut server = TestServer::start(Limits::default(), &[]);
    let pod = "node-7d4b9c8f6-el001";
    let mut cmd = Command::new("node");
    cmd.arg(script("elastic_client.js"))
        .arg(format!("http://{}/v1/opamp", server.addr()))
        .arg(pod)
        .arg("0.2")
        .env("NODE_PATH", dir.join("node_modules"));
    let mut agent = PeerProcess::spawn(cmd);
    let first = agent.expect_event("config", SECS_5);
    let status = wait_for("APPLIED hash", SECS_5, || {
        server
            .agent(pod)
            .filter(|a| a.reported_config_hash == a.config_hash)
    });
    assert_eq!(first["hash"], status.config_hash);
    assert_eq!(status.capabilities, 0x3003);
    assert_eq!(
        status.instance_uid.len(),
        36,
        "16-byte uid rendered as a UUID"
    );

    // T3 with a 0.2 s heartbeat: new config once, then silence.
    let sent_before = server.configs_sent();
    server.write_config(&json!({"signals": {"traces": true, "metrics": true, "logs": false}}));
    let second = agent.expect_event("config", SECS_5);
    assert_ne!(second["hash"], first["hash"]);
    let messages = || {
        server
            .server()
            .sessions
            .counters
            .messages
            .load(std::sync::atomic::Ordering::SeqCst)
    };
    let seen = messages();
    wait_for("10 more heartbeats", SECS_5, || {
        (messages() >= seen + 10).then_some(())
    });
    assert_eq!(server.configs_sent() - sent_before, 1);

    // Restart: all state lost; the agent's next heartbeat gets ReportFullState and it re-registers.
    server.restart();
    wait_for("re-registration", SECS_5, || server.agent(pod));
    let full_state = server
        .server()
        .sessions
        .counters
        .full_state_requests
        .load(std::sync::atomic::Ordering::SeqCst);
    assert!(full_state >= 1, "the restarted server asked for full state");
    let failures: Vec<_> = agent
        .drain()
        .iter()
        .filter(|e| e["event"] == "send-fail")
        .cloned()
        .collect();
    assert!(
        failures.is_empty(),
        "the strict client rejected a reply: {failures:?}"
    );

    // T6: kill -9 (no disconnect) → gone after the 1.5 s stale timeout.
    agent.child.kill().expect("kill -9");
    let _ = agent.child.wait();
    wait_for("stale agent swept", SECS_5, || {
        server.agent(pod).is_none().then_some(())
    });
    wait_for("delete recorded", SECS_5, || {
        matches!(
            last_task_for(&server, pod),
            Some(InstanceTask::Delete { .. })
        )
        .then_some(())
    });
}

/// Elastic's client honours our 503 + `Retry-After: 30` (it clamps to at least 30 s itself, so
/// the test reads its diagnostics instead of waiting).
#[test]
fn elastic_node_client_retry_after() {
    let Some(dir) = peer("elastic-opamp-node", "elastic_node_client_retry_after") else {
        return;
    };
    let limits = Limits {
        max_in_flight: 1,
        ..Limits::default()
    };
    let server = TestServer::start(limits, &[]);
    // Hold the only request slot with a request stalled mid-body.
    let (_stalled, _) = hold_only_slot(server.addr(), POST, || {
        raw(Target::Tcp(server.addr()), POST, b"")
    });
    let mut cmd = Command::new("node");
    cmd.arg(script("elastic_client.js"))
        .arg(format!("http://{}/v1/opamp", server.addr()))
        .arg("retry-pod")
        .arg("0.2")
        .env("NODE_PATH", dir.join("node_modules"));
    let mut agent = PeerProcess::spawn(cmd);
    let failure = agent.expect_event("send-fail", SECS_5);
    assert!(
        failure["retryAfterMs"]
            .as_f64()
            .is_some_and(|ms| ms >= 30_000.0),
        "{failure}"
    );
    assert!(server.agent("retry-pod").is_none());
}

/// T2 end to end, as on a node: `odiglet device-plugin` registers with the kubelet stand-in,
/// which admits a pod and hands its container a Python device (and its env); the 2024 agent
/// runs with that device id, and `odiglet opamp-server --kubelet-dir` resolves it through
/// kubelet's real pod-resources socket to the pod, namespace and container.
#[test]
fn legacy_device_id_resolved_through_kubelet_pod_resources() {
    use crate::support::{guards::ChildGuard, kubelet::Kubelet};

    const PYTHON: &str = "instrumentation.odigos.io/python-native-community";
    let Some(dir) = peer(
        "odigos-python-1.0.12",
        "legacy_device_id_resolved_through_kubelet_pod_resources",
    ) else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let kubelet_dir = tmp.path().join("kubelet");
    let agents = tmp.path().join("odigos");
    std::fs::create_dir_all(agents.join("python")).expect("agents dir");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let _in_runtime = rt.enter();
    let kubelet = Kubelet::start(&kubelet_dir);
    let _plugin = ChildGuard::spawn(
        "odiglet device-plugin",
        Command::new(env!("CARGO_BIN_EXE_odiglet"))
            .arg("device-plugin")
            .arg("--kubelet-dir")
            .arg(&kubelet_dir)
            .arg("--agents-dir")
            .arg(&agents)
            .args(["--node-ip", "127.0.0.1"]),
    );
    rt.block_on(
        kubelet.wait_until("the Python resource registered", SECS_30, |s| {
            s.resources
                .get(PYTHON)
                .is_some_and(|v| !v.stopped && !v.healthy.is_empty())
        }),
    );
    let pod = "legacy-7d4b9c8f6-kb01x";
    let admitted = rt
        .block_on(kubelet.admit(&format!("ns-kubelet/{pod}"), &[("web", PYTHON, 1)]))
        .expect("admitted");
    let env = &admitted["web"].envs;
    let device_id = env["ODIGOS_INSTRUMENTATION_DEVICE_ID"].clone();
    assert_eq!(env["ODIGOS_OPAMP_SERVER_HOST"], "127.0.0.1:4320");

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_odiglet"));
    cmd.args(["opamp-server", "--listen", "127.0.0.1:0"])
        .args(["--status-listen", "127.0.0.1:0", "--require-device-id"])
        .args(["--standalone", "--node-name", "node-1"])
        .arg("--unix-socket")
        .arg(tmp.path().join("exchange.sock"))
        .arg("--kubelet-dir")
        .arg(&kubelet_dir);
    let mut server = PeerProcess::spawn(cmd);
    let ready = server.expect_event_key("opamp", SECS_5);
    let opamp = ready["opamp"].as_str().expect("address").to_owned();

    // The container's env as kubelet injected it; only the port is the test server's.
    let mut cmd = python(&dir, "odigos_legacy.py");
    cmd.env("ODIGOS_INSTRUMENTATION_DEVICE_ID", &device_id)
        .env("ODIGOS_OPAMP_SERVER_HOST", &opamp)
        .env("OTEL_TRACES_EXPORTER", "otlp_proto_http")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
        .env("OTEL_METRICS_EXPORTER", "none")
        .env("OTEL_LOGS_EXPORTER", "none");
    let mut agent = PeerProcess::spawn(cmd);
    let resource = agent.expect_event_key("resource", SECS_30);
    for (key, value) in [
        ("k8s.namespace.name", "ns-kubelet"),
        ("k8s.pod.name", pod),
        ("k8s.container.name", "web"),
        ("k8s.deployment.name", "legacy"),
        ("service.name", "legacy"),
    ] {
        assert_eq!(resource["resource"][key], value, "{key} in {resource}");
    }
    assert!(agent.wait_exit(SECS_20).success());
    drop(kubelet);
}

/// T8: a node's worth of Elastic clients in one Node process register at once, heartbeat
/// without a rejected reply, re-register after a server restart (all state lost), and are
/// swept once they stop (Elastic's client sends no agent_disconnect). Speed and memory are
/// measured in benches/opamp.rs, not here.
#[test]
fn elastic_client_storm_registers_survives_restart_and_disconnects() {
    const CLIENTS: usize = 300;
    let Some(dir) = peer(
        "elastic-opamp-node",
        "elastic_client_storm_registers_survives_restart_and_disconnects",
    ) else {
        return;
    };
    let mut server = TestServer::start(Limits::default(), &[]);
    // Heartbeats every second from 300 clients on a loaded CI machine: do not sweep agents
    // whose heartbeat is merely late, but sweep the stopped ones within the test.
    server.config.stale_after = Duration::from_secs(8);
    server.restart();
    let mut cmd = Command::new("node");
    cmd.arg(script("elastic_storm.js"))
        .arg(format!("http://{}/v1/opamp", server.addr()))
        .arg(CLIENTS.to_string())
        .arg("1")
        .env("NODE_PATH", dir.join("node_modules"));
    let mut storm = PeerProcess::spawn(cmd);
    storm.expect_event("configured", SECS_30);
    let agents = wait_for("every client registered", SECS_30, || {
        let agents = server.agents();
        (agents.len() == CLIENTS).then_some(agents)
    });
    let pods: std::collections::HashSet<_> = agents.iter().map(|a| a.pod.clone()).collect();
    let uids: std::collections::HashSet<_> =
        agents.iter().map(|a| a.instance_uid.clone()).collect();
    assert_eq!((pods.len(), uids.len()), (CLIENTS, CLIENTS));
    assert!(
        agents
            .iter()
            .all(|a| a.namespace == "ns-storm" && a.service_name == "storm")
    );

    // All state lost: every client's next heartbeat is asked for its full state. A client
    // whose kept-alive connection the stopping server closed under its next request sees
    // "other side closed" and backs off for 30 s or more (Elastic's policy for a failed POST):
    // those are counted, not waited for. None may be lost silently or reject a reply.
    server.restart();
    let (registered, summary) = wait_for("every client back or failed", SECS_30, || {
        storm.send("summary");
        let summary = storm.expect_event("summary", SECS_5);
        let failed = summary["failed"].as_u64().unwrap_or(0) as usize;
        let registered = server.agents().len();
        (registered + failed >= CLIENTS).then_some((registered, summary))
    });
    let full_state = summary["full_state"].as_u64().unwrap_or(0) as usize;
    assert!(
        registered > 0 && full_state >= registered,
        "{registered} re-registered, {full_state} full-state requests: {summary}"
    );
    let connection_level = |e: &serde_json::Value| {
        e.as_str().is_some_and(|e| {
            ["other side closed", "ECONNREFUSED", "ECONNRESET"]
                .iter()
                .any(|c| e.contains(c))
        })
    };
    assert!(
        summary["failures"]
            .as_array()
            .into_iter()
            .flatten()
            .all(connection_level),
        "the strict client rejected replies: {summary}"
    );

    // The clients stop: all swept after the stale timeout, none left behind.
    drop(storm.child.stdin.take());
    assert!(storm.wait_exit(SECS_30).success());
    wait_for("every stopped client swept", SECS_30, || {
        server.agents().is_empty().then_some(())
    });
}
