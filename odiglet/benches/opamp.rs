//! OpAMP server load generator: registers many agents over real TCP, then drives heartbeats
//! from keep-alive connections against a server confined to one thread (one core), and
//! reports heartbeats/s, client-observed latency percentiles and memory per agent.
//!
//! `cargo bench -p odiglet --bench opamp` (env: OPAMP_BENCH_AGENTS, OPAMP_BENCH_CONNS,
//! OPAMP_BENCH_SECS). Results go to BENCHMARKS.md by hand.
#![expect(clippy::print_stdout, reason = "a benchmark reports on the terminal")]

use std::{
    net::SocketAddr,
    sync::{Arc, atomic::AtomicBool, atomic::Ordering},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, client::conn::http1};
use hyper_util::rt::TokioIo;
use odiglet::opamp::{
    InstanceQueue, NoDeviceLookup, OpampConfig, OpampServer,
    wire::{
        AgentDescription, AgentToServer, AnyValue, KeyValue, RemoteConfigStatus, ServerToAgent,
        any_value::Value,
    },
};
use prost::Message;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(0)
        * 4096
}

fn uid(i: usize) -> Vec<u8> {
    let mut uid = [0u8; 16];
    uid[..8].copy_from_slice(&(i as u64).to_be_bytes());
    uid[8] = 0x70;
    uid.to_vec()
}

fn registration(i: usize) -> AgentToServer {
    let kv = |k: &str, v: Value| KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(v) }),
    };
    AgentToServer {
        instance_uid: uid(i),
        agent_description: Some(AgentDescription {
            identifying_attributes: vec![
                kv(
                    "k8s.namespace.name",
                    Value::StringValue(format!("ns-{}", i % 50)),
                ),
                kv(
                    "k8s.pod.name",
                    Value::StringValue(format!("web-{}-7d4b9c8f6-x2k4z", i)),
                ),
                kv("k8s.container.name", Value::StringValue("app".into())),
                kv("process.vpid", Value::IntValue(1)),
                kv(
                    "telemetry.sdk.language",
                    Value::StringValue("python".into()),
                ),
            ],
            ..Default::default()
        }),
        remote_config_status: Some(RemoteConfigStatus::default()),
        ..Default::default()
    }
}

type Sender = http1::SendRequest<Full<Bytes>>;

async fn connect(addr: SocketAddr) -> Sender {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let _ = stream.set_nodelay(true);
    let (sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    sender
}

async fn send(sender: &mut Sender, body: Vec<u8>) -> ServerToAgent {
    let req = Request::post("/v1/opamp")
        .header("content-type", "application/x-protobuf")
        .header("host", "bench")
        .body(Full::new(Bytes::from(body)))
        .expect("request");
    sender.ready().await.expect("connection ready");
    let resp = sender.send_request(req).await.expect("response");
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    ServerToAgent::decode(body).expect("ServerToAgent")
}

fn main() {
    let agents = env("OPAMP_BENCH_AGENTS", 20_000);
    let conns = env("OPAMP_BENCH_CONNS", 64);
    let secs = env("OPAMP_BENCH_SECS", 5) as u64;

    // The server: one thread, current-thread runtime = one core.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        rt.block_on(async move {
            let config = OpampConfig {
                listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
                unix_socket: None,
                ..OpampConfig::default()
            };
            let server =
                OpampServer::start(config, Box::new(NoDeviceLookup), InstanceQueue::disabled())
                    .await
                    .expect("server");
            tx.send((server.tcp_addr.expect("addr"), server.sessions.clone()))
                .expect("send");
            std::future::pending::<()>().await;
            drop(server);
        });
    });
    let (addr, sessions) = rx.recv().expect("server address");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("rt");

    let rss_before = rss_bytes();
    let hashes: Vec<Vec<u8>> = rt.block_on(async {
        let mut sender = connect(addr).await;
        let mut hashes = Vec::with_capacity(agents);
        for i in 0..agents {
            let reply = send(&mut sender, registration(i).encode_to_vec()).await;
            hashes.push(reply.remote_config.expect("config").config_hash);
        }
        hashes
    });
    assert_eq!(sessions.len(), agents);
    let rss_after = rss_bytes();
    let hashes = Arc::new(hashes);

    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let latencies: Vec<Vec<u32>> = rt.block_on(async {
        let mut tasks = Vec::new();
        for c in 0..conns {
            let (stop, hashes) = (stop.clone(), hashes.clone());
            tasks.push(tokio::spawn(async move {
                let mut sender = connect(addr).await;
                let mut lat = Vec::new();
                let mut seq = 1u64;
                let mut i = c;
                while !stop.load(Ordering::Relaxed) {
                    // A heartbeat as the Odigos agents send it: uid, seq, last hash.
                    let beat = AgentToServer {
                        instance_uid: uid(i),
                        sequence_num: seq,
                        remote_config_status: Some(RemoteConfigStatus {
                            last_remote_config_hash: hashes[i].clone(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    };
                    let t = Instant::now();
                    let reply = send(&mut sender, beat.encode_to_vec()).await;
                    lat.push(t.elapsed().as_micros() as u32);
                    debug_assert!(reply.remote_config.is_none());
                    i += conns;
                    if i >= hashes.len() {
                        i = c;
                        seq += 1;
                    }
                }
                lat
            }));
        }
        tokio::time::sleep(Duration::from_secs(secs)).await;
        stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for t in tasks {
            all.push(t.await.expect("client task"));
        }
        all
    });
    let elapsed = started.elapsed().as_secs_f64();
    let mut all: Vec<u32> = latencies.into_iter().flatten().collect();
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "OpAMP server bench: {agents} agents, {conns} keep-alive connections, {secs} s, server on 1 thread"
    );
    println!("  heartbeats/s      {:.0}", all.len() as f64 / elapsed);
    println!(
        "  latency p50/p99   {} us / {} us (client-observed, incl. client CPU)",
        pct(0.50),
        pct(0.99)
    );
    println!(
        "  latency max       {} us",
        all.last().copied().unwrap_or(0)
    );
    println!(
        "  memory per agent  {} bytes (RSS delta {} KiB over {agents} registrations)",
        (rss_after.saturating_sub(rss_before)) / agents.max(1),
        (rss_after.saturating_sub(rss_before)) / 1024
    );
}
