//! The operations server over real TCP: health, readiness flipping with its conditions,
//! strict OpenMetrics text whose values follow the real OpAMP server, and the status routes.

use std::net::SocketAddr;

use odiglet::{
    opamp::Limits,
    ops::{OPAMP_LISTENER, OpsServer, OpsState, Readiness, WATCHES_SYNCED},
};

use crate::{
    opamp::{post, registration},
    support::{
        opamp::{RawResponse, Target, TestServer, raw},
        prometheus::{self, value},
    },
};

pub(crate) fn get(addr: SocketAddr, path: &str) -> RawResponse {
    raw(
        Target::Tcp(addr),
        &format!("GET {path} HTTP/1.1\r\nHost: odiglet"),
        b"",
    )
}

/// `/metrics`, checked strictly.
pub(crate) fn metrics(addr: SocketAddr) -> Vec<prometheus::Sample> {
    let response = get(addr, "/metrics");
    assert_eq!(response.status, 200);
    assert!(
        response
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/openmetrics-text")),
        "{:?}",
        response.header("content-type")
    );
    prometheus::parse(std::str::from_utf8(&response.body).expect("UTF-8 metrics"))
}

#[test]
fn health_readiness_metrics_and_agents_over_tcp() {
    let opamp = TestServer::start(Limits::default(), &[]);
    let readiness = Readiness::new();
    let listener = readiness.condition(OPAMP_LISTENER);
    let watches = readiness.condition(WATCHES_SYNCED);
    let state = OpsState::new(readiness.clone()).with_opamp(opamp.server().sessions.clone());
    let ops = opamp
        .rt
        .block_on(OpsServer::start(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            state,
        ))
        .expect("the ops server binds");
    let addr = ops.addr;

    let health = get(addr, "/healthz");
    assert_eq!((health.status, health.body.as_slice()), (200, &b"ok\n"[..]));

    // Ready only when every condition holds, and again not ready when one stops holding.
    let ready = || get(addr, "/readyz");
    let first = ready();
    assert_eq!(first.status, 503);
    let body = String::from_utf8_lossy(&first.body).into_owned();
    assert!(body.contains("[-]opamp-listener not ready"), "{body}");
    listener.set(true);
    let half = ready();
    assert_eq!(half.status, 503);
    assert!(String::from_utf8_lossy(&half.body).contains("[+]opamp-listener ok"));
    watches.set(true);
    assert_eq!(ready().status, 200);
    watches.set(false);
    assert_eq!(ready().status, 503);
    watches.set(true);
    assert_eq!(ready().status, 200);

    // Metrics parse strictly and follow the OpAMP sessions.
    let before = metrics(addr);
    assert_eq!(
        value(&before, "odiglet_opamp_agents_connected", &[]),
        Some(0.0)
    );
    for family in [
        "bpf_maps_count",
        "bpf_programs_count",
        "bpf_maps_total_memory_usage",
    ] {
        assert!(value(&before, family, &[]).is_some(), "{family} missing");
    }
    let pod = "ops-7d4b9c8f6-x2k4z";
    post(
        Target::Tcp(opamp.addr()),
        &registration(b"0190f5a8-ops0-7000-8000-000000000001", pod),
    );
    let after = metrics(addr);
    assert_eq!(
        value(&after, "odiglet_opamp_agents_connected", &[]),
        Some(1.0)
    );

    // Status routes: the agents as the OpAMP status API lists them; no manager here.
    let agents = get(addr, "/v1/agents");
    assert_eq!(agents.status, 200);
    assert_eq!(agents.header("content-type"), Some("application/json"));
    let agents: serde_json::Value = serde_json::from_slice(&agents.body).expect("JSON");
    assert_eq!(agents[0]["pod"], pod);
    assert_eq!(get(addr, "/v1/instrumentations").status, 404);
    assert_eq!(get(addr, "/nope").status, 404);
    let post_health = raw(
        Target::Tcp(addr),
        "POST /healthz HTTP/1.1\r\nHost: odiglet",
        b"",
    );
    assert_eq!(post_health.status, 405);

    opamp.rt.block_on(ops.shutdown());
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "the port is closed after shutdown"
    );
}
