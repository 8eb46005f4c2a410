//! OpAMP server against real clients (acceptance scenarios T1-T7 of research/opamp.md §6):
//! the current and the 2024 Odigos Python agents, the OpenTelemetry Python OpAMP client and
//! Elastic's Node client, over TCP and the Unix socket, plus raw-HTTP negative cases and the
//! `odiglet opamp-server` CLI. Peers come from `cargo xtask setup` (target/tools).

use std::{
    io::{Read, Write},
    os::unix::fs::PermissionsExt,
    process::Command,
    time::Duration,
};

use odiglet::opamp::{
    InstanceTask, Limits,
    wire::{
        AgentDescription, AgentToServer, AnyValue, KeyValue, RemoteConfigStatus, ServerToAgent,
        any_value::Value,
    },
};
use prost::Message;
use serde_json::json;

use crate::support::opamp::{PeerProcess, Target, TestServer, peer, raw, script, wait_for};

const SECS_5: Duration = Duration::from_secs(5);
const SECS_20: Duration = Duration::from_secs(20);

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
    }
}

fn registration(uid: &[u8], pod: &str) -> AgentToServer {
    AgentToServer {
        instance_uid: uid.to_vec(),
        agent_description: Some(AgentDescription {
            identifying_attributes: vec![
                kv("k8s.namespace.name", Value::StringValue("ns-raw".into())),
                kv("k8s.pod.name", Value::StringValue(pod.into())),
                kv("k8s.container.name", Value::StringValue("app".into())),
                kv("process.vpid", Value::IntValue(11)),
                kv("telemetry.sdk.language", Value::StringValue("go".into())),
            ],
            ..Default::default()
        }),
        remote_config_status: Some(RemoteConfigStatus::default()),
        ..Default::default()
    }
}

const POST: &str = "POST /v1/opamp HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf";

fn post(target: Target<'_>, msg: &AgentToServer) -> ServerToAgent {
    let r = raw(target, POST, &msg.encode_to_vec());
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("content-type"), Some("application/x-protobuf"));
    ServerToAgent::decode(r.body.as_slice()).expect("ServerToAgent")
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).expect("gzip");
    e.finish().expect("gzip")
}

/// T7: transport rules with hand-made requests over TCP and the Unix socket.
#[test]
fn raw_http_protocol_rules() {
    let limits = Limits {
        max_body_bytes: 64 << 10,
        max_in_flight: 1,
        require_device_id: false,
    };
    let server = TestServer::start(limits, &[]);
    let tcp = || Target::Tcp(server.addr());
    let uid = b"0190f5a8-raw0-7000-8000-000000000001";
    let pod = "raw-7d4b9c8f6-x2k4z";

    // First message: leading space in Content-Type accepted, uid echoed, caps and full config.
    let head = "POST /v1/opamp HTTP/1.1\r\nHost: x\r\nContent-Type:  application/x-protobuf";
    let r = raw(tcp(), head, &registration(uid, pod).encode_to_vec());
    assert_eq!(
        (r.status, r.header("content-type")),
        (200, Some("application/x-protobuf"))
    );
    assert_eq!(
        r.header("content-encoding"),
        None,
        "no gzip without Accept-Encoding"
    );
    let reply = ServerToAgent::decode(r.body.as_slice()).expect("reply");
    assert_eq!(reply.instance_uid, uid);
    assert_eq!(reply.capabilities, 0x7);
    let config = reply.remote_config.expect("first reply carries the config");
    let files = config.config.expect("map").config_map;
    let mut names: Vec<_> = files.keys().cloned().collect();
    names.sort();
    assert_eq!(
        names,
        ["InstrumentationLibraries", "SDK", "container_config"]
    );
    assert_eq!(config.config_hash.len(), 32);
    let agent = server.agent(pod).expect("registered");
    assert_eq!(
        (agent.namespace.as_str(), agent.pid, agent.language.as_str()),
        ("ns-raw", 11, "go")
    );

    // Heartbeats: with the same hash or without status, nothing is resent; a gap asks for state.
    let mut beat = AgentToServer {
        instance_uid: uid.to_vec(),
        sequence_num: 1,
        ..Default::default()
    };
    beat.remote_config_status = Some(RemoteConfigStatus {
        last_remote_config_hash: config.config_hash.clone(),
        ..Default::default()
    });
    let reply = post(tcp(), &beat);
    assert!(
        reply.remote_config.is_none() && reply.flags == 0,
        "{reply:?}"
    );
    beat.sequence_num = 2;
    beat.remote_config_status = None;
    assert!(post(tcp(), &beat).remote_config.is_none());
    beat.sequence_num = 9;
    assert_eq!(
        post(tcp(), &beat).flags & 1,
        1,
        "sequence gap → ReportFullState"
    );

    // Unknown uid heartbeat → ReportFullState, nothing cached.
    let stranger = AgentToServer {
        instance_uid: vec![7; 16],
        sequence_num: 5,
        ..Default::default()
    };
    let reply = post(tcp(), &stranger);
    assert_eq!(
        (reply.flags, reply.instance_uid.as_slice()),
        (1, [7u8; 16].as_slice())
    );
    assert_eq!(server.agents().len(), 1);

    // An exec'd process (same pod and pid, new uid) replaces the old entry.
    let exec_uid = b"0190f5a8-raw0-7000-8000-0000000000e1";
    post(tcp(), &registration(exec_uid, pod));
    let same_pod: Vec<_> = server
        .agents()
        .into_iter()
        .filter(|a| a.pod == pod)
        .collect();
    assert_eq!(same_pod.len(), 1);
    assert_eq!(same_pod[0].instance_uid.as_bytes(), exec_uid);
    beat.instance_uid = exec_uid.to_vec();

    // Content types, methods, paths.
    let body = beat.encode_to_vec();
    for ct in ["application/json", "text/plain"] {
        let head = format!("POST /v1/opamp HTTP/1.1\r\nHost: x\r\nContent-Type: {ct}");
        assert_eq!(raw(tcp(), &head, &body).status, 415, "{ct}");
    }
    assert_eq!(
        raw(tcp(), "POST /v1/opamp HTTP/1.1\r\nHost: x", &body).status,
        415
    );
    assert_eq!(
        raw(tcp(), "GET /v1/opamp HTTP/1.1\r\nHost: x", b"").status,
        405
    );
    assert_eq!(
        raw(
            tcp(),
            "POST /elsewhere HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf",
            &body
        )
        .status,
        404
    );
    assert_eq!(
        raw(
            tcp(),
            "POST /v1/opamp HTTP/1.1\r\nHost: x\r\nContent-Type: Application/X-Protobuf; v=1",
            &body
        )
        .status,
        200
    );

    // Bad bodies and uids → 400.
    assert_eq!(raw(tcp(), POST, b"\xff\xff\xff\xff").status, 400);
    assert_eq!(
        raw(tcp(), POST, &AgentToServer::default().encode_to_vec()).status,
        400
    );
    let long = AgentToServer {
        instance_uid: vec![1; 200],
        ..Default::default()
    };
    assert_eq!(raw(tcp(), POST, &long.encode_to_vec()).status, 400);
    let gz_head = format!("{POST}\r\nContent-Encoding: gzip");
    assert_eq!(raw(tcp(), &gz_head, b"not gzip").status, 400);

    // gzip request accepted; gzip reply only when accepted.
    let uid2 = b"0190f5a8-raw0-7000-8000-000000000002";
    let r = raw(
        tcp(),
        &format!("{gz_head}\r\nAccept-Encoding: gzip"),
        &gzip(&registration(uid2, "raw2").encode_to_vec()),
    );
    assert_eq!(
        (r.status, r.header("content-encoding")),
        (200, Some("gzip"))
    );
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(r.body.as_slice())
        .read_to_end(&mut plain)
        .expect("gunzip");
    assert_eq!(
        ServerToAgent::decode(plain.as_slice())
            .expect("reply")
            .instance_uid,
        uid2
    );
    let r = raw(
        tcp(),
        &format!("{POST}\r\nAccept-Encoding: gzip;q=0, identity"),
        &registration(uid2, "raw2").encode_to_vec(),
    );
    assert_eq!((r.status, r.header("content-encoding")), (200, None));

    // Limits: over-size body, and a gzip bomb that is small on the wire → 413.
    assert_eq!(raw(tcp(), POST, &vec![0u8; 100 << 10]).status, 413);
    assert_eq!(raw(tcp(), &gz_head, &gzip(&vec![0u8; 1 << 20])).status, 413);

    // Unix socket: same protocol, mode 0666.
    let socket = server.socket();
    let mode = std::fs::metadata(&socket)
        .expect("socket")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o666);
    let reply = post(
        Target::Unix(&socket),
        &registration(b"uds-agent-uid-0001", "raw-uds"),
    );
    assert!(reply.remote_config.is_some());

    // Concurrency: a request stalled mid-body holds the only slot → 503 + Retry-After.
    let mut stalled = std::net::TcpStream::connect(server.addr()).expect("connect");
    write!(stalled, "{POST}\r\nContent-Length: 10\r\n\r\n").expect("send head");
    let busy = wait_for("503 while the slot is held", SECS_5, || {
        let r = raw(tcp(), POST, &beat.encode_to_vec());
        (r.status == 503).then_some(r)
    });
    assert_eq!(busy.header("retry-after"), Some("30"));
    drop(stalled);
    wait_for("slot released", SECS_5, || {
        (raw(tcp(), POST, &beat.encode_to_vec()).status == 200).then_some(())
    });
}

/// The 2024 rule: without `X-Odigos-DeviceId` → 401; with it, the pod comes from pod-resources.
#[test]
fn device_id_mode() {
    let limits = Limits {
        require_device_id: true,
        ..Limits::default()
    };
    let server = TestServer::start(limits, &[("dev-9", ("ns-dev", "dev-pod", "main"))]);
    let mut msg = registration(b"device-agent-0001", "ignored");
    msg.agent_description = Some(AgentDescription {
        identifying_attributes: vec![kv("process.pid", Value::IntValue(5))],
        ..Default::default()
    });
    let body = msg.encode_to_vec();
    assert_eq!(raw(Target::Tcp(server.addr()), POST, &body).status, 401);
    let r = raw(
        Target::Tcp(server.addr()),
        &format!("{POST}\r\nX-Odigos-DeviceId: dev-9"),
        &body,
    );
    assert_eq!(r.status, 200);
    let agent = server
        .agent("dev-pod")
        .expect("resolved through the device id");
    assert_eq!(
        (
            agent.namespace.as_str(),
            agent.container.as_str(),
            agent.pid
        ),
        ("ns-dev", "main", 5)
    );
    assert_eq!(
        serde_json::to_value(&agent).expect("json")["identity"],
        "device-id"
    );
    // Unknown device id: Unavailable with retry info, not cached.
    let r = raw(
        Target::Tcp(server.addr()),
        &format!("{POST}\r\nX-Odigos-DeviceId: dev-x"),
        &registration(b"device-agent-0002", "x").encode_to_vec(),
    );
    let reply = ServerToAgent::decode(r.body.as_slice()).expect("reply");
    // Attributes are complete here, so they win over the unknown device id.
    assert!(reply.error_response.is_none());
    let mut bare = msg.clone();
    bare.instance_uid = b"device-agent-0003".to_vec();
    let r = raw(
        Target::Tcp(server.addr()),
        &format!("{POST}\r\nX-Odigos-DeviceId: dev-x"),
        &bare.encode_to_vec(),
    );
    let reply = ServerToAgent::decode(r.body.as_slice()).expect("reply");
    assert_eq!(reply.error_response.map(|e| e.r#type), Some(2));
}

fn python(dir: &std::path::Path, script_name: &str) -> Command {
    let mut cmd = Command::new(dir.join("bin/python"));
    cmd.arg(script(script_name))
        .env_remove("OTEL_RESOURCE_ATTRIBUTES");
    cmd
}

fn last_task_for(server: &TestServer, pod: &str) -> Option<InstanceTask> {
    server.recorder.tasks().into_iter().rev().find(|t| match t {
        InstanceTask::Upsert { pod: p, .. } | InstanceTask::Delete { pod: p, .. } => p == pod,
    })
}

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
        match last_task_for(&server, pod) {
            Some(InstanceTask::Upsert {
                health: Some(h),
                pid,
                ..
            }) => {
                assert_eq!((h.healthy, h.status.as_str()), (false, "ProcessTerminated"));
                assert_eq!(pid, i64::from(agent.child.id()));
            }
            other => {
                panic!("expected the unhealthy disconnect to keep the instance, got {other:?}")
            }
        }
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
    assert!(matches!(
        last_task_for(&server, "otel-pod"),
        Some(InstanceTask::Delete { .. })
    ));
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
    assert!(matches!(
        last_task_for(&server, pod),
        Some(InstanceTask::Delete { .. })
    ));
}

/// The `odiglet opamp-server` CLI: binds what it is told, prints its addresses, serves the
/// status API with the contract's fields, exits cleanly on SIGTERM and removes its socket.
#[test]
fn cli_opamp_server_and_status_api() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("exchange.sock");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_odiglet"));
    cmd.args([
        "opamp-server",
        "--listen",
        "127.0.0.1:0",
        "--status-listen",
        "127.0.0.1:0",
    ])
    .arg("--unix-socket")
    .arg(&socket)
    .args([
        "--heartbeat-timeout",
        "2",
        "--node-name",
        "node-cli",
        "--standalone",
    ]);
    let mut server = PeerProcess::spawn(cmd);
    let ready = server.expect_event_key("opamp", SECS_5);
    let opamp: std::net::SocketAddr = ready["opamp"]
        .as_str()
        .expect("addr")
        .parse()
        .expect("addr");
    let status: std::net::SocketAddr = ready["status"]
        .as_str()
        .expect("addr")
        .parse()
        .expect("addr");
    assert!(socket.exists());

    let get = |path: &str| {
        raw(
            Target::Tcp(status),
            &format!("GET {path} HTTP/1.1\r\nHost: x"),
            b"",
        )
    };
    let r = get("/v1/agents");
    assert_eq!(
        (r.status, r.header("content-type")),
        (200, Some("application/json"))
    );
    assert_eq!(r.body, b"[]");
    assert_eq!(get("/nope").status, 404);

    let mut msg = registration(&[0xab; 16], "cli-0");
    msg.health = Some(odiglet::opamp::wire::ComponentHealth {
        healthy: false,
        status: "AgentFailure".into(),
        last_error: "boom".into(),
        ..Default::default()
    });
    post(Target::Unix(&socket), &msg);
    let agents: serde_json::Value = serde_json::from_slice(&get("/v1/agents").body).expect("json");
    let agent = &agents[0];
    assert_eq!(
        agent["instance_uid"],
        "abababab-abab-abab-abab-abababababab"
    );
    assert_eq!(
        (agent["namespace"].as_str(), agent["pod"].as_str()),
        (Some("ns-raw"), Some("cli-0"))
    );
    assert_eq!(
        (agent["container"].as_str(), agent["pid"].as_i64()),
        (Some("app"), Some(11))
    );
    assert_eq!(
        (agent["language"].as_str(), agent["service_name"].as_str()),
        (Some("go"), Some("cli")),
        "StatefulSet `cli`"
    );
    assert_eq!(
        (agent["healthy"].as_bool(), agent["status"].as_str()),
        (Some(false), Some("AgentFailure"))
    );
    assert_eq!(
        (agent["last_error"].as_str(), agent["identity"].as_str()),
        (Some("boom"), Some("attributes"))
    );
    assert_eq!(agent["config_hash"].as_str().map(str::len), Some(64));
    assert!(
        agent["last_seen_unix_ms"]
            .as_u64()
            .is_some_and(|ms| ms > 1_600_000_000_000)
    );
    assert!(raw(Target::Tcp(opamp), POST, &msg.encode_to_vec()).status == 200);

    // Stale after --heartbeat-timeout 2.
    wait_for("stale removal", SECS_5, || {
        let body = get("/v1/agents").body;
        (body == b"[]").then_some(())
    });

    let pid = nix::unistd::Pid::from_raw(i32::try_from(server.child.id()).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    assert!(server.wait_exit(SECS_5).success());
    assert!(!socket.exists(), "socket removed at exit");

    let bad = Command::new(env!("CARGO_BIN_EXE_odiglet"))
        .args(["opamp-server", "--heartbeat-timeout", "0"])
        .output()
        .expect("run");
    assert_eq!(bad.status.code(), Some(64));
}

/// InstrumentationInstance writes with the real `kube` client against the API-server
/// stand-in: create with owner reference and labels, status subresource, retry on conflict,
/// 16-per-pod cap, no object for a vanished pod, idempotent delete, and the whole path from an
/// OpAMP message through the queue and its single worker.
#[test]
fn instrumentation_instances_through_kube() {
    use odiglet::opamp::{
        InstanceQueue, InstanceSink, OpampConfig, OpampServer, health::Health,
        k8s_writer::KubeInstanceWriter,
    };

    use crate::support::apiserver::ApiServer;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    let api = rt.block_on(ApiServer::start());
    api.add_pod("ns", "web-7d4b9c8f6-aaaaa", "pod-uid-1");
    api.add_pod("ns", "crowded", "pod-uid-2");
    api.add_pod("ns-raw", "web-7d4b9c8f6-aaaaa", "pod-uid-3");
    let config = kube::Config::new(format!("http://{}", api.addr).parse().expect("uri"));
    let client = rt
        .block_on(async { kube::Client::try_from(config) })
        .expect("kube client");
    let writer = KubeInstanceWriter::new(client);
    let upsert = |pod: &str, pid: i64, health: Health| InstanceTask::Upsert {
        namespace: "ns".into(),
        pod: pod.into(),
        container: "app".into(),
        pid,
        identifying_attributes: vec![("k8s.pod.name".into(), pod.into())],
        health: Some(health),
    };
    let healthy = Health {
        healthy: true,
        status: "Healthy".into(),
        ..Default::default()
    };

    rt.block_on(writer.apply(upsert("web-7d4b9c8f6-aaaaa", 7, healthy.clone())))
        .expect("upsert");
    let obj = api
        .instance("ns", "web-7d4b9c8f6-aaaaa-7")
        .expect("created");
    assert_eq!(obj["spec"]["containerName"], "app");
    assert_eq!(
        obj["metadata"]["labels"]["ownerPodName"],
        "web-7d4b9c8f6-aaaaa"
    );
    assert_eq!(
        obj["metadata"]["labels"]["instrumented-app"],
        "deployment-web"
    );
    let owner = &obj["metadata"]["ownerReferences"][0];
    assert_eq!(
        (
            owner["kind"].as_str(),
            owner["uid"].as_str(),
            owner["controller"].as_bool()
        ),
        (Some("Pod"), Some("pod-uid-1"), Some(true))
    );
    assert_eq!(
        (
            obj["status"]["healthy"].as_bool(),
            obj["status"]["reason"].as_str()
        ),
        (Some(true), Some("Healthy"))
    );

    // Two conflicting writers in between: re-read and retry until it lands.
    api.lock().conflicts_to_inject = 2;
    let failing = Health {
        healthy: false,
        status: "AgentFailure".into(),
        last_error: "boom".into(),
        ..Default::default()
    };
    rt.block_on(writer.apply(upsert("web-7d4b9c8f6-aaaaa", 7, failing)))
        .expect("upsert after conflicts");
    let obj = api
        .instance("ns", "web-7d4b9c8f6-aaaaa-7")
        .expect("still there");
    assert_eq!(
        (
            obj["status"]["reason"].as_str(),
            obj["status"]["message"].as_str()
        ),
        (Some("AgentFailure"), Some("boom"))
    );
    let puts = api
        .lock()
        .log
        .iter()
        .filter(|l| l.starts_with("PUT") && l.ends_with("/status"))
        .count();
    assert_eq!(puts, 4, "1 first write + 2 conflicts + 1 success");

    // At most 16 per pod; none for a pod that is gone.
    for pid in 0..17 {
        rt.block_on(writer.apply(upsert("crowded", pid, healthy.clone())))
            .expect("upsert");
    }
    let crowded = api
        .lock()
        .instances
        .keys()
        .filter(|(_, n)| n.starts_with("crowded-"))
        .count();
    assert_eq!(crowded, 16);
    rt.block_on(writer.apply(upsert("vanished", 1, healthy.clone())))
        .expect("no error for a gone pod");
    assert!(api.instance("ns", "vanished-1").is_none());

    // Delete is idempotent.
    let delete = InstanceTask::Delete {
        namespace: "ns".into(),
        pod: "web-7d4b9c8f6-aaaaa".into(),
        pid: 7,
    };
    rt.block_on(writer.apply(delete.clone())).expect("delete");
    rt.block_on(writer.apply(delete)).expect("delete again");
    assert!(api.instance("ns", "web-7d4b9c8f6-aaaaa-7").is_none());

    // End to end: OpAMP registration → queue → worker → object; healthy disconnect → deleted.
    let server = rt.block_on(async {
        let config = OpampConfig {
            listen: "127.0.0.1:0".parse().ok(),
            unix_socket: None,
            ..OpampConfig::default()
        };
        let queue = InstanceQueue::start(std::sync::Arc::new(writer), 16);
        OpampServer::start(config, Box::new(odiglet::opamp::NoDeviceLookup), queue).await
    });
    let server = server.expect("server");
    let addr = server.tcp_addr.expect("addr");
    let mut msg = registration(b"kube-agent-0001", "web-7d4b9c8f6-aaaaa");
    msg.health = Some(odiglet::opamp::wire::ComponentHealth {
        healthy: true,
        status: "Healthy".into(),
        ..Default::default()
    });
    post(Target::Tcp(addr), &msg);
    let obj = wait_for("instance written by the worker", SECS_5, || {
        api.instance("ns-raw", "web-7d4b9c8f6-aaaaa-11")
    });
    assert_eq!(
        obj["status"]["identifyingAttributes"][1]["value"],
        "web-7d4b9c8f6-aaaaa"
    );
    let bye = AgentToServer {
        instance_uid: msg.instance_uid.clone(),
        agent_disconnect: Some(Default::default()),
        health: msg.health.clone(),
        ..Default::default()
    };
    post(Target::Tcp(addr), &bye);
    wait_for("instance deleted on healthy disconnect", SECS_5, || {
        api.instance("ns-raw", "web-7d4b9c8f6-aaaaa-11")
            .is_none()
            .then_some(())
    });
    rt.block_on(server.shutdown());
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
    let mut stalled = std::net::TcpStream::connect(server.addr()).expect("connect");
    write!(stalled, "{POST}\r\nContent-Length: 10\r\n\r\n").expect("send head");
    wait_for("slot held", SECS_5, || {
        (raw(Target::Tcp(server.addr()), POST, b"").status == 503).then_some(())
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
