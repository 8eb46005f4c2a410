//! Runtime detection in cluster mode: real processes stand in for a container (their PIDs in
//! a cgroupfs-layout `cgroup.procs` under a test cgroup root), pods become ready in the API
//! server, and the InstrumentationConfig's status gets runtime details written once, then
//! merged only when something the rules care about changes. The image's environment comes
//! from a container-runtime (CRI) stand-in.

use std::{path::Path, process::Command, time::Duration};

use odiglet::{
    inspect::{Inspector, cgroup::CgroupConfig, cri::CriSocket},
    k8s::{DetectionWorker, Glue, GlueConfig, StatusWriter},
};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::*;
use crate::support::{
    apiserver::ApiServer, cri::ContainerRuntime, guards::ChildGuard, runtimes::find,
};

const POD: &str = "api-6b7c8d-aaaaa";
const CONFIG: &str = "deployment-api";

/// Puts `pid` alone in the container's cgroupfs-layout cgroup under `root`.
fn place(root: &Path, container_id: &str, pid: u32) {
    let dir = root.join(format!("kubepods/besteffort/poduid-{POD}/{container_id}"));
    std::fs::create_dir_all(&dir).expect("cgroup dir");
    std::fs::write(dir.join("cgroup.procs"), format!("{pid}\n")).expect("cgroup.procs");
}

fn python(python: &Path, version: &str, ld_preload: Option<&str>) -> ChildGuard {
    let mut cmd = Command::new(python);
    cmd.args(["-c", "import time; time.sleep(60)"])
        .env("PYTHON_VERSION", version);
    for inherited in [
        "LD_PRELOAD",
        "PYTHONPATH",
        "NODE_OPTIONS",
        "JAVA_TOOL_OPTIONS",
    ] {
        cmd.env_remove(inherited);
    }
    if let Some(preload) = ld_preload {
        // A missing library only makes the loader warn; the process runs.
        cmd.env("LD_PRELOAD", preload);
    }
    let mut child = ChildGuard::spawn("python", &mut cmd);
    child.wait_until(WAIT, |pid| {
        std::fs::read_link(format!("/proc/{pid}/exe"))
            .is_ok_and(|exe| exe.to_string_lossy().contains("python"))
    });
    child
}

fn api_pod(container_id: &str, ready: bool) -> Value {
    pod(
        POD,
        NODE,
        "api-6b7c8d",
        &[("app", Some(&format!("containerd://{container_id}")), ready)],
    )
}

fn status_writes(api: &ApiServer) -> usize {
    api.requests("PATCH /apis/odigos.io/v1alpha1/namespaces/shop/instrumentationconfigs/")
        .iter()
        .filter(|r| r.contains("/status"))
        .count()
}

fn details(api: &ApiServer) -> Option<Value> {
    let ic = api.get("instrumentationconfigs", "shop", CONFIG)?;
    let entry = ic["status"]["runtimeDetailsByContainer"][0].clone();
    (!entry.is_null()).then_some(ic)
}

/// Start-up scan writes the first result; a pod becoming ready again with changed processes
/// merges (LD_PRELOAD appears, version changes) with a conflicting writer in between; an
/// identical result writes nothing; other controllers' status fields and conditions survive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_details_written_once_then_merged() {
    let test = "runtime_details_written_once_then_merged";
    let Some(python_bin) = find(test, &["/usr/bin/python3"]) else {
        return;
    };
    let cgroups = tempfile::tempdir().expect("tempdir");
    let first = python(&python_bin, "3.11.2", None);
    place(cgroups.path(), "c1", first.pid());

    let api = ApiServer::start().await;
    let mut ic = config(
        CONFIG,
        json!([{"containerName": "app", "agentEnabled": false}]),
    );
    ic["status"] = json!({"workloadRolloutHash": "rollout-1",
        "conditions": [{"type": "AgentEnabled", "status": "True", "reason": "EnabledSuccessfully",
            "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]});
    api.apply("instrumentationconfigs", ic);
    api.apply("pods", api_pod("c1", true));

    // The runtime knows c1's image (c2, started later, is unknown to it).
    let runtime_dir = tempfile::tempdir().expect("tempdir");
    let runtime = ContainerRuntime::start(runtime_dir.path());
    runtime.add(
        "c1",
        "sha256:img1",
        &[
            "PATH=/usr/bin",
            "PYTHONPATH=/image/lib",
            "JAVA_TOOL_OPTIONS=-Dnot=python",
        ],
    );
    let (requests, _rx) = mpsc::channel(16);
    let client = api.client();
    let worker = DetectionWorker {
        inspector: Inspector::new("/proc"),
        cgroups: CgroupConfig {
            cgroup_root: cgroups.path().to_owned(),
            proc_root: "/proc".into(),
        },
        writer: StatusWriter::new(client.clone()),
        cri: CriSocket {
            explicit: Some(runtime.socket.clone()),
            ..CriSocket::default()
        },
    };
    let glue = Glue::start(
        &client,
        GlueConfig {
            node_name: NODE.into(),
            requests,
            opamp: None,
            detection: Some(worker),
            log_levels_from: None,
        },
    );

    // Start-up scan: the first write sets the container's details and the condition.
    let ic = eventually("first runtime details", || details(&api)).await;
    let entry = &ic["status"]["runtimeDetailsByContainer"][0];
    assert_eq!(entry["containerName"], "app");
    assert_eq!(entry["language"], "python");
    assert_eq!(entry["runtimeVersion"], "3.11.2");
    assert_eq!(entry["secureExecutionMode"], false);
    assert!(entry.get("envVars").is_none(), "{entry}");
    // The image's value of the variable Python's agent appends to; not the other languages'.
    assert_eq!(
        entry["envFromContainerRuntime"],
        json!([{"name": "PYTHONPATH", "value": "/image/lib"}]),
        "{entry}"
    );
    assert!(entry.get("criErrorMessage").is_none(), "{entry}");
    assert_eq!(
        runtime.calls()[..2],
        ["ContainerStatus c1", "ImageStatus sha256:img1 verbose=true"]
    );
    let conditions = ic["status"]["conditions"].as_array().expect("conditions");
    let detection = conditions
        .iter()
        .find(|c| c["type"] == "RuntimeDetection")
        .expect("RuntimeDetection condition");
    assert_eq!(
        (detection["status"].as_str(), detection["reason"].as_str()),
        (Some("True"), Some("DetectedSuccessfully"))
    );
    assert!(
        conditions.iter().any(|c| c["type"] == "AgentEnabled"),
        "{conditions:?}"
    );
    assert_eq!(ic["status"]["workloadRolloutHash"], "rollout-1");
    assert_eq!(status_writes(&api), 1);

    // The container restarts with LD_PRELOAD and a newer version: not ready, then ready.
    let second = python(&python_bin, "3.11.9", Some("/opt/vendor/libapm.so"));
    place(cgroups.path(), "c2", second.pid());
    api.apply("pods", api_pod("c2", false));
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Another writer updates the status between our read and our write: retried.
    api.lock().conflicts_to_inject = 1;
    api.apply("pods", api_pod("c2", true));
    let ic = eventually("merged runtime details", || {
        details(&api)
            .filter(|ic| ic["status"]["runtimeDetailsByContainer"][0]["runtimeVersion"] == "3.11.9")
    })
    .await;
    let entry = &ic["status"]["runtimeDetailsByContainer"][0];
    assert_eq!(
        entry["envVars"],
        json!([{"name": "LD_PRELOAD", "value": "/opt/vendor/libapm.so"}])
    );
    assert_eq!(ic["status"]["workloadRolloutHash"], "rollout-1");
    assert_eq!(
        status_writes(&api),
        3,
        "first write, one conflict, the retry"
    );

    // Ready again with the first process (no LD_PRELOAD, old version): the version is
    // written, LD_PRELOAD stays recorded.
    api.apply("pods", api_pod("c1", false));
    tokio::time::sleep(Duration::from_millis(200)).await;
    api.apply("pods", api_pod("c1", true));
    let ic = eventually("version merged back", || {
        details(&api)
            .filter(|ic| ic["status"]["runtimeDetailsByContainer"][0]["runtimeVersion"] == "3.11.2")
    })
    .await;
    assert_eq!(
        ic["status"]["runtimeDetailsByContainer"][0]["envVars"][0]["name"],
        "LD_PRELOAD"
    );
    let writes = status_writes(&api);
    assert_eq!(writes, 4);

    // The same processes again: inspected, nothing new, no write.
    api.apply("pods", api_pod("c1", false));
    tokio::time::sleep(Duration::from_millis(200)).await;
    api.apply("pods", api_pod("c1", true));
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        status_writes(&api),
        writes,
        "identical results are not written"
    );

    // A new InstrumentationConfig (no status) for a workload with a ready pod is inspected.
    // Its container (c2, with LD_PRELOAD) is unknown to the runtime: the error is recorded,
    // as the process shows a variable whose image value cannot be read.
    let worker_pod = pod(
        "jobs-77f-bbbbb",
        NODE,
        "jobs-77f",
        &[("w", Some("containerd://c2"), true)],
    );
    // The cgroup layout uses the pod uid: give this pod the same uid as the first one's dir.
    let mut worker_pod = worker_pod;
    worker_pod["metadata"]["uid"] = json!(format!("uid-{POD}"));
    api.apply("pods", worker_pod);
    api.apply(
        "instrumentationconfigs",
        config("deployment-jobs", json!([])),
    );
    let jobs = eventually("details for the new config", || {
        let ic = api.get("instrumentationconfigs", "shop", "deployment-jobs")?;
        let entry = ic["status"]["runtimeDetailsByContainer"][0].clone();
        (entry["containerName"] == "w").then_some(entry)
    })
    .await;
    let cri_error = jobs["criErrorMessage"].as_str().unwrap_or_default();
    assert!(
        cri_error.contains("ContainerStatus failed") && cri_error.contains("not found"),
        "{jobs}"
    );
    assert!(jobs.get("envFromContainerRuntime").is_none(), "{jobs}");

    glue.shutdown().await;
    drop((first, second));
}
