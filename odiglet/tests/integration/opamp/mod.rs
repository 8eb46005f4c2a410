//! OpAMP server against real clients (acceptance scenarios T1-T7 of research/opamp.md §6):
//! the current and the 2024 Odigos Python agents, the OpenTelemetry Python OpAMP client and
//! Elastic's Node client, over TCP and the Unix socket, plus raw-HTTP negative cases and the
//! `odiglet opamp-server` CLI. Peers come from `cargo xtask setup` (target/tools).
//! Modules: `raw` (hand-made HTTP, device-id mode, CLI), `peers` (real clients), `instances`
//! (InstrumentationInstance writes against the API-server stand-in).

mod instances;
mod peers;
mod raw;

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

use crate::support::opamp::{
    PeerProcess, Target, TestServer, hold_only_slot, peer, raw, script, wait_for,
};

const SECS_5: Duration = Duration::from_secs(5);
/// For waits on the server's scheduling, which a loaded machine (the whole suite running on
/// two cores) can stretch well past a few seconds.
const SECS_30: Duration = Duration::from_secs(30);
const SECS_20: Duration = Duration::from_secs(20);

pub(crate) fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
    }
}

pub(crate) fn registration(uid: &[u8], pod: &str) -> AgentToServer {
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

pub(crate) fn post(target: Target<'_>, msg: &AgentToServer) -> ServerToAgent {
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
