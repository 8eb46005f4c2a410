//! Device plugin against the kubelet stand-in, over real Unix sockets in a tempdir per test:
//! registration, capacity, health, Allocate, kubelet restarts and crashes, reboots with
//! checkpointed allocations, shutdown, the CLI, and the pod-resources client. Needs no root.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed step should panic with its backtrace"
)]

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use odiglet::device_plugin::{
    DevicePluginConfig, DevicePlugins, Language, ResourceConfig, Timings,
    pod_resources::{DeviceOwner, PodResourcesClient},
    resources::device_ids,
};
use tempfile::TempDir;

use crate::support::kubelet::{Kubelet, State};

const JAVA: &str = "instrumentation.odigos.io/java-native-community";
const GO: &str = "instrumentation.odigos.io/go-ebpf-community";
const GENERIC: &str = "instrumentation.odigos.io/generic";
const WAIT: Duration = Duration::from_secs(10);
/// The issue's bound on re-registration after `kubelet.sock` is re-created.
const REREGISTER_WITHIN: Duration = Duration::from_secs(1);

struct Setup {
    _tmp: TempDir,
    kubelet_dir: PathBuf,
    agents: PathBuf,
    kubelet: Kubelet,
}

fn setup(agent_dirs: &[&str]) -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let kubelet_dir = tmp.path().join("kubelet");
    let agents = tmp.path().join("odigos");
    for dir in agent_dirs {
        std::fs::create_dir_all(agents.join(dir)).unwrap();
    }
    std::fs::create_dir_all(&agents).unwrap();
    let kubelet = Kubelet::start(&kubelet_dir);
    Setup {
        _tmp: tmp,
        kubelet_dir,
        agents,
        kubelet,
    }
}

fn config(setup: &Setup, resources: &[(&str, Language)], count: u32) -> DevicePluginConfig {
    let mut config = DevicePluginConfig::new(
        &setup.kubelet_dir,
        setup.agents.clone(),
        "10.9.8.7".parse().unwrap(),
    );
    config.resources = resources
        .iter()
        .map(|(name, language)| ResourceConfig {
            name: (*name).to_owned(),
            language: *language,
        })
        .collect();
    config.device_count = count;
    config.timings = Timings {
        poll_interval: Duration::from_millis(200),
        health_interval: Duration::from_millis(25),
        register_timeout: Duration::from_secs(5),
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(500),
        drain_timeout: Duration::from_millis(500),
    };
    config
}

fn registered(state: &State, resources: &[&str], healthy: usize) -> bool {
    resources.iter().all(|name| {
        state
            .resources
            .get(*name)
            .is_some_and(|v| !v.stopped && v.healthy.len() == healthy)
    })
}

fn registrations(state: &State, resource: &str) -> usize {
    state
        .registrations
        .iter()
        .filter(|r| r.resource == resource)
        .count()
}

fn sockets(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_every_default_resource_and_shuts_down_with_empty_lists() {
    let setup = setup(&["java", "python", "nodejs", "dotnet"]);
    let mut config = config(&setup, &[], 1024);
    config.resources = ResourceConfig::defaults();
    let names: Vec<String> = config.resources.iter().map(|r| r.name.clone()).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let plugins = DevicePlugins::start(config).unwrap();
    setup
        .kubelet
        .wait_until("all 7 resources at 1024 healthy", WAIT, |s| {
            registered(s, &names, 1024)
        })
        .await;
    {
        let state = setup.kubelet.state();
        for name in &names {
            assert_eq!(
                state.resources[*name].messages, 1,
                "{name}: one full list at once"
            );
            let ids: HashSet<String> = device_ids(name, 1024).into_iter().collect();
            assert_eq!(
                state.resources[*name].healthy, ids,
                "{name}: deterministic IDs"
            );
        }
        assert_eq!(state.registrations.len(), 7);
        assert_eq!(state.max_open_streams, 1, "one stream per resource");
    }
    assert!(
        plugins
            .statuses()
            .iter()
            .all(|(_, status)| status.registered)
    );

    // grpc.health.v1 on a plugin socket, as Odigos' probes check it.
    let endpoint = setup.kubelet.state().resources[JAVA].endpoint.clone();
    let channel = odiglet::device_plugin::connect_unix(&setup.kubelet.dir().join(endpoint))
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    plugins.shutdown().await;
    setup
        .kubelet
        .wait_until("an empty list for every resource", WAIT, |s| {
            names
                .iter()
                .all(|n| s.resources[*n].last_message_len == Some(0) && s.resources[*n].stopped)
        })
        .await;
    assert_eq!(
        sockets(setup.kubelet.dir()),
        ["kubelet.sock"],
        "our sockets are removed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_the_agent_directory_both_ways() {
    let setup = setup(&[]);
    let plugins = DevicePlugins::start(config(&setup, &[(JAVA, Language::Java)], 16)).unwrap();
    let java = |healthy: usize, unhealthy: usize| {
        move |s: &State| {
            s.resources
                .get(JAVA)
                .is_some_and(|v| v.healthy.len() == healthy && v.unhealthy.len() == unhealthy)
        }
    };
    setup
        .kubelet
        .wait_until("java unhealthy without its agent dir", WAIT, java(0, 16))
        .await;
    std::fs::create_dir_all(setup.agents.join("java")).unwrap();
    setup
        .kubelet
        .wait_until("java healthy once the dir appears", WAIT, java(16, 0))
        .await;
    std::fs::remove_dir(setup.agents.join("java")).unwrap();
    setup
        .kubelet
        .wait_until("java unhealthy again", WAIT, java(0, 16))
        .await;
    // An observation window of many health checks (25 ms apart): nothing changed, so no message.
    let before = setup.kubelet.state().resources[JAVA].messages;
    assert_eq!(before, 3);
    let result = tokio::time::timeout(
        Duration::from_millis(400),
        setup
            .kubelet
            .wait_until("", WAIT, |s| s.resources[JAVA].messages != before),
    )
    .await;
    assert!(result.is_err(), "no ListAndWatch update without a change");
    plugins.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocate_over_the_socket_merges_and_rejects_unknown_ids() {
    let setup = setup(&["java"]);
    let resources = [
        (GENERIC, Language::Generic),
        (JAVA, Language::Java),
        (GO, Language::GoEbpf),
    ];
    let plugins = DevicePlugins::start(config(&setup, &resources, 8)).unwrap();
    let k = &setup.kubelet;
    k.wait_until("registered", WAIT, |s| {
        registered(s, &[GENERIC, JAVA, GO], 8)
    })
    .await;
    let merged = k
        .admit(
            "shop/cart",
            &[("app", GENERIC, 1), ("app", JAVA, 1), ("app", GO, 1)],
        )
        .await
        .unwrap();
    let app = &merged["app"];
    assert!(
        app.conflicts.is_empty(),
        "resources never overlap: {:?}",
        app.conflicts
    );
    let java_id =
        &k.state().checkpoint[&("shop/cart".into(), "app".into(), JAVA.into())].0[0].clone();
    assert_eq!(&app.envs["ODIGOS_INSTRUMENTATION_DEVICE_ID"], java_id);
    assert_eq!(app.envs["ODIGOS_OPAMP_SERVER_HOST"], "10.9.8.7:4320");
    assert_eq!(
        app.envs["OTEL_EXPORTER_OTLP_ENDPOINT"],
        "http://10.9.8.7:4317"
    );
    let host = |dir: &Path| dir.to_string_lossy().into_owned();
    assert_eq!(app.mounts["/var/odigos"], (host(&setup.agents), true));
    assert_eq!(
        app.mounts["/var/odigos/java"],
        (host(&setup.agents.join("java")), true)
    );
    assert_eq!(app.mounts.len(), 2, "go mounts nothing");

    let mut client = k.client(JAVA);
    let error = Kubelet::allocate_ids(&mut client, vec!["not-ours-1".into()])
        .await
        .unwrap_err();
    assert!(
        error.contains("InvalidArgument") && error.contains("not-ours-1"),
        "{error}"
    );
    plugins.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_kubelet_restarts_reregister_within_a_second_keeping_allocations() {
    let mut setup = setup(&["java"]);
    let plugins = DevicePlugins::start(config(
        &setup,
        &[(JAVA, Language::Java), (GO, Language::GoEbpf)],
        16,
    ))
    .unwrap();
    setup
        .kubelet
        .wait_until("registered", WAIT, |s| registered(s, &[JAVA, GO], 16))
        .await;
    let first = setup
        .kubelet
        .admit("shop/cart", &[("app", JAVA, 1), ("app", GO, 1)])
        .await
        .unwrap();
    let ids: Vec<HashSet<String>> = [JAVA, GO]
        .iter()
        .map(|n| setup.kubelet.state().resources[*n].healthy.clone())
        .collect();
    for round in 1..=10 {
        setup.kubelet.restart();
        let started = *setup.kubelet.state().started_at.last().unwrap();
        setup
            .kubelet
            .wait_until(&format!("re-registration {round}"), WAIT, |s| {
                registered(s, &[JAVA, GO], 16)
                    && registrations(s, JAVA) == round + 1
                    && registrations(s, GO) == round + 1
            })
            .await;
        let state = setup.kubelet.state();
        for name in [JAVA, GO] {
            let at = state
                .registrations
                .iter()
                .rfind(|r| r.resource == name)
                .unwrap()
                .at;
            let took = at.duration_since(started);
            assert!(
                took < REREGISTER_WITHIN,
                "round {round}: {name} re-registered after {took:?}"
            );
        }
        for (name, ids) in [JAVA, GO].iter().zip(&ids) {
            assert_eq!(
                &state.resources[*name].healthy, ids,
                "round {round}: same IDs"
            );
        }
        let endpoints: HashSet<&String> = state.registrations.iter().map(|r| &r.endpoint).collect();
        assert_eq!(
            endpoints.len(),
            state.registrations.len(),
            "a fresh socket per registration"
        );
        assert!(state.max_open_streams <= 1, "no duplicate clients");
        assert_eq!(
            state.stale_disconnects, 0,
            "no old stream ended after a new registration"
        );
    }
    // No leaked servers: only kubelet's socket and our two current ones are left.
    let current: Vec<String> = [JAVA, GO]
        .iter()
        .map(|n| setup.kubelet.state().resources[*n].endpoint.clone())
        .collect();
    let mut expected = vec![
        "kubelet.sock".to_owned(),
        current[0].clone(),
        current[1].clone(),
    ];
    expected.sort();
    assert_eq!(sockets(setup.kubelet.dir()), expected);
    // Allocations survive in the checkpoint and are replayed without a new Allocate call.
    let calls = setup.kubelet.state().allocate_calls;
    let again = setup
        .kubelet
        .admit("shop/cart", &[("app", JAVA, 1), ("app", GO, 1)])
        .await
        .unwrap();
    assert_eq!(again["app"].envs, first["app"].envs);
    assert_eq!(setup.kubelet.state().allocate_calls, calls);
    setup
        .kubelet
        .admit("shop/other", &[("app", JAVA, 1)])
        .await
        .unwrap();
    for name in [JAVA, GO] {
        let mut status = plugins.status(name).unwrap();
        let eleven = status.wait_for(|s| s.registrations == 11 && s.registered);
        tokio::time::timeout(WAIT, eleven).await.unwrap().unwrap();
    }
    plugins.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_mid_stream_then_slow_dial_back() {
    let mut setup = setup(&["java"]);
    let plugins = DevicePlugins::start(config(&setup, &[(JAVA, Language::Java)], 16)).unwrap();
    let mut status = plugins.status(JAVA).unwrap();
    setup
        .kubelet
        .wait_until("registered", WAIT, |s| registered(s, &[JAVA], 16))
        .await;
    // Kubelet dies: the stream ends and kubelet.sock refuses connections.
    setup.kubelet.crash();
    tokio::time::timeout(
        WAIT,
        status.wait_for(|s| !s.registered && s.last_error.is_some()),
    )
    .await
    .expect("the plugin notices the crash and retries")
    .unwrap();
    // Kubelet comes back slowly answering Register: 1.5 s between Register and the dial-back.
    setup.kubelet.state().dial_delay = Duration::from_millis(1500);
    let before = Instant::now();
    setup.kubelet.restart();
    setup
        .kubelet
        .wait_until("registered after the slow dial-back", WAIT, |s| {
            registered(s, &[JAVA], 16) && registrations(s, JAVA) == 2
        })
        .await;
    assert!(before.elapsed() >= Duration::from_millis(1500));
    {
        let state = setup.kubelet.state();
        assert_eq!(
            registrations(&state, JAVA),
            2,
            "one registration per kubelet life"
        );
        assert!(state.max_open_streams <= 1);
    }
    plugins.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_registrations_are_retried() {
    let setup = setup(&["java"]);
    setup.kubelet.state().fail_registrations = 3;
    let plugins = DevicePlugins::start(config(&setup, &[(JAVA, Language::Java)], 4)).unwrap();
    setup
        .kubelet
        .wait_until("registered after 3 refusals", WAIT, |s| {
            registered(s, &[JAVA], 4)
        })
        .await;
    assert_eq!(registrations(&setup.kubelet.state(), JAVA), 1);
    assert_eq!(setup.kubelet.state().fail_registrations, 0);
    plugins.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reboot_with_checkpointed_allocations() {
    let mut setup = setup(&["java"]);
    let config = config(&setup, &[(JAVA, Language::Java)], 16);
    let plugins = DevicePlugins::start(config.clone()).unwrap();
    setup
        .kubelet
        .wait_until("registered", WAIT, |s| registered(s, &[JAVA], 16))
        .await;
    let before = setup
        .kubelet
        .admit("shop/cart", &[("app", JAVA, 1)])
        .await
        .unwrap();
    plugins.shutdown().await;
    // The node reboots; kubelet re-admits the checkpointed pod before the plugin is back:
    // kubelet's own behaviour is an admission error.
    setup.kubelet.restart();
    let error = setup
        .kubelet
        .admit("shop/cart", &[("app", JAVA, 1)])
        .await
        .unwrap_err();
    assert!(error.contains("unregistered"), "{error}");
    // A new plugin process publishes the same IDs, so the checkpointed pod is admitted again.
    let plugins = DevicePlugins::start(config).unwrap();
    setup
        .kubelet
        .wait_until("registered again", WAIT, |s| registered(s, &[JAVA], 16))
        .await;
    let calls = setup.kubelet.state().allocate_calls;
    let after = setup
        .kubelet
        .admit("shop/cart", &[("app", JAVA, 1)])
        .await
        .unwrap();
    assert_eq!(after["app"].envs, before["app"].envs);
    assert_eq!(
        setup.kubelet.state().allocate_calls,
        calls,
        "replayed from the checkpoint"
    );
    plugins.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_resources_maps_device_ids_to_containers() {
    let setup = setup(&["java"]);
    let plugins = DevicePlugins::start(config(
        &setup,
        &[(JAVA, Language::Java), (GO, Language::GoEbpf)],
        8,
    ))
    .unwrap();
    setup
        .kubelet
        .wait_until("registered", WAIT, |s| registered(s, &[JAVA, GO], 8))
        .await;
    setup
        .kubelet
        .admit("shop/cart", &[("app", JAVA, 2), ("sidecar", GO, 1)])
        .await
        .unwrap();
    setup
        .kubelet
        .admit("bank/ledger", &[("main", JAVA, 1)])
        .await
        .unwrap();
    // Kubelet's rate limit answers twice with ResourceExhausted; the client backs off.
    setup.kubelet.state().rate_limited_lists = 2;
    let mut client = PodResourcesClient::new(&setup.kubelet_dir);
    client.backoff = Duration::from_millis(10);
    let owners = client
        .device_owners(&HashSet::from([JAVA.to_owned()]))
        .await
        .unwrap();
    assert_eq!(setup.kubelet.state().rate_limited_lists, 0);
    assert_eq!(owners.len(), 3, "{owners:?}");
    let checkpoint = setup.kubelet.state().checkpoint.clone();
    for ((pod, container, resource), (ids, _)) in &checkpoint {
        let (namespace, pod) = pod.split_once('/').unwrap();
        for id in ids {
            if resource == JAVA {
                let owner = DeviceOwner {
                    resource: JAVA.into(),
                    namespace: namespace.into(),
                    pod: pod.into(),
                    container: container.clone(),
                };
                assert_eq!(owners[id], owner);
            } else {
                assert!(!owners.contains_key(id), "other resources are filtered out");
            }
        }
    }
    plugins.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_runs_until_sigterm_and_leaves_an_empty_list() {
    let setup = setup(&["java", "python", "nodejs", "dotnet"]);
    let config = setup.agents.parent().unwrap().join("plugin.json");
    std::fs::write(&config, format!(r#"{{"devices_per_resource": 5, "resources": [{{"name": "{JAVA}", "language": "java"}}]}}"#)).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_odiglet"))
        .arg("device-plugin")
        .arg("--kubelet-dir")
        .arg(&setup.kubelet_dir)
        .arg("--agents-dir")
        .arg(&setup.agents)
        .arg("--config")
        .arg(&config)
        .env("NODE_IP", "10.1.1.1")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    setup
        .kubelet
        .wait_until("the CLI registered", WAIT, |s| registered(s, &[JAVA], 5))
        .await;
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id().unwrap()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
    let last = setup.kubelet.state().resources[JAVA].last_message_len;
    assert_eq!(last, Some(0), "empty list on SIGTERM");
    assert_eq!(sockets(setup.kubelet.dir()), ["kubelet.sock"]);

    // A bad resource name fails fast with exit code 64 and a clear line.
    std::fs::write(
        &config,
        r#"{"resources": [{"name": "Bad.Domain/x", "language": "java"}]}"#,
    )
    .unwrap();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_odiglet"))
        .args(["device-plugin", "--node-ip", "10.1.1.1", "--config"])
        .arg(&config)
        .arg("--kubelet-dir")
        .arg(&setup.kubelet_dir)
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("Bad.Domain/x") && stderr.contains("invalid"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_largest_device_count_fits_kubelets_message_limit() {
    // The stand-in's tonic client keeps the 4 MiB receive limit that kubelet's grpc-go has.
    let setup = setup(&["java"]);
    let max = odiglet::device_plugin::resources::MAX_DEVICE_COUNT;
    let plugins = DevicePlugins::start(config(&setup, &[(JAVA, Language::Java)], max)).unwrap();
    let count = usize::try_from(max).unwrap();
    setup
        .kubelet
        .wait_until("10k devices registered", WAIT, |s| {
            registered(s, &[JAVA], count)
        })
        .await;
    plugins.shutdown().await;
}
