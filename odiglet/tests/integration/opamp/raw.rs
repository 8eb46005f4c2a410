//! Hand-made HTTP requests (protocol rules, limits), device-id mode, and the CLI with its
//! status API.

use super::*;

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
    let (stalled, busy) = hold_only_slot(server.addr(), POST, || {
        raw(tcp(), POST, &beat.encode_to_vec())
    });
    assert_eq!(busy.header("retry-after"), Some("30"));
    drop(stalled);
    wait_for("slot released", SECS_30, || {
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
