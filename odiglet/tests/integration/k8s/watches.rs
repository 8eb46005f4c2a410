//! Pods and InstrumentationConfigs changing in the API server → exactly the manager requests
//! and OpAMP config changes they imply.

use std::sync::Arc;

use odiglet::{
    k8s::{Glue, GlueConfig},
    manager::ManagerRequest,
    opamp::{
        ConfigStore, ServedConfig,
        identity::{AgentIdentity, IdentitySource},
        remote_config::build,
    },
};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::*;
use crate::support::apiserver::ApiServer;

const WEB_POD: &str = "web-5d8f9c-aaaaa";

fn container_config(store: &ConfigStore, container: &str) -> (Value, Vec<u8>) {
    let id = AgentIdentity {
        namespace: "shop".into(),
        pod: WEB_POD.into(),
        container: container.into(),
        pid: 7,
        language: "python".into(),
        source: IdentitySource::Attributes,
    };
    let built = build(&store.get().1, &id, NODE);
    let files = built.config.expect("files").config_map;
    let body = serde_json::from_slice(&files["container_config"].body).expect("json");
    (body, built.config_hash)
}

fn web_config(app: Value) -> Value {
    config(
        "deployment-web",
        json!([app, {"containerName": "py", "agentEnabled": true,
            "otelDistroName": "python-community", "traces": {}}]),
    )
}

fn web_pod(app_id: &str, ready: bool) -> Value {
    pod(
        WEB_POD,
        NODE,
        "web-5d8f9c",
        &[
            ("app", Some(app_id), ready),
            ("py", Some("containerd://p1"), ready),
        ],
    )
}

/// The whole life of a workload on this node, through real watches: the node's pods only,
/// one Apply per eBPF container, re-Apply when its config or container id changes, Remove
/// when disabled, when the pod goes and when the config is deleted; the OpAMP config follows
/// each config change; nothing is sent twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_drive_manager_requests_and_opamp_config() {
    let api = ApiServer::start().await;
    api.apply("instrumentationconfigs", web_config(go_container("app")));
    api.apply("pods", web_pod("containerd://c1", true));
    // Same workload on another node: never ours.
    api.apply(
        "pods",
        pod(
            "web-5d8f9c-bbbbb",
            "node-2",
            "web-5d8f9c",
            &[("app", Some("containerd://x"), true)],
        ),
    );
    let (requests, mut rx) = mpsc::channel(16);
    let store = Arc::new(ConfigStore::new(ServedConfig::default()));
    let glue = Glue::start(
        &api.client(),
        GlueConfig {
            node_name: NODE.into(),
            requests,
            opamp: Some((store.clone(), ServedConfig::default())),
            detection: None,
            log_levels_from: None,
        },
    );
    assert!(
        tokio::time::timeout(WAIT, glue.wait_synced())
            .await
            .expect("synced in time"),
        "glue stopped before syncing"
    );

    let ManagerRequest::Apply(target) = next_request(&mut rx, "Apply for app").await else {
        panic!("expected Apply first");
    };
    assert_eq!(
        (target.key.pod.as_str(), target.key.container.as_str()),
        (WEB_POD, "app")
    );
    assert_eq!(target.container_id.as_deref(), Some("c1"));
    assert_eq!(target.pod_uid, format!("uid-{WEB_POD}"));
    assert_eq!(target.service_name, "web");
    assert_eq!(target.distro, "golang-community");
    assert!(target.traces.enabled);
    no_request(
        &mut rx,
        "the first Apply (python is not eBPF, node-2 is not ours)",
    )
    .await;

    // The native agent of `py` gets its container's config over OpAMP.
    let (py, _) = container_config(&store, "py");
    assert_eq!(py["otelDistroName"], "python-community");
    let (app, app_hash) = container_config(&store, "app");
    assert_eq!(app["traces"], json!({}));

    // Traces off for app: re-Apply with the new settings; the OpAMP file and hash change.
    let mut no_traces = go_container("app");
    no_traces.as_object_mut().expect("object").remove("traces");
    api.apply("instrumentationconfigs", web_config(no_traces));
    let ManagerRequest::Apply(target) = next_request(&mut rx, "Apply with traces off").await else {
        panic!("expected Apply");
    };
    assert!(!target.traces.enabled);
    let (app, hash) = eventually("OpAMP config without traces", || {
        let (app, hash) = container_config(&store, "app");
        app.get("traces").is_none().then_some((app, hash))
    })
    .await;
    assert_eq!(app["containerName"], "app");
    assert_ne!(hash, app_hash);

    // A status-only change of the pod (readiness) changes nothing for the manager.
    api.apply("pods", web_pod("containerd://c1", false));
    no_request(&mut rx, "a readiness change").await;

    // The container restarted with a new id: re-Apply so the manager finds its processes.
    api.apply("pods", web_pod("containerd://c2", true));
    let ManagerRequest::Apply(target) = next_request(&mut rx, "Apply for the new container").await
    else {
        panic!("expected Apply");
    };
    assert_eq!(target.container_id.as_deref(), Some("c2"));

    // Disabled → Remove; enabled again → Apply.
    let mut disabled = go_container("app");
    disabled["agentEnabled"] = json!(false);
    api.apply("instrumentationconfigs", web_config(disabled));
    assert!(matches!(
        next_request(&mut rx, "Remove on disable").await,
        ManagerRequest::Remove(key) if key.container == "app" && key.pod == WEB_POD
    ));
    api.apply("instrumentationconfigs", web_config(go_container("app")));
    assert!(matches!(
        next_request(&mut rx, "Apply on enable").await,
        ManagerRequest::Apply(_)
    ));

    // The pod goes away → Remove; it comes back → Apply; the config is deleted → Remove.
    api.remove("pods", "shop", WEB_POD);
    assert!(matches!(
        next_request(&mut rx, "Remove when the pod is deleted").await,
        ManagerRequest::Remove(_)
    ));
    api.apply("pods", web_pod("containerd://c3", true));
    assert!(matches!(
        next_request(&mut rx, "Apply for the new pod").await,
        ManagerRequest::Apply(t) if t.container_id.as_deref() == Some("c3")
    ));
    api.remove("instrumentationconfigs", "shop", "deployment-web");
    assert!(matches!(
        next_request(&mut rx, "Remove when the config is deleted").await,
        ManagerRequest::Remove(_)
    ));
    no_request(&mut rx, "the config deletion").await;
    // Without a config, the agent gets the default file again.
    eventually("OpAMP default config", || {
        let (app, _) = container_config(&store, "app");
        (app.get("otelDistroName").is_none()).then_some(())
    })
    .await;

    // Pods were listed and watched for this node only, with bookmarks.
    let pod_requests = api.requests("GET /api/v1/pods?");
    assert!(
        pod_requests
            .iter()
            .all(|r| r.contains("fieldSelector=spec.nodeName%3Dnode-1")),
        "{pod_requests:?}"
    );
    assert!(
        pod_requests
            .iter()
            .any(|r| r.contains("watch=true") && r.contains("allowWatchBookmarks=true")),
        "{pod_requests:?}"
    );
    glue.shutdown().await;
}

/// The API server goes away and comes back with its history compacted: the watches' resume
/// gets 410 Gone, kube-runtime re-lists, and the glue converges on the new state (a Remove for
/// the pod that went away meanwhile, an Apply for the one that appeared).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_recover_from_an_api_server_outage_with_a_relist() {
    let api = ApiServer::start().await;
    api.apply("instrumentationconfigs", web_config(go_container("app")));
    api.apply("pods", web_pod("containerd://c1", true));
    let (requests, mut rx) = mpsc::channel(16);
    let glue = Glue::start(
        &api.client(),
        GlueConfig {
            node_name: NODE.into(),
            requests,
            opamp: None,
            detection: None,
            log_levels_from: None,
        },
    );
    assert!(matches!(
        next_request(&mut rx, "Apply for the first pod").await,
        ManagerRequest::Apply(t) if t.key.pod == WEB_POD
    ));
    let lists_before = api
        .requests("GET /api/v1/pods?")
        .iter()
        .filter(|r| !r.contains("watch=true"))
        .count();

    // Outage: watches cut, requests refused, and changes the watches will not replay.
    let cut_at = {
        let mut state = api.lock();
        state.unavailable = true;
        state.objects.history_limit = 1;
        state.log.len()
    };
    api.drop_watches();
    api.remove("pods", "shop", WEB_POD);
    api.apply(
        "pods",
        pod(
            "web-5d8f9c-ccccc",
            NODE,
            "web-5d8f9c",
            &[("app", Some("containerd://c9"), true)],
        ),
    );
    api.apply(
        "pods",
        pod("filler-1-aaaaa", NODE, "filler-1", &[("x", None, false)]),
    );
    // The outage lasts until the pod watch has tried to resume and been refused.
    eventually("a refused pod request during the outage", || {
        let state = api.lock();
        let refused = state.log.get(cut_at..).unwrap_or_default();
        refused
            .iter()
            .any(|r| r.starts_with("GET /api/v1/pods?"))
            .then_some(())
    })
    .await;
    api.lock().unavailable = false;

    let mut got = vec![
        next_request(&mut rx, "first request after the outage").await,
        next_request(&mut rx, "second request after the outage").await,
    ];
    got.sort_by_key(|r| matches!(r, ManagerRequest::Remove(_)));
    assert!(
        matches!(&got[0], ManagerRequest::Apply(t) if t.key.pod == "web-5d8f9c-ccccc"),
        "{got:?}"
    );
    assert!(
        matches!(&got[1], ManagerRequest::Remove(k) if k.pod == WEB_POD),
        "{got:?}"
    );
    no_request(&mut rx, "convergence").await;
    let lists_after = api
        .requests("GET /api/v1/pods?")
        .iter()
        .filter(|r| !r.contains("watch=true"))
        .count();
    assert!(
        lists_after > lists_before,
        "pods were re-listed after 410 Gone"
    );
    glue.shutdown().await;
}
