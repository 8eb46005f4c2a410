//! The instrumentation manager against the real kernel and real Go processes in a cgroup the
//! test creates (standing in for a container): apply, config changes without restart, a
//! process started later in the container, exit, removal; spans through a real OTLP/gRPC
//! receiver and InstrumentationInstance tasks through a recording sink.

use std::{net::SocketAddr, process::Command, sync::Arc, time::Duration};

use odiglet::{
    export::{ExportTarget, ExporterConfig},
    manager::{
        ContainerKey, ContainerTarget, InstanceReason, InstrumentationManager, ManagerConfig,
        ManagerHandle, ManagerRequest, ProcessStatus, TracesConfig,
    },
    opamp::{InstanceQueue, InstanceTask},
    ops::{OpsServer, OpsState, Readiness},
    pipeline::{Workload, WorkloadKind},
};
use tokio::time::{Instant, sleep};

use crate::{
    go_http::{service_binary, spawn_service},
    support::{
        build,
        go::{free_port, get},
        guards::{ChildGuard, ContainerCgroup, cgroup2_mount},
        opamp::Recorder,
        otlp::{OtlpReceiver, ReceivedSpan, attribute},
        privileges::privileged,
        prometheus::value,
    },
};

const POD_UID: &str = "3c2b1a09-dddd-eeee-ffff-0123456789ab";
const CONTAINER_ID: &str = "5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b";
/// A Go program without net/http.
const PLAIN_GO: &str = "package main\n\nimport \"time\"\n\nfunc main() { time.Sleep(time.Hour) }\n";
const DEADLINE: Duration = Duration::from_secs(30);
/// Time given to spans that should not come: well above the exporter's batch interval.
const QUIET: Duration = Duration::from_millis(1500);

/// Polls `check` until it holds or panics after [`DEADLINE`].
pub(crate) async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not within {DEADLINE:?}");
        sleep(Duration::from_millis(50)).await;
    }
}

fn key() -> ContainerKey {
    ContainerKey {
        namespace: "shop".into(),
        pod: "cart-5d8f7-abcde".into(),
        container: "app".into(),
    }
}

fn target(traces: TracesConfig) -> ContainerTarget {
    ContainerTarget {
        key: key(),
        pod_uid: POD_UID.into(),
        container_id: Some(CONTAINER_ID.into()),
        qos_class: Some("Burstable".into()),
        workload: Some(Workload {
            kind: WorkloadKind::Deployment,
            name: "cart".into(),
        }),
        service_name: "cart-svc".into(),
        distro: "golang-community".into(),
        traces,
    }
}

fn status(handle: &ManagerHandle, pid: u32) -> Option<ProcessStatus> {
    handle.snapshot().into_iter().find(|s| s.pid == pid)
}

pub(crate) fn spans_of(receiver: &OtlpReceiver, pid: u32) -> Vec<ReceivedSpan> {
    receiver
        .spans()
        .into_iter()
        .filter(|s| attribute(&s.resource, "process.pid") == Some(pid.to_string()))
        .collect()
}

/// Sends `n` requests and waits until `pid` exported `n` more server spans.
pub(crate) async fn spans_flow(
    receiver: &OtlpReceiver,
    pid: u32,
    port: u16,
    n: usize,
) -> Vec<ReceivedSpan> {
    let before = spans_of(receiver, pid).len();
    for _ in 0..n {
        assert_eq!(get(port, "/hello", &[]), 201);
    }
    let deadline = Instant::now() + DEADLINE;
    loop {
        let spans = spans_of(receiver, pid);
        if spans.len() >= before + n {
            return spans;
        }
        assert!(
            Instant::now() < deadline,
            "pid {pid}: {} of {n} new spans",
            spans.len() - before
        );
        sleep(Duration::from_millis(50)).await;
    }
}

/// Sends requests and asserts no span of `pid` arrives.
pub(crate) async fn no_spans(receiver: &OtlpReceiver, pid: u32, port: u16, why: &str) {
    let before = spans_of(receiver, pid).len();
    for _ in 0..3 {
        assert_eq!(get(port, "/hello", &[]), 201);
    }
    sleep(QUIET).await;
    assert_eq!(
        spans_of(receiver, pid).len(),
        before,
        "{why}: spans still flow"
    );
}

fn upserts(sink: &Recorder, pid: u32) -> Vec<(String, bool, String)> {
    sink.tasks()
        .into_iter()
        .filter_map(|task| match task {
            InstanceTask::Upsert {
                pod,
                pid: p,
                health: Some(health),
                identifying_attributes,
                ..
            } if p == i64::from(pid) => {
                assert_eq!(
                    identifying_attributes,
                    [("process.pid".to_owned(), pid.to_string())]
                );
                Some((
                    InstanceTask::object_name(&pod, p),
                    health.healthy,
                    health.status,
                ))
            }
            _ => None,
        })
        .collect()
}

fn deleted(sink: &Recorder, pid: u32) -> bool {
    sink.tasks().into_iter().any(|task| {
        matches!(task, InstanceTask::Delete { pod, pid: p, .. }
            if p == i64::from(pid) && pod == key().pod)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_reconfigure_exec_exit_and_remove_a_container() {
    let test = "apply_reconfigure_exec_exit_and_remove_a_container";
    if !privileged(test) {
        return;
    }
    let Some(mount) = cgroup2_mount(test) else {
        return;
    };
    let Some((_, go)) = build::go_toolchains("manager").pop() else {
        return;
    };
    let binary = service_binary(&go, false);
    let cgroup = ContainerCgroup::create(
        &mount,
        &format!("odiglet-test-{}-manager", std::process::id()),
        POD_UID,
        CONTAINER_ID,
    );
    let receiver = OtlpReceiver::start().await;
    let sink = Recorder::default();
    let mut config = ManagerConfig::new(ExportTarget::OtlpGrpc {
        endpoint: receiver.endpoint(),
    });
    config.cgroup_root = cgroup.root().to_owned();
    config.node_name = Some("node-1".into());
    config.exporter = ExporterConfig {
        batch_interval: Duration::from_millis(100),
        ..ExporterConfig::default()
    };
    // Propagation is the go_http tests' to test.
    config.propagation = false;
    // Long enough that the later process is found by its exec event, not a rescan.
    config.rescan_every = Duration::from_secs(600);
    let manager =
        InstrumentationManager::start(config, InstanceQueue::start(Arc::new(sink.clone()), 64))
            .expect("the manager starts");
    let requests = manager.requests();
    let handle = manager.handle();
    let ops = OpsServer::start(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        OpsState::new(Readiness::new()).with_manager(handle.clone()),
    )
    .await
    .unwrap();
    let scrape = || {
        let addr = ops.addr;
        async move {
            tokio::task::spawn_blocking(move || crate::ops::metrics(addr))
                .await
                .unwrap()
        }
    };
    let instrumented = [
        ("telemetry_distro_name", "golang-community"),
        ("telemetry_sdk_language", "go"),
    ];
    let idle = scrape().await;
    assert_eq!(
        value(
            &idle,
            "odigos_ebpf_instrumentation_manager_instrumented_processes",
            &[]
        ),
        Some(0.0)
    );
    // The Go uprobes and the lifecycle tracepoints, their maps with the span ring.
    assert!(value(&idle, "bpf_programs_count", &[]).unwrap() >= 9.0);
    assert!(value(&idle, "bpf_maps_total_memory_usage", &[]).unwrap() >= f64::from(8u32 << 20));

    // A Go process and a non-Go one already run in the container.
    let port_a = free_port();
    let service_a = spawn_service(
        "service a",
        Command::new(&binary).arg(port_a.to_string()).env(
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment=staging,service.name=ignored",
        ),
        port_a,
    );
    let pid_a = service_a.pid();
    cgroup.scope().add(pid_a);
    let sleeper = ChildGuard::spawn("sleep", Command::new("/bin/sleep").arg("120"));
    cgroup.scope().add(sleeper.pid());
    // A Go process without any library we instrument: reported, unhealthy, never attached.
    let plain = build::go_std_program("gosleep", "full", &go, PLAIN_GO, &[]);
    let plain = ChildGuard::spawn("plain go", &mut Command::new(&plain));
    cgroup.scope().add(plain.pid());

    requests
        .send(ManagerRequest::Apply(target(TracesConfig::default())))
        .await
        .unwrap();
    eventually("service a instrumented", || {
        status(&handle, pid_a).is_some_and(|s| s.state == InstanceReason::LoadedSuccessfully)
    })
    .await;
    let a = status(&handle, pid_a).unwrap();
    assert_eq!(a.instance, format!("{}-{pid_a}", key().pod));
    assert_eq!(
        a.enabled_libraries,
        ["net/http.server", "net/http.client", "net/http.propagation"]
    );
    assert!(
        status(&handle, sleeper.pid()).is_none(),
        "a non-Go process is not instrumented"
    );
    assert!(handle.stats().skipped_not_go_total >= 1);
    eventually("plain Go process reported", || {
        status(&handle, plain.pid())
            .is_some_and(|s| s.state == InstanceReason::FailedToInitialize && s.error.is_some())
    })
    .await;
    eventually("failure reported", || {
        !upserts(&sink, plain.pid()).is_empty()
    })
    .await;
    assert_eq!(
        upserts(&sink, plain.pid())[0],
        (
            format!("{}-{}", key().pod, plain.pid()),
            false,
            "FailedToInitialize".to_owned()
        )
    );
    assert!(!handle.probe_state(plain.pid()).0);
    eventually("instance reported", || !upserts(&sink, pid_a).is_empty()).await;
    assert_eq!(
        upserts(&sink, pid_a)[0],
        (
            format!("{}-{pid_a}", key().pod),
            true,
            "LoadedSuccessfully".to_owned()
        )
    );

    // Spans carry the resource attributes of odigos.md §5.6.
    let spans = spans_flow(&receiver, pid_a, port_a, 3).await;
    let resource = &spans[0].resource;
    for (attribute_key, value) in [
        ("service.name", "cart-svc".to_owned()),
        ("k8s.namespace.name", "shop".to_owned()),
        ("k8s.pod.name", key().pod),
        ("k8s.container.name", "app".to_owned()),
        ("k8s.deployment.name", "cart".to_owned()),
        ("odigos.workload.kind", "Deployment".to_owned()),
        ("odigos.workload.name", "cart".to_owned()),
        ("k8s.node.name", "node-1".to_owned()),
        ("process.pid", pid_a.to_string()),
        ("process.command", binary.display().to_string()),
        ("deployment.environment", "staging".to_owned()),
    ] {
        assert_eq!(
            attribute(resource, attribute_key),
            Some(value),
            "{attribute_key}"
        );
    }

    let busy = scrape().await;
    assert_eq!(
        value(
            &busy,
            "odigos_ebpf_instrumentation_manager_instrumented_processes",
            &instrumented
        ),
        Some(1.0)
    );
    // The exporter counts a batch once the receiver answered, just after the spans arrived.
    let deadline = Instant::now() + DEADLINE;
    loop {
        let exported = value(&scrape().await, "odiglet_spans_exported_total", &[]).unwrap();
        if exported >= 3.0 {
            break;
        }
        assert!(Instant::now() < deadline, "spans exported: {exported}");
        sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        value(
            &busy,
            "odigos_ebpf_instrumentation_manager_failed_instrumentations_total",
            &instrumented
        ),
        Some(1.0)
    );
    let listed = tokio::task::spawn_blocking({
        let addr = ops.addr;
        move || crate::ops::get(addr, "/v1/instrumentations")
    })
    .await
    .unwrap();
    let listed: serde_json::Value = serde_json::from_slice(&listed.body).unwrap();
    let listed_a = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pid"] == pid_a)
        .unwrap();
    assert_eq!(listed_a["state"], "LoadedSuccessfully");
    assert_eq!(listed_a["instance"], format!("{}-{pid_a}", key().pod));
    assert_eq!(
        listed.as_array().unwrap().len(),
        2,
        "a and the plain Go process"
    );

    // net/http disabled: no spans, no re-attach; enabled again: spans resume.
    let attached = handle.stats().attached_total;
    requests
        .send(ManagerRequest::Apply(target(TracesConfig {
            enabled: true,
            disabled_libraries: vec!["net/http".into()],
        })))
        .await
        .unwrap();
    eventually("libraries switched off", || {
        status(&handle, pid_a).is_some_and(|s| s.enabled_libraries.is_empty())
    })
    .await;
    no_spans(&receiver, pid_a, port_a, "net/http disabled").await;
    requests
        .send(ManagerRequest::Apply(target(TracesConfig::default())))
        .await
        .unwrap();
    eventually("libraries switched on", || {
        status(&handle, pid_a).is_some_and(|s| !s.enabled_libraries.is_empty())
    })
    .await;
    spans_flow(&receiver, pid_a, port_a, 2).await;
    assert_eq!(handle.stats().attached_total, attached, "never re-attached");
    assert!(handle.probe_state(pid_a).0);

    // A process that starts in the container later is instrumented from its exec event.
    let port_b = free_port();
    let script = r#"echo $$ > "$1/cgroup.procs" && shift && exec "$@""#;
    let service_b = spawn_service(
        "service b",
        Command::new("/bin/sh")
            .args(["-c", script, "sh"])
            .arg(cgroup.scope().path())
            .arg(&binary)
            .arg(port_b.to_string()),
        port_b,
    );
    let pid_b = service_b.pid();
    eventually("service b instrumented", || {
        status(&handle, pid_b).is_some_and(|s| s.state == InstanceReason::LoadedSuccessfully)
    })
    .await;
    spans_flow(&receiver, pid_b, port_b, 2).await;

    // Traces off: nothing from either, without detaching.
    requests
        .send(ManagerRequest::Apply(target(TracesConfig {
            enabled: false,
            disabled_libraries: Vec::new(),
        })))
        .await
        .unwrap();
    eventually("traces off", || {
        [pid_a, pid_b]
            .iter()
            .all(|pid| status(&handle, *pid).is_some_and(|s| s.enabled_libraries.is_empty()))
    })
    .await;
    no_spans(&receiver, pid_a, port_a, "traces off").await;
    no_spans(&receiver, pid_b, port_b, "traces off").await;
    assert!(handle.probe_state(pid_a).0 && handle.probe_state(pid_b).0);
    requests
        .send(ManagerRequest::Apply(target(TracesConfig::default())))
        .await
        .unwrap();
    eventually("traces on", || {
        [pid_a, pid_b]
            .iter()
            .all(|pid| status(&handle, *pid).is_some_and(|s| !s.enabled_libraries.is_empty()))
    })
    .await;
    spans_flow(&receiver, pid_a, port_a, 1).await;

    // Exit: detached, forgotten, its instance deleted.
    drop(service_b);
    eventually("service b cleaned up", || {
        status(&handle, pid_b).is_none() && deleted(&sink, pid_b)
    })
    .await;
    assert_eq!(handle.probe_state(pid_b), (false, 0));

    // Removal: detached with nothing left in the maps, no spans, instance deleted.
    requests.send(ManagerRequest::Remove(key())).await.unwrap();
    eventually("service a detached", || {
        status(&handle, pid_a).is_none() && deleted(&sink, pid_a)
    })
    .await;
    assert!(deleted(&sink, plain.pid()) && handle.snapshot().is_empty());
    assert_eq!(handle.probe_state(pid_a), (false, 0));
    no_spans(&receiver, pid_a, port_a, "removed").await;
    let stats = handle.stats();
    assert_eq!(stats.detached_total, 2);
    assert!(stats.export.exported >= 8, "{:?}", stats.export);
    assert!(
        stats.instrumented.values().all(|n| *n == 0) || stats.instrumented.is_empty(),
        "{:?}",
        stats.instrumented
    );

    let gone = scrape().await;
    assert_eq!(
        value(&gone, "odiglet_instrumentation_detached_total", &[]),
        Some(2.0)
    );
    ops.shutdown().await;
    let totals = manager.shutdown().await.totals;
    assert_eq!(totals.probes.ringbuf_full, 0);
    drop((service_a, sleeper, plain));
}
