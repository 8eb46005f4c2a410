//! InstrumentationInstance writes with the real `kube` client against the API-server stand-in.

use super::*;

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
    let client = rt.block_on(async { api.client() });
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
        .names("instrumentationinstances")
        .iter()
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
    // Created first, then its status written: wait for both.
    let obj = wait_for("instance written by the worker", SECS_5, || {
        api.instance("ns-raw", "web-7d4b9c8f6-aaaaa-11")
            .filter(|o| !o["status"].is_null())
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
