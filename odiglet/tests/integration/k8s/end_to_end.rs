//! The whole cluster path with a real Go service in a kubelet-style cgroup: an
//! InstrumentationConfig in the API-server stand-in → watches → manager requests → eBPF probes
//! → spans; config changes switch spans off and on without a restart; deleting the config
//! detaches. InstrumentationInstances and runtime details land in the stand-in through the
//! real `kube` client.

use std::{process::Command, sync::Arc, time::Duration};

use odiglet::{
    export::{ExportTarget, ExporterConfig},
    inspect::{Inspector, cgroup::CgroupConfig},
    k8s::{DetectionWorker, Glue, GlueConfig, StatusWriter},
    manager::{InstrumentationManager, ManagerConfig},
    opamp::{InstanceQueue, k8s_writer::KubeInstanceWriter},
};
use serde_json::{Value, json};

use super::*;
use crate::{
    go_http::{service_binary, spawn_service},
    manager::{no_spans, spans_flow},
    support::{
        apiserver::ApiServer,
        build,
        go::free_port,
        guards::{ContainerCgroup, cgroup2_mount},
        otlp::{OtlpReceiver, attribute},
        privileges::privileged,
    },
};

const POD: &str = "cart-5d8f7-abcde";
const POD_UID: &str = "7a6b5c4d-1111-2222-3333-0123456789ab";
const CONTAINER_ID: &str = "9f8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a0";

fn cart_config(traces: bool) -> Value {
    let mut app = go_container("app");
    if !traces {
        app.as_object_mut().expect("object").remove("traces");
    }
    config("deployment-cart", json!([app]))
}

fn cart_pod() -> Value {
    let mut pod = pod(
        POD,
        NODE,
        "cart-5d8f7",
        &[("app", Some(&format!("containerd://{CONTAINER_ID}")), true)],
    );
    pod["metadata"]["uid"] = json!(POD_UID);
    pod["status"]["qosClass"] = json!("Burstable");
    pod
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_changes_instrument_reconfigure_and_detach_a_running_go_service() {
    let test = "config_changes_instrument_reconfigure_and_detach_a_running_go_service";
    if !privileged(test) {
        return;
    }
    let Some(mount) = cgroup2_mount(test) else {
        return;
    };
    let Some((_, go)) = build::go_toolchains(test).pop() else {
        return;
    };
    let binary = service_binary(&go, false);
    let cgroup = ContainerCgroup::create(
        &mount,
        &format!("odiglet-test-{}-k8s-e2e", std::process::id()),
        POD_UID,
        CONTAINER_ID,
    );
    let port = free_port();
    let service = spawn_service(
        "cart service",
        Command::new(&binary).arg(port.to_string()),
        port,
    );
    let pid = service.pid();
    cgroup.scope().add(pid);

    let api = ApiServer::start().await;
    api.apply("pods", cart_pod());
    api.apply("instrumentationconfigs", cart_config(true));
    let client = api.client();
    let receiver = OtlpReceiver::start().await;
    let mut manager_config = ManagerConfig::new(ExportTarget::OtlpGrpc {
        endpoint: receiver.endpoint(),
    });
    manager_config.cgroup_root = cgroup.root().to_owned();
    manager_config.node_name = Some(NODE.into());
    manager_config.exporter = ExporterConfig {
        batch_interval: Duration::from_millis(100),
        ..ExporterConfig::default()
    };
    // The socket programs attach to the host cgroup root, which the go_http tests use.
    manager_config.propagation = false;
    let instances = InstanceQueue::start(Arc::new(KubeInstanceWriter::new(client.clone())), 64);
    let manager =
        InstrumentationManager::start(manager_config, instances).expect("the manager starts");
    let glue = Glue::start(
        &client,
        GlueConfig {
            node_name: NODE.into(),
            requests: manager.requests(),
            opamp: None,
            detection: Some(DetectionWorker {
                inspector: Inspector::new("/proc"),
                cgroups: CgroupConfig {
                    cgroup_root: cgroup.root().to_owned(),
                    proc_root: "/proc".into(),
                },
                writer: StatusWriter::new(client.clone()),
                cri: Default::default(),
            }),
            log_levels_from: None,
        },
    );

    // The config reached the manager when its libraries for the process follow it.
    let handle = manager.handle();
    let libraries_enabled = |on: bool| {
        let handle = handle.clone();
        async move {
            eventually(&format!("libraries enabled = {on}"), || {
                let status = handle.snapshot().into_iter().find(|s| s.pid == pid)?;
                (status.enabled_libraries.is_empty() != on).then_some(())
            })
            .await;
        }
    };

    // Instrumented from the config, reported as an InstrumentationInstance in the API.
    let instance = format!("{POD}-{pid}");
    let object = eventually("the InstrumentationInstance", || {
        api.instance("shop", &instance)
            .filter(|o| o["status"]["reason"] == "LoadedSuccessfully")
    })
    .await;
    assert_eq!(
        object["metadata"]["labels"]["instrumented-app"],
        "deployment-cart"
    );
    assert_eq!(object["metadata"]["ownerReferences"][0]["uid"], POD_UID);
    // Spans carry the workload's service name and pod.
    let spans = spans_flow(&receiver, pid, port, 3).await;
    let resource = &spans[0].resource;
    assert_eq!(attribute(resource, "service.name").as_deref(), Some("cart"));
    assert_eq!(attribute(resource, "k8s.pod.name").as_deref(), Some(POD));
    assert_eq!(
        attribute(resource, "k8s.deployment.name").as_deref(),
        Some("cart")
    );
    // The start-up scan recorded the container as Go.
    eventually("runtime details", || {
        let ic = api.get("instrumentationconfigs", "shop", "deployment-cart")?;
        (ic["status"]["runtimeDetailsByContainer"][0]["language"] == "go").then_some(())
    })
    .await;

    // Traces off in the config: the same process stops producing spans, still attached.
    api.apply("instrumentationconfigs", cart_config(false));
    libraries_enabled(false).await;
    no_spans(&receiver, pid, port, "traces disabled").await;
    assert!(api.instance("shop", &instance).is_some());
    // And on again, without a restart.
    api.apply("instrumentationconfigs", cart_config(true));
    libraries_enabled(true).await;
    spans_flow(&receiver, pid, port, 2).await;

    // The config is deleted: detached, instance deleted, no more spans.
    api.remove("instrumentationconfigs", "shop", "deployment-cart");
    eventually("the instance deleted", || {
        api.instance("shop", &instance).is_none().then_some(())
    })
    .await;
    no_spans(&receiver, pid, port, "config deleted").await;

    glue.shutdown().await;
    manager.shutdown().await;
    drop(service);
}
